/*
 * Differential libFuzzer target for the validating JSON scanner: lsb_json_validate and
 * lsb_json_envelope (iterative, 16 bytes at a time) against the recursive-descent validator
 * they replaced, kept below under old_* names for this comparison only. On every input both
 * must accept or refuse alike with the same message (byte offset included) and, for the
 * envelope, leave the same shape and ranges in the outputs, also on failure.
 *
 * Hand-made edge cases run once at start-up (LLVMFuzzerInitialize), so any run checks them:
 * every error kind, depths 198..203 in arrays, objects and envelopes (with whitespace and with
 * a broken key at the level that is too deep), escapes and surrogates, overlong and
 * out-of-range UTF-8, numbers at and past the double range, strings with a special byte at
 * every position around the 16-byte blocks and the buffer's end, whitespace between every
 * token, and a generated event cut at every byte and with each byte replaced. A run prints
 * its counts on exit ("validator differential: ...").
 *
 * lsb_json_envelope_indexed is checked on every input too: the same answers and outputs as
 * lsb_json_envelope, and the message index it fills equal to one found here byte by byte. So
 * is lsb_json_split_request_indexed, on the input as a request body and on the input as the
 * message of a one-element request: the same split as lsb_json_split_request, and each
 * message's index record equal to the reference index and to the lazy scan's members.
 *
 *   scripts/fuzz SECONDS validator
 */
#include "lsb.h"
#include "../Sources/CLuaSandbox/lsb_json.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the previous validator (lsb_json_scan.c before the iterative one), renamed ---- */

typedef struct {
    const char *start, *p, *end;
    char msg[160];
    int lenient_utf8;   /* structure only: UTF-8 and number range are left to a per-element check */
} old_sc;

static int old_sfail(old_sc *s, const char *what) {
    snprintf(s->msg, sizeof s->msg, "invalid JSON at byte %zu: %s", (size_t)(s->p - s->start), what);
    return -1;
}

static void old_sws(old_sc *s) {
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) s->p++;
}

static int old_sstring(old_sc *s) {
    s->p++;
    while (s->p < s->end) {
        s->p = lsb_skip_plain(s->p, s->end);
        if (s->p >= s->end) break;
        unsigned char c = (unsigned char)*s->p;
        if (c == '"') { s->p++; return 0; }
        if (c < 0x20) return old_sfail(s, "control character in string");
        if (c == '\\') {
            unsigned cp;
            int r = lsb_json_unescape(&s->p, s->end, &cp);
            if (r) return old_sfail(s, r == -2 ? "lone UTF-16 surrogate in \\u escape" : "invalid escape");
            continue;
        }
        size_t n = c < 0x80 || s->lenient_utf8 ? 1 : lsb_utf8_seq(s->p, s->end);
        if (!n) return old_sfail(s, "invalid UTF-8 in string");
        s->p += n;
    }
    return old_sfail(s, "unterminated string");
}

static int old_sdigits(old_sc *s) {
    if (s->p >= s->end || *s->p < '0' || *s->p > '9') return old_sfail(s, "bad number");
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9') s->p++;
    return 0;
}

static int old_snumber(old_sc *s) {
    const char *start = s->p;
    if (*s->p == '-') s->p++;
    if (s->p < s->end && *s->p == '0') s->p++;
    else if (old_sdigits(s)) return -1;
    int may_overflow = s->p - start > 300;
    if (s->p < s->end && *s->p == '.') { s->p++; if (old_sdigits(s)) return -1; }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-')) s->p++;
        if (old_sdigits(s)) return -1;
        may_overflow = 1;
    }
    if (may_overflow && !s->lenient_utf8) {   /* what overflows a double is refused, as the decoder does */
        size_t n = (size_t)(s->p - start);
        char small[64], *buf = n < sizeof small ? small : malloc(n + 1);
        if (!buf) return old_sfail(s, "out of memory");
        memcpy(buf, start, n);
        buf[n] = 0;
        double v = strtod(buf, NULL);
        if (buf != small) free(buf);
        if (isinf(v)) return old_sfail(s, "number out of range");
    }
    return 0;
}

static int old_sscalar(old_sc *s) {
    char c = *s->p;
    if (c == '"') return old_sstring(s);
    if (c == '-' || (c >= '0' && c <= '9')) return old_snumber(s);
    const char *w = c == 't' ? "true" : c == 'f' ? "false" : c == 'n' ? "null" : NULL;
    if (!w) return old_sfail(s, "unexpected character");
    size_t n = strlen(w);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, w, n)) return old_sfail(s, "unexpected token");
    s->p += n;
    return 0;
}

/* Expects `"key" :` inside an object. */
static int old_skey(old_sc *s) {
    old_sws(s);
    if (s->p >= s->end || *s->p != '"') return old_sfail(s, "expected a string key");
    if (old_sstring(s)) return -1;
    old_sws(s);
    if (s->p >= s->end || *s->p != ':') return old_sfail(s, "expected ':'");
    s->p++;
    return 0;
}

static int old_svalue(old_sc *s, int depth) {
    if (depth > LSB_JSON_MAX_DEPTH) return old_sfail(s, "nested too deeply");
    old_sws(s);
    if (s->p >= s->end) return old_sfail(s, "unexpected end of input");
    char c = *s->p;
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        s->p++;
        old_sws(s);
        if (s->p < s->end && *s->p == close) { s->p++; return 0; }
        for (;;) {
            if (c == '{' && old_skey(s)) return -1;
            if (old_svalue(s, depth + 1)) return -1;
            old_sws(s);
            if (s->p < s->end && *s->p == ',') { s->p++; continue; }
            if (s->p < s->end && *s->p == close) { s->p++; return 0; }
            return old_sfail(s, c == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    return old_sscalar(s);
}

static char *old_json_validate(const char *json, size_t len) {
    old_sc s = {json, json, json + len, {0}, 0};
    if (old_svalue(&s, 0) == 0) {
        old_sws(&s);
        if (s.p == s.end) return NULL;
        old_sfail(&s, "trailing characters after the value");
    }
    return strdup(s.msg);
}

static char *old_json_envelope(const char *json, size_t len, int *shape, size_t *msg_start, size_t *msg_len,
                        size_t *md_start, size_t *md_len) {
    old_sc s = {json, json, json + len, {0}, 0};
    *shape = 0;
    *msg_len = *md_len = 0;
    old_sws(&s);
    if (s.p < s.end && *s.p == '{') {
        int has_msg = 0, has_md = 0;
        s.p++;
        old_sws(&s);
        if (s.p < s.end && *s.p == '}') {
            s.p++;
        } else {
            for (;;) {
                old_sws(&s);
                if (s.p >= s.end || *s.p != '"') { old_sfail(&s, "expected a string key"); goto bad; }
                const char *k = s.p + 1;
                if (old_sstring(&s)) goto bad;
                size_t kl = (size_t)(s.p - 1 - k);
                old_sws(&s);
                if (s.p >= s.end || *s.p != ':') { old_sfail(&s, "expected ':'"); goto bad; }
                s.p++;
                old_sws(&s);
                const char *v = s.p;
                if (old_svalue(&s, 1)) goto bad;
                if (kl == 7 && memcmp(k, "message", 7) == 0) {
                    has_msg = *v == '{';
                    *msg_start = (size_t)(v - json);
                    *msg_len = (size_t)(s.p - v);
                } else if (kl == 8 && memcmp(k, "metadata", 8) == 0) {
                    has_md = 1;
                    *md_start = (size_t)(v - json);
                    *md_len = (size_t)(s.p - v);
                }
                old_sws(&s);
                if (s.p < s.end && *s.p == ',') { s.p++; continue; }
                if (s.p < s.end && *s.p == '}') { s.p++; break; }
                old_sfail(&s, "expected ',' or '}'");
                goto bad;
            }
        }
        old_sws(&s);
        if (s.p != s.end) { old_sfail(&s, "trailing characters after the value"); goto bad; }
        *shape = has_msg ? 2 : 1;
        if (!has_md) *md_len = 0;
        return NULL;
    }
    if (old_svalue(&s, 0) == 0) {
        old_sws(&s);
        if (s.p == s.end) return NULL;
        old_sfail(&s, "trailing characters after the value");
    }
bad:
    return strdup(s.msg);
}

/* ---- the comparison ---- */

static unsigned long n_inputs, n_valid, n_envelopes, n_edge, n_indexed, n_members, n_split_indexed;

/* lsb_lazy.c (lsb_lazy.h needs Lua's headers): the member scan lsb_lazy_push makes itself. */
int lsb_lazy_scan_members(const char *json, size_t len, uint32_t *members, int *count, uint32_t *height);

static void same_message(const char *a, const char *b, const char *fn, const char *in, size_t len) {
    if ((a == NULL) == (b == NULL) && (!a || strcmp(a, b) == 0)) return;
    fprintf(stderr, "%s differs on %zu bytes:\n  new: %s\n  old: %s\n  input: ", fn, len, a ? a : "(valid)",
            b ? b : "(valid)");
    for (size_t i = 0; i < len && i < 400; i++) fprintf(stderr, (unsigned char)in[i] < 0x20 || (unsigned char)in[i] >= 0x7f ? "\\x%02x" : "%c", (unsigned char)in[i]);
    fprintf(stderr, "\n");
    abort();
}

/* The message index lsb_lazy_push computes, found here byte by byte: the quotes that open or
 * close a string, the brackets outside strings, whitespace outside strings, any backslash. */
static void reference_index(const char *m, size_t n, uint64_t *quotes, uint64_t *brackets, int *compact,
                            int *escapes) {
    int in = 0;
    *compact = 1;
    *escapes = 0;
    for (size_t i = 0; i < n; i++) {
        char c = m[i];
        uint64_t bit = (uint64_t)1 << (i & 63);
        if (in) {
            if (c == '\\') { *escapes = 1; i++; }
            else if (c == '"') { quotes[i >> 6] |= bit; in = 0; }
        } else if (c == '"') { quotes[i >> 6] |= bit; in = 1; }
        else if (c == '{' || c == '}' || c == '[' || c == ']') brackets[i >> 6] |= bit;
        else if (c == ' ' || c == '\n' || c == '\r' || c == '\t') *compact = 0;
    }
}

/* lsb_json_envelope_indexed with room for `words` words: the same answer and outputs as
 * lsb_json_envelope (msg, shape, r), and when it indexed the message, the reference index. */
static void check_indexed(const char *in, size_t len, size_t words, const char *msg, int shape, const size_t *r) {
    uint64_t *bits = malloc(2 * (words ? words : 1) * sizeof *bits);
    if (!bits) abort();
    memset(bits, 0xA5, 2 * words * sizeof *bits);   /* what the index must overwrite */
    uint32_t members[4 * LSB_JSON_INDEX_MEMBERS];
    lsb_json_index ix = {.quotes = bits, .brackets = bits + words, .words = words, .json = in, .members = members};
    int s = 77;
    size_t o[4] = {991, 992, 993, 994};
    char *err = lsb_json_envelope_indexed(in, len, &s, &o[0], &o[1], &o[2], &o[3], &ix);
    same_message(err, msg, "lsb_json_envelope_indexed", in, len);
    free(err);
    if (s != shape || memcmp(o, r, sizeof o)) {
        fprintf(stderr, "lsb_json_envelope_indexed outputs differ\n");
        abort();
    }
    if (ix.json) {
        size_t nw = (ix.len + 63) / 64;
        if (msg || shape != 2 || ix.json != in + r[0] || ix.len != r[1] || *ix.json != '{' || nw > words) {
            fprintf(stderr, "lsb_json_envelope_indexed indexed the wrong bytes (%zu, %zu)\n",
                    (size_t)(ix.json - in), ix.len);
            abort();
        }
        uint64_t *want = calloc(2 * nw + 1, sizeof *want);
        int compact, escapes;
        if (!want) abort();
        reference_index(ix.json, ix.len, want, want + nw, &compact, &escapes);
        if (memcmp(want, ix.quotes, nw * sizeof *want) || memcmp(want + nw, ix.brackets, nw * sizeof *want) ||
            compact != ix.compact || escapes != ix.escapes) {
            fprintf(stderr, "lsb_json_envelope_indexed: wrong index of %zu message bytes\n", ix.len);
            abort();
        }
        free(want);
        n_indexed++;
        uint32_t want_m[4 * LSB_JSON_INDEX_MEMBERS], want_h = 0;
        int want_n = 0, r = lsb_lazy_scan_members(ix.json, ix.len, want_m, &want_n, &want_h);
        if (r < 0 || (r == 0) != (ix.count >= 0) ||
            (r == 0 && (want_n != ix.count || want_h != ix.height ||
                        memcmp(want_m, ix.members, 4 * (size_t)want_n * sizeof *want_m)))) {
            fprintf(stderr, "lsb_json_envelope_indexed: members differ from the lazy scan's (%d: %d %d, %u %u)\n", r,
                    want_n, ix.count, want_h, ix.height);
            abort();
        }
        n_members += ix.count > 0;
    } else if (!msg && shape == 2 && len - r[0] <= 64 * words) {
        fprintf(stderr, "lsb_json_envelope_indexed left a fitting message unindexed\n");
        abort();
    }
    free(bits);
}

/* lsb_json_split_request_indexed on `len` bytes: the same split as lsb_json_split_request, and
 * every index record for exactly its element's message, equal to the reference index. */
static void check_split(const char *in, size_t len) {
    static const char *const keys[] = {"message", "metadata", "destination"};
    size_t *s1 = NULL, *l1 = NULL, *f1 = NULL, *s2 = NULL, *l2 = NULL, *f2 = NULL;
    char *e1 = NULL, *e2 = NULL;
    int v1 = 0, v2 = 0;
    lsb_split_index ix = {0};
    long n1 = lsb_json_split_request(in, len, keys, 3, &s1, &l1, &f1, &v1, &e1);
    long n2 = lsb_json_split_request_indexed(in, len, keys, 3, &s2, &l2, &f2, &v2, &ix, &e2);
    if (n1 != n2 || v1 != v2 || (n1 < 0 && strcmp(e1, e2)) ||
        (n1 > 0 && (memcmp(s1, s2, (size_t)n1 * sizeof *s1) || memcmp(l1, l2, (size_t)n1 * sizeof *l1) ||
                    memcmp(f1, f2, 6 * (size_t)n1 * sizeof *f1)))) {
        fprintf(stderr, "lsb_json_split_request_indexed splits differently (%ld %ld, %d %d)\n", n1, n2, v1, v2);
        abort();
    }
    if ((ix.at != NULL) != (n2 >= 0 && v2)) {
        fprintf(stderr, "lsb_json_split_request_indexed: an index exactly when the fast path split the body\n");
        abort();
    }
    for (long i = 0; ix.at && i < n2; i++) {
        if (ix.at[i] == LSB_NO_INDEX) continue;
        size_t ms = s2[i] + f2[6 * i], ml = f2[6 * i + 1];
        lsb_json_index got;
        if (!ml || lsb_json_index_from_record(ix.blob + ix.at[i], in + ms, ml, &got)) {
            fprintf(stderr, "lsb_json_split_request_indexed: element %ld's record is not for its message\n", i);
            abort();
        }
        size_t nw = (ml + 63) / 64;
        uint64_t *want = calloc(2 * nw + 1, sizeof *want);
        int compact, escapes;
        if (!want) abort();
        reference_index(in + ms, ml, want, want + nw, &compact, &escapes);
        uint32_t want_m[4 * LSB_JSON_INDEX_MEMBERS], want_h = 0;
        int want_n = 0, r = lsb_lazy_scan_members(in + ms, ml, want_m, &want_n, &want_h);
        if (got.words != nw || memcmp(want, got.quotes, nw * sizeof *want) || memcmp(want + nw, got.brackets, nw * sizeof *want) ||
            compact != got.compact || escapes != got.escapes || r < 0 || (r == 0) != (got.count >= 0) ||
            (r == 0 && (want_n != got.count || want_h != got.height ||
                        memcmp(want_m, got.members, 4 * (size_t)want_n * sizeof *want_m)))) {
            fprintf(stderr, "lsb_json_split_request_indexed: element %ld's index differs from the reference\n", i);
            abort();
        }
        free(want);
        n_split_indexed++;
    }
    free(s1), free(l1), free(f1), free(e1), free(s2), free(l2), free(f2), free(e2), free(ix.blob), free(ix.at);
}

/* check_split on the input as a request body, and as the message of a one-element request. */
static void check_splits(const char *in, size_t len) {
    check_split(in, len);
    static const char pre[] = "[{\"destination\":{},\"message\":", post[] = ",\"metadata\":{}}]";
    size_t n = sizeof pre - 1 + len + sizeof post - 1;
    char *body = malloc(n);
    if (!body) abort();
    memcpy(body, pre, sizeof pre - 1);
    memcpy(body + sizeof pre - 1, in, len);
    memcpy(body + sizeof pre - 1 + len, post, sizeof post - 1);
    check_split(body, n);
    free(body);
}

/* Runs both validators on exactly `len` bytes (a buffer of that size, so reading past it is
 * caught by AddressSanitizer). */
static void compare(const char *data, size_t len) {
    char *in = malloc(len ? len : 1);
    if (!in) abort();
    memcpy(in, data, len);
    char *a = lsb_json_validate(in, len), *b = old_json_validate(in, len);
    same_message(a, b, "lsb_json_validate", in, len);
    n_inputs++;
    n_valid += a == NULL;
    free(a);
    free(b);

    /* outputs start out different from anything either writes, and must end up equal */
    int sa = 77, sb = 77;
    size_t ra[4] = {991, 992, 993, 994}, rb[4] = {991, 992, 993, 994};
    a = lsb_json_envelope(in, len, &sa, &ra[0], &ra[1], &ra[2], &ra[3]);
    b = old_json_envelope(in, len, &sb, &rb[0], &rb[1], &rb[2], &rb[3]);
    same_message(a, b, "lsb_json_envelope", in, len);
    if (sa != sb || memcmp(ra, rb, sizeof ra)) {
        fprintf(stderr, "lsb_json_envelope outputs differ: new %d %zu %zu %zu %zu, old %d %zu %zu %zu %zu\n", sa,
                ra[0], ra[1], ra[2], ra[3], sb, rb[0], rb[1], rb[2], rb[3]);
        abort();
    }
    n_envelopes += sa == 2;
    check_indexed(in, len, (len + 63) / 64, a, sa, ra);   /* room for any message */
    check_indexed(in, len, 2, a, sa, ra);                 /* room for 128 bytes */
    check_splits(in, len);
    free(a);
    free(b);
    free(in);
}

static void compare_str(const char *s) { compare(s, strlen(s)); }

/* ---- edge cases ---- */

static const char sample_event[] =
    "{\"message\":{\"type\":\"track\",\"event\":\"form_submit\",\"messageId\":\"128b2f33-0c5c-7fd0-a6a3-a450"
    "6513270e\",\"anonymousId\":\"0ed90475-9531-985d-5d9d-c9f81818e811\",\"userId\":\"u-0\",\"channel\":\"w"
    "eb\",\"originalTimestamp\":\"2026-11-21T10:00:00.000Z\",\"sentAt\":\"2026-11-21T10:00:01.000Z\",\"pr"
    "operties\":{\"revenue\":454.94,\"currency\":\"USD\",\"quantity\":4,\"product_id\":\"sku-4915\",\"coupon\""
    ":null,\"tags\":[\"a\",\"b\"],\"page_URL\":\"https://www.example.com/pricing?utm_source=google&utm_m"
    "edium=cpc\"},\"context\":{\"ip\":\"34.44.222.108\",\"library\":{\"name\":\"RudderLabs JavaScript SDK\","
    "\"version\":\"3.7.2\"},\"page\":{\"path\":\"/pricing\",\"referrer\":\"https://www.google.com/\",\"title\":"
    "\"Pricing\",\"url\":\"https://www.example.com/pricing\"},\"userAgent\":\"Mozilla/5.0 (X11; Linux x8"
    "6_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\",\"locale\":\"en-US\","
    "\"campaign\":{\"source\":\"google\",\"medium\":\"cpc\",\"name\":\"brand\"},\"traits\":{\"email\":\"user0@acme"
    ".io\",\"firstname\":\"Ann\",\"lastname\":\"Lee\",\"plan\":\"pro\"}},\"integrations\":{\"All\":true}},\"metad"
    "ata\":{\"messageId\":\"128b2f33-0c5c-7fd0-a6a3-a4506513270e\",\"sourceId\":\"src-web\",\"destination"
    "Id\":\"dst-sf\",\"workspaceId\":\"ws-1\",\"jobId\":1,\"eventType\":\"track\"}}"
;

/* A growable string for building cases. */
typedef struct { char *b; size_t n, cap; } sbuf;
static void put(sbuf *s, const char *t, size_t n) {
    if (s->n + n + 1 > s->cap) {
        s->cap = (s->n + n + 1) * 2;
        s->b = realloc(s->b, s->cap);
        if (!s->b) abort();
    }
    memcpy(s->b + s->n, t, n);
    s->n += n;
    s->b[s->n] = 0;
}
static void puts_(sbuf *s, const char *t) { put(s, t, strlen(t)); }
static void rep(sbuf *s, const char *t, int times) { while (times-- > 0) puts_(s, t); }

static void edge_fixed(void) {
    static const char *const cases[] = {
        "", " ", "\t\r\n ", "{", "[", "]", "}", ",", ":", "x", "\"", "\"abc", "\"\\", "\"\\u12", "\"\\u12g4\"",
        "\"\\x\"", "\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"", "\"\\u00e9\\u00E9\"", "\"\\ud800\"", "\"\\udc00\"",
        "\"\\udbff\\udfff\"", "\"\\ud800\\u0041\"", "\"\\ud83d\\ude00\"", "\"\\ud800\\\"", "\"\\ud800\\u\"",
        "\"\\ud800\\udc0", "\"\\ud800x\"", "\"\x01\"", "\"\x1f\"", "\"\x7f\"", "\"\t\"", "\"\n\"",
        "\"\xc0\x80\"", "\"\xc1\xbf\"", "\"\xc2\x80\"", "\"\xdf\xbf\"", "\"\xe0\x80\x80\"", "\"\xe0\x9f\xbf\"",
        "\"\xe0\xa0\x80\"", "\"\xed\x9f\xbf\"", "\"\xed\xa0\x80\"", "\"\xee\x80\x80\"", "\"\xef\xbf\xbf\"",
        "\"\xf0\x80\x80\x80\"", "\"\xf0\x8f\xbf\xbf\"", "\"\xf0\x90\x80\x80\"", "\"\xf4\x8f\xbf\xbf\"",
        "\"\xf4\x90\x80\x80\"", "\"\xf5\x80\x80\x80\"", "\"\xf8\x88\x80\x80\x80\"", "\"\xff\"", "\"\xfe\"",
        "\"\x80\"", "\"\xbf\"", "\"\xe2\x82\"", "\"\xe2\x82", "\"\xe2\x82\xac\"", "\"\xf0\x9f\x98\"",
        "\"\xf0\x9f\x98", "\"\xf0\x9f\x98\x80\"", "\"\xc3\"", "\"\xc3", "\"\xc3\x28\"",
        "0", "-0", "01", "-01", "00", "-", "-a", "--1", "1.", "1.e3", "1e", "1e+", "1e-", "1E-2", "1e+2", ".5",
        "+1", "1.5e3x", "0.0", "-0.0e-0", "1e309", "-1e309", "1e308", "-1e308", "1e-400", "-1e-400", "0e99999",
        "1e99999999999999999999", "1.7976931348623157e308", "1.7976931348623158e308", "1.7976931348623159e308",
        "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096"
        "330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730"
        "270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792",
        "[1e309]", "{\"a\":-1e309}", "[1,1e-400]",
        "true", "tru", "truex", "false", "fals", "falsy", "null", "nul", "nulL", "t", "f", "n", "True", "NaN",
        "Infinity", "-Infinity",
        "[]", "[ ]", "[1,]", "[,1]", "[1 2]", "[1,,2]", "[1]]", "[1] x", "[1]\x00", "\x00", "1\x00", "1 2", "1,2",
        "{}", "{ }", "{,}", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{\"a\" 1}", "{1:2}", "{\"a\":1 \"b\":2}", "{} {}",
        "{\"a\":1]", "[1}", "{\"a\" : [ 1 , 2 ] }", "  {\"a\" : [ 1 , 2 ] }  ", "\t[\r\n1\t,\n2 ]\r\n",
        "[1,\f2]", "[1,\v2]", "[\xc2\xa0]", "{\"a\":{\"b\":{}}}", "[[[]]]", "[[],[[]],{}]",
        "{\"message\":{}}", "{\"message\":[]}", "{\"message\":1,\"metadata\":2}", "{\"metadata\":null}",
        "{\"metadata\":{}}", "{\"message\":{},\"message\":1}", "{\"message\":1,\"message\":{}}",
        "{\"message\":{},\"metadata\":{},\"metadata\":3}", "{\"mess\\u0061ge\":{}}", "{\"message \":{}}",
        "{\"messag\":{}}", "{\"metadat\":{}}", "{\"metadatas\":{}}",
        " { \"message\" : { } , \"metadata\" : { } } ", "{\"message\":{}}x", "{\"message\":{}} ",
        "{\"message\":{\"a\":1},\"metadata\":{\"b\":2},\"x\":[1,{}]}", "{\"message\":{\"a\":1},\"metadata\":{\"b\":2},",
        "{\"message\":{\"a\":1},\"metadata\":", "{\"message\":{\"a\":1}", "{\"message\"", "{\"message\":{\"a\":1]}",
        "{\"message\":{\"a\":\"\xff\"}}", "{\"metadata\":{\"a\":1e999},\"message\":{}}", "{\"message\":{}}\x00",
        "{\"\":1}", "{\"\\\"\":1}", "{\"a\":\"\",\"b\":\"\"}",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) compare_str(cases[i]);
    compare("[1]\x00", 4);
    compare("\x00", 1);
    compare("1\x00", 2);
    compare("\"a\x00\"", 4);
    compare("{\"message\":{}}\x00", 15);
    compare("{\"message\":{},\x00", 15);
}

/* Nesting around LSB_JSON_MAX_DEPTH (200): arrays, objects, envelopes, whitespace at the
 * places the depth error is reported, a broken key where the value would be too deep. */
static void edge_depth(void) {
    static const char *const inner[] = {"1", "[]", "{}", "\"s\"", " 1 ", "[1]", "{\"k\":1}", "{1}", "{\"k\" 1}",
                                        "{\"k\":}", "[,]", "", "{\"\xff\":1}"};
    for (int n = 195; n <= 204; n++)
        for (size_t i = 0; i < sizeof inner / sizeof *inner; i++)
            for (int form = 0; form < 8; form++) {
                sbuf s = {0};
                if (form >= 4) puts_(&s, "{\"message\":");
                const char *open = (form & 3) == 0 ? "[" : (form & 3) == 1 ? "[ " : (form & 3) == 2 ? "{\"a\":" : "{ \"a\" : ";
                const char *close = (form & 3) < 2 ? "]" : "}";
                rep(&s, open, n);
                puts_(&s, inner[i]);
                rep(&s, close, n);
                if (form >= 4) puts_(&s, "}");
                compare(s.b, s.n);
                compare(s.b, s.n - 1);   /* one closer missing */
                free(s.b);
            }
    /* arrays with several elements at every level: the too-deep one is not the first */
    for (int n = 198; n <= 202; n++) {
        sbuf s = {0};
        rep(&s, "[1,", n);
        puts_(&s, "2");
        rep(&s, "]", n);
        compare(s.b, s.n);
        free(s.b);
        s = (sbuf){0};
        rep(&s, "{\"a\":1,\"b\":", n);
        puts_(&s, "{}");
        rep(&s, "}", n);
        compare(s.b, s.n);
        free(s.b);
        s = (sbuf){0};
        rep(&s, "[0, ", n);
        puts_(&s, "[ ]");
        rep(&s, " ]", n);
        compare(s.b, s.n);
        free(s.b);
    }
    sbuf s = {0};
    rep(&s, "[", 5000);
    compare(s.b, s.n);
    free(s.b);
}

/* A special byte (sequence) at every offset of strings of 0..48 bytes: across the 16-byte
 * blocks, and with the string at the end of the buffer (the shifted last block). */
static void edge_strings(void) {
    static const char *const special[] = {"\\n", "\\u00e9", "\\ud83d\\ude00", "\\ud800", "\\q", "\xc3\xa9",
                                          "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xc3", "\xed\xa0\x80", "\x01",
                                          "\x1f", "\xff", "\x7f", "\"", "\\"};
    for (int len = 0; len <= 48; len++)
        for (int k = 0; k <= len; k++)
            for (size_t i = 0; i < sizeof special / sizeof *special; i++)
                for (int form = 0; form < 4; form++) {
                    sbuf s = {0};
                    if (form == 1) puts_(&s, "[");
                    if (form == 2) puts_(&s, "{\"message\":{\"k\":");
                    if (form == 3) puts_(&s, "{\"");
                    else puts_(&s, "\"");
                    rep(&s, "a", k);
                    puts_(&s, special[i]);
                    rep(&s, "b", len - k);
                    puts_(&s, form == 3 ? "\":1}" : "\"");
                    if (form == 1) puts_(&s, "]");
                    if (form == 2) puts_(&s, "}}");
                    for (size_t cut = s.n > 24 ? s.n - 24 : 0; cut <= s.n; cut++) compare(s.b, cut);
                    free(s.b);
                }
    for (int len = 0; len <= 48; len++) {   /* plain strings, closed or not, whole buffer */
        sbuf s = {0};
        puts_(&s, "\"");
        rep(&s, "x", len);
        compare(s.b, s.n);
        puts_(&s, "\"");
        compare(s.b, s.n);
        free(s.b);
    }
}

/* Numbers around the point where they may overflow (300 characters, exponents). */
static void edge_numbers(void) {
    static const char *const tails[] = {"", ".5", "e0", "e-400", "e+10", ".0e-10", "x", ".", "e"};
    for (int n = 295; n <= 312; n++)
        for (int neg = 0; neg < 2; neg++)
            for (size_t t = 0; t < sizeof tails / sizeof *tails; t++)
                for (int digit = 0; digit < 3; digit++) {
                    sbuf s = {0};
                    if (neg) puts_(&s, "-");
                    puts_(&s, digit == 0 ? "9" : digit == 1 ? "1" : "0.");
                    rep(&s, digit == 0 ? "9" : "0", n - 1);
                    puts_(&s, tails[t]);
                    compare(s.b, s.n);
                    free(s.b);
                }
    sbuf s = {0};
    puts_(&s, "[1");
    rep(&s, "0", 400);
    puts_(&s, "]");
    compare(s.b, s.n);
    free(s.b);
}

/* A generated event: cut at every byte, every byte replaced by a few others, and blanks
 * inserted after every byte. */
static void edge_event(void) {
    size_t n = sizeof sample_event - 1;
    char *b = malloc(n * 2 + 2);
    for (size_t cut = 0; cut <= n; cut++) compare(sample_event, cut);
    static const char subst[] = {'"', '\\', '\x01', '\x80', ' ', '}', ']', ',', ':', '0', '{', '[', 'e', '-', '\n'};
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < sizeof subst; j++) {
            memcpy(b, sample_event, n);
            b[i] = subst[j];
            compare(b, n);
        }
    for (size_t i = 0; i <= n; i++) {
        memcpy(b, sample_event, i);
        b[i] = " \t\n\r"[i % 4];
        memcpy(b + i + 1, sample_event + i, n - i);
        compare(b, n + 1);
    }
    /* pretty-printed: a blank run after every structural byte */
    sbuf s = {0};
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = sample_event[i];
        put(&s, &c, 1);
        if (c == '"' && (i == 0 || sample_event[i - 1] != '\\')) in_str = !in_str;
        if (!in_str && (c == '{' || c == '[' || c == ',' || c == ':')) puts_(&s, "\n                    \t");
    }
    compare(s.b, s.n);
    for (size_t cut = 0; cut <= s.n; cut++) compare(s.b, cut);
    free(s.b);
    free(b);
}

static void report(void) {
    fprintf(stderr, "validator differential: %lu inputs (%lu edge cases), %lu valid, %lu envelopes (%lu indexed, %lu with members), %lu request messages indexed: no difference\n",
            n_inputs, n_edge, n_valid, n_envelopes, n_indexed, n_members, n_split_indexed);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    edge_fixed();
    edge_depth();
    edge_strings();
    edge_numbers();
    edge_event();
    n_edge = n_inputs;
    fprintf(stderr, "validator differential: %lu edge cases agree\n", n_edge);
    atexit(report);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    compare((const char *)data, size);
    return 0;
}
