// Linking corners: a global (non-static) subprogram in .text, a static function placed in the
// program's own section (a call without relocation), bpf_for_each_map_elem and bpf_loop
// callbacks, and a callback that calls a subprogram. Return values encode what ran.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

struct bpf_map;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} vals SEC(".maps");

__attribute__((noinline)) int global_len(struct __sk_buff *skb)
{
	return skb ? skb->len : 0;
}

static __attribute__((noinline)) __u64 triple(__u64 x)
{
	return x * 3;
}

static __attribute__((noinline, section("tc"))) int in_section(int x)
{
	return x + 1000;
}

static long sum_cb(struct bpf_map *map, __u32 *key, __u64 *val, void *ctx)
{
	*(__u64 *)ctx += triple(*val);
	return 0;
}

static int loop_cb(__u32 i, void *ctx)
{
	*(__u64 *)ctx += i;
	return 0;
}

SEC("tc")
int link_all(struct __sk_buff *skb)
{
	__u64 sum = 0, n = 0;

#pragma unroll
	for (__u32 k = 0; k < 4; k++) {
		__u32 key = k;
		__u64 v = k + 1;
		bpf_map_update_elem(&vals, &key, &v, BPF_ANY);
	}
	bpf_for_each_map_elem(&vals, sum_cb, &sum, 0);   /* 3 * (1+2+3+4) = 30 */
	bpf_loop(5, loop_cb, &n, 0);                     /* 0+1+2+3+4 = 10 */
	return in_section(sum * 100 + n) + global_len(skb) * 100000;
}

char LICENSE[] SEC("license") = "GPL";
