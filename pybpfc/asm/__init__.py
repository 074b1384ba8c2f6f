"""BPF instruction encoding, assembler and disassembler (conformance-suite syntax).

    from pybpfc.asm import assemble, disassemble, encode, decode, parse_test
"""
from .assembler import assemble
from .disasm import disassemble, insn_text
from .insn import Insn, check, decode, encode
from .testdata import ConformanceTest, parse as parse_test

__all__ = ["assemble", "disassemble", "insn_text", "Insn", "check", "decode", "encode",
           "ConformanceTest", "parse_test"]
