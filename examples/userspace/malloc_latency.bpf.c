// malloc latency (uprobe + uretprobe): a log2 histogram of ns per call, and the total of the
// requested sizes, the return values' non-NULL count. Runs on both backends.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u64);    // pid_tgid
    __type(value, __u64);  // entry time
} start SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 64);
    __type(key, __u32);    // log2(ns)
    __type(value, __u64);
} hist SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);    // 0: calls, 1: returns, 2: non-NULL returns
    __type(value, __u64);
} totals SEC(".maps");

static __always_inline void add(__u32 k)
{
    __u64 *v = bpf_map_lookup_elem(&totals, &k);
    if (v)
        __sync_fetch_and_add(v, 1);
}

SEC("uprobe/libc:malloc")
int malloc_enter(struct pt_regs *ctx)
{
    __u64 id = bpf_get_current_pid_tgid(), t = bpf_ktime_get_ns();
    bpf_map_update_elem(&start, &id, &t, BPF_ANY);
    add(0);
    return 0;
}

SEC("uretprobe/libc:malloc")
int malloc_exit(struct pt_regs *ctx)
{
    __u64 id = bpf_get_current_pid_tgid();
    __u64 *t = bpf_map_lookup_elem(&start, &id);
    add(1);
    if (ctx->rax)
        add(2);
    if (!t)
        return 0;
    __u64 d = bpf_ktime_get_ns() - *t;
    bpf_map_delete_elem(&start, &id);
    __u32 b = 0;
    while (d > 1 && b < 63) {
        d >>= 1;
        b++;
    }
    __u64 *v = bpf_map_lookup_elem(&hist, &b);
    if (v)
        __sync_fetch_and_add(v, 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
