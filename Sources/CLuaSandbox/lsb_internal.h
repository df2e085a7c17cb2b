#ifndef LSB_INTERNAL_H
#define LSB_INTERNAL_H
/* Shared between the sandbox's C files. Not part of the public API. */
#include "lsb.h"
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <setjmp.h>

typedef struct lsb_tarena lsb_tarena;   /* lsb_table_arena.c */

#define LSB_MAX_REQUIRE_DEPTH 32

/* A growable host-side byte buffer (malloc, never the Lua heap): lsb.h's lsb_bytes. */
typedef lsb_bytes lsb_buf;

int lsb_buf_put(lsb_buf *b, const char *s, size_t n);   /* 0 on success, -1 on ENOMEM */
int lsb_buf_putc(lsb_buf *b, char c);
char *lsb_strndup(const char *s, size_t n);

/* A state's small-block heap (lsb_heap.c): blocks up to LSB_HEAP_SMALL bytes come from per-size
 * free lists in one region of LSB_HEAP_REGION bytes (so a state never holds more than that
 * unused), larger ones and the overflow from malloc (up to 4 KiB through per-thread spare
 * lists). */
#define LSB_HEAP_GRAIN 16
#define LSB_HEAP_SMALL 256
#define LSB_HEAP_REGION (64 * 1024)
typedef struct {
    void *free[LSB_HEAP_SMALL / LSB_HEAP_GRAIN + 1];   /* class c: blocks of c * GRAIN bytes */
    char *region;                                       /* made on first use */
    char *next;                                         /* the region's uncarved part */
} lsb_heap;

/* realloc with Lua's allocator contract (osize is the block's exact size; nsize 0 frees). */
void *lsb_heap_realloc(lsb_heap *h, void *ptr, size_t osize, size_t nsize);

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LSB_HEAP_PLAIN 1   /* every block a plain malloc, so AddressSanitizer sees misuse */
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define LSB_HEAP_PLAIN 1
#endif

/* A small block's size class, and whether p is a block of the region (else it came from malloc). */
static inline int lsb_heap_class(size_t n) { return (int)((n + LSB_HEAP_GRAIN - 1) / LSB_HEAP_GRAIN); }
static inline int lsb_heap_owns(const lsb_heap *h, const void *p) {
    return h->region && (const char *)p >= h->region && (const char *)p < h->region + LSB_HEAP_REGION;
}

/* The two common cases, inline in the allocator (lsb_heap_realloc does the rest): a new small
 * block from its free list (NULL if the list is empty), and freeing a block of the region
 * (0 if it is not one). */
static inline void *lsb_heap_pop(lsb_heap *h, size_t nsize) {
#ifdef LSB_HEAP_PLAIN
    (void)h;
    (void)nsize;
    return NULL;
#else
    if (nsize > LSB_HEAP_SMALL) return NULL;
    void **b = h->free[lsb_heap_class(nsize)];
    if (b) h->free[lsb_heap_class(nsize)] = *b;
    return b;
#endif
}

static inline int lsb_heap_push(lsb_heap *h, void *ptr, size_t osize) {
#ifdef LSB_HEAP_PLAIN
    (void)h;
    (void)ptr;
    (void)osize;
    return 0;
#else
    if (!lsb_heap_owns(h, ptr)) return 0;
    void **b = ptr;
    *b = h->free[lsb_heap_class(osize)];
    h->free[lsb_heap_class(osize)] = b;
    return 1;
#endif
}
/* Frees every chunk: only after lua_close. */
void lsb_heap_release(lsb_heap *h);

struct lsb_state {
    lua_State *L;
    lsb_config cfg;

    /* allocator */
    lsb_heap heap;
    size_t used, peak;
    size_t settled;            /* heap size after the last collection forced between calls */
    int limit_active;          /* refuse growth past cfg.memory_limit */

    /* time */
    uint64_t deadline_ns;      /* monotonic; 0 = none */
    uint64_t call_started_ns;  /* when the last load/call began (lsb_begin_call) */
    uint64_t call_ended_ns;    /* when the last call finished (lsb_finish) */
    int timed_out;             /* sticky for the current load/call */
    int mem_exceeded;          /* sticky for the current load/call */

    /* per-call */
    int env_ref;               /* registry ref of the current call's environment; between calls the
                                  state keeps the slot, emptied (as for ctx_ref); a suspended call
                                  takes both with it */
    int loaded_ref;            /* registry ref of the current call's require cache */
    const char *loading[LSB_MAX_REQUIRE_DEPTH];
    int loading_depth;
    char **logs;
    size_t log_count, log_cap, log_bytes, logs_dropped;
    lsb_buf tb;                /* traceback of the last error */
    lsb_buf scratch;           /* JSON decoder's unescape buffer */
    lsb_buf enc;               /* json.encode's output buffer */
    lsb_buf arena;             /* the current call's event bytes, when lsb_lazy_push may put them
                                  here (arena_ok) instead of the Lua heap; see lsb_lazy_push */
    int arena_ok;              /* the next lazy event may use the arena (one event per call) */
    int arena_used;            /* the current call's event lives in the arena */
    void *lazy;                /* the lazy record cache (lsb_lazy.c; the registry keeps it) */
    void *lazy_scoped;         /* a one-event call's nested records in host memory (lsb_lazy.c), or
                                * NULL until first used; freed by lsb_free */
    int direct_output;         /* set by lsb_run_share around lsb_begin: a single returned object
                                * may be left in enc (its report output then has json NULL) */
    const char *direct_json;   /* the last call did so: its JSON (enc's data, or the event's own
                                  bytes in the arena when unchanged), else NULL */
    char *errmsg;              /* message captured by the message handler */
    int chunk_ref;             /* registry ref of the compiled main chunk */
    int env_slots;             /* globals the main chunk's top level left (sizes fresh envs) */
    int spare_ref;             /* registry ref of a finished coroutine to reuse, or LUA_NOREF */
    lsb_invocation *spare_inv; /* a finished call's invocation record, emptied, to reuse (malloc) */
    int ctx_ref;               /* registry ref of the current call's default context, or LUA_NOREF */
    int metadata_ref;          /* registry ref of the base's metadata function (every call's second argument) */
    int lazy_ref;              /* registry ref of the lazy tables' cache (lsb_lazy.c) */
    lsb_buf ctx_text;          /* the current call's default context as JSON text in host memory,
                                  when ctx_pending: metadata() makes it a Lua value on first use
                                  (most scripts never ask); a suspended call takes it along */
    int ctx_pending;           /* ctx_text holds the call's context (1; ctx_ref is empty until asked)
                                  or a batch's contexts, by input (2; lsb_invoke.c) */
    int host_calls;            /* host requests made by the current call */
    int enrich_failed;         /* a required enrich() failed and its error is propagating */
    int poisoned;              /* a limit fired: the host must discard this state */

    /* reuse of the main chunk's environment between calls (lsb_reuse.c) */
    int reuse_ref;             /* registry ref of the kept environment's record, or LUA_NOREF */
    lua_State *reuse_T;        /* the record's nodes on a thread's stack, for checking (the record holds it) */
    int reuse_had_loaded;      /* the recorded run had a require cache */
    uint64_t *reuse_fp;        /* its fingerprints (malloc) */
    size_t reuse_fp_len;
    int reuse_held;            /* the current call runs in the kept environment */
    int reuse_lent;            /* a suspended call runs in it: other calls run the top level afresh */
    unsigned reuse_gen;        /* which record it is (a suspended call names the one it holds) */
    int reuse_off;             /* every call runs the main chunk afresh (see lsb_reuse.c) */
    int reuse_misses;          /* calls in a row that left the kept environment changed */
    int reuse_images;          /* record tables as images (lsb_table_image.c), not member by member */
    int reuse_protected;       /* the record's arena tables are write-protected (lsb_table_arena.c) */
    uint64_t *reuse_prot;      /* those tables' entries: node index, json.array mark (malloc) */
    size_t reuse_prot_len;
    lsb_tarena *tarena;        /* this state's table arena, or NULL */
    int tarena_failed;         /* none could be made: do not try again */
    int fresh_running;         /* the top level runs afresh (lsb_run_chunk_fresh) */
    size_t fresh_vector_bytes; /* non-object block bytes the last fresh run allocated (new blocks, and resizes' growth) */
    size_t top_level_runs;     /* lsb_run_chunk_fresh calls */
    unsigned array_marks;      /* json.array calls (they can mark a table of the kept environment) */
    unsigned reuse_marks_at;   /* array_marks when the current call entered the kept environment */
    unsigned impure;           /* calls of host functions whose answer can differ between runs
                                  (clocks, random, log, metadata, lookups): a top level that made
                                  one is run afresh for every call */
    int escaped;               /* left mid-operation by the watchdog: never touch L again */
};

/* Registry keys (addresses used as light-userdata keys). */
extern const char LSB_KEY_STATE;     /* -> lsb_state* */
extern const char LSB_KEY_BASE;      /* -> table of allowlisted globals */
extern const char LSB_KEY_ENVMETA;   /* -> {__index = BASE, __metatable = false} */
extern const char LSB_KEY_FROZEN;    /* -> weak-keyed map: read-only proxy -> the table it shows */
extern const char LSB_KEY_SNAPSHOTS; /* -> weak-keyed: metatable copy -> protected? */
extern const char LSB_KEY_ARRAYS;    /* -> weak-keyed set of tables decoded from JSON arrays */
extern const char LSB_KEY_CONTEXT;   /* -> weak-keyed: value table -> context proxy */
extern const char LSB_KEY_ORIGIN;    /* -> weak-keyed: value table -> input index */
/* Pushes the context text held for input `origin` of the running batch (ctx_pending 2) and
 * forgets it (the caller stores its value in the context map); returns 0, pushing nothing,
 * when none is held. */
int lsb_push_batch_context(lua_State *L, lsb_state *S, lua_Integer origin);
extern const char LSB_KEY_LIBS;      /* -> name -> compiled library chunk */

lsb_state *lsb_get(lua_State *L);
uint64_t lsb_now_ns(void);

/* Raises the sticky limit error if a limit already fired. Call after any protected call
 * made on behalf of user code (pcall, resume, load) so limits cannot be swallowed. */
void lsb_reraise_limits(lua_State *L);
/* Marks the state after an observed LUA_ERRMEM. */
void lsb_note_status(lua_State *L, int status);

/* Raises the (sticky) time-limit error if the deadline has passed. C functions that can
 * run long without VM instructions call it on entry, so loops over them stay bounded. */
void lsb_check_deadline(lua_State *L);

/* The hook and limit error. */
void lsb_install_hook(lua_State *L);
int lsb_limit_error(lua_State *L);
/* Makes the hook fire on L's next instruction or call (async-signal-safe; lsb_watchdog.c). */
void lsb_force_hook(lua_State *L);

/* The watchdog (lsb_watchdog.c): brackets every stretch of user code, so a thread past its
 * deadline gets its running state's hook forced even if the count hook is far away.
 * enter() with deadline 0 keeps the current deadline (a coroutine resumed by the script). */
typedef struct {
    lua_State *running;
    uint64_t deadline_ns;
    sigjmp_buf *escape;
    uint64_t grace_ns;
} lsb_watch;
lsb_watch lsb_watch_enter(lua_State *running, uint64_t deadline_ns);
void lsb_watch_leave(lsb_watch prev);
/* Inside an entered region: when the thread is still inside liblua grace_ns after its
 * deadline (one operation the hook cannot stop: a rehash of colliding keys, an ephemeron
 * collection), the handler siglongjmps to jb. The region's landing calls lsb_watch_landed
 * (leaves the region, marks S escaped) and never touches the lua_State again; lsb_free
 * leaks it instead of closing it. */
void lsb_watch_allow_escape(sigjmp_buf *jb, uint64_t grace_ns);
void lsb_watch_landed(lsb_watch prev, lsb_state *S);
/* Whether the watchdog runs and this thread has its slot: then the deadline needs no count hook. */
int lsb_watchdog_ready(void);
/* How long past the deadline before escaping: a quarter of the limit, at least 2 ms. */
#define LSB_ESCAPE_GRACE(S) ((S)->cfg.time_limit_ns / 4 > 2000000u ? (S)->cfg.time_limit_ns / 4 : 2000000u)

/* Builds BASE (the one place that decides what user code sees). Runs under pcall. */
int lsb_build_env(lua_State *L);

/* Guards for C functions that can spin or allocate outside the hook. */
void lsb_register_guards(lua_State *L, int string_idx, int table_idx);

/* Pushes the read-only view of a context (metadata) JSON: a frozen table, or nil when it is
 * not an object. Returns -1 with a message when the JSON is invalid. */
int lsb_push_context(lua_State *L, const char *json, size_t len, char *err, size_t errlen);

/* Read-only proxy of the table at idx; pushes the proxy. */
void lsb_push_frozen(lua_State *L, int idx);
/* When the value at idx is a read-only proxy (lsb_push_frozen), pushes the table it shows and
 * returns 1; else pushes nothing and returns 0. Reading through a proxy (pairs, next, rawget,
 * rawlen, json.encode, an output) sees that table; only writes are refused. */
int lsb_frozen_target(lua_State *L, int idx);
/* Enters the proxy at the top of the stack in FROZEN as showing the table at idx. */
void lsb_frozen_enter(lua_State *L, int idx);
/* A read-only proxy's __newindex (raises), __len (the shown table's) and __pairs (the sandbox's
 * next over the proxy). */
int lsb_frozen_newindex(lua_State *L);
int lsb_frozen_len(lua_State *L);
int lsb_frozen_pairs(lua_State *L);
/* Read-only views (lsb_view.c). lsb_push_view pushes a view of the object json[0, len), which
 * must be valid JSON (validated with its input), or nil when it is not an object; returns -1
 * (pushing nothing) when the text is not an object lsb_lazy can show, for the eager path.
 * lsb_view_wrap replaces a table at the top of the stack with its view (a read-only one stays). */
void lsb_view_init(lua_State *L);
int lsb_push_view(lua_State *L, const char *json, size_t len);
void lsb_view_wrap(lua_State *L);

/* JSON bridge. decode pushes one value or raises; encode appends to b or returns an error. */
int lsb_json_decode_push(lua_State *L, const char *json, size_t len, char *err, size_t errlen);
int lsb_json_encode(lua_State *L, int idx, lsb_buf *out, size_t max_bytes, char *err, size_t errlen);
/* lsb_json_encode, except that when the value is a lazy event object written back as its input
 * bytes unchanged (lsb_lazy.h) and they need no compacting, *raw points to them (valid while the
 * value is alive), *rawlen is their length and out is left as it was; otherwise *raw is NULL. */
int lsb_json_encode_raw(lua_State *L, int idx, lsb_buf *out, size_t max_bytes, const char **raw, size_t *rawlen,
                       char *err, size_t errlen);
void lsb_open_json(lua_State *L);   /* pushes the `json` table */

/* Logging host functions (log/print). */
int lsb_log(lua_State *L);
void lsb_logs_reset(lsb_state *S);
/* Moves the current call's logs into the report, which owns them from then on. */
void lsb_hand_over_logs(lsb_state *S, lsb_report *out);

/* require */
int lsb_require(lua_State *L);

/* Compiles user text (mode "t") so that it takes its environment as first argument
 * (lsb_chunk.c). Same contract as lua_load. */
int lsb_compile(lua_State *L, const char *src, size_t len, const char *chunkname);
/* Pushes a new environment table: __index = BASE, _G = itself. */
/* A fresh environment with room for `slots` globals (_G included). */
void lsb_push_fresh_env(lua_State *L, int slots);

/* Stores the value on top of the stack (popping it) under *ref in the registry: in the ref's own
 * slot when *ref is one, else in a new ref (a nil value gives LUA_REFNIL, as luaL_ref does). */
void lsb_ref_replace(lua_State *L, int *ref);
/* Empties the registry slot `ref` (if it is one) but keeps it allocated, for lsb_ref_replace. */
void lsb_ref_clear(lua_State *L, int ref);
/* Removes every key of the table at absolute index t (raw: no metamethods). */
void lsb_table_clear(lua_State *L, int t);
/* Runs the main chunk (registry chunk_ref) with a fresh env (which becomes the current one). */
void lsb_run_chunk_fresh(lua_State *L, lsb_state *S);

/* The environment of a call that is starting (lsb_reuse.c): the state's kept one when the last
 * call left it exactly as the main chunk made it, else a fresh run of the chunk (kept for the
 * next call when it can be checked). Sets env_ref (and loaded_ref). Allocates; runs protected. */
void lsb_env_enter(lua_State *L, lsb_state *S);
/* At the end of a call that ran in the kept environment: keeps it when unchanged, drops it
 * otherwise. Allocation-free and error-free; call outside protection only on a healthy state. */
void lsb_env_leave(lua_State *L, lsb_state *S);
/* The call is suspended and takes its environment along. Returns the kept record's generation
 * when that is the one it runs in (the call then holds it until it finishes, lsb_env_resume),
 * else 0. */
unsigned lsb_env_lend(lsb_state *S);
/* A suspended call resumes; `held`: lsb_env_lend's answer. A record dropped meanwhile (a new
 * chunk) is not the state's to check any more: the call's environment is then just its own. */
void lsb_env_resume(lsb_state *S, unsigned held);
/* A suspended call is dropped; `held` as for lsb_env_resume. */
void lsb_env_abandon(lsb_state *S, unsigned held);
/* A new main chunk: drops the kept environment and starts checking afresh. */
void lsb_env_forget(lsb_state *S);
/* Frees the record's host memory (lsb_free). */
void lsb_env_free(lsb_state *S);

/* Write-protected storage for a kept environment's tables (lsb_table_arena.c). */
#define LSB_TARENA_MIN_BYTES (64 * 1024)   /* a fresh run's non-object blocks that make an arena worth it */
/* A new arena (address space reserved, registered with the fault handler), or NULL. */
lsb_tarena *lsb_tarena_new(void);
/* Unregisters and unmaps it (its blocks must be gone: after lua_close). */
void lsb_tarena_free_all(lsb_tarena *a);
/* Whether p is a block of arena a (a may be NULL). */
int lsb_tarena_owns(const lsb_tarena *a, const void *p);
/* The top level runs afresh with its non-object blocks from the arena; 0 when an earlier run's
 * blocks are still there (the arena is then not used this time). */
int lsb_tarena_begin(lsb_tarena *a);
/* Ends filling (a may be NULL; idempotent). */
void lsb_tarena_end(lsb_tarena *a);
/* n bytes from the arena while it fills, else NULL. */
void *lsb_tarena_alloc(lsb_tarena *a, size_t n);
/* Lua frees (or moves) an arena block of n bytes: a read-only arena is opened and marked written. */
void lsb_tarena_free(lsb_tarena *a, size_t n);
/* setmetatable on `table` (lua_topointer): marks a read-only arena written when it holds the
 * table's parts (a may be NULL). */
void lsb_tarena_note_table(lsb_tarena *a, const void *table);
/* Makes the arena read-only when `blocks` blocks of `bytes` bytes are all it holds. */
int lsb_tarena_protect(lsb_tarena *a, size_t blocks, size_t bytes);
/* Writable again, without marking it written (a may be NULL). */
void lsb_tarena_unprotect(lsb_tarena *a);
/* Written since it was made read-only. */
int lsb_tarena_written(const lsb_tarena *a);
/* Read-only now (a may be NULL). */
int lsb_tarena_read_only(const lsb_tarena *a);

/* Images of tables (lsb_table_image.c): a table's members, metatable and block layout as the
 * bytes Lua 5.4 stores them in, for comparing a kept table without the API. `table` is
 * lua_topointer of a table the caller keeps alive. */
/* Whether this process's Lua has the layout images read (checked once, on first use). */
int lsb_timage_available(void);
/* Words an image of the table takes, or 0 when it cannot have one. */
size_t lsb_timage_words(const void *table);
/* Writes the table's image to w (lsb_timage_words of it). */
void lsb_timage_take(const void *table, uint64_t *w);
/* Whether the table an image was taken of still has that image. Reads only. */
int lsb_timage_same(const uint64_t *w);
/* Upvalue cells: a Lua function's upvalue read where Lua keeps it. `upval` is lua_upvalueid of
 * a Lua (not C) function's upvalue that the caller keeps alive. Whether the layout was probed: */
int lsb_upcell_available(void);
/* The upvalue's value as a tag and bits (bits 0 for nil and booleans). */
void lsb_upcell_read(const void *upval, uint64_t *tag, uint64_t *bits);
/* Whether it still has that value. */
int lsb_upcell_same(const void *upval, uint64_t tag, uint64_t bits);
/* The table's hash and array blocks (NULL: none of its own) and their sizes in bytes (sizes
 * may be NULL); returns whether it has a metatable. */
int lsb_timage_blocks(const void *table, const void *blocks[2], size_t sizes[2]);
/* Calls upvalue 1 with the function's arguments and returns all its results (the body of a C
 * closure that wraps another function). */
static inline int lsb_call_upvalue(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}
/* A library function whose answer can differ between runs (clocks, random), wrapped: marks the
 * state impure, then calls the function (its upvalue, fixed). */
int lsb_impure_call(lua_State *L);
/* Host functions whose answers can differ between runs call this (see lsb_state.impure). */
static inline void lsb_mark_impure(lua_State *L) {
    void *ud;
    lua_getallocf(L, &ud);
    ((lsb_state *)ud)->impure++;
}

#endif
