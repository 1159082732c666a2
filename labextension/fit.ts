/**
 * The panel's "Will it fit" view: a device (the kernel's known devices, or a
 * custom capacity in GB), a batch ("64" or "4x") and an optional sequence
 * length; "Predict" asks the kernel (Profile.predict, on fake tensors) and
 * shows the prediction, every figure labelled predicted, with the profile's
 * earlier predictions below.
 *
 * The request is built and checked here (pure functions, tested under jest);
 * the prediction's sentences are the kernel's (render/prediction.py
 * prediction_text), shown line by line as text.
 */

import { el } from './dom';
import { formatBytes } from './format';
import type { PanelProfile, PredictRequest, PredictedReply, Prediction } from './schema';

/** The device choice that asks for a capacity instead of a known device. */
export const CUSTOM = 'custom';
export const TICK = '✓';
export const CROSS = '✗';

/** What the user chose, as typed. */
export interface IFitChoice {
  device: string;
  /** The custom device's capacity in GB (decimal, as makers name them), when device is CUSTOM. */
  capacityGb: string;
  batch: string;
  seqLen: string;
}

const SIZE = /^\s*(\d+|\d+(\.\d+)?\s*[x×])\s*$/;

/** A batch or sequence length as the kernel takes it: "64", "4x", or null (as measured). */
export function parseSize(text: string, what: string): string | null {
  if (!text.trim()) {
    return null;
  }
  const m = SIZE.exec(text);
  if (!m || /^\s*0+(\.0*)?\s*[x×]?\s*$/.test(text)) {
    throw new Error(`${what} ${JSON.stringify(text)}: give a number (64) or a factor (4x)`);
  }
  return m[1].replace(/\s+/g, '');
}

/** The "predict" request for `choice`; throws an Error that says what to type instead. */
export function predictRequest(id: string, choice: IFitChoice): PredictRequest {
  const request: PredictRequest = { type: 'predict', id };
  if (choice.device === CUSTOM) {
    const gb = Number(choice.capacityGb);
    if (!choice.capacityGb.trim() || !Number.isFinite(gb) || gb <= 0) {
      throw new Error('give the custom device its capacity in GB (e.g. 24)');
    }
    request.capacity_bytes = Math.round(gb * 1e9);
  } else if (choice.device) {
    request.device = choice.device;
  } else {
    throw new Error('choose a device');
  }
  const batch = parseSize(choice.batch, 'batch');
  const seqLen = parseSize(choice.seqLen, 'sequence length');
  if (batch !== null) {
    request.batch = batch;
  }
  if (seqLen !== null) {
    request.seq_len = seqLen;
  }
  return request;
}

/**
 * "batch 64 × 1,024 (measured at 16 × 512)": the size predicted for, and the run's own where it differs;
 * the sequence length only where it was changed (as render/prediction.py says it).
 */
export function sizeText(p: Prediction): string {
  const n = (v: number | null | undefined) =>
    typeof v === 'number' ? v.toLocaleString('en-US') : 'as measured';
  const seqChanged = typeof p.seq_len === 'number' && p.seq_len !== p.measured_seq_len;
  const batchChanged =
    typeof p.batch === 'number' &&
    typeof p.measured_batch === 'number' &&
    p.measured_batch !== p.batch;
  let text = `batch ${n(p.batch)}` + (seqChanged ? ` × ${n(p.seq_len)}` : '');
  if (batchChanged || seqChanged) {
    text += ` (measured at ${n(p.measured_batch)}${seqChanged ? ` × ${n(p.measured_seq_len)}` : ''})`;
  }
  return text;
}

/** "✓ predicted to fit on T4" / "✗ predicted not to fit on T4". */
export function verdictText(p: Prediction): string {
  return `${p.fits ? TICK : CROSS} predicted ${p.fits ? 'to fit' : 'not to fit'} on ${p.device}`;
}

/** The share of the device the run would take, as a whole percentage. */
export function sharePercent(p: Prediction): number {
  return p.capacity_bytes ? Math.round((100 * p.device_total_bytes) / p.capacity_bytes) : 0;
}

/** "largest batch that fits (predicted): 96, 3 gradient-accumulation steps for batch 256"; '' if not searched. */
export function largestBatchText(p: Prediction): string {
  if (typeof p.largest_batch !== 'number') {
    return '';
  }
  let text = `largest batch that fits (predicted): ${p.largest_batch.toLocaleString('en-US')}`;
  if (p.accumulation_steps && typeof p.batch === 'number') {
    text += `, ${p.accumulation_steps} gradient-accumulation steps for batch ${p.batch.toLocaleString('en-US')}`;
  }
  return text;
}

/** One earlier prediction in one line. */
export function predictionLine(p: Prediction): string {
  const parts = [
    `${p.fits ? TICK : CROSS} ${p.device}`,
    sizeText(p),
    `predicted ${formatBytes(p.device_total_bytes)} of ${formatBytes(p.capacity_bytes)} (${sharePercent(p)} %)`
  ];
  const largest = largestBatchText(p);
  if (largest) {
    parts.push(largest);
  }
  return parts.join(' · ');
}

/** A prediction as the view shows it: the verdict, the kernel's sentences, the method and the notes. */
export function renderPrediction(reply: Pick<PredictedReply, 'prediction' | 'text'>): HTMLElement {
  const p = reply.prediction;
  const box = el('div', 'jp-memprofile-prediction');
  box.classList.add(p.fits ? 'jp-mod-fits' : 'jp-mod-too-big');
  box.appendChild(
    el('div', 'jp-memprofile-prediction-verdict', `${verdictText(p)}, ${sizeText(p)}`)
  );
  const figures = el('ul', 'jp-memprofile-prediction-figures');
  for (const [label, bytes] of [
    ['predicted allocated peak', p.allocated_peak_bytes],
    ['predicted reserved peak', p.reserved_peak_bytes],
    ['predicted device total', p.device_total_bytes]
  ] as const) {
    figures.appendChild(el('li', undefined, `${label}: ${formatBytes(bytes)}`));
  }
  figures.appendChild(
    el(
      'li',
      undefined,
      `of ${formatBytes(p.capacity_bytes)}: predicted ${sharePercent(p)} %, ` +
        `${Math.round(100 * (p.headroom ?? 0.15))} % kept free`
    )
  );
  const largest = largestBatchText(p);
  if (largest) {
    figures.appendChild(el('li', 'jp-memprofile-prediction-largest', largest));
  }
  figures.appendChild(el('li', 'jp-memprofile-prediction-method', `method: ${p.method}`));
  box.appendChild(figures);
  for (const note of p.notes ?? []) {
    box.appendChild(el('div', 'jp-memprofile-prediction-note', `note: ${note}`));
  }
  // the same prediction in the kernel's words (the CLI's and the text report's), folded: the lines above say it
  const words = el('details', 'jp-memprofile-prediction-words');
  const text = el('pre', 'jp-memprofile-prediction-text');
  text.textContent = reply.text;
  words.append(el('summary', undefined, 'as text'), text);
  box.appendChild(words);
  return box;
}

function labelled(text: string, input: HTMLElement): HTMLElement {
  const label = el('label', 'jp-memprofile-fit-field', `${text} `);
  label.appendChild(input);
  return label;
}

function textInput(cls: string, placeholder: string, value = ''): HTMLInputElement {
  const input = el('input', `jp-memprofile-input ${cls}`);
  input.type = 'text';
  input.placeholder = placeholder;
  input.value = value;
  input.size = 8;
  return input;
}

/**
 * Draw the view into `body`. `predict` asks the kernel; each answer is shown and
 * added to `profile.predictions` (the list below), so the list survives a change of tab.
 */
export function renderFitView(
  profile: PanelProfile,
  body: HTMLElement,
  predict: (request: PredictRequest) => Promise<PredictedReply>
): void {
  const form = el('div', 'jp-memprofile-fit-form');
  const device = el('select', 'jp-memprofile-fit-device');
  for (const name of profile.known_devices ?? []) {
    device.appendChild(new Option(name, name));
  }
  device.appendChild(new Option('custom (GB)', CUSTOM));
  device.value = (profile.known_devices ?? []).includes('T4') ? 'T4' : device.options[0].value;
  const capacity = textInput('jp-memprofile-fit-capacity', 'GB, e.g. 24');
  const capacityField = labelled('capacity (GB)', capacity);
  const showCapacity = () => {
    capacityField.style.display = device.value === CUSTOM ? '' : 'none';
  };
  device.addEventListener('change', showCapacity);
  showCapacity();
  const batch = textInput('jp-memprofile-fit-batch', '64 or 4x');
  const seqLen = textInput('jp-memprofile-fit-seq', 'optional');
  const status = el('div', 'jp-memprofile-fit-status');
  const result = el('div', 'jp-memprofile-fit-result');
  const earlier = el('div', 'jp-memprofile-fit-earlier');
  const go = el('button', 'jp-memprofile-button jp-memprofile-predict', 'Predict');
  go.type = 'button';
  go.title =
    'Re-runs the cell on fake tensors in the kernel: no memory is used and no state changes';
  go.addEventListener('click', () => {
    let request: PredictRequest;
    try {
      request = predictRequest(profile.id, {
        device: device.value,
        capacityGb: capacity.value,
        batch: batch.value,
        seqLen: seqLen.value
      });
    } catch (error) {
      status.textContent = (error as Error).message;
      return;
    }
    go.disabled = true;
    status.textContent = 'Predicting (the cell re-executed on fake tensors)…';
    predict(request).then(
      reply => {
        go.disabled = false;
        status.textContent = '';
        result.textContent = '';
        result.appendChild(renderPrediction(reply));
        profile.predictions = [...(profile.predictions ?? []), reply.prediction];
        renderEarlier(earlier, profile.predictions);
      },
      error => {
        go.disabled = false;
        status.textContent = `Cannot predict: ${(error as Error).message}`;
      }
    );
  });
  form.append(
    labelled('device', device),
    capacityField,
    labelled('batch', batch),
    labelled('sequence length', seqLen),
    go
  );
  body.append(
    el(
      'p',
      'jp-memprofile-fit-intro',
      'Will this run fit on another device, at another batch? Predicted from this profile: nothing runs on the device.'
    ),
    form,
    status,
    result,
    earlier
  );
  renderEarlier(earlier, profile.predictions ?? []);
}

function renderEarlier(box: HTMLElement, predictions: Prediction[]): void {
  box.textContent = '';
  if (!predictions.length) {
    return;
  }
  box.appendChild(el('h3', 'jp-memprofile-fit-earlier-title', 'Predictions for this profile'));
  const list = el('ul', 'jp-memprofile-fit-list');
  for (const p of predictions) {
    list.appendChild(el('li', 'jp-memprofile-fit-item', predictionLine(p)));
  }
  box.appendChild(list);
}
