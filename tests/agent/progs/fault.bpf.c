// A uprobe program that dereferences the probed function's first argument directly: the
// userspace runtime stops it at run time (malloc's argument is a size, not a pointer).
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>

SEC("uprobe")
int bad_read(struct pt_regs *ctx)
{
    return *(volatile long *)(ctx->rdi + 12345);
}

char LICENSE[] SEC("license") = "GPL";
