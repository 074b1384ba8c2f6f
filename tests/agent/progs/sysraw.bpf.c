// raw sys_enter (pt_regs pointer + id) and a sys_exit_* tracepoint (ret at 16), for the agent
// tests: counts close() calls and remembers the fd they closed; remembers openat's results.
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 4);
    __type(key, __u32);   // 0: close calls, 1: last closed fd, 2: openat returns, 3: last ret
    __type(value, __s64);
} seen SEC(".maps");

static __always_inline void put(__u32 k, __s64 v, int add)
{
    __s64 *p = bpf_map_lookup_elem(&seen, &k);
    if (!p)
        return;
    if (add)
        __sync_fetch_and_add(p, v);
    else
        *p = v;
}

SEC("raw_tracepoint/sys_enter")
int raw_enter(struct bpf_raw_tracepoint_args *ctx)
{
    if (ctx->args[1] != 3 /* close */)
        return 0;
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    long fd = 0;
    bpf_probe_read(&fd, sizeof(fd), &regs->rdi);
    put(0, 1, 1);
    put(1, fd, 0);
    return 0;
}

struct exit_args {
    __u64 common;
    __s32 nr;
    __u32 pad;
    __s64 ret;
};

SEC("tracepoint/syscalls/sys_exit_openat")
int exit_openat(struct exit_args *ctx)
{
    put(2, 1, 1);
    put(3, ctx->ret, 0);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
