// BTF kinds and ELF corners: enum/enum64/float/union/bitfields/anonymous members/type tags/
// decl tags, legacy "maps" section, map of maps, .rodata.str1.1, .data.custom, version section,
// sleepable and xdp.frags sections, a bpf_loop callback used from a subprogram.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

enum color { RED = 1, GREEN = 2, BLUE = -1 };
enum big { SMALL = 1, HUGE = 0x1234567890ULL };
typedef unsigned int counter_t;

struct record {
	enum color c;
	enum big b;
	double ratio;
	float f;
	union {
		__u32 as_u32;
		__u8 bytes[8];
	} u;
	struct {
		__u16 lo;
		__u16 hi;
	};
	unsigned int flag_a : 1, flag_b : 3;
	const volatile counter_t n;
	int __attribute__((btf_type_tag("user"))) *uptr;
	__u64 tagged __attribute__((btf_decl_tag("pybpfc:unit=ns")));
	char name[12];
	__s16 matrix[2][3];
};

struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

struct bpf_map_def SEC("maps") legacy_hash = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 4,
	.value_size = 8,
	.max_entries = 42,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct record);
} records SEC(".maps");

struct inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u32);
} inner_a SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 8);
	__type(key, __u32);
	__array(values, struct inner);
} outer SEC(".maps") = {
	.values = { [2] = &inner_a },
};

typedef struct {
	__u32 a;
	__u16 b;
} sample_t;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} samples SEC(".maps") __attribute__((btf_decl_tag("pybpfc:event=sample_t")));

sample_t last_sample;
int custom_var SEC(".data.custom") = 5;
__u32 _version SEC("version") = 0x060c00;

static int cb(__u32 i, void *ctx)
{
	*(__u32 *)ctx += i;
	return 0;
}

static __attribute__((noinline)) __u32 sum_to(__u32 n)
{
	__u32 s = 0;
	bpf_loop(n, cb, &s, 0);
	return s;
}

__attribute__((btf_decl_tag("pybpfc:entry=yes")))
SEC("xdp.frags")
int frag_prog(struct xdp_md *ctx)
{
	__u32 k = 0, *inner;
	__u64 *v = bpf_map_lookup_elem(&legacy_hash, &k);
	if (v)
		*v += sum_to(5);
	inner = bpf_map_lookup_elem(&outer, &k);
	if (inner)
		custom_var++;
	struct record *r = bpf_map_lookup_elem(&records, &k);
	if (r)
		r->c = GREEN;
	sample_t *e = bpf_ringbuf_reserve(&samples, sizeof(*e), 0);
	if (e) {
		e->a = last_sample.a;
		bpf_ringbuf_submit(e, 0);
	}
	return XDP_PASS;
}

SEC("uprobe.s")
int sleepy(void *ctx)
{
	char buf[16];
	const char *s = "a literal string";
	bpf_probe_read_user_str(buf, sizeof(buf), s);
	return sum_to(3);
}

char LICENSE[] SEC("license") = "GPL";
