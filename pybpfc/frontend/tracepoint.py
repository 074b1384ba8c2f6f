"""Tracepoint context layout from tracefs `events/CAT/NAME/format` (or a saved copy)."""
from __future__ import annotations

import os
import re

from ..lang.types import Str, i8, i16, i32, i64, u8, u16, u32, u64

TRACEFS_DIRS = ["/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"]
_FIELD = r"field:(.*?);\s*offset:(\d+);\s*size:(\d+);\s*signed:(\d+);"  # compiled (and cached by re) when used
_INTS = {(1, False): u8, (2, False): u16, (4, False): u32, (8, False): u64,
         (1, True): i8, (2, True): i16, (4, True): i32, (8, True): i64}


class TracepointNotFound(Exception):
    pass


def find_format(name: str, formats_dir: str | None = None) -> str:
    """Path of the format file for "cat/name"; formats_dir holds saved copies (cat/name/format or cat/name)."""
    cands = []
    if formats_dir:
        cands += [os.path.join(formats_dir, name, "format"), os.path.join(formats_dir, name),
                  os.path.join(formats_dir, name.replace("/", "_") + ".format")]
    else:
        cands += [os.path.join(d, name, "format") for d in TRACEFS_DIRS]
    for c in cands:
        if os.path.isfile(c):
            return c
    where = formats_dir or TRACEFS_DIRS[0]
    raise TracepointNotFound(f"tracepoint '{name}' not found (no format file under {where})")


def parse_format(text: str) -> dict:
    """field name -> (offset, lang type, is_pointer)."""
    fields = {}
    for m in re.finditer(_FIELD, text):
        decl, off, size, signed = m.group(1).strip(), int(m.group(2)), int(m.group(3)), m.group(4) == "1"
        am = re.match(r"^(.*?)(\w+)\s*(\[(\w*)\])?$", decl)
        if not am:
            continue
        ctype, name, arr = am.group(1).strip(), am.group(2), am.group(3)
        if arr is not None and ("char" in ctype):
            fields[name] = (off, Str[size], False)
        elif arr is not None:
            continue  # other arrays: not addressable as a single value
        elif "*" in ctype:
            fields[name] = (off, u64, True)
        elif (size, signed) in _INTS:
            fields[name] = (off, _INTS[(size, signed)], False)
    return fields


def load(name: str, formats_dir: str | None = None) -> dict:
    with open(find_format(name, formats_dir), encoding="utf-8", errors="replace") as f:
        return parse_format(f.read())
