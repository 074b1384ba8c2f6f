"""Top-level API: pybpfc.compile(), pybpfc.read_spec(), pybpfc.load()."""
from __future__ import annotations

import os
from typing import Optional, Union

from .errors import Error, NotSupportedError


def compile(path: str, **options) -> bytes:  # noqa: A001 - the natural name
    """Compile a pybpfc Python module to a BPF ELF object (bytes)."""
    from .codegen import compile_file

    return compile_file(path, **options)


def read_spec(obj: Union[str, bytes, os.PathLike], **compile_options):
    """A CollectionSpec from an ELF object (path or bytes) or a pybpfc .py module."""
    from .elf import read_elf

    if isinstance(obj, (str, os.PathLike)) and str(obj).endswith(".py"):
        spec = read_elf(compile(str(obj), **compile_options), source=str(obj))
        _adopt_user_types(spec, str(obj))
        return spec
    return read_elf(obj)


def _adopt_user_types(spec, path):
    """Decode with the user's own Struct classes (same name and layout) when the module defines them."""
    import sys

    mod = sys.modules.get("__main__")
    if not (mod and os.path.abspath(getattr(mod, "__file__", "") or "") == os.path.abspath(path)):
        return
    from .lang.types import Struct

    user = {n: c for n, c in vars(mod).items() if isinstance(c, type) and issubclass(c, Struct) and c is not Struct}

    def swap(t):
        u = user.get(getattr(t, "__name__", None))
        if u is not None and isinstance(t, type) and issubclass(t, Struct) and u._size == t._size and \
                [(f[0], f[2]) for f in u._fields_] == [(f[0], f[2]) for f in t._fields_]:
            return u
        return t

    for m in spec.maps.values():
        m.key_type, m.value_type, m.event_type = swap(m.key_type), swap(m.value_type), swap(m.event_type)


def get_backend(name: str = "auto"):
    """A Backend instance: "kernel", "userspace", or "auto" (kernel when this process may use it)."""
    if name == "auto":
        from .backends.kernel import kernel_available

        name = "kernel" if kernel_available() else "userspace"
    if name == "kernel":
        from .backends.kernel import KernelBackend

        return KernelBackend()
    if name == "userspace":
        from .backends.userspace import UserspaceBackend

        return UserspaceBackend()
    raise Error(f"unknown backend {name!r} (use 'auto', 'kernel' or 'userspace')")


def apply_consts(spec, consts: dict):
    """Set .rodata constants in a spec before load (the values programs see as constants)."""
    for name, value in consts.items():
        for m in spec.maps.values():
            if name in m.variables:
                off, size, t = m.variables[name]
                data = bytearray(m.data or bytes(m.value_size))
                data[off : off + size] = t._pack(value) if t is not None else int(value).to_bytes(size, "little")
                m.data = bytes(data)
                break
        else:
            raise Error(f"consts: no global variable {name!r} in the object")


def load(obj, backend: Union[str, object] = "auto", consts: Optional[dict] = None,
         unsupported: str = "error", **compile_options):
    """Compile (for .py), read and load an object; returns a Collection (a context manager).

    unsupported: "error" raises NotSupportedError for attach kinds the backend cannot do;
    "ignore" returns a no-op link instead.
    """
    from .collection import Collection

    if unsupported not in ("error", "ignore"):
        raise Error(f"unsupported= must be 'error' or 'ignore', not {unsupported!r}")
    spec = obj if hasattr(obj, "programs") and hasattr(obj, "maps") else read_spec(obj, **compile_options)
    if consts:
        spec = spec.copy()
        apply_consts(spec, consts)
    be = get_backend(backend) if isinstance(backend, str) else backend
    return Collection(spec, be, unsupported=unsupported, owns_backend=isinstance(backend, str))


__all__ = ["compile", "read_spec", "load", "get_backend", "NotSupportedError"]
