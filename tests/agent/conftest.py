"""Shared fixtures of the agent tests: the built agent library and small C programs."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="session")
def agent_lib():
    from pybpfc import _native

    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the agent")
    if not os.path.exists("/usr/include/capstone/capstone.h"):
        pytest.skip("libcapstone-dev is not installed (scripts/setup.sh installs it)")
    return _native.library("pybpfc_agent")


def build_c(src: str, out: str, *extra: str) -> str:
    r = subprocess.run(["gcc", "-O2", "-g", "-o", out, src, "-pthread", *extra], capture_output=True, text=True)
    if r.returncode:
        raise AssertionError(f"gcc {src} failed:\n{r.stderr}")
    return out


@pytest.fixture(scope="session")
def harness(agent_lib, tmp_path_factory):
    d = tmp_path_factory.mktemp("agent")
    return build_c(os.path.join(HERE, "harness.c"), str(d / "harness"), f"-I{ROOT}/agent", agent_lib,
                   f"-Wl,-rpath,{os.path.dirname(agent_lib)}")


@pytest.fixture(scope="session")
def cbuild():
    return build_c


@pytest.fixture(scope="session")
def bpf_objs(tmp_path_factory):
    """The examples/userspace C programs and the test programs, built with clang."""
    clang = shutil.which("clang-19") or shutil.which("clang")
    if not clang:
        pytest.skip("clang is needed to build the BPF test objects")
    d = tmp_path_factory.mktemp("bpfobj")
    out = {}
    srcs = [os.path.join(ROOT, "examples", "userspace", f) for f in
            ("malloc_count.bpf.c", "malloc_latency.bpf.c", "opens.bpf.c")]
    srcs.append(os.path.join(HERE, "progs", "fault.bpf.c"))
    srcs.append(os.path.join(HERE, "progs", "sysraw.bpf.c"))
    for src in srcs:
        name = os.path.basename(src)[:-len(".bpf.c")]
        o = str(d / f"{name}.bpf.o")
        r = subprocess.run([clang, "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                            "-c", src, "-o", o], capture_output=True, text=True)
        if r.returncode:
            raise AssertionError(f"clang {src}:\n{r.stderr}")
        out[name] = o
    return out


@pytest.fixture(scope="session")
def target(tmp_path_factory):
    d = tmp_path_factory.mktemp("target")
    return build_c(os.path.join(HERE, "progs", "target.c"), str(d / "target"), "-O1")


@pytest.fixture
def kernel_ok():
    if os.geteuid() != 0:
        pytest.skip("the kernel comparison needs root")
    if not os.path.isdir("/sys/kernel/tracing/events/syscalls"):
        pytest.skip("tracefs with syscall tracepoints is not mounted")


@pytest.fixture(scope="session")
def cxx_harness(agent_lib, tmp_path_factory):
    if not shutil.which("g++"):
        pytest.skip("g++ is needed for the C++ exception test")
    d = tmp_path_factory.mktemp("agentcxx")
    out = str(d / "cxx_harness")
    r = subprocess.run(["g++", "-O2", "-g", f"-I{ROOT}/agent", "-o", out, os.path.join(HERE, "cxx_harness.cpp"),
                        agent_lib, f"-Wl,-rpath,{os.path.dirname(agent_lib)}"], capture_output=True, text=True)
    if r.returncode:
        raise AssertionError(f"g++ cxx_harness.cpp failed:\n{r.stderr}")
    return out
