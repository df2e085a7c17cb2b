/*
 * Protected work on a state and its reports: the message handler and error descriptions (in
 * host memory), per-call setup and teardown, running C bodies under lua_pcall, loading the
 * main chunk, and JSON canonicalisation. Entry-point calls are in lsb_invoke.c.
 */
#include "lsb_job.h"
#include "lsb_lazy.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lsb_is_limit_sentinel(lua_State *L, int idx);

/* ---- message handler: message + user-frame traceback, no Lua allocation ---- */

void lsb_set_errmsg(lsb_state *S, const char *m, size_t n) {
    free(S->errmsg);
    S->errmsg = lsb_strndup(m, n > 4000 ? 4000 : n);
}

/* Records the error at the top of thread T's stack: message (with the innermost user
 * file:line) and a traceback of user frames from `level` up. Allocates nothing in Lua. */
void lsb_describe_error(lua_State *T, int level, int with_message) {
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
        lsb_set_errmsg(S, tmp, n > 0 ? (size_t)n : 0);
    } else {
        lsb_set_errmsg(S, m, mlen);
    }
}

int lsb_msgh(lua_State *L) {
    lsb_describe_error(L, 1, 1);
    return 1;
}

/* ---- shared pieces ---- */

void lsb_begin_call(lsb_state *S, lsb_report *out) {
    memset(out, 0, sizeof *out);
    S->timed_out = S->mem_exceeded = 0;
    S->loading_depth = 0;
    S->host_calls = 0;
    S->enrich_failed = 0;
    S->arena_ok = S->arena_used = 0;
    S->ctx_pending = 0;
    lsb_logs_reset(S);
    free(S->errmsg);
    S->errmsg = NULL;
    S->tb.len = 0;
    S->peak = S->used;
    S->call_started_ns = lsb_now_ns();
    S->deadline_ns = S->cfg.time_limit_ns ? S->call_started_ns + S->cfg.time_limit_ns : 0;
    if (S->escaped) return;   /* never touched again; the call is refused as poisoned */
    lua_settop(S->L, 0);
    lsb_install_hook(S->L);
}

void lsb_ref_clear(lua_State *L, int ref) {
    if (ref < 0) return;
    lua_pushnil(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, ref);
}

void lsb_table_clear(lua_State *L, int t) {
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, t);   /* clearing fields during a traversal is allowed */
    }
}

void lsb_ref_replace(lua_State *L, int *ref) {
    if (*ref >= 0) {   /* the slot is ours: overwrite it (luaL_unref + luaL_ref cost ~10x more) */
        lua_rawseti(L, LUA_REGISTRYINDEX, *ref);
    } else {
        *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
}

void lsb_run_chunk_fresh(lua_State *L, lsb_state *S) {
    S->top_level_runs++;
    lsb_push_fresh_env(L, S->env_slots);
    int env = lua_gettop(L);
    lua_pushvalue(L, env);
    lsb_ref_replace(L, &S->env_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, S->loaded_ref);
    S->loaded_ref = LUA_NOREF;   /* made by the first require */
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->chunk_ref);
    lua_pushvalue(L, env);
    S->fresh_running = 1;   /* an error leaves it set: lsb_env_enter and lsb_env_leave clear it */
    S->fresh_vector_bytes = 0;
    lua_call(L, 1, 0);
    S->fresh_running = 0;
    lsb_tarena_end(S->tarena);
    lua_settop(L, env - 1);
}

#define LSB_IDLE_HEAP_BYTES (1u << 20)

void lsb_hand_over_logs(lsb_state *S, lsb_report *out) {
    out->logs = S->logs;
    out->log_count = S->log_count;
    out->logs_dropped = S->logs_dropped;
    S->logs = NULL;
    S->log_count = S->log_cap = 0;
}

/* Drops the outputs gathered so far: the call failed. */
static void drop_outputs(lsb_report *out) {
    for (size_t i = 0; i < out->output_count; i++) {
        free(out->outputs[i].json);
        free(out->outputs[i].error);
    }
    free(out->outputs);
    out->outputs = NULL;
    out->output_count = 0;
}

/* Frees the finished invocation's host memory (its Lua references are the caller's). */
static void free_invocation(job *j) {
    lsb_invocation *inv = j->inv;
    if (!inv) return;
    free(inv->arena.data);   /* its event's tables are garbage now: nothing reads them */
    free(inv->ctx_text.data);
    if (inv->message_ids) {
        for (size_t i = 0; i < inv->count; i++) free(inv->message_ids[i]);
        free(inv->message_ids);
    }
    if (!j->S->spare_inv) j->S->spare_inv = inv;   /* the next call's, without a calloc */
    else free(inv);
    j->inv = NULL;
}

/* The call was left mid-operation by the watchdog: answer timeout using host memory only. */
static void finish_escaped(job *j) {
    lsb_state *S = j->S;
    lsb_report *out = j->out;
    S->deadline_ns = 0;
    S->ctx_pending = 0;
    drop_outputs(out);
    out->shape = LSB_SHAPE_NONE;
    out->status = LSB_ERR_TIMEOUT;
    char m[200];
    snprintf(m, sizeof m, "time limit of %llu ms exceeded (stopped inside one long operation; the state was discarded)",
             (unsigned long long)(S->cfg.time_limit_ns / 1000000));
    out->message = lsb_strndup(m, strlen(m));
    lsb_hand_over_logs(S, out);
    out->peak_memory = S->peak;
    free_invocation(j);
    S->env_ref = S->loaded_ref = S->ctx_ref = LUA_NOREF;
}

/* A coroutine that returned normally is empty and reusable: keep one for the next call. */
static void keep_or_release_thread(lsb_state *S, int ref) {
    lua_State *L = S->L;
    if (ref == LUA_NOREF || ref == LUA_REFNIL) return;
    if (S->spare_ref == LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        lua_State *co = lua_tothread(L, -1);   /* NULL if it is not a thread */
        lua_pop(L, 1);
        lua_Debug ar;
        if (co && lua_status(co) == LUA_OK && lua_gettop(co) == 0 && !lua_getstack(co, 0, &ar)) {
            S->spare_ref = ref;
            return;
        }
    }
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

void lsb_finish(job *j, int status) {
    lsb_state *S = j->S;
    lsb_report *out = j->out;
    lua_State *L = S->L;
    lsb_lazy_call_ended(S, S->escaped);   /* the call's event is unreachable from here on */
    if (S->escaped) {
        finish_escaped(j);
        return;
    }
    S->call_ended_ns = lsb_now_ns();
    S->arena_used = 0;   /* the call is over: the arena is free for the next one */
    S->ctx_pending = 0;
    if (S->ctx_text.cap > (64 << 10)) {   /* a batch's contexts: not kept between calls */
        free(S->ctx_text.data);
        memset(&S->ctx_text, 0, sizeof S->ctx_text);
    }
    if (status == LUA_OK && S->deadline_ns && S->call_ended_ns > S->deadline_ns) S->timed_out = 1;   /* finished too late */
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
        drop_outputs(out);
        if (out->status != LSB_ERR_OUTPUT) out->shape = LSB_SHAPE_NONE;
    }
    lsb_hand_over_logs(S, out);
    out->peak_memory = S->peak;
    if (j->inv && !S->poisoned) keep_or_release_thread(S, j->inv->thread_ref);
    free_invocation(j);
    /* drop per-call references so the call's garbage can go */
    if (!S->poisoned) {
        lsb_env_leave(L, S);   /* kept for the next call if the call left it unchanged */
        /* the environment's and context's slots stay the state's, emptied, for the next call */
        lsb_ref_clear(L, S->env_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, S->loaded_ref);
        lsb_ref_clear(L, S->ctx_ref);
        /* An idle state keeps little garbage: collect when the heap is past twice what it
         * settled at (and at least LSB_IDLE_HEAP_BYTES), so a call's big temporaries do not
         * stay resident in every warm state. */
        size_t settled = S->settled > LSB_IDLE_HEAP_BYTES / 2 ? S->settled : LSB_IDLE_HEAP_BYTES / 2;
        if (S->used > 2 * settled) {
            lua_gc(L, LUA_GCCOLLECT);
            S->settled = S->used;
        }
    }
    S->loaded_ref = LUA_NOREF;
    if (S->poisoned) S->env_ref = S->ctx_ref = LUA_NOREF;
    lua_settop(L, 0);
}

/* Runs body(j) under lua_pcall with the message handler; returns the status. */
int lsb_protect(lsb_state *S, lua_CFunction body, job *j) {
    lua_State *L = S->L;
    lua_settop(L, 0);
    lua_pushcfunction(L, lsb_msgh);
    lua_pushcfunction(L, body);
    lua_pushlightuserdata(L, j);
    sigjmp_buf jb;
    lsb_watch prev = lsb_watch_enter(L, S->deadline_ns);
    if (sigsetjmp(jb, 0)) {   /* the watchdog left a Lua operation the hook could not stop */
        lsb_watch_landed(prev, S);
        return LUA_ERRRUN;
    }
    lsb_watch_allow_escape(&jb, LSB_ESCAPE_GRACE(S));
    int status = lua_pcall(L, 1, 0, 1);
    lsb_watch_leave(prev);
    lua_settop(L, 0);
    return status;
}

int lsb_refuse_poisoned(lsb_state *S, job *j) {
    if (!S->poisoned) return 0;
    j->out->status = LSB_ERR_INTERNAL;
    j->out->message = lsb_strndup("state was discarded after a limit error", 39);
    return 1;
}

static void run(lsb_state *S, lua_CFunction body, job *j) {
    if (lsb_refuse_poisoned(S, j)) return;
    lsb_finish(j, lsb_protect(S, body, j));
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
    lsb_env_forget(S);   /* a kept environment belongs to the chunk it came from */
    lsb_run_chunk_fresh(L, S);
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->env_ref);
    S->env_slots = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        if (S->env_slots < 1024) S->env_slots++;
    }
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
    lsb_begin_call(S, out);
    run(S, load_body, &j);
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
    lsb_begin_call(S, &r);
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
