/**
 * BokehJS for the panel: the kernel's own. A bokeh document is drawn only by
 * the BokehJS of the bokeh that made it, and bokeh's minors come out after
 * memprofile's releases, so the panel ships none: it asks the kernel for the
 * BokehJS files of its bokeh installation (the "bokehjs" request;
 * render/bokehjs.py), once per version and page, as the HTML report inlines
 * them. BokehJS keeps every loaded version at `window.Bokeh[version]`, so
 * several coexist (kernels with different bokeh, another extension's).
 * Re-bundling the BokehJS sources breaks Bokeh >= 3.1 (class-field
 * initialisation order), so they are never imported here.
 *
 * The one code the panel runs from a kernel is that BokehJS (as bokeh's own
 * notebook output does); a view carrying any other JavaScript is refused
 * (checkTrusted).
 */

import trustedCode from './trusted_js.json';

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
    const code = name.startsWith('CustomJS')
      ? attributes.code
      : name === 'HTMLTemplateFormatter'
        ? attributes.template
        : undefined;
    if (
      (name.startsWith('CustomJS') || name === 'HTMLTemplateFormatter') &&
      (typeof code !== 'string' || !TRUSTED.has(code))
    ) {
      throw new Error(
        `the view carries JavaScript memprofile did not write (${name}); it was not drawn`
      );
    }
    Object.values(record).forEach(walk);
  };
  walk(item);
}
/** The part of BokehJS the panel uses. */
export interface IBokeh {
  version: string;
  embed: { embed_item(item: unknown, target: HTMLElement): Promise<unknown> };
  logger?: { set_level?(level: string): unknown };
}

/** A kernel's BokehJS: its bokeh version and the scripts (bokeh, widgets, tables) in load order. */
export interface IBokehScripts {
  version: string;
  scripts: string[];
}

const loading = new Map<string, Promise<IBokeh>>();

type BokehRoot = Record<string, IBokeh | undefined> | undefined;
const bokehRoot = (): BokehRoot => (window as unknown as { Bokeh?: BokehRoot }).Bokeh;

/** Run one script as a classic <script> (from a blob: URL, named for the browser's tools). */
function runScript(code: string, name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(
      new Blob([code, `\n//# sourceURL=${name}\n`], { type: 'text/javascript' })
    );
    const script = document.createElement('script');
    script.src = url;
    script.async = false; // widgets and tables extend bokeh: keep the order
    script.dataset.memprofile = name;
    const done = (error?: Error) => {
      URL.revokeObjectURL(url);
      if (error) {
        reject(error);
      } else {
        resolve();
      }
    };
    script.onload = () => done();
    script.onerror = () => done(new Error(`the browser refused ${name}`));
    document.head.appendChild(script);
  });
}

/**
 * The BokehJS of bokeh `version`, loaded once per page from the scripts the
 * kernel sends (`fetchScripts`). The kernel's widgets and tables are always
 * loaded with its bokeh: the same version loaded by another extension may
 * lack them. Rejects, saying why, when the kernel's bokeh is another version
 * (it changed since the view was made) or its scripts do not register.
 */
export function loadBokeh(
  version: string,
  fetchScripts: () => Promise<IBokehScripts>
): Promise<IBokeh> {
  let pending = loading.get(version);
  if (!pending) {
    pending = fetchScripts()
      .then(async ({ version: kernelVersion, scripts }) => {
        if (kernelVersion !== version) {
          throw new Error(
            `the kernel's bokeh is ${kernelVersion} now, and bokeh ${version} made this view: ` +
              'profile the cell again to draw it'
          );
        }
        const names = ['bokeh', 'bokeh-widgets', 'bokeh-tables'];
        for (const [i, code] of scripts.entries()) {
          await runScript(code, `memprofile-${names[i] ?? `bokeh-${i}`}-${version}.js`);
        }
        const bokeh = bokehRoot()?.[version];
        if (!bokeh || !bokeh.embed) {
          throw new Error(
            `the kernel's BokehJS ${version} loaded but did not register as window.Bokeh["${version}"]`
          );
        }
        // its "document idle at N ms" and other info lines are not the user's business; warnings still show
        // (the logger itself: Bokeh.set_log_level would print a line to say so)
        bokeh.logger?.set_level?.('warn');
        return bokeh;
      })
      .catch(error => {
        loading.delete(version); // the next view asks again
        throw error;
      });
    loading.set(version, pending);
  }
  return pending;
}
