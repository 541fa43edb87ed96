/* Optional C++ accelerator for the candidate scan of Masker._find (masking/engine.py).
 *
 * A Scanner holds the two RE2 programs the pure-Python path drives through
 * google-re2's binding: the joined alternation of every single-line rule
 * (searched UNANCHORED) and the RE2::Set of the same rules anchored at both
 * ends (which rules match a candidate span whole). Scanner.scan() does what the
 * Python loop did per candidate with two calls through the binding, for a batch
 * of candidates in one call:
 *
 *     while True:
 *         p, e0 = main.Match(UNANCHORED, data, pos, endpos)   # leftmost-first
 *         k = min(set.Match(data[p:e0])) if e0 - p < window else -1   (-1: no hit)
 *         emit (p, e0, k)
 *         pos = e0 if e0 > p else p + 1
 *
 * With a scan pattern (and side rules), ``main.Match(UNANCHORED, ...)`` above is
 * computed without running the joined pattern's DFA over the text: RE2 builds
 * that DFA lazily, and on base64, hex or other alphanumeric-dense text the
 * rules' leading bounded repetitions (``[A-Za-z0-9_.-]{0,64}password``, an
 * e-mail's local part) keep a thread alive at every start position, so it
 * builds new states all the time (0.2-2 MB/s with every rule on). The scan
 * pattern joins the rules' scan forms, which start at their rare part; the
 * leftmost full match starts at most ``lookback`` bytes before the leftmost
 * scan-form match, so the joined pattern runs from there only (find_next).
 * Side rules are found from a literal anchor (side_start). Same candidates
 * (tests/masking/test_dense.py).
 *
 * It stops after max_candidates candidates or after the first candidate that
 * starts at or past ``limit``, and then appends (-2, -2, -2) ("not searched
 * further"); when a search finds nothing (or pos reaches endpos) it appends
 * (-1, -1, -1) ("no match from here to endpos"). The RE2 options are those of
 * masking/_regex.py (max_mem 64 MiB, log_errors off, never_nl as given, UTF-8).
 *
 * Linked against the system RE2 (Debian libre2-dev); built by setup.py when
 * g++ and the headers are there, otherwise the engine uses the Python loop,
 * which is the reference (tests hold the two to byte-identical output).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <re2/re2.h>
#include <re2/set.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

/* Release the GIL only for a scan over at least this many bytes: for a short
 * field the release/reacquire costs more than the scan. */
constexpr Py_ssize_t kReleaseGil = 4096;

/* Side rules a scanner takes (the built-ins have two). */
constexpr size_t kMaxSides = 4;

/* Rules a scanner checks candidates for (bits of a uint64_t). */
constexpr Py_ssize_t kMaxRules = 64;

/* A rule's validator, as the engine names it (engine._VALIDATOR_CODES). */
constexpr int kNoValidator = 0, kPython = 1, kCard = 2, kIpv6 = 3;

struct Cand {
    Py_ssize_t p, e0;
    int k;
};

struct ScannerObject {
    PyObject_HEAD
    re2::RE2 *main;
    re2::RE2::Set *set;
    Py_ssize_t window;
    int nset;
    /* starts[b]: a match of some rule may start with byte b. Searches skip the
     * bytes no match can start with before asking RE2 (whose DFA steps through
     * every byte, ~2 ns each): a run of NULs or other bytes outside every
     * rule's first-byte range (binary output, /dev/zero) costs a table lookup
     * per byte. Which match is leftmost does not change: none starts in the
     * skipped bytes, and RE2 still sees the text before the new start as
     * context (\b, ^). */
    std::array<bool, 256> starts;
    /* DFA-friendly scan (optional): ``scan`` is the joined pattern with the
     * rules' leading bounded repetitions over broad classes taken off (a
     * keyword, an ``@``, a ``::`` left to find). Its DFA stays small on
     * base64/hex/alphanumeric-dense text, where the full pattern's lazily built
     * DFA explodes (one thread per start position inside every counter, times
     * every rule). Each rule's scan form matches where the rule matches (so a
     * scan match at m means a full match starts at m or before it) and every
     * full match starts at most ``lookback`` bytes before a scan match, over
     * bytes in ``left`` only. The full pattern is then run from that bound
     * only. */
    re2::RE2 *scan;
    Py_ssize_t lookback;
    std::array<bool, 256> left;
    /* Side rules: taken out of both scans' way, found from a literal anchor
     * (``://``, ``Q~``): the rule searched from maxleft bytes before it (see
     * side_start). */
    struct Side {
        std::string anchor;
        re2::RE2 *rule;
        Py_ssize_t maxleft;
        std::array<bool, 256> stop;  // bytes the rule's tail after the anchor never holds
        Py_ssize_t tail;             // the tail's longest length (-1: unbounded)
        Py_ssize_t rare;  // the anchor's byte searched with memchr (see find_anchor)
    };
    std::vector<Side> *sides;
    /* The engine's cheap checks per rule (set order), to pass over candidates
     * the Python loop would only reject (optional; see noop_candidate). */
    struct Check {
        std::array<bool, 256> left;   // bytes that must not precede a match
        std::array<bool, 256> right;  // bytes that must not follow it
        bool dotted, trims, values;
        int validator;                // kNoValidator, kPython (Python's to say), kCard, kIpv6
        int lo, hi;                   // the engine's first-byte range (its slow-path table)
        re2::RE2 *rx;                 // the rule alone (decaptured)
        re2::RE2 *loose;              // ... without its assertions (nullptr: none given)
    };
    std::vector<Check> *checks;
    /* startmask[b]: rules a match may start with b (lo..hi or RE2's start
     * bytes); leftmask[b]: rules whose left boundary refuses b. */
    std::array<uint64_t, 256> startmask, leftmask, rightmask;  // rightmask: refused after
};

re2::RE2::Options make_options(bool never_nl)
{
    re2::RE2::Options opts;
    opts.set_max_mem(int64_t{64} << 20);
    opts.set_log_errors(false);
    opts.set_never_nl(never_nl);
    return opts;
}

void Scanner_dealloc(ScannerObject *self)
{
    delete self->main;
    delete self->set;
    delete self->scan;
    if (self->sides != nullptr)
        for (auto &side : *self->sides)
            delete side.rule;
    delete self->sides;
    if (self->checks != nullptr)
        for (auto &c : *self->checks) {
            delete c.rx;
            delete c.loose;
        }
    delete self->checks;
    Py_TYPE(self)->tp_free(reinterpret_cast<PyObject *>(self));
}

/* What comes before a match start, for RE2's empty-width assertions (\b, \B,
 * ^, (?m)^): the start of the text, a word byte, a newline, another byte. */
const char *const kBefore[] = {"", "a", "\n", " "};
/* ... and what follows an empty match (plus the end of the text, ""). */
const char *const kAfter[] = {"", "a", "\n", " "};

/* Can ``rx`` match the empty string in some context? Then a match may start
 * at any byte. (RE2::FullMatch("") alone misses \bX*\b, which matches empty
 * only between a word byte and another byte.) */
bool matches_empty(const re2::RE2 &rx)
{
    for (const char *before : kBefore)
        for (const char *after : kAfter) {
            const std::string text = std::string(before) + after;
            const size_t at = std::strlen(before);
            if (rx.Match(text, at, at, re2::RE2::ANCHOR_BOTH, nullptr, 0))
                return true;
        }
    return false;
}

/* Add the bytes a non-empty match of ``pattern`` can start with, after each
 * kind of byte before it: RE2's PossibleMatchRange(min, max, n) bounds every
 * match anchored at the start of the text (min <= s <= max), so for the
 * pattern behind a one-byte context C, the second bytes of min and max bound
 * the first byte of a match after C (max may be rounded up to the next byte,
 * or end after C: every byte then). Compiled without never_nl (which would make
 * the newline context unmatchable; the pattern without it matches a superset).
 * False when RE2 cannot say: every byte is then a possible start. */
bool add_starts(const std::string &pattern, const re2::RE2::Options &opts,
                std::array<bool, 256> *starts)
{
    re2::RE2::Options loose = opts;
    loose.set_never_nl(false);
    const re2::RE2 rx(pattern, loose);
    if (!rx.ok() || matches_empty(rx))
        return false;
    for (const char *before : kBefore) {
        const size_t n = std::strlen(before);
        std::string escaped;
        for (const char *c = before; *c; c++)
            escaped += *c == '\n' ? std::string("\\n") : std::string(1, *c);
        const re2::RE2 ctx(escaped + "(?:" + pattern + ")", loose);
        std::string lo, hi;
        if (!ctx.ok() || !ctx.PossibleMatchRange(&lo, &hi, static_cast<int>(n) + 1))
            return false;
        if (lo == before && hi == before)
            continue;  // no match after this context (RE2's walk found no byte to go on)
        if (lo.size() <= n || lo.compare(0, n, before) != 0 || hi.compare(0, n, before) < 0)
            return false;  // not the shape expected: do not guess
        const int first = static_cast<unsigned char>(lo[n]);
        const int last = hi.size() > n && hi.compare(0, n, before) == 0
                             ? static_cast<unsigned char>(hi[n])
                             : 255;
        for (int b = first; b <= last; b++)
            (*starts)[static_cast<size_t>(b)] = true;
    }
    return true;
}

/* The first position in [pos, endpos) whose byte can start a match; endpos if none. */
inline Py_ssize_t next_start(const ScannerObject *self, const char *data, Py_ssize_t pos,
                             Py_ssize_t endpos)
{
    const bool *s = self->starts.data();
    const auto *d = reinterpret_cast<const unsigned char *>(data);
    if (!s[0]) {  // whole words of NULs (/dev/zero, tar padding, sparse files)
        uint64_t w;
        while (pos + 8 <= endpos && (std::memcpy(&w, d + pos, 8), w == 0))
            pos += 8;
    }
    // then eight independent lookups per step, one byte at a time at the end
    while (pos + 8 <= endpos
           && !(s[d[pos]] | s[d[pos + 1]] | s[d[pos + 2]] | s[d[pos + 3]] | s[d[pos + 4]]
                | s[d[pos + 5]] | s[d[pos + 6]] | s[d[pos + 7]]))
        pos += 8;
    while (pos < endpos && !s[d[pos]])
        pos++;
    return pos;
}

int bytes_arg(PyObject *o, std::string *out)
{
    char *buf;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(o, &buf, &len) < 0)
        return -1;
    out->assign(buf, static_cast<size_t>(len));
    return 0;
}

PyObject *Scanner_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static const char *kwlist[] = {"pattern", "set_patterns", "never_nl", "window",
                                   "scan_pattern", "lookback", "left_bytes", "sides", "checks",
                                   nullptr};
    PyObject *pattern_obj, *set_obj;
    PyObject *scan_obj = Py_None, *left_obj = nullptr, *sides_obj = nullptr;
    PyObject *checks_obj = nullptr;
    int never_nl;
    Py_ssize_t window, lookback = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "SOpn|OnSOO:Scanner", const_cast<char **>(kwlist),
                                     &pattern_obj, &set_obj, &never_nl, &window, &scan_obj,
                                     &lookback, &left_obj, &sides_obj, &checks_obj))
        return nullptr;
    std::string pattern;
    if (bytes_arg(pattern_obj, &pattern) < 0)
        return nullptr;
    PyObject *seq = PySequence_Fast(set_obj, "set_patterns must be a sequence of bytes");
    if (seq == nullptr)
        return nullptr;
    std::vector<std::string> set_patterns(static_cast<size_t>(PySequence_Fast_GET_SIZE(seq)));
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        if (bytes_arg(PySequence_Fast_GET_ITEM(seq, i), &set_patterns[static_cast<size_t>(i)]) < 0) {
            Py_DECREF(seq);
            return nullptr;
        }
    }
    Py_DECREF(seq);

    re2::RE2::Options opts = make_options(never_nl != 0);
    std::unique_ptr<re2::RE2> main(new re2::RE2(pattern, opts));
    if (!main->ok()) {
        PyErr_Format(PyExc_ValueError, "invalid RE2 pattern: %s", main->error().c_str());
        return nullptr;
    }
    if (main->NumberOfCapturingGroups() != 0) {
        PyErr_SetString(PyExc_ValueError, "the joined pattern must have no capturing groups");
        return nullptr;
    }
    std::unique_ptr<re2::RE2::Set> set(new re2::RE2::Set(opts, re2::RE2::ANCHOR_BOTH));
    for (const std::string &p : set_patterns) {
        std::string error;
        if (set->Add(p, &error) < 0) {
            PyErr_Format(PyExc_ValueError, "cannot add pattern to RE2 set: %s", error.c_str());
            return nullptr;
        }
    }
    if (!set->Compile()) {
        PyErr_SetString(PyExc_ValueError, "cannot compile RE2 set");
        return nullptr;
    }
    std::array<bool, 256> starts{};
    for (const std::string &p : set_patterns)
        if (!add_starts(p, opts, &starts)) {
            starts.fill(true);
            break;
        }
    std::unique_ptr<re2::RE2> scan;
    if (scan_obj != Py_None) {
        std::string scan_pattern;
        if (bytes_arg(scan_obj, &scan_pattern) < 0)
            return nullptr;
        scan.reset(new re2::RE2(scan_pattern, opts));
        if (!scan->ok()) {
            PyErr_Format(PyExc_ValueError, "invalid RE2 scan pattern: %s", scan->error().c_str());
            return nullptr;
        }
    }
    std::array<bool, 256> left{};
    if (left_obj != nullptr) {
        std::string lb;
        if (bytes_arg(left_obj, &lb) < 0)
            return nullptr;
        for (unsigned char c : lb)
            left[c] = true;
    }
    std::unique_ptr<std::vector<ScannerObject::Side>> sides(new std::vector<ScannerObject::Side>);
    struct SideGuard {  // frees the side programs if construction fails half-way
        std::vector<ScannerObject::Side> *v;
        ~SideGuard()
        {
            if (v != nullptr)
                for (auto &side : *v)
                    delete side.rule;
        }
    } guard{sides.get()};
    if (sides_obj != nullptr && sides_obj != Py_None) {
        PyObject *sseq = PySequence_Fast(sides_obj, "sides must be a sequence");
        if (sseq == nullptr)
            return nullptr;
        if (PySequence_Fast_GET_SIZE(sseq) > static_cast<Py_ssize_t>(kMaxSides)) {
            Py_DECREF(sseq);
            PyErr_SetString(PyExc_ValueError, "too many side rules");
            return nullptr;
        }
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(sseq); i++) {
            PyObject *anchor_o, *rule_o, *stop_o;
            Py_ssize_t maxleft, tail;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(sseq, i), "SSnSn:side", &anchor_o,
                                  &rule_o, &maxleft, &stop_o, &tail)) {
                Py_DECREF(sseq);
                return nullptr;
            }
            std::string anchor, rule, stop;
            if (bytes_arg(anchor_o, &anchor) < 0 || bytes_arg(rule_o, &rule) < 0
                || bytes_arg(stop_o, &stop) < 0) {
                Py_DECREF(sseq);
                return nullptr;
            }
            std::array<bool, 256> stops{};
            for (unsigned char b : stop)
                stops[b] = true;
            // the anchor byte least likely in text: not a letter, digit, space
            // or ':' (timestamps) if it has one, else its last byte
            Py_ssize_t rare = static_cast<Py_ssize_t>(anchor.size()) - 1;
            for (size_t j = 0; j < anchor.size(); j++) {
                const unsigned char b = static_cast<unsigned char>(anchor[j]);
                if (!std::isalnum(b) && b != ' ' && b != ':') {
                    rare = static_cast<Py_ssize_t>(j);
                    break;
                }
            }
            ScannerObject::Side side{anchor, new re2::RE2(rule, opts), maxleft, stops, tail, rare};
            sides->push_back(side);
            if (anchor.empty() || !side.rule->ok()) {
                Py_DECREF(sseq);
                PyErr_SetString(PyExc_ValueError, "invalid side rule");
                return nullptr;
            }
        }
        Py_DECREF(sseq);
    }
    std::unique_ptr<std::vector<ScannerObject::Check>> checks;
    struct CheckGuard {  // frees the rule programs if construction fails half-way
        std::vector<ScannerObject::Check> *v;
        ~CheckGuard()
        {
            if (v != nullptr)
                for (auto &c : *v) {
                    delete c.rx;
                    delete c.loose;
                }
        }
    } cguard{nullptr};
    std::array<uint64_t, 256> startmask{}, leftmask{}, rightmask{};
    if (checks_obj != nullptr && checks_obj != Py_None) {
        PyObject *cseq = PySequence_Fast(checks_obj, "checks must be a sequence");
        if (cseq == nullptr)
            return nullptr;
        const Py_ssize_t nc = PySequence_Fast_GET_SIZE(cseq);
        if (nc != static_cast<Py_ssize_t>(set_patterns.size()) || nc > kMaxRules) {
            Py_DECREF(cseq);
            PyErr_SetString(PyExc_ValueError, "checks: one per set pattern, at most 64");
            return nullptr;
        }
        checks.reset(new std::vector<ScannerObject::Check>);
        cguard.v = checks.get();
        for (Py_ssize_t i = 0; i < nc; i++) {
            PyObject *left_o, *right_o, *loose_o;
            int dotted, trims, values, validator, lo, hi;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(cseq, i), "SSpppiiiS:check", &left_o,
                                  &right_o, &dotted, &trims, &values, &validator, &lo, &hi,
                                  &loose_o)) {
                Py_DECREF(cseq);
                return nullptr;
            }
            std::string lb, rb, loose;
            if (bytes_arg(left_o, &lb) < 0 || bytes_arg(right_o, &rb) < 0
                || bytes_arg(loose_o, &loose) < 0) {
                Py_DECREF(cseq);
                return nullptr;
            }
            ScannerObject::Check c{};
            for (unsigned char b : lb)
                c.left[b] = true;
            for (unsigned char b : rb)
                c.right[b] = true;
            c.dotted = dotted != 0;
            c.trims = trims != 0;
            c.values = values != 0;
            c.validator = validator;
            c.lo = lo;
            c.hi = hi;
            const std::string &pat = set_patterns[static_cast<size_t>(i)];
            c.rx = new re2::RE2(pat, opts);
            c.loose = loose.empty() ? nullptr : new re2::RE2(loose, opts);
            checks->push_back(c);
            if (!c.rx->ok() || (c.loose != nullptr && !c.loose->ok())) {
                Py_DECREF(cseq);
                PyErr_SetString(PyExc_ValueError, "invalid rule pattern in checks");
                return nullptr;
            }
            // the bytes a match may start with: the engine's range, and what
            // RE2 says after each kind of byte (the union: either may be loose)
            std::array<bool, 256> st{};
            if (!add_starts(pat, opts, &st))
                st.fill(true);
            const uint64_t bit = uint64_t{1} << i;
            for (int b = 0; b < 256; b++) {
                if (st[static_cast<size_t>(b)] || (lo <= b && b <= hi))
                    startmask[static_cast<size_t>(b)] |= bit;
                if (c.left[static_cast<size_t>(b)])
                    leftmask[static_cast<size_t>(b)] |= bit;
                if (c.right[static_cast<size_t>(b)])
                    rightmask[static_cast<size_t>(b)] |= bit;
            }
        }
        Py_DECREF(cseq);
    }
    auto *self = reinterpret_cast<ScannerObject *>(type->tp_alloc(type, 0));
    if (self == nullptr)
        return nullptr;
    guard.v = nullptr;
    cguard.v = nullptr;
    self->checks = checks.release();
    self->startmask = startmask;
    self->leftmask = leftmask;
    self->rightmask = rightmask;
    self->scan = scan.release();
    self->lookback = lookback;
    self->left = left;
    self->sides = sides.release();
    self->starts = starts;
    self->main = main.release();
    self->set = set.release();
    self->window = window;
    self->nset = static_cast<int>(set_patterns.size());
    return reinterpret_cast<PyObject *>(self);
}

/* k of a candidate: the lowest set rule matching data[p:e0] whole, -1 if none or
 * if the span is not shorter than the window (the engine's slow path then) */
int set_hit(const ScannerObject *self, const char *data, Py_ssize_t p, Py_ssize_t e0,
            std::vector<int> *hits)
{
    if (e0 - p >= self->window)
        return -1;
    hits->clear();
    self->set->Match(re2::StringPiece(data + p, static_cast<size_t>(e0 - p)), hits);
    return hits->empty() ? -1 : *std::min_element(hits->begin(), hits->end());
}

constexpr Py_ssize_t kInf = PY_SSIZE_T_MAX;
constexpr int kNotYet = -3;  // a candidate's k before its Set call

/* What the searches of one buffer (and endpos) know of a side rule, kept in
 * the Memo across scan calls. */
struct SideCache {
    Py_ssize_t from = -1;    // start: the leftmost rule start >= from ...
    Py_ssize_t start = kInf; // ... among anchors before ``anchors`` (kInf: none)
    Py_ssize_t anchors = 0;
};

/* The first occurrence of the side rule's anchor in data[k:end], -1 if none:
 * memchr for its rarest byte (SIMD; glibc's memmem for a 2-3 byte needle is
 * several times slower, and this runs over all the text between candidates). */
Py_ssize_t find_anchor(const ScannerObject::Side &sd, const char *data, Py_ssize_t k,
                       Py_ssize_t end)
{
    const Py_ssize_t alen = static_cast<Py_ssize_t>(sd.anchor.size());
    const Py_ssize_t r = sd.rare;
    const char c = sd.anchor[static_cast<size_t>(r)];
    for (Py_ssize_t i = k + r; i < end - (alen - 1 - r);) {
        const void *f = std::memchr(data + i, c, static_cast<size_t>(end - (alen - 1 - r) - i));
        if (f == nullptr)
            return -1;
        const Py_ssize_t at = static_cast<const char *>(f) - data - r;
        if (std::memcmp(data + at, sd.anchor.data(), static_cast<size_t>(alen)) == 0)
            return at;
        i = at + r + 1;
    }
    return -1;
}

/* What the searches of one buffer learnt, kept across scan calls (the engine
 * passes the same memo for one buffer and endpos; positions only grow): the
 * leftmost scan-form match from ``from`` and each side rule's cache. Without
 * it, a run of side-rule candidates (Azure-like secrets that fail their
 * boundary checks) in text without a scan-form match would search the rest of
 * the text again for every candidate. */
struct Memo {
    const char *data;
    Py_ssize_t n, endpos;
    Py_ssize_t from, ms;  // ms: leftmost scan-form start >= from (kInf: none)
    SideCache sides[kMaxSides];
    /* No match of rule r (with its assertions taken out, which matches
     * wherever the rule does, in any context) starts in [absent_at[r],
     * endpos) (kInf: not known); asked_until != 0: asked (not again);
     * ``blocked``: how often the rule kept a position from being passed over
     * since blocked_since (asked only when that is dense: see absent). */
    Py_ssize_t absent_at[kMaxRules];
    Py_ssize_t asked_until[kMaxRules], blocked_since[kMaxRules];
    int blocked[kMaxRules];
    Py_ssize_t nl_from, nl;  // the first newline at or after nl_from (n: none)
};

void memo_reset(Memo *memo, const char *data, Py_ssize_t n, Py_ssize_t endpos)
{
    *memo = Memo{};
    memo->data = data;
    memo->n = n;
    memo->endpos = endpos;
    memo->from = -1;
    for (Py_ssize_t &a : memo->absent_at)
        a = kInf;
    memo->nl_from = -1;
}

/* The memo for a scan of data[:n] to endpos: the caller's (kept for one
 * buffer: reset if it was another's), else ``local``, always reset. (A stack
 * Memo left uninitialised once kept what an earlier call had learnt of
 * another buffer that happened to sit at the same address with the same
 * length, and a match there went unmasked.) */
Memo *memo_for(Memo *given, Memo *local, const char *data, Py_ssize_t n, Py_ssize_t endpos)
{
    Memo *memo = given != nullptr ? given : local;
    if (given == nullptr || memo->data != data || memo->n != n || memo->endpos != endpos)
        memo_reset(memo, data, n, endpos);
    return memo;
}

/* The leftmost start >= x of a side rule, if it is below hi (else kInf).
 *
 * Every match of a side rule starts at most maxleft bytes before its anchor,
 * its tail (after the anchor) holds no ``stop`` byte, and a later start has a
 * later anchor (recognizers.SideForm). So for the anchors
 * before limit (the ones a start below hi can have), one search of the rule
 * from maxleft bytes before the first of them, ending at a stop byte after
 * the last, sees each of their matches whole: a dense run of anchors whose
 * tails fail ("ab://ab://...") costs one DFA pass, not calls per anchor. */
Py_ssize_t side_start(const ScannerObject::Side &sd, SideCache *c, const char *data,
                      const re2::StringPiece &text, Py_ssize_t x, Py_ssize_t endpos,
                      Py_ssize_t hi)
{
    if (c->from >= 0 && x >= c->from && c->start != kInf && x <= c->start)
        return c->start < hi ? c->start : kInf;
    if (c->from < 0 || x < c->from || c->start != kInf)
        c->anchors = x;  // start over from x (no knowledge, or went past the start)
    c->from = x;
    c->start = kInf;
    const Py_ssize_t alen = static_cast<Py_ssize_t>(sd.anchor.size());
    // an anchor at or after this cannot have a start below hi
    const Py_ssize_t limit =
        hi >= endpos ? endpos : std::min(endpos, hi + sd.maxleft + alen);
    const Py_ssize_t from = std::max(c->anchors, x);
    const Py_ssize_t k =
        from < limit ? find_anchor(sd, data, from, std::min(endpos, limit + alen - 1)) : -1;
    if (k < 0) {
        c->anchors = std::max(c->anchors, limit);
        return kInf;
    }
    const auto *d = reinterpret_cast<const unsigned char *>(data);
    Py_ssize_t w = std::max(limit + alen - 1, k + alen);
    // (a tail of bounded length ends before the cap: a long run without a
    // stop byte is not walked again for every candidate)
    const Py_ssize_t cap = sd.tail < 0 ? endpos : std::min(endpos, w + sd.tail);
    while (w < cap && !sd.stop[d[w]])
        w++;
    w = std::min(w, endpos);
    re2::StringPiece m;
    if (sd.rule->Match(text, static_cast<size_t>(std::max(x, k - sd.maxleft)),
                       static_cast<size_t>(w), re2::RE2::UNANCHORED, &m, 1)) {
        // the leftmost start >= x even if it is not below hi: a start before
        // it would have an earlier anchor (the rule's promise), inside the window
        const Py_ssize_t q = m.data() - data;
        c->start = q;
        return q < hi ? q : kInf;
    }
    c->anchors = std::max(c->anchors, limit);
    return kInf;
}

/* The leftmost match of the joined pattern in [pos, endpos] (what one unanchored
 * search of it finds), via the DFA-friendly scan pattern and side rules. */
bool find_next(const ScannerObject *self, const char *data, const re2::StringPiece &text,
               Py_ssize_t pos, Py_ssize_t endpos, Memo *memo, Py_ssize_t *p, Py_ssize_t *e0)
{
    re2::StringPiece m;
    Py_ssize_t ms = kInf;
    const Py_ssize_t from = next_start(self, data, pos, endpos);
    if (memo->from >= 0 && memo->from <= from && from <= memo->ms) {
        ms = memo->ms;  // still the leftmost from here
    } else {
        if (self->scan != nullptr && from < endpos
            && self->scan->Match(text, static_cast<size_t>(from), static_cast<size_t>(endpos),
                                 re2::RE2::UNANCHORED, &m, 1))
            ms = m.data() - data;
        memo->from = from;
        memo->ms = ms;
    }
    // a full match that starts before ms does so over ``left`` bytes, at most
    // lookback bytes before it
    Py_ssize_t s = ms;
    if (ms != kInf) {
        const Py_ssize_t floor = std::max(pos, ms - self->lookback);
        const auto *d = reinterpret_cast<const unsigned char *>(data);
        while (s > floor && self->left[d[s - 1]])
            s--;
    }
    Py_ssize_t u = kInf;
    for (size_t i = 0; i < self->sides->size(); i++)
        u = std::min(u, side_start((*self->sides)[i], &memo->sides[i], data, text, pos, endpos,
                                   std::min(s, u)));
    if (ms == kInf && u == kInf)
        return false;
    bool ok;
    if (u < s)  // a side rule's start, before any scan-form rule's
        ok = self->main->Match(text, static_cast<size_t>(u), static_cast<size_t>(endpos),
                               re2::RE2::ANCHOR_START, &m, 1);
    else if (s < ms)  // a match starts in [s, ms]: one short search
        ok = self->main->Match(text, static_cast<size_t>(s), static_cast<size_t>(endpos),
                               re2::RE2::UNANCHORED, &m, 1)
             && m.data() - data <= ms;
    else
        ok = self->main->Match(text, static_cast<size_t>(ms), static_cast<size_t>(endpos),
                               re2::RE2::ANCHOR_START, &m, 1);
    if (!ok  // cannot happen if the scan forms keep their promises: the plain search
        && !self->main->Match(text, static_cast<size_t>(pos), static_cast<size_t>(endpos),
                              re2::RE2::UNANCHORED, &m, 1))
        return false;
    *p = m.data() - data;
    *e0 = *p + static_cast<Py_ssize_t>(m.size());
    return true;
}


/* ---- candidates the Python loop would only reject ------------------------
 *
 * Masker._find confirms a candidate (p, e0, k) in Python: rule k's left
 * boundary (the byte before p), its right boundary (the byte at e0, unless
 * its validator may trim), its validator; if k fails, each later rule whose
 * first-byte range holds data[p] is matched anchored at p (to line_end: the
 * next newline, p + window or endpos) and confirmed the same way; if none
 * passes, nothing is masked at p and the loop goes on from p + 1. Input that
 * makes such a candidate every few bytes ('a::' repeated: an IPv6 '::' form
 * glued to the next) cost several Python-level steps per byte (0.3 MB/s). The
 * checks below are the ones that need no Python (boundaries, matches, a rule
 * absent from the rest of the text); a candidate they all refuse is not
 * returned, and the search goes on from p + 1, as the loop would. Whether
 * nothing happens at p depends on p only (its match, line, bytes), not on
 * where the search started, so a batched candidate still answers a search
 * from anywhere between the previous one's end and its start. */

inline bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* validators.card's digit test: 13-19 digits, the first 2-6, not both
 * separators, Luhn. ``v`` holds only digits, spaces and dashes (the card
 * pattern's bytes). */
bool card_digits_ok(const unsigned char *v, Py_ssize_t len)
{
    bool space = false, dash = false;
    int digits = 0, total = 0;
    unsigned char first = 0;
    // Luhn from the right: every second digit doubled (digit sum of 2d)
    static const int kDouble[10] = {0, 2, 4, 6, 8, 1, 3, 5, 7, 9};
    for (Py_ssize_t i = len - 1; i >= 0; i--) {
        const unsigned char c = v[i];
        if (c == ' ') {
            space = true;
        } else if (c == '-') {
            dash = true;
        } else {
            const int dv = c - '0';
            total += digits % 2 == 0 ? dv : kDouble[dv];
            digits++;
            first = c;
        }
    }
    if (digits < 13 || digits > 19 || first < '2' || first > '6' || (space && dash))
        return false;
    return total % 10 == 0;
}

/* validators.card: the accepted length, 0 if refused. */
Py_ssize_t card_length(const unsigned char *v, Py_ssize_t len)
{
    if (card_digits_ok(v, len))
        return len;
    for (Py_ssize_t i = len - 1; i > 12; i--)
        if ((v[i] == ' ' || v[i] == '-') && card_digits_ok(v, i))
            return i;
    return 0;
}

/* The rule's validator on data[p:e]: the accepted length, 0 if refused, -1 if
 * only Python can say. */
Py_ssize_t validate(int validator, const unsigned char *d, Py_ssize_t p, Py_ssize_t e)
{
    if (validator == kIpv6) {
        // validators.ipv6 refuses a value with fewer than 4 bytes other than ':'
        // and '.' whether it parses or not ("::.::.::" repeated made a
        // candidate every three bytes for Python to refuse); the rest is
        // Python's (the standard library's parser)
        int strong = 0;
        for (Py_ssize_t i = p; i < e && strong < 4; i++)
            strong += d[i] != ':' && d[i] != '.';
        return strong < 4 ? 0 : -1;
    }
    if (validator != kCard)
        return -1;
    for (Py_ssize_t i = p; i < e; i++)  // (what the card pattern matches; else Python's)
        if (!is_digit(d[i]) && d[i] != ' ' && d[i] != '-')
            return -1;
    return card_length(d + p, e - p);
}

/* A match of a rule ending at e is refused by its right boundary. */
inline bool refused_after(const ScannerObject::Check &c, const unsigned char *d, Py_ssize_t n,
                          Py_ssize_t e)
{
    return e < n && (c.right[d[e]] || (c.dotted && d[e] == '.' && e + 1 < n && is_digit(d[e + 1])));
}

/* The first newline at or after p (n if none), kept in the memo: a long line
 * is searched once, not once per candidate. */
Py_ssize_t next_nl(Memo *memo, const char *data, Py_ssize_t n, Py_ssize_t p)
{
    if (memo->nl_from < 0 || p < memo->nl_from || p > memo->nl) {
        const void *f = std::memchr(data + p, '\n', static_cast<size_t>(n - p));
        memo->nl = f != nullptr ? static_cast<const char *>(f) - data : n;
        memo->nl_from = p;
    }
    return memo->nl;
}

/* Rule r has no match starting at p or later (to endpos)? Asked of the rule
 * without assertions (which matches wherever the rule does, in any context:
 * with the text around it, or alone as the Set sees a candidate), once per
 * buffer, and only when the rule blocked 8 positions within 1 KiB: text with
 * few rejected candidates pays nothing (a rule absent from a long buffer
 * costs a pass over the rest of it). */
bool absent(const ScannerObject *self, size_t r, const re2::StringPiece &text, Py_ssize_t p,
            Py_ssize_t endpos, Memo *memo, bool ask)
{
    if (memo->absent_at[r] <= p)
        return true;
    const ScannerObject::Check &c = (*self->checks)[r];
    if (!ask || c.loose == nullptr || memo->asked_until[r] != 0)
        return false;
    if (p - memo->blocked_since[r] > 1024) {
        memo->blocked_since[r] = p;
        memo->blocked[r] = 0;
    }
    if (++memo->blocked[r] < 8)
        return false;
    memo->asked_until[r] = endpos;
    if (c.loose->Match(text, static_cast<size_t>(p), static_cast<size_t>(endpos),
                       re2::RE2::UNANCHORED, nullptr, 0))
        return false;
    memo->absent_at[r] = p;
    return true;
}

/* Nothing can happen at x whatever candidate starts there: every rule that
 * may start with data[x] is refused by the byte before it or absent. */
bool pass_over(const ScannerObject *self, const char *data, const re2::StringPiece &text,
               Py_ssize_t x, Py_ssize_t endpos, Memo *memo)
{
    const auto *d = reinterpret_cast<const unsigned char *>(data);
    uint64_t mask = self->startmask[d[x]];
    if (x > 0)
        mask &= ~self->leftmask[d[x - 1]];
    while (mask != 0) {
        const int r = __builtin_ctzll(mask);
        if (!absent(self, static_cast<size_t>(r), text, x, endpos, memo, true))
            return false;
        mask &= mask - 1;
    }
    return true;
}

/* Rule r (tried anchored at p by the Python slow path) would not be accepted. */
bool refused(const ScannerObject *self, size_t r, const char *data, Py_ssize_t n,
             const re2::StringPiece &text, Py_ssize_t p, Py_ssize_t line_end, Py_ssize_t endpos,
             Memo *memo)
{
    const ScannerObject::Check &c = (*self->checks)[r];
    const auto *d = reinterpret_cast<const unsigned char *>(data);
    if (p > 0 && c.left[d[p - 1]])
        return true;
    if (absent(self, r, text, p, endpos, memo, false))
        return true;
    re2::StringPiece m;
    if (line_end <= p
        || !c.rx->Match(text, static_cast<size_t>(p), static_cast<size_t>(line_end),
                        re2::RE2::ANCHOR_START, &m, 1))
        return true;
    Py_ssize_t e = p + static_cast<Py_ssize_t>(m.size());
    if (c.validator != kNoValidator) {
        // (Python's _accept: the validator, then the byte after what it took)
        const Py_ssize_t v = c.validator == kPython ? -1 : validate(c.validator, d, p, e);
        if (v < 0)
            return false;  // Python's to say
        if (v == 0)
            return true;
        e = p + v;
    }
    return refused_after(c, d, n, e);
}

/* Can a candidate be refused by a boundary at all (cheap, before its Set
 * call)? A real value is mostly followed by a byte no rule refuses (space,
 * quote, newline), so its Set call stays after the searches (see scan_loop).
 * A span that starts with a digit and is long enough for a card number is
 * asked about too, whatever is around it: its validator runs here (validate)
 * instead of in Python. (A run of "1 1 1 ..." made a card candidate that
 * fails the validator every two bytes: 0.16 MB/s with personal data on.)
 * An empty candidate at the end of the data (p == n: scan returns one when
 * limit > n) has no byte at p to look up, nor after it: it is kept (and
 * noop_candidate, which reads d[p] too, is never asked about it). */
inline bool maybe_noop(const ScannerObject *self, const char *data, Py_ssize_t n, Py_ssize_t p,
                       Py_ssize_t e0)
{
    const auto *d = reinterpret_cast<const unsigned char *>(data);
    return p < n
           && ((p > 0 && (self->leftmask[d[p - 1]] & self->startmask[d[p]]) != 0)
               || (e0 < n && (self->rightmask[d[e0]] != 0 || d[e0] == '.'))
               || (e0 - p >= 13 && is_digit(d[p])));
}

/* The Python loop would mask nothing at p (candidate p..e0 of rule k, -1: none
 * named) and go on from p + 1. */
bool noop_candidate(const ScannerObject *self, const char *data, Py_ssize_t n,
                    const re2::StringPiece &text, Py_ssize_t p, Py_ssize_t e0, int k,
                    Py_ssize_t endpos, Memo *memo)
{
    const auto *d = reinterpret_cast<const unsigned char *>(data);
    size_t first = 0;
    if (k >= 0) {
        const ScannerObject::Check &c = (*self->checks)[static_cast<size_t>(k)];
        // a rule with value groups is dropped (every rule tried) if its own
        // regex does not match the span in context
        if (c.values
            && !c.rx->Match(text, static_cast<size_t>(p), static_cast<size_t>(e0),
                            re2::RE2::ANCHOR_BOTH, nullptr, 0))
            return false;
        // the fast path: the left boundary, the right one (unless the
        // validator may trim), the validator, then the byte after what it took
        bool out = (p > 0 && c.left[d[p - 1]]) || (!c.trims && refused_after(c, d, n, e0));
        if (!out && c.validator != kNoValidator) {
            const Py_ssize_t v = c.validator == kPython ? -1 : validate(c.validator, d, p, e0);
            if (v < 0)
                return false;  // Python's to say
            out = v == 0 || (c.trims && refused_after(c, d, n, p + v));
        }
        if (!out)
            return false;
        first = static_cast<size_t>(k) + 1;
    }
    const Py_ssize_t line_end =
        std::min(next_nl(memo, data, n, p), std::min(p + self->window, endpos));
    const int b = d[p];
    for (size_t r = first; r < self->checks->size(); r++) {
        const ScannerObject::Check &c = (*self->checks)[r];
        if (b < c.lo || b > c.hi)
            continue;  // not in the slow path's table
        if (!refused(self, r, data, n, text, p, line_end, endpos, memo))
            return false;
    }
    return true;
}

/* false: out of memory (no exception escapes: this may run without the GIL) */
bool scan_loop(const ScannerObject *self, const char *data, Py_ssize_t n, Py_ssize_t pos,
               Py_ssize_t endpos, Py_ssize_t limit, Py_ssize_t max_candidates,
               std::vector<Cand> *out, Memo *memo) noexcept
try {
    out->reserve(static_cast<size_t>(std::min<Py_ssize_t>(max_candidates, 16) + 1));
    const re2::StringPiece text(data, static_cast<size_t>(n));
    re2::StringPiece m;
    const bool split = self->scan != nullptr || !self->sides->empty();
    std::vector<int> hits;
    Memo local;
    memo = memo_for(memo, &local, data, n, endpos);
    for (;;) {
        Py_ssize_t p, e0;
        if (split) {
            if (pos >= endpos || !find_next(self, data, text, pos, endpos, memo, &p, &e0)) {
                out->push_back({-1, -1, -1});
                break;
            }
        } else {
            pos = next_start(self, data, pos, endpos);
            if (pos >= endpos
                || !self->main->Match(text, static_cast<size_t>(pos),
                                      static_cast<size_t>(endpos), re2::RE2::UNANCHORED, &m,
                                      1)) {
                out->push_back({-1, -1, -1});
                break;
            }
            p = m.data() - data;
            e0 = p + static_cast<Py_ssize_t>(m.size());
        }
        int k = kNotYet;
        if (self->checks != nullptr && p < limit && maybe_noop(self, data, n, p, e0)) {
            k = set_hit(self, data, p, e0, &hits);
            if (noop_candidate(self, data, n, text, p, e0, k, endpos, memo)) {
                // what the loop would do: nothing here, go on from p + 1 (and
                // past the bytes where nothing can happen either)
                pos = p + 1;
                const Py_ssize_t stop = std::min(endpos, limit);
                while (pos < stop && pass_over(self, data, text, pos, endpos, memo))
                    pos++;
                continue;
            }
        }
        out->push_back({p, e0, k});
        if (p >= limit || static_cast<Py_ssize_t>(out->size()) >= max_candidates) {
            out->push_back({-2, -2, -2});
            break;
        }
        pos = e0 > p ? e0 : p + 1;
    }
    // The Set calls after the searches, one after the other: interleaved with
    // the searches each would run with a cold cache (several times slower on
    // text where candidates are far apart).
    for (size_t i = 0; i + 1 < out->size(); i++) {
        Cand &c = (*out)[i];
        if (c.k == kNotYet)
            c.k = set_hit(self, data, c.p, c.e0, &hits);
    }
    return true;
} catch (const std::bad_alloc &) {
    return false;
}

/* The optional memo argument: a bytearray of MEMO_SIZE bytes that the caller
 * keeps for one buffer (None: *memo is left alone). false: TypeError set. */
bool memo_arg(PyObject *arg, const char *who, Memo **memo)
{
    if (arg == Py_None)
        return true;
    if (!PyByteArray_Check(arg)
        || PyByteArray_GET_SIZE(arg) < static_cast<Py_ssize_t>(sizeof(Memo))) {
        PyErr_Format(PyExc_TypeError, "%s: memo must be a bytearray(MEMO_SIZE)", who);
        return false;
    }
    *memo = reinterpret_cast<Memo *>(PyByteArray_AS_STRING(arg));
    return true;
}

/* ``count`` integer arguments into v. false: the exception is set. */
bool ssize_args(PyObject *const *args, int count, Py_ssize_t *v)
{
    for (int i = 0; i < count; i++) {
        v[i] = PyLong_AsSsize_t(args[i]);
        if (v[i] == -1 && PyErr_Occurred())
            return false;
    }
    return true;
}

PyObject *Scanner_scan(ScannerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 && nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "scan(data, pos, endpos, limit, max_candidates[, memo]) takes 5 or 6 "
                        "arguments");
        return nullptr;
    }
    Memo *memo = nullptr;
    Py_ssize_t v[4];
    if (!memo_arg(nargs == 6 ? args[5] : Py_None, "scan", &memo) || !ssize_args(args + 1, 4, v))
        return nullptr;
    Py_ssize_t pos = v[0], endpos = v[1], limit = v[2], max_candidates = v[3];
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return nullptr;
    if (pos < 0 || endpos > view.len || max_candidates < 1) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "scan: need 0 <= pos, endpos <= len(data), max >= 1");
        return nullptr;
    }
    std::vector<Cand> cands;
    const char *data = static_cast<const char *>(view.buf);
    bool ok;
    if (endpos - pos >= kReleaseGil) {
        Py_BEGIN_ALLOW_THREADS
        ok = scan_loop(self, data, view.len, pos, endpos, limit, max_candidates, &cands, memo);
        Py_END_ALLOW_THREADS
    } else {
        ok = scan_loop(self, data, view.len, pos, endpos, limit, max_candidates, &cands, memo);
    }
    PyBuffer_Release(&view);
    if (!ok)
        return PyErr_NoMemory();
    PyObject *list = PyList_New(static_cast<Py_ssize_t>(cands.size()));
    if (list == nullptr)
        return nullptr;
    for (size_t i = 0; i < cands.size(); i++) {
        PyObject *t = PyTuple_New(3);
        if (t == nullptr) {
            Py_DECREF(list);
            return nullptr;
        }
        PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), t);
        PyObject *a = PyLong_FromSsize_t(cands[i].p);
        PyObject *b = a ? PyLong_FromSsize_t(cands[i].e0) : nullptr;
        PyObject *c = b ? PyLong_FromLong(cands[i].k) : nullptr;
        if (c == nullptr) {
            Py_XDECREF(a);
            Py_XDECREF(b);
            Py_DECREF(list);
            return nullptr;
        }
        PyTuple_SET_ITEM(t, 0, a);
        PyTuple_SET_ITEM(t, 1, b);
        PyTuple_SET_ITEM(t, 2, c);
    }
    return list;
}

/* first_before(data, pos, stop, endpos) -> (p, e0, k) or None
 *
 * The leftmost match of the joined pattern from pos if it starts before stop:
 * one anchored match at each start in [pos, stop), the first that matches is
 * the leftmost-first match there (what an unanchored search from pos finds when
 * no match starts earlier). None: no match starts in [pos, stop). For the gap
 * between a rejected candidate and the next batched one, this costs a few
 * short anchored runs instead of searching the text up to the next candidate
 * again. */
PyObject *Scanner_first_before(ScannerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "first_before(data, pos, stop, endpos[, memo]) takes 4 or 5 arguments");
        return nullptr;
    }
    Memo *memo = nullptr;
    Py_ssize_t v[3];
    if (!memo_arg(nargs == 5 ? args[4] : Py_None, "first_before", &memo)
        || !ssize_args(args + 1, 3, v))
        return nullptr;
    Py_ssize_t pos = v[0], stop = v[1], endpos = v[2];
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return nullptr;
    if (pos < 0 || endpos > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "first_before: need 0 <= pos, endpos <= len(data)");
        return nullptr;
    }
    const char *data = static_cast<const char *>(view.buf);
    const Py_ssize_t n = view.len;
    const re2::StringPiece text(data, static_cast<size_t>(n));
    re2::StringPiece m;
    Py_ssize_t p = -1, e0 = -1;
    int k = -1;
    if (stop > endpos)
        stop = endpos;
    Memo local;
    memo = memo_for(memo, &local, data, n, endpos);
    try {
        std::vector<int> hits;
        for (Py_ssize_t s = pos; s < stop; s++) {
            if (!self->starts[static_cast<unsigned char>(data[s])]
                || (self->checks != nullptr && pass_over(self, data, text, s, endpos, memo))
                || !self->main->Match(text, static_cast<size_t>(s), static_cast<size_t>(endpos),
                                      re2::RE2::ANCHOR_START, &m, 1))
                continue;
            const Py_ssize_t e = s + static_cast<Py_ssize_t>(m.size());
            k = set_hit(self, data, s, e, &hits);
            // (a candidate the loop would only reject: on to the next byte)
            if (self->checks != nullptr && maybe_noop(self, data, n, s, e)
                && noop_candidate(self, data, n, text, s, e, k, endpos, memo))
                continue;
            p = s;
            e0 = e;
            break;
        }
    } catch (const std::bad_alloc &) {
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    PyBuffer_Release(&view);
    if (p < 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(nni)", p, e0, k);
}

PyMethodDef Scanner_methods[] = {
    {"scan", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Scanner_scan)),
     METH_FASTCALL,
     "scan(data, pos, endpos, limit, max_candidates[, memo]) -> list of (p, e0, k)\n\n"
     "Candidates of the joined pattern from pos (each searched from the previous one's\n"
     "end, or one byte later after an empty match), each with k = the lowest set rule\n"
     "matching data[p:e0] whole (-1: none, or the span is not shorter than window);\n"
     "ends with (-1, -1, -1) (no further match before endpos) or (-2, -2, -2)\n"
     "(stopped: max_candidates reached or a candidate starts at or past limit).\n"
     "memo: a bytearray(MEMO_SIZE) kept by the caller for the calls over one buffer."},
    {"first_before",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(Scanner_first_before)),
     METH_FASTCALL,
     "first_before(data, pos, stop, endpos[, memo]) -> (p, e0, k) or None\n\n"
     "The leftmost candidate from pos (to endpos) if it starts before stop, found by an\n"
     "anchored match at each position in [pos, stop); None if none starts there.\n"
     "Candidates the engine's loop would only reject are passed over (scan too)."},
    {nullptr, nullptr, 0, nullptr},
};

PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(nullptr, 0)
};

PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "masking._re2scan",
    "Batched RE2 candidate scan for masking.engine (optional accelerator).", -1, nullptr,
    nullptr, nullptr, nullptr, nullptr,
};

}  // namespace

PyMODINIT_FUNC PyInit__re2scan(void)
{
    ScannerType.tp_name = "masking._re2scan.Scanner";
    ScannerType.tp_basicsize = sizeof(ScannerObject);
    ScannerType.tp_dealloc = reinterpret_cast<destructor>(Scanner_dealloc);
    ScannerType.tp_flags = Py_TPFLAGS_DEFAULT;
    ScannerType.tp_doc =
        "Scanner(pattern, set_patterns, never_nl, window): the joined pattern and the\n"
        "RE2::Set (anchored at both ends) of masking.engine's single-line rules.";
    ScannerType.tp_methods = Scanner_methods;
    ScannerType.tp_new = Scanner_new;
    if (PyType_Ready(&ScannerType) < 0)
        return nullptr;
    PyObject *mod = PyModule_Create(&moduledef);
    if (mod == nullptr)
        return nullptr;
    if (PyModule_AddIntConstant(mod, "MEMO_SIZE", static_cast<long>(sizeof(Memo))) < 0) {
        Py_DECREF(mod);
        return nullptr;
    }
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(mod, "Scanner", reinterpret_cast<PyObject *>(&ScannerType)) < 0) {
        Py_DECREF(&ScannerType);
        Py_DECREF(mod);
        return nullptr;
    }
    return mod;
}
