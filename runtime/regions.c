/* Memory regions a program may touch besides its stack (see pybpfc_vm.h). */
#include "pybpfc_vm.h"

int pbr_add_region(struct pbr_run *run, uint64_t start, uint64_t len, uint32_t perm)
{
    /* one read of the count: the run is plain memory its owner (cffi, another thread) may
     * change, and an index from a second read could pass the end of the table */
    uint32_t n = __atomic_load_n(&run->nregions, __ATOMIC_RELAXED);
    if (len == 0 || start + len < start || n > PBR_MAX_REGIONS)
        return -1;
    /* Helpers may hand out the same object many times (a map value looked up in a loop):
     * reuse an entry that already covers it instead of filling the table. */
    for (uint32_t i = 0; i < n; i++) {
        struct pbr_region *r = &run->regions[i];
        if (r->start <= start && start + len <= r->end && (r->perm & perm) == perm)
            return 0;
    }
    if (n >= PBR_MAX_REGIONS)
        return -1;
    struct pbr_region *r = &run->regions[n];
    r->start = start;
    r->end = start + len;
    r->perm = perm;
    r->_pad = 0;
    run->nregions = n + 1;
    return 0;
}

int pbr_check_access(const struct pbr_run *run, uint64_t addr, uint64_t size, uint32_t perm)
{
    uint64_t end = addr + size;
    if (end < addr)
        return 0;
    for (uint32_t i = 0; i < run->nregions && i < PBR_MAX_REGIONS; i++) {
        const struct pbr_region *r = &run->regions[i];
        if (addr >= r->start && end <= r->end && (r->perm & perm) == perm)
            return 1;
    }
    return 0;
}
