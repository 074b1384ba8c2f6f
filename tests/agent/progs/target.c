/* Workload for the agent tests: N malloc/free pairs, then opens each file named after N.
 * "wait ARGS": first waits for a line on stdin. "spin MS THREADS": threads calling work(). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Probed by the tests that stress patching: a function of this binary, so that kernel uprobes
 * other programs put on libc functions (which overwrite an agent's jump) cannot interfere. */
__attribute__((noinline, used)) long work(long i)
{
    __asm__ volatile("" ::: "memory");
    return i * 3 + 1;
}

/* too short to patch (a lone ret): the agent refuses it and the target runs on */
__asm__(".text\n.globl tiny\n.type tiny,@function\ntiny:\n  ret\n.size tiny,.-tiny\n");
void tiny(void);

static void mallocs(long n)
{
    for (long i = 0; i < n; i++) {
        void *p = malloc(32 + (i & 255));
        __asm__ volatile("" ::"r"(p) : "memory"); /* keeps the pair from being optimized out */
        free(p);
        work(i);
        tiny();
    }
}

static void *spin(void *arg)
{
    long *n = arg;
    for (long i = 0; i < *n; i++) {
        for (long j = 0; j < 100; j++)
            if (work(j) != j * 3 + 1)
                abort();
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "spin")) {
        /* "spin MS THREADS": THREADS threads call work() for about MS milliseconds; prints
         * "ok" and exits 0 unless something broke */
        long ms = atol(argv[2]);
        int nt = argc > 3 ? atoi(argv[3]) : 1;
        pthread_t t[16];
        for (int i = 0; i < nt && i < 16; i++)
            pthread_create(&t[i], NULL, spin, &ms);
        for (int i = 0; i < nt && i < 16; i++)
            pthread_join(t[i], NULL);
        printf("ok\n");
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "wait")) {
        /* waits for a line on stdin, then runs the workload given after "wait" */
        char buf[64];
        if (read(0, buf, sizeof buf) <= 0) /* not stdio: its buffer would be a malloc */
            return 3;
        argv++;
        argc--;
    }
    long n = argc > 1 ? atol(argv[1]) : 100;
    mallocs(n);
    for (int i = 2; i < argc; i++) {
        int fd = open(argv[i], O_RDONLY);
        if (fd >= 0)
            close(fd);
    }
    return 0;
}
