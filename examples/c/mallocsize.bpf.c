// C twin of examples/mallocsize.py, for benchmarks/compile.py.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 65);
    __type(key, __u32);
    __type(value, __u64);
} sizes SEC(".maps");

static __always_inline __u32 log2_bucket(__u64 v)
{
    __u32 b = 0;
    // floor(log2(v)) + 1, 0 for v == 0
    if (v >> 32) { v >>= 32; b += 32; }
    if (v >> 16) { v >>= 16; b += 16; }
    if (v >> 8)  { v >>= 8;  b += 8; }
    if (v >> 4)  { v >>= 4;  b += 4; }
    if (v >> 2)  { v >>= 2;  b += 2; }
    if (v >> 1)  { v >>= 1;  b += 1; }
    return b + (v ? 1 : 0);
}

SEC("uprobe/libc:malloc")
int on_malloc(struct pt_regs *ctx)
{
    __u32 key = log2_bucket(ctx->rdi);
    __u64 *v = bpf_map_lookup_elem(&sizes, &key);
    if (v)
        __sync_fetch_and_add(v, 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
