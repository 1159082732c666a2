import { checkTrusted } from '../bokeh';
import trusted from '../trusted_js.json';

function item(code: unknown, name = 'CustomJSHover') {
  return { doc: { roots: [{ type: 'object', name: 'Figure', attributes: { tools: [{ type: 'object', name: 'HoverTool',
    attributes: { formatters: { type: 'map', entries: [['@live', { type: 'object', name, attributes: { code } }]] } } }] } }] } };
}

describe('checkTrusted', () => {
  it('accepts memprofile\'s own code and plain models', () => {
    expect(() => checkTrusted(item((trusted as string[])[0]))).not.toThrow();
    expect(() => checkTrusted({ doc: { roots: [{ type: 'object', name: 'Div', attributes: { text: 'x' } }] } })).not.toThrow();
  });

  it('refuses any other CustomJS code or HTML template', () => {
    expect(() => checkTrusted(item('fetch("https://evil.example")'))).toThrow('CustomJSHover');
    expect(() => checkTrusted(item('alert(1)', 'CustomJS'))).toThrow('did not write (CustomJS)');
    expect(() => checkTrusted({ name: 'HTMLTemplateFormatter', attributes: { template: '<%= alert(1) %>' } })).toThrow();
    expect(() => checkTrusted(item(undefined, 'CustomJSTickFormatter'))).toThrow();
  });
});
