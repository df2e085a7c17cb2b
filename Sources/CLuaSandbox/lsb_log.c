/* log(...) / print(...): lines captured per call, bounded in count and bytes. */
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

static void append_value(lua_State *L, lsb_state *S, int i, lsb_buf *line) {
    char err[200];
    switch (lua_type(L, i)) {
    case LUA_TSTRING:
    case LUA_TNUMBER: {
        size_t n;
        const char *s;
        if (lua_type(L, i) == LUA_TNUMBER) {
            lua_pushvalue(L, i);
            s = lua_tolstring(L, -1, &n);
            lsb_buf_put(line, s, n);
            lua_pop(L, 1);
        } else {
            s = lua_tolstring(L, i, &n);
            lsb_buf_put(line, s, n);
        }
        break;
    }
    case LUA_TNIL: lsb_buf_put(line, "nil", 3); break;
    case LUA_TBOOLEAN: lua_toboolean(L, i) ? lsb_buf_put(line, "true", 4) : lsb_buf_put(line, "false", 5); break;
    case LUA_TTABLE: {
        size_t before = line->len;
        if (lsb_json_encode(L, i, line, S->cfg.max_log_bytes ? S->cfg.max_log_bytes : 65536, err, sizeof err)) {
            line->len = before;
            char msg[260];
            int n = snprintf(msg, sizeof msg, "<table: %s>", err);
            lsb_buf_put(line, msg, (size_t)n);
        }
        break;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, i) == NULL) { lsb_buf_put(line, "null", 4); break; }
        /* fallthrough */
    default: {
        const char *t = lua_typename(L, lua_type(L, i));
        lsb_buf_put(line, t, strlen(t));
    }
    }
}

int lsb_log(lua_State *L) {
    lsb_state *S = lsb_get(L);
    int n = lua_gettop(L);
    size_t max_lines = S->cfg.max_log_lines, max_bytes = S->cfg.max_log_bytes;
    if ((max_lines && S->log_count >= max_lines) || (max_bytes && S->log_bytes >= max_bytes)) {
        S->logs_dropped++;
        return 0;
    }
    lsb_buf line = {0};
    for (int i = 1; i <= n; i++) {
        if (i > 1) lsb_buf_putc(&line, ' ');
        append_value(L, S, i, &line);
    }
    if (!line.data) lsb_buf_put(&line, "", 0);
    if (!line.data) return 0;
    if (max_bytes && S->log_bytes + line.len > max_bytes) {
        /* keep what fits, marked as cut */
        size_t keep = max_bytes - S->log_bytes;
        while (keep > 0 && ((unsigned char)line.data[keep] & 0xC0) == 0x80) keep--;   /* UTF-8 boundary */
        line.len = keep;
        line.data[keep] = 0;
        lsb_buf_put(&line, " [cut]", 6);
        S->log_bytes = max_bytes;
    } else {
        S->log_bytes += line.len;
    }
    if (S->log_count == S->log_cap) {
        size_t cap = S->log_cap ? S->log_cap * 2 : 16;
        char **l = realloc(S->logs, cap * sizeof *l);
        if (!l) { free(line.data); return 0; }
        S->logs = l;
        S->log_cap = cap;
    }
    S->logs[S->log_count++] = line.data;
    return 0;
}
