import type { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';

import extension, { MIME_TYPE, ProfileRenderer, rendererFactory } from '../mime';
import { hostSummary } from './fixtures';

function model(data: unknown): IRenderMime.IMimeModel {
  return {
    trusted: false,
    data: { [MIME_TYPE]: data } as IRenderMime.IMimeModel['data'],
    metadata: {},
    setData: () => undefined
  };
}

describe('the MIME renderer extension', () => {
  it('claims the profile MIME type with a rank that beats text/html', () => {
    expect(MIME_TYPE).toBe('application/vnd.memprofile.profile.v1+json');
    expect(extension.id).toBe('memprofile:mime');
    expect(extension.dataType).toBe('json');
    expect(extension.rank).toBe(0);
    expect(extension.rendererFactory).toBe(rendererFactory);
    expect(rendererFactory.mimeTypes).toEqual([MIME_TYPE]);
    expect(rendererFactory.defaultRank).toBe(0);
    // JupyterLab's HTML renderer has rank 50.
    expect(extension.rank ?? 100).toBeLessThan(50);
    expect(rendererFactory.safe).toBe(true);
  });

  it('creates a widget that renders the card', async () => {
    const renderer = rendererFactory.createRenderer({
      mimeType: MIME_TYPE,
      sanitizer: { sanitize: (html: string) => html },
      resolver: null,
      linkHandler: null,
      latexTypesetter: null
    } as unknown as IRenderMime.IRendererOptions);
    expect(renderer).toBeInstanceOf(ProfileRenderer);
    expect(renderer).toBeInstanceOf(Widget);

    await renderer.renderModel(model(hostSummary()));
    expect(renderer.node.classList.contains('jp-memprofile-output')).toBe(true);
    expect(renderer.node.querySelector('.jp-memprofile-card')?.textContent).toContain('512.0 MiB');

    // Re-rendering replaces the card instead of appending a second one.
    await renderer.renderModel(model(JSON.stringify(hostSummary({ peak_bytes: 1024 }))));
    expect(renderer.node.querySelectorAll('.jp-memprofile-card')).toHaveLength(1);
    expect(renderer.node.textContent).toContain('1.00 KiB');

    await renderer.renderModel(model('not json'));
    expect(renderer.node.querySelector('.jp-memprofile-card-invalid')).not.toBeNull();
    renderer.dispose();
  });
});
