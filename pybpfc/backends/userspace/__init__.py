"""The userspace backend: maps, programs and links in a shared-memory store, programs run by
the C interpreter or the LLVM JIT (runtime/, pybpfc/backends/userspace/jit.py).

    obj = pybpfc.load("prog.bpf.o", backend="userspace")
    obj.programs.xdp_prog.test_run(packet)

Engine choice: UserspaceBackend(jit=True/False), or the environment variable PYBPFC_JIT=0/1
(default 1: JIT, falling back to the interpreter with a warning where it cannot be used).
Attach calls come from AttachMixin (the LD_PRELOAD agent, attach.py); without it they raise
NotSupportedError from the Backend base class.
"""
from __future__ import annotations

import dataclasses
import errno as _errno
import os
import struct
import threading
import time
import warnings
from typing import Iterator, Optional

from ... import uapi as U
from ...errors import Error, LoadError, NotSupportedError, RuntimeFault
from ..base import Backend, RawProgram, TestRunResult
from .attach import AttachMixin
from .maps import UserspaceMap, UserspaceRingBuffer, normalize
from .runtime import ffi, lib, supported_helpers
from .store import Store, _err

HELPER_NAMES = {v: k for k, v in U.HELPERS.items()}
PROG_TYPE_NAMES = {v: k[len("BPF_PROG_TYPE_"):].lower() for k, v in vars(U).items()
                   if k.startswith("BPF_PROG_TYPE_") and isinstance(v, int)}

PBR_OK, PBR_EXIT, PBR_EFAULT, PBR_EBUDGET, PBR_EHELPER, PBR_EDEPTH, PBR_EINSN = range(7)
PBR_PERM_R, PBR_PERM_W, PBR_PERM_RW = 1, 2, 3
REASONS = {
    PBR_EFAULT: "memory access outside the stack and every region",
    PBR_EBUDGET: "instruction budget exhausted",
    PBR_EHELPER: "helper failure (bad map argument)",
    PBR_EDEPTH: "call depth exceeded",
    PBR_EINSN: "invalid instruction reached",
}

XDP_MD_SIZE = 24           # struct xdp_md: six u32
SKB_SIZE = 192             # struct __sk_buff
PT_REGS_SIZE = 168         # struct pt_regs (x86-64)
XDP_HEADROOM = 256         # XDP_PACKET_HEADROOM
ETH_HLEN = 14
CTX_AREA = 4096            # room for the context at the start of the low buffer
L2_SKB_TYPES = {U.BPF_PROG_TYPE_SCHED_CLS, U.BPF_PROG_TYPE_SCHED_ACT}
VALUE_REGION_TYPES = {U.BPF_MAP_TYPE_HASH, U.BPF_MAP_TYPE_ARRAY, U.BPF_MAP_TYPE_PERCPU_HASH,
                      U.BPF_MAP_TYPE_PERCPU_ARRAY, U.BPF_MAP_TYPE_LRU_HASH, U.BPF_MAP_TYPE_LRU_PERCPU_HASH,
                      U.BPF_MAP_TYPE_LPM_TRIE}
MAX_VALUE_MAPS = 12
SKB_TYPES = L2_SKB_TYPES | {U.BPF_PROG_TYPE_SOCKET_FILTER, U.BPF_PROG_TYPE_CGROUP_SKB}


PBS_HELPER_LD_PKT = 255    # runtime/include/pybpfc_store.h
LD_PKT_SIZES = {0x00: 4, 0x08: 2, 0x10: 1}  # BPF_W, BPF_H, BPF_B
LD_ABS, LD_IND = 0x20, 0x40


def _slot(op, dst=0, src=0, off=0, imm=0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def rewrite_packet_loads(insns: bytes, relocations: list, subject: str, ptype: int):
    """Legacy LD_ABS / LD_IND packet loads (socket filters) -> calls of the runtime's private
    packet-load helper; jump, call and callback offsets and relocations are moved to match.
    Returns (insns, relocations), unchanged when the program has none."""
    n = len(insns) // 8
    slots = [insns[i * 8:i * 8 + 8] for i in range(n)]
    i, found = 0, []
    while i < n:
        op = slots[i][0]
        if op & 0x07 == 0 and op & 0xE0 in (LD_ABS, LD_IND) and op != 0x18:
            found.append(i)
        i += 2 if op == 0x18 else 1
    if not found:
        return insns, relocations
    if ptype not in SKB_TYPES:
        raise LoadError(f"{subject}: insn {found[0]}: legacy packet load (LD_ABS/LD_IND) is only valid in "
                        f"socket filter, tc and cgroup_skb programs")
    new: list = []
    newidx = [0] * (n + 1)
    i = 0
    while i < n:
        newidx[i] = len(new)
        s = slots[i]
        op, regs = s[0], s[1]
        if op == 0x18:
            new += [s, slots[i + 1]] if i + 1 < n else [s]
            if i + 1 < n:
                newidx[i + 1] = len(new) - 1
            i += 2
            continue
        if i in found:
            size = LD_PKT_SIZES.get(op & 0x18)
            if size is None:
                raise LoadError(f"{subject}: insn {i}: invalid size in legacy packet load (opcode {op:#04x})")
            imm = struct.unpack_from("<i", s, 4)[0]
            if op & 0xE0 == LD_IND:
                new += [_slot(0xBF, 2, regs >> 4), _slot(0x07, 2, imm=imm)]
            else:
                new += [_slot(0xB7, 2, imm=imm)]
            new += [_slot(0xBF, 1, 6), _slot(0xB7, 3, imm=size), _slot(0x85, imm=PBS_HELPER_LD_PKT)]
            i += 1
            continue
        new.append(s)
        i += 1
    newidx[n] = len(new)
    out = bytearray(b"".join(new))

    def moved(old: int, rel: int, bits: int, what: str) -> int:
        tgt = old + 1 + rel
        if not 0 <= tgt <= n:
            return rel  # out of range already: the verifier reports it
        v = newidx[tgt] - (newidx[old] + 1)
        if not -(1 << (bits - 1)) <= v < (1 << (bits - 1)):
            raise LoadError(f"{subject}: insn {old}: {what} out of range after rewriting legacy packet loads")
        return v

    i = 0
    while i < n:
        s, pos = slots[i], newidx[i]
        op, src = s[0], s[1] >> 4
        off, imm = struct.unpack_from("<hi", s, 2)
        cls, code = op & 0x07, op & 0xF0
        if op == 0x18:
            if src == 4:
                struct.pack_into("<i", out, pos * 8 + 4, moved(i, imm, 32, "callback offset"))
            i += 2
            continue
        if i not in found and cls in (0x05, 0x06) and code != 0x90:
            if code == 0x80:
                if src == 1:
                    struct.pack_into("<i", out, pos * 8 + 4, moved(i, imm, 32, "call offset"))
            elif cls == 0x06 and code == 0x00:
                struct.pack_into("<i", out, pos * 8 + 4, moved(i, imm, 32, "jump offset"))
            else:
                struct.pack_into("<h", out, pos * 8 + 2, moved(i, off, 16, "jump offset"))
        i += 1
    relocs = [dataclasses.replace(r, insn=newidx[r.insn]) if 0 <= r.insn < n else r for r in relocations]
    return bytes(out), relocs


def userspace_available() -> bool:
    """True when the native runtime library can be built/loaded here."""
    try:
        lib()
        return True
    except Exception:
        return False


def _env_jit() -> bool:
    v = os.environ.get("PYBPFC_JIT", "1").strip().lower()
    return v not in ("0", "no", "false", "off", "")


class UserspaceProgram(RawProgram):
    """A program in a store. Other processes wrap a program another loader stored with
    `UserspaceProgram(Store.open(path), prog_id, spec_or_namespace)` (spec: name and type)."""

    _close_rank = 1  # Store.close(): before the maps, after ring buffer readers

    def __init__(self, store: Store, prog_id: int, spec, insns: bytes = b"", engine: str = "interpreter",
                 owner: bool = False):
        self.id, self.spec, self.name = prog_id, spec, spec.name
        self.store = store
        self._owner = owner  # holds a reference on the stored program (the loader)
        self.insns = insns          # prepared bytecode, as stored
        self.engine = engine        # "jit" or "interpreter"
        self._subject = f"prog '{self.name}'"
        self._low = None
        self._low_size = 0
        self._res = ffi().new("struct pbs_run_result *")
        self._regions = ffi().new("struct pbr_region[4]")
        self._closed = False
        # the context buffer and result are per program; close() waits for a running test_run
        # (another thread) instead of unmapping under it
        self._lock = threading.RLock()
        store.adopt(self)

    def _check_open(self):
        if self._closed:
            raise Error(f"{self._subject}: program is closed")

    def use_jit(self) -> bool:
        """Runs the JIT code the loader put in the store (mapped executable here) from now on;
        False if the program has none."""
        self._check_open()
        if lib().pbs_prog_map_jit(self.store.handle, self.id) < 0:
            return False
        self.engine = "jit"
        return True

    def fd_bytes(self) -> bytes:
        """This program's id as a 4-byte value (prog array contents)."""
        return self.id.to_bytes(4, "little")

    def _buffer(self, size: int):
        if size > self._low_size:
            L = lib()
            if self._low is not None:
                L.pbs_low_free(self._low, self._low_size)
                self._low = None
            size = (size + 4095) // 4096 * 4096
            p = L.pbs_low_alloc(size)
            if p == ffi().NULL:
                raise Error(f"{self._subject}: cannot map {size} bytes below 2 GiB for test_run")
            self._low, self._low_size = ffi().cast("char *", p), size
        return self._low

    def _region(self, i: int, start: int, length: int, perm: int):
        r = self._regions[i]
        r.start, r.end, r.perm = start, start + length, perm

    def test_run(self, data: bytes = b"", ctx: Optional[bytes] = None, repeat: int = 1,
                 data_size_out: Optional[int] = None) -> TestRunResult:
        with self._lock:
            return self._test_run(data, ctx, repeat, data_size_out)

    def _test_run(self, data, ctx, repeat, data_size_out) -> TestRunResult:
        F, L = ffi(), lib()
        self._check_open()
        t = self.spec.type
        data = bytes(data or b"")
        ctx_in = bytes(ctx) if ctx is not None else None
        repeat = max(1, int(repeat))
        buf = self._buffer(CTX_AREA + XDP_HEADROOM + max(len(data), data_size_out or 0) + 64)
        base = int(F.cast("uintptr_t", buf))
        pkt = base + CTX_AREA + XDP_HEADROOM
        F.memmove(buf + CTX_AREA + XDP_HEADROOM, data, len(data))
        nreg = 0
        if t == U.BPF_PROG_TYPE_XDP:
            if len(data) < ETH_HLEN:  # the kernel refuses these too
                raise LoadError(f"{self._subject}: test_run needs at least {ETH_HLEN} bytes of packet data "
                                f"for xdp programs")
            md = bytearray(XDP_MD_SIZE)
            if ctx_in:
                if len(ctx_in) != XDP_MD_SIZE:
                    raise LoadError(f"{self._subject}: test_run ctx must be a {XDP_MD_SIZE}-byte xdp_md")
                md[12:20] = ctx_in[12:20]  # ingress_ifindex, rx_queue_index
            struct.pack_into("<III", md, 0, pkt, pkt + len(data), pkt)
            ctx_len, perm = XDP_MD_SIZE, PBR_PERM_R
            F.memmove(buf, bytes(md), XDP_MD_SIZE)
            self._region(1, pkt, len(data), PBR_PERM_RW)
            nreg = 2
        elif t in SKB_TYPES:
            if len(data) < ETH_HLEN:
                raise LoadError(f"{self._subject}: test_run needs at least {ETH_HLEN} bytes of packet data "
                                f"for {PROG_TYPE_NAMES.get(t, t)} programs")
            skb = bytearray(SKB_SIZE)
            if ctx_in:
                if len(ctx_in) > SKB_SIZE:
                    raise LoadError(f"{self._subject}: test_run ctx is larger than __sk_buff ({SKB_SIZE})")
                skb[:len(ctx_in)] = ctx_in
            start = pkt if t in L2_SKB_TYPES else pkt + ETH_HLEN
            end = pkt + len(data)
            struct.pack_into("<I", skb, 0, end - start)                       # len
            struct.pack_into("<I", skb, 16, int.from_bytes(data[12:14], "little"))  # protocol (be16)
            struct.pack_into("<I", skb, 40, 1)                                # ifindex: lo, as the kernel
            struct.pack_into("<II", skb, 76, start, end)                      # data, data_end
            struct.pack_into("<I", skb, 140, start)                           # data_meta
            if not ctx_in or len(ctx_in) < 164:
                struct.pack_into("<I", skb, 160, len(data))                   # wire_len
            ctx_len, perm = SKB_SIZE, PBR_PERM_RW
            F.memmove(buf, bytes(skb), SKB_SIZE)
            self._region(1, start, end - start, PBR_PERM_RW)
            nreg = 2
        else:
            if data:
                raise LoadError(f"{self._subject}: {PROG_TYPE_NAMES.get(t, t)} programs take no packet data "
                                f"in test_run (use ctx=)")
            if ctx_in is None:
                ctx_in = bytes(PT_REGS_SIZE if t == U.BPF_PROG_TYPE_KPROBE else 64)
            if len(ctx_in) > CTX_AREA:
                raise LoadError(f"{self._subject}: test_run ctx is larger than {CTX_AREA} bytes")
            F.memmove(buf, ctx_in, len(ctx_in))
            ctx_len, perm = len(ctx_in), PBR_PERM_R
            nreg = 1
        self._region(0, base, ctx_len, perm)
        r0 = L.pbs_prog_test_run(self.store.handle, self.id, base, ctx_len, self._regions, nreg,
                                 repeat, self._res)
        res = self._res
        if res.status != PBR_OK:
            raise RuntimeFault(f"{self._subject}: stopped at insn {res.fault_pc}: "
                               f"{REASONS.get(res.status, f'status {res.status}')}"
                               + (f" (address {res.fault_addr:#x})" if res.status == PBR_EFAULT else ""))
        if t == U.BPF_PROG_TYPE_XDP:
            d0, d1 = struct.unpack_from("<II", F.buffer(buf, 8)[:], 0)
            out = F.buffer(buf + (d0 - base), max(0, d1 - d0))[:] if base <= d0 <= d1 else b""
        elif t in SKB_TYPES:
            out = F.buffer(buf + CTX_AREA + XDP_HEADROOM, len(data))[:]
        else:
            out = b""
        if data_size_out is not None:
            out = out[:data_size_out]
        ctx_out = F.buffer(buf, ctx_len)[:] if ctx is not None else b""
        return TestRunResult(retval=int(r0) & 0xFFFFFFFF if t in SKB_TYPES or t == U.BPF_PROG_TYPE_XDP else int(r0),
                             data=out, ctx=ctx_out, duration_ns=int(res.duration_ns))

    def run(self, ctx: int = 0, ctx_len: int = 0, cookie: int = 0) -> int:
        """Runs once on a context already in memory (no regions besides map values and stack)."""
        res = ffi().new("struct pbs_run_result *")
        with self._lock:  # close() (Store.close()) waits for the run
            self._check_open()
            r0 = lib().pbs_prog_run(self.store.handle, self.id, ctx, ctx_len, ffi().NULL, 0, cookie, res)
        if res.status != PBR_OK:
            raise RuntimeFault(f"{self._subject}: stopped at insn {res.fault_pc}: "
                               f"{REASONS.get(res.status, res.status)}")
        return int(r0)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            L = lib()
            if self._low is not None:
                L.pbs_low_free(self._low, self._low_size)
                self._low = None
            if self._owner and self.store._h is not None:
                L.pbs_prog_put(self.store.handle, self.id)

    def __del__(self):
        # the test_run buffer is private memory below 2 GiB (a scarce range): never leak it
        try:
            if self._low is not None:
                lib().pbs_low_free(self._low, self._low_size)
                self._low = None
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self):
        return f"<UserspaceProgram {self.name!r} id={self.id} {self.engine}>"


class UserspaceBackend(AttachMixin, Backend):
    """Programs, maps and links in a shared-memory store.

    store: None creates a fresh memfd store owned by this backend; a path of an existing
    store opens it (another loader's maps by name through `store.map_id`); a path that does
    not exist yet creates a /dev/shm-style file there (mode 0600, removed at close).
    jit: True / False, or None for PYBPFC_JIT (default on)."""

    name = "userspace"

    def __init__(self, store: Optional[str] = None, jit: Optional[bool] = None, size: int = 0):
        if store is None:
            self.store = Store.create(None, size)
        elif os.path.exists(store):
            self.store = Store.open(store)
        else:
            self.store = Store.create(store, size)
        self.jit = _env_jit() if jit is None else bool(jit)
        self._helpers = supported_helpers()
        self._trace_buf = b""

    # -- maps
    def create_map(self, spec) -> UserspaceMap:
        from ...btf.kernel import with_kconfig

        spec = with_kconfig(spec)  # __kconfig externs: the host kernel's values, as on the kernel backend
        t, ks, vs, n, fl = normalize(spec, self.store.ncpus)
        L = lib()
        if spec.pinning == 1:  # LIBBPF_PIN_BY_NAME: reuse the store's map of that name
            attrs = ffi().new("uint32_t[5]")
            mid = L.pbs_map_get_pinned(self.store.handle, spec.name.encode(), attrs)
            if mid:
                have = tuple(attrs)
                want = (t, ks, vs, n, fl)
                if have != want:
                    L.pbs_map_put(self.store.handle, mid)
                    raise LoadError(f"map '{spec.name}': pinned map in the store does not match the definition "
                                    f"(type, key, value, max_entries, flags: store {have}, object {want})")
                return UserspaceMap(self.store, mid, spec)
        mid = L.pbs_map_create(self.store.handle, spec.name.encode(), t, ks, vs, n, fl, spec.map_extra)
        if mid < 0:
            if mid == -_errno.ENOTSUP:
                raise NotSupportedError(f"map '{spec.name}': type {t} is not supported by the userspace runtime")
            raise _err(f"map '{spec.name}'", "map create", mid)
        m = UserspaceMap(self.store, mid, spec)
        try:
            if spec.data is not None:
                m.update(b"\0\0\0\0", bytes(spec.data).ljust(vs, b"\0"), 0)
                if spec.readonly:
                    m.freeze()  # as libbpf/the kernel backend do with .rodata
            if spec.pinning == 1:
                L.pbs_map_pin(m._m)
        except BaseException:
            m.close()
            raise
        return m

    def num_possible_cpus(self) -> int:
        return self.store.ncpus

    def open_ringbuf(self, m) -> UserspaceRingBuffer:
        if not isinstance(m, UserspaceMap) or m.type != U.BPF_MAP_TYPE_RINGBUF:
            raise Error(f"map '{m.name}': not a userspace ring buffer")
        return UserspaceRingBuffer(m, perf=False)

    def open_perfbuf(self, m, page_count: int = 64) -> UserspaceRingBuffer:
        if not isinstance(m, UserspaceMap) or m.type != U.BPF_MAP_TYPE_PERF_EVENT_ARRAY:
            raise Error(f"map '{m.name}': not a userspace perf event array")
        return UserspaceRingBuffer(m, perf=True)

    # -- programs
    def prepare(self, spec, maps: dict) -> tuple[bytes, list]:
        """Prepared bytecode (lddw imm = index into the returned map list) for a ProgramSpec."""
        subject = f"prog '{spec.name}'"
        if not spec.insns or len(spec.insns) % 8:
            raise LoadError(f"{subject}: program is empty or not a whole number of instructions")
        if getattr(spec, "core_relos", None):
            raise LoadError(f"{subject}: {len(spec.core_relos)} CO-RE relocation(s) (BPF_CORE_READ / "
                            f"preserve_access_index) are not supported by the userspace runtime: it has no "
                            f"kernel types to relocate against")
        raw, relocations = rewrite_packet_loads(bytes(spec.insns), list(spec.relocations), subject, spec.type)
        insns = bytearray(raw)
        n = len(insns) // 8
        order: list = []
        index: dict = {}
        for r in relocations:
            if r.kind == "func":
                continue
            if r.kind == "kfunc":
                raise LoadError(f"{subject}: kfunc {r.target} (insn {r.insn}) is not supported by the userspace runtime")
            if r.kind in ("ksym", "ksym_addr"):
                if not r.addend:
                    raise LoadError(f"{subject}: kernel symbol '{r.target}' (insn {r.insn}) does not exist in the "
                                    f"userspace runtime")
                if 0 <= r.insn < n - 1 and insns[r.insn * 8] == 0x18:  # __weak: it reads as 0
                    insns[r.insn * 8 + 1] &= 0x0F
                    struct.pack_into("<i", insns, r.insn * 8 + 4, 0)
                    struct.pack_into("<i", insns, r.insn * 8 + 12, 0)
                continue
            if r.kind == "kconfig":
                r = dataclasses.replace(r, kind="map_value", target=r.target or ".kconfig")
            if r.kind not in ("map", "map_value"):
                raise LoadError(f"{subject}: relocation of unknown kind {r.kind!r} at insn {r.insn}")
            if not 0 <= r.insn < n - 1 or insns[r.insn * 8] != 0x18:
                raise LoadError(f"{subject}: relocation for '{r.target}' at insn {r.insn} is not on a "
                                f"64-bit immediate load (lddw)")
            m = maps.get(r.target)
            if m is None:
                raise LoadError(f"{subject}: references map '{r.target}' which the object does not define")
            if not isinstance(m, UserspaceMap) or m.store is not self.store:
                raise LoadError(f"{subject}: map '{r.target}' does not belong to this userspace backend")
            if r.target not in index:
                index[r.target] = len(order)
                order.append(m)
            off = r.insn * 8
            src = U.BPF_PSEUDO_MAP_FD if r.kind == "map" else U.BPF_PSEUDO_MAP_VALUE
            insns[off + 1] = (insns[off + 1] & 0x0F) | (src << 4)
            struct.pack_into("<i", insns, off + 4, index[r.target])
            struct.pack_into("<i", insns, off + 12, r.addend if r.kind == "map_value" else 0)
        if len(order) > 64:
            raise LoadError(f"{subject}: uses {len(order)} maps; the userspace runtime allows 64 per program")
        # Each map whose values a program may point into is one entry of the run's region table
        # (16: also the context, packet, stack and ring buffer records).
        pointable = [m.name for m in order if m.type in VALUE_REGION_TYPES]
        if len(pointable) > MAX_VALUE_MAPS:
            raise LoadError(f"{subject}: uses {len(pointable)} maps with values it can point into "
                            f"({', '.join(pointable)}); the userspace runtime allows {MAX_VALUE_MAPS}")
        pc = 0
        while pc < n:
            op, regs = insns[pc * 8], insns[pc * 8 + 1]
            imm = struct.unpack_from("<i", insns, pc * 8 + 4)[0]
            if op == 0x85 and (regs >> 4) == 0 and imm not in self._helpers:
                hname = HELPER_NAMES.get(imm)
                what = f"helper bpf_{hname} (id {imm})" if hname else f"helper id {imm}"
                raise LoadError(f"{subject}: {what} is not supported by the userspace runtime")
            if op == 0x85 and (regs >> 4) == 2:
                raise LoadError(f"{subject}: kfunc calls (insn {pc}) are not supported by the userspace runtime")
            if op == 0x18:
                src = regs >> 4
                if src not in (0, U.BPF_PSEUDO_MAP_FD, U.BPF_PSEUDO_MAP_VALUE, 4):
                    raise LoadError(f"{subject}: insn {pc}: 64-bit load of kind {src} is not supported "
                                    f"by the userspace runtime")
                pc += 2
                continue
            pc += 1
        return bytes(insns), order

    def load_program(self, spec, maps: dict, btf=None) -> UserspaceProgram:
        from . import vm

        subject = f"prog '{spec.name}'"
        insns, order = self.prepare(spec, maps)
        vm.verify(insns, self._helpers, len(order), spec.name)
        L, F = lib(), ffi()
        ids = F.new("uint32_t[]", [m.id for m in order] or [0])
        pid = L.pbs_prog_create(self.store.handle, spec.name.encode(), spec.section.encode(), spec.type,
                                spec.expected_attach_type, insns, len(insns) // 8, ids, len(order))
        if pid < 0:
            raise _err(subject, "load", pid)
        engine = "interpreter"
        if self.jit:
            try:
                from .jit import jit_compile

                code = jit_compile(insns, map_types=[m.type for m in order])
                r = L.pbs_prog_set_jit(self.store.handle, pid, code.code, len(code.code), code.entry)
                if r == 0:
                    r = L.pbs_prog_map_jit(self.store.handle, pid)
                if r < 0:
                    raise OSError(-r, os.strerror(-r))
                engine = "jit"
            except Exception as e:  # the interpreter runs every verified program
                warnings.warn(f"{subject}: JIT unavailable, using the interpreter: {e}", RuntimeWarning,
                              stacklevel=2)
        return UserspaceProgram(self.store, pid, spec, insns, engine, owner=True)

    # -- trace_printk
    def trace_pipe_lines(self, timeout: Optional[float] = None) -> Iterator[str]:
        """bpf_trace_printk output of programs run through this store (by any process), line by
        line, in the kernel's trace_pipe format. Like the kernel backend: with `timeout`, stops
        after that many seconds without a new line (0: what is pending); None waits forever."""
        last = time.monotonic()
        while True:
            chunk = self.store.trace_read()
            if chunk:
                self._trace_buf += chunk
                *lines, self._trace_buf = self._trace_buf.split(b"\n")
                for line in lines:
                    yield line.decode(errors="replace")
                last = time.monotonic()
                continue
            if timeout is not None and time.monotonic() - last >= timeout:
                return
            time.sleep(0.01)

    def close(self) -> None:
        # the store is unmapped when its last user (map, program, backend) is gone
        self.store = None


__all__ = ["UserspaceBackend", "UserspaceProgram", "UserspaceMap", "userspace_available", "Store"]
