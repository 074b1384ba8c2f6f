"""The shared-memory store: creation, permissions, opening from other processes, versioning,
links and generation counters (what the agent reads)."""
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from pybpfc.backends.userspace import Store, userspace_available
from pybpfc.backends.userspace.runtime import ffi, lib
from pybpfc.errors import LoadError

pytestmark = pytest.mark.skipif(not userspace_available(), reason="native runtime cannot be built here")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_child(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_memfd_store_is_owner_only_and_opened_by_path():
    with Store.create() as st:
        assert st.path == f"/proc/{os.getpid()}/fd/{st.fd}"
        assert stat.S_IMODE(os.fstat(st.fd).st_mode) == 0o600
        mid = lib().pbs_map_create(st.handle, b"shared", 1, 4, 8, 16, 0, 0)
        assert mid > 0
        with Store.open(st.path) as other:  # a second mapping at another address
            assert other.map_id("shared") == mid
            m = lib().pbs_map(other.handle, mid)
            assert lib().pbs_map_update_user(m, b"\1\0\0\0", b"\x2a" + bytes(7), 0) == 0
        out = ffi().new("char[]", 8)
        assert lib().pbs_map_lookup_copy(lib().pbs_map(st.handle, mid), b"\1\0\0\0", out) == 0
        assert ffi().buffer(out, 8)[:] == b"\x2a" + bytes(7)


def test_named_store_seen_by_another_process(tmp_path):
    path = f"/dev/shm/pybpfc-test-{os.getpid()}"
    st = Store.create(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        mid = lib().pbs_map_create(st.handle, b"counts", 2, 4, 8, 4, 0, 0)
        out = run_child(f"""
            from pybpfc.backends.userspace import Store
            from pybpfc.backends.userspace.runtime import lib
            st = Store.open({path!r})
            m = lib().pbs_map(st.handle, st.map_id("counts"))
            assert lib().pbs_map_update_user(m, b"\\2\\0\\0\\0", (1234).to_bytes(8, "little"), 0) == 0
            print(st.map_id("counts"))
        """)
        assert int(out) == mid
        v = ffi().new("char[]", 8)
        assert lib().pbs_map_lookup_copy(lib().pbs_map(st.handle, mid), b"\2\0\0\0", v) == 0
        assert int.from_bytes(ffi().buffer(v, 8)[:], "little") == 1234
    finally:
        st.close()
    assert not os.path.exists(path)  # the creator removes the file


def test_open_refuses_a_file_that_is_not_a_store(tmp_path):
    p = tmp_path / "junk"
    p.write_bytes(b"\0" * 8192)
    with pytest.raises(LoadError, match=r"junk: cannot open: not a pybpfc store"):
        Store.open(str(p))
    with pytest.raises(LoadError, match=r"cannot open: No such file"):
        Store.open(str(tmp_path / "missing"))


def test_links_bump_generations_and_keep_program_alive():
    L = lib()
    with Store.create() as st:
        insns = bytes.fromhex("b700000007000000") + bytes.fromhex("9500000000000000")  # r0 = 7; exit
        pid = L.pbs_prog_create(st.handle, b"p", b"uprobe/x", 2, 0, insns, 2, ffi().NULL, 0)
        assert pid > 0
        g0 = st.generation
        lid = L.pbs_link_create(st.handle, 1, pid, b"/bin/true", 0x1234, b"", -1, 99)
        assert lid > 0 and st.generation > g0
        L.pbs_prog_put(st.handle, pid)  # the loader lets go; the link still holds it
        res = ffi().new("struct pbs_run_result *")
        assert L.pbs_prog_run(st.handle, pid, 0, 0, ffi().NULL, 0, 0, res) == 7
        assert res.status == 0
        assert L.pbs_link_set_enabled(st.handle, lid, 0) == 0
        L.pbs_link_destroy(st.handle, lid)
        assert L.pbs_prog(st.handle, pid) == ffi().NULL  # last reference gone


def test_allocator_reuses_freed_maps():
    L = lib()
    with Store.create(size=64 << 20) as st:
        # 200 x 1 MiB maps would not fit in 64 MiB without reuse of freed blocks
        for i in range(200):
            mid = L.pbs_map_create(st.handle, b"big", 2, 4, 1024, 1024, 0, 0)
            assert mid > 0, i
            L.pbs_map_put(st.handle, mid)


def test_stale_jit_mapping_is_not_used_for_a_reused_program_id():
    """Another process mapped program A's JIT code; A is unloaded and B takes its id: that
    process must run B (interpreted until it maps B's code), never A's code."""
    try:
        from pybpfc.backends.userspace.jit import jit_compile
        code_a = jit_compile(bytes.fromhex("b700000001000000" "9500000000000000"))
    except Exception as e:  # noqa: BLE001 - no JIT here
        pytest.skip(f"JIT unavailable: {e}")
    L, F = lib(), ffi()
    res = F.new("struct pbs_run_result *")
    with Store.create() as st, Store.open(st.path) as other:
        a = L.pbs_prog_create(st.handle, b"a", b"xdp", 6, 0, bytes.fromhex("b700000001000000" "9500000000000000"),
                              2, F.NULL, 0)
        assert L.pbs_prog_set_jit(st.handle, a, code_a.code, len(code_a.code), code_a.entry) == 0
        assert L.pbs_prog_map_jit(other.handle, a) == 0
        assert L.pbs_prog_run(other.handle, a, 0, 0, F.NULL, 0, 0, res) == 1
        L.pbs_prog_put(st.handle, a)
        b = L.pbs_prog_create(st.handle, b"b", b"xdp", 6, 0, bytes.fromhex("b700000002000000" "9500000000000000"),
                              2, F.NULL, 0)
        assert b == a  # the id is reused
        assert L.pbs_prog_run(other.handle, b, 0, 0, F.NULL, 0, 0, res) == 2
        assert res.status == 0
