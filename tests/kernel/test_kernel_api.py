"""pybpfc.load() over the kernel backend: backend choice, unsupported=, histograms, probes."""
import os

import pytest

import pybpfc
from pybpfc import uapi as U
from pybpfc.backends.base import NoopLink
from pybpfc.elf.spec import MapSpec
from pybpfc.lang.types import u32, u64

from kernel_helpers import collection, kernel_or_skip, prog


@pytest.fixture(autouse=True)
def _kernel():
    kernel_or_skip()


def test_auto_picks_kernel_here():
    with pybpfc.load(collection([], [prog("p", "mov %r0, 2\nexit")])) as c:
        assert c.backend.name == "kernel"
        assert c.programs.p.test_run(bytes(64)).retval == 2


def test_bad_options_are_clear():
    with pytest.raises(pybpfc.Error, match="unsupported= must be 'error' or 'ignore'"):
        pybpfc.load(collection(), unsupported="maybe")
    with pytest.raises(pybpfc.Error, match="unknown backend 'gpu'"):
        pybpfc.load(collection(), backend="gpu")
    with pytest.raises(pybpfc.Error, match="consts: no global variable 'nope'"):
        pybpfc.load(collection(), backend="kernel", consts={"nope": 1})


def _kprobe():
    return prog("kp", "mov %r0, 0\nexit", type=U.BPF_PROG_TYPE_KPROBE, section="kprobe/do_nanosleep",
                kind="kprobe", attach_to="do_nanosleep")


def test_unsupported_ignore_returns_noop_link():
    from pybpfc.backends.kernel.attach import kprobe as kp_mod  # noqa: F401 - present with attach

    with pybpfc.load(collection([], [_kprobe()]), backend="kernel") as c:
        try:
            link = c.programs.kp.attach()
        except pybpfc.NotSupportedError:
            pass
        else:
            link.close()
            pytest.skip("this kernel has kprobes: nothing to ignore")
    with pybpfc.load(collection([], [_kprobe()]), backend="kernel", unsupported="ignore") as c:
        links = c.attach_all()
        assert len(links) == 1 and isinstance(links[0], NoopLink)
        assert "kprobe" in links[0].reason


def test_histogram_bars_from_kernel_map():
    ms = MapSpec(name="lat", type=U.BPF_MAP_TYPE_HASH, key_size=4, value_size=8, max_entries=64,
                 key_type=u32, value_type=u64, tags={"histogram": "log2"})
    with pybpfc.load(collection([ms]), backend="kernel") as c:
        h = c.maps.lat
        h[1], h[3], h[4] = 2, 10, 5     # buckets: 1 -> [1,1], 3 -> [4,7], 4 -> [8,15]
        assert h.histogram() == [0, 2, 0, 10, 5]
        text = h.format_log2_hist("usecs")
        lines = text.splitlines()
        assert "usecs" in lines[0] and "distribution" in lines[0]
        assert lines[4].split("|")[1].strip() == "*" * 40  # the peak bucket is a full bar
        assert "8 -> 15" in lines[5] and ": 5 " in lines[5]


def test_probes_agree_with_loads():
    from pybpfc.backends.kernel import probes

    rep = probes.report()
    assert rep["maps"]["ringbuf"] == (True, "") and rep["programs"]["xdp"] == (True, "")
    ok, why = probes.map_type(9999)
    assert not ok and "does not know this type" in why
    with pytest.raises(pybpfc.NotSupportedError, match=r"map 'odd': 9999 maps are not supported here"):
        pybpfc.load(collection([MapSpec(name="odd", type=9999, key_size=4, value_size=4, max_entries=1)]),
                    backend="kernel")


def test_collection_close_releases_everything():
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pybpfc.load(collection([MapSpec(name="m", type=U.BPF_MAP_TYPE_HASH, key_size=4,
                                             value_size=4, max_entries=4)],
                                    [prog("p", "lddw %r1, map:m\nmov %r0, 2\nexit")]),
                         backend="kernel") as c:
            c.maps.m[b"\0\0\0\0"] = 1
    assert len(os.listdir("/proc/self/fd")) == before


def test_unsupported_ignore_keeps_programs_the_kernel_cannot_load():
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        pytest.skip("no kernel BTF")
    fe = prog("fe", "mov %r0, 0\nexit", type=U.BPF_PROG_TYPE_TRACING, section="fentry/bpf_fentry_test1",
              kind="fentry", attach_to="bpf_fentry_test1", expected_attach_type=U.BPF_TRACE_FENTRY)
    ok = prog("ok", "mov %r0, 2\nexit")
    try:
        pybpfc.load(collection([], [fe]), backend="kernel").close()
        pytest.skip("this kernel loads fentry programs: nothing to ignore")
    except pybpfc.NotSupportedError:
        pass
    with pybpfc.load(collection([], [fe, ok]), backend="kernel", unsupported="ignore") as c:
        assert c.programs.ok.test_run(bytes(64)).retval == 2
        links = [c.programs.fe.attach()]
        assert isinstance(links[0], NoopLink) and "refused to load fentry" in links[0].reason
        with pytest.raises(pybpfc.NotSupportedError, match="prog 'fe': this kernel refused"):
            c.programs.fe.test_run()
