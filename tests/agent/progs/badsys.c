/* Target for tests/agent/test_agent_badsys.py: invalid raw syscall numbers through one
 * `syscall` instruction (rewritten by the agent after its first, valid, use), and the target's
 * own SIGSEGV handler on real faults. Prints "key value" lines. */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

long raw(long nr);
extern const unsigned char raw_site[];
/* with unwind info, so that the agent's scan for late hooks finds and rewrites it too */
__asm__(".text\n.globl raw\n.type raw,@function\nraw:\n.cfi_startproc\n"
        "  mov %rdi, %rax\n"
        ".globl raw_site\nraw_site:\n"
        "  syscall\n"
        "  ret\n.cfi_endproc\n.size raw, .-raw\n");

static sigjmp_buf jb;
static volatile long hits;
static volatile uintptr_t fault_addr;
static void on_segv(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    hits++;
    fault_addr = (uintptr_t)si->si_addr;
    siglongjmp(jb, sig);
}

static void bad_numbers(const char *tag)
{
    static const long nrs[] = {-1, -100, 503, 504, 512, 505, 508, 509, 513, 520, 524, 600, 4085,
                               4094, 4095, 4096, 5000, 0x40000000 | 39, 0x40000000 | 600,
                               0x4000000000000000, (long)0x8000000000000000};
    for (size_t i = 0; i < sizeof nrs / sizeof nrs[0]; i++)
        printf("%s%lx %ld\n", tag, nrs[i], raw(nrs[i]));
    /* libc's generic wrapper too */
    errno = 0;
    long r = syscall(5000);
    printf("%slibc5000 %ld %d\n", tag, r, errno);
}

/* The carry flag across a syscall without a hook (the kernel keeps the flags; so must the
 * rewritten site's fast path). Run twice: the first time traps and rewrites. */
static int carry_kept(void)
{
    int ok = 1;
    for (int i = 0; i < 2; i++) {
        unsigned char c;
        long r;
        __asm__ volatile("stc\n\tsyscall\n\tsetc %1" : "=a"(r), "=q"(c) : "0"((long)SYS_getpid)
                         : "rcx", "r11", "memory", "cc");
        ok &= c == 1 && r == getpid();
    }
    return ok;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "bad";
    long ppid = raw(SYS_getppid); /* first use: the agent rewrites the instruction */
    printf("getppid_ok %d\n", ppid == getppid());
    if (!strcmp(mode, "bad")) {
        bad_numbers("");
        printf("after %d\n", raw(SYS_getppid) == getppid());
        printf("carry_kept %d\n", carry_kept());
    } else if (!strcmp(mode, "chain")) {
        struct sigaction sa, old;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO;
        sigaddset(&sa.sa_mask, SIGUSR1);
        sigaction(SIGSEGV, &sa, NULL);
        sigaction(SIGSEGV, NULL, &old);
        printf("view %d %d %d\n", old.sa_sigaction == on_segv, (old.sa_flags & SA_SIGINFO) != 0,
               sigismember(&old.sa_mask, SIGUSR1));
        /* bad pointers and sizes are refused as by the kernel, and change nothing */
        long e1 = syscall(SYS_rt_sigaction, SIGSEGV, (void *)0x1238, NULL, 8);
        int er1 = errno;
        long e2 = syscall(SYS_rt_sigaction, SIGSEGV, &sa, NULL, 4);
        int er2 = errno;
        printf("refused %ld %d %ld %d\n", e1, er1 == EFAULT, e2, er2 == EINVAL);
        /* a NULL-style write (page 0 may be mapped, never writable) and a read of an unmapped
         * address: both reach this handler with their address */
        if (!sigsetjmp(jb, 1))
            *(volatile int *)16 = 1;
        printf("null_write %ld %lx\n", (long)hits, (unsigned long)fault_addr);
        if (!sigsetjmp(jb, 1))
            (void)*(volatile int *)(uintptr_t)0x1230;
        printf("unmapped_read %ld %lx\n", (long)hits, (unsigned long)fault_addr);
        /* the target's handler does not see the invalid numbers */
        bad_numbers("chain_");
        printf("hits_after %ld\n", (long)hits);
        /* a sent SIGSEGV reaches it as well, with its sender */
        if (!sigsetjmp(jb, 1))
            kill(getpid(), SIGSEGV);
        printf("sent %ld\n", (long)hits);
        signal(SIGSEGV, SIG_DFL);
        sigaction(SIGSEGV, NULL, &old);
        printf("dfl %d\n", old.sa_handler == SIG_DFL);
    } else if (!strcmp(mode, "late")) {
        /* handler first; the syscall hook (and with it the agent's handler) comes later */
        struct sigaction sa, old;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, NULL);
        printf("ready 1\n");
        fflush(stdout);
        for (int i = 0; i < 2000 && raw_site[0] != 0xff; i++)
            usleep(5000);
        raw(SYS_getppid);
        sigaction(SIGSEGV, NULL, &old);
        printf("view %d\n", old.sa_sigaction == on_segv);
        if (!sigsetjmp(jb, 1))
            *(volatile int *)16 = 1;
        printf("null_write %ld %lx\n", (long)hits, (unsigned long)fault_addr);
        bad_numbers("late_");
        printf("hits_after %ld\n", (long)hits);
    } else if (!strcmp(mode, "crash")) {
        fflush(stdout);
        *(volatile int *)16 = 1; /* no handler: killed by SIGSEGV, as without the agent */
        printf("survived\n");
    }
    printf("rewritten %d\n", raw_site[0] == 0xff && raw_site[1] == 0xd0);
    fflush(stdout);
    return 0;
}
