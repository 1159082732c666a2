import { checkTrusted, IBokehScripts, loadBokeh } from '../bokeh';
import trusted from '../trusted_js.json';

function item(code: unknown, name = 'CustomJSHover') {
  return {
    doc: {
      roots: [
        {
          type: 'object',
          name: 'Figure',
          attributes: {
            tools: [
              {
                type: 'object',
                name: 'HoverTool',
                attributes: {
                  formatters: {
                    type: 'map',
                    entries: [['@live', { type: 'object', name, attributes: { code } }]]
                  }
                }
              }
            ]
          }
        }
      ]
    }
  };
}

describe('checkTrusted', () => {
  it("accepts memprofile's own code and plain models", () => {
    expect(() => checkTrusted(item((trusted as string[])[0]))).not.toThrow();
    expect(() =>
      checkTrusted({ doc: { roots: [{ type: 'object', name: 'Div', attributes: { text: 'x' } }] } })
    ).not.toThrow();
  });

  it('refuses any other CustomJS code or HTML template', () => {
    expect(() => checkTrusted(item('fetch("https://evil.example")'))).toThrow('CustomJSHover');
    expect(() => checkTrusted(item('alert(1)', 'CustomJS'))).toThrow('did not write (CustomJS)');
    expect(() =>
      checkTrusted({ name: 'HTMLTemplateFormatter', attributes: { template: '<%= alert(1) %>' } })
    ).toThrow();
    expect(() => checkTrusted(item(undefined, 'CustomJSTickFormatter'))).toThrow();
  });
});

describe('loadBokeh', () => {
  it('asks the kernel once per version, and refuses a kernel whose bokeh is another version now', async () => {
    // GIVEN a kernel whose bokeh became 3.11.0 after it drew a view with 3.10.2
    let asked = 0;
    let answer: (scripts: IBokehScripts) => void = () => undefined;
    const fetchScripts = () => {
      asked += 1;
      return new Promise<IBokehScripts>(resolve => {
        answer = resolve;
      });
    };
    // WHEN two views of that version are drawn at once
    const first = loadBokeh('3.10.2', fetchScripts);
    const second = loadBokeh('3.10.2', fetchScripts);
    answer({ version: '3.11.0', scripts: [] });
    // THEN the kernel was asked once, and both say why they cannot be drawn, without running its scripts
    expect(asked).toBe(1);
    await expect(first).rejects.toThrow(
      "the kernel's bokeh is 3.11.0 now, and bokeh 3.10.2 made this view"
    );
    await expect(second).rejects.toThrow('profile the cell again');
    // AND a failure is not kept: the next view asks again
    const third = loadBokeh('3.10.2', fetchScripts);
    answer({ version: '3.11.0', scripts: [] });
    await expect(third).rejects.toThrow();
    expect(asked).toBe(2);
  });

  it('says so when the kernel cannot send its BokehJS', async () => {
    await expect(
      loadBokeh('3.12.0', () => Promise.reject(new Error('no answer from the kernel to "bokehjs"')))
    ).rejects.toThrow('no answer from the kernel');
  });
});
