/**
 * The MIME renderer for memprofile's cell output.
 *
 * `%%memprofile` displays a bundle whose first entry is
 * `application/vnd.memprofile.profile.v1+json` (a ProfileSummary); this
 * extension draws it as a card. Rank 0 puts it ahead of the bundle's text/html
 * fallback (and of JupyterLab's own HTML renderer, rank 50).
 */

import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import { renderCard } from './card';
import type { ProfileSummary } from './schema';

/** The MIME type of a profile summary. */
export const MIME_TYPE = 'application/vnd.memprofile.profile.v1+json';

/** The class of the renderer widget's node. */
const CLASS_NAME = 'jp-memprofile-output';

/** A widget that renders a ProfileSummary as a card. */
export class ProfileRenderer extends Widget implements IRenderMime.IRenderer {
  constructor(options: IRenderMime.IRendererOptions) {
    super();
    this._mimeType = options.mimeType;
    this.addClass(CLASS_NAME);
  }

  renderModel(model: IRenderMime.IMimeModel): Promise<void> {
    let data: unknown = model.data[this._mimeType];
    if (typeof data === 'string') {
      // Some front ends hand JSON over as text; parse it, never evaluate it.
      try {
        data = JSON.parse(data);
      } catch {
        // Leave it a string: renderCard reports it as malformed.
      }
    }
    const card = renderCard(data as ProfileSummary);
    this.node.textContent = '';
    this.node.appendChild(card);
    return Promise.resolve();
  }

  private _mimeType: string;
}

/** Creates the renderer for the profile MIME type. */
export const rendererFactory: IRenderMime.IRendererFactory = {
  // Safe for untrusted outputs: nothing from the payload is inserted as HTML or run.
  safe: true,
  mimeTypes: [MIME_TYPE],
  defaultRank: 0,
  createRenderer: options => new ProfileRenderer(options)
};

/** The MIME renderer extension. */
const extension: IRenderMime.IExtension = {
  id: 'memprofile:mime',
  rendererFactory,
  rank: 0,
  dataType: 'json'
};

export default extension;
