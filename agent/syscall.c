/* Syscall interception.
 *
 * Every thread of the target runs with Syscall User Dispatch (prctl PR_SET_SYSCALL_USER_DISPATCH)
 * whose selector byte is shared by all threads. The agent's own text is exempt, so its raw
 * syscalls are never caught. A thread that has SIGSYS blocked when a syscall traps is killed by
 * the kernel, so the agent removes SIGSYS from every mask the target sets (sigprocmask,
 * sigaction, sigsuspend, ppoll, pselect, epoll_pwait) and keeps its handler.
 *
 * zpoline mode (page 0 can be mapped: vm.mmap_min_addr == 0 or CAP_SYS_RAWIO): the first time
 * a `syscall` instruction traps, the SIGSYS handler rewrites it in place to `call *%rax` (also
 * two bytes, one atomic store) and restarts it. %rax holds the syscall number, so the call lands
 * in a nop sled at address 0..511 that jumps to pba_zp_entry; later executions cost a call and
 * no signal. Only instructions that actually executed as syscalls are rewritten, so there is no
 * disassembly guesswork, and code loaded later (dlopen, JIT) is covered the same way.
 *
 * In zpoline mode the selector is BLOCK from start-up on, so the very syscalls that would block
 * SIGSYS are already routed through the filter.
 *
 * sud mode (page 0 unavailable): every syscall is handled in the SIGSYS handler (slow: a signal
 * round trip per syscall), so the selector is BLOCK only while a syscall hook exists; a thread
 * that blocked SIGSYS natively before that is a known hazard (docs/agent.md).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "agent.h"

#ifndef PR_SET_SYSCALL_USER_DISPATCH
#define PR_SET_SYSCALL_USER_DISPATCH 59
#endif
#define SUD_ON 1
#define SUD_ALLOW 0
#define SUD_BLOCK 1
#define SYS_USER_DISPATCH_CODE 2
#define NSYS 512
#define ZP_JMP 504 /* end of the zpoline sled: numbers up to 503 (the kernel has ~470) */

static struct pba_hooklist *enter_tab[NSYS], *exit_tab[NSYS], *enter_all, *exit_all;
static int nhooks;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
#define MAX_SYS_HOOKS 1024
static struct {
    int used, nr, kind;
} handles[MAX_SYS_HOOKS];

char pba_sud_selector = SUD_ALLOW;
/* Set once scan.c rewrote the loaded objects: each thread then turns its SUD off on its next
 * syscall (SUD's check costs every syscall ~40 ns). */
__attribute__((visibility("hidden"))) int pba_sud_release;
__thread char pba_sud_on __attribute__((tls_model("initial-exec")));
/* 1 = this number leaves the fast path of pba_zp_entry (hooks, SIGSYS filtering, vfork, or a
 * special case of the entry) */
__attribute__((visibility("hidden"))) uint8_t pba_sys_slow[1 << 16];

static int filtered(int nr)
{
    return nr == SYS_rt_sigprocmask || nr == SYS_rt_sigaction || nr == SYS_rt_sigsuspend ||
           nr == SYS_ppoll || nr == SYS_pselect6 || nr == SYS_epoll_pwait || nr == SYS_epoll_pwait2 ||
           nr == SYS_vfork || nr == SYS_rt_sigreturn || nr == SYS_clone || nr == SYS_clone3;
}

static void update_slow(void)
{
    int all = enter_all || exit_all;
    for (int nr = 0; nr < NSYS; nr++)
        __atomic_store_n(&pba_sys_slow[nr], (uint8_t)(all || enter_tab[nr] || exit_tab[nr] || filtered(nr)),
                         __ATOMIC_RELEASE);
}
static int mode; /* 0 off, 1 sud, 2 zpoline */
static uint64_t stat_rewritten, stat_sigsys, stat_badnr;

/* Addresses of the rewritten `call *%rax` sites, so that a fault after one of them (a syscall
 * number that is no address in the sled) is told apart from the target's own bad calls.
 * Lock-free open addressing; inserts come from the SIGSYS handler and the scan. */
#define SITES (1u << 16)
static uint64_t sites[SITES];
static int sites_full; /* then any `ff d0` counts as ours */

void pba_zp_site_add(uint64_t site)
{
    uint32_t h = (uint32_t)((site * 0x9e3779b97f4a7c15ull) >> 48);
    for (uint32_t i = 0; i < SITES / 2; i++, h = (h + 1) & (SITES - 1)) {
        uint64_t old = 0;
        if (__atomic_compare_exchange_n(&sites[h], &old, site, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED) ||
            old == site)
            return;
    }
    __atomic_store_n(&sites_full, 1, __ATOMIC_RELAXED);
}

static int is_site(uint64_t site)
{
    uint32_t h = (uint32_t)((site * 0x9e3779b97f4a7c15ull) >> 48);
    for (uint32_t i = 0; i < SITES / 2; i++, h = (h + 1) & (SITES - 1)) {
        uint64_t v = __atomic_load_n(&sites[h], __ATOMIC_RELAXED);
        if (v == site)
            return 1;
        if (!v)
            break;
    }
    return __atomic_load_n(&sites_full, __ATOMIC_RELAXED) && site > 4096 &&
           ((const uint8_t *)site)[0] == 0xff && ((const uint8_t *)site)[1] == 0xd0;
}

extern char pba_zp_entry[], pba_sud_sigreturn[], pba_sud_clone[], pba_sud_restorer[];

#define FRAME_SAVE                                                                                \
    "  push %rbp\n  mov %rsp, %rbp\n  and $-16, %rsp\n  sub $432, %rsp\n"                         \
    "  mov %r15, 0(%rsp)\n  mov %r14, 8(%rsp)\n  mov %r13, 16(%rsp)\n  mov %r12, 24(%rsp)\n"    \
    "  mov %rbx, 40(%rsp)\n  mov %r11, 48(%rsp)\n  mov %r10, 56(%rsp)\n  mov %r9, 64(%rsp)\n"    \
    "  mov %r8, 72(%rsp)\n  mov %rax, 80(%rsp)\n  mov %rcx, 88(%rsp)\n  mov %rdx, 96(%rsp)\n"    \
    "  mov %rsi, 104(%rsp)\n  mov %rdi, 112(%rsp)\n  mov %rax, 120(%rsp)\n"                       \
    "  mov 0(%rbp), %rcx\n  mov %rcx, 32(%rsp)\n"                                                 \
    "  movaps %xmm0, 176(%rsp)\n  movaps %xmm1, 192(%rsp)\n  movaps %xmm2, 208(%rsp)\n"           \
    "  movaps %xmm3, 224(%rsp)\n  movaps %xmm4, 240(%rsp)\n  movaps %xmm5, 256(%rsp)\n"           \
    "  movaps %xmm6, 272(%rsp)\n  movaps %xmm7, 288(%rsp)\n  movaps %xmm8, 304(%rsp)\n"           \
    "  movaps %xmm9, 320(%rsp)\n  movaps %xmm10, 336(%rsp)\n  movaps %xmm11, 352(%rsp)\n"         \
    "  movaps %xmm12, 368(%rsp)\n  movaps %xmm13, 384(%rsp)\n  movaps %xmm14, 400(%rsp)\n"        \
    "  movaps %xmm15, 416(%rsp)\n"
#define FRAME_RESTORE                                                                             \
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
    "  mov %rbp, %rsp\n  pop %rbp\n"

/* pba_zp_entry: reached from the sled with %rax = number and [rsp] = the return address
 * (the rewritten instruction + 2). Only rcx and r11 may change, as with `syscall`. */
__asm__(".text\n"
        ".globl pba_zp_entry\n"
        ".type pba_zp_entry,@function\n"
        "pba_zp_entry:\n"
        /* fast path: no hook, no filter and no special case for this number. Only rcx and r11
         * (which `syscall` clobbers) are used and no instruction writes the flags (movzx,
         * jrcxz), so the application's registers and flags are untouched and the agent's own
         * `syscall` (exempt from SUD) does it directly. The index is the number's low 16 bits
         * (the table has 64 Ki entries, zero past 511): a number that reaches here from the
         * relay stub itself cannot index outside it. */
        "  lea pba_sys_slow(%rip), %r11\n"
        "  movzwl %ax, %ecx\n"
        "  movzbl (%r11,%rcx), %ecx\n"
        "  jrcxz 4f\n"
        "  jmp 6f\n"
        "4:\n"
        "  mov pba_sud_release(%rip), %ecx\n"
        "  jrcxz 5f\n"
        "  mov pba_sud_on@gottpoff(%rip), %r11\n" /* released: still on in this thread? */
        "  movzbl %fs:(%r11), %ecx\n"
        "  jrcxz 5f\n"
        "  jmp 0f\n"                           /* the C path turns it off */
        "5:\n"
        "  syscall\n"
        "  ret\n"
        "6:\n"
        "  cmp $15, %rax\n"       /* rt_sigreturn: needs rsp exactly at the signal frame */
        "  je 1f\n"
        "  cmp $56, %rax\n"       /* clone */
        "  je 2f\n"
        "  cmp $435, %rax\n"      /* clone3: refuse; libc falls back to clone */
        "  je 3f\n"
        "0:\n"
        /* keep the red zone: only [sp-8] was overwritten by the call. Arithmetic flags are
         * not preserved (popfq is slow; compilers treat every asm statement as clobbering
         * them); DF is cleared for the C code and restored to 0, the ABI value. */
        "  lea -128(%rsp), %rsp\n"
        "  cld\n"
        FRAME_SAVE
        /* rbp+136 return address, rbp+144 application sp */
        "  mov 136(%rbp), %rcx\n  mov %rcx, 128(%rsp)\n"
        "  lea 144(%rbp), %rcx\n  mov %rcx, 152(%rsp)\n"
        "  movq $0x246, 144(%rsp)\n" /* pt_regs->flags: not captured, a typical value */
        "  mov %rsp, %rdi\n"
        "  call pba_sys_run\n"
        FRAME_RESTORE
        "  lea 128(%rsp), %rsp\n"
        "  ret\n"
        "1:\n"
        "  add $8, %rsp\n"
        "  syscall\n"
        "  ud2\n"
        "2:\n"
        "  test %rsi, %rsi\n"     /* no new stack: fork-like, the generic path is fine */
        "  jz 0b\n"
        /* the child starts on the new stack: give it the return address there */
        "  sub $8, %rsi\n"
        "  mov (%rsp), %rcx\n"
        "  mov %rcx, (%rsi)\n"
        "  syscall\n"
        "  lea 8(%rsi), %rsi\n"
        "  ret\n"
        "3:\n"
        "  mov $-38, %rax\n"
        "  ret\n"
        ".size pba_zp_entry, .-pba_zp_entry\n"
        /* SUD mode stubs (in the exempt text) */
        ".globl pba_sud_sigreturn\n"
        "pba_sud_sigreturn:\n"
        "  mov $15, %eax\n"
        "  syscall\n"
        "  ud2\n"
        ".globl pba_sud_clone\n"
        "pba_sud_clone:\n"
        "  syscall\n"
        "  lea 8(%rsi), %rsi\n"
        "  ret\n"
        ".globl pba_sud_restorer\n"
        "pba_sud_restorer:\n"
        "  mov $15, %eax\n"
        "  syscall\n"
        "  ud2\n");

struct ksigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

static int sud_threads; /* threads run with SUD (else: only rewritten instructions are seen) */

/* -- invalid numbers on a rewritten site ------------------------------------------------------
 * A number that is not in the sled (negative, >= 504, x32 with bit 30) makes the `call *%rax`
 * of a rewritten site fault: at the target (the `hlt`s of page 0 and of the relay page, page
 * fault elsewhere; RIP = RAX, the return address pushed) or, for a non-canonical number, at
 * the call itself (#GP). The agent's SIGSEGV/SIGBUS/SIGILL handler recognises both by the
 * site table, makes the syscall (the kernel answers -ENOSYS as without the agent) and resumes
 * after the site. Every other fault goes to the target's own disposition, recorded in tgt[]
 * (fault_sigaction) while the kernel keeps the agent's handler with the target's mask and
 * flags, so the kernel blocks and uses the alternate stack as it would for the target's. */
/* The syscall itself, inline: this is the agent's text, which SUD exempts. */
static inline long sys6(long nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5)
{
    register uint64_t r10 __asm__("r10") = a3, r8 __asm__("r8") = a4, r9 __asm__("r9") = a5;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"(nr), "D"(a0), "S"(a1), "d"(a2), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

#define NFSIG 3
static const int fsigs[NFSIG] = {SIGSEGV, SIGBUS, SIGILL};
static struct ksigaction tgt[NFSIG];
static int fault_on, fault_lock;
#define KSA_RESTORER 0x04000000ul

static int fsig_idx(long sig) { return sig == SIGSEGV ? 0 : sig == SIGBUS ? 1 : sig == SIGILL ? 2 : -1; }

static void on_fault(int sig, siginfo_t *si, void *ucv);
__attribute__((visibility("hidden"))) long pba_sys_run(struct pba_regs *r);

static long install_fault(int i)
{
    struct ksigaction ka = {(void *)on_fault,
                            (tgt[i].flags & ~(unsigned long)(SA_RESETHAND | KSA_RESTORER)) | SA_SIGINFO | KSA_RESTORER,
                            (void *)pba_sud_restorer, tgt[i].mask & ~(1ull << (SIGSYS - 1))};
    return pba_raw_syscall(SYS_rt_sigaction, fsigs[i], (long)&ka, 0, 8, 0, 0);
}

static void fault_setup(void)
{
    for (int i = 0; i < NFSIG; i++) {
        if (pba_raw_syscall(SYS_rt_sigaction, fsigs[i], 0, (long)&tgt[i], 8, 0, 0) < 0 || install_fault(i) < 0) {
            pba_log("cannot install the SIGSEGV/SIGBUS/SIGILL handler: invalid syscall numbers will crash");
            return;
        }
    }
    __atomic_store_n(&fault_on, 1, __ATOMIC_RELEASE);
}

static void flock_take(uint64_t *old)
{
    uint64_t all = ~0ull;
    pba_raw_syscall(SYS_rt_sigprocmask, SIG_BLOCK, (long)&all, (long)old, 8, 0, 0);
    while (__atomic_exchange_n(&fault_lock, 1, __ATOMIC_ACQUIRE))
        pba_raw_syscall(SYS_sched_yield, 0, 0, 0, 0, 0, 0);
}

static void flock_drop(uint64_t *old)
{
    __atomic_store_n(&fault_lock, 0, __ATOMIC_RELEASE);
    pba_raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, (long)old, 0, 8, 0, 0);
}

/* rt_sigaction(SIGSEGV, SIGBUS or SIGILL) by the target while the agent's handler is in place.
 * The kernel itself does the target's call first, so it checks the pointers and the size and
 * stores the action as it would (-EFAULT/-EINVAL change nothing); the agent then reads that
 * action back as the target's, registers its own handler again with the target's mask and
 * flags, and gives the target its previous action in oact. Signals are blocked meanwhile;
 * another thread's fault in that window reaches the target's handler directly. */
static long fault_sigaction(long sig, uint64_t act, uint64_t oact, uint64_t size)
{
    int i = fsig_idx(sig);
    uint64_t mask;
    flock_take(&mask);
    struct ksigaction o = tgt[i];
    long r = sys6(SYS_rt_sigaction, sig, act, oact, size, 0, 0);
    if (r == 0) {
        if (act) {
            struct ksigaction n;
            sys6(SYS_rt_sigaction, sig, 0, (uint64_t)&n, 8, 0, 0);
            tgt[i] = n;
            install_fault(i);
        }
        if (oact)
            *(struct ksigaction *)oact = o; /* the kernel just wrote there: writable */
    }
    flock_drop(&mask);
    return r;
}

static void regs_from_uc(struct pba_regs *r, const greg_t *g);

static void on_fault(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    greg_t *g = uc->uc_mcontext.gregs;
    uint64_t rip = g[REG_RIP], rax = g[REG_RAX], ret = 0;
    if (si->si_code > 0 && mode == 2) {
        int64_t top = (int64_t)rax >> 47;
        if (rip == rax && !(g[REG_RSP] & 7) && is_site(*(uint64_t *)g[REG_RSP] - 2)) {
            ret = *(uint64_t *)g[REG_RSP]; /* the page fault came after the call */
            g[REG_RSP] += 8;
        } else if (top != 0 && top != -1 && is_site(rip)) {
            ret = rip + 2; /* #GP on the call to a non-canonical address */
        }
    }
    if (ret) {
        int nr = (int)rax; /* the kernel reads the number as an int */
        __atomic_fetch_add(&stat_badnr, 1, __ATOMIC_RELAXED);
        if (nr >= 0 && nr < ZP_JMP) {
            g[REG_RAX] = nr; /* a valid number in the upper bits' noise: through the sled */
            g[REG_RIP] = ret - 2;
            return;
        }
        struct pba_regs r;
        regs_from_uc(&r, g);
        r.ax = (uint64_t)(long)nr;
        r.ip = ret;
        r.sp = g[REG_RSP];
        g[REG_RAX] = pba_sys_run(&r);
        g[REG_RCX] = ret; /* what `syscall` leaves in rcx and r11 */
        g[REG_R11] = g[REG_EFL];
        g[REG_RIP] = ret;
        return;
    }
    int i = fsig_idx(sig);
    struct ksigaction t = tgt[i];
    if (t.handler == (void *)SIG_DFL || t.handler == (void *)SIG_IGN) {
        /* as without the agent: a sent signal that is ignored is dropped; otherwise the default
         * action, by the fault repeating or by the same signal queued again */
        if (t.handler == (void *)SIG_IGN && si->si_code <= 0)
            return;
        struct ksigaction dfl = {(void *)SIG_DFL, 0, 0, 0};
        pba_raw_syscall(SYS_rt_sigaction, sig, (long)&dfl, 0, 8, 0, 0);
        if (si->si_code <= 0)
            pba_raw_syscall(SYS_rt_tgsigqueueinfo, pba_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0),
                            pba_raw_syscall(SYS_gettid, 0, 0, 0, 0, 0, 0), sig, (long)si, 0, 0);
        return;
    }
    if (t.flags & SA_RESETHAND) {
        uint64_t m;
        flock_take(&m);
        tgt[i].handler = (void *)SIG_DFL;
        tgt[i].flags &= ~(unsigned long)(SA_SIGINFO | SA_RESETHAND);
        flock_drop(&m);
    }
    if (t.flags & SA_SIGINFO)
        ((void (*)(int, siginfo_t *, void *))t.handler)(sig, si, ucv);
    else
        ((void (*)(int))t.handler)(sig);
}

static void run_list(struct pba_hooklist *l, int kind, struct pba_regs *r)
{
    for (int i = 0; i < l->n; i++)
        l->h[i].fn(l->h[i].data, kind, r);
}

/* regs->ax = number on entry; returns the result (also left in regs->ax). Hidden: the
 * entry calls it directly, not through the PLT. */
__attribute__((used, visibility("hidden"))) long pba_sys_run(struct pba_regs *r)
{
    long nr = (long)r->ax;
    if (pba_sud_release && pba_sud_on) {
        pba_raw_syscall(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, 0 /* OFF */, 0, 0, 0, 0);
        pba_sud_on = 0;
    }
    if (nr == SYS_vfork)
        nr = SYS_fork; /* the vfork child would run on (and clobber) this frame */
    r->orig_ax = nr;
    r->cs = 0x33;
    r->ss = 0x2b;
    struct pba_hooklist *le = NULL, *lx = NULL;
    if (nr >= 0 && nr < NSYS) {
        le = __atomic_load_n(&enter_tab[nr], __ATOMIC_ACQUIRE);
        lx = __atomic_load_n(&exit_tab[nr], __ATOMIC_ACQUIRE);
    }
    struct pba_hooklist *ae = __atomic_load_n(&enter_all, __ATOMIC_ACQUIRE);
    struct pba_hooklist *ax = __atomic_load_n(&exit_all, __ATOMIC_ACQUIRE);
    int run = !pba_in_agent && (le || lx || ae || ax);
    if (run && (le || ae)) {
        pba_in_agent = 1;
        r->ax = (uint64_t)-ENOSYS;
        if (ae)
            run_list(ae, PBA_SYS_ENTER, r);
        if (le)
            run_list(le, PBA_SYS_ENTER, r);
        pba_in_agent = 0;
    }
    /* SIGSYS must never be blocked: Syscall User Dispatch would kill the thread */
    uint64_t a[6] = {r->di, r->si, r->dx, r->r10, r->r8, r->r9};
    uint64_t set, sa[4], ps[2];
    long ret;
    const uint64_t bit = 1ull << (SIGSYS - 1);
    switch (nr) {
    case SYS_rt_sigprocmask:
        if (a[1] && (a[0] == SIG_BLOCK || a[0] == SIG_SETMASK) && (*(uint64_t *)a[1] & bit)) {
            set = *(uint64_t *)a[1] & ~bit;
            a[1] = (uint64_t)&set;
        }
        break;
    case SYS_rt_sigaction:
        if (a[0] == SIGSYS && a[1] && sud_threads) {
            ret = 0; /* the agent keeps its SIGSYS handler */
            goto done;
        }
        if (fsig_idx((long)a[0]) >= 0 && __atomic_load_n(&fault_on, __ATOMIC_ACQUIRE)) {
            ret = fault_sigaction((long)a[0], a[1], a[2], a[3]);
            goto done;
        }
        if (a[1] && (((uint64_t *)a[1])[3] & bit)) {
            memcpy(sa, (void *)a[1], sizeof sa);
            sa[3] &= ~bit;
            a[1] = (uint64_t)sa;
        }
        break;
    case SYS_rt_sigsuspend:
        if (a[0] && (*(uint64_t *)a[0] & bit)) {
            set = *(uint64_t *)a[0] & ~bit;
            a[0] = (uint64_t)&set;
        }
        break;
    case SYS_ppoll:
        if (a[3] && (*(uint64_t *)a[3] & bit)) {
            set = *(uint64_t *)a[3] & ~bit;
            a[3] = (uint64_t)&set;
        }
        break;
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
        if (a[4] && (*(uint64_t *)a[4] & bit)) {
            set = *(uint64_t *)a[4] & ~bit;
            a[4] = (uint64_t)&set;
        }
        break;
    case SYS_pselect6:
        if (a[5] && ((uint64_t *)a[5])[0] && (*(uint64_t *)((uint64_t *)a[5])[0] & bit)) {
            set = *(uint64_t *)((uint64_t *)a[5])[0] & ~bit;
            ps[0] = (uint64_t)&set;
            ps[1] = ((uint64_t *)a[5])[1];
            a[5] = (uint64_t)ps;
        }
        break;
    }
    ret = sys6(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
done:
    r->ax = ret;
    if (run && (lx || ax)) {
        pba_in_agent = 1;
        if (ax)
            run_list(ax, PBA_SYS_EXIT, r);
        if (lx)
            run_list(lx, PBA_SYS_EXIT, r);
        pba_in_agent = 0;
        r->ax = ret;
    }
    return ret;
}

/* -- rewriting ------------------------------------------------------------------------------ */
int pba_zp_rewrite(uint64_t site)
{
    if ((site & 63) == 63)
        return -1; /* the 2-byte store would straddle a cache line: not atomic */
    const volatile uint8_t *p = (const uint8_t *)site;
    if (p[0] != 0x0f || p[1] != 0x05)
        return (p[0] == 0xff && p[1] == 0xd0) ? 0 : -1; /* another thread was first */
    int ww;
    if (pba_protect_rw(site, 2, &ww))
        return -1;
    pba_zp_site_add(site); /* before a thread can run it */
    uint16_t old = 0x050f;
    int ok = __atomic_compare_exchange_n((uint16_t *)site, &old, (uint16_t)0xd0ff, 0,
                                         __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    pba_protect_restore(site, 2, ww);
    if (ok)
        __atomic_fetch_add(&stat_rewritten, 1, __ATOMIC_RELAXED);
    return ok || old == 0xd0ff ? 0 : -1;
}

static void regs_from_uc(struct pba_regs *r, const greg_t *g)
{
    r->r15 = g[REG_R15]; r->r14 = g[REG_R14]; r->r13 = g[REG_R13]; r->r12 = g[REG_R12];
    r->bp = g[REG_RBP]; r->bx = g[REG_RBX]; r->r11 = g[REG_R11]; r->r10 = g[REG_R10];
    r->r9 = g[REG_R9]; r->r8 = g[REG_R8]; r->ax = g[REG_RAX]; r->cx = g[REG_RCX];
    r->dx = g[REG_RDX]; r->si = g[REG_RSI]; r->di = g[REG_RDI]; r->ip = g[REG_RIP];
    r->flags = g[REG_EFL]; r->sp = g[REG_RSP];
}


static void on_sigsys(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    if (si->si_code != SYS_USER_DISPATCH_CODE) {
        /* not ours (seccomp SECCOMP_RET_TRAP, kill): what would have happened without the
         * agent's handler - the default action */
        struct ksigaction dfl = {(void *)SIG_DFL, 0, 0, 0};
        pba_raw_syscall(SYS_rt_sigaction, SIGSYS, (long)&dfl, 0, 8, 0, 0);
        pba_raw_syscall(SYS_tgkill, pba_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0),
                        pba_raw_syscall(SYS_gettid, 0, 0, 0, 0, 0, 0), SIGSYS, 0, 0, 0);
        return;
    }
    ucontext_t *uc = ucv;
    greg_t *g = uc->uc_mcontext.gregs;
    uint64_t site = g[REG_RIP] - 2;
    long nr = g[REG_RAX];
    __atomic_fetch_add(&stat_sigsys, 1, __ATOMIC_RELAXED);
    if (mode == 2 && nr >= 0 && nr < NSYS && pba_zp_rewrite(site) == 0) {
        g[REG_RIP] = site; /* run it again, now through zpoline */
        return;
    }
    switch (nr) {
    case SYS_rt_sigreturn:
        g[REG_RIP] = (greg_t)pba_sud_sigreturn; /* rsp is at the application's frame */
        return;
    case SYS_clone3:
        g[REG_RAX] = -ENOSYS;
        return;
    case SYS_clone:
        if (g[REG_RSI]) {
            uint64_t ret = g[REG_RIP];
            g[REG_RSI] -= 8;
            *(uint64_t *)g[REG_RSI] = ret;
            g[REG_RSP] -= 8;
            *(uint64_t *)g[REG_RSP] = ret;
            g[REG_RIP] = (greg_t)pba_sud_clone;
            return;
        }
        break;
    }
    struct pba_regs r;
    regs_from_uc(&r, g);
    g[REG_RAX] = pba_sys_run(&r);
}


/* movabs $ent, %r11; jmp *%r11 (r11 is clobbered by syscall anyway): 13 bytes */
static void write_stub(uint8_t *o, uint64_t ent)
{
    o[0] = 0x49;
    o[1] = 0xbb;
    for (int i = 0; i < 8; i++)
        o[2 + i] = (uint8_t)(ent >> (8 * i));
    o[10] = 0x41;
    o[11] = 0xff;
    o[12] = 0xe3;
}

static int setup_zpoline(void)
{
    long r = pba_raw_syscall(SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (r != 0) {
        if (r > 0)
            pba_raw_syscall(SYS_munmap, r, 4096, 0, 0, 0, 0);
        return -1;
    }
    /* hide the null pointer from the compiler, which would turn the stores into traps */
    volatile uint8_t *vz;
    __asm__("" : "=r"(vz) : "0"(0ul));
    /* The sled: groups of seven 0x66 prefixes and a nop. Entered at any byte, the rest of a
     * group decodes as one (prefixed) nop, so reaching the end takes <= 63 instructions
     * instead of up to 504 single-byte nops. Numbers 0..503 slide to a `jmp rel32` at 504.
     * Every other byte of the page is `hlt` (a fault in user mode), so a number that lands
     * there faults with RAX intact and on_fault makes the syscall (-ENOSYS). The jump's four
     * displacement bytes are each an opcode that is invalid in 64-bit mode (#UD, same), so no
     * entry point of the page runs anything but the sled: the jump goes to a relay page near
     * 1 GB (the address the displacement spells) holding `movabs $pba_zp_entry,%r11; jmp
     * *%r11` amid more `hlt`. */
    for (int i = 0; i < ZP_JMP; i++)
        vz[i] = (i & 7) == 7 ? 0x90 : 0x66;
    for (int i = ZP_JMP; i < 4096; i++)
        vz[i] = 0xf4;
    uint64_t ent = (uint64_t)pba_zp_entry, stub = 0;
    static const uint8_t ud[] = {0x3f, 0x37, 0x2f, 0x27, 0x1f, 0x1e, 0x17, 0x16, 0x0e, 0x07, 0x06};
    for (size_t k = 0; k < sizeof ud && !stub; k++) {
        uint32_t rel = ud[k] * 0x01010101u;
        uint64_t t = ZP_JMP + 5 + (uint64_t)rel, pg = t & ~4095ull, len = ((t + 13 - pg) + 4095) & ~4095ull;
        long m = pba_raw_syscall(SYS_mmap, pg, len, PROT_READ | PROT_WRITE,
                                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (m != (long)pg) {
            if (m > 0)
                pba_raw_syscall(SYS_munmap, m, len, 0, 0, 0, 0);
            continue;
        }
        memset((void *)pg, 0xf4, len);
        write_stub((uint8_t *)t, ent);
        pba_raw_syscall(SYS_mprotect, pg, len, PROT_READ | PROT_EXEC, 0, 0, 0);
        vz[ZP_JMP] = 0xe9;
        for (int b = 0; b < 4; b++)
            vz[ZP_JMP + 1 + b] = (uint8_t)(rel >> (8 * b));
        stub = t;
    }
    if (!stub) {
        /* no room for the relay: the stub in page 0 (numbers 505..516 then land inside it) */
        write_stub((uint8_t *)vz + ZP_JMP, ent);
        pba_log("zpoline: no relay page; syscall numbers 505..516 are not caught");
    }
    /* execute-only where the CPU has protection keys; NULL reads then still fault */
    pba_raw_syscall(SYS_mprotect, 0, 4096, PROT_EXEC, 0, 0, 0);
    fault_setup();
    return 0;
}

int pba_sys_init(int want_zpoline, int sud_now)
{
    uint64_t start, len;
    pba_self_text(&start, &len);
    if (pba_raw_syscall(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, SUD_ON, start, len,
                        (long)&pba_sud_selector, 0) < 0) {
        pba_sud_on = 0;
        mode = 0;
        pba_log("syscall hooks unavailable: no Syscall User Dispatch in this kernel");
        return -1;
    }
    mode = 1;
    pba_sud_on = 1;
    update_slow();
    const char *m = getenv("PYBPFC_AGENT_SYSCALL");
    if (m && !strcmp(m, "zpoline"))
        want_zpoline = sud_now = 1;
    if (m && !strcmp(m, "sud"))
        want_zpoline = 0, sud_now = 1;
    if (!sud_now) {
        /* no syscall hook yet: syscalls cost nothing extra. A hook that arrives later gets
         * zpoline with every verifiable instruction rewritten ahead (pba_sys_add + scan.c). */
        pba_raw_syscall(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, 0 /* OFF */, 0, 0, 0, 0);
        pba_sud_on = 0;
        pba_log("syscall interception: idle until a syscall hook arrives");
        return 0;
    }
    struct ksigaction ka = {(void *)on_sigsys, SA_SIGINFO | SA_NODEFER | SA_RESTART | 0x04000000 /* SA_RESTORER */,
                            (void *)pba_sud_restorer, 0};
    if (pba_raw_syscall(SYS_rt_sigaction, SIGSYS, (long)&ka, 0, 8, 0, 0) < 0) {
        pba_raw_syscall(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, 0 /* OFF */, 0, 0, 0, 0);
        pba_sud_on = 0;
        mode = 0;
        pba_log("syscall hooks unavailable: cannot install the SIGSYS handler");
        return -1;
    }
    sud_threads = 1;
    if (want_zpoline && setup_zpoline() == 0) {
        /* every syscall instruction traps once, from the start, and is rewritten: so the ones
         * that would block SIGSYS are seen (and filtered) before they can */
        mode = 2;
        __atomic_store_n(&pba_sud_selector, SUD_BLOCK, __ATOMIC_SEQ_CST);
    }
    pba_log("syscall interception: %s", pba_sys_mode());
    return 0;
}

int pba_sys_sud_threads(void) { return sud_threads; }

void pba_sys_thread_start(void)
{
    if (!mode || !sud_threads)
        return;
    uint64_t start, len;
    pba_self_text(&start, &len);
    /* a thread started after the release also begins with SUD: it catches whatever the scan
     * could not see until the thread's first syscall through a rewritten instruction */
    pba_sud_on = pba_raw_syscall(SYS_prctl, PR_SET_SYSCALL_USER_DISPATCH, SUD_ON, start, len,
                                 (long)&pba_sud_selector, 0) == 0;
}

void pba_sys_after_fork(void) { pba_sys_thread_start(); }

const char *pba_sys_mode(void) { return mode == 2 ? "zpoline" : mode == 1 ? "sud" : "off"; }

int pba_sys_mode_id(void) { return mode; }

void pba_sys_release(void) { __atomic_store_n(&pba_sud_release, 1, __ATOMIC_RELEASE); }

uint64_t pba_sys_stat(int which)
{
    return which == 0 ? stat_rewritten : which == 1 ? stat_sigsys : which == 2 ? stat_badnr : 0;
}

/* -- hook registry ---------------------------------------------------------------------------- */
static struct pba_hooklist **slot_for(int nr, int kind)
{
    if (nr < 0)
        return kind == PBA_SYS_ENTER ? &enter_all : &exit_all;
    return kind == PBA_SYS_ENTER ? &enter_tab[nr] : &exit_tab[nr];
}

/* pba_hooklist_with, but NULL for an empty list too: a syscall without hooks has no list */
static struct pba_hooklist *list_with(struct pba_hooklist *l, const struct pba_hook *add, int remove_id)
{
    struct pba_hooklist *nl = pba_hooklist_with(l, add, remove_id);
    if (nl && !nl->n) {
        free(nl);
        return NULL;
    }
    return nl;
}

int pba_sys_add(int nr, int kind, pba_fn fn, void *data, char *err, size_t errlen)
{
    if (nr >= NSYS || nr < -1 || (kind != PBA_SYS_ENTER && kind != PBA_SYS_EXIT)) {
        if (err)
            snprintf(err, errlen, "bad syscall hook (nr %d, kind %d)", nr, kind);
        return -1;
    }
    if (!mode) {
        if (err)
            snprintf(err, errlen, "syscall interception unavailable (no Syscall User Dispatch)");
        return -1;
    }
    if (!sud_threads && mode != 2) {
        if (setup_zpoline()) {
            if (err)
                snprintf(err, errlen, "a syscall hook attached after the target started needs page 0 "
                         "(zpoline: vm.mmap_min_addr=0 or CAP_SYS_RAWIO); attach before starting it");
            return -1;
        }
        mode = 2;
        pba_log("syscall interception: zpoline (rewritten instructions only)");
    }
    int saved = pba_in_agent;
    pba_in_agent = 1;
    pthread_mutex_lock(&mu);
    int id = -1;
    for (int i = 1; i < MAX_SYS_HOOKS; i++)
        if (!handles[i].used) {
            id = i;
            break;
        }
    if (id > 0) {
        struct pba_hook h = {.id = id, .kind = kind, .nr = nr, .fn = fn, .data = data};
        struct pba_hooklist **sl = slot_for(nr, kind);
        struct pba_hooklist *nl = list_with(*sl, &h, -1);
        if (nl) {
            __atomic_store_n(sl, nl, __ATOMIC_RELEASE);
            handles[id].used = 1;
            handles[id].nr = nr;
            handles[id].kind = kind;
            update_slow();
            if (nhooks++ == 0 && mode == 1)
                __atomic_store_n(&pba_sud_selector, SUD_BLOCK, __ATOMIC_SEQ_CST);
        } else {
            id = -1;
        }
    }
    pthread_mutex_unlock(&mu);
    pba_in_agent = saved;
    if (id < 0 && err)
        snprintf(err, errlen, "too many syscall hooks");
    return id;
}

int pba_sys_del(int id)
{
    if (id <= 0 || id >= MAX_SYS_HOOKS)
        return -1;
    int saved = pba_in_agent;
    pba_in_agent = 1;
    pthread_mutex_lock(&mu);
    int rc = -1;
    if (handles[id].used) {
        struct pba_hooklist **sl = slot_for(handles[id].nr, handles[id].kind);
        __atomic_store_n(sl, list_with(*sl, NULL, id), __ATOMIC_RELEASE);
        handles[id].used = 0;
        update_slow();
        /* the selector stays BLOCK: with ALLOW the target could block SIGSYS unseen, and a
         * later hook would then get the thread killed */
        --nhooks;
        rc = 0;
    }
    pthread_mutex_unlock(&mu);
    pba_in_agent = saved;
    return rc;
}
