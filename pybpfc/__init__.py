"""pybpfc: write eBPF in restricted Python; load it into the kernel or a userspace runtime."""
# The names below are resolved on first use (PEP 562): `import pybpfc.cli` runs this file first,
# and `pybpfc build` starts its LLVM child before it needs the language surface. `from pybpfc
# import *`, `pybpfc.HashMap`, `pybpfc.lang`... all work as with eager imports.
import importlib as _importlib

from .errors import (AssemblerError, AttachError, BTFError, CompileError, ELFError, Error, LoadError,
                     NotSupportedError, RuntimeFault, VerifierError)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy honours the name
if TYPE_CHECKING:  # what type checkers and IDEs see: the eager imports
    from .api import compile, get_backend, load, read_spec  # noqa: A004
    from .lang import *  # noqa: F401,F403
    from .uapi import (BPF_ANY, BPF_EXIST, BPF_NOEXIST, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
                       TC_ACT_UNSPEC, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX)
del TYPE_CHECKING

__version__ = "0.1.0"

_LANG = ["Array", "IntType", "Str", "Struct", "bool_", "i8", "i16", "i32", "i64", "make_struct",
         "sizeof", "u8", "u16", "u32", "u64", "bpf", "Const", "Global",
         "Map", "HashMap", "LruHashMap", "PerCpuHashMap", "LruPerCpuHashMap", "LpmTrie", "ArrayMap",
         "PerCpuArray", "Histogram", "RingBuf", "PerfEventArray", "ProgArray", "StackTraceMap", "Queue",
         "Stack", "BloomFilter"]
_API = ["compile", "get_backend", "load", "read_spec"]
_UAPI = ["BPF_ANY", "BPF_EXIST", "BPF_NOEXIST", "TC_ACT_OK", "TC_ACT_REDIRECT", "TC_ACT_SHOT", "TC_ACT_UNSPEC",
         "XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_REDIRECT", "XDP_TX"]
_FROM = {**{n: "lang" for n in _LANG}, **{n: "api" for n in _API}, **{n: "uapi" for n in _UAPI}}
# submodules the eager version imported, so `import pybpfc; pybpfc.lang.types` kept working
_SUBMODULES = ("lang", "api", "uapi", "errors")

__all__ = list(_LANG) + [
    "AssemblerError", "AttachError", "BTFError", "CompileError", "ELFError", "Error", "LoadError",
    "NotSupportedError", "RuntimeFault", "VerifierError", *_API, *_UAPI,
]


def __getattr__(name: str):
    mod = _FROM.get(name)
    if mod is not None:
        value = getattr(_importlib.import_module(f".{mod}", __name__), name)
    elif name in _SUBMODULES:
        value = _importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later lookups are plain module attributes
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
