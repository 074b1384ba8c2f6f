"""Find what a pybpfc module declares: programs, maps, Structs, globals, LICENSE.

The module is imported (its `__main__` block does not run) so declarations are the real Python
objects users also see in user space; function bodies are compiled from their source AST.
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from ..errors import CompileError, Diagnostic
from ..lang.bpf import Const, Global, ProgDecl
from ..lang.maps import Map


class Diagnostics:
    """Collects Diagnostics; `raise_if_any()` raises one CompileError with all of them."""

    def __init__(self):
        self.items: list[Diagnostic] = []
        self._lines: dict[str, list[str]] = {}

    def source_line(self, file: str, line: int) -> str | None:
        if file not in self._lines:
            try:
                with open(file, encoding="utf-8") as f:
                    self._lines[file] = f.read().splitlines()
            except OSError:
                self._lines[file] = []
        lines = self._lines[file]
        return lines[line - 1] if 0 < line <= len(lines) else None

    def error(self, file: str, line: int, col: int, msg: str, hint: str | None = None):
        key = (file, line, col, msg)
        if any((d.file, d.line, d.col, d.message) == key for d in self.items):
            return
        self.items.append(Diagnostic(file, line, col, msg, hint=hint, source_line=self.source_line(file, line)))

    def at(self, file: str, node: ast.AST, msg: str, hint: str | None = None):
        self.error(file, getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1, msg, hint)

    def raise_if_any(self):
        if self.items:
            raise CompileError(sorted(self.items, key=lambda d: (d.file, d.line, d.col)))


@dataclass
class GlobalVar:
    name: str
    kind: str            # "const" (.rodata) | "global" (.data/.bss)
    type: Any
    init: Any
    module: str
    file: str
    line: int


@dataclass
class ProgramDef:
    name: str
    fn: Any
    decl: ProgDecl
    node: ast.FunctionDef
    file: str


@dataclass
class ModuleInfo:
    path: str
    module: Any
    tree: ast.Module
    programs: list = field(default_factory=list)
    maps: dict = field(default_factory=dict)            # name -> Map
    map_lines: dict = field(default_factory=dict)       # name -> line
    globals: dict = field(default_factory=dict)         # (module name, var) -> GlobalVar
    license: str = "GPL"


_ast_cache: dict = {}


def parse_file(path: str) -> ast.Module:
    mtime = os.stat(path).st_mtime_ns
    hit = _ast_cache.get(path)
    if hit and hit[0] == mtime:
        return hit[1]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    _ast_cache[path] = (mtime, tree)
    return tree


def function_ast(fn, diags: Diagnostics) -> tuple[ast.FunctionDef | None, str]:
    """The FunctionDef node for a Python function and the file it is in."""
    try:
        file = os.path.abspath(inspect.getsourcefile(fn) or "")
        tree = parse_file(file)
    except (OSError, TypeError, SyntaxError):
        return None, ""
    first = fn.__code__.co_firstlineno
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == fn.__name__:
            lines = [node.lineno] + [d.lineno for d in node.decorator_list]
            if first in lines:
                return node, file
    return None, file


_counter = [0]


def import_user_module(path: str, diags: Diagnostics):
    """Import the file under a private name (not __main__), with its directory on sys.path."""
    path = os.path.abspath(path)
    _counter[0] += 1
    name = f"_pybpfc_user_{_counter[0]}_{os.path.splitext(os.path.basename(path))[0]}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    d = os.path.dirname(path)
    added = d not in sys.path
    if added:
        sys.path.insert(0, d)
    sys.modules[name] = mod
    before = set(sys.modules)
    try:
        spec.loader.exec_module(mod)
    except SyntaxError as e:
        diags.error(e.filename or path, e.lineno or 1, e.offset or 1, f"syntax error: {e.msg}")
        return None
    except Exception as e:  # the user's module-level code failed: point at its line
        import traceback  # only on this error path: it costs start-up time on every build

        tb = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
        line = tb[-1].lineno if tb else 1
        diags.error(path, line, 1, f"module-level code raised {type(e).__name__}: {e}",
                    hint="declarations run at import time; they must work in user space too")
        return None
    finally:
        if added:
            sys.path.remove(d)
        sys.modules.pop(name, None)
        # project modules imported for this compile (events.py, ...) are read afresh next time
        for new in set(sys.modules) - before:
            f = getattr(sys.modules.get(new), "__file__", None) or ""
            if f and not new.startswith("pybpfc") and "site-packages" not in f and \
                    os.path.commonpath([d, os.path.abspath(f)]) == d:
                sys.modules.pop(new, None)
    return mod


def _annotation_kind(ann, mod):
    if isinstance(ann, str):
        try:
            ann = eval(ann, vars(mod))  # noqa: S307 - the user's own module
        except Exception:
            return None
    if isinstance(ann, type) and issubclass(ann, Const) and ann is not Const:
        return "const", ann._type
    if isinstance(ann, type) and issubclass(ann, Global) and ann is not Global:
        return "global", ann._type
    return None


def collect_globals(mod, file: str, out: dict):
    tree = parse_file(file)
    lines = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            lines[node.target.id] = node.lineno
    for name, ann in vars(mod).get("__annotations__", {}).items():
        k = _annotation_kind(ann, mod)
        if k:
            out[(mod.__name__, name)] = GlobalVar(name, k[0], k[1], getattr(mod, name, 0), mod.__name__, file,
                                                  lines.get(name, 1))


_importing: set = set()


def load_module(path: str, diags: Diagnostics) -> ModuleInfo | None:
    path = os.path.abspath(path)
    if path in _importing:
        # the module's own top-level code compiles itself: importing it again would never end
        raise CompileError([Diagnostic(path, 1, 1, "the module compiles or loads itself at import time",
                                       hint='put user-space code under `if __name__ == "__main__":`')])
    try:
        tree = parse_file(path)
    except SyntaxError as e:
        diags.error(path, e.lineno or 1, e.offset or 1, f"syntax error: {e.msg}")
        return None
    except OSError as e:
        raise CompileError([Diagnostic(path, 0, 0, f"cannot read source: {e.strerror}")]) from None
    except (UnicodeDecodeError, ValueError) as e:   # not UTF-8, NUL bytes
        raise CompileError([Diagnostic(path, 0, 0, f"cannot read source: {e}")]) from None
    _importing.add(path)
    try:
        mod = import_user_module(path, diags)
    finally:
        _importing.discard(path)
    if mod is None:
        return None
    info = ModuleInfo(path, mod, tree)
    assigned = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for t in targets:
            if isinstance(t, ast.Name):
                assigned[t.id] = node.lineno
    for name, obj in vars(mod).items():
        if isinstance(obj, Map):
            info.maps[name] = obj
            info.map_lines[name] = assigned.get(name, 1)
    lic = getattr(mod, "LICENSE", "GPL")
    if not isinstance(lic, str):
        diags.error(path, assigned.get("LICENSE", 1), 1, "LICENSE must be a string, e.g. LICENSE = \"GPL\"")
    else:
        info.license = lic
    collect_globals(mod, path, info.globals)
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        fn = vars(mod).get(node.name)
        decl = getattr(fn, "__pybpfc_prog__", None)
        if decl is None:
            continue
        if isinstance(node, ast.AsyncFunctionDef):
            diags.at(path, node, "a BPF program cannot be async")
            continue
        info.programs.append(ProgramDef(node.name, fn, decl, node, path))
    if not info.programs:
        diags.error(path, 1, 1, "no BPF programs found",
                    hint="decorate a function with @bpf.xdp, @bpf.tracepoint(\"cat/name\"), ...")
    return info
