// struct_ops maps are not modelled: the reader must refuse the object, not drop the map.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct foo_ops { int (*init)(void); char name[16]; };
SEC("struct_ops/init") int my_init(void) { return 0; }
SEC(".struct_ops.link") struct foo_ops my_ops = { .init = (void *)my_init, .name = "x" };
char LICENSE[] SEC("license") = "GPL";
