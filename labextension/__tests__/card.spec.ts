import { NEWER_SCHEMA_MESSAGE, checkSummary, renderCard } from '../card';
import type { ProfileSummary } from '../schema';
import { hostSummary } from './fixtures';

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
    expect(items.map(item => (item as HTMLElement).dataset.category)).toEqual(['parameter', 'activation']);
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

  it('draws the sparkline as an SVG path with the peak marked', () => {
    const card = renderCard(hostSummary());
    const svg = card.querySelector('svg.jp-memprofile-sparkline');
    expect(svg).not.toBeNull();
    expect(svg?.namespaceURI).toBe('http://www.w3.org/2000/svg');
    const path = svg?.querySelector('path.jp-memprofile-sparkline-line');
    expect(path?.getAttribute('d')).toMatch(/^M[\d.]+ [\d.]+ L[\d.]+ [\d.]+ L[\d.]+ [\d.]+$/);
    const marker = svg?.querySelector('circle.jp-memprofile-sparkline-peak');
    expect(marker).not.toBeNull();
    // The peak is the second point: the middle in x, the top in y.
    expect(Number(marker?.getAttribute('cx'))).toBeCloseTo(120, 1);
    expect(Number(marker?.getAttribute('cy'))).toBeCloseTo(3, 1);
    expect(text(svg?.querySelector('title') ?? null)).toContain('peak 512.0 MiB');
  });

  it('shows the error in the error style', () => {
    const card = renderCard(
      hostSummary({ error: { type: 'RuntimeError', message: 'CUDA out of memory', traceback: 'Traceback ...' } })
    );
    expect(card.classList.contains('jp-memprofile-card-error')).toBe(true);
    const error = card.querySelector('.jp-memprofile-error');
    expect(text(error)).toContain('RuntimeError: CUDA out of memory');
    expect(text(error)).not.toContain('Traceback');
  });

  it('shows the warnings', () => {
    const card = renderCard(hostSummary({ warnings: ['one', 'two'] }));
    const items = card.querySelectorAll('.jp-memprofile-warnings li');
    expect(Array.from(items).map(text)).toEqual(['one', 'two']);
  });

  it('shows the top suggestion with its estimated saving', () => {
    const card = renderCard(
      hostSummary({
        top_suggestion: { id: 'amp', title: 'Use mixed precision', estimated_saving_bytes: 3 * 1024 ** 3 },
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
        sparkline: { device: HOSTILE, t: [0, 1], bytes: [1, 2] },
        error: { type: HOSTILE, message: HOSTILE },
        top_suggestion: { id: HOSTILE, title: HOSTILE },
        warnings: [HOSTILE]
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
      expect(text(card.querySelector('.jp-memprofile-warnings'))).toBe(HOSTILE);
      // An unknown category gets a fixed class, never one built from its name.
      const unknown = card.querySelector('.jp-memprofile-legend-item:last-child .jp-memprofile-swatch');
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
    const card = renderCard({ ...hostSummary(), schema_version: 2, peak_bytes: 'changed' } as unknown as ProfileSummary);
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
    const card = renderCard(
      hostSummary({
        sparkline: { device: 'host', t: 'oops', bytes: [1] } as unknown as ProfileSummary['sparkline'],
        devices: [hostSummary().devices[0], null, { name: 3 }] as unknown as ProfileSummary['devices']
      })
    );
    expect(card.classList.contains('jp-memprofile-card-invalid')).toBe(false);
    expect(card.querySelector('svg')).toBeNull();
    expect(card.querySelector('table')).toBeNull();
    expect(text(card.querySelector('.jp-memprofile-peak'))).toContain('512.0 MiB');
  });

  it('draws a single-point sparkline', () => {
    const card = renderCard(hostSummary({ sparkline: { device: 'host', t: [0], bytes: [5] } }));
    expect(card.querySelector('svg path')?.getAttribute('d')).toMatch(/^M[\d.]+ [\d.]+$/);
    expect(card.querySelector('svg circle')).not.toBeNull();
  });
});

describe('checkSummary', () => {
  it('accepts the example payload', () => {
    expect(checkSummary(hostSummary()).ok).toBe(true);
  });
});
