#!/bin/sh
# Rebuild the clang-built test objects: sh tests/objects/build.sh
set -e
cd "$(dirname "$0")"
for src in *.bpf.c; do
	clang-19 -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c "$src" -o "${src%.c}.o"
done
