/* Stop-the-world around uprobe patch writes.
 *
 * A thread preempted between two instructions that a patch displaces (its RIP at entry+k,
 * 0 < k < displaced length) would resume inside the new `jmp rel32`. Before the patch is
 * written the patcher sends PBA_STW_SIG with tgkill to every other thread; the handler moves
 * such a RIP to the same instruction in the trampoline's relocated copy, counts itself in and
 * waits on a futex until the patcher has written the patch and releases everyone. A thread
 * that does not answer in time (signal blocked, uninterruptible sleep) makes the patcher
 * release the others and retry; after the retries the patch is refused, never risked.
 *
 * Only the attach/detach path runs this; the probe fast path is untouched. The handler uses
 * raw syscalls from the agent's text only (never intercepted) and no locks, so stopping a
 * thread inside malloc or inside the agent is harmless: the patcher touches neither.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "agent.h"
#include "stw.h"

#define MAX_TIDS 4096
#define WAIT_NS 300000000L /* per round: a runnable thread under heavy load still gets there */
#define ROUNDS 3

/* state: round << 1 | active. gate: round << 16 | closed << 15 | threads counted in. */
static uint32_t state, gate, done;
static struct pba_stw_move mv_cur;
static int installed;
static int tids[MAX_TIDS], ntids;
static uint64_t stat_moved, stat_stops;

static long futex(uint32_t *w, int op, uint32_t val, const struct timespec *ts)
{
    return pba_raw_syscall(SYS_futex, (long)w, op | FUTEX_PRIVATE_FLAG, val, (long)ts, 0, 0);
}

static void on_stw(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)si;
    uint32_t s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (!(s & 1))
        return; /* a late delivery of a round that is over */
    uint32_t round = (s >> 1) & 0xffff, g = __atomic_load_n(&gate, __ATOMIC_ACQUIRE);
    do {
        if ((g >> 16) != round || (g & 0x8000))
            return; /* the patcher gave up on this round: leave the thread as it is */
    } while (!__atomic_compare_exchange_n(&gate, &g, g + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
    /* counted in: the move table stays as it is until `done` reaches the count */
    ucontext_t *uc = ctx;
    uint64_t rip = (uint64_t)uc->uc_mcontext.gregs[REG_RIP];
    if (mv_cur.len && rip > mv_cur.lo && rip < mv_cur.lo + (uint64_t)mv_cur.len && mv_cur.dest[rip - mv_cur.lo]) {
        uc->uc_mcontext.gregs[REG_RIP] = (greg_t)mv_cur.dest[rip - mv_cur.lo];
        __atomic_add_fetch(&stat_moved, 1, __ATOMIC_RELAXED);
    }
    __atomic_add_fetch(&done, 1, __ATOMIC_RELEASE);
    futex(&done, FUTEX_WAKE, 1, NULL);
    while (__atomic_load_n(&state, __ATOMIC_ACQUIRE) == s)
        futex(&state, FUTEX_WAIT, s, NULL);
}

/* The handler returns through this restorer in the agent's text: under Syscall User Dispatch
 * its rt_sigreturn is not intercepted (libc's restorer would be). */
__asm__(".text\n"
        "pba_stw_restorer:\n"
        "  mov $15, %eax\n"
        "  syscall\n"
        "  ud2\n");
extern char pba_stw_restorer[];

static int install(void)
{
    if (installed)
        return 0;
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } ka = {(void *)on_stw,
            /* SA_RESTART: a syscall the stop interrupts restarts where the kernel can */
            SA_SIGINFO | SA_RESTART | 0x04000000 /* SA_RESTORER */, (void *)pba_stw_restorer,
            ~(1ull << (SIGSYS - 1)) /* Syscall User Dispatch must reach its handler */};
    if (pba_raw_syscall(SYS_rt_sigaction, PBA_STW_SIG, (long)&ka, 0, 8, 0, 0) < 0)
        return -1;
    installed = 1;
    return 0;
}

static int known(int tid)
{
    for (int i = 0; i < ntids; i++)
        if (tids[i] == tid)
            return 1;
    return 0;
}

/* Signals the threads of /proc/self/task not signalled yet this round: count, or -1. */
static int signal_new(int self, int pid)
{
    static char buf[16384];
    long fd = pba_raw_syscall(SYS_openat, AT_FDCWD, (long)"/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC,
                              0, 0, 0);
    if (fd < 0)
        return -1;
    int sent = 0;
    for (;;) {
        long n = pba_raw_syscall(SYS_getdents64, fd, (long)buf, sizeof buf, 0, 0, 0);
        if (n <= 0) {
            if (n < 0)
                sent = -1;
            break;
        }
        for (long off = 0; off < n;) {
            struct dirent64 *d = (struct dirent64 *)(buf + off);
            off += d->d_reclen;
            int tid = 0;
            for (const char *c = d->d_name; *c >= '0' && *c <= '9'; c++)
                tid = tid * 10 + (*c - '0');
            if (tid <= 0 || tid == self || known(tid))
                continue;
            if (ntids == MAX_TIDS) {
                sent = -1;
                goto out;
            }
            tids[ntids++] = tid;
            long r = pba_raw_syscall(SYS_tgkill, pid, tid, PBA_STW_SIG, 0, 0, 0);
            if (r == 0)
                sent++;
            else if (r != -ESRCH) { /* e.g. EAGAIN, the queue of pending signals is full */
                sent = -1;
                goto out;
            }
        }
    }
out:
    pba_raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0);
    return sent;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    pba_raw_syscall(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&ts, 0, 0, 0, 0);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Waits until `done` reaches want or the deadline passes: 0 or -1. */
static int wait_done(uint32_t want, int64_t deadline)
{
    for (;;) {
        uint32_t d = __atomic_load_n(&done, __ATOMIC_ACQUIRE);
        if (d >= want)
            return 0;
        int64_t left = deadline - now_ns();
        if (left <= 0)
            return -1;
        struct timespec ts = {left / 1000000000, left % 1000000000};
        futex(&done, FUTEX_WAIT, d, &ts);
    }
}

static uint32_t round_no;

static void release(void)
{
    round_no = (round_no + 1) & 0xffff;
    __atomic_store_n(&state, round_no << 1, __ATOMIC_RELEASE);
    futex(&state, FUTEX_WAKE, 0x7fffffff, NULL);
}

int pba_stw_stop(const struct pba_stw_move *mv, char *err, size_t errlen)
{
    if (install()) {
        snprintf(err, errlen, "cannot install the agent's stop signal %d", PBA_STW_SIG);
        return -1;
    }
    int self = (int)pba_raw_syscall(SYS_gettid, 0, 0, 0, 0, 0, 0);
    int pid = (int)pba_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0);
    int missing = 0, failed = 0;
    for (int r = 0; r < ROUNDS; r++) {
        mv_cur = *mv;
        ntids = 0;
        __atomic_store_n(&done, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&gate, round_no << 16, __ATOMIC_RELEASE);
        __atomic_store_n(&state, round_no << 1 | 1, __ATOMIC_RELEASE);
        int64_t deadline = now_ns() + WAIT_NS;
        uint32_t sent = 0;
        int ok = 0;
        /* again until no thread appears: one created meanwhile was not signalled */
        for (;;) {
            int n = signal_new(self, pid);
            if (n < 0) {
                failed = 1;
                break;
            }
            if (n == 0) {
                ok = 1;
                break;
            }
            sent += n;
            if (wait_done(sent, deadline))
                break;
        }
        if (ok) {
            __atomic_add_fetch(&stat_stops, 1, __ATOMIC_RELAXED);
            return 0;
        }
        /* close the round; those already counted in finish their move before release */
        uint32_t g = __atomic_fetch_or(&gate, 0x8000, __ATOMIC_ACQ_REL);
        while (__atomic_load_n(&done, __ATOMIC_ACQUIRE) < (g & 0x7fff))
            pba_raw_syscall(SYS_sched_yield, 0, 0, 0, 0, 0, 0);
        missing = (int)(sent - (g & 0x7fff));
        release();
    }
    if (failed && !missing)
        snprintf(err, errlen, "cannot list or signal the threads (/proc/self/task, tgkill %d)", PBA_STW_SIG);
    else
        snprintf(err, errlen,
             "%d thread(s) did not stop for the patch within %d x %ld ms (signal %d blocked, or "
             "uninterruptible sleep); not patched",
             missing, ROUNDS, WAIT_NS / 1000000, PBA_STW_SIG);
    return -1;
}

void pba_stw_resume(void) { release(); }

/* For tests: 0 = threads moved into a trampoline, 1 = successful stops. */
uint64_t pba_stw_stat(int which) { return which == 0 ? stat_moved : stat_stops; }

/* The target may not take the agent's signal: installing a handler for it fails with EINVAL,
 * and blocking it is dropped from the mask (a thread that blocks it by a raw syscall makes
 * attach/detach fail instead). */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    static int (*real)(int, const struct sigaction *, struct sigaction *);
    if (!real)
        real = (int (*)(int, const struct sigaction *, struct sigaction *))dlsym(RTLD_NEXT, "sigaction");
    if (sig == PBA_STW_SIG && act) {
        errno = EINVAL;
        return -1;
    }
    return real(sig, act, old);
}

sighandler_t signal(int sig, sighandler_t h)
{
    static sighandler_t (*real)(int, sighandler_t);
    if (!real)
        real = (sighandler_t(*)(int, sighandler_t))dlsym(RTLD_NEXT, "signal");
    if (sig == PBA_STW_SIG) {
        errno = EINVAL;
        return SIG_ERR;
    }
    return real(sig, h);
}

int pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
{
    static int (*real)(int, const sigset_t *, sigset_t *);
    if (!real)
        real = (int (*)(int, const sigset_t *, sigset_t *))dlsym(RTLD_NEXT, "pthread_sigmask");
    sigset_t s;
    if (set && how != SIG_UNBLOCK) {
        s = *set;
        sigdelset(&s, PBA_STW_SIG);
        set = &s;
    }
    return real(how, set, old);
}

int sigprocmask(int how, const sigset_t *set, sigset_t *old)
{
    int r = pthread_sigmask(how, set, old);
    if (r) {
        errno = r;
        return -1;
    }
    return 0;
}
