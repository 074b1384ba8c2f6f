"""uprobe patching while another thread is stopped between two of the displaced instructions
(tests/agent/patch_race.c parks it there deterministically with userfaultfd)."""
from __future__ import annotations

import os
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


@pytest.fixture(scope="module")
def race(agent_lib, cbuild, tmp_path_factory):
    d = tmp_path_factory.mktemp("patch_race")
    return cbuild(os.path.join(HERE, "patch_race.c"), str(d / "patch_race"), f"-I{ROOT}/agent", agent_lib,
                  f"-Wl,-rpath,{os.path.dirname(agent_lib)}")


def run(exe, mode):
    r = subprocess.run([exe, mode], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{mode}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    d = dict(line.partition(" ")[::2] for line in r.stdout.splitlines())
    if "skip" in d:
        pytest.skip(f"userfaultfd unavailable: {d['skip']}")
    return d


def test_attach_moves_thread_parked_inside_displaced_bytes(race):
    d = run(race, "attach")
    assert d["patched_byte"] == "e9"      # the jump really was written over the parked thread
    assert d["moved"] == "1"              # ... which was moved to the relocated copy
    assert d["worker"] == "42"            # and finished its call: 41 + 1 + 0
    assert d["entry_before"] == "0"       # it entered before the patch: no event
    assert d["again"] == "2 1"            # a new call goes through the trampoline
    assert d["sigaction63"] == "1"


def test_detach_leaves_thread_in_trampoline(race):
    d = run(race, "detach")
    assert d["patched_byte"] == "8d"      # original `lea` back
    assert d["moved"] == "0"
    assert d["worker"] == "42"
    assert d["entry_before"] == "1"       # the worker's call went through the trampoline
    assert d["again"] == "2 0"


def test_attach_refused_when_a_thread_cannot_stop(race):
    d = run(race, "blocked")
    assert d["handle"] == "-1"
    assert d["error"].startswith("cannot patch 0x") and "1 thread(s) did not stop" in d["error"], d["error"]
    assert d["patched_byte"] == "8d"      # not patched
    assert d["again"] == "3 0"


def test_indirect_call_returning_into_patch_is_refused(race):
    # a thread inside the callee at patch time would return into the middle of the jump
    d = run(race, "icall")
    assert d["handle"] == "-1"
    assert d["error"] == "'call' at +0 returns into the patched bytes", d["error"]
