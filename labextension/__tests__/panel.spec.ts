import { IPanelActions, MemprofilePanel, renderComparison } from '../panel';
import type {
  LineStat,
  PanelComparison,
  PanelProfile,
  PanelSuggestion,
  Prediction
} from '../schema';
import { ProfileList } from '../store';
import { hostSummary } from './fixtures';

const HOSTILE = '<img src=x onerror=alert(1)>';

/** A prediction as the kernel sends it (Profile.predict): T4 at 4x the measured batch. */
const T4_AT_64: Prediction = {
  device: 'T4',
  capacity_bytes: 15_843_721_216,
  allocated_peak_bytes: 3 * 2 ** 30,
  reserved_peak_bytes: 3.5 * 2 ** 30,
  device_total_bytes: 3.5 * 2 ** 30 + 266_076_160,
  fits: true,
  method: 'fake execution',
  headroom: 0.15,
  batch: 64,
  measured_batch: 16,
  largest_batch: 220,
  notes: [HOSTILE]
};

function suggestion(overrides: Partial<PanelSuggestion> = {}): PanelSuggestion {
  return {
    id: 'amp',
    title: 'Run the cell under autocast',
    evidence: 'activations are 71 % of the peak',
    code: 'with torch.autocast("cpu"):\n    step()',
    placement: 'below',
    restart_kernel: false,
    can_try: true,
    try_change: 'amp',
    estimated_saving_bytes: 2 ** 30,
    measured_saving_bytes: null,
    saving_text: 'estimate: saves ~1.00 GiB',
    how: 'goes below the profiled cell',
    ...overrides
  };
}

function payload(id: string, suggestions: PanelSuggestion[]): PanelProfile {
  return {
    id,
    bokeh_version: '3.9.2',
    summary: hostSummary({ id, name: HOSTILE }),
    views: { timeline: { doc: {} } },
    suggestions,
    source: 'step()',
    rerun_warning: 'runs the cell twice more',
    known_devices: ['cpu', 'T4', 'H100-80GB'],
    predictions: []
  };
}

/** A comparison as the kernel sends it, with `fields` over it. */
function comparison(fields: Partial<PanelComparison> = {}): PanelComparison {
  return {
    a: 'a',
    b: 'b',
    a_name: 'a',
    b_name: 'b',
    device: 'cpu',
    headline: 'peak -1.00 MiB on cpu',
    peak: { name: 'cpu', before: 2, after: 1, delta: -1 },
    saving_bytes: 1,
    peak_change_percent: -50,
    time_change: null,
    categories: [],
    layers: [],
    ops: [],
    more_layers: 0,
    more_ops: 0,
    ...fields
  };
}

function actions(overrides: Partial<IPanelActions> = {}) {
  const calls: string[] = [];
  const a: IPanelActions = {
    fetchProfile: async id =>
      payload(id, [
        suggestion(),
        suggestion({
          id: 'tf_memory_growth',
          placement: 'top',
          can_try: false,
          try_change: null,
          title: HOSTILE
        })
      ]),
    embed: async (_item, target) => {
      target.dataset.embedded = 'yes';
      calls.push('embed');
    },
    insertFix: async (_p, s) => {
      calls.push(`insert:${s.id}`);
    },
    tryIt: async (_p, s) => {
      calls.push(`try:${s.id}`);
      return 'peak -1.00 GiB (-40 %) on cpu, time +12 %';
    },
    exportReport: async () => ({ path: '/work/report.html', url: '/files/report.html' }),
    compare: async (a1, b1) =>
      comparison({
        a: a1,
        b: b1,
        a_name: a1,
        b_name: b1,
        categories: [{ name: HOSTILE, before: 1, after: 0, delta: -1 }]
      }),
    predict: async request => {
      calls.push(`predict:${JSON.stringify(request)}`);
      return {
        type: 'predicted',
        id: request.id,
        prediction: T4_AT_64,
        text: 'T4, batch 64: predicted fits'
      };
    },
    ...overrides
  };
  return { a, calls };
}

const flush = () => new Promise(resolve => setTimeout(resolve, 0));

/** A panel showing profile "a" on its Suggestions tab. */
async function openSuggestions(a: IPanelActions): Promise<MemprofilePanel> {
  const panel = new MemprofilePanel(a);
  const list = new ProfileList();
  panel.bind(list, '');
  list.set([hostSummary({ id: 'a' })]);
  await panel.select('a');
  (panel.node.querySelector('.jp-memprofile-tab[data-view="suggestions"]') as HTMLElement).click();
  return panel;
}

describe('MemprofilePanel', () => {
  it("lists a kernel's profiles newest first and opens one with its timeline", async () => {
    const { a, calls } = actions();
    const panel = new MemprofilePanel(a);
    const list = new ProfileList();
    panel.bind(list, 'Connected to the kernel.');
    expect(panel.node.textContent).toContain('No profile yet');
    list.set([hostSummary({ id: 'a', name: 'first' }), hostSummary({ id: 'b', name: HOSTILE })]);
    const names = [...panel.node.querySelectorAll('.jp-memprofile-item-name')].map(
      n => n.textContent
    );
    expect(names).toEqual([HOSTILE, 'first']);
    expect(panel.node.querySelector('img')).toBeNull(); // names are text
    (panel.node.querySelector('.jp-memprofile-item') as HTMLElement).click();
    await flush();
    expect(panel.selectedId).toBe('b');
    expect(calls).toEqual(['embed']);
    expect(
      panel.node
        .querySelector('.jp-memprofile-view[data-view="timeline"]')
        ?.getAttribute('data-embedded')
    ).toBe('yes');
  });

  it('opens a merged profile on its Ranks tab, shown first, and shows no Ranks tab for a single profile', async () => {
    // GIVEN a merged profile "m" (its views have "ranks") and a single process's profile "s"
    const embedded: unknown[] = [];
    const { a } = actions({
      fetchProfile: async id => {
        const p = payload(id, []);
        return id === 'm' ? { ...p, views: { ranks: { doc: 'ranks' }, ...p.views } } : p;
      },
      embed: async item => {
        embedded.push(item);
      }
    });
    const panel = new MemprofilePanel(a);
    const list = new ProfileList();
    panel.bind(list, '');
    list.set([hostSummary({ id: 's' }), hostSummary({ id: 'm' })]);
    const tabs = () =>
      [...panel.node.querySelectorAll<HTMLElement>('.jp-memprofile-tab')].map(t => t.dataset.view);
    const active = () =>
      panel.node.querySelector<HTMLElement>('.jp-memprofile-tab.jp-mod-active')?.dataset.view;
    // WHEN the merged one opens, THEN Ranks is the first tab, active, and its view is drawn
    await panel.select('m');
    expect(tabs()).toEqual([
      'ranks',
      'timeline',
      'peak',
      'lines',
      'layers',
      'ops',
      'suggestions',
      'fit'
    ]);
    expect(active()).toBe('ranks');
    expect(embedded).toEqual([{ doc: 'ranks' }]);
    // WHEN the single one opens after it, THEN there is no Ranks tab and it opens on the timeline
    await panel.select('s');
    expect(tabs()).toEqual(['timeline', 'peak', 'lines', 'layers', 'ops', 'suggestions', 'fit']);
    expect(active()).toBe('timeline');
    // AND a merged profile opens on Ranks even when another tab was used last
    (panel.node.querySelector('.jp-memprofile-tab[data-view="ops"]') as HTMLElement).click();
    await panel.select('m');
    expect(active()).toBe('ranks');
  });

  it('says where "Export HTML" wrote the report and offers to open it in a new tab', async () => {
    const { a } = actions();
    const panel = new MemprofilePanel(a);
    const list = new ProfileList();
    panel.bind(list, '');
    list.set([hostSummary({ id: 'a' })]);
    await panel.select('a');
    (panel.node.querySelector('.jp-memprofile-export') as HTMLElement).click();
    await flush();
    const message = panel.node.querySelector('.jp-memprofile-panel-message');
    expect(message?.textContent).toContain('Report written to /work/report.html');
    const open = message?.querySelector('a.jp-memprofile-open-report') as HTMLAnchorElement;
    expect(open.getAttribute('href')).toBe('/files/report.html');
    expect(open.target).toBe('_blank');
    expect(open.rel).toBe('noopener');
  });

  it("shows the capture's notes and their fixes above every view", async () => {
    // GIVEN a profile whose capture missed small blocks, with the fix
    const note = {
      code: 'tf_onednn_small_blocks',
      message: 'tf:CPU:0: blocks under 256 KiB are not counted.',
      fix: 'import os\nos.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"'
    };
    const { a } = actions({
      fetchProfile: async id => {
        const p = payload(id, []);
        return { ...p, summary: { ...p.summary, warnings: [note] } };
      }
    });
    const panel = new MemprofilePanel(a);
    const list = new ProfileList();
    panel.bind(list, '');
    list.set([hostSummary({ id: 'a' })]);
    await panel.select('a');
    // THEN the detail shows the note and its fix, before the tabs, on every view
    for (const view of ['timeline', 'suggestions']) {
      (panel.node.querySelector(`.jp-memprofile-tab[data-view="${view}"]`) as HTMLElement).click();
      const notes = panel.node.querySelector('.jp-memprofile-warnings');
      expect(notes?.querySelector('.jp-memprofile-note-text')?.textContent).toBe(note.message);
      expect(notes?.querySelector('pre')?.textContent).toBe(note.fix);
      expect(notes?.nextElementSibling?.className).toBe('jp-memprofile-tabs');
    }
  });

  it("draws views with the kernel's own bokeh version, whatever it is", async () => {
    // GIVEN kernels whose bokeh is older, current, and a minor newer than any released today
    for (const kernelVersion of ['3.4.1', '3.10.2', '3.99.0']) {
      const versions: string[] = [];
      const { a } = actions({
        fetchProfile: async id => ({ ...payload(id, []), bokeh_version: kernelVersion }),
        embed: async (_item, target, version) => {
          versions.push(version);
          target.dataset.embedded = 'yes';
        }
      });
      const panel = new MemprofilePanel(a);
      const list = new ProfileList();
      panel.bind(list, '');
      list.set([hostSummary({ id: 'a' })]);
      await panel.select('a');
      // THEN the view is embedded with that very version, and says nothing about versions
      expect(versions).toEqual([kernelVersion]);
      const view = panel.node.querySelector(
        '.jp-memprofile-view[data-view="timeline"]'
      ) as HTMLElement;
      expect(view.dataset.embedded).toBe('yes');
      expect(view.textContent).not.toContain('not drawn');
    }
  });

  it("says why a view cannot be drawn when the kernel's BokehJS does not come", async () => {
    const { a } = actions({
      embed: async () => {
        throw new Error('no answer from the kernel to "bokehjs"');
      }
    });
    const panel = new MemprofilePanel(a);
    const list = new ProfileList();
    panel.bind(list, '');
    list.set([hostSummary({ id: 'a' })]);
    await panel.select('a');
    await flush();
    const view =
      panel.node.querySelector('.jp-memprofile-view[data-view="timeline"]')?.textContent ?? '';
    expect(view).toBe('Cannot draw this view: no answer from the kernel to "bokehjs"');
  });

  it('after the kernel is shut down, keeps the list and a click says what to do without asking the kernel', async () => {
    const fetched: string[] = [];
    const { a } = actions({
      fetchProfile: async id => {
        fetched.push(id);
        throw new Error('Cannot send');
      }
    });
    const panel = new MemprofilePanel(a);
    const list = new ProfileList();
    panel.bind(list, 'Connected to the kernel.');
    list.set([hostSummary({ id: 'a', name: 'first' })]);
    const gone =
      'The kernel is shut down: its profiles went with it. Start one (Kernel → Restart Kernel…), ' +
      'then run %load_ext memprofile.';
    panel.setStatus(gone);
    panel.setOffline(gone);
    expect(panel.node.classList).toContain('jp-mod-offline');
    expect(panel.node.querySelectorAll('.jp-memprofile-item')).toHaveLength(1);
    (panel.node.querySelector('.jp-memprofile-item') as HTMLElement).click();
    await flush();
    expect(fetched).toEqual([]);
    expect(panel.node.querySelector('.jp-memprofile-error')?.textContent).toBe(
      `Cannot open this profile: ${gone}`
    );
    expect(panel.node.textContent).not.toContain('Cannot send');
    // a new kernel: the panel answers clicks from it again
    panel.setOffline(null);
    panel.setStatus('Connected to the kernel.');
    expect(panel.node.classList).not.toContain('jp-mod-offline');
    await panel.select('a');
    expect(fetched).toEqual(['a']);
  });

  it('draws suggestions with insert and try buttons that call the host', async () => {
    const { a, calls } = actions();
    const panel = await openSuggestions(a);
    const cards = panel.node.querySelectorAll<HTMLElement>('.jp-memprofile-suggestion');
    expect(cards).toHaveLength(2);
    expect(cards[0].querySelector('.jp-memprofile-code')?.textContent).toBe(
      'with torch.autocast("cpu"):\n    step()'
    );
    expect(cards[1].querySelector('.jp-memprofile-try')).toBeNull(); // cannot be tried in place
    expect(cards[1].querySelector('.jp-memprofile-insert')?.textContent).toBe('Insert fix at top');
    expect(panel.node.querySelector('img')).toBeNull();
    (cards[0].querySelector('.jp-memprofile-insert') as HTMLElement).click();
    (cards[0].querySelector('.jp-memprofile-try') as HTMLElement).click();
    await flush();
    await flush();
    expect(calls).toContain('insert:amp');
    expect(calls).toContain('try:amp');
    const status = panel.node.querySelector(
      '.jp-memprofile-suggestion[data-suggestion="amp"] .jp-memprofile-try-status'
    );
    expect(status?.textContent).toBe('Measured: peak -1.00 GiB (-40 %) on cpu, time +12 %');
  });

  it("draws the cell's lines with their bars, and says when a profile has none", async () => {
    const mib = 1024 ** 2;
    const lines: LineStat[] = [
      {
        line: 0,
        text: '(before the cell)',
        peak_bytes: 32 * mib,
        allocated_bytes: 0,
        by_category: { parameter: 32 * mib },
        ops: {},
        layers: {}
      },
      {
        line: 1,
        text: 'x = batch()',
        peak_bytes: 0,
        allocated_bytes: 0,
        by_category: {},
        ops: {},
        layers: {}
      },
      {
        line: 2,
        text: `    y = f(x)  ${HOSTILE}`,
        peak_bytes: 64 * mib,
        allocated_bytes: 80 * mib,
        by_category: { temporary: 64 * mib },
        ops: { cross_entropy: 80 * mib },
        layers: {}
      }
    ];
    const { a } = actions({
      fetchProfile: async id => ({ ...payload(id, []), lines, peak_line: 2 })
    });
    const panel = new MemprofilePanel(a);
    const list = new ProfileList();
    panel.bind(list, '');
    list.set([hostSummary({ id: 'a' }), hostSummary({ id: 'old' })]);
    await panel.select('a');
    (panel.node.querySelector('.jp-memprofile-tab[data-view="lines"]') as HTMLElement).click();
    const rows = Array.from(
      panel.node.querySelectorAll<HTMLElement>('.jp-memprofile-view[data-view="lines"] tbody tr')
    );
    expect(rows.map(row => row.dataset.line)).toEqual(['0', '1', '2']); // every line, no gap
    expect(rows[2].querySelector('code')?.textContent).toBe(`    y = f(x)  ${HOSTILE}`); // indentation kept, as text
    expect(panel.node.querySelector('img')).toBeNull();
    expect(rows[2].querySelector<HTMLElement>('.jp-memprofile-line-bar')?.style.width).toBe(
      '100.00%'
    );
    expect(rows[0].querySelector<HTMLElement>('.jp-memprofile-line-bar')?.style.width).toBe(
      '50.00%'
    );
    expect(rows[1].querySelector('.jp-memprofile-line-segment')).toBeNull();
    expect(rows[2].textContent).toContain('◀ peak');
    // a profile from a kernel that records no lines
    const { a: old } = actions({ fetchProfile: async id => payload(id, []) });
    const bare = new MemprofilePanel(old);
    bare.bind(list, '');
    await bare.select('old');
    (bare.node.querySelector('.jp-memprofile-tab[data-view="lines"]') as HTMLElement).click();
    expect(bare.node.querySelector('.jp-memprofile-view[data-view="lines"]')?.textContent).toBe(
      'No line of the cell was recorded in this profile.'
    );
  });

  it('a cancelled trial shows nothing and a failed one says why', async () => {
    let result: Promise<string | null> = Promise.resolve(null);
    const { a } = actions({ tryIt: () => result });
    const panel = await openSuggestions(a);
    const tryButton = () => panel.node.querySelector('.jp-memprofile-try') as HTMLButtonElement;
    const status = () => panel.node.querySelector('.jp-memprofile-try-status')?.textContent;
    tryButton().click();
    await flush();
    expect(status()).toBe('');
    result = Promise.reject(new Error('RuntimeError: boom'));
    tryButton().click();
    await flush();
    expect(status()).toBe('The trial failed: RuntimeError: boom');
  });

  it('compares the two checked profiles and clears when the kernel restarts', async () => {
    const { a } = actions();
    const panel = new MemprofilePanel(a);
    const list = new ProfileList();
    panel.bind(list, '');
    list.set([hostSummary({ id: 'a', name: 'one' }), hostSummary({ id: 'b', name: 'two' })]);
    const compare = panel.node.querySelector('.jp-memprofile-compare') as HTMLButtonElement;
    expect(compare.disabled).toBe(true);
    panel.node.querySelectorAll<HTMLInputElement>('.jp-memprofile-check').forEach(c => c.click());
    expect(compare.disabled).toBe(false);
    compare.click();
    await flush();
    expect(panel.node.querySelector('.jp-memprofile-comparison-headline')?.textContent).toBe(
      'peak -1.00 MiB on cpu'
    );
    list.clear();
    expect(panel.node.querySelector('.jp-memprofile-comparison')).toBeNull();
    expect(panel.node.textContent).toContain('No profile yet');
  });

  it('renders comparison names as text', () => {
    const node = renderComparison(
      comparison({
        a_name: HOSTILE,
        headline: 'h',
        layers: [{ name: HOSTILE, before: 1, after: 2, delta: 1 }],
        more_layers: 3
      })
    );
    expect(node.querySelector('img')).toBeNull();
    expect(node.textContent).toContain(HOSTILE);
    expect(node.textContent).toContain('and 3 more');
  });

  it('Will it fit: sends the chosen device and batch, shows the prediction and lists it', async () => {
    // GIVEN a profile open in the panel, on its "Will it fit" tab
    const { a, calls } = actions();
    const panel = new MemprofilePanel(a);
    const list = new ProfileList();
    panel.bind(list, '');
    list.set([hostSummary({ id: 'a' })]);
    await panel.select('a');
    (panel.node.querySelector('.jp-memprofile-tab[data-view="fit"]') as HTMLElement).click();
    const device = panel.node.querySelector('.jp-memprofile-fit-device') as HTMLSelectElement;
    expect([...device.options].map(o => o.value)).toEqual(['cpu', 'T4', 'H100-80GB', 'custom']);
    // WHEN the user chooses T4 at 4x the batch and clicks Predict
    device.value = 'T4';
    (panel.node.querySelector('.jp-memprofile-fit-batch') as HTMLInputElement).value = '4x';
    (panel.node.querySelector('.jp-memprofile-predict') as HTMLButtonElement).click();
    await flush();
    // THEN the kernel is asked for exactly that, and the answer is shown, every figure predicted
    expect(calls).toContain('predict:{"type":"predict","id":"a","device":"T4","batch":"4x"}');
    const result = panel.node.querySelector('.jp-memprofile-fit-result') as HTMLElement;
    expect(result.querySelector('.jp-memprofile-prediction-verdict')?.textContent).toBe(
      '✓ predicted to fit on T4, batch 64 (measured at 16)'
    );
    expect(result.querySelector('.jp-memprofile-prediction-largest')?.textContent).toBe(
      'largest batch that fits (predicted): 220'
    );
    expect(result.textContent).toContain('method: fake execution');
    expect(result.querySelector('img')).toBeNull(); // a note is text
    expect(result.querySelector('.jp-memprofile-prediction-note')?.textContent).toBe(
      `note: ${HOSTILE}`
    );
    for (const li of result.querySelectorAll('.jp-memprofile-prediction-figures li')) {
      expect(li.textContent).toMatch(/predicted|method/);
    }
    const items = [...panel.node.querySelectorAll('.jp-memprofile-fit-item')].map(
      n => n.textContent
    );
    expect(items).toEqual([
      '✓ T4 · batch 64 (measured at 16) · predicted 3.75 GiB of 14.8 GiB (25 %) · largest batch that fits (predicted): 220'
    ]);
    // AND a bad batch is refused before anything is sent; the kernel's error is shown as it says it
    const sent = calls.length;
    (panel.node.querySelector('.jp-memprofile-fit-batch') as HTMLInputElement).value = 'lots';
    (panel.node.querySelector('.jp-memprofile-predict') as HTMLButtonElement).click();
    await flush();
    expect(calls.length).toBe(sent);
    expect(panel.node.querySelector('.jp-memprofile-fit-status')?.textContent).toBe(
      'batch "lots": give a number (64) or a factor (4x)'
    );
  });

  it("Will it fit: shows the kernel's error and lists the profile's earlier predictions", async () => {
    const { a } = actions({
      fetchProfile: async id => ({
        ...payload(id, []),
        predictions: [{ ...T4_AT_64, fits: false, accumulation_steps: 2, batch: 512 }]
      }),
      predict: async () => {
        throw new Error("unknown device 'T5': known are cpu, T4");
      }
    });
    const panel = new MemprofilePanel(a);
    const list = new ProfileList();
    panel.bind(list, '');
    list.set([hostSummary({ id: 'a' })]);
    await panel.select('a');
    (panel.node.querySelector('.jp-memprofile-tab[data-view="fit"]') as HTMLElement).click();
    expect(panel.node.querySelector('.jp-memprofile-fit-item')?.textContent).toBe(
      '✗ T4 · batch 512 (measured at 16) · predicted 3.75 GiB of 14.8 GiB (25 %) · ' +
        'largest batch that fits (predicted): 220, 2 gradient-accumulation steps for batch 512'
    );
    (panel.node.querySelector('.jp-memprofile-predict') as HTMLButtonElement).click();
    await flush();
    expect(panel.node.querySelector('.jp-memprofile-fit-status')?.textContent).toBe(
      "Cannot predict: unknown device 'T5': known are cpu, T4"
    );
  });
});

describe('the card\'s "Open in memprofile panel" button', () => {
  it('sends the profile id up the page for the panel plugin', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { renderCard, OPEN_EVENT } = require('../card');
    const card = renderCard(hostSummary({ id: 'abc123' })) as HTMLElement;
    document.body.appendChild(card);
    const seen: string[] = [];
    document.addEventListener(OPEN_EVENT, e =>
      seen.push((e as CustomEvent<{ id: string }>).detail.id)
    );
    (card.querySelector('.jp-memprofile-open') as HTMLElement).click();
    expect(seen).toEqual(['abc123']);
    card.remove();
  });
});
