"""malloc() latency (uprobe + uretprobe): a log2 histogram of ns per call. Runs unchanged on
both backends:

    pybpfc run examples/userspace/malloc_latency.py --backend userspace -- python3 -c 'x=[0]*99'

C twin: malloc_latency.bpf.c.
"""
from pybpfc import HashMap, Histogram, bpf, u64

start = HashMap(u64, u64, max_entries=4096)
latency = Histogram(u64)


@bpf.uprobe("libc:malloc")
def malloc_enter(size: u64) -> int:
    start[bpf.get_current_pid_tgid()] = bpf.ktime_get_ns()
    return 0


@bpf.uretprobe("libc:malloc")
def malloc_exit(ret: u64) -> int:
    tid = bpf.get_current_pid_tgid()
    t = start.get(tid)
    if t is None:
        return 0
    latency.record(bpf.ktime_get_ns() - t)
    del start[tid]
    return 0
