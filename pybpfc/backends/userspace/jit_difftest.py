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
        return sum(1 if isinstance(c, tuple) else len(c) // 8 for c in self.code)


class Generator:
    """Deterministic random program generator (seeded)."""

    def __init__(self, seed: int, size: int = 40, nfuncs: int | None = None,
                 helpers: bool = False):
        self.r = random.Random(seed)
        self.size = size
        self.nfuncs = nfuncs
        # conformance-suite helpers (userspace only: the kernel has none of them)
        self.helpers = helpers

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
            base, off = 9, r.randrange(0, MEM - size + 1)
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
        stack = r.random() < 0.3
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
        off = r.randrange(0, MEM - size + 1, size)
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

    def function(self, idx: int, ncallees: int, size: int):
        """Groups of function idx; may call functions idx+1 .. idx+ncallees."""
        r = self.r
        groups = []
        pro = [I(0xBF, 9, 1)]
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
        groups.append(_Group([I(0x95)]))
        # branches: a conditional or unconditional forward jump before some groups
        branches = {}
        for gi in range(1, len(groups) - 1):
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
        for fi in range(nf):
            size = self.size if fi == 0 else max(6, self.size // 3)
            funcs.append(self.function(fi, nf - 1 - fi if fi < 2 else 0, size))
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
                    if isinstance(c, tuple):
                        out.append(I(0x85, 0, 1, 0, starts[c[1]] - at - 1))
                        at += 1
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
        """XDP main: r1 = &mem_map[0]; r0 = body(r1, 64); res_map[0] = r0; return XDP_PASS."""
        def lookup(fd):  # 6 slots; r0 = value pointer or NULL
            return [I(0x62, 10, 0, -4, 0), I(0xBF, 2, 10), I(0x07, 2, 0, 0, -4),
                    lddw(1, fd, src=1), I(0x85, 0, 0, 0, 1)]
        OUT, BODY = 20, 22
        w = lookup(self.mem_fd)                                  # 0..5
        w.append(I(0x15, 0, 0, OUT - 6 - 1, 0))                  # 6: if r0 == 0 goto out
        w += [I(0xBF, 1, 0), I(0xB7, 2, 0, 0, MEM)]              # 7, 8
        w.append(I(0x85, 0, 1, 0, BODY - 9 - 1))                 # 9: call body
        w.append(I(0xBF, 6, 0))                                  # 10
        w += lookup(self.res_fd)                                 # 11..16
        w.append(I(0x15, 0, 0, OUT - 17 - 1, 0))                 # 17
        w += [I(0x7B, 0, 6, 0), I(0x05, 0, 0, 0)]                # 18, 19
        w += [I(0xB7, 0, 0, 0, 2), I(0x95)]                      # 20 (out), 21
        assert sum(len(c) // 8 for c in w) == BODY
        return w

    def run(self, body: bytes, mem: bytes) -> Outcome:
        import ctypes
        sc, uapi = self.sc, self.uapi
        code = b"".join(self.wrapper()) + body
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
