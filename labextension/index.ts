/**
 * The memprofile JupyterLab plugin: a side panel bound to the active
 * notebook's kernel.
 *
 * Each notebook gets a `KernelBinding` (kernel.ts): its kernel's comm and
 * profile list, through restarts, shut-downs and page reloads. The panel shows
 * the active notebook's binding.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog } from '@jupyterlab/apputils';
import { PageConfig, PathExt, URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon, ToolbarButton } from '@jupyterlab/ui-components';

import { checkTrusted, loadBokeh } from './bokeh';
import { keepPanelWidth } from './width';
import { OPEN_EVENT } from './card';
import type { ProfileChannel } from './comm';
import { KernelBinding } from './kernel';
import { MIME_TYPE } from './mime';
import { IPanelActions, MemprofilePanel } from './panel';

const PLUGIN_ID = 'memprofile:panel';
const COMMAND_OPEN = 'memprofile:open-panel';

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
  '<path class="jp-icon3" fill="#616161" d="M3 20h18v2H3zM5 10h3v8H5zm5-6h3v14h-3zm5 9h3v5h-3z"/></svg>';

export const memprofileIcon = new LabIcon({ name: 'memprofile:icon', svgstr: ICON_SVG });

/**
 * The server URL of a report the kernel wrote: the kernel runs in the
 * notebook's folder and writes the report there, so it is that folder's file
 * of the same name; null when the server cannot tell (no notebook).
 */
export function reportUrl(notebookPath: string | undefined, reportPath: string): string | null {
  if (notebookPath === undefined) {
    return null;
  }
  const folder = PathExt.dirname(notebookPath);
  const name = PathExt.basename(reportPath);
  return URLExt.join(PageConfig.getBaseUrl(), 'files', URLExt.encodeParts(PathExt.join(folder, name)));
}

/** The index of the code cell whose output shows the profile `id`, or -1. */
function cellOfProfile(notebook: NotebookPanel, id: string): number {
  const cells = notebook.content.model?.cells;
  if (!cells) {
    return -1;
  }
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i) as unknown as { type: string; outputs?: { length: number; get(j: number): { data: Record<string, unknown> } } };
    if (cell.type !== 'code' || !cell.outputs) {
      continue;
    }
    for (let j = 0; j < cell.outputs.length; j++) {
      const data = cell.outputs.get(j).data[MIME_TYPE] as { id?: string } | undefined;
      if (data && data.id === id) {
        return i;
      }
    }
  }
  return -1;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'The memprofile side panel: every profile of the notebook kernel, interactive views, one-click fixes.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    settings: ISettingRegistry | null
  ) => {
    const bindings = new Map<NotebookPanel, KernelBinding>();
    let autoOpen = false;

    const current = (): KernelBinding | null => {
      const notebook = tracker.currentWidget;
      return notebook ? bindings.get(notebook) ?? null : null;
    };
    const channel = (): ProfileChannel => {
      const binding = current();
      const c = binding?.channel;
      if (binding?.offline) {
        throw new Error(binding.offline);
      }
      if (!c || c.disposed) {
        throw new Error('this notebook\'s kernel has no memprofile comm: run %load_ext memprofile');
      }
      return c;
    };

    const actions: IPanelActions = {
      fetchProfile: async id => channel().request({ type: 'get_profile', id }),
      embed: async (item, target, bokehVersion) => {
        checkTrusted(item);
        const bokeh = await loadBokeh(bokehVersion, () => channel().request({ type: 'bokehjs' }));
        target.textContent = '';
        await bokeh.embed.embed_item(item, target);
      },
      insertFix: async (profile, s) => {
        const notebook = current()?.notebook;
        if (!notebook) {
          throw new Error('no notebook is active');
        }
        const nb = notebook.content;
        if (s.placement === 'top') {
          nb.activeCellIndex = 0;
          NotebookActions.insertAbove(nb);
        } else {
          const index = cellOfProfile(notebook, profile.id);
          if (index >= 0) {
            nb.activeCellIndex = index;
          }
          NotebookActions.insertBelow(nb);
        }
        nb.activeCell?.model.sharedModel.setSource(s.code);
        if (s.restart_kernel) {
          const answer = await showDialog({
            title: 'Restart the kernel?',
            body: 'This fix must run before the framework starts: the new cell is at the top of the notebook. ' +
              'Restart the kernel, then run it first.',
            buttons: [Dialog.cancelButton({ label: 'Later' }), Dialog.warnButton({ label: 'Restart' })]
          });
          if (answer.button.accept) {
            await notebook.sessionContext.restartKernel();
          }
        }
      },
      tryIt: async (profile, s) => {
        const answer = await showDialog({
          title: `Try "${s.title}"?`,
          body: profile.rerun_warning,
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Run the cell 2 or 3 times' })]
        });
        if (!answer.button.accept) {
          return null;
        }
        const reply = await channel().request({ type: 'try', id: profile.id, suggestion: s.id });
        return reply.headline;
      },
      exportReport: async profile => {
        const { path } = await channel().request({ type: 'export', id: profile.id });
        return { path, url: reportUrl(current()?.notebook.context.path, path) };
      },
      compare: async (a, b) => channel().request({ type: 'compare', a, b })
    };

    const panel = new MemprofilePanel(actions);
    panel.title.icon = memprofileIcon;
    app.shell.add(panel, 'right', { rank: 900 });
    keepPanelWidth(panel);

    let shown: KernelBinding | null | undefined = undefined;
    const show = (): void => {
      const binding = current();
      if (binding !== shown) {
        shown = binding;
        panel.bind(binding?.list ?? null, binding?.status ?? 'Open a notebook to see its memory profiles.');
      }
      panel.setStatus(binding?.status ?? 'Open a notebook to see its memory profiles.');
      panel.setOffline(binding?.offline ?? null);
    };
    const changed = (binding: KernelBinding): void => {
      if (binding === current()) {
        show();
        if (autoOpen && binding.list.items.length) {
          app.shell.activateById(panel.id);
        }
      }
    };
    tracker.widgetAdded.connect((_, notebook) => {
      bindings.set(notebook, new KernelBinding(notebook, changed));
      notebook.disposed.connect(() => {
        bindings.get(notebook)?.dispose();
        bindings.delete(notebook);
        show();
      });
      show(); // the tracker may have made it current before this handler ran
    });
    tracker.currentChanged.connect(show);
    show();

    // The cell card's "Open in panel" button.
    document.addEventListener(OPEN_EVENT, event => {
      const id = (event as CustomEvent<{ id: string }>).detail?.id;
      app.shell.activateById(panel.id);
      if (id) {
        void panel.select(id);
      }
    });

    app.commands.addCommand(COMMAND_OPEN, {
      label: 'Open the memprofile panel',
      icon: memprofileIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    palette?.addItem({ command: COMMAND_OPEN, category: 'memprofile' });
    // A button on every notebook's toolbar (Lab and Notebook 7): the panel one click from the notebook.
    app.docRegistry.addWidgetExtension('Notebook', {
      createNew: (notebook: NotebookPanel) => {
        const button = new ToolbarButton({
          icon: memprofileIcon,
          className: 'jp-memprofile-toolbar-button',
          tooltip: 'Open the memprofile panel',
          onClick: () => void app.commands.execute(COMMAND_OPEN)
        });
        // After the cell type picker, where the toolbar does not fold it away; the
        // toolbar gets its items from the settings after this runs.
        void notebook.revealed.then(() => {
          if (!button.isDisposed && !notebook.toolbar.insertBefore('spacer', 'memprofile', button)) {
            notebook.toolbar.addItem('memprofile', button);
          }
        });
        return button;
      }
    });
    if (settings) {
      void settings.load(PLUGIN_ID).then(s => {
        const read = () => {
          autoOpen = Boolean(s.get('autoOpen').composite);
        };
        read();
        s.changed.connect(read);
      }).catch(() => undefined);
    }
  }
};

export default plugin;
