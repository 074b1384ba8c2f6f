"""`pybpfc doctor` as a subprocess: its answers match what this kernel really does."""
import glob
import json
import os
import subprocess
import sys

import pytest

from pybpfc.backends.kernel.attach import kprobe


@pytest.fixture(scope="module")
def report():
    if os.geteuid() != 0:
        pytest.skip("needs root for kernel eBPF")
    r = subprocess.run([sys.executable, "-m", "pybpfc", "doctor", "--json"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return {sec: {row["name"]: row for row in rows} for sec, rows in json.loads(r.stdout).items()}


def test_doctor_sections_and_reasons(report):
    assert {"environment", "program types", "map types", "attach points"} <= set(report)
    for sec, rows in report.items():
        for name, row in rows.items():
            if row["ok"] is False:
                assert row["why"], f"{sec}/{name}: 'no' without a reason"


def test_doctor_matches_the_kernel(report):
    # These all work in the tests of this directory on this machine.
    for name in ("socket_filter", "kprobe", "sched_cls", "tracepoint", "xdp", "perf_event",
                 "cgroup_skb", "raw_tracepoint"):
        assert report["program types"][name]["ok"] is True, name
    for name in ("hash", "array", "percpu_array", "ringbuf", "perf_event_array", "lpm_trie",
                 "array_of_maps", "queue", "bloom_filter", "sk_storage", "task_storage"):
        assert report["map types"][name]["ok"] is True, name
    for name in ("tracepoint", "raw_tracepoint", "uprobe", "uretprobe", "perf_event",
                 "socket_filter", "cgroup_skb", "xdp", "tc (tcx)", "tp_btf", "pinning"):
        assert report["attach points"][name]["ok"] is True, (name, report["attach points"][name])
    kp = report["attach points"]["kprobe"]
    why = kprobe.unsupported_reason()
    if why:
        assert kp["ok"] is False and kp["why"] == why
        assert "no kprobe PMU (/sys/bus/event_source/devices/kprobe missing)" in why
    else:
        assert kp["ok"] is True
    # the probes clean up after themselves
    assert not glob.glob("/sys/fs/bpf/pybpfc_doctor_*")
    assert not glob.glob("/sys/fs/cgroup/*/pybpfc_doctor_*") and not glob.glob("/sys/fs/cgroup/pybpfc_doctor_*")


def test_doctor_text_output():
    if os.geteuid() != 0:
        pytest.skip("needs root for kernel eBPF")
    r = subprocess.run([sys.executable, "-m", "pybpfc", "doctor"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "attach points:" in r.stdout and "  tracepoint: yes" in r.stdout
    if kprobe.unsupported_reason():
        assert ("  kprobe: no \u2014 the kernel has no kprobe PMU "
                "(/sys/bus/event_source/devices/kprobe missing)") in r.stdout
