"""Builds the native runtime and agent shared objects, and the optional CPython fast-path
extensions, with the system C compiler.

Used by setup.py at install time and, in a source checkout, on first use when a C source is
newer than its output (so editing runtime/*.c needs no reinstall). Standard library only:
setup.py loads this file before pybpfc's dependencies exist.
"""
from __future__ import annotations

import glob
import importlib.machinery
import os
import subprocess
import sys
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.dirname(os.path.abspath(__file__))

CFLAGS = ["-O2", "-g", "-fPIC", "-shared", "-std=gnu11", "-Wall", "-Wno-unused-function",
          "-fvisibility=default", "-pthread"]


def targets(root: str = ROOT) -> dict:
    """name -> (sources, include dirs, extra flags, libraries)."""
    rt = sorted(glob.glob(os.path.join(root, "runtime", "*.c")))
    ag = sorted(glob.glob(os.path.join(root, "agent", "*.c")))
    inc = [os.path.join(root, "runtime", "include"), os.path.join(root, "agent")]
    out = {}
    if rt:
        out["pybpfc_runtime"] = (rt, inc, [], ["-lrt", "-ldl", "-lpthread"])
    if ag:
        # capstone decodes the instructions a uprobe patch displaces (Debian libcapstone-dev);
        # without it the agent still builds and refuses uprobes with a message
        cs = os.path.exists("/usr/include/capstone/capstone.h")
        out["pybpfc_agent"] = (ag + rt, inc, ["-DPYBPFC_AGENT=1", "-fno-stack-protector",
                                              "-ftls-model=initial-exec"]
                               + ([] if cs else ["-DPYBPFC_NO_CAPSTONE=1"]),
                               (["-lcapstone"] if cs else []) + ["-lrt", "-ldl", "-lpthread"])
    return out


def lib_path(name: str, out_dir: str = OUT) -> str:
    return os.path.join(out_dir, f"lib{name}.so")


def _deps(sources, incs):
    files = list(sources)
    for d in incs:
        files += glob.glob(os.path.join(d, "*.h"))
    return files


def is_stale(name: str, out_dir: str = OUT, root: str = ROOT) -> bool:
    t = targets(root).get(name)
    if t is None:
        return False
    path = lib_path(name, out_dir)
    if not os.path.exists(path):
        return True
    mtime = os.path.getmtime(path)
    return any(os.path.getmtime(f) > mtime for f in _deps(t[0], t[1]) + [__file__])


def build(name: str, out_dir: str = OUT, root: str = ROOT, cc: str | None = None) -> str:
    sources, incs, extra, libs = targets(root)[name]
    cc = cc or os.environ.get("CC", "gcc")
    os.makedirs(out_dir, exist_ok=True)
    path = lib_path(name, out_dir)
    tmp = f"{path}.{os.getpid()}.tmp"
    cmd = [cc, *CFLAGS, *extra, *[f"-I{d}" for d in incs], "-o", tmp, *sources, *libs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building {name} failed:\n{' '.join(cmd)}\n{r.stderr}")
    os.replace(tmp, path)  # atomic: a process using the old library keeps its mapping
    return path


# Optional CPython extensions that speed up hot Python paths (map calls, event decoding).
# name -> source, relative to the package root; imported as pybpfc._native.<name>.
EXTENSIONS = {
    "_pybpfc_kfast": os.path.join("pybpfc", "backends", "kernel", "_kfast.c"),
    "_pybpfc_usfast": os.path.join("pybpfc", "backends", "userspace", "_usfast.c"),
}


def ext_path(name: str, out_dir: str = OUT) -> str:
    return os.path.join(out_dir, name + importlib.machinery.EXTENSION_SUFFIXES[0])


HERE = os.path.dirname(os.path.abspath(__file__))
EXT_HEADERS = [os.path.join(HERE, "map_ops.h")]  # included by every extension


def ext_is_stale(name: str, out_dir: str = OUT, root: str = ROOT) -> bool:
    src = os.path.join(root, EXTENSIONS[name])
    path = ext_path(name, out_dir)
    if not os.path.exists(src):
        return False
    newest = max(os.path.getmtime(f) for f in [src, __file__, *EXT_HEADERS] if os.path.exists(f))
    return not os.path.exists(path) or newest > os.path.getmtime(path)


def build_ext(name: str, out_dir: str = OUT, root: str = ROOT, cc: str | None = None) -> str:
    inc = sysconfig.get_paths().get("include")
    if not inc or not os.path.exists(os.path.join(inc, "Python.h")):
        raise RuntimeError("no Python headers (Python.h)")
    cc = cc or os.environ.get("CC", "gcc")
    os.makedirs(out_dir, exist_ok=True)
    path = ext_path(name, out_dir)
    tmp = f"{path}.{os.getpid()}.tmp"
    cmd = [cc, "-O2", "-shared", "-fPIC", f"-I{inc}", f"-I{HERE}", os.path.join(root, EXTENSIONS[name]), "-o", tmp]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building {name} failed:\n{' '.join(cmd)}\n{r.stderr}")
    os.replace(tmp, path)
    return path


def build_all(out_dir: str = OUT, root: str = ROOT) -> list[str]:
    out = [build(n, out_dir, root) for n in targets(root)]
    for name in EXTENSIONS:
        try:
            out.append(build_ext(name, out_dir, root))
        except (RuntimeError, OSError) as e:  # optional: the Python paths work without them
            print(f"pybpfc: optional extension {name} not built: {e}", file=sys.stderr)
    return out


if __name__ == "__main__":
    for p in build_all(sys.argv[1] if len(sys.argv) > 1 else OUT):
        print(p)
