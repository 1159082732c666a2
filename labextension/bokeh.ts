/**
 * BokehJS for the panel: the prebuilt bundles of `@bokeh/bokehjs` (bokeh,
 * widgets, tables), copied into the extension's static folder at build time
 * (scripts/copy-bokehjs.mjs) and loaded once as the global `Bokeh`.
 * Re-bundling the BokehJS sources breaks Bokeh >= 3.1 (class-field
 * initialisation order), so they are not imported.
 *
 * The version must be the Python `bokeh` that made the json_items; a test
 * checks this constant, package.json and the Python package agree.
 */

import trustedCode from './trusted_js.json';

export const BOKEH_VERSION = '3.9.2';

const TRUSTED = new Set<string>(trustedCode as string[]);

/**
 * Refuse a json_item that carries JavaScript other than memprofile's own
 * (render/interactive.py's TRUSTED_JS, copied to trusted_js.json): BokehJS
 * compiles CustomJS code and HTML templates, and the panel runs no code a
 * kernel made up. Throws with the offending model's name.
 */
export function checkTrusted(item: unknown): void {
  const seen = new Set<unknown>();
  const walk = (value: unknown): void => {
    if (typeof value !== 'object' || value === null || seen.has(value)) {
      return;
    }
    seen.add(value);
    if (Array.isArray(value)) {
      value.forEach(walk);
      return;
    }
    const record = value as Record<string, unknown>;
    const name = typeof record.name === 'string' ? record.name : '';
    const attributes = (record.attributes ?? {}) as Record<string, unknown>;
    const code = name.startsWith('CustomJS') ? attributes.code : name === 'HTMLTemplateFormatter' ? attributes.template
      : undefined;
    if ((name.startsWith('CustomJS') || name === 'HTMLTemplateFormatter') &&
        (typeof code !== 'string' || !TRUSTED.has(code))) {
      throw new Error(`the view carries JavaScript memprofile did not write (${name}); it was not drawn`);
    }
    Object.values(record).forEach(walk);
  };
  walk(item);
}
export const BOKEH_FILES = ['bokeh', 'bokeh-widgets', 'bokeh-tables'].map(n => `${n}-${BOKEH_VERSION}.min.js`);

/** The part of the global Bokeh the panel uses. */
export interface IBokeh {
  version: string;
  embed: { embed_item(item: unknown, target: HTMLElement): Promise<unknown> };
}

let loading: Promise<IBokeh> | null = null;

function loadScript(src: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.async = false; // widgets and tables extend bokeh: keep the order
    script.onload = () => resolve();
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.appendChild(script);
  });
}

/** Load BokehJS from `baseUrl` (the extension's static URL) once. */
export function loadBokeh(baseUrl: string): Promise<IBokeh> {
  const existing = (window as unknown as { Bokeh?: IBokeh }).Bokeh;
  if (existing && existing.version === BOKEH_VERSION && existing.embed) {
    return Promise.resolve(existing);
  }
  if (!loading) {
    const base = baseUrl.replace(/\/$/, '');
    loading = BOKEH_FILES.reduce((chain, file) => chain.then(() => loadScript(`${base}/${file}`)), Promise.resolve())
      .then(() => {
        const bokeh = (window as unknown as { Bokeh?: IBokeh }).Bokeh;
        if (!bokeh || !bokeh.embed) {
          throw new Error('BokehJS loaded but did not define window.Bokeh');
        }
        return bokeh;
      })
      .catch(error => {
        loading = null;
        throw error;
      });
  }
  return loading;
}
