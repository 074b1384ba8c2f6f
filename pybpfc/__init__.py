"""pybpfc: write eBPF in restricted Python; load it into the kernel or a userspace runtime."""
from .errors import (AssemblerError, AttachError, BTFError, CompileError, ELFError, Error, LoadError,
                     NotSupportedError, RuntimeFault, VerifierError)
from .lang import *  # noqa: F401,F403 - the language surface: types, maps, decorators
from .lang import __all__ as _lang_all
from .api import compile, get_backend, load, read_spec  # noqa: A004
from .uapi import (BPF_ANY, BPF_EXIST, BPF_NOEXIST, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
                   TC_ACT_UNSPEC, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX)

__version__ = "0.1.0"

__all__ = list(_lang_all) + [
    "AssemblerError", "AttachError", "BTFError", "CompileError", "ELFError", "Error", "LoadError",
    "NotSupportedError", "RuntimeFault", "VerifierError", "compile", "get_backend", "load", "read_spec",
    "BPF_ANY", "BPF_EXIST", "BPF_NOEXIST", "TC_ACT_OK", "TC_ACT_REDIRECT", "TC_ACT_SHOT", "TC_ACT_UNSPEC",
    "XDP_ABORTED", "XDP_DROP", "XDP_PASS", "XDP_REDIRECT", "XDP_TX",
]
