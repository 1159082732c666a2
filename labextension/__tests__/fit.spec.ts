import {
  CUSTOM,
  largestBatchText,
  parseSize,
  predictRequest,
  predictionLine,
  renderPrediction,
  sizeText,
  verdictText
} from '../fit';
import type { Prediction } from '../schema';

const H100: Prediction = {
  device: 'H100-80GB',
  capacity_bytes: 85_045_395_456,
  allocated_peak_bytes: 40 * 2 ** 30,
  reserved_peak_bytes: 42 * 2 ** 30,
  device_total_bytes: 42 * 2 ** 30 + 500 * 2 ** 20,
  fits: true,
  method: 'replay',
  batch: 8,
  measured_batch: 4,
  seq_len: 1024,
  measured_seq_len: 512,
  largest_batch: 12,
  notes: ['the timeline replayed with its batch-sized memory scaled']
};

describe('Will it fit: the request', () => {
  it('takes a number or a factor, as typed, and none for as measured', () => {
    expect(parseSize('64', 'batch')).toBe('64');
    expect(parseSize(' 4x ', 'batch')).toBe('4x');
    expect(parseSize('2 ×', 'batch')).toBe('2×');
    expect(parseSize('1.5x', 'batch')).toBe('1.5x');
    expect(parseSize('', 'batch')).toBeNull();
    for (const bad of ['lots', '-4', '4xx', '0', '0x', 'x4', '4.5']) {
      expect(() => parseSize(bad, 'batch')).toThrow('give a number (64) or a factor (4x)');
    }
  });

  it('names a known device, or a custom capacity in bytes from GB', () => {
    expect(predictRequest('p', { device: 'T4', capacityGb: '', batch: '4x', seqLen: '' })).toEqual({
      type: 'predict',
      id: 'p',
      device: 'T4',
      batch: '4x'
    });
    expect(
      predictRequest('p', { device: CUSTOM, capacityGb: '24', batch: '', seqLen: '2x' })
    ).toEqual({
      type: 'predict',
      id: 'p',
      capacity_bytes: 24_000_000_000,
      seq_len: '2x'
    });
    expect(() =>
      predictRequest('p', { device: CUSTOM, capacityGb: '', batch: '', seqLen: '' })
    ).toThrow('capacity in GB');
    expect(() =>
      predictRequest('p', { device: CUSTOM, capacityGb: '-3', batch: '', seqLen: '' })
    ).toThrow('capacity in GB');
    expect(() =>
      predictRequest('p', { device: '', capacityGb: '', batch: '', seqLen: '' })
    ).toThrow('choose a device');
  });
});

describe('Will it fit: the words', () => {
  it('says predicted on the verdict, the largest batch and every figure', () => {
    expect(verdictText(H100)).toBe('✓ predicted to fit on H100-80GB');
    expect(verdictText({ ...H100, fits: false })).toBe('✗ predicted not to fit on H100-80GB');
    expect(sizeText(H100)).toBe('batch 8 × 1,024 (measured at 4 × 512)');
    expect(sizeText({ ...H100, seq_len: 512 })).toBe('batch 8 (measured at 4)');
    expect(sizeText({ ...H100, batch: 4, seq_len: 512 })).toBe('batch 4');
    expect(sizeText({ ...H100, batch: null, seq_len: null })).toBe('batch as measured');
    expect(largestBatchText({ ...H100, largest_batch: null })).toBe('');
    expect(largestBatchText({ ...H100, batch: 4096, accumulation_steps: 342 })).toBe(
      'largest batch that fits (predicted): 12, 342 gradient-accumulation steps for batch 4,096'
    );
    expect(predictionLine(H100)).toBe(
      '✓ H100-80GB · batch 8 × 1,024 (measured at 4 × 512) · predicted 42.5 GiB of 79.2 GiB (54 %) · ' +
        'largest batch that fits (predicted): 12'
    );
    const box = renderPrediction({ prediction: H100, text: 'H100-80GB, batch 8: predicted fits' });
    const figures = [...box.querySelectorAll('.jp-memprofile-prediction-figures li')].map(
      li => li.textContent
    );
    expect(figures).toEqual([
      'predicted allocated peak: 40.0 GiB',
      'predicted reserved peak: 42.0 GiB',
      'predicted device total: 42.5 GiB',
      'of 79.2 GiB: predicted 54 %, 15 % kept free',
      'largest batch that fits (predicted): 12',
      'method: replay'
    ]);
    expect(box.querySelector('.jp-memprofile-prediction-note')?.textContent).toBe(
      'note: the timeline replayed with its batch-sized memory scaled'
    );
    expect(box.querySelector('.jp-memprofile-prediction-text')?.textContent).toBe(
      'H100-80GB, batch 8: predicted fits'
    );
    expect(box.classList.contains('jp-mod-fits')).toBe(true);
  });
});
