import type { NotebookPanel } from '@jupyterlab/notebook';
import { Signal } from '@lumino/signaling';

import type { KernelBinding } from '../kernel';
import { IBoundView, NO_NOTEBOOK, NotebookBindings } from '../notebooks';
import type { ProfileList } from '../store';

/** A notebook, cut down to its `disposed` signal. */
class FakeNotebook {
  readonly disposed = new Signal<this, void>(this);
  constructor(readonly name: string) {}
  close(): void {
    this.disposed.emit();
  }
}

/** The notebook tracker: adds notebooks and changes the current one. */
class FakeTracker {
  currentWidget: NotebookPanel | null = null;
  readonly widgetAdded = new Signal<this, NotebookPanel>(this);
  readonly currentChanged = new Signal<this, NotebookPanel | null>(this);
  open(notebook: FakeNotebook): void {
    this.widgetAdded.emit(notebook as unknown as NotebookPanel);
    this.focus(notebook);
  }
  focus(notebook: FakeNotebook | null): void {
    this.currentWidget = notebook as unknown as NotebookPanel | null;
    this.currentChanged.emit(this.currentWidget);
  }
}

/** A KernelBinding's state, set by the test; `changed` says it changed, as the kernel's would. */
interface IFakeBinding {
  notebook: FakeNotebook;
  list: { items: unknown[] };
  status: string;
  offline: string | null;
  disposed: boolean;
  dispose(): void;
  changed(): void;
}

/** What the panel was told, in order. */
class FakeView implements IBoundView {
  calls: string[] = [];
  bind(list: ProfileList | null, status: string): void {
    this.calls.push(
      `bind ${(list as unknown as { name?: string } | null)?.name ?? 'none'}: ${status}`
    );
  }
  setStatus(text: string): void {
    this.calls.push(`status ${text}`);
  }
  setOffline(reason: string | null): void {
    this.calls.push(`offline ${reason}`);
  }
}

function setUp() {
  const tracker = new FakeTracker();
  const view = new FakeView();
  const bindings = new Map<string, IFakeBinding>();
  let profilesShown = 0;
  const followed = new NotebookBindings(
    tracker,
    view,
    () => (profilesShown += 1),
    (notebook, changed) => {
      const fake = notebook as unknown as FakeNotebook;
      const binding: IFakeBinding = {
        notebook: fake,
        list: Object.assign({ items: [] }, { name: fake.name }),
        status: `${fake.name}: waiting for the kernel`,
        offline: null,
        disposed: false,
        dispose: () => void (binding.disposed = true),
        changed: () => changed(binding as unknown as KernelBinding)
      };
      bindings.set(fake.name, binding);
      return binding as unknown as KernelBinding;
    }
  );
  return { tracker, view, bindings, followed, profilesShown: () => profilesShown };
}

describe('NotebookBindings', () => {
  it("shows that there is no notebook until one opens, then the current notebook's list", () => {
    // GIVEN no notebook
    const { tracker, view, followed } = setUp();
    expect(view.calls).toEqual([
      'bind none: ' + NO_NOTEBOOK,
      'status ' + NO_NOTEBOOK,
      'offline null'
    ]);
    // WHEN two notebooks open, then the first is focused again
    const a = new FakeNotebook('a');
    const b = new FakeNotebook('b');
    tracker.open(a);
    tracker.open(b);
    view.calls = [];
    tracker.focus(a);
    // THEN the panel shows a's list and status
    expect(view.calls).toEqual([
      'bind a: a: waiting for the kernel',
      'status a: waiting for the kernel',
      'offline null'
    ]);
    expect((followed.current as unknown as IFakeBinding).notebook).toBe(a);
  });

  it("follows the current binding's status and offline reason, and ignores the others'", () => {
    const { tracker, view, bindings } = setUp();
    const a = new FakeNotebook('a');
    const b = new FakeNotebook('b');
    tracker.open(a);
    tracker.open(b);
    view.calls = [];
    // WHEN the background notebook's kernel dies THEN nothing changes in the panel
    Object.assign(bindings.get('a')!, { status: 'dead', offline: 'The kernel died' }).changed();
    expect(view.calls).toEqual([]);
    // WHEN the current one's does THEN the panel says so, without binding the same list again
    Object.assign(bindings.get('b')!, { status: 'dead', offline: 'The kernel died' }).changed();
    expect(view.calls).toEqual(['status dead', 'offline The kernel died']);
  });

  it('tells the plugin when the current notebook has profiles (to open the panel)', () => {
    const { tracker, bindings, profilesShown } = setUp();
    tracker.open(new FakeNotebook('a'));
    bindings.get('a')!.changed();
    expect(profilesShown()).toBe(0); // no profile yet
    bindings.get('a')!.list.items.push({ id: 'p1' });
    bindings.get('a')!.changed();
    expect(profilesShown()).toBe(1);
  });

  it("drops a closed notebook's binding", () => {
    const { tracker, view, bindings, followed } = setUp();
    const a = new FakeNotebook('a');
    tracker.open(a);
    tracker.currentWidget = null; // JupyterLab moves the focus away first
    view.calls = [];
    a.close();
    expect(bindings.get('a')!.disposed).toBe(true);
    expect(followed.current).toBeNull();
    expect(view.calls).toEqual([
      'bind none: ' + NO_NOTEBOOK,
      'status ' + NO_NOTEBOOK,
      'offline null'
    ]);
  });
});
