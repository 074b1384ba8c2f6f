"""cffi (ABI mode) declarations of the store, map and program API of libpybpfc_runtime.so
(runtime/include/pybpfc_store.h). Byte arguments are declared `const char *` so Python
bytes pass without a copy; records are opaque here (the C functions read them)."""
from __future__ import annotations

import os

from ... import _native

CDEF = """
struct pbs_run_result { uint32_t status; uint32_t _pad; uint64_t fault_addr; uint64_t fault_pc;
                        uint64_t duration_ns; };
struct pbs_store;
int pbs_store_fd(struct pbs_store *s);
uint32_t pbs_store_ncpus(struct pbs_store *s);
uint64_t pbs_store_generation(struct pbs_store *s);
void pbs_store_set_budget(struct pbs_store *s, uint64_t budget);
struct pbs_map;
struct pbs_prog;

struct pbs_store *pbs_create(const char *path, uint64_t size);
uint64_t pbs_min_size(void);
struct pbs_store *pbs_open(const char *path, int fd);
void pbs_close(struct pbs_store *s);

int pbs_map_create(struct pbs_store *s, const char *name, uint32_t type, uint32_t key_size,
                   uint32_t value_size, uint32_t max_entries, uint32_t flags, uint64_t map_extra);
struct pbs_map *pbs_map(struct pbs_store *s, uint32_t id);
struct pbs_map *pbs_map_by_name(struct pbs_store *s, const char *name);
int pbs_map_get_pinned(struct pbs_store *s, const char *name, uint32_t attrs[5]);
void pbs_map_attrs(struct pbs_map *m, uint32_t attrs[5]);
void pbs_map_pin(struct pbs_map *m);
int pbs_map_get(struct pbs_store *s, uint32_t id);
void pbs_map_put(struct pbs_store *s, uint32_t id);
int pbs_map_lookup_copy(struct pbs_map *m, const char *key, char *value);
int pbs_map_update_user(struct pbs_map *m, const char *key, const char *value, uint64_t flags);
int pbs_map_delete(struct pbs_map *m, const char *key);
int pbs_map_push(struct pbs_map *m, const char *value, uint64_t flags);
int pbs_map_pop(struct pbs_map *m, char *value);
int pbs_map_peek(struct pbs_map *m, char *value);
int pbs_map_next_key(struct pbs_map *m, const char *key, char *next);
void pbs_map_freeze(struct pbs_map *m);
int pbs_map_lookup_batch(struct pbs_map *m, uint64_t *cursor, char *keys, char *values, uint32_t max);
int pbs_map_update_batch(struct pbs_map *m, const char *keys, const char *values, uint32_t n,
                         uint64_t flags);
int pbs_ringbuf_output(struct pbs_map *m, int cpu, const char *data, uint64_t size);
int64_t pbs_ringbuf_read(struct pbs_map *m, int cpu, char *buf, uint64_t buflen);
int pbs_ringbuf_wait(struct pbs_map *m, int timeout_ms);
uint64_t pbs_ringbuf_query(struct pbs_map *m, uint64_t flags);
uint64_t pbs_ringbuf_lost(struct pbs_map *m);
uint32_t pbs_ringbuf_seq(struct pbs_map *m);
int pbs_ringbuf_wait_seq(struct pbs_map *m, uint32_t seq, int timeout_ms);
void pbs_map_values(struct pbs_map *m, uint64_t *addr, uint64_t *len);

int pbs_prog_create(struct pbs_store *s, const char *name, const char *section, uint32_t type,
                    uint32_t expected_attach_type, const char *insns, uint32_t ninsns,
                    const uint32_t *map_ids, uint32_t nmaps);
struct pbs_prog *pbs_prog(struct pbs_store *s, uint32_t id);
void pbs_prog_put(struct pbs_store *s, uint32_t id);
int pbs_prog_set_jit(struct pbs_store *s, uint32_t id, const char *code, uint64_t len, uint64_t entry);
int pbs_prog_map_jit(struct pbs_store *s, uint32_t id);
void pbs_prog_set_entry(struct pbs_store *s, uint32_t id, uint64_t entry);
uint64_t pbs_prog_run(struct pbs_store *s, uint32_t id, uint64_t ctx, uint64_t ctx_len,
                      const struct pbr_region *regions, uint32_t nregions, uint64_t cookie,
                      struct pbs_run_result *res);
uint64_t pbs_prog_run_ip(struct pbs_store *s, uint32_t id, uint64_t ctx, uint64_t ctx_len,
                         const struct pbr_region *regions, uint32_t nregions, uint64_t cookie,
                         uint64_t func_ip, struct pbs_run_result *res);
uint64_t pbs_prog_test_run(struct pbs_store *s, uint32_t id, uint64_t ctx, uint64_t ctx_len,
                           const struct pbr_region *regions, uint32_t nregions, uint32_t repeat,
                           struct pbs_run_result *res);

int pbs_link_create(struct pbs_store *s, uint32_t kind, uint32_t prog_id, const char *path,
                    uint64_t offset, const char *tp, int32_t pid, uint64_t cookie);
int pbs_link_set_enabled(struct pbs_store *s, uint32_t id, int enabled);
void pbs_link_destroy(struct pbs_store *s, uint32_t id);

int64_t pbs_trace_read(struct pbs_store *s, char *buf, uint64_t len);
int pbs_safe_read(void *dst, uint64_t src, uint64_t len);
void *pbs_low_alloc(uint64_t size);
void pbs_low_free(void *p, uint64_t size);
extern const void *pbs_helpers[256];
"""

_ffi = _lib = None


def ffi():
    """The one FFI of the runtime library: the VM's execution ABI (vm.CDEF) and the store's API.
    One instance, so types made by any module (struct pbr_run *, buffers) pass to every call."""
    global _ffi
    if _ffi is None:
        from cffi import FFI

        from .vm import CDEF as VM_CDEF  # here, not at import: vm.py imports this module

        f = FFI()
        f.cdef(VM_CDEF)
        f.cdef(CDEF)
        _ffi = f
    return _ffi


def lib():
    """The runtime library (rebuilt on first use in a source checkout when a C file changed)."""
    global _lib
    if _lib is None:
        path = os.environ.get("PYBPFC_VM_LIB") or _native.library("pybpfc_runtime")
        _lib = ffi().dlopen(path)
    return _lib


def supported_helpers() -> frozenset:
    """Kernel helper ids the runtime implements (non-NULL entries of pbs_helpers)."""
    L, F = lib(), ffi()
    return frozenset(i for i in range(256) if L.pbs_helpers[i] != F.NULL)
