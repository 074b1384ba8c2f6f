"""The kernel backend: maps and programs through bpf(2), ring/perf buffers through mmap, attach
points (pybpfc.backends.kernel.attach) through bpf links, perf events, netlink and tracefs.

See docs/kernel-backend.md.
"""
from __future__ import annotations

import os
import warnings
from functools import lru_cache

from ... import uapi as U
from ...errors import BTFError, LoadError
from ..base import Backend
from . import syscall as sc
from .maps import DEFAULT_PIN_ROOT, KernelMap, create_map
from .programs import KernelProgram, load_program
from .perf import possible_cpus

try:
    from .attach import AttachMixin
except ModuleNotFoundError as _e:  # the attach package is developed separately
    if _e.name != __name__ + ".attach":
        raise

    class AttachMixin:  # type: ignore[no-redef]
        pass


@lru_cache(maxsize=1)
def kernel_available() -> bool:
    """True if this process can use bpf(2): it can create a one-entry array map."""
    try:
        fd = sc.map_create(U.BPF_MAP_TYPE_ARRAY, 4, 4, 1, name="pybpfc_probe")
    except Exception:
        return False
    os.close(fd)
    return True


def raw_btf(btf) -> bytes:
    """Bytes of an object's BTF: a pybpfc.btf object (`.raw`) or raw bytes."""
    if btf is None:
        return b""
    if isinstance(btf, (bytes, bytearray, memoryview)):
        return bytes(btf)
    raw = getattr(btf, "raw", None)
    if callable(raw):
        raw = raw()
    if raw is None:
        raise BTFError(f"BTF object {type(btf).__name__} has no raw bytes")
    return bytes(raw)


class KernelBackend(AttachMixin, Backend):
    """Backend over the running kernel. One instance may load many collections."""

    name = "kernel"

    def __init__(self, pin_root: str = DEFAULT_PIN_ROOT, core: str = "kernel"):
        """`core`: who applies CO-RE relocations, "kernel" (BPF_PROG_LOAD core_relos) or
        "python" (pybpfc.btf.core against /sys/kernel/btf/vmlinux); see docs/kernel-backend.md."""
        if core not in ("kernel", "python"):
            raise ValueError(f"core must be 'kernel' or 'python', not {core!r}")
        self.pin_root, self.core = pin_root, core
        self._btf_fds: dict[int, tuple[object, int]] = {}  # id(btf) -> (btf, fd or -1)
        self.warnings: list[str] = []
        self._ncpu = 0
        super().__init__()

    def num_possible_cpus(self) -> int:
        if not self._ncpu:
            self._ncpu = len(possible_cpus())
        return self._ncpu

    # -- BTF
    def btf_fd(self, btf) -> int:
        """The fd of `btf` loaded into the kernel (once per BTF object), or -1 when the kernel
        rejected it (then maps and programs load without BTF, as libbpf does; a warning says why)."""
        if btf is None:
            return -1
        hit = self._btf_fds.get(id(btf))
        if hit is not None and hit[0] is btf:
            return hit[1]
        data = raw_btf(btf)
        fd = -1
        if data:
            fd, _ = sc.btf_load(data)
            if fd < 0:
                err = -fd
                _, log = sc.btf_load(data, log_level=1, log_size=1 << 20)
                msg = (f"BTF load failed: {sc.errno_text(err)}; loading without BTF (no source "
                       f"lines in verifier logs, no typed map keys)\n{log.strip()}")
                self.warnings.append(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
                fd = -1
        self._btf_fds[id(btf)] = (btf, fd)
        return fd

    # -- maps and programs
    def create_map(self, spec, btf=None) -> KernelMap:
        from ...btf.kernel import with_kconfig

        spec = with_kconfig(spec)  # __kconfig externs: the running kernel's values
        return create_map(spec, self.num_possible_cpus(), self.btf_fd(btf) if btf is not None else -1,
                          self.pin_root, self)

    def load_program(self, spec, maps: dict, btf=None) -> KernelProgram:
        from .vmlinux import attach_btf_id

        return load_program(spec, maps, self.btf_fd(btf), attach_btf_id=attach_btf_id(spec), btf=btf,
                            core=self.core)

    def open_ringbuf(self, m):
        from .ringbuf import KernelRingBuffer

        if getattr(m, "type", None) != U.BPF_MAP_TYPE_RINGBUF:
            raise LoadError(f"map '{m.name}': not a ring buffer map")
        return KernelRingBuffer(m)

    def open_perfbuf(self, m, page_count: int = 64):
        from .ringbuf import KernelPerfBuffer

        if getattr(m, "type", None) != U.BPF_MAP_TYPE_PERF_EVENT_ARRAY:
            raise LoadError(f"map '{m.name}': not a perf event array map")
        return KernelPerfBuffer(m, page_count)

    def close(self) -> None:
        for _, fd in self._btf_fds.values():
            sc.close_fd(fd)
        self._btf_fds.clear()


__all__ = ["KernelBackend", "KernelMap", "KernelProgram", "kernel_available"]
