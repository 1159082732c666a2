import {
  MISSING,
  formatBytes,
  formatDuration,
  formatLine,
  formatPercent,
  formatSignedBytes,
  formatTensorSize
} from '../format';

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [1, '1 B'],
    [812, '812 B'],
    [1023, '1023 B'],
    [1024, '1.00 KiB'],
    [1536, '1.50 KiB'],
    [10 * 1024, '10.0 KiB'],
    [1024 * 1024 - 1, '1.00 MiB'],
    [536870912, '512.0 MiB'],
    [1.5 * 1024 ** 3, '1.50 GiB'],
    [16000000000, '14.9 GiB'],
    [2 * 1024 ** 4, '2.00 TiB']
  ])('formats %p as %p', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });

  it('keeps the sign of negative counts', () => {
    expect(formatBytes(-1)).toBe('-1 B');
    expect(formatBytes(-1024)).toBe('-1.00 KiB');
    expect(formatBytes(-268435456)).toBe('-256.0 MiB');
  });

  it('shows missing values as a dash', () => {
    expect(formatBytes(null)).toBe(MISSING);
    expect(formatBytes(undefined)).toBe(MISSING);
    expect(formatBytes(NaN)).toBe(MISSING);
    expect(formatBytes(Infinity)).toBe(MISSING);
  });

  it('never shows 1024 of a unit', () => {
    expect(formatBytes(1024 * 1024 - 10)).toBe('1.00 MiB');
    expect(formatBytes(1024 ** 3 - 1)).toBe('1.00 GiB');
  });
});

describe('formatSignedBytes', () => {
  it('adds a plus sign to increases and zero', () => {
    expect(formatSignedBytes(268435456)).toBe('+256.0 MiB');
    expect(formatSignedBytes(0)).toBe('+0 B');
  });

  it('keeps the minus sign of decreases', () => {
    expect(formatSignedBytes(-2048)).toBe('-2.00 KiB');
  });

  it('shows missing values as a dash', () => {
    expect(formatSignedBytes(null)).toBe(MISSING);
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0 s'],
    [0.00085, '850 µs'],
    [0.0125, '12.5 ms'],
    [0.52, '520 ms'],
    [0.9999, '1.00 s'],
    [1.234, '1.23 s'],
    [12.34, '12.3 s'],
    [59.99, '1 min 00 s'],
    [125, '2 min 05 s'],
    [3725, '1 h 02 min']
  ])('formats %p s as %p', (seconds, text) => {
    expect(formatDuration(seconds)).toBe(text);
  });

  it('shows missing values as a dash', () => {
    expect(formatDuration(null)).toBe(MISSING);
    expect(formatDuration(undefined)).toBe(MISSING);
  });

  it('keeps the sign of negative durations', () => {
    expect(formatDuration(-1.5)).toBe('-1.50 s');
  });
});

describe('formatPercent', () => {
  it('formats shares', () => {
    expect(formatPercent(0.5)).toBe('50 %');
    expect(formatPercent(0.034)).toBe('3.4 %');
    expect(formatPercent(0.0001)).toBe('<0.1 %');
    expect(formatPercent(0)).toBe('0.0 %');
    expect(formatPercent(null)).toBe(MISSING);
  });
});

describe('formatLine', () => {
  it.each([
    [3, 'line 3'],
    [0, 'before the cell'],
    [null, ''],
    [undefined, ''],
    [-1, '']
  ])('%p gives %p', (line, expected) => {
    expect(formatLine(line as number | null | undefined)).toBe(expected);
  });
});

describe('formatTensorSize', () => {
  it('names the allocator block only where it is larger than the tensor', () => {
    expect(formatTensorSize(15.75 * 1024 ** 2, 8 * 1024 ** 2)).toBe(
      '8.00 MiB tensor in a 15.8 MiB allocator block'
    );
    expect(formatTensorSize(8 * 1024 ** 2, null)).toBe('8.00 MiB');
    expect(formatTensorSize(8 * 1024 ** 2, 8 * 1024 ** 2)).toBe('8.00 MiB');
  });
});
