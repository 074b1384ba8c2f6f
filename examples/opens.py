"""Count openat() calls per process (tracepoint + HashMap).

    pybpfc run examples/opens.py --duration 5
"""
from pybpfc import HashMap, bpf, u32, u64

counts = HashMap(u32, u64, max_entries=10240)


@bpf.tracepoint("syscalls/sys_enter_openat")
def count_opens(ctx) -> int:
    pid = bpf.get_current_pid_tgid() >> 32
    counts[pid] += 1          # inserts 0 when missing, then adds atomically
    return 0


if __name__ == "__main__":
    import time

    import pybpfc

    with pybpfc.load(__file__) as obj:
        obj.attach_all()
        time.sleep(3)
        for pid, n in sorted(obj.maps.counts.items()):
            print(f"{pid:>8} {n}")
