/*
 * Images of Lua tables, for the kept environment's check (lsb_reuse.c): a table's members
 * compared as the bytes Lua stores them in, instead of one by one through the Lua API.
 *
 * An image holds, read from Lua 5.4's own Table struct (ltable.c's layout, mirrored below), the
 * addresses and sizes of the table's two blocks (the hash part's 2^lsizenode nodes, the array
 * part at its real size), its metatable, and a copy of both blocks' bytes. Whatever a script
 * does to a table's members writes into those blocks or replaces one (a rehash, an array
 * resize), and setmetatable changes the metatable field; so an unchanged image means unchanged
 * members, metatable and iteration order. Bytes no script can see count as changes too (the
 * environment is then run afresh, never wrongly kept), which is why a table holding a removed
 * member's key gets no image: the collector rewrites that key's tag in place.
 *
 * Identity: a value is compared by its bits, as the API walk compares it (numbers by subtype
 * and bits, collectable values by address); the caller keeps every recorded collectable value
 * alive, so no address is reused while the record lives.
 *
 * The same goes for a Lua function's upvalues (lsb_upcell_*): each is read where Lua keeps it
 * (its UpVal's value slot, from lua_upvalueid) rather than pushed through lua_getupvalue.
 *
 * The layout is not Lua's API. It is checked once per process on a throwaway state whose
 * allocator logs every block (probe): the struct's size, both blocks' addresses and sizes, a
 * member's key and value bytes, the array limit's flag after `#`, the metatable field, the
 * shared empty hash part; then three closed upvalues' cells (an integer, a string, a boolean).
 * Any mismatch (another Lua version or build) turns images (or cells) off and the check walks
 * tables (or reads upvalues) through the API, as before.
 */
#include "lsb_internal.h"
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Lua 5.4's Table (lobject.h). Only read, and only for tables the record keeps alive. */
typedef struct {
    void *next;
    unsigned char tt, marked, flags, lsizenode;
    unsigned int alimit;
    const unsigned char *array;   /* TValue[real array size] */
    const unsigned char *node;    /* Node[1 << lsizenode]; a shared static node when lastfree is NULL */
    const void *lastfree;
    const void *metatable;
    void *gclist;
} lua54_table;

#define L54_TVALUE 16   /* sizeof(TValue): value 8, type tag 1, padding */
#define L54_NODE 24     /* sizeof(Node): value 8, its tag 1, key tag 1, next 4 (at 12), key 8 (at 16) */
#define L54_BITRAS 0x80 /* flags: alimit is not the array's real size */
#define L54_COLLECTABLE 0x40
#define L54_INTEGER 3   /* LUA_VNUMINT */
#define L54_SHORTSTR (4 | L54_COLLECTABLE)

#define IMAGE_HEADER 5   /* table, node block, array block, lsizenode | real array size << 8, metatable */

/* The array part's real size (luaH_realasize): alimit, or the power of 2 above it when `#`
 * moved the limit down. */
static size_t real_asize(const lua54_table *t) {
    size_t n = t->alimit;
    if (!(t->flags & L54_BITRAS) || (n & (n - 1)) == 0) return n;
    size_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

static size_t node_count(const lua54_table *t) { return (size_t)1 << t->lsizenode; }

static int empty_tag(unsigned char tag) { return (tag & 0x0F) == 0; }   /* nil, empty or absent key */

/* ---- the layout probe ---- */

#define PROBE_LOG 64

typedef struct {
    const void *ptr[PROBE_LOG];
    size_t size[PROBE_LOG];
    int n;
} probe_log;

static void *probe_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)osize;
    probe_log *p = ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    void *q = realloc(ptr, nsize);
    if (q && p->n < PROBE_LOG) {
        p->ptr[p->n] = q;
        p->size[p->n] = nsize;
        p->n++;
    }
    return q;
}

/* Whether a block of `size` bytes at q was allocated since log entry `from`. */
static int allocated(const probe_log *p, int from, const void *q, size_t size) {
    for (int i = from; i < p->n; i++)
        if (p->ptr[i] == q && p->size[i] == size) return 1;
    return 0;
}

static int64_t int_at(const unsigned char *b) {
    int64_t v;
    memcpy(&v, b, sizeof v);
    return v;
}

static const void *ptr_at(const unsigned char *b) {
    const void *v;
    memcpy(&v, b, sizeof v);
    return v;
}

static int probe_on(lua_State *L, probe_log *p) {
    int from = p->n;
    lua_createtable(L, 8, 3);
    const lua54_table *t = lua_topointer(L, -1);
    if (!allocated(p, from, t, sizeof *t) || !allocated(p, from, t->array, 8 * L54_TVALUE) ||
        !allocated(p, from, t->node, 4 * L54_NODE))
        return 0;
    if (t->lsizenode != 2 || t->alimit != 8 || (t->flags & L54_BITRAS) || t->metatable || !t->lastfree) return 0;

    /* array members, then `#` moving the limit below the real size */
    for (int i = 1; i <= 5; i++) {
        lua_pushinteger(L, 100 + i);
        lua_rawseti(L, -2, i);
    }
    if (lua_rawlen(L, -1) != 5 || t->alimit != 5 || !(t->flags & L54_BITRAS) || real_asize(t) != 8) return 0;
    for (int i = 0; i < 8; i++) {
        const unsigned char *v = t->array + i * L54_TVALUE;
        if (i < 5 ? (v[8] != L54_INTEGER || int_at(v) != 101 + i) : !empty_tag(v[8])) return 0;
    }

    /* a member in the hash part: its key and value bytes */
    lua_pushstring(L, "lsb-table-image-probe");
    const void *key = lua_topointer(L, -1);
    lua_pushinteger(L, 42);
    lua_rawset(L, -3);
    int found = 0;
    for (size_t i = 0; i < node_count(t); i++) {
        const unsigned char *n = t->node + i * L54_NODE;
        if (n[9] == L54_SHORTSTR && ptr_at(n + 16) == key && n[8] == L54_INTEGER && int_at(n) == 42) found++;
        else if (!empty_tag(n[8]) || n[9] != 0) return 0;
    }
    if (found != 1) return 0;

    lua_newtable(L);
    const void *mt = lua_topointer(L, -1);
    lua_setmetatable(L, -2);
    if (t->metatable != mt) return 0;

    /* a table without a hash part points at Lua's shared empty node */
    from = p->n;
    lua_newtable(L);
    const lua54_table *e = lua_topointer(L, -1);
    if (!allocated(p, from, e, sizeof *e) || e->lsizenode != 0 || e->lastfree || e->alimit != 0 ||
        allocated(p, from, e->node, L54_NODE))
        return 0;
    return 1;
}

/* ---- upvalue cells ---- */

/* Lua 5.4's UpVal (lfunc.h): the object header, tbc, then `v`, the TValue the upvalue lives in
 * (a stack slot while open, its own `u.value` right after `v` once closed). lua_upvalueid gives
 * the UpVal of a Lua closure's upvalue. */
#define L54_UPVAL_V 16
#define L54_UPVAL_VALUE 24

static const unsigned char *cell_value(const void *upval) {
    const unsigned char *v;
    memcpy(&v, (const unsigned char *)upval + L54_UPVAL_V, sizeof v);
    return v;
}

/* A value's tag, and its bits when its tag does not say it all (nil and booleans carry none:
 * their bits are whatever the slot held before). */
static void value_of(const unsigned char *v, uint64_t *tag, uint64_t *bits) {
    *tag = v[8];
    *bits = (v[8] & 0x0F) <= 1 ? 0 : (uint64_t)int_at(v);
}

static int probe_upvalues(lua_State *L) {
    if (luaL_loadstring(L, "local a, b, c = 42, 'lsb-upvalue-probe', true return function() return a, b, c end") ||
        lua_pcall(L, 0, 1, 0))
        return 0;
    const void *id[3];
    for (int i = 0; i < 3; i++) {
        id[i] = lua_upvalueid(L, -1, i + 1);
        if (!id[i] || cell_value(id[i]) != (const unsigned char *)id[i] + L54_UPVAL_VALUE) return 0;   /* closed */
    }
    lua_getupvalue(L, -1, 2);
    const void *b = lua_topointer(L, -1);
    lua_pop(L, 1);
    uint64_t tag, bits;
    value_of(cell_value(id[0]), &tag, &bits);
    if (tag != L54_INTEGER || bits != 42) return 0;
    value_of(cell_value(id[1]), &tag, &bits);
    if (tag != L54_SHORTSTR || bits != (uint64_t)(uintptr_t)b) return 0;
    value_of(cell_value(id[2]), &tag, &bits);
    return tag == (1 | 1 << 4) && bits == 0;   /* LUA_VTRUE */
}

static int available, cells_available;

static void probe(void) {
    probe_log p = {.n = 0};
    lua_State *L = lua_newstate(probe_alloc, &p);
    if (!L) return;
    available = probe_on(L, &p);
    cells_available = available && probe_upvalues(L);
    lua_close(L);
}

int lsb_timage_available(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, probe);
    return available;
}

int lsb_upcell_available(void) { return lsb_timage_available() && cells_available; }

void lsb_upcell_read(const void *upval, uint64_t *tag, uint64_t *bits) { value_of(cell_value(upval), tag, bits); }

int lsb_upcell_same(const void *upval, uint64_t tag, uint64_t bits) {
    uint64_t t, b;
    value_of(cell_value(upval), &t, &b);
    return t == tag && b == bits;
}

/* ---- images ---- */

size_t lsb_timage_words(const void *table) {
    const lua54_table *t = table;
    if (t->lastfree) {   /* a hash part of its own: no removed member's key the collector would clear */
        for (size_t i = 0; i < node_count(t); i++) {
            const unsigned char *n = t->node + i * L54_NODE;
            if (empty_tag(n[8]) && (n[9] & L54_COLLECTABLE)) return 0;
        }
    }
    return IMAGE_HEADER + (node_count(t) * L54_NODE + real_asize(t) * L54_TVALUE) / 8;
}

int lsb_timage_blocks(const void *table, const void *blocks[2], size_t sizes[2]) {
    const lua54_table *t = table;
    size_t asize = real_asize(t);
    blocks[0] = t->lastfree ? t->node : NULL;
    blocks[1] = asize ? t->array : NULL;
    if (sizes) {
        sizes[0] = t->lastfree ? node_count(t) * L54_NODE : 0;
        sizes[1] = asize * L54_TVALUE;
    }
    return t->metatable != NULL;
}

static void header(const lua54_table *t, uint64_t *w) {
    w[0] = (uint64_t)(uintptr_t)t;
    w[1] = (uint64_t)(uintptr_t)t->node;
    w[2] = (uint64_t)(uintptr_t)t->array;
    w[3] = (uint64_t)t->lsizenode | (uint64_t)real_asize(t) << 8;
    w[4] = (uint64_t)(uintptr_t)t->metatable;
}

void lsb_timage_take(const void *table, uint64_t *w) {
    const lua54_table *t = table;
    header(t, w);
    unsigned char *b = (unsigned char *)(w + IMAGE_HEADER);
    size_t nb = node_count(t) * L54_NODE;
    memcpy(b, t->node, nb);
    if (real_asize(t)) memcpy(b + nb, t->array, real_asize(t) * L54_TVALUE);
}

/* Whether `bytes` (a multiple of 8) at a equal the words at b: 16 bytes a step, no early exit,
 * for small blocks (most tables); memcmp for large ones. */
static int same_bytes(const unsigned char *a, const uint64_t *b, size_t bytes) {
    if (bytes > 512) return !memcmp(a, b, bytes);
    const unsigned char *c = (const unsigned char *)b;
    size_t i = 0;
#ifdef __SSE2__
    __m128i d = _mm_setzero_si128();
    for (; i + 16 <= bytes; i += 16)
        d = _mm_or_si128(d, _mm_xor_si128(_mm_loadu_si128((const __m128i *)(a + i)), _mm_loadu_si128((const __m128i *)(c + i))));
    if (_mm_movemask_epi8(_mm_cmpeq_epi8(d, _mm_setzero_si128())) != 0xFFFF) return 0;
#endif
    uint64_t x, y;
    for (; i < bytes; i += 8) {
        memcpy(&x, a + i, sizeof x);
        memcpy(&y, c + i, sizeof y);
        if (x != y) return 0;
    }
    return 1;
}

int lsb_timage_same(const uint64_t *w) {
    const lua54_table *t = (const lua54_table *)(uintptr_t)w[0];
    if (w[1] != (uint64_t)(uintptr_t)t->node || w[2] != (uint64_t)(uintptr_t)t->array ||
        w[4] != (uint64_t)(uintptr_t)t->metatable)
        return 0;
    size_t asize = real_asize(t);
    if (w[3] != ((uint64_t)t->lsizenode | (uint64_t)asize << 8)) return 0;
    size_t nb = node_count(t) * L54_NODE;
    return same_bytes(t->node, w + IMAGE_HEADER, nb) && same_bytes(t->array, w + IMAGE_HEADER + nb / 8, asize * L54_TVALUE);
}
