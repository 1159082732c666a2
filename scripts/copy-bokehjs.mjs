// Copy the prebuilt BokehJS bundles of every supported bokeh minor (the
// package.json devDependencies named bokehjs-3.N, npm aliases of
// @bokeh/bokehjs) into the built extension's static folder, named with their
// full version. The panel loads the one whose minor is the kernel's bokeh
// (labextension/bokeh.ts). Runs after `jupyter labextension build`.
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const aliases = Object.keys(JSON.parse(readFileSync('package.json', 'utf8')).devDependencies)
  .filter(name => /^bokehjs-\d+\.\d+$/.test(name));
const out = join('pyext', 'memprofile', 'labextension', 'static');
mkdirSync(out, { recursive: true });
for (const alias of aliases) {
  const pkg = require.resolve(`${alias}/package.json`);
  const version = JSON.parse(readFileSync(pkg, 'utf8')).version;
  for (const name of ['bokeh', 'bokeh-widgets', 'bokeh-tables']) {
    copyFileSync(join(dirname(pkg), 'build', 'js', `${name}.min.js`), join(out, `${name}-${version}.min.js`));
  }
  console.log(`copied BokehJS ${version} to ${out}`);
}
