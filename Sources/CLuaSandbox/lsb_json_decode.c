/*
 * JSON -> Lua, the input half of the JSON bridge.
 *
 * Mapping: objects -> string-keyed tables; arrays -> sequences (remembered in a weak set so an
 * empty array encodes back as []); null -> json.null (light userdata NULL); integers that fit
 * int64 -> Lua integers; other numbers -> floats (strtod, exact). Strings must be valid UTF-8;
 * \u escapes (with surrogate pairs) become UTF-8. Depth is capped at LSB_JSON_MAX_DEPTH.
 * Raises only on Lua allocation failure; malformed input returns -1 with a message.
 */
#include "lsb_internal.h"
#include "lsb_json.h"
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    lua_State *L;
    const char *start, *p, *end;
    int arrays;        /* stack index of the ARRAYS weak set */
    lsb_buf *scratch;  /* for unescaping */
    char *err;
    size_t errlen;
} jd;

static int fail(jd *d, const char *what) {
    snprintf(d->err, d->errlen, "invalid JSON at byte %zu: %s", (size_t)(d->p - d->start), what);
    return -1;
}

static void ws(jd *d) {
    while (d->p < d->end && (*d->p == ' ' || *d->p == '\n' || *d->p == '\r' || *d->p == '\t')) d->p++;
}

static int value(jd *d, int depth);

static int string(jd *d) {
    d->p++; /* opening quote */
    const char *s = d->p;
    /* fast path: no escapes */
    while (d->p < d->end) {
        d->p = lsb_skip_plain(d->p, d->end);
        if (d->p >= d->end) break;
        unsigned char c = (unsigned char)*d->p;
        if (c == '"') {
            lua_pushlstring(d->L, s, (size_t)(d->p - s));
            d->p++;
            return 0;
        }
        if (c == '\\') break;
        if (c < 0x20) return fail(d, "control character in string");
        if (c < 0x80) {
            d->p++;
            continue;
        }
        size_t n = lsb_utf8_seq(d->p, d->end);
        if (!n) return fail(d, "invalid UTF-8 in string");
        d->p += n;
    }
    /* slow path: unescape into scratch */
    lsb_buf *b = d->scratch;
    b->len = 0;
    if (lsb_buf_put(b, s, (size_t)(d->p - s))) return fail(d, "out of memory");
    while (d->p < d->end) {
        unsigned char c = (unsigned char)*d->p;
        if (c == '"') {
            lua_pushlstring(d->L, b->data ? b->data : "", b->len);
            d->p++;
            return 0;
        }
        if (c < 0x20) return fail(d, "control character in string");
        if (c == '\\') {
            unsigned cp;
            int r = lsb_json_unescape(&d->p, d->end, &cp);
            if (r < 0) return fail(d, r == -2 ? "lone UTF-16 surrogate in \\u escape" : "invalid escape");
            char u[4];
            size_t n = lsb_utf8_put(cp, u);
            if (lsb_buf_put(b, u, n)) return fail(d, "out of memory");
            continue;
        }
        size_t n = c < 0x80 ? 1 : lsb_utf8_seq(d->p, d->end);
        if (!n) return fail(d, "invalid UTF-8 in string");
        if (lsb_buf_put(b, d->p, n)) return fail(d, "out of memory");
        d->p += n;
    }
    return fail(d, "unterminated string");
}

/* The float a (syntax-checked) JSON number literal [s, end) stands for, without strtod, when
 * its digits make an integer m <= 2^53 and its decimal exponent p (after the point's shift) is
 * within 22 of zero: then m and 10^|p| are exact doubles and the one product or quotient is
 * correctly rounded, as strtod is (Clinger's fast path). Returns 0 otherwise. */
const double lsb_pow10[23] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
                              1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

int lsb_json_short_float(const char *s, const char *end, double *out) {
    const unsigned long long limit = 1ull << 53;
    int neg = *s == '-', point = 0;
    long p = 0;
    unsigned long long m = 0;
    const char *q = s + neg;
    for (; q < end && ((*q >= '0' && *q <= '9') || *q == '.'); q++) {
        if (*q == '.') {
            point = 1;
            continue;
        }
        m = m * 10 + (unsigned)(*q - '0');
        if (m > limit) return 0;
        p -= point;
    }
    if (q < end) {   /* 'e' or 'E', an optional sign, digits (checked: lazy tables call this on bytes
                      * only the caller validated) */
        int eneg = 0;
        long e = 0;
        if ((*q != 'e' && *q != 'E') || ++q == end) return 0;
        if (*q == '+' || *q == '-') eneg = *q++ == '-';
        if (q == end) return 0;
        for (; q < end; q++) {
            if (*q < '0' || *q > '9') return 0;
            e = e * 10 + (*q - '0');
            if (e > 1000) return 0;
        }
        p += eneg ? -e : e;
    }
    if (p < -22 || p > 22) return 0;
    double v = p < 0 ? (double)m / lsb_pow10[-p] : (double)m * lsb_pow10[p];
    *out = neg ? -v : v;
    return 1;
}

static int number(jd *d) {
    const char *s = d->p;
    int is_float = 0;
    if (d->p < d->end && *d->p == '-') d->p++;
    if (d->p >= d->end) return fail(d, "bad number");
    if (*d->p == '0') d->p++;
    else if (*d->p >= '1' && *d->p <= '9') while (d->p < d->end && *d->p >= '0' && *d->p <= '9') d->p++;
    else return fail(d, "bad number");
    if (d->p < d->end && *d->p == '.') {
        is_float = 1;
        d->p++;
        if (d->p >= d->end || *d->p < '0' || *d->p > '9') return fail(d, "bad number: digit expected after '.'");
        while (d->p < d->end && *d->p >= '0' && *d->p <= '9') d->p++;
    }
    if (d->p < d->end && (*d->p == 'e' || *d->p == 'E')) {
        is_float = 1;
        d->p++;
        if (d->p < d->end && (*d->p == '+' || *d->p == '-')) d->p++;
        if (d->p >= d->end || *d->p < '0' || *d->p > '9') return fail(d, "bad number: digit expected in exponent");
        while (d->p < d->end && *d->p >= '0' && *d->p <= '9') d->p++;
    }
    size_t n = (size_t)(d->p - s);
    if (!is_float) {
        int neg = *s == '-';
        unsigned long long v = 0;
        int overflow = 0;
        for (const char *q = s + neg; q < d->p; q++) {
            unsigned dgt = (unsigned)(*q - '0');
            if (v > (ULLONG_MAX - dgt) / 10) { overflow = 1; break; }
            v = v * 10 + dgt;
        }
        if (!overflow && (neg ? v <= (unsigned long long)LLONG_MAX + 1ull : v <= (unsigned long long)LLONG_MAX)) {
            lua_Integer i = neg ? (lua_Integer)(0ull - v) : (lua_Integer)v;
            lua_pushinteger(d->L, i);
            return 0;
        }
    }
    double fast;
    if (lsb_json_short_float(s, d->p, &fast)) {
        lua_pushnumber(d->L, fast);
        return 0;
    }
    char small[64];
    char *buf = small;
    if (n >= sizeof small) {
        d->scratch->len = 0;
        if (lsb_buf_put(d->scratch, s, n)) return fail(d, "out of memory");
        buf = d->scratch->data;
    } else {
        memcpy(small, s, n);
        small[n] = 0;
    }
    double v = strtod(buf, NULL);
    if (isinf(v)) return fail(d, "number out of range");
    lua_pushnumber(d->L, v);
    return 0;
}

static int literal(jd *d, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0) return fail(d, "unexpected token");
    d->p += n;
    return 0;
}

static int value(jd *d, int depth) {
    if (depth > LSB_JSON_MAX_DEPTH) return fail(d, "nested too deeply");
    ws(d);
    if (d->p >= d->end) return fail(d, "unexpected end of input");
    lua_State *L = d->L;
    switch (*d->p) {
    case '{': {
        luaL_checkstack(L, 4, "JSON too deep");
        d->p++;
        lua_createtable(L, 0, 4);
        ws(d);
        if (d->p < d->end && *d->p == '}') { d->p++; return 0; }
        for (;;) {
            ws(d);
            if (d->p >= d->end || *d->p != '"') return fail(d, "expected a string key");
            if (string(d)) return -1;
            ws(d);
            if (d->p >= d->end || *d->p != ':') return fail(d, "expected ':'");
            d->p++;
            if (value(d, depth + 1)) return -1;
            lua_rawset(L, -3);
            ws(d);
            if (d->p < d->end && *d->p == ',') { d->p++; continue; }
            if (d->p < d->end && *d->p == '}') { d->p++; return 0; }
            return fail(d, "expected ',' or '}'");
        }
    }
    case '[': {
        luaL_checkstack(L, 4, "JSON too deep");
        d->p++;
        lua_createtable(L, 4, 0);
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, d->arrays);
        ws(d);
        if (d->p < d->end && *d->p == ']') { d->p++; return 0; }
        for (lua_Integer i = 1;; i++) {
            if (value(d, depth + 1)) return -1;
            lua_rawseti(L, -2, i);
            ws(d);
            if (d->p < d->end && *d->p == ',') { d->p++; continue; }
            if (d->p < d->end && *d->p == ']') { d->p++; return 0; }
            return fail(d, "expected ',' or ']'");
        }
    }
    case '"': return string(d);
    case 't': if (literal(d, "true")) return -1; lua_pushboolean(L, 1); return 0;
    case 'f': if (literal(d, "false")) return -1; lua_pushboolean(L, 0); return 0;
    case 'n': if (literal(d, "null")) return -1; lua_pushlightuserdata(L, NULL); return 0;
    default:
        if (*d->p == '-' || (*d->p >= '0' && *d->p <= '9')) return number(d);
        return fail(d, "unexpected character");
    }
}

int lsb_json_decode_push(lua_State *L, const char *json, size_t len, char *err, size_t errlen) {
    lsb_state *S = lsb_get(L);
    int top = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ARRAYS);
    jd d = {L, json, json, json + len, lua_gettop(L), &S->scratch, err, errlen};
    if (value(&d, 0)) {
        lua_settop(L, top);
        return -1;
    }
    ws(&d);
    if (d.p != d.end) {
        fail(&d, "trailing characters after the value");
        lua_settop(L, top);
        return -1;
    }
    lua_remove(L, top + 1);
    return 0;
}
