/*
 * Guards for standard C functions that can spend unbounded CPU outside the count hook
 * (design/lua-sandboxing.md F3). Each guard checks the deadline and its arguments, then calls
 * the original, so loops over C calls stay bounded too.
 *
 * - string.rep("", huge) iterates without allocating: answered directly.
 * - Lua patterns backtrack inside C: find/match/gmatch/gsub are replaced by the sandbox's
 *   own matcher, which checks the deadline as it goes (lsb_pattern.c).
 * - string.format: no %p, no addresses through %s.
 * - table.move over more than the source holds, and insert/remove/sort/concat/unpack on
 *   tables with a __len metamethod (a lying length), loop in C: refused.
 * - table.sort always compares through a C closure, where the watchdog can stop it.
 */
#include "lsb_internal.h"
#include "lsb_lazy.h"
#include <math.h>
#include <stdio.h>
#include <string.h>


static int call_original(lua_State *L) {
    lsb_check_deadline(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

static int g_rep(lua_State *L) {
    size_t l, lsep = 0;
    luaL_checklstring(L, 1, &l);
    luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    if (l + lsep == 0) {
        lua_pushliteral(L, "");
        return 1;
    }
    return call_original(L);
}

int lsb_str_find(lua_State *L);
int lsb_str_match(lua_State *L);
int lsb_str_gmatch(lua_State *L);
int lsb_str_gsub(lua_State *L);

static void refuse_lying_length(lua_State *L, const char *fname) {
    if (lsb_lazy_force_array(L, 1)) return;   /* a lazy event array: forced, its __len is its raw length */
    if (lua_type(L, 1) == LUA_TTABLE && luaL_getmetafield(L, 1, "__len") != LUA_TNIL) {
        lua_pop(L, 1);
        if (lsb_frozen_target(L, 1)) {   /* a read-only proxy: its __len is the shown table's length */
            lua_pop(L, 1);
            return;
        }
        luaL_error(L, "%s: tables with a __len metamethod are not accepted in the sandbox", fname);
    }
}

static int g_insert(lua_State *L) { refuse_lying_length(L, "table.insert"); return call_original(L); }
static int g_remove(lua_State *L) { refuse_lying_length(L, "table.remove"); return call_original(L); }
/* table.sort compares in C; a C closure as the comparator gives the watchdog's forced call
 * hook (lsb_watchdog.c) a point to stop a long sort at. Same order, same errors. */
static int sort_less(lua_State *L) {
    if (lua_isnil(L, lua_upvalueindex(1))) {
        lua_pushboolean(L, lua_compare(L, 1, 2, LUA_OPLT));
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 2, 1);
    return 1;
}

static int g_sort(lua_State *L) {
    refuse_lying_length(L, "table.sort");
    if (lua_type(L, 1) == LUA_TTABLE && lua_rawlen(L, 1) <= 1) return call_original(L);   /* Lua checks nothing more */
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    lua_pushcclosure(L, sort_less, 1);
    return call_original(L);
}
static int g_concat(lua_State *L) { refuse_lying_length(L, "table.concat"); return call_original(L); }
static int g_unpack(lua_State *L) { refuse_lying_length(L, "table.unpack"); return call_original(L); }

static int g_move(lua_State *L) {
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    luaL_checktype(L, 1, LUA_TTABLE);
    lsb_lazy_force_array(L, 1);
    /* moving more than the source holds (plus slack) only copies nils, in C */
    lua_Unsigned allowed = (lua_Unsigned)lua_rawlen(L, 1) + 1024;
    if (e >= f && (f <= 0 || (lua_Unsigned)(e - f) >= allowed))
        return luaL_error(L, "table.move: range of %I elements is larger than the source table (#a1 + 1024)",
                          (LUAI_UACINT)(e - f + 1));
    return call_original(L);
}

/* string.format: no %p, and no addresses through %s of tables or functions */
static int g_format(lua_State *L) {
    size_t n;
    const char *fmt = luaL_checklstring(L, 1, &n);
    for (size_t i = 0; i + 1 < n; i++) {
        if (fmt[i] != '%') continue;
        size_t j = i + 1;
        if (fmt[j] == '%') { i = j; continue; }
        while (j < n && strchr("-+ #0123456789.", fmt[j])) j++;
        if (j < n && fmt[j] == 'p') return luaL_error(L, "string.format: '%%p' is not available in the sandbox");
        i = j;
    }
    int top = lua_gettop(L);
    for (int a = 2; a <= top; a++) {
        int t = lua_type(L, a);
        if ((t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TTHREAD || t == LUA_TUSERDATA || t == LUA_TLIGHTUSERDATA) &&
            luaL_getmetafield(L, a, "__tostring") == LUA_TNIL) {
            lua_pushstring(L, (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, a) == NULL) ? "null" : lua_typename(L, t));
            lua_replace(L, a);
        } else if (lua_gettop(L) > top) {
            lua_settop(L, top);
        }
    }
    return call_original(L);
}

static void wrap(lua_State *L, int lib, const char *name, lua_CFunction guard) {
    lua_getfield(L, lib, name);
    lua_pushcclosure(L, guard, 1);
    lua_setfield(L, lib, name);
}

void lsb_register_guards(lua_State *L, int s, int t) {
    wrap(L, s, "rep", g_rep);
    wrap(L, s, "format", g_format);
    /* the pattern functions are the sandbox's own, with a step budget (lsb_pattern.c) */
    lua_pushcfunction(L, lsb_str_find);
    lua_setfield(L, s, "find");
    lua_pushcfunction(L, lsb_str_match);
    lua_setfield(L, s, "match");
    lua_pushcfunction(L, lsb_str_gmatch);
    lua_setfield(L, s, "gmatch");
    lua_pushcfunction(L, lsb_str_gsub);
    lua_setfield(L, s, "gsub");
    wrap(L, t, "insert", g_insert);
    wrap(L, t, "remove", g_remove);
    wrap(L, t, "sort", g_sort);
    wrap(L, t, "concat", g_concat);
    wrap(L, t, "unpack", g_unpack);
    wrap(L, t, "move", g_move);
}
