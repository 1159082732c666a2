/**
 * The panel follows the active notebook: every notebook the tracker adds gets
 * a `KernelBinding` (kernel.ts: its kernel's comm and profile list), dropped
 * when the notebook closes, and the panel shows the current notebook's.
 *
 * The tracker, the panel and the binding's maker are arguments, so jest drives
 * it with fakes.
 */

import type { ISignal } from '@lumino/signaling';
import type { NotebookPanel } from '@jupyterlab/notebook';

import { KernelBinding } from './kernel';
import type { ProfileList } from './store';

/** What the panel says while no notebook is active. */
export const NO_NOTEBOOK = 'Open a notebook to see its memory profiles.';

/** The notebook tracker, cut down to what is followed. */
export interface ITrackerLike {
  readonly currentWidget: NotebookPanel | null;
  readonly widgetAdded: ISignal<unknown, NotebookPanel>;
  readonly currentChanged: ISignal<unknown, NotebookPanel | null>;
}

/** The panel, cut down to what the bindings drive (MemprofilePanel). */
export interface IBoundView {
  bind(list: ProfileList | null, status: string): void;
  setStatus(text: string): void;
  setOffline(reason: string | null): void;
}

/** A binding for a notebook, told when its kernel's state or profiles change. */
export type BindingMaker = (
  notebook: NotebookPanel,
  changed: (binding: KernelBinding) => void
) => KernelBinding;

const makeBinding: BindingMaker = (notebook, changed) => new KernelBinding(notebook, changed);

/** Each notebook's KernelBinding, the current one shown in the panel. */
export class NotebookBindings {
  /**
   * `onProfiles` is called when the current notebook's binding changes while it holds
   * profiles (the plugin opens the panel then, where the user asked for it).
   */
  constructor(
    private _tracker: ITrackerLike,
    private _view: IBoundView,
    private _onProfiles: () => void = () => undefined,
    private _make: BindingMaker = makeBinding
  ) {
    _tracker.widgetAdded.connect((_, notebook) => this._add(notebook));
    _tracker.currentChanged.connect(() => this.show());
    this.show();
  }

  /** The active notebook's binding, or null. */
  get current(): KernelBinding | null {
    const notebook = this._tracker.currentWidget;
    return notebook ? (this._bindings.get(notebook) ?? null) : null;
  }

  /** Show the current binding: its list when it is another one than shown, its status and whether it is offline. */
  show(): void {
    const binding = this.current;
    const status = binding?.status ?? NO_NOTEBOOK;
    if (binding !== this._shown) {
      this._shown = binding;
      this._view.bind(binding?.list ?? null, status);
    }
    this._view.setStatus(status);
    this._view.setOffline(binding?.offline ?? null);
  }

  private _add(notebook: NotebookPanel): void {
    this._bindings.set(
      notebook,
      this._make(notebook, binding => this._changed(binding))
    );
    notebook.disposed.connect(() => {
      this._bindings.get(notebook)?.dispose();
      this._bindings.delete(notebook);
      this.show();
    });
    this.show(); // the tracker may have made it current before this handler ran
  }

  private _changed(binding: KernelBinding): void {
    if (binding === this.current) {
      this.show();
      if (binding.list.items.length) {
        this._onProfiles();
      }
    }
  }

  private _bindings = new Map<NotebookPanel, KernelBinding>();
  /** The binding the panel shows (undefined: none shown yet, so the first show binds). */
  private _shown: KernelBinding | null | undefined = undefined;
}
