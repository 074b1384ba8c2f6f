/* The execution ABI shared by the interpreter (runtime/vm.c), the LLVM JIT
 * (pybpfc/backends/userspace/jit.py generates code against it), the helpers and maps
 * (runtime/helpers.c, runtime/maps.c) and the agent.
 *
 * Rules:
 *  - struct pbr_run's layout is ABI for JIT-generated code: only append fields at the end;
 *    the offsets are pinned by the _Static_asserts below and checked from Python.
 *  - Programs given to pbr_vm_exec / JIT code are "prepared": lddw with src_reg 1
 *    (BPF_PSEUDO_MAP_FD) carries in imm an index into run->maps; src_reg 2
 *    (BPF_PSEUDO_MAP_VALUE) carries the map index in imm and the byte offset in the next
 *    slot's imm (value = run->map_values[idx] + off); src_reg 4 (BPF_PSEUDO_FUNC) carries a
 *    relative instruction offset like a BPF-to-BPF call. Nothing process-specific is baked
 *    into the bytecode, so the same program (and JIT code) runs in any process mapping the
 *    store.
 */
#ifndef PYBPFC_VM_H
#define PYBPFC_VM_H

#include <stddef.h>
#include <stdint.h>

#define PBR_STACK_SIZE 512          /* per frame, as in the kernel */
#define PBR_MAX_CALL_DEPTH 8        /* frames, as in the kernel */
#define PBR_MAX_REGIONS 16
#define PBR_MAX_HELPERS 256         /* helper ids 0..255 index run->helpers */
#define PBR_DEFAULT_BUDGET 1000000ULL

/* run->status */
enum {
    PBR_OK = 0,          /* running / finished normally */
    PBR_EXIT = 1,        /* a helper asked to stop now with r0 = run->exit_value (unwind) */
    PBR_EFAULT = 2,      /* memory access outside every region */
    PBR_EBUDGET = 3,     /* instruction budget exhausted */
    PBR_EHELPER = 4,     /* unknown helper id or helper failure that must stop the program */
    PBR_EDEPTH = 5,      /* call depth exceeded */
    PBR_EINSN = 6,       /* invalid instruction reached (the verifier should have refused it) */
    PBR_EDIV = 7,        /* reserved (division by zero is defined by the ISA and never an error) */
};

enum { PBR_PERM_R = 1, PBR_PERM_W = 2, PBR_PERM_RW = 3 };

struct pbr_region {
    uint64_t start;  /* first byte */
    uint64_t end;    /* one past the last byte */
    uint32_t perm;   /* PBR_PERM_* */
    uint32_t _pad;
};

struct pbr_run;

/* Helpers take r1..r5 and the run; they return r0. */
typedef uint64_t (*pbr_helper_fn)(uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5,
                                  struct pbr_run *run);

/* Calls a BPF function value (from lddw src_reg=4) with five arguments: bpf_loop and other
 * callback helpers use this, so they work the same under the interpreter and the JIT. */
typedef uint64_t (*pbr_invoke_fn)(struct pbr_run *run, uint64_t func, uint64_t a1, uint64_t a2,
                                  uint64_t a3, uint64_t a4, uint64_t a5);

struct pbr_run {
    const pbr_helper_fn *helpers;  /*   0: PBR_MAX_HELPERS entries; NULL = unknown helper */
    void *helper_ctx;              /*   8: for helper implementations (store, program, cookie) */
    const uint64_t *maps;          /*  16: map handles, by prepared map index */
    const uint64_t *map_values;    /*  24: address of each map's value area (global data) */
    uint64_t budget;               /*  32: instructions (interpreter) / back-edges+calls (JIT) left */
    uint32_t status;               /*  40: PBR_* */
    uint32_t nregions;             /*  44 */
    uint64_t exit_value;           /*  48: r0 when status == PBR_EXIT */
    uint64_t fault_addr;           /*  56: address of the access that faulted */
    uint64_t fault_pc;             /*  64: instruction index that stopped the program */
    pbr_invoke_fn invoke;          /*  72: set by the engine running the program */
    void *engine;                  /*  80: private to that engine */
    uint64_t ctx;                  /*  88: the context pointer given in r1 */
    struct pbr_region regions[PBR_MAX_REGIONS]; /* 96: memory the program may touch besides
                                                   its own stack (ctx, packet, map values,
                                                   ring buffer records) */
};

_Static_assert(offsetof(struct pbr_run, helpers) == 0, "ABI");
_Static_assert(offsetof(struct pbr_run, budget) == 32, "ABI");
_Static_assert(offsetof(struct pbr_run, status) == 40, "ABI");
_Static_assert(offsetof(struct pbr_run, nregions) == 44, "ABI");
_Static_assert(offsetof(struct pbr_run, exit_value) == 48, "ABI");
_Static_assert(offsetof(struct pbr_run, invoke) == 72, "ABI");
_Static_assert(offsetof(struct pbr_run, regions) == 96, "ABI");

/* Adds a region; returns 0, or -1 when the table is full. Helpers that hand out memory
 * (map lookups, ringbuf_reserve) add the pointed-to object so later accesses pass. */
int pbr_add_region(struct pbr_run *run, uint64_t start, uint64_t len, uint32_t perm);

/* 1 if [addr, addr+size) lies inside one region with the permission, else 0.
 * The JIT calls this for accesses the verifier could not prove safe. */
int pbr_check_access(const struct pbr_run *run, uint64_t addr, uint64_t size, uint32_t perm);

/* Interpreter. `insns` is a prepared program of `n` 8-byte slots. r1 = ctx, r2 = ctx_len
 * (the conformance suite's convention; programs that ignore r2 are unaffected). Returns r0;
 * on a fault run->status says why (and the return value is 0). */
uint64_t pbr_vm_exec(const uint64_t *insns, uint32_t n, struct pbr_run *run, uint64_t ctx,
                     uint64_t ctx_len);

/* Entry of code made by the LLVM JIT (pybpfc/backends/userspace/jit.py): the contract of
 * pbr_vm_exec without the instruction array. The code is position independent; place it at a
 * page-aligned address (its constant pools are read with aligned loads). */
typedef uint64_t (*pbr_jit_fn)(struct pbr_run *run, uint64_t ctx, uint64_t ctx_len);

/* Static check run before any execution (interpreter or JIT). 0 if accepted; otherwise -1
 * and a message "insn N: ..." in err. `helper_ok[id]` != 0 for the helpers the environment
 * provides; nmaps = number of prepared map indices. */
int pbr_verify(const uint64_t *insns, uint32_t n, const uint8_t *helper_ok, uint32_t nmaps,
               char *err, size_t errlen);

#endif
