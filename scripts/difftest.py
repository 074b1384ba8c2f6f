#!/usr/bin/env python3
"""Long differential runs: random BPF programs on the interpreter, the JIT and the kernel.

    sudo .venv/bin/python scripts/difftest.py --seed 1000 --count 20000 [--size 40] [--no-kernel]
    .venv/bin/python scripts/difftest.py --helpers --count 5000   # + helper calls, no kernel
    sudo .venv/bin/python scripts/difftest.py --stack --count 1000 --size 12  # pybpfc.load, bpf_loop

Prints every mismatch (seed, per-engine r0 / memory / error, disassembly) and exits 1 if any.
A mismatch reproduces with --seed SEED --count 1. See pybpfc/backends/userspace/jit_difftest.py.
"""
import argparse
import sys
import time

from pybpfc.backends.userspace import jit_difftest as D


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--count", type=int, default=1000, help="number of programs")
    ap.add_argument("--size", type=int, default=40, help="groups per main function")
    ap.add_argument("--batch", type=int, default=100, help="programs per JIT module")
    ap.add_argument("--no-kernel", action="store_true", help="interpreter vs JIT only")
    ap.add_argument("--helpers", action="store_true",
                    help="programs also call the conformance helpers (interpreter vs JIT only)")
    ap.add_argument("--stack", action="store_true",
                    help="through pybpfc.load on both backends, with bpf_loop callbacks")
    args = ap.parse_args(argv)
    kernel = None
    if not args.no_kernel and not args.helpers:
        why = D.kernel_available()
        if why:
            print(f"difftest: kernel not used: {why}", file=sys.stderr)
        else:
            kernel = D.Kernel()
    t0 = time.time()
    total, bad = 0, 0
    if args.stack:
        stacks = D.Stacks(kernel=kernel is not None)
        kbug = []
        for start in range(args.seed, args.seed + args.count, args.batch):
            seeds = range(start, min(start + args.batch, args.seed + args.count))
            n, mism, kb = D.run_stack_seeds(seeds, stacks, size=args.size)
            total, bad = total + n, bad + len(mism)
            kbug += kb
            for m in mism:
                print(m.describe(), flush=True)
            print(f"difftest: {total} programs, {bad} mismatches, {len(kbug)} refused by the "
                  f"kernel's 'verifier bug', {time.time() - t0:.1f} s", file=sys.stderr,
                  flush=True)
        stacks.close()
        print(f"difftest --stack: {total} programs: {bad} mismatches; kernel 'verifier bug' "
              f"refusals (interpreter vs JIT only): {len(kbug)} (seeds {kbug[:10]})")
        return 1 if bad else 0
    for start in range(args.seed, args.seed + args.count, args.batch):
        seeds = range(start, min(start + args.batch, args.seed + args.count))
        n, mism = D.run_seeds(seeds, kernel, batch=args.batch, size=args.size,
                              helpers=args.helpers)
        total += n
        bad += len(mism)
        for m in mism:
            print(m.describe(), flush=True)
        print(f"difftest: {total} programs, {bad} mismatches, {time.time() - t0:.1f} s",
              file=sys.stderr, flush=True)
    engines = "interpreter, JIT" + (", kernel" if kernel else "")
    print(f"difftest: {total} programs on {engines}: {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
