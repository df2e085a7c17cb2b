/*
 * Call-scoped records (lsb_lazy.h): while a call runs (c->scoped), the nested tables made from its
 * events' documents get their records from a bump pool in host memory instead of a userdata
 * each, a batch event's table keeps its record in its document's userdata, and none is entered
 * in LAZYMAP. The cache finds them, else a hash of the call's tables; the anchor list (the
 * cache's uservalue 6) keeps the tables alive until the call ends, and the documents list
 * (uservalue 7, same positions) their documents, unless a document is the latest event's, which
 * uservalue 3 holds.
 * Then lsb_lazy_call_ended clears the hash, the list and every cache entry naming one of these
 * records before the pool is reused, so no pointer to a pool record outlives its call; that
 * nothing can reach the tables any more is the arena's argument (lsb_lazy.h). A call that
 * suspends moves them into userdata entered in LAZYMAP first (lsb_scoped_keep). Past SCOPED_MAX
 * tables or POOL_MAX bytes in one call, further records are userdata as before.
 */
#include "lsb_lazy_cache.h"
#include <stdlib.h>
#include <string.h>

#define POOL_FIRST 1024   /* the first chunk is kept between calls (a typical event needs a few hundred bytes) */
#define POOL_KEPT 32768   /* a call that needed more chunks leaves one of their size, up to this */
#define POOL_MAX ((size_t)1 << 20)
#define SCOPED_MAX 4096   /* tables per call (the anchor list holds each with its document) */

typedef struct pool_chunk {
    struct pool_chunk *next;
    size_t cap, used;
    uint64_t data[];
} pool_chunk;

typedef struct {
    pool_chunk *first, *cur;
    size_t total;              /* bytes in the chunks */
    struct {
        const void *t;
        lsb_lazy *z;
    } *recs;                   /* the running call's scoped tables and their records, in anchor order */
    unsigned n, cap;
    unsigned docs;             /* the last position of the documents list in use, or 0 */
    uint32_t *hash;            /* open addressing over recs: index + 1, 0 for an empty slot */
    unsigned hcap;             /* a power of two, more than twice n */
} scoped_pool;

static inline unsigned hash_slot(const void *t, unsigned cap) {
    uint64_t x = (uint64_t)(uintptr_t)t * 0x9E3779B97F4A7C15ull;
    return (unsigned)(x >> 40) & (cap - 1);
}

static lsb_lazy *scoped_find(const scoped_pool *p, const void *t) {
    unsigned m = p->hcap - 1;
    for (unsigned h = hash_slot(t, p->hcap); p->hash[h]; h = (h + 1) & m)
        if (p->recs[p->hash[h] - 1].t == t) return p->recs[p->hash[h] - 1].z;
    return NULL;
}

static void scoped_hash_put(scoped_pool *p, unsigned i) {
    unsigned m = p->hcap - 1, h = hash_slot(p->recs[i].t, p->hcap);
    while (p->hash[h]) h = (h + 1) & m;   /* the call's tables are anchored: no address comes twice */
    p->hash[h] = i + 1;
}

/* scoped_room when recs or the hash must grow. */
static int scoped_grow(scoped_pool *p) {
    if (p->n == SCOPED_MAX) return -1;
    if (p->n == p->cap) {
        unsigned cap = p->cap ? 2 * p->cap : 16;
        void *r = realloc(p->recs, cap * sizeof p->recs[0]);
        if (!r) return -1;
        p->recs = r;
        p->cap = cap;
    }
    if (2 * (p->n + 1) >= p->hcap) {
        unsigned cap = p->hcap ? 2 * p->hcap : 64;
        uint32_t *h = calloc(cap, sizeof *h);
        if (!h) return -1;
        free(p->hash);
        p->hash = h;
        p->hcap = cap;
        for (unsigned i = 0; i < p->n; i++) scoped_hash_put(p, i);
    }
    return 0;
}

/* Room for one more record in recs and the hash; 0, or -1 when there is none (SCOPED_MAX, or
 * host memory ran out). */
static inline __attribute__((always_inline)) int scoped_room(scoped_pool *p) {
    return p->n < p->cap && 2 * (p->n + 1) < p->hcap && p->n < SCOPED_MAX ? 0 : scoped_grow(p);
}

/* n bytes (8-aligned) from the pool, or NULL past POOL_MAX or when host memory ran out. */
static void *scoped_alloc(scoped_pool *p, size_t n) {
    n = ALIGN8(n);
    pool_chunk *k = p->cur;
    if (!k || k->cap - k->used < n) {   /* cur is the last chunk */
        size_t cap = k ? 2 * k->cap : POOL_FIRST;
        while (cap < n) cap *= 2;
        if (p->total + cap > POOL_MAX) return NULL;
        pool_chunk *nk = malloc(sizeof *nk + cap);
        if (!nk) return NULL;
        nk->next = NULL;
        nk->cap = cap;
        nk->used = 0;
        if (k) k->next = nk;
        else p->first = nk;
        p->cur = nk;
        p->total += cap;
        k = nk;
    }
    void *r = (char *)k->data + k->used;
    k->used += n;
    return r;
}

/* Forgets the call's scoped records: cache entries that name one, the hash, the pool's chunks
 * but the first. Touches no Lua value. */
static void scoped_reset(lazy_cache *c, scoped_pool *p) {
    for (unsigned i = 0; i < p->n; i++) {
        unsigned s = cache_slot(p->recs[i].t);
        if (c && c->e[s].t == p->recs[i].t && c->e[s].z == p->recs[i].z) {
            c->e[s].t = NULL;
            c->e[s].z = NULL;
        }
    }
    if (p->hcap > 1024) {   /* an idle state keeps small tables */
        free(p->hash);
        p->hash = NULL;
        p->hcap = 0;
    } else if (p->n) {
        memset(p->hash, 0, p->hcap * sizeof *p->hash);
    }
    if (p->cap > 512) {
        free(p->recs);
        p->recs = NULL;
        p->cap = 0;
    }
    p->n = 0;
    if (p->first && p->first->next) {   /* one chunk as large as this call needed, next time */
        size_t used = 0, cap = POOL_FIRST;
        for (pool_chunk *k = p->first; k;) {
            pool_chunk *next = k->next;
            used += k->used;
            free(k);
            k = next;
        }
        while (cap < used && cap < POOL_KEPT) cap *= 2;
        p->first = malloc(sizeof *p->first + cap);
        if (p->first) {
            p->first->next = NULL;
            p->first->cap = cap;
        }
    }
    if (p->first) p->first->used = 0;
    p->total = p->first ? p->first->cap : 0;
    p->cur = p->first;
}

void lsb_lazy_free_scoped(lsb_state *S) {
    scoped_pool *p = S->lazy_scoped;
    if (!p) return;
    for (pool_chunk *k = p->first; k;) {
        pool_chunk *next = k->next;
        free(k);
        k = next;
    }
    free(p->recs);
    free(p->hash);
    free(p);
    S->lazy_scoped = NULL;
}

/* Registers the table at the top of the stack, record z: anchored (position n+1 of the anchor
 * list; its document at docidx at the same position of the documents list, or docidx 0 for the
 * latest event's, which the cache's uservalue 3 keeps alive for the call), in the hash and in
 * the cache. scoped_room has made room. */
static inline __attribute__((always_inline)) void scoped_register(lua_State *L, lazy_cache *c, int cidx, scoped_pool *p, lsb_lazy *z,
                                                                 int docidx) {
    lua_getiuservalue(L, cidx, 6);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, (lua_Integer)p->n + 1);   /* anchored until the call ends */
    lua_pop(L, 1);
    if (docidx) {
        lua_getiuservalue(L, cidx, 7);
        lua_pushvalue(L, docidx);
        lua_rawseti(L, -2, (lua_Integer)p->n + 1);
        lua_pop(L, 1);
        p->docs = p->n + 1;
    }
    const void *t = lua_topointer(L, -1);
    z->anchor = docidx ? (unsigned short)(p->n + 1) : 0;
    p->recs[p->n].t = t;
    p->recs[p->n].z = z;
    scoped_hash_put(p, p->n);
    p->n++;
    unsigned s = cache_slot(t);
    c->e[s].t = t;
    c->e[s].z = z;
}

static scoped_pool *scoped_pool_of(lua_State *L) {
    lsb_state *S = lsb_get(L);
    return S->lazy_scoped ? S->lazy_scoped : (S->lazy_scoped = calloc(1, sizeof(scoped_pool)));
}

lsb_lazy *lsb_scoped_push(lua_State *L, lazy_cache *c, int cidx, const lsb_lazy_doc *d, int docidx, size_t off,
                          size_t len, const lsb_lazy_member *m, int count, uint32_t height, int array) {
    if (!c->scoped) return NULL;
    scoped_pool *p = scoped_pool_of(L);
    lsb_lazy *z;
    if (!p || scoped_room(p) || !(z = scoped_alloc(p, sizeof *z + (size_t)count * sizeof z->m[0]))) return NULL;
    docidx = d == c->cur ? 0 : lua_absindex(L, docidx);
    lsb_lazy_fill_record(z, d, off, len, m ? m : z->m, count, height);
    z->array = (unsigned char)array;
    lua_createtable(L, array ? 4 : 0, 0);
    lua_getiuservalue(L, cidx, array ? 5 : 1);
    lua_setmetatable(L, -2);
    scoped_register(L, c, cidx, p, z, docidx);
    return z;
}

int lsb_scoped_adopt(lua_State *L, lazy_cache *c, int cidx, lsb_lazy *z) {
    if (!c->scoped) return 0;
    scoped_pool *p = scoped_pool_of(L);
    if (!p || scoped_room(p)) return 0;
    int ud = lua_gettop(L);
    lua_createtable(L, 0, 0);
    lua_getiuservalue(L, cidx, 1);
    lua_setmetatable(L, -2);
    scoped_register(L, c, cidx, p, z, ud);   /* the userdata is the record's document */
    lua_replace(L, ud);
    return 1;
}

/* Empties the anchor and documents lists (the cache at cidx). */
static void scoped_unanchor(lua_State *L, int cidx, scoped_pool *p) {
    for (int uv = 6; uv <= 7; uv++) {
        unsigned last = uv == 6 ? p->n : p->docs;
        if (!last) continue;
        lua_getiuservalue(L, cidx, uv);
        for (unsigned i = 1; i <= last; i++) {
            lua_pushnil(L);
            lua_rawseti(L, -2, (lua_Integer)i);
        }
        lua_pop(L, 1);
    }
    p->docs = 0;
}

lsb_lazy *lsb_scoped_find(const lsb_state *S, const void *t) {
    const scoped_pool *p = S->lazy_scoped;
    return p && p->n ? scoped_find(p, t) : NULL;
}

void lsb_scoped_keep(lua_State *L, lazy_cache *c, int cidx, int map) {
    scoped_pool *p = lsb_get(L)->lazy_scoped;
    c->scoped = 0;
    if (!p || !p->n) return;
    luaL_checkstack(L, 5, "cannot keep the event");
    lua_getiuservalue(L, cidx, 6);
    int anchors = lua_gettop(L);
    lua_getiuservalue(L, cidx, 7);
    for (unsigned i = 0; i < p->n; i++) {
        lsb_lazy *old = p->recs[i].z;
        size_t size = sizeof *old + (size_t)old->count * sizeof old->m[0];
        lua_rawgeti(L, anchors, (lua_Integer)i + 1);   /* the table */
        lsb_lazy *z = lua_newuserdatauv(L, size, 1);
        memcpy(z, old, size);
        z->anchor = 0;
        if (lua_rawgeti(L, anchors + 1, (lua_Integer)i + 1) == LUA_TNIL) {   /* its document: listed, */
            lua_pop(L, 1);
            lua_getiuservalue(L, cidx, 3);   /* or the suspended event's */
        }
        lua_setiuservalue(L, -2, 1);
        lua_rawset(L, map);   /* LAZYMAP[table] = record */
        unsigned s = cache_slot(p->recs[i].t);
        if (c->e[s].t == p->recs[i].t) c->e[s].z = z;
        p->recs[i].z = z;   /* so scoped_reset leaves that cache entry */
    }
    lua_settop(L, anchors - 1);
    scoped_unanchor(L, cidx, p);
    scoped_reset(c, p);
}

void lsb_lazy_call_ended(lsb_state *S, int escaped) {
    lazy_cache *c = S->lazy;
    scoped_pool *p = S->lazy_scoped;
    if (c) c->scoped = 0;
    if (!p || (!p->n && (!p->first || (!p->first->used && !p->first->next)))) return;   /* nothing to forget */
    if (!escaped && c && p->n) {   /* the anchors go, so the tables can be collected */
        lua_State *L = S->L;
        lua_rawgeti(L, LUA_REGISTRYINDEX, S->lazy_ref);
        scoped_unanchor(L, lua_gettop(L), p);
        lua_pop(L, 1);
    }
    scoped_reset(c, p);
}
