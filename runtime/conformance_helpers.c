/* Helpers 0..5 of the BPF conformance suite (/work/shared/conformance/README.md), shared by
 * the interpreter and JIT test runs. Pointer arguments are checked like program accesses. */
#include <string.h>

#include "pybpfc_vm.h"

static uint64_t gather_bytes(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e,
                             struct pbr_run *run)
{
    (void)run;
    return ((a & 0xff) << 32) | ((b & 0xff) << 24) | ((c & 0xff) << 16) | ((d & 0xff) << 8) |
           (e & 0xff);
}

static uint64_t memfrob_(uint64_t p, uint64_t len, uint64_t c, uint64_t d, uint64_t e,
                         struct pbr_run *run)
{
    (void)c, (void)d, (void)e;
    if (len && !pbr_check_access(run, p, len, PBR_PERM_RW)) {
        run->status = PBR_EFAULT;
        run->fault_addr = p;
        return 0;
    }
    for (uint64_t i = 0; i < len; i++)
        ((uint8_t *)p)[i] ^= 42;
    return 0;
}

static uint64_t no_op(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e,
                      struct pbr_run *run)
{
    (void)a, (void)b, (void)c, (void)d, (void)e, (void)run;
    return 0;
}

static uint64_t sqrti(uint64_t x, uint64_t b, uint64_t c, uint64_t d, uint64_t e,
                      struct pbr_run *run)
{
    (void)b, (void)c, (void)d, (void)e, (void)run;
    /* bitwise integer square root: exact for all 64-bit inputs */
    uint64_t res = 0, bit = 1ULL << 62;
    while (bit > x)
        bit >>= 2;
    while (bit) {
        if (x >= res + bit) {
            x -= res + bit;
            res = (res >> 1) + bit;
        } else
            res >>= 1;
        bit >>= 2;
    }
    return res;
}

static uint64_t strcmp_ext(uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e,
                           struct pbr_run *run)
{
    (void)c, (void)d, (void)e;
    for (uint64_t i = 0;; i++) {
        if (!pbr_check_access(run, a + i, 1, PBR_PERM_R) ||
            !pbr_check_access(run, b + i, 1, PBR_PERM_R)) {
            run->status = PBR_EFAULT;
            run->fault_addr = pbr_check_access(run, a + i, 1, PBR_PERM_R) ? b + i : a + i;
            return 0;
        }
        uint8_t x = ((const uint8_t *)a)[i], y = ((const uint8_t *)b)[i];
        if (x != y || !x)
            return (uint64_t)(int64_t)((int)x - (int)y);
    }
}

static uint64_t unwind(uint64_t x, uint64_t b, uint64_t c, uint64_t d, uint64_t e,
                       struct pbr_run *run)
{
    (void)b, (void)c, (void)d, (void)e;
    if (x == 0) {
        run->exit_value = 0;
        run->status = PBR_EXIT;
    }
    return x;
}

static const pbr_helper_fn table[PBR_MAX_HELPERS] = {
    gather_bytes, memfrob_, no_op, sqrti, strcmp_ext, unwind,
};

const pbr_helper_fn *pbr_conformance_helpers(void)
{
    return table;
}
