/**
 * Jest runs the labextension/ unit tests under jsdom through ts-jest.
 *
 * card.ts and format.ts import nothing from JupyterLab; mime.ts imports only
 * @lumino/widgets (a UMD build jest loads as CommonJS) and types.
 */
module.exports = {
  testEnvironment: 'jsdom',
  roots: ['<rootDir>/labextension'],
  testMatch: ['**/__tests__/**/*.spec.ts'],
  setupFiles: ['<rootDir>/labextension/__tests__/jest-setup.ts'],
  moduleFileExtensions: ['ts', 'js', 'json'],
  transform: {
    '^.+\\.ts$': [
      'ts-jest',
      {
        // Overrides on top of tsconfig.json for the tests only.
        tsconfig: {
          module: 'commonjs',
          types: ['jest', 'node'],
          noUnusedLocals: false
        }
      }
    ]
  },
  // Node modules are plain CommonJS/UMD here; nothing to transform.
  transformIgnorePatterns: ['/node_modules/'],
  coverageDirectory: 'coverage',
  collectCoverageFrom: ['labextension/**/*.ts', '!labextension/**/*.d.ts', '!labextension/__tests__/**']
};
