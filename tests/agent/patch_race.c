/* Regression harness for uprobe patching while a thread sits between two displaced
 * instructions (tests/agent/test_agent_patch_race.py).
 *
 * race_fn's first instruction is 3 bytes and its second one loads from a page registered with
 * userfaultfd: a worker calling it blocks in that fault with its RIP exactly at race_fn+3, the
 * middle of the 5 bytes the patch replaces, for as long as the test wants. The test attaches
 * a uprobe then, resolves the fault, and checks the worker finishes the call correctly. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent.h"

uint64_t pba_stw_stat(int which);

/* int race_fn(int *p, int x) { return x + 1 + *p; } with the load at +3 */
__asm__(".text\n"
        ".p2align 4\n"
        ".globl race_fn\n"
        ".type race_fn,@function\n"
        "race_fn:\n"
        "  lea 1(%rsi), %eax\n" /* 3 bytes */
        "  add (%rdi), %eax\n"  /* 2 bytes: the thread waits here */
        "  ret\n"
        ".size race_fn, .-race_fn\n");
int race_fn(int *p, int x);

/* an indirect call whose return address lies inside the 5 patched bytes: refused */
__asm__(".text\n"
        ".p2align 4\n"
        ".globl icall_fn\n"
        ".type icall_fn,@function\n"
        "icall_fn:\n"
        "  call *%rdi\n" /* 2 bytes */
        "  nop\n  nop\n  nop\n"
        "  ret\n"
        ".size icall_fn, .-icall_fn\n");
void icall_fn(void (*f)(void));

static int *page;
static volatile int result = -1;

static void *worker(void *arg)
{
    (void)arg;
    result = race_fn(page, 41);
    return NULL;
}

static long n_entry;
static void on_entry(void *data, int kind, struct pba_regs *regs)
{
    (void)data;
    (void)kind;
    if (regs->ip == (uint64_t)race_fn)
        n_entry++;
}

static volatile int stop_blocker, blocker_ready;
static void *blocker(void *arg)
{
    (void)arg;
    /* the raw syscall bypasses the agent's sigprocmask filter */
    uint64_t set = 1ull << (63 - 1);
    syscall(SYS_rt_sigprocmask, SIG_BLOCK, &set, NULL, 8);
    blocker_ready = 1;
    while (!stop_blocker)
        usleep(1000);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "attach";
    char err[256];
    if (!strcmp(mode, "icall")) {
        int h = pba_probe_add((uint64_t)icall_fn, PBA_ENTRY, on_entry, NULL, err, sizeof err);
        printf("handle %d\nerror %s\n", h, h < 0 ? err : "-");
        return 0;
    }
    if (!strcmp(mode, "blocked")) {
        /* a thread that cannot be stopped: the attach is refused, nothing is patched */
        pthread_t b;
        pthread_create(&b, NULL, blocker, NULL);
        while (!blocker_ready)
            usleep(1000);
        int h = pba_probe_add((uint64_t)race_fn, PBA_ENTRY, on_entry, NULL, err, sizeof err);
        printf("handle %d\nerror %s\npatched_byte %02x\n", h, h < 0 ? err : "-", *(volatile uint8_t *)race_fn);
        stop_blocker = 1;
        pthread_join(b, NULL);
        int one = 1;
        printf("again %d %ld\n", race_fn(&one, 1), n_entry);
        return 0;
    }
    long uffd = syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
    if (uffd < 0) {
        printf("skip userfaultfd: %s\n", strerror(errno));
        return 0;
    }
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl(uffd, UFFDIO_API, &api)) {
        printf("skip UFFDIO_API: %s\n", strerror(errno));
        return 0;
    }
    page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct uffdio_register reg = {.range = {(uint64_t)page, 4096}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg)) {
        printf("skip UFFDIO_REGISTER: %s\n", strerror(errno));
        return 0;
    }
    int h = -1;
    if (!strcmp(mode, "detach")) {
        /* detach while the worker waits at +3 of the relocated copy in the trampoline */
        h = pba_probe_add((uint64_t)race_fn, PBA_ENTRY, on_entry, NULL, err, sizeof err);
        if (h < 0) {
            printf("error %s\n", err);
            return 1;
        }
    }
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    /* the fault message proves the worker is parked on the load */
    struct uffd_msg msg;
    if (read(uffd, &msg, sizeof msg) != sizeof msg || msg.event != UFFD_EVENT_PAGEFAULT) {
        printf("error uffd read\n");
        return 1;
    }
    if (!strcmp(mode, "detach")) {
        pba_probe_del(h);
    } else {
        h = pba_probe_add((uint64_t)race_fn, PBA_ENTRY, on_entry, NULL, err, sizeof err);
        if (h < 0) {
            printf("error %s\n", err);
            return 1;
        }
    }
    uint8_t first = *(volatile uint8_t *)race_fn;
    /* the worker retries the load where it now is; let it finish */
    struct uffdio_zeropage zp = {.range = {(uint64_t)page, 4096}};
    if (ioctl(uffd, UFFDIO_ZEROPAGE, &zp)) {
        printf("error UFFDIO_ZEROPAGE: %s\n", strerror(errno));
        return 1;
    }
    pthread_join(t, NULL);
    long before = n_entry;
    int again = race_fn(page, 1);
    printf("patched_byte %02x\nworker %d\nmoved %lu\nentry_before %ld\nagain %d %ld\n", first, result,
           (unsigned long)pba_stw_stat(0), before, again, n_entry - before);
    /* the agent's signal is not the target's */
    struct sigaction sa = {.sa_handler = SIG_IGN};
    printf("sigaction63 %d\n", sigaction(63, &sa, NULL) == -1 && errno == EINVAL);
    return 0;
}
