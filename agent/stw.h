/* Stop-the-world for patch writes (stw.c). See docs/agent.md, "Safety while other threads run". */
#ifndef PYBPFC_AGENT_STW_H
#define PYBPFC_AGENT_STW_H

#include <stddef.h>
#include <stdint.h>

/* The real-time signal reserved by the agent (SIGRTMAX - 1 with glibc's SIGRTMAX of 64). */
#define PBA_STW_SIG 63

/* Where a stopped thread's RIP moves: a thread interrupted at lo+k (0 < k < len) with dest[k]
 * != 0 resumes at dest[k] instead. len 0: nobody moves. */
#define PBA_STW_MAXLEN 32
struct pba_stw_move {
    uint64_t lo;
    int len;
    uint64_t dest[PBA_STW_MAXLEN];
};

/* Stops every other thread of the process in the agent's signal handler (applying mv to its
 * interrupted context). 0: stopped, call pba_stw_resume; -1: nothing stopped, reason in err. */
int pba_stw_stop(const struct pba_stw_move *mv, char *err, size_t errlen);
void pba_stw_resume(void);

#endif
