import {
  LiveFeed,
  LiveView,
  MAX_KEPT,
  MAX_POINTS,
  Point,
  decimateMax,
  emptyLive,
  reduceLive,
  renderLive,
  sampleBytes
} from '../live';
import { MemprofilePanel } from '../panel';
import type { LiveMessage, LiveSample, LiveStartMessage, PanelProfile } from '../schema';
import { ProfileList } from '../store';
import { hostSummary } from './fixtures';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

// Recorded from the protocol (model/wire.py): a training loop on cuda:0, 10 samples a second.
const START: LiveStartMessage = {
  type: 'live_start',
  run: 'run-1',
  name: 'train',
  started: 1_700_000_000,
  budget_bytes: 6 * GiB,
  capacity_bytes: null
};

function sample(t: number, inUse: number, extra: Partial<LiveSample> = {}): LiveSample {
  return {
    t,
    clock: START.started + t,
    devices: [
      {
        name: 'cuda:0',
        in_use_bytes: inUse,
        reserved_bytes: inUse + 64 * MiB,
        max_in_use_bytes: inUse,
        capacity_bytes: 8 * GiB
      }
    ],
    step: Math.floor(t),
    ...extra
  };
}

function live(samples: LiveSample[], warnings: string[] = [], run = 'run-1'): LiveMessage {
  return { type: 'live', run, samples, warnings };
}

const WARNING = 'at +2.0 MiB per step, cuda:0 is full in about 40 steps (step 52)';

describe('reduceLive', () => {
  it('starts a run, grows with each live message, measures the rate and ends', () => {
    let s = reduceLive(emptyLive(), START, 100);
    expect(s.run).toBe('run-1');
    for (let i = 0; i < 21; i++) {
      s = reduceLive(s, live([sample(i / 10, (i + 1) * MiB)]), 100 + i / 10);
    }
    expect(s.samples).toHaveLength(21);
    expect(s.messages).toBe(21);
    expect(s.lastClock).toBeCloseTo(START.started + 2);
    expect(s.lastArrival).toBeCloseTo(102);
    // 20 messages over the last 2 s window's 1.9 s
    expect(s.rate).toBeGreaterThan(9.5);
    expect(s.rate).toBeLessThan(10.6);
    s = reduceLive(s, live([sample(2.1, 30 * MiB)], [WARNING]), 102.1);
    expect(s.warnings).toEqual([WARNING]);
    s = reduceLive(s, { type: 'live_end', run: 'run-1', profile_id: 'p7' }, 103);
    expect(s.ended).toBe(true);
    expect(s.profileId).toBe('p7');
    expect(s.samples).toHaveLength(22); // the final view stays
  });

  it('ignores an end of another run and starts afresh at the next live_start', () => {
    let s = reduceLive(reduceLive(emptyLive(), START, 1), live([sample(0, MiB)]), 1);
    expect(reduceLive(s, { type: 'live_end', run: 'other' }, 2)).toBe(s);
    s = reduceLive(s, { ...START, run: 'run-2' }, 3);
    expect(s.run).toBe('run-2');
    expect(s.samples).toHaveLength(0);
    expect(s.messages).toBe(0);
  });

  it('resumes from the live_state reply after a reload, then keeps pushed samples after it', () => {
    // the reload: a fresh page receives a push of the running cell before the reply
    let s = reduceLive(
      emptyLive(),
      live([sample(5.0, 9 * MiB), sample(5.1, 9 * MiB)], [WARNING]),
      10
    );
    expect(s.run).toBe('run-1');
    expect(s.start).toBeNull();
    const sofar = Array.from({ length: 50 }, (_, i) => sample(i / 10, (i + 1) * MiB));
    s = reduceLive(s, { type: 'live_state', start: START, samples: sofar, warnings: [] }, 10.1);
    expect(s.start?.name).toBe('train');
    expect(s.samples.map(x => x.t).slice(-3)).toEqual([4.9, 5.0, 5.1]);
    expect(s.samples).toHaveLength(52);
    expect(s.warnings).toEqual([WARNING]); // the newer push's
  });

  it('adds a pushed batch the live_state reply already held only once', () => {
    const sofar = [sample(0.0, MiB), sample(0.05, 2 * MiB), sample(0.1, 3 * MiB)];
    let s = reduceLive(
      emptyLive(),
      { type: 'live_state', start: START, samples: sofar, warnings: [] },
      1
    );
    // the kernel kept 0.1 before the reply's copy and sent it after: it comes again, with 0.15
    s = reduceLive(s, live([sample(0.1, 3 * MiB), sample(0.15, 4 * MiB)]), 1.1);
    expect(s.samples.map(x => x.t)).toEqual([0.0, 0.05, 0.1, 0.15]);
  });

  it('keeps at most MAX_KEPT samples of a long run, merging neighbours with their maxima', () => {
    let s = reduceLive(emptyLive(), START, 0);
    const n = MAX_KEPT + 5_001;
    const samples = Array.from({ length: n }, (_, i) => sample(i / 10, i === 12_345 ? GiB : MiB));
    s = reduceLive(s, live(samples), 1);
    expect(s.samples.length).toBeLessThanOrEqual(MAX_KEPT);
    expect(Math.max(...s.samples.map(x => sampleBytes(x.devices[0])))).toBe(GiB);
    expect(s.samples[s.samples.length - 1].t).toBeCloseTo((n - 1) / 10);
  });

  it('marks a shown run ended when the reply says nothing runs', () => {
    const s = reduceLive(reduceLive(emptyLive(), START, 1), live([sample(0, MiB)]), 1);
    const after = reduceLive(s, { type: 'live_state', start: null, samples: [] }, 2);
    expect(after.ended).toBe(true);
    expect(reduceLive(emptyLive(), { type: 'live_state', start: null }, 2).run).toBeNull();
  });
});

describe('decimateMax', () => {
  it('draws at most the budget and keeps every bucket maximum, the peak included', () => {
    const points: Point[] = Array.from({ length: 12_345 }, (_, i) => [i, i % 7]);
    points[8_765] = [8_765, 1_000]; // a one-sample spike
    const out = decimateMax(points, MAX_POINTS);
    expect(out.length).toBeLessThanOrEqual(MAX_POINTS);
    expect(Math.max(...out.map(p => p[1]))).toBe(1_000);
    expect(out.find(p => p[1] === 1_000)![0]).toBe(8_765);
    // in time order
    expect(out.every((p, i) => i === 0 || p[0] > out[i - 1][0])).toBe(true);
  });

  it('leaves a short line as it is', () => {
    const points: Point[] = [
      [0, 1],
      [1, 2]
    ];
    expect(decimateMax(points, 10)).toBe(points);
  });
});

describe('renderLive', () => {
  function longRun(n: number): ReturnType<typeof emptyLive> {
    let s = reduceLive(emptyLive(), START, 0);
    const samples: LiveSample[] = [];
    for (let i = 0; i < n; i++) {
      // a step's peak between samples shows in max_in_use_bytes
      const sm = sample(i / 10, 100 * MiB);
      sm.devices[0].max_in_use_bytes = i === n - 7 ? 3 * GiB : 100 * MiB;
      sm.detail = i < 20;
      samples.push(sm);
    }
    s = reduceLive(s, live(samples, [WARNING]), 1);
    return s;
  }

  it('draws at most 1,000 points, the peak kept, the capacity and budget as lines', () => {
    const node = renderLive(longRun(5_000));
    expect(Number(node.dataset.points)).toBeLessThanOrEqual(MAX_POINTS);
    expect(Number(node.dataset.points)).toBeGreaterThan(900);
    const lines = node.querySelectorAll('polyline');
    expect(lines).toHaveLength(2); // in use, and reserved (dashed by its class)
    expect(lines[1].getAttribute('class')).toContain('jp-memprofile-live-reserved');
    const ys = lines[0]
      .getAttribute('points')!
      .split(' ')
      .map(p => Number(p.split(',')[1]));
    // the one-sample 3 GiB spike is drawn (100 MiB lies near the bottom, y ≈ 200)
    expect(Math.min(...ys)).toBeLessThan(140);
    const labels = [...node.querySelectorAll('.jp-memprofile-live-label')].map(l => l.textContent);
    expect(labels).toContain('cuda:0 capacity 8.00 GiB');
    expect(labels).toContain('budget 6.00 GiB');
    expect(node.querySelectorAll('.jp-memprofile-live-capacity')).toHaveLength(1);
    expect(node.querySelectorAll('.jp-memprofile-live-detail')).toHaveLength(1);
    expect(node.querySelectorAll('.jp-memprofile-live-step').length).toBeGreaterThan(100);
  });

  it('shows the warning prominently and the latest figures in words', () => {
    const node = renderLive(longRun(50));
    const alert = node.querySelector('[role=alert]');
    expect(alert?.textContent).toContain(WARNING);
    expect(node.querySelector('.jp-memprofile-live-warnings')).toBe(node.children[1]);
    const figures = node.querySelector('.jp-memprofile-live-figures')!.textContent!;
    expect(figures).toContain('cuda:0 100.0 MiB (reserved 164.0 MiB) of 8.00 GiB');
    expect(figures).toContain('step 4');
    expect(node.dataset.state).toBe('running');
    expect(node.dataset.lastClock).toBe((START.started + 4.9).toFixed(3));
    expect(node.dataset.messages).toBe('1');
  });

  it('draws a capacity far above the data at the top, saying so', () => {
    let s = reduceLive(emptyLive(), { ...START, budget_bytes: null }, 0);
    const small = sample(0, MiB);
    small.devices[0].capacity_bytes = 128 * GiB;
    s = reduceLive(s, live([small, { ...small, t: 1 }]), 1);
    const labels = [...renderLive(s).querySelectorAll('.jp-memprofile-live-label')];
    expect(labels.map(l => l.textContent)).toEqual(['cuda:0 capacity 128.0 GiB (above the scale)']);
  });
});

describe('LiveView and the panel', () => {
  it('redraws once for many messages in a frame', () => {
    const host = document.createElement('div');
    const view = new LiveView(host);
    const feed = new LiveFeed();
    feed.onChange(s => view.update(s));
    feed.apply(START);
    for (let i = 0; i < 5; i++) {
      feed.apply(live([sample(i / 10, MiB)]));
    }
    expect(host.children).toHaveLength(0);
    view.flush();
    expect((host.firstElementChild as HTMLElement).dataset.messages).toBe('5');
  });

  function panelWithFeed(): {
    panel: MemprofilePanel;
    feed: LiveFeed;
    list: ProfileList;
    fetched: string[];
  } {
    const fetched: string[] = [];
    const panel = new MemprofilePanel({
      fetchProfile: (id: string) => {
        fetched.push(id);
        return new Promise<PanelProfile>(() => undefined);
      }
    } as never);
    const list = new ProfileList();
    const feed = new LiveFeed();
    panel.bind(list, 'Connected to the kernel.');
    panel.bindLive(feed);
    return { panel, feed, list, fetched };
  }

  it('shows the running cell, keeps the ended view until its profile is added, then opens it', () => {
    const { panel, feed, list, fetched } = panelWithFeed();
    const box = panel.node.querySelector('.jp-memprofile-live-box') as HTMLElement;
    expect(box.hidden).toBe(true);
    feed.apply(START);
    feed.apply(live([sample(0, MiB), sample(0.1, 2 * MiB)]));
    expect(box.hidden).toBe(false);
    feed.apply({ type: 'live_end', run: 'run-1', profile_id: 'p-train' });
    expect(box.hidden).toBe(false); // until the stored profile arrives
    expect(fetched).toEqual([]);
    list.add(hostSummary({ id: 'p-train' }), 0);
    expect(box.hidden).toBe(true);
    expect(fetched).toEqual(['p-train']);
    expect(panel.selectedId).toBe('p-train');
  });
});
