/*
 * Host functions that reach outside the sandbox, through the host only:
 *
 * - http.get(url [, opts]) / http.post(url, body [, opts]) suspend the call with an "http"
 *   request (method, url, body, opts as JSON); the host applies its network policy, timeouts
 *   and size caps and answers {status, headers, body, json} or nil, message. A table body is
 *   sent as JSON. opts: headers (table), timeout (seconds, capped by the host).
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
    S->impure++;
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

static int http_done(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    (void)ctx;
    if (lua_type(L, -1) == LUA_TSTRING && lua_isnil(L, -2)) return 2;
    return 1;
}

static int http_request(lua_State *L, const char *method, int body_idx, int opts_idx) {
    lsb_state *S = lsb_get(L);
    S->impure++;
    lsb_check_deadline(L);
    const char *url = luaL_checkstring(L, 1);
    char err[300];
    /* body: a string as is, a table as JSON */
    lua_pushliteral(L, "");
    int body = lua_gettop(L);
    if (body_idx && !lua_isnoneornil(L, body_idx)) {
        if (lua_type(L, body_idx) == LUA_TTABLE) {
            S->enc.len = 0;
            if (lsb_json_encode(L, body_idx, &S->enc, S->cfg.max_output_bytes, err, sizeof err))
                return luaL_error(L, "http.%s: body cannot be JSON: %s", method[0] == 'G' ? "get" : "post", err);
            lua_pushlstring(L, S->enc.data ? S->enc.data : "", S->enc.len);
        } else {
            luaL_checkstring(L, body_idx);
            lua_pushvalue(L, body_idx);
        }
        lua_replace(L, body);
    }
    lua_pushliteral(L, "{}");
    int opts = lua_gettop(L);
    if (!lua_isnoneornil(L, opts_idx)) {
        luaL_checktype(L, opts_idx, LUA_TTABLE);
        S->enc.len = 0;
        if (lsb_json_encode(L, opts_idx, &S->enc, 65536, err, sizeof err))
            return luaL_error(L, "http: options cannot be JSON: %s", err);
        lua_pushlstring(L, S->enc.data ? S->enc.data : "", S->enc.len);
        lua_replace(L, opts);
    }
    if (S->cfg.max_host_calls && S->host_calls >= S->cfg.max_host_calls)
        return luaL_error(L, "http: more than %d requests in one event", S->cfg.max_host_calls);
    S->host_calls++;
    if (!lua_isyieldable(L))
        return luaL_error(L, "http requests cannot be made here (top-level code, a library's top level, a metamethod or an iterator)");
    lua_pushlightuserdata(L, (void *)&LSB_HOST_REQUEST);
    lua_pushliteral(L, "http");
    lua_pushstring(L, method);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, body);
    lua_pushvalue(L, opts);
    return lua_yieldk(L, 6, 0, http_done);
}

int lsb_http_get(lua_State *L) { return http_request(L, "GET", 0, 2); }
int lsb_http_post(lua_State *L) { return http_request(L, "POST", 2, 3); }

int lsb_secret(lua_State *L) {
    lsb_state *S = lsb_get(L);
    S->impure++;
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
