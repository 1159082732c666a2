import type { ProfileSummary } from '../schema';

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
    sparkline: { device: 'host', t: [0, 0.01, 0.02], bytes: [268435456, 536870912, 300000000] },
    top_suggestion: null,
    suggestion_count: 0,
    error: null,
    warnings: ['host RSS includes memory not owned by tensors'],
    ...overrides
  };
}
