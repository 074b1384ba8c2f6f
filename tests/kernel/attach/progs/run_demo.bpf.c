// For the `pybpfc run` tests: getppid() calls per process, one ring buffer event per call,
// a log2 histogram of the per-process sequence number, and a bpf_printk line.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct event {
	__u32 pid;
	__u32 seq;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} events SEC(".maps") __attribute__((btf_decl_tag("pybpfc:event=event")));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 32);
	__type(key, __u32);
	__type(value, __u64);
} seqhist SEC(".maps") __attribute__((btf_decl_tag("pybpfc:histogram=log2")));

__u64 total = 0;

// A function taking struct event puts the struct into BTF for the pybpfc:event tag.
static __attribute__((noinline)) int fill(struct event *e, __u32 pid, __u64 seq)
{
	e->pid = pid;
	e->seq = seq;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 one = 1, seq = 1, v;
	__u64 *n = bpf_map_lookup_elem(&calls, &pid);
	__u32 b = 0;

	if (n)
		seq = __sync_fetch_and_add(n, 1) + 1;
	else
		bpf_map_update_elem(&calls, &pid, &one, BPF_NOEXIST);
	__sync_fetch_and_add(&total, 1);

	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		fill(e, pid, seq);
		bpf_ringbuf_submit(e, 0);
	}
	for (v = seq; v && b < 31; v >>= 1)
		b++;
	__u64 *h = bpf_map_lookup_elem(&seqhist, &b);
	if (h)
		__sync_fetch_and_add(h, 1);
	bpf_printk("pybpfc-run-demo getppid from %d", pid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
