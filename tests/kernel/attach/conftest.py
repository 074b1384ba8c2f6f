import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


def _kernel_bpf_reason():
    if os.geteuid() != 0:
        return "needs root for kernel eBPF"
    from pybpfc import uapi as U
    from pybpfc.backends.kernel import syscall as S

    try:
        fd = S.map_create(U.BPF_MAP_TYPE_ARRAY, 4, 8, 1, name="probe")
    except Exception as e:  # noqa: BLE001 - any failure means: no kernel eBPF here
        return f"kernel eBPF unavailable: {e}"
    S.close_fd(fd)
    return None


_REASON = _kernel_bpf_reason()


@pytest.fixture
def counters():
    if _REASON:
        pytest.skip(_REASON)
    from attach_asm import Counters

    m = Counters()
    yield m
    m.close()


@pytest.fixture
def progs():
    """Loads programs (attach_asm.load) and closes them after the test."""
    loaded = []

    def _load(*a, **kw):
        from attach_asm import load

        p = load(*a, **kw)
        loaded.append(p)
        return p

    yield _load
    for p in loaded:
        p.close()
