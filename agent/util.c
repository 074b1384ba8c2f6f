/* Agent utilities: raw syscalls (from the agent's own text, which Syscall User Dispatch
 * exempts), the diagnostic log, page protection for patches, /proc/self/maps. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

__thread int pba_in_agent __attribute__((tls_model("initial-exec")));

__asm__(".text\n"
        ".globl pba_raw_syscall\n"
        ".type pba_raw_syscall,@function\n"
        "pba_raw_syscall:\n"
        "  mov %rdi, %rax\n"
        "  mov %rsi, %rdi\n"
        "  mov %rdx, %rsi\n"
        "  mov %rcx, %rdx\n"
        "  mov %r8, %r10\n"
        "  mov %r9, %r8\n"
        "  mov 8(%rsp), %r9\n"
        "  syscall\n"
        "  ret\n"
        ".size pba_raw_syscall, .-pba_raw_syscall\n");

#define RAW0(n) pba_raw_syscall((n), 0, 0, 0, 0, 0, 0)

static int log_fd = -1;

void pba_log_open(const char *path)
{
    if (!path || !*path)
        return;
    long fd = pba_raw_syscall(SYS_openat, AT_FDCWD, (long)path,
                              O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600, 0, 0);
    if (fd >= 0) {
        /* keep it away from the small numbers the target may dup2 over */
        long hi = pba_raw_syscall(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 500, 0, 0, 0);
        if (hi >= 0) {
            pba_raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0);
            fd = hi;
        }
        log_fd = (int)fd;
    }
}

void pba_log(const char *fmt, ...)
{
    if (log_fd < 0)
        return;  /* never the target's stdout/stderr */
    char buf[512];
    int n = snprintf(buf, sizeof buf, "pybpfc-agent[%ld]: ", RAW0(SYS_getpid));
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += m;
    if (n > (int)sizeof buf - 2)
        n = sizeof buf - 2;
    buf[n++] = '\n';
    pba_raw_syscall(SYS_write, log_fd, (long)buf, n, 0, 0, 0);
}

/* -- page protection ---------------------------------------------------------------------- */
static pthread_mutex_t maps_mu = PTHREAD_MUTEX_INITIALIZER;
static char maps_buf[1 << 20];

void pba_maps_lock(void) { pthread_mutex_lock(&maps_mu); }
void pba_maps_unlock(void) { pthread_mutex_unlock(&maps_mu); }

const char *pba_read_maps(size_t *len)
{
    long fd = pba_raw_syscall(SYS_openat, AT_FDCWD, (long)"/proc/self/maps", O_RDONLY | O_CLOEXEC,
                              0, 0, 0);
    size_t n = 0;
    if (fd >= 0) {
        for (;;) {
            long r = pba_raw_syscall(SYS_read, fd, (long)(maps_buf + n), sizeof maps_buf - 1 - n,
                                     0, 0, 0);
            if (r <= 0)
                break;
            n += r;
            if (n >= sizeof maps_buf - 1)
                break;
        }
        pba_raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0);
    }
    maps_buf[n] = 0;
    *len = n;
    return maps_buf;
}

/* Patches (uprobe jumps, rewritten syscalls) change page protections for a moment: one at a
 * time process-wide, or a second patcher could see the first one's temporary RWX as the
 * page's own protection and leave the page writable - or restore R-X under its feet. Signals
 * are blocked meanwhile (the code inside makes raw syscalls only), so a signal handler's
 * syscall cannot re-enter here on the same thread. */
static int patch_busy;
static uint64_t patch_oldmask;
static char wr_buf[1 << 20];

static void patch_lock(void)
{
    uint64_t all = ~0ull, old;
    pba_raw_syscall(SYS_rt_sigprocmask, SIG_BLOCK, (long)&all, (long)&old, 8, 0, 0);
    while (__atomic_exchange_n(&patch_busy, 1, __ATOMIC_ACQUIRE))
        pba_raw_syscall(SYS_sched_yield, 0, 0, 0, 0, 0, 0);
    patch_oldmask = old;
}

static void patch_unlock(void)
{
    uint64_t old = patch_oldmask;
    __atomic_store_n(&patch_busy, 0, __ATOMIC_RELEASE);
    pba_raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, (long)&old, 0, 8, 0, 0);
}

void pba_patch_lock_reset(void) { patch_busy = 0; }

/* Is the page containing addr mapped writable? Parsed from /proc/self/maps (patch lock held). */
static int page_writable(uint64_t addr)
{
    int w = 0;
    long fd = pba_raw_syscall(SYS_openat, AT_FDCWD, (long)"/proc/self/maps", O_RDONLY | O_CLOEXEC, 0, 0, 0);
    size_t n = 0;
    if (fd >= 0) {
        long r;
        while (n < sizeof wr_buf - 1 &&
               (r = pba_raw_syscall(SYS_read, fd, (long)(wr_buf + n), sizeof wr_buf - 1 - n, 0, 0, 0)) > 0)
            n += r;
        pba_raw_syscall(SYS_close, fd, 0, 0, 0, 0, 0);
    }
    wr_buf[n] = 0;
    const char *p = wr_buf, *end = wr_buf + n;
    while (p < end) {
        unsigned long a = strtoul(p, (char **)&p, 16);
        unsigned long b = strtoul(p + 1, (char **)&p, 16);
        if (addr >= a && addr < b) {
            w = p[2] == 'w';
            break;
        }
        const char *nl = memchr(p, '\n', end - p);
        if (!nl)
            break;
        p = nl + 1;
    }
    return w;
}

int pba_protect_rw(uint64_t addr, uint64_t len, int *was_writable)
{
    uint64_t pg = addr & ~4095ull, end = (addr + len + 4095) & ~4095ull;
    patch_lock();
    *was_writable = page_writable(addr) && page_writable(addr + len - 1);
    if (*was_writable)
        return 0;
    /* exec stays on throughout: another thread may be running this very page */
    long r = pba_raw_syscall(SYS_mprotect, pg, end - pg, PROT_READ | PROT_WRITE | PROT_EXEC, 0, 0, 0);
    if (r < 0) {
        patch_unlock();
        return -1;
    }
    return 0;
}

void pba_protect_restore(uint64_t addr, uint64_t len, int was_writable)
{
    if (!was_writable) {
        uint64_t pg = addr & ~4095ull, end = (addr + len + 4095) & ~4095ull;
        pba_raw_syscall(SYS_mprotect, pg, end - pg, PROT_READ | PROT_EXEC, 0, 0, 0);
    }
    patch_unlock();
}

/* -- the agent's own executable range ----------------------------------------------------- */
static uint64_t self_start, self_len;

static int phdr_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    uint64_t me = (uint64_t)(uintptr_t)data;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uint64_t a = info->dlpi_addr + ph->p_vaddr, b = a + ph->p_memsz;
        if (me >= a && me < b) {
            self_start = a & ~4095ull;
            self_len = ((b + 4095) & ~4095ull) - self_start;
            return 1;
        }
    }
    return 0;
}

void pba_self_text(uint64_t *start, uint64_t *len)
{
    if (!self_len)
        dl_iterate_phdr(phdr_cb, (void *)(uintptr_t)&pba_raw_syscall);
    *start = self_start;
    *len = self_len;
}

struct pba_hooklist *pba_hooklist_with(const struct pba_hooklist *l, const struct pba_hook *add,
                                       int remove_id)
{
    int n = l ? l->n : 0;
    struct pba_hooklist *nl = malloc(sizeof *nl + (n + 1) * sizeof(struct pba_hook));
    if (!nl)
        return NULL;
    nl->n = 0;
    for (int i = 0; i < n; i++)
        if (l->h[i].id != remove_id)
            nl->h[nl->n++] = l->h[i];
    if (add)
        nl->h[nl->n++] = *add;
    return nl;
}
