// Counts malloc calls per process (uprobe). Runs unchanged on the kernel and userspace backends.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);    // tgid
    __type(value, __u64);  // calls
} calls SEC(".maps");

SEC("uprobe/libc:malloc")
int count_malloc(struct pt_regs *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    __u64 zero = 0, *v = bpf_map_lookup_elem(&calls, &pid);
    if (!v) {
        // Insert 0 then add like every other call: with "insert 1 on a miss" two threads that
        // both miss lose one count (the second BPF_NOEXIST insert fails).
        bpf_map_update_elem(&calls, &pid, &zero, BPF_NOEXIST);
        v = bpf_map_lookup_elem(&calls, &pid);
        if (!v)
            return 0;
    }
    __sync_fetch_and_add(v, 1);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
