/* Eager rewriting of syscall instructions in the loaded objects, so that threads can turn
 * Syscall User Dispatch off (its check on every kernel entry costs ~40 ns a syscall).
 *
 * Candidates are the bytes 0f 05 in each object's executable segments. A candidate is
 * rewritten only when decoding (capstone) from the start of the function that contains it, as
 * given by the object's .eh_frame_hdr search table, lands exactly on it as a `syscall`: bytes
 * inside other instructions or data are never touched. Syscall instructions outside any FDE
 * (code without unwind info) or in anonymous executable memory (JIT) are not found here; see
 * docs/agent.md for what that means once SUD is off.
 */
#define _GNU_SOURCE
#include <link.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "agent.h"

#ifdef PYBPFC_NO_CAPSTONE
int pba_scan_objects(int only_new) { (void)only_new; return -1; }
#else
#include <capstone/capstone.h>


struct fn_table {
    const uint8_t *hdr;
    const int32_t *tab; /* pairs (initial_loc, fde) relative to hdr, sorted */
    uint32_t n;
};

/* .eh_frame_hdr with the usual encodings (udata4/sdata4 datarel table) */
static int table_of(const uint8_t *hdr, struct fn_table *t)
{
    if (hdr[0] != 1 || hdr[3] != 0x3b /* datarel|sdata4 */)
        return -1;
    const uint8_t *p = hdr + 4;
    /* eh_frame_ptr: encoded with hdr[1]; only its size matters here */
    switch (hdr[1] & 0x0f) {
    case 0x03: case 0x0b: p += 4; break;
    case 0x04: case 0x0c: case 0x00: p += 8; break;
    default: return -1;
    }
    uint32_t n;
    if ((hdr[2] & 0x0f) == 0x03 || (hdr[2] & 0x0f) == 0x0b)
        memcpy(&n, p, 4), p += 4;
    else
        return -1;
    t->hdr = hdr;
    t->tab = (const int32_t *)p;
    t->n = n;
    return 0;
}

/* [start, end) of the function containing addr, from its FDE (pcrel sdata4 pc_begin, udata4
 * range: what gcc and clang emit on x86-64); 0 if none. */
static int func_of(const struct fn_table *t, uint64_t addr, uint64_t *start, uint64_t *end)
{
    uint32_t lo = 0, hi = t->n;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if ((uint64_t)(t->hdr + t->tab[2 * mid]) <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!lo)
        return 0;
    uint64_t fstart = (uint64_t)(t->hdr + t->tab[2 * (lo - 1)]);
    const uint8_t *fde = t->hdr + t->tab[2 * (lo - 1) + 1];
    uint32_t len;
    memcpy(&len, fde, 4);
    if (len == 0xffffffff)
        return 0;
    int32_t pcrel;
    uint32_t range;
    memcpy(&pcrel, fde + 8, 4);
    memcpy(&range, fde + 12, 4);
    if ((uint64_t)(fde + 8 + pcrel) != fstart)
        return 0; /* another encoding: leave this function alone */
    if (addr >= fstart + range)
        return 0;
    *start = fstart;
    *end = fstart + range;
    return 1;
}

struct scan_ctx {
    csh cs;
    cs_insn *insn;
    int rewritten;
    int only_new;
    uint64_t self_start, self_len;
};

#define MAX_SEEN 512
static uint64_t seen_objs[MAX_SEEN];
static int nseen;

/* Syscall instructions of one function, decoded once for all its candidates. */
struct fn_cache {
    uint64_t start, end;
    uint64_t *sites;
    size_t n, cap;
};

static int decode_fn(struct scan_ctx *c, struct fn_cache *f, uint64_t fstart, uint64_t fend)
{
    f->start = fstart;
    f->end = fend;
    f->n = 0;
    const uint8_t *code = (const uint8_t *)fstart;
    size_t size = fend - fstart;
    uint64_t pc = fstart;
    while (size && cs_disasm_iter(c->cs, &code, &size, &pc, c->insn)) {
        if (c->insn->id != X86_INS_SYSCALL)
            continue;
        if (f->n == f->cap) {
            size_t cap = f->cap ? 2 * f->cap : 16;
            uint64_t *n2 = realloc(f->sites, cap * sizeof *n2);
            if (!n2)
                return -1;
            f->sites = n2;
            f->cap = cap;
        }
        f->sites[f->n++] = c->insn->address;
    }
    return 0;
}

static int is_syscall_at(struct scan_ctx *c, struct fn_cache *f, uint64_t fstart, uint64_t fend,
                         uint64_t site)
{
    if (f->start != fstart || f->end != fend)
        if (decode_fn(c, f, fstart, fend))
            return 0;
    for (size_t i = 0; i < f->n; i++)
        if (f->sites[i] == site)
            return 1;
    return 0;
}

static int obj_cb(struct dl_phdr_info *info, size_t sz, void *arg)
{
    (void)sz;
    struct scan_ctx *c = arg;
    const ElfW(Phdr) *eh = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_GNU_EH_FRAME)
            eh = &info->dlpi_phdr[i];
    if (!eh)
        return 0;
    uint64_t base = info->dlpi_addr;
    for (int i = 0; i < nseen; i++)
        if (seen_objs[i] == base + eh->p_vaddr)
            return 0; /* scanned before (dlopen rescans only new objects) */
    if (nseen < MAX_SEEN)
        seen_objs[nseen++] = base + eh->p_vaddr;
    struct fn_table t;
    if (table_of((const uint8_t *)(base + eh->p_vaddr), &t))
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X) || (ph->p_flags & PF_W))
            continue;
        uint64_t a = base + ph->p_vaddr, e = a + ph->p_filesz;
        if (a >= c->self_start && a < c->self_start + c->self_len)
            continue; /* the agent's own syscalls stay as they are */
        /* verify first, then patch the whole segment under one protection change */
        uint64_t *sites = NULL;
        size_t ns = 0, cap = 0;
        struct fn_cache fc = {0, 0, NULL, 0, 0};
        const uint8_t *p = (const uint8_t *)a;
        while ((uint64_t)p + 1 < e && (p = memmem(p, e - (uint64_t)p, "\x0f\x05", 2)) != NULL) {
            uint64_t site = (uint64_t)p, fs, fe;
            p += 1;
            if ((site & 63) == 63 || !func_of(&t, site, &fs, &fe) || !is_syscall_at(c, &fc, fs, fe, site))
                continue;
            if (ns == cap) {
                cap = cap ? 2 * cap : 256;
                uint64_t *n2 = realloc(sites, cap * sizeof *sites);
                if (!n2)
                    break;
                sites = n2;
            }
            sites[ns++] = site;
        }
        int ww;
        if (ns && pba_protect_rw(sites[0], sites[ns - 1] + 2 - sites[0], &ww) == 0) {
            for (size_t k = 0; k < ns; k++) {
                uint16_t old = 0x050f;
                pba_zp_site_add(sites[k]);
                if (__atomic_compare_exchange_n((uint16_t *)sites[k], &old, (uint16_t)0xd0ff, 0,
                                                __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
                    c->rewritten++;
            }
            pba_protect_restore(sites[0], sites[ns - 1] + 2 - sites[0], ww);
        }
        free(sites);
        free(fc.sites);
    }
    return 0;
}

/* Rewrites the syscall instructions of every loaded object not scanned before. Returns the
 * number rewritten, or -1 when capstone cannot be used. */
int pba_scan_objects(int only_new)
{
    struct scan_ctx c;
    memset(&c, 0, sizeof c);
    c.only_new = only_new;
    if (cs_open(CS_ARCH_X86, CS_MODE_64, &c.cs) != CS_ERR_OK)
        return -1;
    c.insn = cs_malloc(c.cs);
    pba_self_text(&c.self_start, &c.self_len);
    dl_iterate_phdr(obj_cb, &c);
    cs_free(c.insn, 1);
    cs_close(&c.cs);
    return c.rewritten;
}
#endif
