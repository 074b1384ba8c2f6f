"""Print every execve() with the process and the file it runs (tracepoint + RingBuf + Struct).

    pybpfc run examples/execsnoop.py
"""
from pybpfc import RingBuf, Str, Struct, bpf, u32, u64


class Event(Struct):
    pid: u32
    uid: u32
    ts: u64
    comm: Str[16]
    filename: Str[128]


events = RingBuf(max_entries=256 * 1024)


@bpf.tracepoint("syscalls/sys_enter_execve")
def on_execve(ctx) -> int:
    e = events.reserve(Event)
    if e is None:
        return 0
    e.pid = bpf.tgid()
    e.uid = bpf.uid()
    e.ts = bpf.ktime_ns()
    e.comm = bpf.comm()
    bpf.probe_read_user_str(e.filename, ctx.filename)
    events.submit(e)
    return 0


if __name__ == "__main__":
    import pybpfc

    with pybpfc.load(__file__) as obj:
        obj.attach_all()
        print(f"{'PID':>7} {'UID':>5} {'COMM':<16} FILE")
        for e in obj.ringbuf("events"):
            print(f"{e.pid:>7} {e.uid:>5} {e.comm.decode(errors='replace'):<16} {e.filename.decode(errors='replace')}")
