// Copy BokehJS's prebuilt bundles into the built extension's static folder,
// named with their version (the panel loads them as the global Bokeh; see
// labextension/bokeh.ts). Runs after `jupyter labextension build`.
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const pkg = require.resolve('@bokeh/bokehjs/package.json');
const version = JSON.parse(readFileSync(pkg, 'utf8')).version;
const out = join('pyext', 'memprofile', 'labextension', 'static');
mkdirSync(out, { recursive: true });
for (const name of ['bokeh', 'bokeh-widgets', 'bokeh-tables']) {
  copyFileSync(join(dirname(pkg), 'build', 'js', `${name}.min.js`), join(out, `${name}-${version}.min.js`));
}
console.log(`copied BokehJS ${version} to ${out}`);
