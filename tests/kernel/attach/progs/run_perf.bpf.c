// For `pybpfc run` with two event streams: every getppid() goes to a perf buffer and a ring buffer.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct sample {
	__u32 pid;
	__u32 nr;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} pevents SEC(".maps") __attribute__((btf_decl_tag("pybpfc:event=sample")));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} revents SEC(".maps") __attribute__((btf_decl_tag("pybpfc:event=sample")));

__u64 seen = 0;

static __attribute__((noinline)) int fill(struct sample *s, __u32 nr)
{
	s->pid = bpf_get_current_pid_tgid() >> 32;
	s->nr = nr;
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int both(void *ctx)
{
	struct sample s;
	__u32 nr = __sync_fetch_and_add(&seen, 1);

	fill(&s, nr);
	bpf_perf_event_output(ctx, &pevents, BPF_F_CURRENT_CPU, &s, sizeof(s));
	bpf_ringbuf_output(&revents, &s, sizeof(s), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
