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
