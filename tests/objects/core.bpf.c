// CO-RE: a local, deliberately incomplete view of kernel structs. Field offsets here are wrong
// for the running kernel; the relocations in .BTF.ext make them right at load.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct {
	int pid;
	int tgid;
	int no_such_field_in_kernel;
} __attribute__((preserve_access_index));

__u32 seen_tgid;
__u32 has_bogus;
__u32 tgid_size;

SEC("syscall")
int read_tgid(void *ctx)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();

	seen_tgid = BPF_CORE_READ(t, tgid);
	has_bogus = bpf_core_field_exists(t->no_such_field_in_kernel);
	tgid_size = bpf_core_field_size(t->tgid);
	return seen_tgid;
}

char LICENSE[] SEC("license") = "GPL";

/* More relocation kinds; each value is what the running kernel's layout says. */
struct task_struct___flavor {
	int tgid;
	char comm[16];
	unsigned int sched_reset_on_fork : 1;
} __attribute__((preserve_access_index));

struct sock_common {
	unsigned int skc_daddr;   /* inside anonymous union/struct members in the kernel */
	unsigned short skc_family;
} __attribute__((preserve_access_index));

__u64 vals[12];

SEC("syscall")
int core_kinds(void *ctx)
{
	struct task_struct___flavor *t = 0;
	struct sock_common *sc = 0;

	vals[0] = bpf_core_field_offset(t->tgid);
	vals[1] = bpf_core_field_offset(t->comm[3]);
	vals[2] = bpf_core_field_size(t->comm);
	vals[3] = bpf_core_field_offset(sc->skc_daddr);
	vals[4] = bpf_core_field_offset(sc->skc_family);
	vals[5] = __builtin_preserve_field_info(t->sched_reset_on_fork, BPF_FIELD_LSHIFT_U64);
	vals[6] = __builtin_preserve_field_info(t->sched_reset_on_fork, BPF_FIELD_RSHIFT_U64);
	vals[7] = __builtin_preserve_field_info(t->tgid, BPF_FIELD_SIGNED);
	vals[8] = bpf_core_type_exists(struct task_struct);
	vals[9] = bpf_core_type_size(struct sock_common);
	vals[10] = bpf_core_enum_value_exists(enum bpf_map_type, BPF_MAP_TYPE_RINGBUF);
	vals[11] = bpf_core_enum_value(enum bpf_map_type, BPF_MAP_TYPE_RINGBUF);
	return 0;
}
