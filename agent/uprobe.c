/* uprobes and uretprobes by inline patching.
 *
 * The first >= 5 bytes of the probed instruction(s) are replaced by `jmp rel32` to a per-probe
 * trampoline mapped within +-2 GB of the target:
 *
 *   tramp+0   .quad probe          (read by the common entry code)
 *   tramp+8   .quad pba_up_entry   (absolute: the agent may be far away)
 *   tramp+16  lea -128(%rsp),%rsp  (keep the red zone intact for mid-function probes)
 *   tramp+21  call *-19(%rip)      -> pba_up_entry: saves pt_regs + xmm, runs the hooks
 *   tramp+27  lea 128(%rsp),%rsp
 *   tramp+35  the displaced instructions, relocated (RIP-relative operands, relative jumps
 *             and calls re-targeted; loop/jrcxz/xbegin refused)
 *             jmp back to target + patched length
 *
 * The patch is one atomic store (8-byte aligned word, or cmpxchg16b within a 16-byte line),
 * so a thread running concurrently sees either the old or the new bytes. The other threads are
 * stopped meanwhile (stw.c): one interrupted between two displaced instructions is moved to
 * their relocated copy, as it would otherwise resume inside the jump. Trampolines are
 * never freed: a thread may still be inside one after detach.
 *
 * uretprobes swap the return address (at the function entry, *(sp)) for pba_uret_tramp and
 * keep the real one on a per-thread shadow stack.
 */
#define _GNU_SOURCE
#ifndef PYBPFC_NO_CAPSTONE
#include <capstone/capstone.h>
#endif
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent.h"
#include "stw.h"

#define TRAMP_SIZE 128
#define TRAMP_CODE 35
#define CHUNK_SIZE (64 * 1024)
#define MAX_PROBES 1024
#define MAX_HOOKS 4096
#define SHADOW_DEPTH 128

struct probe {
    uint64_t addr;
    uint8_t *tramp;
    uint8_t orig[16];     /* the aligned window the patch was written into */
    uint64_t win;         /* its address */
    int winlen;           /* 8 or 16 */
    int patched;
    int consumed;                    /* length of the displaced instructions */
    int16_t omap[PBA_STW_MAXLEN];    /* offset k of one of them -> its copy at tramp+TRAMP_CODE+omap[k] */
    struct pba_hooklist *entry;  /* published with atomic stores; old lists are not freed */
    struct pba_hooklist *ret;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct probe probes[MAX_PROBES];
static int nprobes;
static struct {
    int used;
    struct probe *p;
    int kind;
} handles[MAX_HOOKS];

struct shadow_ent {
    uint64_t ret, slot;
    struct probe *p;
};
static __thread struct shadow_ent shadow[SHADOW_DEPTH] __attribute__((tls_model("initial-exec")));
static __thread int shadow_n __attribute__((tls_model("initial-exec")));

extern char pba_up_entry[], pba_uret_tramp[];

/* Frame built by the entry code: pt_regs (168) + pad (8) + xmm0-15 (256) = 432 bytes, with
 * %rbp pointing at the saved application %rbp. */
#define SAVE_REGS                                                                                 \
    "  push %rbp\n"                                                                               \
    "  mov %rsp, %rbp\n"                                                                          \
    "  and $-16, %rsp\n"                                                                          \
    "  sub $432, %rsp\n"                                                                          \
    "  mov %r15, 0(%rsp)\n  mov %r14, 8(%rsp)\n  mov %r13, 16(%rsp)\n  mov %r12, 24(%rsp)\n"    \
    "  mov %rbx, 40(%rsp)\n  mov %r11, 48(%rsp)\n  mov %r10, 56(%rsp)\n  mov %r9, 64(%rsp)\n"    \
    "  mov %r8, 72(%rsp)\n  mov %rax, 80(%rsp)\n  mov %rcx, 88(%rsp)\n  mov %rdx, 96(%rsp)\n"    \
    "  mov %rsi, 104(%rsp)\n  mov %rdi, 112(%rsp)\n"                                              \
    "  mov 0(%rbp), %rax\n  mov %rax, 32(%rsp)\n"                                                 \
    "  movaps %xmm0, 176(%rsp)\n  movaps %xmm1, 192(%rsp)\n  movaps %xmm2, 208(%rsp)\n"           \
    "  movaps %xmm3, 224(%rsp)\n  movaps %xmm4, 240(%rsp)\n  movaps %xmm5, 256(%rsp)\n"           \
    "  movaps %xmm6, 272(%rsp)\n  movaps %xmm7, 288(%rsp)\n  movaps %xmm8, 304(%rsp)\n"           \
    "  movaps %xmm9, 320(%rsp)\n  movaps %xmm10, 336(%rsp)\n  movaps %xmm11, 352(%rsp)\n"         \
    "  movaps %xmm12, 368(%rsp)\n  movaps %xmm13, 384(%rsp)\n  movaps %xmm14, 400(%rsp)\n"        \
    "  movaps %xmm15, 416(%rsp)\n"

#define RESTORE_REGS                                                                              \
    "  movaps 176(%rsp), %xmm0\n  movaps 192(%rsp), %xmm1\n  movaps 208(%rsp), %xmm2\n"           \
    "  movaps 224(%rsp), %xmm3\n  movaps 240(%rsp), %xmm4\n  movaps 256(%rsp), %xmm5\n"           \
    "  movaps 272(%rsp), %xmm6\n  movaps 288(%rsp), %xmm7\n  movaps 304(%rsp), %xmm8\n"           \
    "  movaps 320(%rsp), %xmm9\n  movaps 336(%rsp), %xmm10\n  movaps 352(%rsp), %xmm11\n"         \
    "  movaps 368(%rsp), %xmm12\n  movaps 384(%rsp), %xmm13\n  movaps 400(%rsp), %xmm14\n"        \
    "  movaps 416(%rsp), %xmm15\n"                                                                \
    "  mov 0(%rsp), %r15\n  mov 8(%rsp), %r14\n  mov 16(%rsp), %r13\n  mov 24(%rsp), %r12\n"    \
    "  mov 40(%rsp), %rbx\n  mov 48(%rsp), %r11\n  mov 56(%rsp), %r10\n  mov 64(%rsp), %r9\n"    \
    "  mov 72(%rsp), %r8\n  mov 80(%rsp), %rax\n  mov 88(%rsp), %rcx\n  mov 96(%rsp), %rdx\n"    \
    "  mov 104(%rsp), %rsi\n  mov 112(%rsp), %rdi\n"                                              \
    "  mov %rbp, %rsp\n"                                                                          \
    "  pop %rbp\n"

/* pba_up_entry: [rsp] = return into the trampoline (tramp+27), the probe at tramp+0.
 * After pushfq and push rbp: flags at 8(%rbp), return at 16(%rbp), original sp = rbp+24+128. */
__asm__(".text\n"
        ".globl pba_up_entry\n"
        ".type pba_up_entry,@function\n"
        "pba_up_entry:\n"
        "  pushfq\n"
        "  cld\n"
        SAVE_REGS
        "  mov 8(%rbp), %rax\n  mov %rax, 144(%rsp)\n"
        "  lea 152(%rbp), %rax\n  mov %rax, 152(%rsp)\n"
        "  mov 16(%rbp), %rdi\n"
        "  mov -27(%rdi), %rdi\n"
        "  mov %rsp, %rsi\n"
        "  call pba_uprobe_hit\n"
        RESTORE_REGS
        "  popfq\n"
        "  ret\n"
        ".size pba_up_entry, .-pba_up_entry\n"
        /* Entered by the probed function's `ret`: rsp = slot + 8. A zero slot is pushed for the
         * real return address, which pba_uret_hit returns. */
        ".globl pba_uret_tramp\n"
        ".type pba_uret_tramp,@function\n"
        "pba_uret_tramp:\n"
        "  push $0\n"
        "  pushfq\n"
        "  cld\n"
        SAVE_REGS
        "  mov 8(%rbp), %rax\n  mov %rax, 144(%rsp)\n"
        "  lea 24(%rbp), %rax\n  mov %rax, 152(%rsp)\n"
        "  mov %rsp, %rdi\n"
        "  call pba_uret_hit\n"
        "  mov %rax, 16(%rbp)\n"
        RESTORE_REGS
        "  popfq\n"
        "  ret\n"
        ".size pba_uret_tramp, .-pba_uret_tramp\n");

static void run_list(struct pba_hooklist *l, int kind, struct pba_regs *regs)
{
    if (!l)
        return;
    for (int i = 0; i < l->n; i++)
        l->h[i].fn(l->h[i].data, kind, regs);
}

__attribute__((used)) void pba_uprobe_hit(struct probe *p, struct pba_regs *regs)
{
    regs->ip = p->addr;
    regs->orig_ax = (uint64_t)-1;
    regs->cs = 0x33;
    regs->ss = 0x2b;
    if (pba_in_agent)
        return;
    pba_in_agent = 1;
    run_list(__atomic_load_n(&p->entry, __ATOMIC_ACQUIRE), PBA_ENTRY, regs);
    struct pba_hooklist *r = __atomic_load_n(&p->ret, __ATOMIC_ACQUIRE);
    if (r && r->n && shadow_n < SHADOW_DEPTH) {
        uint64_t *slot = (uint64_t *)regs->sp;
        shadow[shadow_n].ret = *slot;
        shadow[shadow_n].slot = (uint64_t)slot;
        shadow[shadow_n].p = p;
        __atomic_store_n(&shadow_n, shadow_n + 1, __ATOMIC_RELEASE);
        *slot = (uint64_t)pba_uret_tramp;
    }
    pba_in_agent = 0;
}

__attribute__((used)) uint64_t pba_uret_hit(struct pba_regs *regs)
{
    uint64_t slot = regs->sp - 8;
    int i = shadow_n - 1;
    /* entries below the current frame were skipped by longjmp: drop them */
    while (i > 0 && shadow[i].slot < slot)
        i--;
    struct shadow_ent e = shadow[i < 0 ? 0 : i];
    __atomic_store_n(&shadow_n, i < 0 ? 0 : i, __ATOMIC_RELEASE);
    regs->ip = e.ret;
    regs->orig_ax = (uint64_t)-1;
    regs->cs = 0x33;
    regs->ss = 0x2b;
    if (!pba_in_agent && e.p) {
        pba_in_agent = 1;
        run_list(__atomic_load_n(&e.p->ret, __ATOMIC_ACQUIRE), PBA_RETURN, regs);
        pba_in_agent = 0;
    }
    return e.ret;
}

/* Unwinders cannot walk through pba_uret_tramp: put the real return addresses back first.
 * Those calls report no return. */
void pba_uret_unwind_fixup(void)
{
    for (int i = shadow_n - 1; i >= 0; i--) {
        uint64_t *slot = (uint64_t *)shadow[i].slot;
        if (*slot == (uint64_t)pba_uret_tramp)
            *slot = shadow[i].ret;
    }
    __atomic_store_n(&shadow_n, 0, __ATOMIC_RELEASE);
}

/* -- trampoline memory near the target ------------------------------------------------------ */
struct chunk {
    uint8_t *base;
    size_t used;
};
static struct chunk chunks[256];
static int nchunks;

static int64_t dist(uint64_t a, uint64_t b) { return a > b ? (int64_t)(a - b) : (int64_t)(b - a); }

#define RANGE ((1ull << 31) - 2 * CHUNK_SIZE)

static uint8_t *map_near(uint64_t target)
{
    size_t n;
    uint64_t best = 0;
    pba_maps_lock();
    const char *p = pba_read_maps(&n), *end = p + n;
    uint64_t prev_end = 0x10000;
    while (p <= end) {
        uint64_t a = ~0ull >> 17, b = a; /* sentinel: end of user space */
        const char *nl = p < end ? memchr(p, '\n', end - p) : NULL;
        if (p < end) {
            a = strtoull(p, NULL, 16);
            const char *dash = memchr(p, '-', end - p);
            b = dash ? strtoull(dash + 1, NULL, 16) : a;
        }
        if (a > prev_end && a - prev_end >= CHUNK_SIZE) {
            /* free gap [prev_end, a): the address in it closest to target */
            uint64_t c = target < prev_end ? prev_end : target + CHUNK_SIZE > a ? a - CHUNK_SIZE : target;
            c &= ~4095ull;
            if (c < prev_end)
                c += 4096;
            if (c + CHUNK_SIZE <= a && dist(c, target) < (int64_t)RANGE &&
                (!best || dist(c, target) < dist(best, target)))
                best = c;
        }
        if (b > prev_end)
            prev_end = b;
        if (!nl)
            break;
        p = nl + 1;
    }
    pba_maps_unlock();
    if (!best)
        return NULL;
    long r = pba_raw_syscall(SYS_mmap, best, CHUNK_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (r < 0 && r > -4096)
        return NULL;
    return (uint8_t *)r;
}

static uint8_t *alloc_tramp(uint64_t target)
{
    for (int i = 0; i < nchunks; i++) {
        struct chunk *c = &chunks[i];
        if (c->used + TRAMP_SIZE <= CHUNK_SIZE && dist((uint64_t)c->base, target) < (int64_t)RANGE &&
            dist((uint64_t)c->base + CHUNK_SIZE, target) < (int64_t)RANGE) {
            uint8_t *t = c->base + c->used;
            c->used += TRAMP_SIZE;
            return t;
        }
    }
    if (nchunks == (int)(sizeof chunks / sizeof chunks[0]))
        return NULL;
    uint8_t *b = map_near(target);
    if (!b)
        return NULL;
    chunks[nchunks].base = b;
    chunks[nchunks].used = TRAMP_SIZE;
    nchunks++;
    return b;
}

/* -- relocation ---------------------------------------------------------------------------- */
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int fits32(int64_t v) { return v >= INT32_MIN && v <= INT32_MAX; }

static void put32(uint8_t *p, int32_t v) { memcpy(p, &v, 4); }

/* Writes the relocated copy of the instructions covering >= 5 bytes at addr into out (placed
 * at address `at`); returns the bytes written and the bytes consumed in *consumed. omap[k]
 * (PBA_STW_MAXLEN entries) = offset in out of the copy of the instruction at addr+k, -1 where
 * no instruction starts. */
#ifdef PYBPFC_NO_CAPSTONE
static int relocate(uint64_t addr, uint8_t *out, uint64_t at, int *consumed, int16_t *omap, char *err,
                    size_t errlen)
{
    return fail(err, errlen, "the agent was built without capstone (install libcapstone-dev)");
}
#else
static int relocate(uint64_t addr, uint8_t *out, uint64_t at, int *consumed, int16_t *omap, char *err,
                    size_t errlen)
{
    csh h;
    if (cs_open(CS_ARCH_X86, CS_MODE_64, &h) != CS_ERR_OK)
        return fail(err, errlen, "capstone unavailable");
    cs_option(h, CS_OPT_DETAIL, CS_OPT_ON);
    cs_insn *insn = cs_malloc(h);
    const uint8_t *code = (const uint8_t *)addr;
    size_t size = 32;
    uint64_t pc = addr;
    int n = 0, used = 0, rc = 0;
    for (int i = 0; i < PBA_STW_MAXLEN; i++)
        omap[i] = -1;
    while (used < 5) {
        omap[used] = (int16_t)n;
        if (!cs_disasm_iter(h, &code, &size, &pc, insn)) {
            rc = fail(err, errlen, "cannot decode the instruction at +%d", used);
            break;
        }
        cs_x86 *x = &insn->detail->x86;
        uint64_t here = at + n;
        int is_rel = 0;
        for (int g = 0; g < insn->detail->groups_count; g++)
            if (insn->detail->groups[g] == CS_GRP_BRANCH_RELATIVE)
                is_rel = 1;
        switch (insn->id) {
        case X86_INS_JRCXZ: case X86_INS_JECXZ: case X86_INS_JCXZ:
        case X86_INS_LOOP: case X86_INS_LOOPE: case X86_INS_LOOPNE: case X86_INS_XBEGIN:
            rc = fail(err, errlen, "cannot relocate '%s' at +%d", insn->mnemonic, used);
            goto out;
        }
        if (rc)
            break;
        if (is_rel && x->op_count == 1 && x->operands[0].type == X86_OP_IMM) {
            uint64_t target = x->operands[0].imm;
            if (target > addr && target < addr + used + insn->size) {
                rc = fail(err, errlen, "'%s' at +%d jumps into the patched bytes", insn->mnemonic, used);
                goto out;
            }
            if (insn->id == X86_INS_CALL) {
                /* push the original return address, then jump: the callee returns into the
                 * function itself, so unwinders (C++ exceptions) never see the trampoline */
                uint64_t ret = addr + used + insn->size;
                static const uint8_t lea[] = {0x48, 0x8d, 0x64, 0x24, 0xf8}; /* lea -8(%rsp),%rsp */
                memcpy(out + n, lea, 5);
                out[n + 5] = 0xc7; out[n + 6] = 0x04; out[n + 7] = 0x24;     /* movl $lo,(%rsp) */
                put32(out + n + 8, (int32_t)(uint32_t)ret);
                out[n + 12] = 0xc7; out[n + 13] = 0x44; out[n + 14] = 0x24; out[n + 15] = 0x04;
                put32(out + n + 16, (int32_t)(uint32_t)(ret >> 32));          /* movl $hi,4(%rsp) */
                out[n + 20] = 0xE9;
                int64_t d = (int64_t)(target - (here + 25));
                if (!fits32(d)) {
                    rc = fail(err, errlen, "call target out of range of the trampoline");
                    goto out;
                }
                put32(out + n + 21, (int32_t)d);
                n += 25;
                used += insn->size;
                continue;
            }
            if (insn->id == X86_INS_JMP) {
                out[n] = 0xE9;
                int64_t d = (int64_t)(target - (here + 5));
                if (!fits32(d)) {
                    rc = fail(err, errlen, "branch target out of range of the trampoline");
                    goto out;
                }
                put32(out + n + 1, (int32_t)d);
                n += 5;
            } else {
                int cc = x->opcode[0] == 0x0F ? x->opcode[1] - 0x80 : x->opcode[0] - 0x70;
                if (cc < 0 || cc > 15) {
                    rc = fail(err, errlen, "cannot relocate '%s' at +%d", insn->mnemonic, used);
                    goto out;
                }
                out[n] = 0x0F;
                out[n + 1] = 0x80 + cc;
                int64_t d = (int64_t)(target - (here + 6));
                if (!fits32(d)) {
                    rc = fail(err, errlen, "branch target out of range of the trampoline");
                    goto out;
                }
                put32(out + n + 2, (int32_t)d);
                n += 6;
            }
            used += insn->size;
            if (insn->id == X86_INS_JMP && used < 5) {
                rc = fail(err, errlen, "function too short to patch (jmp at +%d)", used - insn->size);
                goto out;
            }
            continue;
        }
        /* an indirect call ending inside the jump: a thread in the callee at patch time
         * would return into the middle of it, and the stop-the-world sees only current RIPs */
        if (used + insn->size < 5)
            for (int g = 0; g < insn->detail->groups_count; g++)
                if (insn->detail->groups[g] == CS_GRP_CALL) {
                    rc = fail(err, errlen, "'%s' at +%d returns into the patched bytes", insn->mnemonic, used);
                    goto out;
                }
        int riprel = 0;
        for (int i = 0; i < x->op_count; i++)
            if (x->operands[i].type == X86_OP_MEM && x->operands[i].mem.base == X86_REG_RIP)
                riprel = 1;
        memcpy(out + n, insn->bytes, insn->size);
        if (riprel) {
            if (!x->encoding.disp_offset || x->encoding.disp_size != 4) {
                rc = fail(err, errlen, "cannot relocate '%s %s'", insn->mnemonic, insn->op_str);
                goto out;
            }
            uint64_t target = addr + used + insn->size + (int64_t)(int32_t)x->disp;
            int64_t d = (int64_t)(target - (here + insn->size));
            if (!fits32(d)) {
                rc = fail(err, errlen, "RIP-relative operand out of range of the trampoline");
                goto out;
            }
            put32(out + n + x->encoding.disp_offset, (int32_t)d);
        }
        n += insn->size;
        used += insn->size;
        if (used < 5) {
            int term = 0;
            for (int g = 0; g < insn->detail->groups_count; g++)
                if (insn->detail->groups[g] == CS_GRP_RET || insn->detail->groups[g] == CS_GRP_JUMP ||
                    insn->detail->groups[g] == CS_GRP_IRET || insn->detail->groups[g] == CS_GRP_INT)
                    term = 1;
            if (term || insn->id == X86_INS_UD2 || insn->id == X86_INS_HLT) {
                rc = fail(err, errlen, "function too short to patch ('%s' at +%d)", insn->mnemonic,
                          used - insn->size);
                goto out;
            }
        }
    }
out:
    cs_free(insn, 1);
    cs_close(&h);
    if (rc)
        return -1;
    *consumed = used;
    return n;
}
#endif

/* -- atomic patching ----------------------------------------------------------------------- */
static int write_window(uint64_t win, int winlen, const uint8_t *old, const uint8_t *new)
{
    if (winlen == 8) {
        uint64_t o, nw;
        memcpy(&o, old, 8);
        memcpy(&nw, new, 8);
        return __atomic_compare_exchange_n((uint64_t *)win, &o, nw, 0, __ATOMIC_SEQ_CST,
                                           __ATOMIC_SEQ_CST) ? 0 : -1;
    }
    uint64_t olo, ohi, nlo, nhi;
    memcpy(&olo, old, 8);
    memcpy(&ohi, old + 8, 8);
    memcpy(&nlo, new, 8);
    memcpy(&nhi, new + 8, 8);
    uint8_t ok;
    __asm__ volatile("lock cmpxchg16b %1\n\tsete %0"
                     : "=q"(ok), "+m"(*(volatile __int128 *)win), "+a"(olo), "+d"(ohi)
                     : "b"(nlo), "c"(nhi)
                     : "memory", "cc");
    return ok ? 0 : -1;
}

static void sync_cores(void)
{
    /* serialize the other threads' instruction streams (cross-modifying code) where the
     * kernel offers it; without it the store is still atomic */
    static int registered;
    if (!registered)
        registered = pba_raw_syscall(SYS_membarrier, 1 << 6 /* REGISTER_PRIVATE_EXPEDITED_SYNC_CORE */,
                                     0, 0, 0, 0, 0) == 0 ? 1 : -1;
    if (registered > 0)
        pba_raw_syscall(SYS_membarrier, 1 << 5 /* PRIVATE_EXPEDITED_SYNC_CORE */, 0, 0, 0, 0, 0);
}

static int patch(struct probe *p, int on, char *err, size_t errlen)
{
    /* only a patch can catch a thread mid-way: with the jump in place no thread starts the
     * original displaced instructions, and one inside the trampoline may stay there */
    static struct pba_stw_move mv;
    memset(&mv, 0, sizeof mv);
    if (on) {
        mv.lo = p->addr;
        mv.len = p->consumed;
        for (int k = 1; k < p->consumed; k++)
            if (p->omap[k] >= 0)
                mv.dest[k] = (uint64_t)p->tramp + TRAMP_CODE + p->omap[k];
    }
    /* before the patch lock: a thread waiting for it has every signal blocked */
    if (pba_stw_stop(&mv, err, errlen))
        return -1;
    uint8_t cur[16], want[16];
    memcpy(cur, (void *)p->win, p->winlen);
    memcpy(want, p->orig, p->winlen);
    if (on) {
        int off = (int)(p->addr - p->win);
        want[off] = 0xE9;
        put32(want + off + 1, (int32_t)((uint64_t)p->tramp + 16 - (p->addr + 5)));
    }
    int ww;
    if (pba_protect_rw(p->win, p->winlen, &ww)) {
        pba_stw_resume();
        return fail(err, errlen, "cannot make 0x%lx writable", (unsigned long)p->win);
    }
    int r = write_window(p->win, p->winlen, cur, want);
    pba_protect_restore(p->win, p->winlen, ww);
    sync_cores();
    pba_stw_resume();
    return r ? fail(err, errlen, "the bytes at 0x%lx changed under the patch", (unsigned long)p->win) : 0;
}

static struct probe *probe_get(uint64_t addr, char *err, size_t errlen)
{
    for (int i = 0; i < nprobes; i++)
        if (probes[i].addr == addr)
            return &probes[i];
    if (nprobes == MAX_PROBES) {
        fail(err, errlen, "too many probed addresses");
        return NULL;
    }
    uint64_t win;
    int winlen;
    if ((addr & 7) <= 3) {
        win = addr & ~7ull;
        winlen = 8;
    } else if ((addr & 15) <= 11) {
        win = addr & ~15ull;
        winlen = 16;
    } else {
        fail(err, errlen, "0x%lx: the 5-byte jump would cross a 16-byte line (no atomic patch)",
             (unsigned long)addr);
        return NULL;
    }
    uint8_t *t = alloc_tramp(addr);
    if (!t) {
        fail(err, errlen, "no free memory within 2 GB of 0x%lx for a trampoline", (unsigned long)addr);
        return NULL;
    }
    uint8_t buf[TRAMP_SIZE];
    memset(buf, 0xCC, sizeof buf);
    uint64_t pr = (uint64_t)&probes[nprobes], ent = (uint64_t)pba_up_entry;
    memcpy(buf, &pr, 8);
    memcpy(buf + 8, &ent, 8);
    static const uint8_t pre[] = {0x48, 0x8d, 0x64, 0x24, 0x80,             /* lea -128(%rsp),%rsp */
                                  0xff, 0x15, 0xed, 0xff, 0xff, 0xff,       /* call *-19(%rip) */
                                  0x48, 0x8d, 0xa4, 0x24, 0x80, 0, 0, 0};   /* lea 128(%rsp),%rsp */
    memcpy(buf + 16, pre, sizeof pre);
    int consumed = 0;
    int16_t omap[PBA_STW_MAXLEN];
    int n = relocate(addr, buf + TRAMP_CODE, (uint64_t)t + TRAMP_CODE, &consumed, omap, err, errlen);
    if (n < 0)
        return NULL;  /* the trampoline slot is leaked: rare, small */
    uint8_t *j = buf + TRAMP_CODE + n;
    j[0] = 0xE9;
    put32(j + 1, (int32_t)((addr + consumed) - ((uint64_t)t + TRAMP_CODE + n + 5)));
    int ww;
    if (pba_protect_rw((uint64_t)t, TRAMP_SIZE, &ww) == 0) {
        memcpy(t, buf, sizeof buf);
        pba_protect_restore((uint64_t)t, TRAMP_SIZE, ww);
    }
    struct probe *p = &probes[nprobes++];
    memset(p, 0, sizeof *p);
    p->addr = addr;
    p->tramp = t;
    p->win = win;
    p->winlen = winlen;
    p->consumed = consumed;
    memcpy(p->omap, omap, sizeof omap);
    memcpy(p->orig, (void *)win, winlen);
    return p;
}

int pba_probe_add(uint64_t addr, int kind, pba_fn fn, void *data, char *err, size_t errlen)
{
    if (kind != PBA_ENTRY && kind != PBA_RETURN)
        return fail(err, errlen, "bad probe kind %d", kind);
    int saved = pba_in_agent;
    pba_in_agent = 1;
    pthread_mutex_lock(&mu);
    int id = -1;
    struct probe *p = probe_get(addr, err, errlen);
    if (!p)
        goto out;
    for (int i = 1; i < MAX_HOOKS; i++)
        if (!handles[i].used) {
            id = i;
            break;
        }
    if (id < 0) {
        fail(err, errlen, "too many hooks");
        goto out;
    }
    struct pba_hook h = {.id = id, .kind = kind, .nr = -1, .fn = fn, .data = data};
    struct pba_hooklist **lp = kind == PBA_ENTRY ? &p->entry : &p->ret;
    struct pba_hooklist *nl = pba_hooklist_with(*lp, &h, -1);
    if (!nl) {
        id = fail(err, errlen, "out of memory");
        goto out;
    }
    __atomic_store_n(lp, nl, __ATOMIC_RELEASE);
    if (!p->patched) {
        char why[200];
        if (patch(p, 1, why, sizeof why)) {
            __atomic_store_n(lp, pba_hooklist_with(nl, NULL, id), __ATOMIC_RELEASE);
            id = fail(err, errlen, "cannot patch 0x%lx: %s", (unsigned long)addr, why);
            pba_log("uprobe: cannot patch 0x%lx: %s", (unsigned long)addr, why);
            goto out;
        }
        p->patched = 1;
    }
    handles[id].used = 1;
    handles[id].p = p;
    handles[id].kind = kind;
out:
    pthread_mutex_unlock(&mu);
    pba_in_agent = saved;
    return id;
}

int pba_probe_del(int id)
{
    if (id <= 0 || id >= MAX_HOOKS)
        return -1;
    int saved = pba_in_agent;
    pba_in_agent = 1;
    pthread_mutex_lock(&mu);
    int rc = -1;
    if (handles[id].used) {
        struct probe *p = handles[id].p;
        struct pba_hooklist **lp = handles[id].kind == PBA_ENTRY ? &p->entry : &p->ret;
        struct pba_hooklist *nl = pba_hooklist_with(*lp, NULL, id);
        if (nl)
            __atomic_store_n(lp, nl, __ATOMIC_RELEASE);
        handles[id].used = 0;
        if (p->patched && (!p->entry || !p->entry->n) && (!p->ret || !p->ret->n)) {
            char why[200];
            if (patch(p, 0, why, sizeof why) == 0)
                p->patched = 0;
            else /* stays patched, jumping to a trampoline without hooks: harmless */
                pba_log("uprobe: cannot unpatch 0x%lx: %s", (unsigned long)p->addr, why);
        }
        rc = 0;
    }
    pthread_mutex_unlock(&mu);
    pba_in_agent = saved;
    return rc;
}
