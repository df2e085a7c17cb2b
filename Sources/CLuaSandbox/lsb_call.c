/*
 * Protected entry points: load a main chunk, run an entry point with JSON inputs, and turn
 * what happened into an lsb_report. Host work runs in C bodies under lua_pcall; the entry
 * point itself runs in a coroutine, so a script can suspend on a host request (enrich) and
 * be continued later with the reply while other invocations of the same state run. Errors
 * are described (message plus user-frame traceback) in host memory.
 */
#include "lsb_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lsb_is_limit_sentinel(lua_State *L, int idx);
extern const char LSB_HOST_REQUEST;

/* A suspended entry-point call: its coroutine, and the per-call state that is swapped into
 * lsb_state while it runs. */
struct lsb_invocation {
    int thread_ref;
    int env_ref, loaded_ref, ctx_ref, host_calls, enrich_failed;
    uint64_t deadline_ns;
    char **logs;
    size_t log_count, log_cap, log_bytes, logs_dropped;
    int batched;
    size_t count;
    char **message_ids;    /* per input, for attributing outputs */
    size_t output_total;   /* bytes of all encoded outputs of this call */
};

#define MAX_TRACE_FRAMES 12

typedef struct {
    lsb_state *S;
    /* load */
    const char *src;
    size_t len;
    const char *chunkname;
    const char *const *entries;
    int entry_count;
    /* call */
    const char *entry;
    const lsb_input *inputs;
    size_t count;
    int batched;
    lsb_invocation *inv;
    const char *reply;     /* continue: reply JSON, or NULL with reply_error */
    size_t reply_len;
    const char *reply_error;
    int nargs;             /* values pushed onto the coroutine for the next resume */
    /* outcome */
    lsb_report *out;
    lsb_status kind;       /* set by the body for non-runtime failures */
    char detail[700];
} job;

/* ---- message handler: message + user-frame traceback, no Lua allocation ---- */

static void set_errmsg(lsb_state *S, const char *m, size_t n) {
    free(S->errmsg);
    S->errmsg = lsb_strndup(m, n > 4000 ? 4000 : n);
}

/* Records the error at the top of thread T's stack: message (with the innermost user
 * file:line) and a traceback of user frames from `level` up. Allocates nothing in Lua. */
static void describe_error(lua_State *T, int level, int with_message) {
    lsb_state *S = lsb_get(T);
    lua_Debug ar;
    char keep[LUA_IDSIZE];
    const char *top_src = NULL;
    int top_line = -1;
    S->tb.len = 0;
    if (S->tb.data) S->tb.data[0] = 0;
    int frames = 0;
    for (; frames < MAX_TRACE_FRAMES && lua_getstack(T, level, &ar); level++) {
        if (!lua_getinfo(T, "Sln", &ar)) continue;
        if (strcmp(ar.what, "C") == 0 || ar.currentline < 0) continue;
        char line[400];
        int n;
        if (ar.name)
            n = snprintf(line, sizeof line, "%s%s:%d: in function '%s'", frames ? "\n" : "", ar.short_src, ar.currentline, ar.name);
        else if (strcmp(ar.what, "main") == 0)
            n = snprintf(line, sizeof line, "%s%s:%d: in main chunk", frames ? "\n" : "", ar.short_src, ar.currentline);
        else
            n = snprintf(line, sizeof line, "%s%s:%d: in function <%s:%d>", frames ? "\n" : "", ar.short_src, ar.currentline,
                         ar.short_src, ar.linedefined);
        if (n > 0) lsb_buf_put(&S->tb, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        if (!top_src) {
            top_line = ar.currentline;
            snprintf(keep, sizeof keep, "%s", ar.short_src);
            top_src = keep;
        }
        frames++;
    }
    if (!with_message || S->timed_out || S->mem_exceeded || lsb_is_limit_sentinel(T, -1)) return;
    char buf[4200];
    size_t mlen = 0;
    const char *m;
    if (lua_type(T, -1) == LUA_TSTRING) {
        m = lua_tolstring(T, -1, &mlen);
    } else if (lua_type(T, -1) == LUA_TNIL) {
        m = "error(nil) was raised";
        mlen = strlen(m);
    } else {
        snprintf(buf, sizeof buf, "error object is a %s value", lua_typename(T, lua_type(T, -1)));
        m = buf;
        mlen = strlen(buf);
    }
    if (top_src && strncmp(m, top_src, strlen(top_src)) != 0) {
        char tmp[4200];
        int n = snprintf(tmp, sizeof tmp, "%s:%d: %.*s", top_src, top_line, (int)(mlen > 4000 ? 4000 : mlen), m);
        set_errmsg(S, tmp, n > 0 ? (size_t)n : 0);
    } else {
        set_errmsg(S, m, mlen);
    }
}

static int msgh(lua_State *L) {
    describe_error(L, 1, 1);
    return 1;
}

/* ---- shared pieces ---- */

static void begin(lsb_state *S, lsb_report *out) {
    memset(out, 0, sizeof *out);
    S->timed_out = S->mem_exceeded = 0;
    S->loading_depth = 0;
    S->host_calls = 0;
    S->enrich_failed = 0;
    lsb_logs_reset(S);
    free(S->errmsg);
    S->errmsg = NULL;
    S->tb.len = 0;
    S->peak = S->used;
    S->deadline_ns = S->cfg.time_limit_ns ? lsb_now_ns() + S->cfg.time_limit_ns : 0;
    lua_settop(S->L, 0);
    lsb_install_hook(S->L);
}

void lsb_run_chunk_fresh(lua_State *L, lsb_state *S) {
    lsb_push_fresh_env(L);
    int env = lua_gettop(L);
    luaL_unref(L, LUA_REGISTRYINDEX, S->env_ref);
    lua_pushvalue(L, env);
    S->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_unref(L, LUA_REGISTRYINDEX, S->loaded_ref);
    lua_newtable(L);
    S->loaded_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->chunk_ref);
    lua_pushvalue(L, env);
    lua_call(L, 1, 0);
    lua_settop(L, env - 1);
}

static void finish(job *j, int status) {
    lsb_state *S = j->S;
    lsb_report *out = j->out;
    lua_State *L = S->L;
    if (status == LUA_OK && S->deadline_ns && lsb_now_ns() > S->deadline_ns) S->timed_out = 1;   /* finished too late */
    S->deadline_ns = 0;
    if (S->timed_out) {
        S->poisoned = 1;
        out->status = LSB_ERR_TIMEOUT;
        char m[120];
        snprintf(m, sizeof m, "time limit of %llu ms exceeded", (unsigned long long)(S->cfg.time_limit_ns / 1000000));
        out->message = lsb_strndup(m, strlen(m));
    } else if (S->mem_exceeded || status == LUA_ERRMEM) {
        S->poisoned = 1;
        out->status = LSB_ERR_MEMORY;
        char m[120];
        snprintf(m, sizeof m, "memory limit of %zu bytes exceeded", S->cfg.memory_limit);
        out->message = lsb_strndup(m, strlen(m));
    } else if (j->kind != LSB_OK) {
        out->status = j->kind;
        out->message = lsb_strndup(j->detail, strlen(j->detail));
    } else if (status != LUA_OK) {
        out->status = S->enrich_failed ? LSB_ERR_ENRICHMENT : LSB_ERR_RUNTIME;
        const char *m = S->errmsg ? S->errmsg : "unknown error";
        out->message = lsb_strndup(m, strlen(m));
    }
    if (out->status != LSB_OK && out->status != LSB_ERR_OUTPUT && S->tb.len)
        out->traceback = lsb_strndup(S->tb.data, S->tb.len);
    if (out->status != LSB_OK) {
        for (size_t i = 0; i < out->output_count; i++) {
            free(out->outputs[i].json);
            free(out->outputs[i].error);
        }
        free(out->outputs);
        out->outputs = NULL;
        out->output_count = 0;
        if (out->status != LSB_ERR_OUTPUT) out->shape = LSB_SHAPE_NONE;
    }
    out->logs = S->logs;
    out->log_count = S->log_count;
    out->logs_dropped = S->logs_dropped;
    S->logs = NULL;
    S->log_count = S->log_cap = 0;
    out->peak_memory = S->peak;
    lsb_invocation *inv = j->inv;
    if (inv) {
        if (inv->message_ids) {
            for (size_t i = 0; i < inv->count; i++) free(inv->message_ids[i]);
            free(inv->message_ids);
        }
        if (!S->poisoned) luaL_unref(L, LUA_REGISTRYINDEX, inv->thread_ref);
        free(inv);
        j->inv = NULL;
    }
    /* drop per-call references so the call's garbage can go */
    if (!S->poisoned) {
        luaL_unref(L, LUA_REGISTRYINDEX, S->env_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, S->loaded_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, S->ctx_ref);
        if (S->cfg.memory_limit && S->used > S->cfg.memory_limit / 2) lua_gc(L, LUA_GCCOLLECT);
    }
    S->env_ref = S->loaded_ref = S->ctx_ref = LUA_NOREF;
    lua_settop(L, 0);
}

/* Runs body(j) under lua_pcall with the message handler; returns the status. */
static int protect(lsb_state *S, lua_CFunction body, job *j) {
    lua_State *L = S->L;
    lua_settop(L, 0);
    lua_pushcfunction(L, msgh);
    lua_pushcfunction(L, body);
    lua_pushlightuserdata(L, j);
    int status = lua_pcall(L, 1, 0, 1);
    lua_settop(L, 0);
    return status;
}

static int refuse_poisoned(lsb_state *S, job *j) {
    if (!S->poisoned) return 0;
    j->out->status = LSB_ERR_INTERNAL;
    j->out->message = lsb_strndup("state was discarded after a limit error", 39);
    return 1;
}

static void run(lsb_state *S, lua_CFunction body, job *j) {
    if (refuse_poisoned(S, j)) return;
    finish(j, protect(S, body, j));
}

/* ---- load ---- */

static int load_body(lua_State *L) {
    job *j = lua_touserdata(L, 1);
    lsb_state *S = j->S;
    int st = lsb_compile(L, j->src, j->len, j->chunkname);
    if (st != LUA_OK) {
        lsb_note_status(L, st);
        if (st == LUA_ERRSYNTAX) {
            j->kind = LSB_ERR_SYNTAX;
            snprintf(j->detail, sizeof j->detail, "%s", lua_tostring(L, -1));
        }
        return lua_error(L);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, S->chunk_ref);
    S->chunk_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lsb_run_chunk_fresh(L, S);
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->env_ref);
    for (int i = 0; i < j->entry_count; i++) {
        lua_getfield(L, -1, j->entries[i]);   /* env has no __index on user globals beyond BASE */
        if (lua_type(L, -1) == LUA_TFUNCTION) j->out->entry_mask |= 1u << i;
        lua_pop(L, 1);
    }
    return 0;
}

void lsb_load(lsb_state *S, const char *src, size_t len, const char *chunkname,
              const char *const *entries, int entry_count, lsb_report *out) {
    job j = {0};
    j.S = S;
    j.src = src;
    j.len = len;
    j.chunkname = chunkname;
    j.entries = entries;
    j.entry_count = entry_count;
    j.out = out;
    begin(S, out);
    run(S, load_body, &j);
}

/* ---- call ---- */

/* Replaces every nested table of a freshly decoded value with a read-only proxy. */
static void freeze_children(lua_State *L, int t) {
    luaL_checkstack(L, 6, "metadata nested too deeply");
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -1) == LUA_TTABLE) {
            int child = lua_gettop(L);
            freeze_children(L, child);
            lsb_push_frozen(L, child);
            lua_pushvalue(L, -3);      /* key */
            lua_insert(L, -2);
            lua_rawset(L, t);          /* t[key] = proxy (an existing field: safe during lua_next) */
        }
        lua_pop(L, 1);
    }
}

static void push_input(lua_State *L, job *j, size_t i, int ctxmap, int originmap) {
    const lsb_input *in = &j->inputs[i];
    if (lsb_json_decode_push(L, in->json, in->json_len, j->detail, sizeof j->detail)) {
        j->kind = LSB_ERR_INPUT;
        luaL_error(L, "invalid input");
    }
    int v = lua_gettop(L);
    if (lua_type(L, v) == LUA_TTABLE) {
        lua_getfield(L, v, "messageId");
        if (lua_type(L, -1) == LUA_TSTRING) {
            size_t n;
            const char *s = lua_tolstring(L, -1, &n);
            j->inv->message_ids[i] = lsb_strndup(s, n);
        }
        lua_pop(L, 1);
        lua_pushvalue(L, v);
        lua_pushinteger(L, (lua_Integer)i);
        lua_rawset(L, originmap);
    }
    if (in->context) {
        if (lsb_json_decode_push(L, in->context, in->context_len, j->detail, sizeof j->detail)) {
            j->kind = LSB_ERR_INPUT;
            luaL_error(L, "invalid context");
        }
        if (lua_type(L, -1) == LUA_TTABLE) {
            freeze_children(L, lua_gettop(L));
            lsb_push_frozen(L, -1);
        } else lua_pushnil(L);
        lua_remove(L, -2);
        if (!j->batched) {
            lua_pushvalue(L, -1);
            luaL_unref(L, LUA_REGISTRYINDEX, j->S->ctx_ref);
            j->S->ctx_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
        if (lua_type(L, v) == LUA_TTABLE) {
            lua_pushvalue(L, v);
            lua_insert(L, -2);
            lua_rawset(L, ctxmap);
        } else lua_pop(L, 1);
    }
}

static long origin_of(lua_State *L, job *j, int idx, int originmap) {
    lua_pushvalue(L, idx);
    if (lua_rawget(L, originmap) == LUA_TNUMBER) {
        long o = (long)lua_tointeger(L, -1);
        lua_pop(L, 1);
        return o;
    }
    lua_pop(L, 1);
    lua_pushliteral(L, "messageId");
    if (lua_rawget(L, idx) == LUA_TSTRING) {
        const char *m = lua_tostring(L, -1);
        for (size_t i = 0; i < j->inv->count; i++)
            if (j->inv->message_ids[i] && strcmp(j->inv->message_ids[i], m) == 0) {
                lua_pop(L, 1);
                return (long)i;
            }
    }
    lua_pop(L, 1);
    return -1;
}

static void add_output(job *j, lsb_output o) {
    lsb_report *out = j->out;
    lsb_output *a = realloc(out->outputs, (out->output_count + 1) * sizeof *a);
    if (!a) {
        free(o.json);
        free(o.error);
        return;
    }
    out->outputs = a;
    out->outputs[out->output_count++] = o;
}

static void encode_output(lua_State *L, job *j, int idx, int originmap, int as_slot) {
    lsb_state *S = j->S;
    lsb_output o = {0};
    o.origin = lua_type(L, idx) == LUA_TTABLE ? origin_of(L, j, idx, originmap) : -1;
    char err[700];
    S->enc.len = 0;
    if (lsb_json_encode(L, idx, &S->enc, S->cfg.max_output_bytes, err, sizeof err)) {
        if (!as_slot) {
            j->kind = LSB_ERR_OUTPUT;
            snprintf(j->detail, sizeof j->detail, "returned value cannot be JSON: %s", err);
            luaL_error(L, "invalid output");
        }
        o.error = lsb_strndup(err, strlen(err));
    } else {
        j->inv->output_total += S->enc.len;
        if (S->cfg.max_output_bytes && j->inv->output_total > S->cfg.max_output_bytes) {
            j->kind = LSB_ERR_OUTPUT;
            snprintf(j->detail, sizeof j->detail, "returned events are larger than %zu bytes in total", S->cfg.max_output_bytes);
            luaL_error(L, "invalid output");
        }
        o.json = lsb_strndup(S->enc.data ? S->enc.data : "", S->enc.len);
        o.json_len = S->enc.len;
    }
    add_output(j, o);
    lsb_check_deadline(L);
}

/* A table whose keys are exactly 1..n with n > 0. */
static int is_sequence(lua_State *L, int idx) {
    lua_Unsigned n = lua_rawlen(L, idx);
    if (n == 0) return 0;
    lua_Unsigned count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1)) { lua_pop(L, 1); return 0; }
        lua_Integer k = lua_tointeger(L, -1);
        if (k < 1 || (lua_Unsigned)k > n) { lua_pop(L, 1); return 0; }
        count++;
    }
    return count == n;
}

/* Prepares an invocation: fresh env, decoded inputs, and a coroutine holding the entry
 * point and its arguments, ready for the first resume. */
static int start_body(lua_State *L) {
    job *j = lua_touserdata(L, 1);
    lsb_state *S = j->S;
    lsb_run_chunk_fresh(L, S);
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->env_ref);
    if (lua_getfield(L, -1, j->entry) != LUA_TFUNCTION) {
        j->kind = LSB_ERR_INTERNAL;
        snprintf(j->detail, sizeof j->detail, "global function '%s' is not defined", j->entry);
        return luaL_error(L, "missing entry point");
    }
    int fn = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_CONTEXT);
    int ctxmap = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ORIGIN);
    int originmap = lua_gettop(L);
    lua_State *co = lua_newthread(L);   /* inherits the count hook */
    int co_idx = lua_gettop(L);
    lua_pushvalue(L, fn);
    if (j->batched) {
        lua_createtable(L, (int)j->count, 0);
        lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ARRAYS);
        lua_pushvalue(L, -2);
        lua_pushboolean(L, 1);
        lua_rawset(L, -3);
        lua_pop(L, 1);
        for (size_t i = 0; i < j->count; i++) {
            push_input(L, j, i, ctxmap, originmap);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
    } else {
        if (j->count != 1) return luaL_error(L, "exactly one input expected");
        push_input(L, j, 0, ctxmap, originmap);
    }
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_BASE);
    lua_getfield(L, -1, "metadata");
    lua_remove(L, -2);
    if (!lua_checkstack(co, 4)) return luaL_error(L, "cannot start the call");
    lua_xmove(L, co, 3);                 /* entry point, value(s), metadata */
    lua_pushvalue(L, co_idx);
    j->inv->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    j->nargs = 2;
    return 0;
}

/* Classifies the returned value (argument 2) and encodes the outputs. */
static int output_body(lua_State *L) {
    job *j = lua_touserdata(L, 1);
    int r = 2;
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ORIGIN);
    int originmap = lua_gettop(L);
    switch (lua_type(L, r)) {
    case LUA_TNIL: j->out->shape = LSB_SHAPE_NIL; break;
    case LUA_TTABLE:
        if (is_sequence(L, r)) {
            j->out->shape = LSB_SHAPE_SEQUENCE;
            lua_Unsigned n = lua_rawlen(L, r);
            for (lua_Integer i = 1; (lua_Unsigned)i <= n; i++) {
                lua_rawgeti(L, r, i);
                if (lua_type(L, -1) != LUA_TTABLE) {
                    char m[120];
                    snprintf(m, sizeof m, "element %lld of the returned sequence is a %s, expected a table",
                             (long long)i, lua_typename(L, lua_type(L, -1)));
                    lsb_output o = {0};
                    o.origin = -1;
                    o.error = lsb_strndup(m, strlen(m));
                    add_output(j, o);
                } else {
                    encode_output(L, j, lua_gettop(L), originmap, 1);
                }
                lua_pop(L, 1);
            }
        } else {
            j->out->shape = LSB_SHAPE_OBJECT;
            encode_output(L, j, r, originmap, 0);
        }
        break;
    default:
        j->out->shape = LSB_SHAPE_OTHER;
        j->out->message = lsb_strndup(lua_typename(L, lua_type(L, r)), strlen(lua_typename(L, lua_type(L, r))));
        break;
    }
    return 0;
}

/* Pushes the host's reply onto the coroutine: (value) or (nil, message). */
static int reply_body(lua_State *L) {
    job *j = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, j->inv->thread_ref);
    lua_State *co = lua_tothread(L, -1);
    if (j->reply) {
        if (lsb_json_decode_push(L, j->reply, j->reply_len, j->detail, sizeof j->detail)) {
            j->kind = LSB_ERR_INTERNAL;
            return luaL_error(L, "invalid reply");
        }
        j->nargs = 1;
    } else {
        lua_pushnil(L);
        lua_pushstring(L, j->reply_error ? j->reply_error : "lookup failed");
        j->nargs = 2;
    }
    if (!lua_checkstack(co, j->nargs + 1)) return luaL_error(L, "cannot continue the call");
    lua_xmove(L, co, j->nargs);
    return 0;
}

static void swap_out(lsb_state *S, lsb_invocation *inv) {
    inv->env_ref = S->env_ref;
    inv->loaded_ref = S->loaded_ref;
    inv->ctx_ref = S->ctx_ref;
    inv->host_calls = S->host_calls;
    inv->deadline_ns = S->deadline_ns;
    inv->logs = S->logs;
    inv->log_count = S->log_count;
    inv->log_cap = S->log_cap;
    inv->log_bytes = S->log_bytes;
    inv->logs_dropped = S->logs_dropped;
    inv->enrich_failed = S->enrich_failed;
    S->env_ref = S->loaded_ref = S->ctx_ref = LUA_NOREF;
    S->deadline_ns = 0;
    S->logs = NULL;
    S->log_count = S->log_cap = S->log_bytes = S->logs_dropped = 0;
}

static void swap_in(lsb_state *S, lsb_invocation *inv) {
    lsb_logs_reset(S);
    free(S->logs);
    S->env_ref = inv->env_ref;
    S->loaded_ref = inv->loaded_ref;
    S->ctx_ref = inv->ctx_ref;
    S->host_calls = inv->host_calls;
    S->deadline_ns = inv->deadline_ns;
    S->logs = inv->logs;
    S->log_count = inv->log_count;
    S->log_cap = inv->log_cap;
    S->log_bytes = inv->log_bytes;
    S->logs_dropped = inv->logs_dropped;
    S->enrich_failed = inv->enrich_failed;
    inv->logs = NULL;
    inv->log_count = inv->log_cap = inv->log_bytes = inv->logs_dropped = 0;
}

/* Resumes the invocation's coroutine with j->nargs values already pushed onto it. */
static lsb_invocation *step(job *j) {
    lsb_state *S = j->S;
    lua_State *L = S->L;
    lsb_invocation *inv = j->inv;
    lua_settop(L, 0);
    lua_rawgeti(L, LUA_REGISTRYINDEX, inv->thread_ref);
    lua_State *co = lua_tothread(L, -1);
    lua_pop(L, 1);   /* the registry keeps it alive */
    int nres = 0;
    int st = lua_resume(co, L, j->nargs, &nres);
    if (st == LUA_YIELD) {
        if (nres >= 2 && lua_touserdata(co, -nres) == (void *)&LSB_HOST_REQUEST) {
            /* a host request: copy it out and suspend */
            lsb_report *out = j->out;
            out->status = LSB_PENDING;
            out->request_argc = 0;
            for (int i = 1; i < nres && out->request_argc < LSB_MAX_REQUEST_ARGS; i++) {
                size_t n;
                const char *a = lua_tolstring(co, -nres + i, &n);
                out->request_args[out->request_argc] = a ? lsb_strndup(a, n) : lsb_strndup("", 0);
                out->request_lens[out->request_argc++] = a ? n : 0;
            }
            lua_pop(co, nres);
            swap_out(S, inv);
            lua_settop(L, 0);
            return inv;
        }
        /* the entry point itself yielded: not a coroutine the script owns (no Lua allocation
         * here: this runs outside any protected call) */
        lua_pop(co, nres);
        describe_error(co, 0, 0);
        static const char msg[] = "coroutine.yield() was called outside a coroutine (the entry point itself cannot yield)";
        set_errmsg(S, msg, sizeof msg - 1);
        st = LUA_ERRRUN;
    } else if (st == LUA_OK) {
        lua_pushcfunction(L, msgh);
        lua_pushcfunction(L, output_body);
        lua_pushlightuserdata(L, j);
        if (nres > 0) {
            lua_xmove(co, L, 1);             /* the first result only */
            lua_pop(co, nres - 1);
        } else {
            lua_pushnil(L);
        }
        st = lua_pcall(L, 2, 0, 1);
        finish(j, st);
        return NULL;
    } else {
        lsb_note_status(L, st);
        if (st != LUA_ERRMEM) describe_error(co, 0, 1);
    }
    finish(j, st);
    return NULL;
}

lsb_invocation *lsb_begin(lsb_state *S, const char *entry, const lsb_input *inputs, size_t count, int batched,
                          lsb_report *out) {
    job j = {0};
    j.S = S;
    j.entry = entry;
    j.inputs = inputs;
    j.count = count;
    j.batched = batched;
    j.out = out;
    begin(S, out);
    if (refuse_poisoned(S, &j)) return NULL;
    j.inv = calloc(1, sizeof *j.inv);
    if (!j.inv) {
        out->status = LSB_ERR_INTERNAL;
        out->message = lsb_strndup("out of host memory", 18);
        return NULL;
    }
    j.inv->thread_ref = LUA_NOREF;
    j.inv->count = count;
    j.inv->batched = batched;
    j.inv->message_ids = calloc(count ? count : 1, sizeof(char *));
    int st = j.inv->message_ids ? protect(S, start_body, &j) : LUA_ERRMEM;
    if (st != LUA_OK) {
        finish(&j, st);
        return NULL;
    }
    return step(&j);
}

lsb_invocation *lsb_continue(lsb_state *S, lsb_invocation *inv, const char *reply, size_t len, const char *error,
                             lsb_report *out) {
    job j = {0};
    j.S = S;
    j.inv = inv;
    j.count = inv->count;
    j.batched = inv->batched;
    j.out = out;
    memset(out, 0, sizeof *out);
    S->timed_out = S->mem_exceeded = 0;
    S->enrich_failed = 0;
    free(S->errmsg);
    S->errmsg = NULL;
    S->tb.len = 0;
    swap_in(S, inv);
    lsb_install_hook(S->L);
    if (refuse_poisoned(S, &j)) {
        lsb_abandon(S, inv);
        return NULL;
    }
    if (S->deadline_ns && lsb_now_ns() > S->deadline_ns) {
        /* The wait used up the time. No Lua ran, so the state stays healthy: answer timeout
         * and drop the invocation without poisoning the state for its other calls. */
        char m[120];
        snprintf(m, sizeof m, "time limit of %llu ms exceeded while waiting for a lookup",
                 (unsigned long long)(S->cfg.time_limit_ns / 1000000));
        out->status = LSB_ERR_TIMEOUT;
        out->message = lsb_strndup(m, strlen(m));
        out->logs = S->logs;
        out->log_count = S->log_count;
        out->logs_dropped = S->logs_dropped;
        S->logs = NULL;
        S->log_count = S->log_cap = 0;
        inv->env_ref = S->env_ref;
        inv->loaded_ref = S->loaded_ref;
        inv->ctx_ref = S->ctx_ref;
        S->env_ref = S->loaded_ref = S->ctx_ref = LUA_NOREF;
        S->deadline_ns = 0;
        lsb_abandon(S, inv);
        return NULL;
    }
    j.reply = reply;
    j.reply_len = len;
    j.reply_error = error;
    int st = protect(S, reply_body, &j);
    if (st != LUA_OK) {
        finish(&j, st);
        return NULL;
    }
    return step(&j);
}

void lsb_abandon(lsb_state *S, lsb_invocation *inv) {
    if (!inv) return;
    if (!S->poisoned) {
        luaL_unref(S->L, LUA_REGISTRYINDEX, inv->thread_ref);
        luaL_unref(S->L, LUA_REGISTRYINDEX, inv->env_ref);
        luaL_unref(S->L, LUA_REGISTRYINDEX, inv->loaded_ref);
        luaL_unref(S->L, LUA_REGISTRYINDEX, inv->ctx_ref);
    }
    if (inv->logs)
        for (size_t i = 0; i < inv->log_count; i++) free(inv->logs[i]);
    free(inv->logs);
    if (inv->message_ids) {
        for (size_t i = 0; i < inv->count; i++) free(inv->message_ids[i]);
        free(inv->message_ids);
    }
    free(inv);
}

void lsb_call(lsb_state *S, const char *entry, const lsb_input *inputs, size_t count, int batched, lsb_report *out) {
    lsb_invocation *inv = lsb_begin(S, entry, inputs, count, batched, out);
    while (inv) {   /* no host here: every request fails */
        lsb_report_clear(out);
        inv = lsb_continue(S, inv, NULL, 0, "no host services are available here", out);
    }
}

void lsb_report_clear(lsb_report *out) {
    for (int i = 0; i < out->request_argc; i++) free(out->request_args[i]);
    free(out->message);
    free(out->traceback);
    for (size_t i = 0; i < out->output_count; i++) {
        free(out->outputs[i].json);
        free(out->outputs[i].error);
    }
    free(out->outputs);
    for (size_t i = 0; i < out->log_count; i++) free(out->logs[i]);
    free(out->logs);
    memset(out, 0, sizeof *out);
}

static int canonical_body(lua_State *L) {
    job *j = lua_touserdata(L, 1);
    lsb_state *S = j->S;
    if (lsb_json_decode_push(L, j->src, j->len, j->detail, sizeof j->detail)) {
        j->kind = LSB_ERR_INPUT;
        return luaL_error(L, "invalid input");
    }
    S->enc.len = 0;
    if (lsb_json_encode(L, -1, &S->enc, 0, j->detail, sizeof j->detail)) {
        j->kind = LSB_ERR_OUTPUT;
        return luaL_error(L, "invalid output");
    }
    return 0;
}

char *lsb_json_canonical(const char *json, size_t len, size_t *out_len, char **err) {
    lsb_config cfg = {0};
    char e[200];
    *err = NULL;
    lsb_state *S = lsb_new(&cfg, e, sizeof e);
    if (!S) {
        *err = lsb_strndup(e, strlen(e));
        return NULL;
    }
    job j = {0};
    lsb_report r;
    j.S = S;
    j.src = json;
    j.len = len;
    j.out = &r;
    begin(S, &r);
    run(S, canonical_body, &j);
    char *res = NULL;
    if (r.status == LSB_OK) {
        res = lsb_strndup(S->enc.data ? S->enc.data : "", S->enc.len);
        *out_len = S->enc.len;
    } else {
        *err = lsb_strndup(r.message ? r.message : "invalid JSON", strlen(r.message ? r.message : "invalid JSON"));
    }
    lsb_report_clear(&r);
    lsb_free(S);
    return res;
}
