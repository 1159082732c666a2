/**
 * What the panel's buttons do in JupyterLab (`IPanelActions`): fetch a
 * profile, draw a view with BokehJS, insert a fix as a cell, try a fix,
 * export the report, compare two profiles.
 *
 * Each action is a function of what it needs: the kernel's channel, the
 * notebook, the cell inserter and a way to ask the user are arguments, so jest
 * calls every one with fakes; index.ts passes JupyterLab's own
 * (`NotebookActions`, `showDialog`).
 */

import { PageConfig, PathExt, URLExt } from '@jupyterlab/coreutils';
import type { Notebook, NotebookPanel } from '@jupyterlab/notebook';

import { checkTrusted, loadBokeh } from './bokeh';
import { OPEN_EVENT } from './card';
import type { ProfileChannel } from './comm';
import type { KernelBinding } from './kernel';
import { MIME_TYPE } from './mime';
import type { IPanelActions } from './panel';
import type { PanelComparison, PanelProfile, PanelSuggestion } from './schema';

/** The kernel side the actions talk to: a ProfileChannel's requests. */
export type Requester = Pick<ProfileChannel, 'request'>;

/** A question for the user; `accept` labels the button that goes ahead (a warning), `cancel` the other. */
export interface IQuestion {
  title: string;
  body: string;
  accept: string;
  cancel?: string;
}

/** Ask the user; resolves true when they accept. */
export type Ask = (question: IQuestion) => Promise<boolean>;

/** Where a new cell goes (JupyterLab's NotebookActions): above or below the active cell, which it makes active. */
export interface ICellInserter {
  insertAbove(notebook: Notebook): void;
  insertBelow(notebook: Notebook): void;
}

/** What the actions need from JupyterLab. */
export interface IActionHost {
  /** The active notebook's channel; throws, saying why, when it has none. */
  channel(): Requester;
  /** The active notebook, or null. */
  notebook(): NotebookPanel | null;
  cells: ICellInserter;
  ask: Ask;
}

/** Why the panel cannot ask the kernel: no notebook, or its kernel is offline or has no comm. */
export const NO_COMM = "this notebook's kernel has no memprofile comm: run %load_ext memprofile";

/** The binding's channel, or an error that says why there is none. */
export function channelOf(binding: KernelBinding | null): ProfileChannel {
  if (binding?.offline) {
    throw new Error(binding.offline);
  }
  const channel = binding?.channel;
  if (!channel || channel.disposed) {
    throw new Error(NO_COMM);
  }
  return channel;
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
  return URLExt.join(
    PageConfig.getBaseUrl(),
    'files',
    URLExt.encodeParts(PathExt.join(folder, name))
  );
}

/** A code cell as the notebook model gives it, cut down to what `cellOfProfile` reads. */
interface ICellLike {
  type: string;
  outputs?: { length: number; get(j: number): { data: Record<string, unknown> } };
}

/** The index of the code cell whose output shows the profile `id`, or -1. */
export function cellOfProfile(notebook: NotebookPanel, id: string): number {
  const cells = notebook.content.model?.cells;
  if (!cells) {
    return -1;
  }
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i) as unknown as ICellLike;
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

/** The question before a fix that must run before the framework starts. */
export const RESTART_QUESTION: IQuestion = {
  title: 'Restart the kernel?',
  body:
    'This fix must run before the framework starts: the new cell is at the top of the notebook. ' +
    'Restart the kernel, then run it first.',
  cancel: 'Later',
  accept: 'Restart'
};

/**
 * Insert a suggestion's code as a new cell: at the top of the notebook for a
 * fix that must run first (then offer to restart the kernel), else below the
 * cell that shows the profile (below the active cell when none does).
 */
export async function insertFix(
  notebook: NotebookPanel | null,
  cells: ICellInserter,
  ask: Ask,
  profile: PanelProfile,
  suggestion: PanelSuggestion
): Promise<void> {
  if (!notebook) {
    throw new Error('no notebook is active');
  }
  const nb = notebook.content;
  if (suggestion.placement === 'top') {
    nb.activeCellIndex = 0;
    cells.insertAbove(nb);
  } else {
    const index = cellOfProfile(notebook, profile.id);
    if (index >= 0) {
      nb.activeCellIndex = index;
    }
    cells.insertBelow(nb);
  }
  nb.activeCell?.model.sharedModel.setSource(suggestion.code);
  if (suggestion.restart_kernel && (await ask(RESTART_QUESTION))) {
    await notebook.sessionContext.restartKernel();
  }
}

/** The label of the button that runs a trial (render/text.py RERUN_BUTTON). */
export const RERUN_BUTTON = 'Run the cell 2 or 3 times';

/** Try a suggestion in the kernel once the user agreed (it reruns the cell): the headline of what was measured,
 * or null when they did not. */
export async function tryIt(
  channel: () => Requester,
  ask: Ask,
  profile: PanelProfile,
  suggestion: PanelSuggestion
): Promise<string | null> {
  const agreed = await ask({
    title: `Try "${suggestion.title}"?`,
    body: profile.rerun_warning,
    accept: RERUN_BUTTON
  });
  if (!agreed) {
    return null;
  }
  const reply = await channel().request({ type: 'try', id: profile.id, suggestion: suggestion.id });
  return reply.headline;
}

/** Have the kernel write the profile's HTML report: where it is, and its URL when the server serves it. */
export async function exportReport(
  channel: Requester,
  notebookPath: string | undefined,
  profile: PanelProfile
): Promise<{ path: string; url: string | null }> {
  const { path } = await channel.request({ type: 'export', id: profile.id });
  return { path, url: reportUrl(notebookPath, path) };
}

/** Draw a bokeh json_item into `target` with the kernel's BokehJS (fetched over the channel the first time). */
export async function embedView(
  channel: () => Requester,
  item: unknown,
  target: HTMLElement,
  bokehVersion: string
): Promise<void> {
  checkTrusted(item);
  const bokeh = await loadBokeh(bokehVersion, () => channel().request({ type: 'bokehjs' }));
  target.textContent = '';
  await bokeh.embed.embed_item(item, target);
}

/** The panel's actions on the active notebook. */
export function panelActions(host: IActionHost): IPanelActions {
  return {
    fetchProfile: async (id: string): Promise<PanelProfile> =>
      host.channel().request({ type: 'get_profile', id }),
    embed: (item, target, bokehVersion) =>
      embedView(() => host.channel(), item, target, bokehVersion),
    insertFix: (profile, suggestion) =>
      insertFix(host.notebook(), host.cells, host.ask, profile, suggestion),
    tryIt: (profile, suggestion) => tryIt(() => host.channel(), host.ask, profile, suggestion),
    exportReport: async profile =>
      exportReport(host.channel(), host.notebook()?.context.path, profile),
    compare: async (a: string, b: string): Promise<PanelComparison> =>
      host.channel().request({ type: 'compare', a, b }),
    predict: async request => host.channel().request(request)
  };
}

/** The shell, cut down to what opening the panel needs. */
export interface IShellLike {
  activateById(id: string): void;
}

/** Bring the panel forward, at the profile `id` when there is one. */
export function showProfile(
  shell: IShellLike,
  panel: { id: string; select(id: string): Promise<void> },
  id: string | null
): void {
  shell.activateById(panel.id);
  if (id) {
    void panel.select(id);
  }
}

/** Listen on `target` (the document) for the card's "Open in memprofile panel" (card.ts OPEN_EVENT). */
export function onCardOpen(target: EventTarget, open: (id: string | null) => void): void {
  target.addEventListener(OPEN_EVENT, event =>
    open((event as CustomEvent<{ id?: string }>).detail?.id ?? null)
  );
}
