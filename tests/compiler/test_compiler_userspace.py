"""The same compiled programs in pybpfc's userspace runtime (no kernel needed)."""
from __future__ import annotations

import pytest

from test_compiler_exec import CASES


def _userspace_ok() -> bool:
    try:
        from pybpfc.backends.userspace import UserspaceBackend  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 - the native runtime may not build here
        return False


@pytest.mark.skipif(not _userspace_ok(), reason="userspace runtime not available")
@pytest.mark.parametrize("body,expected", CASES, ids=[c[0].replace("\n", "; ")[:50] for c in CASES])
def test_same_results_in_userspace_runtime(tmp_path, body, expected):
    import textwrap

    import pybpfc
    from compiler_helpers import write
    src = "\n@bpf.xdp\ndef prog(ctx) -> int:\n" + textwrap.indent(body, "    ")
    with pybpfc.load(write(tmp_path, src), backend="userspace") as obj:
        assert obj.programs.prog.test_run(bytes(64)).retval == expected
