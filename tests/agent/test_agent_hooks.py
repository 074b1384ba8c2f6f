"""The hooking machinery of the agent, driven from C without a store (tests/agent/harness.c):
inline-patched uprobes/uretprobes and syscall interception in both mechanisms."""
from __future__ import annotations

import os
import subprocess

import pytest


def parse_kv(out: str) -> dict:
    d = {}
    for line in out.splitlines():
        k, _, v = line.partition(" ")
        d[k] = v
    return d


def run(harness, *args, env=None, timeout=60):
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run([harness, *args], capture_output=True, text=True, timeout=timeout, env=e)
    assert r.returncode == 0, f"{args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    assert r.stderr == ""
    return parse_kv(r.stdout)


def test_uprobe_entry_and_return(harness):
    d = run(harness, "probe")
    assert d["sum"] == str(sum(i + 7 for i in range(1000)))  # the function still computes
    assert d["entry"] == "1000" and d["ret"] == "1000" and d["bad_args"] == "0"
    assert d["after_detach"] == "1000 1000"  # unpatched: no more calls counted
    # RIP-relative load + short jcc relocated into the trampoline, results unchanged
    assert d["riprel"] == "1005 1000 count 2"
    # xmm arguments/return survive the hooks
    assert d["fp"] == "13.0 count 2"
    # three longjmps out of the uretprobed function, then one return: one return event,
    # correct result
    assert d["longjmp"] == "-4 count 1"
    assert d["fork_child"] == "0"


def test_attach_detach_under_threads(harness):
    d = run(harness, "threads")
    assert d["cycles"] == "200"
    assert int(d["counted"].split()[0]) > 0
    calls, counted = d["exact"].split()
    assert calls == "100000" and counted == "100000"  # no call lost while attached


@pytest.mark.parametrize("mech", ["zpoline", "sud"])
def test_syscall_hooks(harness, mech):
    d = run(harness, "sys", env={"PYBPFC_AGENT_SYSCALL": mech})
    if d.get("error", "").startswith("syscall interception unavailable"):
        pytest.skip("no Syscall User Dispatch in this kernel")
    if mech == "zpoline" and d["mode"] != "zpoline":
        pytest.skip("page 0 cannot be mapped here (vm.mmap_min_addr and no CAP_SYS_RAWIO)")
    assert d["mode"] == mech
    assert d["correct"] == "200"           # results of libc and raw `syscall` getppid
    # 1 + 100 libc + 100 raw + 1 in a thread created after the hook + 1 through syscall(2)
    assert d["enter"] == "203" and d["exit"] == "203"
    assert d["ret"] == "1"                 # sys_exit saw the return value
    assert d["write"] == "2"
    assert d["fork_child"] == "7"
    assert d["invalid"] == "-1 1 1"          # syscall(600): -1/ENOSYS, no crash
    assert d["after_detach"] == "203"
    rewritten, sigsys = int(d["rewritten"]), int(d["sigsys"])
    if mech == "zpoline":
        assert rewritten > 0 and sigsys == rewritten  # each site trapped once, then rewritten
    else:
        assert rewritten == 0 and sigsys >= 203


def test_cxx_exception_through_uretprobes(cxx_harness):
    # thrower() throws through two uretprobed frames (middle() calls it within its patched
    # bytes, so the relocated call must return into middle, not the trampoline)
    d = run(cxx_harness)
    assert d["caught"] == "3"
    assert d["sum"] == str(sum((i + 1) * 2 for i in range(1, 10) if i % 3))
    assert d["returns"] == "12"  # normal returns only: calls unwound by the throw report none
