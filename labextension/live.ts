/**
 * The running cell, live: the kernel's live feed (live_start, live, live_end
 * pushes and the live_state reply, model/wire.py) reduced to one state
 * (`reduceLive`), kept per kernel (`LiveFeed`), and drawn as a growing SVG
 * timeline (`renderLive`), redrawn at most once a frame (`LiveView`).
 *
 * Plain SVG, not BokehJS: it redraws 10–20 times a second. At most
 * `MAX_POINTS` points are drawn in all; decimation keeps each bucket's maximum
 * so a peak between two points still shows. No JupyterLab import: jest runs it.
 */

import { el } from './dom';
import { formatBytes, formatDuration } from './format';
import type { KernelPush, LiveDevice, LiveReply, LiveSample, LiveStartMessage } from './schema';

/** The most points the timeline draws, all its lines together. */
export const MAX_POINTS = 1000;
/** Samples kept per run; beyond it, neighbours merge two into one (their maxima kept). */
export const MAX_KEPT = 20_000;
/** The window (page seconds) over which the update rate is measured. */
const RATE_WINDOW_S = 2;

/** The running (or last) cell's feed, as the panel knows it. */
export interface ILiveState {
  run: string | null;
  start: LiveStartMessage | null;
  samples: LiveSample[];
  warnings: string[];
  /** The cell ended (live_end); the stored profile's id when one was stored. */
  ended: boolean;
  profileId: string | null;
  /** Live messages received (pushes and replies that carried samples). */
  messages: number;
  /** The last sample's kernel clock, and the page's clock (epoch s) when it arrived. */
  lastClock: number | null;
  lastArrival: number | null;
  /** Page times (s) of the recent live messages, and the rate they came at (Hz). */
  arrivals: number[];
  rate: number;
}

export function emptyLive(): ILiveState {
  return {
    run: null,
    start: null,
    samples: [],
    warnings: [],
    ended: false,
    profileId: null,
    messages: 0,
    lastClock: null,
    lastArrival: null,
    arrivals: [],
    rate: 0
  };
}

/** A message the feed takes: a push of the live kind or the live_state reply. */
export type LiveInput = KernelPush | LiveReply;

/** The bytes a sample shows for a device: the most in use since the last sample. */
export function sampleBytes(d: LiveDevice): number {
  return Math.max(d.in_use_bytes, d.max_in_use_bytes ?? 0);
}

/** Two neighbouring samples as one: the later one, each device's maximum kept. */
function mergePair(a: LiveSample, b: LiveSample): LiveSample {
  const before = new Map(a.devices.map(d => [d.name, sampleBytes(d)]));
  return {
    ...b,
    detail: Boolean(a.detail || b.detail),
    devices: b.devices.map(d => ({
      ...d,
      max_in_use_bytes: Math.max(sampleBytes(d), before.get(d.name) ?? 0)
    }))
  };
}

function keep(samples: LiveSample[]): LiveSample[] {
  if (samples.length <= MAX_KEPT) {
    return samples;
  }
  const merged: LiveSample[] = [];
  for (let i = 0; i + 1 < samples.length; i += 2) {
    merged.push(mergePair(samples[i], samples[i + 1]));
  }
  if (samples.length % 2) {
    merged.push(samples[samples.length - 1]);
  }
  return merged;
}

/** The arrival of a message with samples: counted, and the rate over the last window. */
function arrived(state: ILiveState, samples: LiveSample[], now: number): ILiveState {
  const arrivals = [...state.arrivals, now].filter(t => t > now - RATE_WINDOW_S);
  const span = arrivals.length > 1 ? arrivals[arrivals.length - 1] - arrivals[0] : 0;
  const last = samples.length ? samples[samples.length - 1] : null;
  return {
    ...state,
    messages: state.messages + 1,
    arrivals,
    rate: span > 0 ? (arrivals.length - 1) / span : state.rate,
    lastClock: last ? last.clock : state.lastClock,
    lastArrival: last ? now : state.lastArrival
  };
}

/** A new run, or the same one resumed (after a page reload its messages come without live_start). */
function forRun(state: ILiveState, run: string): ILiveState {
  return state.run === run ? state : { ...emptyLive(), run };
}

/**
 * The feed after `message` arrived at page time `now` (epoch seconds). Messages of
 * other kinds leave it as it is.
 */
export function reduceLive(state: ILiveState, message: LiveInput, now: number): ILiveState {
  switch (message.type) {
    case 'live_start':
      return { ...emptyLive(), run: message.run, start: message };
    case 'live': {
      const s = forRun(state, message.run);
      // a batch the kernel kept before the live_state reply's copy and sent after it comes
      // twice: only what is newer than the last sample held is added
      const last = s.samples.length ? s.samples[s.samples.length - 1].t : -Infinity;
      const fresh = message.samples.filter(sample => sample.t > last);
      return arrived(
        {
          ...s,
          ended: false,
          samples: keep([...s.samples, ...fresh]),
          warnings: message.warnings ?? s.warnings
        },
        message.samples,
        now
      );
    }
    case 'live_end':
      return state.run === message.run
        ? { ...state, ended: true, profileId: message.profile_id ?? null }
        : state;
    case 'live_state':
      return resume(state, message, now);
    default:
      return state;
  }
}

/** The live_state reply: the running cell's feed so far (a page reload resumes from it). */
function resume(state: ILiveState, reply: LiveReply, now: number): ILiveState {
  if (!reply.start) {
    // nothing runs now: a run shown as running ended while the reply was on its way
    return state.run && !state.ended ? { ...state, ended: true } : state;
  }
  const s = forRun(state, reply.start.run);
  const samples = reply.samples ?? [];
  // the reply's samples are the run's so far: keep those pushed after the last of them
  const lastT = samples.length ? samples[samples.length - 1].t : -Infinity;
  const later = s.samples.filter(x => x.t > lastT);
  const next = {
    ...s,
    start: reply.start,
    ended: false,
    samples: keep([...samples, ...later]),
    warnings: later.length ? s.warnings : (reply.warnings ?? [])
  };
  return samples.length ? arrived(next, samples, now) : next;
}

/** One line's points: (t, bytes). */
export type Point = [number, number];

/**
 * At most `budget` points of `points` (in time order): each bucket of neighbours
 * gives its largest, so a peak is never decimated away.
 */
export function decimateMax(points: Point[], budget: number): Point[] {
  if (points.length <= budget) {
    return points;
  }
  const out: Point[] = [];
  const size = points.length / budget;
  for (let b = 0; b < budget; b++) {
    let best = points[Math.floor(b * size)];
    const end = Math.min(points.length, Math.floor((b + 1) * size));
    for (let i = Math.floor(b * size) + 1; i < end; i++) {
      if (points[i][1] > best[1]) {
        best = points[i];
      }
    }
    out.push(best);
  }
  return out;
}

/** Each device's name, in the order it first appears. */
function deviceNames(samples: LiveSample[]): string[] {
  const names = new Set<string>();
  for (const s of samples) {
    s.devices.forEach(d => names.add(d.name));
  }
  return [...names];
}

/** A device's line: in use (max since the previous sample), or reserved. */
function series(samples: LiveSample[], name: string, reserved: boolean): Point[] {
  const points: Point[] = [];
  for (const s of samples) {
    const d = s.devices.find(x => x.name === name);
    const y = d ? (reserved ? d.reserved_bytes : sampleBytes(d)) : null;
    if (typeof y === 'number') {
      points.push([s.t, y]);
    }
  }
  return points;
}

/** The newest figure of a device that the feed gives (its capacity, say). */
function latest(samples: LiveSample[], name: string, key: keyof LiveDevice): number | null {
  for (let i = samples.length - 1; i >= 0; i--) {
    const v = samples[i].devices.find(d => d.name === name)?.[key];
    if (typeof v === 'number') {
      return v;
    }
  }
  return null;
}

/** The time ranges in which the detail recorded. */
function detailRanges(samples: LiveSample[]): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  for (let i = 0; i < samples.length; i++) {
    if (!samples[i].detail) {
      continue;
    }
    const t0 = i ? samples[i - 1].t : samples[i].t;
    const last = ranges[ranges.length - 1];
    if (last && last[1] >= t0) {
      last[1] = samples[i].t;
    } else {
      ranges.push([t0, samples[i].t]);
    }
  }
  return ranges;
}

/** The times at which a step ended (the step count rose). */
function stepEnds(samples: LiveSample[]): number[] {
  const ends: number[] = [];
  for (let i = 1; i < samples.length; i++) {
    if ((samples[i].step ?? 0) > (samples[i - 1].step ?? 0)) {
      ends.push(samples[i].t);
    }
  }
  return ends;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

function svg(tag: string, attrs: Record<string, string | number>): SVGElement {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    node.setAttribute(k, String(v));
  }
  return node;
}

function svgText(x: number, y: number, text: string, cls: string): SVGElement {
  const node = svg('text', { x, y, class: cls });
  node.textContent = text;
  return node;
}

/** The chart's size in SVG units (it scales to the panel's width). */
export const WIDTH = 600;
export const HEIGHT = 220;
const PAD = { left: 8, right: 8, top: 14, bottom: 18 };
const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];

/** A horizontal limit (a capacity, the budget) and its label; off the scale it is drawn at the top. */
interface ILimit {
  label: string;
  bytes: number;
  cls: string;
}

/** The limits the feed knows: the stated capacity, the budget, each device's capacity. */
function limits(state: ILiveState, names: string[]): ILimit[] {
  const out: ILimit[] = [];
  const start = state.start;
  if (start?.capacity_bytes) {
    out.push({ label: 'stated capacity', bytes: start.capacity_bytes, cls: 'capacity' });
  }
  if (start?.budget_bytes) {
    out.push({ label: 'budget', bytes: start.budget_bytes, cls: 'budget' });
  }
  for (const name of names) {
    const capacity = latest(state.samples, name, 'capacity_bytes');
    if (capacity) {
      out.push({ label: `${name} capacity`, bytes: capacity, cls: 'capacity' });
    }
  }
  return out;
}

/** What the SVG draws, in data units: lines, limits, detail ranges, step ends, scales. */
interface IChart {
  lines: Array<{ name: string; points: Point[]; reserved: boolean; colour: string }>;
  limits: ILimit[];
  ymax: number;
  tmax: number;
}

function chartOf(state: ILiveState): IChart {
  const names = deviceNames(state.samples);
  const raw: IChart['lines'] = [];
  names.forEach((name, i) => {
    const colour = COLOURS[i % COLOURS.length];
    raw.push({ name, points: series(state.samples, name, false), reserved: false, colour });
    const reserved = series(state.samples, name, true);
    if (reserved.length) {
      raw.push({ name, points: reserved, reserved: true, colour });
    }
  });
  const budget = Math.floor(MAX_POINTS / Math.max(1, raw.length));
  const lines = raw.map(l => ({ ...l, points: decimateMax(l.points, budget) }));
  const dataMax = Math.max(1, ...lines.flatMap(l => l.points.map(p => p[1])));
  const all = limits(state, names);
  // a limit far above the data (a machine's RAM under a small model) would flatten it: drawn at the top
  const near = all.filter(l => l.bytes <= 4 * dataMax).map(l => l.bytes);
  const ymax = Math.max(dataMax, ...near) * 1.08;
  const last = state.samples[state.samples.length - 1];
  return { lines, limits: all, ymax, tmax: Math.max(1, last ? last.t : 0) };
}

/** The timeline as SVG: lines per device, limits, detail bands, step ticks. */
export function renderChart(state: ILiveState): { node: SVGElement; points: number } {
  const chart = chartOf(state);
  const root = svg('svg', {
    class: 'jp-memprofile-live-chart',
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    preserveAspectRatio: 'none',
    role: 'img'
  });
  const x0 = PAD.left;
  const x1 = WIDTH - PAD.right;
  const y0 = HEIGHT - PAD.bottom;
  const y1 = PAD.top;
  const X = (t: number) => x0 + ((x1 - x0) * t) / chart.tmax;
  const Y = (b: number) => y0 - ((y0 - y1) * Math.min(b, chart.ymax)) / chart.ymax;
  for (const [a, b] of detailRanges(state.samples)) {
    root.appendChild(
      svg('rect', {
        class: 'jp-memprofile-live-detail',
        x: X(a),
        y: y1,
        width: Math.max(1, X(b) - X(a)),
        height: y0 - y1
      })
    );
  }
  const ends = stepEnds(state.samples);
  const every = Math.ceil(ends.length / 200); // a tick per step, at most 200
  ends.forEach((t, i) => {
    if (i % every === 0) {
      root.appendChild(
        svg('line', { class: 'jp-memprofile-live-step', x1: X(t), x2: X(t), y1: y0, y2: y0 + 5 })
      );
    }
  });
  root.appendChild(
    svg('line', { class: 'jp-memprofile-live-axis', x1: x0, x2: x1, y1: y0, y2: y0 })
  );
  for (const limit of chart.limits) {
    const off = limit.bytes > chart.ymax;
    const y = off ? y1 : Y(limit.bytes);
    root.appendChild(
      svg('line', {
        class: `jp-memprofile-live-limit jp-memprofile-live-${limit.cls}`,
        x1: x0,
        x2: x1,
        y1: y,
        y2: y
      })
    );
    const text = `${limit.label} ${formatBytes(limit.bytes)}${off ? ' (above the scale)' : ''}`;
    root.appendChild(svgText(x1 - 2, y - 2, text, 'jp-memprofile-live-label'));
  }
  let points = 0;
  for (const line of chart.lines) {
    points += line.points.length;
    const d = line.points.map(([t, b]) => `${X(t).toFixed(1)},${Y(b).toFixed(1)}`).join(' ');
    const node = svg('polyline', {
      class: `jp-memprofile-live-line${line.reserved ? ' jp-memprofile-live-reserved' : ''}`,
      points: d,
      stroke: line.colour
    });
    node.dataset.device = line.name;
    root.appendChild(node);
  }
  root.appendChild(svgText(x0 + 2, HEIGHT - 3, '0 s', 'jp-memprofile-live-tick'));
  root.appendChild(
    svgText(x1 - 2, HEIGHT - 3, formatDuration(chart.tmax), 'jp-memprofile-live-tick jp-mod-end')
  );
  root.appendChild(svgText(x0 + 2, y1 - 3, formatBytes(chart.ymax), 'jp-memprofile-live-tick'));
  return { node: root, points };
}

/** The latest figures in words: each device's bytes, the step, the elapsed time. */
export function liveSummary(state: ILiveState): string {
  const last = state.samples[state.samples.length - 1];
  if (!last) {
    return state.ended ? 'The cell ended.' : 'Waiting for the first sample…';
  }
  const parts = last.devices.map(d => {
    const reserved =
      typeof d.reserved_bytes === 'number' ? ` (reserved ${formatBytes(d.reserved_bytes)})` : '';
    const of = d.capacity_bytes ? ` of ${formatBytes(d.capacity_bytes)}` : '';
    return `${d.name} ${formatBytes(sampleBytes(d))}${reserved}${of}`;
  });
  if (typeof last.heap_bytes === 'number') {
    parts.push(`heap ${formatBytes(last.heap_bytes)}`);
  }
  const step = last.step ?? 0;
  if (step) {
    const peaks = Object.entries(last.step_peak_bytes ?? {}).map(
      ([k, v]) => `${k} ${formatBytes(v)}`
    );
    const ends = Object.entries(last.step_end_bytes ?? {}).map(
      ([k, v]) => `${k} ${formatBytes(v)}`
    );
    let text = `step ${step}`;
    text += peaks.length ? `: peak ${peaks.join(', ')}` : '';
    text += ends.length ? `, end ${ends.join(', ')}` : '';
    parts.push(text);
  }
  if (last.detail) {
    parts.push('detail recording');
  }
  return `${formatDuration(last.t)} · ${parts.join(' · ')}`;
}

/** The whole live view, as a new element: title, warnings, chart, figures; data-* for tests. */
export function renderLive(state: ILiveState): HTMLElement {
  const root = el('div', 'jp-memprofile-live');
  const name = state.start?.name ?? 'the running cell';
  const title = state.ended ? `${name}: ended, loading its profile…` : `Live: ${name}`;
  root.appendChild(el('div', 'jp-memprofile-live-title', title));
  if (state.warnings.length) {
    const box = el('div', 'jp-memprofile-live-warnings');
    box.setAttribute('role', 'alert');
    state.warnings.forEach(w => box.appendChild(el('div', 'jp-memprofile-live-warning', `⚠ ${w}`)));
    root.appendChild(box);
  }
  const { node, points } = renderChart(state);
  root.appendChild(node);
  root.appendChild(el('div', 'jp-memprofile-live-figures', liveSummary(state)));
  const data = root.dataset;
  data.run = state.run ?? '';
  data.state = state.ended ? 'ended' : 'running';
  data.points = String(points);
  data.samples = String(state.samples.length);
  data.messages = String(state.messages);
  data.lastClock = state.lastClock === null ? '' : state.lastClock.toFixed(3);
  data.lastArrival = state.lastArrival === null ? '' : state.lastArrival.toFixed(3);
  data.rate = state.rate.toFixed(2);
  return root;
}

/** One kernel's feed: its state and who listens to it. */
export class LiveFeed {
  state: ILiveState = emptyLive();

  /** Take a message (other kinds are ignored); `now` is the page's clock, epoch seconds. */
  apply(message: LiveInput, now = Date.now() / 1000): void {
    const next = reduceLive(this.state, message, now);
    if (next !== this.state) {
      this.state = next;
      this._listeners.forEach(l => l(next));
    }
  }

  /** Forget the feed (the kernel restarted). */
  clear(): void {
    this.state = emptyLive();
    this._listeners.forEach(l => l(this.state));
  }

  onChange(listener: (s: ILiveState) => void): () => void {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  private _listeners = new Set<(s: ILiveState) => void>();
}

/** Draws a feed into `host`, at most once an animation frame however fast messages come. */
export class LiveView {
  constructor(readonly host: HTMLElement) {}

  /** Show `state` soon (the next frame). */
  update(state: ILiveState): void {
    this._pending = state;
    if (this._frame === null) {
      const raf = typeof requestAnimationFrame === 'function' ? requestAnimationFrame : null;
      this._frame = raf
        ? raf(() => this.flush())
        : (setTimeout(() => this.flush(), 16) as unknown as number);
    }
  }

  /** Draw the pending state now. */
  flush(): void {
    this._frame = null;
    const state = this._pending;
    if (!state) {
      return;
    }
    this._pending = null;
    this.host.replaceChildren(renderLive(state));
  }

  private _pending: ILiveState | null = null;
  private _frame: number | null = null;
}
