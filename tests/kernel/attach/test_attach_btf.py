"""BTF-targeted tracing programs (tp_btf, fentry/fexit) attached through BPF links."""
import os

import pytest
from attach_asm import LoadRefused, counter, raw_syscall_counter

from pybpfc import uapi as U
from pybpfc.backends.kernel import syscall as S
from pybpfc.backends.kernel import vmlinux
from pybpfc.backends.kernel.attach import AttachMixin, FdLink

A = AttachMixin()
N = 23


def btf_id(name, kind):
    if not os.path.exists(vmlinux.VMLINUX):
        pytest.skip(f"{vmlinux.VMLINUX} is missing")
    i = vmlinux.find(name, kind)
    if not i:
        pytest.skip(f"no {name} in vmlinux BTF")
    return i


def test_tp_btf_sys_enter(counters, progs):
    tid = btf_id("btf_trace_sys_enter", vmlinux.KIND_TYPEDEF)
    p = progs(U.BPF_PROG_TYPE_TRACING, raw_syscall_counter(counters, 110, os.getpid()), "tpbtf",
              U.BPF_TRACE_RAW_TP, kind="tp_btf", attach_to="sys_enter", attach_btf_id=tid)
    link = A.attach_fentry(p)
    assert isinstance(link, FdLink) and (link.kind, link.target) == ("tp_btf", "sys_enter")
    for _ in range(N):
        os.getppid()
    link.close()
    os.getppid()
    assert counters[0] == N


@pytest.mark.parametrize("kind,atype", [("fentry", U.BPF_TRACE_FENTRY), ("fexit", U.BPF_TRACE_FEXIT)])
def test_fentry_fexit_on_test_function(counters, progs, kind, atype):
    # bpf_fentry_test1 is called by BPF_PROG_TEST_RUN of any fentry/fexit program.
    tid = btf_id("bpf_fentry_test1", vmlinux.KIND_FUNC)
    try:
        p = progs(U.BPF_PROG_TYPE_TRACING, counter(counters), f"{kind}_t1", atype, kind=kind,
                  attach_to="bpf_fentry_test1", attach_btf_id=tid)
    except LoadRefused as e:
        pytest.skip(f"the kernel refuses {kind} programs here: {str(e).splitlines()[0]}")
    with A.attach_fentry(p):
        for _ in range(3):
            S.prog_test_run(p.fd)
    S.prog_test_run(p.fd)
    assert counters[0] == 3
