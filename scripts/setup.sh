#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent): Debian packages, a venv with pybpfc
# installed editable, tracefs and bpffs mounted. Used by scripts/demo.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
need=()
command -v bpftool >/dev/null || need+=(bpftool)
command -v ip >/dev/null || need+=(iproute2)
command -v clang-19 >/dev/null || need+=(clang-19)
command -v llvm-objdump-19 >/dev/null || need+=(llvm-19)
dpkg -s libbpf-dev >/dev/null 2>&1 || need+=(libbpf-dev)
dpkg -s linux-libc-dev >/dev/null 2>&1 || need+=(linux-libc-dev)
command -v gcc >/dev/null || need+=(gcc)
dpkg -s libcapstone-dev >/dev/null 2>&1 || need+=(libcapstone-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  $SUDO apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
    || echo "setup: warning: could not install ${need[*]}; tests needing them will skip" >&2
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# Editable, in setuptools' compat mode: a plain path entry like a normal install's. The default
# mode's import-hook finder costs every pybpfc process ~11 ms at start (pathlib, urllib...).
# Later setuptools may drop compat mode: then the default.
{ .venv/bin/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat \
  || .venv/bin/python -m pip install -q -e '.[test]'; } >.venv/install.log 2>&1 \
  || { cat .venv/install.log >&2; echo "setup: pip install failed" >&2; exit 1; }
# Kernel interfaces the project uses; a fresh machine mounts neither.
if [ "$(id -u)" = 0 ]; then
  mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
fi
