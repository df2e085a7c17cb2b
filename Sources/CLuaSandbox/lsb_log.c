/* log(...) / print(...): lines captured per call, bounded in count and bytes. Lines are built
 * in host memory without Lua allocation, and never past the remaining byte budget. */
#include "lsb_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lsb_logs_reset(lsb_state *S) {
    for (size_t i = 0; i < S->log_count; i++) free(S->logs[i]);
    S->log_count = 0;
    S->log_bytes = 0;
    S->logs_dropped = 0;
}

/* Appends at most `room - line->len` bytes of s; returns 0 when the line is full. */
static int put_capped(lsb_buf *line, size_t room, const char *s, size_t n) {
    if (line->len >= room) return 0;
    if (n > room - line->len) n = room - line->len;
    lsb_buf_put(line, s, n);
    return line->len < room;
}

static int append_value(lua_State *L, int i, lsb_buf *line, size_t room) {
    char num[64], err[200];
    switch (lua_type(L, i)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, i, &n);
        return put_capped(line, room, s, n);
    }
    case LUA_TNUMBER: {
        int n = lua_isinteger(L, i) ? snprintf(num, sizeof num, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, i))
                                    : snprintf(num, sizeof num, LUA_NUMBER_FMT, (LUAI_UACNUMBER)lua_tonumber(L, i));
        return put_capped(line, room, num, (size_t)n);
    }
    case LUA_TNIL: return put_capped(line, room, "nil", 3);
    case LUA_TBOOLEAN: return lua_toboolean(L, i) ? put_capped(line, room, "true", 4) : put_capped(line, room, "false", 5);
    case LUA_TTABLE: {
        size_t before = line->len;
        if (line->len >= room) return 0;
        if (lsb_json_encode(L, i, line, room - line->len + before, err, sizeof err)) {
            line->len = before;
            if (strstr(err, "output larger than")) {   /* cut to the budget */
                return put_capped(line, room, "<table too large for the log>", 29);
            }
            char msg[260];
            int n = snprintf(msg, sizeof msg, "<table: %s>", err);
            return put_capped(line, room, msg, (size_t)n);
        }
        return line->len < room;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, i) == NULL) return put_capped(line, room, "null", 4);
        /* fallthrough */
    default: {
        const char *t = lua_typename(L, lua_type(L, i));
        return put_capped(line, room, t, strlen(t));
    }
    }
}

int lsb_log(lua_State *L) {
    lsb_state *S = lsb_get(L);
    S->impure++;   /* a top level that logs must log for every event */
    lsb_check_deadline(L);
    int n = lua_gettop(L);
    size_t max_lines = S->cfg.max_log_lines, max_bytes = S->cfg.max_log_bytes;
    if ((max_lines && S->log_count >= max_lines) || (max_bytes && S->log_bytes >= max_bytes)) {
        S->logs_dropped++;
        return 0;
    }
    size_t room = max_bytes ? max_bytes - S->log_bytes : (size_t)1 << 20;
    lsb_buf line = {0};
    lsb_buf_put(&line, "", 0);
    int open = 1;
    for (int i = 1; i <= n && open; i++) {
        if (i > 1) open = put_capped(&line, room, " ", 1);
        if (open) open = append_value(L, i, &line, room);
    }
    if (!line.data) return 0;
    int cut = !open && line.len >= room;
    if (cut) {
        size_t keep = line.len;
        while (keep > 0 && ((unsigned char)line.data[keep] & 0xC0) == 0x80) keep--;   /* UTF-8 boundary */
        line.len = keep;
        line.data[keep] = 0;
    }
    S->log_bytes += line.len;
    if (cut) {
        lsb_buf_put(&line, " [cut]", 6);
        S->log_bytes = max_bytes ? max_bytes : S->log_bytes;
    }
    if (S->log_count == S->log_cap) {
        size_t cap = S->log_cap ? S->log_cap * 2 : 16;
        char **l = realloc(S->logs, cap * sizeof *l);
        if (!l) {
            free(line.data);
            return 0;
        }
        S->logs = l;
        S->log_cap = cap;
    }
    S->logs[S->log_count++] = line.data;
    return 0;
}
