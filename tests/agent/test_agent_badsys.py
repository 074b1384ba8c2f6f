"""Invalid raw syscall numbers under zpoline never crash the target: a rewritten site
(`call *%rax`) with a number outside page 0 faults, and the agent's SIGSEGV handler turns that
into the syscall the kernel would have refused (-ENOSYS), while every other fault reaches the
target's own handler (or the default action) as without the agent."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

import pybpfc
from pybpfc.backends.userspace import UserspaceBackend

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def badsys(cbuild, tmp_path_factory):
    d = tmp_path_factory.mktemp("badsys")
    return cbuild(os.path.join(HERE, "progs", "badsys.c"), str(d / "badsys"))


def kv(out: str) -> dict:
    return dict(line.partition(" ")[::2] for line in out.splitlines())


def plain(exe, mode):
    r = subprocess.run([exe, mode], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return r.returncode, kv(r.stdout)


def under_agent(exe, mode, bpf_objs, env=None):
    """Runs exe with sys_enter_openat attached (syscall hooks from the start: zpoline)."""
    be = UserspaceBackend()
    coll = pybpfc.load(bpf_objs["opens"], backend=be)
    coll.attach_all()
    e = dict(os.environ, PYBPFC_AGENT_SYSCALL="zpoline", **(env or {}))
    p = be.spawn([exe, mode], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                 text=True)
    out, err = p.communicate(timeout=60)
    log = be.agent_log.text()
    coll.close()
    if "interception: zpoline" not in log:
        pytest.skip(f"zpoline unavailable here (page 0 cannot be mapped):\n{log}")
    return p.returncode, kv(out), err, log


def test_invalid_numbers_return_enosys(badsys, bpf_objs):
    rc0, want = plain(badsys, "bad")
    assert rc0 == 0 and want["rewritten"] == "0"
    rc, got, err, log = under_agent(badsys, "bad", bpf_objs)
    assert rc == 0, (got, err, log)
    assert got["rewritten"] == "1"  # the numbers below went through a rewritten `call *%rax`
    for nr in ("ffffffffffffffff", "ffffffffffffff9c", "1000", "1388", "40000027", "40000258"):
        assert got[nr] == "-38", nr  # -ENOSYS, what the kernel answers
    got.pop("rewritten"), want.pop("rewritten")
    assert got == want  # every result as without the agent (non-canonical numbers included)
    assert got["after"] == "1"
    assert got["carry_kept"] == "1"  # flags survive the fast path of a rewritten site


def test_target_segv_handler_chained(badsys, bpf_objs):
    rc0, want = plain(badsys, "chain")
    rc, got, err, log = under_agent(badsys, "chain", bpf_objs)
    assert rc == 0 == rc0, (got, err, log)
    assert got["view"] == "1 1 1"         # sigaction reads back the target's own handler
    assert got["refused"] == "-1 1 -1 1"  # EFAULT / EINVAL as from the kernel
    assert got["null_write"] == "1 10"    # a real fault reaches it, with its address
    assert got["unmapped_read"] == "2 1230"
    assert got["hits_after"] == "2"       # invalid numbers are not the target's faults
    assert got["sent"] == "3" and got["dfl"] == "1"
    assert got["rewritten"] == "1"
    got.pop("rewritten"), want.pop("rewritten")
    assert got == want


def test_unhandled_fault_kills_as_without_agent(badsys, bpf_objs):
    rc0, _ = plain(badsys, "crash")
    rc, got, err, log = under_agent(badsys, "crash", bpf_objs)
    assert rc0 == rc == -signal.SIGSEGV, (got, err, log)
    assert "survived" not in got


def test_handler_installed_before_late_syscall_hook(badsys, bpf_objs):
    # no syscall hook at start: no SUD; the hook attached later maps page 0, rewrites ahead
    # and installs the agent's handler over the target's, which must keep getting its faults
    be = UserspaceBackend()
    coll = pybpfc.load(bpf_objs["opens"], backend=be)
    p = be.spawn([badsys, "late"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                 text=True)
    try:
        first = [p.stdout.readline() for _ in range(2)]
        assert first[1] == "ready 1\n", first
        coll.attach_all()
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    log = be.agent_log.text()
    coll.close()
    if "zpoline" not in log:
        pytest.skip(f"late syscall hooks unavailable here (page 0):\n{log}")
    got = kv(out)
    assert p.returncode == 0, (out, err, log)
    assert got["rewritten"] == "1", log  # the scan rewrote the target's raw syscall
    assert got["view"] == "1"
    assert got["null_write"] == "1 10"
    for nr in ("ffffffffffffffff", "1388", "40000027", "200"):
        assert got["late_" + nr] == "-38", nr
    assert got["hits_after"] == "1"
