"""CollectionSpec: the one exchange format between the compiler's objects and the loaders.

A spec is pure data: reading the same ELF anywhere gives an equal spec. Backends load a
spec; neither backend reads ELF or Python source itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class Relocation:
    """A reference a loader must resolve in one instruction of a (linked) program.

    insn: index of the 8-byte instruction slot within ProgramSpec.insns.
    kind:
      "map"        lddw of a map: the loader sets src_reg=BPF_PSEUDO_MAP_FD (1), imm=map.
      "map_value"  lddw of global data: src_reg=BPF_PSEUDO_MAP_VALUE (2), imm=map,
                   second-slot imm=addend (byte offset of the variable in the section).
      "func"       lddw of a subprogram address (callback for bpf_loop etc.): already
                   linked: src_reg=BPF_PSEUDO_FUNC (4), imm=relative insn offset. Kept for
                   information only.
      Kernel externs (libbpf's __kconfig/__ksym), resolved with pybpfc.btf.kernel:
      "kconfig"    lddw of a __kconfig variable: a "map_value" into the ".kconfig" map (target
                   ".kconfig", addend = offset) once fill_kconfig() set that map's data.
      "kfunc"      call of a kfunc: src_reg=BPF_PSEUDO_KFUNC_CALL (2), imm = vmlinux BTF id.
      "ksym"       lddw of a typed __ksym variable: src_reg=BPF_PSEUDO_BTF_ID (3), imm = BTF id.
      "ksym_addr"  lddw of a typeless __ksym: imm/second imm = its kallsyms address.
      For kfunc/ksym/ksym_addr, addend 1 marks a __weak extern (0 when absent is fine).
    target: the map name (for "map"/"map_value"), the function or extern name.
    """

    insn: int
    kind: str
    target: str
    addend: int = 0


@dataclass
class MapSpec:
    name: str
    type: int                      # BPF_MAP_TYPE_* (pybpfc.uapi)
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    pinning: int = 0               # 0 none, 1 LIBBPF_PIN_BY_NAME
    map_extra: int = 0
    numa_node: int = 0
    key_type: Any = None           # pybpfc.lang type (u32, a Struct subclass, ...) or None: raw bytes
    value_type: Any = None
    btf_key_type_id: int = 0       # ids in the collection's BTF (0: none)
    btf_value_type_id: int = 0
    inner_map: Optional["MapSpec"] = None
    contents: list = field(default_factory=list)  # initial (key, value) byte pairs (prog arrays...)
    # Global data sections (.rodata/.data/.bss and .rodata.*/.data.*): one-entry arrays.
    data: Optional[bytes] = None   # initial value of the section (zeros for .bss)
    readonly: bool = False         # .rodata: frozen after load (BPF_F_RDONLY_PROG)
    variables: dict = field(default_factory=dict)  # name -> (offset, size, lang type or None)
    section: str = ".maps"         # ELF section the map came from
    # Events carried by RingBuf/PerfEventArray maps have no key/value BTF; pybpfc's compiler
    # names the event type with a BTF decl tag "pybpfc:event=<StructName>" on the map variable.
    event_type: Any = None
    # Other "pybpfc:KEY=VALUE" decl tags on the map variable, e.g. {"histogram": "log2"}.
    tags: dict = field(default_factory=dict)


@dataclass
class LineInfo:
    insn: int                      # instruction index within the linked program
    file: str
    line: int
    col: int
    source: str = ""               # the source line text, when the object carries it


@dataclass
class CoreRelo:
    """One CO-RE relocation: insn of the linked program, local BTF type, access string
    ("0:1" = member 1 of the type), kind (BPF_CORE_* of enum bpf_core_relo_kind)."""

    insn: int
    type_id: int
    access: str
    kind: int


@dataclass
class ProgramSpec:
    name: str
    section: str                   # ELF section name, libbpf style ("tracepoint/syscalls/...")
    type: int                      # BPF_PROG_TYPE_*
    expected_attach_type: int = 0  # BPF_* attach type (uapi) the kernel expects at load
    kind: str = ""                 # attach kind from pybpfc.elf.sections ("tracepoint", "uprobe", ...)
    attach_to: str = ""            # target parsed from the section ("syscalls/sys_enter_openat",
                                   # "/usr/lib/libc.so.6:malloc", "eth0", "ingress" ...)
    insns: bytes = b""             # linked instructions: the entry function then its subprograms
    relocations: list = field(default_factory=list)   # [Relocation]
    license: str = "GPL"
    kern_version: int = 0
    sleepable: bool = False
    func_info: list = field(default_factory=list)     # [(insn, btf_type_id)] of the linked program
    line_info: list = field(default_factory=list)     # [LineInfo]
    func_info_raw: bytes = b""     # kernel-format bpf_func_info records for the linked program
    line_info_raw: bytes = b""     # kernel-format bpf_line_info records for the linked program
    # CO-RE relocations from .BTF.ext: [CoreRelo]; core_relos_raw is the kernel's
    # struct bpf_core_relo array (insn_off in bytes) for BPF_PROG_LOAD core_relos, which makes
    # the kernel apply them against its own BTF (needs prog_btf_fd).
    core_relos: list = field(default_factory=list)
    core_relos_raw: bytes = b""
    flags: int = 0

    @property
    def insn_count(self) -> int:
        return len(self.insns) // 8


@dataclass
class CollectionSpec:
    programs: dict = field(default_factory=dict)      # name -> ProgramSpec
    maps: dict = field(default_factory=dict)          # name -> MapSpec (incl. global data)
    btf: Any = None                # pybpfc.btf.BTF of the object, or None
    license: str = "GPL"
    kern_version: int = 0
    types: dict = field(default_factory=dict)         # named Struct classes decoded from BTF
    source: str = ""               # path the spec was read from (for messages)

    def copy(self) -> "CollectionSpec":
        import copy

        return copy.deepcopy(self)
