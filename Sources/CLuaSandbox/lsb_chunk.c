/*
 * Compiling user chunks so that every run gets its own globals.
 *
 * A chunk is compiled as if it began with `local _ENV = ...;` (on its first line, so line
 * numbers are unchanged) and is then called with a fresh environment table as its argument.
 * Each run therefore creates closures bound to that run's environment: two invocations that
 * are suspended at the same time (waiting for lookups) can never see each other's globals,
 * and nothing needs the shared `_ENV` upvalue of the compiled chunk.
 *
 * Compiled chunks are cached process-wide (bytecode from lua_dump, debug info kept), keyed by
 * chunk name and the exact source bytes, so a new state for a transformation or library
 * already compiled once loads bytecode instead of parsing (cold start). Only bytecode this
 * file produced from source is ever loaded as binary; user code's `load` stays text-only.
 */
#include "lsb_internal.h"
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char PREFIX[] = "local _ENV = ...; ";

typedef struct {
    const char *src;
    size_t len;
    int part;
} chunk_reader;

static const char *read_parts(lua_State *L, void *ud, size_t *size) {
    (void)L;
    chunk_reader *r = ud;
    switch (r->part++) {
    case 0:
        *size = sizeof PREFIX - 1;
        return PREFIX;
    case 1:
        *size = r->len;
        return r->src;
    default:
        *size = 0;
        return NULL;
    }
}

#define CACHE_MAX_BYTES (32u << 20)

typedef struct centry {
    uint64_t hash;
    char *name, *src, *code;
    size_t srclen, codelen;
    uint64_t used;
    struct centry *next;
} centry;

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static centry *cache;
static size_t cache_bytes;
static uint64_t cache_clock;

static uint64_t fnv1a(const char *s, size_t n, const char *name) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    for (; *name; name++) h = (h ^ (unsigned char)*name) * 1099511628211ull;
    return h;
}

/* A malloc'd copy of the cached bytecode for exactly this source, or NULL. */
static char *cache_get(uint64_t h, const char *src, size_t len, const char *name, size_t *codelen) {
    char *copy = NULL;
    pthread_mutex_lock(&cache_mu);
    for (centry *e = cache; e; e = e->next) {
        if (e->hash == h && e->srclen == len && strcmp(e->name, name) == 0 && memcmp(e->src, src, len) == 0) {
            copy = malloc(e->codelen);
            if (copy) {
                memcpy(copy, e->code, e->codelen);
                *codelen = e->codelen;
                e->used = ++cache_clock;
            }
            break;
        }
    }
    pthread_mutex_unlock(&cache_mu);
    return copy;
}

static void cache_put(uint64_t h, const char *src, size_t len, const char *name, lsb_buf *code) {
    centry *e = calloc(1, sizeof *e);
    if (!e) return;
    e->hash = h;
    e->name = lsb_strndup(name, strlen(name));
    e->src = lsb_strndup(src, len);
    e->srclen = len;
    e->code = code->data;
    e->codelen = code->len;
    code->data = NULL;
    if (!e->name || !e->src || !e->code) {
        free(e->name);
        free(e->src);
        free(e->code);
        free(e);
        return;
    }
    size_t size = len + code->len + strlen(name) + sizeof *e;
    pthread_mutex_lock(&cache_mu);
    while (cache && cache_bytes + size > CACHE_MAX_BYTES) {   /* evict the least recently used */
        centry **victim = &cache;
        for (centry **pp = &cache; *pp; pp = &(*pp)->next)
            if ((*pp)->used < (*victim)->used) victim = pp;
        centry *v = *victim;
        *victim = v->next;
        cache_bytes -= v->srclen + v->codelen + strlen(v->name) + sizeof *v;
        free(v->name);
        free(v->src);
        free(v->code);
        free(v);
    }
    e->used = ++cache_clock;
    e->next = cache;
    cache = e;
    cache_bytes += size;
    pthread_mutex_unlock(&cache_mu);
}

static int write_code(lua_State *L, const void *p, size_t n, void *ud) {
    (void)L;
    return lsb_buf_put(ud, p, n);
}

typedef struct {
    const char *code;
    size_t len;
} code_reader;

static const char *read_code(lua_State *L, void *ud, size_t *size) {
    (void)L;
    code_reader *r = ud;
    *size = r->len;
    r->len = 0;
    return *size ? r->code : NULL;
}

int lsb_compile(lua_State *L, const char *src, size_t len, const char *chunkname) {
    uint64_t h = fnv1a(src, len, chunkname);
    size_t codelen = 0;
    char *code = cache_get(h, src, len, chunkname, &codelen);
    if (code) {
        code_reader cr = {code, codelen};
        int st = lua_load(L, read_code, &cr, chunkname, "b");
        free(code);
        if (st == LUA_OK) return st;
        lua_pop(L, 1);   /* fall back to compiling the text */
    }
    /* a text chunk must not start with the binary signature; the prefix guarantees text */
    chunk_reader r = {src, len, 0};
    int st = lua_load(L, read_parts, &r, chunkname, "t");
    if (st == LUA_OK) {
        lsb_buf out = {0};
        if (lua_dump(L, write_code, &out, 0) == 0 && out.len) cache_put(h, src, len, chunkname, &out);
        free(out.data);
    }
    return st;
}

void lsb_push_fresh_env(lua_State *L, int slots) {
    lua_createtable(L, 0, slots > 1 ? slots : 1);   /* sized once: no rehash as the chunk defines its globals */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ENVMETA);
    lua_setmetatable(L, -2);
    lua_pushliteral(L, "_G");
    lua_pushvalue(L, -2);
    lua_rawset(L, -3);   /* ENVMETA has no __newindex: the same as a plain assignment */
}
