"""ELF -> CollectionSpec. Pure: no syscalls; the same file gives the same spec anywhere."""
from .spec import CollectionSpec, CoreRelo, LineInfo, MapSpec, ProgramSpec, Relocation


def read_elf(obj, source: str = ""):
    """Read an ELF object (path, bytes or file) into a CollectionSpec."""
    from .reader import read_elf as _read

    return _read(obj, source=source)


__all__ = ["CollectionSpec", "CoreRelo", "LineInfo", "MapSpec", "ProgramSpec", "Relocation", "read_elf"]
