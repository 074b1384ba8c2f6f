/* Fast path of userspace map element operations from Python: a tiny CPython extension that
 * calls the store's C functions directly (addresses handed over once by maps.py), so one
 * element operation costs one C call instead of a libffi call plus buffer marshalling.
 * Built on first use by pybpfc/backends/userspace/fast.py; maps.py falls back to cffi.
 * Errors come back as -errno ints: the Python side owns the messages. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>

typedef int (*lookup_fn)(void *m, const void *key, void *value);
typedef int (*update_fn)(void *m, const void *key, const void *value, uint64_t flags);
typedef int (*delete_fn)(void *m, const void *key);
typedef int (*next_fn)(void *m, const void *key, void *next);

static lookup_fn f_lookup;
static update_fn f_update;
static delete_fn f_delete;
static next_fn f_next;

/* init(lookup_addr, update_addr, delete_addr, next_key_addr) */
static PyObject *u_init(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "init(lookup, update, delete, next_key)");
        return NULL;
    }
    f_next = (next_fn)PyLong_AsVoidPtr(args[3]);
    f_lookup = (lookup_fn)PyLong_AsVoidPtr(args[0]);
    f_update = (update_fn)PyLong_AsVoidPtr(args[1]);
    f_delete = (delete_fn)PyLong_AsVoidPtr(args[2]);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static int ready(void)
{
    if (!f_lookup || !f_update || !f_delete || !f_next) {
        PyErr_SetString(PyExc_RuntimeError, "_usfast.init() was not called");
        return 0;
    }
    return 1;
}

/* lookup(map_addr, key: bytes, value_size) -> bytes | None (ENOENT) | int (-errno) */
static PyObject *u_lookup(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "lookup(map, key: bytes, value_size)");
        return NULL;
    }
    void *m = PyLong_AsVoidPtr(args[0]);
    Py_ssize_t vs = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred() || !ready())
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, vs > 0 ? vs : 1);
    if (!out)
        return NULL;
    int r = f_lookup(m, PyBytes_AS_STRING(args[1]), PyBytes_AS_STRING(out));
    if (r < 0) {
        Py_DECREF(out);
        if (r == -ENOENT)
            Py_RETURN_NONE;
        return PyLong_FromLong(r);
    }
    return out;
}

/* update(map_addr, key: bytes, value: bytes, flags) -> int */
static PyObject *u_update(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyBytes_Check(args[1]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "update(map, key: bytes, value: bytes, flags)");
        return NULL;
    }
    void *m = PyLong_AsVoidPtr(args[0]);
    unsigned long long flags = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred() || !ready())
        return NULL;
    return PyLong_FromLong(f_update(m, PyBytes_AS_STRING(args[1]), PyBytes_AS_STRING(args[2]), flags));
}

/* delete(map_addr, key: bytes) -> int */
static PyObject *u_delete(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "delete(map, key: bytes)");
        return NULL;
    }
    void *m = PyLong_AsVoidPtr(args[0]);
    if (PyErr_Occurred() || !ready())
        return NULL;
    return PyLong_FromLong(f_delete(m, PyBytes_AS_STRING(args[1])));
}

/* next_key(map_addr, key: bytes | None, key_size) -> bytes | None (ENOENT) | int (-errno) */
static PyObject *u_next_key(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || (args[1] != Py_None && !PyBytes_Check(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "next_key(map, key: bytes | None, key_size)");
        return NULL;
    }
    void *m = PyLong_AsVoidPtr(args[0]);
    Py_ssize_t ks = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred() || !ready())
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, ks > 0 ? ks : 1);
    if (!out)
        return NULL;
    int r = f_next(m, args[1] == Py_None ? NULL : PyBytes_AS_STRING(args[1]), PyBytes_AS_STRING(out));
    if (r < 0) {
        Py_DECREF(out);
        if (r == -ENOENT)
            Py_RETURN_NONE;
        return PyLong_FromLong(r);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"next_key", (PyCFunction)(void (*)(void))u_next_key, METH_FASTCALL, NULL},
    {"init", (PyCFunction)(void (*)(void))u_init, METH_FASTCALL, NULL},
    {"lookup", (PyCFunction)(void (*)(void))u_lookup, METH_FASTCALL, NULL},
    {"update", (PyCFunction)(void (*)(void))u_update, METH_FASTCALL, NULL},
    {"delete", (PyCFunction)(void (*)(void))u_delete, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_pybpfc_usfast", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pybpfc_usfast(void) { return PyModule_Create(&moddef); }
