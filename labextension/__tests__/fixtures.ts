import type { ProfileSummary, StepsBrief } from '../schema';

/** A host-only profile like the one the Python side displays for a plain cell. */
export function hostSummary(overrides: Partial<ProfileSummary> = {}): ProfileSummary {
  return {
    schema_version: 1,
    id: '3f2a9c',
    name: 'In [3]',
    started_at: '2026-11-23T15:00:00+00:00',
    duration_s: 1.234,
    peak_bytes: 536870912,
    peak_device: 'host',
    peak_time_s: 0.52,
    devices: [
      {
        name: 'host',
        kind: 'process',
        source: 'rss',
        peak_bytes: 536870912,
        baseline_bytes: 268435456,
        end_bytes: 300000000,
        capacity_bytes: 16000000000,
        baseline_by_category: {}
      }
    ],
    by_category: {
      parameter: 0,
      gradient: 0,
      optimizer_state: 0,
      activation: 0,
      temporary: 0,
      input: 0,
      other: 536870912
    },
    sparkline: {
      device: 'host',
      t: [0, 0.01, 0.02],
      bytes: [268435456, 536870912, 300000000],
      // as render/sparkline.py draws it
      drawing: {
        width: 240,
        height: 40,
        points: [
          [3.0, 37.0],
          [120.0, 37.0],
          [120.0, 3.0],
          [237.0, 3.0],
          [237.0, 33.0]
        ],
        peak: [120.0, 3.0],
        title: 'host live bytes from 256.0 MiB to 512.0 MiB over 20.0 ms',
        peak_title: 'peak 512.0 MiB at 10.0 ms'
      }
    },
    top_suggestion: null,
    suggestion_count: 0,
    error: null,
    warnings: [{ code: 'host_rss', message: 'host RSS includes memory not owned by tensors' }],
    ...overrides
  };
}

/**
 * Training steps as ProfileSummary.steps carries them (render/lines.py
 * StepsBrief), each with the line render/lines.py steps_text writes for it
 * (`text`): tests/unit/test_render_steps.py checks the same pairs on the Python side.
 */
export const STEPS_BRIEFS: ReadonlyArray<StepsBrief> = [
  {
    count: 200,
    detail_first: 1,
    detail_last: 3,
    highest_step: 7,
    highest_bytes: 12897484,
    peaks_exact: true,
    end_first_bytes: 4299161,
    end_last_bytes: 4404019,
    ends_exact: true,
    text: '200 training steps · steps 1-3 in detail · highest step: 7 (12.3 MiB) · end of step: 4.10 MiB → 4.20 MiB'
  },
  {
    count: 5000,
    detail_first: 10,
    detail_last: 12,
    highest_step: 4,
    highest_bytes: 331075584,
    peaks_exact: false,
    end_first_bytes: 314056704,
    end_last_bytes: 331411456,
    ends_exact: false,
    text:
      '5,000 training steps · steps 10-12 in detail · highest step: 4 (315.7 MiB resident) · ' +
      'end of step: 299.5 MiB → 316.1 MiB (resident)'
  },
  {
    count: 1,
    detail_first: 1,
    detail_last: 1,
    highest_step: 1,
    highest_bytes: 1000,
    peaks_exact: true,
    end_first_bytes: null,
    end_last_bytes: null,
    ends_exact: false,
    text: '1 training step · step 1 in detail · highest step: 1 (1000 B)'
  },
  {
    count: 30,
    detail_first: 1,
    detail_last: 30,
    highest_step: 2,
    highest_bytes: 2048,
    peaks_exact: true,
    end_first_bytes: 1024,
    end_last_bytes: 1024,
    ends_exact: true,
    text: '30 training steps · every step in detail · highest step: 2 (2.00 KiB) · end of step: 1.00 KiB → 1.00 KiB'
  },
  {
    count: 50,
    detail_first: null,
    detail_last: null,
    highest_step: null,
    highest_bytes: null,
    end_first_bytes: null,
    end_last_bytes: null,
    text: '50 training steps · no step in detail'
  },
  {
    count: 50,
    detail_first: 1,
    detail_last: 3,
    highest_step: 50,
    highest_bytes: 230058880,
    peaks_exact: false,
    end_first_bytes: 3455420,
    end_last_bytes: 209060764,
    ends_exact: false,
    peaks_estimated: true,
    ends_estimated: true,
    text:
      '50 training steps · steps 1-3 in detail · highest step: 50 (219.4 MiB, estimated) · ' +
      'end of step: 3.30 MiB → 199.4 MiB (estimated)'
  }
];
