"""Python-side map operations per second on the kernel and userspace backends, measured in the
same run: decoded container operations (single and batch) next to the raw bytes-level RawMap
baseline, and the userspace/kernel ratio (issue 4's goal: >= 10x).

    sudo .venv/bin/python benchmarks/maps.py [--entries N] [--rounds R] [--backends kernel,userspace]

A hash map u32 -> u64 with N entries. Rows:
  container m[k] = v / m[k] / m.get(k) / k in m / del m[k]
                                one element per call, keys and values encoded/decoded with the
                                declared types (pybpfc.collection.Map)
  container items() / values()  every entry decoded (`for k, v in m.items(): pass`)
  raw update / lookup / delete  RawMap with pre-encoded bytes (the floor the container pays on)
  raw iterate: batch / walk     every entry as bytes: lookup_batch vs next_key + lookup
  raw update_batch              N entries in one call
Each cell is ops (or entries) per second, the best of --rounds rounds: the machine is shared,
and the fastest round is the one least disturbed by other work. A backend that cannot be built
here (no root, no kernel eBPF) is shown as skipped with the reason. The last column is
userspace/kernel; "vs raw" lines give container/raw within each backend.
"""
from __future__ import annotations

import argparse
import os
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pybpfc  # noqa: E402
from pybpfc import uapi as U  # noqa: E402
from pybpfc.backends.base import RawMap  # noqa: E402
from pybpfc.elf.spec import CollectionSpec, MapSpec  # noqa: E402
from pybpfc.lang.types import u32, u64  # noqa: E402

CONTAINER = ["m[k] = v", "m[k]", "m.get(k)", "k in m", "del m[k]", "items()", "values()"]
RAW = ["raw update", "raw lookup", "raw delete", "raw iterate: batch", "raw iterate: next_key walk",
       "raw update_batch"]
VS_RAW = {"m[k] = v": "raw update", "m[k]": "raw lookup", "del m[k]": "raw delete",
          "items()": "raw iterate: batch"}


def spec(n: int) -> CollectionSpec:
    m = MapSpec(name="bench", type=U.BPF_MAP_TYPE_HASH, key_size=4, value_size=8,
                max_entries=n, key_type=u32, value_type=u64)
    return CollectionSpec(maps={"bench": m})


def rate(fn, ops: int, rounds: int, before=None) -> float:
    best = 0.0
    for _ in range(rounds):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        best = max(best, ops / (time.perf_counter() - t0))
    return best


def measure(backend, n: int, rounds: int) -> dict:
    out = {}
    with pybpfc.load(spec(n), backend=backend) as c:
        m, raw = c.maps.bench, c.maps.bench.raw
        keys = list(range(n))
        kb = [struct.pack("<I", k) for k in keys]
        items = [(b, struct.pack("<Q", k * 7)) for b, k in zip(kb, keys)]

        def fill():
            raw.update_batch(items)

        def upd():
            for k in keys:
                m[k] = k

        def look():
            for k in keys:
                m[k]

        def get():
            g = m.get
            for k in keys:
                g(k)

        def has():
            for k in keys:
                k in m  # noqa: B015

        def dele():
            for k in keys:
                del m[k]

        def it_items():
            for k, v in m.items():  # what callers write
                pass

        def it_values():
            for v in m.values():
                pass

        def upd_raw():
            up = raw.update
            for k, v in items:
                up(k, v)

        def look_raw():
            lk = raw.lookup
            for k in kb:
                lk(k)

        def dele_raw():
            dl = raw.delete
            for k in kb:
                dl(k)

        def it_batch():
            assert sum(1 for _ in raw.lookup_batch()) == n

        def it_walk():
            assert sum(1 for _ in RawMap.lookup_batch(raw)) == n

        out["m[k] = v"] = rate(upd, n, rounds)
        out["raw update"] = rate(upd_raw, n, rounds)
        out["m[k]"] = rate(look, n, rounds)
        out["raw lookup"] = rate(look_raw, n, rounds)
        out["m.get(k)"] = rate(get, n, rounds)
        out["k in m"] = rate(has, n, rounds)
        out["del m[k]"] = rate(dele, n, rounds, fill)
        out["raw delete"] = rate(dele_raw, n, rounds, fill)
        fill()
        assert len(dict(m.items())) == n and sum(1 for _ in m.values()) == n
        out["items()"] = rate(it_items, n, rounds)
        out["values()"] = rate(it_values, n, rounds)
        out["raw iterate: batch"] = rate(it_batch, n, rounds)
        out["raw iterate: next_key walk"] = rate(it_walk, n, rounds)
        out["raw update_batch"] = rate(fill, n, rounds)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--backends", default="kernel,userspace")
    args = ap.parse_args()
    cols = {}
    for name in args.backends.split(","):
        try:
            cols[name] = measure(pybpfc.get_backend(name), args.entries, args.rounds)
        except Exception as e:  # report and go on: one missing backend should not hide the other
            cols[name] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    fast = os.environ.get("PYBPFC_NO_FAST") == "1" and " (PYBPFC_NO_FAST=1)" or ""
    print(f"map ops/s from Python{fast}, hash u32 -> u64, {args.entries:,} entries, best of {args.rounds} rounds")
    for name, res in cols.items():
        if isinstance(res, str):
            print(f"[{name}] {res}")
    live = [n for n, r in cols.items() if not isinstance(r, str)]
    if not live:
        return 1
    k, us = cols.get("kernel"), cols.get("userspace")
    both = isinstance(k, dict) and isinstance(us, dict)
    print(f"  {'operation':<28}" + "".join(f"{n:>13}" for n in live) + (f"{'us/kernel':>11}" if both else ""))
    for group in (CONTAINER, RAW):
        for row in group:
            line = f"  {row:<28}" + "".join(f"{cols[n][row]:>13,.0f}" for n in live)
            if both:
                line += f"{'x%.1f' % (us[row] / k[row]):>11}"
            print(line)
        print()
    print("  container vs raw, within each backend:")
    for row, base in VS_RAW.items():
        print(f"  {row + ' / ' + base:<40}" + "".join(f"  {n} x{cols[n][row] / cols[n][base]:.2f}" for n in live))
    if both:
        worst = min(CONTAINER, key=lambda r: us[r] / k[r])
        print(f"\n  lowest userspace/kernel ratio of the container operations: {worst} x{us[worst] / k[worst]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
