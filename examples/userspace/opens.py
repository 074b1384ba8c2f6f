"""Files opened per process (syscalls/sys_enter_openat), counted and streamed with their
names. Runs unchanged on both backends:

    pybpfc run examples/userspace/opens.py --backend userspace -- cat /etc/hostname

C twin: opens.bpf.c.
"""
from pybpfc import HashMap, RingBuf, Str, Struct, bpf, u32, u64


class Event(Struct):
    pid: u32
    flags: u32
    name: Str[64]


opens = HashMap(u32, u64, max_entries=1024)
events = RingBuf(max_entries=1 << 16)


@bpf.tracepoint("syscalls/sys_enter_openat")
def on_openat(ctx) -> int:
    pid = bpf.get_current_pid_tgid() >> 32
    opens[pid] += 1
    e = events.reserve(Event)
    if e is None:
        return 0
    e.pid = pid
    e.flags = ctx.flags
    bpf.probe_read_user_str(e.name, ctx.filename)
    events.submit(e)
    return 0
