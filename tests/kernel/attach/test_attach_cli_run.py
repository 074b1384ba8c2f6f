"""`pybpfc run` as a subprocess against the real kernel, with clang-built programs."""
import json
import os
import shutil
import subprocess
import sys

import pytest
from attach_netns import VethPair, available

HERE = os.path.dirname(__file__)
PY = sys.executable
# The child writes its pid to the file named by argv[1], then calls getppid() 5 times.
CHILD = ("import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); "
         "[os.getppid() for _ in range(5)]")


@pytest.fixture(scope="module")
def objs(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root for kernel eBPF")
    if not shutil.which("clang-19"):
        pytest.skip("clang-19 is missing")
    d = tmp_path_factory.mktemp("runobjs")
    out = {}
    for name in ("run_demo", "run_xdp", "run_perf"):
        o = d / f"{name}.bpf.o"
        subprocess.run(["clang-19", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                        "-c", os.path.join(HERE, "progs", f"{name}.bpf.c"), "-o", str(o)], check=True)
        out[name] = str(o)
    return out


def pybpfc(*args, timeout=60, prefix=()):
    return subprocess.run([*prefix, PY, "-m", "pybpfc", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_run_streams_events_and_prints_maps(objs, tmp_path):
    r = pybpfc("run", objs["run_demo"], "--", PY, "-c", CHILD, str(tmp_path / "pid"))
    assert r.returncode == 0, r.stderr
    child = int((tmp_path / "pid").read_text())
    events = [l for l in r.stdout.splitlines() if l.startswith(f"pid={child} ")]
    assert [e.split()[1] for e in events] == [f"seq={i}" for i in range(1, 6)]
    assert all(e.split()[2].startswith("comm=python") for e in events)
    assert sum(f"pybpfc-run-demo getppid from {child}" in l for l in r.stdout.splitlines()) == 5
    assert f"  {child}: 5" in r.stdout                       # the calls hash map
    assert "seqhist:" in r.stdout and "distribution" in r.stdout and "|*" in r.stdout
    assert "1 program(s) attached" in r.stderr


def test_run_json(objs, tmp_path):
    r = pybpfc("run", objs["run_demo"], "--json", "--", PY, "-c", CHILD, str(tmp_path / "pid"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    child = int((tmp_path / "pid").read_text())
    objs_ = [json.loads(l) for l in lines if l.startswith("{")]
    evs = [o["event"] for o in objs_ if o.get("map") == "events" and o["event"]["pid"] == child]
    assert [e["seq"] for e in evs] == [1, 2, 3, 4, 5]
    assert all(e["comm"].startswith("python") for e in evs)
    calls = next(o for o in objs_ if o.get("map") == "calls")
    assert {"key": child, "value": 5} in calls["entries"]
    hist = next(o for o in objs_ if o.get("map") == "seqhist")["histogram"]
    assert sum(hist) >= 5 and hist[1] >= 1                  # child's seq 1 .. 5 -> buckets 1, 2, 3
    assert any(o.get("global") == "total" and o["value"] >= 5 for o in objs_)
    traces = [o for o in objs_ if "trace" in o and o["trace"].endswith(f"getppid from {child}")]
    assert len(traces) == 5


def test_run_duration_without_command(objs):
    r = pybpfc("run", objs["run_demo"], "--duration", "0.3", "--json")
    assert r.returncode == 0, r.stderr
    assert any(json.loads(l).get("map") == "calls" for l in r.stdout.splitlines() if l.startswith("{"))


def test_run_xdp_needs_iface_and_counts_on_it(objs):
    r = pybpfc("run", objs["run_xdp"], "--duration", "0.1")
    assert r.returncode == 1
    assert "prog 'count_udp': xdp programs attach to an interface: pass --iface IFACE" in r.stderr
    why = available()
    if why:
        pytest.skip(why)
    with VethPair("r") as v:
        sender = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                  f"[s.sendto(b'x', ('{v.ip_b}', 7777)) for _ in range(6)]")
        r = pybpfc("run", objs["run_xdp"], "--iface", v.dev_b, "--json", "--",
                   "ip", "netns", "exec", v.ns_a, PY, "-c", sender,
                   prefix=("ip", "netns", "exec", v.ns_b))
    assert r.returncode == 0, r.stderr
    pkts = next(json.loads(l) for l in r.stdout.splitlines() if l.startswith('{"map": "pkts"'))
    assert pkts["entries"] == [{"key": 0, "value": 6}]


def test_run_errors(objs, tmp_path):
    r = pybpfc("run", "/nonexistent/prog.bpf.o")
    assert r.returncode == 1 and "pybpfc run: /nonexistent/prog.bpf.o: no such file" in r.stderr
    bad = tmp_path / "bad.bpf.o"
    bad.write_bytes(b"\x7fELF" + b"\0" * 20)
    r = pybpfc("run", str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr and str(bad) in r.stderr
    r = pybpfc("run", objs["run_demo"], "--bogus")
    assert r.returncode == 1 and "unknown option '--bogus'" in r.stderr
    r = pybpfc("run", objs["run_demo"], "--", "/nonexistent/cmd")
    assert r.returncode == 1 and "cannot run '/nonexistent/cmd'" in r.stderr


def test_run_passes_on_command_status(objs):
    r = pybpfc("run", objs["run_demo"], "--", "sh", "-c", "exit 3")
    assert r.returncode == 3, r.stderr
    assert "calls (hash" in r.stdout          # maps are printed all the same


def test_run_userspace_backend_spawns_under_the_agent(objs, tmp_path):
    try:
        from pybpfc.backends.userspace import userspace_available
    except ImportError as e:
        pytest.skip(f"userspace backend missing: {e}")
    if not userspace_available():
        pytest.skip("userspace runtime unavailable")
    r = pybpfc("run", objs["run_demo"], "--backend", "userspace", "--json", "--",
               PY, "-c", CHILD, str(tmp_path / "pid"))
    assert r.returncode == 0, r.stderr
    child = int((tmp_path / "pid").read_text())
    objs_ = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    evs = [o["event"] for o in objs_ if o.get("map") == "events"]
    assert [e["seq"] for e in evs if e["pid"] == child] == [1, 2, 3, 4, 5]
    assert {"key": child, "value": 5} in next(o for o in objs_ if o.get("map") == "calls")["entries"]
    traces = [o for o in objs_ if o.get("trace", "").endswith(f"getppid from {child}")]
    assert len(traces) == 5


def test_run_perf_and_ring_buffers_together(objs, tmp_path):
    r = pybpfc("run", objs["run_perf"], "--", PY, "-c", CHILD, str(tmp_path / "pid"))
    assert r.returncode == 0, r.stderr
    child = int((tmp_path / "pid").read_text())
    for m in ("pevents", "revents"):
        mine = [l for l in r.stdout.splitlines() if l.startswith(f"[{m}] pid={child} ")]
        assert len(mine) == 5, (m, r.stdout[-2000:])
        nrs = [int(l.split("nr=")[1]) for l in mine]
        assert nrs == sorted(nrs)


def test_run_reports_an_unsupported_attach(tmp_path):
    from pybpfc.backends.kernel.attach import kprobe

    why = kprobe.unsupported_reason()
    if why is None:
        pytest.skip("this kernel has kprobes")
    src = tmp_path / "kp.py"
    src.write_text("from pybpfc import bpf\n\n\n@bpf.kprobe(\"do_nanosleep\")\n"
                   "def on_sleep(ctx) -> int:\n    return 0\n")
    r = pybpfc("run", str(src), "--duration", "0.1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"pybpfc run: prog 'on_sleep': kprobe do_nanosleep: {why}" in r.stderr
    r = pybpfc("run", str(src), "--duration", "0.1", "--skip-unsupported", "--json")
    assert r.returncode == 0, r.stderr
    assert f"pybpfc run: not attached: prog 'on_sleep': kprobe do_nanosleep: {why}" in r.stderr
    assert "0 program(s) attached" in r.stderr


def test_tc_direction_from_section():
    from pybpfc.cli.run import tc_direction
    from pybpfc.elf.sections import parse_section
    from types import SimpleNamespace

    def spec(sec):
        i = parse_section(sec)
        return SimpleNamespace(section=sec, expected_attach_type=i.expected_attach_type, attach_to=i.target)

    assert [tc_direction(spec(s)) for s in ("tc/ingress", "tc/egress", "tcx/egress", "tc", "classifier")] == \
        ["ingress", "egress", "egress", "ingress", "ingress"]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_run_stops_on_signal_and_prints_maps(objs, sig):
    import signal

    p = subprocess.Popen([PY, "-m", "pybpfc", "run", objs["run_demo"]], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stderr:                 # "... attached" comes once everything is
            if "program(s) attached" in line:    # attached (other lines may come first)
                break
        else:
            raise AssertionError("pybpfc run ended before attaching")
        os.getppid()
        p.send_signal(getattr(signal, sig))
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert "calls (hash" in out and f"  {os.getpid()}: 1" in out
