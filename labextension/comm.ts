/**
 * The panel's side of the kernel's "memprofile" comm: requests matched to
 * replies by `request_id`, and pushes ("added", "cleared") to listeners.
 *
 * Written against a minimal comm interface so that it runs under jest with a
 * fake; in JupyterLab it wraps a `Kernel.IComm`.
 *
 * The messages' types are generated from the kernel's (model/wire.py, through
 * the JSON Schema); tests/unit/test_wire.py checks the kernel sends them so.
 */

import type { KernelPush, PanelRequest, ReplyTo } from './schema';

/** What a comm gives: send data, and a handler for the data that comes back. */
export interface ICommLike {
  send(data: Record<string, unknown>): unknown;
  onMsg: ((msg: { content: { data: unknown } }) => void) | null;
  onClose: ((msg: unknown) => void) | null;
  /** True once the kernel's connection let the comm go (shut down, restarted): it cannot send. */
  readonly isDisposed?: boolean;
}

/** Why a request cannot go out when the comm is gone without a close message. */
export const COMM_GONE = 'the kernel behind this panel is gone (shut down or restarted)';

/** A message from the kernel before its type is known (every one is a JSON object with a "type"). */
interface IKernelMessage {
  type: string;
  request_id?: string;
  [key: string]: unknown;
}

type Pending = {
  resolve: (m: IKernelMessage) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
};

let counter = 0;

/** Request/reply and pushes over one comm. */
export class ProfileChannel {
  constructor(comm: ICommLike, timeoutMs = 600_000) {
    this._comm = comm;
    this._timeoutMs = timeoutMs;
    comm.onMsg = msg => this._receive(msg.content.data);
    comm.onClose = () => this.dispose('the kernel closed the memprofile comm');
  }

  /** Send a request; resolves with the kernel's reply to it, rejects on an "error" reply. */
  request<T extends PanelRequest>(data: T): Promise<ReplyTo[T['type']]> {
    if (this._comm.isDisposed) {
      // JupyterLab drops a shut-down kernel's comms without a close message
      this.dispose(COMM_GONE);
    }
    if (this._disposed) {
      return Promise.reject(new Error(this._reason));
    }
    counter += 1;
    const requestId = `r${Date.now().toString(36)}-${counter}`;
    return new Promise<ReplyTo[T['type']]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(requestId);
        reject(new Error(`no answer from the kernel to "${data.type}"`));
      }, this._timeoutMs);
      // the reply that matches the request_id is the reply to this type of request
      this._pending.set(requestId, {
        resolve: m => resolve(m as unknown as ReplyTo[T['type']]),
        reject,
        timer
      });
      try {
        this._comm.send({ ...data, request_id: requestId });
      } catch {
        // the kernel's connection refused it ("Cannot send"): say why instead
        this.dispose(COMM_GONE);
      }
    });
  }

  /** Listen to pushed messages; returns the function that stops listening. */
  onPush(listener: (m: KernelPush) => void): () => void {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  get disposed(): boolean {
    return this._disposed || Boolean(this._comm.isDisposed);
  }

  dispose(reason = 'the memprofile comm was closed'): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._reason = reason;
    for (const pending of this._pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new Error(reason));
    }
    this._pending.clear();
    this._listeners.clear();
  }

  private _receive(data: unknown): void {
    if (typeof data !== 'object' || data === null || Array.isArray(data)) {
      return;
    }
    const message = data as IKernelMessage;
    if (typeof message.request_id === 'string' && this._pending.has(message.request_id)) {
      const pending = this._pending.get(message.request_id)!;
      this._pending.delete(message.request_id);
      clearTimeout(pending.timer);
      if (message.type === 'error') {
        pending.reject(new Error(String(message.message ?? 'the kernel could not answer')));
      } else {
        pending.resolve(message);
      }
      return;
    }
    for (const listener of [...this._listeners]) {
      listener(message as unknown as KernelPush); // no pending request of its id: a push
    }
  }

  private _comm: ICommLike;
  private _timeoutMs: number;
  private _pending = new Map<string, Pending>();
  private _listeners = new Set<(m: KernelPush) => void>();
  private _disposed = false;
  private _reason = 'the memprofile comm is closed';
}
