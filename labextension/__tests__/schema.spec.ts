/**
 * labextension/schema.ts is generated from the Python side's JSON Schema by
 * `jlpm build:types`. Compile the schema again with the same options and
 * compare, so a schema change without regenerating the types fails here.
 */
import { execFileSync } from 'child_process';
import { readFileSync } from 'fs';
import { join } from 'path';

const ROOT = join(__dirname, '..', '..');
const SCHEMA = join(ROOT, 'pyext', 'memprofile', 'model', 'profile.schema.json');
const TYPES = join(ROOT, 'labextension', 'schema.ts');

/** The `build:types` script of package.json, read rather than copied. */
function buildTypesScript(): string {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  return pkg.scripts['build:types'];
}

/**
 * Run json-schema-to-typescript's compile() in a child Node process: it formats
 * with prettier 3, whose CommonJS entry loads itself with a dynamic import()
 * that jest's VM sandbox refuses without --experimental-vm-modules.
 */
function compileSchema(): string {
  const program = `
    const { compile } = require('json-schema-to-typescript');
    const { dirname } = require('path');
    const schema = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));
    compile(schema, process.argv[1], {
      cwd: dirname(process.argv[1]),
      additionalProperties: false,
      unreachableDefinitions: true
    }).then(
      ts => process.stdout.write(ts),
      error => { console.error(error); process.exit(1); }
    );
  `;
  return execFileSync(process.execPath, ['-e', program, SCHEMA], { cwd: ROOT, encoding: 'utf8' });
}

describe('labextension/schema.ts', () => {
  it('is generated with the options the test uses', () => {
    const script = buildTypesScript();
    expect(script).toContain('--unreachableDefinitions');
    expect(script).toContain('--additionalProperties false');
    expect(script).toContain('pyext/memprofile/model/profile.schema.json');
    expect(script).toContain('labextension/schema.ts');
  });

  it('matches the JSON Schema (run `jlpm build:types` after changing the schema)', () => {
    expect(readFileSync(TYPES, 'utf8')).toBe(compileSchema());
  }, 30000);

  it('declares ProfileSummary', () => {
    expect(readFileSync(TYPES, 'utf8')).toContain('export interface ProfileSummary {');
  });

  it("declares the panel's payloads and the comm's messages (model/wire.py)", () => {
    const types = readFileSync(TYPES, 'utf8');
    for (const name of [
      'PanelProfile',
      'PanelSuggestion',
      'PanelComparison',
      'ReplyTo',
      'TriedReply',
      'ErrorReply'
    ]) {
      expect(types).toContain(`export interface ${name} {`);
    }
    for (const union of ['KernelPush', 'PanelRequest', 'KernelReply']) {
      expect(types).toContain(`export type ${union} =`);
    }
  });
});
