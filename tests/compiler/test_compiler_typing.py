"""The integer typing rules (pure functions, no kernel needed)."""
from pybpfc.frontend.helpers import helpers, size_param_after
from pybpfc.frontend.tracepoint import parse_format
from pybpfc.frontend.typing import binop_type, common, compare_type, fits
from pybpfc.lang.types import Str, bool_, i8, i16, i32, i64, u8, u16, u32, u64
from pybpfc.uapi import HELPERS


def test_common_type():
    assert common(u8, u32) is u32 and common(i64, u32) is i64
    assert common(i32, u32) is u32            # equal width: unsigned, as C
    assert common(bool_, i16) is i16 and common(bool_, bool_) is bool_


def test_literals_fit_or_widen():
    assert fits(255, u8) and not fits(256, u8) and fits(-1, u8) and not fits(-129, u8)
    assert binop_type("arith", u8, 256) is u16          # h.b * 256 does not wrap at 8 bits
    assert binop_type("arith", 1, i32) is i32
    assert binop_type("arith", i8, 1 << 40) is i64
    assert binop_type("arith", u64, -1) is u64
    assert binop_type("bitwise", bool_, bool_) is bool_ and binop_type("arith", bool_, bool_) is u8
    assert binop_type("shift", 1, None) is i64 and binop_type("shift", u16, None) is u16


def test_compare_types():
    assert compare_type(u8, i8) is None and compare_type(u64, i64) is None   # by value
    assert compare_type(u8, u32) is u32 and compare_type(3, i16) is i16


def test_helper_prototypes_match_the_header_ids():
    hs = helpers()
    assert hs["map_update_elem"].id == HELPERS["map_update_elem"] == 2
    assert [p.name for p in hs["probe_read_user_str"].params] == ["dst", "size", "unsafe_ptr"]
    assert hs["get_current_pid_tgid"].params == [] and hs["get_current_pid_tgid"].ret == "u64"
    assert hs["map_lookup_elem"].returns_pointer
    assert size_param_after(hs["probe_read_user"], 0) and not size_param_after(hs["probe_read_user"], 2)
    assert len(hs) >= 200


def test_tracepoint_format_parsing():
    fields = parse_format(
        "\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n"
        "\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n"
        "\tfield:const char * filename;\toffset:16;\tsize:8;\tsigned:0;\n"
        "\tfield:char comm[16];\toffset:24;\tsize:16;\tsigned:0;\n"
        "\tfield:__data_loc char[] name;\toffset:40;\tsize:4;\tsigned:0;\n"
        "\tfield:unsigned long args[6];\toffset:48;\tsize:48;\tsigned:0;\n")
    assert fields["common_type"] == (0, u16, False)
    assert fields["__syscall_nr"] == (8, i32, False)
    assert fields["filename"] == (16, u64, True)
    assert fields["comm"] == (24, Str[16], False)
    assert fields["name"] == (40, u32, False)
    assert "args" not in fields


def test_division_by_negative_literal_is_signed():
    assert binop_type("div", u32, -2) is i64 and binop_type("div", i32, -2) is i32
    assert binop_type("arith", u32, -2) is u32      # x - 2 / x + -2 wrap like C
