// Extern variables and functions: __kconfig values, a typed __ksym (per-CPU kernel variable),
// kfuncs, a weak extern. The reader keeps them as symbolic relocations ("kconfig", "ksym",
// "kfunc"); their BTF needs libbpf's .ksyms/.kconfig DATASEC fix-up before the kernel takes it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern int LINUX_KERNEL_VERSION __kconfig;
extern int CONFIG_HZ __kconfig;
extern _Bool CONFIG_BPF_SYSCALL __kconfig;
extern int CONFIG_PYBPFC_NOT_THERE __kconfig __weak;
extern const int bpf_prog_active __ksym;
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;

__u64 out[5];

SEC("syscall")
int uses_externs(void *ctx)
{
	bpf_rcu_read_lock();
	bpf_rcu_read_unlock();
	out[0] = LINUX_KERNEL_VERSION;
	out[1] = CONFIG_HZ;
	out[2] = CONFIG_BPF_SYSCALL;
	out[3] = CONFIG_PYBPFC_NOT_THERE;
	return 0;
}

/* Separate program: the kernel finds a typed ksym's address through kallsyms, which lacks
 * data symbols without CONFIG_KALLSYMS_ALL. */
SEC("syscall")
int uses_ksym(void *ctx)
{
	const int *active = bpf_this_cpu_ptr(&bpf_prog_active);

	out[4] = *active + 100;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
