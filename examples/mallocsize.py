"""Histogram of malloc() request sizes (uprobe on libc + Histogram).

    pybpfc run examples/mallocsize.py --duration 5
"""
from pybpfc import Histogram, bpf, u64

sizes = Histogram(u64)


@bpf.uprobe("libc:malloc")
def on_malloc(size: u64) -> int:
    sizes.record(size)
    return 0


if __name__ == "__main__":
    import ctypes
    import time

    import pybpfc

    with pybpfc.load(__file__) as obj:
        obj.attach_all()
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        for n in (1, 24, 100, 4096, 1 << 20):
            libc.free(ctypes.c_void_p(libc.malloc(n)))
        time.sleep(1)
        obj.maps.sizes.print_log2_hist("bytes")
