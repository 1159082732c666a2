/**
 * The memprofile JupyterLab plugin: a side panel bound to the active
 * notebook's kernel.
 *
 * Each notebook gets a `KernelBinding` (kernel.ts): its kernel's comm and
 * profile list, through restarts, shut-downs and page reloads. The panel shows
 * the active notebook's binding (notebooks.ts); what its buttons do is
 * actions.ts. `activate` only wires them to JupyterLab.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon, ToolbarButton } from '@jupyterlab/ui-components';

import { IQuestion, channelOf, onCardOpen, panelActions, showProfile } from './actions';
import { keepPanelWidth } from './width';
import { IBoundView, NotebookBindings } from './notebooks';
import { MemprofilePanel } from './panel';

const PLUGIN_ID = 'memprofile:panel';
const COMMAND_OPEN = 'memprofile:open-panel';

const ICON_SVG =
  '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
  '<path class="jp-icon3" fill="#616161" d="M3 20h18v2H3zM5 10h3v8H5zm5-6h3v14h-3zm5 9h3v5h-3z"/></svg>';

export const memprofileIcon = new LabIcon({ name: 'memprofile:icon', svgstr: ICON_SVG });

/** Ask with JupyterLab's dialog: the accepting button is a warning. */
async function askWithDialog(question: IQuestion): Promise<boolean> {
  const cancel = question.cancel
    ? Dialog.cancelButton({ label: question.cancel })
    : Dialog.cancelButton();
  const answer = await showDialog({
    title: question.title,
    body: question.body,
    buttons: [cancel, Dialog.warnButton({ label: question.accept })]
  });
  return answer.button.accept;
}

/** The palette's "Open the memprofile panel". */
function addOpenCommand(
  app: JupyterFrontEnd,
  palette: ICommandPalette | null,
  panel: MemprofilePanel
): void {
  app.commands.addCommand(COMMAND_OPEN, {
    label: 'Open the memprofile panel',
    icon: memprofileIcon,
    execute: () => showProfile(app.shell, panel, null)
  });
  palette?.addItem({ command: COMMAND_OPEN, category: 'memprofile' });
}

/** A button on every notebook's toolbar (Lab and Notebook 7): the panel one click from the notebook. */
function addToolbarButton(app: JupyterFrontEnd): void {
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
}

/** Follow the "autoOpen" setting: `set` gets its value now and whenever it changes. */
function watchAutoOpen(settings: ISettingRegistry | null, set: (autoOpen: boolean) => void): void {
  void settings
    ?.load(PLUGIN_ID)
    .then(s => {
      const read = () => set(Boolean(s.get('autoOpen').composite));
      read();
      s.changed.connect(read);
    })
    .catch(() => undefined);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'The memprofile side panel: every profile of the notebook kernel, interactive views, one-click fixes.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    settings: ISettingRegistry | null
  ) => {
    let autoOpen = false;
    // The actions ask for the active notebook's binding when they run, after `bindings` exists.
    const panel: MemprofilePanel = new MemprofilePanel(
      panelActions({
        channel: () => channelOf(bindings.current),
        notebook: () => bindings.current?.notebook ?? null,
        cells: NotebookActions,
        ask: askWithDialog
      })
    );
    panel.title.icon = memprofileIcon;
    app.shell.add(panel, 'right', { rank: 900 });
    keepPanelWidth(panel);
    // The panel shows the current binding's list and, with it, that kernel's live feed.
    const view: IBoundView = {
      bind: (list, status) => {
        panel.bind(list, status);
        panel.bindLive(bindingsMade ? (bindings.current?.live ?? null) : null);
      },
      setStatus: text => panel.setStatus(text),
      setOffline: reason => panel.setOffline(reason)
    };
    let bindingsMade = false; // the bindings' constructor binds (no notebook yet) before `bindings` is set
    const bindings: NotebookBindings = new NotebookBindings(tracker, view, () => {
      if (autoOpen) {
        app.shell.activateById(panel.id); // the current notebook has profiles: show them, as the user asked
      }
    });

    bindingsMade = true;

    onCardOpen(document, id => showProfile(app.shell, panel, id)); // the cell card's "Open in panel" button
    addOpenCommand(app, palette, panel);
    addToolbarButton(app);
    watchAutoOpen(settings, value => (autoOpen = value));
  }
};

export default plugin;
