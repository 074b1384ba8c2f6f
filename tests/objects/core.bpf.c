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
