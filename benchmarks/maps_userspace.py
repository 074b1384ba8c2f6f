"""Userspace vs kernel backend: Python-side map operations per second, measured in the same run,
printed with the userspace/kernel ratio (goal: >= 10x).

    sudo .venv/bin/python benchmarks/maps_userspace.py [--entries N] [--rounds R]

Uses benchmarks/maps.py's measurement (hash u32 -> u64, Map container and raw bytes RawMap
rows, batch rows). Without root or kernel eBPF only the userspace column is printed.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def _maps_bench():
    spec = importlib.util.spec_from_file_location("pybpfc_bench_maps", os.path.join(HERE, "maps.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import pybpfc

    mb = _maps_bench()
    res = {}
    for name in ("kernel", "userspace"):
        try:
            res[name] = mb.measure(pybpfc.get_backend(name), args.entries, args.rounds)
        except Exception as e:
            res[name] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    print(f"map ops/s from Python, hash u32 -> u64, {args.entries:,} entries, median of {args.rounds} rounds")
    for name, r in res.items():
        if isinstance(r, str):
            print(f"[{name}] {r}")
    us, k = res.get("userspace"), res.get("kernel")
    if isinstance(us, str):
        return 1
    print(f"  {'operation':<34} {'kernel':>12} {'userspace':>12} {'ratio':>8}")
    names = {"iterate raw: batch / walk": ("iterate raw, batch", "iterate raw, next_key walk"),
             "update_batch / single updates": ("update_batch", "update, one by one (raw)")}
    for row, (a, b) in us.items():
        first, second = names.get(row, (f"{row} (container)", f"{row} (raw bytes)"))
        cells = [(first if b is not None else row, a, 0)]
        if b is not None:
            cells.append((second, b, 1))
        for label, val, idx in cells:
            kv = k[row][idx] if isinstance(k, dict) else None
            ratio = f"x{val / kv:.1f}" if kv else "-"
            kcell = f"{kv:>12,.0f}" if kv else f"{'-':>12}"
            print(f"  {label:<34} {kcell} {val:>12,.0f} {ratio:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
