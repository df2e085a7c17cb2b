/*
 * Entry-point calls: decode the inputs, run the entry point in a coroutine, suspend it on a host
 * request (enrich, http) and continue it with the reply, and encode what it returned. Several
 * calls of one state may be suspended at once; each keeps its own globals, require cache,
 * metadata and logs, swapped into the state while it runs.
 */
#include "lsb_job.h"
#include "lsb_lazy.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const char LSB_HOST_REQUEST;


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

int lsb_push_context(lua_State *L, const char *json, size_t len, char *err, size_t errlen) {
    if (lsb_json_decode_push(L, json, len, err, errlen)) return -1;
    if (lua_type(L, -1) == LUA_TTABLE) {
        freeze_children(L, lua_gettop(L));
        lsb_push_frozen(L, -1);
    } else lua_pushnil(L);
    lua_remove(L, -2);
    return 0;
}

/* Keeps the call's default context as text in S->ctx_text (lsb_metadata decodes it on first
 * use); returns -1 when host memory ran out. */
static int hold_context(lsb_state *S, const char *json, size_t len) {
    S->ctx_text.len = 0;
    if (lsb_buf_put(&S->ctx_text, json, len)) return -1;
    S->ctx_pending = 1;
    return 0;
}

/* A batch's contexts held as text too (ctx_pending 2): ctx_text starts with the input count
 * (8 bytes) and one (offset, length) pair of uint32 per input, then the texts; a pair whose
 * length is BATCH_CTX_NONE holds none (no context, not validated, or already made a value). A
 * batch's event finds its context through its origin (lsb_metadata), so most batches, whose
 * scripts never ask, make no Lua string and no map entry per event. */
#define BATCH_CTX_NONE UINT32_MAX
#define BATCH_CTX_HEAD(S) ((uint32_t *)(void *)((S)->ctx_text.data + 8))

/* Starts holding the contexts of a batch of `count` inputs; -1 when host memory ran out (the
 * contexts then take the map, as unvalidated ones do). */
static int hold_batch_start(lsb_state *S, size_t count) {
    S->ctx_text.len = 0;
    S->ctx_pending = 0;
    if (count > (SIZE_MAX - 8) / 8 || count > UINT32_MAX) return -1;
    uint64_t n = count;
    if (lsb_buf_put(&S->ctx_text, (const char *)&n, 8)) return -1;
    for (size_t i = 0; i < count; i++) {
        uint32_t none[2] = {0, BATCH_CTX_NONE};
        if (lsb_buf_put(&S->ctx_text, (const char *)none, sizeof none)) return -1;
    }
    S->ctx_pending = 2;
    return 0;
}

/* Holds input i's context text; -1 when it cannot (host memory, or a text past 4 GiB). */
static int hold_batch_context(lsb_state *S, size_t i, const char *json, size_t len) {
    if (S->ctx_pending != 2 || len >= BATCH_CTX_NONE || S->ctx_text.len > UINT32_MAX - len) return -1;
    uint32_t at = (uint32_t)S->ctx_text.len;
    if (lsb_buf_put(&S->ctx_text, json, len)) return -1;
    BATCH_CTX_HEAD(S)[2 * i] = at;
    BATCH_CTX_HEAD(S)[2 * i + 1] = (uint32_t)len;
    return 0;
}

int lsb_push_batch_context(lua_State *L, lsb_state *S, lua_Integer origin) {
    if (S->ctx_pending != 2 || origin < 0) return 0;
    uint64_t count;
    memcpy(&count, S->ctx_text.data, 8);
    if ((uint64_t)origin >= count) return 0;
    uint32_t at = BATCH_CTX_HEAD(S)[2 * origin], len = BATCH_CTX_HEAD(S)[2 * origin + 1];
    if (len == BATCH_CTX_NONE) return 0;
    BATCH_CTX_HEAD(S)[2 * origin + 1] = BATCH_CTX_NONE;   /* from now on the map holds its value */
    lua_pushlstring(L, S->ctx_text.data + at, len);
    return 1;
}

/* Exchanges the held context text between the state and a suspended invocation. */
static void swap_context(lsb_state *S, lsb_invocation *inv) {
    lsb_buf t = inv->ctx_text;
    int pending = inv->ctx_pending;
    inv->ctx_text = S->ctx_text;
    inv->ctx_pending = S->ctx_pending;
    S->ctx_text = t;
    S->ctx_pending = pending;
}

static void push_input(lua_State *L, job *j, size_t i, int ctxmap, int originmap) {
    const lsb_input *in = &j->inputs[i];
    const lsb_json_index *ix = j->indexes && in->validated ? j->indexes[i] : NULL;
    if (ix) lsb_lazy_offer(j->S, ix);
    int bad = in->validated ? lsb_lazy_push(L, in->json, in->json_len, j->detail, sizeof j->detail)
                            : lsb_json_decode_push(L, in->json, in->json_len, j->detail, sizeof j->detail);
    if (ix) lsb_lazy_offer(j->S, NULL);
    if (bad) {
        j->kind = LSB_ERR_INPUT;
        luaL_error(L, "invalid input");
    }
    int v = lua_gettop(L);
    /* A batch's outputs are attributed to their inputs; one event's outputs are all its own,
     * and its context is the call's default (S->ctx_ref), so it needs no map entries. */
    if (j->batched && lua_type(L, v) == LUA_TTABLE) {
        const char *s;
        size_t n;
        int found = lsb_lazy_string_member(L, v, "messageId", 9, &s, &n);   /* its bytes, no Lua read */
        if (found > 0) j->inv->message_ids[i] = lsb_strndup(s, n);
        if (found < 0) {
            if (lua_getfield(L, v, "messageId") == LUA_TSTRING) {
                s = lua_tolstring(L, -1, &n);
                j->inv->message_ids[i] = lsb_strndup(s, n);
            }
            lua_pop(L, 1);
        }
        lua_pushvalue(L, v);
        lua_pushinteger(L, (lua_Integer)i);
        lua_rawset(L, originmap);
    }
    if (in->context && !j->batched && in->validated && hold_context(j->S, in->context, in->context_len) == 0) {
        /* one event's context stays text in host memory until metadata() asks (most never do) */
    } else if (in->context && j->batched && in->validated && lua_type(L, v) == LUA_TTABLE &&
               hold_batch_context(j->S, i, in->context, in->context_len) == 0) {
        /* so does a batch event's, found through its origin */
    } else if (in->context) {
        if (in->validated) {
            /* decoded on the first metadata() call: most scripts never ask */
            lua_pushlstring(L, in->context, in->context_len);
        } else if (lsb_push_context(L, in->context, in->context_len, j->detail, sizeof j->detail)) {
            j->kind = LSB_ERR_INPUT;
            luaL_error(L, "invalid context");
        }
        if (!j->batched) {
            lua_pushvalue(L, -1);
            lsb_ref_replace(L, &j->S->ctx_ref);
        }
        if (j->batched && lua_type(L, v) == LUA_TTABLE) {
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
    lsb_lazy_rawget(L, idx, -1);   /* a raw read that also sees a lazy table's unread member */
    lua_remove(L, -2);
    if (lua_type(L, -1) == LUA_TSTRING) {
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
    if (out->output_count == j->out_cap) {   /* grows by doubling: a batch returns hundreds */
        size_t cap = j->out_cap ? 2 * j->out_cap : 4;
        lsb_output *a = realloc(out->outputs, cap * sizeof *a);
        if (!a) {
            free(o.json);
            free(o.error);
            return;
        }
        out->outputs = a;
        j->out_cap = cap;
    }
    out->outputs[out->output_count++] = o;
}

static void encode_output(lua_State *L, job *j, int idx, int originmap, int as_slot) {
    lsb_state *S = j->S;
    lsb_output o = {0};
    o.origin = j->batched && lua_type(L, idx) == LUA_TTABLE ? origin_of(L, j, idx, originmap) : -1;
    char err[700];
    S->enc.len = 0;
    /* an unchanged lazy event goes from its input bytes straight into the report's copy */
    int direct = S->direct_output && !as_slot;
    const char *raw = NULL;
    size_t len = 0;
    if (lsb_json_encode_raw(L, idx, &S->enc, S->cfg.max_output_bytes, &raw, &len, err, sizeof err)) {
        if (!as_slot) {
            j->kind = LSB_ERR_OUTPUT;
            snprintf(j->detail, sizeof j->detail, "returned value cannot be JSON: %s", err);
            luaL_error(L, "invalid output");
        }
        o.error = lsb_strndup(err, strlen(err));
    } else {
        if (!raw) len = S->enc.len;
        j->inv->output_total += len;
        if (S->cfg.max_output_bytes && j->inv->output_total > S->cfg.max_output_bytes) {
            j->kind = LSB_ERR_OUTPUT;
            snprintf(j->detail, sizeof j->detail, "returned events are larger than %zu bytes in total", S->cfg.max_output_bytes);
            luaL_error(L, "invalid output");
        }
        if (raw && direct && S->arena_used && raw >= S->arena.data && raw + len <= S->arena.data + S->arena.len) {
            S->direct_json = raw;   /* lsb_run_share copies the arena's bytes (alive past the call) into its answer */
        } else if (raw && !direct) {
            o.json = lsb_strndup(raw, len);
        } else if (direct && (!raw || lsb_buf_put(&S->enc, raw, len) == 0) && S->enc.data) {
            S->direct_json = S->enc.data;   /* lsb_run_share copies it straight into its answer */
        } else {
            o.json = raw ? lsb_strndup(raw, len) : lsb_strndup(S->enc.data ? S->enc.data : "", S->enc.len);
        }
        o.json_len = len;
    }
    add_output(j, o);
    if (!raw) lsb_check_deadline(L);   /* an encoding ran (a copy of unchanged bytes cannot run long) */
}

/* A table whose keys are exactly 1..n with n > 0. */
static int is_sequence(lua_State *L, int idx) {
    lsb_lazy_force_array(L, idx);   /* a lazy array holds its elements once forced */
    lua_Unsigned n = lua_rawlen(L, idx);
    if (n == 0) return 0;
    lsb_lazy_force(L, idx);   /* a lazy event with added 1..n keys: its members count too */
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
    lsb_env_enter(L, S);
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->env_ref);
    if (lua_getfield(L, -1, j->entry) != LUA_TFUNCTION) {
        j->kind = LSB_ERR_INTERNAL;
        snprintf(j->detail, sizeof j->detail, "global function '%s' is not defined", j->entry);
        return luaL_error(L, "missing entry point");
    }
    int fn = lua_gettop(L), ctxmap = 0, originmap = 0;   /* the maps serve a batch only */
    if (j->batched) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_CONTEXT);
        ctxmap = lua_gettop(L);
        lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ORIGIN);
        originmap = lua_gettop(L);
    }
    lua_State *co;
    int fresh_thread = S->spare_ref == LUA_NOREF;
    if (fresh_thread) {
        co = lua_newthread(L);   /* inherits the count hook */
    } else {                     /* the last call's coroutine, finished cleanly: reuse it */
        lua_rawgeti(L, LUA_REGISTRYINDEX, S->spare_ref);
        co = lua_tothread(L, -1);
        j->inv->thread_ref = S->spare_ref;
        S->spare_ref = LUA_NOREF;
        lsb_install_hook(co);
    }
    int co_idx = lua_gettop(L);
    lua_pushvalue(L, fn);
    if (j->batched) {
        hold_batch_start(S, j->count);   /* on failure the contexts take the map */
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
        S->arena_ok = 1;   /* the call's one event may keep its bytes in the state's arena */
        push_input(L, j, 0, ctxmap, originmap);
        S->arena_ok = 0;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->metadata_ref);
    if (!lua_checkstack(co, 4)) return luaL_error(L, "cannot start the call");
    lua_xmove(L, co, 3);                 /* entry point, value(s), metadata */
    if (fresh_thread) {
        lua_pushvalue(L, co_idx);
        j->inv->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    j->nargs = 2;
    return 0;
}

/* Classifies the returned value at stack index r and encodes the outputs (may raise). */
static void classify_output(lua_State *L, job *j, int r) {
    int originmap = 0;   /* outputs are attributed to inputs only in a batch */
    if (j->batched) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ORIGIN);
        originmap = lua_gettop(L);
    }
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
}

/* Classifies the returned value (argument 2) and encodes the outputs. */
static int output_body(lua_State *L) {
    classify_output(L, lua_touserdata(L, 1), 2);
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
    inv->reuse_held = lsb_env_lend(S);   /* the environment goes with the call */
    if (S->arena_used) {  /* and so do its event's bytes: the next call reuses the arena */
        inv->arena = S->arena;
        memset(&S->arena, 0, sizeof S->arena);
        S->arena_used = 0;
    }
    inv->env_ref = S->env_ref;
    inv->loaded_ref = S->loaded_ref;
    inv->ctx_ref = S->ctx_ref;
    swap_context(S, inv);   /* the state keeps an empty buffer */
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
    if (!S->poisoned && !S->escaped) {   /* the state's own kept slots give way to the call's */
        luaL_unref(S->L, LUA_REGISTRYINDEX, S->env_ref);
        luaL_unref(S->L, LUA_REGISTRYINDEX, S->ctx_ref);
    }
    S->env_ref = inv->env_ref;
    S->loaded_ref = inv->loaded_ref;
    S->ctx_ref = inv->ctx_ref;
    swap_context(S, inv);
    lsb_env_resume(S, inv->reuse_held);
    inv->reuse_held = 0;
    S->arena_used = 0;   /* its event's bytes stay in inv->arena */
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

/* Moves the first of the nres values co returned onto L (nil when none), dropping the rest. */
static void push_first_result(lua_State *L, lua_State *co, int nres) {
    if (nres > 0) {
        lua_xmove(co, L, 1);
        lua_pop(co, nres - 1);
    } else {
        lua_pushnil(L);
    }
}

/* The coroutine co yielded nres values: a host request is copied into the report (returns 1:
 * the call suspends); any other yield is the entry point's own, an error (returns 0). Allocates
 * nothing in Lua. */
static int took_request(job *j, lua_State *co, int nres) {
    if (nres >= 2 && lua_touserdata(co, -nres) == (void *)&LSB_HOST_REQUEST) {
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
        return 1;
    }
    /* the entry point itself yielded: not a coroutine the script owns */
    lua_pop(co, nres);
    lsb_describe_error(co, 0, 0);
    static const char msg[] = "coroutine.yield() was called outside a coroutine (the entry point itself cannot yield)";
    lsb_set_errmsg(j->S, msg, sizeof msg - 1);
    return 0;
}

/* A call's first run in one protected region (lsb_begin): start it (start_body), resume its
 * coroutine, and encode what it returned (output_body's work). How the coroutine ended is left
 * in j->resumed: LUA_OK when it returned (and its outputs are encoded), LUA_YIELD when it
 * suspended on a host request, else its error status (described). */
static int begin_body(lua_State *L) {
    job *j = lua_touserdata(L, 1);
    start_body(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, j->inv->thread_ref);
    lua_State *co = lua_tothread(L, -1);
    int nres = 0;
    lsb_watch prev = lsb_watch_enter(co, 0);   /* the hook to force is now the coroutine's */
    int st = lua_resume(co, L, j->nargs, &nres);
    lsb_watch_leave(prev);
    lua_settop(L, 1);   /* start_body's values: the registry keeps the coroutine */
    j->resumed = st;
    if (st == LUA_YIELD) {
        if (took_request(j, co, nres)) lsb_lazy_keep_top(L);   /* other calls run before it continues */
        else j->resumed = LUA_ERRRUN;
    } else if (st == LUA_OK) {
        push_first_result(L, co, nres);
        classify_output(L, j, lua_gettop(L));
    } else {
        lsb_note_status(L, st);
        if (st != LUA_ERRMEM) lsb_describe_error(co, 0, 1);
    }
    return 0;
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
    sigjmp_buf jb;
    lsb_watch prev = lsb_watch_enter(co, S->deadline_ns);
    if (sigsetjmp(jb, 0)) {   /* the watchdog left a Lua operation the hook could not stop */
        lsb_watch_landed(prev, S);
        lsb_finish(j, LUA_ERRRUN);
        return NULL;
    }
    lsb_watch_allow_escape(&jb, LSB_ESCAPE_GRACE(S));
    int st = lua_resume(co, L, j->nargs, &nres);
    lsb_watch_leave(prev);
    if (st == LUA_YIELD) {
        if (took_request(j, co, nres)) {
            swap_out(S, inv);
            lua_settop(L, 0);
            return inv;
        }
        st = LUA_ERRRUN;
    } else if (st == LUA_OK) {
        lua_pushcfunction(L, lsb_msgh);
        lua_pushcfunction(L, output_body);
        lua_pushlightuserdata(L, j);
        push_first_result(L, co, nres);
        st = lua_pcall(L, 2, 0, 1);
        lsb_finish(j, st);
        return NULL;
    } else {
        lsb_note_status(L, st);
        if (st != LUA_ERRMEM) lsb_describe_error(co, 0, 1);
    }
    lsb_finish(j, st);
    return NULL;
}

lsb_invocation *lsb_begin(lsb_state *S, const char *entry, const lsb_input *inputs, size_t count, int batched,
                          lsb_report *out) {
    return lsb_begin_indexed(S, entry, inputs, NULL, count, batched, out);
}

lsb_invocation *lsb_begin_indexed(lsb_state *S, const char *entry, const lsb_input *inputs,
                                  const lsb_json_index *const *indexes, size_t count, int batched, lsb_report *out) {
    job j = {0};
    j.S = S;
    j.entry = entry;
    j.inputs = inputs;
    j.indexes = indexes;
    j.count = count;
    j.batched = batched;
    j.out = out;
    lsb_begin_call(S, out);
    if (lsb_refuse_poisoned(S, &j)) return NULL;
    if (S->spare_inv) {
        j.inv = S->spare_inv;
        S->spare_inv = NULL;
        memset(j.inv, 0, sizeof *j.inv);
    } else {
        j.inv = calloc(1, sizeof *j.inv);
    }
    if (!j.inv) {
        out->status = LSB_ERR_INTERNAL;
        out->message = lsb_strndup("out of host memory", 18);
        return NULL;
    }
    j.inv->thread_ref = LUA_NOREF;
    j.inv->count = count;
    j.inv->batched = batched;
    /* a batch's outputs are attributed by messageId; one event's are all its own */
    if (batched) j.inv->message_ids = calloc(count ? count : 1, sizeof(char *));
    int st = !batched || j.inv->message_ids ? lsb_protect(S, begin_body, &j) : LUA_ERRMEM;
    if (st == LUA_OK && j.resumed == LUA_YIELD) {   /* suspended on a host request */
        swap_out(S, j.inv);
        return j.inv;
    }
    lsb_finish(&j, st != LUA_OK ? st : j.resumed);
    return NULL;
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
    if (!S->escaped) lsb_install_hook(S->L);
    if (lsb_refuse_poisoned(S, &j)) {
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
        lsb_hand_over_logs(S, out);
        inv->env_ref = S->env_ref;
        inv->loaded_ref = S->loaded_ref;
        inv->ctx_ref = S->ctx_ref;
        swap_context(S, inv);
        inv->reuse_held = S->reuse_held ? S->reuse_gen : 0;
        S->env_ref = S->loaded_ref = S->ctx_ref = LUA_NOREF;
        S->reuse_held = 0;
        S->deadline_ns = 0;
        lsb_abandon(S, inv);
        return NULL;
    }
    j.reply = reply;
    j.reply_len = len;
    j.reply_error = error;
    int st = lsb_protect(S, reply_body, &j);
    if (st != LUA_OK) {
        lsb_finish(&j, st);
        return NULL;
    }
    return step(&j);
}

void lsb_abandon(lsb_state *S, lsb_invocation *inv) {
    if (!inv) return;
    if (!S->poisoned && !S->escaped) lsb_env_abandon(S, inv->reuse_held);
    if (!S->poisoned) {
        luaL_unref(S->L, LUA_REGISTRYINDEX, inv->thread_ref);
        luaL_unref(S->L, LUA_REGISTRYINDEX, inv->env_ref);
        luaL_unref(S->L, LUA_REGISTRYINDEX, inv->loaded_ref);
        luaL_unref(S->L, LUA_REGISTRYINDEX, inv->ctx_ref);
    }
    if (inv->logs)
        for (size_t i = 0; i < inv->log_count; i++) free(inv->logs[i]);
    free(inv->logs);
    free(inv->arena.data);
    free(inv->ctx_text.data);
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

