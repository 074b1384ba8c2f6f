"""`bpf`: program decorators and helper stubs, plus `Const` and `Global` annotations.

In user space the decorators only tag functions (the module stays importable and runnable);
the helper stubs exist for type checkers and raise if called outside a BPF program.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from .types import Str

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class ProgDecl:
    """What a decorator recorded: attach kind, libbpf section and target."""

    def __init__(self, kind: str, section: str, target: str = ""):
        self.kind, self.section, self.target = kind, section, target

    def __repr__(self):
        return f"ProgDecl({self.kind!r}, {self.section!r})"


def _tag(kind: str, section: str, target: str = "") -> Callable[[F], F]:
    def deco(fn: F) -> F:
        fn.__pybpfc_prog__ = ProgDecl(kind, section, target)  # type: ignore[attr-defined]
        return fn
    return deco


def _direction(deco: str, direction: str):
    if direction not in ("ingress", "egress"):
        raise ValueError(f"bpf.{deco}({direction!r}): direction must be \"ingress\" or \"egress\"")


def _not_in_user_space(name: str):
    def stub(*args: Any, **kw: Any) -> Any:
        raise RuntimeError(f"bpf.{name}() runs only inside a BPF program")
    stub.__name__ = name
    return stub


class _Bpf:
    """Decorators (`@bpf.xdp`, `@bpf.tracepoint("cat/name")`, ...) and kernel helpers."""

    # ---- program decorators -------------------------------------------------------------
    def tracepoint(self, name: str) -> Callable[[F], F]:
        if not isinstance(name, str) or name.count("/") != 1:
            raise ValueError(f"bpf.tracepoint({name!r}): expected \"category/name\", e.g. \"syscalls/sys_enter_openat\"")
        return _tag("tracepoint", f"tracepoint/{name}", name)

    def raw_tracepoint(self, name: str) -> Callable[[F], F]:
        return _tag("raw_tracepoint", f"raw_tracepoint/{name}", name)

    def uprobe(self, target: str) -> Callable[[F], F]:
        return _tag("uprobe", f"uprobe/{target}", target)

    def uretprobe(self, target: str) -> Callable[[F], F]:
        return _tag("uretprobe", f"uretprobe/{target}", target)

    def kprobe(self, fn: str) -> Callable[[F], F]:
        return _tag("kprobe", f"kprobe/{fn}", fn)

    def kretprobe(self, fn: str) -> Callable[[F], F]:
        return _tag("kretprobe", f"kretprobe/{fn}", fn)

    def fentry(self, fn: str) -> Callable[[F], F]:
        return _tag("fentry", f"fentry/{fn}", fn)

    def fexit(self, fn: str) -> Callable[[F], F]:
        return _tag("fexit", f"fexit/{fn}", fn)

    def xdp(self, fn: F) -> F:
        return _tag("xdp", "xdp")(fn)

    def socket_filter(self, fn: F) -> F:
        return _tag("socket_filter", "socket")(fn)

    def perf_event(self, fn: F) -> F:
        return _tag("perf_event", "perf_event")(fn)

    def tc(self, direction: str = "ingress") -> Callable[[F], F]:
        _direction("tc", direction)
        return _tag("tc", f"tc/{direction}", direction)

    def cgroup_skb(self, direction: str = "ingress") -> Callable[[F], F]:
        _direction("cgroup_skb", direction)
        return _tag("cgroup_skb", f"cgroup_skb/{direction}", direction)

    def section(self, name: str) -> Callable[[F], F]:
        return _tag("section", name)

    # ---- short forms --------------------------------------------------------------------
    def pid(self) -> int:
        """Process id (the kernel's tgid), like os.getpid()."""
        raise RuntimeError("bpf.pid() runs only inside a BPF program")

    def tgid(self) -> int:
        raise RuntimeError("bpf.tgid() runs only inside a BPF program")

    def tid(self) -> int:
        """Thread id (the kernel's pid), like threading.get_native_id()."""
        raise RuntimeError("bpf.tid() runs only inside a BPF program")

    def uid(self) -> int:
        raise RuntimeError("bpf.uid() runs only inside a BPF program")

    def gid(self) -> int:
        raise RuntimeError("bpf.gid() runs only inside a BPF program")

    def comm(self) -> Any:
        """The current task's command name as Str[16]."""
        raise RuntimeError("bpf.comm() runs only inside a BPF program")

    def ktime_ns(self) -> int:
        raise RuntimeError("bpf.ktime_ns() runs only inside a BPF program")

    def cpu(self) -> int:
        raise RuntimeError("bpf.cpu() runs only inside a BPF program")

    # ---- common helpers with precise types (others resolve through __getattr__) ---------
    def get_current_pid_tgid(self) -> int: raise RuntimeError("BPF only")
    def get_current_uid_gid(self) -> int: raise RuntimeError("BPF only")
    def get_current_comm(self) -> Any: raise RuntimeError("BPF only")
    def ktime_get_ns(self) -> int: raise RuntimeError("BPF only")
    def ktime_get_boot_ns(self) -> int: raise RuntimeError("BPF only")
    def get_smp_processor_id(self) -> int: raise RuntimeError("BPF only")
    def get_prandom_u32(self) -> int: raise RuntimeError("BPF only")
    def probe_read_user(self, dst: Any, src: int) -> int: raise RuntimeError("BPF only")
    def probe_read_user_str(self, dst: Any, src: int) -> int: raise RuntimeError("BPF only")
    def probe_read_kernel(self, dst: Any, src: int) -> int: raise RuntimeError("BPF only")
    def probe_read_kernel_str(self, dst: Any, src: int) -> int: raise RuntimeError("BPF only")
    def get_current_task(self) -> int: raise RuntimeError("BPF only")
    def load_byte(self, skb: Any, off: int) -> int: raise RuntimeError("BPF only")
    def load_half(self, skb: Any, off: int) -> int: raise RuntimeError("BPF only")
    def load_word(self, skb: Any, off: int) -> int: raise RuntimeError("BPF only")

    def __getattr__(self, name: str) -> Callable[..., Any]:
        from ..uapi import HELPERS

        if name in HELPERS:
            return _not_in_user_space(name)
        raise AttributeError(f"bpf.{name}: no such helper or decorator")


bpf = _Bpf()


class _Annot(type):
    def __getitem__(cls, t):
        from .types import resolve_type

        return type(f"{cls.__name__}[{getattr(t, '__name__', t)}]", (cls,), {"_type": resolve_type(t)})


class Const(Generic[T], metaclass=_Annot):
    """`name: Const[u64] = 4096`: a .rodata constant user space may set before load."""

    _type: Any = None


class Global(Generic[T], metaclass=_Annot):
    """`name: Global[u64] = 0`: a .data/.bss variable shared by programs and user space."""

    _type: Any = None


__all__ = ["bpf", "Const", "Global", "ProgDecl", "Str"]
