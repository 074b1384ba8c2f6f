/* Fast path of userspace map element operations from Python: a tiny CPython extension that
 * calls the store's C functions directly (addresses handed over once by maps.py), so one
 * element operation costs one C call instead of a libffi call plus buffer marshalling.
 * Built on first use by pybpfc/backends/userspace/fast.py; maps.py falls back to cffi.
 * Errors come back as -errno ints: the Python side owns the messages. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

typedef int (*lookup_fn)(void *m, const void *key, void *value);
typedef int (*update_fn)(void *m, const void *key, const void *value, uint64_t flags);
typedef int (*delete_fn)(void *m, const void *key);
typedef int (*next_fn)(void *m, const void *key, void *next);
typedef int (*batch_fn)(void *m, uint64_t *cursor, void *keys, void *values, uint32_t max);

static lookup_fn f_lookup;
static update_fn f_update;
static delete_fn f_delete;
static next_fn f_next;
static batch_fn f_batch;

/* init(lookup_addr, update_addr, delete_addr, next_key_addr, lookup_batch_addr) */
static PyObject *u_init(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "init(lookup, update, delete, next_key, lookup_batch)");
        return NULL;
    }
    f_batch = (batch_fn)PyLong_AsVoidPtr(args[4]);
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
    if (!f_lookup || !f_update || !f_delete || !f_next || !f_batch) {
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

/* -- Map: per-map element operations as C methods (no Python frame per call) ----------------
 * Map(addr, key_size, value_size, slow, fail): `slow` is the Python map object whose methods
 * handle anything unusual (other argument types or sizes: they raise the proper errors);
 * `fail(r, what)` builds the exception for a -errno result. */
typedef struct {
    PyObject_HEAD
    void *m;
    Py_ssize_t ks, vs;
    PyObject *slow;
    PyObject *fail;
} MapObject;

/* `slow` refers back to the map object that holds these methods: a cycle the GC must see */
static int map_traverse(MapObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->slow);
    Py_VISIT(self->fail);
    return 0;
}

static int map_clear(MapObject *self)
{
    Py_CLEAR(self->slow);
    Py_CLEAR(self->fail);
    return 0;
}

static void map_dealloc(MapObject *self)
{
    PyObject_GC_UnTrack(self);
    map_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int map_init(MapObject *self, PyObject *args, PyObject *kw)
{
    PyObject *addr, *slow, *fail;
    Py_ssize_t ks, vs;
    if (!PyArg_ParseTuple(args, "OnnOO", &addr, &ks, &vs, &slow, &fail))
        return -1;
    self->m = PyLong_AsVoidPtr(addr);
    if (PyErr_Occurred())
        return -1;
    self->ks = ks;
    self->vs = vs;
    Py_INCREF(slow);
    Py_XSETREF(self->slow, slow);
    Py_INCREF(fail);
    Py_XSETREF(self->fail, fail);
    return 0;
}

static PyObject *raise_fail(MapObject *self, int r, const char *what)
{
    if (!self->fail) {
        PyErr_SetString(PyExc_RuntimeError, "map fast path was cleared");
        return NULL;
    }
    PyObject *exc = PyObject_CallFunction(self->fail, "is", r, what);
    if (exc) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static PyObject *slow_call(MapObject *self, const char *name, PyObject *const *args, Py_ssize_t nargs)
{
    if (!self->slow) {
        PyErr_SetString(PyExc_RuntimeError, "map fast path was cleared");
        return NULL;
    }
    PyObject *cls = (PyObject *)Py_TYPE(self->slow);
    PyObject *fn = PyObject_GetAttrString(cls, name);
    if (!fn)
        return NULL;
    PyObject *full[4];
    full[0] = self->slow;
    for (Py_ssize_t i = 0; i < nargs && i < 3; i++)
        full[i + 1] = args[i];
    PyObject *r = PyObject_Vectorcall(fn, full, (nargs < 3 ? nargs : 3) + 1, NULL);
    Py_DECREF(fn);
    return r;
}

static PyObject *m_lookup(MapObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2 || !PyBytes_CheckExact(args[0]) || PyBytes_GET_SIZE(args[0]) != self->ks ||
        !f_lookup)
        return slow_call(self, "lookup", args, nargs);
    PyObject *out = PyBytes_FromStringAndSize(NULL, self->vs > 0 ? self->vs : 1);
    if (!out)
        return NULL;
    int r = f_lookup(self->m, PyBytes_AS_STRING(args[0]), PyBytes_AS_STRING(out));
    if (r < 0) {
        Py_DECREF(out);
        if (r == -ENOENT)
            Py_RETURN_NONE;
        return raise_fail(self, r, "lookup");
    }
    if (self->vs <= 0)
        Py_SET_SIZE(out, 0);
    return out;
}

static PyObject *m_update(MapObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long long flags = 0;
    if (nargs < 2 || nargs > 3 || !PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1]) ||
        PyBytes_GET_SIZE(args[0]) != self->ks || PyBytes_GET_SIZE(args[1]) != self->vs || !f_update)
        return slow_call(self, "update", args, nargs);
    if (nargs == 3) {
        flags = PyLong_AsUnsignedLongLong(args[2]);
        if (PyErr_Occurred())
            return NULL;
    }
    int r = f_update(self->m, PyBytes_AS_STRING(args[0]), PyBytes_AS_STRING(args[1]), flags);
    if (r < 0)
        return raise_fail(self, r, "update");
    Py_RETURN_NONE;
}

static PyObject *m_delete(MapObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1 || !PyBytes_CheckExact(args[0]) || PyBytes_GET_SIZE(args[0]) != self->ks || !f_delete)
        return slow_call(self, "delete", args, nargs);
    int r = f_delete(self->m, PyBytes_AS_STRING(args[0]));
    if (r == -ENOENT)
        Py_RETURN_FALSE;
    if (r < 0)
        return raise_fail(self, r, "delete");
    Py_RETURN_TRUE;
}

static PyMethodDef map_methods[] = {
    {"lookup", (PyCFunction)(void (*)(void))m_lookup, METH_FASTCALL, NULL},
    {"update", (PyCFunction)(void (*)(void))m_update, METH_FASTCALL, NULL},
    {"delete", (PyCFunction)(void (*)(void))m_delete, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject MapType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_pybpfc_usfast.Map",
    .tp_basicsize = sizeof(MapObject),
    .tp_dealloc = (destructor)map_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)map_traverse,
    .tp_clear = (inquiry)map_clear,
    .tp_methods = map_methods,
    .tp_init = (initproc)map_init,
    .tp_new = PyType_GenericNew,
};

/* -- element primitives of Ops (below): the store's functions on a map address */
#define OPS_TYPE_NAME "_pybpfc_usfast.Ops"
typedef struct {
	PyObject_HEAD
	void *m;
	int live;
	Py_ssize_t ks, vs;
	int kint, ksg, vint, vsg;
	PyObject *kenc, *venc, *vdec, *fail, *slow;
} OpsObject;

static int prim_setup(OpsObject *s, PyObject *handle)
{
	s->m = PyLong_AsVoidPtr(handle);
	if (PyErr_Occurred() || !ready())
		return -1;
	return 0;
}

static inline int prim_lookup(OpsObject *s, const char *key, char *val)
{
	return f_lookup(s->m, key, val);
}

static inline int prim_update(OpsObject *s, const char *key, const char *val, unsigned long long flags)
{
	return f_update(s->m, key, val, flags);
}

static inline int prim_delete(OpsObject *s, const char *key)
{
	return f_delete(s->m, key);
}

#include "map_ops.h"  /* OpsType: the container operations over the primitives above */

/* items(map_addr, key_size, value_size) -> [(key, value), ...] | int (-errno): every entry,
 * copied out of the store in chunks by pbs_map_lookup_batch. */
static PyObject *u_items(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "items(map, key_size, value_size)");
        return NULL;
    }
    void *m = PyLong_AsVoidPtr(args[0]);
    Py_ssize_t ks = PyLong_AsSsize_t(args[1]), vs = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred() || !ready())
        return NULL;
    enum { CHUNK = 1024 };
    int gc_was = 0;
    char *kb = PyMem_Malloc((size_t)(ks > 0 ? ks : 1) * CHUNK), *vb = PyMem_Malloc((size_t)(vs > 0 ? vs : 1) * CHUNK);
    PyObject *out = PyList_New(0), *res = NULL;
    if (!kb || !vb || !out)
        goto done;
    /* pairs of bytes cannot form cycles: no collector passes while the list grows, and the
     * tuples are left untracked (as CPython's GC would find them on its next pass) */
    gc_was = PyGC_Disable();
    uint64_t cursor = 0;
    for (;;) {
        int n = f_batch(m, &cursor, kb, vb, CHUNK);
        if (n < 0) {
            res = PyLong_FromLong(n);
            goto done;
        }
        if (n == 0)
            break;
        for (int i = 0; i < n; i++) {
            PyObject *k = PyBytes_FromStringAndSize(kb + (Py_ssize_t)i * ks, ks);
            PyObject *v = k ? PyBytes_FromStringAndSize(vb + (Py_ssize_t)i * vs, vs) : NULL;
            PyObject *t = v ? PyTuple_New(2) : NULL;
            if (!t) {
                Py_XDECREF(k);
                Py_XDECREF(v);
                goto done;
            }
            PyTuple_SET_ITEM(t, 0, k);
            PyTuple_SET_ITEM(t, 1, v);
            PyObject_GC_UnTrack(t);
            if (PyList_Append(out, t) < 0) {
                Py_DECREF(t);
                goto done;
            }
            Py_DECREF(t);
        }
    }
    res = out;
    out = NULL;
done:
    if (gc_was)
        PyGC_Enable();
    PyMem_Free(kb);
    PyMem_Free(vb);
    Py_XDECREF(out);
    if (!res && !PyErr_Occurred())
        PyErr_NoMemory();
    return res;
}

/* update_batch(map_addr, items, key_size, value_size, flags) -> int (count or -errno) | None:
 * every (key, value) of a list of pairs of bytes, after checking them all (nothing is
 * written when one has another type or size: None, the Python side reports it). */
static PyObject *u_update_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyList_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "update_batch(map, items: list, key_size, value_size, flags)");
        return NULL;
    }
    void *m = PyLong_AsVoidPtr(args[0]);
    PyObject *items = args[1];
    Py_ssize_t ks = PyLong_AsSsize_t(args[2]), vs = PyLong_AsSsize_t(args[3]);
    unsigned long long flags = PyLong_AsUnsignedLongLong(args[4]);
    if (PyErr_Occurred() || !ready())
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 2 || !PyBytes_CheckExact(PyTuple_GET_ITEM(t, 0)) ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(t, 1)) || PyBytes_GET_SIZE(PyTuple_GET_ITEM(t, 0)) != ks ||
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(t, 1)) != vs)
            Py_RETURN_NONE;
    }
    /* the list holds its tuples and they their bytes: no Python code runs in the loop */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyList_GET_ITEM(items, i);
        int r = f_update(m, PyBytes_AS_STRING(PyTuple_GET_ITEM(t, 0)), PyBytes_AS_STRING(PyTuple_GET_ITEM(t, 1)),
                         flags);
        if (r < 0)
            return PyLong_FromLong(r);
    }
    return PyLong_FromSsize_t(n);
}

/* One side of an entry: an int of `width` bytes decoded here, else dec(bytes). */
static PyObject *decode_side(const char *p, Py_ssize_t size, int width, int sgn, PyObject *dec)
{
    if (width)
        return unpack_int((const unsigned char *)p, width, sgn);
    PyObject *b = PyBytes_FromStringAndSize(p, size);
    if (!b)
        return NULL;
    PyObject *r = PyObject_CallOneArg(dec, b);
    Py_DECREF(b);
    return r;
}

/* items_decoded(map_addr, key_size, value_size, kint, ksigned, vint, vsigned, kdec, vdec,
 *               values_only) -> ([key, ...], [value, ...]) | [value, ...] | int (-errno):
 * every entry decoded (Map.items()/values() of the generic layer: ints here, other kinds by
 * the codec callables). Two columns rather than pairs: zip() over them hands out pairs and
 * reuses its tuple when the caller unpacks it. */
static PyObject *u_items_decoded(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError,
                        "items_decoded(map, ks, vs, kint, ksigned, vint, vsigned, kdec, vdec, values_only)");
        return NULL;
    }
    void *m = PyLong_AsVoidPtr(args[0]);
    Py_ssize_t ks = PyLong_AsSsize_t(args[1]), vs = PyLong_AsSsize_t(args[2]);
    int kint = (int)PyLong_AsLong(args[3]), ksg = PyObject_IsTrue(args[4]);
    int vint = (int)PyLong_AsLong(args[5]), vsg = PyObject_IsTrue(args[6]);
    PyObject *kdec = args[7], *vdec = args[8];
    int values_only = PyObject_IsTrue(args[9]);
    if (PyErr_Occurred() || !ready())
        return NULL;
    if ((kint && kint != ks) || (vint && vint != vs) || kint > 8 || vint > 8) {
        PyErr_SetString(PyExc_ValueError, "items_decoded: bad integer widths");
        return NULL;
    }
    enum { CHUNK = 1024 };
    int gc_was = 0;
    char *kb = PyMem_Malloc((size_t)(ks > 0 ? ks : 1) * CHUNK), *vb = PyMem_Malloc((size_t)(vs > 0 ? vs : 1) * CHUNK);
    PyObject *keys = values_only ? NULL : PyList_New(0), *vals = PyList_New(0), *out = NULL;
    if (!kb || !vb || !vals || (!values_only && !keys))
        goto done;
    /* Decoded Structs hold only ints/bytes (no cycles); letting the cyclic GC rescan the
     * growing lists every few hundred allocations would cost a third of the time. */
    gc_was = PyGC_Disable();
    uint64_t cursor = 0;
    for (;;) {
        int n = f_batch(m, &cursor, kb, vb, CHUNK);
        if (n < 0) {
            out = PyLong_FromLong(n);
            goto done;
        }
        if (n == 0)
            break;
        for (int i = 0; i < n; i++) {
            if (!values_only) {
                PyObject *k = decode_side(kb + (Py_ssize_t)i * ks, ks, kint, ksg, kdec);
                if (!k || PyList_Append(keys, k) < 0) {
                    Py_XDECREF(k);
                    goto done;
                }
                Py_DECREF(k);
            }
            PyObject *v = decode_side(vb + (Py_ssize_t)i * vs, vs, vint, vsg, vdec);
            if (!v || PyList_Append(vals, v) < 0) {
                Py_XDECREF(v);
                goto done;
            }
            Py_DECREF(v);
        }
    }
    if (values_only) {
        out = vals;
        vals = NULL;
    } else {
        out = PyTuple_Pack(2, keys, vals);
    }
done:
    if (gc_was)
        PyGC_Enable();
    PyMem_Free(kb);
    PyMem_Free(vb);
    Py_XDECREF(keys);
    Py_XDECREF(vals);
    if (!out && !PyErr_Occurred())
        PyErr_NoMemory();
    return out;
}

static PyMethodDef methods[] = {
    {"update_batch", (PyCFunction)(void (*)(void))u_update_batch, METH_FASTCALL, NULL},
    {"items_decoded", (PyCFunction)(void (*)(void))u_items_decoded, METH_FASTCALL, NULL},
    {"items", (PyCFunction)(void (*)(void))u_items, METH_FASTCALL, NULL},
    {"next_key", (PyCFunction)(void (*)(void))u_next_key, METH_FASTCALL, NULL},
    {"init", (PyCFunction)(void (*)(void))u_init, METH_FASTCALL, NULL},
    {"lookup", (PyCFunction)(void (*)(void))u_lookup, METH_FASTCALL, NULL},
    {"update", (PyCFunction)(void (*)(void))u_update, METH_FASTCALL, NULL},
    {"delete", (PyCFunction)(void (*)(void))u_delete, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_pybpfc_usfast", NULL, -1, methods};

PyMODINIT_FUNC PyInit__pybpfc_usfast(void)
{
    if (PyType_Ready(&MapType) < 0 || PyType_Ready(&OpsType) < 0)
        return NULL;
    PyObject *mod = PyModule_Create(&moddef);
    if (!mod)
        return NULL;
    Py_INCREF(&MapType);
    if (PyModule_AddObject(mod, "Map", (PyObject *)&MapType) < 0) {
        Py_DECREF(&MapType);
        Py_DECREF(mod);
        return NULL;
    }
    Py_INCREF(&OpsType);
    if (PyModule_AddObject(mod, "Ops", (PyObject *)&OpsType) < 0) {
        Py_DECREF(&OpsType);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
