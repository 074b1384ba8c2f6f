/* Static checks run before a program is interpreted or JIT-compiled (pybpfc_vm.h).
 *
 * Refuses: invalid opcodes and nonzero reserved fields (RFC 9669), lddw pseudo sources that
 * are not prepared or name a missing map, jumps out of range / across functions / into the
 * second slot of lddw, falling off the end of a function, unreachable instructions (as the
 * kernel does), writes to r10, reads of registers no path has written, unknown helpers,
 * constant r10-relative accesses outside the 512-byte frame, bad call targets, recursion and
 * static call chains deeper than PBR_MAX_CALL_DEPTH. What depends on run-time values (other
 * pointers, callx targets, loops) is checked by the engines while running. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pybpfc_vm.h"

#define MAX_INSNS (1u << 20)

struct insn {
    uint8_t op, dst, src;
    int16_t off;
    int32_t imm;
};

struct ctx {
    const uint64_t *raw;
    uint32_t n;
    const uint8_t *helper_ok;
    uint32_t nmaps;
    char *err;
    size_t errlen;
    uint8_t *tail;      /* slot is the second half of lddw */
    uint32_t *func;     /* function (start index) each slot belongs to */
    uint8_t *is_start;  /* slot starts a function */
};

static struct insn get(const struct ctx *c, uint32_t i)
{
    uint64_t w = c->raw[i];
    struct insn x = {(uint8_t)w, (uint8_t)((w >> 8) & 0xf), (uint8_t)((w >> 12) & 0xf),
                     (int16_t)(w >> 16), (int32_t)(w >> 32)};
    return x;
}

static int fail(struct ctx *c, uint32_t i, const char *fmt, ...)
{
    if (c->err && c->errlen) {
        int k = snprintf(c->err, c->errlen, "insn %u: ", i);
        if (k >= 0 && (size_t)k < c->errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return -1;
}

enum { CLS_LD, CLS_LDX, CLS_ST, CLS_STX, CLS_ALU, CLS_JMP, CLS_JMP32, CLS_ALU64 };

static int is_cond_jump(uint8_t op)
{
    uint8_t cl = op & 7, o = op & 0xf0;
    return (cl == CLS_JMP || cl == CLS_JMP32) && o != 0x00 && o != 0x80 && o != 0x90;
}

static int is_ja(uint8_t op) { return op == 0x05 || op == 0x06; }

/* Encoding rules; mirrors pybpfc/asm/insn.py:problem. */
static int check_encoding(struct ctx *c, uint32_t i, struct insn x)
{
    uint8_t cl = x.op & 7, o = x.op & 0xf0, s = x.op & 0x08;
    uint8_t mode = x.op & 0xe0, size = x.op & 0x18;
    if (x.dst > 10 || x.src > 10)
        return fail(c, i, "invalid register r%u", x.dst > 10 ? x.dst : x.src);
    switch (cl) {
    case CLS_ALU:
    case CLS_ALU64:
        if (o == 0xd0) {
            if (cl == CLS_ALU64 && s)
                return fail(c, i, "invalid opcode 0x%02x", x.op);
            if (x.src || x.off)
                return fail(c, i, "byte swap with nonzero src or offset");
            if (x.imm != 16 && x.imm != 32 && x.imm != 64)
                return fail(c, i, "byte swap width %d (must be 16, 32 or 64)", x.imm);
            return 0;
        }
        if (o > 0xd0)
            return fail(c, i, "invalid opcode 0x%02x", x.op);
        if (o == 0x80) {
            if (s)
                return fail(c, i, "invalid opcode 0x%02x", x.op);
            if (x.src || x.off || x.imm)
                return fail(c, i, "neg with nonzero src, offset or imm");
            return 0;
        }
        if (o == 0x30 || o == 0x90) {
            if (x.off != 0 && x.off != 1)
                return fail(c, i, "invalid offset %d for div/mod", x.off);
        } else if (o == 0xb0 && s) {
            if (!(x.off == 0 || x.off == 8 || x.off == 16 || (cl == CLS_ALU64 && x.off == 32)))
                return fail(c, i, "invalid sign-extension width %d for movsx", x.off);
        } else if (x.off)
            return fail(c, i, "nonzero offset %d in ALU instruction", x.off);
        if (s && x.imm)
            return fail(c, i, "register-source ALU with nonzero imm");
        if (!s && x.src)
            return fail(c, i, "immediate-source ALU with nonzero src");
        return 0;
    case CLS_JMP:
    case CLS_JMP32:
        if (o == 0x00) {
            if (s || x.dst || x.src)
                return fail(c, i, "ja with a register operand");
            if (cl == CLS_JMP && x.imm)
                return fail(c, i, "ja with nonzero imm");
            if (cl == CLS_JMP32 && x.off)
                return fail(c, i, "ja32 with nonzero offset");
            return 0;
        }
        if (o == 0x80) {
            if (cl != CLS_JMP)
                return fail(c, i, "invalid opcode 0x%02x", x.op);
            if (s) {
                if (x.src || x.off || x.imm)
                    return fail(c, i, "callx with nonzero src, offset or imm");
                return 0;
            }
            if (x.dst || x.off)
                return fail(c, i, "call with nonzero dst or offset");
            if (x.src > 1)
                return fail(c, i, x.src == 2 ? "kfunc calls are not supported"
                                             : "call with invalid src %u", x.src);
            return 0;
        }
        if (o == 0x90) {
            if (cl != CLS_JMP || s)
                return fail(c, i, "invalid opcode 0x%02x", x.op);
            if (x.dst || x.src || x.off || x.imm)
                return fail(c, i, "exit with a nonzero field");
            return 0;
        }
        if (o > 0xd0)
            return fail(c, i, "invalid opcode 0x%02x", x.op);
        if (s && x.imm)
            return fail(c, i, "register-source jump with nonzero imm");
        if (!s && x.src)
            return fail(c, i, "immediate-source jump with nonzero src");
        return 0;
    case CLS_LD:
        if (x.op != 0x18)
            return fail(c, i, "invalid or unsupported opcode 0x%02x", x.op);
        if (x.off)
            return fail(c, i, "lddw with nonzero offset");
        if (i + 1 >= c->n)
            return fail(c, i, "lddw without its second slot");
        {
            struct insn y = get(c, i + 1);
            if (y.op || y.dst || y.src || y.off)
                return fail(c, i + 1, "lddw second slot has nonzero opcode, registers or offset");
            switch (x.src) {
            case 0:
                return 0;
            case 1:
            case 2:
                if ((uint32_t)x.imm >= c->nmaps)
                    return fail(c, i, "map index %u out of range (%u maps)", (uint32_t)x.imm,
                                c->nmaps);
                if (x.src == 1 && y.imm)
                    return fail(c, i, "lddw map_fd with nonzero high half");
                return 0;
            case 4:
                if (y.imm)
                    return fail(c, i, "lddw func with nonzero high half");
                return 0;
            default:
                return fail(c, i, "lddw pseudo source %u is not supported here (unprepared "
                                  "program?)", x.src);
            }
        }
    case CLS_LDX:
        if ((mode != 0x60 && mode != 0x80) || (mode == 0x80 && size == 0x18))
            return fail(c, i, "invalid opcode 0x%02x", x.op);
        if (x.imm)
            return fail(c, i, "load with nonzero imm");
        return 0;
    case CLS_ST:
        if (mode != 0x60)
            return fail(c, i, "invalid opcode 0x%02x", x.op);
        if (x.src)
            return fail(c, i, "store-immediate with nonzero src");
        return 0;
    case CLS_STX:
        if (mode == 0x60) {
            if (x.imm)
                return fail(c, i, "store with nonzero imm");
            return 0;
        }
        if (mode == 0xc0) {
            if (size != 0x00 && size != 0x18)
                return fail(c, i, "atomic operation must be 32 or 64 bit");
            switch (x.imm) {
            case 0x00: case 0x40: case 0x50: case 0xa0:
            case 0x01: case 0x41: case 0x51: case 0xa1:
            case 0xe1: case 0xf1:
                return 0;
            }
            return fail(c, i, "invalid atomic operation 0x%x", (unsigned)x.imm);
        }
        return fail(c, i, "invalid opcode 0x%02x", x.op);
    }
    return fail(c, i, "invalid opcode 0x%02x", x.op);
}

static int slot_len(struct insn x) { return x.op == 0x18 ? 2 : 1; }

/* Registers read and written (bit r = register r). */
static void uses(struct insn x, uint16_t *rd, uint16_t *wr)
{
    uint8_t cl = x.op & 7, o = x.op & 0xf0, s = x.op & 0x08;
    uint16_t D = 1u << x.dst, S = 1u << x.src;
    *rd = *wr = 0;
    switch (cl) {
    case CLS_ALU:
    case CLS_ALU64:
        if (o == 0xb0) {
            *rd = s ? S : 0;
        } else {
            *rd = D | ((s && o != 0x80 && o != 0xd0) ? S : 0);
        }
        *wr = D;
        return;
    case CLS_JMP:
    case CLS_JMP32:
        if (o == 0x80) {
            *rd = s ? D : 0;
            *wr = 0x3f; /* r0 set, r1..r5 clobbered: handled by the caller */
        } else if (o == 0x90) {
            *rd = 1;
        } else if (o != 0x00) {
            *rd = D | (s ? S : 0);
        }
        return;
    case CLS_LD:
        *wr = D;
        return;
    case CLS_LDX:
        *rd = S;
        *wr = D;
        return;
    case CLS_ST:
        *rd = D;
        return;
    case CLS_STX:
        *rd = D | S;
        if ((x.op & 0xe0) == 0xc0) {
            if (x.imm == 0xf1) {
                *rd |= 1;
                *wr = 1;
            } else if (x.imm & 1)
                *wr = S;
        }
        return;
    }
}

static int size_of(uint8_t op)
{
    switch (op & 0x18) {
    case 0x00: return 4;
    case 0x08: return 2;
    case 0x10: return 1;
    default: return 8;
    }
}

static const char *fname(struct ctx *c, uint32_t start, char *buf, size_t len)
{
    if (start == 0)
        return "the main program";
    snprintf(buf, len, "the function at insn %u", start);
    (void)c;
    return buf;
}

/* Deepest static call chain starting at function f (frames), -1 on recursion, -2 when it
 * is deeper than the limit (the search stops there, so C recursion stays shallow). */
static int depth_of(struct ctx *c, uint32_t f, uint8_t *state, int *memo, uint32_t *bad,
                    int level)
{
    if (level > PBR_MAX_CALL_DEPTH)
        return -2;
    if (state[f] == 1) {
        *bad = f;
        return -1;
    }
    if (state[f] == 2)
        return memo[f];
    state[f] = 1;
    int best = 0;
    for (uint32_t i = f; i < c->n && c->func[i] == f; i++) {
        if (c->tail[i])
            continue;
        struct insn x = get(c, i);
        uint32_t t;
        if (x.op == 0x85 && x.src == 1)
            t = i + 1 + x.imm;
        else if (x.op == 0x18 && x.src == 4)
            t = i + 1 + x.imm; /* callbacks run one frame below the helper's caller */
        else
            continue;
        int d = depth_of(c, t, state, memo, bad, level + 1);
        if (d < 0)
            return d;
        if (d > best)
            best = d;
    }
    state[f] = 2;
    memo[f] = best + 1;
    return best + 1;
}

int pbr_verify(const uint64_t *insns, uint32_t n, const uint8_t *helper_ok, uint32_t nmaps,
               char *err, size_t errlen)
{
    struct ctx c = {insns, n, helper_ok, nmaps, err, errlen, NULL, NULL, NULL};
    int rc = -1;
    uint16_t *in = NULL;
    uint32_t *work = NULL;
    uint8_t *seen = NULL, *state = NULL;
    int *memo = NULL;
    char nb[64];

    if (err && errlen)
        err[0] = 0;
    if (n == 0)
        return fail(&c, 0, "empty program");
    if (n > MAX_INSNS)
        return fail(&c, 0, "program too large (%u slots, limit %u)", n, MAX_INSNS);

    c.tail = calloc(n, 1);
    c.func = calloc(n, sizeof(uint32_t));
    c.is_start = calloc(n, 1);
    in = malloc(n * sizeof(uint16_t));
    work = malloc(n * sizeof(uint32_t));
    seen = calloc(n, 1);
    state = calloc(n, 1);
    memo = calloc(n, sizeof(int));
    if (!c.tail || !c.func || !c.is_start || !in || !work || !seen || !state || !memo) {
        fail(&c, 0, "out of memory");
        goto out;
    }

    /* 1. encoding, slot map, function starts */
    c.is_start[0] = 1;
    for (uint32_t i = 0; i < n; i++) {
        struct insn x = get(&c, i);
        if (check_encoding(&c, i, x))
            goto out;
        if (x.op == 0x18) {
            c.tail[i + 1] = 1;
            i++;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (c.tail[i])
            continue;
        struct insn x = get(&c, i);
        if ((x.op == 0x85 && x.src == 1) || (x.op == 0x18 && x.src == 4)) {
            int64_t t = (int64_t)i + 1 + x.imm;
            if (t < 0 || t >= n || c.tail[t]) {
                fail(&c, i, "%s target %lld is outside the program or inside lddw",
                     x.op == 0x85 ? "call" : "function address", (long long)t);
                goto out;
            }
            c.is_start[t] = 1;
        }
    }
    for (uint32_t i = 0, f = 0; i < n; i++) {
        if (c.is_start[i])
            f = i;
        c.func[i] = f;
    }

    /* 2. per-instruction rules that need the slot map */
    for (uint32_t i = 0; i < n; i++) {
        if (c.tail[i])
            continue;
        struct insn x = get(&c, i);
        uint8_t cl = x.op & 7;
        uint16_t rd, wr;
        uses(x, &rd, &wr);
        if (!(x.op == 0x85 || x.op == 0x8d) && (wr & (1u << 10))) {
            fail(&c, i, "r10 is read-only (frame pointer)");
            goto out;
        }
        if (cl == CLS_JMP || cl == CLS_JMP32) {
            if (x.op == 0x85 && x.src == 0) {
                if (x.imm < 0 || x.imm >= PBR_MAX_HELPERS || !helper_ok || !helper_ok[x.imm]) {
                    fail(&c, i, "unknown helper %d", x.imm);
                    goto out;
                }
            }
            if (is_ja(x.op) || is_cond_jump(x.op)) {
                int64_t t = (int64_t)i + 1 + (x.op == 0x06 ? x.imm : x.off);
                if (t < 0 || t >= n) {
                    fail(&c, i, "jump out of range (target %lld, program has %u slots)",
                         (long long)t, n);
                    goto out;
                }
                if (c.tail[t]) {
                    fail(&c, i, "jump into the middle of lddw at insn %lld", (long long)t - 1);
                    goto out;
                }
                if (c.func[t] != c.func[i]) {
                    fail(&c, i, "jump from %s into %s",
                         fname(&c, c.func[i], nb, sizeof(nb)),
                         c.func[t] ? "another function" : "the main program");
                    goto out;
                }
            }
        }
        /* constant frame-pointer accesses stay in the 512-byte frame */
        int base = -1;
        if (cl == CLS_LDX)
            base = x.src;
        else if (cl == CLS_ST || cl == CLS_STX)
            base = x.dst;
        if (base == 10) {
            int sz = size_of(x.op);
            if (x.off < -PBR_STACK_SIZE || x.off + sz > 0) {
                fail(&c, i, "stack access [r10%+d] of %d bytes outside the %d-byte frame", x.off,
                     sz, PBR_STACK_SIZE);
                goto out;
            }
        }
        /* control must not run past the end of the function */
        int ends = x.op == 0x95 || is_ja(x.op);
        uint32_t next = i + slot_len(x);
        if (!ends && (next >= n || c.is_start[next])) {
            fail(&c, i, "%s falls off its end (last instruction is not exit or ja)",
                 fname(&c, c.func[i], nb, sizeof(nb)));
            goto out;
        }
    }

    /* 3. call graph: no recursion, bounded depth */
    {
        uint32_t bad = 0;
        int d = depth_of(&c, 0, state, memo, &bad, 1);
        if (d == -1) {
            fail(&c, bad, "recursive call (function at insn %u calls itself)", bad);
            goto out;
        }
        if (d == -2 || d > PBR_MAX_CALL_DEPTH) {
            fail(&c, 0, "call chain deeper than %d frames", PBR_MAX_CALL_DEPTH);
            goto out;
        }
    }

    /* 4. dataflow of initialised registers (intersection over paths) + reachability */
    for (uint32_t i = 0; i < n; i++)
        in[i] = 0xffff;
    uint32_t nw = 0;
    /* r1, r2 (ctx, ctx_len) and r10 at entry; r1..r5 and r10 in a function */
    in[0] = (1u << 1) | (1u << 2) | (1u << 10);
    seen[0] = 1;
    work[nw++] = 0;
    while (nw) {
        uint32_t i = work[--nw];
        seen[i] = 2; /* reached */
        struct insn x = get(&c, i);
        uint16_t rd, wr, st = in[i];
        uses(x, &rd, &wr);
        if (rd & ~st) {
            int r = __builtin_ctz(rd & ~st);
            fail(&c, i, "r%d is read before any write on some path", r);
            goto out;
        }
        uint16_t outm = st | wr;
        uint32_t succ[2];
        int ns = 0;
        if (x.op == 0x85 || x.op == 0x8d) {
            outm = (st & ~0x3eu) | 1u; /* r0 = result, r1..r5 clobbered */
            if (x.op == 0x85 && x.src == 1) {
                uint32_t t = i + 1 + x.imm;
                uint16_t fin = (1u << 1) | (1u << 2) | (1u << 3) | (1u << 4) | (1u << 5) |
                               (1u << 10);
                if (!seen[t]) {
                    in[t] = fin;
                    seen[t] = 1;
                    work[nw++] = t;
                }
            }
        }
        if (x.op == 0x18 && x.src == 4) {
            uint32_t t = i + 1 + x.imm;
            uint16_t fin = (1u << 1) | (1u << 2) | (1u << 3) | (1u << 4) | (1u << 5) | (1u << 10);
            if (!seen[t]) {
                in[t] = fin;
                seen[t] = 1;
                work[nw++] = t;
            }
        }
        if (x.op == 0x95)
            ns = 0;
        else if (is_ja(x.op))
            succ[ns++] = i + 1 + (x.op == 0x06 ? x.imm : x.off);
        else {
            succ[ns++] = i + slot_len(x);
            if (is_cond_jump(x.op))
                succ[ns++] = i + 1 + x.off;
        }
        for (int k = 0; k < ns; k++) {
            uint32_t t = succ[k];
            if (!seen[t]) {
                in[t] = outm;
                seen[t] = 1;
                work[nw++] = t;
            } else if ((in[t] & outm) != in[t]) {
                in[t] &= outm;
                if (seen[t] == 2) {
                    seen[t] = 1;
                    work[nw++] = t;
                }
            }
        }
        /* a slot can be queued at most once at a time (seen == 1 means queued) */
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!c.tail[i] && seen[i] != 2) {
            fail(&c, i, "unreachable instruction");
            goto out;
        }
    }
    rc = 0;
out:
    free(c.tail);
    free(c.func);
    free(c.is_start);
    free(in);
    free(work);
    free(seen);
    free(state);
    free(memo);
    return rc;
}
