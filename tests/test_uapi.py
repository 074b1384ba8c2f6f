"""pybpfc.uapi must agree with the kernel's own header."""
import os
import re

import pytest

from pybpfc import uapi

HEADER = "/usr/include/linux/bpf.h"


@pytest.mark.skipif(not os.path.exists(HEADER), reason="linux-libc-dev not installed")
def test_enums_and_helpers_match_header():
    src = re.sub(r"/\*.*?\*/", "", open(HEADER).read(), flags=re.S)
    for enum in ("bpf_cmd", "bpf_map_type", "bpf_prog_type", "bpf_attach_type"):
        body = re.search(r"enum %s\s*\{(.*?)\};" % enum, src, re.S).group(1)
        val = 0
        for item in (x.strip() for x in body.split(",")):
            if not item:
                continue
            name, _, v = (p.strip() for p in item.partition("="))
            if v:
                try:
                    val = int(v, 0)
                except ValueError:
                    val = getattr(uapi, v)
            if not name.startswith("__") and not name.startswith("MAX"):
                assert getattr(uapi, name) == val, name
            val += 1
    mapper = re.search(r"#define __BPF_FUNC_MAPPER\(FN\)(.*?)\n\n", open(HEADER).read(), re.S).group(1)
    for i, name in enumerate(re.findall(r"FN\((\w+)\)", mapper)):
        assert uapi.HELPERS[name] == i
