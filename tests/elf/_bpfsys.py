"""Minimal bpf(2) through ctypes, only to check that specs are kernel-loadable in tests/elf.

The kernel backend is the real user of specs; this keeps the ELF reader's tests independent.
"""
import ctypes
import ctypes.util
import os
import struct

from pybpfc import uapi as U

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_SYS_BPF = 321  # x86_64


def bpf(cmd: int, attr: bytes) -> int:
    buf = ctypes.create_string_buffer(attr, len(attr))
    r = _libc.syscall(_SYS_BPF, cmd, buf, len(attr))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r


def btf_load(raw: bytes, log_size=1 << 20):
    data = ctypes.create_string_buffer(raw, len(raw))
    log = ctypes.create_string_buffer(log_size)
    # union bpf_attr for BPF_BTF_LOAD: btf, btf_log_buf, btf_size, btf_log_size, btf_log_level
    attr = struct.pack("<QQIII", ctypes.addressof(data), ctypes.addressof(log), len(raw), log_size, 1)
    try:
        return bpf(U.BPF_BTF_LOAD, attr.ljust(128, b"\0")), ""
    except OSError as e:
        return -e.errno, log.value.decode(errors="replace")


def map_create(m, btf_fd=0, inner_fd=0):
    # map_type, key_size, value_size, max_entries, map_flags, inner_map_fd, numa_node, map_name[16],
    # map_ifindex, btf_fd, btf_key_type_id, btf_value_type_id
    name = m.name.lstrip(".").encode()[:15].ljust(16, b"\0")
    kid, vid = (m.btf_key_type_id, m.btf_value_type_id) if btf_fd else (0, 0)
    attr = struct.pack("<IIIIIII16sIIII", m.type, m.key_size, m.value_size, m.max_entries or 1,
                       m.flags, inner_fd, 0, name, 0, btf_fd if kid or vid else 0, kid, vid)
    return bpf(U.BPF_MAP_CREATE, attr.ljust(128, b"\0"))


def prog_load(p, map_fds: dict, btf_fd=0, log_size=1 << 22):
    insns = bytearray(p.insns)
    for r in p.relocations:
        if r.kind in ("map", "map_value"):
            src = U.BPF_PSEUDO_MAP_FD if r.kind == "map" else U.BPF_PSEUDO_MAP_VALUE
            insns[r.insn * 8 + 1] = (insns[r.insn * 8 + 1] & 0x0F) | (src << 4)
            struct.pack_into("<i", insns, r.insn * 8 + 4, map_fds[r.target])
            struct.pack_into("<i", insns, r.insn * 8 + 12, r.addend)
    ib = ctypes.create_string_buffer(bytes(insns), len(insns))
    lic = ctypes.create_string_buffer(p.license.encode())
    log = ctypes.create_string_buffer(log_size)
    fi = ctypes.create_string_buffer(p.func_info_raw, max(len(p.func_info_raw), 1))
    li = ctypes.create_string_buffer(p.line_info_raw, max(len(p.line_info_raw), 1))
    use_btf = btf_fd and p.func_info_raw
    cr = getattr(p, "core_relos_raw", b"") if use_btf else b""
    crb = ctypes.create_string_buffer(cr, max(len(cr), 1))
    # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version, prog_flags,
    # prog_name[16], prog_ifindex, expected_attach_type, prog_btf_fd, func_info_rec_size,
    # func_info, func_info_cnt, line_info_rec_size, line_info, line_info_cnt
    attr = struct.pack(
        "<IIQQIIQII16sIIIIQIIQI",
        p.type, len(insns) // 8, ctypes.addressof(ib), ctypes.addressof(lic), 1, log_size,
        ctypes.addressof(log), p.kern_version, p.flags, p.name.encode()[:15].ljust(16, b"\0"), 0,
        p.expected_attach_type, btf_fd if use_btf else 0, 8 if use_btf else 0,
        ctypes.addressof(fi) if use_btf else 0, len(p.func_info_raw) // 8 if use_btf else 0,
        16 if use_btf else 0, ctypes.addressof(li) if use_btf else 0,
        len(p.line_info_raw) // 16 if use_btf else 0)
    # attach_btf_id, attach_prog_fd, core_relo_cnt, fd_array, core_relos, core_relo_rec_size
    attr += struct.pack("<IIIQQI", 0, 0, len(cr) // 16, 0, ctypes.addressof(crb) if cr else 0,
                        16 if cr else 0)
    try:
        return bpf(U.BPF_PROG_LOAD, attr.ljust(160, b"\0")), ""
    except OSError as e:
        return -e.errno, log.value.decode(errors="replace")


def test_run(prog_fd, data=b"", ctx=b""):
    """BPF_PROG_TEST_RUN once (repeat 0: syscall programs refuse any other); returns r0."""
    d = ctypes.create_string_buffer(data, max(len(data), 1))
    c = ctypes.create_string_buffer(ctx, max(len(ctx), 1))
    attr = struct.pack("<IIIIQQIIIIQQ", prog_fd, 0, len(data), 0, ctypes.addressof(d) if data else 0, 0,
                       0, 0, len(ctx), 0, ctypes.addressof(c) if ctx else 0, 0)
    buf = ctypes.create_string_buffer(attr.ljust(80, b"\0"), 80)
    r = _libc.syscall(_SYS_BPF, U.BPF_PROG_TEST_RUN, buf, 80)
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return struct.unpack_from("<I", buf.raw, 4)[0]


def _map_value_bytes(map_fd) -> int:
    """Bytes BPF_MAP_LOOKUP_ELEM writes for the map: its value size (per-CPU maps: a value,
    padded to 8 bytes, for each possible CPU), from BPF_OBJ_GET_INFO_BY_FD."""
    info = ctypes.create_string_buffer(80)
    bpf(U.BPF_OBJ_GET_INFO_BY_FD, struct.pack("<IIQ", map_fd, 80, ctypes.addressof(info)))
    mtype, _, _, value_size = struct.unpack_from("<IIII", info.raw)
    if mtype in (U.BPF_MAP_TYPE_PERCPU_HASH, U.BPF_MAP_TYPE_PERCPU_ARRAY, U.BPF_MAP_TYPE_LRU_PERCPU_HASH,
                 U.BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE):
        from pybpfc.backends.kernel.perf import possible_cpus

        return (value_size + 7) // 8 * 8 * len(possible_cpus())
    return value_size


def map_lookup(map_fd, key: bytes, value_size: int) -> bytes:
    """The first value_size bytes of the element. The buffer the kernel writes to is sized by
    the map itself: a smaller one was overrun (the kernel writes the whole value)."""
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(max(value_size, _map_value_bytes(map_fd)))
    bpf(U.BPF_MAP_LOOKUP_ELEM, struct.pack("<IIQQQ", map_fd, 0, ctypes.addressof(k), ctypes.addressof(v), 0))
    return v.raw[:value_size]


def map_update(map_fd, key: bytes, value: bytes, flags=0):
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    bpf(U.BPF_MAP_UPDATE_ELEM, struct.pack("<IIQQQ", map_fd, 0, ctypes.addressof(k), ctypes.addressof(v), flags))
