/*
 * Wrapped base functions that would otherwise let a script swallow a limit, reach the real
 * globals, load bytecode or install __gc/__close handlers (which Lua runs with hooks off).
 */
#include "lsb_internal.h"
#include "lsb_lazy.h"
#include <string.h>

/* ---- pcall / xpcall: limit errors are re-raised, never returned ---- */

static int finish_pcall(lua_State *L, int status, lua_KContext extra) {
    lsb_note_status(L, status);
    lsb_reraise_limits(L);
    if (status != LUA_OK && status != LUA_YIELD) {
        lsb_get(L)->enrich_failed = 0;   /* caught: no longer the call's error */
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

int lsb_pcall(lua_State *L) {
    luaL_checkany(L, 1);
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    int status = lua_pcallk(L, lua_gettop(L) - 2, LUA_MULTRET, 0, 0, finish_pcall);
    return finish_pcall(L, status, 0);
}

/* The user's message handler never runs for a limit error (it would run with hooks off). */
static int xpcall_handler(lua_State *L) {
    lsb_state *S = lsb_get(L);
    if (S->timed_out || S->mem_exceeded) return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

int lsb_xpcall(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, xpcall_handler, 1);
    lua_replace(L, 2);
    lua_pushboolean(L, 1);
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2);
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, finish_pcall);
    return finish_pcall(L, status, 2);
}

/* ---- load: text only, bound to the current call's environment by default ---- */

#define LOAD_SLOT 5

static const char *load_reader(lua_State *L, void *ud, size_t *size) {
    (void)ud;
    luaL_checkstack(L, 2, "too many nested functions");
    lua_pushvalue(L, 1);
    lua_call(L, 0, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        *size = 0;
        return NULL;
    }
    if (!lua_isstring(L, -1)) luaL_error(L, "reader function must return a string");
    lua_replace(L, LOAD_SLOT);
    return lua_tolstring(L, LOAD_SLOT, size);
}

int lsb_load_text(lua_State *L) {
    lsb_state *S = lsb_get(L);
    size_t len;
    const char *s = lua_tolstring(L, 1, &len);
    int has_env = !lua_isnone(L, 4);
    int status;
    if (s != NULL) {
        const char *name = luaL_optstring(L, 2, s);
        status = luaL_loadbufferx(L, s, len, name, "t");
    } else {
        const char *name = luaL_optstring(L, 2, "=(load)");
        luaL_checktype(L, 1, LUA_TFUNCTION);
        lua_settop(L, LOAD_SLOT);
        status = lua_load(L, load_reader, NULL, name, "t");
    }
    lsb_note_status(L, status);
    lsb_reraise_limits(L);
    if (status != LUA_OK) {
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
    }
    if (has_env) lua_pushvalue(L, 4);
    else lua_rawgeti(L, LUA_REGISTRYINDEX, S->env_ref);
    if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
    return 1;
}

/* ---- coroutines: errors from limits propagate out of resume/wrap/close ---- */

extern const char LSB_HOST_REQUEST;

static int aux_resume(lua_State *L, lua_State *co, int narg) {
    if (!lua_checkstack(co, narg)) {
        lua_pushliteral(L, "too many arguments to resume");
        return -1;
    }
    int st = lua_status(co);
    if (st != LUA_YIELD && (st != LUA_OK || (lua_gettop(co) == 0))) {
        lua_pushstring(L, st == LUA_OK ? "cannot resume dead coroutine" : "cannot resume dead coroutine");
        return -1;
    }
    lua_xmove(L, co, narg);
    int nres;
    lsb_watch prev = lsb_watch_enter(co, 0);
    int status = lua_resume(co, L, narg, &nres);
    lsb_watch_leave(prev);
    lsb_note_status(L, status);
    lsb_reraise_limits(L);
    if (status == LUA_YIELD && nres >= 1 && lua_touserdata(co, -nres) == (void *)&LSB_HOST_REQUEST) {
        lua_pop(co, nres);
        lua_pushliteral(L, "enrich() cannot be used inside a coroutine the script created");
        return -1;
    }
    if (status == LUA_OK || status == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            lua_pushliteral(L, "too many results to resume");
            return -1;
        }
        lua_xmove(co, L, nres);
        return nres;
    }
    lua_xmove(co, L, 1);
    lsb_get(L)->enrich_failed = 0;   /* the script's own coroutine caught it */
    return -1;
}

int lsb_co_resume(lua_State *L) {
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co, 1, "coroutine");
    if (co == L) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "cannot resume non-suspended coroutine");
        return 2;
    }
    int r = aux_resume(L, co, lua_gettop(L) - 1);
    if (r < 0) {
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2;
    }
    lua_pushboolean(L, 1);
    lua_insert(L, -(r + 1));
    return r + 1;
}

static int aux_wrap(lua_State *L) {
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    int r = aux_resume(L, co, lua_gettop(L));
    if (r < 0) {
        int st = lua_status(co);
        if (st != LUA_OK && st != LUA_YIELD) {
            /* __close cannot exist in the sandbox, so closing runs no user code */
            lua_resetthread(co);
            lua_xmove(co, L, 1);
        }
        if (lua_type(L, -1) == LUA_TSTRING) {
            luaL_where(L, 1);
            lua_insert(L, -2);
            lua_concat(L, 2);
        }
        return lua_error(L);
    }
    return r;
}

int lsb_co_wrap(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    lua_pushcclosure(L, aux_wrap, 1);
    return 1;
}

int lsb_co_close(lua_State *L) {
    lsb_reraise_limits(L);
    return lsb_call_upvalue(L);
}

/* ---- setmetatable: a private snapshot without __gc/__close ---- */

int lsb_setmetatable(lua_State *L) {
    int t = lua_type(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    lua_settop(L, 2);
    lsb_lazy_strip(L, 1);   /* a lazy event becomes the plain table it stands for */
    lsb_lazy_force(L, 2);   /* and a lazy metatable shows all its members to the snapshot */
    if (lua_getmetatable(L, 1)) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_SNAPSHOTS);
        lua_pushvalue(L, -2);
        lua_rawget(L, -2);
        if (!lua_toboolean(L, -1)) return luaL_error(L, "cannot change a protected metatable");
        lua_settop(L, 2);
    }
    lsb_tarena_note_table(lsb_get(L)->tarena, lua_topointer(L, 1));   /* a kept table's header changes */
    if (t == LUA_TNIL) {
        lua_setmetatable(L, 1);
        return 1;
    }
    lua_newtable(L);   /* 3: the snapshot */
    int user_protected = 0;
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) == LUA_TSTRING) {
            const char *k = lua_tostring(L, -2);
            if (strcmp(k, "__gc") == 0 || strcmp(k, "__close") == 0)
                return luaL_error(L, "setmetatable: '%s' metamethods are not allowed in the sandbox", k);
            if (strcmp(k, "__metatable") == 0) user_protected = 1;
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, 3);
    }
    if (!user_protected) {   /* getmetatable(obj) still returns the caller's table */
        lua_pushvalue(L, 2);
        lua_setfield(L, 3, "__metatable");
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_SNAPSHOTS);
    lua_pushvalue(L, 3);
    lua_pushboolean(L, !user_protected);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    lua_pushvalue(L, 3);
    lua_setmetatable(L, 1);
    lua_settop(L, 1);
    return 1;
}

/* ---- rawset: read-only proxies stay read-only ---- */

int lsb_rawset(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checkany(L, 2);
    luaL_checkany(L, 3);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_FROZEN);
    lua_pushvalue(L, 1);
    if (lua_rawget(L, -2) != LUA_TNIL) return luaL_error(L, "rawset: table is read-only");
    lua_settop(L, 3);
    lsb_lazy_touch(L, 1, 2);
    lua_rawset(L, 1);
    return 1;
}

/* ---- tostring: no addresses ---- */

int lsb_tostring(lua_State *L) {
    luaL_checkany(L, 1);
    int t = lua_type(L, 1);
    if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, 1) == NULL) {
        lua_pushliteral(L, "null");
        return 1;
    }
    if (t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TTHREAD || t == LUA_TUSERDATA || t == LUA_TLIGHTUSERDATA) {
        if (luaL_getmetafield(L, 1, "__tostring") == LUA_TNIL) {
            if (luaL_getmetafield(L, 1, "__name") == LUA_TSTRING) return 1;
            lua_settop(L, 1);
            lua_pushstring(L, lua_typename(L, t));
            return 1;
        }
        lua_settop(L, 1);
    }
    luaL_tolstring(L, 1, NULL);
    return 1;
}

/* ---- collectgarbage: only options that leave no state behind ---- */

int lsb_collectgarbage(lua_State *L) {
    lsb_mark_impure(L);
    lsb_check_deadline(L);
    const char *opt = luaL_optstring(L, 1, "collect");
    if (strcmp(opt, "count") == 0) {
        int kb = lua_gc(L, LUA_GCCOUNT);
        int b = lua_gc(L, LUA_GCCOUNTB);
        lua_pushnumber(L, (lua_Number)kb + ((lua_Number)b / 1024));
        return 1;
    }
    if (strcmp(opt, "collect") == 0) {
        lua_gc(L, LUA_GCCOLLECT);
        lua_pushinteger(L, 0);
        return 1;
    }
    if (strcmp(opt, "step") == 0) {
        lua_pushboolean(L, lua_gc(L, LUA_GCSTEP, 0));
        return 1;
    }
    if (strcmp(opt, "isrunning") == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    return luaL_error(L, "collectgarbage: option '%s' is not available in the sandbox", opt);
}

/* ---- metadata(value): read-only context of an input value ---- */

/* A context still held as its JSON text (see push_input) is decoded on first use; the view
 * replaces the text wherever it was stored, so every call returns the same table. */
static void decode_context(lua_State *L, lsb_state *S) {
    if (lua_type(L, -1) != LUA_TSTRING) return;
    int text = lua_gettop(L);
    size_t n;
    const char *s = lua_tolstring(L, text, &n);
    char err[200];
    /* validated with its input: a lazy view, unless it is no object lsb_lazy shows */
    if (lsb_push_view(L, s, n) && lsb_push_context(L, s, n, err, sizeof err)) luaL_error(L, "metadata: %s", err);
    if (S->ctx_ref != LUA_NOREF && S->ctx_ref != LUA_REFNIL) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, S->ctx_ref);
        int same = lua_rawequal(L, -1, text);
        lua_pop(L, 1);
        if (same) {
            lua_pushvalue(L, -1);
            lua_rawseti(L, LUA_REGISTRYINDEX, S->ctx_ref);
        }
    }
    lua_replace(L, text);
}

int lsb_metadata(lua_State *L) {
    lsb_state *S = lsb_get(L);
    S->impure++;
    if (S->ctx_pending == 1) {   /* the call's context, held as text (validated): its view, made from the text */
        S->ctx_pending = 0;
        if (lsb_push_view(L, S->ctx_text.data, S->ctx_text.len))
            lua_pushlstring(L, S->ctx_text.data, S->ctx_text.len);   /* decoded eagerly below */
        lsb_ref_replace(L, &S->ctx_ref);
    }
    if (lua_type(L, 1) == LUA_TTABLE) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_CONTEXT);
        int map = lua_gettop(L);
        lua_pushvalue(L, 1);
        if (lua_rawget(L, map) == LUA_TNIL && S->ctx_pending == 2) {   /* a batch event's context, held as text */
            lua_pop(L, 1);
            lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ORIGIN);
            lua_pushvalue(L, 1);
            int found = lua_rawget(L, -2) == LUA_TNUMBER && lua_isinteger(L, -1) && lsb_push_batch_context(L, S, lua_tointeger(L, -1));
            if (!found) lua_pushnil(L);
            lua_replace(L, map + 1);
            lua_settop(L, map + 1);
        }
        if (!lua_isnil(L, -1)) {
            if (lua_type(L, -1) == LUA_TSTRING) {
                decode_context(L, S);
                lua_pushvalue(L, 1);
                lua_pushvalue(L, -2);
                lua_rawset(L, map);
            }
            if (!lua_isnil(L, -1)) return 1;
        }
        lua_settop(L, 1);
    }
    if (S->ctx_ref != LUA_NOREF && S->ctx_ref != LUA_REFNIL) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, S->ctx_ref);
        decode_context(L, S);
        if (!lua_isnil(L, -1)) return 1;
        lua_pop(L, 1);   /* a context that is not an object: as when there is none */
    }
    /* unknown: an empty read-only table, so metadata(e).field is simply nil */
    lua_newtable(L);
    lsb_push_frozen(L, -1);
    return 1;
}
