"""The agent with the store: programs loaded by UserspaceBackend run inside real processes
started with LD_PRELOAD, and produce what the kernel backend produces for the same workload."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
from pathlib import Path

import pybpfc
from pybpfc.backends.userspace import UserspaceBackend
from pybpfc.backends.userspace.agent import agent_env


def wait_log(be, needle: str, timeout: float = 10.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        t = be.agent_log.text()
        if needle in t:
            return t
        time.sleep(0.01)
    raise AssertionError(f"agent log has no {needle!r}:\n{be.agent_log.text()}")


def run_us(obj, attach, argv, **spawn_kw):
    be = UserspaceBackend()
    coll = pybpfc.load(obj, backend=be)
    links = attach(coll)
    p = be.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **spawn_kw)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, (out, err, be.agent_log.text())
    return be, coll, links, p, out, err


def run_kernel(obj, attach, argv):
    coll = pybpfc.load(obj, backend="kernel")
    links = attach(coll)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.communicate(timeout=60)
    assert p.returncode == 0
    return coll, links, p


EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "examples", "userspace")


def example(bpf_objs, name, lang):
    """The C object or the pybpfc-language module of an examples/userspace program."""
    return bpf_objs[name] if lang == "c" else os.path.join(EXAMPLES, f"{name}.py")


@pytest.mark.parametrize("lang", ["c", "py"])
def test_malloc_count_matches_kernel(bpf_objs, target, kernel_ok, lang):
    def attach(c):
        return [c.programs.count_malloc.attach_uprobe("libc", "malloc")]

    obj = example(bpf_objs, "malloc_count", lang)
    be, coll, links, p, out, err = run_us(obj, attach, [target, "1000"])
    assert out == b"" and err == b""  # the agent writes nothing to the target's output
    us = dict(coll.maps.calls.items())
    assert us.get(p.pid, 0) >= 1000
    assert links[0].hits == sum(us.values())
    kc, _, kp = run_kernel(obj, attach, [target, "1000"])
    assert us[p.pid] == dict(kc.maps.calls.items())[kp.pid]
    kc.close()
    coll.close()


def test_malloc_latency_uretprobe(bpf_objs, target, kernel_ok):
    def attach(c):
        return [c.programs.malloc_enter.attach_uprobe("libc", "malloc"),
                c.programs.malloc_exit.attach_uretprobe("libc", "malloc")]

    be, coll, _, p, _, _ = run_us(bpf_objs["malloc_latency"], attach, [target, "500"])
    totals = [coll.maps.totals[i] for i in range(3)]
    assert totals[0] == totals[1] == totals[2] >= 500  # every call returned, non-NULL
    assert sum(v for _, v in coll.maps.hist.items()) == totals[1]
    kc, _, _ = run_kernel(bpf_objs["malloc_latency"], attach, [target, "500"])
    # the kernel counts every process's malloc while attached: compare the shape, not totals
    kt = [kc.maps.totals[i] for i in range(3)]
    assert kt[0] >= 500 and kt[1] >= 500
    kc.close()
    coll.close()


def _decode_open(ev):
    if isinstance(ev, (bytes, bytearray)):
        raw = bytes(ev)
        return int.from_bytes(raw[:4], "little"), raw[8:72].split(b"\0")[0].decode()
    name = ev.name if isinstance(ev.name, str) else bytes(ev.name).split(b"\0")[0].decode()
    return ev.pid, name


def _run_collecting_opens(coll, start, prefix):
    """Runs the command while draining the ring buffer (the kernel's tracepoint sees every
    process on this shared machine: a full ring would drop the target's events)."""
    rb = coll.ringbuf("events")
    p = start()
    evs = []
    while p.poll() is None:
        evs += rb.poll(0.02)
    evs += rb.poll(0.2)
    assert p.returncode == 0
    return p, [n for pid, n in map(_decode_open, evs) if pid == p.pid and n.startswith(prefix)]


@pytest.mark.parametrize("tool,lang", [("target", "c"), ("cat", "c"), ("python", "c"), ("cat", "py"),
                                       ("python-late", "c")])
def test_opens_match_kernel(bpf_objs, target, kernel_ok, tool, lang):
    tmp_path = Path(tempfile.mkdtemp(prefix="pa"))  # short: the event keeps 64 bytes of name
    files = []
    for i in range(4):
        f = tmp_path / f"file{i}"
        f.write_text("x")
        files.append(str(f))
    argv = {"target": [target, "3", *files],
            "cat": ["cat", *files],
            "python": [sys.executable, "-c", f"import sys\nfor f in {files!r}: open(f).close()"],
            # after the agent's scan released Syscall User Dispatch: rewritten sites only
            "python-late": [sys.executable, "-c",
                            f"import time\ntime.sleep(0.4)\nfor f in {files!r}: open(f).close()"]}[tool]

    obj = example(bpf_objs, "opens", lang)
    be = UserspaceBackend()
    coll = pybpfc.load(obj, backend=be)
    coll.programs.on_openat.attach()
    p, us = _run_collecting_opens(coll, lambda: be.spawn(argv, stdout=subprocess.DEVNULL), str(tmp_path))
    if tool == "python-late":
        assert "threads turn Syscall User Dispatch off" in be.agent_log.text()
    kc = pybpfc.load(obj, backend="kernel")
    kc.programs.on_openat.attach()
    _, k = _run_collecting_opens(kc, lambda: subprocess.Popen(argv, stdout=subprocess.DEVNULL), str(tmp_path))
    assert us == k == files
    kc.close()
    coll.close()
    shutil.rmtree(tmp_path)


def test_attach_after_start_then_detach(bpf_objs, target):
    be = UserspaceBackend()
    coll = pybpfc.load(bpf_objs["malloc_count"], backend=be)
    p = be.spawn([target, "wait", "777"], stdin=subprocess.PIPE)
    try:
        wait_log(be, "store ")
        link = coll.programs.count_malloc.attach_uprobe(target, "work")
        t0 = time.monotonic()
        wait_log(be, "link 1: uprobe")
        picked = time.monotonic() - t0
        p.stdin.write(b"go\n")
        p.stdin.close()
        assert p.wait(30) == 0
        assert dict(coll.maps.calls.items())[p.pid] == 777
        assert picked < 5
    finally:
        p.kill()
    link.close()
    # detach while 3 threads call the probed function: counting stops, the target finishes
    link = coll.programs.count_malloc.attach_uprobe(target, "work")
    p = be.spawn([target, "spin", "600", "3"], stdout=subprocess.PIPE)
    wait_log(be, f"uprobe {os.path.realpath(target)}+")
    while dict(coll.maps.calls.items()).get(p.pid, 0) == 0:
        time.sleep(0.01)
    link.close()
    time.sleep(0.1)  # > the agent's poll period
    n1 = dict(coll.maps.calls.items())[p.pid]
    time.sleep(0.2)
    assert dict(coll.maps.calls.items())[p.pid] == n1
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0 and out == b"ok\n"
    coll.close()


def test_target_started_before_loader(bpf_objs, target, tmp_path):
    path = f"/dev/shm/pybpfc-agenttest-{uuid.uuid4().hex}"
    log = str(tmp_path / "agent.log")
    p = subprocess.Popen([target, "wait", "321"], stdin=subprocess.PIPE,
                         env=agent_env(path, log, poll_ms=2))
    # the probed function is the target's own work(): kernel uprobes that other programs on
    # this machine may put on libc functions overwrite an agent's jump (docs/agent.md)
    try:
        time.sleep(0.1)
        assert "waiting for it" in open(log).read()
        be = UserspaceBackend(store=path)
        coll = pybpfc.load(bpf_objs["malloc_count"], backend=be)
        coll.programs.count_malloc.attach_uprobe(target, "work")
        end = time.monotonic() + 10
        while "link 1: uprobe" not in open(log).read():
            assert time.monotonic() < end, open(log).read()
            time.sleep(0.01)
        p.stdin.write(b"go\n")
        p.stdin.close()
        assert p.wait(30) == 0
        assert dict(coll.maps.calls.items())[p.pid] == 321
        coll.close()
    finally:
        p.kill()
        if os.path.exists(path):
            os.unlink(path)


LOADER = r"""
import sys, time, pybpfc
from pybpfc.backends.userspace import UserspaceBackend
be = UserspaceBackend()
coll = pybpfc.load(sys.argv[1], backend=be)
coll.programs.count_malloc.attach_uprobe(sys.argv[2], "work")
p = be.spawn([sys.argv[2], "spin", "800", "2"], stdout=open(sys.argv[3], "w"))
print(p.pid, flush=True)
time.sleep(60)
"""


def test_loader_killed_mid_run(bpf_objs, target, tmp_path):
    out = tmp_path / "out"
    loader = subprocess.Popen([sys.executable, "-c", LOADER, bpf_objs["malloc_count"], target, str(out)],
                              stdout=subprocess.PIPE)
    pid = int(loader.stdout.readline())
    time.sleep(0.2)
    loader.send_signal(signal.SIGKILL)
    loader.wait()
    end = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z":
        assert time.monotonic() < end
        time.sleep(0.02)
    assert out.read_text() == "ok\n"  # the orphaned target ran to the end


def test_faulting_program_leaves_target_running(bpf_objs, target):
    be = UserspaceBackend()
    coll = pybpfc.load(bpf_objs["fault"], backend=be)
    link = coll.programs.bad_read.attach_uprobe(target, "work")
    p = be.spawn([target, "200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0 and out == b"" and err == b""
    assert link.errors >= 200 and link.errors == link.hits
    assert "stopped" in be.agent_log.text()
    coll.close()


@pytest.mark.parametrize("follow", [True, False])
def test_children_follow_or_not(bpf_objs, target, follow):
    be = UserspaceBackend()
    coll = pybpfc.load(bpf_objs["malloc_count"], backend=be)
    coll.programs.count_malloc.attach_uprobe(target, "work")
    p = be.spawn(["/bin/sh", "-c", f"{target} 111; {target} 222"], follow_fork=follow)
    assert p.wait(30) == 0
    counts = dict(coll.maps.calls.items())
    children = {k: v for k, v in counts.items() if k != p.pid}
    if follow:
        assert sorted(children.values()) == [111, 222]
    else:
        assert children == {}
    coll.close()


def test_malloc_latency_pybpfc_language(target):
    def attach(c):
        return [c.programs.malloc_enter.attach_uprobe("libc", "malloc"),
                c.programs.malloc_exit.attach_uretprobe("libc", "malloc")]

    be, coll, links, p, _, _ = run_us(os.path.join(EXAMPLES, "malloc_latency.py"), attach, [target, "300"])
    assert sum(v for _, v in coll.maps.latency.items()) == links[1].hits >= 300
    assert links[0].hits == links[1].hits
    assert list(coll.maps.start.items()) == []  # every entry met its return
    coll.close()


def test_pid_filter(bpf_objs, target):
    be = UserspaceBackend()
    coll = pybpfc.load(bpf_objs["malloc_count"], backend=be)
    p = be.spawn([target, "wait", "50"], stdin=subprocess.PIPE)
    try:
        wait_log(be, "store ")
        mine = coll.programs.count_malloc.attach_uprobe(target, "work", pid=p.pid)
        other = coll.programs.count_malloc.attach_uprobe(target, "work", pid=1)
        wait_log(be, f"link {mine.id}: uprobe")
        p.stdin.write(b"go\n")
        p.stdin.close()
        assert p.wait(30) == 0
        assert mine.hits == 50 and other.hits == 0
        assert dict(coll.maps.calls.items()) == {p.pid: 50}
    finally:
        p.kill()
    coll.close()


def test_unpatchable_function_is_refused_and_target_runs(bpf_objs, target):
    be = UserspaceBackend()
    coll = pybpfc.load(bpf_objs["malloc_count"], backend=be)
    link = coll.programs.count_malloc.attach_uprobe(target, "tiny")
    p = be.spawn([target, "20"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0 and out == b"" and err == b""
    assert link.hits == 0
    log = be.agent_log.text()
    assert f"link {link.id}: refused: function too short to patch ('ret' at +0)" in log
    coll.close()


def test_attach_errors_name_the_problem(bpf_objs):
    from pybpfc.errors import Error, NotSupportedError

    be = UserspaceBackend()
    c = pybpfc.load(bpf_objs["malloc_count"], backend=be)
    o = pybpfc.load(bpf_objs["opens"], backend=be)
    cases = [
        (lambda: c.programs.count_malloc.attach_uprobe("libc", "no_such_fn"), Error,
         "prog 'count_malloc': uprobe: symbol 'no_such_fn' not found in "),
        (lambda: o.programs.on_openat.attach_tracepoint("syscalls/sys_enter_nosuch"), Error,
         "prog 'on_openat': tracepoint syscalls/sys_enter_nosuch: no syscall named 'nosuch'"),
        (lambda: o.programs.on_openat.attach_tracepoint("sched/sched_switch"), NotSupportedError,
         "prog 'on_openat': tracepoint sched/sched_switch: the userspace backend has only "),
        (lambda: c.programs.count_malloc.attach_tracepoint("syscalls/sys_enter_openat"), Error,
         "prog 'count_malloc': a kprobe program cannot attach to a tracepoint"),
        (lambda: be.spawn([]), Error, "spawn: empty command"),
        (lambda: be.spawn(["/nonexistent/x"]), Error, "cannot run '/nonexistent/x': No such file"),
    ]
    for fn, exc, msg in cases:
        with pytest.raises(exc) as ei:
            fn()
        assert str(ei.value).startswith(msg), str(ei.value)
    c.close()
    o.close()


def test_raw_sys_enter_and_sys_exit(bpf_objs, target, tmp_path):
    files = []
    for i in range(3):
        f = tmp_path / f"r{i}"
        f.write_text("x")
        files.append(str(f))
    be = UserspaceBackend()
    coll = pybpfc.load(bpf_objs["sysraw"], backend=be)
    coll.attach_all()  # raw_tracepoint/sys_enter + tracepoint/syscalls/sys_exit_openat by section
    p = be.spawn([target, "0", *files])
    assert p.wait(30) == 0
    seen = [coll.maps.seen[i] for i in range(4)]
    # the target opens and closes each file, fd 3 each time (the agent keeps its own
    # descriptors out of the way); nothing else after start-up
    assert seen == [3, 3, 3, 3]
    coll.close()


def test_threads_exact_count(bpf_objs, target):
    # 4 threads x 100 iterations x 100 calls of work(), uprobe + uretprobe installed before
    # main(): every call is counted once, in the shared map too
    be = UserspaceBackend()
    coll = pybpfc.load(bpf_objs["malloc_count"], backend=be)
    up = coll.programs.count_malloc.attach_uprobe(target, "work")
    ret = coll.programs.count_malloc.attach_uretprobe(target, "work")
    p = be.spawn([target, "spin", "100", "4"], stdout=subprocess.PIPE)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0 and out == b"ok\n"
    assert up.hits == ret.hits == 40000
    assert dict(coll.maps.calls.items()) == {p.pid: 80000}
    coll.close()


@pytest.mark.parametrize("tool", ["cat", "python"])
def test_opens_sud_mode(bpf_objs, tool):
    # the fallback that needs nothing (no page 0): every syscall through the SIGSYS handler
    tmp_path = Path(tempfile.mkdtemp(prefix="pa"))
    files = []
    for i in range(3):
        f = tmp_path / f"s{i}"
        f.write_text("y")
        files.append(str(f))
    argv = ["cat", *files] if tool == "cat" else \
        [sys.executable, "-c", f"import threading\nfor f in {files!r}: threading.Thread(target=lambda f=f: open(f).close()).start()"]
    be = UserspaceBackend()
    coll = pybpfc.load(bpf_objs["opens"], backend=be)
    coll.programs.on_openat.attach()
    env = dict(os.environ, PYBPFC_AGENT_SYSCALL="sud")
    p, names = _run_collecting_opens(coll, lambda: be.spawn(argv, env=env, stdout=subprocess.PIPE), str(tmp_path))
    assert sorted(names) == files
    assert "syscall interception: sud" in be.agent_log.text()
    if tool == "cat":
        assert p.stdout.read() == b"yyy"
    coll.close()
    shutil.rmtree(tmp_path)


def test_syscall_hook_attached_after_start(bpf_objs, target):
    # no syscall hook at start: the target runs without SUD; the late hook gets zpoline on
    # every instruction the agent rewrites ahead (libc's openat included)
    tmp_path = Path(tempfile.mkdtemp(prefix="pa"))
    files = []
    for i in range(3):
        f = tmp_path / f"l{i}"
        f.write_text("z")
        files.append(str(f))
    be = UserspaceBackend()
    coll = pybpfc.load(bpf_objs["opens"], backend=be)
    p = be.spawn([target, "wait", "0", *files], stdin=subprocess.PIPE)
    try:
        wait_log(be, "idle until a syscall hook arrives")
        coll.programs.on_openat.attach()
        wait_log(be, "syscall instructions ahead")
        assert "zpoline (rewritten instructions only)" in be.agent_log.text()
        p.stdin.write(b"go\n")
        p.stdin.close()
        assert p.wait(30) == 0
        rb = coll.ringbuf("events")
        names = [n for pid, n in map(_decode_open, rb.poll(0.2)) if pid == p.pid]
        assert names == files
    finally:
        p.kill()
        shutil.rmtree(tmp_path)
    coll.close()
