/*
 * Lazy event objects: see lsb_lazy.h for the contract. This file scans an object's members,
 * builds the proxy tables and their metamethods, and materialises members on demand.
 */
#include "lsb_lazy.h"
#include "lsb_lazy_cache.h"
#include "lsb_json.h"
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

const char LSB_KEY_LAZYMAP = 0;

static inline int is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* p at '"': the byte after the closing quote, or NULL. *esc is set when a backslash occurs. */
static const char *skip_string(const char *p, const char *end, int *esc) {
    p++;
    while (p < end) {
        while (end - p >= 8) {
            uint64_t x = lsb_load8(p);
            uint64_t m = lsb_has_byte(x, LSB_ONES * '"') | lsb_has_byte(x, LSB_ONES * '\\');
            if (m) {
                p += __builtin_ctzll(m) >> 3;
                break;
            }
            p += 8;
        }
        if (p >= end) break;
        char c = *p;
        if (c == '"') return p + 1;
        if (c == '\\') {
            *esc = 1;
            p += 2;
            continue;
        }
        p++;
    }
    return NULL;
}

/* p at a value's first byte: the byte after it, or NULL. *ws is set when whitespace occurs
 * outside strings; *height is the value's nesting (0 for a scalar, 1 for a flat container). */
static const char *skip_value(const char *p, const char *end, int *ws, uint32_t *height) {
    char c = *p;
    int esc = 0;
    *height = 0;
    if (c == '"') return skip_string(p, end, &esc);
    if (c == '{' || c == '[') {
        uint32_t depth = 0, maxd = 0;
        while (p < end) {
            c = *p;
            if (c == '"') {
                p = skip_string(p, end, &esc);
                if (!p) return NULL;
                continue;
            }
            if (c == '{' || c == '[') {
                if (++depth > maxd) maxd = depth;
            } else if (c == '}' || c == ']') {
                if (--depth == 0) {
                    *height = maxd;
                    return p + 1;
                }
            } else if (is_ws(c)) *ws = 1;
            p++;
        }
        return NULL;
    }
    while (p < end && *p != ',' && *p != '}' && *p != ']' && !is_ws(*p)) p++;
    return p;
}

/* ---- the document: the event's bytes and, computed once, where its strings and brackets are ---- */

struct lsb_lazy_doc {
    uint32_t len, nwords;   /* bytes; 64-bit words per bitmap (one bit per byte) */
    int compact;            /* no whitespace outside strings */
    int escapes;            /* some backslash occurs (in a string) */
    const uint64_t *quotes;   /* the quotes that open or close a string */
    const uint64_t *brackets; /* { } [ ] outside strings */
    const char *bytes;        /* len bytes, then zeros up to a whole word of 64 */
};

#if defined(__SSE2__)
#include <emmintrin.h>
/* Sixty-four bytes: quotes, backslashes, brackets, and bytes <= 0x20 (whitespace outside a
 * string; inside one only the space, as validated JSON has no raw control bytes). */
static inline void classify64(const char *p, uint64_t *q, uint64_t *bs, uint64_t *br, uint64_t *sp) {
    const __m128i cq = _mm_set1_epi8('"'), cb = _mm_set1_epi8('\\'), c20 = _mm_set1_epi8(0x20),
                  co = _mm_set1_epi8('{'), cc = _mm_set1_epi8('}');
    uint64_t a = 0, c = 0, d = 0;
    __m128i anyb = _mm_setzero_si128();
    for (int k = 0; k < 4; k++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(p + 16 * k));
        __m128i t = _mm_or_si128(v, c20);   /* '[' -> '{', ']' -> '}' */
        anyb = _mm_or_si128(anyb, _mm_cmpeq_epi8(v, cb));
        a |= (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v, cq)) << (16 * k);
        c |= (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(t, co), _mm_cmpeq_epi8(t, cc))) << (16 * k);
        d |= (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(v, c20), v)) << (16 * k);
    }
    uint64_t b = 0;
    if (_mm_movemask_epi8(anyb))   /* rare: where the backslashes are */
        for (int k = 0; k < 4; k++)
            b |= (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * k)), cb))
                 << (16 * k);
    *q = a, *bs = b, *br = c, *sp = d;
}
#else
static inline void classify64(const char *p, uint64_t *q, uint64_t *bs, uint64_t *br, uint64_t *sp) {
    uint64_t a = 0, b = 0, c = 0, d = 0;
    for (int i = 0; i < 64; i++) {
        unsigned char x = (unsigned char)p[i], t = x | 0x20;
        uint64_t bit = (uint64_t)1 << i;
        if (x == '"') a |= bit;
        if (x == '\\') b |= bit;
        if (t == '{' || t == '}') c |= bit;
        if (x <= 0x20) d |= bit;
    }
    *q = a, *bs = b, *br = c, *sp = d;
}
#endif

/* Bit i set when an odd number of bits 0..i of x are: the bytes inside a string, counting its
 * opening quote and not its closing one. */
static inline uint64_t prefix_xor(uint64_t x) {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    return x;
}

/* Indexes json[0, len) into quotes and brackets (nwords words each, nwords = ceil(len / 64)),
 * and sets d's flags. */
static void index_bytes(lsb_lazy_doc *d, const char *json, size_t len, uint64_t *quotes, uint64_t *brackets) {
    size_t nwords = (len + 63) / 64;
    uint64_t in = 0, esc = 0, ws = 0, anybs = 0;   /* in: all ones inside a string; esc: byte 0 escaped */
    for (size_t w = 0; w < nwords; w++) {
        uint64_t q, bs, br, sp;
        if (64 * w + 64 <= len) classify64(json + 64 * w, &q, &bs, &br, &sp);
        else {   /* the last, partial block: zeros after the end, which are no bytes of interest */
            char tail[64] = {0};
            memcpy(tail, json + 64 * w, len - 64 * w);
            classify64(tail, &q, &bs, &br, &sp);
            sp &= ((uint64_t)1 << (len & 63)) - 1;
        }
        if (bs | esc) {   /* rare: drop escaped quotes; a backslash escapes the next byte unless escaped itself */
            uint64_t escaped = esc, b = bs;
            esc = 0;
            anybs = 1;
            while (b) {
                int i = __builtin_ctzll(b);
                b &= b - 1;
                if (escaped >> i & 1) continue;
                if (i == 63) esc = 1;
                else escaped |= (uint64_t)1 << (i + 1);
            }
            q &= ~escaped;
        }
        uint64_t s = prefix_xor(q) ^ in;
        in = (uint64_t)((int64_t)s >> 63);
        quotes[w] = q;
        brackets[w] = br & ~s;
        ws |= sp & ~s;
    }
    d->len = (uint32_t)len;
    d->nwords = (uint32_t)nwords;
    d->compact = !ws;
    d->escapes = (int)anybs;
    d->quotes = quotes;
    d->brackets = brackets;
    d->bytes = json;
}


/* Copies document s (its index and bytes) into mem; returns the copy. */
static lsb_lazy_doc *copy_doc(void *mem, const lsb_lazy_doc *s, int with_bytes) {
    lsb_lazy_doc *d = mem;
    uint64_t *quotes = (uint64_t *)((char *)mem + ALIGN8(sizeof *d)), *brackets = quotes + s->nwords;
    *d = *s;
    memcpy(quotes, s->quotes, 8 * (size_t)s->nwords);
    memcpy(brackets, s->brackets, 8 * (size_t)s->nwords);
    d->quotes = quotes;
    d->brackets = brackets;
    if (with_bytes) {   /* else s->bytes stays: the state's arena */
        char *bytes = (char *)(brackets + s->nwords);
        memcpy(bytes, s->bytes, s->len);
        d->bytes = bytes;
    }
    return d;
}

static size_t doc_size(size_t len) { return ALIGN8(sizeof(lsb_lazy_doc)) + 16 * ((len + 63) / 64) + len; }

/* The first set bit at or after i, or SIZE_MAX. */
static inline __attribute__((always_inline)) size_t next_bit(const uint64_t *bits, size_t nwords, size_t i) {
    size_t w = i >> 6;
    if (w >= nwords) return SIZE_MAX;
    uint64_t x = bits[w] & (~(uint64_t)0 << (i & 63));
    while (!x) {
        if (++w >= nwords) return SIZE_MAX;
        x = bits[w];
    }
    return (w << 6) + (size_t)__builtin_ctzll(x);
}

/* i at the bracket that opens a container: the offset after its matching bracket, or SIZE_MAX;
 * *height is its nesting. */
static size_t skip_container(const lsb_lazy_doc *d, size_t i, uint32_t *height) {
    size_t w = i >> 6;
    if (w >= d->nwords) return SIZE_MAX;
    uint64_t x = d->brackets[w] & (~(uint64_t)0 << (i & 63));
    uint32_t depth = 0, maxd = 0;
    for (;;) {
        while (!x) {
            if (++w >= d->nwords) return SIZE_MAX;
            x = d->brackets[w];
        }
        size_t j = (w << 6) + (size_t)__builtin_ctzll(x);
        x &= x - 1;
        if (d->bytes[j] & 2) {   /* '{' and '[' have bit 1 set, '}' and ']' do not */
            if (++depth > maxd) maxd = depth;
        } else if (--depth == 0) {
            *height = maxd;
            return j + 1;
        }
    }
}

/* p (< end) at a value's first byte: the offset after it (SIZE_MAX or beyond end when malformed);
 * *height is its nesting (0 for a scalar). */
static inline __attribute__((always_inline)) size_t skip_token(const lsb_lazy_doc *d, size_t p, size_t end,
                                                               uint32_t *height) {
    const char *base = d->bytes;
    char c = base[p];
    *height = 0;
    if (c == '"') {
        size_t q = next_bit(d->quotes, d->nwords, p + 1);
        return q == SIZE_MAX ? q : q + 1;
    }
    if (c == '{' || c == '[') return skip_container(d, p, height);
    size_t v = p;
    while (p < end && base[p] != ',' && base[p] != '}' && base[p] != ']' && !is_ws(base[p])) p++;
    return p == v ? SIZE_MAX : p;
}

/* Scans the object (`object`) or array token bytes[off, off+len). Returns 0 with its members
 * (an array's elements, keys empty; the first `cap` of them written to m), their count and the
 * token's nesting; 1 when an object must be decoded eagerly (more than LSB_LAZY_MAX_MEMBERS
 * members, for which cap is, or a duplicate or escaped key); -1 when malformed. */
static inline __attribute__((always_inline)) int scan_container(const lsb_lazy_doc *d, size_t off, size_t len,
                                                                lsb_lazy_member *m, int cap, int *count,
                                                                uint32_t *height, int object) {
    const char *base = d->bytes;
    size_t p = off, end = off + len;
    int n = 0, compact = d->compact;
    char open = object ? '{' : '[', close = object ? '}' : ']';
    uint64_t seen = 0;   /* a filter of key (length, first byte): most keys need no duplicate check */
    *height = 1;
    /* whitespace can only occur here when the document has some outside strings */
#define SKIP_WS() \
    if (!compact) \
        while (p < end && is_ws(base[p])) p++
    if (end > d->len || p >= end || base[p] != open) return -1;
    p++;
    SKIP_WS();
    if (p < end && base[p] == close) {
        *count = 0;
        return 0;
    }
    for (;;) {
        SKIP_WS();
        size_t k = 0;
        uint32_t klen = 0;
        if (object) {
            if (p >= end || base[p] != '"') return -1;
            k = p + 1;
            size_t q = next_bit(d->quotes, d->nwords, k);
            if (q >= end) return -1;
            klen = (uint32_t)(q - k);
            if (n == LSB_LAZY_MAX_MEMBERS || (d->escapes && memchr(base + k, '\\', klen))) return 1;
            uint64_t h = (uint64_t)1 << ((klen + (unsigned char)base[k]) & 63);   /* base[k] is the quote when klen is 0 */
            if (seen & h) {
                for (int i = 0; i < n; i++)
                    if (m[i].klen == klen && memcmp(base + m[i].koff, base + k, klen) == 0) return 1;
            }
            seen |= h;
            p = q + 1;
            SKIP_WS();
            if (p >= end || base[p] != ':') return -1;
            p++;
            SKIP_WS();
        }
        if (p >= end || n == INT_MAX) return -1;
        size_t v = p;
        uint32_t vh = 0;
        p = skip_token(d, p, end, &vh);
        if (p > end) return -1;
        if (vh + 1 > *height) *height = vh + 1;
        if (n < cap) m[n] = (lsb_lazy_member){(uint32_t)k, klen, (uint32_t)v, (uint32_t)(p - v)};
        n++;
        SKIP_WS();
        if (p < end && base[p] == ',') {
            p++;
            continue;
        }
        if (p < end && base[p] == close) {
            *count = n;
            return 0;
        }
        return -1;
    }
#undef SKIP_WS
}

/* scan_container for an object: m has room for LSB_LAZY_MAX_MEMBERS members. */
static int scan_object(const lsb_lazy_doc *d, size_t off, size_t len, lsb_lazy_member *m, int *count,
                       uint32_t *height) {
    return scan_container(d, off, len, m, LSB_LAZY_MAX_MEMBERS, count, height, 1);
}

/* scan_container for an array: 0 with its element count (the first `cap` written to m) and
 * nesting, or -1 when malformed. */
static int scan_array(const lsb_lazy_doc *d, size_t off, size_t len, lsb_lazy_member *m, int cap, int *count,
                      uint32_t *height) {
    return scan_container(d, off, len, m, cap, count, height, 0);
}

static void eager(lua_State *L, const char *s, size_t n) {
    char err[200];
    if (lsb_json_decode_push(L, s, n, err, sizeof err)) luaL_error(L, "event JSON: %s", err);
}

/* ---- from a table to its record ----
 *
 * LAZYMAP (weak keys) maps each lazy table to its record and keeps the record alive as long as
 * the table. Looking it up costs two hash lookups, so a small direct-mapped cache per state,
 * keyed by the table's address, answers first. An entry is written when a lazy table is made
 * (and after a LAZYMAP lookup), and the cache is only asked about a table whose metatable is
 * LAZYMETA, i.e. a live lazy table: the entry holding that address, if any, was written for
 * this table (its making overwrote whatever an earlier table at the same address left), so
 * stale entries of collected tables are never read. Scripts cannot reach LAZYMETA. */

/* The top table of a call's one event (in the arena, lsb_lazy_push) is not entered in LAZYMAP:
 * uservalues 3 and 4 hold it and its record, and top_t answers for it until the next event's
 * replaces them. That is enough because only a running call can reach its event (see
 * lsb_lazy.h), except a call that suspends: lsb_lazy_keep_top enters its table in LAZYMAP
 * then. Uservalue 4 keeps the table alive, so no other table takes its address while top_t
 * names it. While top_t is set, that table and its record are unreachable once their call has
 * ended, so the next one-event call empties the table and rewrites the record in place instead
 * of making new ones (top_fixed). */



/* Pushes LAZYMAP. */
static void push_map(lua_State *L, int cidx) {
    if (lua_getiuservalue(L, cidx, 2) == LUA_TTABLE) return;
    lua_pop(L, 1);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_LAZYMAP);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, cidx, 2);
}

/* The record of the table at idx (absolute), whose metatable is LAZYMETA; the cache is at cidx
 * (absolute or an upvalue), or 0: pushed here when needed. Pushes nothing. */
static lsb_lazy *record_miss(lua_State *L, lazy_cache *c, int cidx, int idx, const void *t, unsigned s) {
    lsb_lazy *sz = lsb_scoped_find(lsb_get(L), t);
    if (sz) {
        c->e[s].t = t;
        c->e[s].z = sz;
        return sz;
    }
    if (!cidx) lua_rawgeti(L, LUA_REGISTRYINDEX, lsb_get(L)->lazy_ref);
    push_map(L, cidx ? cidx : lua_gettop(L));
    lua_pushvalue(L, idx);
    lua_rawget(L, -2);
    lsb_lazy *z = lua_touserdata(L, -1);
    lua_pop(L, cidx ? 2 : 3);
    if (z) c->e[s].t = t, c->e[s].z = z;
    return z;
}

static inline lsb_lazy *record_of(lua_State *L, lazy_cache *c, int cidx, int idx) {
    const void *t = lua_topointer(L, idx);
    if (t == c->top_t) return c->top_z;
    unsigned s = cache_slot(t);
    if (c->e[s].t == t) return c->e[s].z;
    return record_miss(L, c, cidx, idx, t, s);
}

/* Pushes the cache (for the functions the sandbox calls directly) and returns it. */
static lazy_cache *push_cache(lua_State *L) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, lsb_get(L)->lazy_ref);
    return lua_touserdata(L, -1);
}

/* The record of the table at idx (absolute) if it is a lazy table, else NULL. Pushes nothing. */
static lsb_lazy *lookup(lua_State *L, lazy_cache *c, int cidx, int idx) {
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return NULL;
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    return mt == c->meta || mt == c->ameta ? record_of(L, c, cidx, idx) : NULL;
}

/* Makes the lazy table of record z, the userdata at the top of the stack, which it replaces. The
 * top table of a call's one event (top: z is uservalue 3) is not entered in LAZYMAP (see above). */
static void push_proxy(lua_State *L, lazy_cache *c, int cidx, lsb_lazy *z, int top) {
    if (top && c->top_t) {
        /* The last one-event call's table: its call has ended without suspending, so nothing
         * can reach it (see above). Emptied, unmarked and lazy again, it is this event's. */
        lua_getiuservalue(L, cidx, 4);
        int t = lua_gettop(L);
        lsb_table_clear(L, t);
        lua_getiuservalue(L, cidx, 1);
        lua_setmetatable(L, t);   /* a script may have replaced it (lsb_lazy_strip) */
        lsb_state *S = lsb_get(L);
        if (S->array_marks != c->top_marks) {   /* json.array may have marked it */
            lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ARRAYS);
            lua_pushvalue(L, t);
            lua_pushnil(L);
            lua_rawset(L, -3);
            lua_pop(L, 1);
            c->top_marks = S->array_marks;
        }
        c->top_z = z;
        unsigned s = cache_slot(c->top_t);
        c->e[s].t = c->top_t;
        c->e[s].z = z;
        lua_replace(L, -2);
        return;
    }
    /* an object's grows by what a read stores (only containers, see lazy_index); an array's is
     * made and filled as the eager decoder does (lsb_json_decode.c), so that its layout, and with
     * it what `#` answers once the script leaves holes, is the same */
    lua_createtable(L, z->array ? 4 : 0, 0);
    if (!top) {
        push_map(L, cidx);
        lua_pushvalue(L, -2);
        lua_pushvalue(L, -4);
        lua_rawset(L, -3);   /* LAZYMAP[table] = record */
        lua_pop(L, 1);
    }
    lua_getiuservalue(L, cidx, z->array ? 5 : 1);
    lua_setmetatable(L, -2);
    const void *t = lua_topointer(L, -1);
    if (top) {
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, cidx, 4);
        c->top_t = t;
        c->top_z = z;
        c->top_marks = lsb_get(L)->array_marks;
    }
    unsigned s = cache_slot(t);
    c->e[s].t = t;
    c->e[s].z = z;
    lua_replace(L, -2);
}

void lsb_lazy_keep_top(lua_State *L) {
    lazy_cache *c = lsb_get(L)->lazy;
    if (!c) return;
    if (c->scoped) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, lsb_get(L)->lazy_ref);
        int cidx = lua_gettop(L);
        push_map(L, cidx);
        lsb_scoped_keep(L, c, cidx, cidx + 1);
        lua_settop(L, cidx - 1);
    }
    if (!c->top_t) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, lsb_get(L)->lazy_ref);
    int cidx = lua_gettop(L);
    push_map(L, cidx);
    lua_getiuservalue(L, cidx, 4);
    lua_getiuservalue(L, cidx, 3);
    lua_rawset(L, -3);   /* LAZYMAP[table] = record */
    lua_settop(L, cidx - 1);
    c->top_t = NULL;
}

void lsb_lazy_fill_record(lsb_lazy *z, const lsb_lazy_doc *d, size_t off, size_t len, const lsb_lazy_member *m,
                          int count, uint32_t height) {
    z->base = d->bytes;
    z->doc = d;
    z->off = (uint32_t)off;
    z->len = (uint32_t)len;
    z->touched = 0;
    z->peeked = 0;
    z->peeked2 = 0;
    z->compact = (unsigned char)d->compact;
    z->escapes = (unsigned char)d->escapes;
    z->assigned = 0;
    z->marked = 0;
    z->array = 0;
    z->forced = 0;
    z->anchor = 0;
    z->count = count;
    z->height = height;
    if (m != z->m) memcpy(z->m, m, (size_t)count * sizeof m[0]);
}

/* Pushes the object bytes[off, off+len) of document d (at stack index docidx) as a lazy table,
 * or eagerly decoded. */
static void push_object(lua_State *L, lazy_cache *c, int cidx, const lsb_lazy_doc *d, int docidx, size_t off,
                        size_t len) {
    lsb_lazy_member m[LSB_LAZY_MAX_MEMBERS];
    int count = 0;
    uint32_t height = 1;
    int r = scan_object(d, off, len, m, &count, &height);
    if (r != 0) {
        if (r < 0) luaL_error(L, "event JSON: malformed object at byte %d", (int)off);
        eager(L, d->bytes + off, len);
        return;
    }
    luaL_checkstack(L, 6, "event nested too deeply");
    if (lsb_scoped_push(L, c, cidx, d, docidx, off, len, m, count, height, 0)) return;
    lsb_lazy *z = lua_newuserdatauv(L, sizeof *z + (size_t)count * sizeof z->m[0], 1);
    lsb_lazy_fill_record(z, d, off, len, m, count, height);
    lua_pushvalue(L, docidx);
    lua_setiuservalue(L, -2, 1);
    push_proxy(L, c, cidx, z, 0);
}

#define ARRAY_STACK_ELEMENTS 128   /* larger arrays are scanned twice: counted, then into their record */

/* Pushes the array bytes[off, off+len) of document d (at stack index docidx) as a lazy array. */
static void push_array(lua_State *L, lazy_cache *c, int cidx, const lsb_lazy_doc *d, int docidx, size_t off,
                       size_t len) {
    lsb_lazy_member m[ARRAY_STACK_ELEMENTS];
    int count = 0;
    uint32_t height = 1;
    if (scan_array(d, off, len, m, ARRAY_STACK_ELEMENTS, &count, &height))
        luaL_error(L, "event JSON: malformed array at byte %d", (int)off);
    if (count == 0) {   /* empty (with whitespace): the eager decoding marks it as an array */
        eager(L, d->bytes + off, len);
        return;
    }
    luaL_checkstack(L, 6, "event nested too deeply");
    if (count <= ARRAY_STACK_ELEMENTS && lsb_scoped_push(L, c, cidx, d, docidx, off, len, m, count, height, 1)) return;
    lsb_lazy *z = lua_newuserdatauv(L, sizeof *z + (size_t)count * sizeof z->m[0], 1);
    if (count > ARRAY_STACK_ELEMENTS) scan_array(d, off, len, z->m, count, &count, &height);
    lsb_lazy_fill_record(z, d, off, len, count > ARRAY_STACK_ELEMENTS ? z->m : m, count, height);
    z->array = 1;
    lua_pushvalue(L, docidx);
    lua_setiuservalue(L, -2, 1);
    push_proxy(L, c, cidx, z, 0);
}

int lsb_lazy_scan_token(const lsb_lazy *z, const lsb_lazy_member *m, lsb_lazy_member *out, int *count,
                        uint32_t *height) {
    *count = 0;
    *height = 0;
    switch (z->base[m->voff]) {
    case '{': return scan_object(z->doc, m->voff, m->vlen, out, count, height);
    case '[': {
        int r = scan_array(z->doc, m->voff, m->vlen, out, LSB_LAZY_MAX_MEMBERS, count, height);
        return r ? r : *count > LSB_LAZY_MAX_MEMBERS;
    }
    default: return 1;
    }
}

int lsb_lazy_find(const lsb_lazy *z, const char *k, size_t n) {
    for (int i = 0; i < z->count; i++) {
        if (z->m[i].klen != n) continue;
        const char *c = z->base + z->m[i].koff;
        size_t j = 0;
        while (j < n && c[j] == k[j]) j++;
        if (j == n) return i;
    }
    return -1;
}

lsb_lazy *lsb_lazy_of(lua_State *L, int idx) { return lookup(L, lsb_get(L)->lazy, 0, lua_absindex(L, idx)); }

int lsb_lazy_string_member(lua_State *L, int idx, const char *key, size_t klen, const char **s, size_t *n) {
    lsb_lazy *z = lsb_lazy_of(L, idx);
    if (!z || z->array) return -1;
    int i = lsb_lazy_find(z, key, klen);
    if (i < 0) return 0;
    if (z->touched >> i & 1) return -1;   /* read or assigned: the table has it */
    const char *v = z->base + z->m[i].voff;
    size_t vn = z->m[i].vlen;
    if (vn < 2 || v[0] != '"' || memchr(v + 1, '\\', vn - 2)) return -1;   /* not a plain string */
    *s = v + 1;
    *n = vn - 2;
    return 1;
}

lsb_lazy *lsb_lazy_of_table(lua_State *L, void *cache, int idx) {
    lazy_cache *c = cache;
    if (!lua_getmetatable(L, idx)) return NULL;
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (mt != c->meta && mt != c->ameta) return NULL;
    const void *t = lua_topointer(L, idx);
    if (t == c->top_t) return c->top_z;
    unsigned s = cache_slot(t);
    return c->e[s].t == t ? c->e[s].z : record_miss(L, c, 0, idx, t, s);
}

/* Pushes the document of z, the record of the table at t, to anchor a child's record: the latest
 * one, or through LAZYMAP (where every table but the latest event's is). */
static inline void push_doc(lua_State *L, lazy_cache *c, int cidx, int t, const lsb_lazy *z) {
    if (z->doc == c->cur) {
        lua_getiuservalue(L, cidx, 3);
        return;
    }
    if (z->anchor) {   /* call-scoped, not the latest event's: the documents list holds its document */
        lua_getiuservalue(L, cidx, 7);
        lua_rawgeti(L, -1, (lua_Integer)z->anchor);
        lua_remove(L, -2);
        return;
    }
    push_map(L, cidx);
    lua_pushvalue(L, t);
    if (lua_rawget(L, -2) != LUA_TUSERDATA) luaL_error(L, "internal error: a lazy table lost its document");
    lua_getiuservalue(L, -1, 1);
    lua_replace(L, -3);
    lua_pop(L, 1);
}

/* Pushes the value of member (or element) m of z; a container's record is anchored to the document
 * at docidx. */
static inline __attribute__((always_inline)) void push_value(lua_State *L, lazy_cache *c, int cidx, const lsb_lazy *z,
                                                             int docidx, const lsb_lazy_member *m) {
    const char *v = z->base + m->voff;
    size_t n = m->vlen;
    switch (*v) {
    case '{':
        push_object(L, c, cidx, z->doc, docidx, m->voff, n);
        return;
    case '[':
        if (n >= LSB_LAZY_ARRAY_MIN_BYTES) push_array(L, c, cidx, z->doc, docidx, m->voff, n);
        else eager(L, v, n);
        return;
    case '"':
        if (n >= 2 && !memchr(v + 1, '\\', n - 2)) lua_pushlstring(L, v + 1, n - 2);
        else eager(L, v, n);
        return;
    case 't': lua_pushboolean(L, 1); return;
    case 'f': lua_pushboolean(L, 0); return;
    case 'n': lua_pushlightuserdata(L, NULL); return;
    default: {
        size_t j = *v == '-', lim = j + 18;   /* 18 digits cannot overflow */
        lua_Integer x = 0;
        for (; j < n && j < lim && v[j] >= '0' && v[j] <= '9'; j++) x = x * 10 + (v[j] - '0');
        if (j == n && n < 19 && n > (size_t)(*v == '-')) {   /* a short integer literal: no overflow possible */
            lua_pushinteger(L, *v == '-' ? -x : x);
            return;
        }
        double f;   /* a float literal (its fraction or exponent follows the digits) */
        if (j < n && (v[j] == '.' || v[j] == 'e' || v[j] == 'E') && lsb_json_short_float(v, v + n, &f)) {
            lua_pushnumber(L, f);
            return;
        }
        eager(L, v, n);   /* long floats, big integers */
    }
    }
}

/* Pushes member i's value (z is the record of the table at t). */
static void push_member(lua_State *L, lazy_cache *c, int cidx, int t, lsb_lazy *z, int i) {
    char first = z->base[z->m[i].voff];
    if (first != '{' && first != '[') {
        push_value(L, c, cidx, z, 0, &z->m[i]);
        return;
    }
    push_doc(L, c, cidx, t, z);
    push_value(L, c, cidx, z, lua_gettop(L), &z->m[i]);
    lua_remove(L, -2);
}

/* Materialises member i into the table at t (absolute); leaves the value on the stack. `key` is
 * the stack index of the member's key string, or 0 to make it. */
static void materialize(lua_State *L, lazy_cache *c, int cidx, int t, lsb_lazy *z, int i, int key) {
    push_member(L, c, cidx, t, z, i);
    z->touched |= (uint64_t)1 << i;
    if (key) lua_pushvalue(L, key);
    else lua_pushlstring(L, z->base + z->m[i].koff, z->m[i].klen);
    lua_pushvalue(L, -2);
    lua_rawset(L, t);
}

/* The metamethods: upvalue 1 is the cache, and the table (argument 1) is a lazy one. */
static int lazy_index(lua_State *L) {
    if (lua_type(L, 2) != LUA_TSTRING) return 0;
    lazy_cache *c = lua_touserdata(L, lua_upvalueindex(1));
    lsb_lazy *z = record_of(L, c, lua_upvalueindex(1), 1);
    if (!z) return 0;
    size_t n;
    const char *k = lua_tolstring(L, 2, &n);
    int i = lsb_lazy_find(z, k, n);
    if (i < 0 || (z->touched >> i & 1)) return 0;   /* absent, or deleted after it was read */
    char first = z->base[z->m[i].voff];
    uint64_t bit = (uint64_t)1 << i;
    if (first != '{' && first != '[' && !(z->peeked2 & bit)) {
        /* a scalar's first and second reads: handed out, not stored (a value has no identity to
         * keep; a loop's `p.price * p.qty` and a type check read a field twice, and storing costs
         * a table insert and a comparison when the event is written) */
        if (z->peeked & bit) z->peeked2 |= bit;
        else z->peeked |= bit;
        push_member(L, c, lua_upvalueindex(1), 1, z, i);
        return 1;
    }
    materialize(L, c, lua_upvalueindex(1), 1, z, i, 2);
    return 1;
}

static void touch(lsb_lazy *z, lua_State *L, int keyidx) {
    size_t n;
    const char *k = lua_tolstring(L, keyidx, &n);
    int i = lsb_lazy_find(z, k, n);
    if (i >= 0) z->touched |= (uint64_t)1 << i;
}

static int lazy_newindex(lua_State *L) {
    lua_settop(L, 3);
    lsb_lazy *z = record_of(L, lua_touserdata(L, lua_upvalueindex(1)), lua_upvalueindex(1), 1);
    if (z) {
        z->assigned = 1;
        if (lua_type(L, 2) == LUA_TSTRING) touch(z, L, 2);
    }
    lua_rawset(L, 1);
    return 0;
}

static int lazy_next(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 2);
    if (lua_next(L, 1)) return 2;
    lua_pushnil(L);
    return 1;
}

/* Decodes every element of the lazy array z (the table at t) into raw slots 1..count, once. */
static void force_array(lua_State *L, lazy_cache *c, int cidx, int t, lsb_lazy *z) {
    if (z->forced) return;
    luaL_checkstack(L, 8, "event nested too deeply");
    push_doc(L, c, cidx, t, z);
    int doc = lua_gettop(L);
    for (int i = 0; i < z->count; i++) {
        push_value(L, c, cidx, z, doc, &z->m[i]);
        lua_rawseti(L, t, (lua_Integer)i + 1);
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ARRAYS);   /* as the eager decoding marks its arrays */
    lua_pushvalue(L, t);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_settop(L, doc - 1);
    z->forced = 1;   /* only now: an error above leaves it to be forced again */
}

/* Materialises every unread member of z's table at t (every element of an array). */
static void force(lua_State *L, lazy_cache *c, int cidx, int t, lsb_lazy *z) {
    if (z->array) {
        force_array(L, c, cidx, t, z);
        return;
    }
    luaL_checkstack(L, 6, "event nested too deeply");
    for (int i = 0; i < z->count; i++)
        if (!(z->touched >> i & 1)) {
            materialize(L, c, cidx, t, z, i, 0);
            lua_pop(L, 1);
        }
}

/* The lazy arrays' metamethods: upvalue 1 is the cache, and the table (argument 1) is a lazy
 * array. Each forces it first; a forced array is its raw table. */
static lsb_lazy *forced_array(lua_State *L) {
    lazy_cache *c = lua_touserdata(L, lua_upvalueindex(1));
    lsb_lazy *z = record_of(L, c, lua_upvalueindex(1), 1);
    if (z && !z->forced) force_array(L, c, lua_upvalueindex(1), 1, z);
    return z;
}

static int array_index(lua_State *L) {
    lua_settop(L, 2);
    forced_array(L);
    lua_rawget(L, 1);
    return 1;
}

static int array_newindex(lua_State *L) {
    lua_settop(L, 3);
    lsb_lazy *z = forced_array(L);
    lua_pushvalue(L, 2);
    if (z && lua_rawget(L, 1) == LUA_TNIL) z->assigned = 1;   /* a new key; replacing an element is a raw write */
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 0;
}

static int array_len(lua_State *L) {
    forced_array(L);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, 1));
    return 1;
}

static int lazy_pairs(lua_State *L) {
    lsb_lazy *z = record_of(L, lua_touserdata(L, lua_upvalueindex(1)), lua_upvalueindex(1), 1);
    if (z) force(L, lua_touserdata(L, lua_upvalueindex(1)), lua_upvalueindex(1), 1, z);
    lua_pushcfunction(L, lazy_next);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

void lsb_lazy_touch(lua_State *L, int idx, int keyidx) {
    idx = lua_absindex(L, idx);
    lsb_lazy *z = lookup(L, lsb_get(L)->lazy, 0, idx);
    if (!z) return;
    z->assigned = 1;
    if (z->array) lsb_lazy_force(L, idx);
    else if (lua_type(L, keyidx) == LUA_TSTRING) touch(z, L, keyidx);
}

void lsb_lazy_rawget(lua_State *L, int idx, int keyidx) {
    idx = lua_absindex(L, idx);
    keyidx = lua_absindex(L, keyidx);
    lua_pushvalue(L, keyidx);
    if (lua_rawget(L, idx) != LUA_TNIL) return;
    lua_pop(L, 1);
    lazy_cache *c = push_cache(L);
    int cidx = lua_gettop(L);
    lsb_lazy *z = lookup(L, c, cidx, idx);
    if (z && z->array) {   /* forced, it is its raw table */
        force_array(L, c, cidx, idx, z);
        lua_pop(L, 1);
        lua_pushvalue(L, keyidx);
        lua_rawget(L, idx);
        return;
    }
    if (lua_type(L, keyidx) != LUA_TSTRING) z = NULL;
    size_t n;
    const char *k = z ? lua_tolstring(L, keyidx, &n) : NULL;
    int i = z ? lsb_lazy_find(z, k, n) : -1;
    if (i < 0 || (z->touched >> i & 1)) {
        lua_pop(L, 1);
        lua_pushnil(L);
        return;
    }
    materialize(L, c, cidx, idx, z, i, keyidx);
    lua_remove(L, cidx);
}

void lsb_lazy_force(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lazy_cache *c = push_cache(L);
    int cidx = lua_gettop(L);
    lsb_lazy *z = lookup(L, c, cidx, idx);
    if (z) force(L, c, cidx, idx, z);
    lua_pop(L, 1);
}

int lsb_lazy_force_array(lua_State *L, int idx) {
    lazy_cache *c = lsb_get(L)->lazy;
    const void *t = lua_topointer(L, idx);
    if (t == c->top_t || !t || lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return 0;   /* top_t: an object */
    int is = lua_topointer(L, -1) == c->ameta;
    lua_pop(L, 1);
    if (is) lsb_lazy_force(L, idx);
    return is;
}

void lsb_lazy_strip(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lazy_cache *c = push_cache(L);
    int cidx = lua_gettop(L);
    lsb_lazy *z = lookup(L, c, cidx, idx);
    if (z) {
        force(L, c, cidx, idx, z);
        lua_pushnil(L);
        lua_setmetatable(L, idx);
        push_map(L, cidx);
        lua_pushvalue(L, idx);
        lua_pushnil(L);
        lua_rawset(L, -3);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

#define STACK_WORDS 128   /* events up to 8 KiB are indexed on the C stack first */
/* A one-event call's record (in the arena case): room for any object of up to STACK_WORDS words
 * and LSB_LAZY_MAX_MEMBERS members, so the next such call can reuse it. */
#define TOP_HEAD ALIGN8(sizeof(lsb_lazy) + LSB_LAZY_MAX_MEMBERS * sizeof(lsb_lazy_member))
#define TOP_SIZE (TOP_HEAD + ALIGN8(sizeof(lsb_lazy_doc)) + 16 * STACK_WORDS)

/* The object json[*a, *b) without the whitespace around it; 0 when the text is no object a lazy
 * table can show (not an object, or too long for its 32-bit offsets). */
static int object_span(const char *json, size_t len, size_t *a, size_t *b) {
    *a = 0, *b = len;
    while (*a < *b && is_ws(json[*a])) (*a)++;
    while (*b > *a && is_ws(json[*b - 1])) (*b)--;
    return *a < *b && json[*a] == '{' && len <= UINT32_MAX;
}

/* Pushes a document userdata holding a copy of bytes[0, n) and their index; returns it. */
static lsb_lazy_doc *push_doc_copy(lua_State *L, const char *bytes, size_t n) {
    size_t nwords = (n + 63) / 64;
    void *mem = lua_newuserdatauv(L, doc_size(n), 0);
    lsb_lazy_doc *d = mem;
    uint64_t *bits = (uint64_t *)((char *)mem + ALIGN8(sizeof *d));
    char *copy = (char *)(bits + 2 * nwords);
    memcpy(copy, bytes, n);
    index_bytes(d, copy, n, bits, bits + nwords);
    return d;
}

int lsb_lazy_push(lua_State *L, const char *json, size_t len, char *err, size_t errlen) {
    size_t a, b;
    if (!object_span(json, len, &a, &b)) return lsb_json_decode_push(L, json, len, err, errlen);
    luaL_checkstack(L, 8, "cannot push the event");
    lazy_cache *c = push_cache(L);
    int cidx = lua_gettop(L);
    size_t n = b - a, nwords = (n + 63) / 64;
    lsb_lazy_doc tmp, *d;
    if (nwords <= STACK_WORDS) {
        /* index and scan the caller's bytes, then one userdata holds the event's record, index and
         * bytes (its uservalue is itself, the document of its children) */
        uint64_t bits[2 * STACK_WORDS];
        lsb_lazy_member m[LSB_LAZY_MAX_MEMBERS];
        int count = 0;
        uint32_t height = 1;
        const lsb_json_index *ix = c->offer;
        int r = 1;
        if (ix && ix->json == json + a && ix->len == n) {   /* found while the bytes were validated */
            tmp = (lsb_lazy_doc){.len = (uint32_t)n, .nwords = (uint32_t)nwords, .compact = ix->compact,
                                 .escapes = ix->escapes, .quotes = ix->quotes, .brackets = ix->brackets,
                                 .bytes = json + a};
            if (ix->count >= 0) {   /* and the members: scan_object's answer */
                count = ix->count;
                height = ix->height;
                memcpy(m, ix->members, (size_t)count * sizeof m[0]);
                r = 0;
            }
        } else
            index_bytes(&tmp, json + a, n, bits, bits + nwords);
        if (r) r = scan_object(&tmp, 0, n, m, &count, &height);
        if (r != 0) {
            if (r < 0) luaL_error(L, "event JSON: malformed object at byte 0");
            eager(L, json + a, n);
            lua_remove(L, cidx);
            return 0;
        }
        size_t head = ALIGN8(sizeof(lsb_lazy) + (size_t)count * sizeof(lsb_lazy_member));
        lsb_state *S = lsb_get(L);
        int in_arena = 0;
        if (S->arena_ok) {   /* the bytes go to the state's arena, outside the Lua heap (see lsb_lazy.h) */
            S->arena_ok = 0;
            S->arena.len = 0;
            if (lsb_buf_put(&S->arena, tmp.bytes, n) == 0) {
                tmp.bytes = S->arena.data;
                S->arena_used = in_arena = 1;
            }
        }
        char *mem;
        if (in_arena && c->top_t && c->top_fixed) {
            /* The last one-event call's record, sized for any arena event: that call has ended
             * without suspending, so nothing can reach its table any more (see lsb_lazy.h). */
            lua_getiuservalue(L, cidx, 3);
            mem = (char *)c->top_z;
            head = TOP_HEAD;
        } else {
            if (in_arena) head = TOP_HEAD;
            mem = lua_newuserdatauv(L, in_arena ? TOP_SIZE : head + doc_size(n), 1);
            lua_pushvalue(L, -1);
            lua_setiuservalue(L, -2, 1);
            lua_pushvalue(L, -1);
            lua_setiuservalue(L, cidx, 3);
            c->top_fixed = in_arena;
        }
        lsb_lazy *z = (lsb_lazy *)mem;
        d = copy_doc(mem + head, &tmp, !in_arena);
        lsb_lazy_fill_record(z, d, 0, n, m, count, height);
        c->cur = d;
        c->scoped = 1;   /* the running call's lazy tables get call-scoped records */
        if (in_arena || !lsb_scoped_adopt(L, c, cidx, z)) push_proxy(L, c, cidx, z, in_arena);
    } else {
        /* a large event: its document first (indexed in place), then the record */
        d = push_doc_copy(L, json + a, n);
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, cidx, 3);
        c->top_fixed = 0;
        c->top_t = NULL;   /* the last one-event call's table is not this event's (lsb_lazy_keep_top) */
        c->scoped = 1;   /* the running call's lazy tables get call-scoped records */
        c->cur = NULL;   /* so a call-scoped record anchors the document: a batch's next event */
        push_object(L, c, cidx, d, cidx + 1, 0, n);   /* takes uservalue 3 */
        c->cur = d;
        lua_remove(L, -2);
    }
    lua_remove(L, cidx);
    return 0;
}

int lsb_lazy_push_detached(lua_State *L, const char *json, size_t len) {
    size_t a, b;
    if (!object_span(json, len, &a, &b)) return -1;
    luaL_checkstack(L, 8, "cannot push the value");
    lazy_cache *c = push_cache(L);
    int cidx = lua_gettop(L);
    lsb_lazy_doc *d = push_doc_copy(L, json + a, b - a);
    push_object(L, c, cidx, d, cidx + 1, 0, b - a);   /* its record holds the document */
    lua_replace(L, cidx);
    lua_settop(L, cidx);
    return 0;
}

_Static_assert(LSB_JSON_INDEX_MEMBERS == LSB_LAZY_MAX_MEMBERS, "lsb_json_index holds a lazy object's members");
_Static_assert(sizeof(lsb_lazy_member) == 4 * sizeof(uint32_t), "lsb_json_index's members are lsb_lazy_members");

int lsb_lazy_scan_members(const char *json, size_t len, uint32_t *members, int *count, uint32_t *height) {
    size_t nwords = (len + 63) / 64;
    uint64_t *bits = malloc(2 * (nwords ? nwords : 1) * sizeof *bits);
    lsb_lazy_doc d;
    if (!bits || len > UINT32_MAX) {
        free(bits);
        return -1;
    }
    index_bytes(&d, json, len, bits, bits + nwords);
    lsb_lazy_member m[LSB_LAZY_MAX_MEMBERS];
    *count = 0;
    *height = 1;
    int r = scan_object(&d, 0, len, m, count, height);
    if (r == 0) memcpy(members, m, (size_t)*count * sizeof m[0]);
    free(bits);
    return r;
}

void lsb_lazy_offer(lsb_state *S, const lsb_json_index *ix) {
    if (S->lazy) ((lazy_cache *)S->lazy)->offer = ix;
}

uint32_t lsb_lazy_height(const char *json, size_t len) {
    int ws = 0;
    uint32_t h = 0;
    return len && skip_value(json, json + len, &ws, &h) ? h : 0;
}

size_t lsb_lazy_compact_copy(char *dst, const char *src, size_t n) {
    const char *p = src, *end = src + n;
    char *o = dst;
    while (p < end) {
        char c = *p;
        if (c == '"') {   /* a whole string at once */
            int esc = 0;
            const char *q = skip_string(p, end, &esc);
            if (!q || q > end) q = end;
            memcpy(o, p, (size_t)(q - p));
            o += q - p;
            p = q;
            continue;
        }
        if (!is_ws(c)) *o++ = c;
        p++;
    }
    return (size_t)(o - dst);
}

void lsb_lazy_init(lua_State *L) {
    lazy_cache *c = lua_newuserdatauv(L, sizeof *c, 7);
    memset(c, 0, sizeof *c);
    lua_createtable(L, 16, 0);
    lua_setiuservalue(L, -2, 6);   /* the anchor list of the call-scoped tables */
    lua_createtable(L, 0, 0);
    lua_setiuservalue(L, -2, 7);   /* and of their documents */
    lua_createtable(L, 0, 3);
    c->meta = lua_topointer(L, -1);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, lazy_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, lazy_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, lazy_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_setiuservalue(L, -2, 1);
    lua_createtable(L, 0, 4);
    c->ameta = lua_topointer(L, -1);
    static const luaL_Reg array_meta[] = {
        {"__index", array_index}, {"__newindex", array_newindex}, {"__len", array_len}, {"__pairs", lazy_pairs},
        {NULL, NULL}};
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, array_meta, 1);
    lua_setiuservalue(L, -2, 5);
    lsb_get(L)->lazy_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lsb_get(L)->lazy = c;
}

/* ---- the sandbox's raw functions: they see a lazy table as its eager decoding ---- */

/* A read-only proxy (metadata, library tables) is read as the table it shows (lsb_frozen_target):
 * argument 1 becomes that table, which the script never gets back (lsb_view_wrap). */
static int read_through_proxy(lua_State *L) {
    if (!lsb_frozen_target(L, 1)) return 0;
    lua_replace(L, 1);
    return 1;
}

int lsb_next(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int proxy = read_through_proxy(L);
    lsb_lazy_force(L, 1);
    int n = lazy_next(L);
    if (proxy && n == 2) lsb_view_wrap(L);
    return n;
}

int lsb_rawlen(lua_State *L) {
    int t = lua_type(L, 1);
    luaL_argexpected(L, t == LUA_TTABLE || t == LUA_TSTRING, 1, "table or string");
    read_through_proxy(L);
    lsb_lazy_force_array(L, 1);
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, 1));
    return 1;
}

int lsb_rawget(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    lua_settop(L, 2);
    int proxy = read_through_proxy(L);
    lsb_lazy_rawget(L, 1, 2);
    if (proxy) lsb_view_wrap(L);
    return 1;
}

int lsb_getmetatable(lua_State *L) {
    luaL_checkany(L, 1);
    if (lsb_lazy_of(L, 1) || !lua_getmetatable(L, 1)) {
        lua_pushnil(L);
        return 1;
    }
    luaL_getmetafield(L, 1, "__metatable");
    return 1;
}
