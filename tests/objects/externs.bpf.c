// Extern variables and functions (.kconfig, .ksyms): the reader must refuse them with a clear
// message; their BTF needs libbpf's DATASEC fix-up before the kernel accepts it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern int LINUX_KERNEL_VERSION __kconfig;
extern const void bpf_prog_active __ksym;
extern void bpf_rcu_read_lock(void) __ksym;

SEC("tracepoint/syscalls/sys_enter_getpid")
int uses_externs(void *ctx)
{
	bpf_rcu_read_lock();
	if (LINUX_KERNEL_VERSION > 0)
		return (long)&bpf_prog_active & 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
