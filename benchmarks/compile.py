"""pybpfc vs clang: build time and loaded (xlated) instruction count, measured in one run.

    .venv/bin/python benchmarks/compile.py [--runs N] [--baseline DIR]

For each example with a C twin in examples/c/, builds the program with `pybpfc build` and with
`clang-19 -O2 -g -target bpf`, loads both into the kernel (bpftool prog loadall) and compares
the instruction count the verifier reports (xlated). Prints per-program numbers and the
geometric-mean ratios. Goals: instruction ratio <= 1.10, build time <= 2x clang's.

How build time is measured: each command is a fresh process, as a user runs it (`pybpfc build`
through the installed console script). One untimed warm-up run of each first (page cache, .pyc
files), then N runs with pybpfc and clang alternating so both see the same machine load; the
number is the median wall time. The median CPU time (user+sys of the process and its children)
is printed too: pybpfc overlaps loading LLVM (in its code generation child) with the Python
frontend, so its wall time can be below its CPU time. The children run without
PYTHONDONTWRITEBYTECODE: an installed package has its .pyc files, a build should not recompile
the compiler's own sources every time. --baseline DIR times an older pybpfc tree in the same
loop, so before/after numbers come from the same conditions (on a shared machine, runs made
minutes apart are not comparable).
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
_SCRIPT = os.path.join(os.path.dirname(sys.executable), "pybpfc")
PYBPFC = [_SCRIPT] if os.access(_SCRIPT, os.X_OK) else [sys.executable, "-m", "pybpfc.cli"]
CLANG = shutil.which("clang-19") or shutil.which("clang")


_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYBPFC_DONTWRITEBYTECODE")}


def _run_once(cmd: list[str], env: dict) -> float:
    """Wall seconds of one run of cmd."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.decode(errors='replace')}")
    return wall


def timed_pair(cmds: list[tuple[list[str], dict] | None], runs: int) -> list[tuple[float, float] | None]:
    """Median (wall, cpu) seconds of each (command, environment) over `runs` runs, alternating
    between the commands after one untimed warm-up run of each."""
    import resource

    walls: list[list[float]] = [[] for _ in cmds]
    cpus: list[list[float]] = [[] for _ in cmds]
    for i in range(runs + 1):
        for j, cmd in enumerate(cmds):
            if cmd is None:
                continue
            # RUSAGE_CHILDREN covers every reaped descendant (pybpfc's codegen child, clang's cc1)
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall = _run_once(*cmd)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if i:  # run 0 is the warm-up
                walls[j].append(wall)
                cpus[j].append((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime))
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    return [(med(w), med(c)) if w else None for w, c in zip(walls, cpus)]


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
    ap.add_argument("--baseline", metavar="DIR",
                    help="also time the pybpfc package in DIR (e.g. `git archive OLD pybpfc | tar -x -C DIR`) "
                         "through PYTHONPATH, in the same alternating loop: before/after under the same load")
    args = ap.parse_args()
    base_env = dict(_ENV, PYTHONPATH=os.path.abspath(args.baseline)) if args.baseline else None
    base_ratios, base_cpu_ratios = [], []
    tmp = tempfile.mkdtemp(prefix="pybpfc-compile-bench-")
    time_ratios, cpu_ratios, insn_ratios = [], [], []
    print(f"median of {args.runs} runs (after a warm-up run), pybpfc and clang alternating; wall (cpu) seconds")
    print(f"{'program':<12} {'pybpfc s':>15} {'clang s':>15} {'time x':>7} {'pybpfc insns':>13} {'clang insns':>12} "
          f"{'insn x':>7}" + (f" {'baseline s':>15} {'time x':>7}" if base_env else ""))
    for name in EXAMPLES:
        py_src = os.path.join(ROOT, "examples", f"{name}.py")
        c_src = os.path.join(ROOT, "examples", "c", f"{name}.bpf.c")
        py_obj, c_obj = os.path.join(tmp, f"{name}.py.o"), os.path.join(tmp, f"{name}.c.o")
        c_cmd = None
        if CLANG and os.path.exists(c_src):
            c_cmd = [CLANG, "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", c_src, "-o", c_obj]
        base_cmd = (PYBPFC + ["build", py_src, "-o", py_obj + ".base"], base_env) if base_env else None
        m_py, m_c, m_b = timed_pair([(PYBPFC + ["build", py_src, "-o", py_obj], _ENV),
                                     (c_cmd, _ENV) if c_cmd else None, base_cmd], args.runs)
        t_py, cpu_py = m_py
        t_c, cpu_c = m_c if m_c else (None, None)
        n_py = xlated_insns(py_obj)
        n_c = xlated_insns(c_obj) if t_c is not None else None
        ip = sum(n_py.values()) if n_py else None
        ic = sum(n_c.values()) if n_c else None
        tr = t_py / t_c if t_c else None
        ir = ip / ic if ip and ic else None
        if tr:
            time_ratios.append(tr)
            cpu_ratios.append(cpu_py / cpu_c)
        if ir:
            insn_ratios.append(ir)
        fmt = lambda v, f: format(v, f) if v is not None else "-"  # noqa: E731
        both = lambda w, c: f"{w:.3f} ({c:.3f})" if w is not None else "-"  # noqa: E731
        extra = ""
        if m_b:
            br = m_b[0] / t_c if t_c else None
            extra = f" {both(*m_b):>15} {fmt(br, '7.2f')}"
            if br:
                base_ratios.append(br)
                base_cpu_ratios.append(m_b[1] / cpu_c)
        print(f"{name:<12} {both(t_py, cpu_py):>15} {both(t_c, cpu_c):>15} {fmt(tr, '7.2f')} "
              f"{fmt(ip, '13d')} {fmt(ic, '12d')} {fmt(ir, '7.2f')}{extra}")
    shutil.rmtree(tmp, ignore_errors=True)
    print()
    if time_ratios:
        print(f"build time pybpfc/clang, geometric mean: {gmean(time_ratios):.2f}x (goal <= 2.0x); "
              f"CPU time: {gmean(cpu_ratios):.2f}x")
        if base_ratios:
            print(f"baseline {args.baseline}: build time/clang {gmean(base_ratios):.2f}x; "
                  f"CPU time: {gmean(base_cpu_ratios):.2f}x")
    else:
        print("build time: clang-19 not found, no ratio")
    if insn_ratios:
        print(f"xlated instructions pybpfc/clang, geometric mean: {gmean(insn_ratios):.3f} (goal <= 1.10)")
    else:
        print("instructions: bpftool/kernel eBPF unavailable, no ratio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
