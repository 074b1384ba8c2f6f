"""Shared helpers for the compiler tests: write a program, compile it, load it into the kernel."""
from __future__ import annotations

import os
import textwrap

import pytest

import pybpfc

HEADER = ("from pybpfc import *\n"
          "from pybpfc import XDP_PASS, XDP_DROP, XDP_ABORTED, XDP_TX, BPF_ANY, BPF_NOEXIST, BPF_EXIST\n")


def kernel_ok() -> bool:
    if os.geteuid() != 0:
        return False
    try:
        from pybpfc.backends.kernel import kernel_available
    except ImportError:
        return False
    return kernel_available()


needs_kernel = pytest.mark.skipif(not kernel_ok(), reason="needs root and kernel eBPF (bpf(2))")

PKT = bytes(range(64))


def write(tmp_path, src: str, name: str = "prog.py", header: bool = True) -> str:
    p = tmp_path / name
    p.write_text((HEADER if header else "") + textwrap.dedent(src))
    return str(p)


def load(tmp_path, src: str, **kw):
    return pybpfc.load(write(tmp_path, src), backend="kernel", **kw)


def run_xdp(tmp_path, body: str, data: bytes = PKT, prelude: str = "", **kw):
    """Compile `def prog(ctx) -> int:` with body, run it once, return (retval, collection)."""
    src = prelude + "\n@bpf.xdp\ndef prog(ctx) -> int:\n" + textwrap.indent(textwrap.dedent(body), "    ")
    obj = load(tmp_path, src, **kw)
    r = obj.programs.prog.test_run(data)
    return r.retval, obj


def compile_errors(tmp_path, src: str, header: bool = True):
    """The diagnostics for an invalid program (fails if it compiles)."""
    path = write(tmp_path, src, header=header)
    with pytest.raises(pybpfc.CompileError) as ei:
        pybpfc.compile(path)
    return ei.value.diagnostics
