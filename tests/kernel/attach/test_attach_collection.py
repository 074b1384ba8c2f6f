"""Attach through the public API: pybpfc.load(clang object, backend="kernel") -> attach_all()
and the per-program attach methods, on KernelBackend's AttachMixin."""
import ctypes
import os
import shutil
import subprocess

import pytest
from attach_asm import wait_link_gone

import pybpfc

HERE = os.path.dirname(__file__)
N = 11


@pytest.fixture(scope="module")
def api_obj(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root for kernel eBPF")
    if not shutil.which("clang-19"):
        pytest.skip("clang-19 is missing")
    o = tmp_path_factory.mktemp("apiobj") / "api_kinds.bpf.o"
    subprocess.run(["clang-19", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c",
                    os.path.join(HERE, "progs", "api_kinds.bpf.c"), "-o", str(o)], check=True)
    return str(o)


def test_attach_all_by_section(api_obj):
    libc = ctypes.CDLL("libc.so.6")
    ppid = os.getppid()
    with pybpfc.load(api_obj, backend="kernel", consts={"target_pid": os.getpid()}) as obj:
        links = obj.attach_all()
        assert sorted(link.kind for link in links) == ["raw_tracepoint", "tracepoint", "uprobe",
                                                      "uretprobe"]
        for _ in range(N):
            libc.getppid()
        hits = obj.maps.hits
        assert [hits[i] for i in range(4)] == [N, N, N, N * ppid]
        for link in links:
            link.close()
        libc.getppid()
        assert hits[0] == N and hits[2] == N


def test_program_attach_methods_and_pinning(api_obj):
    pin = f"/sys/fs/bpf/pybpfc_attach_api_{os.getpid()}"
    with pybpfc.load(api_obj, backend="kernel", consts={"target_pid": os.getpid()}) as obj:
        link = obj.programs.tp_getppid.attach_tracepoint("syscalls/sys_enter_getppid")
        up = obj.programs.up_getppid.attach_uprobe("libc", "getppid", pid=os.getpid())
        link_id = link.id
        try:
            link.pin(pin)
            link.close()
            for _ in range(N):
                os.getppid()
        finally:
            up.close()
            os.unlink(pin)
        assert obj.maps.hits[0] == N and obj.maps.hits[2] == N
        assert wait_link_gone(link_id)
