#ifndef CLUA_SHIM_H
#define CLUA_SHIM_H
/* Debian's Lua 5.4 headers. C targets include this to reach the Lua API. */
#include <lua.h>
#include <lualib.h>
#include <lauxlib.h>
#endif
