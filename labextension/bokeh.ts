/**
 * BokehJS for the panel: the prebuilt bundles (bokeh, widgets, tables) of each
 * supported bokeh minor, copied into the extension's static folder at build
 * time (scripts/copy-bokehjs.mjs, from the package.json aliases bokehjs-3.N).
 * A document draws only with the BokehJS of the bokeh that made it, so the
 * panel loads the bundles of the kernel's minor, on first use. BokehJS keeps
 * every loaded version at `window.Bokeh[version]`, so several coexist (also
 * beside another extension's). Re-bundling the BokehJS sources breaks
 * Bokeh >= 3.1 (class-field initialisation order), so they are not imported.
 *
 * A test checks this list, package.json and the built files agree.
 */

import trustedCode from './trusted_js.json';

export const BOKEH_VERSIONS = ['3.4.3', '3.5.2', '3.6.3', '3.7.3', '3.8.2', '3.9.2'];

const minorOf = (version: string): string => version.split('.').slice(0, 2).join('.');

/** The shipped BokehJS for a kernel's bokeh version: the same minor, or null. */
export function bokehFor(kernelVersion: string | undefined): string | null {
  if (typeof kernelVersion !== 'string') {
    return null;
  }
  return BOKEH_VERSIONS.find(v => minorOf(v) === minorOf(kernelVersion)) ?? null;
}

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
/** The files of one shipped BokehJS version, in load order. */
export const bokehFiles = (version: string): string[] =>
  ['bokeh', 'bokeh-widgets', 'bokeh-tables'].map(n => `${n}-${version}.min.js`);

/** The part of BokehJS the panel uses. */
export interface IBokeh {
  version: string;
  embed: { embed_item(item: unknown, target: HTMLElement): Promise<unknown> };
}

const loading = new Map<string, Promise<IBokeh>>();

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

/**
 * Load the shipped BokehJS `version` from `baseUrl` (the extension's static
 * URL) once, and return that version's instance. Its own widgets and tables
 * are always loaded with it: a bokeh of the same version that another
 * extension loaded may lack them.
 */
export function loadBokeh(baseUrl: string, version: string): Promise<IBokeh> {
  if (!BOKEH_VERSIONS.includes(version)) {
    return Promise.reject(new Error(`memprofile ships no BokehJS ${version}`));
  }
  let pending = loading.get(version);
  if (!pending) {
    const base = baseUrl.replace(/\/$/, '');
    pending = bokehFiles(version).reduce((chain, file) => chain.then(() => loadScript(`${base}/${file}`)),
      Promise.resolve())
      .then(() => {
        const root = (window as unknown as { Bokeh?: Record<string, IBokeh | undefined> }).Bokeh;
        const bokeh = root?.[version];
        if (!bokeh || !bokeh.embed) {
          throw new Error(`BokehJS ${version} loaded but did not register as window.Bokeh["${version}"]`);
        }
        return bokeh;
      })
      .catch(error => {
        loading.delete(version);
        throw error;
      });
    loading.set(version, pending);
  }
  return pending;
}
