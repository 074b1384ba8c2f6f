"""LLVM JIT for the userspace runtime: prepared BPF bytecode -> LLVM IR -> x86-64 code.

The generated code has the interpreter's interface (runtime/include/pybpfc_vm.h):
``uint64_t entry(struct pbr_run *run, uint64_t ctx, uint64_t ctx_len)``, returns r0 and
reports faults through run->status exactly like ``pbr_vm_exec``. The code blob is position
independent and self-contained: helpers are reached through run->helpers[id], maps through
run->maps / run->map_values, memory checks are inline against run->regions; the object
LLVM emits is linked here into one blob (only PC-relative relocations between its own sections
are accepted), so it can be copied anywhere, e.g. into shared memory for another process.

Design (see docs/jit.md):
 - every BPF function (entry, BPF-to-BPF call targets, lddw src=4 callbacks) is an LLVM
   function with r0..r10 as allocas (mem2reg makes them SSA); like the interpreter, the
   entry allocates one 8 x 512-byte stack, registers it as a run region (so helpers can check
   stack pointers with pbr_check_access) and frame d ends 512*d bytes below its end;
 - stack accesses through r10 with a constant offset are proven at compile time, every other
   access is checked: a one-entry region cache (read / read-write) kept in locals, then the
   whole stack, then an out-of-line scan of run->regions that refills the cache;
   an access inside a range an earlier check of the same block proved through the same,
   unchanged register (with the permission) is not checked again;
 - the per-run JIT context (stack end, current depth) lives on the native stack of the entry
   function; run->engine points to it so run->invoke (set to this blob's invoke function)
   can call BPF callbacks for helpers such as bpf_loop;
 - with the program's map types (store runtime), bpf_map_lookup_elem on array and per-CPU
   array maps is inlined like the kernel's array_map_gen_lookup (value address from the map
   record the handle points to; per-CPU slot from rdpid);
 - the budget is decremented on back-edges and at function entries, in a local written back
   to run->budget around calls and on return;
 - TBAA tells LLVM that BPF memory never aliases run / JIT-context fields (true because every
   BPF access is checked against regions that do not include them), so loop-invariant loads
   of those fields can be hoisted.
"""
from __future__ import annotations

import io
import struct
import threading
import warnings
from dataclasses import dataclass, field

from ...errors import Error

PBR_STACK_SIZE = 512
PBR_MAX_CALL_DEPTH = 8
PBR_MAX_REGIONS = 16
PBR_MAX_HELPERS = 256
PBR_OK, PBR_EXIT, PBR_EFAULT, PBR_EBUDGET, PBR_EHELPER, PBR_EDEPTH, PBR_EINSN = range(7)
PBR_PERM_R, PBR_PERM_W, PBR_PERM_RW = 1, 2, 3

# struct pbr_run offsets (pinned by _Static_asserts in pybpfc_vm.h, checked in tests)
OFF_HELPERS, OFF_MAPS, OFF_MAP_VALUES, OFF_BUDGET = 0, 16, 24, 32
OFF_STATUS, OFF_NREGIONS, OFF_EXIT_VALUE, OFF_FAULT_ADDR, OFF_FAULT_PC = 40, 44, 48, 56, 64
OFF_INVOKE, OFF_ENGINE, OFF_CTX, OFF_REGIONS = 72, 80, 88, 96
REGION_SIZE = 24

# struct pbs_map (runtime/include/pybpfc_store.h; checked in tests): what an inlined array
# lookup reads from a map handle
MAP_OFF_TYPE, MAP_OFF_VALUE_SIZE, MAP_OFF_MAX_ENTRIES = 8, 16, 20
MAP_OFF_SELF_OFF, MAP_OFF_VALUE_STRIDE, MAP_OFF_NCPUS, MAP_OFF_VALUES_OFF = 104, 112, 116, 120
BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY = 2, 6
HELPER_MAP_LOOKUP_ELEM = 1
# a counted loop proven to run at most this many iterations per entry is charged its budget
# when it exits, not checked on every back-edge (see _FuncGen.counted_loops)
COUNTED_LOOP_MAX = 1 << 16
M64 = (1 << 64) - 1

# JIT context (private, i64 slots): current depth (for invoke), stack end
J_DEPTH = 0
J_STACK_END = 1
J_SLOTS = 2
EMPTY_LO, EMPTY_HI = 0, 0  # slow_check result "do not cache" (length 0)

CDEF = """
typedef uint64_t (*pbr_helper_fn)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, void *);
typedef uint64_t (*pbr_invoke_fn)(void *, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                                  uint64_t);
struct pbr_region { uint64_t start; uint64_t end; uint32_t perm; uint32_t _pad; };
struct pbr_run {
    const pbr_helper_fn *helpers; void *helper_ctx; const uint64_t *maps;
    const uint64_t *map_values; uint64_t budget; uint32_t status; uint32_t nregions;
    uint64_t exit_value; uint64_t fault_addr; uint64_t fault_pc; pbr_invoke_fn invoke;
    void *engine; uint64_t ctx; struct pbr_region regions[16];
};
typedef uint64_t (*pbr_jit_fn)(struct pbr_run *run, uint64_t ctx, uint64_t ctx_len);
void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);
int mprotect(void *addr, size_t len, int prot);
int munmap(void *addr, size_t length);
"""


class JitError(Error):
    """The JIT cannot translate this program (the interpreter still can)."""


_ffi = None
_libc = None


def ffi():
    """The cffi FFI with struct pbr_run and pbr_jit_fn declared (ABI mode, no compiler)."""
    global _ffi, _libc
    if _ffi is None:
        from cffi import FFI
        f = FFI()
        f.cdef(CDEF)
        _libc = f.dlopen(None)
        _ffi = f
    return _ffi


# ---------------------------------------------------------------- decoding

@dataclass
class _Insn:
    op: int
    dst: int
    src: int
    off: int
    imm: int


def _decode(insns: bytes) -> list[_Insn]:
    if len(insns) % 8:
        raise JitError(f"program length {len(insns)} is not a multiple of 8")
    out = []
    for i in range(0, len(insns), 8):
        op, regs, off, imm = struct.unpack_from("<BBhi", insns, i)
        out.append(_Insn(op, regs & 0xF, regs >> 4, off, imm))
    return out


# ---------------------------------------------------------------- LLVM setup

_llvm_lock = threading.Lock()
_tm = None


def _target_machine():
    global _tm
    import llvmlite.binding as llvm
    if _tm is None:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        target = llvm.Target.from_triple("x86_64-unknown-linux-gnu")
        # pic + small code model: all intra-blob references are RIP-relative
        _tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                           features=_host_features(),
                                           opt=3, reloc="pic", codemodel="small")
    return _tm


_features = None


def _host_features() -> str:
    global _features
    if _features is None:
        import llvmlite.binding as llvm
        llvm.initialize_native_target()
        _features = llvm.get_host_cpu_features().flatten()
    return _features


@dataclass
class JitCode:
    """Position-independent machine code: `code[entry:]` is
    ``uint64_t entry(struct pbr_run *, uint64_t ctx, uint64_t ctx_len)``. The blob must start
    at an address that is a multiple of `align` (constant pools are read with aligned vector
    loads); page-aligned placement always works."""
    code: bytes
    entry: int
    ir: str = field(default="", repr=False)
    align: int = 64


# ---------------------------------------------------------------- IR generation

class _Module:
    """One LLVM module; several programs can share it (batch compilation for tests)."""

    def __init__(self):
        import llvmlite.ir as ir
        self.mod = ir.Module(name="pybpfc_jit")
        self.mod.triple = "x86_64-unknown-linux-gnu"
        i64 = ir.IntType(64)
        root = self.mod.add_metadata([ir.MetaDataString(self.mod, "pybpfc jit tbaa")])
        t_bpf = self.mod.add_metadata([ir.MetaDataString(self.mod, "bpf memory"), root,
                                       ir.Constant(i64, 0)])
        t_meta = self.mod.add_metadata([ir.MetaDataString(self.mod, "runtime state"), root,
                                        ir.Constant(i64, 0)])
        self.tbaa_bpf = self.mod.add_metadata([t_bpf, t_bpf, ir.Constant(i64, 0)])
        self.tbaa_meta = self.mod.add_metadata([t_meta, t_meta, ir.Constant(i64, 0)])
        # program-independent helpers, shared by the programs of a batch
        self.slow_check = None
        self.no_invoke = None


class _Gen:
    def __init__(self, insns: list[_Insn], m: _Module | None = None, prefix: str = "",
                 map_types=None):
        import llvmlite.ir as ir
        self.ir = ir
        self.insns = insns
        self.map_types = list(map_types) if map_types is not None else None
        self.n = len(insns)
        self.i8, self.i16, self.i32, self.i64 = (ir.IntType(b) for b in (8, 16, 32, 64))
        self.i1 = ir.IntType(1)
        # llvmlite's IR layer may use typed pointers; LLVM reads them as opaque `ptr`
        self.ptr = self.i8.as_pointer()
        m = m or _Module()
        self.m = m
        self.prefix = prefix
        self.mod, self.tbaa_bpf, self.tbaa_meta = m.mod, m.tbaa_bpf, m.tbaa_meta
        self.helper_ty = ir.FunctionType(self.i64, [self.i64] * 5 + [self.ptr])
        # (run, jctx, depth, frame end, r1..r5)
        self.fn_ty = ir.FunctionType(self.i64, [self.ptr, self.ptr, self.i64, self.ptr] +
                                     [self.i64] * 5)
        self._find_functions()
        self.funcs = {}
        for s in self.starts:
            f = ir.Function(self.mod, self.fn_ty, name=f"{prefix}bpf_{s}")
            f.linkage = "internal"
            f.calling_convention = "fastcc"
            self.funcs[s] = f
        self._declare_slow_check()

    # -- structure

    def _find_functions(self):
        insns, n = self.insns, self.n
        self.lddw_second = set()
        self.callbacks = set()
        starts = {0}
        pc = 0
        while pc < n:
            ins = insns[pc]
            if ins.op == 0x18:
                if pc + 1 >= n:
                    raise JitError(f"insn {pc}: lddw without its second slot")
                self.lddw_second.add(pc + 1)
                if ins.src == 4:
                    t = self._target(pc, pc + 1 + ins.imm)
                    starts.add(t)
                    self.callbacks.add(t)
                pc += 2
                continue
            if ins.op == 0x85 and ins.src == 1:
                starts.add(self._target(pc, pc + 1 + ins.imm))
            pc += 1
        self.starts = sorted(starts)
        self.ends = {s: e for s, e in zip(self.starts, self.starts[1:] + [n])}

    def _target(self, pc, t):
        if not 0 <= t < self.n or t in self.lddw_second:
            raise JitError(f"insn {pc}: target {t} out of range")
        return t

    # -- small IR helpers

    def c64(self, v):
        return self.ir.Constant(self.i64, v & 0xFFFFFFFFFFFFFFFF)

    def c32(self, v):
        return self.ir.Constant(self.i32, v & 0xFFFFFFFF)

    def field_ptr(self, b, base, off, ty):
        """Typed pointer to base + off bytes (off: int or i64 value)."""
        p = base if base.type == self.ptr else b.bitcast(base, self.ptr)
        if not (isinstance(off, int) and off == 0):
            p = b.gep(p, [self.c64(off) if isinstance(off, int) else off])
        return b.bitcast(p, ty.as_pointer())

    def meta_load(self, b, base, off, ty=None):
        v = b.load(self.field_ptr(b, base, off, ty or self.i64))
        v.set_metadata("tbaa", self.tbaa_meta)
        return v

    def meta_store(self, b, val, base, off):
        s = b.store(val, self.field_ptr(b, base, off, val.type))
        s.set_metadata("tbaa", self.tbaa_meta)
        return s

    def cpu_id_insn(self):
        """'rdpid' / 'rdtscp' when the host can read its CPU number (Linux keeps it in
        IA32_TSC_AUX as node << 12 | cpu, what sched_getcpu's vDSO path reads), else None."""
        feats = _host_features()
        return "rdpid" if "+rdpid" in feats else "rdtscp" if "+rdtscp" in feats else None

    def cpu_id(self, b):
        """i32 number of the CPU running this code."""
        ir = self.ir
        if self.cpu_id_insn() == "rdpid":
            name, ty = "llvm.x86.rdpid", self.i32
        else:
            name, ty = "llvm.x86.rdtscp", ir.LiteralStructType([self.i64, self.i32])
        fn = self.mod.globals.get(name) or ir.Function(self.mod, ir.FunctionType(ty, []), name=name)
        v = b.call(fn, [])
        if ty is not self.i32:
            v = b.extract_value(v, 1)
        return b.and_(v, self.c32(0xFFF))

    # -- out-of-line checks

    def _declare_slow_check(self):
        if self.m.slow_check is not None:
            self.slow_check, self.check_ty = self.m.slow_check
            return
        self._build_slow_check()
        self.m.slow_check = (self.slow_check, self.check_ty)

    def _build_slow_check(self):
        """{i1 ok, i64 lo, i64 hi} slow_check(run, jctx, addr, size, perm): scans
        run->regions (the stack is one); lo/hi is the matching region for the caller's cache
        (empty when it cannot be cached)."""
        ir = self.ir
        self.check_ty = ir.LiteralStructType([self.i1, self.i64, self.i64])
        fty = ir.FunctionType(self.check_ty, [self.ptr, self.ptr, self.i64, self.i64, self.i32])
        f = ir.Function(self.mod, fty, name="slow_check")
        f.linkage = "internal"
        # cold and register-preserving: the hot path around it keeps its registers
        f.calling_convention = "preserve_mostcc"
        self.slow_check = f
        run, jctx, addr, size, perm = f.args
        b = ir.IRBuilder(f.append_basic_block("entry"))
        end = b.add(addr, size)
        no_wrap = b.icmp_unsigned(">=", end, addr)
        fl = f.append_basic_block
        reg_head, reg_body, reg_next, ok, bad, hit = (
            fl(x) for x in ("rh", "rb", "rn", "ok", "bad", "hit"))
        nreg = b.load(self.field_ptr(b, run, OFF_NREGIONS, self.i32))
        nreg = b.select(b.icmp_unsigned("<", nreg, self.c32(PBR_MAX_REGIONS)), nreg,
                        self.c32(PBR_MAX_REGIONS))  # never past the table, as in C
        b.cbranch(no_wrap, reg_head, bad)
        # regions 0 .. nregions-1: the oldest first (the context and packet the caller
        # passed, which most programs touch first; then map values, the stack, records
        # helpers added)
        b.position_at_end(reg_head)
        k = b.phi(self.i32)
        k.add_incoming(self.c32(0), f.entry_basic_block)
        b.cbranch(b.icmp_unsigned("<", k, nreg), reg_body, bad)
        b.position_at_end(reg_body)
        rbase = self.field_ptr(b, run, b.add(b.mul(b.zext(k, self.i64), self.c64(REGION_SIZE)),
                                             self.c64(OFF_REGIONS)), self.i8)
        rlo = b.load(self.field_ptr(b, rbase, 0, self.i64))
        rhi = b.load(self.field_ptr(b, rbase, 8, self.i64))
        rperm = b.load(self.field_ptr(b, rbase, 16, self.i32))
        inside = b.and_(b.icmp_unsigned(">=", addr, rlo), b.icmp_unsigned("<=", end, rhi))
        allowed = b.icmp_unsigned("==", b.and_(rperm, perm), perm)
        k.add_incoming(b.add(k, self.c32(1)), reg_next)
        b.cbranch(b.and_(inside, allowed), hit, reg_next)
        b.position_at_end(reg_next)
        b.branch(reg_head)
        b.position_at_end(hit)
        # cacheable: at least 8 bytes (keeps "a - lo <= len - size" exact), and for the
        # read-write cache only regions with both permissions
        cacheable = b.icmp_unsigned(">=", b.sub(rhi, rlo), self.c64(8))
        full = b.icmp_unsigned("==", b.and_(rperm, self.c32(3)), self.c32(3))
        do_cache = b.and_(cacheable, b.or_(full, b.icmp_unsigned("==", perm, self.c32(1))))
        res = ir.Constant(self.check_ty, [ir.Constant(self.i1, 1), self.c64(EMPTY_LO),
                                          self.c64(EMPTY_HI)])
        res = b.insert_value(res, b.select(do_cache, rlo, self.c64(EMPTY_LO)), 1)
        res = b.insert_value(res, b.select(do_cache, rhi, self.c64(EMPTY_HI)), 2)
        b.ret(res)
        b.position_at_end(ok)
        b.ret(ir.Constant(self.check_ty, [ir.Constant(self.i1, 1), self.c64(EMPTY_LO),
                                          self.c64(EMPTY_HI)]))
        b.position_at_end(bad)
        b.ret(ir.Constant(self.check_ty, [ir.Constant(self.i1, 0), self.c64(EMPTY_LO),
                                          self.c64(EMPTY_HI)]))

    # -- function bodies

    def build(self):
        for s in self.starts:
            _FuncGen(self, s, self.ends[s]).build()
        self._build_invoke()
        self._build_entry()
        return self.mod

    def _build_invoke(self):
        """uint64_t invoke(run, func, a1..a5): run->invoke for callback helpers; `func` is
        a function value from lddw src=4 (the callback's instruction index)."""
        ir = self.ir
        fty = ir.FunctionType(self.i64, [self.ptr, self.i64] + [self.i64] * 5)
        if not self.callbacks:  # no function values: any invoke is an invalid call
            if self.m.no_invoke is None:
                f = ir.Function(self.mod, fty, name="pbr_jit_no_invoke")
                f.linkage = "internal"
                b = ir.IRBuilder(f.append_basic_block("entry"))
                self.meta_store(b, self.c32(PBR_EINSN), f.args[0], OFF_STATUS)
                b.ret(self.c64(0))
                self.m.no_invoke = f
            self.invoke = self.m.no_invoke
            return
        f = ir.Function(self.mod, fty, name=f"{self.prefix}pbr_jit_invoke")
        f.linkage = "internal"
        self.invoke = f
        run, func, *args = f.args
        b = ir.IRBuilder(f.append_basic_block("entry"))
        with b.if_then(b.icmp_unsigned("!=", self.meta_load(b, run, OFF_STATUS, self.i32),
                                       self.c32(0)), likely=False):
            b.ret(self.c64(0))
        jctx = self.meta_load(b, run, OFF_ENGINE, self.ptr)
        old = self.meta_load(b, jctx, J_DEPTH * 8)
        depth = b.add(old, self.c64(1))
        stack_end = self.meta_load(b, jctx, J_STACK_END * 8, self.ptr)
        fp = b.gep(stack_end, [b.mul(depth, self.c64(-PBR_STACK_SIZE))])
        too_deep = b.icmp_unsigned(">=", depth, self.c64(PBR_MAX_CALL_DEPTH))
        with b.if_then(too_deep, likely=False):
            self.meta_store(b, self.c32(PBR_EDEPTH), run, OFF_STATUS)
            b.ret(self.c64(0))
        fail = f.append_basic_block("nofunc")
        done = f.append_basic_block("done")
        b2 = ir.IRBuilder(done)
        res = b2.phi(self.i64)
        self.meta_store(b2, old, jctx, J_DEPTH * 8)
        b2.ret(res)
        # if-chain, not a switch: a jump table would need data relocations
        for s in sorted(self.callbacks):
            nxt = f.append_basic_block(f"not_{s}")
            hitb = f.append_basic_block(f"call_{s}")
            b.cbranch(b.icmp_unsigned("==", func, self.c64(s)), hitb, nxt)
            b.position_at_end(hitb)
            r = b.call(self.funcs[s], [run, jctx, depth, fp] + list(args), cconv="fastcc")
            res.add_incoming(r, hitb)
            b.branch(done)
            b.position_at_end(nxt)
        b.branch(fail)
        b.position_at_end(fail)
        self.meta_store(b, self.c32(PBR_EINSN), run, OFF_STATUS)
        res.add_incoming(self.c64(0), fail)
        b.branch(done)

    def _build_entry(self):
        ir = self.ir
        fty = ir.FunctionType(self.i64, [self.ptr, self.i64, self.i64])
        f = ir.Function(self.mod, fty, name=f"{self.prefix}pbr_jit_entry")
        run, ctx, ctx_len = f.args
        b = ir.IRBuilder(f.append_basic_block("entry"))
        jctx = b.alloca(ir.ArrayType(self.i64, J_SLOTS))
        jctx.align = 16
        jctx = b.bitcast(jctx, self.ptr)
        nframes = PBR_STACK_SIZE * PBR_MAX_CALL_DEPTH
        stack = b.alloca(ir.ArrayType(self.i8, nframes))
        stack.align = 16
        stack = b.bitcast(stack, self.ptr)
        stack_end = b.gep(stack, [self.c64(nframes)])
        # frame 0 starts zeroed, as in the interpreter (no stale native stack bytes are
        # visible); one vector store, so no memset call appears in the code
        vt = ir.VectorType(self.i64, PBR_STACK_SIZE // 8)
        top = b.bitcast(b.gep(stack, [self.c64(nframes - PBR_STACK_SIZE)]), vt.as_pointer())
        z = b.store(ir.Constant(vt, None), top, align=16)
        z.set_metadata("tbaa", self.tbaa_bpf)
        self.meta_store(b, self.c64(0), jctx, J_DEPTH * 8)
        self.meta_store(b, stack_end, jctx, J_STACK_END * 8)
        self.meta_store(b, self.c32(PBR_OK), run, OFF_STATUS)
        self.meta_store(b, ctx, run, OFF_CTX)
        # the stack is a region for this run, like the interpreter's; regions helpers add
        # during the run are dropped with it
        nreg = self.meta_load(b, run, OFF_NREGIONS, self.i32)
        with b.if_then(b.icmp_unsigned("<", nreg, self.c32(PBR_MAX_REGIONS))):
            rb = self.field_ptr(b, run, b.add(b.mul(b.zext(nreg, self.i64),
                                                    self.c64(REGION_SIZE)),
                                              self.c64(OFF_REGIONS)), self.i8)
            self.meta_store(b, b.ptrtoint(stack, self.i64), rb, 0)
            self.meta_store(b, b.ptrtoint(stack_end, self.i64), rb, 8)
            self.meta_store(b, self.c64(PBR_PERM_RW), rb, 16)
            self.meta_store(b, b.add(nreg, self.c32(1)), run, OFF_NREGIONS)
        self.meta_store(b, jctx, run, OFF_ENGINE)
        self.meta_store(b, self.invoke, run, OFF_INVOKE)
        r = b.call(self.funcs[0], [run, jctx, self.c64(0), stack_end, ctx, ctx_len,
                                   self.c64(0), self.c64(0), self.c64(0)], cconv="fastcc")
        self.meta_store(b, nreg, run, OFF_NREGIONS)
        self.meta_store(b, ir.Constant(self.ptr, None), run, OFF_ENGINE)
        st = self.meta_load(b, run, OFF_STATUS, self.i32)
        is_exit = b.icmp_unsigned("==", st, self.c32(PBR_EXIT))
        ev = self.meta_load(b, run, OFF_EXIT_VALUE)
        b.ret(b.select(is_exit, ev, r))


class _FuncGen:
    """One BPF function [start, end) -> one LLVM function."""

    def __init__(self, g: _Gen, start: int, end: int):
        self.g, self.start, self.end = g, start, end
        self.f = g.funcs[start]
        self.ir = g.ir

    def build(self):
        g, ir = self.g, self.ir
        f = self.f
        self.run, self.jctx, self.depth, self.frame, *args = f.args
        self.fault_bb = None
        entry = f.append_basic_block("entry")
        b = self.b = ir.IRBuilder(entry)
        self.regs = [b.alloca(g.i64, name=f"r{i}") for i in range(11)]
        for i in range(11):
            b.store(g.c64(0), self.regs[i])
        for i, a in enumerate(args):
            b.store(a, self.regs[i + 1])
        self.fhi = b.ptrtoint(self.frame, g.i64)
        b.store(self.fhi, self.regs[10])
        # the whole 8-frame stack (one region, as in the interpreter)
        self.stack_lo = b.sub(b.add(self.fhi, b.mul(self.depth, g.c64(PBR_STACK_SIZE))),
                              g.c64(PBR_STACK_SIZE * PBR_MAX_CALL_DEPTH))
        # budget and region caches live in locals (registers after mem2reg); the budget is
        # written back to run->budget around calls and on return
        self.bud = b.alloca(g.i64, name="budget")
        b.store(g.meta_load(b, self.run, OFF_BUDGET), self.bud)
        # region caches for reads and for read-writes as (lo, len - 8): one compare for every
        # access size, then the exact one for accesses under 8 bytes near the end; "empty"
        # is the stack itself, so a cache entry is always memory the program may touch
        self.cache = [b.alloca(g.i64, name=n) for n in ("c_r_lo", "c_r_lim", "c_w_lo", "c_w_lim")]
        self.reset_cache()
        # basic blocks start at jump targets and after jumps
        self.blocks = {}
        for pc in sorted(self.leaders()):
            if self.start <= pc < self.end and pc not in g.lddw_second:
                self.blocks[pc] = f.append_basic_block(f"pc{pc}")
        # reg -> [(off, end, perm)]: ranges [reg+off, reg+end) proven inside one region earlier
        # in this BPF basic block (regions change only in calls, which clear it)
        self.checked = {}
        # reg -> prepared map index: the register holds run->maps[index] (lddw src=1 earlier in
        # this BPF basic block, register unchanged since)
        self.map_reg = {}
        # back-edge pc -> header pc of the counted loops; pc -> its loop's back-edge pc
        self.counted = self.counted_loops()
        self.in_loop = {pc: j for j, t in self.counted.items() for pc in range(t, j + 1)}
        self.b0 = {j: b.alloca(g.i64, name=f"budget_at_{t}") for j, t in self.counted.items()}
        self.loop_head = {t: j for j, t in self.counted.items()}
        self.budget_tick(self.start)
        b.branch(self.blocks[self.start])
        pc = self.start
        open_block = False
        while pc < self.end:
            if pc in g.lddw_second:
                pc += 1
                continue
            if pc in self.blocks:
                if open_block:
                    if pc in self.loop_head:  # the only way in: remember the budget
                        b.store(b.load(self.bud), self.b0[self.loop_head[pc]])
                    b.branch(self.blocks[pc])
                b.position_at_end(self.blocks[pc])
                if not self.only_fallthrough(pc):
                    self.checked, self.map_reg = {}, {}
            elif not open_block:
                b.position_at_end(f.append_basic_block(f"dead{pc}"))  # unreachable code
                self.checked, self.map_reg = {}, {}
            nxt = self.insn(pc)
            open_block = nxt is not None
            pc += 2 if pc + 1 in g.lddw_second else 1
        if open_block:  # falls off the end of the function
            self.fault(PBR_EINSN, self.end - 1)

    def only_fallthrough(self, pc):
        """pc's only predecessor is the conditional jump before it (nothing jumps to pc), so
        what that block proved still holds."""
        if pc - 1 < self.start or pc - 1 in self.g.lddw_second or pc in self.targets:
            return False
        ins = self.g.insns[pc - 1]
        return ins.op & 7 in (0x05, 0x06) and ins.op & 0xF0 not in (0x00, 0x80, 0x90)

    @staticmethod
    def _step(state, ins):
        """Symbolic effect of one non-jump instruction on {reg: (base, off)}: the register
        holds base's value at the loop header + off (base None: the constant off), mod 2^64.
        Returns False for instructions a counted loop may not contain."""
        cls, op = ins.op & 7, ins.op & 0xF0
        if ins.op == 0x18:
            state.pop(ins.dst, None)
            return True  # (lddw constants are not needed for loop bounds)
        if cls == 0x07 and op in (0xB0, 0x00, 0x10) and not (op == 0xB0 and ins.off):
            if ins.op & 0x08:
                v = state.get(ins.src)
                if op != 0xB0:
                    v = None if v is None or v[0] is not None else v[1]
            else:
                v = ins.imm & M64 if op != 0xB0 else (None, ins.imm & M64)
            d = state.get(ins.dst)
            if op == 0xB0:
                res = v
            elif v is None or d is None:
                res = None
            else:
                res = (d[0], (d[1] + (v if op == 0x00 else -v)) & M64)
            if res is None:
                state.pop(ins.dst, None)
            else:
                state[ins.dst] = res
            return True
        if cls in (0x04, 0x07) or (cls == 0x01 and ins.op & 0xE0 in (0x60, 0x80)):
            state.pop(ins.dst, None)  # other ALU ops, loads
            return True
        if cls == 0x02 or (cls == 0x03 and ins.op & 0xE0 == 0x60):
            return True  # stores
        if cls == 0x03 and ins.op & 0xE0 == 0xC0:  # atomics: fetch forms write a register
            state.pop(0 if ins.imm == 0xF1 else ins.src, None)
            return True
        return False

    def counted_loops(self):
        """{back-edge pc: header pc} of loops whose iteration count per entry is at most
        COUNTED_LOOP_MAX, by this proof: the body [t, j] is straight-line (nothing jumps into
        (t, j], nothing but the back-edge at j jumps to t, which is entered only by falling
        through from t - 1; no calls, no exits; inner jumps leave the loop); the 64-bit
        conditional back-edge compares an induction variable (a register whose only change per
        iteration is + c, c constant) with a constant; and either `iv + off < K` (or <=)
        unsigned with 0 < c (any start: at most ceil(K / c) + 1 iterations, no wrap-around as
        K + c <= 2^64), or `iv + off != K` with the start known from the straight-line code
        before the loop and the distance to K, counting up or down, a multiple of |c|."""
        g, insns = self.g, self.g.insns
        jumps_to = {}
        for pc in range(self.start, self.end):
            ins = insns[pc]
            if pc in g.lddw_second or ins.op & 7 not in (0x05, 0x06):
                continue
            op = ins.op & 0xF0
            if op in (0x80, 0x90):
                continue
            tgt = pc + 1 + (ins.imm if op == 0x00 and ins.op & 7 == 0x06 else ins.off)
            jumps_to.setdefault(tgt, []).append(pc)
        out = {}
        for j in range(self.start, self.end):
            ins = insns[j]
            if j in g.lddw_second or ins.op & 7 != 0x05 or ins.op & 0xF0 in (0x00, 0x80, 0x90):
                continue
            t = j + 1 + ins.off
            if not self.start < t <= j or jumps_to.get(t) != [j]:
                continue
            bound = self._loop_bound(t, j, jumps_to)
            if bound is not None and bound <= COUNTED_LOOP_MAX:
                out[j] = t
        return out

    def _loop_bound(self, t, j, jumps_to):
        g, insns = self.g, self.g.insns
        prev = t - 2 if t - 1 in g.lddw_second else t - 1
        if prev < self.start or insns[prev].op & 7 in (0x05, 0x06) and \
                insns[prev].op & 0xF0 != 0x80:
            return None  # t - 1 must fall through into the loop
        if any(pc in jumps_to for pc in range(t + 1, j + 1)):
            return None  # entered elsewhere than at t
        state = {r: (r, 0) for r in range(11)}
        for pc in range(t, j):
            if pc in g.lddw_second:
                continue
            ins = insns[pc]
            if ins.op & 7 in (0x05, 0x06):
                op = ins.op & 0xF0
                if op in (0x80, 0x90):
                    return None
                tgt = pc + 1 + (ins.imm if op == 0x00 and ins.op & 7 == 0x06 else ins.off)
                if t <= tgt <= j:
                    return None
                continue
            if not self._step(state, ins):
                return None
        # constants known when the loop is entered: the straight-line code before it
        pre, start = {}, max(p for p in self.blocks if p < t) if any(p < t for p in self.blocks) \
            else self.start
        for pc in range(start, t):
            if pc in g.lddw_second:
                continue
            ins = insns[pc]
            if ins.op & 7 in (0x05, 0x06):
                if ins.op & 0xF0 == 0x80:
                    pre.pop(0, None)
                    for r in range(1, 6):
                        pre.pop(r, None)
                continue
            if not self._step(pre, ins):
                return None
        pre = {r: v[1] for r, v in pre.items() if v[0] is None}

        def value(v):  # (iv, step, off) or ("const", K) or None
            if v is None:
                return None
            base, off = v
            if base is None:
                return ("const", off)
            step = state.get(base)
            if step is None or step[0] != base:
                return None
            if step[1] == 0:
                return ("const", (pre[base] + off) & M64) if base in pre else None
            return (base, step[1], off)

        ins = insns[j]
        a = value(state.get(ins.dst))
        b = value(state.get(ins.src) if ins.op & 0x08 else (None, ins.imm & M64))
        rel = {0x10: "==", 0x20: ">", 0x30: ">=", 0x50: "!=", 0xA0: "<", 0xB0: "<="}.get(
            ins.op & 0xF0)
        if a is None or b is None or rel is None:
            return None
        if a[0] == "const" and b[0] != "const":
            a, b = b, a
            rel = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "!=": "!=", "==": "=="}[rel]
        if a[0] == "const" or b[0] != "const":
            return None
        iv, c, off = a
        k = b[1]
        if rel == "<=" and k < M64:
            rel, k = "<", k + 1
        if rel == "<" and 0 < c < 1 << 32 and k + c <= 1 << 64:
            return -(-k // c) + 1
        if rel == "!=" and iv in pre:
            # counting up or down to k: the distance must be a multiple of the step
            n, step = ((k - pre[iv] - off) & M64, c) if c < 1 << 32 else \
                ((pre[iv] + off - k) & M64, -c & M64)
            if 0 < step < 1 << 32 and n % step == 0:
                return n // step + 1
        return None

    def leaders(self):
        out = {self.start}
        self.targets = {self.start}
        for pc in range(self.start, self.end):
            ins = self.g.insns[pc]
            if pc in self.g.lddw_second or ins.op & 7 not in (0x05, 0x06):
                continue
            op = ins.op & 0xF0
            if op == 0x80:
                continue
            out.add(pc + 1)
            if op == 0x00:
                self.targets.add(pc + 1 + (ins.imm if ins.op & 7 == 0x06 else ins.off))
            elif op != 0x90:
                self.targets.add(pc + 1 + ins.off)
        return out | self.targets

    # -- registers

    def get(self, r):
        return self.b.load(self.regs[r])

    def set(self, r, v):
        if r == 10:
            raise JitError("r10 is read-only")
        if v.type != self.g.i64:
            v = self.b.zext(v, self.g.i64)
        self.b.store(v, self.regs[r])
        self.checked.pop(r, None)
        self.map_reg.pop(r, None)

    # -- exits

    def reset_cache(self):
        stack_len = self.g.c64(PBR_STACK_SIZE * PBR_MAX_CALL_DEPTH - 8)
        for a, v in zip(self.cache, (self.stack_lo, stack_len, self.stack_lo, stack_len)):
            self.b.store(v, a)

    def budget_out(self, b=None):
        b = b or self.b
        self.g.meta_store(b, b.load(self.bud), self.run, OFF_BUDGET)

    def before_call(self):
        self.budget_out()
        self.checked = {}

    def after_call(self):
        """Helpers may change regions and spend budget (callbacks)."""
        self.b.store(self.g.meta_load(self.b, self.run, OFF_BUDGET), self.bud)
        self.reset_cache()

    def fault(self, status, pc, addr=None):
        """Ends the current block with a jump to the function's one shared fault exit."""
        g, b = self.g, self.b
        if self.fault_bb is None:
            self.fault_bb = self.f.append_basic_block("fault")
            fb = self.ir.IRBuilder(self.fault_bb)
            self.fphi = (fb.phi(g.i32), fb.phi(g.i64), fb.phi(g.i64))
            st, fpc, faddr = self.fphi
            self.budget_out(fb)
            g.meta_store(fb, st, self.run, OFF_STATUS)
            g.meta_store(fb, fpc, self.run, OFF_FAULT_PC)
            with fb.if_then(fb.icmp_unsigned("==", st, g.c32(PBR_EFAULT))):
                g.meta_store(fb, faddr, self.run, OFF_FAULT_ADDR)
            fb.ret(g.c64(0))
        here = b.block
        for phi, v in zip(self.fphi, (g.c32(status), g.c64(pc),
                                      addr if addr is not None else g.c64(0))):
            phi.add_incoming(v, here)
        b.branch(self.fault_bb)

    def bail_if(self, cond, status, pc, addr=None):
        """Stop with `status` when cond holds; continues in a fresh block."""
        b = self.b
        bad = self.f.append_basic_block()
        cont = self.f.append_basic_block()
        b.cbranch(cond, bad, cont).set_weights([1, 1000])
        b.position_at_end(bad)
        self.fault(status, pc, addr)
        b.position_at_end(cont)

    def propagate(self):
        """After a call: stop (returning 0) when the callee set a status."""
        g, b = self.g, self.b
        st = g.meta_load(b, self.run, OFF_STATUS, g.i32)
        bad = self.f.append_basic_block()
        cont = self.f.append_basic_block()
        br = b.cbranch(b.icmp_unsigned("!=", st, g.c32(0)), bad, cont)
        br.set_weights([1, 1000])
        b.position_at_end(bad)
        b.ret(g.c64(0))
        b.position_at_end(cont)

    def budget_tick(self, pc):
        g, b = self.g, self.b
        left = b.load(self.bud)
        self.bail_if(b.icmp_unsigned("==", left, g.c64(0)), PBR_EBUDGET, pc)
        b.store(b.sub(left, g.c64(1)), self.bud)

    # -- memory

    def address(self, pc, reg, off, size, perm, ty):
        """Pointer for [reg+off, +size) after proving or checking it."""
        g, b = self.g, self.b
        if reg == 10:
            at = PBR_STACK_SIZE + off
            if 0 <= at and at + size <= PBR_STACK_SIZE:
                return g.field_ptr(b, self.frame, off, ty)
        addr = b.add(self.get(reg), g.c64(off))
        # an earlier check in this block covers it: same register value, range inside a range
        # already proven to lie in one region with the permission (so no wrap-around either)
        done = self.checked.setdefault(reg, [])
        if any(lo <= off and off + size <= hi and p & perm == perm for lo, hi, p in done):
            return b.inttoptr(addr, ty.as_pointer())
        done.append((off, off + size, perm))
        f = self.f
        ok, c_stack, c_slow, bad = (f.append_basic_block() for _ in range(4))
        # 1. the region cache (packet, map values: hot in loops)
        lo_a, len_a = self.cache[0:2] if perm == PBR_PERM_R else self.cache[2:4]
        clo, clen = b.load(lo_a), b.load(len_a)
        rel = b.sub(addr, clo)
        in_cache = b.icmp_unsigned("<=", rel, clen)
        if size < 8:
            # the exact test for this size: [addr, addr + size) lies in [lo, lo + len) iff
            # addr - lo <= len - size (unsigned; len >= 8 > size); off the hot path, so byte
            # loops running to a region's end still take no slow scan for its last 7 bytes
            c_tail = f.append_basic_block()
            b.cbranch(in_cache, ok, c_tail).set_weights([1000, 1])
            b.position_at_end(c_tail)
            in_cache = b.icmp_unsigned("<=", rel, b.add(clen, g.c64(8 - size)))
        b.cbranch(in_cache, ok, c_stack).set_weights([1000, 1])
        # 2. the stack: one compare
        b.position_at_end(c_stack)
        in_stack = b.icmp_unsigned("<=", b.sub(addr, self.stack_lo),
                                   g.c64(PBR_STACK_SIZE * PBR_MAX_CALL_DEPTH - size))
        b.cbranch(in_stack, ok, c_slow)
        # 3. scan run->regions
        b.position_at_end(c_slow)
        r = b.call(g.slow_check, [self.run, self.jctx, addr, g.c64(size), g.c32(perm)],
                   cconv="preserve_mostcc")
        rlo, rhi = b.extract_value(r, 1), b.extract_value(r, 2)
        rlen = b.sub(rhi, rlo)
        cacheable = b.icmp_unsigned(">=", rlen, g.c64(8))
        b.store(b.select(cacheable, rlo, self.stack_lo), lo_a)
        b.store(b.select(cacheable, b.sub(rlen, g.c64(8)),
                         g.c64(PBR_STACK_SIZE * PBR_MAX_CALL_DEPTH - 8)), len_a)
        b.cbranch(b.extract_value(r, 0), ok, bad).set_weights([1000, 1])
        b.position_at_end(bad)
        self.fault(PBR_EFAULT, pc, addr)
        b.position_at_end(ok)
        return b.inttoptr(addr, ty.as_pointer())

    def load(self, p, ty):
        v = self.b.load(p, align=1)
        v.set_metadata("tbaa", self.g.tbaa_bpf)
        return v

    def store(self, v, p):
        s = self.b.store(v, p, align=1)
        s.set_metadata("tbaa", self.g.tbaa_bpf)

    # -- one instruction; returns the fall-through pc or None

    def insn(self, pc):
        g, b, ins = self.g, self.b, self.g.insns[pc]
        op = ins.op
        cls = op & 7
        if cls in (0x04, 0x07):
            self.alu(pc, ins, cls == 0x07)
            return pc + 1
        if cls in (0x05, 0x06):
            return self.jmp(pc, ins, cls == 0x06)
        sizes = {0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8}
        size = sizes[op & 0x18]
        ty = self.ir.IntType(size * 8)
        mode = op & 0xE0
        if op == 0x18:
            return self.lddw(pc, ins)
        if cls == 0x01 and mode in (0x60, 0x80):
            p = self.address(pc, ins.src, ins.off, size, PBR_PERM_R, ty)
            v = self.load(p, ty)
            if size == 8:
                self.set(ins.dst, v)
            elif mode == 0x80:
                self.set(ins.dst, b.sext(v, g.i64))
            else:
                self.set(ins.dst, b.zext(v, g.i64))
            return pc + 1
        if cls == 0x02 and mode == 0x60:
            p = self.address(pc, ins.dst, ins.off, size, PBR_PERM_W, ty)
            self.store(self.ir.Constant(ty, ins.imm & ((1 << (size * 8)) - 1)), p)
            return pc + 1
        if cls == 0x03 and mode == 0x60:
            p = self.address(pc, ins.dst, ins.off, size, PBR_PERM_W, ty)
            v = self.get(ins.src)
            self.store(v if size == 8 else b.trunc(v, ty), p)
            return pc + 1
        if cls == 0x03 and mode == 0xC0 and size in (4, 8):
            self.atomic(pc, ins, size, ty)
            return pc + 1
        raise JitError(f"insn {pc}: unsupported opcode {op:#04x}")

    def lddw(self, pc, ins):
        g, b = self.g, self.b
        hi = g.insns[pc + 1].imm
        if ins.src == 0:
            self.set(ins.dst, g.c64((ins.imm & 0xFFFFFFFF) | ((hi & 0xFFFFFFFF) << 32)))
        elif ins.src in (1, 2):
            table = g.meta_load(b, self.run, OFF_MAPS if ins.src == 1 else OFF_MAP_VALUES,
                                g.ptr)
            v = b.load(g.field_ptr(b, table, ins.imm * 8, g.i64))
            v.set_metadata("tbaa", g.tbaa_meta)
            if ins.src == 2:
                v = b.add(v, g.c64(hi))
            self.set(ins.dst, v)
            if ins.src == 1:
                self.map_reg[ins.dst] = ins.imm
        elif ins.src == 4:
            self.set(ins.dst, g.c64(pc + 1 + ins.imm))
        else:
            raise JitError(f"insn {pc}: unsupported lddw src_reg {ins.src}")
        return pc + 2

    def atomic(self, pc, ins, size, ty):
        g, b = self.g, self.b
        p = self.address(pc, ins.dst, ins.off, size, PBR_PERM_RW, ty)
        src = self.get(ins.src)
        val = src if size == 8 else b.trunc(src, ty)
        ops = {0x00: "add", 0x40: "or", 0x50: "and", 0xA0: "xor"}
        imm = ins.imm
        if imm == 0xF1:
            expected = self.get(0)
            if size == 4:
                expected = b.trunc(expected, ty)
            res = b.cmpxchg(p, expected, val, "seq_cst", "seq_cst")
            self.set(0, b.extract_value(res, 0))
        elif imm == 0xE1:
            self.set(ins.src, b.atomic_rmw("xchg", p, val, "seq_cst"))
        elif imm & ~1 in ops:
            old = b.atomic_rmw(ops[imm & ~1], p, val, "seq_cst")
            if imm & 1:
                self.set(ins.src, old)
        else:
            raise JitError(f"insn {pc}: unsupported atomic operation {imm:#x}")

    def alu(self, pc, ins, is64):
        g, b, ir = self.g, self.b, self.ir
        op = ins.op & 0xF0
        ty = g.i64 if is64 else g.i32
        bits = 64 if is64 else 32

        def narrow(v):
            return v if is64 else b.trunc(v, g.i32)

        if op == 0xD0:  # byte swaps
            v = self.get(ins.dst)
            width = ins.imm
            if width not in (16, 32, 64):
                raise JitError(f"insn {pc}: bad byte swap width {width}")
            wt = ir.IntType(width)
            x = v if width == 64 else b.trunc(v, wt)
            swap = is64 or (ins.op & 0x08)  # bswap, or to-big-endian on this LE host
            if swap and width > 8:
                x = b.call(self.bswap(wt), [x])
            self.set(ins.dst, x)
            return
        if ins.op & 0x08:
            src = narrow(self.get(ins.src))
        else:
            src = ir.Constant(ty, ins.imm & ((1 << bits) - 1))
        if op == 0xB0:  # mov / movsx
            if ins.off in (8, 16, 32) and (ins.op & 0x08):
                src = b.sext(b.trunc(src, ir.IntType(ins.off)), ty)
            elif ins.off:
                raise JitError(f"insn {pc}: bad mov offset {ins.off}")
            self.set(ins.dst, src)
            return
        dst = narrow(self.get(ins.dst))
        if op == 0x00:
            r = b.add(dst, src)
        elif op == 0x10:
            r = b.sub(dst, src)
        elif op == 0x20:
            r = b.mul(dst, src)
        elif op in (0x30, 0x90):
            r = self.divmod(dst, src, ty, op == 0x90, ins.off == 1, pc, ins.off)
        elif op == 0x40:
            r = b.or_(dst, src)
        elif op == 0x50:
            r = b.and_(dst, src)
        elif op in (0x60, 0x70, 0xC0):
            amt = b.and_(src, ir.Constant(ty, bits - 1))
            r = {0x60: b.shl, 0x70: b.lshr, 0xC0: b.ashr}[op](dst, amt)
        elif op == 0x80:
            r = b.neg(dst)
        elif op == 0xA0:
            r = b.xor(dst, src)
        else:
            raise JitError(f"insn {pc}: unsupported ALU opcode {ins.op:#04x}")
        self.set(ins.dst, r)

    def divmod(self, a, d, ty, is_mod, signed, pc, off):
        """RFC 9669: x/0 = 0, x%0 = x; signed INT_MIN/-1 = INT_MIN, INT_MIN%-1 = 0."""
        b, ir = self.b, self.ir
        if off not in (0, 1):
            raise JitError(f"insn {pc}: bad div/mod offset {off}")
        zero = ir.Constant(ty, 0)
        one = ir.Constant(ty, 1)
        is_zero = b.icmp_unsigned("==", d, zero)
        if not signed:
            safe = b.select(is_zero, one, d)
            if is_mod:
                return b.select(is_zero, a, b.urem(a, safe))
            return b.select(is_zero, zero, b.udiv(a, safe))
        minus1 = b.icmp_signed("==", d, ir.Constant(ty, -1))
        safe = b.select(b.or_(is_zero, minus1), one, d)
        if is_mod:
            r = b.srem(a, safe)
            r = b.select(minus1, zero, r)
            return b.select(is_zero, a, r)
        r = b.sdiv(a, safe)
        r = b.select(minus1, b.neg(a), r)
        return b.select(is_zero, zero, r)

    def bswap(self, wt):
        name = f"llvm.bswap.i{wt.width}"
        if name in self.g.mod.globals:
            return self.g.mod.globals[name]
        return self.ir.Function(self.g.mod, self.ir.FunctionType(wt, [wt]), name=name)

    def jmp(self, pc, ins, is32):
        g, b, ir = self.g, self.b, self.ir
        op = ins.op & 0xF0
        if op == 0x90:  # exit
            self.budget_out()
            b.ret(self.get(0))
            return None
        if op == 0x80:
            self.call(pc, ins)
            return pc + 1
        if op == 0x00:  # ja / gotol (JMP32 class: 32-bit offset in imm)
            tgt = pc + 1 + (ins.imm if is32 else ins.off)
            self.goto(pc, tgt)
            return None
        tgt = pc + 1 + ins.off
        ty = g.i32 if is32 else g.i64
        a = self.get(ins.dst)
        if is32:
            a = b.trunc(a, g.i32)
        if ins.op & 0x08:
            c = self.get(ins.src)
            if is32:
                c = b.trunc(c, g.i32)
        else:
            c = ir.Constant(ty, ins.imm & ((1 << ty.width) - 1))
        conds = {0x10: ("u", "=="), 0x20: ("u", ">"), 0x30: ("u", ">="), 0x50: ("u", "!="),
                 0x60: ("s", ">"), 0x70: ("s", ">="), 0xA0: ("u", "<"), 0xB0: ("u", "<="),
                 0xC0: ("s", "<"), 0xD0: ("s", "<=")}
        if op == 0x40:
            cond = b.icmp_unsigned("!=", b.and_(a, c), ir.Constant(ty, 0))
        elif op in conds:
            kind, rel = conds[op]
            cond = (b.icmp_unsigned if kind == "u" else b.icmp_signed)(rel, a, c)
        else:
            raise JitError(f"insn {pc}: unsupported jump opcode {ins.op:#04x}")
        self.check_target(pc, pc + 1)
        if tgt > pc:
            self.check_target(pc, tgt)
            b.cbranch(cond, self.exit_edge(pc, tgt), self.exit_edge(pc, pc + 1))
            return None
        taken = self.f.append_basic_block()
        b.cbranch(cond, taken, self.exit_edge(pc, pc + 1))
        b.position_at_end(taken)
        self.goto(pc, tgt)
        return None

    def check_target(self, pc, t):
        if t not in self.blocks:
            raise JitError(f"insn {pc}: jump to {t} leaves the function "
                           f"[{self.start}, {self.end})")
        return t

    def goto(self, pc, t):
        self.check_target(pc, t)
        if self.counted.get(pc) == t:  # counted loop: charged when it exits
            b = self.b
            b.store(b.sub(b.load(self.bud), self.g.c64(1)), self.bud)
            b.branch(self.blocks[t])
            return
        self.loop_exit_check(pc, t)
        if t <= pc:  # back-edge: spend budget so endless loops stop
            self.budget_tick(pc)
        self.b.branch(self.blocks[t])

    def loop_exit_check(self, pc, t):
        """On an edge from pc (inside a counted loop) to t (outside it): stop with
        PBR_EBUDGET at the back-edge when the iterations since the loop was entered took more
        budget than there was (the local wrapped below zero: budget > its value at entry)."""
        j = self.in_loop.get(pc)
        if j is None or self.counted[j] <= t <= j:
            return
        b = self.b
        self.bail_if(b.icmp_unsigned(">", b.load(self.bud), b.load(self.b0[j])), PBR_EBUDGET, j)

    def exit_edge(self, pc, t):
        """The block to branch to for the edge pc -> t (a check block when it leaves a
        counted loop)."""
        j = self.in_loop.get(pc)
        if j is None or self.counted[j] <= t <= j:
            return self.blocks[t]
        here = self.b.block
        blk = self.f.append_basic_block()
        self.b.position_at_end(blk)
        self.loop_exit_check(pc, t)
        self.b.branch(self.blocks[t])
        self.b.position_at_end(here)
        return blk

    def call(self, pc, ins):
        g, b = self.g, self.b
        if ins.src == 1:  # BPF-to-BPF
            tgt = pc + 1 + ins.imm
            depth = b.add(self.depth, g.c64(1))
            self.bail_if(b.icmp_unsigned(">=", depth, g.c64(PBR_MAX_CALL_DEPTH)),
                         PBR_EDEPTH, pc)
            fp = b.gep(self.frame, [g.c64(-PBR_STACK_SIZE)])
            self.before_call()
            r = b.call(g.funcs[tgt], [self.run, self.jctx, depth, fp] +
                       [self.get(i) for i in range(1, 6)], cconv="fastcc")
            self.propagate()
            self.after_call()
            self.set(0, r)
            return
        if ins.src == 0 and not (ins.op & 0x08) and ins.imm == HELPER_MAP_LOOKUP_ELEM:
            mtype = self.inlinable_map(self.map_reg.get(1))
            if mtype is not None:
                self.inline_array_lookup(pc, ins, mtype)
                return
        self.set(0, self.helper_call(pc, ins))

    def helper_call(self, pc, ins):
        """r0 = run->helpers[id](r1..r5, run); stops on a status the helper set."""
        g, b = self.g, self.b
        if ins.src == 0 and not (ins.op & 0x08):
            if not 0 <= ins.imm < PBR_MAX_HELPERS:
                self.fault(PBR_EHELPER, pc)
                b.position_at_end(self.f.append_basic_block())  # unreachable rest
                return g.c64(0)
            idx = g.c64(ins.imm)
        elif ins.op & 0x08:  # callx: helper id in dst (conformance suite)
            idx = self.get(ins.dst)
            self.bail_if(b.icmp_unsigned(">=", idx, g.c64(PBR_MAX_HELPERS)), PBR_EHELPER, pc)
        else:
            raise JitError(f"insn {pc}: unsupported call kind src={ins.src}")
        table = g.meta_load(b, self.run, OFF_HELPERS, g.ptr)
        fp = b.load(g.field_ptr(b, table, b.mul(idx, g.c64(8)), g.helper_ty.as_pointer()))
        fp.set_metadata("tbaa", g.tbaa_meta)
        self.bail_if(b.icmp_unsigned("==", b.ptrtoint(fp, g.i64), g.c64(0)), PBR_EHELPER, pc)
        g.meta_store(b, self.depth, self.jctx, J_DEPTH * 8)
        g.meta_store(b, g.c64(pc), self.run, OFF_FAULT_PC)  # a faulting callback overwrites it
        self.before_call()
        r = b.call(fp, [self.get(i) for i in range(1, 6)] + [self.run])
        self.after_call()
        st = g.meta_load(b, self.run, OFF_STATUS, g.i32)
        bad = self.f.append_basic_block()
        cont = self.f.append_basic_block()
        b.cbranch(b.icmp_unsigned("!=", st, g.c32(0)), bad, cont).set_weights([1, 1000])
        b.position_at_end(bad)
        # PBR_EXIT unwinds with run->exit_value (the entry returns it)
        b.ret(g.c64(0))
        b.position_at_end(cont)
        return r

    def inlinable_map(self, idx):
        """The map type when `call map_lookup_elem` with r1 = run->maps[idx] can be inlined."""
        types = self.g.map_types
        if idx is None or types is None or not 0 <= idx < len(types):
            return None
        t = types[idx]
        if t == BPF_MAP_TYPE_ARRAY or (t == BPF_MAP_TYPE_PERCPU_ARRAY and self.g.cpu_id_insn()):
            return t
        return None

    def inline_array_lookup(self, pc, ins, mtype):
        """bpf_map_lookup_elem on an array / per-CPU array map without the helper call, as the
        kernel's array_map_gen_lookup: the key is read with a checked load (a bad key pointer
        faults at this pc like the helper's check), an index past max_entries gives NULL, the
        value address comes from the map record the handle points to. The handle is checked
        at run time (non-NULL, of this type); anything else takes the helper call."""
        g, b, ir = self.g, self.b, self.ir
        f = self.f
        m = self.get(1)
        mp = b.inttoptr(m, g.ptr)
        is_map, fast, slow, merge = (f.append_basic_block() for _ in range(4))
        b.cbranch(b.icmp_unsigned("!=", m, g.c64(0)), is_map, slow).set_weights([1000, 1])
        b.position_at_end(is_map)
        mt = g.meta_load(b, mp, MAP_OFF_TYPE, g.i32)
        b.cbranch(b.icmp_unsigned("==", mt, g.c32(mtype)), fast, slow).set_weights([1000, 1])
        b.position_at_end(fast)
        key = self.load(self.address(pc, 2, 0, 4, PBR_PERM_R, g.i32), g.i32)
        in_range = b.icmp_unsigned("<", key, g.meta_load(b, mp, MAP_OFF_MAX_ENTRIES, g.i32))
        # values(m) = store base + values_off = m - self_off + values_off
        base = b.add(b.sub(m, g.meta_load(b, mp, MAP_OFF_SELF_OFF)),
                     g.meta_load(b, mp, MAP_OFF_VALUES_OFF))
        stride = b.zext(g.meta_load(b, mp, MAP_OFF_VALUE_STRIDE, g.i32), g.i64)
        v = b.add(base, b.mul(b.zext(key, g.i64), stride))
        if mtype == BPF_MAP_TYPE_PERCPU_ARRAY:
            # the slot of this CPU, as the helper's this_cpu(): sched_getcpu() % ncpus
            cpu = g.cpu_id(b)
            n = g.meta_load(b, mp, MAP_OFF_NCPUS, g.i32)
            wrap, cont = f.append_basic_block(), f.append_basic_block()
            here = b.block
            b.cbranch(b.icmp_unsigned("<", cpu, n), cont, wrap).set_weights([1000, 1])
            b.position_at_end(wrap)
            safe_n = b.select(b.icmp_unsigned("==", n, g.c32(0)), g.c32(1), n)
            wrapped = b.urem(cpu, safe_n)
            b.branch(cont)
            b.position_at_end(cont)
            slot = b.phi(g.i32)
            slot.add_incoming(cpu, here)
            slot.add_incoming(wrapped, wrap)
            vs = b.zext(g.meta_load(b, mp, MAP_OFF_VALUE_SIZE, g.i32), g.i64)
            vs8 = b.and_(b.add(vs, g.c64(7)), g.c64(~7))
            v = b.add(v, b.mul(b.zext(slot, g.i64), vs8))
        r_fast = b.select(in_range, v, g.c64(0))
        fast_end = b.block
        b.branch(merge)
        b.position_at_end(slow)
        r_slow = self.helper_call(pc, ins)
        slow_end = b.block
        b.branch(merge)
        b.position_at_end(merge)
        r = b.phi(g.i64)
        r.add_incoming(r_fast, fast_end)
        r.add_incoming(r_slow, slow_end)
        self.checked = {}  # the helper path may have changed regions
        self.set(0, r)


# ---------------------------------------------------------------- object -> blob

_FN_ATTRS = ('attributes #90 = { nounwind "no-jump-tables"="true" "no-builtins" '
             '"frame-pointer"="none" }\n'
             'attributes #91 = { cold noinline nounwind "no-jump-tables"="true" "no-builtins" '
             '"frame-pointer"="none" }')


def _add_attrs(ir_text: str) -> str:
    out = []
    for line in ir_text.splitlines():
        if line.startswith("define "):  # llvmlite puts the opening brace on the next line
            group = "#91" if '@"slow_check"' in line else "#90"
            line = line.rstrip()
            if line.endswith("{"):
                line = line[:-1].rstrip() + f" {group} {{"
            else:
                line += f" {group}"
        out.append(line)
    out.append(_FN_ATTRS)
    return "\n".join(out) + "\n"


def _link(obj: bytes, entry_names: list[str]) -> tuple[bytes, list[int], int]:
    """Lays out the object's allocated sections in one blob and applies its relocations,
    accepting only PC-relative ones between those sections (no absolute addresses, no
    external symbols), so the blob runs at any address."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection
    elf = ELFFile(io.BytesIO(obj))
    layout, blob, max_align = {}, bytearray(), 16
    for idx, sec in enumerate(elf.iter_sections()):
        if sec["sh_flags"] & 0x2 and sec["sh_type"] in ("SHT_PROGBITS", "SHT_NOBITS") \
                and sec["sh_size"]:
            align = max(sec["sh_addralign"], 1)
            max_align = max(max_align, align)
            blob.extend(b"\0" * (-len(blob) % align))
            layout[idx] = len(blob)
            data = sec.data() if sec["sh_type"] == "SHT_PROGBITS" else b"\0" * sec["sh_size"]
            blob.extend(data)
    symtab = elf.get_section_by_name(".symtab")
    where = {}
    for sym in symtab.iter_symbols():
        if sym.name in entry_names:
            where[sym.name] = layout[sym["st_shndx"]] + sym["st_value"]
    if len(where) != len(entry_names):
        raise JitError("entry symbol missing from the object")
    for sec in elf.iter_sections():
        if not isinstance(sec, RelocationSection):
            continue
        target = sec["sh_info"]
        if target not in layout:
            continue  # debug info etc.
        for rel in sec.iter_relocations():
            sym = symtab.get_symbol(rel["r_info_sym"])
            rtype = rel["r_info_type"]
            shndx = sym["st_shndx"]
            if not isinstance(shndx, int) or shndx not in layout:
                raise JitError(f"generated code refers to external symbol {sym.name!r}")
            if rtype not in (2, 4):  # R_X86_64_PC32, R_X86_64_PLT32
                raise JitError(f"generated code needs relocation type {rtype} "
                               f"(not position independent)")
            s = layout[shndx] + sym["st_value"]
            p = layout[target] + rel["r_offset"]
            v = s + rel["r_addend"] - p
            if not -2**31 <= v < 2**31:
                raise JitError("relocation out of range")
            struct.pack_into("<i", blob, p, v)
    return bytes(blob), [where[n] for n in entry_names], max_align


def jit_compile(insns: bytes, opt: int = 3, map_types=None) -> JitCode:
    """Compiles a verified, prepared program (8-byte slots) to position-independent x86-64
    code. Raises JitError when it cannot (the caller falls back to the interpreter).

    `map_types`: the BPF map type of each prepared map index, given only when the code will
    run on the store runtime (run->maps holds `struct pbs_map` records, helper 1 is its
    map_lookup_elem): lookups in array and per-CPU array maps are then inlined."""
    return jit_compile_many([insns], opt, [map_types])[0]


def jit_compile_many(progs: list[bytes], opt: int = 3, map_types=None) -> list[JitCode]:
    """Compiles several programs in one LLVM module (cheaper per program); each JitCode holds
    the shared blob with its own entry offset. One untranslatable program fails the batch.
    `map_types`: None or one entry (None or a list, see jit_compile) per program."""
    import llvmlite.binding as llvm
    m = _Module()
    names = []
    if map_types is None:
        map_types = [None] * len(progs)
    for k, insns in enumerate(progs):
        decoded = _decode(bytes(insns))
        if not decoded:
            raise JitError("empty program")
        prefix = f"p{k}_" if len(progs) > 1 else ""
        try:
            _Gen(decoded, m, prefix, map_types[k]).build()
        except JitError:
            raise
        except Exception as e:  # noqa: BLE001 - malformed fields the verifier refuses
            raise JitError(f"cannot translate program: {type(e).__name__}: {e}") from None
        names.append(f"{prefix}pbr_jit_entry")
    text = _add_attrs(str(m.mod))
    with _llvm_lock:
        tm = _target_machine()
        try:
            mod = llvm.parse_assembly(text)
            mod.verify()
            mod.data_layout = str(tm.target_data)
        except RuntimeError as e:
            raise JitError(f"LLVM rejected the generated IR: {e}") from None
        pto = llvm.create_pipeline_tuning_options(speed_level=opt)
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
        obj = tm.emit_object(mod)
    code, entries, align = _link(obj, names)
    if align > 4096:
        raise JitError(f"generated code needs {align}-byte alignment")
    return [JitCode(code, e, text if len(progs) == 1 else "", align) for e in entries]


class JitProgram:
    """JIT code placed in executable memory of this process (mmap RW, copy, mprotect RX)."""

    PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
    MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20

    def __init__(self, code: JitCode):
        f = ffi()
        self.code = code
        self.size = max(len(code.code), 1)
        mem = _libc.mmap(f.NULL, self.size, self.PROT_READ | self.PROT_WRITE,
                         self.MAP_PRIVATE | self.MAP_ANONYMOUS, -1, 0)
        if int(f.cast("intptr_t", mem)) == -1:
            raise JitError("mmap of executable memory failed")
        f.memmove(mem, code.code, len(code.code))
        if _libc.mprotect(mem, self.size, self.PROT_READ | self.PROT_EXEC) != 0:
            _libc.munmap(mem, self.size)
            raise JitError("mprotect(PROT_EXEC) failed")
        self._mem = mem
        self.address = int(f.cast("uintptr_t", mem)) + code.entry
        #: cffi function pointer `pbr_jit_fn` (also usable from C through `address`)
        self.fn = f.cast("pbr_jit_fn", self.address)

    def run(self, run, ctx: int, ctx_len: int) -> int:
        """Runs once; `run` is a `struct pbr_run *` (cdata of any FFI, or an address)."""
        f = ffi()
        if not isinstance(run, int):
            run = int(f.cast("uintptr_t", run))
        return self.fn(f.cast("struct pbr_run *", run), ctx, ctx_len)

    def close(self):
        if self._mem is not None:
            self.fn = None
            _libc.munmap(self._mem, self.size)
            self._mem = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def try_jit(insns: bytes, name: str = "") -> JitProgram | None:
    """JIT-compiles, or warns and returns None so the caller uses the interpreter."""
    try:
        return JitProgram(jit_compile(insns))
    except Exception as e:  # noqa: BLE001 - any JIT failure leaves the interpreter
        warnings.warn(f"prog '{name}': JIT unavailable, using the interpreter: {e}",
                      RuntimeWarning, stacklevel=2)
        return None


def jit_vm(insns, **kw):
    """Like ``vm.Vm(insns, ...)`` (same helpers/maps/regions/budget handling and errors) but
    each call runs the JIT code."""
    from . import vm as _vm

    class JitVm(_vm.Vm):
        def __init__(self, insns, **kw):
            super().__init__(insns, **kw)
            self.jit = JitProgram(jit_compile(_vm._slots(insns)))

        _engine_note = " (jit)"

        def _exec(self, run, ctx, ctx_len):
            return self.jit.run(run, ctx, ctx_len)

    return JitVm(insns, **kw)
