import { ProfileList } from '../store';
import { hostSummary } from './fixtures';

describe('ProfileList', () => {
  it('lists newest first, replaces a profile sent again, clears', () => {
    const list = new ProfileList();
    let changes = 0;
    list.onChange(() => changes++);
    list.set(
      [hostSummary({ id: 'a', name: 'first' }), hostSummary({ id: 'b', name: 'second' })],
      3
    );
    expect(list.items.map(p => p.name)).toEqual(['second', 'first']);
    expect(list.dropped).toBe(3);
    list.add(hostSummary({ id: 'c', name: 'third' }), 4);
    list.add(hostSummary({ id: 'a', name: 'first again' }));
    expect(list.items.map(p => p.name)).toEqual(['first again', 'third', 'second']);
    expect(list.get('c')?.name).toBe('third');
    expect(list.dropped).toBe(4);
    list.clear();
    expect(list.items).toEqual([]);
    expect(list.dropped).toBe(0);
    expect(changes).toBe(4);
  });
});
