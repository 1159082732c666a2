import { COMM_GONE, ICommLike, ProfileChannel } from '../comm';

class FakeComm implements ICommLike {
  sent: Array<Record<string, unknown>> = [];
  isDisposed = false;
  onMsg: ((msg: { content: { data: unknown } }) => void) | null = null;
  onClose: ((msg: unknown) => void) | null = null;
  send(data: Record<string, unknown>): void {
    this.sent.push(data);
  }
  reply(data: unknown): void {
    this.onMsg?.({ content: { data } });
  }
}

describe('ProfileChannel', () => {
  it('matches replies to requests by request_id, whatever the order', async () => {
    const comm = new FakeComm();
    const channel = new ProfileChannel(comm);
    const first = channel.request({ type: 'sync' });
    const second = channel.request({ type: 'get_profile', id: 'abc' });
    const [a, b] = comm.sent;
    expect(a.type).toBe('sync');
    expect(b).toMatchObject({ type: 'get_profile', id: 'abc' });
    expect(a.request_id).not.toEqual(b.request_id);
    comm.reply({ type: 'profile', id: 'abc', request_id: b.request_id });
    comm.reply({ type: 'profiles', items: [], request_id: a.request_id });
    await expect(second).resolves.toMatchObject({ type: 'profile', id: 'abc' });
    await expect(first).resolves.toMatchObject({ type: 'profiles' });
  });

  it('rejects on an error reply with its message', async () => {
    const comm = new FakeComm();
    const channel = new ProfileChannel(comm);
    const pending = channel.request({ type: 'get_profile', id: 'nope' });
    comm.reply({
      type: 'error',
      message: "no profile with id or name 'nope'",
      request_id: comm.sent[0].request_id
    });
    await expect(pending).rejects.toThrow("no profile with id or name 'nope'");
  });

  it('hands pushes to listeners and ignores what is not a message', () => {
    const comm = new FakeComm();
    const channel = new ProfileChannel(comm);
    const seen: string[] = [];
    const stop = channel.onPush(m => seen.push(m.type));
    comm.reply({ type: 'added', summary: {} });
    comm.reply('not an object');
    comm.reply([1, 2]);
    comm.reply({ type: 'cleared' });
    stop();
    comm.reply({ type: 'added' });
    expect(seen).toEqual(['added', 'cleared']);
  });

  it('fails pending and later requests once the kernel closes the comm', async () => {
    const comm = new FakeComm();
    const channel = new ProfileChannel(comm);
    const pending = channel.request({ type: 'sync' });
    comm.onClose?.({});
    await expect(pending).rejects.toThrow('closed');
    await expect(channel.request({ type: 'sync' })).rejects.toThrow('closed');
    expect(channel.disposed).toBe(true);
  });

  it('says the kernel is gone when JupyterLab dropped the comm without a close (kernel shut down)', async () => {
    const comm = new FakeComm();
    const channel = new ProfileChannel(comm);
    comm.isDisposed = true; // what a shut-down or restarted kernel connection does to its comms
    expect(channel.disposed).toBe(true);
    await expect(channel.request({ type: 'get_profile', id: 'a' })).rejects.toThrow(COMM_GONE);
    expect(comm.sent).toEqual([]);
  });

  it('turns a refused send ("Cannot send") into the reason, and fails later requests the same way', async () => {
    const comm = new FakeComm();
    comm.send = () => {
      throw new Error('Cannot send');
    };
    const channel = new ProfileChannel(comm);
    await expect(channel.request({ type: 'sync' })).rejects.toThrow(COMM_GONE);
    await expect(channel.request({ type: 'sync' })).rejects.toThrow(COMM_GONE);
    expect(channel.disposed).toBe(true);
  });

  it('times out when the kernel never answers', async () => {
    jest.useFakeTimers();
    const channel = new ProfileChannel(new FakeComm(), 1000);
    const pending = channel.request({ type: 'sync' });
    jest.advanceTimersByTime(1001);
    await expect(pending).rejects.toThrow('no answer from the kernel to "sync"');
    jest.useRealTimers();
  });
});
