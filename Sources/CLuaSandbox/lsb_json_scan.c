/*
 * Byte-level JSON: UTF-8 helpers, a structure-only scanner used to split a JSON array into
 * its elements and to find one field of an object without building Lua values, and the
 * validating scanner every event goes through once (lsb_json_validate, lsb_json_envelope).
 */
#include "lsb_internal.h"
#include "lsb_json.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

size_t lsb_utf8_seq(const char *s, const char *end) {
    const unsigned char *p = (const unsigned char *)s;
    size_t avail = (size_t)(end - s);
    unsigned c = p[0];
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return avail >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (avail < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0;   /* overlong */
        if (c == 0xED && p[1] > 0x9F) return 0;   /* surrogates */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (avail < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0;   /* overlong */
        if (c == 0xF4 && p[1] > 0x8F) return 0;   /* > U+10FFFF */
        return 4;
    }
    return 0;
}

int lsb_utf8_valid(const char *s, size_t n) {
    const char *end = s + n;
    while (s < end) {
        if ((unsigned char)*s < 0x80) { s++; continue; }
        size_t k = lsb_utf8_seq(s, end);
        if (!k) return 0;
        s += k;
    }
    return 1;
}

size_t lsb_utf8_put(unsigned cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int hex4(const char *p, const char *end, unsigned *v) {
    if (end - p < 4) return -1;
    unsigned r = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        r <<= 4;
        if (c >= '0' && c <= '9') r |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') r |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') r |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *v = r;
    return 0;
}

int lsb_json_unescape(const char **pp, const char *end, unsigned *cp) {
    const char *p = *pp + 1;
    if (p >= end) return -1;
    switch (*p) {
    case '"': *cp = '"'; break;
    case '\\': *cp = '\\'; break;
    case '/': *cp = '/'; break;
    case 'b': *cp = '\b'; break;
    case 'f': *cp = '\f'; break;
    case 'n': *cp = '\n'; break;
    case 'r': *cp = '\r'; break;
    case 't': *cp = '\t'; break;
    case 'u': {
        unsigned hi;
        if (hex4(p + 1, end, &hi)) return -1;
        p += 5;
        if (hi >= 0xDC00 && hi <= 0xDFFF) return -2;
        if (hi >= 0xD800 && hi <= 0xDBFF) {
            unsigned lo;
            if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                return -2;
            hi = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
        }
        *cp = hi;
        *pp = p;
        return 0;
    }
    default: return -1;
    }
    *pp = p + 1;
    return 0;
}

/* ---- structure-only scanner (lsb_json_split_array*, lsb_json_object_field) ----
 * Grammar only: bytes >= 0x80 in strings and the range of numbers are left to a per-element
 * check (the validator below, or the decoder). */

typedef struct {
    const char *start, *p, *end;
    char msg[160];
} sc;

static int sfail(sc *s, const char *what) {
    snprintf(s->msg, sizeof s->msg, "invalid JSON at byte %zu: %s", (size_t)(s->p - s->start), what);
    return -1;
}

static void sws(sc *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) s->p++;
}

static int sstring(sc *s) {
    s->p++;
    while (s->p < s->end) {
        s->p = lsb_skip_plain(s->p, s->end);
        if (s->p >= s->end) break;
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') { s->p++; return 0; }
        if (c < 0x20) return sfail(s, "control character in string");
        if (c == '\\') {
            unsigned cp;
            int r = lsb_json_unescape(&s->p, s->end, &cp);
            if (r) return sfail(s, r == -2 ? "lone UTF-16 surrogate in \\u escape" : "invalid escape");
            continue;
        }
        s->p++;   /* a byte >= 0x80: UTF-8 is checked where the value is used */
    }
    return sfail(s, "unterminated string");
}

static int sdigits(sc *s) {
    if (s->p >= s->end || *s->p < '0' || *s->p > '9') return sfail(s, "bad number");
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
    return 0;
}

static int snumber(sc *s) {
    if (*s->p == '-') s->p++;
    if (s->p < s->end && *s->p == '0') s->p++;
    else if (sdigits(s)) return -1;
    if (s->p < s->end && *s->p == '.') { s->p++; if (sdigits(s)) return -1; }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
        if (sdigits(s)) return -1;
    }
    return 0;
}

static int sscalar(sc *s) {
    char c = *s->p;
    if (c == '"') return sstring(s);
    if (c == '-' || (c >= '0' && c <= '9')) return snumber(s);
    const char *w = c == 't' ? "true" : c == 'f' ? "false" : c == 'n' ? "null" : NULL;
    if (!w) return sfail(s, "unexpected character");
    size_t n = strlen(w);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n)) return sfail(s, "unexpected token");
    s->p += n;
    return 0;
}

/* Expects `"key" :` inside an object. */
static int skey(sc *s) {
    sws(s);
    if (s->p >= s->end || *s->p != '"') return sfail(s, "expected a string key");
    if (sstring(s)) return -1;
    sws(s);
    if (s->p >= s->end || *s->p != ':') return sfail(s, "expected ':'");
    s->p++;
    return 0;
}

/* Validates one value's structure without recursion and without a depth limit (one bit of
 * host memory per level), so one absurdly deep element cannot fail a whole request: the
 * per-element decode rejects it on its own. */
static int svalue_flat(sc *s) {
    uint64_t small[8], *objects = small;   /* bit set: that level is an object */
    size_t cap = sizeof small * 8, depth = 0;
    int rc = -1;
    for (;;) {
        /* a value is expected here */
        sws(s);
        if (s->p >= s->end) { sfail(s, "unexpected end of input"); goto out; }
        char c = *s->p;
        int closed = 0;
        if (c == '{' || c == '[') {
            s->p++;
            if (depth == cap) {
                uint64_t *grown = malloc(cap * 2 / 64 * sizeof *grown);   /* twice the bits */
                if (!grown) { snprintf(s->msg, sizeof s->msg, "out of memory"); goto out; }
                memcpy(grown, objects, cap / 8);
                if (objects != small) free(objects);
                objects = grown;
                cap *= 2;
            }
            if (c == '{') objects[depth / 64] |= (uint64_t)1 << (depth % 64);
            else objects[depth / 64] &= ~((uint64_t)1 << (depth % 64));
            depth++;
            sws(s);
            if (s->p < s->end && *s->p == (c == '{' ? '}' : ']')) {
                s->p++;
                depth--;
                closed = 1;
            } else {
                if (c == '{' && skey(s)) goto out;
                continue;
            }
        }
        if (!closed && sscalar(s)) goto out;
        /* after a value: close containers or move to the next element */
        for (;;) {
            if (depth == 0) { rc = 0; goto out; }
            int obj = (int)((objects[(depth - 1) / 64] >> ((depth - 1) % 64)) & 1);
            sws(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
                if (obj && skey(s)) goto out;
                break;
            }
            if (s->p < s->end && *s->p == (obj ? '}' : ']')) {
                s->p++;
                depth--;
                continue;
            }
            sfail(s, obj ? "expected ',' or '}'" : "expected ',' or ']'");
            goto out;
        }
    }
out:
    if (objects != small) free(objects);
    return rc;
}

/* The fields loop of one object at s->p (after its '{' and whitespace): records keys[i]'s value
 * range in f[2i], f[2i+1] (left as is when absent). Structure only. */
static int sobject_fields(sc *s, const char *base, const char *const *keys, const size_t *klens, int nkeys, size_t *f) {
    if (s->p < s->end && *s->p == '}') { s->p++; return 0; }
    for (;;) {
        sws(s);
        if (s->p >= s->end || *s->p != '"') return sfail(s, "expected a string key");
        const char *k = s->p + 1;
        if (sstring(s)) return -1;
        size_t kl = (size_t)(s->p - 1 - k);
        sws(s);
        if (s->p >= s->end || *s->p != ':') return sfail(s, "expected ':'");
        s->p++;
        sws(s);
        const char *v = s->p;
        if (svalue_flat(s)) return -1;
        for (int i = 0; i < nkeys; i++)
            if (klens[i] == kl && memcmp(k, keys[i], kl) == 0) {   /* keys with escapes never match */
                f[2 * i] = (size_t)(v - base);                       /* the last duplicate wins, as in the decoder */
                f[2 * i + 1] = (size_t)(s->p - v);
            }
        sws(s);
        if (s->p < s->end && *s->p == ',') { s->p++; continue; }
        if (s->p < s->end && *s->p == '}') { s->p++; return 0; }
        return sfail(s, "expected ',' or '}'");
    }
}

long lsb_json_split_array(const char *json, size_t len, size_t **starts, size_t **lens, char **err) {
    return lsb_json_split_array_fields(json, len, NULL, 0, starts, lens, NULL, err);
}

#define SPLIT_INDEX_WORDS 128   /* messages up to 8 KiB are indexed (lsb_share's SHARE_INDEX_WORDS) */

typedef struct split_indexer {
    char *blob;
    size_t used, cap;
    size_t limit;   /* the blob's most bytes: events past it are indexed where they run */
    size_t *at;   /* per element */
    uint64_t bits[2 * SPLIT_INDEX_WORDS];   /* scratch, kept clear between messages */
    uint32_t members[4 * LSB_JSON_INDEX_MEMBERS];
} split_indexer;

static long split_strict(const char *json, size_t len, const char *const *keys, const size_t *klens, int nkeys,
                         size_t **starts, size_t **lens, size_t **fields, split_indexer *x);

long lsb_json_split_array_fields(const char *json, size_t len, const char *const *keys, int nkeys,
                                 size_t **starts, size_t **lens, size_t **fields, char **err) {
    return lsb_json_split_request(json, len, keys, nkeys, starts, lens, fields, NULL, err);
}

long lsb_json_split_request(const char *json, size_t len, const char *const *keys, int nkeys,
                            size_t **starts, size_t **lens, size_t **fields, int *validated, char **err) {
    return lsb_json_split_request_indexed(json, len, keys, nkeys, starts, lens, fields, validated, NULL, err);
}

long lsb_json_split_request_indexed(const char *json, size_t len, const char *const *keys, int nkeys,
                                    size_t **starts, size_t **lens, size_t **fields, int *validated,
                                    lsb_split_index *index, char **err) {
    sc s = {json, json, json + len, {0}};
    size_t cap = 16, n = 0;
    size_t klens[8];
    if (nkeys > 8) nkeys = 8;
    for (int i = 0; i < nkeys; i++) klens[i] = strlen(keys[i]);
    if (index) index->blob = NULL, index->at = NULL;
    if (validated) {   /* the common case first: a body that is valid JSON throughout */
        split_indexer *x = index && nkeys > 0 ? calloc(1, sizeof *x) : NULL;
        if (x) x->limit = len + 64 * 1024;   /* at most the body again (a 1 KB event's record is ~0.6 KB) */
        long m = split_strict(json, len, keys, klens, nkeys, starts, lens, fields, x);
        *validated = m >= 0;
        if (x) {
            if (m >= 0) index->blob = x->blob, index->at = x->at;
            free(x);
        }
        if (m >= 0) return m;
    }
    size_t *st = malloc(cap * sizeof *st), *ln = malloc(cap * sizeof *ln);
    size_t *fl = nkeys ? malloc(cap * 2 * (size_t)nkeys * sizeof *fl) : NULL;
    *starts = NULL;
    *lens = NULL;
    if (fields) *fields = NULL;
    if (!st || !ln || (nkeys && !fl)) goto oom;
    sws(&s);
    if (s.p >= s.end || *s.p != '[') { sfail(&s, "expected a JSON array"); goto bad; }
    s.p++;
    sws(&s);
    if (s.p < s.end && *s.p == ']') { s.p++; goto done; }
    for (;;) {
        sws(&s);
        const char *b = s.p;
        if (n == cap) {
            cap *= 2;
            size_t *a = realloc(st, cap * sizeof *st), *c = a ? realloc(ln, cap * sizeof *ln) : NULL;
            if (a) st = a;
            if (c) ln = c;
            if (!a || !c) goto oom;
            if (nkeys) {
                size_t *g = realloc(fl, cap * 2 * (size_t)nkeys * sizeof *fl);
                if (!g) goto oom;
                fl = g;
            }
        }
        if (nkeys) memset(fl + n * 2 * (size_t)nkeys, 0, 2 * (size_t)nkeys * sizeof *fl);
        if (nkeys && s.p < s.end && *s.p == '{') {   /* an object: find its fields on the way */
            s.p++;
            sws(&s);
            if (sobject_fields(&s, b, keys, klens, nkeys, fl + n * 2 * (size_t)nkeys)) goto bad;
        } else if (svalue_flat(&s)) goto bad;
        st[n] = (size_t)(b - json);
        ln[n] = (size_t)(s.p - b);
        n++;
        sws(&s);
        if (s.p < s.end && *s.p == ',') { s.p++; continue; }
        if (s.p < s.end && *s.p == ']') { s.p++; break; }
        sfail(&s, "expected ',' or ']'");
        goto bad;
    }
done:
    sws(&s);
    if (s.p != s.end) { sfail(&s, "trailing characters after the array"); goto bad; }
    *starts = st;
    *lens = ln;
    if (fields) *fields = fl;
    else free(fl);
    return (long)n;
oom:
    snprintf(s.msg, sizeof s.msg, "out of memory");
bad:
    free(st);
    free(ln);
    free(fl);
    *err = lsb_strndup(s.msg, strlen(s.msg));
    return -1;
}

int lsb_json_object_field(const char *json, size_t len, const char *key, size_t *start, size_t *vlen) {
    sc s = {json, json, json + len, {0}};   /* structure only: UTF-8 is checked where values are used */
    size_t klen = strlen(key), f[2] = {0, 0};
    sws(&s);
    if (s.p >= s.end || *s.p != '{') return -1;
    s.p++;
    sws(&s);
    if (sobject_fields(&s, json, &key, &klen, 1, f)) return -1;
    *start = f[0];
    *vlen = f[1];
    return f[1] > 0;
}

/* ---- validating scanner (lsb_json_validate, lsb_json_envelope) ----
 * One loop over the bytes with an explicit stack of the open containers: no recursion, the
 * next structural byte is tested first and whitespace only when the byte is <= ' ', strings go
 * 16 bytes at a time. The accepted inputs, the messages and their byte offsets are those of
 * the recursive descent it replaced (Fuzz/fuzz_validator_diff.c compares the two): an error is
 * reported where that parser stood, e.g. "nested too deeply" where the value one level too
 * deep was expected: right after its ':' or ',' (before any whitespace), or after an array's
 * '[' and the whitespace that follows it. */

/* The steps of the hot loop are inlined into it; what compact JSON rarely needs is not. */
#if defined(__GNUC__) || defined(__clang__)
#define VINLINE static inline __attribute__((always_inline))
#define VNOINLINE static __attribute__((noinline))
#else
#define VINLINE static inline
#define VNOINLINE static
#endif

typedef struct {
    const char *at;     /* where the error is reported */
    const char *what;
    int escapes;        /* set by every escape met (reset by whoever reads it) */
} verr;

#define VFAIL(pos, msg) do { e->at = (pos); e->what = (msg); return NULL; } while (0)

static char *vmessage(const char *json, const verr *e) {
    char msg[160];
    snprintf(msg, sizeof msg, "invalid JSON at byte %zu: %s", (size_t)(e->at - json), e->what);
    return lsb_strndup(msg, strlen(msg));
}

static inline int vblank(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* The whitespace run at p (whose byte is <= ' '): returns the first byte after it. One blank
 * (", " and ": ") is found byte by byte, longer runs 16 bytes at a time. Out of line: compact
 * JSON has none. */
VNOINLINE const char *vws_run(const char *p, const char *end) {
    if (!vblank(*p)) return p;
    if (++p >= end || !vblank(*p)) return p;
#ifdef __SSE2__
    const __m128i sp = _mm_set1_epi8(' '), nl = _mm_set1_epi8('\n'), cr = _mm_set1_epi8('\r'), tb = _mm_set1_epi8('\t');
    while (end - p >= 16) {
        __m128i x = _mm_loadu_si128((const __m128i *)p);
        __m128i w = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, sp), _mm_cmpeq_epi8(x, nl)),
                                 _mm_or_si128(_mm_cmpeq_epi8(x, cr), _mm_cmpeq_epi8(x, tb)));
        unsigned other = (unsigned)_mm_movemask_epi8(w) ^ 0xFFFF;
        if (other) return p + __builtin_ctz(other);
        p += 16;
    }
#endif
    while (p < end && vblank(*p)) p++;
    return p;
}

/* Skips whitespace: one compare when the next byte is not a blank (compact JSON). */
VINLINE const char *vws(const char *p, const char *end) {
    return p < end && (unsigned char)*p <= ' ' ? vws_run(p, end) : p;
}

#ifdef __SSE2__
/* Bit i set: byte i of the 16 at p ends a plain run of string text: '"', '\\', a control byte
 * or a byte >= 0x80. x ^ 2 maps '"' to ' ' and keeps control bytes below ' ' and bytes >= 0x80
 * negative (other printable bytes stay above ' '), so one signed compare finds all but '\\'. */
VINLINE unsigned vstop16(const char *p) {
    __m128i x = _mm_loadu_si128((const __m128i *)p);
    __m128i printable = _mm_cmpgt_epi8(_mm_xor_si128(x, _mm_set1_epi8(2)), _mm_set1_epi8(' '));
    __m128i plain = _mm_andnot_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('\\')), printable);
    return (unsigned)_mm_movemask_epi8(plain) ^ 0xFFFF;
}
#endif

/* `tail`, passed along with `end`: end - 16 when the buffer has 16 bytes or more, else its
 * first byte, which is never inside a string. So `p <= tail` for p inside a string means 16
 * bytes are readable at p. */
static const char *vtail(const char *json, size_t len) { return len >= 16 ? json + len - 16 : json; }

/* The first byte at or after p (inside a string) that is not plain string text, or end. The
 * last short stretch is read as the buffer's last 16 bytes, shifted, so no load leaves the
 * buffer. */
static const char *vskip_plain(const char *p, const char *end, const char *tail) {
#ifdef __SSE2__
    if (end - tail == 16) {
        for (; p <= tail; p += 16) {
            unsigned bits = vstop16(p);
            if (bits) return p + __builtin_ctz(bits);
        }
        unsigned bits = vstop16(tail) >> (p - tail);   /* 0 < p - tail <= 16 */
        return bits ? p + __builtin_ctz(bits) : end;
    }
#else
    (void)tail;
#endif
    return lsb_skip_plain(p, end);
}

/* What stopped a string's plain run at p (not a '"'): the end, a control byte, an escape or a
 * UTF-8 sequence. Returns where the plain run resumes, or NULL with e set. */
static const char *vstring_special(const char *p, const char *end, verr *e) {
    if (p >= end) VFAIL(p, "unterminated string");
    unsigned char c = (unsigned char)*p;
    if (c < 0x20) VFAIL(p, "control character in string");
    if (c == '\\') {
        unsigned cp;
        e->escapes = 1;
        int r = lsb_json_unescape(&p, end, &cp);   /* leaves p at the backslash on failure */
        if (r) VFAIL(p, r == -2 ? "lone UTF-16 surrogate in \\u escape" : "invalid escape");
        return p;
    }
    do {   /* a run of UTF-8 sequences (non-Latin text) without going back to the plain scan */
        size_t n = lsb_utf8_seq(p, end);
        if (!n) VFAIL(p, "invalid UTF-8 in string");
        p += n;
    } while (p < end && (unsigned char)*p >= 0x80);
    return p;
}

/* The rest of a string from p (inside it): returns the byte after the closing quote, or NULL
 * with e set. */
static const char *vstring_rest(const char *p, const char *end, const char *tail, verr *e) {
    for (;;) {
        p = vskip_plain(p, end, tail);
        if (p < end && *p == '"') return p + 1;
        if (!(p = vstring_special(p, end, e))) return NULL;
    }
}

/* p at the opening quote: returns the byte after the closing quote, or NULL with e set. The
 * common case, a plain string away from the buffer's last 16 bytes, is inline. */
VINLINE const char *vstring(const char *p, const char *end, const char *tail, verr *e) {
    p++;
#ifdef __SSE2__
    for (; p <= tail; p += 16) {   /* 16 bytes readable at p */
        unsigned bits = vstop16(p);
        if (bits) {
            p += __builtin_ctz(bits);
            if (*p == '"') return p + 1;
            break;
        }
    }
#endif
    return vstring_rest(p, end, tail, e);
}

static inline int vdigit(char c) { return (unsigned)(c - '0') < 10; }

/* p at '-' or a digit. A number is checked for overflow (strtod, as the decoder reads it)
 * only when it has an exponent or more than 300 characters before any fraction: nothing
 * shorter can reach DBL_MAX. */
VINLINE const char *vnumber(const char *p, const char *end, verr *e) {
    const char *start = p;
    if (*p == '-') p++;
    if (p < end && *p == '0') p++;
    else {
        if (p >= end || !vdigit(*p)) VFAIL(p, "bad number");
        do p++; while (p < end && vdigit(*p));
    }
    int may_overflow = p - start > 300;
    if (p < end && *p == '.') {
        p++;
        if (p >= end || !vdigit(*p)) VFAIL(p, "bad number");
        do p++; while (p < end && vdigit(*p));
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || !vdigit(*p)) VFAIL(p, "bad number");
        do p++; while (p < end && vdigit(*p));
        may_overflow = 1;
    }
    if (may_overflow) {
        size_t n = (size_t)(p - start);
        char small[64], *buf = n < sizeof small ? small : malloc(n + 1);
        if (!buf) VFAIL(p, "out of memory");
        memcpy(buf, start, n);
        buf[n] = 0;
        double v = strtod(buf, NULL);
        if (buf != small) free(buf);
        if (isinf(v)) VFAIL(p, "number out of range");
    }
    return p;
}

/* vnumber out of line: the recording validator keeps its registers for the bitmaps. */
VNOINLINE const char *vnumber_call(const char *p, const char *end, verr *e) { return vnumber(p, end, e); }

/* While a value is validated, optionally, where its strings and brackets are: the lazy
 * index of lsb_lazy.c (lsb_json_index), found at the cost of one bit per quote and bracket.
 * Every step below takes a vrec pointer that is a constant NULL in the plain validator, so
 * the recording compiles away there. */
typedef struct {
    uint64_t *quotes, *brackets;   /* zeroed by the caller for every byte the value may span */
    const char *base;              /* the value's first byte: bit 0 */
    int ws;                        /* some whitespace was skipped (outside strings) */
    int deepest;                   /* most containers open at once within the value, its own counted */
} vrec;

/* Sets the bit of byte p in bits. */
VINLINE void vmark(uint64_t *bits, const char *base, const char *p) {
    size_t i = (size_t)(p - base);
    bits[i >> 6] |= (uint64_t)1 << (i & 63);
}

/* A container opens at p, `open` containers deep within the recorded value: marks its bracket. */
VINLINE void vopen_r(vrec *r, const char *p, int open) {
    if (!r) return;
    vmark(r->brackets, r->base, p);
    if (open > r->deepest) r->deepest = open;
}

/* vws, noting in r whether it skipped anything (tested only where vws_run is called). */
VINLINE const char *vws_r(const char *p, const char *end, vrec *r) {
    if (!(p < end && (unsigned char)*p <= ' ')) return p;
    const char *q = vws_run(p, end);
    if (r && q != p) r->ws = 1;
    return q;
}

/* vstring, marking both quotes in r. */
VINLINE const char *vstring_r(const char *p, const char *end, const char *tail, verr *e, vrec *r) {
    if (r) vmark(r->quotes, r->base, p);
    if (!(p = vstring(p, end, tail, e))) return NULL;
    if (r) vmark(r->quotes, r->base, p - 1);
    return p;
}

/* After `"key"` at p inside an object: returns the byte after the ':' that must follow, or
 * NULL with e set. */
VINLINE const char *vcolon(const char *p, const char *end, verr *e, vrec *r) {
    if (!(p < end && *p == ':')) {
        p = vws_r(p, end, r);
        if (p >= end || *p != ':') VFAIL(p, "expected ':'");
    }
    return p + 1;
}

/* `"key" :` at p inside an object (whitespace before it allowed): returns the byte after the
 * ':', or NULL with e set. */
VINLINE const char *vkey(const char *p, const char *end, const char *tail, verr *e, vrec *r) {
    if (!(p < end && *p == '"')) {
        p = vws_r(p, end, r);
        if (p >= end || *p != '"') VFAIL(p, "expected a string key");
    }
    if (!(p = vstring_r(p, end, tail, e, r))) return NULL;
    return vcolon(p, end, e, r);
}

#define VTOP 0x100   /* no open container: matches no byte */

/* One value at p (whitespace before it allowed) that sits at nesting depth `depth` <=
 * LSB_JSON_MAX_DEPTH: returns the byte after it, or NULL with e set. A value deeper than
 * LSB_JSON_MAX_DEPTH is refused (the top-level value is at depth 0). Each step tests the byte
 * it expects first and looks for whitespace only when that fails. */
VINLINE const char *vvalue_at(const char *p, const char *end, const char *tail, int depth, verr *e, vrec *r) {
    /* The closing bytes of the enclosing containers, pushed downwards from above the slot
     * for depth `depth`: sp == outer exactly when a container's elements would be deeper than
     * LSB_JSON_MAX_DEPTH, so that is checked once when the container opens. */
    short outer[LSB_JSON_MAX_DEPTH], *sp = outer + (LSB_JSON_MAX_DEPTH - depth), *const sp0 = sp;
    int close = VTOP;   /* closing byte of the innermost open container */
value:   /* a value is expected at p (at most LSB_JSON_MAX_DEPTH deep) */
    if (!(p < end && *p == '"')) {
        p = vws_r(p, end, r);
        if (p >= end) VFAIL(p, "unexpected end of input");
    }
    switch (*p) {
    case '"':
        if (!(p = vstring_r(p, end, tail, e, r))) return NULL;
        goto after;
    case '{':
        vopen_r(r, p, (int)(sp0 - sp) + 1);
        p = vws_r(p + 1, end, r);
        if (p < end && *p == '}') {
            if (r) vmark(r->brackets, r->base, p);
            p++;
            goto after;
        }
        if (sp == outer) {   /* the first member's value would be too deep */
            if (!(p = vkey(p, end, tail, e, r))) return NULL;
            VFAIL(p, "nested too deeply");
        }
        *--sp = (short)close;
        close = '}';
        goto key;
    case '[':
        vopen_r(r, p, (int)(sp0 - sp) + 1);
        p = vws_r(p + 1, end, r);
        if (p < end && *p == ']') {
            if (r) vmark(r->brackets, r->base, p);
            p++;
            goto after;
        }
        if (sp == outer) VFAIL(p, "nested too deeply");
        *--sp = (short)close;
        close = ']';
        goto value;
    case 't':
        if (end - p < 4 || memcmp(p, "true", 4)) VFAIL(p, "unexpected token");
        p += 4;
        goto after;
    case 'f':
        if (end - p < 5 || memcmp(p, "false", 5)) VFAIL(p, "unexpected token");
        p += 5;
        goto after;
    case 'n':
        if (end - p < 4 || memcmp(p, "null", 4)) VFAIL(p, "unexpected token");
        p += 4;
        goto after;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        if (!(p = r ? vnumber_call(p, end, e) : vnumber(p, end, e))) return NULL;
        goto after;
    default:
        VFAIL(p, "unexpected character");
    }
key:     /* inside an object: `"key" :` is expected at p */
    if (!(p = vkey(p, end, tail, e, r))) return NULL;
    goto value;
after:   /* a value ended at p */
    if (p < end) {
        char c = *p;
        if (c == ',') {
            if (close == '}') { p++; goto key; }
            if (close == ']') { p++; goto value; }
            return p;   /* the top level */
        }
        if ((unsigned char)c == close) {   /* never at the top level */
            if (r) vmark(r->brackets, r->base, p);
            p++;
            close = *sp++;
            goto after;
        }
    }
    if (close == VTOP) return p;
    p = vws_r(p, end, r);
    if (p < end && (*p == ',' || (unsigned char)*p == close)) goto after;
    VFAIL(p, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
}

/* vvalue_at without recording. */
static const char *vvalue(const char *p, const char *end, const char *tail, int depth, verr *e) {
    return vvalue_at(p, end, tail, depth, e, NULL);
}

/* vvalue_at recording into r (through a local copy, which can live in registers). */
static const char *vvalue_rec(const char *p, const char *end, const char *tail, int depth, verr *e, vrec *r) {
    vrec local = *r;
    p = vvalue_at(p, end, tail, depth, e, &local);
    r->ws = local.ws;
    r->deepest = local.deepest;
    return p;
}

char *lsb_json_validate(const char *json, size_t len) {
    const char *end = json + len, *tail = vtail(json, len), *p;
    verr e;
    if ((p = vvalue(json, end, tail, 0, &e))) {
        p = vws(p, end);
        if (p == end) return NULL;
        e.at = p;
        e.what = "trailing characters after the value";
    }
    return vmessage(json, &e);
}

/* Records member (key k, klen bytes; value val to p) of the message at base in ix, unless ix
 * gave up on its members: more than LSB_JSON_INDEX_MEMBERS, a key with an escape, or a key
 * twice (the lazy table decodes those objects eagerly). *seen: a filter of key (length, first
 * byte), as lsb_lazy's scan keeps, so most keys need no duplicate check. */
static void vmember(lsb_json_index *ix, const char *base, const char *k, size_t klen, int key_escaped,
                    const char *val, const char *p, uint64_t *seen) {
    if (ix->count < 0) return;
    uint32_t *m = ix->members, n = (uint32_t)ix->count;
    uint64_t h = (uint64_t)1 << ((klen + (unsigned char)*k) & 63);   /* *k is the quote when klen is 0 */
    int dup = 0;
    if (*seen & h)
        for (uint32_t i = 0; i < n && !dup; i++) dup = m[4 * i + 1] == klen && memcmp(base + m[4 * i], k, klen) == 0;
    *seen |= h;
    if (n == LSB_JSON_INDEX_MEMBERS || key_escaped || dup) {
        ix->count = -1;
        return;
    }
    m[4 * n] = (uint32_t)(k - base);
    m[4 * n + 1] = (uint32_t)klen;
    m[4 * n + 2] = (uint32_t)(val - base);
    m[4 * n + 3] = (uint32_t)(p - val);
    ix->count = (int)n + 1;
}

/* The message's value at p (an object that fits ix), validated while its index and members are
 * recorded into ix; returns the byte after it, or NULL with e set. Its members are walked here
 * as vvalue would walk them (the same answers, messages and offsets), each value by vvalue_rec. */
static const char *vmessage_indexed(const char *p, const char *end, const char *tail, verr *e, lsb_json_index *ix,
                                    int zeroed) {
    if (!zeroed) {   /* else the caller's bitmaps are clear already */
        size_t words = ((size_t)(end - p) + 63) / 64;   /* what the value may span */
        memset(ix->quotes, 0, words * sizeof *ix->quotes);
        memset(ix->brackets, 0, words * sizeof *ix->brackets);
    }
    vrec r = {ix->quotes, ix->brackets, p, 0, 0};
    const char *v = p;
    uint64_t seen = 0;
    int escapes = 0;
    ix->count = 0;
    ix->height = 1;
    vmark(r.brackets, v, p);
    p = vws_r(p + 1, end, &r);
    if (p < end && *p == '}') {
        vmark(r.brackets, v, p++);
    } else {
        for (;;) {
            p = vws_r(p, end, &r);
            if (p >= end || *p != '"') VFAIL(p, "expected a string key");
            const char *k = p + 1;
            e->escapes = 0;
            if (!(p = vstring_r(p, end, tail, e, &r))) return NULL;
            int key_escaped = e->escapes;
            size_t klen = (size_t)(p - 1 - k);
            if (!(p = vcolon(p, end, e, &r))) return NULL;
            p = vws_r(p, end, &r);
            const char *val = p;
            r.deepest = 0;
            if (p < end && *p == '"') {   /* a string, the common member: vvalue_rec's first step */
                if (!(p = vstring_r(p, end, tail, e, &r))) return NULL;
            } else if (!(p = vvalue_rec(p, end, tail, 2, e, &r))) return NULL;
            escapes |= key_escaped | e->escapes;
            if ((uint32_t)r.deepest + 1 > ix->height) ix->height = (uint32_t)r.deepest + 1;
            vmember(ix, v, k, klen, key_escaped, val, p, &seen);
            p = vws_r(p, end, &r);
            if (p < end && *p == ',') { p++; continue; }
            if (p < end && *p == '}') { vmark(r.brackets, v, p++); break; }
            VFAIL(p, "expected ',' or '}'");
        }
    }
    ix->json = v;
    ix->len = (size_t)(p - v);
    ix->compact = !r.ws;
    ix->escapes = escapes;
    return p;
}

VINLINE char *envelope(const char *json, size_t len, int *shape, size_t *msg_start, size_t *msg_len, size_t *md_start,
                      size_t *md_len, lsb_json_index *ix) {
    const char *end = json + len, *tail = vtail(json, len);
    const char *p = vws(json, end);
    verr e;
    if (ix) ix->json = NULL;
    *shape = 0;
    *msg_len = *md_len = 0;
    if (p < end && *p == '{') {   /* the top-level members, with their keys compared */
        int has_msg = 0, has_md = 0;
        p = vws(p + 1, end);
        if (p < end && *p == '}') {
            p++;
        } else {
            for (;;) {
                p = vws(p, end);
                if (p >= end || *p != '"') { e.at = p; e.what = "expected a string key"; goto bad; }
                const char *k = p + 1;
                if (!(p = vstring(p, end, tail, &e))) goto bad;
                size_t kl = (size_t)(p - 1 - k);
                p = vws(p, end);
                if (p >= end || *p != ':') { e.at = p; e.what = "expected ':'"; goto bad; }
                p = vws(p + 1, end);
                const char *v = p;
                int is_msg = kl == 7 && memcmp(k, "message", 7) == 0;
                if (ix && is_msg && p < end && *p == '{' && (size_t)(end - p) <= 64 * ix->words) {
                    if (!(p = vmessage_indexed(p, end, tail, &e, ix, 0))) goto bad;
                } else {
                    if (!(p = vvalue(p, end, tail, 1, &e))) goto bad;
                    if (ix && is_msg) ix->json = NULL;   /* an earlier message's index is not this one's */
                }
                if (is_msg) {   /* the last duplicate wins */
                    has_msg = *v == '{';
                    *msg_start = (size_t)(v - json);
                    *msg_len = (size_t)(p - v);
                } else if (kl == 8 && memcmp(k, "metadata", 8) == 0) {
                    has_md = 1;
                    *md_start = (size_t)(v - json);
                    *md_len = (size_t)(p - v);
                }
                p = vws(p, end);
                if (p < end && *p == ',') { p++; continue; }
                if (p < end && *p == '}') { p++; break; }
                e.at = p;
                e.what = "expected ',' or '}'";
                goto bad;
            }
        }
        p = vws(p, end);
        if (p != end) { e.at = p; e.what = "trailing characters after the value"; goto bad; }
        *shape = has_msg ? 2 : 1;
        if (!has_md) *md_len = 0;
        return NULL;
    }
    if ((p = vvalue(p, end, tail, 0, &e))) {
        p = vws(p, end);
        if (p == end) return NULL;
        e.at = p;
        e.what = "trailing characters after the value";
    }
bad:
    if (ix) ix->json = NULL;
    return vmessage(json, &e);
}

char *lsb_json_envelope(const char *json, size_t len, int *shape, size_t *msg_start, size_t *msg_len,
                        size_t *md_start, size_t *md_len) {
    return envelope(json, len, shape, msg_start, msg_len, md_start, md_len, NULL);
}

char *lsb_json_envelope_indexed(const char *json, size_t len, int *shape, size_t *msg_start, size_t *msg_len,
                                size_t *md_start, size_t *md_len, lsb_json_index *ix) {
    return envelope(json, len, shape, msg_start, msg_len, md_start, md_len, ix);
}

/* ---- the message index of a request split ----
 * Each record: an lsb_index_record, the quote and bracket bitmaps (words each), then the
 * members (4 words each); records start 8-byte aligned in the blob. */

/* Appends ix (just recorded) to the blob: returns its offset, or LSB_NO_INDEX out of memory. */
static size_t index_append(split_indexer *x, const lsb_json_index *ix) {
    size_t words = (ix->len + 63) / 64, count = ix->count > 0 ? (size_t)ix->count : 0;
    size_t need = sizeof(lsb_index_record) + 16 * words + 16 * count;
    if (need > x->limit - x->used) return LSB_NO_INDEX;   /* tiny events with many members: bounded */
    if (x->cap - x->used < need) {
        size_t cap = x->cap ? 2 * x->cap : 64 * 1024;
        while (cap - x->used < need) cap *= 2;
        char *b = realloc(x->blob, cap);
        if (!b) return LSB_NO_INDEX;
        x->blob = b;
        x->cap = cap;
    }
    size_t at = x->used;
    lsb_index_record *r = (lsb_index_record *)(x->blob + at);
    *r = (lsb_index_record){.len = (uint32_t)ix->len, .words = (uint32_t)words, .count = ix->count,
                            .height = ix->height, .compact = (uint8_t)ix->compact, .escapes = (uint8_t)ix->escapes};
    uint64_t *q = (uint64_t *)(r + 1);
    memcpy(q, ix->quotes, 8 * words);
    memcpy(q + words, ix->brackets, 8 * words);
    memcpy(q + 2 * words, ix->members, 16 * count);
    x->used += need;
    return at;
}

/* The message value at p (an object), validated as vvalue would (same answers) and, when it
 * fits, indexed into x's blob with *at its record's offset (else LSB_NO_INDEX). */
static const char *vmessage_split(const char *p, const char *end, const char *tail, verr *e, split_indexer *x,
                                  size_t *at) {
    *at = LSB_NO_INDEX;
    const char *cut = (size_t)(end - p) > 64 * SPLIT_INDEX_WORDS ? p + 64 * SPLIT_INDEX_WORDS : end;
    lsb_json_index ix = {.quotes = x->bits, .brackets = x->bits + SPLIT_INDEX_WORDS, .words = SPLIT_INDEX_WORDS,
                         .members = x->members};
    const char *q = vmessage_indexed(p, cut, vtail(p, (size_t)(cut - p)), e, &ix, 1);
    if (q) {
        size_t words = (ix.len + 63) / 64;
        *at = index_append(x, &ix);
        memset(ix.quotes, 0, 8 * words);
        memset(ix.brackets, 0, 8 * words);
        return q;
    }
    memset(x->bits, 0, sizeof x->bits);
    /* too long to index, too deep for the recorder's depth or invalid: the plain validator says */
    return vvalue(p, end, tail, 0, e);
}

int lsb_json_index_from_record(const void *record, const char *json, size_t len, lsb_json_index *ix) {
    const lsb_index_record *r = record;
    if (!r || r->len != len || !len || json[0] != '{') return -1;
    uint64_t *q = (uint64_t *)(r + 1);
    ix->quotes = q;
    ix->brackets = q + r->words;
    ix->words = r->words;
    ix->json = json;
    ix->len = len;
    ix->compact = r->compact;
    ix->escapes = r->escapes;
    ix->members = (uint32_t *)(q + 2 * r->words);
    ix->count = r->count;
    ix->height = r->height;
    return 0;
}

/* ---- the request split's fast path ----
 * lsb_json_split_request first tries this: the same split, with every member value of every
 * element (and every element that is not an object) checked by the validator as a value of its
 * own, exactly as lsb_json_validate would check it alone. It succeeds only when all of them
 * are valid; anything else (bad JSON anywhere, deep or odd elements, a key with bad UTF-8)
 * returns -1 and the caller takes the structure-only path, whose answers are the reference. */
static long split_strict(const char *json, size_t len, const char *const *keys, const size_t *klens, int nkeys,
                         size_t **starts, size_t **lens, size_t **fields, split_indexer *x) {
    const char *end = json + len, *tail = vtail(json, len), *p = vws(json, end);
    size_t cap = 64, n = 0, stride = 2 * (size_t)nkeys;
    size_t *st = malloc(cap * sizeof *st), *ln = malloc(cap * sizeof *ln);
    size_t *fl = nkeys ? malloc(cap * stride * sizeof *fl) : NULL;
    verr e;
    if (x && !(x->at = malloc(cap * sizeof *x->at))) goto fail;
    if (!st || !ln || (nkeys && !fl)) goto fail;
    if (p >= end || *p != '[') goto fail;
    p = vws(p + 1, end);
    if (p < end && *p == ']') { p++; goto done; }
    for (;;) {
        p = vws(p, end);
        const char *b = p;
        if (n == cap) {
            cap *= 2;
            size_t *a = realloc(st, cap * sizeof *st);
            if (!a) goto fail;
            st = a;
            if (!(a = realloc(ln, cap * sizeof *ln))) goto fail;
            ln = a;
            if (x) {
                if (!(a = realloc(x->at, cap * sizeof *a))) goto fail;
                x->at = a;
            }
            if (nkeys) {
                if (!(a = realloc(fl, cap * stride * sizeof *fl))) goto fail;
                fl = a;
            }
        }
        size_t *f = nkeys ? fl + n * stride : NULL;
        if (nkeys) memset(f, 0, stride * sizeof *f);
        if (x) x->at[n] = LSB_NO_INDEX;
        if (p < end && *p == '{') {   /* members: keys compared, values validated on their own */
            p = vws(p + 1, end);
            if (p < end && *p == '}') {
                p++;
            } else {
                for (;;) {
                    p = vws(p, end);
                    if (p >= end || *p != '"') goto fail;
                    const char *k = p + 1;
                    if (!(p = vstring(p, end, tail, &e))) goto fail;
                    size_t kl = (size_t)(p - 1 - k);
                    p = vws(p, end);
                    if (p >= end || *p != ':') goto fail;
                    p = vws(p + 1, end);
                    const char *v = p;
                    int key = -1;
                    for (int i = 0; i < nkeys && key < 0; i++)
                        if (klens[i] == kl && memcmp(k, keys[i], kl) == 0) key = i;
                    if (x && key == 0 && p < end && *p == '{') {   /* the event: validated and indexed */
                        if (!(p = vmessage_split(p, end, tail, &e, x, &x->at[n]))) goto fail;
                    } else {
                        if (!(p = vvalue(p, end, tail, 0, &e))) goto fail;
                        if (x && key == 0) x->at[n] = LSB_NO_INDEX;   /* an earlier one's index is not this one's */
                    }
                    if (key >= 0) {   /* the last duplicate wins */
                        f[2 * key] = (size_t)(v - b);
                        f[2 * key + 1] = (size_t)(p - v);
                    }
                    p = vws(p, end);
                    if (p < end && *p == ',') { p++; continue; }
                    if (p < end && *p == '}') { p++; break; }
                    goto fail;
                }
            }
        } else if (!(p = vvalue(p, end, tail, 0, &e))) goto fail;
        st[n] = (size_t)(b - json);
        ln[n] = (size_t)(p - b);
        n++;
        p = vws(p, end);
        if (p < end && *p == ',') { p++; continue; }
        if (p < end && *p == ']') { p++; break; }
        goto fail;
    }
done:
    p = vws(p, end);
    if (p != end) goto fail;
    *starts = st;
    *lens = ln;
    if (fields) *fields = fl;
    else free(fl);
    return (long)n;
fail:
    free(st);
    free(ln);
    free(fl);
    if (x) {
        free(x->at);
        free(x->blob);
        x->at = NULL;
        x->blob = NULL;
    }
    return -1;
}
