/* BPF interpreter (RFC 9669) over the raw 8-byte slots of a prepared program.
 *
 * Dispatch is a computed goto on the opcode byte, so the raw encoding needs no separate
 * decoding pass. Every load, store and atomic is checked against the live stack frames and
 * run->regions; a bad access, an invalid slot, an exhausted budget or a too-deep call stops the
 * program with run->status set, never with a crash. */
#include <string.h>

#include "pybpfc_vm.h"

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

struct vm {
    const uint64_t *insns;
    uint32_t n;
    struct pbr_run *run;
    uint8_t *stack;      /* PBR_MAX_CALL_DEPTH frames; frame d ends at stack_end - d*512 */
    uint8_t *stack_end;
    int depth;           /* frame running when a helper was called (for invoke) */
    uint32_t stack_region; /* index in run->regions; empty except during helper calls */
};

struct frame {
    uint32_t ret_pc;
    uint64_t r6, r7, r8, r9;
};

static uint64_t vm_invoke(struct pbr_run *run, uint64_t func, uint64_t a1, uint64_t a2,
                          uint64_t a3, uint64_t a4, uint64_t a5);

/* pbr_check_access, inlined here and returning the region for the caches */
static inline const struct pbr_region *find_region(const struct pbr_run *run, uint64_t addr,
                                                   uint64_t size, uint32_t perm)
{
    uint64_t end = addr + size;
    if (end < addr)
        return NULL;
    uint32_t n = run->nregions < PBR_MAX_REGIONS ? run->nregions : PBR_MAX_REGIONS;
    for (uint32_t i = 0; i < n; i++) {
        const struct pbr_region *r = &run->regions[i];
        if (addr >= r->start && end <= r->end && (r->perm & perm) == perm)
            return r;
    }
    return NULL;
}

static inline uint16_t bswap16(uint16_t x) { return __builtin_bswap16(x); }
static inline uint32_t bswap32(uint32_t x) { return __builtin_bswap32(x); }
static inline uint64_t bswap64(uint64_t x) { return __builtin_bswap64(x); }

/* Runs from `pc` in frame `depth` until that frame exits; regs[1..5] are the arguments. */
static uint64_t interp(struct vm *vm, uint32_t pc, uint64_t *args, int depth)
{
    static const void *const tbl[256] = {
        [0 ... 255] = &&op_invalid,
#define ALU_ENTRIES(C, P)                                                                      \
        [C | 0x00 | 0x00] = &&P##_add_k, [C | 0x00 | 0x08] = &&P##_add_x,                      \
        [C | 0x10 | 0x00] = &&P##_sub_k, [C | 0x10 | 0x08] = &&P##_sub_x,                      \
        [C | 0x20 | 0x00] = &&P##_mul_k, [C | 0x20 | 0x08] = &&P##_mul_x,                      \
        [C | 0x30 | 0x00] = &&P##_div_k, [C | 0x30 | 0x08] = &&P##_div_x,                      \
        [C | 0x40 | 0x00] = &&P##_or_k,  [C | 0x40 | 0x08] = &&P##_or_x,                       \
        [C | 0x50 | 0x00] = &&P##_and_k, [C | 0x50 | 0x08] = &&P##_and_x,                      \
        [C | 0x60 | 0x00] = &&P##_lsh_k, [C | 0x60 | 0x08] = &&P##_lsh_x,                      \
        [C | 0x70 | 0x00] = &&P##_rsh_k, [C | 0x70 | 0x08] = &&P##_rsh_x,                      \
        [C | 0x80 | 0x00] = &&P##_neg,                                                         \
        [C | 0x90 | 0x00] = &&P##_mod_k, [C | 0x90 | 0x08] = &&P##_mod_x,                      \
        [C | 0xa0 | 0x00] = &&P##_xor_k, [C | 0xa0 | 0x08] = &&P##_xor_x,                      \
        [C | 0xb0 | 0x00] = &&P##_mov_k, [C | 0xb0 | 0x08] = &&P##_mov_x,                      \
        [C | 0xc0 | 0x00] = &&P##_arsh_k, [C | 0xc0 | 0x08] = &&P##_arsh_x
        ALU_ENTRIES(0x07, a64),
        ALU_ENTRIES(0x04, a32),
        [0xd4] = &&op_le, [0xdc] = &&op_be, [0xd7] = &&op_bswap,
#define JMP_ENTRIES(C, P)                                                                      \
        [C | 0x10 | 0x00] = &&P##_jeq_k,  [C | 0x10 | 0x08] = &&P##_jeq_x,                     \
        [C | 0x20 | 0x00] = &&P##_jgt_k,  [C | 0x20 | 0x08] = &&P##_jgt_x,                     \
        [C | 0x30 | 0x00] = &&P##_jge_k,  [C | 0x30 | 0x08] = &&P##_jge_x,                     \
        [C | 0x40 | 0x00] = &&P##_jset_k, [C | 0x40 | 0x08] = &&P##_jset_x,                    \
        [C | 0x50 | 0x00] = &&P##_jne_k,  [C | 0x50 | 0x08] = &&P##_jne_x,                     \
        [C | 0x60 | 0x00] = &&P##_jsgt_k, [C | 0x60 | 0x08] = &&P##_jsgt_x,                    \
        [C | 0x70 | 0x00] = &&P##_jsge_k, [C | 0x70 | 0x08] = &&P##_jsge_x,                    \
        [C | 0xa0 | 0x00] = &&P##_jlt_k,  [C | 0xa0 | 0x08] = &&P##_jlt_x,                     \
        [C | 0xb0 | 0x00] = &&P##_jle_k,  [C | 0xb0 | 0x08] = &&P##_jle_x,                     \
        [C | 0xc0 | 0x00] = &&P##_jslt_k, [C | 0xc0 | 0x08] = &&P##_jslt_x,                    \
        [C | 0xd0 | 0x00] = &&P##_jsle_k, [C | 0xd0 | 0x08] = &&P##_jsle_x
        JMP_ENTRIES(0x05, j64),
        JMP_ENTRIES(0x06, j32),
        [0x05] = &&op_ja, [0x06] = &&op_ja32,
        [0x85] = &&op_call, [0x8d] = &&op_callx, [0x95] = &&op_exit,
        [0x18] = &&op_lddw,
        [0x71] = &&op_ldxb, [0x69] = &&op_ldxh, [0x61] = &&op_ldxw, [0x79] = &&op_ldxdw,
        [0x91] = &&op_ldxsb, [0x89] = &&op_ldxsh, [0x81] = &&op_ldxsw,
        [0x72] = &&op_stb, [0x6a] = &&op_sth, [0x62] = &&op_stw, [0x7a] = &&op_stdw,
        [0x73] = &&op_stxb, [0x6b] = &&op_stxh, [0x63] = &&op_stxw, [0x7b] = &&op_stxdw,
        [0xc3] = &&op_atomic32, [0xdb] = &&op_atomic64,
    };

    const uint64_t *const insns = vm->insns;
    const uint32_t n = vm->n;
    struct pbr_run *const run = vm->run;
    uint64_t budget = run->budget;
    const int base_depth = depth;
    struct frame frames[PBR_MAX_CALL_DEPTH];
    /* 16, not 11: the register fields are 4 bits and unverified programs (pbr_vm_exec without
     * pbr_verify) may name r11..r15; they get scratch slots instead of reading and writing
     * past the array into this frame (the verifier refuses them) */
    uint64_t r[16] = {0};
    uint64_t ins, fault_addr = 0;
    uint8_t *const stack_end = vm->stack_end;
    /* accessible stack: the current frame and every caller frame above it */
    uint64_t stack_lo;
    uint64_t rc_lo, rc_end, wc_lo, wc_end; /* region caches for loads and stores */

    r[0] = 0;
    for (int i = 1; i <= 5; i++)
        r[i] = args[i];
    r[6] = r[7] = r[8] = r[9] = 0;
    r[10] = (uint64_t)(stack_end - (size_t)depth * PBR_STACK_SIZE);
    stack_lo = r[10] - PBR_STACK_SIZE;

#define DST r[(ins >> 8) & 0xf]
#define SRC r[(ins >> 12) & 0xf]
#define OFF ((int64_t)(int16_t)(ins >> 16))
#define IMM ((int64_t)(int32_t)(ins >> 32))
#define UIMM ((uint64_t)IMM)
#define DISPATCH()                                                                             \
    do {                                                                                       \
        if (unlikely(budget-- == 0))                                                           \
            goto out_budget;                                                                   \
        ins = insns[pc];                                                                       \
        goto *tbl[ins & 0xff];                                                                 \
    } while (0)
#define NEXT()                                                                                 \
    do {                                                                                       \
        pc++;                                                                                  \
        DISPATCH();                                                                            \
    } while (0)
#define JUMP(cond, off)                                                                        \
    do {                                                                                       \
        if (cond) {                                                                            \
            uint32_t t_ = pc + 1 + (int32_t)(off);                                             \
            if (unlikely(t_ >= n))                                                             \
                goto out_insn;                                                                 \
            pc = t_;                                                                           \
        } else                                                                                 \
            pc++;                                                                              \
        DISPATCH();                                                                            \
    } while (0)
/* stack fast path first; everything else must be inside a region with the permission */
/* Stack fast path first, then a one-entry cache per direction (the last region a load or a
 * store matched), then a scan of run->regions. The caches are emptied after every helper
 * call because helpers add and drop regions. */
#define CHECK(addr, size, perm)                                                                \
    do {                                                                                       \
        uint64_t a_ = (addr);                                                                  \
        if (likely(a_ >= stack_lo && a_ <= (uint64_t)stack_end - (size)))                      \
            break;                                                                             \
        if ((perm) == PBR_PERM_R && a_ >= rc_lo && a_ <= rc_end - (size))                      \
            break;                                                                             \
        if ((perm) == PBR_PERM_W && a_ >= wc_lo && a_ <= wc_end - (size))                      \
            break;                                                                             \
        const struct pbr_region *g_ = find_region(run, a_, (size), (perm));                    \
        if (unlikely(!g_)) {                                                                   \
            fault_addr = a_;                                                                   \
            goto out_fault;                                                                    \
        }                                                                                      \
        if (g_->end - g_->start >= 8) { /* so end - size cannot wrap */                        \
            if ((perm) == PBR_PERM_R)                                                          \
                rc_lo = g_->start, rc_end = g_->end;                                           \
            else if ((perm) == PBR_PERM_W)                                                     \
                wc_lo = g_->start, wc_end = g_->end;                                           \
        }                                                                                      \
    } while (0)
#define EMPTY_CACHES() (rc_lo = wc_lo = UINT64_MAX, rc_end = wc_end = 8)

    EMPTY_CACHES();
    DISPATCH();

    /* ---- ALU64 ---- */
#define ALU64_OP(name, expr_k, expr_x)                                                         \
    a64_##name##_k : { uint64_t s = UIMM; DST = (expr_k); NEXT(); }                            \
    a64_##name##_x : { uint64_t s = SRC; DST = (expr_x); NEXT(); }
#define ALU32_OP(name, expr_k, expr_x)                                                         \
    a32_##name##_k : { uint32_t s = (uint32_t)IMM; uint32_t d = (uint32_t)DST;                 \
                       DST = (uint32_t)(expr_k); (void)d; NEXT(); }                            \
    a32_##name##_x : { uint32_t s = (uint32_t)SRC; uint32_t d = (uint32_t)DST;                 \
                       DST = (uint32_t)(expr_x); (void)d; NEXT(); }

    ALU64_OP(add, DST + s, DST + s)
    ALU64_OP(sub, DST - s, DST - s)
    ALU64_OP(mul, DST * s, DST * s)
    ALU64_OP(or, DST | s, DST | s)
    ALU64_OP(and, DST & s, DST & s)
    ALU64_OP(lsh, DST << (s & 63), DST << (s & 63))
    ALU64_OP(rsh, DST >> (s & 63), DST >> (s & 63))
    ALU64_OP(xor, DST ^ s, DST ^ s)
    ALU64_OP(arsh, (uint64_t)((int64_t)DST >> (s & 63)), (uint64_t)((int64_t)DST >> (s & 63)))
a64_neg:
    DST = -DST;
    NEXT();
a64_mov_k:
    DST = UIMM;
    NEXT();
a64_mov_x:
    switch (OFF) {
    case 0: DST = SRC; break;
    case 8: DST = (uint64_t)(int64_t)(int8_t)SRC; break;
    case 16: DST = (uint64_t)(int64_t)(int16_t)SRC; break;
    case 32: DST = (uint64_t)(int64_t)(int32_t)SRC; break;
    default: goto out_insn;
    }
    NEXT();

    ALU32_OP(add, d + s, d + s)
    ALU32_OP(sub, d - s, d - s)
    ALU32_OP(mul, d * s, d * s)
    ALU32_OP(or, d | s, d | s)
    ALU32_OP(and, d & s, d & s)
    ALU32_OP(lsh, d << (s & 31), d << (s & 31))
    ALU32_OP(rsh, d >> (s & 31), d >> (s & 31))
    ALU32_OP(xor, d ^ s, d ^ s)
    ALU32_OP(arsh, (uint32_t)((int32_t)d >> (s & 31)), (uint32_t)((int32_t)d >> (s & 31)))
a32_neg:
    DST = (uint32_t)-(uint32_t)DST;
    NEXT();
a32_mov_k:
    DST = (uint32_t)IMM;
    NEXT();
a32_mov_x:
    switch (OFF) {
    case 0: DST = (uint32_t)SRC; break;
    case 8: DST = (uint32_t)(int32_t)(int8_t)SRC; break;
    case 16: DST = (uint32_t)(int32_t)(int16_t)SRC; break;
    default: goto out_insn;
    }
    NEXT();

    /* Division: x/0 = 0, x%0 = x; signed forms (off = 1) truncate, INT_MIN/-1 = INT_MIN. */
#define DIV64(s)                                                                               \
    do {                                                                                       \
        uint64_t s_ = (s);                                                                     \
        if (OFF == 0) DST = s_ ? DST / s_ : 0;                                                 \
        else if (OFF == 1) {                                                                   \
            int64_t d_ = (int64_t)DST, v_ = (int64_t)s_;                                       \
            DST = v_ == 0 ? 0 : v_ == -1 ? (uint64_t)0 - (uint64_t)d_ : (uint64_t)(d_ / v_);   \
        } else goto out_insn;                                                                  \
        NEXT();                                                                                \
    } while (0)
#define MOD64(s)                                                                               \
    do {                                                                                       \
        uint64_t s_ = (s);                                                                     \
        if (OFF == 0) DST = s_ ? DST % s_ : DST;                                               \
        else if (OFF == 1) {                                                                   \
            int64_t d_ = (int64_t)DST, v_ = (int64_t)s_;                                       \
            DST = v_ == 0 ? DST : v_ == -1 ? 0 : (uint64_t)(d_ % v_);                          \
        } else goto out_insn;                                                                  \
        NEXT();                                                                                \
    } while (0)
#define DIV32(s)                                                                               \
    do {                                                                                       \
        uint32_t s_ = (s), d0 = (uint32_t)DST;                                                 \
        if (OFF == 0) DST = s_ ? d0 / s_ : 0;                                                  \
        else if (OFF == 1) {                                                                   \
            int32_t d_ = (int32_t)d0, v_ = (int32_t)s_;                                        \
            DST = (uint32_t)(v_ == 0 ? 0 : v_ == -1 ? 0u - (uint32_t)d_ : (uint32_t)(d_ / v_)); \
        } else goto out_insn;                                                                  \
        NEXT();                                                                                \
    } while (0)
#define MOD32(s)                                                                               \
    do {                                                                                       \
        uint32_t s_ = (s), d0 = (uint32_t)DST;                                                 \
        if (OFF == 0) DST = s_ ? d0 % s_ : d0;                                                 \
        else if (OFF == 1) {                                                                   \
            int32_t d_ = (int32_t)d0, v_ = (int32_t)s_;                                        \
            DST = (uint32_t)(v_ == 0 ? d0 : v_ == -1 ? 0u : (uint32_t)(d_ % v_));              \
        } else goto out_insn;                                                                  \
        NEXT();                                                                                \
    } while (0)
a64_div_k: DIV64(UIMM);
a64_div_x: DIV64(SRC);
a64_mod_k: MOD64(UIMM);
a64_mod_x: MOD64(SRC);
a32_div_k: DIV32((uint32_t)IMM);
a32_div_x: DIV32((uint32_t)SRC);
a32_mod_k: MOD32((uint32_t)IMM);
a32_mod_x: MOD32((uint32_t)SRC);

op_le:
    switch (IMM) {
    case 16: DST = (uint16_t)DST; break;
    case 32: DST = (uint32_t)DST; break;
    case 64: break;
    default: goto out_insn;
    }
    NEXT();
op_be:
op_bswap:
    switch (IMM) {
    case 16: DST = bswap16((uint16_t)DST); break;
    case 32: DST = bswap32((uint32_t)DST); break;
    case 64: DST = bswap64(DST); break;
    default: goto out_insn;
    }
    NEXT();

    /* ---- jumps ---- */
#define JOPS(P, W, SW, A, B)                                                                   \
    P##_jeq_k: JUMP((W)A == (W)B##K, OFF);                                                     \
    P##_jeq_x: JUMP((W)A == (W)B##X, OFF);                                                     \
    P##_jgt_k: JUMP((W)A > (W)B##K, OFF);                                                      \
    P##_jgt_x: JUMP((W)A > (W)B##X, OFF);                                                      \
    P##_jge_k: JUMP((W)A >= (W)B##K, OFF);                                                     \
    P##_jge_x: JUMP((W)A >= (W)B##X, OFF);                                                     \
    P##_jlt_k: JUMP((W)A < (W)B##K, OFF);                                                      \
    P##_jlt_x: JUMP((W)A < (W)B##X, OFF);                                                      \
    P##_jle_k: JUMP((W)A <= (W)B##K, OFF);                                                     \
    P##_jle_x: JUMP((W)A <= (W)B##X, OFF);                                                     \
    P##_jset_k: JUMP(((W)A & (W)B##K) != 0, OFF);                                              \
    P##_jset_x: JUMP(((W)A & (W)B##X) != 0, OFF);                                              \
    P##_jne_k: JUMP((W)A != (W)B##K, OFF);                                                     \
    P##_jne_x: JUMP((W)A != (W)B##X, OFF);                                                     \
    P##_jsgt_k: JUMP((SW)A > (SW)B##K, OFF);                                                   \
    P##_jsgt_x: JUMP((SW)A > (SW)B##X, OFF);                                                   \
    P##_jsge_k: JUMP((SW)A >= (SW)B##K, OFF);                                                  \
    P##_jsge_x: JUMP((SW)A >= (SW)B##X, OFF);                                                  \
    P##_jslt_k: JUMP((SW)A < (SW)B##K, OFF);                                                   \
    P##_jslt_x: JUMP((SW)A < (SW)B##X, OFF);                                                   \
    P##_jsle_k: JUMP((SW)A <= (SW)B##K, OFF);                                                  \
    P##_jsle_x: JUMP((SW)A <= (SW)B##X, OFF);
#define OPK UIMM
#define OPX SRC
    JOPS(j64, uint64_t, int64_t, DST, OP)
    JOPS(j32, uint32_t, int32_t, DST, OP)

op_ja:
    JUMP(1, OFF);
op_ja32:
    JUMP(1, IMM);

    /* ---- memory ---- */
#define LOAD(T, CAST)                                                                          \
    do {                                                                                       \
        uint64_t a = SRC + OFF;                                                                \
        T v;                                                                                   \
        CHECK(a, sizeof(T), PBR_PERM_R);                                                       \
        memcpy(&v, (const void *)a, sizeof(T));                                                \
        DST = (uint64_t)(CAST)v;                                                               \
        NEXT();                                                                                \
    } while (0)
op_ldxb: LOAD(uint8_t, uint64_t);
op_ldxh: LOAD(uint16_t, uint64_t);
op_ldxw: LOAD(uint32_t, uint64_t);
op_ldxdw: LOAD(uint64_t, uint64_t);
op_ldxsb: LOAD(int8_t, int64_t);
op_ldxsh: LOAD(int16_t, int64_t);
op_ldxsw: LOAD(int32_t, int64_t);
#define STORE(T, VAL)                                                                          \
    do {                                                                                       \
        uint64_t a = DST + OFF;                                                                \
        T v = (T)(VAL);                                                                        \
        CHECK(a, sizeof(T), PBR_PERM_W);                                                       \
        memcpy((void *)a, &v, sizeof(T));                                                      \
        NEXT();                                                                                \
    } while (0)
op_stb: STORE(uint8_t, IMM);
op_sth: STORE(uint16_t, IMM);
op_stw: STORE(uint32_t, IMM);
op_stdw: STORE(uint64_t, IMM);
op_stxb: STORE(uint8_t, SRC);
op_stxh: STORE(uint16_t, SRC);
op_stxw: STORE(uint32_t, SRC);
op_stxdw: STORE(uint64_t, SRC);

    /* Atomics must be naturally aligned (as the kernel requires): a split locked access
     * could raise SIGBUS on machines with split-lock detection. */
#define ATOMIC(T)                                                                              \
    do {                                                                                       \
        uint64_t a = DST + OFF;                                                                \
        CHECK(a, sizeof(T), PBR_PERM_RW);                                                      \
        if (unlikely(a & (sizeof(T) - 1))) {                                                   \
            fault_addr = a;                                                                    \
            goto out_fault;                                                                    \
        }                                                                                      \
        T *p = (T *)a, v = (T)SRC, old;                                                        \
        switch ((int32_t)IMM) {                                                                \
        case 0x00: __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); break;                          \
        case 0x40: __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); break;                           \
        case 0x50: __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); break;                          \
        case 0xa0: __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); break;                          \
        case 0x01: SRC = (T)__atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); break;                 \
        case 0x41: SRC = (T)__atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); break;                  \
        case 0x51: SRC = (T)__atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); break;                 \
        case 0xa1: SRC = (T)__atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); break;                 \
        case 0xe1: SRC = (T)__atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); break;                \
        case 0xf1:                                                                             \
            old = (T)r[0];                                                                     \
            __atomic_compare_exchange_n(p, &old, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);    \
            r[0] = (T)old;                                                                     \
            break;                                                                             \
        default: goto out_insn;                                                                \
        }                                                                                      \
        NEXT();                                                                                \
    } while (0)
op_atomic32: ATOMIC(uint32_t);
op_atomic64: ATOMIC(uint64_t);

op_lddw: {
    if (unlikely(pc + 2 >= n)) /* needs its second slot and a successor */
        goto out_insn;
    uint64_t hi = insns[pc + 1] >> 32;
    uint32_t lo = (uint32_t)(ins >> 32);
    switch ((ins >> 12) & 0xf) {
    case 0: DST = (hi << 32) | lo; break;
    /* the index range is the verifier's job (it knows nmaps); NULL tables are caught here */
    case 1:
        if (unlikely(!run->maps))
            goto out_insn;
        DST = run->maps[lo];
        break;
    case 2:
        if (unlikely(!run->map_values))
            goto out_insn;
        DST = run->map_values[lo] + (uint32_t)hi;
        break;
    case 4: DST = (uint64_t)(pc + 1 + (int32_t)lo); break;
    default: goto out_insn;
    }
    pc += 2;
    DISPATCH();
}

    /* ---- calls ---- */
op_call: {
    uint32_t kind = (ins >> 12) & 0xf;
    if (kind == 1) {
        uint32_t t = pc + 1 + (int32_t)IMM;
        if (unlikely(t >= n))
            goto out_insn;
        if (unlikely(depth + 1 >= PBR_MAX_CALL_DEPTH)) {
            run->status = PBR_EDEPTH;
            goto out_stop;
        }
        struct frame *f = &frames[depth];
        f->ret_pc = pc + 1;
        f->r6 = r[6]; f->r7 = r[7]; f->r8 = r[8]; f->r9 = r[9];
        depth++;
        r[10] -= PBR_STACK_SIZE;
        stack_lo -= PBR_STACK_SIZE;
        pc = t;
        DISPATCH();
    }
    if (kind != 0)
        goto out_insn;
    uint32_t id = (uint32_t)IMM;
    goto do_helper_id;
op_callx:
    id = (uint64_t)DST < PBR_MAX_HELPERS ? (uint32_t)DST : PBR_MAX_HELPERS;
do_helper_id:
    if (unlikely(id >= PBR_MAX_HELPERS || !run->helpers || !run->helpers[id])) {
        run->status = PBR_EHELPER;
        goto out_stop;
    }
    run->budget = budget;
    run->fault_pc = pc; /* a callback that faults inside the helper overwrites it */
    vm->depth = depth;
    {
        /* the stack region opens for the helper: the live frames only */
        struct pbr_region *sr = &run->regions[vm->stack_region];
        uint64_t saved = sr->start;
        sr->start = stack_lo;
        r[0] = run->helpers[id](r[1], r[2], r[3], r[4], r[5], run);
        sr->start = saved;
    }
    EMPTY_CACHES();
    budget = run->budget;
    if (unlikely(run->status != PBR_OK)) {
        if (run->status == PBR_EXIT)
            return run->exit_value;
        return 0;
    }
    NEXT();
}

op_exit:
    if (depth == base_depth) {
        run->budget = budget;
        return r[0];
    }
    depth--;
    {
        struct frame *f = &frames[depth];
        r[6] = f->r6; r[7] = f->r7; r[8] = f->r8; r[9] = f->r9;
        r[10] += PBR_STACK_SIZE;
        stack_lo += PBR_STACK_SIZE;
        pc = f->ret_pc;
    }
    DISPATCH();

op_invalid:
out_insn:
    run->status = PBR_EINSN;
    goto out_stop;
out_budget:
    run->status = PBR_EBUDGET;
    budget = 0;
    goto out_stop;
out_fault:
    run->status = PBR_EFAULT;
    run->fault_addr = fault_addr;
out_stop:
    run->fault_pc = pc;
    run->budget = budget;
    return 0;
}

static uint64_t vm_invoke(struct pbr_run *run, uint64_t func, uint64_t a1, uint64_t a2,
                          uint64_t a3, uint64_t a4, uint64_t a5)
{
    struct vm *vm = run->engine;
    if (run->status != PBR_OK)
        return 0;
    if (func >= vm->n) {
        run->status = PBR_EINSN;
        return 0;
    }
    int depth = vm->depth + 1;
    if (depth >= PBR_MAX_CALL_DEPTH) {
        run->status = PBR_EDEPTH;
        return 0;
    }
    uint64_t args[6] = {0, a1, a2, a3, a4, a5};
    int saved = vm->depth;
    uint64_t ret = interp(vm, (uint32_t)func, args, depth);
    vm->depth = saved;
    return ret;
}

uint64_t pbr_vm_exec(const uint64_t *insns, uint32_t n, struct pbr_run *run, uint64_t ctx,
                     uint64_t ctx_len)
{
    _Alignas(16) uint8_t stack[PBR_MAX_CALL_DEPTH * PBR_STACK_SIZE];
    struct vm vm = {insns, n, run, stack, stack + sizeof(stack), 0, 0};
    /* A helper may run another program on the same run (tail calls): the engine, invoke and
     * ctx of the outer run come back when this one ends. */
    void *prev_engine = run->engine;
    pbr_invoke_fn prev_invoke = run->invoke;
    uint64_t prev_ctx = run->ctx, ret = 0;
    uint32_t nregions = run->nregions;

    /* Falling off the end is impossible when the last slot is exit or ja: every other
     * instruction then has a successor, and jump targets are checked when taken. */
    uint8_t last = n ? (uint8_t)insns[n - 1] : 0;
    if (n == 0 || (last != 0x95 && last != 0x05 && last != 0x06)) {
        run->status = PBR_EINSN;
        run->fault_pc = n ? n - 1 : 0;
        return 0;
    }
    /* The live stack frames are a region while a helper runs, so helpers given stack
     * pointers check them with pbr_check_access like any other memory; between helper calls
     * the region is empty (start == end) so the program itself only reaches its live frames
     * through the fast path. Regions added during the run (by helpers) are dropped with it. */
    if (nregions >= PBR_MAX_REGIONS) {
        run->status = PBR_EFAULT; /* no room for the stack region */
        run->fault_addr = 0;
        run->fault_pc = 0;
        return 0;
    }
    /* Only the last frame is cleared: programs the verifier accepted never read
     * uninitialised stack, and clearing 4 KiB per run would cost more than small programs. */
    memset(stack + sizeof(stack) - PBR_STACK_SIZE, 0, PBR_STACK_SIZE);
    run->status = PBR_OK;
    run->ctx = ctx;
    run->engine = &vm;
    run->invoke = vm_invoke;
    vm.stack_region = nregions;
    run->regions[nregions] = (struct pbr_region){(uint64_t)vm.stack_end, (uint64_t)vm.stack_end,
                                                 PBR_PERM_RW, 0};
    run->nregions = nregions + 1;
    uint64_t args[6] = {0, ctx, ctx_len, 0, 0, 0};
    ret = interp(&vm, 0, args, 0);
    run->nregions = nregions;
    run->engine = prev_engine;
    run->invoke = prev_invoke;
    run->ctx = prev_ctx;
    return ret;
}

/* Benchmark entry (not part of the shared ABI header; declared by the Python wrapper): runs
 * the program `repeat` times like BPF_PROG_TEST_RUN's repeat, each run with a fresh budget,
 * and stores the total wall time in *ns. Stops at the first run that does not finish. */
#include <time.h>
uint64_t pbr_vm_exec_repeat(const uint64_t *insns, uint32_t n, struct pbr_run *run,
                            uint64_t ctx, uint64_t ctx_len, uint64_t repeat, uint64_t *ns)
{
    struct timespec a, b;
    uint64_t budget = run->budget, r0 = 0;
    uint32_t nregions = run->nregions;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (uint64_t i = 0; i < repeat; i++) {
        run->budget = budget;
        run->nregions = nregions;
        r0 = pbr_vm_exec(insns, n, run, ctx, ctx_len);
        if (run->status != PBR_OK)
            break;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    *ns = (uint64_t)(b.tv_sec - a.tv_sec) * 1000000000ull + (uint64_t)(b.tv_nsec - a.tv_nsec);
    return r0;
}
