"""The bpf(2) system call: union bpf_attr layouts (linux/bpf.h) as ctypes structures and one
thin function per command.

Every command takes only the part of `union bpf_attr` it uses; the kernel accepts a shorter
attr as long as it covers the fields it reads and rejects a longer one whose unknown tail is
not zero, so each structure is passed with its own size.

Failures raise a pybpfc error (LoadError by default) whose message starts with the subject
(`map 'x':`, `prog 'y':`) and ends with the errno text; the exception carries `.errno`.
`sys_bpf()` is the fast path that returns -errno instead of raising (map element ops).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
import platform
from ctypes import (POINTER, Structure, Union, addressof, byref, c_char, c_int, c_long, c_uint8,
                    c_uint32, c_uint64, c_void_p, sizeof)
from typing import Optional

from ... import uapi
from ...errors import AttachError, Error, LoadError

_NR_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "armv7l": 386, "ppc64le": 361,
           "s390x": 351}.get(platform.machine(), 321)

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = c_long
_syscall.argtypes = [c_long, c_long, c_void_p, c_long]

BPF_OBJ_NAME_LEN = 16

# Flags from linux/bpf.h not (yet) in pybpfc.uapi.
BPF_F_NO_COMMON_LRU = 1 << 1
BPF_F_NUMA_NODE = 1 << 2
BPF_F_STACK_BUILD_ID = 1 << 5
BPF_F_ZERO_SEED = 1 << 6
BPF_F_PRESERVE_ELEMS = 1 << 11
BPF_F_INNER_MAP = 1 << 12
BPF_F_SLEEPABLE = 1 << 4
BPF_F_XDP_HAS_FRAGS = 1 << 5
BPF_F_ALLOW_OVERRIDE = 1 << 0
BPF_F_ALLOW_MULTI = 1 << 1
BPF_F_REPLACE = 1 << 2
BPF_F_QUERY_EFFECTIVE = 1 << 0
BPF_F_TEST_RUN_ON_CPU = 1 << 0
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
BPF_STATS_RUN_TIME = 0
BPF_RINGBUF_BUSY_BIT = 1 << 31
BPF_RINGBUF_DISCARD_BIT = 1 << 30
BPF_RINGBUF_HDR_SZ = 8

_CMD_NAMES = {v: k for k, v in vars(uapi).items()
              if k.startswith("BPF_") and isinstance(v, int) and k in (
                  "BPF_MAP_CREATE", "BPF_MAP_LOOKUP_ELEM", "BPF_MAP_UPDATE_ELEM",
                  "BPF_MAP_DELETE_ELEM", "BPF_MAP_GET_NEXT_KEY", "BPF_PROG_LOAD", "BPF_OBJ_PIN",
                  "BPF_OBJ_GET", "BPF_PROG_ATTACH", "BPF_PROG_DETACH", "BPF_PROG_TEST_RUN",
                  "BPF_PROG_GET_NEXT_ID", "BPF_MAP_GET_NEXT_ID", "BPF_PROG_GET_FD_BY_ID",
                  "BPF_MAP_GET_FD_BY_ID", "BPF_OBJ_GET_INFO_BY_FD", "BPF_PROG_QUERY",
                  "BPF_RAW_TRACEPOINT_OPEN", "BPF_BTF_LOAD", "BPF_BTF_GET_FD_BY_ID",
                  "BPF_TASK_FD_QUERY", "BPF_MAP_LOOKUP_AND_DELETE_ELEM", "BPF_MAP_FREEZE",
                  "BPF_BTF_GET_NEXT_ID", "BPF_MAP_LOOKUP_BATCH", "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
                  "BPF_MAP_UPDATE_BATCH", "BPF_MAP_DELETE_BATCH", "BPF_LINK_CREATE",
                  "BPF_LINK_UPDATE", "BPF_LINK_GET_FD_BY_ID", "BPF_LINK_GET_NEXT_ID",
                  "BPF_ENABLE_STATS", "BPF_ITER_CREATE", "BPF_LINK_DETACH", "BPF_PROG_BIND_MAP")}


class _Attr(Structure):
    """Base: 8-byte aligned like union bpf_attr; fields default to zero."""

    _pack_ = 8


def _u64(ptr) -> int:
    """Address of a ctypes object / bytes buffer as __aligned_u64."""
    if ptr is None:
        return 0
    if isinstance(ptr, int):
        return ptr
    return addressof(ptr)


class MapCreateAttr(_Attr):
    _fields_ = [("map_type", c_uint32), ("key_size", c_uint32), ("value_size", c_uint32),
                ("max_entries", c_uint32), ("map_flags", c_uint32), ("inner_map_fd", c_uint32),
                ("numa_node", c_uint32), ("map_name", c_char * BPF_OBJ_NAME_LEN),
                ("map_ifindex", c_uint32), ("btf_fd", c_uint32), ("btf_key_type_id", c_uint32),
                ("btf_value_type_id", c_uint32), ("btf_vmlinux_value_type_id", c_uint32),
                ("map_extra", c_uint64)]


class MapElemAttr(_Attr):
    _fields_ = [("map_fd", c_uint32), ("key", c_uint64), ("value", c_uint64), ("flags", c_uint64)]


MapElemAttr.next_key = MapElemAttr.value


class MapBatchAttr(_Attr):
    _fields_ = [("in_batch", c_uint64), ("out_batch", c_uint64), ("keys", c_uint64),
                ("values", c_uint64), ("count", c_uint32), ("map_fd", c_uint32),
                ("elem_flags", c_uint64), ("flags", c_uint64)]


class ProgLoadAttr(_Attr):
    _fields_ = [("prog_type", c_uint32), ("insn_cnt", c_uint32), ("insns", c_uint64),
                ("license", c_uint64), ("log_level", c_uint32), ("log_size", c_uint32),
                ("log_buf", c_uint64), ("kern_version", c_uint32), ("prog_flags", c_uint32),
                ("prog_name", c_char * BPF_OBJ_NAME_LEN), ("prog_ifindex", c_uint32),
                ("expected_attach_type", c_uint32), ("prog_btf_fd", c_uint32),
                ("func_info_rec_size", c_uint32), ("func_info", c_uint64),
                ("func_info_cnt", c_uint32), ("line_info_rec_size", c_uint32),
                ("line_info", c_uint64), ("line_info_cnt", c_uint32), ("attach_btf_id", c_uint32),
                ("attach_prog_fd", c_uint32),  # union with attach_btf_obj_fd
                ("core_relo_cnt", c_uint32), ("fd_array", c_uint64), ("core_relos", c_uint64),
                ("core_relo_rec_size", c_uint32),
                # 6.1+ (after the Debian header this module was written against):
                ("log_true_size", c_uint32)]


class ObjAttr(_Attr):
    _fields_ = [("pathname", c_uint64), ("bpf_fd", c_uint32), ("file_flags", c_uint32)]


class ProgAttachAttr(_Attr):
    _fields_ = [("target_fd", c_uint32), ("attach_bpf_fd", c_uint32), ("attach_type", c_uint32),
                ("attach_flags", c_uint32), ("replace_bpf_fd", c_uint32)]


class TestRunAttr(_Attr):
    _fields_ = [("prog_fd", c_uint32), ("retval", c_uint32), ("data_size_in", c_uint32),
                ("data_size_out", c_uint32), ("data_in", c_uint64), ("data_out", c_uint64),
                ("repeat", c_uint32), ("duration", c_uint32), ("ctx_size_in", c_uint32),
                ("ctx_size_out", c_uint32), ("ctx_in", c_uint64), ("ctx_out", c_uint64),
                ("flags", c_uint32), ("cpu", c_uint32), ("batch_size", c_uint32)]


class GetIdAttr(_Attr):
    _fields_ = [("start_id", c_uint32), ("next_id", c_uint32), ("open_flags", c_uint32)]


class InfoAttr(_Attr):
    _fields_ = [("bpf_fd", c_uint32), ("info_len", c_uint32), ("info", c_uint64)]


class QueryAttr(_Attr):
    _fields_ = [("target_fd", c_uint32), ("attach_type", c_uint32), ("query_flags", c_uint32),
                ("attach_flags", c_uint32), ("prog_ids", c_uint64), ("prog_cnt", c_uint32),
                ("prog_attach_flags", c_uint64)]


class RawTracepointAttr(_Attr):
    _fields_ = [("name", c_uint64), ("prog_fd", c_uint32)]


class BtfLoadAttr(_Attr):
    _fields_ = [("btf", c_uint64), ("btf_log_buf", c_uint64), ("btf_size", c_uint32),
                ("btf_log_size", c_uint32), ("btf_log_level", c_uint32)]


class TaskFdQueryAttr(_Attr):
    _fields_ = [("pid", c_uint32), ("fd", c_uint32), ("flags", c_uint32), ("buf_len", c_uint32),
                ("buf", c_uint64), ("prog_id", c_uint32), ("fd_type", c_uint32),
                ("probe_offset", c_uint64), ("probe_addr", c_uint64)]


class _LinkPerfEvent(_Attr):
    _fields_ = [("bpf_cookie", c_uint64)]


class _LinkKprobeMulti(_Attr):
    _fields_ = [("flags", c_uint32), ("cnt", c_uint32), ("syms", c_uint64), ("addrs", c_uint64),
                ("cookies", c_uint64)]


class _LinkTracing(_Attr):
    _fields_ = [("target_btf_id", c_uint32), ("cookie", c_uint64)]


class _LinkTcx(_Attr):
    # 6.6+: union { relative_fd; relative_id }, expected_revision
    _fields_ = [("relative_fd", c_uint32), ("expected_revision", c_uint64)]


class _LinkUprobeMulti(_Attr):
    # 6.6+
    _fields_ = [("path", c_uint64), ("offsets", c_uint64), ("ref_ctr_offsets", c_uint64),
                ("cookies", c_uint64), ("cnt", c_uint32), ("flags", c_uint32), ("pid", c_uint32)]


class _LinkIter(_Attr):
    _fields_ = [("iter_info", c_uint64), ("iter_info_len", c_uint32)]


class _LinkCreateTail(Union):
    _pack_ = 8
    _fields_ = [("target_btf_id", c_uint32), ("iter", _LinkIter), ("perf_event", _LinkPerfEvent),
                ("kprobe_multi", _LinkKprobeMulti), ("tracing", _LinkTracing),
                ("tcx", _LinkTcx), ("uprobe_multi", _LinkUprobeMulti), ("netkit", _LinkTcx)]


class LinkCreateAttr(_Attr):
    """BPF_LINK_CREATE. `target_fd` doubles as target_ifindex (same union slot)."""

    _anonymous_ = ("u",)
    _fields_ = [("prog_fd", c_uint32), ("target_fd", c_uint32), ("attach_type", c_uint32),
                ("flags", c_uint32), ("u", _LinkCreateTail)]


LinkCreateAttr.target_ifindex = LinkCreateAttr.target_fd


class LinkUpdateAttr(_Attr):
    _fields_ = [("link_fd", c_uint32), ("new_prog_fd", c_uint32), ("flags", c_uint32),
                ("old_prog_fd", c_uint32)]


class LinkDetachAttr(_Attr):
    _fields_ = [("link_fd", c_uint32)]


class EnableStatsAttr(_Attr):
    _fields_ = [("type", c_uint32)]


class IterCreateAttr(_Attr):
    _fields_ = [("link_fd", c_uint32), ("flags", c_uint32)]


class ProgBindMapAttr(_Attr):
    _fields_ = [("prog_fd", c_uint32), ("map_fd", c_uint32), ("flags", c_uint32)]


# -- info structures (BPF_OBJ_GET_INFO_BY_FD) ------------------------------------------------

class MapInfo(_Attr):
    _fields_ = [("type", c_uint32), ("id", c_uint32), ("key_size", c_uint32),
                ("value_size", c_uint32), ("max_entries", c_uint32), ("map_flags", c_uint32),
                ("name", c_char * BPF_OBJ_NAME_LEN), ("ifindex", c_uint32),
                ("btf_vmlinux_value_type_id", c_uint32), ("netns_dev", c_uint64),
                ("netns_ino", c_uint64), ("btf_id", c_uint32), ("btf_key_type_id", c_uint32),
                ("btf_value_type_id", c_uint32), ("_pad", c_uint32), ("map_extra", c_uint64)]


class ProgInfo(_Attr):
    _fields_ = [("type", c_uint32), ("id", c_uint32), ("tag", c_uint8 * 8),
                ("jited_prog_len", c_uint32), ("xlated_prog_len", c_uint32),
                ("jited_prog_insns", c_uint64), ("xlated_prog_insns", c_uint64),
                ("load_time", c_uint64), ("created_by_uid", c_uint32), ("nr_map_ids", c_uint32),
                ("map_ids", c_uint64), ("name", c_char * BPF_OBJ_NAME_LEN), ("ifindex", c_uint32),
                ("gpl_compatible", c_uint32), ("netns_dev", c_uint64), ("netns_ino", c_uint64),
                ("nr_jited_ksyms", c_uint32), ("nr_jited_func_lens", c_uint32),
                ("jited_ksyms", c_uint64), ("jited_func_lens", c_uint64), ("btf_id", c_uint32),
                ("func_info_rec_size", c_uint32), ("func_info", c_uint64),
                ("nr_func_info", c_uint32), ("nr_line_info", c_uint32), ("line_info", c_uint64),
                ("jited_line_info", c_uint64), ("nr_jited_line_info", c_uint32),
                ("line_info_rec_size", c_uint32), ("jited_line_info_rec_size", c_uint32),
                ("nr_prog_tags", c_uint32), ("prog_tags", c_uint64), ("run_time_ns", c_uint64),
                ("run_cnt", c_uint64), ("recursion_misses", c_uint64),
                ("verified_insns", c_uint32), ("attach_btf_obj_id", c_uint32),
                ("attach_btf_id", c_uint32), ("_pad", c_uint32)]


class BtfInfo(_Attr):
    _fields_ = [("btf", c_uint64), ("btf_size", c_uint32), ("id", c_uint32), ("name", c_uint64),
                ("name_len", c_uint32), ("kernel_btf", c_uint32)]


class LinkInfo(_Attr):
    """struct bpf_link_info header; the per-type union is left as raw bytes."""

    _fields_ = [("type", c_uint32), ("id", c_uint32), ("prog_id", c_uint32),
                ("_pad", c_uint32), ("raw", c_uint8 * 64)]


# -- calling --------------------------------------------------------------------------------

def sys_bpf(cmd: int, attr) -> int:
    """bpf(cmd, &attr, sizeof attr): the result, or -errno on failure (never raises)."""
    r = _syscall(_NR_BPF, cmd, addressof(attr), sizeof(attr))
    if r < 0:
        return -ctypes.get_errno()
    return r


def errno_text(err: int) -> str:
    return f"{os.strerror(err)} ({_errno.errorcode.get(err, err)})"


def bpf(cmd: int, attr, subject: str = "", exc: type = LoadError, what: str = "") -> int:
    """bpf(2) that raises `exc` (a pybpfc.Error) with '<subject>: <what> failed: <errno text>'."""
    r = _syscall(_NR_BPF, cmd, addressof(attr), sizeof(attr))
    if r >= 0:
        return r
    err = ctypes.get_errno()
    raise make_error(err, cmd, subject, exc, what)


def make_error(err: int, cmd: int, subject: str = "", exc: type = LoadError, what: str = "") -> Error:
    what = what or _CMD_NAMES.get(cmd, f"bpf cmd {cmd}")
    msg = f"{subject}: " if subject else ""
    msg += f"{what} failed: {errno_text(err)}"
    e = exc(msg)
    e.errno = err
    return e


# -- one function per command ---------------------------------------------------------------

def _name16(name: str) -> bytes:
    # The kernel accepts only [A-Za-z0-9_.] in object names, up to 15 chars.
    clean = "".join(c if (c.isalnum() or c in "_.") and c.isascii() else "_" for c in name)
    return clean[:BPF_OBJ_NAME_LEN - 1].encode()


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0,
               name: str = "", inner_map_fd: int = 0, numa_node: int = 0, btf_fd: int = 0,
               btf_key_type_id: int = 0, btf_value_type_id: int = 0, map_extra: int = 0,
               ifindex: int = 0, btf_vmlinux_value_type_id: int = 0,
               subject: Optional[str] = None) -> int:
    a = MapCreateAttr(map_type=map_type, key_size=key_size, value_size=value_size,
                      max_entries=max_entries, map_flags=flags, inner_map_fd=inner_map_fd,
                      numa_node=numa_node, map_name=_name16(name), map_ifindex=ifindex,
                      btf_fd=btf_fd, btf_key_type_id=btf_key_type_id,
                      btf_value_type_id=btf_value_type_id,
                      btf_vmlinux_value_type_id=btf_vmlinux_value_type_id, map_extra=map_extra)
    return bpf(uapi.BPF_MAP_CREATE, a, subject if subject is not None else f"map '{name}'",
               what="map create")


def _buf(data: Optional[bytes]):
    if data is None:
        return None
    return ctypes.create_string_buffer(bytes(data), len(data) or 1)


def map_lookup_elem(fd: int, key: Optional[bytes], value_size: int, flags: int = 0,
                    subject: str = "") -> Optional[bytes]:
    """The value, or None when the key is absent (ENOENT)."""
    kb = _buf(key)
    vb = ctypes.create_string_buffer(value_size or 1)
    a = MapElemAttr(map_fd=fd, key=_u64(kb), value=addressof(vb), flags=flags)
    r = sys_bpf(uapi.BPF_MAP_LOOKUP_ELEM, a)
    if r == -_errno.ENOENT:
        return None
    if r < 0:
        raise make_error(-r, uapi.BPF_MAP_LOOKUP_ELEM, subject, what="lookup")
    return vb.raw[:value_size]


def map_update_elem(fd: int, key: Optional[bytes], value: bytes, flags: int = 0,
                    subject: str = "") -> None:
    kb, vb = _buf(key), _buf(value)
    a = MapElemAttr(map_fd=fd, key=_u64(kb), value=_u64(vb), flags=flags)
    bpf(uapi.BPF_MAP_UPDATE_ELEM, a, subject, what="update")


def map_delete_elem(fd: int, key: Optional[bytes], subject: str = "") -> bool:
    """True if deleted, False if the key was absent."""
    kb = _buf(key)
    a = MapElemAttr(map_fd=fd, key=_u64(kb))
    r = sys_bpf(uapi.BPF_MAP_DELETE_ELEM, a)
    if r == -_errno.ENOENT:
        return False
    if r < 0:
        raise make_error(-r, uapi.BPF_MAP_DELETE_ELEM, subject, what="delete")
    return True


def map_lookup_and_delete_elem(fd: int, key: Optional[bytes], value_size: int, flags: int = 0,
                               subject: str = "") -> Optional[bytes]:
    """Pop for queue/stack (key None); None when empty."""
    kb = _buf(key)
    vb = ctypes.create_string_buffer(value_size or 1)
    a = MapElemAttr(map_fd=fd, key=_u64(kb), value=addressof(vb), flags=flags)
    r = sys_bpf(uapi.BPF_MAP_LOOKUP_AND_DELETE_ELEM, a)
    if r == -_errno.ENOENT:
        return None
    if r < 0:
        raise make_error(-r, uapi.BPF_MAP_LOOKUP_AND_DELETE_ELEM, subject, what="lookup and delete")
    return vb.raw[:value_size]


def map_get_next_key(fd: int, key: Optional[bytes], key_size: int, subject: str = "") -> Optional[bytes]:
    """The key after `key` (None: the first key); None at the end."""
    kb = _buf(key)
    nb = ctypes.create_string_buffer(key_size or 1)
    a = MapElemAttr(map_fd=fd, key=_u64(kb), value=addressof(nb))
    r = sys_bpf(uapi.BPF_MAP_GET_NEXT_KEY, a)
    if r == -_errno.ENOENT:
        return None
    if r < 0:
        raise make_error(-r, uapi.BPF_MAP_GET_NEXT_KEY, subject, what="get next key")
    return nb.raw[:key_size]


def map_freeze(fd: int, subject: str = "") -> None:
    a = MapElemAttr(map_fd=fd)
    bpf(uapi.BPF_MAP_FREEZE, a, subject, what="freeze")


def map_batch(cmd: int, fd: int, in_batch, out_batch, keys, values, count: int,
              elem_flags: int = 0, flags: int = 0) -> tuple[int, int]:
    """One BPF_MAP_*_BATCH call: (result or -errno, count processed)."""
    a = MapBatchAttr(in_batch=_u64(in_batch), out_batch=_u64(out_batch), keys=_u64(keys),
                     values=_u64(values), count=count, map_fd=fd, elem_flags=elem_flags,
                     flags=flags)
    r = sys_bpf(cmd, a)
    return r, a.count


def prog_load(prog_type: int, insns: bytes, license: str = "GPL", name: str = "",
              log_level: int = 0, log_buf=None, kern_version: int = 0, flags: int = 0,
              expected_attach_type: int = 0, btf_fd: int = 0, func_info: bytes = b"",
              func_info_rec_size: int = 8, line_info: bytes = b"", line_info_rec_size: int = 16,
              attach_btf_id: int = 0, attach_prog_fd: int = 0, ifindex: int = 0,
              fd_array=None, core_relos: bytes = b"",
              core_relo_rec_size: int = 16) -> tuple[int, ProgLoadAttr]:
    """BPF_PROG_LOAD: (fd or -errno, attr). Never raises: the caller reads the log and decides.
    `core_relos`: struct bpf_core_relo records the kernel applies against its BTF (needs btf_fd)."""
    ib = ctypes.create_string_buffer(bytes(insns), len(insns) or 1)
    lic = ctypes.create_string_buffer(license.encode())
    fib = _buf(func_info) if func_info else None
    lib = _buf(line_info) if line_info else None
    a = ProgLoadAttr(prog_type=prog_type, insn_cnt=len(insns) // 8, insns=addressof(ib),
                     license=addressof(lic), kern_version=kern_version, prog_flags=flags,
                     prog_name=_name16(name), prog_ifindex=ifindex,
                     expected_attach_type=expected_attach_type, prog_btf_fd=btf_fd,
                     attach_btf_id=attach_btf_id, attach_prog_fd=attach_prog_fd)
    if fib is not None:
        a.func_info_rec_size, a.func_info = func_info_rec_size, addressof(fib)
        a.func_info_cnt = len(func_info) // func_info_rec_size
    if lib is not None:
        a.line_info_rec_size, a.line_info = line_info_rec_size, addressof(lib)
        a.line_info_cnt = len(line_info) // line_info_rec_size
    if log_buf is not None:
        a.log_level, a.log_size, a.log_buf = log_level, len(log_buf), addressof(log_buf)
    if fd_array is not None:
        a.fd_array = addressof(fd_array)
    crb = _buf(core_relos) if core_relos else None
    if crb is not None:
        a.core_relos, a.core_relo_rec_size = addressof(crb), core_relo_rec_size
        a.core_relo_cnt = len(core_relos) // core_relo_rec_size
    r = sys_bpf(uapi.BPF_PROG_LOAD, a)
    return r, a


def btf_load(data: bytes, log_level: int = 0, log_size: int = 0) -> tuple[int, str]:
    """BPF_BTF_LOAD: (fd or -errno, log text)."""
    db = ctypes.create_string_buffer(bytes(data), len(data) or 1)
    lb = ctypes.create_string_buffer(log_size) if log_size else None
    a = BtfLoadAttr(btf=addressof(db), btf_size=len(data))
    if lb is not None:
        a.btf_log_buf, a.btf_log_size, a.btf_log_level = addressof(lb), log_size, log_level
    r = sys_bpf(uapi.BPF_BTF_LOAD, a)
    return r, (lb.value.decode(errors="replace") if lb is not None else "")


def prog_test_run(fd: int, data: bytes = b"", data_size_out: int = 0, ctx: Optional[bytes] = None,
                  ctx_size_out: int = 0, repeat: int = 1, flags: int = 0, cpu: int = 0,
                  batch_size: int = 0, subject: str = "", ctx_inout: bool = False):
    """BPF_PROG_TEST_RUN: (retval, data_out, ctx_out, duration_ns). `ctx_inout`: the kernel
    writes the context back into the input buffer (BPF_PROG_TYPE_SYSCALL)."""
    din = _buf(data) if data else None
    dout = ctypes.create_string_buffer(data_size_out) if data_size_out else None
    cin = _buf(ctx) if ctx else None
    cout = ctypes.create_string_buffer(ctx_size_out) if ctx_size_out else None
    a = TestRunAttr(prog_fd=fd, data_size_in=len(data), data_size_out=data_size_out,
                    data_in=_u64(din), data_out=_u64(dout), repeat=repeat,
                    ctx_size_in=len(ctx) if ctx else 0, ctx_size_out=ctx_size_out,
                    ctx_in=_u64(cin), ctx_out=_u64(cout), flags=flags, cpu=cpu,
                    batch_size=batch_size)
    r = sys_bpf(uapi.BPF_PROG_TEST_RUN, a)
    if r == -_errno.ENOSPC and dout is not None:
        # data_out too small: the kernel still reports the full size; retry once with it.
        return prog_test_run(fd, data, a.data_size_out, ctx, ctx_size_out, repeat, flags, cpu,
                             batch_size, subject, ctx_inout)
    if r < 0:
        raise make_error(-r, uapi.BPF_PROG_TEST_RUN, subject, what="test run")
    d = dout.raw[:a.data_size_out] if dout is not None else b""
    c = cout.raw[:a.ctx_size_out] if cout is not None else b""
    if ctx_inout and cin is not None:
        c = cin.raw[:len(ctx)]
    return a.retval, d, c, a.duration


def obj_pin(fd: int, path: str, subject: str = "") -> None:
    p = ctypes.create_string_buffer(os.fsencode(path))
    a = ObjAttr(pathname=addressof(p), bpf_fd=fd)
    bpf(uapi.BPF_OBJ_PIN, a, subject, what=f"pin to {path}")


def obj_get(path: str, flags: int = 0, subject: str = "") -> int:
    p = ctypes.create_string_buffer(os.fsencode(path))
    a = ObjAttr(pathname=addressof(p), file_flags=flags)
    return bpf(uapi.BPF_OBJ_GET, a, subject, what=f"open pinned {path}")


def obj_get_info_by_fd(fd: int, info, subject: str = ""):
    """Fills `info` (MapInfo/ProgInfo/BtfInfo/LinkInfo instance) and returns it."""
    a = InfoAttr(bpf_fd=fd, info_len=sizeof(info), info=addressof(info))
    bpf(uapi.BPF_OBJ_GET_INFO_BY_FD, a, subject, what="get info")
    return info


def map_info(fd: int, subject: str = "") -> MapInfo:
    return obj_get_info_by_fd(fd, MapInfo(), subject)


def prog_info(fd: int, subject: str = "") -> ProgInfo:
    return obj_get_info_by_fd(fd, ProgInfo(), subject)


def prog_attach(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0,
                replace_fd: int = 0, subject: str = "") -> None:
    a = ProgAttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type,
                       attach_flags=flags, replace_bpf_fd=replace_fd)
    bpf(uapi.BPF_PROG_ATTACH, a, subject, AttachError, what="attach")


def prog_detach(prog_fd: int, target_fd: int, attach_type: int, subject: str = "") -> None:
    a = ProgAttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type)
    bpf(uapi.BPF_PROG_DETACH, a, subject, AttachError, what="detach")


def link_create(prog_fd: int, target_fd: int, attach_type: int, flags: int = 0,
                subject: str = "", **tail) -> int:
    """BPF_LINK_CREATE. `tail` sets union members, e.g. perf_event=dict(bpf_cookie=1),
    target_btf_id=5, tcx=dict(relative_fd=0), uprobe_multi=dict(...)."""
    a = LinkCreateAttr(prog_fd=prog_fd, target_fd=target_fd, attach_type=attach_type, flags=flags)
    for k, v in tail.items():
        if isinstance(v, dict):
            sub = getattr(a, k)
            for f, x in v.items():
                setattr(sub, f, x)
        else:
            setattr(a, k, v)
    return bpf(uapi.BPF_LINK_CREATE, a, subject, AttachError, what="link create")


def link_detach(link_fd: int, subject: str = "") -> None:
    bpf(uapi.BPF_LINK_DETACH, LinkDetachAttr(link_fd=link_fd), subject, AttachError,
        what="link detach")


def link_update(link_fd: int, new_prog_fd: int, old_prog_fd: int = 0, flags: int = 0,
                subject: str = "") -> None:
    a = LinkUpdateAttr(link_fd=link_fd, new_prog_fd=new_prog_fd, flags=flags,
                       old_prog_fd=old_prog_fd)
    bpf(uapi.BPF_LINK_UPDATE, a, subject, AttachError, what="link update")


def raw_tracepoint_open(prog_fd: int, name: Optional[str], subject: str = "") -> int:
    nb = ctypes.create_string_buffer(name.encode()) if name else None
    a = RawTracepointAttr(name=_u64(nb), prog_fd=prog_fd)
    return bpf(uapi.BPF_RAW_TRACEPOINT_OPEN, a, subject, AttachError,
               what=f"raw tracepoint open {name or ''}".rstrip())


def enable_stats(stats_type: int = BPF_STATS_RUN_TIME) -> int:
    """An fd that keeps run-time stats on until closed."""
    return bpf(uapi.BPF_ENABLE_STATS, EnableStatsAttr(type=stats_type), "stats",
               what="enable stats")


def prog_bind_map(prog_fd: int, map_fd: int, subject: str = "") -> None:
    bpf(uapi.BPF_PROG_BIND_MAP, ProgBindMapAttr(prog_fd=prog_fd, map_fd=map_fd), subject,
        what="bind map")


def get_next_id(cmd: int, start_id: int) -> Optional[int]:
    """BPF_{PROG,MAP,BTF,LINK}_GET_NEXT_ID: the next id, or None at the end."""
    a = GetIdAttr(start_id=start_id)
    r = sys_bpf(cmd, a)
    if r == -_errno.ENOENT:
        return None
    if r < 0:
        raise make_error(-r, cmd)
    return a.next_id


def get_fd_by_id(cmd: int, obj_id: int, subject: str = "") -> int:
    return bpf(cmd, GetIdAttr(start_id=obj_id), subject)


def prog_query(target_fd: int, attach_type: int, flags: int = 0, max_progs: int = 64):
    """BPF_PROG_QUERY: (attach_flags, [prog ids])."""
    ids = (c_uint32 * max_progs)()
    a = QueryAttr(target_fd=target_fd, attach_type=attach_type, query_flags=flags,
                  prog_ids=addressof(ids), prog_cnt=max_progs)
    bpf(uapi.BPF_PROG_QUERY, a, what="prog query", exc=AttachError)
    return a.attach_flags, list(ids[:a.prog_cnt])


def close_fd(fd: int) -> None:
    if fd is not None and fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
