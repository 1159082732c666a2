/**
 * The profiles of one kernel, as the panel lists them: newest first, by id.
 * Summaries only; a profile's full data is fetched when it is opened.
 */

import type { ProfileSummary } from './schema';

export class ProfileList {
  /** Newest first. */
  get items(): readonly ProfileSummary[] {
    return this._items;
  }

  /** Profiles the kernel's bounded store dropped (oldest first). */
  get dropped(): number {
    return this._dropped;
  }

  /** Replace the list with the kernel's (oldest first, as the kernel sends it). */
  set(items: ProfileSummary[], dropped = 0): void {
    this._items = [...items].reverse();
    this._dropped = dropped;
    this._emit();
  }

  add(summary: ProfileSummary, dropped?: number): void {
    this._items = [summary, ...this._items.filter(p => p.id !== summary.id)];
    if (typeof dropped === 'number') {
      this._dropped = dropped;
    }
    this._emit();
  }

  clear(): void {
    this._items = [];
    this._dropped = 0;
    this._emit();
  }

  get(id: string): ProfileSummary | undefined {
    return this._items.find(p => p.id === id);
  }

  onChange(listener: () => void): () => void {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  private _emit(): void {
    for (const listener of [...this._listeners]) {
      listener();
    }
  }

  private _items: ProfileSummary[] = [];
  private _dropped = 0;
  private _listeners = new Set<() => void>();
}
