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

#include "map_ops.h"  /* OpsType: the container operations over the primitives above */

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
