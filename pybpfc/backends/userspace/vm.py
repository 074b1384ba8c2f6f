"""cffi (ABI mode) wrapper of the interpreter, verifier and regions of libpybpfc_runtime.so.

    from pybpfc.backends.userspace.vm import run_program, verify
    r0 = run_program(assemble("mov %r0, 7\\nexit"))

`Vm` keeps a `struct pbr_run` with a helper table, regions and a budget between runs;
`run_program` is the one-shot form. Faults raise pybpfc.errors.RuntimeFault naming the reason
and the instruction; refused programs raise pybpfc.errors.VerifierError ("insn N: ...").
"""
from __future__ import annotations

import inspect
from typing import Callable, Iterable, NamedTuple

from ...errors import RuntimeFault, VerifierError
from .runtime import ffi, lib  # one FFI for the whole runtime library

CDEF = """
typedef uint64_t (*pbr_helper_fn)(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4,
                                  uint64_t r5, struct pbr_run *run);
typedef uint64_t (*pbr_invoke_fn)(struct pbr_run *run, uint64_t func, uint64_t a1,
                                  uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5);
struct pbr_region { uint64_t start; uint64_t end; uint32_t perm; uint32_t _pad; };
struct pbr_run {
    const pbr_helper_fn *helpers;
    void *helper_ctx;
    const uint64_t *maps;
    const uint64_t *map_values;
    uint64_t budget;
    uint32_t status;
    uint32_t nregions;
    uint64_t exit_value;
    uint64_t fault_addr;
    uint64_t fault_pc;
    pbr_invoke_fn invoke;
    void *engine;
    uint64_t ctx;
    struct pbr_region regions[16];
};
int pbr_add_region(struct pbr_run *run, uint64_t start, uint64_t len, uint32_t perm);
int pbr_check_access(const struct pbr_run *run, uint64_t addr, uint64_t size, uint32_t perm);
uint64_t pbr_vm_exec(const uint64_t *insns, uint32_t n, struct pbr_run *run, uint64_t ctx,
                     uint64_t ctx_len);
int pbr_verify(const uint64_t *insns, uint32_t n, const uint8_t *helper_ok, uint32_t nmaps,
               char *err, size_t errlen);
const pbr_helper_fn *pbr_conformance_helpers(void);
uint64_t pbr_vm_exec_repeat(const uint64_t *insns, uint32_t n, struct pbr_run *run,
                            uint64_t ctx, uint64_t ctx_len, uint64_t repeat, uint64_t *ns);
"""

# pybpfc_vm.h
PBR_OK, PBR_EXIT, PBR_EFAULT, PBR_EBUDGET, PBR_EHELPER, PBR_EDEPTH, PBR_EINSN, PBR_EDIV = range(8)
PBR_PERM_R, PBR_PERM_W, PBR_PERM_RW = 1, 2, 3
PBR_MAX_HELPERS = 256
PBR_MAX_REGIONS = 16
PBR_DEFAULT_BUDGET = 1_000_000

REASONS = {
    PBR_EFAULT: "memory access outside the stack and every region",
    PBR_EBUDGET: "instruction budget exhausted",
    PBR_EHELPER: "unknown helper or helper failure",
    PBR_EDEPTH: "call depth exceeded",
    PBR_EINSN: "invalid instruction reached",
    PBR_EDIV: "division error",
}

CONFORMANCE_HELPER_IDS = frozenset(range(6))



def _slots(insns) -> bytes:
    if isinstance(insns, (bytes, bytearray, memoryview)):
        data = bytes(insns)
    else:
        data = b"".join(i.encode() for i in insns)
    if len(data) % 8:
        raise ValueError(f"program length {len(data)} is not a multiple of 8")
    return data


def _prog_buf(insns):
    data = _slots(insns)
    n = len(data) // 8
    buf = ffi().new("uint64_t[]", max(n, 1))
    ffi().memmove(buf, data, len(data))
    return buf, n


class Helpers(NamedTuple):
    """A helper table usable by any engine: `pointer` (cffi `pbr_helper_fn *` of this module's
    FFI), `address` (the same as an int, for another FFI or generated code), `ids`."""
    pointer: object
    address: int
    ids: frozenset


def conformance_helpers() -> Helpers:
    """The conformance suite's helpers 0..5, implemented in C (runtime/conformance_helpers.c)."""
    p = lib().pbr_conformance_helpers()
    return Helpers(p, int(ffi().cast("uintptr_t", p)), CONFORMANCE_HELPER_IDS)


def verify(insns, helper_ok: Iterable[int] = (), nmaps: int = 0, name: str = "prog") -> None:
    """Runs the static verifier; raises VerifierError("prog 'name': insn N: ...")."""
    buf, n = _prog_buf(insns)
    ok = ffi().new("uint8_t[]", PBR_MAX_HELPERS)
    for i in helper_ok:
        if 0 <= i < PBR_MAX_HELPERS:
            ok[i] = 1
    err = ffi().new("char[]", 512)
    if lib().pbr_verify(buf, n, ok, nmaps, err, 512) != 0:
        msg = ffi().string(err).decode(errors="replace")
        raise VerifierError(f"prog '{name}': {msg}")


class Vm:
    """A program ready to run on the interpreter, with its helpers, maps and budget.

    helpers: a Helpers table, or {id: python callable(r1..r5) -> int} (cffi callbacks; slow),
    or None. maps / map_values: sequences of u64 for prepared lddw (src 1 / 2).
    """

    def __init__(self, insns, *, helpers=None, maps=(), map_values=(),
                 budget: int = PBR_DEFAULT_BUDGET, verify_first: bool = True, name: str = "prog"):
        f = ffi()
        self.name = name
        self.insns, self.n = _prog_buf(insns)
        self.run = f.new("struct pbr_run *")
        self._keep = []
        ids: set = set()
        if isinstance(helpers, Helpers):
            self.run.helpers = f.cast("pbr_helper_fn *", helpers.address)
            ids = set(helpers.ids)
        elif helpers:
            table = f.new("pbr_helper_fn[]", PBR_MAX_HELPERS)
            for hid, fn in helpers.items():
                table[hid] = self._callback(fn)
                ids.add(hid)
            self._keep.append(table)
            self.run.helpers = table
        self.helper_ids = frozenset(ids)
        # no maps: NULL tables, so an (unverified) map lddw stops the program, never reads
        # past a table
        self._maps = f.new("uint64_t[]", list(maps)) if maps else f.NULL
        self._values = f.new("uint64_t[]", list(map_values)) if map_values else f.NULL
        self.run.maps, self.run.map_values = self._maps, self._values
        self.budget = budget
        self.nmaps = max(len(maps), len(map_values))
        if verify_first:
            verify(insns, self.helper_ids, self.nmaps, name)
        self._base_regions = 0

    def _callback(self, fn: Callable):
        """fn(r1, r2, r3, r4, r5) -> r0, or fn(r1, ..., r5, run) to reach the run (invoke)."""
        f = ffi()
        try:
            with_run = len(inspect.signature(fn).parameters) >= 6
        except (TypeError, ValueError):
            with_run = False

        def tramp(r1, r2, r3, r4, r5, run):
            if with_run:
                return fn(r1, r2, r3, r4, r5, run) & 0xFFFFFFFFFFFFFFFF
            return fn(r1, r2, r3, r4, r5) & 0xFFFFFFFFFFFFFFFF

        cb = f.callback("pbr_helper_fn", tramp, onerror=self._helper_error)
        self._keep.append(cb)
        return cb

    def _helper_error(self, exc, val, tb):
        self._pending = exc(val) if val is None else val
        # a Python helper that raised stops the program (PBR_EHELPER), re-raised after the run
        self._cur_run.status = PBR_EHELPER
        return 0

    def add_region(self, start: int, length: int, perm: int = PBR_PERM_RW) -> None:
        """Memory every run may touch (kept across runs)."""
        if lib().pbr_add_region(self.run, start, length, perm) != 0:
            raise RuntimeFault(f"prog '{self.name}': region table full ({PBR_MAX_REGIONS})")
        self._base_regions = self.run.nregions

    def bench(self, repeat: int, ctx: int = 0, ctx_len: int = 0) -> tuple[int, float]:
        """Runs `repeat` times in C (like BPF_PROG_TEST_RUN repeat): (r0, ns per run).
        ctx must lie in a region added with add_region (or be unused)."""
        f = ffi()
        run = self.run
        run.nregions = self._base_regions
        run.status = PBR_OK
        run.budget = self.budget
        ns = f.new("uint64_t *")
        r0 = lib().pbr_vm_exec_repeat(self.insns, self.n, run, ctx, ctx_len, repeat, ns)
        if run.status not in (PBR_OK, PBR_EXIT):
            raise RuntimeFault(f"prog '{self.name}': {REASONS.get(run.status)} at insn "
                               f"{run.fault_pc}")
        return r0, ns[0] / max(repeat, 1)

    _engine_note = ""  # appended to fault messages by engines other than the interpreter

    def _exec(self, run, ctx: int, ctx_len: int) -> int:
        return lib().pbr_vm_exec(self.insns, self.n, run, ctx, ctx_len)

    def __call__(self, mem=b"", ctx: int | None = None, ctx_len: int | None = None) -> int:
        """Runs once. `mem` (bytes or bytearray) becomes a read-write region passed in r1 with
        its length in r2; a bytearray receives the program's writes."""
        f = ffi()
        run = self.run
        run.nregions = self._base_regions
        run.status = PBR_OK
        run.budget = self.budget
        self._pending = None
        self._cur_run = run
        buf = None
        if ctx is None:
            size = len(mem)
            buf = f.new("uint8_t[]", max(size, 1))
            f.memmove(buf, bytes(mem), size)
            ctx = int(f.cast("uintptr_t", buf)) if size else 0
            ctx_len = size
            if size:
                lib().pbr_add_region(run, ctx, size, PBR_PERM_RW)
        r0 = self._exec(run, ctx, ctx_len or 0)
        if buf is not None and isinstance(mem, bytearray) and len(mem):
            mem[:] = f.buffer(buf, len(mem))
        if self._pending is not None:
            raise self._pending
        st = run.status
        if st in (PBR_OK, PBR_EXIT):
            return r0
        where = f"insn {run.fault_pc}{self._engine_note}"
        msg = f"prog '{self.name}': {REASONS.get(st, f'status {st}')} at {where}"
        if st == PBR_EFAULT:
            msg += f" (address {run.fault_addr:#x})"
        e = RuntimeFault(msg)
        e.status, e.pc, e.addr = st, run.fault_pc, run.fault_addr
        raise e


def run_program(insns, mem=b"", helpers=None, *, maps=(), map_values=(),
                budget: int = PBR_DEFAULT_BUDGET, verify_first: bool = True,
                name: str = "prog") -> int:
    """Verifies and runs `insns` once on the interpreter; returns r0."""
    return Vm(insns, helpers=helpers, maps=maps, map_values=map_values, budget=budget,
              verify_first=verify_first, name=name)(mem)
