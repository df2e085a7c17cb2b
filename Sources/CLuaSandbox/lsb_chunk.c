/*
 * Compiling user chunks so that every run gets its own globals.
 *
 * A chunk is compiled as if it began with `local _ENV = ...;` (on its first line, so line
 * numbers are unchanged) and is then called with a fresh environment table as its argument.
 * Each run therefore creates closures bound to that run's environment: two invocations that
 * are suspended at the same time (waiting for lookups) can never see each other's globals,
 * and nothing needs the shared `_ENV` upvalue of the compiled chunk.
 */
#include "lsb_internal.h"
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

int lsb_compile(lua_State *L, const char *src, size_t len, const char *chunkname) {
    /* a text chunk must not start with the binary signature; the prefix guarantees text */
    chunk_reader r = {src, len, 0};
    return lua_load(L, read_parts, &r, chunkname, "t");
}

void lsb_push_fresh_env(lua_State *L) {
    lua_newtable(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ENVMETA);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G");
}
