// A uretprobed C++ function that throws: the exception must reach its handler (the agent
// puts the real return addresses back before the unwinder walks the stack).
#include <cstdint>
#include <cstdio>
#include <stdexcept>

#include "agent.h"

static long returns;
static void on_ret(void *, int, struct pba_regs *) { returns++; }

__attribute__((noinline)) long thrower(long x)
{
    if (x % 3 == 0)
        throw std::runtime_error("three");
    return x + 1;
}

__attribute__((noinline)) long middle(long x) { return thrower(x) * 2; }

int main()
{
    char err[256];
    if (pba_probe_add((uint64_t)&thrower, PBA_RETURN, on_ret, nullptr, err, sizeof err) < 0 ||
        pba_probe_add((uint64_t)&middle, PBA_RETURN, on_ret, nullptr, err, sizeof err) < 0) {
        printf("error %s\n", err);
        return 1;
    }
    long caught = 0, sum = 0;
    for (long i = 1; i <= 9; i++) {
        try {
            sum += middle(i);
        } catch (const std::runtime_error &) {
            caught++;
        }
    }
    // i = 1..9: 3 throws; 6 normal calls each return from thrower and middle
    printf("caught %ld\nsum %ld\nreturns %ld\n", caught, sum, returns);
    return 0;
}
