// Program types and linking: subprograms in .text shared by several programs, a bpf_loop
// callback, several programs in one section, prog array, uprobe, xdp, tc, socket, cgroup_skb.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} jmp SEC(".maps");

static __u64 scale = 3;

static __attribute__((noinline)) int bump(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&hits, &idx);
	if (v)
		__sync_fetch_and_add(v, scale);
	return idx;
}

static __attribute__((noinline)) int twice(__u32 idx)
{
	return bump(idx) + bump(idx + 1);
}

static int loop_cb(__u32 i, void *ctx)
{
	*(__u64 *)ctx += i;
	return 0;
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	bump(0);
	return XDP_PASS;
}

SEC("xdp")
int xdp_drop(struct xdp_md *ctx)
{
	twice(1);
	return XDP_DROP;
}

SEC("tc")
int tc_count(struct __sk_buff *skb)
{
	__u64 sum = 0;
	bpf_loop(10, loop_cb, &sum, 0);
	bump(sum & 7);
	return TC_ACT_OK;
}

SEC("socket")
int sock_filter(struct __sk_buff *skb)
{
	bump(4);
	return skb->len;
}

SEC("cgroup_skb/egress")
int cg_egress(struct __sk_buff *skb)
{
	bump(5);
	return 1;
}

SEC("uprobe/libc.so.6:malloc")
int on_malloc(void *ctx)
{
	bump(6);
	return 0;
}

SEC("uretprobe/libc.so.6:malloc")
int on_malloc_ret(void *ctx)
{
	bpf_tail_call(ctx, &jmp, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int tail_target(void *ctx)
{
	bump(7);
	return 0;
}

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} jmp_init SEC(".maps") = {
	.values = { [1] = (void *)&tail_target },
};

char LICENSE[] SEC("license") = "Dual BSD/GPL";
