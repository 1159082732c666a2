import type { NotebookPanel } from '@jupyterlab/notebook';
import { Signal } from '@lumino/signaling';

import type { ICommLike } from '../comm';
import { COMM_TARGET, KernelBinding, NOT_LOADED, OFFLINE, RESTARTED } from '../kernel';
import type { ProfileSummary } from '../schema';
import { hostSummary } from './fixtures';

/** The frontend end of a comm, as JupyterLab's comm handler behaves. */
class FakeComm implements ICommLike {
  sent: Array<Record<string, unknown>> = [];
  isDisposed = false;
  onMsg: ((msg: { content: { data: unknown } }) => void) | null = null;
  onClose: ((msg: unknown) => void) | null = null;
  constructor(readonly commId: string) {}
  send(data: Record<string, unknown>): void {
    if (this.isDisposed) {
      throw new Error('Cannot send');
    }
    this.sent.push(data);
  }
  /** The kernel sends `data` on this comm. */
  fromKernel(data: Record<string, unknown>): void {
    this.onMsg?.({ content: { data } });
  }
  /** The kernel answers the last request of `type`. */
  answer(type: string, data: Record<string, unknown>): void {
    const request = [...this.sent].reverse().find(m => m.type === type);
    if (!request) {
      throw new Error(`no "${type}" request was sent on comm ${this.commId}`);
    }
    this.fromKernel({ ...data, request_id: request.request_id });
  }
}

/** The kernel process: the comms open on its side outlive a page reload (not a restart). */
class KernelProcess {
  openComms = new Map<string, string>(); // comm id -> target name
  private _next = 0;
  newCommId(): string {
    this._next += 1;
    return `comm-${this._next}`;
  }
}

/** A Kernel.IKernelConnection, cut down to what the binding calls. */
class FakeKernel {
  readonly connectionStatusChanged = new Signal<this, string>(this);
  /** The comms this connection holds (JupyterLab's `_comms`). */
  comms = new Map<string, FakeComm>();
  targets = new Map<string, (comm: FakeComm) => void>();
  /** An old ipykernel without comm_info. */
  noCommInfo = false;
  /** A cell holds the shell channel: comm_info is not answered (IOPub still flows). */
  shellBusy = false;
  readonly iopubMessage = new Signal<this, unknown>(this);
  constructor(readonly process = new KernelProcess()) {}

  registerCommTarget(name: string, callback: (comm: FakeComm) => void): void {
    this.targets.set(name, callback);
  }
  requestCommInfo(content: { target_name: string }): Promise<{ content: unknown }> {
    if (this.noCommInfo) {
      return Promise.reject(new Error('comm_info_request: no reply'));
    }
    if (this.shellBusy) {
      return new Promise(() => undefined);
    }
    const comms = Object.fromEntries(
      [...this.process.openComms]
        .filter(([, t]) => t === content.target_name)
        .map(([id, target_name]) => [id, { target_name }])
    );
    return Promise.resolve({ content: { status: 'ok', comms } });
  }
  hasComm(id: string): boolean {
    return this.comms.has(id);
  }
  createComm(target: string, id: string): FakeComm {
    const comm = new FakeComm(id);
    this.comms.set(id, comm);
    return comm;
  }
  /** The kernel runs `%load_ext memprofile`: it opens its comm, JupyterLab hands it to the target. */
  loadExtension(): FakeComm {
    const comm = new FakeComm(this.process.newCommId());
    this.process.openComms.set(comm.commId, COMM_TARGET);
    this.comms.set(comm.commId, comm);
    this.targets.get(COMM_TARGET)?.(comm);
    return comm;
  }
  /** The kernel sends `data` on its comm `commId` (IOPub): JupyterLab hands it to the comm it
   * holds of that id, else drops it, then emits the message on iopubMessage. */
  push(commId: string, data: Record<string, unknown>): void {
    this.comms.get(commId)?.fromKernel(data);
    this.iopubMessage.emit({
      header: { msg_type: 'comm_msg' },
      content: { comm_id: commId, data }
    });
  }
  /** What KernelConnection does to its comms at a restart or shut-down: disposed, no close message. */
  dropComms(): void {
    for (const comm of this.comms.values()) {
      comm.isDisposed = true;
    }
    this.comms.clear();
    this.process.openComms.clear();
  }
}

/** A notebook's ISessionContext, cut down to what the binding uses. */
class FakeSessionContext {
  readonly kernelChanged = new Signal<
    this,
    { oldValue: FakeKernel | null; newValue: FakeKernel | null }
  >(this);
  readonly sessionChanged = new Signal<this, { oldValue: object | null; newValue: object | null }>(
    this
  );
  readonly statusChanged = new Signal<this, string>(this);
  session: { kernel: FakeKernel | null } | null = null;
  readonly ready: Promise<void>;
  constructor() {
    this.ready = new Promise(resolve => (this._ready = resolve));
  }
  get kernel(): FakeKernel | null {
    return this.session?.kernel ?? null;
  }
  /** The session starts with `kernel`. */
  start(kernel: FakeKernel): void {
    this.session = { kernel };
    this._ready();
  }
  /** Kernel → Restart Kernel: the same connection, its comms dropped, reconnected. */
  restart(): void {
    const kernel = this.kernel!;
    this.statusChanged.emit('restarting');
    kernel.dropComms();
    kernel.connectionStatusChanged.emit('connecting');
    kernel.connectionStatusChanged.emit('connected');
    this.statusChanged.emit('idle');
  }
  /** Kernel → Shut Down Kernel: the session keeps no kernel. */
  shutDown(): void {
    const kernel = this.kernel!;
    this.statusChanged.emit('terminating');
    kernel.dropComms();
    this.session = { kernel: null };
    this.kernelChanged.emit({ oldValue: kernel, newValue: null });
  }
  /** Kernel → Change Kernel…, or a start after a shut-down. */
  changeKernel(kernel: FakeKernel): void {
    const old = this.kernel;
    this.session = { kernel };
    this.kernelChanged.emit({ oldValue: old, newValue: kernel });
  }
  private _ready: () => void = () => undefined;
}

/** Let the binding's promises (ready, comm_info, replies) run. */
const settle = (): Promise<void> => new Promise(resolve => setTimeout(resolve, 0));

function bind(ctx: FakeSessionContext): { binding: KernelBinding; told: string[] } {
  const told: string[] = [];
  const notebook = { sessionContext: ctx } as unknown as NotebookPanel;
  const binding = new KernelBinding(notebook, b => told.push(b.status));
  return { binding, told };
}

const names = (binding: KernelBinding): string[] => binding.list.items.map(p => p.name);
const summaries = (...ids: string[]): ProfileSummary[] =>
  ids.map(id => hostSummary({ id, name: id }));

/** A started kernel whose comm is open and synced with `ids`. */
async function connected(...ids: string[]) {
  const ctx = new FakeSessionContext();
  const kernel = new FakeKernel();
  const { binding, told } = bind(ctx);
  ctx.start(kernel);
  await settle();
  const comm = kernel.loadExtension();
  comm.answer('sync', { type: 'profiles', items: summaries(...ids), dropped: 0 });
  await settle();
  return { ctx, kernel, binding, told, comm };
}

describe('KernelBinding', () => {
  it('waits for the kernel, registers the comm target, and lists the profiles the comm syncs and pushes', async () => {
    const ctx = new FakeSessionContext();
    const kernel = new FakeKernel();
    const { binding, told } = bind(ctx);
    expect(binding.status).toBe('Waiting for the kernel…');
    ctx.start(kernel);
    await settle();
    expect(kernel.targets.has(COMM_TARGET)).toBe(true);
    expect(binding.status).toBe(NOT_LOADED);
    expect(binding.channel).toBeNull();

    const comm = kernel.loadExtension();
    expect(binding.status).toBe('Connected to the kernel.');
    expect(comm.sent.map(m => m.type)).toEqual(['sync', 'live']);
    comm.answer('sync', { type: 'profiles', items: summaries('a', 'b'), dropped: 2 });
    await settle();
    expect(names(binding)).toEqual(['b', 'a']);
    expect(binding.list.dropped).toBe(2);

    comm.fromKernel({ type: 'added', summary: hostSummary({ id: 'c', name: 'c' }), dropped: 3 });
    expect(names(binding)).toEqual(['c', 'b', 'a']);
    expect(binding.list.dropped).toBe(3);
    comm.fromKernel({ type: 'cleared' });
    expect(names(binding)).toEqual([]);
    // the panel heard of each change
    expect(told).toEqual(expect.arrayContaining([NOT_LOADED, 'Connected to the kernel.']));
    expect(told.length).toBeGreaterThanOrEqual(4);
  });

  it('says so when the kernel cannot list its profiles', async () => {
    const ctx = new FakeSessionContext();
    const kernel = new FakeKernel();
    const { binding } = bind(ctx);
    ctx.start(kernel);
    await settle();
    const comm = kernel.loadExtension();
    comm.answer('sync', { type: 'error', message: 'store broken' });
    await settle();
    expect(binding.status).toBe("Cannot read the kernel's profiles: store broken");
  });

  it("clears the list at a restart and re-opens the channel on the restarted kernel's comm", async () => {
    const { ctx, kernel, binding, comm } = await connected('a', 'b');
    const before = binding.channel!;
    ctx.restart();
    await settle();
    expect(binding.status).toBe(RESTARTED);
    expect(names(binding)).toEqual([]);
    expect(binding.offline).toBeNull();
    expect(binding.channel).toBeNull();
    expect(before.disposed).toBe(true);

    // the user runs %load_ext memprofile again: the same target hears the new comm
    const reopened = kernel.loadExtension();
    expect(reopened).not.toBe(comm);
    expect(binding.status).toBe('Connected to the kernel.');
    reopened.answer('sync', { type: 'profiles', items: summaries('c'), dropped: 0 });
    await settle();
    expect(names(binding)).toEqual(['c']);
    const channel = binding.channel!;
    expect(channel).not.toBe(before);
    expect(channel.disposed).toBe(false);
    void channel.request({ type: 'get_profile', id: 'c' });
    expect(reopened.sent.map(m => m.type)).toEqual(['sync', 'live', 'get_profile']);
    expect(comm.sent.map(m => m.type)).toEqual(['sync', 'live']);
  });

  it('goes offline when the kernel shuts down, keeps the list, and attaches afresh to a new kernel', async () => {
    const { ctx, binding } = await connected('a');
    ctx.shutDown();
    expect(binding.offline).toBe(OFFLINE.shutdown);
    expect(binding.status).toBe(OFFLINE.shutdown);
    expect(binding.channel).toBeNull();
    expect(names(binding)).toEqual(['a']); // the panel still shows it; a click says the kernel is gone

    const next = new FakeKernel();
    ctx.changeKernel(next);
    await settle();
    expect(next.targets.has(COMM_TARGET)).toBe(true);
    expect(binding.offline).toBeNull();
    expect(binding.status).toBe(NOT_LOADED);
    expect(names(binding)).toEqual([]);

    const comm = next.loadExtension();
    comm.answer('sync', { type: 'profiles', items: summaries('d'), dropped: 0 });
    await settle();
    expect(names(binding)).toEqual(['d']);
    expect(binding.channel?.disposed).toBe(false);
  });

  it('goes offline when the session goes from elsewhere (the running sessions panel)', async () => {
    const { ctx, binding } = await connected('a');
    ctx.sessionChanged.emit({ oldValue: ctx.session, newValue: null });
    expect(binding.offline).toBe(OFFLINE.shutdown);
    expect(binding.channel).toBeNull();
  });

  it('says the kernel died', async () => {
    const { ctx, binding } = await connected('a');
    ctx.statusChanged.emit('dead');
    expect(binding.offline).toBe(OFFLINE.dead);
    expect(binding.status).toBe(OFFLINE.dead);
    expect(binding.channel).toBeNull();
    expect(names(binding)).toEqual(['a']);
  });

  it('rides out a lost connection: offline while it lasts, the same comm and status after', async () => {
    const { kernel, binding, comm } = await connected('a');
    const channel = binding.channel!;
    kernel.connectionStatusChanged.emit('connecting');
    expect(binding.offline).toBe(OFFLINE.disconnected);
    expect(binding.status).toBe(OFFLINE.disconnected);
    kernel.connectionStatusChanged.emit('connected');
    await settle();
    expect(binding.offline).toBeNull();
    expect(binding.status).toBe('Connected to the kernel.');
    expect(binding.channel).toBe(channel);
    expect(names(binding)).toEqual(['a']);
    void channel.request({ type: 'get_profile', id: 'a' });
    expect(comm.sent.map(m => m.type)).toEqual(['sync', 'live', 'get_profile']);
  });

  it('ignores a connection change of a kernel the notebook no longer uses', async () => {
    const { ctx, kernel, binding } = await connected('a');
    const next = new FakeKernel();
    ctx.changeKernel(next);
    await settle();
    next.loadExtension();
    kernel.connectionStatusChanged.emit('connecting');
    expect(binding.offline).toBeNull();
    expect(binding.status).toBe('Connected to the kernel.');
  });

  it('re-attaches after a page reload to the comm the kernel still has open (comm_info)', async () => {
    const { kernel, comm } = await connected('a', 'b');
    // the reloaded page: a new connection to the same kernel process, and a new binding
    const ctx = new FakeSessionContext();
    const reconnected = new FakeKernel(kernel.process);
    const { binding } = bind(ctx);
    ctx.start(reconnected);
    await settle();
    const adopted = reconnected.comms.get(comm.commId);
    expect(adopted).toBeDefined();
    expect(binding.status).toBe('Connected to the kernel.');
    adopted!.answer('sync', { type: 'profiles', items: summaries('a', 'b'), dropped: 0 });
    await settle();
    expect(names(binding)).toEqual(['b', 'a']);
    // and pushes keep coming on it
    adopted!.fromKernel({ type: 'added', summary: hostSummary({ id: 'c', name: 'c' }) });
    expect(names(binding)).toEqual(['c', 'b', 'a']);
    expect(reconnected.comms.size).toBe(1);
  });

  it('resumes the live feed after a page reload in a running cell, from its pushes', async () => {
    const { kernel, comm, binding: first } = await connected('a');
    comm.answer('live', { type: 'live_state', start: null, samples: [] });
    const start = { type: 'live_start', run: 'r1', name: 'train', started: 1 };
    const sample = (t: number) => ({
      t,
      clock: 1 + t,
      devices: [{ name: 'host', in_use_bytes: 5 }]
    });
    kernel.push(comm.commId, start);
    kernel.push(comm.commId, { type: 'live', run: 'r1', samples: [sample(0.1)] });
    expect(first.live.state.samples).toHaveLength(1);
    // the reloaded page: comm_info waits behind the running cell on the shell channel
    const ctx = new FakeSessionContext();
    const reconnected = new FakeKernel(kernel.process);
    reconnected.shellBusy = true;
    const { binding } = bind(ctx);
    ctx.start(reconnected);
    await settle();
    expect(binding.channel).toBeNull();
    // IOPub still brings the feed: its comm is adopted and the view resumes
    reconnected.push(comm.commId, { type: 'live', run: 'r1', samples: [sample(0.2)] });
    expect(binding.channel).not.toBeNull();
    expect(binding.live.state.run).toBe('r1');
    expect(binding.live.state.samples.map(s => s.t)).toEqual([0.2]);
    reconnected.push(comm.commId, { type: 'live', run: 'r1', samples: [sample(0.3)] });
    expect(binding.live.state.samples).toHaveLength(2);
    expect(reconnected.comms.size).toBe(1);
    // its requests (sync, live) went out on the adopted comm: answered once the cell ends
    const adopted = reconnected.comms.get(comm.commId)!;
    expect(adopted.sent.map(m => m.type)).toEqual(['sync', 'live']);
    // a restart forgets the feed
    ctx.statusChanged.emit('restarting');
    expect(binding.live.state.run).toBeNull();
  });

  it('re-attaches to the newest comm when %load_ext ran more than once', async () => {
    const process = new KernelProcess();
    process.openComms.set('old', COMM_TARGET);
    process.openComms.set('other', 'jupyter.widget');
    process.openComms.set('new', COMM_TARGET);
    const ctx = new FakeSessionContext();
    const kernel = new FakeKernel(process);
    const { binding } = bind(ctx);
    ctx.start(kernel);
    await settle();
    expect([...kernel.comms.keys()]).toEqual(['new']);
    expect(binding.channel).not.toBeNull();
  });

  it('waits for %load_ext when the kernel has no memprofile comm or no comm_info', async () => {
    for (const noCommInfo of [false, true]) {
      const ctx = new FakeSessionContext();
      const kernel = new FakeKernel();
      kernel.noCommInfo = noCommInfo;
      const { binding } = bind(ctx);
      ctx.start(kernel);
      await settle();
      expect(binding.status).toBe(NOT_LOADED);
      expect(binding.channel).toBeNull();
      expect(kernel.comms.size).toBe(0);
      kernel.loadExtension();
      expect(binding.status).toBe('Connected to the kernel.');
    }
  });

  it('lets the channel go when disposed', async () => {
    const { binding } = await connected('a');
    const channel = binding.channel!;
    binding.dispose();
    expect(binding.channel).toBeNull();
    expect(channel.disposed).toBe(true);
  });
});
