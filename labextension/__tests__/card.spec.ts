import { NEWER_SCHEMA_MESSAGE, checkSummary, lineNotes, renderCard, shortNote } from '../card';
import type { ProfileSummary, StepsBrief } from '../schema';
import { STEPS_BRIEFS, hostSummary } from './fixtures';

const HOSTILE = '<img src=x onerror=alert(1)>';

function text(node: Element | null): string {
  return node?.textContent ?? '';
}

describe('renderCard', () => {
  it('shows the peak, the increase over baseline and the duration', () => {
    // GIVEN the example host profile WHEN it is rendered
    const card = renderCard(hostSummary());

    // THEN the header carries the figures, formatted
    expect(card.classList.contains('jp-memprofile-card')).toBe(true);
    const header = card.querySelector('.jp-memprofile-header');
    expect(text(header)).toContain('Peak 512.0 MiB on host');
    expect(text(card.querySelector('.jp-memprofile-delta'))).toBe('+256.0 MiB over baseline');
    expect(text(card.querySelector('.jp-memprofile-duration'))).toBe('1.23 s');
    expect(text(card.querySelector('.jp-memprofile-name'))).toBe('In [3]');
  });

  it('lists only the non-zero categories, in the bar and the legend', () => {
    const card = renderCard(
      hostSummary({
        by_category: { parameter: 1024 ** 3, gradient: 0, activation: 512 * 1024 ** 2, other: 0 }
      })
    );
    const items = Array.from(card.querySelectorAll('.jp-memprofile-legend-item'));
    expect(items.map(item => (item as HTMLElement).dataset.category)).toEqual([
      'parameter',
      'activation'
    ]);
    expect(text(items[0])).toContain('parameters');
    expect(text(items[0])).toContain('1.00 GiB');
    expect(text(items[1])).toContain('512.0 MiB');

    const segments = Array.from(card.querySelectorAll<HTMLElement>('.jp-memprofile-bar-segment'));
    expect(segments).toHaveLength(2);
    expect(segments[0].classList.contains('jp-memprofile-cat-parameter')).toBe(true);
    expect(parseFloat(segments[0].style.width)).toBeCloseTo(66.667, 2);
    expect(parseFloat(segments[1].style.width)).toBeCloseTo(33.333, 2);
  });

  it('draws no bar when every category is zero', () => {
    const card = renderCard(hostSummary({ by_category: { parameter: 0, other: 0 } }));
    expect(card.querySelector('.jp-memprofile-bar')).toBeNull();
    expect(card.querySelector('.jp-memprofile-legend')).toBeNull();
  });

  it('draws the sparkline as Python drew it: its points, the peak marked, their titles', () => {
    // GIVEN the summary's drawing (render/sparkline.py) WHEN the card is rendered
    const card = renderCard(hostSummary());
    const svg = card.querySelector('svg.jp-memprofile-sparkline');
    // THEN the line goes through its points, in its box
    expect(svg).not.toBeNull();
    expect(svg?.namespaceURI).toBe('http://www.w3.org/2000/svg');
    expect(svg?.getAttribute('viewBox')).toBe('0 0 240 40');
    const line = svg?.querySelector('polyline.jp-memprofile-sparkline-line');
    expect(line?.getAttribute('points')).toBe('3,37 120,37 120,3 237,3 237,33');
    // the peak is the second point: the middle in x, the top in y
    const marker = svg?.querySelector('circle.jp-memprofile-sparkline-peak');
    expect(Number(marker?.getAttribute('cx'))).toBeCloseTo(120, 1);
    expect(Number(marker?.getAttribute('cy'))).toBeCloseTo(3, 1);
    expect(text(svg?.querySelector(':scope > title') ?? null)).toBe(
      'host live bytes from 256.0 MiB to 512.0 MiB over 20.0 ms'
    );
    expect(text(marker?.querySelector('title') ?? null)).toBe('peak 512.0 MiB at 10.0 ms');
  });

  it('draws no sparkline for a summary without a drawing (older kernels)', () => {
    const card = renderCard(
      hostSummary({ sparkline: { device: 'cpu', t: [0, 2.3], bytes: [0, 4194304] } })
    );
    expect(card.querySelector('svg')).toBeNull();
    expect(card.classList.contains('jp-memprofile-card-invalid')).toBe(false);
  });

  it('shows the error in the error style', () => {
    const card = renderCard(
      hostSummary({
        error: { type: 'RuntimeError', message: 'CUDA out of memory', traceback: 'Traceback ...' }
      })
    );
    expect(card.classList.contains('jp-memprofile-card-error')).toBe(true);
    const error = card.querySelector('.jp-memprofile-error');
    expect(text(error)).toContain('RuntimeError: CUDA out of memory');
    expect(text(error)).not.toContain('Traceback');
  });

  it('shows the notes, a long one short with the rest under "more", and a fix as code', () => {
    const long =
      'tf:CPU:0: blocks under 256 KiB made in this cell are not counted. The allocator gives the ' +
      'profiler no event for them. Set the variable below first.';
    const card = renderCard(
      hostSummary({
        warnings: [
          { code: 'a', message: 'one' },
          { code: 'b', message: long, fix: 'import os\nos.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"' }
        ]
      })
    );
    const items = Array.from(card.querySelectorAll('.jp-memprofile-warnings li'));
    expect(items.map(i => text(i.querySelector('.jp-memprofile-note-text')))).toEqual([
      'one',
      long.split('. ')[0] + '.'
    ]);
    expect(items[0].querySelector('.jp-memprofile-note-more, pre')).toBeNull();
    expect(text(items[1].querySelector('.jp-memprofile-note-more'))).toContain(
      'Set the variable below first.'
    );
    expect(items[1].querySelector('pre.jp-memprofile-note-fix')?.textContent).toBe(
      'import os\nos.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"'
    );
    // a sentence longer than the short line is cut, with an ellipsis
    expect(shortNote('x'.repeat(400)).length).toBe(160);
    expect(shortNote('x'.repeat(400)).endsWith('…')).toBe(true);
  });

  it('shows the plain-string notes of outputs saved by older versions', () => {
    const card = renderCard(
      hostSummary({ warnings: ['one', 'two'] as unknown as ProfileSummary['warnings'] })
    );
    const items = card.querySelectorAll('.jp-memprofile-warnings li');
    expect(Array.from(items).map(text)).toEqual(['one', 'two']);
  });

  it('shows the top suggestion with its estimated saving', () => {
    const card = renderCard(
      hostSummary({
        top_suggestion: {
          id: 'amp',
          title: 'Use mixed precision',
          estimated_saving_bytes: 3 * 1024 ** 3
        },
        suggestion_count: 3
      })
    );
    const box = card.querySelector('.jp-memprofile-suggestion');
    expect(text(box)).toContain('Use mixed precision');
    expect(text(box)).toContain('saves about 3.00 GiB');
    expect(text(box)).toContain('2 more');
  });

  it('shows a per-device table only when there is more than one device', () => {
    expect(renderCard(hostSummary()).querySelector('table')).toBeNull();

    const host = hostSummary().devices[0];
    const card = renderCard(
      hostSummary({
        peak_device: 'cuda:0',
        peak_bytes: 2 * 1024 ** 3,
        devices: [
          host,
          {
            name: 'cuda:0',
            kind: 'allocator',
            source: 'torch.cuda',
            peak_bytes: 2 * 1024 ** 3,
            baseline_bytes: 1024 ** 3,
            end_bytes: 1024 ** 3,
            capacity_bytes: null
          }
        ]
      })
    );
    const rows = card.querySelectorAll('table.jp-memprofile-devices tbody tr');
    expect(rows).toHaveLength(2);
    expect(text(rows[1])).toContain('cuda:0');
    expect(text(rows[1])).toContain('2.00 GiB');
    expect(text(rows[1])).toContain('—');
    expect(text(card.querySelector('.jp-memprofile-delta'))).toBe('+1.00 GiB over baseline');
  });

  it('writes hostile names as text and creates no element from them', () => {
    const card = renderCard(
      hostSummary({
        name: HOSTILE,
        peak_device: HOSTILE,
        devices: [
          { ...hostSummary().devices[0], name: HOSTILE },
          { ...hostSummary().devices[0], name: `<script>alert(2)</script>` }
        ],
        by_category: { [HOSTILE]: 1024, other: 1024 },
        sparkline: {
          device: HOSTILE,
          t: [0, 1],
          bytes: [1, 2],
          drawing: {
            width: 240,
            height: 40,
            points: [
              [3, 37],
              [237, 37],
              [237, 3]
            ],
            peak: [237, 3],
            title: HOSTILE,
            peak_title: HOSTILE
          }
        },
        error: { type: HOSTILE, message: HOSTILE },
        top_suggestion: { id: HOSTILE, title: HOSTILE },
        warnings: [{ code: HOSTILE, message: HOSTILE, fix: HOSTILE }]
      })
    );
    document.body.appendChild(card);
    try {
      expect(card.querySelector('img')).toBeNull();
      expect(card.querySelector('script')).toBeNull();
      expect(document.querySelector('img, script')).toBeNull();
      expect(text(card.querySelector('.jp-memprofile-name'))).toBe(HOSTILE);
      expect(text(card.querySelector('.jp-memprofile-peak'))).toContain(HOSTILE);
      expect(text(card.querySelector('.jp-memprofile-error'))).toContain(`${HOSTILE}: ${HOSTILE}`);
      expect(text(card.querySelector('.jp-memprofile-suggestion-title'))).toBe(HOSTILE);
      expect(text(card.querySelector('.jp-memprofile-note-text'))).toBe(HOSTILE);
      expect(text(card.querySelector('.jp-memprofile-note-fix'))).toBe(HOSTILE);
      // An unknown category gets a fixed class, never one built from its name.
      const unknown = card.querySelector(
        '.jp-memprofile-legend-item:last-child .jp-memprofile-swatch'
      );
      expect(unknown?.className).toBe('jp-memprofile-swatch jp-memprofile-cat-unknown');
      // No event-handler attribute anywhere; the hostile text only ever sits in
      // text nodes and in plain attribute values (title, aria-label, data-*).
      for (const node of Array.from(card.querySelectorAll('*'))) {
        expect(['img', 'script']).not.toContain(node.localName);
        expect(node.getAttributeNames().filter(name => name.startsWith('on'))).toEqual([]);
      }
    } finally {
      card.remove();
    }
  });

  it('tells the user to upgrade for a newer schema_version', () => {
    const card = renderCard({
      ...hostSummary(),
      schema_version: 2,
      peak_bytes: 'changed'
    } as unknown as ProfileSummary);
    expect(card.classList.contains('jp-memprofile-card-newer')).toBe(true);
    expect(text(card)).toBe(NEWER_SCHEMA_MESSAGE);
    expect(text(card)).toContain('profile written by a newer memprofile; upgrade the extension');
  });

  it.each([
    [null, 'not a JSON object'],
    ['a string', 'not a JSON object'],
    [[1, 2], 'not a JSON object'],
    [{}, 'schema_version'],
    [{ schema_version: 1 }, 'peak_bytes'],
    [{ schema_version: 1, peak_bytes: 1, devices: 'host' }, 'devices'],
    [{ schema_version: 1, peak_bytes: 1, by_category: [] }, 'by_category']
  ])('explains a malformed payload %p', (payload, fragment) => {
    const card = renderCard(payload as unknown as ProfileSummary);
    expect(card.classList.contains('jp-memprofile-card-invalid')).toBe(true);
    expect(text(card)).toContain('Cannot show this memory profile');
    expect(text(card)).toContain(fragment);
  });

  it('renders a minimal payload without the optional fields', () => {
    const minimal = {
      schema_version: 1,
      id: 'x',
      name: 'step',
      started_at: '2026-11-23T15:00:00+00:00',
      duration_s: 0.5,
      peak_bytes: 812,
      peak_device: null,
      peak_time_s: null,
      devices: [],
      by_category: {}
    } as ProfileSummary;
    const card = renderCard(minimal);
    expect(card.classList.contains('jp-memprofile-card')).toBe(true);
    expect(card.classList.contains('jp-memprofile-card-invalid')).toBe(false);
    expect(text(card.querySelector('.jp-memprofile-peak'))).toBe('Peak 812 B');
    expect(card.querySelector('.jp-memprofile-delta')).toBeNull();
    expect(card.querySelector('svg')).toBeNull();
    expect(card.querySelector('.jp-memprofile-error')).toBeNull();
    expect(card.querySelector('.jp-memprofile-suggestion')).toBeNull();
    expect(card.querySelector('.jp-memprofile-warnings')).toBeNull();
  });

  it('skips a malformed sparkline and device rows instead of failing', () => {
    const drawing = hostSummary().sparkline!.drawing!;
    for (const sparkline of [
      { device: 'host', t: 'oops', bytes: [1] },
      { ...hostSummary().sparkline, drawing: { ...drawing, points: [[1, 'x']] } },
      { ...hostSummary().sparkline, drawing: { ...drawing, points: [] } },
      { ...hostSummary().sparkline, drawing: { ...drawing, peak: null } },
      { ...hostSummary().sparkline, drawing: 'svg' }
    ]) {
      const card = renderCard(
        hostSummary({
          sparkline: sparkline as unknown as ProfileSummary['sparkline'],
          devices: [
            hostSummary().devices[0],
            null,
            { name: 3 }
          ] as unknown as ProfileSummary['devices']
        })
      );
      expect(card.classList.contains('jp-memprofile-card-invalid')).toBe(false);
      expect(card.querySelector('svg')).toBeNull();
      expect(card.querySelector('table')).toBeNull();
      expect(text(card.querySelector('.jp-memprofile-peak'))).toContain('512.0 MiB');
    }
  });

  it('draws a single-point sparkline', () => {
    const drawing = {
      width: 240,
      height: 40,
      points: [[120, 20]],
      peak: [120, 20],
      title: '',
      peak_title: ''
    };
    const card = renderCard(
      hostSummary({ sparkline: { device: 'host', t: [0], bytes: [5], drawing } })
    );
    expect(card.querySelector('svg polyline')?.getAttribute('points')).toBe('120,20');
    expect(card.querySelector('svg circle')).not.toBeNull();
  });
});

/** A training step's summary with the peak named: op, layer, line, tensors and lines (render/bundle.py fills these). */
function namedPeak(): Partial<ProfileSummary> {
  const mib = 1024 ** 2;
  return {
    peak_op: 'aten::mm_backward',
    peak_layer: 'encoder',
    peak_line: 4,
    peak_line_text: 'loss.backward()',
    peak_tensors: [
      {
        shape: [64, 512, 8000],
        dtype: 'float32',
        bytes: 1000 * mib,
        category: 'activation',
        op: 'aten::log_softmax',
        layer: null,
        line: 3
      },
      {
        shape: [64, 32, 32, 32],
        dtype: 'float32',
        bytes: 15.75 * mib,
        category: 'activation',
        op: 'conv2d',
        layer: 'encoder',
        line: 2,
        requested_bytes: 8 * mib
      },
      {
        shape: [8000, 512],
        dtype: 'float32',
        bytes: 8000 * 512 * 4,
        category: 'parameter',
        layer: 'head',
        line: 0
      }
    ],
    peak_lines: [
      {
        line: 0,
        text: '(before the cell)',
        peak_bytes: 48 * mib,
        by_category: { parameter: 16 * mib, optimizer_state: 32 * mib }
      },
      {
        line: 2,
        text: 'logits = model(tokens)',
        allocated_bytes: 96 * mib,
        peak_bytes: 64 * mib,
        by_category: { activation: 64 * mib },
        ops: { 'aten::mm': 80 * mib },
        layers: { encoder: 96 * mib }
      },
      {
        line: 4,
        text: 'loss.backward()',
        allocated_bytes: 120 * mib,
        peak_bytes: 16 * mib,
        by_category: { gradient: 8 * mib }
      }
    ]
  };
}

describe('the card names the peak', () => {
  it("says which op, layer and line ran at the peak, with the line's source", () => {
    const card = renderCard(hostSummary(namedPeak()));
    const place = card.querySelector('.jp-memprofile-peak-place');
    expect(text(place)).toBe(
      'At the peak: op aten::mm_backward, layer encoder, line 4 loss.backward()'
    );
    expect(text(card.querySelector('.jp-memprofile-peak-line-text'))).toBe('loss.backward()');
  });

  it("lists the largest tensors, the tensor's own size apart from its allocator block", () => {
    const rows = Array.from(
      renderCard(hostSummary(namedPeak())).querySelectorAll('.jp-memprofile-tensors tr')
    );
    expect(rows.map(row => Array.from(row.children).map(text))).toEqual([
      ['1000.0 MiB', '64×512×8000 float32', 'op aten::log_softmax, line 3'],
      [
        '8.00 MiB tensor in a 15.8 MiB allocator block',
        '64×32×32×32 float32',
        'op conv2d, layer encoder, line 2'
      ],
      ['15.6 MiB', '8000×512 float32', 'layer head, before the cell']
    ]);
  });

  it('shows the lines holding the most at the peak as bars by kind, scaled to the largest', () => {
    const card = renderCard(hostSummary(namedPeak()));
    const rows = Array.from(card.querySelectorAll<HTMLElement>('.jp-memprofile-lines tbody tr'));
    // line 0, a gap (line 1 left out), line 2, a gap (line 3), line 4
    expect(rows.map(row => row.dataset.line ?? 'gap')).toEqual(['0', 'gap', '2', 'gap', '4']);
    expect(text(rows[0])).toContain('(before the cell)');
    expect(text(rows[2].querySelector('.jp-memprofile-line-held'))).toBe('64.0 MiB');
    expect(text(rows[2].querySelector('.jp-memprofile-line-allocated'))).toBe('96.0 MiB');
    expect(text(rows[2])).toContain('# aten::mm · layer encoder');
    const bars = [0, 2, 4].map(i => rows[i].querySelector<HTMLElement>('.jp-memprofile-line-bar'));
    expect(parseFloat(bars[1]?.style.width ?? '')).toBeCloseTo(100, 3);
    expect(parseFloat(bars[0]?.style.width ?? '')).toBeCloseTo(75, 3);
    expect(parseFloat(bars[2]?.style.width ?? '')).toBeCloseTo(25, 3);
    // line 0's bar: parameters then optimizer state; line 4's: 8 MiB of gradients and 8 MiB unknown
    const kinds = (bar: HTMLElement | null) =>
      Array.from(bar?.children ?? []).map(s => [
        s.className.split(' ')[1],
        parseFloat((s as HTMLElement).style.width)
      ]);
    expect(kinds(bars[0])).toEqual([
      ['jp-memprofile-cat-parameter', 33.33],
      ['jp-memprofile-cat-optimizer-state', 66.67]
    ]);
    expect(kinds(bars[2])).toEqual([
      ['jp-memprofile-cat-gradient', 50],
      ['jp-memprofile-cat-other', 50]
    ]);
    expect(rows[4].classList.contains('jp-memprofile-line-peak')).toBe(true);
    expect(text(rows[4])).toContain('◀ peak');
    expect(rows.filter(row => row.classList.contains('jp-memprofile-line-peak'))).toHaveLength(1);
  });

  it('names what allocated the most on a line, long names cut to their end', () => {
    expect(
      lineNotes({
        line: 1,
        text: '',
        ops: { 'gradient_tape/sequential_1/wide_1/MatMul/MatMul': 1, 'adam/Square': 1, third: 1 },
        layers: { wide: 1, other: 1 }
      })
    ).toBe('…quential_1/wide_1/MatMul/MatMul, adam/Square · layer wide'); // 32 characters;
    expect(lineNotes({ line: 1, text: '' })).toBe('');
  });

  it('says for an error which op, layer and line failed asking for how much', () => {
    const card = renderCard(
      hostSummary({
        error: {
          type: 'RuntimeError',
          message: "DefaultCPUAllocator: can't allocate memory",
          op: 'aten::new_empty',
          layer: 'big',
          line: 3,
          requested_bytes: 16 * 1024 ** 3
        },
        error_place: 'in op aten::new_empty, layer big, line 3, asking for 16.0 GiB' // render/text.py failure_place
      })
    );
    expect(text(card.querySelector('.jp-memprofile-error-where'))).toBe(
      'It failed in op aten::new_empty, layer big, line 3, asking for 16.0 GiB.'
    );
  });

  it('leads with where it failed and folds the stack frames a framework put in its message', () => {
    const frames = Array.from(
      { length: 55 },
      (_, i) => `  File "/site-packages/keras/x${i}.py", line ${i}, in f\n`
    );
    const message =
      'Graph execution error:\n\nDetected at node mlp_1/big_1/Relu defined at (most recent call last):\n' +
      frames.join('\n') +
      '\nOOM when allocating tensor with shape[1048576,4194304] and type float on CPU:0 by allocator cpu';
    const card = renderCard(
      hostSummary({
        error: {
          type: 'ResourceExhaustedError',
          message,
          headline:
            'OOM when allocating tensor with shape[1048576,4194304] and type float on CPU:0 by allocator cpu',
          message_frames: 55,
          op: 'mlp_1/big_1/Relu',
          layer: 'big',
          line: 1,
          requested_bytes: 2 ** 44
        },
        error_place: 'in op mlp_1/big_1/Relu, layer big, line 1, asking for 16.0 TiB'
      })
    );
    const error = card.querySelector('.jp-memprofile-error') as HTMLElement;
    const parts = Array.from(error.children).map(c => c.className);
    // the type, then where (op, layer, bytes), then the message's own words, then the fold
    expect(parts).toEqual([
      'jp-memprofile-error-type',
      'jp-memprofile-error-where',
      'jp-memprofile-error-message',
      'jp-memprofile-error-full',
      'jp-memprofile-error-note'
    ]);
    expect(text(error.querySelector('.jp-memprofile-error-message'))).toMatch(
      /^OOM when allocating/
    );
    const fold = error.querySelector('details') as HTMLDetailsElement;
    expect(fold.open).toBe(false);
    expect(text(fold.querySelector('summary'))).toBe('The message in full (55 stack frames)');
    expect(text(fold.querySelector('pre'))).toBe(message);
  });

  it('says nothing of where it failed when the summary does not (no place known, older kernels)', () => {
    const bare = renderCard(
      hostSummary({ error: { type: 'ValueError', message: 'bad' }, error_place: null })
    );
    expect(bare.querySelector('.jp-memprofile-error-where')).toBeNull();
    const older = renderCard(
      hostSummary({ error: { type: 'MemoryError', message: '', requested_bytes: 2048 } })
    );
    expect(older.querySelector('.jp-memprofile-error-where')).toBeNull();
    expect(text(older.querySelector('.jp-memprofile-error'))).toContain('MemoryError');
  });

  it('leaves the parts out for a profile without them (older kernels, process-only profiles)', () => {
    const card = renderCard(hostSummary({ peak_line: null, peak_tensors: [], peak_lines: [] }));
    expect(card.querySelector('.jp-memprofile-peak-place')).toBeNull();
    expect(card.querySelector('.jp-memprofile-tensors')).toBeNull();
    expect(card.querySelector('.jp-memprofile-lines')).toBeNull();
    const malformed = renderCard(
      hostSummary({
        peak_tensors: [null, { shape: 'x' }] as unknown as ProfileSummary['peak_tensors'],
        peak_lines: [{ text: 'no line number' }] as unknown as ProfileSummary['peak_lines']
      })
    );
    expect(malformed.classList.contains('jp-memprofile-card-invalid')).toBe(false);
    expect(malformed.querySelector('.jp-memprofile-tensors')).toBeNull();
    expect(malformed.querySelector('.jp-memprofile-lines')).toBeNull();
  });

  it('writes hostile op, layer and source text as text', () => {
    const hostile = namedPeak();
    hostile.peak_op = HOSTILE;
    hostile.peak_line_text = HOSTILE;
    hostile.peak_tensors = [
      { shape: [1], dtype: HOSTILE, bytes: 4, category: HOSTILE, op: HOSTILE, layer: HOSTILE }
    ];
    hostile.peak_lines = [
      {
        line: 1,
        text: HOSTILE,
        peak_bytes: 4,
        by_category: { [HOSTILE]: 4 },
        ops: { [HOSTILE]: 4 }
      }
    ];
    const card = renderCard(
      hostSummary({
        ...hostile,
        error: { type: 'E', message: '', op: HOSTILE, layer: HOSTILE },
        error_place: `in op ${HOSTILE}, layer ${HOSTILE}`
      })
    );
    expect(card.querySelector('img')).toBeNull();
    expect(text(card.querySelector('.jp-memprofile-peak-op'))).toBe(HOSTILE);
    expect(text(card.querySelector('.jp-memprofile-lines'))).toContain(HOSTILE);
    expect(card.querySelector('.jp-memprofile-line-segment')?.className).toContain(
      'jp-memprofile-cat-unknown'
    );
  });
});

describe('the moment the breakdown is of', () => {
  it('is said right under the header where it differs from the headline, and nowhere when it does not', () => {
    const scope =
      'The peak and its breakdown are of the detailed steps 1-3; a later step went higher: step 50.';
    const card = renderCard(hostSummary({ peak_scope: scope, peak_op: 'aten::mm' }));
    const shown = card.querySelector('.jp-memprofile-peak-scope');
    expect(text(shown)).toBe(scope);
    // after the header, before what the breakdown says (the place of the peak, its tensors, its lines)
    const parts = Array.from(
      card.querySelectorAll(
        '.jp-memprofile-header, .jp-memprofile-peak-scope, ' + '.jp-memprofile-peak-place'
      )
    );
    expect(parts.map(part => part.className.split(' ')[0])).toEqual([
      'jp-memprofile-header',
      'jp-memprofile-peak-scope',
      'jp-memprofile-peak-place'
    ]);
    expect(renderCard(hostSummary()).querySelector('.jp-memprofile-peak-scope')).toBeNull();
  });
});

describe('the card sums up the training steps', () => {
  it('shows the line Python wrote (render/lines.py steps_text) as it is', () => {
    for (const steps of STEPS_BRIEFS) {
      const card = renderCard(hostSummary({ steps }));
      expect(text(card.querySelector('.jp-memprofile-steps'))).toBe(steps.text);
    }
  });

  it('shows the steps as one line, the whole of it in the title', () => {
    const line =
      '200 training steps · steps 1-3 in detail · highest step: 7 (12.3 MiB) · end of step: 4.10 MiB → 4.20 MiB';
    const card = renderCard(hostSummary({ steps: STEPS_BRIEFS[0] }));
    const shown = card.querySelectorAll<HTMLElement>('.jp-memprofile-steps');
    expect(shown).toHaveLength(1);
    expect(text(shown[0])).toBe(line);
    expect(shown[0].title).toBe(line);
    expect(shown[0].style.whiteSpace).toBe('nowrap');
    expect(shown[0].style.textOverflow).toBe('ellipsis');
    expect(shown[0].querySelectorAll('*')).toHaveLength(0); // text, no markup
    // right under the bar and the sparkline
    expect(shown[0].previousElementSibling?.className).toBe('jp-memprofile-body');
  });

  it('shows no steps line for a cell without steps, a malformed one, or one from an older kernel', () => {
    expect(renderCard(hostSummary()).querySelector('.jp-memprofile-steps')).toBeNull();
    const older: Record<string, unknown> = { ...STEPS_BRIEFS[0] };
    delete older.text;
    for (const steps of [
      null,
      'x',
      { count: 0 },
      { count: 'many' },
      [],
      older,
      { ...older, text: 3 }
    ]) {
      const card = renderCard(hostSummary({ steps: steps as unknown as StepsBrief }));
      expect(card.querySelector('.jp-memprofile-steps')).toBeNull();
      expect(card.classList.contains('jp-memprofile-card-invalid')).toBe(false);
    }
  });
});

describe('the card says whether the run would fit', () => {
  const FITS = 'predicted fits: T4 16 GB ✓ 41 % · H100-80GB 85 GB ✓ 8 % · batch 256 on T4 ✗ 18 GB';

  it('shows the line Python wrote (render/prediction.py fits_line) as one line, the whole in its title', () => {
    const card = renderCard(hostSummary({ fits_line: FITS }));
    const shown = card.querySelectorAll<HTMLElement>('.jp-memprofile-fits');
    expect(shown.length).toBe(1);
    expect(text(shown[0])).toBe(FITS);
    expect(shown[0].title).toBe(FITS);
    expect(shown[0].style.whiteSpace).toBe('nowrap');
  });

  it('says nothing without a prediction, or from an older kernel', () => {
    for (const fits_line of [null, undefined, '', 42]) {
      const card = renderCard(hostSummary({ fits_line } as Partial<ProfileSummary>));
      expect(card.querySelector('.jp-memprofile-fits')).toBeNull();
      expect(card.textContent).not.toContain('predicted');
    }
  });
});

describe('checkSummary', () => {
  it('accepts the example payload', () => {
    expect(checkSummary(hostSummary()).ok).toBe(true);
  });
});
