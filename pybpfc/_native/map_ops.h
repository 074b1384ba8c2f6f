/* Container operations of one map (m[k], m[k] = v, del m[k], k in m, m.get) in C, shared by
 * the kernel (_kfast.c) and userspace (_usfast.c) fast paths.
 *
 * Include after defining, for the backend: OPS_TYPE_NAME, the OpsObject struct (PyObject_HEAD,
 * the backend's map handle, then: int live; Py_ssize_t ks, vs; int kint, ksg, vint, vsg;
 * PyObject *kenc, *venc, *vdec, *fail, *slow;) and the element primitives prim_setup,
 * prim_lookup, prim_update, prim_delete. Defines OpsType. */
#ifndef PYBPFC_MAP_OPS_H
#define PYBPFC_MAP_OPS_H

/* ---- Ops: a map's container operations (m[k], m[k] = v, del m[k], k in m, m.get) in C ----
 * Chosen once per map by pybpfc/collection.py. Integer keys/values of the declared width are
 * packed and unpacked here; any other key or value goes through the Python codec callables,
 * and anything unusual (encoded size mismatch, map closed) runs the whole operation through
 * the generic Python implementation (`slow`), so behaviour and error messages stay those of
 * the generic layer. */
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

#endif
