/*
 * require(name): loads libraries/NAME.lua through the host's loader (a C trampoline into
 * Swift that returns bytes or an error code and never raises). Each state compiles a library
 * once; each run of the top level runs it afresh in its own environment (lsb_reuse.c keeps the
 * result while no call changes it), so a library's module-level state
 * cannot carry data from one event to the next. Cycles and missing libraries are errors that
 * name both files.
 */
#include "lsb_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char LSB_LOADING = 0;

static int valid_name(const char *s, size_t n) {
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static int push_two_strings(lua_State *L) {
    const char *src = lua_touserdata(L, 1);
    size_t len = (size_t)lua_tointeger(L, 2);
    const char *name = lua_touserdata(L, 3);
    lua_pushlstring(L, src, len);
    lua_pushstring(L, name);
    return 2;
}

/* Pushes the compiled chunk of library `name`, compiling it on first use. */
static void push_library_chunk(lua_State *L, lsb_state *S, const char *name) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_LIBS);
    if (lua_getfield(L, -1, name) == LUA_TFUNCTION) {
        lua_remove(L, -2);
        return;
    }
    lua_pop(L, 1);
    char *src = NULL, *chunkname = NULL;
    size_t len = 0;
    int r = S->cfg.loader ? S->cfg.loader(S->cfg.loader_ctx, name, &src, &len, &chunkname) : 1;
    if (r != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%.*s", src ? (int)len : 0, src ? src : "");
        free(src);
        free(chunkname);
        if (!msg[0]) snprintf(msg, sizeof msg, "library '%s' not found", name);
        luaL_error(L, "require: %s", msg);
        return;
    }
    /* Copy both into the Lua heap under a protected call, so a memory error there cannot
     * leak the malloc'd buffers. */
    lua_pushcfunction(L, push_two_strings);
    lua_pushlightuserdata(L, src);
    lua_pushinteger(L, (lua_Integer)len);
    lua_pushlightuserdata(L, chunkname ? chunkname : (char *)name);
    int pst = lua_pcall(L, 3, 2, 0);
    free(src);
    free(chunkname);
    if (pst != LUA_OK) {
        lsb_note_status(L, pst);
        lsb_reraise_limits(L);
        lua_error(L);
    }
    /* stack: ..., LIBS, source, chunkname */
    int st;
    {
        size_t sl;
        const char *s = lua_tolstring(L, -2, &sl);
        st = lsb_compile(L, s, sl, lua_tostring(L, -1));
    }
    lsb_note_status(L, st);
    lsb_reraise_limits(L);
    if (st != LUA_OK) lua_error(L);   /* "libraries/x.lua:3: syntax error ..." */
    lua_replace(L, -3);               /* chunk replaces source */
    lua_pop(L, 1);                    /* chunkname */
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, name);
    lua_remove(L, -2);
}

int lsb_require(lua_State *L) {
    lsb_state *S = lsb_get(L);
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    if (!valid_name(name, n))
        return luaL_error(L, "require: invalid library name '%s' (use letters, digits, '_' or '-'; "
                             "library NAME is loaded from libraries/NAME.lua)", name);
    lua_settop(L, 1);
    if (S->loaded_ref == LUA_NOREF) {
        lua_newtable(L);
        S->loaded_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->loaded_ref);   /* 2: this call's loaded table */
    int t = lua_getfield(L, 2, name);
    if (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == &LSB_LOADING) {
        luaL_where(L, 1);
        return luaL_error(L, "require cycle: %s requires '%s', which is still loading (libraries/%s.lua)",
                          lua_tostring(L, -1), name, name);
    }
    if (t != LUA_TNIL) return 1;
    lua_pop(L, 1);
    if (S->loading_depth >= LSB_MAX_REQUIRE_DEPTH)
        return luaL_error(L, "require: libraries nested more than %d deep", LSB_MAX_REQUIRE_DEPTH);

    push_library_chunk(L, S, name);                      /* 3 */
    lua_pushlightuserdata(L, (void *)&LSB_LOADING);
    lua_setfield(L, 2, name);

    int depth = S->loading_depth++;
    lua_pushvalue(L, 3);
    lsb_push_fresh_env(L, 4);                            /* the library's own environment */
    lua_pushvalue(L, 1);
    int st = lua_pcall(L, 2, 1, 0);
    S->loading_depth = depth;
    if (st != LUA_OK) {
        lua_pushnil(L);
        lua_setfield(L, 2, name);
        lsb_note_status(L, st);
        lsb_reraise_limits(L);
        return lua_error(L);
    }
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, 2, name);
    return 1;
}
