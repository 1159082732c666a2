/**
 * The memprofile side panel: the active notebook kernel's profiles, newest
 * first, and the views of the selected one (timeline, peak, layers, ops with
 * BokehJS; the cell's lines with their bars; suggestions with "Insert fix"
 * and "Try it"; will it fit (fit.ts); compare; export).
 *
 * Everything from the kernel is data: text goes through textContent, bokeh
 * json_items go to BokehJS's embed_item (the kernel's own BokehJS, the one
 * code run from the kernel: bokeh.ts); nothing else received is executed. What
 * needs JupyterLab (inserting a cell, a confirmation dialog, the comm) comes
 * in through `IPanelActions`, so this file runs under jest.
 */

import { Widget } from '@lumino/widgets';

import { renderLines, renderNotes, renderSparkline } from './card';
import { el } from './dom';
import { renderFitView } from './fit';
import { formatBytes, formatDuration, formatSignedBytes } from './format';
import { ILiveState, LiveFeed, LiveView } from './live';
import type {
  ChangeRow,
  PanelComparison,
  PanelProfile,
  PanelSuggestion,
  PredictRequest,
  PredictedReply,
  ProfileSummary
} from './schema';
import type { ProfileList } from './store';

// PanelProfile, PanelSuggestion and PanelComparison, the data the kernel
// sends (render/panel.py), are generated from model/wire.py into schema.ts.

/** What the panel asks its host (JupyterLab) to do. */
export interface IPanelActions {
  fetchProfile(id: string): Promise<PanelProfile>;
  embed(item: unknown, target: HTMLElement, bokehVersion: string): Promise<void>;
  insertFix(profile: PanelProfile, suggestion: PanelSuggestion): Promise<void>;
  /** Ask the user first; resolve with the headline of what was measured, or null when cancelled. */
  tryIt(profile: PanelProfile, suggestion: PanelSuggestion): Promise<string | null>;
  /** Write the report; resolve with where it is and, when the server serves it, its URL. */
  exportReport(profile: PanelProfile): Promise<{ path: string; url: string | null }>;
  compare(a: string, b: string): Promise<PanelComparison>;
  /** Will it fit: the kernel's prediction (Profile.predict); rejects with its message. */
  predict(request: PredictRequest): Promise<PredictedReply>;
}

// Ranks: a merged profile's only (render/ranks.py), shown first when the kernel sent it.
export const VIEWS: ReadonlyArray<readonly [string, string]> = [
  ['ranks', 'Ranks'],
  ['timeline', 'Timeline'],
  ['peak', 'Peak'],
  ['lines', 'Lines'],
  ['layers', 'Layers'],
  ['ops', 'Ops'],
  ['suggestions', 'Suggestions'],
  ['fit', 'Will it fit']
];

/** The tab a profile opens on: Ranks for a merged profile (whoever merged wants the ranks first), else the last
 * one used. */
function openingView(profile: PanelProfile, last: string): string {
  if (profile.views.ranks) {
    return 'ranks';
  }
  return last === 'ranks' ? 'timeline' : last;
}

function button(label: string, cls: string, onClick: () => void): HTMLButtonElement {
  const b = el('button', `jp-memprofile-button ${cls}`, label);
  b.type = 'button';
  b.addEventListener('click', onClick);
  return b;
}

export class MemprofilePanel extends Widget {
  constructor(actions: IPanelActions) {
    super();
    this._actions = actions;
    this.id = 'memprofile-panel';
    this.addClass('jp-memprofile-panel');
    this.title.caption = 'memprofile: memory profiles of this notebook';
    this._status = el('div', 'jp-memprofile-panel-status');
    this._list = el('ul', 'jp-memprofile-list');
    this._toolbar = el('div', 'jp-memprofile-panel-toolbar');
    this._compareButton = button(
      'Compare selected',
      'jp-memprofile-compare',
      () => void this._compareSelected()
    );
    this._compareButton.disabled = true;
    this._toolbar.appendChild(this._compareButton);
    this._detail = el('div', 'jp-memprofile-detail');
    this._liveBox = el('div', 'jp-memprofile-live-box');
    this._liveBox.hidden = true;
    this._liveView = new LiveView(this._liveBox);
    this.node.append(
      el('h2', 'jp-memprofile-panel-title', 'Memory profiles'),
      this._status,
      this._toolbar,
      this._liveBox,
      this._list,
      this._detail
    );
    this.setStatus('Open a notebook and run %load_ext memprofile.');
  }

  /** The list shown (one kernel's); null when no notebook is active. */
  bind(list: ProfileList | null, status: string): void {
    this._unbind?.();
    this._unbind = null;
    this._profiles = list;
    this._selected = null;
    this._checked.clear();
    this._detail.textContent = '';
    if (list) {
      this._unbind = list.onChange(() => {
        this._renderList();
        this._liveDone();
      });
    }
    this.setStatus(status);
    this._renderList();
  }

  /** The live feed shown (the same kernel's as the list); null: none. */
  bindLive(feed: LiveFeed | null): void {
    this._unbindLive?.();
    this._unbindLive = null;
    this._live = feed;
    this._shownRun = null;
    this._liveBox.hidden = true;
    this._liveBox.textContent = '';
    if (feed) {
      this._unbindLive = feed.onChange(state => this._onLive(state));
      this._onLive(feed.state);
    }
  }

  /** A running cell's feed is drawn (a frame later); an ended one stays until its profile is listed. */
  private _onLive(state: ILiveState): void {
    if (!state.run || state.run === this._doneRun) {
      this._liveBox.hidden = true;
      return;
    }
    this._shownRun = state.run;
    this._liveBox.hidden = false;
    this._liveView.update(state);
    this._liveDone();
  }

  /** The ended run's profile is in the list: the live view gives way to it. */
  private _liveDone(): void {
    const state = this._live?.state;
    if (!state?.ended || state.run !== this._shownRun || !state.profileId) {
      return;
    }
    const id = state.profileId;
    if (!(this._profiles?.items ?? []).some(p => p.id === id)) {
      return; // its "added" is still on its way
    }
    this._doneRun = state.run;
    this._shownRun = null;
    this._liveBox.hidden = true;
    void this.select(id);
  }

  setStatus(text: string): void {
    this._status.textContent = text;
  }

  /** The kernel cannot answer (shut down, dead, connection lost): the list stays (the node
   * gets jp-mod-offline), and opening a profile says `reason` (what to do) instead of asking a kernel that is gone. */
  setOffline(reason: string | null): void {
    this._offline = reason;
    this.node.classList.toggle('jp-mod-offline', reason !== null);
  }

  get offline(): string | null {
    return this._offline;
  }

  get selectedId(): string | null {
    return this._selected;
  }

  /** Open a profile: fetch its data (once per selection) and draw it. */
  async select(id: string): Promise<void> {
    this._selected = id;
    this._renderList();
    const detail = this._detail;
    detail.textContent = '';
    if (this._offline !== null) {
      detail.appendChild(
        el('div', 'jp-memprofile-error', `Cannot open this profile: ${this._offline}`)
      );
      return;
    }
    detail.appendChild(el('div', 'jp-memprofile-loading', 'Loading the profile…'));
    let profile: PanelProfile;
    try {
      profile = await this._actions.fetchProfile(id);
    } catch (error) {
      detail.textContent = '';
      detail.appendChild(
        el('div', 'jp-memprofile-error', `Cannot open this profile: ${(error as Error).message}`)
      );
      return;
    }
    if (this._selected !== id) {
      return; // another one was selected meanwhile
    }
    this._renderDetail(profile, openingView(profile, this._view));
  }

  private _renderList(): void {
    const list = this._list;
    list.textContent = '';
    const items = this._profiles?.items ?? [];
    if (!items.length && this._shownCount) {
      // the kernel cleared its profiles (or restarted): nothing is left to show
      this._selected = null;
      this._checked.clear();
      this._detail.textContent = '';
    }
    this._shownCount = items.length;
    if (this._profiles && !items.length) {
      list.appendChild(
        el('li', 'jp-memprofile-empty', 'No profile yet: put %%memprofile on a cell and run it.')
      );
    }
    for (const summary of items) {
      list.appendChild(this._renderItem(summary));
    }
    const dropped = this._profiles?.dropped ?? 0;
    if (dropped) {
      list.appendChild(
        el(
          'li',
          'jp-memprofile-dropped',
          `${dropped} older profile(s) dropped by the kernel's store`
        )
      );
    }
    this._compareButton.disabled = this._checked.size !== 2;
  }

  private _renderItem(summary: ProfileSummary): HTMLElement {
    const item = el('li', 'jp-memprofile-item');
    item.dataset.profileId = summary.id;
    if (summary.id === this._selected) {
      item.classList.add('jp-mod-selected');
    }
    const check = el('input', 'jp-memprofile-check');
    check.type = 'checkbox';
    check.title = 'select two to compare';
    check.checked = this._checked.has(summary.id);
    check.addEventListener('click', event => {
      event.stopPropagation();
      if (check.checked) {
        this._checked.add(summary.id);
      } else {
        this._checked.delete(summary.id);
      }
      this._compareButton.disabled = this._checked.size !== 2;
    });
    const text = el('div', 'jp-memprofile-item-text');
    text.append(
      el('span', 'jp-memprofile-item-name', summary.name),
      el(
        'span',
        'jp-memprofile-item-peak',
        `${formatBytes(summary.peak_bytes)} on ${summary.peak_device ?? '—'}`
      ),
      el(
        'span',
        'jp-memprofile-item-time',
        `${formatDuration(summary.duration_s)} · ${summary.started_at.slice(11, 19)}`
      )
    );
    if (summary.error) {
      text.appendChild(el('span', 'jp-memprofile-item-error', `raised ${summary.error.type}`));
    }
    item.append(check, text);
    const spark = summary.sparkline ? renderSparkline(summary.sparkline) : null;
    if (spark) {
      item.appendChild(spark);
    }
    item.addEventListener('click', () => void this.select(summary.id));
    return item;
  }

  private _renderDetail(profile: PanelProfile, view: string): void {
    this._view = view;
    const detail = this._detail;
    detail.textContent = '';
    const head = el('div', 'jp-memprofile-detail-head');
    head.append(
      el('div', 'jp-memprofile-detail-name', profile.summary.name),
      el(
        'div',
        'jp-memprofile-detail-peak',
        `Peak ${formatBytes(profile.summary.peak_bytes)} on ${profile.summary.peak_device ?? '—'}`
      ),
      button('Export HTML', 'jp-memprofile-export', () => void this._export(profile))
    );
    if (profile.summary.peak_scope) {
      head.appendChild(el('div', 'jp-memprofile-peak-scope', profile.summary.peak_scope));
    }
    const tabs = el('div', 'jp-memprofile-tabs');
    for (const [key, label] of VIEWS.filter(([k]) => k !== 'ranks' || profile.views.ranks)) {
      const count = key === 'suggestions' ? ` (${profile.suggestions.length})` : '';
      const tab = button(`${label}${count}`, 'jp-memprofile-tab', () =>
        this._renderDetail(profile, key)
      );
      tab.dataset.view = key;
      if (key === view) {
        tab.classList.add('jp-mod-active');
      }
      tabs.appendChild(tab);
    }
    const body = el('div', 'jp-memprofile-view');
    body.dataset.view = view;
    this._message = el('div', 'jp-memprofile-panel-message');
    detail.append(head, this._message);
    // What the capture could not see, and how to see it, above every view.
    const notes = renderNotes(profile.summary.warnings);
    if (notes) {
      detail.appendChild(notes);
    }
    detail.append(tabs, body);
    if (view === 'suggestions') {
      this._renderSuggestions(profile, body);
    } else if (view === 'fit') {
      renderFitView(profile, body, request => this._actions.predict(request));
    } else if (view === 'lines') {
      const lines = renderLines(
        profile.lines,
        profile.peak_line,
        'The cell, line by line: bytes alive at the peak (by kind) and allocated'
      );
      body.appendChild(
        lines ?? el('p', 'jp-memprofile-empty', 'No line of the cell was recorded in this profile.')
      );
    } else if (profile.views[view]) {
      // drawn by the kernel's own BokehJS (the first view of a page waits for it to come)
      body.appendChild(
        el(
          'p',
          'jp-memprofile-empty',
          `Drawing with the kernel's BokehJS ${profile.bokeh_version}…`
        )
      );
      this._actions.embed(profile.views[view], body, profile.bokeh_version).catch(error => {
        body.textContent = '';
        body.appendChild(
          el('div', 'jp-memprofile-error', `Cannot draw this view: ${(error as Error).message}`)
        );
      });
    }
  }

  private _renderSuggestions(profile: PanelProfile, body: HTMLElement): void {
    if (!profile.suggestions.length) {
      body.appendChild(el('p', 'jp-memprofile-empty', 'No suggestion for this profile.'));
      return;
    }
    for (const s of profile.suggestions) {
      const card = el('div', 'jp-memprofile-suggestion');
      card.dataset.suggestion = s.id;
      const saving = el('div', 'jp-memprofile-saving', s.saving_text);
      const status = el('div', 'jp-memprofile-try-status');
      const buttons = el('div', 'jp-memprofile-suggestion-buttons');
      buttons.appendChild(
        button(
          s.placement === 'top' ? 'Insert fix at top' : 'Insert fix',
          'jp-memprofile-insert',
          () => {
            this._actions.insertFix(profile, s).catch(error => {
              status.textContent = `Cannot insert the fix: ${(error as Error).message}`;
            });
          }
        )
      );
      if (s.can_try && s.try_change && profile.source.trim()) {
        const tryButton = button('Try it', 'jp-memprofile-try', () => {
          tryButton.disabled = true;
          status.textContent = `Running the cell as it is, then with ${s.try_change}…`;
          this._actions.tryIt(profile, s).then(
            headline => {
              tryButton.disabled = false;
              status.textContent = headline === null ? '' : `Measured: ${headline}`;
              if (headline !== null) {
                void this._refresh(profile.id);
              }
            },
            error => {
              tryButton.disabled = false;
              status.textContent = `The trial failed: ${(error as Error).message}`;
            }
          );
        });
        tryButton.title =
          'Runs the cell two or three times (as it is, warm again when that run created ' +
          'state, then changed) after asking';
        buttons.appendChild(tryButton);
      }
      const code = el('pre', 'jp-memprofile-code');
      code.textContent = s.code;
      card.append(
        el('div', 'jp-memprofile-suggestion-title', s.title),
        saving,
        el('div', 'jp-memprofile-evidence', s.evidence),
        el('div', 'jp-memprofile-how', s.how),
        code,
        buttons,
        status
      );
      body.appendChild(card);
    }
  }

  /** Fetch a profile again (after a trial put measurements on it) and keep the view. */
  private async _refresh(id: string): Promise<void> {
    if (this._selected !== id) {
      return;
    }
    try {
      const profile = await this._actions.fetchProfile(id);
      if (this._selected === id) {
        const statuses = new Map<string, string>();
        this._detail.querySelectorAll<HTMLElement>('.jp-memprofile-suggestion').forEach(card => {
          statuses.set(
            card.dataset.suggestion ?? '',
            card.querySelector('.jp-memprofile-try-status')?.textContent ?? ''
          );
        });
        this._renderDetail(profile, this._view);
        this._detail.querySelectorAll<HTMLElement>('.jp-memprofile-suggestion').forEach(card => {
          const status = card.querySelector('.jp-memprofile-try-status');
          if (status) {
            status.textContent = statuses.get(card.dataset.suggestion ?? '') ?? '';
          }
        });
      }
    } catch {
      // the measurement is already shown in the card's status line
    }
  }

  private async _export(profile: PanelProfile): Promise<void> {
    try {
      const { path, url } = await this._actions.exportReport(profile);
      this._message.textContent = `Report written to ${path}`;
      if (url) {
        // the report is one offline page: a browser tab shows it whole, its views interactive
        const open = el('a', 'jp-memprofile-open-report', 'Open it in a new tab');
        open.href = url;
        open.target = '_blank';
        open.rel = 'noopener';
        this._message.append(' ', open);
      }
    } catch (error) {
      this._message.textContent = `Cannot export: ${(error as Error).message}`;
    }
  }

  private async _compareSelected(): Promise<void> {
    const ids = (this._profiles?.items ?? [])
      .filter(p => this._checked.has(p.id))
      .map(p => p.id)
      .reverse();
    if (ids.length !== 2) {
      return;
    }
    this._selected = null;
    this._renderList();
    const detail = this._detail;
    detail.textContent = '';
    detail.appendChild(el('div', 'jp-memprofile-loading', 'Comparing…'));
    try {
      const c = await this._actions.compare(ids[0], ids[1]);
      detail.textContent = '';
      detail.appendChild(renderComparison(c));
    } catch (error) {
      detail.textContent = '';
      detail.appendChild(
        el('div', 'jp-memprofile-error', `Cannot compare: ${(error as Error).message}`)
      );
    }
  }

  private _actions: IPanelActions;
  private _liveBox: HTMLElement;
  private _liveView: LiveView;
  private _live: LiveFeed | null = null;
  private _unbindLive: (() => void) | null = null;
  /** The run the live view shows, and the last run whose profile replaced it. */
  private _shownRun: string | null = null;
  private _doneRun: string | null = null;
  private _status: HTMLElement;
  private _list: HTMLUListElement;
  private _toolbar: HTMLElement;
  private _compareButton: HTMLButtonElement;
  private _detail: HTMLElement;
  private _message: HTMLElement = document.createElement('div');
  private _profiles: ProfileList | null = null;
  private _unbind: (() => void) | null = null;
  private _selected: string | null = null;
  private _checked = new Set<string>();
  private _view = 'timeline';
  private _shownCount = 0;
  private _offline: string | null = null;
}

/** A comparison as tables of text. */
export function renderComparison(c: PanelComparison): HTMLElement {
  const root = el('div', 'jp-memprofile-comparison');
  root.append(
    el('div', 'jp-memprofile-detail-name', `${c.a_name} → ${c.b_name}`),
    el('div', 'jp-memprofile-comparison-headline', c.headline)
  );
  for (const note of c.notes ?? []) {
    root.appendChild(el('div', 'jp-memprofile-comparison-note', note));
  }
  const table = (title: string, rows: ChangeRow[], more: number) => {
    if (!rows.length) {
      return;
    }
    root.appendChild(el('h3', 'jp-memprofile-comparison-title', title));
    const t = el('table', 'jp-memprofile-comparison-table');
    const head = el('tr');
    for (const h of ['', 'before', 'after', 'change']) {
      head.appendChild(el('th', undefined, h));
    }
    t.appendChild(head);
    for (const r of rows) {
      const tr = el('tr');
      tr.append(
        el('td', undefined, r.name),
        el('td', undefined, formatBytes(r.before)),
        el('td', undefined, formatBytes(r.after)),
        el('td', undefined, formatSignedBytes(r.delta))
      );
      t.appendChild(tr);
    }
    root.appendChild(t);
    if (more) {
      root.appendChild(el('div', 'jp-memprofile-more', `and ${more} more`));
    }
  };
  table('Kinds of memory at the peak', c.categories, 0);
  table('Layers at the peak', c.layers, c.more_layers);
  table('Ops (bytes allocated)', c.ops, c.more_ops);
  return root;
}
