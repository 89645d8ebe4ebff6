/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * quichsd.tls._events: the handshake engine's hot path in C.
 *
 * Every engine step runs right after GnuTLS has cooled the caches, so what a
 * step costs is mostly the distinct interpreter, cffi and allocator code it
 * touches, not its few instructions.  This module keeps the common paths to
 * one call each and out of cffi: open() sets a session up (qd_open), step()
 * runs a GnuTLS step (qd_step) and builds its events, completion() builds
 * HandshakeComplete, end() frees the session.  quichsd/tls/records.py does
 * the same through cffi when this module is missing.
 *
 * Events are built by filling their slots (their dataclass __init__ only
 * stores fields; records.py checks that before calling setup()).  A journal
 * (struct qd_journal of _glue.c) is owned by a Journal object, freed with its
 * session when collected; its memory is exported as a buffer for cffi's view
 * of it on the rare paths.  The struct's layout and the glue's function
 * addresses come from cffi at setup(), so nothing here repeats _glue.c except
 * the record format (see there).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <gnutls/gnutls.h>

#define KIND_DATA 1
#define KIND_SECRET 2
#define KIND_PEER_TP 3
#define KIND_ALPN 5
#define SECRET_TX 1
#define SECRET_RX 2

enum { T_SEND, T_SECRET, T_PEER_TP, T_ALPN, T_DONE, T_COUNT };

static const char *const type_fields[T_COUNT][7] = {
	[T_SEND] = { "level", "data", NULL },
	[T_SECRET] = { "level", "send", "cipher", "secret", NULL },
	[T_PEER_TP] = { "data", NULL },
	[T_ALPN] = { "protocol", NULL },
	[T_DONE] = { "cipher", "alpn", "peer_certificates", "psk_identity", "resumed",
		     "early_data_accepted", NULL },
};

/* sizeof struct qd_journal and offsets of the fields read here (records.py's order) */
enum { L_SIZE, L_BUF, L_LEN, L_FAILED_ALLOC, L_CIPHER, L_RESUMED, L_EARLY, L_PEER_COUNT,
       L_PEERS, L_ALPN_CHECK, L_SETUP_RC, L_SETUP_STEP, L_COUNT };

static struct {
	int ready;
	void *(*open)(const void *plan, const unsigned char *tp, size_t tp_len,
		      const unsigned char *session_data, size_t session_data_size);
	int (*step)(void *journal, int klevel, const unsigned char *data, size_t size);
	void (*end)(void *journal);
	void (*close)(void *journal);
	Py_ssize_t plan_size;
	PyObject *setup_failed;
	PyTypeObject *types[T_COUNT];
	Py_ssize_t offsets[T_COUNT][6];
	Py_ssize_t layout[L_COUNT];
} st;

#define SLOT(o, t, i) (*(PyObject **)((char *)(o) + st.offsets[t][i]))
#define FIELD(base, type, which) (*(type *)((base) + st.layout[which]))

static int slot_offset(PyTypeObject *t, const char *name, Py_ssize_t *out)
{
	PyObject *d = PyDict_GetItemString(t->tp_dict, name);
	if (!d || !PyObject_TypeCheck(d, &PyMemberDescr_Type) ||
	    ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX) {
		PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", t->tp_name, name);
		return -1;
	}
	*out = ((PyMemberDescrObject *)d)->d_member->offset;
	return 0;
}

/* setup(event types, journal layout, (qd_open, qd_step, qd_end, qd_close) addresses,
 *       sizeof struct qd_plan, SetupFailed) */
static PyObject *setup(PyObject *self, PyObject *args)
{
	PyObject *types, *layout, *functions, *failed;
	Py_ssize_t plan_size;
	void *fn[4];
	(void)self;
	if (!PyArg_ParseTuple(args, "O!O!O!nO", &PyTuple_Type, &types, &PyTuple_Type, &layout,
			      &PyTuple_Type, &functions, &plan_size, &failed))
		return NULL;
	if (PyTuple_GET_SIZE(types) != T_COUNT || PyTuple_GET_SIZE(layout) != L_COUNT ||
	    PyTuple_GET_SIZE(functions) != 4) {
		PyErr_SetString(PyExc_ValueError, "setup() takes 5 types, 12 numbers, 4 functions");
		return NULL;
	}
	for (int i = 0; i < L_COUNT; i++) {
		st.layout[i] = PyLong_AsSsize_t(PyTuple_GET_ITEM(layout, i));
		if (st.layout[i] < 0)
			return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "bad layout");
	}
	for (int i = 0; i < 4; i++)
		if (!(fn[i] = PyLong_AsVoidPtr(PyTuple_GET_ITEM(functions, i))))
			return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_ValueError, "NULL function");
	for (int t = 0; t < T_COUNT; t++) {
		PyObject *type = PyTuple_GET_ITEM(types, t);
		if (!PyType_Check(type))
			return PyErr_Format(PyExc_TypeError, "event %d is not a type", t);
		for (int i = 0; type_fields[t][i]; i++)
			if (slot_offset((PyTypeObject *)type, type_fields[t][i], &st.offsets[t][i]) < 0)
				return NULL;
	}
	for (int t = 0; t < T_COUNT; t++)
		Py_XSETREF(st.types[t], (PyTypeObject *)Py_NewRef(PyTuple_GET_ITEM(types, t)));
	Py_XSETREF(st.setup_failed, Py_NewRef(failed));
	st.open = (void *(*)(const void *, const unsigned char *, size_t, const unsigned char *,
			     size_t))fn[0];
	st.step = (int (*)(void *, int, const unsigned char *, size_t))fn[1];
	st.end = (void (*)(void *))fn[2];
	st.close = (void (*)(void *))fn[3];
	st.plan_size = plan_size;
	st.ready = 1;
	Py_RETURN_NONE;
}

/* -- Journal ------------------------------------------------------------------------ */

typedef struct {
	PyObject_HEAD
	char *j;	/* struct qd_journal * */
} Journal;

static void journal_dealloc(Journal *self)
{
	st.close(self->j);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static int journal_getbuffer(Journal *self, Py_buffer *view, int flags)
{
	return PyBuffer_FillInfo(view, (PyObject *)self, self->j, st.layout[L_SIZE], 0, flags);
}

static PyBufferProcs journal_as_buffer = {
	.bf_getbuffer = (getbufferproc)journal_getbuffer,
};

static PyTypeObject JournalType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "quichsd.tls._events.Journal",
	.tp_basicsize = sizeof(Journal),
	.tp_dealloc = (destructor)journal_dealloc,
	.tp_as_buffer = &journal_as_buffer,
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	.tp_doc = "A session's struct qd_journal and GnuTLS session, freed when collected.",
};

static char *journal_of(PyObject *obj)
{
	if (Py_IS_TYPE(obj, &JournalType))
		return ((Journal *)obj)->j;
	PyErr_SetString(PyExc_TypeError, "not a journal from quichsd.tls._events.open()");
	return NULL;
}

/* Bytes (the usual case, without the buffer protocol's detour) or any buffer. */
static int bytes_of(PyObject *obj, Py_buffer *view, const unsigned char **data, size_t *size)
{
	if (PyBytes_CheckExact(obj)) {
		view->obj = NULL;
		*data = (const unsigned char *)PyBytes_AS_STRING(obj);
		*size = (size_t)PyBytes_GET_SIZE(obj);
		return 0;
	}
	if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
		return -1;
	*data = view->buf;
	*size = (size_t)view->len;
	return 0;
}

static void bytes_done(Py_buffer *view)
{
	if (view->obj)
		PyBuffer_Release(view);
}

/* -- events ------------------------------------------------------------------------- */

static PyObject *new_event(int t)
{
	PyTypeObject *type = st.types[t];
	return type->tp_alloc(type, 0);
}

static PyObject *bytes_event(int t, const unsigned char *p, uint32_t n)
{
	PyObject *o = new_event(t);
	if (o && !(SLOT(o, t, 0) = PyBytes_FromStringAndSize((const char *)p, n)))
		Py_CLEAR(o);
	return o;
}

static PyObject *send_event(unsigned level, const unsigned char *p, uint32_t n)
{
	PyObject *o = new_event(T_SEND);
	if (!o)
		return NULL;
	SLOT(o, T_SEND, 0) = PyLong_FromLong(level);	/* small ints: cached, never NULL */
	if (!(SLOT(o, T_SEND, 1) = PyBytes_FromStringAndSize((const char *)p, n)))
		Py_CLEAR(o);
	return o;
}

static PyObject *secret_event(unsigned level, int send, unsigned cipher,
			      const unsigned char *p, uint32_t n)
{
	PyObject *o = new_event(T_SECRET);
	if (!o)
		return NULL;
	SLOT(o, T_SECRET, 0) = PyLong_FromLong(level);
	SLOT(o, T_SECRET, 1) = PyBool_FromLong(send);
	SLOT(o, T_SECRET, 2) = PyLong_FromLong(cipher);
	if (!(SLOT(o, T_SECRET, 3) = PyBytes_FromStringAndSize((const char *)p, n)))
		Py_CLEAR(o);
	return o;
}

/* How many events the records make (-1: a malformed journal). */
static Py_ssize_t count_events(const unsigned char *raw, size_t size)
{
	Py_ssize_t count = 0;
	size_t off = 0;
	while (off < size) {
		uint32_t n;
		if (size - off < 8)
			return -1;
		memcpy(&n, raw + off + 4, 4);
		if (n > size - off - 8)
			return -1;
		unsigned kind = raw[off];
		if (kind != KIND_DATA && kind != KIND_SECRET && kind != KIND_PEER_TP && kind != KIND_ALPN)
			return -1;
		count += kind == KIND_SECRET && raw[off + 2] == (SECRET_TX | SECRET_RX) ? 2 : 1;
		off += 8 + (size_t)n;
	}
	return count;
}

/* The events of records count_events() accepted, into a list of that size. */
static int decode(PyObject *events, const unsigned char *raw, size_t size)
{
	Py_ssize_t i = 0;
	size_t off = 0;
	while (off < size) {
		unsigned kind = raw[off], level = raw[off + 1], flag = raw[off + 2];
		unsigned cipher = raw[off + 3];
		uint32_t n;
		memcpy(&n, raw + off + 4, 4);
		const unsigned char *p = raw + off + 8;
		off += 8 + (size_t)n;
		PyObject *o;
		if (kind == KIND_DATA) {
			o = send_event(level, p, n);
		} else if (kind == KIND_SECRET && flag == (SECRET_TX | SECRET_RX)) {
			/* transmit first, then receive */
			if (!(o = secret_event(level, 1, cipher, p, n / 2)))
				return -1;
			PyList_SET_ITEM(events, i++, o);
			o = secret_event(level, 0, cipher, p + n / 2, n / 2);
		} else if (kind == KIND_SECRET) {
			o = secret_event(level, flag == SECRET_TX, cipher, p, n);
		} else {
			o = bytes_event(kind == KIND_PEER_TP ? T_PEER_TP : T_ALPN, p, n);
		}
		if (!o)
			return -1;	/* the list's unset items are NULL: it can be freed */
		PyList_SET_ITEM(events, i++, o);
	}
	return 0;
}

/* The events recorded since the last drain, as a new list; empties the journal. */
static PyObject *drain_journal(char *j)
{
	size_t size = FIELD(j, size_t, L_LEN);
	const unsigned char *raw = FIELD(j, unsigned char *, L_BUF);
	if (!size && FIELD(j, int, L_FAILED_ALLOC))
		return PyErr_Format(PyExc_MemoryError, "handshake journal");
	FIELD(j, size_t, L_LEN) = 0;
	Py_ssize_t count = size ? count_events(raw, size) : 0;
	if (count < 0)
		return PyErr_Format(PyExc_ValueError, "malformed handshake journal");
	PyObject *events = PyList_New(count);
	if (events && count && decode(events, raw, size) < 0)
		Py_CLEAR(events);
	return events;
}

/* -- the module's functions ----------------------------------------------------------- */

/* open(plan, transport_parameters, session_data) -> Journal; raises SetupFailed(step, rc).
 * `plan` is bytes holding a struct qd_plan, whose pointers its owner keeps valid. */
static PyObject *open_(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	Py_buffer tp_view, sd_view;
	const unsigned char *tp, *sd;
	size_t tp_len, sd_len;
	(void)self;
	if (nargs != 3) {
		PyErr_SetString(PyExc_TypeError, "open() takes 3 arguments");
		return NULL;
	}
	if (!st.ready || !PyBytes_CheckExact(args[0]) || PyBytes_GET_SIZE(args[0]) != st.plan_size) {
		PyErr_SetString(PyExc_TypeError, "open() takes a struct qd_plan as bytes (setup() first)");
		return NULL;
	}
	if (bytes_of(args[1], &tp_view, &tp, &tp_len) < 0)
		return NULL;
	if (bytes_of(args[2], &sd_view, &sd, &sd_len) < 0) {
		bytes_done(&tp_view);
		return NULL;
	}
	char *j = st.open(PyBytes_AS_STRING(args[0]), tp, tp_len, sd, sd_len);
	bytes_done(&sd_view);
	bytes_done(&tp_view);
	int rc = FIELD(j, int, L_SETUP_RC);
	if (rc) {
		PyObject *failed = Py_BuildValue("(ii)", FIELD(j, int, L_SETUP_STEP), rc);
		st.close(j);
		if (failed) {
			PyErr_SetObject(st.setup_failed, failed);
			Py_DECREF(failed);
		}
		return NULL;
	}
	Journal *o = PyObject_New(Journal, &JournalType);
	if (!o) {
		st.close(j);
		return NULL;
	}
	o->j = j;
	return (PyObject *)o;
}

/* step(journal, level, data) -> the step's events when GnuTLS wants more input and the
 * engine has nothing to check; otherwise qd_step()'s code, the events left for drain(). */
static PyObject *step(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	Py_buffer view;
	const unsigned char *data;
	size_t size;
	(void)self;
	if (nargs != 3) {
		PyErr_SetString(PyExc_TypeError, "step() takes 3 arguments");
		return NULL;
	}
	char *j = journal_of(args[0]);
	if (!j)
		return NULL;
	long level = PyLong_AsLong(args[1]);
	if (level == -1 && PyErr_Occurred())
		return NULL;
	if (level < INT_MIN || level > INT_MAX)
		return PyErr_Format(PyExc_OverflowError, "level %ld does not fit an int", level);
	if (bytes_of(args[2], &view, &data, &size) < 0)
		return NULL;
	int rc;
	Py_BEGIN_ALLOW_THREADS	/* as cffi does around its calls: a step is crypto */
	rc = st.step(j, (int)level, data, size);
	Py_END_ALLOW_THREADS
	bytes_done(&view);
	if (rc == GNUTLS_E_AGAIN && !FIELD(j, int, L_ALPN_CHECK))
		return drain_journal(j);
	return PyLong_FromLong(rc);
}

/* drain(journal) -> the events recorded since the last drain; empties the journal. */
static PyObject *drain(PyObject *self, PyObject *arg)
{
	(void)self;
	char *j = journal_of(arg);
	return j ? drain_journal(j) : NULL;
}

/* completion(journal, alpn, psk_identity) -> HandshakeComplete, from what the completing
 * qd_step() gathered. */
static PyObject *completion(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	(void)self;
	if (nargs != 3) {
		PyErr_SetString(PyExc_TypeError, "completion() takes 3 arguments");
		return NULL;
	}
	char *j = journal_of(args[0]);
	if (!j)
		return NULL;
	unsigned count = FIELD(j, unsigned, L_PEER_COUNT);
	const gnutls_datum_t *chain = FIELD(j, const gnutls_datum_t *, L_PEERS);
	PyObject *o = NULL, *peers = PyTuple_New(chain ? count : 0);
	for (unsigned i = 0; peers && chain && i < count; i++) {
		PyObject *b = PyBytes_FromStringAndSize((const char *)chain[i].data, chain[i].size);
		if (!b)
			Py_CLEAR(peers);
		else
			PyTuple_SET_ITEM(peers, i, b);
	}
	if (peers && (o = new_event(T_DONE))) {
		SLOT(o, T_DONE, 0) = PyLong_FromUnsignedLong(FIELD(j, unsigned, L_CIPHER));
		SLOT(o, T_DONE, 1) = Py_NewRef(args[1]);
		SLOT(o, T_DONE, 2) = Py_NewRef(peers);
		SLOT(o, T_DONE, 3) = Py_NewRef(args[2]);
		SLOT(o, T_DONE, 4) = PyBool_FromLong(FIELD(j, int, L_RESUMED));
		SLOT(o, T_DONE, 5) = PyBool_FromLong(FIELD(j, int, L_EARLY));
		if (!SLOT(o, T_DONE, 0))
			Py_CLEAR(o);
	}
	Py_XDECREF(peers);
	return o;
}

/* end(journal): frees the session now; the journal stays readable. */
static PyObject *end(PyObject *self, PyObject *arg)
{
	(void)self;
	char *j = journal_of(arg);
	if (!j)
		return NULL;
	st.end(j);
	Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
	{ "setup", setup, METH_VARARGS, "setup(types, layout, functions, plan size, SetupFailed)" },
	{ "open", (PyCFunction)(void (*)(void))open_, METH_FASTCALL,
	  "open(plan, transport_parameters, session_data) -> a session's Journal" },
	{ "step", (PyCFunction)(void (*)(void))step, METH_FASTCALL,
	  "step(journal, level, data) -> the step's events, or qd_step()'s code" },
	{ "drain", drain, METH_O, "drain(journal) -> the events recorded since the last drain" },
	{ "completion", (PyCFunction)(void (*)(void))completion, METH_FASTCALL,
	  "completion(journal, alpn, psk_identity) -> HandshakeComplete" },
	{ "end", end, METH_O, "end(journal): frees the session now" },
	{ NULL, NULL, 0, NULL },
};

static struct PyModuleDef module = {
	PyModuleDef_HEAD_INIT, "quichsd.tls._events",
	"The handshake engine's hot path in C (see quichsd/tls/records.py).", -1, methods,
	NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__events(void)
{
	if (PyType_Ready(&JournalType) < 0)
		return NULL;
	PyObject *m = PyModule_Create(&module);
	if (m && PyModule_AddObjectRef(m, "Journal", (PyObject *)&JournalType) < 0)
		Py_CLEAR(m);
	return m;
}
