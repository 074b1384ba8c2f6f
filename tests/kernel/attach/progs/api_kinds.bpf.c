// For the Collection-level attach test: every program says in its section where it attaches.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 target_pid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void add(__u32 slot, __u64 v)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
		return;
	__u64 *p = bpf_map_lookup_elem(&hits, &slot);
	if (p)
		__sync_fetch_and_add(p, v);
}

SEC("tp/syscalls/sys_enter_getppid")
int tp_getppid(void *ctx) { add(0, 1); return 0; }

SEC("raw_tp/sys_enter")
int raw_enter(struct bpf_raw_tracepoint_args *ctx)
{
	if (ctx->args[1] == 110)   /* __NR_getppid on x86_64 */
		add(1, 1);
	return 0;
}

SEC("uprobe/libc:getppid")
int up_getppid(void *ctx) { add(2, 1); return 0; }

SEC("uretprobe/libc:getppid")
int ur_getppid(void *ctx)
{
	add(3, ((__u64 *)ctx)[10]);   /* x86_64 pt_regs->ax: the return value */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
