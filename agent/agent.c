/* The agent's start-up and its link to the shared-memory store.
 *
 * Environment (set by UserspaceBackend.spawn / `pybpfc exec`):
 *   PYBPFC_STORE         path of the store (/dev/shm/... or /proc/<pid>/fd/<n>); it may not
 *                        exist yet: the agent then checks for it every 20 ms
 *   PYBPFC_AGENT_LOG     diagnostics file (the agent never writes to stdout/stderr)
 *   PYBPFC_AGENT_FOLLOW  "0": children are not traced (the agent removes itself from the
 *                        environment, and forked children run hooks as no-ops)
 *   PYBPFC_AGENT_POLL_MS how often the store's link generation is checked (default 5)
 *
 * At start-up the links already in the store are installed before main() runs; a background
 * thread then applies attach/detach within one poll period. Every failure (no store, a probe
 * that cannot be patched, a program that faults) is logged and the target runs on.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "pybpfc_store.h"
#include "syscall_names.h"

void pba_log_open(const char *path);

/* The store API comes from runtime/store.c, linked into the agent; weak so that the hooking
 * machinery still loads (and its tests run) where the runtime is incomplete. */
#pragma weak pbs_open
#pragma weak pbs_link
#pragma weak pbs_prog
#pragma weak pbs_prog_map_jit
#pragma weak pbs_exec_setup
#pragma weak pbs_helpers
#pragma weak pbr_vm_exec

static struct pbs_store *S;
static char store_path[PBS_PATH_LEN];
static int poll_ms = 5;
static int follow = 1;
static int disabled;   /* forked child of a target started with follow=0 */
static long my_pid;
static __thread long my_tid __attribute__((tls_model("initial-exec")));
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t seen_gen = ~0ull;
static int have_pending;
static int scan_wanted, scanned, keep_sud;

struct alink {
    int active;
    int pending;           /* uprobe whose binary is not mapped (yet) */
    uint64_t gen;          /* generation installed (or refused) */
    int refused;
    uint32_t kind, prog_id;
    uint64_t cookie;
    int raw, nr;
    int h[2];
    int nh;
    int logged_fault;
    struct pbs_link *rec;
    /* run set-up done once at attach time (pbs_prog_run does it per run): the map handles
     * and map value regions; each hit copies the used part of run_tpl */
    struct pbs_prog *prog;
    uint64_t jit;
    uint32_t nbase;
    struct pbr_run run_tpl;
    struct pbs_exec ex_tpl;
};
static struct alink L[PBS_MAX_LINKS + 1];

static long tid(void)
{
    if (!my_tid)
        my_tid = pba_raw_syscall(SYS_gettid, 0, 0, 0, 0, 0, 0);
    return my_tid;
}

/* -- running programs ------------------------------------------------------------------------ */
struct tp_enter {
    uint16_t type;
    uint8_t flags, preempt;
    int32_t pid;
    int32_t nr;
    int32_t _pad;
    uint64_t args[6];
};
struct tp_exit {
    uint16_t type;
    uint8_t flags, preempt;
    int32_t pid;
    int32_t nr;
    int32_t _pad;
    int64_t ret;
};

/* The hot path of every hit: no libc calls (memcpy/memset would also touch vector registers
 * beyond the xmm0-15 the entry saves), no locks. */
__attribute__((optimize("no-tree-loop-distribute-patterns"))) static void on_hook(void *data, int kind,
                                                                                  struct pba_regs *regs)
{
    struct alink *l = data;
    if (disabled || !l->active || !S)
        return;
    uint64_t ctx, len;
    struct pbr_region reg[2];
    int nreg = 1;
    struct tp_enter te;
    struct tp_exit tx;
    uint64_t raw[2];
    if (kind == PBA_ENTRY || kind == PBA_RETURN) {
        ctx = (uint64_t)regs;
        len = sizeof *regs;
    } else if (l->raw) {
        raw[0] = (uint64_t)regs;
        raw[1] = kind == PBA_SYS_ENTER ? regs->orig_ax : regs->ax;
        ctx = (uint64_t)raw;
        len = sizeof raw;
        reg[1] = (struct pbr_region){(uint64_t)regs, (uint64_t)regs + sizeof *regs, PBR_PERM_R, 0};
        nreg = 2;
    } else if (kind == PBA_SYS_ENTER) {
        te.type = 0;
        te.flags = te.preempt = 0;
        te._pad = 0;
        te.pid = (int32_t)tid();
        te.nr = (int32_t)regs->orig_ax;
        te.args[0] = regs->di; te.args[1] = regs->si; te.args[2] = regs->dx;
        te.args[3] = regs->r10; te.args[4] = regs->r8; te.args[5] = regs->r9;
        ctx = (uint64_t)&te;
        len = sizeof te;
    } else {
        tx.type = 0;
        tx.flags = tx.preempt = 0;
        tx._pad = 0;
        tx.pid = (int32_t)tid();
        tx.nr = (int32_t)regs->orig_ax;
        tx.ret = (int64_t)regs->ax;
        ctx = (uint64_t)&tx;
        len = sizeof tx;
    }
    reg[0] = (struct pbr_region){ctx, ctx + len, PBR_PERM_R, 0};
    struct pbs_exec ex; /* only the head: the map arrays stay in the template */
    ex.store = S;
    ex.prog = l->prog;
    ex.cookie = l->cookie;
    ex.tail_calls = 0;
    ex.nbase = l->nbase;
    ex.func_ip = kind == PBA_ENTRY ? regs->ip : 0;
    struct pbr_run run;
    const struct pbr_run *tpl = &l->run_tpl;
    uint32_t nr = tpl->nregions;
    run.helpers = tpl->helpers;
    run.maps = tpl->maps;
    run.map_values = tpl->map_values;
    run.budget = tpl->budget;
    run.status = tpl->status;
    run.nregions = nr;
    run.exit_value = tpl->exit_value;
    run.fault_addr = tpl->fault_addr;
    run.fault_pc = tpl->fault_pc;
    run.invoke = tpl->invoke;
    run.engine = tpl->engine;
    for (uint32_t i = nreg; i < nr; i++)
        run.regions[i] = tpl->regions[i];
    run.helper_ctx = &ex;
    run.ctx = ctx;
    run.regions[0] = reg[0];
    if (nreg > 1)
        run.regions[1] = reg[1];
    if (l->jit)
        ((uint64_t(*)(struct pbr_run *, uint64_t, uint64_t))l->jit)(&run, ctx, len);
    else
        pbr_vm_exec((const uint64_t *)(S->base + l->prog->insns_off), l->prog->ninsns, &run, ctx, len);
    struct pbs_link *rec = l->rec;
    __atomic_fetch_add(&rec->hits, 1, __ATOMIC_RELAXED);
    if (run.status != PBR_OK && run.status != PBR_EXIT) {
        __atomic_fetch_add(&rec->errors, 1, __ATOMIC_RELAXED);
        if (!__atomic_exchange_n(&l->logged_fault, 1, __ATOMIC_RELAXED))
            pba_log("link %u: program %u stopped (status %u, insn %lu, address 0x%lx); the target "
                    "continues", rec->id, l->prog_id, run.status, (unsigned long)run.fault_pc,
                    (unsigned long)run.fault_addr);
    }
}

/* The per-link part of a run: what pbs_prog_run would compute on every call. */
static int prepare_run(struct alink *l, struct pbs_link *rec, char *err, size_t errlen)
{
    struct pbs_prog *p = pbs_prog(S, rec->prog_id);
    if (!p || !pbs_exec_setup || !pbs_helpers) {
        snprintf(err, errlen, "program %u is not in the store", rec->prog_id);
        return -1;
    }
    /* map the code once per program: mapping again would unmap what other links (and threads
     * inside them) use */
    uint32_t i = rec->prog_id - 1;
    if (pbs_prog_map_jit && p->jit_off && (!S->jit_fn[i] || S->jit_serial[i] != p->serial))
        pbs_prog_map_jit(S, rec->prog_id);
    l->jit = p->jit_off && S->jit_serial[i] == p->serial ? S->jit_fn[i] : 0; /* 0: the interpreter */
    if (!l->jit && !pbr_vm_exec) {
        snprintf(err, errlen, "program %u has no JIT code and no interpreter is linked", rec->prog_id);
        return -1;
    }
    l->prog = p;
    l->nbase = rec->kind == PBS_LINK_RAW_TRACEPOINT ? 2 : 1;
    memset(&l->run_tpl, 0, sizeof l->run_tpl);
    memset(&l->ex_tpl, 0, offsetof(struct pbs_exec, maps));
    l->ex_tpl.store = S;
    l->ex_tpl.cookie = rec->cookie;
    l->ex_tpl.nbase = l->nbase;
    l->run_tpl.helpers = pbs_helpers;
    l->run_tpl.budget = S->budget ? S->budget : PBR_DEFAULT_BUDGET;
    l->run_tpl.nregions = l->nbase; /* placeholders for ctx (and the raw tracepoint's pt_regs) */
    if (pbs_exec_setup(&l->ex_tpl, &l->run_tpl, p) < 0) {
        snprintf(err, errlen, "program %u: too many map regions", rec->prog_id);
        return -1;
    }
    return 0;
}

/* -- links -> hooks -------------------------------------------------------------------------- */
/* Address where file offset `off` of `path` is mapped executable in this process, or 0. */
static uint64_t resolve_addr(const char *path, uint64_t off)
{
    struct stat st;
    if (stat(path, &st))
        return 0;
    size_t n;
    uint64_t addr = 0;
    pba_maps_lock();
    const char *p = pba_read_maps(&n), *end = p + n;
    while (p < end) {
        const char *nl = memchr(p, '\n', end - p);
        if (!nl)
            nl = end;
        unsigned long a, b, o, ino;
        unsigned maj, mn;
        char perms[8];
        if (sscanf(p, "%lx-%lx %7s %lx %x:%x %lu", &a, &b, perms, &o, &maj, &mn, &ino) == 7 &&
            perms[2] == 'x' && ino == st.st_ino && maj == major(st.st_dev) &&
            mn == minor(st.st_dev) && off >= o && off < o + (b - a)) {
            addr = a + (off - o);
            break;
        }
        p = nl + 1;
    }
    pba_maps_unlock();
    return addr;
}

static int sys_nr(const char *name)
{
    for (size_t i = 0; i < sizeof pba_syscall_names / sizeof pba_syscall_names[0]; i++)
        if (pba_syscall_names[i] && !strcmp(pba_syscall_names[i], name))
            return (int)i;
    /* tracepoints carry the kernel's SYSCALL_DEFINE names: newstat, newuname, ... */
    if (!strncmp(name, "new", 3))
        return sys_nr(name + 3);
    return -1;
}

static void deactivate(struct alink *l)
{
    for (int i = 0; i < l->nh; i++) {
        if (l->kind == PBS_LINK_UPROBE || l->kind == PBS_LINK_URETPROBE)
            pba_probe_del(l->h[i]);
        else
            pba_sys_del(l->h[i]);
    }
    l->nh = 0;
    l->active = 0;
    l->pending = 0;
}

/* Installs the hooks of a link; 0, 1 = pending (binary not mapped), -1 = refused. */
static int activate(uint32_t id, struct alink *l, struct pbs_link *rec)
{
    char err[256] = "";
    l->rec = rec;
    l->kind = rec->kind;
    l->prog_id = rec->prog_id;
    l->cookie = rec->cookie;
    l->gen = rec->generation;
    l->logged_fault = 0;
    l->nh = 0;
    l->raw = rec->kind == PBS_LINK_RAW_TRACEPOINT;
    if (prepare_run(l, rec, err, sizeof err) < 0)
        goto refused;
    l->active = 1; /* before the hook can fire */
    if (rec->kind == PBS_LINK_UPROBE || rec->kind == PBS_LINK_URETPROBE) {
        uint64_t addr = resolve_addr(rec->path, rec->offset);
        if (!addr) {
            l->active = 0;
            l->pending = 1;
            return 1;
        }
        int h = pba_probe_add(addr, rec->kind == PBS_LINK_UPROBE ? PBA_ENTRY : PBA_RETURN, on_hook, l,
                              err, sizeof err);
        if (h < 0)
            goto refused;
        l->h[l->nh++] = h;
        pba_log("link %u: %s %s+0x%lx at 0x%lx", id, rec->kind == PBS_LINK_UPROBE ? "uprobe" : "uretprobe",
                rec->path, (unsigned long)rec->offset, (unsigned long)addr);
        return 0;
    }
    if (rec->kind == PBS_LINK_TRACEPOINT || rec->kind == PBS_LINK_RAW_TRACEPOINT) {
        const char *tp = rec->tp;
        int kind, nr = -1;
        if (rec->kind == PBS_LINK_RAW_TRACEPOINT) {
            l->raw = 1;
            if (!strcmp(tp, "sys_enter"))
                kind = PBA_SYS_ENTER;
            else if (!strcmp(tp, "sys_exit"))
                kind = PBA_SYS_EXIT;
            else {
                snprintf(err, sizeof err, "raw tracepoint '%s' is not available in user space", tp);
                goto refused;
            }
        } else {
            l->raw = 0;
            if (!strncmp(tp, "syscalls/sys_enter_", 19)) {
                kind = PBA_SYS_ENTER;
                nr = sys_nr(tp + 19);
            } else if (!strncmp(tp, "syscalls/sys_exit_", 18)) {
                kind = PBA_SYS_EXIT;
                nr = sys_nr(tp + 18);
            } else {
                snprintf(err, sizeof err, "tracepoint '%s' is not available in user space", tp);
                goto refused;
            }
            if (nr < 0) {
                snprintf(err, sizeof err, "tracepoint '%s': unknown syscall", tp);
                goto refused;
            }
        }
        l->nr = nr;
        int h = pba_sys_add(nr, kind, on_hook, l, err, sizeof err);
        if (h < 0)
            goto refused;
        l->h[l->nh++] = h;
        if (!pba_sys_sud_threads() && !scanned) {
            /* no SUD in this process: rewrite now, before the link counts as installed */
            scanned = 1;
            int n = pba_scan_objects(0);
            pba_sys_release();
            pba_log("rewrote %d syscall instructions ahead", n);
        } else if (pba_sys_mode_id() == 2 && !keep_sud)
            scan_wanted = 1;
        pba_log("link %u: %s%s (%s)", id, rec->kind == PBS_LINK_RAW_TRACEPOINT ? "raw_tracepoint " : "",
                tp, pba_sys_mode());
        return 0;
    }
    snprintf(err, sizeof err, "unknown link kind %u", rec->kind);
refused:
    l->active = 0;
    l->refused = 1;
    pba_log("link %u: refused: %s", id, err);
    return -1;
}

static void rescan(int pending_only)
{
    if (!S || !pbs_link)
        return;
    pthread_mutex_lock(&mu);
    have_pending = 0;
    for (uint32_t id = 1; id <= PBS_MAX_LINKS; id++) {
        struct alink *l = &L[id];
        if (pending_only && !l->pending)
            continue;
        struct pbs_link *rec = pbs_link(S, id);
        int want = rec && __atomic_load_n(&rec->state, __ATOMIC_ACQUIRE) == PBS_LIVE && rec->enabled &&
                   (rec->pid == -1 || rec->pid == my_pid) && !disabled;
        uint64_t gen = want ? __atomic_load_n(&rec->generation, __ATOMIC_ACQUIRE) : 0;
        if ((l->active || l->pending) && (!want || gen != l->gen || rec != l->rec))
            deactivate(l);
        if (!want) {
            l->refused = 0;
            continue;
        }
        if (l->refused && l->gen == gen && l->rec == rec)
            continue;
        if (!l->active) {
            l->refused = 0;
            if (activate(id, l, rec) == 1)
                have_pending = 1;
        }
    }
    pthread_mutex_unlock(&mu);
}

static int try_open_store(void)
{
    if (S || !pbs_open || !store_path[0])
        return S != NULL;
    struct stat st;
    if (stat(store_path, &st))
        return 0;
    S = pbs_open(store_path, -1);
    if (!S) {
        pba_log("cannot map the store %s (errno %d); retrying", store_path, errno);
        return 0;
    }
    /* keep the target's descriptor numbers as they would be without the agent */
    long hi = pba_raw_syscall(SYS_fcntl, S->fd, F_DUPFD_CLOEXEC, 600, 0, 0, 0);
    if (hi >= 0) {
        pba_raw_syscall(SYS_close, S->fd, 0, 0, 0, 0, 0);
        S->fd = (int)hi;
    }
    pba_log("store %s mapped", store_path);
    return 1;
}

static int store_has_syscall_links(void)
{
    for (uint32_t id = 1; id <= PBS_MAX_LINKS; id++) {
        struct pbs_link *rec = pbs_link(S, id);
        if (rec && rec->enabled && (rec->pid == -1 || rec->pid == my_pid) &&
            (rec->kind == PBS_LINK_TRACEPOINT || rec->kind == PBS_LINK_RAW_TRACEPOINT))
            return 1;
    }
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    pba_raw_syscall(SYS_nanosleep, (long)&ts, 0, 0, 0, 0, 0);
}

static void *poller(void *arg)
{
    (void)arg;
    pba_in_agent = 1; /* this thread never runs hooks */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals are for the target's threads */
    for (;;) {
        if (!S) {
            if (!try_open_store()) {
                sleep_ms(20);
                continue;
            }
        }
        uint64_t g = __atomic_load_n(&S->hdr->links_generation, __ATOMIC_ACQUIRE);
        if (g != seen_gen) {
            seen_gen = g;
            rescan(0);
        }
        if (scan_wanted && !scanned) {
            /* off the target's threads: they keep SUD (slower, complete) until this is done */
            scanned = 1;
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            int n = pba_scan_objects(0);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            if (n >= 0) {
                pba_sys_release();
                pba_log("rewrote %d syscall instructions ahead (%.1f ms); threads turn Syscall User "
                        "Dispatch off", n, (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
            }
        }
        sleep_ms(poll_ms);
    }
    return NULL;
}

static int (*real_pthread_create)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

static void start_poller(void)
{
    if (!store_path[0] || disabled)
        return;
    if (!real_pthread_create)
        real_pthread_create = dlsym(RTLD_NEXT, "pthread_create");
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 256 * 1024);
    if (!real_pthread_create || real_pthread_create(&t, &a, poller, NULL))
        pba_log("cannot start the agent thread: attaches after start-up are not seen");
    pthread_attr_destroy(&a);
}

/* -- fork, threads, dlopen, unwinding --------------------------------------------------------- */
static void atfork_prepare(void) { pthread_mutex_lock(&mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&mu); }
static void atfork_child(void)
{
    pthread_mutex_init(&mu, NULL);
    pba_patch_lock_reset();
    my_pid = pba_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0);
    my_tid = 0;
    pba_sys_after_fork();
    if (!follow) {
        disabled = 1;
        return;
    }
    /* links with a pid filter for the parent no longer apply */
    seen_gen = ~0ull;
    start_poller();
}

struct thread_start {
    void *(*fn)(void *);
    void *arg;
};

static void *thread_trampoline(void *p)
{
    struct thread_start ts = *(struct thread_start *)p;
    free(p);
    pba_sys_thread_start();
    return ts.fn(ts.arg);
}

int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    if (!real_pthread_create)
        real_pthread_create = dlsym(RTLD_NEXT, "pthread_create");
    struct thread_start *ts = malloc(sizeof *ts);
    if (!ts)
        return real_pthread_create(t, attr, fn, arg);
    ts->fn = fn;
    ts->arg = arg;
    int r = real_pthread_create(t, attr, thread_trampoline, ts);
    if (r)
        free(ts);
    return r;
}

void *dlopen(const char *file, int mode)
{
    static void *(*real)(const char *, int);
    if (!real)
        real = dlsym(RTLD_NEXT, "dlopen");
    void *h = real(file, mode);
    if (h && scanned) {
        int saved = pba_in_agent;
        pba_in_agent = 1;
        pba_scan_objects(1); /* its syscalls, before the caller can run them without SUD */
        pba_in_agent = saved;
    }
    if (h && have_pending)
        rescan(1); /* probes on a library loaded now */
    return h;
}

typedef int (*unwind_fn)(void *);
#define UNWIND_WRAP(name)                                                                         \
    int name(void *e)                                                                             \
    {                                                                                             \
        static unwind_fn real;                                                                    \
        if (!real)                                                                                \
            real = (unwind_fn)dlsym(RTLD_NEXT, #name);                                            \
        pba_uret_unwind_fixup();                                                                  \
        return real ? real(e) : 5 /* _URC_END_OF_STACK */;                                        \
    }
UNWIND_WRAP(_Unwind_RaiseException)

int _Unwind_ForcedUnwind(void *e, void *stop, void *arg)
{
    static int (*real)(void *, void *, void *);
    if (!real)
        real = (int (*)(void *, void *, void *))dlsym(RTLD_NEXT, "_Unwind_ForcedUnwind");
    pba_uret_unwind_fixup();
    return real ? real(e, stop, arg) : 5;
}

int _Unwind_Backtrace(void *fn, void *arg)
{
    static int (*real)(void *, void *);
    if (!real)
        real = (int (*)(void *, void *))dlsym(RTLD_NEXT, "_Unwind_Backtrace");
    pba_uret_unwind_fixup();
    return real ? real(fn, arg) : 5;
}

/* -- start-up ------------------------------------------------------------------------------------ */
static void strip_env(void)
{
    /* children of a target started with follow=0 do not load the agent */
    const char *pre = getenv("LD_PRELOAD");
    if (pre) {
        Dl_info di;
        char keep[4096] = "";
        if (dladdr((void *)strip_env, &di) && di.dli_fname) {
            const char *s = pre;
            while (*s) {
                size_t n = strcspn(s, ": ");
                if (n && !(strlen(di.dli_fname) == n && !strncmp(s, di.dli_fname, n)) &&
                    !memmem(s, n, "libpybpfc_agent", 15)) {
                    if (keep[0])
                        strncat(keep, ":", sizeof keep - strlen(keep) - 1);
                    strncat(keep, s, n < sizeof keep - strlen(keep) - 1 ? n : sizeof keep - strlen(keep) - 1);
                }
                s += n;
                while (*s == ':' || *s == ' ')
                    s++;
            }
        }
        if (keep[0])
            setenv("LD_PRELOAD", keep, 1);
        else
            unsetenv("LD_PRELOAD");
    }
    unsetenv("PYBPFC_STORE");
}

__attribute__((constructor)) static void pba_init(void)
{
    pba_in_agent = 1;
    const char *store = getenv("PYBPFC_STORE");
    pba_log_open(getenv("PYBPFC_AGENT_LOG"));
    my_pid = pba_raw_syscall(SYS_getpid, 0, 0, 0, 0, 0, 0);
    const char *f = getenv("PYBPFC_AGENT_FOLLOW");
    follow = !(f && !strcmp(f, "0"));
    const char *ks = getenv("PYBPFC_AGENT_KEEP_SUD");
    keep_sud = ks && !strcmp(ks, "1");
    const char *pm = getenv("PYBPFC_AGENT_POLL_MS");
    if (pm && atoi(pm) > 0)
        poll_ms = atoi(pm);
    if (store && *store)
        snprintf(store_path, sizeof store_path, "%s", store);
    if (!follow)
        strip_env();
    int have_store = store_path[0] && pbs_open && try_open_store();
    /* SUD in every thread from the start only when syscall hooks are already there (or asked
     * for): it costs every syscall ~40 ns in the kernel's entry path */
    pba_sys_init(store_path[0] != 0, keep_sud || (have_store && store_has_syscall_links()));
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    if (store_path[0]) {
        if (!pbs_open)
            pba_log("this agent was built without the store: nothing to run");
        else if (have_store) {
            seen_gen = __atomic_load_n(&S->hdr->links_generation, __ATOMIC_ACQUIRE);
            rescan(0); /* links that exist already are in place before main() */
        } else {
            pba_log("store %s not there yet: waiting for it", store_path);
        }
        start_poller();
    }
    pba_in_agent = 0;
}

/* For tests and `pybpfc agent` status: "mode pid store". */
const char *pba_status(void)
{
    static char buf[128];
    snprintf(buf, sizeof buf, "%s %ld %s", pba_sys_mode(), my_pid, S ? "mapped" : "none");
    return buf;
}
