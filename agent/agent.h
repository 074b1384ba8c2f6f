/* Internal interface of the LD_PRELOAD agent (the C files in agent/). See docs/agent.md.
 *
 * The agent has three parts:
 *   uprobe.c   inline patching of function entries with jumps to trampolines (uprobes and
 *              uretprobes), instruction relocation with capstone;
 *   syscall.c  syscall interception: Syscall User Dispatch catches the first execution of each
 *              syscall instruction and rewrites it zpoline-style (`syscall` -> `call *%rax` into
 *              a nop sled at address 0), or, where page 0 cannot be mapped, handles every
 *              syscall in the SIGSYS handler;
 *   agent.c    start-up, the store (pybpfc_store.h): links -> hooks, running programs, the
 *              background thread picking up attach/detach, fork/thread/dlopen/unwind glue.
 * Hooks are plain C callbacks, so tests/agent drive the machinery without a store.
 */
#ifndef PYBPFC_AGENT_H
#define PYBPFC_AGENT_H

#include <stddef.h>
#include <stdint.h>

/* The kernel's x86-64 struct pt_regs: what uprobe and syscall programs see. */
struct pba_regs {
    uint64_t r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs,
        flags, sp, ss;
};
#ifdef __cplusplus
#define _Static_assert static_assert
extern "C" {
#endif
_Static_assert(sizeof(struct pba_regs) == 168, "pt_regs layout");
_Static_assert(offsetof(struct pba_regs, ax) == 80, "pt_regs layout");
_Static_assert(offsetof(struct pba_regs, di) == 112, "pt_regs layout");
_Static_assert(offsetof(struct pba_regs, ip) == 128, "pt_regs layout");
_Static_assert(offsetof(struct pba_regs, sp) == 152, "pt_regs layout");

/* hook kinds */
enum { PBA_ENTRY = 0, PBA_RETURN = 1, PBA_SYS_ENTER = 2, PBA_SYS_EXIT = 3 };

/* A hook callback. Syscalls: regs->orig_ax = number, regs->ax = result (exit only). */
typedef void (*pba_fn)(void *data, int kind, struct pba_regs *regs);

/* Installed callbacks, as copy-on-write arrays that hooked code walks without a lock: a change
 * builds a new list under the owner's lock and publishes it with one atomic store. */
struct pba_hook {
    int id;
    int kind;
    int nr;      /* syscall hooks: the number, -1 for all */
    pba_fn fn;
    void *data;
};
struct pba_hooklist {
    int n;
    struct pba_hook h[];
};
/* A copy of l (may be NULL) without hook remove_id, plus *add if add is not NULL; NULL when out
 * of memory. */
struct pba_hooklist *pba_hooklist_with(const struct pba_hooklist *l, const struct pba_hook *add,
                                       int remove_id);

/* -- exported for tests and the store glue ----------------------------------------------- */
/* Hooks the instruction at `addr` (PBA_ENTRY) or the return of the function starting there
 * (PBA_RETURN). Returns a handle > 0, or -1 with a message in err. */
int pba_probe_add(uint64_t addr, int kind, pba_fn fn, void *data, char *err, size_t errlen);
/* Removes a hook; the function is unpatched when its last hook goes. 0 or -1. */
int pba_probe_del(int handle);
/* Hooks syscall `nr` (-1: all) on enter (PBA_SYS_ENTER) or exit (PBA_SYS_EXIT). Handle > 0
 * or -1. Interception starts in every thread that runs with the agent (see pba_sys_mode). */
int pba_sys_add(int nr, int kind, pba_fn fn, void *data, char *err, size_t errlen);
int pba_sys_del(int handle);
/* "zpoline", "sud" or "off" (no SUD in this kernel): the mechanism in use. */
const char *pba_sys_mode(void);
/* Counters for tests: 0 = syscall sites rewritten in SIGSYS, 1 = SIGSYS taken, 2 = invalid
 * numbers recovered from a fault after a rewritten site. */
uint64_t pba_sys_stat(int which);

/* -- internal -------------------------------------------------------------------------- */
long pba_raw_syscall(long nr, long a1, long a2, long a3, long a4, long a5, long a6);
void pba_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* 1 while this thread runs agent code: hooks hit then do nothing (no recursion). */
extern __thread int pba_in_agent __attribute__((tls_model("initial-exec")));
/* Makes [addr, addr+len) writable (keeping exec) for a patch and takes the process-wide patch
 * lock; pba_protect_restore (always called after a 0 return) restores and releases. */
int pba_protect_rw(uint64_t addr, uint64_t len, int *was_writable);
void pba_protect_restore(uint64_t addr, uint64_t len, int was_writable);
void pba_patch_lock_reset(void); /* in a forked child */
/* Reads /proc/self/maps into a static buffer (caller holds pba_maps_lock). */
const char *pba_read_maps(size_t *len);
void pba_maps_lock(void);
void pba_maps_unlock(void);
/* Executable range of the agent itself: syscalls from it are never intercepted. */
void pba_self_text(uint64_t *start, uint64_t *len);

/* syscall.c */
/* SIGSYS handler; with sud_now, SUD in every thread (+ page 0 if wanted); else idle until a
 * syscall hook, which then gets zpoline on the instructions scan.c rewrites */
int pba_sys_init(int want_zpoline, int sud_now);
int pba_sys_sud_threads(void);
void pba_sys_thread_start(void); /* enables SUD in the calling thread */
void pba_sys_after_fork(void);
int pba_sys_mode_id(void);          /* 0 off, 1 sud, 2 zpoline */
void pba_sys_release(void);         /* threads may turn SUD off (after pba_scan_objects) */
void pba_zp_site_add(uint64_t site); /* before rewriting a syscall at site to `call *%rax` */
/* scan.c: rewrites the syscall instructions of loaded objects not scanned before; count or -1 */
int pba_scan_objects(int only_new);

/* uprobe.c: per-thread shadow stack fix-up before unwinding (exceptions, cancellation) */
void pba_uret_unwind_fixup(void);

#ifdef __cplusplus
}
#endif
#endif
