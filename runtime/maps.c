/* Maps in the shared-memory store: hash (plain, per-CPU, LRU), array (plain, per-CPU, prog,
 * global data), perf event array, ring buffer, queue, stack, LPM trie, bloom filter.
 *
 * Every map is one allocation: the values first (what programs may touch: one region per
 * map), then the bookkeeping (buckets, entries with keys, ring positions). Bookkeeping uses
 * element indices, never pointers, and every index read from shared memory is bounds-checked
 * before use, so a program scribbling over its values cannot make map code fault. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <linux/futex.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "pybpfc_store.h"

enum {
    T_HASH = 1, T_ARRAY = 2, T_PROG_ARRAY = 3, T_PERF = 4, T_PCPU_HASH = 5, T_PCPU_ARRAY = 6,
    T_LRU_HASH = 9, T_LRU_PCPU_HASH = 10, T_LPM = 11, T_AOM = 12, T_HOM = 13, T_QUEUE = 22, T_STACK = 23,
    T_RINGBUF = 27, T_BLOOM = 30,
};

#define PERF_RING_SIZE (1u << 16) /* per CPU */

static inline uint64_t r8(uint64_t x) { return (x + 7) & ~7ull; }
static inline uint64_t r64(uint64_t x) { return (x + 63) & ~63ull; }

static int is_hash(uint32_t t)
{
    return t == T_HASH || t == T_PCPU_HASH || t == T_LRU_HASH || t == T_LRU_PCPU_HASH || t == T_HOM;
}
static int is_lru(uint32_t t) { return t == T_LRU_HASH || t == T_LRU_PCPU_HASH; }
static int is_percpu(uint32_t t) { return t == T_PCPU_HASH || t == T_PCPU_ARRAY || t == T_LRU_PCPU_HASH; }
static int is_array(uint32_t t) { return t == T_ARRAY || t == T_PCPU_ARRAY || t == T_PROG_ARRAY || t == T_AOM; }
/* arrays whose values are object ids (programs, inner maps): 0 = empty */
static int is_id_array(uint32_t t) { return t == T_PROG_ARRAY || t == T_AOM; }
static int is_of_maps(uint32_t t) { return t == T_AOM || t == T_HOM; }

static inline uint8_t *values(struct pbs_map *m) { return pbs_map_base(m) + m->values_off; }
static inline uint8_t *meta(struct pbs_map *m) { return pbs_map_base(m) + m->meta_off; }

/* The live map with this id in m's store (a map of maps' element), or NULL. */
static struct pbs_map *inner_map(struct pbs_map *m, uint32_t id)
{
    if (id == 0 || id > PBS_MAX_MAPS)
        return NULL;
    uint8_t *base = pbs_map_base(m);
    struct pbs_map *in = (struct pbs_map *)(base + ((struct pbs_header *)base)->maps_off) + (id - 1);
    return __atomic_load_n(&in->state, __ATOMIC_ACQUIRE) == PBS_LIVE ? in : NULL;
}

static uint32_t this_cpu(struct pbs_map *m)
{
    int c = sched_getcpu();
    return c < 0 ? 0 : (uint32_t)c % m->ncpus;
}

static uint64_t hash_bytes(const void *p, uint32_t n, uint64_t seed)
{
    const uint8_t *b = p;
    uint64_t h = seed ^ (n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, b, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        b += 8;
        n -= 8;
    }
    /* the last n < 8 bytes as a little-endian number, read with loads as wide as the data
     * (a memcpy of n bytes into a u64 and a u64 read back stalls store forwarding; the value,
     * and so the hash of keys already in a store, is the same) */
    uint64_t w = 0;
    if (n >= 4) {
        uint32_t lo, hi;
        memcpy(&lo, b, 4);
        memcpy(&hi, b + n - 4, 4); /* overlaps lo: the shared bytes are equal */
        w = lo | (uint64_t)hi << ((n - 4) * 8);
    } else if (n) {
        w = b[0] | (uint64_t)b[n / 2] << (n / 2 * 8) | (uint64_t)b[n - 1] << ((n - 1) * 8);
    }
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    return h;
}

/* -- ring (ring buffer map, and each CPU of a perf event array) ------------------------------ */
struct ring {
    uint64_t consumer;
    uint64_t _p0[7];
    uint64_t producer;
    uint64_t _p1[7];
    uint64_t mask;       /* data size - 1 */
    uint64_t lost;
    uint32_t spin;
    uint32_t _p2;
    uint64_t _p3[5];
    /* data follows */
};
_Static_assert(sizeof(struct ring) == PBS_RING_HDR, "ring header size");

static inline uint8_t *ring_data(struct ring *r) { return (uint8_t *)(r + 1); }

/* data size - 1 of a ring, from the map record (programs cannot write it; the ring header
 * in the map's memory could be scribbled on by a program of a freed map reusing it) */
static inline uint64_t ring_mask(struct pbs_map *m)
{
    return m->type == T_RINGBUF ? (uint64_t)m->max_entries - 1 : (uint64_t)PERF_RING_SIZE - 1;
}

static struct ring *ring_of(struct pbs_map *m, int cpu)
{
    if (m->type == T_RINGBUF)
        return (struct ring *)meta(m);
    if (m->type != T_PERF || cpu < 0 || (uint32_t)cpu >= m->ncpus)
        return NULL;
    return (struct ring *)(meta(m) + (uint64_t)cpu * (sizeof(struct ring) + PERF_RING_SIZE));
}

static void spin_lock(uint32_t *l)
{
    while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(l, __ATOMIC_RELAXED))
            sched_yield();
}

static void spin_unlock(uint32_t *l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }

static void *ring_reserve(struct pbs_map *m, struct ring *r, uint64_t size)
{
    uint64_t mask = ring_mask(m), rsize = mask + 1, total = r8(size + PBS_RB_HDR);
    if (size == 0 || size >= PBS_RB_DISCARD || total > rsize)
        return NULL;
    spin_lock(&r->spin);
    uint64_t cons = __atomic_load_n(&r->consumer, __ATOMIC_ACQUIRE);
    uint64_t prod = r->producer & ~7ull, off = prod & mask, pad = 0; /* 8-aligned, in range */
    if (off + total > rsize)
        pad = rsize - off; /* no double mapping: skip to the start with a discarded filler */
    if (prod + pad + total - cons > rsize) {
        spin_unlock(&r->spin);
        __atomic_add_fetch(&r->lost, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    uint8_t *d = ring_data(r);
    if (pad) {
        uint32_t hdr[2] = {(uint32_t)(pad - PBS_RB_HDR) | PBS_RB_DISCARD, (uint32_t)off};
        memcpy(d + off, hdr, 8);
        prod += pad;
        off = 0;
    }
    uint32_t hdr[2] = {(uint32_t)size | PBS_RB_BUSY, (uint32_t)off};
    memcpy(d + off, hdr, 8);
    __atomic_store_n(&r->producer, prod + total, __ATOMIC_RELEASE);
    spin_unlock(&r->spin);
    (void)m;
    return d + off + PBS_RB_HDR;
}

static void wake(struct pbs_map *m)
{
    __atomic_add_fetch(&m->seq, 1, __ATOMIC_RELEASE);
    if (__atomic_load_n(&m->waiters, __ATOMIC_ACQUIRE))
        syscall(SYS_futex, &m->seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

void *pbs_ringbuf_reserve(struct pbs_map *m, int cpu, uint64_t size)
{
    struct ring *r = ring_of(m, cpu);
    if (!r)
        return NULL;
    void *p = ring_reserve(m, r, size);
    if (!p && m->type == T_RINGBUF)
        __atomic_add_fetch(&m->lost, 1, __ATOMIC_RELAXED);
    return p;
}

void pbs_ringbuf_commit(struct pbs_map *m, void *rec, int discard)
{
    uint32_t *hdr = (uint32_t *)((uint8_t *)rec - PBS_RB_HDR);
    uint32_t v = __atomic_load_n(hdr, __ATOMIC_RELAXED);
    v &= ~PBS_RB_BUSY;
    if (discard)
        v |= PBS_RB_DISCARD;
    __atomic_store_n(hdr, v, __ATOMIC_RELEASE);
    wake(m);
}

int pbs_ringbuf_output(struct pbs_map *m, int cpu, const void *data, uint64_t size)
{
    void *p = pbs_ringbuf_reserve(m, cpu, size);
    if (!p)
        return -EAGAIN;
    memcpy(p, data, size);
    pbs_ringbuf_commit(m, p, 0);
    return 0;
}

static int64_t ring_read(struct pbs_map *m, struct ring *r, uint8_t *out, uint64_t outlen)
{
    uint64_t mask = ring_mask(m);
    uint64_t cons = r->consumer, used = 0;
    uint64_t prod = __atomic_load_n(&r->producer, __ATOMIC_ACQUIRE);
    uint8_t *d = ring_data(r);
    while (cons < prod) {
        uint32_t hdr = __atomic_load_n((uint32_t *)(d + (cons & mask)), __ATOMIC_ACQUIRE);
        if (hdr & PBS_RB_BUSY)
            break;
        uint64_t len = hdr & ~(PBS_RB_BUSY | PBS_RB_DISCARD), total = r8(len + PBS_RB_HDR);
        if ((cons & mask) + total > mask + 1) { /* corrupt: drop everything */
            cons = prod;
            break;
        }
        if (!(hdr & PBS_RB_DISCARD)) {
            if (used + 8 + r8(len) > outlen) {
                if (used == 0)
                    return -ENOSPC;
                break;
            }
            uint32_t h2[2] = {(uint32_t)len, 0};
            memcpy(out + used, h2, 8);
            memcpy(out + used + 8, d + (cons & mask) + PBS_RB_HDR, len);
            used += 8 + r8(len);
        }
        cons += total;
    }
    __atomic_store_n(&r->consumer, cons, __ATOMIC_RELEASE);
    return (int64_t)used;
}

int64_t pbs_ringbuf_read(struct pbs_map *m, int cpu, void *buf, uint64_t buflen)
{
    if (m->type == T_RINGBUF)
        return ring_read(m, ring_of(m, -1), buf, buflen);
    if (m->type != T_PERF)
        return -EINVAL;
    if (cpu >= 0) {
        struct ring *r = ring_of(m, cpu);
        return r ? ring_read(m, r, buf, buflen) : -EINVAL;
    }
    int64_t used = 0;
    for (uint32_t c = 0; c < m->ncpus; c++) {
        int64_t n = ring_read(m, ring_of(m, (int)c), (uint8_t *)buf + used, buflen - used);
        if (n < 0)
            return used ? used : n;
        used += n;
    }
    return used;
}

static int ring_has_data(struct pbs_map *m)
{
    uint32_t n = m->type == T_PERF ? m->ncpus : 1;
    for (uint32_t c = 0; c < n; c++) {
        struct ring *r = ring_of(m, m->type == T_PERF ? (int)c : -1);
        uint64_t cons = r->consumer, prod = __atomic_load_n(&r->producer, __ATOMIC_ACQUIRE);
        if (cons < prod) {
            uint32_t hdr = __atomic_load_n((uint32_t *)(ring_data(r) + (cons & ring_mask(m))), __ATOMIC_ACQUIRE);
            if (!(hdr & PBS_RB_BUSY))
                return 1;
        }
    }
    return 0;
}

int pbs_ringbuf_wait(struct pbs_map *m, int timeout_ms)
{
    if (m->type != T_RINGBUF && m->type != T_PERF)
        return -EINVAL;
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    if (timeout_ms > 0) {
        end.tv_sec += timeout_ms / 1000;
        end.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (end.tv_nsec >= 1000000000L) {
            end.tv_sec++;
            end.tv_nsec -= 1000000000L;
        }
    }
    for (;;) {
        uint32_t seq = __atomic_load_n(&m->seq, __ATOMIC_ACQUIRE);
        if (ring_has_data(m))
            return 1;
        if (timeout_ms == 0)
            return 0;
        struct timespec rel, *tp = NULL;
        if (timeout_ms > 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            int64_t ns = (int64_t)(end.tv_sec - now.tv_sec) * 1000000000LL + (end.tv_nsec - now.tv_nsec);
            if (ns <= 0)
                return 0;
            /* a producer that reserved but has not committed yet does not wake us: recheck */
            if (ns > 50000000LL)
                ns = 50000000LL;
            rel.tv_sec = ns / 1000000000LL;
            rel.tv_nsec = ns % 1000000000LL;
            tp = &rel;
        } else {
            rel.tv_sec = 0;
            rel.tv_nsec = 50000000L;
            tp = &rel;
        }
        __atomic_add_fetch(&m->waiters, 1, __ATOMIC_ACQ_REL);
        syscall(SYS_futex, &m->seq, FUTEX_WAIT, seq, tp, NULL, 0);
        __atomic_sub_fetch(&m->waiters, 1, __ATOMIC_ACQ_REL);
    }
}

uint32_t pbs_ringbuf_seq(struct pbs_map *m) { return __atomic_load_n(&m->seq, __ATOMIC_ACQUIRE); }

int pbs_ringbuf_wait_seq(struct pbs_map *m, uint32_t seq, int timeout_ms)
{
    if (__atomic_load_n(&m->seq, __ATOMIC_ACQUIRE) != seq)
        return 1;
    struct timespec rel = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    __atomic_add_fetch(&m->waiters, 1, __ATOMIC_ACQ_REL);
    syscall(SYS_futex, &m->seq, FUTEX_WAIT, seq, timeout_ms < 0 ? NULL : &rel, NULL, 0);
    __atomic_sub_fetch(&m->waiters, 1, __ATOMIC_ACQ_REL);
    return __atomic_load_n(&m->seq, __ATOMIC_ACQUIRE) != seq;
}

uint64_t pbs_ringbuf_lost(struct pbs_map *m)
{
    if (m->type == T_RINGBUF)
        return __atomic_load_n(&m->lost, __ATOMIC_RELAXED);
    uint64_t n = 0;
    for (uint32_t c = 0; m->type == T_PERF && c < m->ncpus; c++)
        n += __atomic_load_n(&ring_of(m, (int)c)->lost, __ATOMIC_RELAXED);
    return n;
}

uint64_t pbs_ringbuf_query(struct pbs_map *m, uint64_t flags)
{
    struct ring *r = ring_of(m, -1);
    if (!r)
        return 0;
    uint64_t cons = __atomic_load_n(&r->consumer, __ATOMIC_ACQUIRE);
    uint64_t prod = __atomic_load_n(&r->producer, __ATOMIC_ACQUIRE);
    switch (flags) {
    case 0: return prod - cons;    /* BPF_RB_AVAIL_DATA */
    case 1: return ring_mask(m) + 1; /* BPF_RB_RING_SIZE */
    case 2: return cons;           /* BPF_RB_CONS_POS */
    case 3: return prod;           /* BPF_RB_PROD_POS */
    }
    return 0;
}

/* -- hash maps -------------------------------------------------------------------------------- */
struct hent {
    uint32_t next;   /* index + 1 of the next entry in the bucket / free list, 0 = end */
    uint32_t used;
    uint64_t stamp;  /* LRU clock of the last use */
    uint32_t hash;
    uint32_t _pad;
    /* key follows */
};

static inline uint64_t hent_size(struct pbs_map *m) { return r8(sizeof(struct hent) + m->key_size); }
static inline uint32_t *buckets(struct pbs_map *m) { return (uint32_t *)meta(m); }
static inline struct hent *hent(struct pbs_map *m, uint32_t idx1)
{
    return (struct hent *)(meta(m) + r64((uint64_t)m->nbuckets * 4) + (uint64_t)(idx1 - 1) * hent_size(m));
}
static inline uint8_t *hkey(struct hent *e) { return (uint8_t *)(e + 1); }
static inline uint8_t *hval(struct pbs_map *m, uint32_t idx1) { return values(m) + (uint64_t)(idx1 - 1) * m->value_stride; }
static inline int idx_ok(struct pbs_map *m, uint32_t idx1) { return idx1 >= 1 && idx1 <= m->max_entries; }

/* memcmp(a, b, n) == 0 without a library call for the common key sizes */
static inline int key_eq(const void *a, const void *b, uint32_t n)
{
    if (n == 4) { /* constant sizes: loads of the key's width, no partial stores */
        uint32_t x, y;
        memcpy(&x, a, 4);
        memcpy(&y, b, 4);
        return x == y;
    }
    if (n == 8) {
        uint64_t x, y;
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        return x == y;
    }
    return memcmp(a, b, n) == 0;
}

/* index+1 of the entry with `key`, 0 if absent; lock held */
static uint32_t hfind(struct pbs_map *m, const void *key, uint32_t h, uint32_t *prev)
{
    uint32_t b = h & (m->nbuckets - 1), i = buckets(m)[b], p = 0, guard = m->max_entries + 1;
    while (i && idx_ok(m, i) && guard--) {
        struct hent *e = hent(m, i);
        if (e->hash == h && key_eq(hkey(e), key, m->key_size)) {
            if (prev)
                *prev = p;
            return i;
        }
        p = i;
        i = e->next;
    }
    return 0;
}

/* Writers hold the lock and keep wseq odd while they change buckets, entries or values;
 * readers (lookups) run without the lock and retry when wseq moved. */
static void hlock(struct pbs_map *m)
{
    pbs_lock(&m->lock);
    __atomic_fetch_add(&m->wseq, 1, __ATOMIC_ACQ_REL);
}

static void hunlock(struct pbs_map *m)
{
    __atomic_fetch_add(&m->wseq, 1, __ATOMIC_RELEASE);
    pbs_unlock(&m->lock);
}

/* Lock-free find; `copy` (user_value_size bytes, may be NULL) gets a consistent value. */
static uint32_t hfind_read(struct pbs_map *m, const void *key, void *copy, uint32_t vsize)
{
    uint32_t h = (uint32_t)hash_bytes(key, m->key_size, 0);
    for (int tries = 0; tries < 64; tries++) {
        uint64_t s0 = __atomic_load_n(&m->wseq, __ATOMIC_ACQUIRE);
        if (s0 & 1) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
            continue;
        }
        uint32_t i = hfind(m, key, h, NULL);
        if (i && copy)
            memcpy(copy, hval(m, i), vsize);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&m->wseq, __ATOMIC_RELAXED) == s0)
            return i;
    }
    /* a busy (or dead) writer: take the lock, which always gives a consistent answer */
    pbs_lock(&m->lock);
    uint32_t i = hfind(m, key, h, NULL);
    if (i && copy)
        memcpy(copy, hval(m, i), vsize);
    pbs_unlock(&m->lock);
    return i;
}

static void hunlink(struct pbs_map *m, uint32_t i, uint32_t prev)
{
    struct hent *e = hent(m, i);
    if (prev)
        hent(m, prev)->next = e->next;
    else
        buckets(m)[e->hash & (m->nbuckets - 1)] = e->next;
    e->used = 0;
    e->next = m->free_head;
    m->free_head = i;
    m->count--;
}

static uint32_t hevict(struct pbs_map *m)
{
    /* The least recently used element: exact for small maps; large ones evict the oldest of
     * 128 sampled elements (the kernel's LRU is approximate too), keeping inserts O(1). */
    uint32_t best = 0, n = m->max_entries, samples = n <= 128 ? n : 128;
    uint64_t best_stamp = UINT64_MAX, x = m->clock * 0x9E3779B97F4A7C15ull + 1;
    for (uint32_t k = 0; k < samples; k++) {
        uint32_t i;
        if (samples == n) {
            i = k + 1;
        } else {
            x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
            i = (uint32_t)((x * 0x2545F4914F6CDD1Dull) % n) + 1;
        }
        struct hent *e = hent(m, i);
        if (e->used && e->stamp < best_stamp) {
            best_stamp = e->stamp;
            best = i;
        }
    }
    if (!best)
        return 0;
    uint32_t prev = 0;
    struct hent *e = hent(m, best);
    if (hfind(m, hkey(e), e->hash, &prev) != best)
        return 0;
    hunlink(m, best, prev);
    return 1;
}

/* value: value_size bytes for one CPU (all == 0) or value_stride bytes (all != 0) */
static int hupdate(struct pbs_map *m, const void *key, const void *value, uint64_t flags, int all)
{
    uint64_t f = flags & 3;
    if (f == 3)
        return -EINVAL;
    if (m->type == T_HOM) {
        uint32_t id;
        memcpy(&id, value, 4);
        if (!inner_map(m, id))
            return -EBADF;
    }
    uint32_t h = (uint32_t)hash_bytes(key, m->key_size, 0);
    hlock(m);
    uint32_t i = hfind(m, key, h, NULL);
    if (i && f == PBS_NOEXIST) {
        hunlock(m);
        return -EEXIST;
    }
    if (!i && f == PBS_EXIST) {
        hunlock(m);
        return -ENOENT;
    }
    int fresh = 0;
    if (!i) {
        if (!m->free_head && !(is_lru(m->type) && hevict(m))) {
            hunlock(m);
            return -E2BIG;
        }
        i = m->free_head;
        if (!idx_ok(m, i)) {
            hunlock(m);
            return -EFAULT;
        }
        struct hent *e = hent(m, i);
        m->free_head = e->next;
        e->used = 1;
        e->hash = h;
        memcpy(hkey(e), key, m->key_size);
        uint32_t b = h & (m->nbuckets - 1);
        e->next = buckets(m)[b];
        buckets(m)[b] = i;
        m->count++;
        fresh = 1;
    }
    hent(m, i)->stamp = __atomic_add_fetch(&m->clock, 1, __ATOMIC_RELAXED);
    uint8_t *v = hval(m, i);
    if (all) {
        memcpy(v, value, m->value_stride);
    } else if (is_percpu(m->type)) {
        uint64_t slot = r8(m->value_size);
        if (fresh)
            memset(v, 0, m->value_stride);
        memcpy(v + this_cpu(m) * slot, value, m->value_size);
    } else {
        memcpy(v, value, m->value_size);
    }
    hunlock(m);
    return 0;
}

static int hdelete(struct pbs_map *m, const void *key)
{
    uint32_t h = (uint32_t)hash_bytes(key, m->key_size, 0), prev = 0;
    hlock(m);
    uint32_t i = hfind(m, key, h, &prev);
    if (i)
        hunlink(m, i, prev);
    hunlock(m);
    return i ? 0 : -ENOENT;
}

static int hnext(struct pbs_map *m, const void *key, void *next)
{
    pbs_lock(&m->lock);
    uint32_t b = 0, i = 0;
    if (key) {
        uint32_t h = (uint32_t)hash_bytes(key, m->key_size, 0);
        i = hfind(m, key, h, NULL);
        if (i) {
            b = (h & (m->nbuckets - 1)) + 1;
            i = hent(m, i)->next;
        }
    }
    for (;;) {
        if (i && idx_ok(m, i)) {
            memcpy(next, hkey(hent(m, i)), m->key_size);
            pbs_unlock(&m->lock);
            return 0;
        }
        if (b >= m->nbuckets)
            break;
        i = buckets(m)[b++];
    }
    pbs_unlock(&m->lock);
    return -ENOENT;
}

/* -- LPM trie (longest prefix match over a flat table) ---------------------------------------- */
struct lent {
    uint32_t used;
    uint32_t _pad;
    /* key follows: u32 prefixlen + data */
};

static inline uint64_t lent_size(struct pbs_map *m) { return r8(sizeof(struct lent) + m->key_size); }
static inline struct lent *lent(struct pbs_map *m, uint32_t i) { return (struct lent *)(meta(m) + (uint64_t)i * lent_size(m)); }

static int prefix_match(const uint8_t *a, const uint8_t *b, uint32_t bits)
{
    uint32_t full = bits / 8, rest = bits % 8;
    if (memcmp(a, b, full))
        return 0;
    if (!rest)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

/* exact entry (same prefixlen and prefix) or, with longest, the best match; -1 if none */
static int64_t lfind(struct pbs_map *m, const uint8_t *key, int longest)
{
    uint32_t plen;
    memcpy(&plen, key, 4);
    int64_t best = -1;
    uint32_t best_len = 0;
    for (uint32_t i = 0; i < m->max_entries; i++) {
        struct lent *e = lent(m, i);
        if (!e->used)
            continue;
        uint8_t *k = (uint8_t *)(e + 1);
        uint32_t el;
        memcpy(&el, k, 4);
        if (longest) {
            if (el <= plen && prefix_match(k + 4, key + 4, el) && (best < 0 || el > best_len)) {
                best = i;
                best_len = el;
            }
        } else if (el == plen && prefix_match(k + 4, key + 4, el)) {
            return i;
        }
    }
    return best;
}

static int lpm_key_ok(struct pbs_map *m, const void *key)
{
    uint32_t plen;
    memcpy(&plen, key, 4);
    return plen <= (m->key_size - 4) * 8;
}

static int lupdate(struct pbs_map *m, const void *key, const void *value, uint64_t flags)
{
    if (!lpm_key_ok(m, key) || (flags & 3) == 3)
        return -EINVAL;
    pbs_lock(&m->lock);
    int64_t i = lfind(m, key, 0);
    if (i >= 0 && (flags & 3) == PBS_NOEXIST) {
        pbs_unlock(&m->lock);
        return -EEXIST;
    }
    if (i < 0 && (flags & 3) == PBS_EXIST) {
        pbs_unlock(&m->lock);
        return -ENOENT;
    }
    if (i < 0) {
        for (uint32_t j = 0; j < m->max_entries; j++)
            if (!lent(m, j)->used) {
                i = j;
                break;
            }
        if (i < 0) {
            pbs_unlock(&m->lock);
            return -ENOSPC;
        }
        struct lent *e = lent(m, (uint32_t)i);
        uint8_t *k = (uint8_t *)(e + 1);
        memset(k, 0, m->key_size);
        uint32_t plen;
        memcpy(&plen, key, 4);
        memcpy(k, key, 4);
        memcpy(k + 4, (const uint8_t *)key + 4, (plen + 7) / 8);
        if (plen % 8)
            k[4 + plen / 8] &= (uint8_t)(0xff << (8 - plen % 8));
        e->used = 1;
        m->count++;
    }
    memcpy(values(m) + (uint64_t)i * m->value_stride, value, m->value_size);
    pbs_unlock(&m->lock);
    return 0;
}

/* -- queue / stack ----------------------------------------------------------------------------- */
static int qpush(struct pbs_map *m, const void *value, uint64_t flags)
{
    pbs_lock(&m->lock);
    if (m->count >= m->max_entries) {
        if (!(flags & PBS_EXIST)) {
            pbs_unlock(&m->lock);
            return -E2BIG;
        }
        m->head++; /* drop the oldest */
        m->count--;
    }
    uint64_t slot = (m->head + m->count) % m->max_entries;
    memcpy(values(m) + slot * m->value_stride, value, m->value_size);
    m->count++;
    pbs_unlock(&m->lock);
    return 0;
}

static int qtake(struct pbs_map *m, void *value, int remove)
{
    pbs_lock(&m->lock);
    if (m->count == 0) {
        pbs_unlock(&m->lock);
        return -ENOENT;
    }
    uint64_t slot = m->type == T_QUEUE ? m->head % m->max_entries
                                       : (m->head + m->count - 1) % m->max_entries;
    memcpy(value, values(m) + slot * m->value_stride, m->value_size);
    if (remove) {
        if (m->type == T_QUEUE)
            m->head++;
        m->count--;
    }
    pbs_unlock(&m->lock);
    return 0;
}

/* -- bloom filter ------------------------------------------------------------------------------ */
static uint32_t bloom_nhash(struct pbs_map *m)
{
    uint32_t n = (uint32_t)(m->map_extra & 0xf);
    return n ? n : 5;
}

static int bloom_op(struct pbs_map *m, const void *value, int set)
{
    uint64_t nbits = (uint64_t)m->nbuckets * 8, *bits = (uint64_t *)meta(m);
    uint32_t n = bloom_nhash(m);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t b = hash_bytes(value, m->value_size, i + 1) & (nbits - 1);
        if (set)
            __atomic_or_fetch(&bits[b / 64], 1ull << (b % 64), __ATOMIC_RELAXED);
        else if (!(__atomic_load_n(&bits[b / 64], __ATOMIC_RELAXED) & (1ull << (b % 64))))
            return -ENOENT;
    }
    return 0;
}

/* -- creation and lifetime ------------------------------------------------------------------- */
static uint64_t pow2_at_least(uint64_t x)
{
    uint64_t p = 1;
    while (p < x)
        p <<= 1;
    return p;
}

int pbs_map_create(struct pbs_store *s, const char *name, uint32_t type, uint32_t key_size,
                   uint32_t value_size, uint32_t max_entries, uint32_t flags, uint64_t map_extra)
{
    struct pbs_header *h = s->hdr;
    uint32_t ncpus = h->ncpus;
    uint64_t stride = r8(value_size), vsize = 0, msize = 0;
    uint32_t nbuckets = 0;
    if (is_percpu(type))
        stride *= ncpus;
    switch (type) {
    case T_HASH: case T_PCPU_HASH: case T_LRU_HASH: case T_LRU_PCPU_HASH: case T_HOM:
        if (!key_size || !value_size || !max_entries || (type == T_HOM && value_size != 4))
            return -EINVAL;
        nbuckets = (uint32_t)pow2_at_least(max_entries);
        vsize = stride * max_entries;
        msize = r64((uint64_t)nbuckets * 4) + r8(sizeof(struct hent) + key_size) * max_entries;
        break;
    case T_ARRAY: case T_PCPU_ARRAY: case T_PROG_ARRAY: case T_AOM:
        if (key_size != 4 || !value_size || !max_entries || (is_id_array(type) && value_size != 4))
            return -EINVAL;
        vsize = stride * max_entries;
        break;
    case T_PERF:
        if (key_size != 4 || value_size != 4)
            return -EINVAL;
        msize = (uint64_t)ncpus * (sizeof(struct ring) + PERF_RING_SIZE);
        break;
    case T_RINGBUF:
        if (key_size || value_size || max_entries < h->page_size || (max_entries & (max_entries - 1)))
            return -EINVAL;
        msize = sizeof(struct ring) + max_entries;
        break;
    case T_QUEUE: case T_STACK:
        if (key_size || !value_size || !max_entries)
            return -EINVAL;
        vsize = stride * max_entries;
        break;
    case T_LPM:
        if (key_size <= 4 || key_size > 4 + 256 || !value_size || !max_entries)
            return -EINVAL;
        vsize = stride * max_entries;
        msize = r8(sizeof(struct lent) + key_size) * max_entries;
        break;
    case T_BLOOM: {
        if (key_size || !value_size || !max_entries || (map_extra & 0xf) > 15)
            return -EINVAL;
        uint32_t n = (uint32_t)(map_extra & 0xf) ? (uint32_t)(map_extra & 0xf) : 5;
        uint64_t bits = pow2_at_least((uint64_t)max_entries * n * 7 / 5 + 64);
        nbuckets = (uint32_t)(bits / 8); /* bytes of the bit set */
        msize = bits / 8;
        break;
    }
    default:
        return -ENOTSUP;
    }
    if (vsize > (1ull << 40) || msize > (1ull << 40))
        return -E2BIG;
    uint64_t moff = r64(vsize), total = moff + msize;
    if (!total)
        total = 64;
    uint64_t off = pbs_alloc(s, total);
    if (!off)
        return -ENOMEM;
    struct pbs_map *tab = pbs_ptr(s, h->maps_off), *m = NULL;
    pbs_lock(&h->lock);
    for (uint32_t i = 0; i < PBS_MAX_MAPS; i++)
        if (tab[i].state == PBS_FREE) {
            m = &tab[i];
            m->state = PBS_DYING;
            break;
        }
    pbs_unlock(&h->lock);
    if (!m) {
        pbs_free(s, off, total);
        return -ENOSPC;
    }
    m->type = type;
    m->key_size = key_size;
    m->value_size = value_size;
    m->max_entries = max_entries;
    m->flags = flags;
    m->frozen = 0;
    m->map_extra = map_extra;
    snprintf(m->name, sizeof(m->name), "%s", name ? name : "");
    m->value_stride = (uint32_t)stride;
    m->ncpus = ncpus;
    m->alloc_off = off;
    m->alloc_size = total;
    m->values_off = vsize ? off : 0;
    m->values_size = vsize;
    m->meta_off = off + moff;
    m->meta_size = msize;
    m->refcnt = 1;
    m->count = 0;
    m->nbuckets = nbuckets;
    m->free_head = 0;
    m->clock = m->head = m->tail = m->lost = 0;
    m->waiters = m->seq = 0;
    m->wseq = 0;
    m->pinned = 0;
    if (is_hash(type)) {
        for (uint32_t i = 1; i <= max_entries; i++)
            hent(m, i)->next = i < max_entries ? i + 1 : 0;
        m->free_head = 1;
    } else if (type == T_RINGBUF) {
        ((struct ring *)meta(m))->mask = max_entries - 1;
    } else if (type == T_PERF) {
        for (uint32_t c = 0; c < ncpus; c++)
            ring_of(m, (int)c)->mask = PERF_RING_SIZE - 1;
    }
    __atomic_store_n(&m->state, PBS_LIVE, __ATOMIC_RELEASE);
    pbs_bump_generation(s, 0);
    return (int)m->id;
}

struct pbs_map *pbs_map(struct pbs_store *s, uint32_t id)
{
    if (id == 0 || id > PBS_MAX_MAPS)
        return NULL;
    struct pbs_map *m = (struct pbs_map *)pbs_ptr(s, s->hdr->maps_off) + (id - 1);
    return __atomic_load_n(&m->state, __ATOMIC_ACQUIRE) == PBS_LIVE ? m : NULL;
}

/* type, key_size, value_size, max_entries, flags: wrappers check that what they size their
 * buffers by is what the map copies in and out */
void pbs_map_attrs(const struct pbs_map *m, uint32_t attrs[5])
{
    attrs[0] = m->type;
    attrs[1] = m->key_size;
    attrs[2] = m->value_size;
    attrs[3] = m->max_entries;
    attrs[4] = m->flags;
}

struct pbs_map *pbs_map_by_name(struct pbs_store *s, const char *name)
{
    for (uint32_t id = 1; id <= PBS_MAX_MAPS; id++) {
        struct pbs_map *m = pbs_map(s, id);
        if (m && strncmp(m->name, name, PBS_NAME_LEN) == 0)
            return m;
    }
    return NULL;
}

/* The pin holds a reference, like a bpffs file: the map outlives the loader that made it. */
void pbs_map_pin(struct pbs_map *m)
{
    if (!__atomic_exchange_n(&m->pinned, 1, __ATOMIC_ACQ_REL))
        __atomic_add_fetch(&m->refcnt, 1, __ATOMIC_ACQ_REL);
}

int pbs_map_get_pinned(struct pbs_store *s, const char *name, uint32_t attrs[5])
{
    pbs_lock(&s->hdr->lock); /* against a concurrent last put */
    int found = 0;
    for (uint32_t id = 1; id <= PBS_MAX_MAPS && !found; id++) {
        struct pbs_map *m = pbs_map(s, id);
        if (!m || !__atomic_load_n(&m->pinned, __ATOMIC_ACQUIRE) || strncmp(m->name, name, PBS_NAME_LEN))
            continue;
        uint32_t r = __atomic_load_n(&m->refcnt, __ATOMIC_ACQUIRE);
        do {
            if (r == 0) /* being freed by its last holder */
                break;
        } while (!__atomic_compare_exchange_n(&m->refcnt, &r, r + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
        if (r == 0)
            continue;
        if (attrs) {
            attrs[0] = m->type;
            attrs[1] = m->key_size;
            attrs[2] = m->value_size;
            attrs[3] = m->max_entries;
            attrs[4] = m->flags;
        }
        found = (int)id;
    }
    pbs_unlock(&s->hdr->lock);
    return found;
}

int pbs_map_get(struct pbs_store *s, uint32_t id)
{
    struct pbs_map *m = pbs_map(s, id);
    if (!m)
        return -ENOENT;
    __atomic_add_fetch(&m->refcnt, 1, __ATOMIC_ACQ_REL);
    return 0;
}

void pbs_map_put(struct pbs_store *s, uint32_t id)
{
    struct pbs_map *m = pbs_map(s, id);
    if (!m || __atomic_sub_fetch(&m->refcnt, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    __atomic_store_n(&m->state, PBS_DYING, __ATOMIC_RELEASE);
    pbs_free(s, m->alloc_off, m->alloc_size);
    m->alloc_off = m->values_off = m->meta_off = 0;
    __atomic_store_n(&m->state, PBS_FREE, __ATOMIC_RELEASE);
    pbs_bump_generation(s, 0);
}

void pbs_map_values(struct pbs_map *m, uint64_t *addr, uint64_t *len)
{
    if (m->values_size && !is_id_array(m->type) && !is_of_maps(m->type) && m->type != T_QUEUE &&
        m->type != T_STACK) {
        *addr = (uint64_t)values(m);
        *len = m->values_size;
    } else {
        *addr = 0;
        *len = 0;
    }
}

/* -- element access as from a program ---------------------------------------------------------- */
void *pbs_map_lookup(struct pbs_map *m, const void *key)
{
    uint32_t t = m->type;
    if (is_array(t) || t == T_PERF) {
        uint32_t idx;
        memcpy(&idx, key, 4);
        if (idx >= m->max_entries || t == T_PROG_ARRAY || t == T_PERF)
            return NULL;
        if (t == T_AOM)
            return inner_map(m, __atomic_load_n((uint32_t *)(values(m) + (uint64_t)idx * m->value_stride),
                                                __ATOMIC_ACQUIRE));
        uint8_t *v = values(m) + (uint64_t)idx * m->value_stride;
        return t == T_PCPU_ARRAY ? v + this_cpu(m) * r8(m->value_size) : v;
    }
    if (is_hash(t)) {
        uint32_t i = hfind_read(m, key, NULL, 0);
        if (!i)
            return NULL;
        if (is_lru(t))
            __atomic_store_n(&hent(m, i)->stamp, __atomic_add_fetch(&m->clock, 1, __ATOMIC_RELAXED),
                             __ATOMIC_RELAXED);
        uint8_t *v = hval(m, i);
        if (t == T_HOM)
            return inner_map(m, __atomic_load_n((uint32_t *)v, __ATOMIC_ACQUIRE));
        return is_percpu(t) ? v + this_cpu(m) * r8(m->value_size) : v;
    }
    if (t == T_LPM) {
        if (!lpm_key_ok(m, key))
            return NULL;
        pbs_lock(&m->lock);
        int64_t i = lfind(m, key, 1);
        pbs_unlock(&m->lock);
        return i < 0 ? NULL : values(m) + (uint64_t)i * m->value_stride;
    }
    return NULL;
}

int pbs_map_update(struct pbs_map *m, const void *key, const void *value, uint64_t flags)
{
    uint32_t t = m->type;
    if (is_hash(t))
        return hupdate(m, key, value, flags, 0);
    if (is_array(t)) {
        uint32_t idx;
        memcpy(&idx, key, 4);
        if ((flags & 3) == 3 || (flags & ~7ull))
            return -EINVAL;
        if (idx >= m->max_entries)
            return -E2BIG;
        if ((flags & 3) == PBS_NOEXIST)
            return -EEXIST;
        uint8_t *v = values(m) + (uint64_t)idx * m->value_stride;
        if (t == T_PCPU_ARRAY)
            v += this_cpu(m) * r8(m->value_size);
        if (is_id_array(t)) {
            uint32_t id;
            memcpy(&id, value, 4);
            if (t == T_AOM && !inner_map(m, id))
                return -EBADF;
            __atomic_store_n((uint32_t *)v, id, __ATOMIC_RELEASE);
        } else {
            memcpy(v, value, m->value_size);
        }
        return 0;
    }
    if (t == T_LPM)
        return lupdate(m, key, value, flags);
    if (t == T_QUEUE || t == T_STACK || t == T_BLOOM)
        return pbs_map_push(m, value, flags);
    return -EINVAL;
}

int pbs_map_delete(struct pbs_map *m, const void *key)
{
    uint32_t t = m->type;
    if (is_hash(t))
        return hdelete(m, key);
    if (is_id_array(t)) {
        uint32_t idx;
        memcpy(&idx, key, 4);
        if (idx >= m->max_entries)
            return -E2BIG;
        uint32_t *v = (uint32_t *)(values(m) + (uint64_t)idx * m->value_stride);
        return __atomic_exchange_n(v, 0, __ATOMIC_ACQ_REL) ? 0 : -ENOENT;
    }
    if (t == T_LPM) {
        if (!lpm_key_ok(m, key))
            return -EINVAL;
        pbs_lock(&m->lock);
        int64_t i = lfind(m, key, 0);
        if (i >= 0) {
            lent(m, (uint32_t)i)->used = 0;
            m->count--;
        }
        pbs_unlock(&m->lock);
        return i >= 0 ? 0 : -ENOENT;
    }
    return -EINVAL;
}

int pbs_map_push(struct pbs_map *m, const void *value, uint64_t flags)
{
    if (m->type == T_BLOOM)
        return bloom_op(m, value, 1);
    if (m->type != T_QUEUE && m->type != T_STACK)
        return -EINVAL;
    return qpush(m, value, flags);
}

int pbs_map_pop(struct pbs_map *m, void *value)
{
    if (m->type != T_QUEUE && m->type != T_STACK)
        return -EINVAL;
    return qtake(m, value, 1);
}

int pbs_map_peek(struct pbs_map *m, void *value)
{
    if (m->type == T_BLOOM)
        return bloom_op(m, value, 0);
    if (m->type != T_QUEUE && m->type != T_STACK)
        return -EINVAL;
    return qtake(m, value, 0);
}

/* -- from user space --------------------------------------------------------------------------- */
static uint32_t user_value_size(struct pbs_map *m)
{
    return is_percpu(m->type) ? m->value_stride : m->value_size;
}

int pbs_map_lookup_copy(struct pbs_map *m, const void *key, void *value)
{
    uint32_t t = m->type;
    if (t == T_QUEUE || t == T_STACK)
        return qtake(m, value, 0);
    if (t == T_BLOOM)
        return bloom_op(m, value, 0);
    if (t == T_PERF || t == T_RINGBUF)
        return -EINVAL;
    if (is_array(t)) {
        uint32_t idx;
        memcpy(&idx, key, 4);
        if (idx >= m->max_entries)
            return -ENOENT;
        uint8_t *v = values(m) + (uint64_t)idx * m->value_stride;
        if (is_id_array(t)) {
            uint32_t id = __atomic_load_n((uint32_t *)v, __ATOMIC_ACQUIRE);
            if (!id)
                return -ENOENT;
            memcpy(value, &id, 4);
            return 0;
        }
        memcpy(value, v, user_value_size(m));
        return 0;
    }
    if (is_hash(t)) {
        return hfind_read(m, key, value, user_value_size(m)) ? 0 : -ENOENT;
    }
    if (t == T_LPM) {
        if (!lpm_key_ok(m, key))
            return -EINVAL;
        pbs_lock(&m->lock);
        int64_t i = lfind(m, key, 1);
        if (i >= 0)
            memcpy(value, values(m) + (uint64_t)i * m->value_stride, m->value_size);
        pbs_unlock(&m->lock);
        return i >= 0 ? 0 : -ENOENT;
    }
    return -EINVAL;
}

int pbs_map_update_user(struct pbs_map *m, const void *key, const void *value, uint64_t flags)
{
    if (m->frozen)
        return -EPERM;
    uint32_t t = m->type;
    if (is_hash(t) && is_percpu(t))
        return hupdate(m, key, value, flags, 1);
    if (t == T_PCPU_ARRAY) {
        uint32_t idx;
        memcpy(&idx, key, 4);
        if ((flags & 3) == 3)
            return -EINVAL;
        if (idx >= m->max_entries)
            return -E2BIG;
        if ((flags & 3) == PBS_NOEXIST)
            return -EEXIST;
        memcpy(values(m) + (uint64_t)idx * m->value_stride, value, m->value_stride);
        return 0;
    }
    if (t == T_PERF || t == T_RINGBUF)
        return -EINVAL;
    return pbs_map_update(m, key, value, flags);
}

int pbs_map_next_key(struct pbs_map *m, const void *key, void *next)
{
    uint32_t t = m->type;
    if (is_array(t) || t == T_PERF) {
        uint32_t idx = 0;
        if (key) {
            memcpy(&idx, key, 4);
            idx = idx >= m->max_entries ? 0 : idx + 1;
        }
        if (idx >= m->max_entries)
            return -ENOENT;
        memcpy(next, &idx, 4);
        return 0;
    }
    if (is_hash(t))
        return hnext(m, key, next);
    if (t == T_LPM) {
        pbs_lock(&m->lock);
        int64_t start = 0;
        if (key && lpm_key_ok(m, key)) {
            int64_t i = lfind(m, key, 0);
            start = i >= 0 ? i + 1 : 0;
        }
        for (uint32_t i = (uint32_t)start; i < m->max_entries; i++)
            if (lent(m, i)->used) {
                memcpy(next, lent(m, i) + 1, m->key_size);
                pbs_unlock(&m->lock);
                return 0;
            }
        pbs_unlock(&m->lock);
        return -ENOENT;
    }
    return -EINVAL;
}

int pbs_map_lookup_batch(struct pbs_map *m, uint64_t *cursor, void *keys, void *values_out, uint32_t max)
{
    uint32_t t = m->type, n = 0, vs = user_value_size(m);
    uint8_t *ko = keys, *vo = values_out;
    uint64_t i = *cursor;
    if (is_array(t)) {
        for (; i < m->max_entries && n < max; i++) {
            uint32_t k = (uint32_t)i;
            if (pbs_map_lookup_copy(m, &k, vo + (uint64_t)n * vs) < 0)
                continue;
            memcpy(ko + (uint64_t)n * 4, &k, 4);
            n++;
        }
    } else if (is_hash(t)) {
        pbs_lock(&m->lock);
        for (; i < m->max_entries && n < max; i++) {
            struct hent *e = hent(m, (uint32_t)i + 1);
            if (!e->used)
                continue;
            memcpy(ko + (uint64_t)n * m->key_size, hkey(e), m->key_size);
            memcpy(vo + (uint64_t)n * vs, hval(m, (uint32_t)i + 1), vs);
            n++;
        }
        pbs_unlock(&m->lock);
    } else if (t == T_LPM) {
        pbs_lock(&m->lock);
        for (; i < m->max_entries && n < max; i++) {
            struct lent *e = lent(m, (uint32_t)i);
            if (!e->used)
                continue;
            memcpy(ko + (uint64_t)n * m->key_size, e + 1, m->key_size);
            memcpy(vo + (uint64_t)n * vs, values(m) + i * m->value_stride, vs);
            n++;
        }
        pbs_unlock(&m->lock);
    } else {
        return -EINVAL;
    }
    *cursor = i;
    return (int)n;
}

int pbs_map_update_batch(struct pbs_map *m, const void *keys, const void *vals, uint32_t n, uint64_t flags)
{
    uint32_t vs = user_value_size(m);
    for (uint32_t i = 0; i < n; i++) {
        int r = pbs_map_update_user(m, (const uint8_t *)keys + (uint64_t)i * m->key_size,
                                    (const uint8_t *)vals + (uint64_t)i * vs, flags);
        if (r < 0)
            return r;
    }
    return (int)n;
}

/* Element `idx` (0-based slot) for bpf_for_each_map_elem: copies the key, returns the value
 * pointer (per-CPU maps: this CPU's slot), or NULL for an empty slot or idx past the end. */
void *pbs_map_elem_at(struct pbs_map *m, uint32_t idx, void *key, int *end)
{
    uint32_t t = m->type;
    *end = idx >= m->max_entries;
    if (*end)
        return NULL;
    uint8_t *v;
    if (is_array(t) && !is_id_array(t)) {
        memcpy(key, &idx, 4);
        v = values(m) + (uint64_t)idx * m->value_stride;
    } else if (is_hash(t) && t != T_HOM) {
        struct hent *e = hent(m, idx + 1);
        if (!__atomic_load_n(&e->used, __ATOMIC_ACQUIRE))
            return NULL;
        memcpy(key, hkey(e), m->key_size);
        v = hval(m, idx + 1);
    } else {
        *end = 1;
        return NULL;
    }
    return is_percpu(t) ? v + this_cpu(m) * r8(m->value_size) : v;
}

/* Like BPF_MAP_FREEZE: user-space writes fail with EPERM from now on (programs are unaffected;
 * read-only data for programs is BPF_F_RDONLY_PROG). */
void pbs_map_freeze(struct pbs_map *m) { __atomic_store_n(&m->frozen, 1, __ATOMIC_RELEASE); }
