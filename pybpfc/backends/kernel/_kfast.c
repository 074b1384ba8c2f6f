/* Fast paths of the kernel backend, as a tiny CPython extension (built on first use by
 * pybpfc/backends/kernel/fast.py; everything here has a pure-Python fallback).
 *
 *  - map element operations: one bpf(2) call each, no ctypes marshalling;
 *  - decode: instances of a Struct class read straight from ring buffer records.
 *
 * Errors from the kernel come back as -errno (never raised here): the Python side owns
 * the messages. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stddef.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static long sys_bpf(int cmd, union bpf_attr *attr, unsigned int size)
{
	long r = syscall(__NR_bpf, cmd, attr, size);
	return r < 0 ? -errno : r;
}

/* Size of the map-element part of union bpf_attr (map_fd .. flags). */
#define ELEM_SIZE (offsetof(union bpf_attr, flags) + sizeof(__u64))

/* lookup(fd, key: bytes|None, value_size, flags, cmd) -> bytes | None (ENOENT) | int (-errno) */
static PyObject *k_lookup(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	if (nargs != 5) {
		PyErr_SetString(PyExc_TypeError, "lookup(fd, key, value_size, flags, cmd)");
		return NULL;
	}
	int fd = (int)PyLong_AsLong(args[0]);
	Py_ssize_t vsize = PyLong_AsSsize_t(args[2]);
	unsigned long long flags = PyLong_AsUnsignedLongLong(args[3]);
	int cmd = (int)PyLong_AsLong(args[4]);
	if (PyErr_Occurred())
		return NULL;
	const char *key = NULL;
	if (args[1] != Py_None) {
		if (!PyBytes_Check(args[1])) {
			PyErr_SetString(PyExc_TypeError, "key must be bytes");
			return NULL;
		}
		key = PyBytes_AS_STRING(args[1]);
	}
	PyObject *out = PyBytes_FromStringAndSize(NULL, vsize > 0 ? vsize : 1);
	if (!out)
		return NULL;
	union bpf_attr a;
	memset(&a, 0, ELEM_SIZE);
	a.map_fd = fd;
	a.key = (__u64)(unsigned long)key;
	a.value = (__u64)(unsigned long)PyBytes_AS_STRING(out);
	a.flags = flags;
	long r = sys_bpf(cmd, &a, ELEM_SIZE);
	if (r < 0) {
		Py_DECREF(out);
		if (r == -ENOENT)
			Py_RETURN_NONE;
		return PyLong_FromLong(r);
	}
	if (vsize <= 0) {
		Py_DECREF(out);
		return PyBytes_FromStringAndSize(NULL, 0);
	}
	return out;
}

/* update(fd, key|None, value, flags) -> 0 | -errno */
static PyObject *k_update(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	if (nargs != 4 || (args[1] != Py_None && !PyBytes_Check(args[1])) || !PyBytes_Check(args[2])) {
		PyErr_SetString(PyExc_TypeError, "update(fd, key: bytes|None, value: bytes, flags)");
		return NULL;
	}
	int fd = (int)PyLong_AsLong(args[0]);
	unsigned long long flags = PyLong_AsUnsignedLongLong(args[3]);
	if (PyErr_Occurred())
		return NULL;
	union bpf_attr a;
	memset(&a, 0, ELEM_SIZE);
	a.map_fd = fd;
	a.key = args[1] == Py_None ? 0 : (__u64)(unsigned long)PyBytes_AS_STRING(args[1]);
	a.value = (__u64)(unsigned long)PyBytes_AS_STRING(args[2]);
	a.flags = flags;
	return PyLong_FromLong(sys_bpf(BPF_MAP_UPDATE_ELEM, &a, ELEM_SIZE));
}

/* delete(fd, key) -> 0 | -errno */
static PyObject *k_delete(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	if (nargs != 2 || !PyBytes_Check(args[1])) {
		PyErr_SetString(PyExc_TypeError, "delete(fd, key: bytes)");
		return NULL;
	}
	int fd = (int)PyLong_AsLong(args[0]);
	if (PyErr_Occurred())
		return NULL;
	union bpf_attr a;
	memset(&a, 0, ELEM_SIZE);
	a.map_fd = fd;
	a.key = (__u64)(unsigned long)PyBytes_AS_STRING(args[1]);
	return PyLong_FromLong(sys_bpf(BPF_MAP_DELETE_ELEM, &a, ELEM_SIZE));
}

/* next_key(fd, key|None, key_size) -> bytes | None (end) | int (-errno) */
static PyObject *k_next_key(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	if (nargs != 3 || (args[1] != Py_None && !PyBytes_Check(args[1]))) {
		PyErr_SetString(PyExc_TypeError, "next_key(fd, key: bytes|None, key_size)");
		return NULL;
	}
	int fd = (int)PyLong_AsLong(args[0]);
	Py_ssize_t ksize = PyLong_AsSsize_t(args[2]);
	if (PyErr_Occurred())
		return NULL;
	PyObject *out = PyBytes_FromStringAndSize(NULL, ksize > 0 ? ksize : 1);
	if (!out)
		return NULL;
	union bpf_attr a;
	memset(&a, 0, ELEM_SIZE);
	a.map_fd = fd;
	a.key = args[1] == Py_None ? 0 : (__u64)(unsigned long)PyBytes_AS_STRING(args[1]);
	a.next_key = (__u64)(unsigned long)PyBytes_AS_STRING(out);
	long r = sys_bpf(BPF_MAP_GET_NEXT_KEY, &a, ELEM_SIZE);
	if (r < 0) {
		Py_DECREF(out);
		if (r == -ENOENT)
			Py_RETURN_NONE;
		return PyLong_FromLong(r);
	}
	return out;
}

/* decode(cls, names: tuple[str], kinds: bytes, offsets: tuple[int], sizes: tuple[int],
 *        buf, n, stride, hdr) -> list of cls instances read straight from n records laid out
 * every `stride` bytes of `buf`, fields at hdr + offset. kinds: struct format letters of
 * little-endian integers (bBhHiIqQ), '?' for bool, 's' for a NUL-padded string (bytes up to
 * the first NUL). */
static PyObject *field_value(char kind, const unsigned char *p, Py_ssize_t size)
{
	switch (kind) {
	case 'B': return PyLong_FromUnsignedLong(*p);
	case 'b': return PyLong_FromLong(*(const signed char *)p);
	case 'H': { unsigned short v; memcpy(&v, p, 2); return PyLong_FromUnsignedLong(v); }
	case 'h': { short v; memcpy(&v, p, 2); return PyLong_FromLong(v); }
	case 'I': { unsigned int v; memcpy(&v, p, 4); return PyLong_FromUnsignedLong(v); }
	case 'i': { int v; memcpy(&v, p, 4); return PyLong_FromLong(v); }
	case 'Q': { unsigned long long v; memcpy(&v, p, 8); return PyLong_FromUnsignedLongLong(v); }
	case 'q': { long long v; memcpy(&v, p, 8); return PyLong_FromLongLong(v); }
	case '?': return PyBool_FromLong(*p != 0);
	case 's': {
		const unsigned char *z = memchr(p, 0, size);
		return PyBytes_FromStringAndSize((const char *)p, z ? z - p : size);
	}
	}
	PyErr_Format(PyExc_ValueError, "unknown field kind %c", kind);
	return NULL;
}

static PyObject *k_decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	if (nargs != 9 || !PyType_Check(args[0]) || !PyTuple_Check(args[1]) || !PyBytes_Check(args[2]) ||
	    !PyTuple_Check(args[3]) || !PyTuple_Check(args[4])) {
		PyErr_SetString(PyExc_TypeError,
				"decode(cls, names, kinds, offsets, sizes, buf, n, stride, hdr)");
		return NULL;
	}
	PyTypeObject *cls = (PyTypeObject *)args[0];
	PyObject *names = args[1];
	const char *kinds = PyBytes_AS_STRING(args[2]);
	Py_ssize_t nf = PyTuple_GET_SIZE(names);
	Py_ssize_t n = PyLong_AsSsize_t(args[6]), stride = PyLong_AsSsize_t(args[7]),
		   hdr = PyLong_AsSsize_t(args[8]);
	if (PyErr_Occurred())
		return NULL;
	if (PyBytes_GET_SIZE(args[2]) != nf || PyTuple_GET_SIZE(args[3]) != nf ||
	    PyTuple_GET_SIZE(args[4]) != nf || nf > 64) {
		PyErr_SetString(PyExc_ValueError, "names, kinds, offsets and sizes differ in length");
		return NULL;
	}
	Py_ssize_t offs[64], sizes[64];
	for (Py_ssize_t f = 0; f < nf; f++) {
		offs[f] = PyLong_AsSsize_t(PyTuple_GET_ITEM(args[3], f));
		sizes[f] = PyLong_AsSsize_t(PyTuple_GET_ITEM(args[4], f));
		if (offs[f] < 0 || sizes[f] < 0 || hdr + offs[f] + sizes[f] > stride) {
			if (!PyErr_Occurred())
				PyErr_SetString(PyExc_ValueError, "field outside the record");
			return NULL;
		}
	}
	Py_buffer view;
	if (PyObject_GetBuffer(args[5], &view, PyBUF_SIMPLE) < 0)
		return NULL;
	PyObject *out = NULL, *empty = NULL;
	if (n < 0 || stride <= 0 || n * stride > view.len) {
		PyErr_SetString(PyExc_ValueError, "buffer shorter than n records");
		goto done;
	}
	out = PyList_New(n);
	empty = PyTuple_New(0);
	if (!out || !empty)
		goto fail;
	for (Py_ssize_t i = 0; i < n; i++) {
		const unsigned char *rec = (const unsigned char *)view.buf + i * stride + hdr;
		PyObject *o = PyBaseObject_Type.tp_new(cls, empty, NULL);
		if (!o)
			goto fail;
		PyList_SET_ITEM(out, i, o);
		for (Py_ssize_t f = 0; f < nf; f++) {
			PyObject *v = field_value(kinds[f], rec + offs[f], sizes[f]);
			if (!v || PyObject_GenericSetAttr(o, PyTuple_GET_ITEM(names, f), v) < 0) {
				Py_XDECREF(v);
				goto fail;
			}
			Py_DECREF(v);
		}
	}
	goto done;
fail:
	Py_CLEAR(out);
done:
	Py_XDECREF(empty);
	PyBuffer_Release(&view);
	return out;
}

/* -- element primitives of Ops (below): one bpf(2) call on a map fd */
#define OPS_TYPE_NAME "_pybpfc_kfast.Ops"
typedef struct {
	PyObject_HEAD
	int fd;
	int live;
	Py_ssize_t ks, vs;
	int kint, ksg, vint, vsg;
	PyObject *kenc, *venc, *vdec, *fail, *slow;
} OpsObject;

static int prim_setup(OpsObject *s, PyObject *handle)
{
	s->fd = (int)PyLong_AsLong(handle);
	return PyErr_Occurred() ? -1 : 0;
}

static inline int prim_elem(OpsObject *s, int cmd, const char *key, const char *val, unsigned long long flags)
{
	union bpf_attr a;
	memset(&a, 0, ELEM_SIZE);
	a.map_fd = s->fd;
	a.key = (__u64)(unsigned long)key;
	a.value = (__u64)(unsigned long)val;
	a.flags = flags;
	return (int)sys_bpf(cmd, &a, ELEM_SIZE);
}

static inline int prim_lookup(OpsObject *s, const char *key, char *val)
{
	return prim_elem(s, BPF_MAP_LOOKUP_ELEM, key, val, 0);
}

static inline int prim_update(OpsObject *s, const char *key, const char *val, unsigned long long flags)
{
	return prim_elem(s, BPF_MAP_UPDATE_ELEM, key, val, flags);
}

static inline int prim_delete(OpsObject *s, const char *key)
{
	return prim_elem(s, BPF_MAP_DELETE_ELEM, key, NULL, 0);
}

/* ---- Ops: a map's container operations (m[k], m[k] = v, del m[k], k in m, m.get) in C ----
 * Chosen once per map by pybpfc/collection.py. Integer keys/values of the declared width are
 * packed and unpacked here; any other key or value goes through the Python codec callables,
 * and anything unusual (encoded size mismatch, map closed) runs the whole operation through
 * the generic Python implementation (`slow`), so behaviour and error messages stay those of
 * the generic layer. This block is the same in _kfast.c and _usfast.c; only the three
 * element primitives above it differ. */
enum { SLOW_GETITEM, SLOW_GET, SLOW_SETITEM, SLOW_DELITEM, SLOW_CONTAINS, SLOW_N };

/* Packs an exact int into `size` little-endian bytes; 0 (no exception) when it is not an exact
 * int or is outside the type's range (the Python codec then decides: wrap or error). */
static int pack_int(PyObject *o, int size, int sgn, unsigned char *buf)
{
	if (!PyLong_CheckExact(o))
		return 0;
	int ovf;
	unsigned long long u;
	long long v = PyLong_AsLongLongAndOverflow(o, &ovf);
	if (ovf) {
		if (ovf < 0 || sgn || size != 8)
			return 0;
		u = PyLong_AsUnsignedLongLong(o);
		if (u == (unsigned long long)-1 && PyErr_Occurred()) {
			PyErr_Clear();
			return 0;
		}
	} else {
		if (v == -1 && PyErr_Occurred()) {
			PyErr_Clear();
			return 0;
		}
		if (sgn) {
			if (size < 8) {
				long long lim = 1LL << (size * 8 - 1);
				if (v < -lim || v >= lim)
					return 0;
			}
		} else if (v < 0 || (size < 8 && v >= (1LL << (size * 8)))) {
			return 0;
		}
		u = (unsigned long long)v;
	}
	for (int i = 0; i < size; i++)
		buf[i] = (unsigned char)(u >> (8 * i));
	return 1;
}

static PyObject *unpack_int(const unsigned char *p, int size, int sgn)
{
	unsigned long long u = 0;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	switch (size) { /* constant-size copies compile to single loads */
	case 8: memcpy(&u, p, 8); break;
	case 4: { uint32_t x; memcpy(&x, p, 4); u = x; break; }
	case 2: { uint16_t x; memcpy(&x, p, 2); u = x; break; }
	default: u = p[0];
	}
#else
	for (int i = 0; i < size; i++)
		u |= (unsigned long long)p[i] << (8 * i);
#endif
	if (sgn && size < 8 && (u >> (size * 8 - 1)) & 1)
		u |= ~0ULL << (size * 8);
	return sgn ? PyLong_FromLongLong((long long)u) : PyLong_FromUnsignedLongLong(u);
}

static int ops_traverse(OpsObject *s, visitproc visit, void *arg)
{
	Py_VISIT(s->kenc);
	Py_VISIT(s->venc);
	Py_VISIT(s->vdec);
	Py_VISIT(s->fail);
	Py_VISIT(s->slow);
	return 0;
}

static int ops_clear(OpsObject *s)
{
	s->live = 0;
	Py_CLEAR(s->kenc);
	Py_CLEAR(s->venc);
	Py_CLEAR(s->vdec);
	Py_CLEAR(s->fail);
	Py_CLEAR(s->slow);
	return 0;
}

static void ops_dealloc(OpsObject *s)
{
	PyObject_GC_UnTrack(s);
	ops_clear(s);
	Py_TYPE(s)->tp_free((PyObject *)s);
}

/* Ops(handle, key_size, value_size, kint, ksigned, vint, vsigned, kenc, venc, vdec, fail, slow)
 * kint/vint: integer width (1, 2, 4, 8) or 0 for "use kenc / venc+vdec"; fail(r, what) builds
 * the exception for -errno r; slow: (getitem, get, setitem, delitem, contains) in Python. */
static int ops_init(OpsObject *s, PyObject *args, PyObject *kw)
{
	PyObject *handle, *kenc, *venc, *vdec, *fail, *slow;
	Py_ssize_t ks, vs;
	int kint, ksg, vint, vsg;
	if (!PyArg_ParseTuple(args, "OnniiiiOOOOO!", &handle, &ks, &vs, &kint, &ksg, &vint, &vsg, &kenc, &venc,
			      &vdec, &fail, &PyTuple_Type, &slow))
		return -1;
	if (PyTuple_GET_SIZE(slow) != SLOW_N || (kint && (kint > 8 || kint != ks)) || (vint && (vint > 8 || vint != vs))) {
		PyErr_SetString(PyExc_ValueError, "Ops: bad integer widths or slow tuple");
		return -1;
	}
	if (prim_setup(s, handle) < 0)
		return -1;
	s->ks = ks;
	s->vs = vs;
	s->kint = kint;
	s->ksg = ksg;
	s->vint = vint;
	s->vsg = vsg;
	Py_INCREF(kenc);
	Py_XSETREF(s->kenc, kenc);
	Py_INCREF(venc);
	Py_XSETREF(s->venc, venc);
	Py_INCREF(vdec);
	Py_XSETREF(s->vdec, vdec);
	Py_INCREF(fail);
	Py_XSETREF(s->fail, fail);
	Py_INCREF(slow);
	Py_XSETREF(s->slow, slow);
	s->live = 1;
	return 0;
}

static PyObject *ops_slow(OpsObject *s, int which, PyObject *const *args, Py_ssize_t nargs)
{
	if (!s->slow) {
		PyErr_SetString(PyExc_RuntimeError, "map operations were cleared");
		return NULL;
	}
	return PyObject_Vectorcall(PyTuple_GET_ITEM(s->slow, which), args, nargs, NULL);
}

static PyObject *ops_raise(OpsObject *s, int r, const char *what)
{
	PyObject *exc = PyObject_CallFunction(s->fail, "is", r, what);
	if (exc) {
		PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
		Py_DECREF(exc);
	}
	return NULL;
}

static void key_error(PyObject *k)
{
	/* KeyError(k) itself: SetObject would unpack a tuple key into several arguments */
	PyObject *e = PyObject_CallOneArg(PyExc_KeyError, k);
	if (e) {
		PyErr_SetObject(PyExc_KeyError, e);
		Py_DECREF(e);
	}
}

/* The key's bytes: packed into kbuf, or encoded by kenc (*hold owns the bytes). NULL with
 * *hold == NULL and no exception: the encoded size is wrong (the slow path reports it). */
static const char *ops_key(OpsObject *s, PyObject *k, unsigned char *kbuf, PyObject **hold)
{
	*hold = NULL;
	if (s->kint && pack_int(k, s->kint, s->ksg, kbuf))
		return (const char *)kbuf;
	PyObject *b = PyObject_CallOneArg(s->kenc, k);
	if (!b)
		return NULL;
	if (!PyBytes_CheckExact(b) || PyBytes_GET_SIZE(b) != s->ks) {
		Py_DECREF(b);
		return NULL;
	}
	*hold = b;
	return PyBytes_AS_STRING(b);
}

/* lookup; 1 found (*out, unless NULL: the decoded value), 0 absent, -1 exception, -2 go slow */
static int ops_find(OpsObject *s, PyObject *k, PyObject **out)
{
	unsigned char kbuf[8], vbuf[8];
	PyObject *hold, *vb = NULL;
	if (!s->live)
		return -2;
	const char *key = ops_key(s, k, kbuf, &hold);
	if (!key)
		return PyErr_Occurred() ? -1 : -2;
	char *val;
	if (s->vint) {
		val = (char *)vbuf;
	} else {
		vb = PyBytes_FromStringAndSize(NULL, s->vs > 0 ? s->vs : 1);
		if (!vb) {
			Py_XDECREF(hold);
			return -1;
		}
		val = PyBytes_AS_STRING(vb);
	}
	int r = prim_lookup(s, key, val);
	Py_XDECREF(hold);
	if (r < 0) {
		Py_XDECREF(vb);
		if (r == -ENOENT)
			return 0;
		ops_raise(s, r, "lookup");
		return -1;
	}
	if (!out) { /* presence only: nothing to decode */
		Py_XDECREF(vb);
		return 1;
	}
	if (s->vint) {
		*out = unpack_int(vbuf, s->vint, s->vsg);
	} else {
		if (s->vs <= 0)
			Py_SET_SIZE(vb, 0);
		*out = PyObject_CallOneArg(s->vdec, vb);
		Py_DECREF(vb);
	}
	return *out ? 1 : -1;
}

static PyObject *ops_getitem(OpsObject *s, PyObject *k)
{
	PyObject *v = NULL;
	switch (ops_find(s, k, &v)) {
	case 1:
		return v;
	case 0:
		key_error(k);
		return NULL;
	case -2:
		return ops_slow(s, SLOW_GETITEM, &k, 1);
	}
	return NULL;
}

static PyObject *ops_get(OpsObject *s, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
	if (kwnames && PyTuple_GET_SIZE(kwnames)) { /* get(k, default=d): the Python method sorts it out */
		if (!s->slow) {
			PyErr_SetString(PyExc_RuntimeError, "map operations were cleared");
			return NULL;
		}
		return PyObject_Vectorcall(PyTuple_GET_ITEM(s->slow, SLOW_GET), args, nargs, kwnames);
	}
	if (nargs < 1 || nargs > 2)
		return ops_slow(s, SLOW_GET, args, nargs);
	PyObject *v = NULL;
	switch (ops_find(s, args[0], &v)) {
	case 1:
		return v;
	case 0:
		v = nargs == 2 ? args[1] : Py_None;
		Py_INCREF(v);
		return v;
	case -2:
		return ops_slow(s, SLOW_GET, args, nargs);
	}
	return NULL;
}

static PyObject *ops_contains(OpsObject *s, PyObject *k)
{
	int r = s->live ? ops_find(s, k, NULL) : -2;
	if (r == 1)
		Py_RETURN_TRUE;
	if (r == 0)
		Py_RETURN_FALSE;
	return r == -2 ? ops_slow(s, SLOW_CONTAINS, &k, 1) : NULL;
}

static PyObject *ops_setitem(OpsObject *s, PyObject *const *args, Py_ssize_t nargs)
{
	unsigned char kbuf[8], vbuf[8];
	PyObject *hk, *hv = NULL;
	if (nargs != 2 || !s->live)
		return ops_slow(s, SLOW_SETITEM, args, nargs);
	const char *key = ops_key(s, args[0], kbuf, &hk);
	if (!key)
		return PyErr_Occurred() ? NULL : ops_slow(s, SLOW_SETITEM, args, nargs);
	const char *val;
	if (s->vint && pack_int(args[1], s->vint, s->vsg, vbuf)) {
		val = (const char *)vbuf;
	} else {
		hv = PyObject_CallOneArg(s->venc, args[1]);
		if (!hv || !PyBytes_CheckExact(hv) || PyBytes_GET_SIZE(hv) != s->vs) {
			Py_XDECREF(hk);
			if (!hv)
				return NULL;
			Py_DECREF(hv);
			return ops_slow(s, SLOW_SETITEM, args, nargs);
		}
		val = PyBytes_AS_STRING(hv);
	}
	int r = prim_update(s, key, val, 0);
	Py_XDECREF(hk);
	Py_XDECREF(hv);
	if (r < 0)
		return ops_raise(s, r, "update");
	Py_RETURN_NONE;
}

static PyObject *ops_delitem(OpsObject *s, PyObject *k)
{
	unsigned char kbuf[8];
	PyObject *hk;
	if (!s->live)
		return ops_slow(s, SLOW_DELITEM, &k, 1);
	const char *key = ops_key(s, k, kbuf, &hk);
	if (!key)
		return PyErr_Occurred() ? NULL : ops_slow(s, SLOW_DELITEM, &k, 1);
	int r = prim_delete(s, key);
	Py_XDECREF(hk);
	if (r == -ENOENT) {
		key_error(k);
		return NULL;
	}
	if (r < 0)
		return ops_raise(s, r, "delete");
	Py_RETURN_NONE;
}

/* The map was closed: every later operation takes the slow path (which reports it). */
static PyObject *ops_invalidate(OpsObject *s, PyObject *unused)
{
	s->live = 0;
	Py_RETURN_NONE;
}

static PyMethodDef ops_methods[] = {
	{"getitem", (PyCFunction)ops_getitem, METH_O, NULL},
	{"get", (PyCFunction)(void (*)(void))ops_get, METH_FASTCALL | METH_KEYWORDS, NULL},
	{"setitem", (PyCFunction)(void (*)(void))ops_setitem, METH_FASTCALL, NULL},
	{"delitem", (PyCFunction)ops_delitem, METH_O, NULL},
	{"contains", (PyCFunction)ops_contains, METH_O, NULL},
	{"invalidate", (PyCFunction)ops_invalidate, METH_NOARGS, NULL},
	{NULL, NULL, 0, NULL},
};

static PyTypeObject OpsType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = OPS_TYPE_NAME,
	.tp_basicsize = sizeof(OpsObject),
	.tp_dealloc = (destructor)ops_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_traverse = (traverseproc)ops_traverse,
	.tp_clear = (inquiry)ops_clear,
	.tp_methods = ops_methods,
	.tp_init = (initproc)ops_init,
	.tp_new = PyType_GenericNew,
};
/* ---- end of Ops ---- */

static PyMethodDef methods[] = {
	{"decode", (PyCFunction)(void (*)(void))k_decode, METH_FASTCALL, NULL},
	{"lookup", (PyCFunction)(void (*)(void))k_lookup, METH_FASTCALL, NULL},
	{"update", (PyCFunction)(void (*)(void))k_update, METH_FASTCALL, NULL},
	{"delete", (PyCFunction)(void (*)(void))k_delete, METH_FASTCALL, NULL},
	{"next_key", (PyCFunction)(void (*)(void))k_next_key, METH_FASTCALL, NULL},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_pybpfc_kfast", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pybpfc_kfast(void)
{
	if (PyType_Ready(&OpsType) < 0)
		return NULL;
	PyObject *m = PyModule_Create(&mod);
	if (!m)
		return NULL;
	Py_INCREF(&OpsType);
	if (PyModule_AddObject(m, "Ops", (PyObject *)&OpsType) < 0) {
		Py_DECREF(&OpsType);
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
