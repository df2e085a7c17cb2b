/*
 * Time limit for Lua patterns.
 *
 * Pattern matching runs inside one C call, where the count hook never fires, and can
 * backtrack for minutes (attacks t12/t13). Before string.find/match/gmatch/gsub run, this
 * file replays the same search (the Lua 5.4 matching algorithm: items, sets, quantifiers,
 * captures, back-references, %b and %f) without producing results, counting steps and
 * checking the deadline every few thousand steps. A search that would pass the deadline
 * fails with the time-limit error instead of running; one that finishes in time then runs in
 * the real function, which costs about as much again, so an event overshoots its limit by at
 * most about 2x. Malformed patterns stop the replay early and get Lua's own error message
 * from the real function.
 */
#include "lsb_internal.h"
#include <ctype.h>
#include <string.h>

#ifndef LUA_MAXCAPTURES
#define LUA_MAXCAPTURES 32    /* as in lstrlib.c */
#endif
#define CAP_UNFINISHED (-1)
#define CAP_POSITION (-2)
#define MAX_DEPTH 200         /* as MAXCCALLS in lstrlib.c: deeper is "pattern too complex" */
#define CHECK_EVERY 1024

typedef struct {
    const char *src_init, *src_end, *p_end;
    lsb_state *S;
    int level, depth;
    int stop;                 /* 1: deadline passed; 2: malformed pattern (let Lua report it) */
    unsigned long steps, next_check;
    struct {
        const char *init;
        ptrdiff_t len;
    } capture[LUA_MAXCAPTURES];
} replay;

static int step(replay *m) {
    if (m->stop) return 0;
    if (++m->steps >= m->next_check) {
        m->next_check = m->steps + CHECK_EVERY;
        if (m->S->deadline_ns && lsb_now_ns() > m->S->deadline_ns) {
            m->S->timed_out = 1;
            m->stop = 1;
            return 0;
        }
    }
    return 1;
}

static const char *malformed(replay *m) {
    m->stop = 2;
    return NULL;
}

static int class_matches(int c, int cl) {
    int res;
    switch (tolower(cl)) {
    case 'a': res = isalpha(c); break;
    case 'c': res = iscntrl(c); break;
    case 'd': res = isdigit(c); break;
    case 'g': res = isgraph(c); break;
    case 'l': res = islower(c); break;
    case 'p': res = ispunct(c); break;
    case 's': res = isspace(c); break;
    case 'u': res = isupper(c); break;
    case 'w': res = isalnum(c); break;
    case 'x': res = isxdigit(c); break;
    default: return cl == c;
    }
    if (isupper(cl)) res = !res;
    return res;
}

static int bracket_matches(int c, const char *p, const char *ec) {
    int sig = 1;
    if (*(p + 1) == '^') {
        sig = 0;
        p++;
    }
    while (++p < ec) {
        if (*p == '%') {
            p++;
            if (class_matches(c, (unsigned char)*p)) return sig;
        } else if (*(p + 1) == '-' && p + 2 < ec) {
            p += 2;
            if ((unsigned char)*(p - 2) <= c && c <= (unsigned char)*p) return sig;
        } else if ((unsigned char)*p == c) return sig;
    }
    return !sig;
}

static const char *class_end(replay *m, const char *p) {
    if (*p++ == '%') {
        if (p == m->p_end) return malformed(m);
        return p + 1;
    }
    if (*(p - 1) == '[') {
        if (*p == '^') p++;
        do {
            if (p == m->p_end) return malformed(m);
            if (*(p++) == '%' && p < m->p_end) p++;
        } while (*p != ']');
        return p + 1;
    }
    return p;
}

static int single_match(replay *m, const char *s, const char *p, const char *ep) {
    if (s >= m->src_end) return 0;
    int c = (unsigned char)*s;
    switch (*p) {
    case '.': return 1;
    case '%': return class_matches(c, (unsigned char)*(p + 1));
    case '[': return bracket_matches(c, p, ep - 1);
    default: return (unsigned char)*p == c;
    }
}

static const char *do_match(replay *m, const char *s, const char *p);

static const char *max_expand(replay *m, const char *s, const char *p, const char *ep) {
    ptrdiff_t i = 0;
    while (single_match(m, s + i, p, ep)) {
        if (!step(m)) return NULL;
        i++;
    }
    while (i >= 0) {
        const char *res = do_match(m, s + i, ep + 1);
        if (res || m->stop) return res;
        i--;
    }
    return NULL;
}

static const char *min_expand(replay *m, const char *s, const char *p, const char *ep) {
    for (;;) {
        const char *res = do_match(m, s, ep + 1);
        if (res || m->stop) return res;
        if (!single_match(m, s, p, ep)) return NULL;
        if (!step(m)) return NULL;
        s++;
    }
}

static const char *start_capture(replay *m, const char *s, const char *p, int what) {
    if (m->level >= LUA_MAXCAPTURES) return malformed(m);
    m->capture[m->level].init = s;
    m->capture[m->level].len = what;
    m->level++;
    const char *res = do_match(m, s, p);
    if (res == NULL) m->level--;
    return res;
}

static const char *end_capture(replay *m, const char *s, const char *p) {
    int l = -1;
    for (int i = m->level - 1; i >= 0; i--)
        if (m->capture[i].len == CAP_UNFINISHED) {
            l = i;
            break;
        }
    if (l < 0) return malformed(m);
    m->capture[l].len = s - m->capture[l].init;
    const char *res = do_match(m, s, p);
    if (res == NULL) m->capture[l].len = CAP_UNFINISHED;
    return res;
}

static const char *match_balance(replay *m, const char *s, const char *p) {
    if (p >= m->p_end - 1) return malformed(m);
    if (s >= m->src_end || *s != *p) return NULL;
    int b = *p, e = *(p + 1), cont = 1;
    while (++s < m->src_end) {
        if (!step(m)) return NULL;
        if (*s == e) {
            if (--cont == 0) return s + 1;
        } else if (*s == b) cont++;
    }
    return NULL;
}

static const char *match_capture(replay *m, const char *s, int l) {
    l -= '1';
    if (l < 0 || l >= m->level || m->capture[l].len == CAP_UNFINISHED) return malformed(m);
    ptrdiff_t len = m->capture[l].len;
    if (len < 0) return NULL;
    if (m->src_end - s >= len && memcmp(m->capture[l].init, s, (size_t)len) == 0) return s + len;
    return NULL;
}

static const char *do_match(replay *m, const char *s, const char *p) {
    if (m->depth-- == 0) {
        m->depth++;
        return malformed(m);   /* "pattern too complex" from the real function */
    }
    for (;;) {
        if (!step(m)) {
            s = NULL;
            break;
        }
        if (p == m->p_end) break;
        const char *ep;
        switch (*p) {
        case '(':
            s = (*(p + 1) == ')') ? start_capture(m, s, p + 2, CAP_POSITION) : start_capture(m, s, p + 1, CAP_UNFINISHED);
            goto done;
        case ')':
            s = end_capture(m, s, p + 1);
            goto done;
        case '$':
            if (p + 1 != m->p_end) goto dflt;
            s = (s == m->src_end) ? s : NULL;
            goto done;
        case '%':
            switch (*(p + 1)) {
            case 'b':
                s = match_balance(m, s, p + 2);
                if (s != NULL) {
                    p += 4;
                    continue;
                }
                goto done;
            case 'f': {
                p += 2;
                if (*p != '[') {
                    s = malformed(m);
                    goto done;
                }
                ep = class_end(m, p);
                if (!ep) {
                    s = NULL;
                    goto done;
                }
                int prev = (s == m->src_init) ? '\0' : (unsigned char)*(s - 1);
                int cur = (s < m->src_end) ? (unsigned char)*s : '\0';
                if (!bracket_matches(prev, p, ep - 1) && bracket_matches(cur, p, ep - 1)) {
                    p = ep;
                    continue;
                }
                s = NULL;
                goto done;
            }
            case '0': case '1': case '2': case '3': case '4':
            case '5': case '6': case '7': case '8': case '9':
                s = match_capture(m, s, (unsigned char)*(p + 1));
                if (s != NULL) {
                    p += 2;
                    continue;
                }
                goto done;
            default: goto dflt;
            }
        default:
        dflt:
            ep = class_end(m, p);
            if (!ep) {
                s = NULL;
                goto done;
            }
            if (!single_match(m, s, p, ep)) {
                if (*ep == '*' || *ep == '?' || *ep == '-') {
                    p = ep + 1;
                    continue;
                }
                s = NULL;
            } else {
                switch (*ep) {
                case '?': {
                    const char *res = do_match(m, s + 1, ep + 1);
                    if (res != NULL || m->stop) s = res;
                    else {
                        p = ep + 1;
                        continue;
                    }
                    break;
                }
                case '+': s = max_expand(m, s + 1, p, ep); break;
                case '*': s = max_expand(m, s, p, ep); break;
                case '-': s = min_expand(m, s, p, ep); break;
                default:
                    s++;
                    p = ep;
                    continue;
                }
            }
            goto done;
        }
    }
done:
    m->depth++;
    return s;
}

static void reset(replay *m) {
    m->level = 0;
    m->depth = MAX_DEPTH;
}

static size_t start_offset(lua_Integer pos, size_t len) {
    if (pos > 0) return (size_t)pos;
    if (pos == 0) return 1;
    if (pos < -(lua_Integer)len) return 1;
    return len + (size_t)pos + 1;
}

static int has_specials(const char *p, size_t l) {
    for (size_t i = 0; i < l; i++)
        if (p[i] && strchr("^$*+?.([%-", p[i])) return 1;
    return 0;
}

/* Replays the search that string.find (find=1) or string.match (find=0) is about to do. */
static void replay_find(lua_State *L, int find) {
    size_t ls, lp;
    if (lua_type(L, 1) != LUA_TSTRING || lua_type(L, 2) != LUA_TSTRING) return;   /* let Lua raise */
    const char *s = lua_tolstring(L, 1, &ls);
    const char *p = lua_tolstring(L, 2, &lp);
    size_t init = start_offset(luaL_optinteger(L, 3, 1), ls);
    if (init > ls + 1) return;
    replay m = {s, s + ls, p + lp, lsb_get(L), 0, MAX_DEPTH, 0, 0, 0, {{0, 0}}};
    if (find && (lua_toboolean(L, 4) || !has_specials(p, lp))) {
        /* plain search: what memchr + memcmp cost, candidate by candidate */
        if (lp == 0 || lp > ls - init + 1) return;
        const char *s1 = s + init - 1, *end = s + ls - lp + 1;
        while (s1 < end) {
            const char *hit = memchr(s1, *p, (size_t)(end - s1));
            if (!hit) break;
            m.steps += lp / 8;
            if (!step(&m)) break;
            if (memcmp(hit + 1, p + 1, lp - 1) == 0) break;
            s1 = hit + 1;
        }
    } else {
        int anchor = (*p == '^');
        if (anchor) {
            p++;
            lp--;
        }
        const char *s1 = s + init - 1;
        do {
            reset(&m);
            if (do_match(&m, s1, p) || m.stop) break;
        } while (s1++ < m.src_end && !anchor);
    }
    lsb_reraise_limits(L);
}

int lsb_replay_find(lua_State *L) {
    replay_find(L, 1);
    return 0;
}

int lsb_replay_match(lua_State *L) {
    replay_find(L, 0);
    return 0;
}

/* string.gsub: every match the substitution loop will try (replacements are not replayed;
 * function replacements are Lua code and run under the hook). */
int lsb_replay_gsub(lua_State *L) {
    size_t ls, lp;
    if (lua_type(L, 1) != LUA_TSTRING || lua_type(L, 2) != LUA_TSTRING) return 0;
    const char *src = lua_tolstring(L, 1, &ls);
    const char *p = lua_tolstring(L, 2, &lp);
    lua_Integer max_s = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    int anchor = (*p == '^');
    if (anchor) {
        p++;
        lp--;
    }
    replay m = {src, src + ls, p + lp, lsb_get(L), 0, MAX_DEPTH, 0, 0, 0, {{0, 0}}};
    const char *lastmatch = NULL, *e;
    lua_Integer n = 0;
    while (n < max_s) {
        reset(&m);
        e = do_match(&m, src, p);
        if (m.stop) break;
        if (e != NULL && e != lastmatch) {
            n++;
            src = lastmatch = e;
        } else if (src < m.src_end) {
            src++;
        } else break;
        if (anchor) break;
    }
    lsb_reraise_limits(L);
    return 0;
}

/* string.gmatch: one iteration, from offset `*pos`, with the last match end at `*last`
 * (-1 for none). Advances them as the real iterator will. */
void lsb_replay_gmatch_step(lua_State *L, const char *s, size_t ls, const char *p, size_t lp, size_t *pos, long *last) {
    replay m = {s, s + ls, p + lp, lsb_get(L), 0, MAX_DEPTH, 0, 0, 0, {{0, 0}}};
    for (const char *src = s + *pos; src <= m.src_end; src++) {
        reset(&m);
        const char *e = do_match(&m, src, p);
        if (m.stop) break;
        if (e != NULL && (*last < 0 || e != s + *last)) {
            *pos = (size_t)(e - s);
            *last = (long)(e - s);
            lsb_reraise_limits(L);
            return;
        }
    }
    *pos = ls + 1;
    lsb_reraise_limits(L);
}
