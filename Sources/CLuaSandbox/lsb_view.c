/*
 * Read-only views of JSON objects (metadata): a view is an empty proxy table with the shared
 * VIEWMETA, and FROZEN maps it to the table it shows, a lazy object of its own document
 * (lsb_lazy_push_detached), so metadata(e).sourceId decodes one member, not the whole context.
 *
 * Invariants:
 * - A script never holds a writable table of a view: every table read through one (__index,
 *   pairs and next, rawget) is handed out as a view of it in turn (VIEWS keeps one per table, so
 *   m.dest == m.dest), unless it is read-only already (an eager proxy, lsb_push_frozen).
 * - Writes fail as for every read-only proxy: __newindex raises, the sandbox's rawset refuses
 *   anything in FROZEN, and the metatable is protected (__metatable false, not in SNAPSHOTS).
 * - Reading a view as a whole (pairs, #, json.encode, an output) reads the table it shows, so an
 *   unchanged view is written as its input bytes.
 */
#include "lsb_internal.h"
#include "lsb_lazy.h"

static const char LSB_KEY_VIEWMETA = 0;   /* registry: the views' shared metatable */
static const char LSB_KEY_VIEWS = 0;      /* registry: weak-keyed, a shown table -> its view */

/* Pushes a new view of the table at idx. */
static void push_view(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_createtable(L, 0, 0);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_VIEWMETA);
    lua_setmetatable(L, -2);
    lsb_frozen_enter(L, idx);
}

void lsb_view_wrap(lua_State *L) {
    if (lua_type(L, -1) != LUA_TTABLE) return;
    int v = lua_gettop(L);
    if (lsb_frozen_target(L, v)) {   /* a view or proxy itself: read-only already */
        lua_settop(L, v);
        return;
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_VIEWS);
    lua_pushvalue(L, v);
    if (lua_rawget(L, -2) == LUA_TNIL) {
        lua_pop(L, 1);
        push_view(L, v);
        lua_pushvalue(L, v);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);   /* VIEWS[table] = view */
    }
    lua_replace(L, v);
    lua_settop(L, v);
}

/* __index(view, key): the shown table's value (a lazy member decodes here), as a view if a table. */
static int view_index(lua_State *L) {
    lua_settop(L, 2);
    if (!lsb_frozen_target(L, 1)) return 0;
    lua_pushvalue(L, 2);
    lua_gettable(L, 3);
    lsb_view_wrap(L);
    return 1;
}

void lsb_view_init(lua_State *L) {
    lua_createtable(L, 0, 5);
    static const luaL_Reg meta[] = {
        {"__index", view_index}, {"__newindex", lsb_frozen_newindex}, {"__len", lsb_frozen_len},
        {"__pairs", lsb_frozen_pairs},   /* the sandbox's next reads through the view, wrapping what it hands out */
        {NULL, NULL}};
    luaL_setfuncs(L, meta, 0);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &LSB_KEY_VIEWMETA);
    lua_createtable(L, 0, 0);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &LSB_KEY_VIEWS);
}

int lsb_push_view(lua_State *L, const char *json, size_t len) {
    if (lsb_lazy_push_detached(L, json, len)) return -1;
    if (lua_type(L, -1) != LUA_TTABLE) {   /* JSON, but not an object */
        lua_pop(L, 1);
        lua_pushnil(L);
        return 0;
    }
    push_view(L, -1);
    lua_remove(L, -2);
    return 0;
}
