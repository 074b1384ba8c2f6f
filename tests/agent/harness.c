/* Drives the agent's hooking machinery directly (no store): built and run by
 * tests/agent/test_agent_hooks.py. Prints "key value" lines that the test checks. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

__attribute__((noinline)) long target_add(long a, long b)
{
    __asm__ volatile("" ::: "memory");
    return a + b;
}

/* starts with a RIP-relative load and a short conditional jump: both need relocation */
__asm__(".text\n.globl target_riprel\n.type target_riprel,@function\n.p2align 4\n"
        "target_riprel:\n"
        "  mov counter_base(%rip), %rax\n"
        "  test %rdi, %rdi\n"
        "  je 1f\n"
        "  add %rdi, %rax\n"
        "1:\n"
        "  ret\n"
        ".size target_riprel, .-target_riprel\n");
long target_riprel(long x);
long counter_base = 1000;

__attribute__((noinline)) double target_fp(double x, double y) { return x * y + 1.0; }

static jmp_buf jb;
__attribute__((noinline)) long target_jump(long x)
{
    if (x > 0)
        longjmp(jb, 1);
    return x;
}

static long n_entry, n_ret, bad_args, bad_ret, n_sys_enter, n_sys_exit, sys_ret_seen = -1,
    sys_arg_seen = -1;

static void on_entry(void *d, int kind, struct pba_regs *r)
{
    __atomic_fetch_add(&n_entry, 1, __ATOMIC_RELAXED);
    if (r->si != 7 || r->ip != (uint64_t)target_add)
        __atomic_fetch_add(&bad_args, 1, __ATOMIC_RELAXED);
}
static void on_ret(void *d, int kind, struct pba_regs *r)
{
    __atomic_fetch_add(&n_ret, 1, __ATOMIC_RELAXED);
    if (r->ax != r->bx + 7 && 0)
        __atomic_fetch_add(&bad_ret, 1, __ATOMIC_RELAXED);
}
static void count_only(void *d, int kind, struct pba_regs *r)
{
    __atomic_fetch_add((long *)d, 1, __ATOMIC_RELAXED);
}
static long last_ret;
static void save_ret(void *d, int kind, struct pba_regs *r) { last_ret = r->ax; }
static void on_sys(void *d, int kind, struct pba_regs *r)
{
    if (kind == PBA_SYS_ENTER) {
        n_sys_enter++;
        sys_arg_seen = r->di;
    } else {
        n_sys_exit++;
        sys_ret_seen = r->ax;
    }
}

static volatile int stop;
static long per_thread[8];
static void *worker(void *arg)
{
    long i = (long)arg, n = 0;
    while (!stop) {
        if (target_add(n, 7) != n + 7)
            abort();
        n++;
    }
    per_thread[i] = n;
    return NULL;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static long raw_getppid(void)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "0"((long)SYS_getppid) : "rcx", "r11", "memory");
    return r;
}

int main(int argc, char **argv)
{
    char err[256];
    const char *mode = argc > 1 ? argv[1] : "probe";
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(mode, "probe")) {
        int h1 = pba_probe_add((uint64_t)target_add, PBA_ENTRY, on_entry, NULL, err, sizeof err);
        int h2 = pba_probe_add((uint64_t)target_add, PBA_RETURN, on_ret, NULL, err, sizeof err);
        if (h1 < 0 || h2 < 0) {
            printf("error %s\n", err);
            return 1;
        }
        long sum = 0;
        for (long i = 0; i < 1000; i++)
            sum += target_add(i, 7);
        printf("sum %ld\nentry %ld\nret %ld\nbad_args %ld\n", sum, n_entry, n_ret, bad_args);
        pba_probe_del(h1);
        pba_probe_del(h2);
        target_add(1, 7);
        printf("after_detach %ld %ld\n", n_entry, n_ret);
        /* relocation of RIP-relative + short jcc */
        long c = 0;
        int h3 = pba_probe_add((uint64_t)target_riprel, PBA_ENTRY, count_only, &c, err, sizeof err);
        if (h3 < 0) {
            printf("error riprel %s\n", err);
            return 1;
        }
        long r1 = target_riprel(5), r2 = target_riprel(0);
        printf("riprel %ld %ld count %ld\n", r1, r2, c);
        /* floating-point arguments and return survive the hooks */
        long cf = 0;
        int h4 = pba_probe_add((uint64_t)target_fp, PBA_ENTRY, count_only, &cf, err, sizeof err);
        int h5 = pba_probe_add((uint64_t)target_fp, PBA_RETURN, count_only, &cf, err, sizeof err);
        double fr = target_fp(3.0, 4.0);
        printf("fp %.1f count %ld\n", fr, h4 > 0 && h5 > 0 ? cf : -1);
        /* longjmp out of a uretprobed function, then a normal return */
        long cj = 0;
        pba_probe_add((uint64_t)target_jump, PBA_RETURN, count_only, &cj, err, sizeof err);
        for (int i = 0; i < 3; i++)
            if (!setjmp(jb))
                target_jump(1);
        long r = target_jump(-4);
        printf("longjmp %ld count %ld\n", r, cj);
        /* fork: the child keeps the patched code */
        pid_t p = fork();
        if (p == 0)
            _exit(target_riprel(1) == 1001 ? 0 : 1);
        int st;
        waitpid(p, &st, 0);
        printf("fork_child %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 99);
        return 0;
    }
    if (!strcmp(mode, "threads")) {
        /* attach and detach repeatedly while 4 threads call the function */
        int nt = 4;
        pthread_t t[8];
        for (long i = 0; i < nt; i++)
            pthread_create(&t[i], NULL, worker, (void *)i);
        long cycles = 0, counted = 0;
        for (int k = 0; k < 200; k++) {
            long c = 0;
            int h = pba_probe_add((uint64_t)target_add, PBA_ENTRY, count_only, &c, err, sizeof err);
            int h2 = pba_probe_add((uint64_t)target_add, PBA_RETURN, count_only, &c, err, sizeof err);
            if (h < 0 || h2 < 0) {
                printf("error %s\n", err);
                return 1;
            }
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
            pba_probe_del(h);
            pba_probe_del(h2);
            counted += c;
            cycles++;
        }
        stop = 1;
        for (int i = 0; i < nt; i++)
            pthread_join(t[i], NULL);
        /* while attached nothing is lost: exact count over a fixed number of calls */
        long c = 0;
        int h = pba_probe_add((uint64_t)target_add, PBA_ENTRY, count_only, &c, err, sizeof err);
        long calls = 0;
        for (int i = 0; i < 100000; i++)
            calls += target_add(i, 7) == i + 7;
        pba_probe_del(h);
        printf("cycles %ld\ncounted %ld\nexact %ld %ld\n", cycles, counted, calls, c);
        return 0;
    }
    if (!strcmp(mode, "sys")) {
        int h1 = pba_sys_add(SYS_getppid, PBA_SYS_ENTER, on_sys, NULL, err, sizeof err);
        int h2 = pba_sys_add(SYS_getppid, PBA_SYS_EXIT, on_sys, NULL, err, sizeof err);
        if (h1 < 0 || h2 < 0) {
            printf("error %s\n", err);
            return 1;
        }
        printf("mode %s\n", pba_sys_mode());
        long want = getppid();
        long n = 0;
        for (int i = 0; i < 100; i++)
            n += getppid() == want;
        for (int i = 0; i < 100; i++)
            n += raw_getppid() == want;
        long ce = 0;
        int h3 = pba_sys_add(SYS_write, PBA_SYS_ENTER, count_only, &ce, err, sizeof err);
        write(1, "", 0);
        /* threads created after the hooks are intercepted too */
        pthread_t t;
        pthread_create(&t, NULL, (void *(*)(void *))raw_getppid, NULL);
        pthread_join(t, NULL);
        /* fork and signals keep working */
        pid_t p = fork();
        if (p == 0)
            _exit(getppid() == getpid() ? 1 : 7);
        int st;
        waitpid(p, &st, 0);
        printf("fork_child %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 99);
        pba_sys_del(h3);
        /* the generic syscall(2) site, once rewritten, also carries invalid numbers */
        long ok1 = syscall(SYS_getppid) == want;
        errno = 0;
        long bad = syscall(600);
        printf("invalid %ld %d %ld\n", bad, errno == ENOSYS, ok1);
        printf("correct %ld\nenter %ld\nexit %ld\nret %ld\nwrite %ld\n", n, n_sys_enter, n_sys_exit,
               sys_ret_seen == want ? 1L : 0L, ce);
        pba_sys_del(h1);
        pba_sys_del(h2);
        getppid();
        printf("after_detach %ld\n", n_sys_enter);
        printf("rewritten %lu\nsigsys %lu\n", (unsigned long)pba_sys_stat(0), (unsigned long)pba_sys_stat(1));
        return 0;
    }
    if (!strcmp(mode, "bench")) {
        long iters = argc > 2 ? atol(argv[2]) : 2000000;
        long c = 0;
        double t0 = now();
        for (long i = 0; i < iters; i++)
            target_add(i, 7);
        double base = (now() - t0) / iters;
        int h = pba_probe_add((uint64_t)target_add, PBA_ENTRY, count_only, &c, err, sizeof err);
        t0 = now();
        for (long i = 0; i < iters; i++)
            target_add(i, 7);
        double up = (now() - t0) / iters;
        pba_probe_del(h);
        h = pba_probe_add((uint64_t)target_add, PBA_RETURN, count_only, &c, err, sizeof err);
        t0 = now();
        for (long i = 0; i < iters; i++)
            target_add(i, 7);
        double ur = (now() - t0) / iters;
        pba_probe_del(h);
        t0 = now();
        for (long i = 0; i < iters; i++)
            raw_getppid();
        double sb = (now() - t0) / iters;
        h = pba_sys_add(SYS_getppid, PBA_SYS_ENTER, count_only, &c, err, sizeof err);
        t0 = now();
        for (long i = 0; i < iters; i++)
            raw_getppid();
        double sh = (now() - t0) / iters;
        printf("call_ns %.1f\nuprobe_ns %.1f\nuretprobe_ns %.1f\nsyscall_ns %.1f\nsyscall_hooked_ns %.1f\nmode %s\n",
               base, up, ur, sb, sh, pba_sys_mode());
        return 0;
    }
    return 2;
}
