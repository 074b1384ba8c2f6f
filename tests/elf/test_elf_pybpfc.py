"""The reader on pybpfc's own compiler output: the same spec shape as for clang objects."""
import os
import sys

import pytest

from pybpfc.elf import read_elf

HERE = os.path.dirname(__file__)
EXAMPLES = os.path.join(HERE, "..", "..", "examples")
sys.path.insert(0, HERE)
import _bpfsys  # noqa: E402


def compiled(name):
    import pybpfc

    path = os.path.join(EXAMPLES, name)
    if not os.path.exists(path):
        pytest.skip(f"{name} not in examples/")
    try:
        obj = pybpfc.compile(path)
    except Exception as e:  # the compiler is another area: this file tests the reader
        pytest.skip(f"compiler cannot build {name}: {type(e).__name__}: {e}")
    return read_elf(obj, source=path), path


def test_execsnoop_event_type_and_line_info():
    s, path = compiled("execsnoop.py")
    ev = s.maps["events"].event_type
    assert [(n, t.__name__, o) for n, t, o in ev._fields_] == [
        ("pid", "u32", 0), ("uid", "u32", 4), ("ts", "u64", 8), ("comm", "Str[16]", 16), ("filename", "Str[128]", 32)]
    p = s.programs["on_execve"]
    assert (p.kind, p.attach_to) == ("tracepoint", "syscalls/sys_enter_execve")
    assert p.line_info and all(li.file.endswith("execsnoop.py") for li in p.line_info)
    assert "def on_execve(ctx) -> int:" in {li.source for li in p.line_info}
    assert [s.btf[t].name for _, t in p.func_info] == ["on_execve"]


@pytest.mark.parametrize("name", ["execsnoop.py", "opens.py", "xdp_proto.py", "mallocsize.py", "sockfilter.py"])
def test_examples_read_and_load(name):
    s, _ = compiled(name)
    assert s.programs
    for m in s.maps.values():
        if m.key_type is not None:
            assert m.key_type._size == m.key_size, m.name
        if m.value_type is not None:
            assert m.value_type._size == m.value_size, m.name
    if os.geteuid() != 0:
        pytest.skip("needs root for bpf(2)")
    btf_fd, log = _bpfsys.btf_load(s.btf.raw)
    assert btf_fd >= 0, log
    fds = [btf_fd]
    try:
        maps = {}
        for n, m in s.maps.items():
            maps[n] = _bpfsys.map_create(m, btf_fd if m.btf_key_type_id else 0)
            fds.append(maps[n])
        for n, p in s.programs.items():
            fd, log = _bpfsys.prog_load(p, maps, btf_fd)
            assert fd >= 0, f"{n}: {log}"
            fds.append(fd)
    finally:
        for fd in fds:
            os.close(fd)
