"""The userspace backend and kernel-specific relocations: __kconfig externs read the host
kernel's values (as on the kernel backend); CO-RE programs are refused, never run with the
object's local struct layout."""
import os
import shutil
import subprocess

import pytest

import pybpfc
from pybpfc.btf.kernel import kernel_version
from pybpfc.errors import LoadError

OBJ = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "objects")
CLANG = shutil.which("clang-19")

KCONFIG_SRC = r'''
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
extern int LINUX_KERNEL_VERSION __kconfig;
extern int CONFIG_PYBPFC_NOT_THERE __kconfig __weak;
SEC("xdp")
int kver(struct xdp_md *ctx)
{
    return (LINUX_KERNEL_VERSION >> 8) + CONFIG_PYBPFC_NOT_THERE;   /* major << 8 | minor */
}
char LICENSE[] SEC("license") = "GPL";
'''


@pytest.mark.skipif(CLANG is None, reason="clang-19 not installed")
def test_kconfig_externs_read_the_host_kernel(tmp_path):
    src, obj = tmp_path / "kver.bpf.c", tmp_path / "kver.bpf.o"
    src.write_text(KCONFIG_SRC)
    subprocess.run([CLANG, "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu", "-c", str(src),
                    "-o", str(obj)], check=True)
    with pybpfc.load(str(obj), backend="userspace") as o:
        r = o.programs.kver.test_run(b"\0" * 64)
    assert r.retval == kernel_version() >> 8 and r.retval > 0


def test_core_programs_are_refused():
    with pytest.raises(LoadError, match=r"^prog '\w+': \d+ CO-RE relocation\(s\) .* not supported by the userspace runtime"):
        pybpfc.load(os.path.join(OBJ, "core.bpf.o"), backend="userspace")
