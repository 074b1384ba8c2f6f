"""pybpfc vs clang: build time and loaded (xlated) instruction count, measured in one run.

    .venv/bin/python benchmarks/compile.py [--runs N]

For each example with a C twin in examples/c/, builds the program with `pybpfc build` and with
`clang-19 -O2 -g -target bpf`, loads both into the kernel (bpftool prog loadall) and compares
the instruction count the verifier reports (xlated). Prints per-program numbers and the
geometric-mean ratios. Goals: instruction ratio <= 1.10, build time <= 2x clang's.
Installs nothing: the clang column is skipped where clang-19 is missing, the instruction
columns where bpftool or kernel eBPF is missing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = ["opens", "execsnoop", "xdp_proto", "mallocsize"]
PYBPFC = [sys.executable, "-m", "pybpfc.cli"]
CLANG = shutil.which("clang-19") or shutil.which("clang")


def timed(cmd: list[str], runs: int) -> float:
    """Median wall time of `cmd` over `runs` runs (seconds)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return sorted(times)[len(times) // 2]


def xlated_insns(obj: str) -> dict[str, int] | None:
    """Program name -> instructions after verification, via bpftool prog loadall."""
    if not shutil.which("bpftool") or os.geteuid() != 0:
        return None
    pin = tempfile.mkdtemp(prefix="pybpfc-bench-", dir="/sys/fs/bpf") if os.path.isdir("/sys/fs/bpf") else None
    if pin is None:
        return None
    os.rmdir(pin)
    try:
        r = subprocess.run(["bpftool", "prog", "loadall", obj, pin], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"  bpftool could not load {obj}:\n{r.stderr.strip()[-2000:]}", file=sys.stderr)
            return None
        out = {}
        for name in os.listdir(pin):
            info = json.loads(subprocess.run(["bpftool", "-j", "prog", "show", "pinned", os.path.join(pin, name)],
                                             capture_output=True, text=True, check=True).stdout)
            out[info["name"]] = info["bytes_xlated"] // 8
        return out
    finally:
        subprocess.run(["rm", "-rf", pin])


def gmean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pybpfc-compile-bench-")
    time_ratios, insn_ratios = [], []
    print(f"{'program':<12} {'pybpfc s':>9} {'clang s':>9} {'time x':>7} {'pybpfc insns':>13} {'clang insns':>12} {'insn x':>7}")
    for name in EXAMPLES:
        py_src = os.path.join(ROOT, "examples", f"{name}.py")
        c_src = os.path.join(ROOT, "examples", "c", f"{name}.bpf.c")
        py_obj, c_obj = os.path.join(tmp, f"{name}.py.o"), os.path.join(tmp, f"{name}.c.o")
        t_py = timed(PYBPFC + ["build", py_src, "-o", py_obj], args.runs)
        t_c = None
        if CLANG and os.path.exists(c_src):
            t_c = timed([CLANG, "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                         "-c", c_src, "-o", c_obj], args.runs)
        n_py = xlated_insns(py_obj)
        n_c = xlated_insns(c_obj) if t_c is not None else None
        ip = sum(n_py.values()) if n_py else None
        ic = sum(n_c.values()) if n_c else None
        tr = t_py / t_c if t_c else None
        ir = ip / ic if ip and ic else None
        if tr:
            time_ratios.append(tr)
        if ir:
            insn_ratios.append(ir)
        fmt = lambda v, f: format(v, f) if v is not None else "-"  # noqa: E731
        print(f"{name:<12} {fmt(t_py, '9.3f')} {fmt(t_c, '9.3f')} {fmt(tr, '7.2f')} "
              f"{fmt(ip, '13d')} {fmt(ic, '12d')} {fmt(ir, '7.2f')}")
    shutil.rmtree(tmp, ignore_errors=True)
    print()
    if time_ratios:
        print(f"build time pybpfc/clang, geometric mean: {gmean(time_ratios):.2f}x (goal <= 2.0x)")
    else:
        print("build time: clang-19 not found, no ratio")
    if insn_ratios:
        print(f"xlated instructions pybpfc/clang, geometric mean: {gmean(insn_ratios):.3f} (goal <= 1.10)")
    else:
        print("instructions: bpftool/kernel eBPF unavailable, no ratio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
