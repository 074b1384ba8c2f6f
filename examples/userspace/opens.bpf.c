// Files opened per process (syscalls/sys_enter_openat): counts per tgid, and a ring buffer
// event with the file name for each open. Runs on both backends.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct openat_args {
    __u64 common;       // common_type, flags, preempt_count, pid
    __s32 nr;           // __syscall_nr
    __u32 pad;
    __u64 dfd;
    const char *filename;
    __u64 flags;
    __u64 mode;
};

struct event {
    __u32 pid;
    __u32 flags;
    char name[64];
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, __u64);
} opens SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 1 << 16);
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int on_openat(struct openat_args *ctx)
{
    __u32 pid = bpf_get_current_pid_tgid() >> 32;
    __u64 one = 1, *v = bpf_map_lookup_elem(&opens, &pid);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        bpf_map_update_elem(&opens, &pid, &one, BPF_NOEXIST);
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e)
        return 0;
    e->pid = pid;
    e->flags = ctx->flags;
    bpf_probe_read_user_str(e->name, sizeof(e->name), ctx->filename);
    bpf_ringbuf_submit(e, 0);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
