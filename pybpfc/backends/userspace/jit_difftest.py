"""Differential testing: random valid BPF programs run on the interpreter, the JIT and the
kernel (XDP via BPF_PROG_TEST_RUN) must give the same r0 and the same final memory.

A generated program ("body") gets r1 = a 64-byte memory block and r2 = its length, like the
conformance suite. It uses ALU32/64 (incl. signed div/mod, shifts, movsx, byte swaps), JMP and
JMP32 branches (forward, plus counted loops), stack and memory loads/stores (sign-extending
too), loads/stores/atomics through variable (masked) offsets, all atomic operations and
BPF-to-BPF calls. Programs are built so the kernel verifier accepts them: r9 holds the memory
pointer, r6 is the only register that ever holds a derived pointer (reset right after use),
r8 is the loop counter, every stack slot is written before the body, and registers r1..r5
are re-initialised after each call.

The kernel runs `wrapper + body`: the wrapper looks up the memory block (array map value),
calls the body as a BPF-to-BPF function with r1 = that value and r2 = 64, and stores the 64-bit
r0 into a second array map.
"""
from __future__ import annotations

import os
import random
import struct
from dataclasses import dataclass, field

BPF_FUNC_LOOP = 181  # linux/bpf.h
MEM = 64          # memory block size
SLOTS = 8         # 8-byte stack slots used per frame
SCALARS = [0, 1, 2, 3, 4, 5, 7]
MASK64 = (1 << 64) - 1


def I(op, dst=0, src=0, off=0, imm=0) -> bytes:
    return struct.pack("<BBhi", op, (src << 4) | dst, off, imm)


def lddw(dst, value, src=0) -> bytes:
    value &= MASK64
    lo, hi = value & 0xFFFFFFFF, value >> 32
    return (struct.pack("<BBhI", 0x18, (src << 4) | dst, 0, lo) +
            struct.pack("<BBhI", 0, 0, 0, hi))


def _s32(v):
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


@dataclass
class _Group:
    """Instructions that stay together; branches only target group boundaries."""
    code: list = field(default_factory=list)  # bytes chunks, or ("call", callee_index)

    def n(self):
        return sum((1 if c[0] == "call" else 2) if isinstance(c, tuple) else len(c) // 8
                   for c in self.code)


class Generator:
    """Deterministic random program generator (seeded)."""

    def __init__(self, seed: int, size: int = 40, nfuncs: int | None = None,
                 helpers: bool = False, callbacks: bool = False):
        self.r = random.Random(seed)
        self.size = size
        self.nfuncs = nfuncs
        # conformance-suite helpers (userspace only: the kernel has none of them)
        self.helpers = helpers
        # bpf_loop with a generated callback (run through the backends, see Stacks)
        self.callbacks = callbacks
        # bytes behind r9 in the function being generated (8: a callback's context slot)
        self.mem = MEM

    # -- values

    def imm32(self):
        r = self.r
        c = r.random()
        if c < 0.3:
            return r.choice([0, 1, -1, 2, 7, 8, 16, 31, 32, 63, 64, 0x7FFFFFFF, -0x80000000,
                             0xFF, 0xFFFF, -2])
        if c < 0.6:
            return r.randint(-300, 300)
        return _s32(r.getrandbits(32))

    def imm64(self):
        r = self.r
        if r.random() < 0.3:
            return r.choice([0, 1, MASK64, 1 << 63, (1 << 63) - 1, 0xFFFFFFFF, 1 << 32,
                             0x8000000080000000])
        return r.getrandbits(64)

    def sreg(self):
        return self.r.choice(SCALARS)

    # -- groups

    def alu(self):
        r = self.r
        is64 = r.random() < 0.6
        cls = 0x07 if is64 else 0x04
        bits = 64 if is64 else 32
        ops = [0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0]
        op = r.choice(ops)
        dst = self.sreg()
        if op == 0x80:
            return [I(cls | op, dst)]
        use_reg = r.random() < 0.5
        off = 0
        if op in (0x30, 0x90) and r.random() < 0.5:
            off = 1  # signed div/mod
        if use_reg:
            if op == 0xB0 and r.random() < 0.4:
                off = r.choice([8, 16, 32] if is64 else [8, 16])  # movsx
            return [I(cls | op | 0x08, dst, self.sreg(), off)]
        imm = self.imm32()
        if op in (0x60, 0x70, 0xC0):
            imm = r.randrange(bits)
        if op in (0x30, 0x90) and imm == 0:
            imm = r.choice([3, -3, 10])
        return [I(cls | op, dst, 0, off, imm)]

    def endian(self):
        r = self.r
        op = r.choice([0xD4, 0xDC, 0xD7])
        return [I(op, self.sreg(), 0, 0, r.choice([16, 32, 64]))]

    def const(self):
        return [lddw(self.sreg(), self.imm64())]

    def mem_access(self):
        """Load or store at r9 + constant offset, or on the stack."""
        r = self.r
        size, sz = r.choice([(1, 0x10), (2, 0x08), (4, 0x00), (8, 0x18)])
        stack = r.random() < 0.35
        if stack:
            base, off = 10, -size * r.randint(1, SLOTS * 8 // size)  # kernel: aligned
        else:
            # a callback's context is stack memory: aligned accesses only
            base, off = 9, r.randrange(0, self.mem - size + 1, 1 if self.mem == MEM else size)
        kind = r.random()
        if kind < 0.4:
            mode = 0x80 if (size < 8 and r.random() < 0.4) else 0x60
            return [I(0x01 | mode | sz, self.sreg(), base, off)]
        if kind < 0.75:
            return [I(0x03 | 0x60 | sz, base, self.sreg(), off)]
        return [I(0x02 | 0x60 | sz, base, 0, off, self.imm32())]

    def dyn_access(self):
        """Access through r6 = base + (scalar & mask): checked at run time by the VMs."""
        r = self.r
        size, sz = r.choice([(1, 0x10), (2, 0x08), (4, 0x00), (8, 0x18)])
        stack = r.random() < 0.3 or self.mem < MEM
        mask = {1: 0x3F, 2: 0x3E, 4: 0x3C, 8: 0x38}[size]
        code = [I(0xBF, 6, self.sreg()), I(0x57, 6, 0, 0, mask),
                I(0x0F, 6, 10 if stack else 9)]
        off = -SLOTS * 8 if stack else 0
        kind = r.random()
        if kind < 0.4:
            code.append(I(0x01 | 0x60 | sz, self.sreg(), 6, off))
        elif kind < 0.7 or stack or size < 4:
            code.append(I(0x03 | 0x60 | sz, 6, self.sreg(), off))
        else:
            code.append(self.atomic_insn(6, 0, size))
        code.append(I(0xB7, 6, 0, 0, self.imm32()))
        return code

    def atomic_insn(self, base, off, size):
        r = self.r
        imm = r.choice([0x00, 0x40, 0x50, 0xA0, 0x01, 0x41, 0x51, 0xA1, 0xE1, 0xF1])
        return I(0xC3 if size == 4 else 0xDB, base, self.sreg(), off, imm)

    def atomic(self):
        r = self.r
        size = r.choice([4, 8])
        off = r.randrange(0, self.mem - size + 1, size)
        return [self.atomic_insn(9, off, size)]

    def loop(self):
        r = self.r
        body = []
        for _ in range(r.randint(1, 4)):
            body += r.choice([self.alu, self.alu, self.mem_access, self.atomic])()
        n = sum(len(c) // 8 for c in body)
        # jne back to the first body insn: offset -(n + 2) from the jne
        return ([I(0xB7, 8, 0, 0, r.randint(1, 6))] + body +
                [I(0x07, 8, 0, 0, -1), I(0x55, 8, 0, -(n + 2), 0)])

    # -- functions

    def function(self, idx: int, ncallees: int, size: int, arg_reg: int = 1,
                 ret01: bool = False, cb_index: int | None = None):
        """Groups of function idx; may call functions idx+1 .. idx+ncallees. The memory
        pointer arrives in r1; a bpf_loop callback (arg_reg 2, returns 0 or 1) works on the
        caller's 8-byte stack slot its context r2 points to instead."""
        r = self.r
        groups = []
        # a bpf_loop callback's "memory" is its context: 8 bytes of the caller's stack
        self.mem = MEM if arg_reg == 1 else 8
        pro = [I(0xBF, 9, arg_reg)]
        for reg in SCALARS + [6, 8]:
            pro.append(lddw(reg, self.imm64()) if r.random() < 0.3 else
                       I(0xB7, reg, 0, 0, self.imm32()))
        for k in range(1, SLOTS + 1):
            pro.append(I(0x7B, 10, self.sreg(), -8 * k))
        groups.append(_Group(pro))
        makers = [(self.alu, 30), (self.endian, 4), (self.const, 3), (self.mem_access, 14),
                  (self.dyn_access, 6), (self.atomic, 5), (self.loop, 2)]
        if self.helpers:
            makers.append((self.helper_call, 5))
        if self.mem < MEM:  # no atomics on the caller's stack slot
            makers = [(mk, w) for mk, w in makers if mk != self.atomic]
        total = sum(w for _, w in makers)
        for _ in range(size):
            if ncallees and r.random() < 0.06:
                groups.append(self.call_group(idx + 1 + r.randrange(ncallees)))
                continue
            x = r.uniform(0, total)
            for mk, w in makers:
                x -= w
                if x <= 0:
                    break
            groups.append(_Group(mk()))
        groups.append(_Group(([I(0xB7, 0, 0, 0, r.randint(0, 1))] if ret01 else []) +
                             [I(0x95)]))
        if cb_index is not None:  # right after the prologue: no branch skips it
            groups.insert(1, _Group(self.loop_call(cb_index)))
        # branches: a conditional or unconditional forward jump before some groups
        branches = {}
        for gi in range(2 if cb_index is not None else 1, len(groups) - 1):
            if r.random() < 0.2:
                branches[gi] = r.randrange(gi + 1, len(groups))
        return groups, branches

    def helper_call(self):
        """gather_bytes / no_op / sqrti on scalars, memfrob on the memory block, unwind (stops
        the program with r0 = 0 when its argument is 0); r1..r5 re-initialised after."""
        r = self.r
        kind = r.choice(["gather", "noop", "sqrt", "frob", "unwind", "callx"])
        code = []
        if kind == "frob":
            off = r.randrange(0, MEM)
            code += [I(0xBF, 1, 9), I(0x07, 1, 0, 0, off),
                     I(0xB7, 2, 0, 0, r.randint(0, MEM - off))]
            hid = 1
        elif kind == "unwind":
            code.append(I(0xB7, 1, 0, 0, 0) if r.random() < 0.3 else I(0xBF, 1, self.sreg()))
            hid = 5
        else:
            for reg in (1, 2, 3, 4, 5):
                if r.random() < 0.5:
                    code.append(I(0xBF, reg, self.sreg()) if reg != self.sreg() else
                                I(0xB7, reg, 0, 0, self.imm32()))
            hid = {"gather": 0, "noop": 2, "sqrt": 3, "callx": 0}[kind]
        if kind == "callx":  # helper id in a register (dst)
            code += [I(0xB7, 8, 0, 0, r.choice([0, 2, 3])), I(0x8D, 8)]
            code.append(I(0xB7, 8, 0, 0, self.imm32()))
        else:
            code.append(I(0x85, 0, 0, 0, hid))
        return code + [I(0xB7, reg, 0, 0, self.imm32()) for reg in (1, 2, 3, 4, 5)]

    def loop_call(self, cb):
        """bpf_loop(n, callback, &stack slot, 0): the callback works on the slot, which is
        read back into r7; r0 = iterations run."""
        # at least one iteration: with a constant 0 Linux 6.18 never explores the callback,
        # drops it as dead code and then fails with "verifier bug: No program to jit"
        # (test_bpf_loop_zero_iterations)
        return ([I(0x7B, 10, self.sreg(), -8), I(0xB7, 1, 0, 0, self.r.randint(1, 4)),
                 ("func", cb), I(0xBF, 3, 10), I(0x07, 3, 0, 0, -8), I(0xB7, 4, 0, 0, 0),
                 I(0x85, 0, 0, 0, BPF_FUNC_LOOP), I(0x79, 7, 10, -8)] +
                [I(0xB7, reg, 0, 0, self.imm32()) for reg in (1, 2, 3, 4, 5)])

    def call_group(self, callee):
        g = _Group([I(0xBF, 1, 9), ("call", callee)])
        g.code += [I(0xB7, reg, 0, 0, self.imm32()) for reg in (1, 2, 3, 4, 5)]
        return g

    def jump(self, delta):
        r = self.r
        c = r.random()
        # unconditional jumps would leave code unreachable (both verifiers refuse that):
        # they appear as ja +0 / gotol +0
        if c < 0.05:
            return I(0x05, 0, 0, 0)
        if c < 0.08:
            return I(0x06, 0, 0, 0, 0)
        cls = r.choice([0x05, 0x06])
        op = r.choice([0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xA0, 0xB0, 0xC0, 0xD0])
        if r.random() < 0.5:
            return I(cls | op | 0x08, self.sreg(), self.sreg(), delta)
        return I(cls | op, self.sreg(), 0, delta, self.imm32())

    def program(self) -> bytes:
        """The body: function 0 first, then its callees; pseudo calls resolved."""
        r = self.r
        nf = self.nfuncs if self.nfuncs is not None else r.choice([1, 1, 2, 3])
        funcs = []
        cb = nf if self.callbacks else None
        for fi in range(nf):
            size = self.size if fi == 0 else max(6, self.size // 3)
            funcs.append(self.function(fi, nf - 1 - fi if fi < 2 else 0, size,
                                       cb_index=cb if fi == 0 else None))
        if cb is not None:
            funcs.append(self.function(cb, 0, max(6, self.size // 3), arg_reg=2, ret01=True))
        called = {c[1] for groups, _ in funcs for g in groups for c in g.code
                  if isinstance(c, tuple)}
        for fi in range(1, nf):
            if fi not in called:  # an uncalled function is unreachable code: refused
                groups = funcs[0][0]
                groups.insert(len(groups) - 1, self.call_group(fi))
        # layout: every group gets an optional leading branch insn
        starts, out, fixups = [], [], []
        pos = 0
        for groups, branches in funcs:
            starts.append(pos)
            gpos = []
            for gi, g in enumerate(groups):
                gpos.append(pos + (1 if gi in branches else 0))
                pos += g.n() + (1 if gi in branches else 0)
            fixups.append(gpos)
        for fi, (groups, branches) in enumerate(funcs):
            gpos = fixups[fi]
            for gi, g in enumerate(groups):
                if gi in branches:
                    tgt = gpos[branches[gi]]
                    tgt_pos = tgt - (1 if branches[gi] in branches else 0)
                    here = gpos[gi] - 1
                    out.append(self.jump(tgt_pos - here - 1))
                at = gpos[gi]
                for c in g.code:
                    if isinstance(c, tuple) and c[0] == "call":
                        out.append(I(0x85, 0, 1, 0, starts[c[1]] - at - 1))
                        at += 1
                    elif isinstance(c, tuple):  # ("func", f): lddw r2, function value
                        rel = starts[c[1]] - at - 1
                        out.append(struct.pack("<BBhi", 0x18, (4 << 4) | 2, 0, rel) +
                                   struct.pack("<BBhi", 0, 0, 0, 0))
                        at += 2
                    else:
                        out.append(c)
                        at += len(c) // 8
        return b"".join(out)


def memory(seed: int) -> bytes:
    return random.Random(seed ^ 0x5EED).randbytes(MEM)


# ------------------------------------------------------------------ engines

@dataclass
class Outcome:
    r0: int | None
    mem: bytes | None
    error: str | None = None

    def key(self):
        return (self.r0, self.mem, self.error)


def run_interp(body: bytes, mem: bytes, helpers: bool = False) -> Outcome:
    from . import vm
    from ...errors import Error
    buf = bytearray(mem)
    try:
        h = vm.conformance_helpers() if helpers else None
        r0 = vm.Vm(body, name="diff", helpers=h)(buf)
    except Error as e:
        return Outcome(None, None, f"interp: {e}")
    return Outcome(r0, bytes(buf))


def run_jit_batch(bodies: list[bytes], mems: list[bytes], helpers: bool = False) -> list[Outcome]:
    from . import jit, vm
    codes = jit.jit_compile_many(bodies)
    prog = jit.JitProgram(codes[0])  # one blob, several entries
    f = jit.ffi()
    out = []
    for code, body, mem in zip(codes, bodies, mems):
        fn = f.cast("pbr_jit_fn", int(f.cast("uintptr_t", prog._mem)) + code.entry)
        run = f.new("struct pbr_run *")
        run.budget = vm.PBR_DEFAULT_BUDGET
        if helpers:
            run.helpers = f.cast("pbr_helper_fn *", vm.conformance_helpers().address)
        buf = f.new("uint8_t[]", bytes(mem))
        addr = int(f.cast("uintptr_t", buf))
        run.regions[0].start, run.regions[0].end, run.regions[0].perm = addr, addr + MEM, 3
        run.nregions = 1
        r0 = fn(run, addr, MEM)
        if run.status not in (0, 1):
            out.append(Outcome(None, None, f"jit: status {run.status} at insn {run.fault_pc}"))
            continue
        out.append(Outcome(r0, bytes(f.buffer(buf, MEM))))
    prog.close()  # every entry of the blob has run
    return out


class Kernel:
    """Runs bodies in the kernel: XDP wrapper + body, maps for memory and r0."""

    def __init__(self):
        from ..kernel import syscall as sc
        from ... import uapi
        self.sc, self.uapi = sc, uapi
        self.mem_fd = sc.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, MEM, 1, name="diff_mem")
        self.res_fd = sc.map_create(uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1, name="diff_r0")

    def close(self):
        os.close(self.mem_fd)
        os.close(self.res_fd)

    def wrapper(self) -> list[bytes]:
        return wrapper(self.mem_fd, self.res_fd)

    def run(self, body: bytes, mem: bytes) -> Outcome:
        import ctypes
        sc, uapi = self.sc, self.uapi
        code = b"".join(self.wrapper()) + body
        fd, _ = sc.prog_load(uapi.BPF_PROG_TYPE_XDP, code, name="diff")
        if fd < 0:  # again with the verifier log (slow), for the message
            log = ctypes.create_string_buffer(1 << 20)
            fd, _ = sc.prog_load(uapi.BPF_PROG_TYPE_XDP, code, name="diff", log_level=1,
                                 log_buf=log)
        if fd < 0:
            tail = log.value.decode(errors="replace").strip().splitlines()[-3:]
            return Outcome(None, None, f"kernel refused ({os.strerror(-fd)}): {' | '.join(tail)}")
        try:
            key = b"\0\0\0\0"
            sc.map_update_elem(self.mem_fd, key, mem)
            sc.map_update_elem(self.res_fd, key, b"\0" * 8)
            ret, _, _, _ = sc.prog_test_run(fd, b"\0" * 64, repeat=1)
            if ret != 2:
                return Outcome(None, None, f"kernel: wrapper returned {ret}")
            r0 = struct.unpack("<Q", sc.map_lookup_elem(self.res_fd, key, 8))[0]
            return Outcome(r0, sc.map_lookup_elem(self.mem_fd, key, MEM))
        finally:
            os.close(fd)


def wrapper(mem_ref: int, res_ref: int) -> list[bytes]:
    """XDP main: r1 = &mem_map[0]; r0 = body(r1, 64); res_map[0] = r0; return XDP_PASS.
    The map lddws are slots 3 and 14 (imm = mem_ref / res_ref); the body starts at slot 22."""
    def lookup(ref):  # 6 slots; r0 = value pointer or NULL
        return [I(0x62, 10, 0, -4, 0), I(0xBF, 2, 10), I(0x07, 2, 0, 0, -4),
                lddw(1, ref, src=1), I(0x85, 0, 0, 0, 1)]
    OUT, BODY = 20, 22
    w = lookup(mem_ref)                                      # 0..5
    w.append(I(0x15, 0, 0, OUT - 6 - 1, 0))                  # 6: if r0 == 0 goto out
    w += [I(0xBF, 1, 0), I(0xB7, 2, 0, 0, MEM)]              # 7, 8
    w.append(I(0x85, 0, 1, 0, BODY - 9 - 1))                 # 9: call body
    w.append(I(0xBF, 6, 0))                                  # 10
    w += lookup(res_ref)                                     # 11..16
    w.append(I(0x15, 0, 0, OUT - 17 - 1, 0))                 # 17
    w += [I(0x7B, 0, 6, 0), I(0x05, 0, 0, 0)]                # 18, 19
    w += [I(0xB7, 0, 0, 0, 2), I(0x95)]                      # 20 (out), 21
    assert sum(len(c) // 8 for c in w) == BODY
    return w


class Stacks:
    """The whole stack: wrapper + body loaded as an XDP program with two array maps through
    pybpfc.load on the userspace backend (interpreter and JIT) and the kernel backend, run
    with test_run. Programs may call bpf_loop with a generated callback (runtime helper,
    run->invoke into the JIT or the interpreter, kernel)."""

    def __init__(self, kernel: bool = True):
        import pybpfc
        from . import UserspaceBackend
        self.pybpfc = pybpfc
        self.backends = {"interp": UserspaceBackend(jit=False), "jit": UserspaceBackend(jit=True)}
        if kernel:
            self.backends["kernel"] = pybpfc.get_backend("kernel")

    def close(self):
        for be in self.backends.values():
            close = getattr(be, "close", None)
            if close:
                close()

    @staticmethod
    def spec(body: bytes):
        from ...elf.spec import CollectionSpec, MapSpec, ProgramSpec, Relocation
        from ... import uapi
        prog = ProgramSpec(name="diff", section="xdp", type=uapi.BPF_PROG_TYPE_XDP, kind="xdp",
                           insns=b"".join(wrapper(0, 0)) + body,
                           relocations=[Relocation(3, "map", "mem"), Relocation(14, "map", "res")])
        maps = {"mem": MapSpec("mem", uapi.BPF_MAP_TYPE_ARRAY, 4, MEM, 1),
                "res": MapSpec("res", uapi.BPF_MAP_TYPE_ARRAY, 4, 8, 1)}
        btf, prog.func_info_raw = _func_btf(prog.insns)
        return CollectionSpec(programs={"diff": prog}, maps=maps, btf=btf)

    def run(self, body: bytes, mem: bytes) -> dict:
        import warnings
        out = {}
        spec = self.spec(body)
        key = bytes(4)
        for name, be in self.backends.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # a JIT fallback must not pass unnoticed
                    coll = self.pybpfc.load(spec.copy(), backend=be)
            except Exception as e:  # noqa: BLE001 - reported as this engine's outcome
                out[name] = Outcome(None, None, f"{name}: load: {str(e)[-300:]}")
                continue
            try:
                coll.maps.mem.raw.update(key, bytes(mem), 0)
                res = coll.programs.diff.test_run(bytes(64))
                if res.retval != 2:
                    out[name] = Outcome(None, None, f"{name}: wrapper returned {res.retval}")
                    continue
                r0 = struct.unpack("<Q", coll.maps.res.raw.lookup(key))[0]
                out[name] = Outcome(r0, bytes(coll.maps.mem.raw.lookup(key)))
            except Exception as e:  # noqa: BLE001 - a fault is this engine's outcome
                out[name] = Outcome(None, None, f"{name}: {e}")
            finally:
                coll.close()
        return out


def _func_btf(insns: bytes):
    """Minimal BTF and func_info for a program's functions (the kernel wants them as soon as
    a callback is passed to a helper): one FUNC per function start, all `long f(void)`."""
    from ...btf.btf import BTF, BTF_MAGIC, HDR, BTFType, KIND_FUNC, KIND_FUNC_PROTO, KIND_INT
    starts, pc, n = {0}, 0, len(insns) // 8
    while pc < n:
        op, regs, _, imm = struct.unpack_from("<BBhi", insns, pc * 8)
        if (op == 0x85 and regs >> 4 == 1) or (op == 0x18 and regs >> 4 == 4):
            starts.add(pc + 1 + imm)
        pc += 2 if op == 0x18 else 1
    btf = BTF(HDR.pack(BTF_MAGIC, 1, 0, HDR.size, 0, 0, 0, 1) + b"\0", "difftest BTF")
    t_long = BTFType(kind=KIND_INT, name="long", size=8)
    t_long.encoding, t_long.nr_bits = 1, 64
    long_id = btf.add_type(t_long)
    proto = btf.add_type(BTFType(kind=KIND_FUNC_PROTO, type=long_id))
    recs = []
    for k, start in enumerate(sorted(starts)):
        # FUNC's vlen is its linkage: the entry global, the others static
        fid = btf.add_type(BTFType(kind=KIND_FUNC, name=f"f{k}", type=proto,
                                   vlen=1 if start == 0 else 0))
        recs.append(struct.pack("<II", start, fid))
    return btf, b"".join(recs)


KERNEL_VERIFIER_BUG = "verifier bug: No program to jit"


def run_stack_seeds(seeds, stacks: Stacks, size: int = 12):
    """Programs with bpf_loop callbacks through the full stack. Returns (count, mismatches,
    kernel_bug_seeds): seeds Linux refuses with "verifier bug: No program to jit" (seen with
    bpf_loop(0, ...), which the generator avoids) are still compared between interpreter and
    JIT and listed apart instead of counting as mismatches."""
    mismatches, kernel_bug = [], []
    seeds = list(seeds)
    for s in seeds:
        body = Generator(s, size, callbacks=True).program()
        mem = memory(s)
        res = stacks.run(body, mem)
        k = res.get("kernel")
        if k is not None and k.error and KERNEL_VERIFIER_BUG in k.error:
            kernel_bug.append(s)
            res = {n: o for n, o in res.items() if n != "kernel"}
        if len({o.key() for o in res.values()}) != 1 or any(o.error for o in res.values()):
            mismatches.append(Mismatch(s, body, mem, res))
    return len(seeds), mismatches, kernel_bug


def kernel_available() -> str | None:
    """None if the kernel can run the differential programs, else the reason."""
    if os.geteuid() != 0:
        return "needs root for BPF_PROG_LOAD / BPF_PROG_TEST_RUN"
    try:
        Kernel().close()
    except Exception as e:  # noqa: BLE001 - report any failure as the skip reason
        return f"kernel eBPF unavailable: {e}"
    return None


@dataclass
class Mismatch:
    seed: int
    body: bytes
    mem: bytes
    results: dict

    def describe(self) -> str:
        try:
            from ...asm import disasm, insn
            text = disasm.disassemble(insn.decode(self.body), addresses=True)
        except Exception:  # noqa: BLE001 - disassembly is only a convenience here
            text = self.body.hex()
        lines = [f"seed {self.seed}: engines disagree"]
        for k, o in self.results.items():
            lines.append(f"  {k}: r0={o.r0 if o.r0 is None else hex(o.r0)} "
                         f"mem={o.mem.hex() if o.mem else None} err={o.error}")
        lines.append(f"  initial mem={self.mem.hex()}")
        return "\n".join(lines) + "\n" + text


def run_seeds(seeds, kernel: Kernel | None = None, batch: int = 100, size: int = 40,
              helpers: bool = False):
    """Runs every seed on all engines; returns (count, mismatches). With `helpers`, programs
    also call the conformance suite's helpers and run on the interpreter and the JIT only."""
    if helpers:
        kernel = None
    mismatches = []
    seeds = list(seeds)
    for i in range(0, len(seeds), batch):
        chunk = seeds[i:i + batch]
        bodies = [Generator(s, size, helpers=helpers).program() for s in chunk]
        mems = [memory(s) for s in chunk]
        jits = run_jit_batch(bodies, mems, helpers)
        for s, body, mem, j in zip(chunk, bodies, mems, jits):
            res = {"interp": run_interp(body, mem, helpers), "jit": j}
            if kernel is not None:
                res["kernel"] = kernel.run(body, mem)
            keys = {o.key() for o in res.values()}
            if len(keys) != 1 or any(o.error for o in res.values()):
                mismatches.append(Mismatch(s, body, mem, res))
    return len(seeds), mismatches
