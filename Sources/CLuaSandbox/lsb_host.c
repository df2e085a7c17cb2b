/*
 * Host functions that reach outside the sandbox, through the host only:
 *
 * - enrich(provider, key [, {required = true}]) suspends the call with a host request; the
 *   host answers (possibly after other events' lookups, concurrently) and the script gets
 *   the value, or nil and an error message. With required = true a failure raises an error
 *   of kind `enrichment` instead. Calls per event are capped (cfg.max_host_calls).
 * - secret(name) asks the host synchronously through a C trampoline; only secrets granted
 *   to the transformation are answered.
 */
#include "lsb_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char LSB_HOST_REQUEST = 0;

static int enrich_done(lua_State *L, int status, lua_KContext required) {
    (void)status;
    /* the host pushed (value) or (nil, message) */
    if (required && lua_isnil(L, -2) && lua_type(L, -1) == LUA_TSTRING) {
        lsb_get(L)->enrich_failed = 1;
        return luaL_error(L, "enrichment failed: %s", lua_tostring(L, -1));
    }
    if (lua_type(L, -1) == LUA_TSTRING && lua_isnil(L, -2)) return 2;
    return 1;
}

int lsb_enrich(lua_State *L) {
    lsb_state *S = lsb_get(L);
    lsb_check_deadline(L);
    const char *provider = luaL_checkstring(L, 1);
    luaL_argexpected(L, lua_type(L, 2) == LUA_TSTRING || lua_type(L, 2) == LUA_TNUMBER, 2, "string");
    const char *key = lua_tostring(L, 2);
    int required = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_getfield(L, 3, "required");
        required = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (S->cfg.max_host_calls && S->host_calls >= S->cfg.max_host_calls)
        return luaL_error(L, "enrich: more than %d lookups in one event", S->cfg.max_host_calls);
    S->host_calls++;
    if (!lua_isyieldable(L))
        return luaL_error(L, "enrich() cannot be called here (top-level code, a library's top level, a metamethod or an iterator)");
    lua_settop(L, 0);
    lua_pushlightuserdata(L, (void *)&LSB_HOST_REQUEST);
    lua_pushliteral(L, "enrich");
    lua_pushstring(L, provider);
    lua_pushstring(L, key);
    return lua_yieldk(L, 4, (lua_KContext)required, enrich_done);
}

static int push_buffer(lua_State *L) {
    lua_pushlstring(L, lua_touserdata(L, 1), (size_t)lua_tointeger(L, 2));
    return 1;
}

int lsb_secret(lua_State *L) {
    lsb_state *S = lsb_get(L);
    const char *name = luaL_checkstring(L, 1);
    char *out = NULL;
    size_t n = 0;
    int r = S->cfg.host ? S->cfg.host(S->cfg.host_ctx, "secret", name, &out, &n) : -1;
    if (r != 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "%.*s", out ? (int)(n > 250 ? 250 : n) : 0, out ? out : "");
        free(out);
        if (!msg[0]) snprintf(msg, sizeof msg, "secret '%s' is not available", name);
        return luaL_error(L, "%s", msg);
    }
    /* copy into Lua under protection so the malloc'd value cannot leak */
    lua_pushcfunction(L, push_buffer);
    lua_pushlightuserdata(L, out);
    lua_pushinteger(L, (lua_Integer)n);
    int st = lua_pcall(L, 2, 1, 0);
    memset(out, 0, n);
    free(out);
    if (st != LUA_OK) {
        lsb_note_status(L, st);
        lsb_reraise_limits(L);
        return lua_error(L);
    }
    return 1;
}
