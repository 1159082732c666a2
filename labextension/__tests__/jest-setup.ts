/**
 * jsdom lacks DragEvent, which @lumino/dragdrop (loaded by @lumino/widgets)
 * subclasses at import time. A minimal stand-in is enough for these tests.
 */
if (typeof (globalThis as { DragEvent?: unknown }).DragEvent === 'undefined') {
  class DragEventShim extends MouseEvent {
    readonly dataTransfer: DataTransfer | null = null;
  }
  (globalThis as { DragEvent?: unknown }).DragEvent = DragEventShim;
}

export {};
