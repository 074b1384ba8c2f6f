"""Kernel helper prototypes, parsed from the documentation comments in linux/bpf.h.

Each prototype line looks like ` * long bpf_map_update_elem(struct bpf_map *map, const void *key, ...)`;
ids come from pybpfc.uapi.HELPERS (generated from the same header's __BPF_FUNC_MAPPER).
"""
from __future__ import annotations

import functools
import marshal
import os
import re
from dataclasses import dataclass

from ..uapi import HELPERS

HEADER = "/usr/include/linux/bpf.h"
# patterns as strings: compiled (and cached by re) on first use, not at every import
_PROTO = r"^ \* ((?:[a-z0-9_]+ )+\**)\s*bpf_([a-z0-9_]+)\((.*)\)\s*$"


@dataclass
class Param:
    name: str
    ctype: str

    @property
    def is_pointer(self) -> bool:
        return "*" in self.ctype


@dataclass
class Helper:
    name: str
    id: int
    ret: str                    # C return type, e.g. "long", "u64", "void *"
    params: list

    @property
    def returns_pointer(self) -> bool:
        return "*" in self.ret


def _parse_param(text: str, i: int) -> Param:
    text = text.strip()
    m = re.match(r"^(.*?)(\w+)$", text)
    if not m or not m.group(1).strip():
        return Param(f"arg{i}", text)
    return Param(m.group(2), m.group(1).strip())


def cache_dir() -> str:
    """Where parsed-header caches live: $PYBPFC_CACHE_DIR, else $XDG_CACHE_HOME/pybpfc or ~/.cache/pybpfc."""
    d = os.environ.get("PYBPFC_CACHE_DIR")
    if d:
        return d
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "pybpfc")


_CACHE_FORMAT = 1


def _parse_header(path: str) -> dict:
    """name -> (ret, [(param name, ctype)]) for the helpers documented in the header."""
    out = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(_PROTO, line.rstrip("\n"))
            if not m or m.group(2) not in HELPERS or m.group(2) in out:
                continue
            args = m.group(3).strip()
            params = [] if args in ("", "void") else [_parse_param(a, i) for i, a in enumerate(args.split(","))]
            out[m.group(2)] = (m.group(1).strip(), [(p.name, p.ctype) for p in params])
    return out


def _documented(path: str) -> dict:
    """_parse_header(path), cached on disk keyed by the header's identity and mtime: parsing the
    6000-line header took a noticeable part of every `pybpfc build`. marshal, not pickle or json:
    it is built in, so reading the cache imports nothing."""
    st = os.stat(path)
    key = (_CACHE_FORMAT, os.path.abspath(path), st.st_mtime_ns, st.st_size, st.st_ino, sorted(HELPERS.items()))
    cache = os.path.join(cache_dir(), "helpers.marshal")
    try:
        with open(cache, "rb") as f:
            k, v = marshal.load(f)
        if k == key:
            return v
    except (OSError, ValueError, EOFError, TypeError):
        pass  # missing, unreadable or from another version: parse again
    v = _parse_header(path)
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            marshal.dump((key, v), f)
        os.replace(tmp, cache)  # atomic: concurrent builds see the old or the new file, never half
    except OSError:
        pass  # read-only home: parse every time, as before
    return v


@functools.lru_cache(maxsize=1)
def helpers() -> dict:
    """name (without bpf_) -> Helper, for every helper documented in the header."""
    out = {}
    if os.path.exists(HEADER):
        for name, (ret, params) in _documented(HEADER).items():
            out[name] = Helper(name, HELPERS[name], ret, [Param(n, t) for n, t in params])
    for name, hid in HELPERS.items():   # undocumented ones: callable with up to 5 integer arguments
        if name not in out and name != "unspec":
            out[name] = Helper(name, hid, "long", [Param(f"arg{i}", "u64") for i in range(5)])
    return out


def size_param_after(h: Helper, i: int) -> bool:
    """Whether parameter i+1 is the byte size of the buffer in parameter i (so it may be left out)."""
    if i + 1 >= len(h.params) or not h.params[i].is_pointer:
        return False
    n = h.params[i + 1].name
    return "size" in n or n in ("len", "buf_len", "sz")
