// C twin of examples/opens.py, for benchmarks/compile.py.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 10240);
    __type(key, __u32);
    __type(value, __u64);
} counts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int count_opens(void *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    __u64 *v = bpf_map_lookup_elem(&counts, &pid);
    if (!v) {
        __u64 zero = 0;
        bpf_map_update_elem(&counts, &pid, &zero, BPF_NOEXIST);
        v = bpf_map_lookup_elem(&counts, &pid);
        if (!v)
            return 0;
    }
    __sync_fetch_and_add(v, 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
