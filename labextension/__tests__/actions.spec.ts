import type { Notebook, NotebookPanel } from '@jupyterlab/notebook';

import {
  IQuestion,
  NO_COMM,
  RERUN_BUTTON,
  RESTART_QUESTION,
  Requester,
  cellOfProfile,
  channelOf,
  embedView,
  exportReport,
  insertFix,
  onCardOpen,
  panelActions,
  reportUrl,
  showProfile,
  tryIt
} from '../actions';
import { OPEN_EVENT } from '../card';
import type { ProfileChannel } from '../comm';
import type { KernelBinding } from '../kernel';
import { MIME_TYPE } from '../mime';
import type { PanelProfile, PanelSuggestion } from '../schema';

/** A notebook cut down to what the actions touch: its cells (with outputs), the active one, the kernel's session. */
class FakeNotebook {
  cells: Array<{ type: string; source: string; outputs: Array<{ data: Record<string, unknown> }> }>;
  activeCellIndex = 0;
  restarts = 0;
  readonly sessionContext = { restartKernel: async () => void (this.restarts += 1) };
  readonly context = { path: 'work/train.ipynb' };

  constructor(sources: Array<[string, string | null]>) {
    // each cell: its source and the profile id its output shows, if any
    this.cells = sources.map(([source, id]) => ({
      type: 'code',
      source,
      outputs: id ? [{ data: { [MIME_TYPE]: { id } } }] : []
    }));
  }

  get content(): Notebook {
    return widgetOf(this);
  }

  asPanel(): NotebookPanel {
    return this as unknown as NotebookPanel;
  }
}

/** A notebook's widget: its model's cells, the active cell (read when used, as JupyterLab's). */
function widgetOf(owner: FakeNotebook): Notebook {
  return {
    owner,
    model: {
      cells: {
        get length() {
          return owner.cells.length;
        },
        get: (i: number) => {
          const cell = owner.cells[i];
          return {
            type: cell.type,
            outputs: { length: cell.outputs.length, get: (j: number) => cell.outputs[j] }
          };
        }
      }
    },
    get activeCellIndex() {
      return owner.activeCellIndex;
    },
    set activeCellIndex(index: number) {
      owner.activeCellIndex = index;
    },
    get activeCell() {
      const cell = owner.cells[owner.activeCellIndex];
      return cell
        ? { model: { sharedModel: { setSource: (source: string) => (cell.source = source) } } }
        : null;
    }
  } as unknown as Notebook;
}

/** NotebookActions' insertAbove/insertBelow: a new empty cell, made active. */
const inserter = {
  calls: [] as string[],
  insertAbove(nb: Notebook): void {
    const notebook = (nb as unknown as { owner: FakeNotebook }).owner;
    notebook.cells.splice(notebook.activeCellIndex, 0, { type: 'code', source: '', outputs: [] });
    this.calls.push('above');
  },
  insertBelow(nb: Notebook): void {
    const notebook = (nb as unknown as { owner: FakeNotebook }).owner;
    notebook.cells.splice(notebook.activeCellIndex + 1, 0, {
      type: 'code',
      source: '',
      outputs: []
    });
    notebook.activeCellIndex += 1;
    this.calls.push('below');
  }
};

/** The user's answers, in turn; the questions asked. */
function asker(...answers: boolean[]) {
  const asked: IQuestion[] = [];
  const ask = async (question: IQuestion) => {
    asked.push(question);
    return answers.shift() ?? false;
  };
  return { ask, asked };
}

/** A kernel channel answering each request type with `replies[type]`; the requests it got. */
function kernel(replies: Record<string, unknown> = {}) {
  const requests: Array<Record<string, unknown>> = [];
  const channel = {
    request: async (data: Record<string, unknown>) => {
      requests.push(data);
      return replies[data.type as string];
    }
  } as unknown as Requester;
  return { channel, requests };
}

const profile = {
  id: 'p2',
  rerun_warning: 'Trying a change runs the cell two or three more times.'
} as PanelProfile;

function fix(overrides: Partial<PanelSuggestion> = {}): PanelSuggestion {
  return {
    id: 'amp',
    title: 'Use mixed precision',
    evidence: '',
    code: 'with torch.autocast("cpu"):\n    pass',
    saving_text: '',
    how: '',
    placement: 'below',
    ...overrides
  };
}

beforeEach(() => {
  inserter.calls = [];
});

describe('insertFix', () => {
  it('inserts the fix as a cell below the cell that shows the profile', async () => {
    // GIVEN a notebook whose second cell shows profile p2, the last cell active
    const notebook = new FakeNotebook([
      ['import torch', null],
      ['%%memprofile\ntrain()', 'p2'],
      ['x = 1', null]
    ]);
    notebook.activeCellIndex = 2;
    // WHEN its fix is inserted
    await insertFix(notebook.asPanel(), inserter, asker().ask, profile, fix());
    // THEN a new cell with the code is right below the profiled cell, and no question was asked
    expect(inserter.calls).toEqual(['below']);
    expect(notebook.cells.map(c => c.source)).toEqual([
      'import torch',
      '%%memprofile\ntrain()',
      'with torch.autocast("cpu"):\n    pass',
      'x = 1'
    ]);
  });

  it('inserts below the active cell when no cell shows the profile (its output was cleared)', async () => {
    const notebook = new FakeNotebook([
      ['a', null],
      ['b', null]
    ]);
    await insertFix(notebook.asPanel(), inserter, asker().ask, profile, fix());
    expect(notebook.cells.map(c => c.source)).toEqual([
      'a',
      'with torch.autocast("cpu"):\n    pass',
      'b'
    ]);
  });

  it('puts a fix that must run first at the top and offers to restart the kernel', async () => {
    const top = fix({
      code: 'import os\nos.environ["X"] = "1"',
      placement: 'top',
      restart_kernel: true
    });
    // WHEN the user accepts the restart
    const yes = new FakeNotebook([
      ['a', null],
      ['b', 'p2']
    ]);
    yes.activeCellIndex = 1;
    const accepting = asker(true);
    await insertFix(yes.asPanel(), inserter, accepting.ask, profile, top);
    // THEN the cell is first, and the kernel restarted
    expect(inserter.calls).toEqual(['above']);
    expect(yes.cells[0].source).toBe('import os\nos.environ["X"] = "1"');
    expect(accepting.asked).toEqual([RESTART_QUESTION]);
    expect(yes.restarts).toBe(1);
    // AND when they answer "Later", the cell is there and the kernel untouched
    const later = new FakeNotebook([['a', null]]);
    await insertFix(later.asPanel(), inserter, asker(false).ask, profile, top);
    expect(later.cells[0].source).toBe('import os\nos.environ["X"] = "1"');
    expect(later.restarts).toBe(0);
  });

  it('says so without a notebook', async () => {
    await expect(insertFix(null, inserter, asker().ask, profile, fix())).rejects.toThrow(
      'no notebook is active'
    );
  });
});

describe('cellOfProfile', () => {
  it('finds the cell whose output shows the profile', () => {
    const notebook = new FakeNotebook([
      ['a', 'p1'],
      ['b', null],
      ['c', 'p3']
    ]);
    expect(cellOfProfile(notebook.asPanel(), 'p3')).toBe(2);
    expect(cellOfProfile(notebook.asPanel(), 'gone')).toBe(-1);
  });
});

describe('tryIt', () => {
  it("asks first, with the kernel's warning, then has the kernel try the fix", async () => {
    const { channel, requests } = kernel({ try: { headline: 'measured: -1.40 GiB (-43 %)' } });
    const user = asker(true);
    const headline = await tryIt(() => channel, user.ask, profile, fix());
    expect(user.asked).toEqual([
      { title: 'Try "Use mixed precision"?', body: profile.rerun_warning, accept: RERUN_BUTTON }
    ]);
    expect(requests).toEqual([{ type: 'try', id: 'p2', suggestion: 'amp' }]);
    expect(headline).toBe('measured: -1.40 GiB (-43 %)');
  });

  it('runs nothing when the user cancels', async () => {
    const { channel, requests } = kernel();
    expect(await tryIt(() => channel, asker(false).ask, profile, fix())).toBeNull();
    expect(requests).toEqual([]);
  });
});

describe('exportReport', () => {
  it('has the kernel write the report and links it beside the notebook', async () => {
    const { channel, requests } = kernel({ export: { path: '/home/me/work/In 3.html' } });
    const written = await exportReport(channel, 'work/train.ipynb', profile);
    expect(requests).toEqual([{ type: 'export', id: 'p2' }]);
    expect(written.path).toBe('/home/me/work/In 3.html');
    expect(written.url).toMatch(/\/files\/work\/In%203\.html$/);
  });

  it('gives no URL where the server cannot tell where the report is', () => {
    expect(reportUrl(undefined, 'report.html')).toBeNull();
    expect(reportUrl('nb.ipynb', '/tmp/report.html')).toMatch(/\/files\/report\.html$/);
  });
});

describe('embedView', () => {
  afterEach(() => {
    delete (window as unknown as { Bokeh?: unknown }).Bokeh;
  });

  it("draws the item with the kernel's BokehJS into the target", async () => {
    // GIVEN a page where the kernel's BokehJS 9.0.1 registered itself
    const embedItem = jest.fn(async () => undefined);
    (window as unknown as { Bokeh: unknown }).Bokeh = {
      '9.0.1': { embed: { embed_item: embedItem } }
    };
    const { channel, requests } = kernel({ bokehjs: { version: '9.0.1', scripts: [] } });
    const target = document.createElement('div');
    target.textContent = 'Loading…';
    const item = { doc: { roots: [] } };
    // WHEN a view is drawn
    await embedView(() => channel, item, target, '9.0.1');
    // THEN the scripts were asked for, the placeholder went, and bokeh drew the item there
    expect(requests).toEqual([{ type: 'bokehjs' }]);
    expect(target.textContent).toBe('');
    expect(embedItem).toHaveBeenCalledWith(item, target);
  });

  it('refuses an item with code memprofile did not write, before asking the kernel', async () => {
    const { channel, requests } = kernel();
    const item = {
      doc: { roots: [{ type: 'object', name: 'CustomJS', attributes: { code: 'alert(1)' } }] }
    };
    await expect(
      embedView(() => channel, item, document.createElement('div'), '9.0.2')
    ).rejects.toThrow('CustomJS');
    expect(requests).toEqual([]);
  });
});

describe('channelOf', () => {
  const open = { disposed: false } as ProfileChannel;
  const binding = (channel: ProfileChannel | null, offline: string | null = null) =>
    ({ channel, offline }) as unknown as KernelBinding;

  it("gives the binding's channel, or says why there is none", () => {
    expect(channelOf(binding(open))).toBe(open);
    expect(() => channelOf(null)).toThrow(NO_COMM);
    expect(() => channelOf(binding(null))).toThrow(NO_COMM);
    expect(() => channelOf(binding({ disposed: true } as ProfileChannel))).toThrow(NO_COMM);
    expect(() => channelOf(binding(open, 'The kernel died'))).toThrow('The kernel died');
  });
});

describe('panelActions', () => {
  it("asks the active notebook's kernel, and says why when it cannot", async () => {
    const { channel, requests } = kernel({
      get_profile: { id: 'p2' },
      compare: { a: 'p1', b: 'p2' }
    });
    let active: Requester | null = null;
    const notebook = new FakeNotebook([]);
    const actions = panelActions({
      channel: () => {
        if (!active) {
          throw new Error(NO_COMM);
        }
        return active;
      },
      notebook: () => notebook.asPanel(),
      cells: inserter,
      ask: asker().ask
    });
    await expect(actions.fetchProfile('p2')).rejects.toThrow(NO_COMM);
    active = channel;
    await expect(actions.fetchProfile('p2')).resolves.toEqual({ id: 'p2' });
    await expect(actions.compare('p1', 'p2')).resolves.toEqual({ a: 'p1', b: 'p2' });
    expect(requests).toEqual([
      { type: 'get_profile', id: 'p2' },
      { type: 'compare', a: 'p1', b: 'p2' }
    ]);
  });

  it('exports beside the active notebook', async () => {
    const { channel } = kernel({ export: { path: 'r.html' } });
    const notebook = new FakeNotebook([]);
    const actions = panelActions({
      channel: () => channel,
      notebook: () => notebook.asPanel(),
      cells: inserter,
      ask: asker().ask
    });
    expect((await actions.exportReport(profile)).url).toMatch(/\/files\/work\/r\.html$/);
  });
});

describe('opening the panel from the card', () => {
  it('brings the panel forward at the profile the card shows', () => {
    // GIVEN the listener on the document and a card's button in the page
    const opened: Array<string | null> = [];
    onCardOpen(document, id => opened.push(id));
    const button = document.createElement('button');
    document.body.appendChild(button);
    // WHEN the card's button sends its event up the page
    button.dispatchEvent(new CustomEvent(OPEN_EVENT, { bubbles: true, detail: { id: 'p2' } }));
    button.dispatchEvent(new CustomEvent(OPEN_EVENT, { bubbles: true }));
    button.remove();
    // THEN the plugin is told which profile, or that there is none
    expect(opened).toEqual(['p2', null]);
  });

  it('activates the panel and selects the profile, when there is one', () => {
    const activated: string[] = [];
    const selected: string[] = [];
    const panel = { id: 'memprofile-panel', select: async (id: string) => void selected.push(id) };
    showProfile({ activateById: id => activated.push(id) }, panel, 'p2');
    showProfile({ activateById: id => activated.push(id) }, panel, null);
    expect(activated).toEqual(['memprofile-panel', 'memprofile-panel']);
    expect(selected).toEqual(['p2']);
  });
});
