/**
 * Human-readable byte and time figures for the profile card.
 *
 * Pure functions, no JupyterLab imports: they are tested under plain jsdom.
 */

/** What a missing or non-numeric figure is shown as. */
export const MISSING = '—';

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

function isNumber(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value);
}

/**
 * Format a byte count with binary units: "812 B", "1.50 GiB", "512.0 MiB".
 *
 * Below 1024 the count is shown as a whole number of bytes; above, with two
 * decimals under 10 units and one decimal otherwise. Negative counts keep their
 * sign; null, undefined, NaN and infinities give {@link MISSING}.
 */
export function formatBytes(bytes: number | null | undefined): string {
  if (!isNumber(bytes)) {
    return MISSING;
  }
  if (bytes < 0) {
    return `-${formatBytes(-bytes)}`;
  }
  if (bytes < 1024) {
    return `${Math.round(bytes)} B`;
  }
  let unit = 0;
  let value = bytes;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  let text = value.toFixed(value < 10 ? 2 : 1);
  // 1023.97 KiB would round to "1024.0 KiB": show it as the next unit instead.
  if (Number(text) >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
    text = value.toFixed(2);
  }
  return `${text} ${BYTE_UNITS[unit]}`;
}

/** Like {@link formatBytes} with an explicit sign: "+256.0 MiB", "-1.00 KiB", "+0 B". */
export function formatSignedBytes(bytes: number | null | undefined): string {
  if (!isNumber(bytes)) {
    return MISSING;
  }
  return bytes < 0 ? formatBytes(bytes) : `+${formatBytes(bytes)}`;
}

/**
 * Format a duration in seconds: "850 µs", "12.5 ms", "1.23 s", "2 min 05 s", "1 h 02 min".
 */
export function formatDuration(seconds: number | null | undefined): string {
  if (!isNumber(seconds)) {
    return MISSING;
  }
  if (seconds < 0) {
    return `-${formatDuration(-seconds)}`;
  }
  if (seconds === 0) {
    return '0 s';
  }
  if (seconds < 1e-3) {
    return `${Math.round(seconds * 1e6)} µs`;
  }
  if (seconds < 1) {
    const ms = seconds * 1e3;
    const text = ms.toFixed(ms < 10 ? 2 : ms < 100 ? 1 : 0);
    return Number(text) >= 1000 ? '1.00 s' : `${text} ms`;
  }
  if (seconds < 60) {
    const text = seconds.toFixed(seconds < 10 ? 2 : 1);
    if (Number(text) < 60) {
      return `${text} s`;
    }
  }
  const totalSeconds = Math.round(seconds);
  if (totalSeconds < 3600) {
    const minutes = Math.floor(totalSeconds / 60);
    const rest = totalSeconds % 60;
    return `${minutes} min ${String(rest).padStart(2, '0')} s`;
  }
  const totalMinutes = Math.round(seconds / 60);
  const hours = Math.floor(totalMinutes / 60);
  const minutes = totalMinutes % 60;
  return `${hours} h ${String(minutes).padStart(2, '0')} min`;
}

/** Format a share in [0, 1] as a percentage: "42 %", "0.5 %", "<0.1 %". */
export function formatPercent(fraction: number | null | undefined): string {
  if (!isNumber(fraction)) {
    return MISSING;
  }
  const percent = fraction * 100;
  if (percent > 0 && percent < 0.1) {
    return '<0.1 %';
  }
  return `${percent.toFixed(percent < 10 ? 1 : 0)} %`;
}

/** A line of the profiled cell: "line 3", "before the cell" (line 0), "" when unknown. */
export function formatLine(line: number | null | undefined): string {
  if (!isNumber(line) || line < 0) {
    return '';
  }
  return line === 0 ? 'before the cell' : `line ${line}`;
}

/**
 * A tensor's size: "8.00 MiB", or "8.00 MiB tensor in a 15.75 MiB allocator block"
 * where the allocator gave a larger block than the tensor asked for.
 */
export function formatTensorSize(bytes: number, requested: number | null | undefined): string {
  if (isNumber(requested) && requested !== bytes) {
    return `${formatBytes(requested)} tensor in a ${formatBytes(bytes)} allocator block`;
  }
  return formatBytes(bytes);
}
