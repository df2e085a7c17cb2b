/*
 * Byte-level JSON: UTF-8 helpers and a validating scanner used to split a JSON array into
 * its elements and to find one field of an object without building Lua values.
 */
#include "lsb_internal.h"
#include "lsb_json.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- validating skipper ---- */

typedef struct {
    const char *start, *p, *end;
    char msg[160];
    int lenient_utf8;   /* structure only: UTF-8 and number range are left to a per-element check */
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
        size_t n = c < 0x80 || s->lenient_utf8 ? 1 : lsb_utf8_seq(s->p, s->end);
        if (!n) return sfail(s, "invalid UTF-8 in string");
        s->p += n;
    }
    return sfail(s, "unterminated string");
}

static int sdigits(sc *s) {
    if (s->p >= s->end || *s->p < '0' || *s->p > '9') return sfail(s, "bad number");
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
    return 0;
}

static int snumber(sc *s) {
    const char *start = s->p;
    if (*s->p == '-') s->p++;
    if (s->p < s->end && *s->p == '0') s->p++;
    else if (sdigits(s)) return -1;
    int may_overflow = s->p - start > 300;
    if (s->p < s->end && *s->p == '.') { s->p++; if (sdigits(s)) return -1; }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
        if (sdigits(s)) return -1;
        may_overflow = 1;
    }
    if (may_overflow && !s->lenient_utf8) {   /* what overflows a double is refused, as the decoder does */
        size_t n = (size_t)(s->p - start);
        char small[64], *buf = n < sizeof small ? small : malloc(n + 1);
        if (!buf) return sfail(s, "out of memory");
        memcpy(buf, start, n);
        buf[n] = 0;
        double v = strtod(buf, NULL);
        if (buf != small) free(buf);
        if (isinf(v)) return sfail(s, "number out of range");
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

static int svalue(sc *s, int depth) {
    if (depth > LSB_JSON_MAX_DEPTH) return sfail(s, "nested too deeply");
    sws(s);
    if (s->p >= s->end) return sfail(s, "unexpected end of input");
    char c = *s->p;
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        s->p++;
        sws(s);
        if (s->p < s->end && *s->p == close) { s->p++; return 0; }
        for (;;) {
            if (c == '{' && skey(s)) return -1;
            if (svalue(s, depth + 1)) return -1;
            sws(s);
            if (s->p < s->end && *s->p == ',') { s->p++; continue; }
            if (s->p < s->end && *s->p == close) { s->p++; return 0; }
            return sfail(s, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    return sscalar(s);
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

long lsb_json_split_array_fields(const char *json, size_t len, const char *const *keys, int nkeys,
                                 size_t **starts, size_t **lens, size_t **fields, char **err) {
    sc s = {json, json, json + len, {0}, 1};
    size_t cap = 16, n = 0;
    size_t klens[8];
    if (nkeys > 8) nkeys = 8;
    for (int i = 0; i < nkeys; i++) klens[i] = strlen(keys[i]);
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
    sc s = {json, json, json + len, {0}, 1};   /* structure only: UTF-8 is checked where values are used */
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

char *lsb_json_validate(const char *json, size_t len) {
    sc s = {json, json, json + len, {0}, 0};
    if (svalue(&s, 0) == 0) {
        sws(&s);
        if (s.p == s.end) return NULL;
        sfail(&s, "trailing characters after the value");
    }
    return lsb_strndup(s.msg, strlen(s.msg));
}

char *lsb_json_envelope(const char *json, size_t len, int *shape, size_t *msg_start, size_t *msg_len,
                        size_t *md_start, size_t *md_len) {
    sc s = {json, json, json + len, {0}, 0};
    *shape = 0;
    *msg_len = *md_len = 0;
    sws(&s);
    if (s.p < s.end && *s.p == '{') {
        int has_msg = 0, has_md = 0;
        s.p++;
        sws(&s);
        if (s.p < s.end && *s.p == '}') {
            s.p++;
        } else {
            for (;;) {
                sws(&s);
                if (s.p >= s.end || *s.p != '"') { sfail(&s, "expected a string key"); goto bad; }
                const char *k = s.p + 1;
                if (sstring(&s)) goto bad;
                size_t kl = (size_t)(s.p - 1 - k);
                sws(&s);
                if (s.p >= s.end || *s.p != ':') { sfail(&s, "expected ':'"); goto bad; }
                s.p++;
                sws(&s);
                const char *v = s.p;
                if (svalue(&s, 1)) goto bad;
                if (kl == 7 && memcmp(k, "message", 7) == 0) {
                    has_msg = *v == '{';
                    *msg_start = (size_t)(v - json);
                    *msg_len = (size_t)(s.p - v);
                } else if (kl == 8 && memcmp(k, "metadata", 8) == 0) {
                    has_md = 1;
                    *md_start = (size_t)(v - json);
                    *md_len = (size_t)(s.p - v);
                }
                sws(&s);
                if (s.p < s.end && *s.p == ',') { s.p++; continue; }
                if (s.p < s.end && *s.p == '}') { s.p++; break; }
                sfail(&s, "expected ',' or '}'");
                goto bad;
            }
        }
        sws(&s);
        if (s.p != s.end) { sfail(&s, "trailing characters after the value"); goto bad; }
        *shape = has_msg ? 2 : 1;
        if (!has_md) *md_len = 0;
        return NULL;
    }
    if (svalue(&s, 0) == 0) {
        sws(&s);
        if (s.p == s.end) return NULL;
        sfail(&s, "trailing characters after the value");
    }
bad:
    return lsb_strndup(s.msg, strlen(s.msg));
}
