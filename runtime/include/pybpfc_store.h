/* The shared-memory object store of the userspace runtime: maps, programs and links.
 *
 * One file (a /dev/shm file or a memfd, mode 0600) holds everything; any process that maps
 * it (the loader, agents, a second loader) sees the same state. Inside the store there are
 * only offsets from the start of the mapping, never pointers, so each process may map it at
 * a different address. Records (maps, programs, links) sit in fixed tables in the header and
 * are named by id = table index + 1 (0 = none). Process-shared robust mutexes guard the
 * tables and each map; programs update values with atomic instructions directly.
 *
 * A process works through a `struct pbs_store` (process-local handle, from pbs_create or
 * pbs_open). Map handles given to programs (pbr_run.maps[i]) are the addresses of the
 * `struct pbs_map` records in the caller's mapping: helpers find the store from the record
 * (base = (char *)map - map->self_off), so the same prepared bytecode runs in any process.
 *
 * Agent contract (what an agent reads):
 *   - pbs_open(path or "/proc/<pid>/fd/<n>") then, whenever hdr->links_generation changed,
 *     rescan pbs_link(s, id) for id in 1..PBS_MAX_LINKS (state == PBS_LIVE, enabled != 0);
 *   - run a program with pbs_prog_run() (it picks the JIT code when this process mapped it
 *     with pbs_prog_map_jit(), else the interpreter), passing the context's regions.
 */
#ifndef PYBPFC_STORE_H
#define PYBPFC_STORE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "pybpfc_vm.h"

#define PBS_MAGIC 0x53524250u /* "PBRS" */
#define PBS_VERSION 1u
#define PBS_NAME_LEN 64
#define PBS_PATH_LEN 256
#define PBS_MAX_MAPS 256
#define PBS_MAX_PROGS 256
#define PBS_MAX_LINKS 256
#define PBS_MAX_PROG_MAPS 64      /* maps one program may reference */
#define PBS_DEFAULT_SIZE (1ull << 30) /* sparse: only touched pages cost memory */
#define PBS_TRACE_SIZE (1u << 18) /* trace_printk ring */
#define PBS_MAX_TAIL_CALLS 33     /* as the kernel's MAX_TAIL_CALL_CNT */

/* record state */
enum { PBS_FREE = 0, PBS_LIVE = 1, PBS_DYING = 2 };

/* link kinds */
enum {
    PBS_LINK_UPROBE = 1,        /* path + offset (file offset of the probed instruction) */
    PBS_LINK_URETPROBE = 2,     /* path + offset of the function entry */
    PBS_LINK_TRACEPOINT = 3,    /* tp = "syscalls/sys_enter_openat" etc. */
    PBS_LINK_RAW_TRACEPOINT = 4 /* tp = "sys_enter" / "sys_exit" */
};

/* pbs_map_update flags: as the kernel's BPF_ANY / BPF_NOEXIST / BPF_EXIST / BPF_F_LOCK */
enum { PBS_ANY = 0, PBS_NOEXIST = 1, PBS_EXIST = 2, PBS_F_LOCK = 4 };

/* Ring buffer record header bits (as the kernel's BPF_RINGBUF_*_BIT) */
#define PBS_RB_BUSY (1u << 31)
#define PBS_RB_DISCARD (1u << 30)
#define PBS_RB_HDR 8
/* A ring (ring buffer map: the map's meta area; perf event array: one per CPU) is a header
 * of PBS_RING_HDR bytes (consumer position at 0, producer position at 64, data size - 1 at
 * 128) followed by the data. */
#define PBS_RING_HDR 192

struct pbs_map {
    uint32_t id;
    uint32_t state;          /* PBS_* */
    uint32_t type;           /* BPF_MAP_TYPE_* */
    uint32_t key_size;
    uint32_t value_size;
    uint32_t max_entries;
    uint32_t flags;          /* BPF_F_* given at creation */
    uint32_t frozen;
    uint64_t map_extra;
    char name[PBS_NAME_LEN];
    uint64_t self_off;       /* offset of this record: store base = (char *)this - self_off */
    uint32_t value_stride;   /* bytes between two elements' values (per-CPU: ncpus slots of
                                round_up(value_size, 8)) */
    uint32_t ncpus;
    uint64_t values_off;     /* the element values, what programs may touch (a region) */
    uint64_t values_size;
    uint64_t meta_off;       /* type-specific bookkeeping (buckets, entries, ring positions) */
    uint64_t meta_size;
    uint64_t alloc_off;      /* the whole allocation (values + meta) */
    uint64_t alloc_size;
    uint32_t refcnt;         /* holders (loaders); the record is freed when it drops to 0 */
    uint32_t count;          /* elements in hash-like maps, queue/stack length */
    uint32_t nbuckets;
    uint32_t free_head;      /* hash maps: first free element + 1 */
    uint64_t clock;          /* LRU clock / queue head / ring buffer waiter sequence */
    uint64_t head, tail;     /* queue/stack positions */
    uint64_t lost;           /* records dropped (ring/perf buffers) */
    uint32_t waiters;        /* readers sleeping on `seq` (futex) */
    uint32_t seq;            /* bumped after each ring/perf submit (futex word) */
    uint64_t wseq;           /* hash maps: odd while a writer (holding `lock`) changes the
                                table; lookups read without the lock and retry on a change */
    uint32_t pinned;         /* shared by name with later loaders (libbpf's pin-by-name) */
    uint32_t _r32;
    uint64_t _reserved[4];
    pthread_mutex_t lock;    /* process-shared, robust */
};

struct pbs_prog {
    uint32_t id;
    uint32_t state;
    uint32_t type;           /* BPF_PROG_TYPE_* */
    uint32_t expected_attach_type;
    char name[PBS_NAME_LEN];
    char section[128];
    uint64_t self_off;
    uint64_t insns_off;      /* prepared bytecode (see pybpfc_vm.h) */
    uint32_t ninsns;
    uint32_t nmaps;          /* map_ids[i] is prepared map index i */
    uint32_t map_ids[PBS_MAX_PROG_MAPS];
    uint64_t jit_off;        /* position-independent x86-64 code, page aligned, 0 = none */
    uint64_t jit_size;       /* bytes reserved (page multiple) */
    uint64_t jit_len;        /* bytes of code */
    uint64_t jit_entry;      /* offset of `entry(run, ctx, ctx_len)` inside the code */
    uint32_t refcnt;
    uint32_t _pad;
    uint64_t serial;         /* unique per program ever created in this store: a process's JIT
                                mapping is used only for the program it was made for */
    uint64_t _reserved[7];
};

struct pbs_link {
    uint32_t id;
    uint32_t state;
    uint32_t kind;           /* PBS_LINK_* */
    uint32_t prog_id;
    int32_t pid;             /* only this process (tgid); -1 = any */
    uint32_t enabled;        /* 0: keep the hook but do not run */
    uint64_t cookie;         /* bpf_get_attach_cookie() */
    uint64_t offset;         /* uprobes: file offset in `path` */
    uint64_t generation;     /* bumped whenever this record changes */
    char path[PBS_PATH_LEN]; /* uprobes: target binary (absolute path) */
    char tp[PBS_NAME_LEN];   /* tracepoints: "category/name"; raw: "name" */
    uint64_t hits;           /* runs (atomic, agents add) */
    uint64_t errors;         /* runs stopped by a fault */
    uint64_t _reserved[6];
};

struct pbs_header {
    uint32_t magic;              /* PBS_MAGIC */
    uint32_t version;            /* PBS_VERSION */
    uint64_t size;               /* bytes of the whole store */
    uint32_t ncpus;              /* possible CPUs: per-CPU maps have this many slots */
    uint32_t page_size;
    uint64_t generation;         /* bumped on any change of maps, programs or links */
    uint64_t links_generation;   /* bumped on any change of links (agents poll this) */
    uint64_t brk;                /* bump allocator: next free offset */
    uint64_t free_heads[48];     /* freed blocks by size class (2^i bytes), offset or 0 */
    uint64_t maps_off;           /* struct pbs_map[PBS_MAX_MAPS] */
    uint64_t progs_off;          /* struct pbs_prog[PBS_MAX_PROGS] */
    uint64_t links_off;          /* struct pbs_link[PBS_MAX_LINKS] */
    uint64_t trace_map_off;      /* struct pbs_map of the trace_printk ring (a ring buffer) */
    uint64_t prog_serial;        /* last pbs_prog.serial handed out */
    uint64_t _reserved[15];
    pthread_mutex_t lock;        /* tables and allocator; process-shared, robust */
};

/* Process-local handle of a mapped store. */
struct pbs_store {
    struct pbs_header *hdr;
    uint8_t *base;
    uint64_t size;
    int fd;
    int owner;                   /* created by this process (unlinks /dev/shm path on close) */
    char path[PBS_PATH_LEN];
    void *jit_addr[PBS_MAX_PROGS];  /* this process's executable mapping of each program's JIT
                                       code (NULL: interpreter) */
    uint64_t jit_fn[PBS_MAX_PROGS]; /* entry address, or 0 */
    uint64_t budget;             /* instruction budget per run (0: PBR_DEFAULT_BUDGET) */
    uint64_t jit_serial[PBS_MAX_PROGS]; /* serial of the program jit_fn belongs to */
    /* what jit_addr maps: its own length and store offset, never the (shared, changing)
     * program record's, which may describe a newer program with the same id by now */
    uint64_t jit_map_size[PBS_MAX_PROGS];
    uint64_t jit_map_off[PBS_MAX_PROGS];
    void *jit_retired;           /* replaced mappings (a thread may still run them): pbs_close */
};

/* Result of one run. */
struct pbs_run_result {
    uint32_t status;             /* PBR_* */
    uint32_t _pad;
    uint64_t fault_addr;
    uint64_t fault_pc;
    uint64_t duration_ns;        /* pbs_prog_test_run only: average ns per run */
};

/* -- store --------------------------------------------------------------------------------
 * pbs_create: path NULL or "" = memfd; otherwise a /dev/shm (or any tmpfs) file created
 * O_EXCL with mode 0600. size 0 = PBS_DEFAULT_SIZE. Returns NULL with errno set. */
struct pbs_store *pbs_create(const char *path, uint64_t size);
/* Maps an existing store by path ("/dev/shm/x", "/proc/<pid>/fd/<n>") or fd (path NULL). */
struct pbs_store *pbs_open(const char *path, int fd);
void pbs_close(struct pbs_store *s);
/* offset <-> address in this process */
static inline void *pbs_ptr(const struct pbs_store *s, uint64_t off) { return off ? s->base + off : NULL; }
uint64_t pbs_alloc(struct pbs_store *s, uint64_t size); /* zeroed, aligned to min(size, page) */
void pbs_free(struct pbs_store *s, uint64_t off, uint64_t size);

/* -- maps (return 0 or -errno like the kernel) --------------------------------------------- */
/* Returns the new id or -errno. `init` (value_size bytes, may be NULL) fills a global-data
 * array's single element. */
int pbs_map_create(struct pbs_store *s, const char *name, uint32_t type, uint32_t key_size,
                   uint32_t value_size, uint32_t max_entries, uint32_t flags, uint64_t map_extra);
struct pbs_map *pbs_map(struct pbs_store *s, uint32_t id);      /* NULL if not live */
struct pbs_map *pbs_map_by_name(struct pbs_store *s, const char *name);
/* The pinned map of that name (pbs_map_pin), with a reference taken; returns its id or 0.
 * attrs (may be NULL) receives type, key_size, value_size, max_entries, flags. */
int pbs_map_get_pinned(struct pbs_store *s, const char *name, uint32_t attrs[5]);
void pbs_map_pin(struct pbs_map *m);
int pbs_map_get(struct pbs_store *s, uint32_t id);              /* refcnt++ */
void pbs_map_put(struct pbs_store *s, uint32_t id);             /* refcnt--, frees at 0 */
/* Element access as from a program: pointer to the value (per-CPU maps: this CPU's slot) or
 * NULL. */
void *pbs_map_lookup(struct pbs_map *m, const void *key);
int pbs_map_update(struct pbs_map *m, const void *key, const void *value, uint64_t flags);
int pbs_map_delete(struct pbs_map *m, const void *key);
int pbs_map_push(struct pbs_map *m, const void *value, uint64_t flags);
int pbs_map_pop(struct pbs_map *m, void *value);
int pbs_map_peek(struct pbs_map *m, void *value);
/* From user space: values are copied (per-CPU: all CPUs, each round_up(value_size, 8)). */
int pbs_map_lookup_copy(struct pbs_map *m, const void *key, void *value);
int pbs_map_update_user(struct pbs_map *m, const void *key, const void *value, uint64_t flags);
int pbs_map_next_key(struct pbs_map *m, const void *key, void *next); /* key NULL: first */
void pbs_map_freeze(struct pbs_map *m); /* user-space updates fail with -EPERM afterwards */
/* Batch: copies up to `max` entries starting after *cursor (0: from the start); returns the
 * count (0 = done) and advances *cursor. keys/values are packed arrays. */
int pbs_map_lookup_batch(struct pbs_map *m, uint64_t *cursor, void *keys, void *values, uint32_t max);
int pbs_map_update_batch(struct pbs_map *m, const void *keys, const void *values, uint32_t n,
                         uint64_t flags);
/* Ring buffer (and each CPU of a perf event array: cpu >= 0; ring buffers: cpu = -1). */
void *pbs_ringbuf_reserve(struct pbs_map *m, int cpu, uint64_t size);
void pbs_ringbuf_commit(struct pbs_map *m, void *rec, int discard);
int pbs_ringbuf_output(struct pbs_map *m, int cpu, const void *data, uint64_t size);
/* Copies whole committed records ([u32 len][u32 0][data padded to 8] each) into buf; returns
 * bytes written. Consumes them. cpu -1 for ring buffers, -2: all CPUs of a perf array. */
int64_t pbs_ringbuf_read(struct pbs_map *m, int cpu, void *buf, uint64_t buflen);
/* Sleeps until a record may be available or timeout_ms passed (-1 forever). 1/0. */
int pbs_ringbuf_wait(struct pbs_map *m, int timeout_ms);
uint64_t pbs_ringbuf_query(struct pbs_map *m, uint64_t flags);
uint64_t pbs_ringbuf_lost(struct pbs_map *m); /* records dropped because the ring was full */
/* Commit counter of the map (all CPUs), and a wait until it differs from `seq`: 1 changed, 0
 * timed out (timeout_ms -1: forever). Readers that want a file descriptor use these. */
uint32_t pbs_ringbuf_seq(struct pbs_map *m);
int pbs_ringbuf_wait_seq(struct pbs_map *m, uint32_t seq, int timeout_ms);
/* Slot idx of a hash or array map for bpf_for_each_map_elem: copies the key and returns the
 * value pointer (per-CPU: this CPU's), NULL for an empty slot; *end set past the last slot. */
void *pbs_map_elem_at(struct pbs_map *m, uint32_t idx, void *key, int *end);
/* Memory a program may touch for this map (the values area); 0 size if none. */
void pbs_map_values(struct pbs_map *m, uint64_t *addr, uint64_t *len);

/* -- programs -------------------------------------------------------------------------------- */
/* Stores prepared bytecode; returns the id or -errno. */
int pbs_prog_create(struct pbs_store *s, const char *name, const char *section, uint32_t type,
                    uint32_t expected_attach_type, const uint64_t *insns, uint32_t ninsns,
                    const uint32_t *map_ids, uint32_t nmaps);
struct pbs_prog *pbs_prog(struct pbs_store *s, uint32_t id);
struct pbs_prog *pbs_prog_by_name(struct pbs_store *s, const char *name);
void pbs_prog_put(struct pbs_store *s, uint32_t id);
/* Copies JIT code into the store (page aligned); entry = offset of the entry function. */
int pbs_prog_set_jit(struct pbs_store *s, uint32_t id, const void *code, uint64_t len, uint64_t entry);
/* Maps the program's JIT code executable in this process; later runs use it. 0 or -errno. */
int pbs_prog_map_jit(struct pbs_store *s, uint32_t id);
/* Uses code placed elsewhere by this process (entry address) for later runs; 0 = interpreter. */
void pbs_prog_set_entry(struct pbs_store *s, uint32_t id, uint64_t entry);
/* Runs a program: r1 = ctx, r2 = ctx_len. `regions` (ctx, packet) are added to the run
 * besides the map value areas. `cookie` is what bpf_get_attach_cookie returns. */
uint64_t pbs_prog_run(struct pbs_store *s, uint32_t id, uint64_t ctx, uint64_t ctx_len,
                      const struct pbr_region *regions, uint32_t nregions, uint64_t cookie,
                      struct pbs_run_result *res);
/* The same, also giving what bpf_get_func_ip returns (uprobes: the probed address). */
uint64_t pbs_prog_run_ip(struct pbs_store *s, uint32_t id, uint64_t ctx, uint64_t ctx_len,
                         const struct pbr_region *regions, uint32_t nregions, uint64_t cookie,
                         uint64_t func_ip, struct pbs_run_result *res);

/* -- links ----------------------------------------------------------------------------------- */
int pbs_link_create(struct pbs_store *s, uint32_t kind, uint32_t prog_id, const char *path,
                    uint64_t offset, const char *tp, int32_t pid, uint64_t cookie);
struct pbs_link *pbs_link(struct pbs_store *s, uint32_t id);
int pbs_link_set_enabled(struct pbs_store *s, uint32_t id, int enabled);
void pbs_link_destroy(struct pbs_store *s, uint32_t id);

/* -- helpers ---------------------------------------------------------------------------------- */
/* Private helper id (no kernel helper uses it): legacy LD_ABS/LD_IND packet loads, which the
 * loader rewrites into calls of it. */
#define PBS_HELPER_LD_PKT 255
/* The helper table by kernel helper id (NULL = unsupported). */
extern const pbr_helper_fn pbs_helpers[PBR_MAX_HELPERS];
/* Copies up to len bytes of trace_printk output ("comm-pid: message\n" lines) into buf; consumes. */
int64_t pbs_trace_read(struct pbs_store *s, char *buf, uint64_t len);
/* Fault-safe copy from this process's memory (process_vm_readv): 0 or -EFAULT. */
int pbs_safe_read(void *dst, uint64_t src, uint64_t len);

/* helper_ctx of runs started by pbs_prog_run */
struct pbs_exec {
    struct pbs_store *store;
    struct pbs_prog *prog;
    uint64_t cookie;
    uint32_t tail_calls;
    uint32_t nbase;                          /* regions given by the caller (ctx, packet) */
    uint64_t maps[PBS_MAX_PROG_MAPS];        /* handles (struct pbs_map addresses) */
    uint64_t map_values[PBS_MAX_PROG_MAPS];  /* global data: value address of element 0 */
    uint64_t func_ip;                        /* bpf_get_func_ip */
    uint32_t tail_target;                    /* program a tail call asked for (0: none) */
    uint32_t _pad2;
};

/* -- accessors (for the cffi wrapper) ---------------------------------------------------------- */
int pbs_store_fd(struct pbs_store *s);
uint32_t pbs_store_ncpus(struct pbs_store *s);
uint64_t pbs_store_generation(struct pbs_store *s);
void pbs_store_set_budget(struct pbs_store *s, uint64_t budget);
/* Memory mapped below 2 GiB (test_run packets: xdp_md/__sk_buff hold 32-bit pointers). */
void *pbs_low_alloc(uint64_t size);
void pbs_low_free(void *p, uint64_t size);

/* -- runtime-internal (store.c, maps.c, helpers.c) ------------------------------------------ */
int pbs_mutex_init(pthread_mutex_t *m);
void pbs_lock(pthread_mutex_t *m);
void pbs_unlock(pthread_mutex_t *m);
void pbs_bump_generation(struct pbs_store *s, int links);
static inline uint8_t *pbs_map_base(const struct pbs_map *m) { return (uint8_t *)m - m->self_off; }
/* Prepares run->maps/map_values/regions for program p (tail calls reuse it); 0 or -1. */
int pbs_exec_setup(struct pbs_exec *ex, struct pbr_run *run, struct pbs_prog *p);
/* Runs ex->prog on run with the engine this process chose for it. */
uint64_t pbs_exec_in(struct pbs_exec *ex, struct pbr_run *run, uint64_t ctx, uint64_t ctx_len);
/* pbs_prog_run `repeat` times; res->duration_ns is the average. */
uint64_t pbs_prog_test_run(struct pbs_store *s, uint32_t id, uint64_t ctx, uint64_t ctx_len,
                           const struct pbr_region *regions, uint32_t nregions, uint32_t repeat,
                           struct pbs_run_result *res);

#endif
