/*
 * The sandbox surface: the one place that decides what user code can reach.
 *
 * BASE holds the allowlisted globals. Every call gets a fresh environment whose __index is
 * BASE, so globals written while handling one value never reach the next. Library tables are
 * read-only proxies (rawset refuses them), the string metatable is hidden, and the state's
 * real global table is emptied so an unwrapped path could find nothing.
 */
#include "lsb_internal.h"
#include "lsb_lazy.h"
#include <string.h>

int lsb_pcall(lua_State *L);
int lsb_xpcall(lua_State *L);
int lsb_load_text(lua_State *L);
int lsb_co_resume(lua_State *L);
int lsb_co_close(lua_State *L);
int lsb_co_wrap(lua_State *L);
int lsb_setmetatable(lua_State *L);
int lsb_rawset(lua_State *L);
int lsb_next(lua_State *L);
int lsb_rawget(lua_State *L);
int lsb_rawlen(lua_State *L);
int lsb_getmetatable(lua_State *L);
int lsb_tostring(lua_State *L);
int lsb_collectgarbage(lua_State *L);
int lsb_metadata(lua_State *L);
int lsb_enrich(lua_State *L);
int lsb_secret(lua_State *L);
int lsb_http_get(lua_State *L);
int lsb_http_post(lua_State *L);

int lsb_frozen_newindex(lua_State *L) {
    return luaL_error(L, "attempt to modify a read-only table (field '%s')",
                      lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?");
}

int lsb_frozen_len(lua_State *L) {
    if (!lsb_frozen_target(L, 1)) return 0;
    lua_len(L, -1);   /* a lazy array's __len forces it */
    return 1;
}

/* pairs(proxy): the sandbox's next, which iterates the table the proxy shows (lsb_next), with the
 * proxy as its state, so the script never holds the writable table. */
int lsb_frozen_pairs(lua_State *L) {
    lua_pushcfunction(L, lsb_next);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

void lsb_push_frozen(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_newtable(L);                       /* proxy */
    lua_createtable(L, 0, 5);              /* its metatable */
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, lsb_frozen_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushcfunction(L, lsb_frozen_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, lsb_frozen_pairs);
    lua_setfield(L, -2, "__pairs");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lsb_frozen_enter(L, idx);
}

void lsb_frozen_enter(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_FROZEN);
    lua_pushvalue(L, -2);
    lua_pushvalue(L, idx);
    lua_rawset(L, -3);   /* FROZEN[proxy] = the table it shows */
    lua_pop(L, 1);
}

int lsb_frozen_target(lua_State *L, int idx) {
    if (lua_type(L, idx) != LUA_TTABLE || !lua_getmetatable(L, idx)) return 0;   /* a proxy has one */
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_FROZEN);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, -2) == LUA_TTABLE) {
        lua_replace(L, -3);
        lua_pop(L, 1);
        return 1;
    }
    lua_pop(L, 3);
    return 0;
}

/* Copies the listed fields of the table at src into the table at dst. */
static void copy_fields(lua_State *L, int src, int dst, const char *const *names) {
    for (; *names; names++) {
        lua_getfield(L, src, *names);
        lua_setfield(L, dst, *names);
    }
}

/* Copies every field of src into dst except the listed ones. */
static void copy_all_except(lua_State *L, int src, int dst, const char *const *skip) {
    lua_pushnil(L);
    while (lua_next(L, src)) {
        int drop = 0;
        if (lua_type(L, -2) == LUA_TSTRING)
            for (const char *const *s = skip; *s; s++)
                if (strcmp(lua_tostring(L, -2), *s) == 0) drop = 1;
        if (drop) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, dst);
    }
}

/* A library function whose answer can differ between runs (upvalue 1): marks the state impure
 * (lsb_reuse.c) and calls it. */
int lsb_impure_call(lua_State *L) {
    lsb_mark_impure(L);
    return lsb_call_upvalue(L);
}

/* Wraps the listed functions of the table at t with lsb_impure_call. */
static void mark_impure(lua_State *L, int t, const char *const *names) {
    for (; *names; names++) {
        lua_getfield(L, t, *names);
        lua_pushcclosure(L, lsb_impure_call, 1);
        lua_setfield(L, t, *names);
    }
}

static void new_weak_table(lua_State *L, const char *key, const char *mode) {
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

/* Opens a standard library into the real globals and returns its table at the top. */
static int open_lib(lua_State *L, const char *name, lua_CFunction f) {
    luaL_requiref(L, name, f, 0);
    return lua_gettop(L);
}

int lsb_build_env(lua_State *L) {
    lsb_lazy_init(L);
    new_weak_table(L, &LSB_KEY_LAZYMAP, "k");
    new_weak_table(L, &LSB_KEY_FROZEN, "k");
    lsb_view_init(L);
    new_weak_table(L, &LSB_KEY_SNAPSHOTS, "k");
    new_weak_table(L, &LSB_KEY_ARRAYS, "k");
    new_weak_table(L, &LSB_KEY_CONTEXT, "k");
    new_weak_table(L, &LSB_KEY_ORIGIN, "k");
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &LSB_KEY_LIBS);

    int g = open_lib(L, "_G", luaopen_base);
    int str = open_lib(L, LUA_STRLIBNAME, luaopen_string);
    int tab = open_lib(L, LUA_TABLIBNAME, luaopen_table);
    int mth = open_lib(L, LUA_MATHLIBNAME, luaopen_math);
    int utf = open_lib(L, LUA_UTF8LIBNAME, luaopen_utf8);
    int co = open_lib(L, LUA_COLIBNAME, luaopen_coroutine);
    int os = open_lib(L, LUA_OSLIBNAME, luaopen_os);

    lua_newtable(L);
    int base = lua_gettop(L);

    /* base: plain functions that cannot escape or spin outside the hook */
    static const char *const base_plain[] = {"assert", "error", "ipairs", "pairs",
                                             "rawequal", "select", "tonumber",
                                             "type", "_VERSION", NULL};
    copy_fields(L, g, base, base_plain);

    /* base: wrapped */
    static const luaL_Reg base_wrapped[] = {
        {"setmetatable", lsb_setmetatable}, /* private snapshot, no __gc/__close */
        {"rawset", lsb_rawset},             /* refuses read-only proxies */
        {"rawget", lsb_rawget},             /* these four see a lazy event as its decoding */
        {"rawlen", lsb_rawlen},
        {"next", lsb_next},
        {"getmetatable", lsb_getmetatable},
        {"tostring", lsb_tostring},         /* no addresses */
        {"collectgarbage", lsb_collectgarbage},
        {"pcall", lsb_pcall},               /* limit errors cannot be caught */
        {"xpcall", lsb_xpcall},             /* handler never runs for limit errors */
        {"load", lsb_load_text},            /* text only, per-call env by default */
        {"print", lsb_log},                 /* captured into the event's logs */
        {"log", lsb_log},
        {"require", lsb_require},           /* libraries/NAME.lua only */
        {"metadata", lsb_metadata},
        {"enrich", lsb_enrich},             /* host lookup; suspends the call */
        {"secret", lsb_secret},             /* granted secrets only */
        {NULL, NULL}};
    for (const luaL_Reg *r = base_wrapped; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, base, r->name);
    }

    /* string: all but dump; C-cost guards replace rep/format and the pattern functions */
    lua_newtable(L);
    int sstr = lua_gettop(L);
    static const char *const string_skip[] = {"dump", NULL};
    copy_all_except(L, str, sstr, string_skip);
    lua_newtable(L);
    int stab = lua_gettop(L);
    static const char *const table_names[] = {"concat", "insert", "move", "pack", "remove", "sort", "unpack", NULL};
    copy_fields(L, tab, stab, table_names);
    lsb_register_guards(L, sstr, stab);

    lsb_push_frozen(L, sstr);
    lua_pushvalue(L, -1);
    lua_setfield(L, base, "string");
    /* the one string metatable: methods from the guarded copy, and hidden */
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushvalue(L, -3);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 3);

    lsb_push_frozen(L, stab);
    lua_setfield(L, base, "table");

    /* math: all but randomseed (a seed would persist across events) */
    lua_newtable(L);
    static const char *const math_skip[] = {"randomseed", NULL};
    copy_all_except(L, mth, lua_gettop(L), math_skip);
    mark_impure(L, lua_gettop(L), (const char *const[]){"random", NULL});
    lsb_push_frozen(L, -1);
    lua_setfield(L, base, "math");
    lua_pop(L, 1);

    lsb_push_frozen(L, utf);
    lua_setfield(L, base, "utf8");

    /* coroutine: resume/close/wrap re-raise limit errors */
    lua_newtable(L);
    int sco = lua_gettop(L);
    copy_all_except(L, co, sco, (const char *const[]){NULL});
    lua_getfield(L, co, "resume");
    lua_pushcclosure(L, lsb_co_resume, 1);
    lua_setfield(L, sco, "resume");
    lua_getfield(L, co, "close");
    lua_pushcclosure(L, lsb_co_close, 1);
    lua_setfield(L, sco, "close");
    lua_getfield(L, co, "wrap");
    lua_pushcclosure(L, lsb_co_wrap, 1);
    lua_setfield(L, sco, "wrap");
    lsb_push_frozen(L, sco);
    lua_setfield(L, base, "coroutine");
    lua_pop(L, 1);

    /* os: clocks and dates only (no exit, execute, getenv, files, setlocale) */
    lua_newtable(L);
    static const char *const os_names[] = {"time", "clock", "date", "difftime", NULL};
    copy_fields(L, os, lua_gettop(L), os_names);
    mark_impure(L, lua_gettop(L), (const char *const[]){"time", "clock", "date", NULL});
    lsb_push_frozen(L, -1);
    lua_setfield(L, base, "os");
    lua_pop(L, 1);

    lsb_open_json(L);
    lsb_push_frozen(L, -1);
    lua_setfield(L, base, "json");
    lua_pop(L, 1);

    /* http: requests go through the host's network policy */
    lua_createtable(L, 0, 2);
    lua_pushcfunction(L, lsb_http_get);
    lua_setfield(L, -2, "get");
    lua_pushcfunction(L, lsb_http_post);
    lua_setfield(L, -2, "post");
    lsb_push_frozen(L, -1);
    lua_setfield(L, base, "http");
    lua_pop(L, 1);

    lua_pushvalue(L, base);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &LSB_KEY_BASE);
    lua_getfield(L, base, "metadata");   /* the base is read-only: every call's second argument */
    lsb_get(L)->metadata_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_createtable(L, 0, 2);
    lua_pushvalue(L, base);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ENVMETA);

    /* Empty the real global table. */
    lua_pushglobaltable(L);
    lsb_table_clear(L, lua_gettop(L));
    lua_settop(L, 0);
    return 0;
}
