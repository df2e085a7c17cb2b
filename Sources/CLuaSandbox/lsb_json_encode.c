/*
 * Lua -> JSON, the output half of the JSON bridge, plus the `json` table scripts see.
 *
 * Uses raw access only (no metamethods run), never raises, and bounds depth (which also
 * stops cycles) and output size. A table is an array when its keys are exactly 1..n, or when
 * it is empty and was decoded from a JSON array (or marked with json.array); it is an object
 * when every key is a string. Object keys are emitted sorted, so output is deterministic.
 * Integers print as integers; floats print in the shortest form that reads back exactly,
 * always with a '.' or exponent; NaN and infinities are errors.
 */
#include "lsb_internal.h"
#include "lsb_json.h"
#include "lsb_lazy.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One step of the path to the value being encoded; formatted only when an error is reported. */
typedef struct {
    const char *key;     /* object key (lives on the Lua stack while encoding), or NULL */
    size_t keylen;
    lua_Integer index;   /* array index when key is NULL */
} jstep;

#define JE_MAX_PATH 128

typedef struct {
    lua_State *L;
    lsb_buf *out;
    size_t max;
    void *lazy;          /* the state's lazy record cache (lsb_lazy_of_table) */
    const char **raw;    /* lsb_json_encode_raw: where an unchanged lazy object's bytes go, or NULL */
    size_t *rawlen;
    char *err;
    size_t errlen;
    jstep path[JE_MAX_PATH];
    size_t depth;        /* steps in use (may exceed JE_MAX_PATH; deeper steps are not kept) */
} je;

static int efail(je *e, const char *fmt, const char *detail) {
    char what[256], path[512];
    snprintf(what, sizeof what, fmt, detail);
    size_t n = 0;
    path[n++] = '$';
    path[n] = 0;
    size_t kept = e->depth < JE_MAX_PATH ? e->depth : JE_MAX_PATH;
    for (size_t i = 0; i < kept && n < sizeof path - 1; i++) {
        const jstep *st = &e->path[i];
        int w = st->key ? snprintf(path + n, sizeof path - n, ".%.*s", (int)(st->keylen > 64 ? 64 : st->keylen), st->key)
                        : snprintf(path + n, sizeof path - n, "[%lld]", (long long)st->index);
        if (w < 0) break;
        n = n + (size_t)w < sizeof path ? n + (size_t)w : sizeof path - 1;
    }
    snprintf(e->err, e->errlen, "%s at %s", what, path);
    return -1;
}

static int put(je *e, const char *s, size_t n) {
    if (e->out->len + n > e->max) {
        char lim[32];
        snprintf(lim, sizeof lim, "%zu", e->max);
        return efail(e, "output larger than %s bytes", lim);
    }
    if (lsb_buf_put(e->out, s, n)) return efail(e, "%s", "out of host memory");
    return 0;
}

static size_t path_push_key(je *e, const char *k, size_t n) {
    if (e->depth < JE_MAX_PATH) e->path[e->depth] = (jstep){k, n, 0};
    return e->depth++;
}

static size_t path_push_index(je *e, lua_Integer i) {
    if (e->depth < JE_MAX_PATH) e->path[e->depth] = (jstep){NULL, 0, i};
    return e->depth++;
}

static void path_pop(je *e, size_t old) { e->depth = old; }

static int put_string(je *e, const char *s, size_t n) {
    if (!lsb_utf8_valid(s, n)) return efail(e, "%s", "string is not valid UTF-8");
    if (put(e, "\"", 1)) return -1;
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (put(e, s + run, i - run)) return -1;
        char esc[8];
        switch (c) {
        case '"': memcpy(esc, "\\\"", 3); break;
        case '\\': memcpy(esc, "\\\\", 3); break;
        case '\n': memcpy(esc, "\\n", 3); break;
        case '\r': memcpy(esc, "\\r", 3); break;
        case '\t': memcpy(esc, "\\t", 3); break;
        case '\b': memcpy(esc, "\\b", 3); break;
        case '\f': memcpy(esc, "\\f", 3); break;
        default: snprintf(esc, sizeof esc, "\\u%04x", c);
        }
        if (put(e, esc, strlen(esc))) return -1;
        run = i + 1;
    }
    if (put(e, s + run, n - run)) return -1;
    return put(e, "\"", 1);
}

/* Writes d as its shortest decimal with at most 15 significant digits, when there is one that
 * reads back as d and %.15g would print it without an exponent (1e-4 <= |d| < 1e15); returns
 * its length, else 0. Those are exactly the bytes of the %.15g path in put_number: a decimal of
 * at most 15 significant digits that reads back as d is the only one (two such decimals are
 * further apart than a double's spacing). m / 10^k, both exact doubles, is correctly rounded,
 * as strtod is: it equals d exactly when the decimal reads back as d. */
static int short_decimal(double d, char *b) {
    double a = fabs(d);
    if (!(a >= 1e-4 && a < 1e15)) return 0;   /* also NaN, 0 and -0.0 */
    for (int k = 0; k < 16; k++) {
        double x = a * lsb_pow10[k];
        if (x >= 1e15) return 0;   /* 16 or more significant digits */
        long long m = llround(x);
        if ((double)m / lsb_pow10[k] != a) continue;
        char digits[24], *p = digits + sizeof digits;
        for (int i = 0; i < k || m; i++) {   /* the k decimals, then the integer part */
            *--p = (char)('0' + m % 10);
            m /= 10;
            if (i == k - 1) *--p = '.';
        }
        if (*p == '.') *--p = '0';
        size_t len = (size_t)(digits + sizeof digits - p);
        if (k) {   /* as %g: no trailing zeros after the point, nor the point alone */
            while (p[len - 1] == '0') len--;
            if (p[len - 1] == '.') len--;
        }
        int n = 0;
        if (d < 0) b[n++] = '-';
        memcpy(b + n, p, len);
        return n + (int)len;
    }
    return 0;
}

static int put_number(je *e, int idx) {
    char b[40];
    int n;
    if (lua_isinteger(e->L, idx)) {
        lua_Integer v = lua_tointeger(e->L, idx);
        lua_Unsigned u = v < 0 ? (lua_Unsigned)0 - (lua_Unsigned)v : (lua_Unsigned)v;
        char *p = b + sizeof b;
        do {
            *--p = (char)('0' + u % 10);
            u /= 10;
        } while (u);
        if (v < 0) *--p = '-';
        return put(e, p, (size_t)(b + sizeof b - p));
    }
    double d = lua_tonumber(e->L, idx);
    if (!isfinite(d)) return efail(e, "%s", isnan(d) ? "NaN cannot be represented in JSON" : "infinity cannot be represented in JSON");
    if ((n = short_decimal(d, b))) {
        b[n] = 0;
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            n = snprintf(b, sizeof b, "%.*g", prec, d);
            if (strtod(b, NULL) == d) break;
        }
    }
    if (!strpbrk(b, ".eE")) { b[n++] = '.'; b[n++] = '0'; b[n] = 0; }
    return put(e, b, (size_t)n);
}

typedef struct {
    const char *s;
    size_t n;
    int slot;   /* stack index of the value */
} keyref;

static int keycmp(const void *a, const void *b) {
    const keyref *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

static int value(je *e, int idx, int depth);

/* `"key":value` for the value at stack index slot (the key escaped as needed). */
static int put_member(je *e, const char *k, size_t n, int slot, int depth) {
    if (put_string(e, k, n) || put(e, ":", 1)) return -1;
    size_t old = path_push_key(e, k, n);
    int r = value(e, slot, depth);
    path_pop(e, old);
    return r;
}

static int kept_as_input(je *e, const lsb_lazy *z, const lsb_lazy_member *m, int v, int depth);
static int put_raw(je *e, const lsb_lazy *z, const char *s, size_t n);

/* A table as JSON. `az`: the record of the lazy array it is (forced, changed), or NULL: its
 * elements still equal to their input are written as their input bytes. */
static int table(je *e, int idx, int depth, const lsb_lazy *az) {
    lua_State *L = e->L;
    if (depth > LSB_JSON_MAX_OUT_DEPTH) {
        char d[16];
        snprintf(d, sizeof d, "%d", LSB_JSON_MAX_OUT_DEPTH);
        return efail(e, "nested deeper than %s levels (is the table cyclic?)", d);
    }
    lua_Unsigned n = lua_rawlen(L, idx);
    size_t count = 0, strings = 0, ints = 0;
    lua_Integer badint = 0;
    const char *badtype = NULL;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        int kt = lua_type(L, -2);
        if (kt == LUA_TSTRING) strings++;
        else if (kt == LUA_TNUMBER && lua_isinteger(L, -2)) {
            lua_Integer k = lua_tointeger(L, -2);
            if (k >= 1 && (lua_Unsigned)k <= n) ints++;
            else if (!badint) badint = k;
        } else if (!badtype) badtype = lua_typename(L, kt);
        lua_pop(L, 1);
    }
    if (badtype) return efail(e, "table has a %s key; only string keys (objects) or 1..n (arrays) can be JSON", badtype);
    int is_array;
    if (count == 0) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ARRAYS);
        lua_pushvalue(L, idx);
        lua_rawget(L, -2);
        is_array = lua_toboolean(L, -1);
        lua_pop(L, 2);
    } else if (strings == count) is_array = 0;
    else if (ints == count && badint == 0 && (lua_Unsigned)count == n) is_array = 1;
    else if (strings > 0) return efail(e, "%s", "table mixes string keys with integer keys");
    else if (badint) {
        char k[32];
        snprintf(k, sizeof k, "%lld", (long long)badint);
        return efail(e, "sparse array (integer key %s outside 1..#t)", k);
    } else return efail(e, "%s", "sparse array (holes: nil elements inside the sequence)");
    if (is_array) {
        if (put(e, "[", 1)) return -1;
        for (lua_Integer i = 1; (lua_Unsigned)i <= n; i++) {
            if (i > 1 && put(e, ",", 1)) return -1;
            lua_rawgeti(L, idx, i);
            if (az && i <= az->count && kept_as_input(e, az, &az->m[i - 1], lua_gettop(L), depth)) {
                lua_pop(L, 1);
                if (put_raw(e, az, az->base + az->m[i - 1].voff, az->m[i - 1].vlen)) return -1;
                continue;
            }
            size_t old = path_push_index(e, i);
            int r = value(e, lua_gettop(L), depth + 1);
            path_pop(e, old);
            lua_pop(L, 1);
            if (r) return -1;
        }
        return put(e, "]", 1);
    }
    /* object: push every key/value pair, sort the keys, emit */
    if (count > 1000000 || !lua_checkstack(L, (int)(2 * count) + 8))
        return efail(e, "%s", "object has too many keys");
    keyref *keys = malloc(count * sizeof *keys);
    if (!keys) return efail(e, "%s", "out of host memory");
    int base = lua_gettop(L);
    size_t k = 0;
    lua_pushnil(L);
    while (k < count && lua_next(L, idx)) {
        lua_pushvalue(L, -2);   /* key, value, key */
        keys[k].slot = lua_gettop(L) - 1;
        keys[k].s = lua_tolstring(L, -3, &keys[k].n);
        k++;
    }
    if (k != count) {   /* an emergency GC cleared weak entries while the stack grew */
        free(keys);
        lua_settop(L, base);
        return efail(e, "%s", "table changed while it was being encoded (weak table?)");
    }
    qsort(keys, count, sizeof *keys, keycmp);
    int r = put(e, "{", 1);
    for (size_t i = 0; r == 0 && i < count; i++) {
        if (i > 0 && (r = put(e, ",", 1))) break;
        r = put_member(e, keys[i].s, keys[i].n, keys[i].slot, depth + 1);
    }
    free(keys);
    lua_settop(L, base);
    return r ? r : put(e, "}", 1);
}

/* ---- lazy event objects (lsb_lazy.h): unchanged members are written as their input bytes ---- */

/* Would input bytes of nesting `height`, written at `depth`, hold a table deeper than the encoder
 * allows? (The same limit as for tables the script builds.) */
static int raw_too_deep(int depth, uint32_t height) {
    return height && (uint64_t)depth + height - 1 > LSB_JSON_MAX_OUT_DEPTH;
}

/* A member's input value written at `depth`: its exact nesting is measured only when the
 * object's own nesting says it could matter. */
static int member_too_deep(const lsb_lazy *z, const lsb_lazy_member *m, int depth) {
    if (!raw_too_deep(depth, z->height - 1)) return 0;
    return raw_too_deep(depth, lsb_lazy_height(z->base + m->voff, m->vlen));
}

/* Appends input bytes, dropping whitespace outside strings unless the source is compact. */
static int put_raw(je *e, const lsb_lazy *z, const char *s, size_t n) {
    if (z->compact) return put(e, s, n);
    char small[256], *tmp = n <= sizeof small ? small : malloc(n);
    if (!tmp) return efail(e, "%s", "out of host memory");
    size_t m = lsb_lazy_compact_copy(tmp, s, n);
    int r = put(e, tmp, m);
    if (tmp != small) free(tmp);
    return r;
}

/* Does the string token tok[0, n) (quotes included), which holds an escape, decode to sv[0, sl)? */
static int same_escaped(const char *sv, size_t sl, const char *tok, size_t n) {
    const char *p = tok + 1, *end = tok + n - 1;
    size_t j = 0;
    while (p < end) {
        if (*p != '\\') {
            if (j >= sl || sv[j] != *p) return 0;
            j++, p++;
            continue;
        }
        unsigned cp;
        char u[4];
        if (lsb_json_unescape(&p, end, &cp)) return 0;
        size_t k = lsb_utf8_put(cp, u);
        if (j + k > sl || memcmp(sv + j, u, k) != 0) return 0;
        j += k;
    }
    return j == sl;
}

/* Is the value at vidx, of type `type`, still the one member m decoded to? (Conservative: "no"
 * re-encodes.) `escapes`: the input may hold a backslash. */
static int same_scalar(lua_State *L, int vidx, int type, const char *tok, size_t n, int escapes) {
    switch (type) {
    case LUA_TSTRING: {
        size_t sl;
        const char *sv = lua_tolstring(L, vidx, &sl);
        if (tok[0] != '"') return 0;
        if (escapes && memchr(tok + 1, '\\', n - 2)) return same_escaped(sv, sl, tok, n);
        return sl == n - 2 && memcmp(sv, tok + 1, sl) == 0;
    }
    case LUA_TBOOLEAN: return tok[0] == (lua_toboolean(L, vidx) ? 't' : 'f');
    case LUA_TLIGHTUSERDATA: return lua_touserdata(L, vidx) == NULL && tok[0] == 'n';
    case LUA_TNUMBER: {
        if (!lua_isinteger(L, vidx)) {   /* a float: the same double as the literal, decoded to a float */
            if (n > 40) return 0;
            if (!(memchr(tok, '.', n) || memchr(tok, 'e', n) || memchr(tok, 'E', n))) {
                /* an integer literal is a float only beyond int64 */
                const char *d = tok + (tok[0] == '-');
                size_t digits = n - (size_t)(d - tok);
                if (digits < 19 || (digits == 19 && memcmp(d, tok[0] == '-' ? "9223372036854775808" : "9223372036854775807", 19) <= 0))
                    return 0;
            }
            double x = lua_tonumber(L, vidx), t;
            if (!lsb_json_short_float(tok, tok + n, &t)) {
                char b[48];
                memcpy(b, tok, n);
                b[n] = 0;
                t = strtod(b, NULL);
            }
            return memcmp(&x, &t, sizeof x) == 0;   /* bit for bit: -0.0 is not 0.0 */
        }
        if (n > 20) return 0;
        lua_Integer v = lua_tointeger(L, vidx);
        char b[24], *p = b + sizeof b;
        lua_Unsigned u = v < 0 ? (lua_Unsigned)0 - (lua_Unsigned)v : (lua_Unsigned)v;
        do *--p = (char)('0' + u % 10); while (u /= 10);
        if (v < 0) *--p = '-';
        return (size_t)(b + sizeof b - p) == n && memcmp(p, tok, n) == 0;
    }
    default: return 0;
    }
}

static int lazy_clean(je *e, int idx, const lsb_lazy *z, int depth, int top, int room);

/* Is the value at v (of type `type`, the top of the stack) still the one member or element m of z
 * decoded to? `room` as for lazy_clean. */
/* Is the plain table at v (no lazy record) still member or element m of z, an object or array of
 * scalars only: exactly its keys, each with an equal value? Its pairs are matched to the token's
 * members by their bytes (no key is made a Lua string). A json.array mark decides an empty one, as
 * it decides how the table is written. */
static int same_plain(je *e, const lsb_lazy *z, const lsb_lazy_member *m, int v) {
    lua_State *L = e->L;
    lsb_lazy_member ms[LSB_LAZY_MAX_MEMBERS];
    int count;
    uint32_t height;
    if (lsb_lazy_scan_token(z, m, ms, &count, &height) != 0 || height != 1 || !lua_checkstack(L, 4)) return 0;
    int top = lua_gettop(L), n = 0, object = z->base[m->voff] == '{';
    if (count == 0) {
        lua_pushnil(L);
        if (lua_next(L, v)) {
            lua_settop(L, top);
            return 0;
        }
        lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ARRAYS);
        lua_pushvalue(L, v);
        int marked = lua_rawget(L, -2) != LUA_TNIL;
        lua_settop(L, top);
        return marked != object;
    }
    int ok = 1;   /* distinct keys match distinct members: with `count` pairs, every member is matched */
    lua_pushnil(L);
    while (ok && lua_next(L, v)) {   /* key at -2, value at -1 */
        int i = -1, vt = lua_type(L, -1);
        if (++n > count || vt == LUA_TNIL || vt == LUA_TTABLE) ok = 0;
        else if (object) {
            if (lua_type(L, -2) == LUA_TSTRING) {
                size_t kl;
                const char *k = lua_tolstring(L, -2, &kl);
                for (int j = 0; j < count && i < 0; j++)
                    if (ms[j].klen == kl && memcmp(z->base + ms[j].koff, k, kl) == 0) i = j;
            }
        } else if (lua_isinteger(L, -2)) {
            lua_Integer k = lua_tointeger(L, -2);
            if (k >= 1 && k <= count) i = (int)k - 1;
        }
        if (ok && (i < 0 || !same_scalar(L, -1, vt, z->base + ms[i].voff, ms[i].vlen, z->escapes))) ok = 0;
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    return ok && n == count;
}

static inline __attribute__((always_inline)) int same_member(je *e, const lsb_lazy *z, const lsb_lazy_member *m, int v, int type, int depth, int room) {
    lua_State *L = e->L;
    const char *tok = z->base + m->voff;
    if (type == LUA_TSTRING && !z->escapes) {   /* the usual scalar, inline */
        size_t sl;
        const char *sv = lua_tolstring(L, v, &sl);
        return tok[0] == '"' && sl == m->vlen - 2 && memcmp(sv, tok + 1, sl) == 0;
    }
    if (type == LUA_TTABLE) {
        const lsb_lazy *c = lsb_lazy_of_table(L, e->lazy, v);
        if (!c) return same_plain(e, z, m, v);
        /* json.array() marks can change how an empty child object is written */
        return c && c->base == z->base && c->off == m->voff && (c->array || !c->marked) &&
               lazy_clean(e, v, c, depth + 1, v, room - 1);
    }
    return type != LUA_TNIL && same_scalar(L, v, type, tok, m->vlen, z->escapes);
}

/* Is the lazy table at idx exactly its input? An object: every touched member present and
 * unchanged, no added keys. Conservative: "no" only costs writing the members one by one. While
 * nothing was assigned the table's keys are touched members' (lsb_lazy.h), so looking up those
 * suffices. An array: unforced, or forced with every element unchanged and nothing assigned.
 * `top` is the top of the stack, with `room` slots known to be free above it. */
static int lazy_clean(je *e, int idx, const lsb_lazy *z, int depth, int top, int room) {
    lua_State *L = e->L;
    if (z->assigned || depth > LSB_JSON_MAX_OUT_DEPTH) return 0;
    if (z->array && !z->forced) return 1;
    if (room < 5) {   /* a level holds one value, and a lookup below it pushes up to three more */
        if (!lua_checkstack(L, 16)) return 0;
        room = 16;
    }
    int v = top + 1;   /* where each member's value is looked at */
    if (z->array) {
        for (int i = 0; i < z->count; i++) {
            int ok = same_member(e, z, &z->m[i], v, lua_rawgeti(L, idx, (lua_Integer)i + 1), depth, room);
            lua_settop(L, top);
            if (!ok) return 0;
        }
        return 1;
    }
    for (uint64_t t = z->touched; t; t &= t - 1) {
        const lsb_lazy_member *m = &z->m[__builtin_ctzll(t)];
        lua_pushlstring(L, z->base + m->koff, m->klen);
        int ok = same_member(e, z, m, v, lua_rawget(L, idx), depth, room);
        lua_settop(L, top);
        if (!ok) return 0;
    }
    return 1;
}

/* In a changed table: is member or element m of z, whose value is at v, written as its input
 * bytes? A scalar or plain table still equal to it is; a lazy child is not here: value() writes
 * it, as its own input bytes when it is clean. */
static int kept_as_input(je *e, const lsb_lazy *z, const lsb_lazy_member *m, int v, int depth) {
    lua_State *L = e->L;
    int type = lua_type(L, v);
    if (type != LUA_TTABLE) return type != LUA_TNIL && same_scalar(L, v, type, z->base + m->voff, m->vlen, z->escapes);
    return !lsb_lazy_of_table(L, e->lazy, v) && same_plain(e, z, m, v) && !member_too_deep(z, m, depth + 1);
}

/* A lazy array: its input bytes while clean, else the plain table it is once forced. */
static int lazy_array(je *e, int idx, lsb_lazy *z, int depth) {
    /* value() made room for 8 more slots */
    if (depth <= LSB_JSON_MAX_OUT_DEPTH && lazy_clean(e, idx, z, depth, lua_gettop(e->L), 8) &&
        !raw_too_deep(depth, z->height))
        return put_raw(e, z, z->base + z->off, z->len);
    lsb_lazy_force(e->L, idx);
    return table(e, idx, depth, depth <= LSB_JSON_MAX_OUT_DEPTH ? z : NULL);
}

static int lazy_object(je *e, int idx, const lsb_lazy *z, int depth) {
    lua_State *L = e->L;
    if (depth > LSB_JSON_MAX_OUT_DEPTH) return table(e, idx, depth, NULL);   /* reports the depth error */
    if (z->marked) {   /* json.array(t): an empty table (no member left, nothing added) is [] */
        int empty = 1;
        for (int i = 0; i < z->count && empty; i++) empty = (z->touched >> i & 1) != 0;
        if (empty) {
            lua_pushnil(L);
            if (lua_next(L, idx)) {
                lua_pop(L, 2);
                empty = 0;
            }
        }
        if (empty) return put(e, "[]", 2);
    }
    /* value() made room for 8 more slots */
    if (lazy_clean(e, idx, z, depth, lua_gettop(L), 8) && !raw_too_deep(depth, z->height)) {
        if (e->raw && depth == 0 && z->compact && e->out->len + z->len <= e->max) {
            *e->raw = z->base + z->off;
            *e->rawlen = z->len;
            return 0;
        }
        return put_raw(e, z, z->base + z->off, z->len);
    }
    /* added keys: strings are written after the members, sorted; any other key makes this
     * the eager table's error (or, with no member left, the plain table it now is) */
    size_t extra = 0;
    int other = 0;
    const char *badtype = NULL;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            other = 1;
            if (!badtype && !lua_isinteger(L, -1)) badtype = lua_typename(L, lua_type(L, -1));
        } else {
            size_t n;
            const char *k = lua_tolstring(L, -1, &n);
            if (lsb_lazy_find(z, k, n) < 0) extra++;
        }
    }
    if (other) {
        int members = 0;
        for (int i = 0; i < z->count; i++) {
            if (!(z->touched >> i & 1)) { members++; continue; }
            lua_pushlstring(L, z->base + z->m[i].koff, z->m[i].klen);
            members += lua_rawget(L, idx) != LUA_TNIL;
            lua_pop(L, 1);
        }
        /* the eager table's verdict: a bad key type first, then the mix */
        if (members && badtype) return efail(e, "table has a %s key; only string keys (objects) or 1..n (arrays) can be JSON", badtype);
        if (members) return efail(e, "%s", "table mixes string keys with integer keys");
        return table(e, idx, depth, NULL);
    }
    if (extra > 1000000 || !lua_checkstack(L, (int)(2 * extra) + 8)) return efail(e, "%s", "object has too many keys");
    int base = lua_gettop(L);
    keyref *keys = NULL;
    if (extra) {
        keys = malloc(extra * sizeof *keys);
        if (!keys) return efail(e, "%s", "out of host memory");
        size_t k = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            size_t n;
            const char *s = lua_tolstring(L, -2, &n);
            if (k < extra && lsb_lazy_find(z, s, n) < 0) {
                lua_pushvalue(L, -2);   /* key, value, key */
                keys[k].slot = lua_gettop(L) - 1;
                keys[k].s = lua_tolstring(L, -3, &keys[k].n);
                k++;
            } else lua_pop(L, 1);
        }
        if (k != extra) {
            free(keys);
            lua_settop(L, base);
            return efail(e, "%s", "table changed while it was being encoded (weak table?)");
        }
        qsort(keys, extra, sizeof *keys, keycmp);
    }
    int r = put(e, "{", 1), first = 1;
    /* no member's input bytes can pass the nesting limit here: then a run of untouched members
     * is written at once, `"k1":v1,"k2":v2` as it stands in the input */
    int shallow = !raw_too_deep(depth + 1, z->height - 1);
    for (int i = 0; r == 0 && i < z->count; i++) {
        const lsb_lazy_member *m = &z->m[i];
        const char *k = z->base + m->koff;
        if (shallow && !(z->touched >> i & 1)) {
            int j = i;
            while (j + 1 < z->count && !(z->touched >> (j + 1) & 1)) j++;
            if (!first && (r = put(e, ",", 1))) break;
            first = 0;
            const char *end = z->base + z->m[j].voff + z->m[j].vlen;
            r = put_raw(e, z, k - 1, (size_t)(end - (k - 1)));
            i = j;
            continue;
        }
        if (!(z->touched >> i & 1)) {
            if (!first && (r = put(e, ",", 1))) break;
            first = 0;
            if ((r = put(e, k - 1, m->klen + 2)) || (r = put(e, ":", 1))) break;
            if (member_too_deep(z, m, depth + 1)) {   /* the eager table's error, path and all */
                char derr[200];
                if (lsb_json_decode_push(L, z->base + m->voff, m->vlen, derr, sizeof derr)) {
                    r = efail(e, "%s", derr);
                    break;
                }
                size_t old = path_push_key(e, k, m->klen);
                r = value(e, lua_gettop(L), depth + 1);
                path_pop(e, old);
                lua_pop(L, 1);
                break;
            }
            r = put_raw(e, z, z->base + m->voff, m->vlen);
            continue;
        }
        lua_pushlstring(L, k, m->klen);
        if (lua_rawget(L, idx) == LUA_TNIL) {   /* deleted */
            lua_pop(L, 1);
            continue;
        }
        if (!first && (r = put(e, ",", 1))) break;
        first = 0;
        if (kept_as_input(e, z, m, lua_gettop(L), depth)) {   /* `"k":v` as in the input */
            r = put_raw(e, z, k - 1, (size_t)(z->base + m->voff + m->vlen - (k - 1)));
        } else if ((r = put(e, k - 1, m->klen + 2)) || (r = put(e, ":", 1))) {
            break;
        } else {
            size_t old = path_push_key(e, k, m->klen);
            r = value(e, lua_gettop(L), depth + 1);
            path_pop(e, old);
        }
        lua_pop(L, 1);
    }
    for (size_t i = 0; r == 0 && i < extra; i++) {
        if (!first && (r = put(e, ",", 1))) break;
        first = 0;
        r = put_member(e, keys[i].s, keys[i].n, keys[i].slot, depth + 1);
    }
    free(keys);
    lua_settop(L, base);
    return r ? r : put(e, "}", 1);
}

static int value(je *e, int idx, int depth) {
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return put(e, "null", 4);
    case LUA_TBOOLEAN: return lua_toboolean(L, idx) ? put(e, "true", 4) : put(e, "false", 5);
    case LUA_TNUMBER: return put_number(e, idx);
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return put_string(e, s, n);
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) return put(e, "null", 4);
        return efail(e, "%s", "cannot encode a host value");
    case LUA_TTABLE:
        if (!lua_checkstack(L, 8)) return efail(e, "%s", "nested too deeply");
        {
            lsb_lazy *z = lsb_lazy_of_table(L, e->lazy, idx);
            if (z) return z->array ? lazy_array(e, idx, z, depth) : lazy_object(e, idx, z, depth);
        }
        if (lsb_frozen_target(L, idx)) {   /* a read-only proxy (metadata): what it shows */
            int r = value(e, lua_gettop(L), depth);
            lua_pop(L, 1);
            return r;
        }
        return table(e, idx, depth, NULL);
    default:
        return efail(e, "cannot encode a %s as JSON", lua_typename(L, lua_type(L, idx)));
    }
}

int lsb_json_encode_raw(lua_State *L, int idx, lsb_buf *out, size_t max_bytes, const char **raw, size_t *rawlen,
                       char *err, size_t errlen) {
    idx = lua_absindex(L, idx);
    if (!lua_checkstack(L, 8)) {
        snprintf(err, errlen, "stack exhausted");
        return -1;
    }
    je e;   /* path steps are written before they are read */
    e.L = L;
    e.out = out;
    e.max = max_bytes ? max_bytes : (size_t)-1;
    e.lazy = lsb_get(L)->lazy;
    e.raw = raw;
    e.rawlen = rawlen;
    e.err = err;
    e.errlen = errlen;
    e.depth = 0;
    if (raw) *raw = NULL;
    return value(&e, idx, 0);
}

int lsb_json_encode(lua_State *L, int idx, lsb_buf *out, size_t max_bytes, char *err, size_t errlen) {
    return lsb_json_encode_raw(L, idx, out, max_bytes, NULL, NULL, err, errlen);
}

/* ---- the `json` table ---- */

static int j_encode(lua_State *L) {
    lsb_check_deadline(L);
    luaL_checkany(L, 1);
    lsb_state *S = lsb_get(L);
    char err[600];
    S->enc.len = 0;
    if (lsb_json_encode(L, 1, &S->enc, S->cfg.max_output_bytes, err, sizeof err))
        return luaL_error(L, "json.encode: %s", err);
    lua_pushlstring(L, S->enc.data ? S->enc.data : "", S->enc.len);
    return 1;
}

static int j_decode(lua_State *L) {
    lsb_check_deadline(L);
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char err[200];
    if (lsb_json_decode_push(L, s, n, err, sizeof err)) return luaL_error(L, "json.decode: %s", err);
    return 1;
}

static int j_array(lua_State *L) {
    if (lua_isnoneornil(L, 1)) lua_newtable(L);
    else luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lsb_get(L)->array_marks++;   /* lsb_reuse.c: an existing table may have been marked */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ARRAYS);
    lua_pushvalue(L, 1);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_settop(L, 1);
    lsb_lazy *z = lsb_lazy_of(L, 1);
    if (z) z->marked = 1;
    return 1;
}

void lsb_open_json(lua_State *L) {
    lua_createtable(L, 0, 4);
    lua_pushcfunction(L, j_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, j_decode);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, j_array);
    lua_setfield(L, -2, "array");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
}
