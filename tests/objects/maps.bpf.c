// Every common map type, struct keys/values, global data, a tracepoint program.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
};

struct flow_stats {
	__u64 packets;
	__u64 bytes;
	char comm[16];
	__s32 last_err;
	__u16 ports[4];
};

struct event {
	__u32 pid;
	__u64 ts;
	char comm[16];
};

struct lpm_key {
	__u32 prefixlen;
	__u8 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct flow_key);
	__type(value, struct flow_stats);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __s64);
} pcpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 128);
	__type(key, __u64);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
} lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__uint(key_size, 4);
	__uint(value_size, 8);
} pcpu_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps") __attribute__((btf_decl_tag("pybpfc:event=event")));

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 32);
	__type(value, __u32);
} queue SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 255);
	__type(key, struct lpm_key);
	__type(value, __u32);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} lpm SEC(".maps") __attribute__((btf_decl_tag("pybpfc:histogram=log2")));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pinned SEC(".maps");

const volatile __u32 target_pid = 0;
const volatile __u64 min_bytes = 100;
const char greeting[] = "hello";
__u64 total = 7;
__u32 seen[4] = {1, 2, 3, 4};
__u64 drops;
struct event last_event;

SEC("tracepoint/syscalls/sys_enter_getpid")
int on_getpid(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u32 k = 0;
	__u64 *v;
	struct event *e;

	if (target_pid && pid != target_pid)
		return 0;
	v = bpf_map_lookup_elem(&counters, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
	total += min_bytes;
	drops++;
	seen[pid & 3]++;
	last_event.pid = pid;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		e->pid = pid;
		e->ts = bpf_ktime_get_ns();
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		bpf_ringbuf_submit(e, 0);
	}
	bpf_printk("%s %d", greeting, pid);
	__u32 qv = pid;
	bpf_map_push_elem(&queue, &qv, 0);
	struct flow_key fk = {};
	struct flow_stats fs = {};
	fk.saddr = pid;
	bpf_map_update_elem(&flows, &fk, &fs, BPF_ANY);
	__u64 lk = pid;
	bpf_map_update_elem(&lru, &lk, &k, BPF_ANY);
	__s64 *pv = bpf_map_lookup_elem(&pcpu, &k);
	if (pv)
		*pv += 1;
	bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, &qv, sizeof(qv));
	struct lpm_key lkey = {32, {127, 0, 0, 1}};
	bpf_map_lookup_elem(&lpm, &lkey);
	bpf_map_lookup_elem(&pinned, &k);
	bpf_map_lookup_elem(&pcpu_hash, &k);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
