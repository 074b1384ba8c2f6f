/* BPF helpers of the userspace runtime, indexed by the kernel's helper ids (linux/bpf.h).
 *
 * Pointer arguments are checked like program accesses (pbr_check_access: the engine
 * registers the stack, pbs_exec_setup the map values, ringbuf_reserve each record); a bad
 * one stops the program with PBR_EFAULT, as the kernel's verifier would have refused it.
 * probe_read* read arbitrary addresses through process_vm_readv so a bad address is an
 * error code, never a fault. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "pybpfc_store.h"

#define EX(run) ((struct pbs_exec *)(run)->helper_ctx)
#define ARGS uint64_t r1, uint64_t r2, uint64_t r3, uint64_t r4, uint64_t r5, struct pbr_run *run
#define UNUSED5 (void)r1, (void)r2, (void)r3, (void)r4, (void)r5

static int fault(struct pbr_run *run, uint64_t addr)
{
    run->status = PBR_EFAULT;
    run->fault_addr = addr;
    return 0;
}

#define CHECK(addr, len, perm)                                                       \
    do {                                                                             \
        if ((len) && !pbr_check_access(run, (addr), (len), (perm)))                  \
            return fault(run, (addr));                                               \
    } while (0)

/* map argument: a handle from run->maps (lddw src_reg 1 put it there) */
static struct pbs_map *map_arg(struct pbr_run *run, uint64_t h)
{
    struct pbs_exec *ex = EX(run);
    for (uint32_t i = 0; i < ex->prog->nmaps; i++)
        if (run->maps[i] == h && h)
            return (struct pbs_map *)h;
    /* an inner map a map-of-maps lookup returned: any live record of this store's table */
    struct pbs_store *s = ex->store;
    uint64_t tab = (uint64_t)s->base + s->hdr->maps_off, sz = sizeof(struct pbs_map);
    if (h >= tab && h < tab + PBS_MAX_MAPS * sz && (h - tab) % sz == 0 &&
        __atomic_load_n(&((struct pbs_map *)h)->state, __ATOMIC_ACQUIRE) == PBS_LIVE)
        return (struct pbs_map *)h;
    return NULL;
}

#define MAP(m, h)                                                                    \
    struct pbs_map *m = map_arg(run, (h));                                           \
    if (!m) {                                                                        \
        run->status = PBR_EHELPER;                                                   \
        run->fault_addr = (h);                                                       \
        return 0;                                                                    \
    }

static uint64_t map_lookup_elem(ARGS)
{
    UNUSED5;
    MAP(m, r1);
    CHECK(r2, m->key_size, PBR_PERM_R);
    return (uint64_t)pbs_map_lookup(m, (const void *)r2);
}

static uint64_t map_update_elem(ARGS)
{
    UNUSED5;
    MAP(m, r1);
    CHECK(r2, m->key_size, PBR_PERM_R);
    CHECK(r3, m->value_size, PBR_PERM_R);
    return (uint64_t)(int64_t)pbs_map_update(m, (const void *)r2, (const void *)r3, r4);
}

static uint64_t map_delete_elem(ARGS)
{
    UNUSED5;
    MAP(m, r1);
    CHECK(r2, m->key_size, PBR_PERM_R);
    return (uint64_t)(int64_t)pbs_map_delete(m, (const void *)r2);
}

static uint64_t map_push_elem(ARGS)
{
    UNUSED5;
    MAP(m, r1);
    CHECK(r2, m->value_size, PBR_PERM_R);
    return (uint64_t)(int64_t)pbs_map_push(m, (const void *)r2, r3);
}

static uint64_t map_pop_elem(ARGS)
{
    UNUSED5;
    MAP(m, r1);
    CHECK(r2, m->value_size, PBR_PERM_W);
    return (uint64_t)(int64_t)pbs_map_pop(m, (void *)r2);
}

static uint64_t map_peek_elem(ARGS)
{
    UNUSED5;
    MAP(m, r1);
    CHECK(r2, m->value_size, m->type == 30 /* bloom: reads the value */ ? PBR_PERM_R : PBR_PERM_W);
    return (uint64_t)(int64_t)pbs_map_peek(m, (void *)r2);
}

/* -- time, identity, randomness ------------------------------------------------------------- */
static uint64_t clock_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t ktime_get_ns(ARGS) { UNUSED5; (void)run; return clock_ns(CLOCK_MONOTONIC); }
static uint64_t ktime_get_boot_ns(ARGS) { UNUSED5; (void)run; return clock_ns(CLOCK_BOOTTIME); }
static uint64_t ktime_get_coarse_ns(ARGS) { UNUSED5; (void)run; return clock_ns(CLOCK_MONOTONIC_COARSE); }
static uint64_t ktime_get_tai_ns(ARGS) { UNUSED5; (void)run; return clock_ns(CLOCK_TAI); }

static uint64_t get_current_pid_tgid(ARGS)
{
    UNUSED5;
    (void)run;
    return ((uint64_t)(uint32_t)getpid() << 32) | (uint32_t)syscall(SYS_gettid);
}

static uint64_t get_current_uid_gid(ARGS)
{
    UNUSED5;
    (void)run;
    return ((uint64_t)(uint32_t)getgid() << 32) | (uint32_t)getuid();
}

static uint64_t get_current_comm(ARGS)
{
    UNUSED5;
    if (!r2)
        return (uint64_t)-EINVAL;
    CHECK(r1, r2, PBR_PERM_W);
    char comm[17] = {0};
    prctl(PR_GET_NAME, comm, 0, 0, 0);
    uint64_t n = r2 < sizeof(comm) ? r2 : sizeof(comm);
    memcpy((void *)r1, comm, n);
    ((char *)r1)[n - 1] = 0;
    return 0;
}

static __thread uint64_t rnd_state;

static uint64_t get_prandom_u32(ARGS)
{
    UNUSED5;
    (void)run;
    if (!rnd_state)
        rnd_state = clock_ns(CLOCK_MONOTONIC) ^ ((uint64_t)syscall(SYS_gettid) << 32) ^ 0x9E3779B97F4A7C15ull;
    /* xorshift64* */
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;
    return (uint32_t)((rnd_state * 0x2545F4914F6CDD1Dull) >> 32);
}

static uint64_t get_smp_processor_id(ARGS)
{
    UNUSED5;
    (void)run;
    int c = sched_getcpu();
    return c < 0 ? 0 : (uint64_t)c;
}

static uint64_t get_numa_node_id(ARGS) { UNUSED5; (void)run; return 0; }

static uint64_t get_attach_cookie(ARGS) { UNUSED5; return EX(run)->cookie; }

/* the probed address the agent passed (pbs_prog_run_ip); 0 when run without a probe */
/* bpf_for_each_map_elem(map, callback(map, key, value, ctx), ctx, flags): the key is a copy
 * on this frame, made readable for the callback while it runs; returns the elements visited */
static uint64_t for_each_map_elem(ARGS)
{
    UNUSED5;
    MAP(m, r1);
    if (r4)
        return (uint64_t)-EINVAL;
    if (!run->invoke) {
        run->status = PBR_EHELPER;
        return 0;
    }
    uint64_t key[(256 + 7) / 8 + 1];
    if (m->key_size > sizeof(key))
        return (uint64_t)-E2BIG;
    uint32_t saved = run->nregions;
    if (pbr_add_region(run, (uint64_t)key, m->key_size ? m->key_size : 1, PBR_PERM_R) < 0)
        return (uint64_t)-E2BIG;
    uint32_t kreg = run->nregions - 1;
    uint64_t n = 0;
    for (uint32_t i = 0;; i++) {
        int end;
        void *v = pbs_map_elem_at(m, i, key, &end);
        if (end)
            break;
        if (!v)
            continue;
        n++;
        uint64_t ret = run->invoke(run, r2, r1, (uint64_t)key, (uint64_t)v, r3, 0);
        if (run->status != PBR_OK || ret)
            break;
    }
    /* drop the key's region (later regions, e.g. ring buffer records, stay) */
    if (kreg == run->nregions - 1 && run->regions[kreg].start == (uint64_t)key)
        run->nregions = kreg;
    else if (kreg < run->nregions && run->regions[kreg].start == (uint64_t)key)
        run->regions[kreg].end = run->regions[kreg].start;
    (void)saved;
    return n;
}

static uint64_t get_func_ip(ARGS) { UNUSED5; return EX(run)->func_ip; }

/* -- memory ------------------------------------------------------------------------------------ */
int pbs_safe_read(void *dst, uint64_t src, uint64_t len)
{
    if (!len)
        return 0;
    struct iovec local = {dst, len}, remote = {(void *)src, len};
    ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    return n == (ssize_t)len ? 0 : -EFAULT;
}

static uint64_t probe_read(ARGS)
{
    UNUSED5;
    CHECK(r1, r2, PBR_PERM_W);
    if (r2 && pbs_safe_read((void *)r1, r3, r2) < 0) {
        memset((void *)r1, 0, r2); /* as the kernel: the destination is zeroed on error */
        return (uint64_t)-EFAULT;
    }
    return 0;
}

/* Reads a NUL-terminated string of at most size-1 chars; returns the length with the NUL. */
static int64_t read_str(char *dst, uint64_t src, uint64_t size)
{
    uint64_t done = 0;
    while (done < size - 1) {
        /* copy up to the next page boundary so a readable prefix is never lost */
        uint64_t a = src + done, chunk = 4096 - (a & 4095);
        if (chunk > size - 1 - done)
            chunk = size - 1 - done;
        if (pbs_safe_read(dst + done, a, chunk) < 0)
            return -EFAULT;
        void *z = memchr(dst + done, 0, chunk);
        if (z)
            return (char *)z - dst + 1;
        done += chunk;
    }
    dst[done] = 0;
    return (int64_t)done + 1;
}

static uint64_t probe_read_str(ARGS)
{
    UNUSED5;
    if (!r2)
        return 0;
    CHECK(r1, r2, PBR_PERM_W);
    int64_t n = read_str((char *)r1, r3, r2);
    if (n < 0)
        memset((void *)r1, 0, r2);
    return (uint64_t)n;
}

static uint64_t probe_read_kernel(ARGS)
{
    /* no kernel memory here: kernel addresses (upper half) are always an error */
    if (r3 >= 0xffff800000000000ull) {
        UNUSED5;
        CHECK(r1, r2, PBR_PERM_W);
        memset((void *)r1, 0, r2);
        return (uint64_t)-EFAULT;
    }
    return probe_read(r1, r2, r3, r4, r5, run);
}

static uint64_t probe_read_kernel_str(ARGS)
{
    if (r3 >= 0xffff800000000000ull) {
        UNUSED5;
        CHECK(r1, r2, PBR_PERM_W);
        memset((void *)r1, 0, r2);
        return (uint64_t)-EFAULT;
    }
    return probe_read_str(r1, r2, r3, r4, r5, run);
}

static uint64_t strncmp_(ARGS)
{
    UNUSED5;
    CHECK(r1, r2, PBR_PERM_R);
    /* s2 is a constant string (the verifier requires read-only map data): bounded by a region */
    const char *a = (const char *)r1, *b = (const char *)r3;
    for (uint64_t i = 0; i < r2; i++) {
        CHECK(r3 + i, 1, PBR_PERM_R);
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x != y)
            return (uint64_t)(int64_t)(x < y ? -1 : 1);
        if (!x)
            return 0;
    }
    CHECK(r3 + r2, 1, PBR_PERM_R);
    return b[r2] ? (uint64_t)-1 : 0;
}

/* -- trace_printk ---------------------------------------------------------------------------- */
static int fmt_str_arg(struct pbr_run *run, char *out, size_t outlen, uint64_t p)
{
    (void)run;
    char tmp[256];
    int64_t n = read_str(tmp, p, sizeof(tmp));
    return snprintf(out, outlen, "%s", n < 0 ? "(fault)" : tmp);
}

/* The kernel's bpf_trace_printk subset: %d %i %u %x %X %ld %lu %lx %lld %llu %llx %p %s %c %%,
 * at most three arguments. Returns bytes written or -EINVAL. */
static int format(struct pbr_run *run, char *out, size_t outlen, const char *fmt, uint64_t fmtlen,
                  const uint64_t *args, int nargs)
{
    size_t o = 0;
    int ai = 0;
    for (uint64_t i = 0; i < fmtlen && fmt[i]; i++) {
        if (o + 1 >= outlen)
            break;
        if (fmt[i] != '%') {
            out[o++] = fmt[i];
            continue;
        }
        if (++i >= fmtlen || !fmt[i])
            return -EINVAL;
        if (fmt[i] == '%') {
            out[o++] = '%';
            continue;
        }
        char spec[16] = "%";
        int sp = 1;
        while (i < fmtlen && (fmt[i] == '-' || fmt[i] == '0' || fmt[i] == '+' || fmt[i] == ' ' ||
                              (fmt[i] >= '1' && fmt[i] <= '9')) && sp < 8)
            spec[sp++] = fmt[i++];
        int longs = 0;
        while (i < fmtlen && fmt[i] == 'l' && longs < 2) {
            longs++;
            i++;
        }
        if (i >= fmtlen || ai >= nargs)
            return -EINVAL;
        char c = fmt[i];
        uint64_t v = args[ai++];
        int n;
        switch (c) {
        case 'd': case 'i':
            spec[sp++] = 'l'; spec[sp++] = 'l'; spec[sp++] = 'd'; spec[sp] = 0;
            n = snprintf(out + o, outlen - o, spec, longs ? (long long)v : (long long)(int32_t)v);
            break;
        case 'u': case 'x': case 'X':
            spec[sp++] = 'l'; spec[sp++] = 'l'; spec[sp++] = c; spec[sp] = 0;
            n = snprintf(out + o, outlen - o, spec, longs ? (unsigned long long)v : (unsigned long long)(uint32_t)v);
            break;
        case 'p':
            n = snprintf(out + o, outlen - o, "0x%llx", (unsigned long long)v);
            break;
        case 'c':
            n = snprintf(out + o, outlen - o, "%c", (char)v);
            break;
        case 's':
            n = fmt_str_arg(run, out + o, outlen - o, v);
            break;
        default:
            return -EINVAL;
        }
        if (n < 0)
            return -EINVAL;
        o += (size_t)n < outlen - o ? (size_t)n : outlen - o - 1;
    }
    out[o] = 0;
    return (int)o;
}

static uint64_t trace_printk(ARGS)
{
    CHECK(r1, r2, PBR_PERM_R);
    uint64_t args[3] = {r3, r4, r5};
    char msg[512];
    int n = format(run, msg, sizeof(msg), (const char *)r1, r2, args, 3);
    if (n < 0)
        return (uint64_t)-EINVAL;
    while (n > 0 && msg[n - 1] == '\n') /* one line per call, like trace_pipe */
        msg[--n] = 0;
    struct pbs_store *s = EX(run)->store;
    struct pbs_map *tm = (struct pbs_map *)pbs_ptr(s, s->hdr->trace_map_off);
    if (!tm)
        return (uint64_t)-ENOENT;
    char comm[17] = {0}, line[640];
    prctl(PR_GET_NAME, comm, 0, 0, 0);
    uint64_t t = clock_ns(CLOCK_MONOTONIC);
    int cpu = sched_getcpu();
    int len = snprintf(line, sizeof(line), "%16s-%-7d [%03d] ..... %5llu.%06llu: bpf_trace_printk: %s\n",
                       comm, (int)syscall(SYS_gettid), cpu < 0 ? 0 : cpu,
                       (unsigned long long)(t / 1000000000ull), (unsigned long long)(t / 1000 % 1000000), msg);
    if (len > (int)sizeof(line) - 1)
        len = sizeof(line) - 1;
    pbs_ringbuf_output(tm, -1, line, (uint64_t)len);
    return (uint64_t)n;
}

int64_t pbs_trace_read(struct pbs_store *s, char *buf, uint64_t len)
{
    struct pbs_map *tm = (struct pbs_map *)pbs_ptr(s, s->hdr->trace_map_off);
    if (!tm)
        return -ENOENT;
    return pbs_ringbuf_read(tm, -1, buf, len);
}

/* -- ring buffers and perf events ------------------------------------------------------------ */
static uint64_t ringbuf_output(ARGS)
{
    UNUSED5;
    MAP(m, r1);
    if (m->type != 27)
        return (uint64_t)-EINVAL;
    CHECK(r2, r3, PBR_PERM_R);
    return (uint64_t)(int64_t)pbs_ringbuf_output(m, -1, (const void *)r2, r3);
}

static uint64_t ringbuf_reserve(ARGS)
{
    UNUSED5;
    MAP(m, r1);
    if (m->type != 27 || r3)
        return 0;
    void *p = pbs_ringbuf_reserve(m, -1, r2);
    if (!p)
        return 0;
    if (pbr_add_region(run, (uint64_t)p, r2, PBR_PERM_RW) < 0) {
        pbs_ringbuf_commit(m, p, 1); /* no room to track it: give it back */
        return 0;
    }
    return (uint64_t)p;
}

/* The record's map: ring buffers of this program whose data area holds the pointer. */
static struct pbs_map *record_map(struct pbr_run *run, uint64_t p)
{
    struct pbs_exec *ex = EX(run);
    for (uint32_t i = 0; i < ex->prog->nmaps; i++) {
        struct pbs_map *m = (struct pbs_map *)run->maps[i];
        if (!m || m->type != 27)
            continue;
        uint64_t data = (uint64_t)pbs_map_base(m) + m->meta_off + PBS_RING_HDR;
        if (p >= data + PBS_RB_HDR && p < data + m->max_entries)
            return m;
    }
    return NULL;
}

static uint64_t ringbuf_commit_(struct pbr_run *run, uint64_t p, int discard)
{
    struct pbs_map *m = record_map(run, p);
    if (!m || !pbr_check_access(run, p, 1, PBR_PERM_W))
        return fault(run, p);
    uint32_t hdr = __atomic_load_n((uint32_t *)(p - PBS_RB_HDR), __ATOMIC_ACQUIRE);
    if (!(hdr & PBS_RB_BUSY))
        return fault(run, p); /* already submitted: the verifier would have refused this */
    pbs_ringbuf_commit(m, (void *)p, discard);
    /* the record is no longer the program's: drop its region (the last one added for it) */
    for (uint32_t i = run->nregions; i-- > 0;)
        if (run->regions[i].start == p) {
            if (i == run->nregions - 1)
                run->nregions = i;                       /* the last one: free the slot */
            else
                run->regions[i].end = run->regions[i].start; /* empty: matches nothing */
            break;
        }
    return 0;
}

static uint64_t ringbuf_submit(ARGS) { UNUSED5; return ringbuf_commit_(run, r1, 0); }
static uint64_t ringbuf_discard(ARGS) { UNUSED5; return ringbuf_commit_(run, r1, 1); }

static uint64_t ringbuf_query(ARGS)
{
    UNUSED5;
    MAP(m, r1);
    return m->type == 27 ? pbs_ringbuf_query(m, r2) : 0;
}

static uint64_t perf_event_output(ARGS)
{
    UNUSED5;
    MAP(m, r2);
    if (m->type != 4)
        return (uint64_t)-EINVAL;
    CHECK(r4, r5, PBR_PERM_R);
    uint64_t idx = r3 & 0xffffffffull;
    int cpu;
    if (idx == 0xffffffffull) { /* BPF_F_CURRENT_CPU */
        cpu = sched_getcpu();
        cpu = cpu < 0 ? 0 : cpu % (int)m->ncpus;
    } else if (idx < m->ncpus && idx < m->max_entries) {
        cpu = (int)idx;
    } else {
        return (uint64_t)-E2BIG;
    }
    int r = pbs_ringbuf_output(m, cpu, (const void *)r4, r5);
    return (uint64_t)(int64_t)(r < 0 ? -ENOSPC : 0);
}

/* -- control flow ------------------------------------------------------------------------------ */
static uint64_t tail_call(ARGS)
{
    UNUSED5;
    MAP(m, r2);
    struct pbs_exec *ex = EX(run);
    if (m->type != 3 || r3 >= m->max_entries || ex->tail_calls >= PBS_MAX_TAIL_CALLS)
        return (uint64_t)-ENOENT;
    uint32_t key = (uint32_t)r3, id;
    if (pbs_map_lookup_copy(m, &key, &id) < 0)
        return (uint64_t)-ENOENT;
    struct pbs_prog *p = pbs_prog(ex->store, id);
    if (!p)
        return (uint64_t)-ENOENT;
    /* The target replaces the caller: unwind the caller now; pbs_prog_run starts the target
     * on the same context (a loop, not native recursion, however long the chain). */
    ex->tail_target = id;
    run->exit_value = 0;
    run->status = PBR_EXIT;
    return 0;
}

static uint64_t loop(ARGS)
{
    UNUSED5;
    /* bpf_loop(nr_loops, callback, ctx, flags) */
    if (r4)
        return (uint64_t)-EINVAL;
    if (r1 > (1u << 23))
        return (uint64_t)-E2BIG;
    if (!run->invoke) {
        run->status = PBR_EHELPER;
        return 0;
    }
    uint64_t i;
    for (i = 0; i < r1; i++) {
        uint64_t ret = run->invoke(run, r2, i, r3, 0, 0, 0);
        if (run->status != PBR_OK)
            return 0;
        if (ret)
            return i + 1;
    }
    return i;
}

/* Legacy packet loads (LD_ABS / LD_IND) of socket filters: the loader rewrites each into
 * `r1 = r6; r2 = offset; r3 = size; call PBS_HELPER_LD_PKT`. Reads big-endian from the
 * __sk_buff's data (run->ctx, data/data_end at 76/80); out of bounds ends the program with 0,
 * as the kernel does. */
static uint64_t ld_pkt(ARGS)
{
    UNUSED5;
    uint64_t ctx = run->ctx, size = r3;
    int64_t off = (int64_t)(int32_t)r2;
    if (!pbr_check_access(run, ctx + 76, 8, PBR_PERM_R))
        return fault(run, ctx + 76);
    uint64_t data = *(uint32_t *)(ctx + 76), end = *(uint32_t *)(ctx + 80);
    if (off < 0 || (size != 1 && size != 2 && size != 4) || data + (uint64_t)off + size > end ||
        !pbr_check_access(run, data + (uint64_t)off, size, PBR_PERM_R)) {
        run->exit_value = 0;
        run->status = PBR_EXIT;
        return 0;
    }
    const uint8_t *p = (const uint8_t *)(data + (uint64_t)off);
    uint64_t v = 0;
    for (uint64_t i = 0; i < size; i++)
        v = (v << 8) | p[i];
    return v;
}

const pbr_helper_fn pbs_helpers[PBR_MAX_HELPERS] = {
    [PBS_HELPER_LD_PKT] = ld_pkt,
    [1] = map_lookup_elem,
    [2] = map_update_elem,
    [3] = map_delete_elem,
    [4] = probe_read,
    [5] = ktime_get_ns,
    [6] = trace_printk,
    [7] = get_prandom_u32,
    [8] = get_smp_processor_id,
    [12] = tail_call,
    [14] = get_current_pid_tgid,
    [15] = get_current_uid_gid,
    [16] = get_current_comm,
    [25] = perf_event_output,
    [42] = get_numa_node_id,
    [45] = probe_read_str,
    [87] = map_push_elem,
    [88] = map_pop_elem,
    [89] = map_peek_elem,
    [112] = probe_read,           /* probe_read_user */
    [113] = probe_read_kernel,
    [114] = probe_read_str,       /* probe_read_user_str */
    [115] = probe_read_kernel_str,
    [125] = ktime_get_boot_ns,
    [130] = ringbuf_output,
    [131] = ringbuf_reserve,
    [132] = ringbuf_submit,
    [133] = ringbuf_discard,
    [134] = ringbuf_query,
    [160] = ktime_get_coarse_ns,
    [164] = for_each_map_elem,
    [173] = get_func_ip,
    [174] = get_attach_cookie,
    [181] = loop,
    [182] = strncmp_,
    [208] = ktime_get_tai_ns,
};
