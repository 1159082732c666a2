/**
 * The profile card shown in a notebook cell's output.
 *
 * `renderCard` is a pure function from a ProfileSummary payload to a DOM tree.
 * Everything in the payload comes from the kernel, and names (the profile name,
 * device names, warnings, error messages, suggestion titles) come from user
 * code: they are only ever written through `textContent` / attributes, never
 * parsed as HTML, and nothing in the payload is executed.
 *
 * No JupyterLab imports here, so the card is tested under plain jsdom.
 */

import type {
  Device,
  ErrorInfo,
  LineStat,
  ProfileSummary,
  Sparkline,
  SuggestionBrief,
  TensorInfo
} from './schema';
import { el } from './dom';
import {
  formatBytes,
  formatDuration,
  formatLine,
  formatPercent,
  formatSignedBytes,
  formatTensorSize
} from './format';

/** The newest ProfileSummary schema_version this extension understands. */
export const SUPPORTED_SCHEMA_VERSION = 1;

/** The message shown for a payload written by a newer memprofile. */
export const NEWER_SCHEMA_MESSAGE =
  'Cannot show this memory profile: profile written by a newer memprofile; upgrade the extension (pip install -U memprofile).';

/** Memory categories in display order, with their legend labels. */
export const CATEGORIES: ReadonlyArray<readonly [string, string]> = [
  ['parameter', 'parameters'],
  ['gradient', 'gradients'],
  ['optimizer_state', 'optimizer state'],
  ['activation', 'activations'],
  ['temporary', 'temporaries'],
  ['input', 'inputs'],
  ['other', 'other']
];

const KNOWN_CATEGORIES = new Set(CATEGORIES.map(([key]) => key));

const SVG_NS = 'http://www.w3.org/2000/svg';

/** The result of checking a payload: a usable summary, or why it is not one. */
export type CheckResult =
  | { ok: true; summary: ProfileSummary }
  | { ok: false; reason: 'newer' | 'malformed'; message: string };

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

function isString(value: unknown): value is string {
  return typeof value === 'string';
}

function malformed(message: string): CheckResult {
  return {
    ok: false,
    reason: 'malformed',
    message: `Cannot show this memory profile: ${message}.`
  };
}

/**
 * Check that a payload is a ProfileSummary this extension can draw.
 *
 * Only the fields the card relies on are checked; optional parts that are
 * malformed (a bad sparkline, a bad device row) are dropped when drawing.
 */
export function checkSummary(data: unknown): CheckResult {
  if (!isRecord(data)) {
    return malformed('the output is not a JSON object');
  }
  const version = data.schema_version;
  if (isNumber(version) && version > SUPPORTED_SCHEMA_VERSION) {
    return { ok: false, reason: 'newer', message: NEWER_SCHEMA_MESSAGE };
  }
  if (!isNumber(version) || !Number.isInteger(version) || version < 1) {
    return malformed('"schema_version" is missing or not a positive integer');
  }
  if (!isNumber(data.peak_bytes)) {
    return malformed('"peak_bytes" is missing or not a number');
  }
  if (data.duration_s !== undefined && data.duration_s !== null && !isNumber(data.duration_s)) {
    return malformed('"duration_s" is not a number');
  }
  if (data.devices !== undefined && !Array.isArray(data.devices)) {
    return malformed('"devices" is not a list');
  }
  if (data.by_category !== undefined && !isRecord(data.by_category)) {
    return malformed('"by_category" is not an object');
  }
  return { ok: true, summary: data as unknown as ProfileSummary };
}

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attributes: Record<string, string | number>
): SVGElementTagNameMap[K] {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, String(value));
  }
  return node;
}

function validDevices(summary: ProfileSummary): Device[] {
  if (!Array.isArray(summary.devices)) {
    return [];
  }
  return summary.devices.filter(
    (device): device is Device =>
      isRecord(device) && isString(device.name) && isNumber(device.peak_bytes)
  );
}

function renderMessageCard(message: string, modifier: string): HTMLElement {
  const card = el('div', `jp-memprofile-card ${modifier}`);
  card.appendChild(el('div', 'jp-memprofile-message', message));
  return card;
}

function renderHeader(summary: ProfileSummary, devices: Device[]): HTMLElement {
  const header = el('div', 'jp-memprofile-header');
  if (isString(summary.name) && summary.name) {
    header.appendChild(el('span', 'jp-memprofile-name', summary.name));
  }

  const peak = el('span', 'jp-memprofile-peak');
  peak.appendChild(el('span', 'jp-memprofile-label', 'Peak '));
  peak.appendChild(el('strong', 'jp-memprofile-peak-bytes', formatBytes(summary.peak_bytes)));
  const peakDevice = isString(summary.peak_device) ? summary.peak_device : null;
  if (peakDevice) {
    peak.appendChild(document.createTextNode(' on '));
    peak.appendChild(el('span', 'jp-memprofile-device', peakDevice));
  }
  header.appendChild(peak);

  const device =
    devices.find(d => d.name === peakDevice) ?? (devices.length === 1 ? devices[0] : undefined);
  if (device && isNumber(device.baseline_bytes)) {
    const delta = summary.peak_bytes - device.baseline_bytes;
    header.appendChild(
      el('span', 'jp-memprofile-delta', `${formatSignedBytes(delta)} over baseline`)
    );
  }
  if (device && isNumber(device.capacity_bytes) && device.capacity_bytes > 0) {
    header.appendChild(
      el(
        'span',
        'jp-memprofile-capacity',
        `${formatPercent(summary.peak_bytes / device.capacity_bytes)} of ${formatBytes(device.capacity_bytes)}`
      )
    );
  }
  if (isNumber(summary.duration_s)) {
    header.appendChild(el('span', 'jp-memprofile-duration', formatDuration(summary.duration_s)));
  }
  return header;
}

/** The error, and where it happened (`ProfileSummary.error_place`, Python's words; older summaries: none). */
function renderError(error: ErrorInfo, place: unknown): HTMLElement {
  const box = el('div', 'jp-memprofile-error');
  box.setAttribute('role', 'alert');
  const type = isString(error.type) && error.type ? error.type : 'Error';
  const full = isString(error.message) ? error.message : '';
  // the message without the stack frames a framework put in it (older summaries: the message)
  const message = isString(error.headline) && error.headline ? error.headline : full;
  box.appendChild(el('span', 'jp-memprofile-error-type', type));
  if (isString(place) && place) {
    // where it failed leads: op, layer, line and bytes; the message's own words follow
    box.appendChild(el('div', 'jp-memprofile-error-where', `It failed ${place}.`));
    if (message) {
      box.appendChild(el('div', 'jp-memprofile-error-message', message));
    }
  } else {
    box.appendChild(document.createTextNode(message ? `: ${message}` : ''));
  }
  const frames = isNumber(error.message_frames) ? error.message_frames : 0;
  if (full && (frames > 0 || message !== full)) {
    const details = el('details', 'jp-memprofile-error-full');
    details.appendChild(
      el(
        'summary',
        '',
        frames > 0 ? `The message in full (${frames} stack frames)` : 'The message in full'
      )
    );
    details.appendChild(el('pre', '', full));
    box.appendChild(details);
  }
  box.appendChild(
    el(
      'div',
      'jp-memprofile-error-note',
      'The cell raised; the profile covers the run up to the exception.'
    )
  );
  return box;
}

/** What ran at the peak: op, layer and the cell line with its source text. */
function renderPeakPlace(summary: ProfileSummary): HTMLElement | null {
  const box = el('div', 'jp-memprofile-peak-place');
  const add = (label: string, value: string, cls: string): void => {
    box.appendChild(document.createTextNode(box.childNodes.length > 1 ? ', ' : ''));
    box.appendChild(document.createTextNode(label));
    box.appendChild(el('code', cls, value));
  };
  box.appendChild(el('span', 'jp-memprofile-label', 'At the peak: '));
  if (isString(summary.peak_op) && summary.peak_op) {
    add('op ', summary.peak_op, 'jp-memprofile-peak-op');
  }
  if (isString(summary.peak_layer) && summary.peak_layer) {
    add('layer ', summary.peak_layer, 'jp-memprofile-peak-layer');
  }
  const line = formatLine(summary.peak_line);
  if (line) {
    box.appendChild(document.createTextNode(box.childNodes.length > 1 ? ', ' : ''));
    box.appendChild(el('span', 'jp-memprofile-peak-line', line));
    if (isString(summary.peak_line_text) && summary.peak_line_text) {
      box.appendChild(document.createTextNode(' '));
      box.appendChild(el('code', 'jp-memprofile-peak-line-text', summary.peak_line_text));
    }
  }
  return box.childNodes.length > 1 ? box : null;
}

function isTensor(value: unknown): value is TensorInfo {
  return isRecord(value) && isNumber(value.bytes);
}

/** The largest tensors alive at the peak: size, shape, dtype and where each was made. */
function renderTensors(tensors: unknown): HTMLElement | null {
  const rows = Array.isArray(tensors) ? tensors.filter(isTensor) : [];
  if (!rows.length) {
    return null;
  }
  const table = el('table', 'jp-memprofile-tensors');
  table.appendChild(el('caption', undefined, 'Largest tensors alive at the peak'));
  const body = table.createTBody();
  for (const t of rows) {
    const row = body.insertRow();
    const shape = Array.isArray(t.shape) ? t.shape.join('×') : '';
    const where = [
      isString(t.op) && t.op ? `op ${t.op}` : '',
      isString(t.layer) && t.layer ? `layer ${t.layer}` : '',
      formatLine(t.line)
    ].filter(part => part);
    row.append(
      el(
        'td',
        'jp-memprofile-num jp-memprofile-tensor-size',
        formatTensorSize(t.bytes, t.requested_bytes)
      ),
      el('td', 'jp-memprofile-tensor-shape', `${shape} ${isString(t.dtype) ? t.dtype : ''}`.trim()),
      el('td', 'jp-memprofile-tensor-where', where.join(', '))
    );
  }
  return table;
}

/** One row of a source view: a line of the cell and its figures. */
export interface ILineRow {
  line: number;
  text: string;
  peak_bytes?: number;
  allocated_bytes?: number;
  by_category?: Record<string, unknown>;
  ops?: Record<string, unknown>;
  layers?: Record<string, unknown>;
}

function isLineRow(value: unknown): value is ILineRow {
  return (
    isRecord(value) && isNumber(value.line) && (value.text === undefined || isString(value.text))
  );
}

/** A bar for the bytes a line holds at the peak, split by kind, scaled to the line holding the most. */
function lineBar(row: ILineRow, widest: number): HTMLElement {
  const bar = el('span', 'jp-memprofile-line-bar');
  const held = isNumber(row.peak_bytes) ? row.peak_bytes : 0;
  if (held <= 0 || widest <= 0) {
    return bar;
  }
  bar.style.width = `${((held / widest) * 100).toFixed(2)}%`;
  const entries = nonZeroCategories(row.by_category);
  const known = entries.reduce((sum, entry) => sum + entry.bytes, 0);
  if (held > known) {
    entries.push({ key: 'other', label: 'other', bytes: held - known });
  }
  bar.title = entries.map(entry => `${entry.label} ${formatBytes(entry.bytes)}`).join(', ');
  for (const entry of entries) {
    const segment = el('span', `jp-memprofile-line-segment ${categoryClass(entry.key)}`);
    segment.style.width = `${((entry.bytes / held) * 100).toFixed(2)}%`;
    bar.appendChild(segment);
  }
  return bar;
}

/** A name cut to its last characters: TF op names run long ("gradient_tape/…/MatMul"). */
function tail(name: string, max = 32): string {
  return name.length > max ? `…${name.slice(name.length - max + 1)}` : name;
}

/** "aten::mm, aten::gelu · layer encoder": what allocated the most on a line. */
export function lineNotes(row: ILineRow): string {
  const ops = Object.keys(isRecord(row.ops) ? row.ops : {})
    .slice(0, 2)
    .map(name => tail(name));
  const layer = Object.keys(isRecord(row.layers) ? row.layers : {})[0];
  return [ops.join(', '), layer ? `layer ${tail(layer)}` : ''].filter(part => part).join(' · ');
}

/**
 * The cell's source with per-line bars: bytes alive at the peak that each
 * line made (by kind), and what it allocated. A gap row (⋮) where lines are
 * left out; the line running at the peak is marked. Null when there is no line.
 */
export function renderLines(rows: unknown, peakLine: unknown, title: string): HTMLElement | null {
  const lines = Array.isArray(rows) ? rows.filter(isLineRow) : [];
  if (!lines.length) {
    return null;
  }
  const widest = Math.max(0, ...lines.map(row => (isNumber(row.peak_bytes) ? row.peak_bytes : 0)));
  const table = el('table', 'jp-memprofile-lines');
  table.appendChild(el('caption', undefined, title));
  const head = table.createTHead().insertRow();
  for (const label of ['line', 'alive at the peak', '', 'allocated', 'source']) {
    head.appendChild(el('th', undefined, label));
  }
  const body = table.createTBody();
  let previous: number | null = null;
  for (const row of lines) {
    if (previous !== null && row.line > previous + 1) {
      const gap = body.insertRow();
      gap.className = 'jp-memprofile-line-gap';
      gap.appendChild(el('td', 'jp-memprofile-num', '⋮'));
    }
    previous = row.line;
    const tr = body.insertRow();
    tr.dataset.line = String(row.line);
    if (row.line === peakLine) {
      tr.classList.add('jp-memprofile-line-peak');
    }
    const barCell = el('td', 'jp-memprofile-line-bar-cell');
    barCell.appendChild(lineBar(row, widest));
    const held = isNumber(row.peak_bytes) && row.peak_bytes > 0 ? formatBytes(row.peak_bytes) : '';
    const allocated =
      isNumber(row.allocated_bytes) && row.allocated_bytes > 0
        ? formatBytes(row.allocated_bytes)
        : '';
    const source = el('td', 'jp-memprofile-line-source');
    source.appendChild(
      el('code', undefined, row.line === 0 ? '(before the cell)' : (row.text ?? ''))
    );
    const made = lineNotes(row);
    if (made) {
      source.appendChild(el('span', 'jp-memprofile-line-made', `  # ${made}`));
    }
    if (row.line === peakLine) {
      source.appendChild(el('span', 'jp-memprofile-line-mark', ' ◀ peak'));
    }
    tr.append(
      el(
        'td',
        'jp-memprofile-num jp-memprofile-line-number',
        row.line === 0 ? '·' : String(row.line)
      ),
      barCell,
      el('td', 'jp-memprofile-num jp-memprofile-line-held', held),
      el('td', 'jp-memprofile-num jp-memprofile-line-allocated', allocated),
      source
    );
  }
  return table;
}

/** Category entries with a positive byte count, known categories first in display order. */
export function nonZeroCategories(
  byCategory: unknown
): Array<{ key: string; label: string; bytes: number }> {
  if (!isRecord(byCategory)) {
    return [];
  }
  const entries: Array<{ key: string; label: string; bytes: number }> = [];
  for (const [key, label] of CATEGORIES) {
    const bytes = byCategory[key];
    if (isNumber(bytes) && bytes > 0) {
      entries.push({ key, label, bytes });
    }
  }
  for (const [key, bytes] of Object.entries(byCategory)) {
    if (!KNOWN_CATEGORIES.has(key) && isNumber(bytes) && bytes > 0) {
      entries.push({ key, label: key, bytes });
    }
  }
  return entries;
}

function categoryClass(key: string): string {
  return KNOWN_CATEGORIES.has(key)
    ? `jp-memprofile-cat-${key.replace('_', '-')}`
    : 'jp-memprofile-cat-unknown';
}

function renderCategories(summary: ProfileSummary): HTMLElement | null {
  const entries = nonZeroCategories(summary.by_category);
  const total = entries.reduce((sum, entry) => sum + entry.bytes, 0);
  if (!entries.length || total <= 0) {
    return null;
  }
  const section = el('div', 'jp-memprofile-categories');
  const bar = el('div', 'jp-memprofile-bar');
  bar.setAttribute('role', 'img');
  bar.setAttribute(
    'aria-label',
    'Memory at the peak by category: ' +
      entries.map(entry => `${entry.label} ${formatBytes(entry.bytes)}`).join(', ')
  );
  const legend = el('ul', 'jp-memprofile-legend');
  for (const entry of entries) {
    const share = entry.bytes / total;
    const segment = el('div', `jp-memprofile-bar-segment ${categoryClass(entry.key)}`);
    segment.style.width = `${(share * 100).toFixed(3)}%`;
    segment.title = `${entry.label}: ${formatBytes(entry.bytes)} (${formatPercent(share)})`;
    bar.appendChild(segment);

    const item = el('li', 'jp-memprofile-legend-item');
    item.dataset.category = entry.key;
    item.appendChild(el('span', `jp-memprofile-swatch ${categoryClass(entry.key)}`));
    item.appendChild(el('span', 'jp-memprofile-legend-label', entry.label));
    item.appendChild(el('span', 'jp-memprofile-legend-bytes', formatBytes(entry.bytes)));
    legend.appendChild(item);
  }
  section.appendChild(bar);
  section.appendChild(legend);
  return section;
}

function isPoint(value: unknown): value is [number, number] {
  return Array.isArray(value) && value.length === 2 && isNumber(value[0]) && isNumber(value[1]);
}

/**
 * Draw the sparkline as Python drew it (`Sparkline.drawing`, render/sparkline.py: the
 * points of a line of steps, the peak, their titles); null for a summary without a
 * usable drawing (older kernels).
 */
export function renderSparkline(sparkline: Sparkline): SVGSVGElement | null {
  const drawing: unknown = isRecord(sparkline) ? sparkline.drawing : null;
  if (
    !isRecord(drawing) ||
    !isNumber(drawing.width) ||
    !isNumber(drawing.height) ||
    !isPoint(drawing.peak) ||
    !Array.isArray(drawing.points) ||
    !drawing.points.length ||
    !drawing.points.every(isPoint)
  ) {
    return null;
  }
  const { width, height } = drawing;
  const root = svg('svg', {
    class: 'jp-memprofile-sparkline',
    width,
    height,
    viewBox: `0 0 ${width} ${height}`,
    role: 'img'
  });
  const title = svg('title', {});
  title.textContent = isString(drawing.title) ? drawing.title : '';
  root.appendChild(title);
  const points = drawing.points.map(([x, y]) => `${x},${y}`).join(' ');
  root.appendChild(
    svg('polyline', { class: 'jp-memprofile-sparkline-line', points, fill: 'none' })
  );
  const peak = svg('circle', {
    class: 'jp-memprofile-sparkline-peak',
    cx: drawing.peak[0],
    cy: drawing.peak[1],
    r: 3
  });
  const peakTitle = svg('title', {});
  peakTitle.textContent = isString(drawing.peak_title) ? drawing.peak_title : '';
  peak.appendChild(peakTitle);
  root.appendChild(peak);
  return root;
}

/**
 * The steps line (`StepsBrief.text`, Python's words: render/lines.py steps_text): one line, cut
 * with an ellipsis where the card is narrow (the whole line in its title); none without steps
 * or from older kernels.
 */
function renderSteps(steps: unknown): HTMLElement | null {
  const text = isRecord(steps) && isString(steps.text) ? steps.text : '';
  if (!text) {
    return null;
  }
  const line = el('div', 'jp-memprofile-steps', text);
  line.title = text;
  Object.assign(line.style, {
    whiteSpace: 'nowrap',
    overflow: 'hidden',
    textOverflow: 'ellipsis'
  });
  return line;
}

/**
 * The will-it-fit line (`ProfileSummary.fits_line`, Python's words: render/prediction.py fits_line,
 * "predicted fits: T4 16 GB ✓ 41 % · …"): one line like the steps', none without a prediction.
 */
function renderFits(fits: unknown): HTMLElement | null {
  if (!isString(fits) || !fits) {
    return null;
  }
  const line = el('div', 'jp-memprofile-fits', fits);
  line.title = fits;
  Object.assign(line.style, {
    whiteSpace: 'nowrap',
    overflow: 'hidden',
    textOverflow: 'ellipsis'
  });
  return line;
}

function renderSuggestion(suggestion: SuggestionBrief, count: unknown): HTMLElement | null {
  if (!isRecord(suggestion) || !isString(suggestion.title)) {
    return null;
  }
  const box = el('div', 'jp-memprofile-suggestion');
  box.appendChild(el('span', 'jp-memprofile-label', 'Suggestion: '));
  box.appendChild(el('span', 'jp-memprofile-suggestion-title', suggestion.title));
  if (isNumber(suggestion.estimated_saving_bytes) && suggestion.estimated_saving_bytes > 0) {
    box.appendChild(
      el(
        'span',
        'jp-memprofile-suggestion-saving',
        ` (saves about ${formatBytes(suggestion.estimated_saving_bytes)})`
      )
    );
  }
  if (isNumber(count) && count > 1) {
    box.appendChild(el('span', 'jp-memprofile-suggestion-more', ` and ${count - 1} more`));
  }
  return box;
}

/** A note's message in one short line: its first sentence, at most NOTE_SHORT characters. */
const NOTE_SHORT = 160;
export function shortNote(message: string): string {
  const first = message.split(/(?<=[.;])\s/)[0];
  return first.length <= NOTE_SHORT ? first : `${first.slice(0, NOTE_SHORT - 1).trimEnd()}…`;
}

/**
 * The capture's notes: each a short line, the whole message under "more"
 * when it is longer, and the fix (a magic line or code for the first cell)
 * as code. Older outputs carry plain strings.
 */
export function renderNotes(notes: unknown): HTMLElement | null {
  if (!Array.isArray(notes)) {
    return null;
  }
  const items = notes
    .map(n => (isString(n) ? { message: n } : (n as { message?: unknown; fix?: unknown })))
    .filter(n => isString(n.message) && n.message.length > 0) as {
    message: string;
    fix?: unknown;
  }[];
  if (!items.length) {
    return null;
  }
  const list = el('ul', 'jp-memprofile-warnings');
  for (const note of items) {
    const item = el('li', 'jp-memprofile-warning');
    const short = shortNote(note.message);
    item.appendChild(el('span', 'jp-memprofile-note-text', short));
    if (short !== note.message) {
      const more = el('details', 'jp-memprofile-note-more');
      more.append(el('summary', undefined, 'more'), el('div', undefined, note.message));
      item.appendChild(more);
    }
    if (isString(note.fix) && note.fix) {
      item.appendChild(el('pre', 'jp-memprofile-code jp-memprofile-note-fix', note.fix));
    }
    list.appendChild(item);
  }
  return list;
}

function renderDeviceTable(devices: Device[]): HTMLElement {
  const table = el('table', 'jp-memprofile-devices');
  const head = table.createTHead().insertRow();
  for (const label of ['Device', 'Peak', 'Baseline', 'End', 'Capacity']) {
    head.appendChild(el('th', undefined, label));
  }
  const body = table.createTBody();
  for (const device of devices) {
    const row = body.insertRow();
    row.appendChild(el('td', 'jp-memprofile-device', device.name));
    for (const value of [
      device.peak_bytes,
      device.baseline_bytes,
      device.end_bytes,
      device.capacity_bytes
    ]) {
      row.appendChild(el('td', 'jp-memprofile-num', formatBytes(isNumber(value) ? value : null)));
    }
  }
  return table;
}

function renderProfile(summary: ProfileSummary): HTMLElement {
  const devices = validDevices(summary);
  const card = el('div', 'jp-memprofile-card');
  if (isRecord(summary.error)) {
    card.classList.add('jp-memprofile-card-error');
  }
  card.appendChild(renderHeader(summary, devices));

  if (isRecord(summary.error)) {
    card.appendChild(renderError(summary.error, summary.error_place));
  }

  const body = el('div', 'jp-memprofile-body');
  const categories = renderCategories(summary);
  if (categories) {
    body.appendChild(categories);
  }
  const spark = summary.sparkline ? renderSparkline(summary.sparkline) : null;
  if (spark) {
    body.appendChild(spark);
  }
  if (body.childNodes.length) {
    card.appendChild(body);
  }
  for (const part of [
    isString(summary.peak_scope) && summary.peak_scope
      ? el('div', 'jp-memprofile-peak-scope', summary.peak_scope)
      : null,
    renderSteps(summary.steps),
    renderFits(summary.fits_line),
    renderPeakPlace(summary),
    renderTensors(summary.peak_tensors),
    renderLines(
      summary.peak_lines as LineStat[] | undefined,
      summary.peak_line,
      'Lines holding the most at the peak'
    )
  ]) {
    if (part) {
      card.appendChild(part);
    }
  }

  const suggestion = summary.top_suggestion
    ? renderSuggestion(summary.top_suggestion, summary.suggestion_count)
    : null;
  if (suggestion) {
    card.appendChild(suggestion);
  }
  const warnings = renderNotes(summary.warnings);
  if (warnings) {
    card.appendChild(warnings);
  }
  if (devices.length > 1) {
    card.appendChild(renderDeviceTable(devices));
  }
  if (typeof summary.id === 'string' && summary.id) {
    card.appendChild(renderOpenButton(summary.id));
  }
  return card;
}

/** The event the card's button sends up the page; the panel plugin opens the profile. */
export const OPEN_EVENT = 'memprofile:open';

function renderOpenButton(id: string): HTMLElement {
  const button = el('button', 'jp-memprofile-open', 'Open in memprofile panel');
  button.type = 'button';
  button.addEventListener('click', () => {
    button.dispatchEvent(new CustomEvent(OPEN_EVENT, { bubbles: true, detail: { id } }));
  });
  return button;
}

/**
 * Render a ProfileSummary payload as a card.
 *
 * Never throws: a payload from a newer memprofile or a malformed one gives a
 * card with a readable message instead.
 */
export function renderCard(summary: ProfileSummary): HTMLElement {
  const check = checkSummary(summary);
  if (!check.ok) {
    return renderMessageCard(
      check.message,
      check.reason === 'newer' ? 'jp-memprofile-card-newer' : 'jp-memprofile-card-invalid'
    );
  }
  try {
    return renderProfile(check.summary);
  } catch (reason) {
    return renderMessageCard(
      `Cannot show this memory profile: ${reason instanceof Error ? reason.message : String(reason)}.`,
      'jp-memprofile-card-invalid'
    );
  }
}
