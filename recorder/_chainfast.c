/* Optional C accelerator for ChainWriter.append_events (recorder/chain.py).
 *
 * append_outputs() does what the fast branch of the Python loop does, for as
 * many consecutive items as it can: for a (seq, ts_ns, event) whose event is a
 * plain Output with 256 <= seq < 2**32, 2**32 <= ts_ns < 2**64, bytes data of
 * 256 B..64 KiB, no masked counts and 0 <= command_seq < 2**64, it builds the
 * payload prefix as codec.OUTPUT_HASH_INPUT* does, chains
 * SHA-256(prev || EVENT || prefix || data || suffix) and appends the frame to
 * the write buffer as three pieces (frame head + prefix, the data object
 * itself, suffix + hash). It returns at the first item it does not handle and
 * right after a frame that makes a checkpoint or a flush due; the Python loop
 * handles the rest. The Python code is the reference: tests hold the two to
 * byte-identical segment files.
 *
 * On an error (MemoryError, bad argument types) it removes the pieces this
 * call appended and raises, so the caller's chain state stays consistent.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <string.h>

#define EVENT_TYPE 0x02   /* format.EVENT: the type byte hashed and in the head */
#define HASH_LEN 32
#define MAX_START 64      /* longest Output map start accepted (they are ~30 B) */

static const EVP_MD *sha256_md;  /* fetched once when the module is loaded */

/* msgpack's "command_seq" fixstr key (codec._COMMAND_SEQ_KEY) */
static const char CSEQ_KEY[] = "\xab" "command_seq";
#define CSEQ_KEY_LEN 12

/* interned attribute names, set once when the module is loaded */
static PyObject *str_data, *str_masked, *str_command_seq, *str_stream;

static void
put_be(unsigned char *p, unsigned long long v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

/* An exact int in [lo, 2**64) -> 1 and *out; anything else -> 0 (no error set). */
static int
get_u64(PyObject *o, unsigned long long lo, unsigned long long *out)
{
    if (!PyLong_CheckExact(o))
        return 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();  /* negative or >= 2**64: the Python path's business */
        return 0;
    }
    if (v < lo)
        return 0;
    *out = v;
    return 1;
}

/* msgpack's smallest encoding of an unsigned int (codec._uint). */
static int
pack_uint(unsigned char *p, unsigned long long v)
{
    if (v < 0x80) { p[0] = (unsigned char)v; return 1; }
    if (v < 0x100) { p[0] = 0xcc; p[1] = (unsigned char)v; return 2; }
    if (v < 0x10000) { p[0] = 0xcd; put_be(p + 1, v, 2); return 3; }
    if (v < 0x100000000ULL) { p[0] = 0xce; put_be(p + 1, v, 4); return 5; }
    p[0] = 0xcf; put_be(p + 1, v, 8); return 9;
}

/* format.frame_head(EVENT, n) */
static int
frame_head(unsigned char *p, Py_ssize_t n)
{
    p[0] = 0x93;
    p[1] = EVENT_TYPE;
    if (n < 0x100) { p[2] = 0xc4; p[3] = (unsigned char)n; return 4; }
    if (n < 0x10000) { p[2] = 0xc5; put_be(p + 3, (unsigned long long)n, 2); return 5; }
    p[2] = 0xc6; put_be(p + 3, (unsigned long long)n, 4); return 7;
}

static int
get_ll(PyObject *o, const char *name, long long *out)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow) {
        if (overflow < 0) {
            PyErr_Format(PyExc_ValueError, "%s out of range", name);
            return -1;
        }
        v = LLONG_MAX;  /* a due point beyond reach */
    }
    if (v < 0) {
        PyErr_Format(PyExc_ValueError, "%s must not be negative", name);
        return -1;
    }
    *out = v;
    return 0;
}

/* One item: 1 = appended, 0 = not handled (no error set), -1 = error.
 * With buf NULL, only whether it would be handled (1 or 0, or -1). */
static int
append_one(PyObject *item, PyObject *output_type, PyObject *starts, PyObject *starts_cseq,
           PyObject *buf, EVP_MD_CTX *ctx, unsigned char *prev, Py_ssize_t *frame_size)
{
    unsigned long long seq, ts, cseq;
    PyObject *event, *data = NULL, *masked = NULL, *cseq_obj = NULL, *stream = NULL;
    PyObject *start, *head_piece = NULL, *tail_piece = NULL;
    unsigned char hin[HASH_LEN + 1 + 16 + MAX_START + 3], digest[EVP_MAX_MD_SIZE];
    unsigned char suffix[CSEQ_KEY_LEN + 9];
    int handled = 0, slen = 0;

    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3)
        return 0;
    event = PyTuple_GET_ITEM(item, 2);
    if ((PyObject *)Py_TYPE(event) != output_type
        || !get_u64(PyTuple_GET_ITEM(item, 0), 0x100, &seq) || seq >= 0x100000000ULL
        || !get_u64(PyTuple_GET_ITEM(item, 1), 0x100000000ULL, &ts))
        return 0;
    if (!(data = PyObject_GetAttr(event, str_data))
        || !(masked = PyObject_GetAttr(event, str_masked))
        || !(cseq_obj = PyObject_GetAttr(event, str_command_seq))
        || !(stream = PyObject_GetAttr(event, str_stream))) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            goto error;
        PyErr_Clear();  /* a half-built Output: whatever the Python path does */
        goto done;
    }
    Py_ssize_t dlen = PyBytes_CheckExact(data) ? PyBytes_GET_SIZE(data) : 0;
    if (dlen < 0x100 || dlen >= 0x10000
        || !PyDict_CheckExact(masked) || PyDict_GET_SIZE(masked) != 0
        || !get_u64(cseq_obj, 0, &cseq))
        goto done;
    start = PyDict_GetItemWithError(cseq ? starts_cseq : starts, stream);  /* borrowed */
    if (start == NULL) {
        PyErr_Clear();  /* unknown or unhashable stream: the Python path raises */
        goto done;
    }
    if (!PyBytes_CheckExact(start) || PyBytes_GET_SIZE(start) > MAX_START)
        goto done;
    if (buf == NULL) {  /* only asked whether the item would be handled */
        handled = 1;
        goto done;
    }

    /* hash input = prev || EVENT || prefix; prefix = [seq, ts, {..."data": bin16 */
    unsigned char *p = hin;
    memcpy(p, prev, HASH_LEN);
    p += HASH_LEN;
    *p++ = EVENT_TYPE;
    *p++ = 0x93;
    if (seq >= 0x10000) { *p++ = 0xce; put_be(p, seq, 4); p += 4; }
    else { *p++ = 0xcd; put_be(p, seq, 2); p += 2; }
    *p++ = 0xcf;
    put_be(p, ts, 8);
    p += 8;
    memcpy(p, PyBytes_AS_STRING(start), (size_t)PyBytes_GET_SIZE(start));
    p += PyBytes_GET_SIZE(start);
    *p++ = 0xc5;
    put_be(p, (unsigned long long)dlen, 2);
    p += 2;
    Py_ssize_t plen = (p - hin) - (HASH_LEN + 1);
    if (cseq) {
        memcpy(suffix, CSEQ_KEY, CSEQ_KEY_LEN);
        slen = CSEQ_KEY_LEN + pack_uint(suffix + CSEQ_KEY_LEN, cseq);
    }

    if (!EVP_DigestInit_ex(ctx, sha256_md, NULL)
        || !EVP_DigestUpdate(ctx, hin, (size_t)(p - hin))
        || !EVP_DigestUpdate(ctx, PyBytes_AS_STRING(data), (size_t)dlen)
        || (slen && !EVP_DigestUpdate(ctx, suffix, (size_t)slen))
        || !EVP_DigestFinal_ex(ctx, digest, NULL)) {
        PyErr_SetString(PyExc_RuntimeError, "SHA-256 failed in libcrypto");
        goto error;
    }
    memcpy(prev, digest, HASH_LEN);

    Py_ssize_t n = plen + dlen + slen;
    unsigned char head[8];
    int hlen = frame_head(head, n);
    if (!(head_piece = PyBytes_FromStringAndSize(NULL, hlen + plen))
        || !(tail_piece = PyBytes_FromStringAndSize(NULL, slen + 2 + HASH_LEN)))
        goto error;
    unsigned char *q = (unsigned char *)PyBytes_AS_STRING(head_piece);
    memcpy(q, head, (size_t)hlen);
    memcpy(q + hlen, hin + HASH_LEN + 1, (size_t)plen);
    q = (unsigned char *)PyBytes_AS_STRING(tail_piece);
    memcpy(q, suffix, (size_t)slen);
    q[slen] = 0xc4;  /* format.HASH_BIN_HEADER */
    q[slen + 1] = HASH_LEN;
    memcpy(q + slen + 2, digest, HASH_LEN);
    if (PyList_Append(buf, head_piece) < 0 || PyList_Append(buf, data) < 0
        || PyList_Append(buf, tail_piece) < 0)
        goto error;
    *frame_size = hlen + n + 2 + HASH_LEN;
    handled = 1;
    goto done;
error:
    handled = -1;
done:
    Py_XDECREF(head_piece);
    Py_XDECREF(tail_piece);
    Py_XDECREF(data);
    Py_XDECREF(masked);
    Py_XDECREF(cseq_obj);
    Py_XDECREF(stream);
    return handled;
}

PyDoc_STRVAR(append_outputs_doc,
"append_outputs(items, i, prev, nframes, size, last_seq, ckpt_due, flush_due,\n"
"               buf, output_type, starts, starts_cseq)\n"
"-> (i, prev, nframes, size, last_seq, j)\n\n"
"Append the plain Output frames of items[i:] to buf until an item it does\n"
"not handle or until nframes >= ckpt_due or size >= flush_due after a frame;\n"
"return the index reached, the updated chain state and the end j of the\n"
"stretch items[i:j] it would not handle (j == i when it stopped for a due\n"
"checkpoint/flush or at the end). starts / starts_cseq map a Stream to its\n"
"payload map start (codec.OUTPUT_HASH_INPUT*).");

static PyObject *
append_outputs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *items, *prev_obj, *last_seq, *buf, *output_type, *starts, *starts_cseq;
    Py_ssize_t i, start_len;
    long long nframes, size, ckpt_due, flush_due;
    unsigned char prev[HASH_LEN];
    EVP_MD_CTX *ctx;
    PyObject *result = NULL;
    int appended = 0, unhandled = 0;

    if (nargs != 12) {
        PyErr_Format(PyExc_TypeError, "append_outputs() takes 12 arguments (%zd given)", nargs);
        return NULL;
    }
    items = args[0];
    prev_obj = args[2];
    last_seq = args[5];
    buf = args[8];
    output_type = args[9];
    starts = args[10];
    starts_cseq = args[11];
    if (!PyList_Check(items) || !PyList_Check(buf)) {
        PyErr_SetString(PyExc_TypeError, "items and buf must be lists");
        return NULL;
    }
    if (!PyBytes_Check(prev_obj) || PyBytes_GET_SIZE(prev_obj) != HASH_LEN) {
        PyErr_SetString(PyExc_TypeError, "prev must be a 32-byte bytes object");
        return NULL;
    }
    if (!PyType_Check(output_type) || !PyDict_Check(starts) || !PyDict_Check(starts_cseq)) {
        PyErr_SetString(PyExc_TypeError, "output_type must be a type, starts dicts");
        return NULL;
    }
    i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0) {
        PyErr_SetString(PyExc_ValueError, "i must not be negative");
        return NULL;
    }
    if (get_ll(args[3], "nframes", &nframes) < 0 || get_ll(args[4], "size", &size) < 0
        || get_ll(args[6], "ckpt_due", &ckpt_due) < 0
        || get_ll(args[7], "flush_due", &flush_due) < 0)
        return NULL;
    memcpy(prev, PyBytes_AS_STRING(prev_obj), HASH_LEN);
    if (!(ctx = EVP_MD_CTX_new()))
        return PyErr_NoMemory();
    start_len = PyList_GET_SIZE(buf);
    Py_INCREF(last_seq);

    while (i < PyList_GET_SIZE(items)) {
        PyObject *item = PyList_GET_ITEM(items, i);
        Py_ssize_t frame_size = 0;
        Py_INCREF(item);
        int r = append_one(item, output_type, starts, starts_cseq, buf, ctx, prev, &frame_size);
        if (r == 1) {
            Py_SETREF(last_seq, Py_NewRef(PyTuple_GET_ITEM(item, 0)));
        }
        Py_DECREF(item);
        if (r < 0)
            goto error;
        if (r == 0) {
            unhandled = 1;
            break;
        }
        appended = 1;
        i++;
        nframes++;
        size += frame_size;
        if (nframes >= ckpt_due || size >= flush_due)
            break;
    }
    /* Stopped at an item left to Python: so are the items after it up to
     * the next one handled here (one Python call for the stretch). */
    Py_ssize_t j = i;
    if (unhandled) {
        while (++j < PyList_GET_SIZE(items)) {
            PyObject *item = PyList_GET_ITEM(items, j);
            Py_INCREF(item);
            int r = append_one(item, output_type, starts, starts_cseq, NULL, NULL, NULL, NULL);
            Py_DECREF(item);
            if (r < 0)
                goto error;
            if (r == 1)
                break;
        }
    }
    EVP_MD_CTX_free(ctx);
    ctx = NULL;
    if (appended)
        prev_obj = PyBytes_FromStringAndSize((const char *)prev, HASH_LEN);
    else
        Py_INCREF(prev_obj);
    if (prev_obj == NULL)
        goto error;
    result = Py_BuildValue("(nNLLNn)", i, prev_obj, nframes, size, last_seq, j);
    if (result != NULL)
        return result;
    last_seq = NULL;  /* Py_BuildValue's N consumed both references, even on failure */
error:
    if (ctx)
        EVP_MD_CTX_free(ctx);
    Py_XDECREF(last_seq);
    /* take back this call's pieces: the caller's chain state was not updated */
    if (PyList_GET_SIZE(buf) > start_len) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (PyList_SetSlice(buf, start_len, PyList_GET_SIZE(buf), NULL) < 0)
            PyErr_Clear();  /* cannot fail when shrinking a list */
        PyErr_Restore(type, value, tb);
    }
    return NULL;
}

static PyMethodDef methods[] = {
    {"append_outputs", (PyCFunction)(void (*)(void))append_outputs, METH_FASTCALL,
     append_outputs_doc},
    {NULL, NULL, 0, NULL},
};

static int
exec_module(PyObject *module)
{
    if (sha256_md == NULL) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
#else
        sha256_md = EVP_sha256();
#endif
        if (sha256_md == NULL) {
            PyErr_SetString(PyExc_ImportError, "libcrypto has no SHA-256");
            return -1;
        }
    }
    if (str_data == NULL
        && (!(str_data = PyUnicode_InternFromString("data"))
        || !(str_masked = PyUnicode_InternFromString("masked"))
        || !(str_command_seq = PyUnicode_InternFromString("command_seq"))
        || !(str_stream = PyUnicode_InternFromString("stream"))))
        return -1;
    return PyModule_AddStringConstant(module, "OPENSSL_VERSION", OpenSSL_version(OPENSSL_VERSION));
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, exec_module},
    {0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "recorder._chainfast",
    "C accelerator for recorder.chain.ChainWriter.append_events (optional).",
    0, methods, slots,
};

PyMODINIT_FUNC
PyInit__chainfast(void)
{
    return PyModuleDef_Init(&moduledef);
}
