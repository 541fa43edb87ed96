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
 * With a 13th argument, layouts ({event type: layout}, codec.EVENT_LAYOUTS),
 * it also encodes the other frequent events (Command, Decision, Result,
 * Outputs with masked counts, small or early Outputs...) with a general
 * msgpack encoder (pack_obj) driven by the type's layout: the body map's
 * entries in to_record() order, each read from one attribute. The encoder
 * takes only exact built-in types whose msgpack encoding is unambiguous and
 * hands anything else (an unknown type, an int subclass, a str that is not
 * UTF-8 encodable, a MappingProxyType...) back to the Python loop, which
 * encodes it with msgpack or raises UnencodableEvent.
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

/* ------------------------------------------------------------------------
 * The general path: any event type with a layout (codec.EVENT_LAYOUTS).
 *
 * A layout is a tuple of fields (key, attr, how, arg): key is the entry's
 * msgpack-packed key, attr the attribute it is read from (None for CONST),
 * how one of the HOW_* codes below (codec.py has the same numbers).
 */
enum {
    HOW_CONST = 0,     /* arg: the packed value (the "t" entry) */
    HOW_VALUE = 1,     /* the attribute as msgpack packs it */
    HOW_ENUM = 2,      /* x._value_ of an enum.StrEnum member of exactly type arg */
    HOW_DICT = 3,      /* dict(x) of an exact dict */
    HOW_LIST = 4,      /* list(x) of an exact tuple or list */
    HOW_NONZERO = 5,   /* an exact int, entry left out when 0 ("if x:") */
    HOW_NONEMPTY = 6,  /* dict(x) of an exact dict, entry left out when empty */
    HOW_DATA = 7,      /* exact bytes; kept as its own piece from SPLIT_MIN bytes on */
};

enum { ENC_ERR = -1, ENC_OK = 0, ENC_NO = 1 };  /* ENC_NO: no error set */

#define MAX_DEPTH 32      /* deeper containers go to msgpack (whose limit is 511) */
#define MAX_FIELDS 15     /* a fixmap's entries: the body map header is one byte */
#define SPLIT_MIN 256     /* Output data from this size on is not copied */

typedef struct {
    unsigned char *p;
    Py_ssize_t len, cap;
    Py_ssize_t split;     /* with data: where in p its bytes belong, else -1 */
    PyObject *data;       /* borrowed: the Output data left out of p */
} wbuf;

static int
wb_grow(wbuf *b, Py_ssize_t n)
{
    if (b->len + n <= b->cap)
        return ENC_OK;
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return ENC_ERR;
        }
        cap *= 2;
    }
    unsigned char *p = PyMem_Realloc(b->p, (size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return ENC_ERR;
    }
    b->p = p;
    b->cap = cap;
    return ENC_OK;
}

#define WB_NEED(b, n) do { if (wb_grow((b), (n)) < 0) return ENC_ERR; } while (0)

static void
wb_put(wbuf *b, const void *src, Py_ssize_t n)  /* after WB_NEED(b, n) */
{
    memcpy(b->p + b->len, src, (size_t)n);
    b->len += n;
}

/* A msgpack header: fix form (fix_base | n) below fix_max, else the 8-bit
 * (when code8 is non-zero), 16- or 32-bit form, as msgpack's packer picks. */
static int
pack_head(wbuf *b, Py_ssize_t n, unsigned fix_base, Py_ssize_t fix_max,
          unsigned code8, unsigned code16, unsigned code32)
{
    unsigned char *p;
    WB_NEED(b, 5);
    p = b->p + b->len;
    if (n < fix_max) { p[0] = (unsigned char)(fix_base | (unsigned)n); b->len += 1; }
    else if (code8 && n < 0x100) { p[0] = (unsigned char)code8; p[1] = (unsigned char)n; b->len += 2; }
    else if (n < 0x10000) { p[0] = (unsigned char)code16; put_be(p + 1, (unsigned long long)n, 2); b->len += 3; }
    else if ((unsigned long long)n < 0x100000000ULL) { p[0] = (unsigned char)code32; put_be(p + 1, (unsigned long long)n, 4); b->len += 5; }
    else return ENC_NO;  /* msgpack raises: too large */
    return ENC_OK;
}

/* An exact int, as msgpack's pack_long_long / pack_unsigned_long_long. */
static int
pack_int(wbuf *b, PyObject *o)
{
    int overflow;
    unsigned char *p;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (v == -1 && PyErr_Occurred())
        return ENC_ERR;
    WB_NEED(b, 9);
    p = b->p + b->len;
    if (overflow > 0) {
        unsigned long long u = PyLong_AsUnsignedLongLong(o);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();  /* >= 2**64: msgpack raises OverflowError */
            return ENC_NO;
        }
        b->len += pack_uint(p, u);
        return ENC_OK;
    }
    if (overflow < 0)
        return ENC_NO;  /* < -2**63: msgpack raises OverflowError */
    if (v >= 0) {
        b->len += pack_uint(p, (unsigned long long)v);
        return ENC_OK;
    }
    if (v >= -32) { p[0] = (unsigned char)(v & 0xff); b->len += 1; }
    else if (v >= -128) { p[0] = 0xd0; p[1] = (unsigned char)(v & 0xff); b->len += 2; }
    else if (v >= -32768) { p[0] = 0xd1; put_be(p + 1, (unsigned long long)v, 2); b->len += 3; }
    else if (v >= -2147483648LL) { p[0] = 0xd2; put_be(p + 1, (unsigned long long)v, 4); b->len += 5; }
    else { p[0] = 0xd3; put_be(p + 1, (unsigned long long)v, 8); b->len += 9; }
    return ENC_OK;
}

/* A str (or str subclass, e.g. a StrEnum member: msgpack packs its
 * characters) as UTF-8; one that is not encodable is msgpack's business. */
static int
pack_str(wbuf *b, PyObject *o)
{
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    if (s == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeError))
            return ENC_ERR;
        PyErr_Clear();  /* lone surrogates: msgpack raises */
        return ENC_NO;
    }
    int r = pack_head(b, n, 0xa0, 32, 0xd9, 0xda, 0xdb);
    if (r != ENC_OK)
        return r;
    WB_NEED(b, n);
    wb_put(b, s, n);
    return ENC_OK;
}

static int
pack_bin(wbuf *b, const char *s, Py_ssize_t n)
{
    int r = pack_head(b, n, 0, 0, 0xc4, 0xc5, 0xc6);
    if (r != ENC_OK)
        return r;
    WB_NEED(b, n);
    wb_put(b, s, n);
    return ENC_OK;
}

static int pack_obj(wbuf *b, PyObject *o, int depth);

static int
pack_dict(wbuf *b, PyObject *d, int depth)
{
    Py_ssize_t pos = 0, n = PyDict_GET_SIZE(d);
    PyObject *k, *v;
    int r = pack_head(b, n, 0x80, 16, 0, 0xde, 0xdf);
    while (r == ENC_OK && PyDict_Next(d, &pos, &k, &v)) {
        Py_INCREF(k);
        Py_INCREF(v);
        r = pack_obj(b, k, depth + 1);
        if (r == ENC_OK)
            r = pack_obj(b, v, depth + 1);
        Py_DECREF(k);
        Py_DECREF(v);
        n--;
    }
    /* a dict that changed size under us (it cannot while this thread holds
     * the GIL, but a finalizer run by an allocation could) */
    if (r == ENC_OK && n != 0)
        r = ENC_NO;
    return r;
}

static int
pack_seq(wbuf *b, PyObject *o, int depth)
{
    PyObject **items = PySequence_Fast_ITEMS(o);  /* exact list or tuple */
    Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
    int r = pack_head(b, n, 0x90, 16, 0, 0xdc, 0xdd);
    for (Py_ssize_t k = 0; r == ENC_OK && k < n; k++) {
        if (k >= PySequence_Fast_GET_SIZE(o))
            return ENC_NO;  /* a list that shrank (see pack_dict) */
        PyObject *item = Py_NewRef(items[k]);
        r = pack_obj(b, item, depth + 1);
        Py_DECREF(item);
        items = PySequence_Fast_ITEMS(o);
    }
    return r;
}

/* msgpack.Packer(use_bin_type=True).pack(o) for the exact built-in types
 * whose encoding is unambiguous; ENC_NO for anything else. */
static int
pack_obj(wbuf *b, PyObject *o, int depth)
{
    if (depth > MAX_DEPTH)
        return ENC_NO;
    if (o == Py_None || o == Py_True || o == Py_False) {
        WB_NEED(b, 1);
        b->p[b->len++] = o == Py_None ? 0xc0 : o == Py_True ? 0xc3 : 0xc2;
        return ENC_OK;
    }
    if (PyLong_CheckExact(o))
        return pack_int(b, o);
    if (PyUnicode_Check(o))
        return pack_str(b, o);
    if (PyBytes_CheckExact(o))
        return pack_bin(b, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o));
    if (PyFloat_CheckExact(o)) {
        double d = PyFloat_AS_DOUBLE(o);
        unsigned long long u;
        memcpy(&u, &d, 8);
        WB_NEED(b, 9);
        b->p[b->len] = 0xcb;
        put_be(b->p + b->len + 1, u, 8);
        b->len += 9;
        return ENC_OK;
    }
    if (PyDict_CheckExact(o))
        return pack_dict(b, o, depth);
    if (PyList_CheckExact(o) || PyTuple_CheckExact(o))
        return pack_seq(b, o, depth);
    return ENC_NO;
}

/* One body map entry (key already written) from the attribute value v. */
static int
pack_field(wbuf *b, int how, PyObject *v, PyObject *arg)
{
    switch (how) {
    case HOW_VALUE:
        return pack_obj(b, v, 1);
    case HOW_ENUM:  /* a member's characters are its _value_ (StrEnum) */
        if ((PyObject *)Py_TYPE(v) != arg || !PyUnicode_Check(v))
            return ENC_NO;
        return pack_str(b, v);
    case HOW_DICT:
    case HOW_NONEMPTY:
        return PyDict_CheckExact(v) ? pack_dict(b, v, 1) : ENC_NO;
    case HOW_LIST:
        return PyList_CheckExact(v) || PyTuple_CheckExact(v) ? pack_seq(b, v, 1) : ENC_NO;
    case HOW_NONZERO:
        return PyLong_CheckExact(v) ? pack_int(b, v) : ENC_NO;
    case HOW_DATA:
        if (!PyBytes_CheckExact(v))
            return ENC_NO;
        if (PyBytes_GET_SIZE(v) < SPLIT_MIN || b->data != NULL)
            return pack_bin(b, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
        {
            int r = pack_head(b, PyBytes_GET_SIZE(v), 0, 0, 0xc4, 0xc5, 0xc6);
            if (r != ENC_OK)
                return r;
        }
        b->split = b->len;  /* the bytes go between p[:split] and p[split:] */
        b->data = v;
        return ENC_OK;
    }
    return ENC_NO;
}

/* Whether a HOW_NONZERO / HOW_NONEMPTY entry is left out. */
static int
left_out(int how, PyObject *v)
{
    if (how == HOW_NONZERO && PyLong_CheckExact(v)) {
        int overflow;
        return PyLong_AsLongLongAndOverflow(v, &overflow) == 0 && !overflow;
    }
    if (how == HOW_NONEMPTY)
        return PyDict_CheckExact(v) && PyDict_GET_SIZE(v) == 0;
    return 0;
}

/* payload = msgpack [seq, ts, body] of a (seq, ts, event) item into b. */
static int
encode_item(wbuf *b, PyObject *item, PyObject *layouts, PyObject **data_ref)
{
    PyObject *event, *layout;
    Py_ssize_t nfields, map_at;
    int r, count = 0;

    b->len = 0;
    b->split = -1;
    b->data = NULL;
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3)
        return ENC_NO;
    event = PyTuple_GET_ITEM(item, 2);
    layout = PyDict_GetItemWithError(layouts, (PyObject *)Py_TYPE(event));  /* borrowed */
    if (layout == NULL)
        return PyErr_Occurred() ? ENC_ERR : ENC_NO;
    if (!PyTuple_CheckExact(layout) || (nfields = PyTuple_GET_SIZE(layout)) > MAX_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "a layout must be a tuple of up to 15 fields");
        return ENC_ERR;
    }
    WB_NEED(b, 1);
    b->p[b->len++] = 0x93;
    if (!PyLong_CheckExact(PyTuple_GET_ITEM(item, 0)) || !PyLong_CheckExact(PyTuple_GET_ITEM(item, 1)))
        return ENC_NO;
    if ((r = pack_int(b, PyTuple_GET_ITEM(item, 0))) != ENC_OK
        || (r = pack_int(b, PyTuple_GET_ITEM(item, 1))) != ENC_OK)
        return r;
    WB_NEED(b, 1);
    map_at = b->len++;
    for (Py_ssize_t k = 0; k < nfields; k++) {
        PyObject *field = PyTuple_GET_ITEM(layout, k), *key, *attr, *v;
        int how;
        if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 4
            || !PyBytes_CheckExact(key = PyTuple_GET_ITEM(field, 0))
            || !PyLong_CheckExact(PyTuple_GET_ITEM(field, 2))) {
            PyErr_SetString(PyExc_TypeError, "a layout field must be (bytes, attr, int, arg)");
            return ENC_ERR;
        }
        attr = PyTuple_GET_ITEM(field, 1);
        how = (int)PyLong_AsLong(PyTuple_GET_ITEM(field, 2));
        if (how == HOW_CONST) {
            PyObject *value = PyTuple_GET_ITEM(field, 3);
            if (!PyBytes_CheckExact(value)) {
                PyErr_SetString(PyExc_TypeError, "a CONST field's arg must be bytes");
                return ENC_ERR;
            }
            WB_NEED(b, PyBytes_GET_SIZE(key) + PyBytes_GET_SIZE(value));
            wb_put(b, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key));
            wb_put(b, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
            count++;
            continue;
        }
        if (!(v = PyObject_GetAttr(event, attr))) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                return ENC_ERR;
            PyErr_Clear();  /* to_record() raises: the Python path's business */
            return ENC_NO;
        }
        if (left_out(how, v)) {
            Py_DECREF(v);
            continue;
        }
        if (wb_grow(b, PyBytes_GET_SIZE(key)) < 0) {
            Py_DECREF(v);
            return ENC_ERR;
        }
        wb_put(b, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key));
        r = pack_field(b, how, v, PyTuple_GET_ITEM(field, 3));
        if (r == ENC_OK && how == HOW_DATA && b->data == v)
            *data_ref = Py_NewRef(v);  /* kept past v's reference below */
        Py_DECREF(v);
        if (r != ENC_OK)
            return r;
        count++;
    }
    b->p[map_at] = (unsigned char)(0x80 | count);
    return ENC_OK;
}

/* The general path for one item: 1 = appended, 0 = not handled, -1 = error;
 * with buf NULL, only whether it would be handled. */
static int
append_general(PyObject *item, PyObject *layouts, PyObject *buf, EVP_MD_CTX *ctx,
               unsigned char *prev, Py_ssize_t *frame_size, wbuf *b)
{
    PyObject *data = NULL, *head_piece = NULL, *tail_piece = NULL;
    unsigned char digest[EVP_MAX_MD_SIZE], head[8];
    int handled = -1;
    int r = encode_item(b, item, layouts, &data);

    if (r != ENC_OK) {
        Py_XDECREF(data);
        return r == ENC_NO ? 0 : -1;
    }
    Py_ssize_t split = data ? b->split : b->len;
    Py_ssize_t dlen = data ? PyBytes_GET_SIZE(data) : 0;
    Py_ssize_t n = b->len + dlen;
    if (buf == NULL || (unsigned long long)n >= 0x100000000ULL) {
        /* a payload of 4 GiB or more has no frame head: format.bin_header raises */
        Py_XDECREF(data);
        return buf == NULL && (unsigned long long)n < 0x100000000ULL;
    }
    static const unsigned char event_type = EVENT_TYPE;
    if (!EVP_DigestInit_ex(ctx, sha256_md, NULL)
        || !EVP_DigestUpdate(ctx, prev, HASH_LEN)
        || !EVP_DigestUpdate(ctx, &event_type, 1)
        || !EVP_DigestUpdate(ctx, b->p, (size_t)split)
        || (data && !EVP_DigestUpdate(ctx, PyBytes_AS_STRING(data), (size_t)dlen))
        || !EVP_DigestUpdate(ctx, b->p + split, (size_t)(b->len - split))
        || !EVP_DigestFinal_ex(ctx, digest, NULL)) {
        PyErr_SetString(PyExc_RuntimeError, "SHA-256 failed in libcrypto");
        goto done;
    }
    int hlen = frame_head(head, n);
    /* one piece (head, payload, hash) or, around a data object, three */
    Py_ssize_t first = hlen + split + (data ? 0 : b->len - split + 2 + HASH_LEN);
    if (!(head_piece = PyBytes_FromStringAndSize(NULL, first)))
        goto done;
    unsigned char *q = (unsigned char *)PyBytes_AS_STRING(head_piece);
    memcpy(q, head, (size_t)hlen);
    memcpy(q + hlen, b->p, (size_t)split);
    if (data) {
        if (!(tail_piece = PyBytes_FromStringAndSize(NULL, b->len - split + 2 + HASH_LEN)))
            goto done;
        q = (unsigned char *)PyBytes_AS_STRING(tail_piece);
    }
    else
        q += hlen + split;
    memcpy(q, b->p + split, (size_t)(b->len - split));
    q += b->len - split;
    q[0] = 0xc4;  /* format.HASH_BIN_HEADER */
    q[1] = HASH_LEN;
    memcpy(q + 2, digest, HASH_LEN);
    if (PyList_Append(buf, head_piece) < 0
        || (data && (PyList_Append(buf, data) < 0 || PyList_Append(buf, tail_piece) < 0)))
        goto done;
    memcpy(prev, digest, HASH_LEN);
    *frame_size = hlen + n + 2 + HASH_LEN;
    handled = 1;
done:
    Py_XDECREF(head_piece);
    Py_XDECREF(tail_piece);
    Py_XDECREF(data);
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
"payload map start (codec.OUTPUT_HASH_INPUT*). With layouts\n"
"({event type: layout}, codec.EVENT_LAYOUTS), the events of those types\n"
"that the general encoder takes are appended too.");

static PyObject *
append_outputs(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *items, *prev_obj, *last_seq, *buf, *output_type, *starts, *starts_cseq, *layouts;
    wbuf b = {NULL, 0, 0, -1, NULL};
    Py_ssize_t i, start_len;
    long long nframes, size, ckpt_due, flush_due;
    unsigned char prev[HASH_LEN];
    EVP_MD_CTX *ctx;
    PyObject *result = NULL;
    int appended = 0, unhandled = 0;

    if (nargs != 12 && nargs != 13) {
        PyErr_Format(PyExc_TypeError, "append_outputs() takes 12 or 13 arguments (%zd given)",
                     nargs);
        return NULL;
    }
    layouts = nargs == 13 ? args[12] : NULL;
    if (layouts != NULL && !PyDict_Check(layouts)) {
        PyErr_SetString(PyExc_TypeError, "layouts must be a dict");
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
        if (r == 0 && layouts != NULL)
            r = append_general(item, layouts, buf, ctx, prev, &frame_size, &b);
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
            if (r == 0 && layouts != NULL)
                r = append_general(item, layouts, NULL, NULL, NULL, NULL, &b);
            Py_DECREF(item);
            if (r < 0)
                goto error;
            if (r == 1)
                break;
        }
    }
    EVP_MD_CTX_free(ctx);
    ctx = NULL;
    PyMem_Free(b.p);
    b.p = NULL;
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
    PyMem_Free(b.p);
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
