/**
 * The memprofile JupyterLab plugin: a side panel bound to the active
 * notebook's kernel.
 *
 * Each notebook gets a `KernelBinding`: it registers the "memprofile" comm
 * target on the notebook's kernel (the kernel opens the comm at
 * `%load_ext memprofile`), re-attaches to an open comm after a page reload
 * (comm_info), keeps that kernel's profile list, and clears it when the
 * kernel restarts. The panel shows the active notebook's binding.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog } from '@jupyterlab/apputils';
import { PageConfig, PathExt, URLExt } from '@jupyterlab/coreutils';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import type { Kernel } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon, ToolbarButton } from '@jupyterlab/ui-components';

import { checkTrusted, loadBokeh } from './bokeh';
import { keepPanelWidth } from './width';
import { OPEN_EVENT } from './card';
import { ICommLike, IKernelMessage, ProfileChannel } from './comm';
import { MIME_TYPE } from './mime';
import { IComparison, IPanelActions, IPanelProfile, IPanelSuggestion, MemprofilePanel } from './panel';
import type { ProfileSummary } from './schema';
import { ProfileList } from './store';

const PLUGIN_ID = 'memprofile:panel';
const COMM_TARGET = 'memprofile';
const COMMAND_OPEN = 'memprofile:open-panel';

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
  '<path class="jp-icon3" fill="#616161" d="M3 20h18v2H3zM5 10h3v8H5zm5-6h3v14h-3zm5 9h3v5h-3z"/></svg>';

export const memprofileIcon = new LabIcon({ name: 'memprofile:icon', svgstr: ICON_SVG });

/** What the panel says while the kernel cannot answer; a click on a profile says it too. */
const OFFLINE = {
  shutdown: 'The kernel is shut down: its profiles went with it. Start one (Kernel → Restart Kernel…), ' +
    'then run %load_ext memprofile.',
  dead: 'The kernel died: its profiles went with it. Restart it (Kernel → Restart Kernel…), ' +
    'then run %load_ext memprofile.',
  disconnected: 'Lost the connection to the kernel: reconnecting… Its profiles come back with it.'
};
const RESTARTED = 'The kernel restarted: its profiles are gone. Run %load_ext memprofile again.';
const NOT_LOADED = 'Run %load_ext memprofile in this notebook to see its profiles here.';

/** One notebook's kernel, as the panel sees it. */
class KernelBinding {
  readonly list = new ProfileList();
  status = 'Waiting for the kernel…';
  /** Why the kernel cannot answer now (shut down, dead, connection lost), or null. */
  offline: string | null = null;

  constructor(readonly notebook: NotebookPanel, private _changed: (b: KernelBinding) => void) {
    const ctx = notebook.sessionContext;
    ctx.kernelChanged.connect((_, change) => {
      if (change.newValue) {
        this._attach();
      } else {
        this._kernel = null; // the next kernel attaches afresh
        this._goOffline(OFFLINE.shutdown); // Kernel → Shut Down: the session has no kernel now
      }
    }, this);
    ctx.sessionChanged.connect((_, change) => {
      if (!change.newValue && change.oldValue) {
        this._kernel = null;
        this._goOffline(OFFLINE.shutdown); // shut down from elsewhere (the running sessions panel)
      }
    }, this);
    ctx.statusChanged.connect((_, status) => this._onStatus(status), this);
    void ctx.ready.then(() => this._attach());
  }

  get channel(): ProfileChannel | null {
    return this._channel;
  }

  dispose(): void {
    this._channel?.dispose();
    this._channel = null;
  }

  private _attach(): void {
    const kernel = this.notebook.sessionContext.session?.kernel;
    if (!kernel || kernel === this._kernel) {
      return;
    }
    this._kernel = kernel;
    this._reset(NOT_LOADED);
    kernel.registerCommTarget(COMM_TARGET, comm => this._adopt(comm));
    kernel.connectionStatusChanged.connect((_, status) => this._onConnection(kernel, status), this);
    void this._reattach(kernel);
  }

  private _onStatus(status: string): void {
    if (status === 'restarting' || status === 'autorestarting') {
      this._reset(RESTARTED);
    } else if (status === 'dead') {
      this._goOffline(OFFLINE.dead);
    } else if (status === 'terminating') {
      this._goOffline(OFFLINE.shutdown);
    }
  }

  /** The websocket to the kernel dropped or came back (the kernel itself may be fine). */
  private _onConnection(kernel: Kernel.IKernelConnection, status: string): void {
    if (kernel !== this._kernel) {
      return; // a kernel this notebook no longer uses
    }
    if (status === 'connected') {
      if (this.offline === OFFLINE.disconnected) {
        this.offline = null;
        this.status = this._statusBeforeLoss;
        this._changed(this);
      }
      void this._reattach(kernel);
    } else if (this.offline === null && this._channel) {
      this._statusBeforeLoss = this.status;
      this._goOffline(OFFLINE.disconnected, false);
    }
  }

  /** The kernel cannot answer: say why; its list stays, and a click on it says what to do. */
  private _goOffline(reason: string, dropComm = true): void {
    if (this.offline === reason) {
      return;
    }
    if (dropComm) {
      this._channel?.dispose(reason);
      this._channel = null;
    }
    this.offline = reason;
    this.status = reason;
    this._changed(this);
  }

  /** After a page reload the kernel's comm is still open: find it and use it. */
  private async _reattach(kernel: Kernel.IKernelConnection): Promise<void> {
    if (this._channel && !this._channel.disposed) {
      return;
    }
    try {
      const reply = await kernel.requestCommInfo({ target_name: COMM_TARGET });
      const content = reply.content as { status: string; comms?: Record<string, { target_name: string }> };
      const ids = Object.entries(content.comms ?? {}).filter(([, c]) => c.target_name === COMM_TARGET).map(([id]) => id);
      if (ids.length && (!this._channel || this._channel.disposed) && !kernel.hasComm(ids[ids.length - 1])) {
        this._adopt(kernel.createComm(COMM_TARGET, ids[ids.length - 1]));
      }
    } catch {
      // an old kernel without comm_info: the next %load_ext opens a new comm
    }
  }

  private _adopt(comm: Kernel.IComm): void {
    this._channel?.dispose();
    const channel = new ProfileChannel(comm as unknown as ICommLike);
    this._channel = channel;
    channel.onPush(message => this._onPush(message));
    this.offline = null;
    this.status = 'Connected to the kernel.';
    void channel.request({ type: 'sync' }).then(
      reply => {
        this.list.set((reply.items as ProfileSummary[]) ?? [], Number(reply.dropped ?? 0));
        this._changed(this);
      },
      error => {
        this.status = `Cannot read the kernel's profiles: ${(error as Error).message}`;
        this._changed(this);
      }
    );
    this._changed(this);
  }

  private _onPush(message: IKernelMessage): void {
    if (message.type === 'added') {
      this.list.add(message.summary as ProfileSummary, Number(message.dropped ?? 0));
      this._changed(this);
    } else if (message.type === 'cleared') {
      this.list.clear();
    }
  }

  private _reset(status: string): void {
    this._channel?.dispose();
    this._channel = null;
    this.list.clear();
    this.offline = null;
    this.status = status;
    this._changed(this);
  }

  private _statusBeforeLoss = '';
  private _kernel: Kernel.IKernelConnection | null = null;
  private _channel: ProfileChannel | null = null;
}

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
    const staticUrl = URLExt.join(PageConfig.getOption('fullLabextensionsUrl') || URLExt.join(
      PageConfig.getBaseUrl(), 'lab/extensions'), 'memprofile', 'static');

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
      fetchProfile: async id => (await channel().request({ type: 'get_profile', id })) as unknown as IPanelProfile,
      embed: async (item, target, bokehVersion) => {
        checkTrusted(item);
        const bokeh = await loadBokeh(staticUrl, bokehVersion);
        target.textContent = '';
        await bokeh.embed.embed_item(item, target);
      },
      insertFix: async (profile: IPanelProfile, s: IPanelSuggestion) => {
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
      tryIt: async (profile: IPanelProfile, s: IPanelSuggestion) => {
        const answer = await showDialog({
          title: `Try "${s.title}"?`,
          body: profile.rerun_warning,
          buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Run the cell 2 or 3 times' })]
        });
        if (!answer.button.accept) {
          return null;
        }
        const reply = await channel().request({ type: 'try', id: profile.id, suggestion: s.id });
        return String(reply.headline);
      },
      exportReport: async (profile: IPanelProfile) => {
        const reply = await channel().request({ type: 'export', id: profile.id });
        const path = String(reply.path);
        return { path, url: reportUrl(current()?.notebook.context.path, path) };
      },
      compare: async (a, b) => (await channel().request({ type: 'compare', a, b })) as unknown as IComparison
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
