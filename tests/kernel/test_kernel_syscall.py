"""bpf(2) wrapper: attr layouts checked against linux/bpf.h with the C compiler, and each
command exercised against the running kernel."""
import ctypes
import os
import shutil
import struct
import subprocess

import pytest

from pybpfc import uapi
from pybpfc.backends.kernel import syscall as sc
from pybpfc.errors import LoadError

# (ctypes struct, C expression prefix, {ctypes field: C member}) for the layout check.
LAYOUTS = [
    (sc.MapCreateAttr, "union bpf_attr", {f: f for f in (
        "map_type", "key_size", "value_size", "max_entries", "map_flags", "inner_map_fd",
        "numa_node", "map_name", "map_ifindex", "btf_fd", "btf_key_type_id",
        "btf_value_type_id", "btf_vmlinux_value_type_id", "map_extra")}),
    (sc.MapElemAttr, "union bpf_attr", {"map_fd": "map_fd", "key": "key", "value": "value",
                                         "flags": "flags"}),
    (sc.MapBatchAttr, "union bpf_attr", {f: "batch." + f for f in (
        "in_batch", "out_batch", "keys", "values", "count", "map_fd", "elem_flags", "flags")}),
    (sc.ProgLoadAttr, "union bpf_attr", {f: f for f in (
        "prog_type", "insn_cnt", "insns", "license", "log_level", "log_size", "log_buf",
        "kern_version", "prog_flags", "prog_name", "prog_ifindex", "expected_attach_type",
        "prog_btf_fd", "func_info_rec_size", "func_info", "func_info_cnt", "line_info_rec_size",
        "line_info", "line_info_cnt", "attach_btf_id", "attach_prog_fd", "core_relo_cnt",
        "fd_array", "core_relos", "core_relo_rec_size")}),
    (sc.ObjAttr, "union bpf_attr", {f: f for f in ("pathname", "bpf_fd", "file_flags")}),
    (sc.ProgAttachAttr, "union bpf_attr", {f: f for f in (
        "target_fd", "attach_bpf_fd", "attach_type", "attach_flags", "replace_bpf_fd")}),
    (sc.TestRunAttr, "union bpf_attr", {f: "test." + f for f in (
        "prog_fd", "retval", "data_size_in", "data_size_out", "data_in", "data_out", "repeat",
        "duration", "ctx_size_in", "ctx_size_out", "ctx_in", "ctx_out", "flags", "cpu",
        "batch_size")}),
    (sc.InfoAttr, "union bpf_attr", {f: "info." + f for f in ("bpf_fd", "info_len", "info")}),
    (sc.QueryAttr, "union bpf_attr", {f: "query." + f for f in (
        "target_fd", "attach_type", "query_flags", "attach_flags", "prog_ids", "prog_cnt",
        "prog_attach_flags")}),
    (sc.RawTracepointAttr, "union bpf_attr", {f: "raw_tracepoint." + f for f in ("name", "prog_fd")}),
    (sc.BtfLoadAttr, "union bpf_attr", {f: f for f in (
        "btf", "btf_log_buf", "btf_size", "btf_log_size", "btf_log_level")}),
    (sc.LinkCreateAttr, "union bpf_attr", {"prog_fd": "link_create.prog_fd",
                                           "target_fd": "link_create.target_fd",
                                           "attach_type": "link_create.attach_type",
                                           "flags": "link_create.flags",
                                           "u": "link_create.target_btf_id"}),
    (sc.TaskFdQueryAttr, "union bpf_attr", {f: "task_fd_query." + f for f in (
        "pid", "fd", "flags", "buf_len", "buf", "prog_id", "fd_type", "probe_offset",
        "probe_addr")}),
    (sc.MapInfo, "struct bpf_map_info", {f: f for f in (
        "type", "id", "key_size", "value_size", "max_entries", "map_flags", "name", "ifindex",
        "btf_vmlinux_value_type_id", "netns_dev", "netns_ino", "btf_id", "btf_key_type_id",
        "btf_value_type_id", "map_extra")}),
    (sc.ProgInfo, "struct bpf_prog_info", {f: f for f in (
        "type", "id", "tag", "jited_prog_len", "xlated_prog_len", "load_time", "nr_map_ids",
        "map_ids", "name", "ifindex", "netns_dev", "btf_id", "func_info", "nr_line_info",
        "line_info", "prog_tags", "run_time_ns", "run_cnt", "recursion_misses",
        "verified_insns", "attach_btf_id")}),
]


def test_attr_layouts_match_header(tmp_path):
    if not shutil.which("gcc"):
        pytest.skip("gcc not installed")
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <linux/bpf.h>",
             "int main(void) {"]
    expected = []
    for cls, ctype, fields in LAYOUTS:
        for pyf, cf in fields.items():
            lines.append(f'printf("%zu\\n", offsetof({ctype}, {cf}));')
            expected.append((cls.__name__, pyf, getattr(cls, pyf).offset))
    if True:
        lines.append('printf("%zu\\n", sizeof(struct bpf_map_info));')
        expected.append(("MapInfo", "sizeof", ctypes.sizeof(sc.MapInfo)))
        lines.append('printf("%zu\\n", sizeof(struct bpf_prog_info));')
        expected.append(("ProgInfo", "sizeof", ctypes.sizeof(sc.ProgInfo)))
    lines.append("return 0; }")
    src = tmp_path / "off.c"
    src.write_text("\n".join(lines))
    subprocess.run(["gcc", "-o", str(tmp_path / "off"), str(src)], check=True)
    got = [int(x) for x in subprocess.run([str(tmp_path / "off")], check=True,
                                          capture_output=True, text=True).stdout.split()]
    bad = [(c, f, py, c_) for (c, f, py), c_ in zip(expected, got) if py != c_]
    assert not bad, f"(struct, field, ctypes offset, C offset): {bad}"


needs_bpf = pytest.mark.skipif(os.geteuid() != 0, reason="bpf(2) needs root here")

# mov r0, 2 ; exit
RET2 = struct.pack("<BBhi", 0xb7, 0, 0, 2) + struct.pack("<BBhi", 0x95, 0, 0, 0)


@needs_bpf
def test_map_elem_commands():
    fd = sc.map_create(uapi.BPF_MAP_TYPE_HASH, 4, 8, 16, name="t_hash")
    try:
        assert sc.map_lookup_elem(fd, struct.pack("<I", 1), 8) is None
        sc.map_update_elem(fd, struct.pack("<I", 1), struct.pack("<Q", 77))
        sc.map_update_elem(fd, struct.pack("<I", 2), struct.pack("<Q", 78))
        assert sc.map_lookup_elem(fd, struct.pack("<I", 1), 8) == struct.pack("<Q", 77)
        keys, k = [], sc.map_get_next_key(fd, None, 4)
        while k is not None:
            keys.append(struct.unpack("<I", k)[0])
            k = sc.map_get_next_key(fd, k, 4)
        assert sorted(keys) == [1, 2]
        with pytest.raises(LoadError, match=r"map 'h': update failed: File exists"):
            sc.map_update_elem(fd, struct.pack("<I", 1), bytes(8), uapi.BPF_NOEXIST, "map 'h'")
        assert sc.map_delete_elem(fd, struct.pack("<I", 1)) is True
        assert sc.map_delete_elem(fd, struct.pack("<I", 1)) is False
        info = sc.map_info(fd)
        assert (info.type, info.key_size, info.value_size, info.max_entries) == (1, 4, 8, 16)
        assert info.name == b"t_hash"
    finally:
        os.close(fd)


@needs_bpf
def test_map_create_error_names_map():
    with pytest.raises(LoadError) as ei:
        sc.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 0, name="empty")
    assert str(ei.value).startswith("map 'empty': map create failed: Invalid argument")
    assert ei.value.errno == 22


@needs_bpf
def test_queue_and_freeze():
    fd = sc.map_create(uapi.BPF_MAP_TYPE_QUEUE, 0, 4, 4, name="q")
    try:
        for i in range(3):
            sc.map_update_elem(fd, None, struct.pack("<I", i))
        assert [sc.map_lookup_and_delete_elem(fd, None, 4) for _ in range(4)] == \
            [struct.pack("<I", i) for i in range(3)] + [None]
    finally:
        os.close(fd)
    fd = sc.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, 4, 1, name="frozen")
    try:
        sc.map_update_elem(fd, bytes(4), b"abcd")
        sc.map_freeze(fd)
        with pytest.raises(LoadError, match="Operation not permitted|Device or resource busy"):
            sc.map_update_elem(fd, bytes(4), b"efgh")
    finally:
        os.close(fd)


@needs_bpf
def test_batch_lookup():
    fd = sc.map_create(uapi.BPF_MAP_TYPE_HASH, 4, 4, 64, name="b")
    try:
        for i in range(10):
            sc.map_update_elem(fd, struct.pack("<I", i), struct.pack("<I", i * i))
        keys = ctypes.create_string_buffer(4 * 64)
        vals = ctypes.create_string_buffer(4 * 64)
        out = ctypes.create_string_buffer(4)
        r, n = sc.map_batch(uapi.BPF_MAP_LOOKUP_BATCH, fd, None, out, keys, vals, 64)
        assert r in (0, -2) and n == 10
        got = {struct.unpack_from("<I", keys, 4 * i)[0]: struct.unpack_from("<I", vals, 4 * i)[0]
               for i in range(n)}
        assert got == {i: i * i for i in range(10)}
    finally:
        os.close(fd)


@needs_bpf
def test_prog_load_test_run_pin(tmp_path):
    fd, _ = sc.prog_load(uapi.BPF_PROG_TYPE_XDP, RET2, name="ret2")
    assert fd >= 0, os.strerror(-fd)
    try:
        retval, data, ctx, dur = sc.prog_test_run(fd, b"\0" * 64, data_size_out=64, repeat=10)
        assert retval == 2 and data == b"\0" * 64
        info = sc.prog_info(fd)
        assert info.type == uapi.BPF_PROG_TYPE_XDP and info.name == b"ret2"
        if os.path.ismount("/sys/fs/bpf"):
            path = f"/sys/fs/bpf/pybpfc_t_syscall_{os.getpid()}"
            sc.obj_pin(fd, path)
            try:
                fd2 = sc.obj_get(path)
                assert sc.prog_info(fd2).id == info.id
                os.close(fd2)
            finally:
                os.unlink(path)
    finally:
        os.close(fd)


@needs_bpf
def test_prog_load_failure_gives_log():
    bad = struct.pack("<BBhi", 0x95, 0, 0, 0)  # exit without setting r0
    buf = ctypes.create_string_buffer(1 << 16)
    fd, _ = sc.prog_load(uapi.BPF_PROG_TYPE_XDP, bad, name="bad", log_level=1, log_buf=buf)
    assert fd == -13 or fd == -22
    assert "R0 !read_ok" in buf.value.decode()


def _btf(int_bits=32):
    types = struct.pack("<IIII", 1, 1 << 24, 4, (1 << 24) | int_bits)  # INT "int", signed
    strs = b"\0int\0"
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strs))
    return hdr + types + strs


@needs_bpf
def test_btf_load_and_log():
    fd, log = sc.btf_load(_btf())
    assert fd >= 0, log
    os.close(fd)
    fd, log = sc.btf_load(_btf(int_bits=99), log_level=1, log_size=4096)  # 99 bits > 4 bytes
    assert fd < 0 and log.strip()


@needs_bpf
def test_enable_stats_counts_runs():
    try:
        sfd = sc.enable_stats()
    except LoadError as e:
        pytest.skip(f"BPF_ENABLE_STATS unavailable: {e}")
    fd, _ = sc.prog_load(uapi.BPF_PROG_TYPE_XDP, RET2, name="stats")
    try:
        sc.prog_test_run(fd, bytes(64), data_size_out=64, repeat=5)
        info = sc.prog_info(fd)
        assert info.run_cnt == 5 and info.run_time_ns > 0
    finally:
        os.close(fd)
        os.close(sfd)
