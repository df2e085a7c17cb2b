/* State lifecycle, the budget allocator and the time-limit hook. */
#include "lsb_internal.h"
#include "lsb_lazy.h"
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char LSB_KEY_STATE = 0;
const char LSB_KEY_BASE = 0;
const char LSB_KEY_ENVMETA = 0;
const char LSB_KEY_FROZEN = 0;
const char LSB_KEY_SNAPSHOTS = 0;
const char LSB_KEY_ARRAYS = 0;
const char LSB_KEY_CONTEXT = 0;
const char LSB_KEY_ORIGIN = 0;
const char LSB_KEY_LIBS = 0;
static const char LSB_TIMEOUT_SENTINEL = 0;

/* Instructions between deadline checks, when the watchdog thread could not start (it normally
 * enforces the deadline by forcing the hook, lsb_watchdog.c). Lua pays the per-instruction
 * trap once any count hook is set (design/lua-sandboxing.md F4: VM-bound code runs ~2x
 * slower), so the interval only bounds overshoot. */
#define LSB_HOOK_COUNT 1000
/* After the deadline, growth of at least this many bytes is refused (bounds one VM
 * instruction that copies megabytes, attack t16). */
#define LSB_LATE_ALLOC_BYTES 4096

uint64_t lsb_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int lsb_buf_put(lsb_buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = b->borrowed ? malloc(cap) : realloc(b->data, cap);
        if (!d) return -1;
        if (b->borrowed) {   /* the caller's memory is left as it is */
            if (b->len) memcpy(d, b->data, b->len);
            b->borrowed = 0;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int lsb_buf_putc(lsb_buf *b, char c) { return lsb_buf_put(b, &c, 1); }

char *lsb_strndup(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static void *lsb_alloc(void *ud, void *ptr, size_t osize, size_t nsize);

#define LSB_CALLINFO_BYTES 64   /* sizeof(CallInfo) in Lua 5.4 on 64-bit hosts */

/* Resizes a block by moving it to a new non-object block (from the table arena while the top
 * level runs afresh, else the heap; under the same limits), then freeing the old one. */
static void *move_block(lsb_state *S, void *ptr, size_t osize, size_t nsize) {
    void *p = lsb_alloc(S, NULL, 0, nsize);
    if (!p) return NULL;   /* Lua keeps the old block */
    memcpy(p, ptr, osize < nsize ? osize : nsize);
    lsb_alloc(S, ptr, osize, 0);
    return p;
}

static void *lsb_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    lsb_state *S = ud;
    int vector = ptr == NULL && osize == 0;   /* a new non-object block: a table's parts, a stack */
    if (ptr == NULL) osize = 0;   /* osize is a type tag for new blocks */
    else if (S->tarena && lsb_tarena_owns(S->tarena, ptr)) {   /* the arena only frees: a resized block moves */
        if (nsize) return move_block(S, ptr, osize, nsize);
        lsb_tarena_free(S->tarena, osize);
        S->used -= osize;
        return NULL;
    } else if (osize == LSB_CALLINFO_BYTES && nsize > osize && S->fresh_running && S->tarena) {
        /* a table's 4-element array part (left out of the arena with CallInfos, below) grows:
         * its new block comes from the arena like the rest of the top level's tables */
        return move_block(S, ptr, osize, nsize);
    }
    if (nsize == 0) {
        if (ptr && !lsb_heap_push(&S->heap, ptr, osize)) lsb_heap_realloc(&S->heap, ptr, osize, 0);
        S->used -= osize;
        return NULL;
    }
    if (nsize > osize && S->limit_active) {
        /* Refuse, but do not flag: Lua retries after an emergency GC, and only a failure
         * that survives it raises LUA_ERRMEM (seen by lsb_note_status). */
        if (S->cfg.memory_limit && S->used - osize + nsize > S->cfg.memory_limit) return NULL;
        if (nsize - osize >= LSB_LATE_ALLOC_BYTES && S->deadline_ns && lsb_now_ns() > S->deadline_ns) {
            S->timed_out = 1;
            return NULL;
        }
    }
    void *p = NULL;
    if (S->fresh_running) {   /* the top level's table storage: counted, and from the arena while it fills */
        /* Lua resizes only non-object blocks, so a resize's growth counts as well: an array part
         * grows that way, one doubling at a time, where a hash part is made anew each time */
        if (nsize > osize && (vector || ptr)) S->fresh_vector_bytes += nsize - osize;
        /* not a CallInfo: a thread keeps those and writes them on every call */
        if (vector && S->tarena && nsize != LSB_CALLINFO_BYTES) p = lsb_tarena_alloc(S->tarena, nsize);
    }
    if (!p && !ptr) p = lsb_heap_pop(&S->heap, nsize);
    if (!p) p = lsb_heap_realloc(&S->heap, ptr, osize, nsize);
    if (!p) return NULL;
    S->used = S->used - osize + nsize;
    if (S->used > S->peak) S->peak = S->used;
    return p;
}

lsb_state *lsb_get(lua_State *L) {
    void *ud;
    lua_getallocf(L, &ud);
    return ud;
}

int lsb_limit_error(lua_State *L) {
    lsb_state *S = lsb_get(L);
    S->poisoned = 1;
    /* Sticky: from now on every instruction of this thread re-raises. */
    lua_sethook(L, (lua_Hook)0, 0, 0);
    lsb_install_hook(L);
    lua_pushlightuserdata(L, (void *)&LSB_TIMEOUT_SENTINEL);
    return lua_error(L);
}

static void lsb_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lsb_state *S = lsb_get(L);
    if (S->timed_out || S->mem_exceeded) {
        lua_sethook(L, lsb_hook, LUA_MASKCOUNT | LUA_MASKCALL, 1);
        S->poisoned = 1;
        lua_pushlightuserdata(L, (void *)&LSB_TIMEOUT_SENTINEL);
        lua_error(L);
        return;
    }
    if (S->deadline_ns && lsb_now_ns() > S->deadline_ns) {
        S->timed_out = 1;
        S->poisoned = 1;
        lua_sethook(L, lsb_hook, LUA_MASKCOUNT | LUA_MASKCALL, 1);
        lua_pushlightuserdata(L, (void *)&LSB_TIMEOUT_SENTINEL);
        lua_error(L);
    }
}

void lsb_force_hook(lua_State *L) { lua_sethook(L, lsb_hook, LUA_MASKCOUNT | LUA_MASKCALL, 1); }

void lsb_check_deadline(lua_State *L) {
    lsb_state *S = lsb_get(L);
    if (S->deadline_ns && !S->timed_out && lsb_now_ns() > S->deadline_ns) S->timed_out = 1;
    lsb_reraise_limits(L);
}

void lsb_install_hook(lua_State *L) {
    lsb_state *S = lsb_get(L);
    if (S->timed_out || S->mem_exceeded)
        lua_sethook(L, lsb_hook, LUA_MASKCOUNT | LUA_MASKCALL, 1);
    else if (lsb_watchdog_ready())
        lua_sethook(L, NULL, 0, 0);   /* the watchdog forces the hook at the deadline: no per-instruction trap */
    else
        lua_sethook(L, lsb_hook, LUA_MASKCOUNT, LSB_HOOK_COUNT);
}

void lsb_note_status(lua_State *L, int status) {
    if (status == LUA_ERRMEM) {
        lsb_state *S = lsb_get(L);
        S->mem_exceeded = 1;
        S->poisoned = 1;
    }
}

void lsb_reraise_limits(lua_State *L) {
    lsb_state *S = lsb_get(L);
    if (S->timed_out || S->mem_exceeded) {
        S->poisoned = 1;
        lua_sethook(L, lsb_hook, LUA_MASKCOUNT | LUA_MASKCALL, 1);
        lua_pushlightuserdata(L, (void *)&LSB_TIMEOUT_SENTINEL);
        lua_error(L);
    }
}

static int lsb_panic(lua_State *L) {
    (void)L;
    /* Unreachable by design: all allocating work runs under lua_pcall. */
    return 0;
}

static int lsb_setup_body(lua_State *L) {
    lsb_state *S = lua_touserdata(L, 1);
    lua_pushlightuserdata(L, S);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &LSB_KEY_STATE);
    lua_gc(L, LUA_GCGEN, 0, 0);
    lua_pushcfunction(L, lsb_build_env);
    lua_call(L, 0, 0);
    return 0;
}

lsb_state *lsb_new(const lsb_config *cfg, char *err, size_t errlen) {
    lsb_state *S = calloc(1, sizeof *S);
    if (!S) {
        snprintf(err, errlen, "out of host memory");
        return NULL;
    }
    S->cfg = *cfg;
    S->env_ref = S->loaded_ref = S->chunk_ref = S->spare_ref = S->ctx_ref = S->reuse_ref = LUA_NOREF;
    S->metadata_ref = S->lazy_ref = LUA_NOREF;
    S->reuse_images = lsb_timage_available();
    S->L = lua_newstate(lsb_alloc, S);
    if (!S->L) {
        snprintf(err, errlen, "cannot create a Lua state");
        lsb_heap_release(&S->heap);
        free(S);
        return NULL;
    }
    lua_atpanic(S->L, lsb_panic);
    lsb_install_hook(S->L);   /* before any user code, so every coroutine inherits it */
    lua_pushcfunction(S->L, lsb_setup_body);
    lua_pushlightuserdata(S->L, S);
    int status = lua_pcall(S->L, 1, 0, 0);
    if (status != LUA_OK) {
        const char *m = lua_type(S->L, -1) == LUA_TSTRING ? lua_tostring(S->L, -1) : "unknown error";
        snprintf(err, errlen, "cannot build the sandbox: %s", m);
        lsb_free(S);
        return NULL;
    }
    lua_settop(S->L, 0);
    S->limit_active = 1;
    return S;
}

void lsb_free(lsb_state *S) {
    if (!S) return;
    S->limit_active = 0;
    S->deadline_ns = 0;
    if (S->L && !S->escaped) {
        lua_sethook(S->L, (lua_Hook)0, 0, 0);
        lua_close(S->L);
        lsb_heap_release(&S->heap);
        lsb_tarena_free_all(S->tarena);   /* an escaped state's stays mapped, like the rest of its memory */
    }
    /* An escaped state may be inconsistent anywhere: its memory is left allocated
     * (counted by lsb_watchdog_abandoned_bytes) rather than walked by lua_close. */
    lsb_logs_reset(S);
    lsb_env_free(S);
    lsb_lazy_free_scoped(S);
    free(S->logs);
    free(S->tb.data);
    free(S->scratch.data);
    free(S->enc.data);
    free(S->arena.data);
    free(S->ctx_text.data);
    free(S->spare_inv);
    free(S->errmsg);
    free(S);
}

size_t lsb_memory_used(const lsb_state *S) { return S->used; }

size_t lsb_top_level_runs(const lsb_state *S) { return S->top_level_runs; }

int lsb_table_images(lsb_state *S, int on) {
    if (on >= 0) S->reuse_images = on && lsb_timage_available();
    return S->reuse_images;
}

int lsb_kept_tables_protected(const lsb_state *S) { return S->reuse_protected && lsb_tarena_read_only(S->tarena); }

int lsb_is_poisoned(const lsb_state *S) { return S->poisoned; }

int lsb_is_limit_sentinel(lua_State *L, int idx);
int lsb_is_limit_sentinel(lua_State *L, int idx) {
    return lua_touserdata(L, idx) == (void *)&LSB_TIMEOUT_SENTINEL;
}
