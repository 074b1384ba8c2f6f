"""Python-side map operations per second, per backend, single and batch, each next to the raw
bytes-level RawMap baseline measured in the same run.

    sudo .venv/bin/python benchmarks/maps.py [--entries N] [--backends kernel,userspace]

A hash map u32 -> u64 with N entries. Rows:
  update / lookup / delete      one element per call: Map container (encode/decode with the
                                declared types) and RawMap (pre-encoded bytes) side by side
  iterate items()               every entry: batch (BPF_MAP_LOOKUP_BATCH where the backend has
                                it) vs the next_key+lookup walk
  update_batch                  N entries in one call vs N single updates
Columns are backends: any backend pybpfc.get_backend() can build is measured; one that
cannot be built here is reported as skipped with the reason. Numbers are ops/s (median of
--rounds); ratios are within one backend and one run.
"""
from __future__ import annotations

import argparse
import os
import statistics
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


def spec(n: int) -> CollectionSpec:
    m = MapSpec(name="bench", type=U.BPF_MAP_TYPE_HASH, key_size=4, value_size=8,
                max_entries=n, key_type=u32, value_type=u64)
    return CollectionSpec(maps={"bench": m})


def rate(fn, ops: int, rounds: int) -> float:
    vals = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        vals.append(ops / (time.perf_counter() - t0))
    return statistics.median(vals)


def measure(backend, n: int, rounds: int) -> dict:
    out = {}
    with pybpfc.load(spec(n), backend=backend) as c:
        m, raw = c.maps.bench, c.maps.bench.raw
        keys = list(range(n))
        kb = [struct.pack("<I", k) for k in keys]
        vb = [struct.pack("<Q", k * 7) for k in keys]
        items = list(zip(kb, vb))

        def upd():
            for k in keys:
                m[k] = k * 7

        def upd_raw():
            for k, v in items:
                raw.update(k, v)

        def look():
            for k in keys:
                m[k]

        def look_raw():
            for k in kb:
                raw.lookup(k)

        def dele():
            for k in keys:
                del m[k]

        def dele_raw():
            for k in kb:
                raw.delete(k)

        out["update"] = (rate(upd, n, rounds), rate(upd_raw, n, rounds))
        out["lookup"] = (rate(look, n, rounds), rate(look_raw, n, rounds))
        dv = []
        for _ in range(rounds):
            raw.update_batch(items)
            dv.append((rate(dele, n, 1), None))
            raw.update_batch(items)
            dv[-1] = (dv[-1][0], rate(dele_raw, n, 1))
        out["delete"] = (statistics.median(d[0] for d in dv), statistics.median(d[1] for d in dv))
        raw.update_batch(items)

        def it_batch():
            assert sum(1 for _ in raw.lookup_batch()) == n

        def it_walk():
            assert sum(1 for _ in RawMap.lookup_batch(raw)) == n

        def it_items():
            assert sum(1 for _ in m.items()) == n

        out["items() decoded (batch)"] = (rate(it_items, n, rounds), None)
        out["iterate raw: batch / walk"] = (rate(it_batch, n, rounds), rate(it_walk, n, rounds))
        out["update_batch / single updates"] = (rate(lambda: raw.update_batch(items), n, rounds),
                                                rate(upd_raw, n, rounds))
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
            be = pybpfc.get_backend(name)
            cols[name] = measure(be, args.entries, args.rounds)
        except Exception as e:  # report and go on: one missing backend should not hide the other
            cols[name] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    print(f"map ops/s, hash u32 -> u64, {args.entries:,} entries, median of {args.rounds} rounds")
    print("  each cell: container (decoded) | raw baseline (bytes), and their ratio")
    for name, res in cols.items():
        print(f"\n[{name}]")
        if isinstance(res, str):
            print(f"  {res}")
            continue
        for row, (a, b) in res.items():
            if b is None:
                print(f"  {row:<32} {a:>12,.0f}")
            else:
                print(f"  {row:<32} {a:>12,.0f} | {b:>12,.0f}   x{a / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
