/* Shared-memory object store: creation/mapping, allocator, program and link tables.
 * Maps live in maps.c, helpers in helpers.c. See include/pybpfc_store.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pybpfc_store.h"

static uint32_t possible_cpus(void)
{
    /* "0-N" or "0-a,b-c": the kernel's per-CPU value count is the highest id + 1 */
    int fd = open("/sys/devices/system/cpu/possible", O_RDONLY | O_CLOEXEC);
    char buf[256];
    long hi = -1;
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n > 0) {
            buf[n] = 0;
            for (char *p = buf; *p;) {
                char *end;
                if (*p < '0' || *p > '9') { p++; continue; } /* "-N" is a range, not a sign */
                long v = strtol(p, &end, 10);
                if (v > hi) hi = v;
                p = end;
            }
        }
    }
    if (hi < 0) {
        long n = sysconf(_SC_NPROCESSORS_CONF);
        return n > 0 ? (uint32_t)n : 1;
    }
    return (uint32_t)hi + 1;
}

int pbs_mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    int r = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return r;
}

void pbs_lock(pthread_mutex_t *m)
{
    /* a holder that died leaves the data as it was; take it over rather than deadlock */
    if (pthread_mutex_lock(m) == EOWNERDEAD)
        pthread_mutex_consistent(m);
}

void pbs_unlock(pthread_mutex_t *m) { pthread_mutex_unlock(m); }

static struct pbs_store *map_store(int fd, uint64_t size, int owner, const char *path)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return NULL;
    struct pbs_store *s = calloc(1, sizeof(*s));
    if (!s) {
        munmap(p, size);
        errno = ENOMEM;
        return NULL;
    }
    s->base = p;
    s->hdr = p;
    s->size = size;
    s->fd = fd;
    s->owner = owner;
    if (path)
        snprintf(s->path, sizeof(s->path), "%s", path);
    return s;
}

/* Smallest store: header, the map/program/link tables, the trace_printk ring and 64 KiB for
 * the user's maps and programs. */
uint64_t pbs_min_size(void)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    uint64_t brk = (sizeof(struct pbs_header) + 63) & ~63ull;
    brk += sizeof(struct pbs_map) * PBS_MAX_MAPS + sizeof(struct pbs_prog) * PBS_MAX_PROGS +
           sizeof(struct pbs_link) * PBS_MAX_LINKS;
    brk = (brk + page - 1) & ~(page - 1);
    return brk + 2 * (uint64_t)PBS_TRACE_SIZE /* the ring's data and bookkeeping */ + (64u << 10);
}

struct pbs_store *pbs_create(const char *path, uint64_t size)
{
    if (!size)
        size = PBS_DEFAULT_SIZE;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    if (size > (1ull << 46)) { /* also keeps the rounding below from wrapping */
        errno = EFBIG;
        return NULL;
    }
    size = (size + page - 1) & ~(page - 1);
    if (size < pbs_min_size()) { /* the header and tables would lie past the end */
        errno = EINVAL;
        return NULL;
    }
    int fd;
    if (!path || !*path)
        fd = memfd_create("pybpfc-store", MFD_CLOEXEC);
    else
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return NULL;
    if (fchmod(fd, 0600) < 0 || ftruncate(fd, (off_t)size) < 0) {
        int e = errno;
        close(fd);
        if (path && *path)
            unlink(path);
        errno = e;
        return NULL;
    }
    struct pbs_store *s = map_store(fd, size, 1, path);
    if (!s) {
        int e = errno;
        close(fd);
        if (path && *path)
            unlink(path);
        errno = e;
        return NULL;
    }
    struct pbs_header *h = s->hdr;
    h->size = size;
    h->ncpus = possible_cpus();
    h->page_size = (uint32_t)page;
    pbs_mutex_init(&h->lock);
    uint64_t brk = (sizeof(*h) + 63) & ~63ull;
    h->maps_off = brk;
    brk += sizeof(struct pbs_map) * PBS_MAX_MAPS;
    h->progs_off = brk;
    brk += sizeof(struct pbs_prog) * PBS_MAX_PROGS;
    h->links_off = brk;
    brk += sizeof(struct pbs_link) * PBS_MAX_LINKS;
    h->brk = (brk + page - 1) & ~(page - 1);
    struct pbs_map *maps = pbs_ptr(s, h->maps_off);
    struct pbs_prog *progs = pbs_ptr(s, h->progs_off);
    struct pbs_link *links = pbs_ptr(s, h->links_off);
    for (uint32_t i = 0; i < PBS_MAX_MAPS; i++) {
        maps[i].id = i + 1;
        maps[i].self_off = h->maps_off + i * sizeof(struct pbs_map);
        pbs_mutex_init(&maps[i].lock);
    }
    for (uint32_t i = 0; i < PBS_MAX_PROGS; i++) {
        progs[i].id = i + 1;
        progs[i].self_off = h->progs_off + i * sizeof(struct pbs_prog);
    }
    for (uint32_t i = 0; i < PBS_MAX_LINKS; i++)
        links[i].id = i + 1;
    h->version = PBS_VERSION;
    /* the trace_printk ring is an ordinary ring buffer map, hidden by its name */
    int tid = pbs_map_create(s, ".trace_printk", 27 /* BPF_MAP_TYPE_RINGBUF */, 0, 0,
                             PBS_TRACE_SIZE, 0, 0);
    if (tid > 0)
        h->trace_map_off = maps[tid - 1].self_off;
    __atomic_store_n(&h->magic, PBS_MAGIC, __ATOMIC_RELEASE);
    return s;
}

struct pbs_store *pbs_open(const char *path, int fd)
{
    int own_fd = -1;
    if (path) {
        own_fd = open(path, O_RDWR | O_CLOEXEC);
        if (own_fd < 0)
            return NULL;
        fd = own_fd;
    } else {
        fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (fd < 0)
            return NULL;
        own_fd = fd;
    }
    struct stat st;
    struct pbs_header h;
    if (fstat(fd, &st) < 0 || (uint64_t)st.st_size < sizeof(h) ||
        pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
        int e = errno ? errno : EINVAL;
        close(own_fd);
        errno = e;
        return NULL;
    }
    if (h.magic != PBS_MAGIC || h.version != PBS_VERSION || h.size > (uint64_t)st.st_size) {
        close(own_fd);
        errno = EPROTO; /* not a store, or another layout version */
        return NULL;
    }
    struct pbs_store *s = map_store(fd, h.size, 0, path);
    if (!s) {
        int e = errno;
        close(own_fd);
        errno = e;
    }
    return s;
}

/* Process-local executable mappings of JIT code replaced or dropped while the store is open:
 * a thread of this process may still be running them, so they stay until pbs_close. */
struct jit_retired {
    void *addr;
    uint64_t size;
    struct jit_retired *next;
};

static void jit_retire(struct pbs_store *s, uint32_t i)
{
    void *addr = s->jit_addr[i];
    if (!addr)
        return;
    s->jit_fn[i] = 0;
    s->jit_addr[i] = NULL;
    struct jit_retired *r = malloc(sizeof(*r));
    if (!r) /* leak the mapping rather than unmap code that may be running */
        return;
    r->addr = addr;
    r->size = s->jit_map_size[i];
    r->next = s->jit_retired;
    s->jit_retired = r;
}

void pbs_close(struct pbs_store *s)
{
    if (!s)
        return;
    for (int i = 0; i < PBS_MAX_PROGS; i++)
        jit_retire(s, (uint32_t)i);
    for (struct jit_retired *r = s->jit_retired, *next; r; r = next) {
        next = r->next;
        munmap(r->addr, r->size);
        free(r);
    }
    if (s->owner && s->path[0])
        unlink(s->path);
    munmap(s->base, s->size);
    close(s->fd);
    free(s);
}

/* -- allocator: power-of-two size classes, bump allocation plus per-class free lists ------- */
static int size_class(uint64_t size)
{
    int c = 6; /* 64 bytes minimum */
    while ((1ull << c) < size)
        c++;
    return c;
}

uint64_t pbs_alloc(struct pbs_store *s, uint64_t size)
{
    struct pbs_header *h = s->hdr;
    int c = size_class(size);
    if (c >= 48)
        return 0;
    uint64_t bytes = 1ull << c, align = bytes < h->page_size ? bytes : h->page_size, off = 0;
    pbs_lock(&h->lock);
    if (h->free_heads[c]) {
        off = h->free_heads[c];
        h->free_heads[c] = *(uint64_t *)(s->base + off);
    } else {
        uint64_t start = (h->brk + align - 1) & ~(align - 1);
        if (start + bytes <= h->size) {
            off = start;
            h->brk = start + bytes;
        }
    }
    pbs_unlock(&h->lock);
    if (off)
        memset(s->base + off, 0, bytes); /* reused blocks; fresh pages are already zero */
    return off;
}

void pbs_free(struct pbs_store *s, uint64_t off, uint64_t size)
{
    if (!off)
        return;
    struct pbs_header *h = s->hdr;
    int c = size_class(size);
    uint64_t bytes = 1ull << c;
    if (bytes >= 2 * h->page_size) /* give the pages back; the range stays valid (zero) */
        madvise(s->base + off, bytes, MADV_REMOVE);
    pbs_lock(&h->lock);
    *(uint64_t *)(s->base + off) = h->free_heads[c];
    h->free_heads[c] = off;
    pbs_unlock(&h->lock);
}

void pbs_bump_generation(struct pbs_store *s, int links)
{
    __atomic_add_fetch(&s->hdr->generation, 1, __ATOMIC_RELEASE);
    if (links)
        __atomic_add_fetch(&s->hdr->links_generation, 1, __ATOMIC_RELEASE);
}

/* -- programs -------------------------------------------------------------------------------- */
struct pbs_prog *pbs_prog(struct pbs_store *s, uint32_t id)
{
    if (id == 0 || id > PBS_MAX_PROGS)
        return NULL;
    struct pbs_prog *p = (struct pbs_prog *)pbs_ptr(s, s->hdr->progs_off) + (id - 1);
    return __atomic_load_n(&p->state, __ATOMIC_ACQUIRE) == PBS_LIVE ? p : NULL;
}

struct pbs_prog *pbs_prog_by_name(struct pbs_store *s, const char *name)
{
    for (uint32_t id = 1; id <= PBS_MAX_PROGS; id++) {
        struct pbs_prog *p = pbs_prog(s, id);
        if (p && strncmp(p->name, name, PBS_NAME_LEN) == 0)
            return p;
    }
    return NULL;
}

int pbs_prog_create(struct pbs_store *s, const char *name, const char *section, uint32_t type,
                    uint32_t expected_attach_type, const uint64_t *insns, uint32_t ninsns,
                    const uint32_t *map_ids, uint32_t nmaps)
{
    if (nmaps > PBS_MAX_PROG_MAPS || ninsns == 0)
        return -E2BIG;
    for (uint32_t i = 0; i < nmaps; i++)
        if (!pbs_map(s, map_ids[i]))
            return -EBADF;
    uint64_t off = pbs_alloc(s, (uint64_t)ninsns * 8);
    if (!off)
        return -ENOMEM;
    memcpy(s->base + off, insns, (uint64_t)ninsns * 8);
    struct pbs_header *h = s->hdr;
    struct pbs_prog *tab = pbs_ptr(s, h->progs_off), *p = NULL;
    pbs_lock(&h->lock);
    for (uint32_t i = 0; i < PBS_MAX_PROGS; i++)
        if (tab[i].state == PBS_FREE) {
            p = &tab[i];
            p->state = PBS_DYING; /* reserved until filled in */
            break;
        }
    pbs_unlock(&h->lock);
    if (!p) {
        pbs_free(s, off, (uint64_t)ninsns * 8);
        return -ENOSPC;
    }
    snprintf(p->name, sizeof(p->name), "%s", name ? name : "");
    snprintf(p->section, sizeof(p->section), "%s", section ? section : "");
    p->type = type;
    p->expected_attach_type = expected_attach_type;
    p->insns_off = off;
    p->ninsns = ninsns;
    p->nmaps = nmaps;
    for (uint32_t i = 0; i < nmaps; i++) {
        p->map_ids[i] = map_ids[i];
        pbs_map_get(s, map_ids[i]);
    }
    p->jit_off = p->jit_size = p->jit_len = p->jit_entry = 0;
    p->serial = __atomic_add_fetch(&s->hdr->prog_serial, 1, __ATOMIC_ACQ_REL);
    p->refcnt = 1;
    __atomic_store_n(&p->state, PBS_LIVE, __ATOMIC_RELEASE);
    pbs_bump_generation(s, 0);
    return (int)p->id;
}

void pbs_prog_put(struct pbs_store *s, uint32_t id)
{
    struct pbs_prog *p = pbs_prog(s, id);
    if (!p || __atomic_sub_fetch(&p->refcnt, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    __atomic_store_n(&p->state, PBS_DYING, __ATOMIC_RELEASE);
    pbs_bump_generation(s, 0);
    jit_retire(s, id - 1);
    /* The bytecode and JIT code are not freed: a thread of some process may still be running
     * them (there is no RCU across processes), and reused memory under running code would
     * crash it. Programs are small; churn costs store space only. */
    for (uint32_t i = 0; i < p->nmaps; i++)
        pbs_map_put(s, p->map_ids[i]);
    p->nmaps = 0;
    __atomic_store_n(&p->state, PBS_FREE, __ATOMIC_RELEASE);
}

int pbs_prog_set_jit(struct pbs_store *s, uint32_t id, const void *code, uint64_t len, uint64_t entry)
{
    struct pbs_prog *p = pbs_prog(s, id);
    if (!p)
        return -ENOENT;
    if (entry >= len)
        return -EINVAL;
    uint64_t page = s->hdr->page_size, size = (len + page - 1) & ~(page - 1);
    size = 1ull << size_class(size); /* blocks of >= a page are page aligned */
    uint64_t off = pbs_alloc(s, size);
    if (!off)
        return -ENOMEM;
    memcpy(s->base + off, code, len);
    uint64_t old = p->jit_off, old_size = p->jit_size;
    p->jit_len = len;
    p->jit_entry = entry;
    p->jit_size = size;
    __atomic_store_n(&p->jit_off, off, __ATOMIC_RELEASE);
    (void)old, (void)old_size; /* may be running somewhere: kept, see pbs_prog_put */
    pbs_bump_generation(s, 0);
    return 0;
}

int pbs_prog_map_jit(struct pbs_store *s, uint32_t id)
{
    struct pbs_prog *p = pbs_prog(s, id);
    if (!p)
        return -ENOENT;
    uint64_t off = __atomic_load_n(&p->jit_off, __ATOMIC_ACQUIRE), size = p->jit_size, entry = p->jit_entry;
    if (!off)
        return -ENOEXEC;
    if (s->jit_addr[id - 1] && s->jit_serial[id - 1] == p->serial && s->jit_map_off[id - 1] == off)
        return 0; /* mapped already */
    if (!size || off + size > s->size || entry >= size)
        return -EINVAL;
    void *x = mmap(NULL, size, PROT_READ | PROT_EXEC, MAP_SHARED, s->fd, (off_t)off);
    if (x == MAP_FAILED)
        return -errno;
    jit_retire(s, id - 1);
    s->jit_map_size[id - 1] = size;
    s->jit_map_off[id - 1] = off;
    s->jit_addr[id - 1] = x;
    s->jit_serial[id - 1] = p->serial;
    s->jit_fn[id - 1] = (uint64_t)x + entry;
    return 0;
}

void pbs_prog_set_entry(struct pbs_store *s, uint32_t id, uint64_t entry)
{
    struct pbs_prog *p = pbs_prog(s, id);
    if (p) {
        s->jit_serial[id - 1] = p->serial;
        s->jit_fn[id - 1] = entry;
    }
}

/* -- links ----------------------------------------------------------------------------------- */
struct pbs_link *pbs_link(struct pbs_store *s, uint32_t id)
{
    if (id == 0 || id > PBS_MAX_LINKS)
        return NULL;
    struct pbs_link *l = (struct pbs_link *)pbs_ptr(s, s->hdr->links_off) + (id - 1);
    return __atomic_load_n(&l->state, __ATOMIC_ACQUIRE) == PBS_LIVE ? l : NULL;
}

int pbs_link_create(struct pbs_store *s, uint32_t kind, uint32_t prog_id, const char *path,
                    uint64_t offset, const char *tp, int32_t pid, uint64_t cookie)
{
    struct pbs_prog *p = pbs_prog(s, prog_id);
    if (!p)
        return -EBADF;
    struct pbs_header *h = s->hdr;
    struct pbs_link *tab = pbs_ptr(s, h->links_off), *l = NULL;
    pbs_lock(&h->lock);
    for (uint32_t i = 0; i < PBS_MAX_LINKS; i++)
        if (tab[i].state == PBS_FREE) {
            l = &tab[i];
            l->state = PBS_DYING;
            break;
        }
    pbs_unlock(&h->lock);
    if (!l)
        return -ENOSPC;
    l->kind = kind;
    l->prog_id = prog_id;
    l->pid = pid;
    l->cookie = cookie;
    l->offset = offset;
    snprintf(l->path, sizeof(l->path), "%s", path ? path : "");
    snprintf(l->tp, sizeof(l->tp), "%s", tp ? tp : "");
    l->hits = l->errors = 0;
    l->enabled = 1;
    __atomic_add_fetch(&p->refcnt, 1, __ATOMIC_ACQ_REL);
    __atomic_add_fetch(&l->generation, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&l->state, PBS_LIVE, __ATOMIC_RELEASE);
    pbs_bump_generation(s, 1);
    return (int)l->id;
}

int pbs_link_set_enabled(struct pbs_store *s, uint32_t id, int enabled)
{
    struct pbs_link *l = pbs_link(s, id);
    if (!l)
        return -ENOENT;
    __atomic_store_n(&l->enabled, enabled ? 1 : 0, __ATOMIC_RELEASE);
    __atomic_add_fetch(&l->generation, 1, __ATOMIC_RELEASE);
    pbs_bump_generation(s, 1);
    return 0;
}

void pbs_link_destroy(struct pbs_store *s, uint32_t id)
{
    struct pbs_link *l = pbs_link(s, id);
    if (!l)
        return;
    __atomic_store_n(&l->enabled, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&l->state, PBS_FREE, __ATOMIC_RELEASE);
    __atomic_add_fetch(&l->generation, 1, __ATOMIC_RELEASE);
    pbs_bump_generation(s, 1);
    pbs_prog_put(s, l->prog_id);
}

/* -- running --------------------------------------------------------------------------------- */
#pragma weak pbr_vm_exec
#pragma weak pbr_add_region

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

typedef uint64_t (*pbs_jit_entry)(struct pbr_run *run, uint64_t ctx, uint64_t ctx_len);

uint64_t pbs_exec_in(struct pbs_exec *ex, struct pbr_run *run, uint64_t ctx, uint64_t ctx_len)
{
    struct pbs_store *s = ex->store;
    struct pbs_prog *p = ex->prog;
    uint64_t fn = s->jit_fn[p->id - 1];
    /* only code made for this very program: an id reused since is interpreted until this
     * process maps the new program's code */
    if (fn && s->jit_serial[p->id - 1] == p->serial)
        return ((pbs_jit_entry)fn)(run, ctx, ctx_len);
    if (!pbr_vm_exec) {
        run->status = PBR_EINSN;
        return 0;
    }
    return pbr_vm_exec((const uint64_t *)(s->base + p->insns_off), p->ninsns, run, ctx, ctx_len);
}

/* Fills the run's maps and regions for program p; 0 or -1 when the region table is full. */
int pbs_exec_setup(struct pbs_exec *ex, struct pbr_run *run, struct pbs_prog *p)
{
    ex->prog = p;
    run->maps = ex->maps;
    run->map_values = ex->map_values;
    for (uint32_t i = 0; i < p->nmaps; i++) {
        struct pbs_map *m = pbs_map(ex->store, p->map_ids[i]);
        ex->maps[i] = (uint64_t)m;
        ex->map_values[i] = 0;
        if (!m)
            continue;
        uint64_t addr, len;
        pbs_map_values(m, &addr, &len);
        if (!len)
            continue;
        if (m->type == 2 /* ARRAY */ && m->max_entries >= 1)
            ex->map_values[i] = addr;
        /* maps programs may only read: .rodata (BPF_F_RDONLY_PROG = 1 << 7) */
        uint32_t perm = (m->flags & (1u << 7)) ? PBR_PERM_R : PBR_PERM_RW;
        int dup = 0;
        for (uint32_t r = 0; r < run->nregions; r++)
            if (run->regions[r].start == addr)
                dup = 1;
        if (!dup && pbr_add_region && pbr_add_region(run, addr, len, perm) < 0)
            return -1;
    }
    return 0;
}

uint64_t pbs_prog_run(struct pbs_store *s, uint32_t id, uint64_t ctx, uint64_t ctx_len,
                      const struct pbr_region *regions, uint32_t nregions, uint64_t cookie,
                      struct pbs_run_result *res)
{
    return pbs_prog_run_ip(s, id, ctx, ctx_len, regions, nregions, cookie, 0, res);
}

/* The per-run state shared by every run with these arguments (the program's maps come later,
 * from pbs_exec_setup). */
static void run_init(struct pbs_store *s, struct pbs_exec *ex, struct pbr_run *run, uint64_t ctx,
                     const struct pbr_region *regions, uint32_t nregions, uint64_t cookie, uint64_t func_ip)
{
    memset(run, 0, offsetof(struct pbr_run, regions));
    ex->store = s;
    ex->cookie = cookie;
    ex->func_ip = func_ip;
    ex->tail_calls = 0;
    ex->tail_target = 0;
    ex->nbase = nregions;
    run->helpers = pbs_helpers;
    run->helper_ctx = ex;
    run->budget = s->budget ? s->budget : PBR_DEFAULT_BUDGET;
    run->ctx = ctx;
    for (uint32_t i = 0; i < nregions; i++)
        run->regions[i] = regions[i];
    run->nregions = nregions;
}

/* Runs p and the programs it tail-calls; `ready`: pbs_exec_setup(ex, run, p) is done already.
 * Returns r0, or 0 with run->status saying why it stopped. */
static uint64_t run_exec(struct pbs_exec *ex, struct pbr_run *run, struct pbs_prog *p, uint64_t ctx,
                         uint64_t ctx_len, int ready)
{
    uint64_t r0 = 0;
    struct pbs_prog *cur = p;
    for (;;) {
        if (!ready && pbs_exec_setup(ex, run, cur) < 0) {
            run->status = PBR_EFAULT;
            break;
        }
        ready = 0;
        r0 = pbs_exec_in(ex, run, ctx, ctx_len);
        if (run->status != PBR_EXIT || !ex->tail_target)
            break;
        /* bpf_tail_call: the target runs in place of the program that asked for it */
        cur = pbs_prog(ex->store, ex->tail_target);
        ex->tail_target = 0;
        ex->tail_calls++;
        if (!cur) { /* unloaded meanwhile: as if the slot had been empty at the call */
            run->status = PBR_EXIT;
            run->exit_value = 0;
            break;
        }
        run->status = PBR_OK;
        run->nregions = ex->nbase; /* the context regions stay, the maps are the target's */
    }
    if (run->status == PBR_EXIT) { /* a helper finished the program (tail call, packet load) */
        r0 = run->exit_value;
        run->status = PBR_OK;
    }
    return run->status == PBR_OK ? r0 : 0;
}

static void run_result(const struct pbr_run *run, struct pbs_run_result *res)
{
    if (res) {
        res->status = run->status;
        res->fault_addr = run->fault_addr;
        res->fault_pc = run->fault_pc;
    }
}

uint64_t pbs_prog_run_ip(struct pbs_store *s, uint32_t id, uint64_t ctx, uint64_t ctx_len,
                         const struct pbr_region *regions, uint32_t nregions, uint64_t cookie,
                         uint64_t func_ip, struct pbs_run_result *res)
{
    struct pbs_prog *p = pbs_prog(s, id);
    struct pbs_exec ex;
    struct pbr_run run;
    if (res)
        memset(res, 0, sizeof(*res));
    if (!p || nregions > PBR_MAX_REGIONS) {
        if (res)
            res->status = PBR_EINSN;
        return 0;
    }
    run_init(s, &ex, &run, ctx, regions, nregions, cookie, func_ip);
    uint64_t r0 = run_exec(&ex, &run, p, ctx, ctx_len, 0);
    run_result(&run, res);
    return r0;
}

/* Runs a program `repeat` times (test_run); returns r0 of the last run, average ns in res.
 * Like the kernel's BPF_PROG_TEST_RUN, the set-up is done once and the clock read around the
 * whole loop: both cost more than a small program's run. Each run starts with a fresh budget
 * and only the caller's and the maps' regions, as a single run would. */
uint64_t pbs_prog_test_run(struct pbs_store *s, uint32_t id, uint64_t ctx, uint64_t ctx_len,
                           const struct pbr_region *regions, uint32_t nregions, uint32_t repeat,
                           struct pbs_run_result *res)
{
    struct pbs_prog *p = pbs_prog(s, id);
    struct pbs_exec ex;
    struct pbr_run run;
    memset(res, 0, sizeof(*res));
    if (!p || nregions > PBR_MAX_REGIONS) {
        res->status = PBR_EINSN;
        return 0;
    }
    run_init(s, &ex, &run, ctx, regions, nregions, 0, 0);
    if (pbs_exec_setup(&ex, &run, p) < 0) {
        res->status = PBR_EFAULT;
        return 0;
    }
    uint32_t nready = run.nregions;
    uint64_t budget = run.budget, r0 = 0;
    uint32_t runs = 0;
    if (!repeat)
        repeat = 1;
    uint64_t t0 = now_ns();
    for (;;) {
        r0 = run_exec(&ex, &run, p, ctx, ctx_len, 1);
        runs++;
        if (run.status != PBR_OK || runs >= repeat)
            break;
        run.budget = budget;
        run.exit_value = run.fault_addr = run.fault_pc = 0;
        if (ex.tail_calls) { /* the maps are the last target's: p's again */
            ex.tail_calls = 0;
            run.nregions = nregions;
            if (pbs_exec_setup(&ex, &run, p) < 0) {
                run.status = PBR_EFAULT;
                break;
            }
        }
        run.nregions = nready;
    }
    res->duration_ns = (now_ns() - t0) / runs;
    run_result(&run, res);
    return r0;
}

/* -- small accessors for the cffi ABI-mode wrapper -------------------------------------------- */
int pbs_store_fd(struct pbs_store *s) { return s->fd; }
uint32_t pbs_store_ncpus(struct pbs_store *s) { return s->hdr->ncpus; }
uint64_t pbs_store_generation(struct pbs_store *s) { return __atomic_load_n(&s->hdr->generation, __ATOMIC_ACQUIRE); }
void pbs_store_set_budget(struct pbs_store *s, uint64_t budget) { s->budget = budget; }

/* Memory below 2 GiB for test_run contexts: xdp_md and __sk_buff carry packet pointers in
 * 32-bit fields, which hold real addresses only there. */
void *pbs_low_alloc(uint64_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void pbs_low_free(void *p, uint64_t size)
{
    if (p)
        munmap(p, size);
}
