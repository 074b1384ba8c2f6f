"""`pybpfc doctor`: probe which program types, map types and attach points work on this
machine, and say why not where they don't. Every answer comes from trying the real thing
(load a minimal program, create a map, attach and detach), not from version numbers."""
from __future__ import annotations

import ctypes
import errno as _errno
import json
import os
import platform
import socket
import sys
import uuid
from typing import Callable, Optional

from .. import uapi as U
from ..errors import Error

# r0 = 0; exit
RET0 = bytes([0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])
RET1 = bytes([0xb7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])

# Program types whose minimal load needs an expected attach type, a flag or a BTF target.
PROG_LOAD_OPTS = {
    "cgroup_sock_addr": dict(expected_attach_type=U.BPF_CGROUP_INET4_CONNECT),
    "cgroup_sockopt": dict(expected_attach_type=U.BPF_CGROUP_GETSOCKOPT),
    "sk_lookup": dict(expected_attach_type=U.BPF_SK_LOOKUP),
    "netfilter": dict(expected_attach_type=U.BPF_NETFILTER),
    "syscall": dict(flags=1 << 4),            # BPF_F_SLEEPABLE: syscall programs must be
    "flow_dissector": dict(expected_attach_type=U.BPF_FLOW_DISSECTOR),
    "lirc_mode2": dict(expected_attach_type=U.BPF_LIRC_MODE2),
}
BTF_TARGET_TYPES = {"tracing", "lsm", "ext", "struct_ops"}   # probed under attach points

# map type -> (key_size, value_size, max_entries, flags, map_extra)
MAP_PARAMS = {
    "hash": (4, 8, 1, 0, 0), "array": (4, 8, 1, 0, 0), "prog_array": (4, 4, 1, 0, 0),
    "perf_event_array": (4, 4, 1, 0, 0), "percpu_hash": (4, 8, 1, 0, 0),
    "percpu_array": (4, 8, 1, 0, 0), "stack_trace": (4, 8 * 127, 1, 0, 0),
    "cgroup_array": (4, 4, 1, 0, 0), "lru_hash": (4, 8, 1, 0, 0), "lru_percpu_hash": (4, 8, 1, 0, 0),
    "lpm_trie": (8, 8, 1, U.BPF_F_NO_PREALLOC, 0), "devmap": (4, 4, 1, 0, 0),
    "sockmap": (4, 4, 1, 0, 0), "cpumap": (4, 4, 1, 0, 0), "xskmap": (4, 4, 1, 0, 0),
    "sockhash": (4, 4, 1, 0, 0), "cgroup_storage": (8, 8, 0, 0, 0),
    "reuseport_sockarray": (4, 4, 1, 0, 0), "percpu_cgroup_storage": (8, 8, 0, 0, 0),
    "queue": (0, 8, 1, 0, 0), "stack": (0, 8, 1, 0, 0), "devmap_hash": (4, 4, 1, 0, 0),
    "ringbuf": (0, 0, 4096, 0, 0), "bloom_filter": (0, 8, 1, 0, 1),
    "user_ringbuf": (0, 0, 4096, 0, 0), "arena": (0, 0, 1, U.BPF_F_MMAPABLE, 0),
}
# Local storage maps need BTF for key (int) and value; struct_ops needs a kernel struct type.
STORAGE_MAPS = {"sk_storage", "inode_storage", "task_storage", "cgrp_storage"}
NEEDS_BTF_MAPS = {"struct_ops"}


def _int_btf() -> bytes:
    """Raw BTF with one type: [1] int (4 bytes, signed)."""
    import struct

    strings = b"\0int\0"
    types = struct.pack("<IIII", 1, 1 << 24, 4, (1 << 24) | 32)   # INT, BTF_INT_SIGNED, 32 bits
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings
NEEDS_INNER_MAPS = {"array_of_maps", "hash_of_maps"}


def _names(prefix: str) -> dict:
    return {k[len(prefix):].lower(): v for k, v in vars(U).items()
            if k.startswith(prefix) and isinstance(v, int) and not k.endswith("UNSPEC")}


class Report:
    def __init__(self):
        self.sections: list[tuple[str, list]] = []

    def section(self, title: str) -> list:
        rows: list = []
        self.sections.append((title, rows))
        return rows


def _row(rows, name, ok, why="", note=""):
    rows.append({"name": name, "ok": ok, "why": why, "note": note})


def _err(e) -> str:
    s = str(e)
    # "prog 'x': link create failed: ..." -> the part after the subject
    return s.split(": ", 1)[1] if s.startswith(("prog '", "map '")) and ": " in s else s


def _load(ptype: int, insns: bytes = RET0, name: str = "doctor", **kw) -> int:
    from ..backends.kernel import syscall as S

    log = ctypes.create_string_buffer(4096)
    fd, _ = S.prog_load(ptype, insns, "GPL", name, log_level=1, log_buf=log, **kw)
    if fd < 0:
        first = next((ln for ln in log.value.decode(errors="replace").splitlines() if ln.strip()), "")
        raise Error(S.errno_text(-fd) + (f": {first}" if first else ""))
    return fd


class _Prog:
    def __init__(self, fd, name="doctor", spec=None):
        self.fd, self.name, self.spec = fd, name, spec


def probe_env(rep: Report):
    rows = rep.section("environment")
    _row(rows, "kernel", True, note=f"{platform.release()} {platform.machine()}")
    _row(rows, "root", os.geteuid() == 0, "" if os.geteuid() == 0 else
         "not root: most of eBPF needs CAP_BPF/CAP_SYS_ADMIN")
    from ..backends.kernel import syscall as S

    try:
        fd = S.map_create(U.BPF_MAP_TYPE_ARRAY, 4, 4, 1, name="doctor")
        S.close_fd(fd)
        _row(rows, "bpf() syscall", True)
        usable = True
    except Error as e:
        _row(rows, "bpf() syscall", False, _err(e))
        usable = False
    try:
        with open("/proc/sys/net/core/bpf_jit_enable") as f:
            jit = f.read().strip()
        _row(rows, "JIT", jit != "0", "" if jit != "0" else "net.core.bpf_jit_enable = 0 (interpreter)",
             note=f"bpf_jit_enable = {jit}")
    except OSError:
        _row(rows, "JIT", False, "/proc/sys/net/core/bpf_jit_enable missing")
    try:
        from ..backends.kernel import tracefs

        _row(rows, "tracefs", True, note=tracefs.root())
    except Error as e:
        _row(rows, "tracefs", False, str(e))
    _row(rows, "bpffs", _is_bpffs("/sys/fs/bpf"), "" if _is_bpffs("/sys/fs/bpf") else
         "/sys/fs/bpf is not a bpf filesystem: pinning needs `mount -t bpf bpf /sys/fs/bpf`",
         note="/sys/fs/bpf")
    from ..backends.kernel.attach import cgroup

    root = cgroup.cgroup2_root()
    _row(rows, "cgroup v2", root is not None, "" if root else "no cgroup2 mount", note=root or "")
    vml = os.path.exists("/sys/kernel/btf/vmlinux")
    _row(rows, "vmlinux BTF", vml, "" if vml else
         "/sys/kernel/btf/vmlinux missing (kernel without CONFIG_DEBUG_INFO_BTF): "
         "fentry/fexit/tp_btf/lsm cannot find their targets")
    return usable


def _is_bpffs(path: str) -> bool:
    try:
        with open("/proc/self/mounts") as f:
            return any(ln.split()[1] == path and ln.split()[2] == "bpf" for ln in f if len(ln.split()) > 2)
    except OSError:
        return False


def probe_prog_types(rep: Report):
    rows = rep.section("program types")
    for name, t in sorted(_names("BPF_PROG_TYPE_").items(), key=lambda kv: kv[1]):
        if name in BTF_TARGET_TYPES:
            _row(rows, name, None, note={
                "tracing": "needs a BTF target: see fentry/fexit/tp_btf under attach points",
                "lsm": "needs a BTF target: see lsm under attach points",
                "ext": "needs a BTF-carrying target program: not probed",
                "struct_ops": "needs a kernel struct_ops type: not probed"}[name])
            continue
        insns = RET1 if name in ("cgroup_skb", "cgroup_sock", "cgroup_sock_addr", "cgroup_device",
                                 "cgroup_sysctl", "cgroup_sockopt", "sock_ops") else RET0
        try:
            os.close(_load(t, insns, **PROG_LOAD_OPTS.get(name, {})))
            _row(rows, name, True)
        except Error as e:
            why = str(e)
            if why == "Invalid argument (EINVAL)":   # no verifier log: refused before verifying
                why = "the kernel does not know this program type (EINVAL before verification)"
            _row(rows, name, False, why)


def probe_map_types(rep: Report):
    from ..backends.kernel import syscall as S

    rows = rep.section("map types")
    for name, t in sorted(_names("BPF_MAP_TYPE_").items(), key=lambda kv: kv[1]):
        if name in NEEDS_BTF_MAPS:
            _row(rows, name, None, note="needs a kernel struct_ops type: not probed")
            continue
        try:
            if name in STORAGE_MAPS:
                bfd, log = S.btf_load(_int_btf(), 1, 4096)
                if bfd < 0:
                    raise Error(f"BTF load failed: {S.errno_text(-bfd)} {log.strip()}".strip())
                try:
                    fd = S.map_create(t, 4, 4, 0, U.BPF_F_NO_PREALLOC, name="doctor", btf_fd=bfd,
                                      btf_key_type_id=1, btf_value_type_id=1)
                finally:
                    S.close_fd(bfd)
            elif name in NEEDS_INNER_MAPS:
                inner = S.map_create(U.BPF_MAP_TYPE_ARRAY, 4, 4, 1, name="doctor_in")
                try:
                    fd = S.map_create(t, 4, 4, 1, inner_map_fd=inner, name="doctor")
                finally:
                    S.close_fd(inner)
            elif name in MAP_PARAMS:
                ks, vs, me, fl, extra = MAP_PARAMS[name]
                if name == "arena":
                    me = 1
                fd = S.map_create(t, ks, vs, me, fl, name="doctor", map_extra=extra)
            else:
                _row(rows, name, None, note="no probe parameters known")
                continue
            S.close_fd(fd)
            _row(rows, name, True)
        except Error as e:
            _row(rows, name, False, _err(e))


def _attach_probe(rows, name: str, fn: Callable[[], Optional[str]]):
    try:
        note = fn()
        _row(rows, name, True, note=note or "")
    except Error as e:
        _row(rows, name, False, _err(e))
    except OSError as e:
        _row(rows, name, False, f"{e.strerror or e}")


def probe_attach(rep: Report):
    from ..backends.kernel import syscall as S
    from ..backends.kernel.attach import (cgroup, kprobe, perf_event, raw_tracepoint, socket_filter,
                                          tracepoint, uprobe)

    rows = rep.section("attach points")

    def with_prog(ptype, fn, insns=RET0, **kw):
        fd = _load(ptype, insns, **kw)
        try:
            link = fn(_Prog(fd))
            link.close()
        finally:
            os.close(fd)

    _attach_probe(rows, "tracepoint", lambda: with_prog(
        U.BPF_PROG_TYPE_TRACEPOINT, lambda p: tracepoint.attach(p, "syscalls", "sys_enter_getppid")))
    _attach_probe(rows, "raw_tracepoint", lambda: with_prog(
        U.BPF_PROG_TYPE_RAW_TRACEPOINT, lambda p: raw_tracepoint.attach(p, "sys_enter")))
    for ret in (False, True):
        _attach_probe(rows, "uretprobe" if ret else "uprobe", lambda ret=ret: with_prog(
            U.BPF_PROG_TYPE_KPROBE, lambda p: uprobe.attach(p, "libc", "getppid", retprobe=ret)))
    for ret in (False, True):
        def kp(ret=ret):
            why = kprobe.unsupported_reason()
            if why:
                raise Error(why)
            with_prog(U.BPF_PROG_TYPE_KPROBE,
                      lambda p: kprobe.attach(p, "__x64_sys_getppid" if platform.machine() == "x86_64"
                                              else "sys_getppid", retprobe=ret))
        _attach_probe(rows, "kretprobe" if ret else "kprobe", kp)
    _attach_probe(rows, "perf_event", lambda: with_prog(
        U.BPF_PROG_TYPE_PERF_EVENT, lambda p: perf_event.attach_perf_event(
            p, type=perf_event.PERF_TYPE_SOFTWARE, config=perf_event.PERF_COUNT_SW_CPU_CLOCK,
            sample_period=1_000_000, cpu=0)))

    def hw():
        try:
            with_prog(U.BPF_PROG_TYPE_PERF_EVENT, lambda p: perf_event.attach_perf_event(
                p, type=perf_event.PERF_TYPE_HARDWARE, config=perf_event.PERF_COUNT_HW_CPU_CYCLES,
                sample_period=10_000_000, cpu=0))
        except Error as e:
            if getattr(e, "errno", 0) == _errno.ENOENT:
                raise Error("no hardware cpu-cycles event here (ENOENT: no hardware PMU, "
                            "as in many VMs)") from None
            raise
        return "cpu-cycles"
    _attach_probe(rows, "perf_event (hardware)", hw)

    def sockfilter():
        a, b = socket.socketpair()
        with a, b:
            with_prog(U.BPF_PROG_TYPE_SOCKET_FILTER, lambda p: socket_filter.attach(p, a))
    _attach_probe(rows, "socket_filter", sockfilter)

    def cg():
        root = cgroup.cgroup2_root()
        if root is None:
            raise Error("no cgroup v2 hierarchy mounted")
        path = os.path.join(root, f"pybpfc_doctor_{uuid.uuid4().hex[:8]}")
        os.mkdir(path)
        try:
            with_prog(U.BPF_PROG_TYPE_CGROUP_SKB, lambda p: cgroup.attach(p, path, U.BPF_CGROUP_INET_EGRESS),
                      RET1, expected_attach_type=U.BPF_CGROUP_INET_EGRESS)
        finally:
            os.rmdir(path)
        return "cgroup_skb on a temporary cgroup under " + root
    _attach_probe(rows, "cgroup_skb", cg)

    for name, why in _probe_netdev().items():
        _row(rows, name, why is None, why or "", note="probed on lo in a private network namespace"
             if why is None else "")
    _probe_btf_tracing(rows)

    def pin():
        path = f"/sys/fs/bpf/pybpfc_doctor_{uuid.uuid4().hex[:8]}"
        fd = S.map_create(U.BPF_MAP_TYPE_ARRAY, 4, 4, 1, name="doctor")
        try:
            S.obj_pin(fd, path)
            os.unlink(path)
        finally:
            S.close_fd(fd)
        return "/sys/fs/bpf"
    _attach_probe(rows, "pinning", pin)


def _probe_netdev() -> dict:
    """XDP and tcx on lo inside a private network namespace (a forked child), so no real
    interface is touched. {name: None or why not}."""
    from ..backends.kernel.attach import tc, xdp

    names = ["xdp", "tc (tcx)"]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report through the pipe, never return into the caller
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            out = {}
            if libc.unshare(0x40000000) != 0:   # CLONE_NEWNET
                out = {n: f"unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}" for n in names}
            else:
                for n, ptype, kw, fn in (
                        ("xdp", U.BPF_PROG_TYPE_XDP, dict(expected_attach_type=U.BPF_XDP),
                         lambda p: xdp.attach(p, "lo")),
                        ("tc (tcx)", U.BPF_PROG_TYPE_SCHED_CLS, {}, lambda p: tc.attach(p, "lo", "ingress"))):
                    try:
                        fd = _load(ptype, RET0 if n != "xdp" else bytes([0xb7, 0, 0, 0, 2, 0, 0, 0]) + RET0[8:], **kw)
                        try:
                            fn(_Prog(fd)).close()
                        finally:
                            os.close(fd)
                        out[n] = None
                    except Error as e:
                        out[n] = _err(e)
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    try:
        return json.loads(data)
    except ValueError:
        return {n: "the probe process failed" for n in names}


def _probe_btf_tracing(rows):
    from ..backends.kernel import vmlinux
    from ..backends.kernel.attach import tracing

    if not os.path.exists(vmlinux.VMLINUX):
        for n in ("fentry", "fexit", "tp_btf", "lsm"):
            _row(rows, n, False, f"{vmlinux.VMLINUX} missing: no BTF targets")
        return
    # bpf_fentry_test1 exists for exactly this (BPF selftests); others as fallbacks.
    fn = next((f for f in ("bpf_fentry_test1", "do_nanosleep", "vfs_read")
               if vmlinux.find(f, vmlinux.KIND_FUNC)), "bpf_fentry_test1")
    cases = [("fentry", U.BPF_PROG_TYPE_TRACING, U.BPF_TRACE_FENTRY, fn, vmlinux.KIND_FUNC),
             ("fexit", U.BPF_PROG_TYPE_TRACING, U.BPF_TRACE_FEXIT, fn, vmlinux.KIND_FUNC),
             ("tp_btf", U.BPF_PROG_TYPE_TRACING, U.BPF_TRACE_RAW_TP, "btf_trace_sys_enter",
              vmlinux.KIND_TYPEDEF),
             ("lsm", U.BPF_PROG_TYPE_LSM, U.BPF_LSM_MAC, "bpf_lsm_file_open", vmlinux.KIND_FUNC)]
    for name, ptype, atype, target, kind in cases:
        def probe(ptype=ptype, atype=atype, target=target, kind=kind, name=name):
            if name == "lsm":
                try:
                    with open("/sys/kernel/security/lsm") as f:
                        active = f.read().strip().split(",")
                except OSError:
                    active = None   # securityfs not mounted: let the attach answer
                if active is not None and "bpf" not in active:
                    raise Error("the BPF LSM is not active (add 'bpf' to the lsm= boot parameter; "
                                f"active: {','.join(active)})")
            btf_id = vmlinux.find(target, kind)
            if not btf_id:
                raise Error(f"no '{target}' in vmlinux BTF")
            try:
                fd = _load(ptype, RET0, expected_attach_type=atype, attach_btf_id=btf_id)
            except Error as e:
                raise Error(f"loading a {name} program for {target} failed: {e}") from None
            spec = type("S", (), {"kind": name, "attach_to": target, "expected_attach_type": atype})()
            try:
                tracing.attach(_Prog(fd, spec=spec)).close()
            finally:
                os.close(fd)
            return f"on {target}"
        _attach_probe(rows, name, probe)


def probe_userspace(rep: Report):
    rows = rep.section("userspace backend")
    try:
        from ..api import get_backend

        b = get_backend("userspace")
        b.close()
        _row(rows, "userspace runtime", True)
    except Exception as e:  # noqa: BLE001 - any failure is the answer
        _row(rows, "userspace runtime", False, f"{type(e).__name__}: {e}".splitlines()[0])


def add_parser(sub):
    p = sub.add_parser("doctor", help="report which eBPF features work on this machine",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="machine-readable report")
    return p


def run(args) -> int:
    rep = Report()
    usable = probe_env(rep)
    if usable:
        probe_prog_types(rep)
        probe_map_types(rep)
        probe_attach(rep)
    probe_userspace(rep)
    if args.json:
        print(json.dumps({title: rows for title, rows in rep.sections}, indent=1))
    else:
        for title, rows in rep.sections:
            print(f"{title}:")
            for r in rows:
                verdict = "yes" if r["ok"] else ("no" if r["ok"] is False else "-")
                line = f"  {r['name']}: {verdict}"
                if r["why"]:
                    line += f" \u2014 {r['why']}"
                if r["note"]:
                    line += f" ({r['note']})"
                print(line)
        if not usable:
            print("\nthe kernel's bpf() is not usable here: only the userspace backend can run programs")
    sys.stdout.flush()
    return 0
