"""`pybpfc exec` and `pybpfc run --backend userspace -- CMD`."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pybpfc
from pybpfc.backends.userspace import UserspaceBackend

PY = [sys.executable, "-m", "pybpfc"]


def test_exec_then_loader(bpf_objs, target, tmp_path):
    store = f"/dev/shm/pybpfc-clitest-{uuid.uuid4().hex}"
    log = tmp_path / "agent.log"
    p = subprocess.Popen([*PY, "exec", "--store", store, "--log", str(log), "--poll-ms", "2", "--",
                          target, "wait", "555"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        be = UserspaceBackend(store=store)
        coll = pybpfc.load(bpf_objs["malloc_count"], backend=be)
        coll.programs.count_malloc.attach_uprobe(target, "work")
        end = time.monotonic() + 20
        while not (log.exists() and "uprobe " in log.read_text()):
            assert time.monotonic() < end, log.read_text() if log.exists() else "no log"
            time.sleep(0.01)
        out, err = p.communicate(b"go\n", timeout=30)
        assert p.returncode == 0 and out == b"" and err == b""
        assert dict(coll.maps.calls.items())[p.pid] == 555  # exec kept the pid
        coll.close()
    finally:
        p.kill()
        if os.path.exists(store):
            os.unlink(store)


def test_exec_errors():
    r = subprocess.run([*PY, "exec"], capture_output=True, text=True)
    assert r.returncode == 1 and "no command given" in r.stderr
    r = subprocess.run([*PY, "exec", "--", "no-such-command-xyz"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == "pybpfc exec: no-such-command-xyz: command not found"


def test_run_userspace_backend(bpf_objs, target):
    r = subprocess.run([*PY, "run", bpf_objs["malloc_count"], "--backend", "userspace", "--",
                        target, "1234"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    i = lines.index("calls (hash, 1 entries):")
    assert lines[i + 1].split(":")[1].strip() == "1234"


def test_run_userspace_opens(bpf_objs, tmp_path):
    f = tmp_path / "hello.txt"
    f.write_text("hi")
    r = subprocess.run([*PY, "run", bpf_objs["opens"], "--backend", "userspace", "--", "cat", str(f)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "hi" in r.stdout  # the command's own output passes through untouched
    assert "opens (hash, 1 entries):" in r.stdout
