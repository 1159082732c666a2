/**
 * One notebook's kernel, as the panel sees it: `KernelBinding` registers the
 * "memprofile" comm target on the notebook's kernel (the kernel opens the comm
 * at `%load_ext memprofile`), re-attaches to an open comm after a page reload
 * (comm_info), keeps that kernel's profile list, clears it when the kernel
 * restarts, and says why the kernel cannot answer (shut down, dead, connection
 * lost).
 *
 * It uses only the notebook's session context, so jest drives it with a fake one.
 */

import type { NotebookPanel } from '@jupyterlab/notebook';
import type { Kernel, KernelMessage } from '@jupyterlab/services';

import { ICommLike, ProfileChannel } from './comm';
import { LiveFeed } from './live';
import type { KernelPush } from './schema';
import { ProfileList } from './store';

/** The comm target the kernel opens its comm on. */
export const COMM_TARGET = 'memprofile';

/** What the panel says while the kernel cannot answer; a click on a profile says it too. */
export const OFFLINE = {
  shutdown:
    'The kernel is shut down: its profiles went with it. Start one (Kernel → Restart Kernel…), ' +
    'then run %load_ext memprofile.',
  dead:
    'The kernel died: its profiles went with it. Restart it (Kernel → Restart Kernel…), ' +
    'then run %load_ext memprofile.',
  disconnected: 'Lost the connection to the kernel: reconnecting… Its profiles come back with it.'
};
export const RESTARTED =
  'The kernel restarted: its profiles are gone. Run %load_ext memprofile again.';
export const NOT_LOADED = 'Run %load_ext memprofile in this notebook to see its profiles here.';

/** One notebook's kernel, as the panel sees it. */
export class KernelBinding {
  readonly list = new ProfileList();
  /** The running cell's live feed (live.ts). */
  readonly live = new LiveFeed();
  status = 'Waiting for the kernel…';
  /** Why the kernel cannot answer now (shut down, dead, connection lost), or null. */
  offline: string | null = null;

  constructor(
    readonly notebook: NotebookPanel,
    private _changed: (b: KernelBinding) => void
  ) {
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
    // (optional: a cut-down connection, jest's, may have no IOPub signal)
    kernel.iopubMessage?.connect((_, msg) => this._onIopub(kernel, msg), this);
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
      const content = reply.content as {
        status: string;
        comms?: Record<string, { target_name: string }>;
      };
      const ids = Object.entries(content.comms ?? {})
        .filter(([, c]) => c.target_name === COMM_TARGET)
        .map(([id]) => id);
      if (
        ids.length &&
        (!this._channel || this._channel.disposed) &&
        !kernel.hasComm(ids[ids.length - 1])
      ) {
        this._adopt(kernel.createComm(COMM_TARGET, ids[ids.length - 1]));
      }
    } catch {
      // an old kernel without comm_info: the next %load_ext opens a new comm
    }
  }

  /**
   * A live push on a comm this page does not hold: the page was reloaded while a cell
   * runs, and comm_info waits behind the cell on the shell channel. The push names the
   * kernel's comm (IOPub is not blocked): adopt it and take the push.
   */
  private _onIopub(kernel: Kernel.IKernelConnection, msg: KernelMessage.IIOPubMessage): void {
    if (kernel !== this._kernel || msg.header.msg_type !== 'comm_msg') {
      return;
    }
    const content = msg.content as { comm_id: string; data?: { type?: unknown } };
    const type = content.data?.type;
    if (typeof type !== 'string' || !type.startsWith('live') || kernel.hasComm(content.comm_id)) {
      return;
    }
    if (this._channel && !this._channel.disposed) {
      return; // a comm of another page's: this one already has its own
    }
    this._adopt(kernel.createComm(COMM_TARGET, content.comm_id));
    this.live.apply(content.data as KernelPush);
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
        this.list.set(reply.items, reply.dropped);
        this._changed(this);
      },
      error => {
        this.status = `Cannot read the kernel's profiles: ${(error as Error).message}`;
        this._changed(this);
      }
    );
    // the live feed on; the reply is the running cell's feed so far (a reload resumes it)
    void channel.request({ type: 'live', on: true }).then(
      reply => this.live.apply(reply),
      () => undefined // a kernel without the live feed: the panel shows profiles only
    );
    this._changed(this);
  }

  private _onPush(message: KernelPush): void {
    if (message.type === 'added') {
      this.list.add(message.summary, message.dropped);
      this._changed(this);
    } else if (message.type === 'cleared') {
      this.list.clear();
    } else {
      this.live.apply(message);
    }
  }

  private _reset(status: string): void {
    this._channel?.dispose();
    this._channel = null;
    this.list.clear();
    this.live.clear();
    this.offline = null;
    this.status = status;
    this._changed(this);
  }

  private _statusBeforeLoss = '';
  private _kernel: Kernel.IKernelConnection | null = null;
  private _channel: ProfileChannel | null = null;
}
