/* The quick scan in C: the twin of `scan` in _quick.py, with identical answers.
 *
 * Read _quick.py first: it says what is recognised and why, and it is the reference this file is held to
 * (tests/test_quick_scan.py compares both, value by value, over the protocol corpus and a seeded fuzz).
 * Every rule here is the rule there, in the same order; anything not recognised is None, never an error:
 * the reference parser alone decides what is wrong with a message.
 *
 * CPython's C API rather than cffi: no runtime dependency, and the result is built as a QuickRequest
 * directly (cffi would hand back a C struct to convert in Python, which is the cost this exists to avoid).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyTypeObject *result_type = NULL; /* QuickRequest, set once by set_result_type */

enum { N_FIELDS = 12 };

static int is_alnum(unsigned char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

/* tchar (RFC 9110 5.6.2), as _abnf.TCHAR */
static int is_tchar(unsigned char c) {
    return is_alnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* a field-value byte: anything but a control character other than HTAB (_FIELD's value class) */
static int is_value_byte(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

static const unsigned char *find_crlf(const unsigned char *p, const unsigned char *end) {
    for (; p + 1 < end; p++)
        if (p[0] == '\r' && p[1] == '\n') return p;
    return NULL;
}

static const unsigned char *find_blank(const unsigned char *p, const unsigned char *end) {
    for (; p + 3 < end; p++)
        if (p[0] == '\r' && p[1] == '\n' && p[2] == '\r' && p[3] == '\n') return p;
    return NULL;
}

typedef struct {
    const char *name; /* lower-case */
    Py_ssize_t len;
    const unsigned char *value;
    Py_ssize_t value_len;
    int seen;
} Wanted;

static int name_is(const unsigned char *name, Py_ssize_t len, const Wanted *w) {
    if (len != w->len) return 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char c = name[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        if (c != (unsigned char)w->name[i]) return 0;
    }
    return 1;
}

/* Header lines in [p, end), CRLF-separated, no final CRLF (as _fields gets them). 0 = not recognised. */
static int read_fields(const unsigned char *p, const unsigned char *end, Wanted *wanted, int n_wanted,
                       Py_ssize_t max_fields) {
    Py_ssize_t lines = 0;
    while (1) {
        const unsigned char *eol = find_crlf(p, end);
        const unsigned char *line_end = eol ? eol : end;
        if (++lines > max_fields) return 0;
        const unsigned char *q = p;
        while (q < line_end && is_tchar(*q)) q++;
        if (q == p || q == line_end || *q != ':') return 0;
        const unsigned char *name = p;
        Py_ssize_t name_len = q - p;
        q++;
        while (q < line_end && (*q == ' ' || *q == '\t')) q++;
        const unsigned char *value = q;
        for (; q < line_end; q++)
            if (!is_value_byte(*q)) return 0;
        const unsigned char *value_end = line_end;
        while (value_end > value && (value_end[-1] == ' ' || value_end[-1] == '\t')) value_end--;
        for (int i = 0; i < n_wanted; i++) {
            if (!name_is(name, name_len, &wanted[i])) continue;
            if (wanted[i].seen) return 0;
            wanted[i].seen = 1;
            wanted[i].value = value;
            wanted[i].value_len = value_end - value;
        }
        if (!eol) return 1;
        p = eol + 2;
    }
}

static int equals(const Wanted *w, const char *text) {
    Py_ssize_t len = (Py_ssize_t)strlen(text);
    return w->seen && w->value_len == len && memcmp(w->value, text, (size_t)len) == 0;
}

static int all_digits(const unsigned char *p, Py_ssize_t len, Py_ssize_t max_len) {
    if (len < 1 || len > max_len) return 0;
    for (Py_ssize_t i = 0; i < len; i++)
        if (p[i] < '0' || p[i] > '9') return 0;
    return 1;
}

static long digits_value(const unsigned char *p, Py_ssize_t len) {
    long v = 0;
    for (Py_ssize_t i = 0; i < len; i++) v = v * 10 + (p[i] - '0');
    return v;
}

static int starts(const unsigned char *p, const unsigned char *end, const char *text) {
    size_t len = strlen(text);
    return (size_t)(end - p) >= len && memcmp(p, text, len) == 0;
}

/* `(REQMOD|OPTIONS) icaps?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*) ICAP/1.0` over [p, end) */
static int request_line(const unsigned char *p, const unsigned char *end, int *options, const unsigned char **path,
                        Py_ssize_t *path_len) {
    if (starts(p, end, "REQMOD ")) {
        *options = 0;
        p += 7;
    } else if (starts(p, end, "OPTIONS ")) {
        *options = 1;
        p += 8;
    } else {
        return 0;
    }
    if (starts(p, end, "icap://")) {
        p += 7;
    } else if (starts(p, end, "icaps://")) { /* ICAP over TLS, as Squid names it */
        p += 8;
    } else {
        return 0;
    }
    const unsigned char *host = p;
    while (p < end && (is_alnum(*p) || *p == '.' || *p == '-')) p++;
    if (p == host) return 0;
    if (p < end && *p == ':') {
        const unsigned char *port = ++p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        if (!all_digits(port, p - port, 5) || digits_value(port, p - port) > 65535) return 0;
    }
    if (p >= end || *p != '/') return 0;
    *path = p;
    while (p < end && (is_alnum(*p) || strchr("._~/-", *p) != NULL) && *p != 0) p++;
    *path_len = p - *path;
    return (end - p) == 9 && memcmp(p, " ICAP/1.0", 9) == 0;
}

/* `(GET|HEAD|CONNECT) ([\x21-\x7e\x80-\xff]+) HTTP/[0-9]\.[0-9]` over [p, end) */
static int http_line(const unsigned char *p, const unsigned char *end, const unsigned char **method,
                     Py_ssize_t *method_len, const unsigned char **target, Py_ssize_t *target_len) {
    const char *names[] = {"GET ", "HEAD ", "CONNECT "};
    int i;
    for (i = 0; i < 3; i++)
        if (starts(p, end, names[i])) break;
    if (i == 3) return 0;
    *method = p;
    *method_len = (Py_ssize_t)strlen(names[i]) - 1;
    p += *method_len + 1;
    *target = p;
    while (p < end && *p > 0x20 && *p != 0x7f) p++;
    *target_len = p - *target;
    if (*target_len == 0 || end - p != 9) return 0;
    return memcmp(p, " HTTP/", 6) == 0 && p[6] >= '0' && p[6] <= '9' && p[7] == '.' && p[8] >= '0' && p[8] <= '9';
}

static PyObject *text_or_none(const Wanted *w) {
    if (!w->seen) Py_RETURN_NONE;
    return PyUnicode_DecodeLatin1((const char *)w->value, w->value_len, NULL);
}

static PyObject *build(PyObject *items[N_FIELDS]) {
    PyObject *result = result_type->tp_alloc(result_type, N_FIELDS);
    for (int i = 0; i < N_FIELDS; i++) {
        if (items[i] == NULL) { /* a decode failed: drop what was built */
            for (int j = 0; j < N_FIELDS; j++) Py_XDECREF(items[j]);
            Py_XDECREF(result);
            return NULL;
        }
    }
    if (result == NULL) {
        for (int j = 0; j < N_FIELDS; j++) Py_DECREF(items[j]);
        return NULL;
    }
    for (int i = 0; i < N_FIELDS; i++) PyTuple_SET_ITEM(result, i, items[i]);
    return result;
}

enum { F_HOST, F_ENCAPSULATED, F_ALLOW, F_PREVIEW, F_CONNECTION, F_AUTH, F_IP, F_USER, N_ICAP };
enum { H_HOST, H_ACCEPT, H_LANGUAGE, N_HTTP };

static PyObject *scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer data, user;
    Py_ssize_t max_bytes, max_fields;
    if (nargs != 4 || result_type == NULL) {
        PyErr_SetString(PyExc_TypeError, "scan(data, user_header, max_header_bytes, max_fields), after set_result_type");
        return NULL;
    }
    max_bytes = PyLong_AsSsize_t(args[2]);
    max_fields = PyLong_AsSsize_t(args[3]);
    if (PyErr_Occurred()) return NULL;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &user, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    PyObject *result;
    const unsigned char *base = data.buf, *stop = base + data.len;
    Wanted icap[N_ICAP] = {
        {"host", 4}, {"encapsulated", 12}, {"allow", 5}, {"preview", 7}, {"connection", 10},
        {"x-authenticated-user", 20}, {"x-client-ip", 11}, {(const char *)user.buf, user.len},
    };
    Wanted http[N_HTTP] = {{"host", 4}, {"accept", 6}, {"accept-language", 15}};
    const unsigned char *head_end = find_blank(base, stop);
    if (head_end == NULL || head_end - base + 4 > max_bytes) goto done;
    const unsigned char *line_end = find_crlf(base, head_end);
    if (line_end == NULL) goto done; /* no header line: no Host */
    int options;
    const unsigned char *path;
    Py_ssize_t path_len;
    if (!request_line(base, line_end, &options, &path, &path_len)) goto done;
    if (!read_fields(line_end + 2, head_end, icap, N_ICAP, max_fields)) goto done;
    if (!icap[F_HOST].seen || icap[F_CONNECTION].seen) goto done;
    if (icap[F_PREVIEW].seen && !all_digits(icap[F_PREVIEW].value, icap[F_PREVIEW].value_len, 9)) goto done;
    const unsigned char *start = head_end + 4;
    const unsigned char *method = NULL, *target = NULL;
    Py_ssize_t method_len = 0, target_len = 0;
    if (options) {
        if (start != stop || (icap[F_ENCAPSULATED].seen && !equals(&icap[F_ENCAPSULATED], "null-body=0"))) goto done;
    } else {
        const Wanted *e = &icap[F_ENCAPSULATED];
        if (!e->seen || e->value_len < 22 || memcmp(e->value, "req-hdr=0, null-body=", 21) != 0) goto done;
        if (!all_digits(e->value + 21, e->value_len - 21, 9)) goto done;
        long size = digits_value(e->value + 21, e->value_len - 21);
        if (size > max_bytes || stop - start != size) goto done;
        const unsigned char *blank = find_blank(start, stop);
        if (blank == NULL || blank != stop - 4) goto done;
        const unsigned char *http_end = stop - 4;
        const unsigned char *first = find_crlf(start, http_end);
        if (!http_line(start, first ? first : http_end, &method, &method_len, &target, &target_len)) goto done;
        if (first != NULL && !read_fields(first + 2, http_end, http, N_HTTP, max_fields)) goto done;
    }
    PyObject *items[N_FIELDS] = {
        PyUnicode_FromString(options ? "OPTIONS" : "REQMOD"),
        PyUnicode_DecodeASCII((const char *)path, path_len, NULL),
        text_or_none(&icap[F_ALLOW]),
        text_or_none(&icap[F_USER]),
        text_or_none(&icap[F_AUTH]),
        text_or_none(&icap[F_IP]),
        options ? Py_NewRef(Py_None) : PyUnicode_DecodeASCII((const char *)method, method_len, NULL),
        options ? Py_NewRef(Py_None) : PyUnicode_DecodeLatin1((const char *)target, target_len, NULL),
        text_or_none(&http[H_HOST]),
        text_or_none(&http[H_ACCEPT]),
        text_or_none(&http[H_LANGUAGE]),
        PyLong_FromSsize_t(start - base),
    };
    result = build(items);
    PyBuffer_Release(&data);
    PyBuffer_Release(&user);
    return result;
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&user);
    Py_RETURN_NONE;
}

static PyObject *set_result_type(PyObject *module, PyObject *type) {
    if (!PyType_Check(type) || !PyType_IsSubtype((PyTypeObject *)type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "the result type must be a tuple subclass (QuickRequest)");
        return NULL;
    }
    Py_XSETREF(result_type, (PyTypeObject *)Py_NewRef(type));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL, "The quick scan (see _quick.scan)."},
    {"set_result_type", set_result_type, METH_O, "The tuple subclass scan returns (QuickRequest)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_speedups", "The quick scan in C.", -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module_def); }
