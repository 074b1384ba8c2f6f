/* Fast paths of the kernel backend, as a tiny CPython extension (built on first use by
 * pybpfc/backends/kernel/fast.py; everything here has a pure-Python fallback).
 *
 *  - map element operations: one bpf(2) call each, no ctypes marshalling;
 *  - make_objects: instances of a Struct class from the tuples struct.iter_unpack produced.
 *
 * Errors from the kernel come back as -errno (never raised here): the Python side owns
 * the messages. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stddef.h>
#include <linux/bpf.h>
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
	if (vsize <= 0)
		Py_SET_SIZE(out, 0);
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

/* make_objects(cls, names: tuple[str], rows: iterable of tuples) -> list of cls instances
 * with attribute names[i] = row[i], created without calling __init__. */
static PyObject *k_make_objects(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	if (nargs != 3 || !PyType_Check(args[0]) || !PyTuple_Check(args[1])) {
		PyErr_SetString(PyExc_TypeError, "make_objects(cls, names: tuple, rows)");
		return NULL;
	}
	PyTypeObject *cls = (PyTypeObject *)args[0];
	PyObject *names = args[1];
	Py_ssize_t nf = PyTuple_GET_SIZE(names);
	PyObject *it = PyObject_GetIter(args[2]);
	if (!it)
		return NULL;
	PyObject *out = PyList_New(0);
	PyObject *empty = PyTuple_New(0);
	PyObject *row;
	if (!out || !empty)
		goto fail;
	while ((row = PyIter_Next(it)) != NULL) {
		if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) < nf) {
			Py_DECREF(row);
			PyErr_SetString(PyExc_ValueError, "row shorter than the field list");
			goto fail;
		}
		PyObject *o = PyBaseObject_Type.tp_new(cls, empty, NULL);
		if (!o) {
			Py_DECREF(row);
			goto fail;
		}
		for (Py_ssize_t i = 0; i < nf; i++) {
			if (PyObject_GenericSetAttr(o, PyTuple_GET_ITEM(names, i), PyTuple_GET_ITEM(row, i)) < 0) {
				Py_DECREF(o);
				Py_DECREF(row);
				goto fail;
			}
		}
		Py_DECREF(row);
		int e = PyList_Append(out, o);
		Py_DECREF(o);
		if (e < 0)
			goto fail;
	}
	if (PyErr_Occurred())
		goto fail;
	Py_DECREF(it);
	Py_DECREF(empty);
	return out;
fail:
	Py_XDECREF(out);
	Py_XDECREF(empty);
	Py_DECREF(it);
	return NULL;
}

static PyMethodDef methods[] = {
	{"lookup", (PyCFunction)(void (*)(void))k_lookup, METH_FASTCALL, NULL},
	{"update", (PyCFunction)(void (*)(void))k_update, METH_FASTCALL, NULL},
	{"delete", (PyCFunction)(void (*)(void))k_delete, METH_FASTCALL, NULL},
	{"next_key", (PyCFunction)(void (*)(void))k_next_key, METH_FASTCALL, NULL},
	{"make_objects", (PyCFunction)(void (*)(void))k_make_objects, METH_FASTCALL, NULL},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_pybpfc_kfast", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pybpfc_kfast(void)
{
	return PyModule_Create(&mod);
}
