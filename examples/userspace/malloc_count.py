"""Count malloc() calls per process (uprobe). Runs unchanged on both backends:

    pybpfc run examples/userspace/malloc_count.py --backend kernel -- ls -l
    pybpfc run examples/userspace/malloc_count.py --backend userspace -- ls -l

C twin: malloc_count.bpf.c.
"""
from pybpfc import HashMap, bpf, u32, u64

calls = HashMap(u32, u64, max_entries=1024)


@bpf.uprobe("libc:malloc")
def count_malloc(size: u64) -> int:
    pid = bpf.get_current_pid_tgid() >> 32
    calls[pid] += 1
    return 0
