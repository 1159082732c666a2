// ESLint flat config: lint the extension's TypeScript sources in labextension/.
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  {
    // Only labextension/ is linted; build outputs and the generated types are not.
    ignores: ['**/*', '!labextension/', '!labextension/**', 'labextension/schema.ts']
  },
  {
    files: ['labextension/**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommended],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { args: 'none' }],
      '@typescript-eslint/no-explicit-any': 'error',
      curly: ['error', 'all'],
      eqeqeq: 'error',
      'no-restricted-properties': [
        'error',
        { property: 'innerHTML', message: 'Payload text must go through textContent.' },
        { property: 'outerHTML', message: 'Payload text must go through textContent.' },
        { property: 'insertAdjacentHTML', message: 'Payload text must go through textContent.' }
      ],
      'no-eval': 'error',
      'no-implied-eval': 'error',
      'no-new-func': 'error',
      'prefer-const': 'error'
    }
  },
  {
    files: ['labextension/**/*.js'],
    extends: [js.configs.recommended]
  }
);
