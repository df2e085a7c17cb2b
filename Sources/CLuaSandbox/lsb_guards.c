/*
 * Guards for standard C functions that can spend unbounded CPU outside the count hook
 * (design/lua-sandboxing.md F3). Each guard checks its arguments, then calls the original.
 *
 * - string.rep("", huge) iterates without allocating: answered directly.
 * - Lua patterns backtrack inside C: find/match/gmatch/gsub refuse a pattern whose worst
 *   case on this subject exceeds LSB_PATTERN_BUDGET steps. This is an estimate (positions x
 *   subject^quantifiers), so it can refuse some expensive-looking patterns on large subjects;
 *   a step-counting matcher would replace it.
 * - table.move over huge ranges, and insert/remove/sort on tables with a __len metamethod
 *   (a lying length), loop in C: refused.
 */
#include "lsb_internal.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

#define LSB_PATTERN_BUDGET 1e11
#define LSB_MOVE_MAX ((lua_Integer)1 << 24)

static int call_original(lua_State *L) {
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

/* Number of quantifiers (*, +, -) in a Lua pattern: the exponent of its worst case. */
static int pattern_quantifiers(const char *p, size_t n) {
    int q = 0;
    size_t i = 0;
    if (i < n && p[i] == '^') i++;
    while (i < n) {
        char c = p[i];
        if (c == '(' || c == ')') { i++; continue; }
        if (c == '%') {
            if (i + 1 < n && p[i + 1] == 'b') { i += 4; continue; }
            if (i + 1 < n && p[i + 1] == 'f') {
                i += 2;
                if (i < n && p[i] == '[') {
                    i++;
                    if (i < n && p[i] == '^') i++;
                    do { if (i < n && p[i] == '%') i++; i++; } while (i < n && p[i] != ']');
                    i++;
                }
                continue;
            }
            i += 2;
        } else if (c == '[') {
            i++;
            if (i < n && p[i] == '^') i++;
            do { if (i < n && p[i] == '%') i++; i++; } while (i < n && p[i] != ']');
            i++;
        } else i++;
        if (i < n && (p[i] == '*' || p[i] == '+' || p[i] == '-')) { q++; i++; }
        else if (i < n && p[i] == '?') i++;
    }
    return q;
}

static void check_pattern(lua_State *L, const char *fname, int anchorable) {
    size_t ls, lp;
    if (lua_type(L, 1) != LUA_TSTRING && lua_type(L, 1) != LUA_TNUMBER) return;
    if (lua_type(L, 2) != LUA_TSTRING) return;
    const char *s = lua_tolstring(L, 1, &ls);
    const char *p = lua_tolstring(L, 2, &lp);
    (void)s;
    if (ls < 64) return;
    int q = pattern_quantifiers(p, lp);
    if (q == 0) return;
    double positions = (anchorable && lp > 0 && p[0] == '^') ? 1.0 : (double)ls + 1;
    double cost = positions * pow((double)ls + 1, q);
    if (cost > LSB_PATTERN_BUDGET) {
        char msg[300];
        snprintf(msg, sizeof msg,
                 "%s: pattern '%.40s' is too expensive for a %zu-byte subject (worst case ~%.0e steps, limit %.0e); "
                 "anchor it with '^', use fewer quantifiers, or search with plain find",
                 fname, p, ls, cost, LSB_PATTERN_BUDGET);
        luaL_error(L, "%s", msg);
    }
}

static int g_find(lua_State *L) {
    if (!lua_toboolean(L, 4)) check_pattern(L, "string.find", 1);
    return call_original(L);
}
static int g_match(lua_State *L) { check_pattern(L, "string.match", 1); return call_original(L); }
static int g_gmatch(lua_State *L) { check_pattern(L, "string.gmatch", 0); return call_original(L); }
static int g_gsub(lua_State *L) { check_pattern(L, "string.gsub", 1); return call_original(L); }

static void refuse_lying_length(lua_State *L, const char *fname) {
    if (lua_type(L, 1) == LUA_TTABLE && luaL_getmetafield(L, 1, "__len") != LUA_TNIL)
        luaL_error(L, "%s: tables with a __len metamethod are not accepted in the sandbox", fname);
}

static int g_insert(lua_State *L) { refuse_lying_length(L, "table.insert"); return call_original(L); }
static int g_remove(lua_State *L) { refuse_lying_length(L, "table.remove"); return call_original(L); }
static int g_sort(lua_State *L) { refuse_lying_length(L, "table.sort"); return call_original(L); }
static int g_concat(lua_State *L) { refuse_lying_length(L, "table.concat"); return call_original(L); }
static int g_unpack(lua_State *L) { refuse_lying_length(L, "table.unpack"); return call_original(L); }

static int g_move(lua_State *L) {
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    if (e >= f && (f <= 0 ? e >= LSB_MOVE_MAX + f : e - f >= LSB_MOVE_MAX))
        return luaL_error(L, "table.move: a range of more than %d elements is not accepted in the sandbox",
                          (int)LSB_MOVE_MAX);
    return call_original(L);
}

static void wrap(lua_State *L, int lib, const char *name, lua_CFunction guard) {
    lua_getfield(L, lib, name);
    lua_pushcclosure(L, guard, 1);
    lua_setfield(L, lib, name);
}

void lsb_register_guards(lua_State *L, int s, int t) {
    wrap(L, s, "rep", g_rep);
    wrap(L, s, "find", g_find);
    wrap(L, s, "match", g_match);
    wrap(L, s, "gmatch", g_gmatch);
    wrap(L, s, "gsub", g_gsub);
    wrap(L, t, "insert", g_insert);
    wrap(L, t, "remove", g_remove);
    wrap(L, t, "sort", g_sort);
    wrap(L, t, "concat", g_concat);
    wrap(L, t, "unpack", g_unpack);
    wrap(L, t, "move", g_move);
}
