"""Kernel program load: relocations applied from the spec, BTF + func/line info, the verifier
log captured on rejection and annotated with source lines; test_run."""
from __future__ import annotations

import copy
import ctypes
import errno as _errno
import os
import re
import struct
from typing import Optional

from ... import uapi as U
from ...errors import BTFError, LoadError, NotSupportedError, VerifierError
from ..base import RawProgram, TestRunResult
from . import syscall as sc

ENOTSUPP = 524
LOG_START = 1 << 20
LOG_MAX = 16 << 20  # bigger logs are cut (a 1M-instruction rejection logs ~70 MB)

PROG_TYPE_NAMES = {v: k[len("BPF_PROG_TYPE_"):].lower() for k, v in vars(U).items()
                   if k.startswith("BPF_PROG_TYPE_") and isinstance(v, int)}

# Program types whose test_run takes packet data (and an optional __sk_buff / xdp_md ctx).
PACKET_TYPES = {U.BPF_PROG_TYPE_SOCKET_FILTER, U.BPF_PROG_TYPE_SCHED_CLS, U.BPF_PROG_TYPE_SCHED_ACT,
                U.BPF_PROG_TYPE_XDP, U.BPF_PROG_TYPE_CGROUP_SKB, U.BPF_PROG_TYPE_LWT_IN,
                U.BPF_PROG_TYPE_LWT_OUT, U.BPF_PROG_TYPE_LWT_XMIT, U.BPF_PROG_TYPE_LWT_SEG6LOCAL,
                U.BPF_PROG_TYPE_FLOW_DISSECTOR, U.BPF_PROG_TYPE_SK_LOOKUP}
# Runners that refuse repeat/data/ctx_out (net/bpf/test_run.c): raw_tp, tracing, syscall.
NO_REPEAT_TYPES = {U.BPF_PROG_TYPE_RAW_TRACEPOINT, U.BPF_PROG_TYPE_TRACING, U.BPF_PROG_TYPE_SYSCALL}
ETH_HLEN = 14
POISON = 0xBAD2310  # libbpf's and the kernel's call imm for a CO-RE relocation that failed


EXTERN_KINDS = ("kfunc", "ksym", "ksym_addr")


def apply_relocations(spec, maps: dict, insns: Optional[bytes] = None) -> bytes:
    """The program's instructions (`insns`, default the spec's) with map fds / global data
    addresses filled in and kernel externs resolved against the running kernel."""
    subject = f"prog '{spec.name}'"
    insns = bytearray(spec.insns if insns is None else insns)
    n = len(insns) // 8
    if any(r.kind in EXTERN_KINDS for r in spec.relocations):
        from ...btf.kernel import patch_externs

        for r in spec.relocations:
            if r.kind not in EXTERN_KINDS:
                continue
            lddw = r.kind != "kfunc"
            if not 0 <= r.insn < n - lddw or insns[r.insn * 8] != (0x18 if lddw else 0x85):
                raise LoadError(f"{subject}: {r.kind} relocation for '{r.target}' at insn {r.insn} "
                                f"is not on a {'64-bit immediate load (lddw)' if lddw else 'call'}")
        try:
            patch_externs(insns, spec)
        except BTFError as e:  # no /sys/kernel/btf/vmlinux
            raise LoadError(f"{subject}: kernel externs need the kernel's BTF: {e}") from None
    for r in spec.relocations:
        if r.kind == "func" or r.kind in EXTERN_KINDS:
            continue  # linked by the ELF reader / patched above
        if r.kind not in ("map", "map_value", "kconfig"):
            raise LoadError(f"{subject}: relocation of unknown kind {r.kind!r} at insn {r.insn}")
        if not 0 <= r.insn < n - 1 or insns[r.insn * 8] != 0x18:
            raise LoadError(f"{subject}: relocation for '{r.target}' at insn {r.insn} is not on a "
                            f"64-bit immediate load (lddw)")
        m = maps.get(r.target)
        if m is None:
            raise LoadError(f"{subject}: references map '{r.target}' which the object does not define")
        off = r.insn * 8
        # a __kconfig read is a load from the ".kconfig" map the backend filled at create
        src = U.BPF_PSEUDO_MAP_FD if r.kind == "map" else U.BPF_PSEUDO_MAP_VALUE
        insns[off + 1] = (insns[off + 1] & 0x0F) | (src << 4)
        struct.pack_into("<i", insns, off + 4, m.fd)
        struct.pack_into("<i", insns, off + 12, 0 if r.kind == "map" else r.addend)
    return bytes(insns)


def _local_btf(btf):
    from ...btf import BTF

    if btf is None or isinstance(btf, BTF):
        return btf
    if isinstance(btf, (bytes, bytearray, memoryview)):
        return BTF(bytes(btf))
    raw = getattr(btf, "raw", None)
    return BTF(bytes(raw() if callable(raw) else raw)) if raw is not None else None


def _core_target(spec, r, local) -> tuple[str, str]:
    """(what a CO-RE relocation asks for, why the kernel's BTF cannot give it), for messages."""
    from ...btf import core, vmlinux

    kind = core.KIND_NAMES[r.kind] if 0 <= r.kind < len(core.KIND_NAMES) else str(r.kind)
    try:
        tname = local.type_name(r.type_id)
        lt = local.resolve(r.type_id)
    except Exception:
        return f"{kind} of type [{r.type_id}]", "the object's BTF has no such type"
    target = vmlinux()
    cands = core._candidates(local, lt, target)
    acc = [int(x) for x in r.access.split(":") if x.isdigit()]
    if r.kind in range(core.FIELD_BYTE_OFFSET, core.FIELD_RSHIFT_U64 + 1):
        try:
            _, _, _, names = core._field(local, r.type_id, acc, None)
        except core._NoMatch:
            names = []
        path = tname
        for nm, i in zip(names, acc[1:]):
            path += f".{nm}" if nm is not None else f"[{i}]"
        what = f"{kind} of {path}"
        if not cands:
            return what, f"the kernel has no type {tname}"
        reasons = []
        for c in cands:
            try:
                core._field(target, c.id, acc, names)
            except core._NoMatch as e:
                reasons.append(str(e))
        return what, "in the kernel's BTF: " + "; ".join(dict.fromkeys(reasons) or ["no match"])
    if r.kind in (core.ENUMVAL_EXISTS, core.ENUMVAL_VALUE):
        name = lt.members[acc[0]].name if acc and acc[0] < len(getattr(lt, "members", []) or []) else "?"
        if not cands:
            return f"{kind} of {tname}::{name}", f"the kernel has no type {tname}"
        return f"{kind} of {tname}::{name}", f"the kernel's {tname} has no value {name}"
    return f"{kind} of {tname}", f"the kernel has no type {tname}"


def apply_core(spec, btf, insns: bytes) -> tuple[bytes, dict]:
    """CO-RE relocations applied in Python against the kernel's BTF (vmlinux).

    Returns (instructions, {insn index: message} of the relocations the kernel cannot satisfy).
    Those are poisoned as libbpf does (a call the verifier rejects) because code guarded by
    bpf_core_field_exists() may never reach them; if the verifier does, the load error names
    the relocation instead of an unknown helper."""
    from ...btf import core, vmlinux

    subject = f"prog '{spec.name}'"
    relos = spec.core_relos
    if not relos:
        return insns, {}
    local = _local_btf(btf)
    if local is None:
        raise LoadError(f"{subject}: has {len(relos)} CO-RE relocations but the object has no BTF")
    try:
        vmlinux()
    except BTFError as e:
        raise LoadError(f"{subject}: has {len(relos)} CO-RE relocations but the kernel's BTF is "
                        f"not readable ({e})") from None
    n = len(insns) // 8
    for r in relos:
        if not 0 <= r.insn < n:
            raise LoadError(f"{subject}: CO-RE relocation at insn {r.insn} is outside the program "
                            f"({n} instructions)")
    view = copy.copy(spec)
    view.insns = bytes(insns)
    try:
        out = bytearray(core.apply(view, local, vmlinux()))
    except LoadError as e:
        msg = str(e)
        if not msg.startswith(subject):
            msg = f"{subject}: {msg}"
        raise LoadError(msg) from None
    poisoned = {}
    poison = struct.pack("<BBhi", 0x85, 0, 0, core.POISON)
    for r in relos:
        at = r.insn * 8
        if out[at:at + 8] != poison or insns[at:at + 8] == poison:
            continue
        what, why = _core_target(spec, r, local)
        poisoned[r.insn] = (what, why)
    return bytes(out), poisoned


def _core_error(spec, insn: int, what: str, why: str, log: str) -> LoadError:
    li = source_of_insn(spec, insn)
    where = f" at {li.file}:{li.line}:{li.col} (insn {insn})" if li else f" at insn {insn}"
    src = f"\n    {li.source.strip()}" if li is not None and li.source else ""
    e = LoadError(f"prog '{spec.name}': CO-RE relocation cannot be satisfied{where}: {what}: "
                  f"{why} (guard the access with bpf_core_field_exists() / "
                  f"bpf_core_type_exists())" + src)
    e.insn, e.line_info, e.raw_log = insn, li, log
    return e


_INSN_RE = re.compile(r"^(\d+): \(")


def annotate_log(log: str, spec) -> str:
    """Insert `; file:line:col: source` before the first instruction of each source line.

    The kernel already prints `; <source> @ file:line` comments when it received line info;
    those lines are kept as they are and our mapping (from the spec's LineInfo) is added
    where the kernel printed none, so every instruction is attributed either way."""
    infos = sorted(spec.line_info, key=lambda li: li.insn)
    if not infos:
        return log
    starts = [li.insn for li in infos]
    import bisect

    out, last = [], None
    kernel_said = False
    for line in log.splitlines():
        if line.startswith("; "):
            kernel_said = True
            out.append(line)
            continue
        m = _INSN_RE.match(line)
        if m:
            i = bisect.bisect_right(starts, int(m.group(1))) - 1
            li = infos[i] if i >= 0 else None
            if li is not None and li is not last and not kernel_said:
                src = f" {li.source.strip()}" if li.source else ""
                out.append(f"; {li.file}:{li.line}:{li.col}:{src}")
            last = li if li is not None else last
            kernel_said = False
        out.append(line)
    return "\n".join(out)


def source_of_insn(spec, idx: int):
    best = None
    for li in spec.line_info:
        if li.insn <= idx and (best is None or li.insn >= best.insn):
            best = li
    return best


_NOISE = ("processed ", "verification time", "stack depth", "mark_precise", "from ", "; ")


def _summary(log: str) -> tuple[str, Optional[int]]:
    """(the verifier's reason: the lines after the last instruction it printed, index of
    that instruction)."""
    lines = [l for l in log.splitlines() if l.strip()]
    last_insn, last_at = None, -1
    for i, l in enumerate(lines):
        m = _INSN_RE.match(l)
        if m:
            last_insn, last_at = int(m.group(1)), i
    tail = [l.strip() for l in lines[last_at + 1:]
            if not l.startswith(_NOISE) and not re.match(r"^\d+: R\d", l)]
    if not tail:  # e.g. a log that ends in register state dumps only
        tail = [l.strip() for l in lines if not l.startswith(_NOISE)][-1:]
    return "; ".join(tail), last_insn


class KernelProgram(RawProgram):
    def __init__(self, fd: int, spec, name: str):
        self.fd, self.spec, self.name = fd, spec, name
        self._subject = f"prog '{name}'"

    def fd_bytes(self) -> bytes:
        """This program's fd as a 4-byte value (prog array contents)."""
        return self.fd.to_bytes(4, "little")

    def info(self) -> sc.ProgInfo:
        return sc.prog_info(self.fd, self._subject)

    def test_run(self, data: bytes = b"", ctx: Optional[bytes] = None, repeat: int = 1,
                 data_size_out: Optional[int] = None) -> TestRunResult:
        t = self.spec.type
        data = bytes(data or b"")
        if t in NO_REPEAT_TYPES:
            # These runners take no data and no repeat; syscall programs write ctx back in place.
            if data:
                raise LoadError(f"{self._subject}: {PROG_TYPE_NAMES.get(t)} programs take no packet data in test_run (use ctx=)")
            try:
                retval, _, cout, dur = sc.prog_test_run(self.fd, b"", 0, ctx, 0, 0,
                                                        ctx_inout=(t == U.BPF_PROG_TYPE_SYSCALL),
                                                        subject=self._subject)
            except LoadError as e:
                raise self._run_error(e) from None
            return TestRunResult(retval=retval, data=b"", ctx=cout, duration_ns=dur)
        if t in PACKET_TYPES:
            if t != U.BPF_PROG_TYPE_SK_LOOKUP and len(data) < ETH_HLEN:
                raise LoadError(f"{self._subject}: test_run of {PROG_TYPE_NAMES.get(t)} programs "
                                f"needs at least {ETH_HLEN} bytes of packet data (an Ethernet header)")
            if data_size_out is None:
                data_size_out = len(data) + 256  # room for programs that grow the packet
        else:
            data_size_out = data_size_out or 0
        ctx_out = len(ctx) if ctx else 0
        try:
            retval, dout, cout, dur = sc.prog_test_run(self.fd, data, data_size_out, ctx, ctx_out,
                                                       max(1, repeat), subject=self._subject)
        except LoadError as e:
            raise self._run_error(e) from None
        if retval >= 1 << 31 and t in (U.BPF_PROG_TYPE_SCHED_CLS, U.BPF_PROG_TYPE_SCHED_ACT):
            retval -= 1 << 32  # TC_ACT_UNSPEC is -1
        return TestRunResult(retval=retval, data=dout, ctx=cout, duration_ns=dur)

    def _run_error(self, e):
        t = self.spec.type
        err = getattr(e, "errno", 0)
        if err in (ENOTSUPP, _errno.EOPNOTSUPP):
            return NotSupportedError(f"{self._subject}: this kernel cannot test-run "
                                     f"{PROG_TYPE_NAMES.get(t, t)} programs")
        if err == _errno.EINVAL:
            return LoadError(f"{e} (the kernel rejected the data/ctx given to this "
                             f"{PROG_TYPE_NAMES.get(t, t)} program)")
        return e

    def pin(self, path: str) -> None:
        sc.obj_pin(self.fd, path, self._subject)

    def close(self) -> None:
        if self.fd >= 0:
            sc.close_fd(self.fd)
            self.fd = -1

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return f"<KernelProgram {self.name!r} fd={self.fd}>"


def load_program(spec, maps: dict, btf_fd: int = -1, attach_btf_id: int = 0,
                 attach_btf_obj_fd: int = 0, btf=None, core: str = "kernel") -> KernelProgram:
    """`btf`: the object's BTF (pybpfc.btf.BTF or raw bytes), needed for CO-RE relocations.
    `core`: "kernel" passes CO-RE relocations to BPF_PROG_LOAD (the kernel resolves them
    against vmlinux and module BTF; Python only explains a failure), "python" applies them here
    with pybpfc.btf.core. Without a kernel BTF fd for the object, Python applies them."""
    subject = f"prog '{spec.name}'"
    if not spec.insns or len(spec.insns) % 8:
        raise LoadError(f"{subject}: instructions must be a non-empty multiple of 8 bytes "
                        f"(got {len(spec.insns)})")
    if core not in ("kernel", "python"):
        raise LoadError(f"{subject}: CO-RE mode must be 'kernel' or 'python', not {core!r}")
    kernel_core = bool(spec.core_relos and spec.core_relos_raw and core == "kernel" and btf_fd >= 0)
    if kernel_core:
        core_insns, poisoned = spec.insns, None  # computed on failure only
    else:
        # CO-RE first: it patches the program's own offsets/immediates; map fds come after
        core_insns, poisoned = apply_core(spec, btf, spec.insns)
    insns = apply_relocations(spec, maps, core_insns)
    flags = spec.flags | (sc.BPF_F_SLEEPABLE if spec.sleepable else 0)
    kw = dict(license=spec.license or "GPL", name=spec.name, kern_version=spec.kern_version,
              flags=flags, expected_attach_type=spec.expected_attach_type,
              attach_btf_id=attach_btf_id, attach_prog_fd=attach_btf_obj_fd)
    if btf_fd >= 0:
        kw.update(btf_fd=btf_fd)
        if spec.func_info_raw:
            kw.update(func_info=spec.func_info_raw, func_info_rec_size=8)
        if spec.line_info_raw:
            kw.update(line_info=spec.line_info_raw, line_info_rec_size=16)
        if kernel_core:
            kw.update(core_relos=spec.core_relos_raw, core_relo_rec_size=16)
    fd, _ = sc.prog_load(spec.type, insns, **kw)
    if fd >= 0:
        return KernelProgram(fd, spec, spec.name)
    # Retry with the verifier log on, growing the buffer until the whole log fits, up to
    # LOG_MAX. Past that, kernels >= 6.4 keep the log's tail (where the reason is), older
    # ones its head; either way the log says it was cut.
    size, log, note = LOG_START, "", ""
    while True:
        buf = ctypes.create_string_buffer(size)
        fd, attr = sc.prog_load(spec.type, insns, log_level=1, log_buf=buf, **kw)
        if fd >= 0:  # passed with the log on (can happen with flaky resource limits)
            return KernelProgram(fd, spec, spec.name)
        log = buf.value.decode(errors="replace")
        if -fd != _errno.ENOSPC:
            break
        true = attr.log_true_size
        if true and true < LOG_MAX and true >= size:
            size = true + 1
            continue
        if not true and size < LOG_MAX:
            size *= 4
            continue
        # still too long: ENOSPC hides the verifier's errno; it rejected the program
        if true:
            log = log.partition("\n")[2]  # the kept tail starts mid-line
        note = (f"(verifier log cut to its last {len(log)} of {true} bytes)\n" if true else
                f"(verifier log cut to its first {len(log)} bytes)\n")
        fd = -_errno.EACCES
        break
    log = note + log
    err = -fd
    if not log.strip():
        if err == _errno.EPERM and attach_btf_id and os.geteuid() == 0:
            # Root, a valid BTF target and no log: the kernel cannot trampoline (e.g. built
            # without function tracing); nothing in the program can fix that.
            raise NotSupportedError(f"{subject}: this kernel refused to load {spec.kind or 'tracing'} "
                                    f"programs (Operation not permitted with no verifier log; the "
                                    f"kernel likely lacks ftrace/trampoline support)")
        what = "program load"
        if err in (_errno.EINVAL, _errno.EOPNOTSUPP, ENOTSUPP):
            from .probes import prog_type

            ok, why = prog_type(spec.type)
            if not ok:
                raise NotSupportedError(f"{subject}: {PROG_TYPE_NAMES.get(spec.type, spec.type)} "
                                        f"programs are not supported here: {why}")
        if err == _errno.EINVAL:
            hint = (f" (program type {PROG_TYPE_NAMES.get(spec.type, spec.type)}, expected "
                    f"attach type {spec.expected_attach_type}: the kernel may not support it)")
        elif err == _errno.EPERM:
            hint = " (needs root, or CAP_BPF with CAP_PERFMON/CAP_NET_ADMIN for this type)"
        else:
            hint = ""
        e = LoadError(f"{subject}: {what} failed: {sc.errno_text(err)}{hint}")
        e.errno = err
        raise e
    reason, last = _summary(log)
    if kernel_core:
        # The kernel poisons what it cannot relocate exactly like libbpf; say which relocation
        # in terms of the object's types (the same matching, done in Python).
        try:
            _, poisoned = apply_core(spec, btf, spec.insns)
        except LoadError as ce:
            if last is None:  # the kernel refused the relocation records themselves
                ce.raw_log, ce.errno = log, err
                raise ce from None
            poisoned = {}
        if f"unknown#{POISON}" not in log:
            poisoned = {}
    if last is not None and last in poisoned:
        raise _core_error(spec, last, *poisoned[last], log)
    m = re.search(r"failed to find the address for kernel symbol '([^']+)'", log)
    if m:
        # resolve_pseudo_ldimm64 looks typed ksyms up in kallsyms, which lists data symbols
        # only with CONFIG_KALLSYMS_ALL; nothing in the program can change that
        e = NotSupportedError(f"{subject}: typed __ksym '{m.group(1)}' has BTF but no kallsyms "
                              f"address on this kernel (data symbols need CONFIG_KALLSYMS_ALL)")
        e.raw_log, e.errno = log, err
        raise e
    where, src, li = "", "", None
    if last is not None:
        li = source_of_insn(spec, last)
        where = f" at {li.file}:{li.line}:{li.col} (insn {last})" if li else f" at insn {last}"
        if li is not None and li.source:
            src = f"\n    {li.source.strip()}"
    annotated = annotate_log(log, spec)
    e = VerifierError(f"{subject}: rejected by the verifier{where}: "
                      f"{reason or sc.errno_text(err)}{src}\nverifier log:", annotated)
    # for tools: where it failed (instruction index, LineInfo or None) and the raw kernel log
    e.insn, e.line_info, e.raw_log, e.errno = last, li, log, err
    raise e
