/*
 * Keeping the main chunk's environment between calls, without weakening "fresh globals for
 * every event".
 *
 * Every call must see the globals, module-level locals and library state exactly as a fresh run
 * of the file's top level makes them. Re-running the top level for each event costs more than
 * a small filter's own work, so after a fresh run the state records everything that run left
 * reachable to user code (the record), and at the end of each call compares it with what is
 * there now. When nothing differs, the next call runs in the same environment: indistinguishable
 * from a fresh run. When anything differs, the environment is dropped and the next call runs the
 * top level afresh, as before.
 *
 * What the record holds, from the call's environment and its require cache outward: each table
 * (its members in iteration order, its metatable, its length and whether json.array marked it)
 * and each function (its upvalues), recursively. Numbers compare with their subtype and bits
 * (1 and 1.0, 0.0 and -0.0 differ). Read-only library proxies and the shared base are leaves:
 * nothing can change them. The environment is not kept (every call runs the top level afresh,
 * as before) when:
 *   - the top level called a host function whose answer can differ between runs (clocks,
 *     random, log/print, metadata, lookups, secrets, collectgarbage): a fresh run could differ;
 *   - anything reachable is a coroutine or a userdata (their insides cannot be compared), or a
 *     table with a metatable that is not a script's own (lazy event tables);
 *   - the record would exceed LSB_REUSE_MAX_SLOTS fingerprint words or LSB_REUSE_MAX_IMAGE image
 *     words (checking would cost more than a run, or the copy too much memory);
 *   - LSB_REUSE_MAX_MISSES calls in a row changed it (a script that keeps state on purpose).
 * A call that is suspended on a lookup takes its environment along, and other calls meanwhile run
 * the top level afresh (two calls never share one); the suspended call's end checks it and gives
 * it back when unchanged.
 *
 * The record has two parts. In Lua (S->reuse_ref): [1] the environment, [2] the require cache
 * (or false), [3] every collectable value recorded (kept alive, so no address is reused while
 * the record lives), then the nodes, and [0] a thread whose stack holds the nodes in the same
 * order (S->reuse_T: the check reads them there, with no lookups). In host memory
 * (S->reuse_fp), one entry per node, each value as a fingerprint (type tag and bits: an
 * address for collectable values):
 *   table:    1, node's index in the Lua part, metatable address (0: none), marked, #T, n,
 *             then n times key tag, key bits, value tag, value bits (in iteration order)
 *   image:    3, node's index, metatable address, marked, #T, n, then the table's image in n
 *             words (lsb_table_image.c: its members as Lua stores them, compared as bytes)
 *   function: 2, node's index, n, then n times upvalue tag, upvalue bits
 *   cells:    5, node's index, n, then n times the upvalue's UpVal (lua_upvalueid), tag, bits:
 *             a Lua function's upvalues read where Lua keeps them (lsb_table_image.c)
 * Tables are recorded as images where this process's Lua allows it (lsb_timage_available), so
 * a check costs a memcmp per table, not Lua API calls per member: a lookup table of thousands
 * of members stays cheap to keep. Images have their own, larger bound (LSB_REUSE_MAX_IMAGE).
 * Checking it allocates nothing and raises nothing.
 */
#include "lsb_internal.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LSB_REUSE_MAX_SLOTS 4096       /* fingerprint words */
#define LSB_REUSE_MAX_IMAGE (1 << 17)  /* image words (1 MiB) */
#define LSB_REUSE_MAX_MISSES 3
#define LSB_REUSE_NO_LENGTH UINT64_MAX   /* a table without integer keys: # is 0 while they stay the same */

/* The kinds of record entry (the header comment lays each out). */
enum { ENTRY_TABLE = 1, ENTRY_FUNCTION = 2, ENTRY_IMAGE = 3, ENTRY_SEALED = 4, ENTRY_CELLS = 5 };

/* ---- fingerprints ---- */

/* The value at idx as a type tag and bits that differ whenever a script could tell two values
 * apart: numbers by subtype and bits (1 and 1.0, 0.0 and -0.0 differ), others by identity. */
static inline __attribute__((always_inline)) void fingerprint(lua_State *L, int idx, uint64_t *tag, uint64_t *bits) {
    int t = lua_type(L, idx);
    *tag = (uint64_t)t;
    switch (t) {
    case LUA_TNIL: *bits = 0; break;
    case LUA_TBOOLEAN: *bits = (uint64_t)lua_toboolean(L, idx); break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            *tag |= 16;
            *bits = (uint64_t)lua_tointeger(L, idx);
        } else {
            lua_Number x = lua_tonumber(L, idx);
            memcpy(bits, &x, sizeof x);
        }
        break;
    case LUA_TLIGHTUSERDATA: *bits = (uint64_t)(uintptr_t)lua_touserdata(L, idx); break;
    default: *bits = (uint64_t)(uintptr_t)lua_topointer(L, idx); break;
    }
}

static int collectable(int t) { return t == LUA_TSTRING || t == LUA_TTABLE || t == LUA_TFUNCTION || t == LUA_TUSERDATA || t == LUA_TTHREAD; }

/* ---- recording (after a fresh run; allocates, runs protected) ---- */

typedef struct {
    int rec, keep, seen, frozen, arrays, envmeta, base, snapshots;   /* stack indices */
    lua_Integer nodes, qhead, kept;                                  /* rec entries; queue position; keep entries */
    uint64_t *fp;
    size_t len, cap, image_words;                                    /* image_words: of len, in image entries */
    int ok, images;                                                  /* images: record tables as images */
    lsb_tarena *arena;                                               /* the state's table arena, or NULL */
    size_t arena_blocks, arena_bytes;                                /* the candidates' blocks in it */
} recorder;

/* Room for n more words in r->fp; clears r->ok when there is none. */
static int fp_room(recorder *r, size_t n) {
    if (r->len + n <= r->cap) return 1;
    size_t cap = r->cap ? r->cap : 64;
    while (cap < r->len + n) cap *= 2;
    uint64_t *m = realloc(r->fp, cap * sizeof *m);
    if (!m) {
        r->ok = 0;
        return 0;
    }
    r->fp = m;
    r->cap = cap;
    return 1;
}

static void fp_put(recorder *r, uint64_t w) {
    if (r->len - r->image_words >= LSB_REUSE_MAX_SLOTS) {
        r->ok = 0;
        return;
    }
    if (fp_room(r, 1)) r->fp[r->len++] = w;
}

/* Appends the image of `table` (lua_topointer; n words, lsb_timage_words). */
static void fp_image(recorder *r, const void *table, size_t n) {
    if (r->image_words + n > LSB_REUSE_MAX_IMAGE) {
        r->ok = 0;
        return;
    }
    if (!fp_room(r, n)) return;
    lsb_timage_take(table, r->fp + r->len);
    r->len += n;
    r->image_words += n;
}

/* Keeps the value at idx alive while the record lives, when it is collectable. */
static void keep_value(lua_State *L, recorder *r, int idx) {
    if (collectable(lua_type(L, idx))) {
        lua_pushvalue(L, idx);
        lua_rawseti(L, r->keep, ++r->kept);
    }
}

/* Appends the fingerprint of the value at idx, keeping it alive when collectable. */
static void fp_value(lua_State *L, recorder *r, int idx) {
    uint64_t tag, bits;
    fingerprint(L, idx, &tag, &bits);
    fp_put(r, tag);
    fp_put(r, bits);
    keep_value(L, r, idx);
}

/* Queues the value at idx as a node if it is one; clears r->ok if it cannot be compared. */
static void visit(lua_State *L, recorder *r, int idx) {
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TTABLE:
        if (lua_rawequal(L, idx, r->base)) return;
        lua_pushvalue(L, idx);
        if (lua_rawget(L, r->frozen) != LUA_TNIL) {   /* a read-only proxy: nothing can change it */
            lua_pop(L, 1);
            return;
        }
        lua_pop(L, 1);
        break;
    case LUA_TFUNCTION:
        if (lua_iscfunction(L, idx)) {   /* C closures' upvalues can hold state (gmatch, wrap) */
            if (lua_tocfunction(L, idx) == lsb_impure_call) return;   /* wraps a fixed library function */
            if (!lua_getupvalue(L, idx, 1)) return;                     /* no upvalues */
            lua_pop(L, 1);
        }
        break;
    case LUA_TTHREAD:
    case LUA_TUSERDATA: r->ok = 0; return;
    default: return;   /* nil, boolean, number, string, light userdata: compared by value */
    }
    lua_pushvalue(L, idx);
    if (lua_rawget(L, r->seen) != LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, r->seen);
    lua_pushvalue(L, idx);
    lua_rawseti(L, r->rec, ++r->nodes);
}

static void record_table(lua_State *L, recorder *r, int t, lua_Integer node) {
    const void *tp = lua_topointer(L, t);
    size_t image = r->images ? lsb_timage_words(tp) : 0, start = r->len;
    int in_arena = 0;   /* no metatable, and every block of its own in the arena: protectable */
    if (image && r->arena) {
        const void *b[2];
        size_t z[2];
        if (!lsb_timage_blocks(tp, b, z) && (b[0] || b[1]) &&
            (!b[0] || lsb_tarena_owns(r->arena, b[0])) && (!b[1] || lsb_tarena_owns(r->arena, b[1]))) {
            in_arena = 1;
            r->arena_blocks += (b[0] != NULL) + (b[1] != NULL);
            r->arena_bytes += z[0] + z[1];
        }
    }
    fp_put(r, image ? (in_arena ? ENTRY_SEALED : ENTRY_IMAGE) : ENTRY_TABLE);
    fp_put(r, (uint64_t)node);
    if (lua_getmetatable(L, t)) {
        int own = lua_rawequal(L, -1, r->envmeta);   /* an environment's: fixed */
        if (!own) {
            lua_pushvalue(L, -1);
            own = lua_rawget(L, r->snapshots) != LUA_TNIL;   /* a script's, via setmetatable */
            lua_pop(L, 1);
            if (own) visit(L, r, -1);
        }
        if (!own) r->ok = 0;   /* a lazy event table, or something else the host made */
        fp_put(r, (uint64_t)(uintptr_t)lua_topointer(L, -1));
        lua_pop(L, 1);
    } else {
        fp_put(r, 0);
    }
    lua_pushvalue(L, t);
    fp_put(r, lua_rawget(L, r->arrays) != LUA_TNIL);
    lua_pop(L, 1);
    size_t len_at = r->len;
    fp_put(r, LSB_REUSE_NO_LENGTH);   /* #T, when some key is an integer (else it is 0) */
    size_t count_at = r->len;
    fp_put(r, 0);   /* the member count, filled in below */
    uint64_t n = 0;
    int integer_keys = 0;
    lua_pushnil(L);
    while (r->ok && lua_next(L, t)) {
        integer_keys |= lua_isinteger(L, -2);
        visit(L, r, -2);
        visit(L, r, -1);
        if (image) {
            keep_value(L, r, -2);
            keep_value(L, r, -1);
        } else {
            fp_value(L, r, -2);
            fp_value(L, r, -1);
        }
        lua_pop(L, 1);
        n++;
    }
    if (!r->ok) return;
    if (integer_keys) r->fp[len_at] = (uint64_t)lua_rawlen(L, t);
    if (in_arena) {   /* no image yet: the table's address, for one if the arena cannot be sealed (seal) */
        r->fp[count_at] = 1;
        r->image_words += count_at + 1 - start;
        if (fp_room(r, 1)) {
            r->fp[r->len++] = (uint64_t)(uintptr_t)tp;
            r->image_words++;
        }
    } else if (image) {   /* taken last: # above may move the array's limit (never its contents) */
        r->fp[count_at] = image;
        r->image_words += count_at + 1 - start;   /* the entry's head counts as image, not fingerprint, words */
        fp_image(r, tp, image);
    } else {
        r->fp[count_at] = n;
    }
}

static void record_function(lua_State *L, recorder *r, int f, lua_Integer node) {
    int cells = r->images && !lua_iscfunction(L, f) && lsb_upcell_available();
    fp_put(r, cells ? ENTRY_CELLS : ENTRY_FUNCTION);
    fp_put(r, (uint64_t)node);
    size_t count_at = r->len;
    fp_put(r, 0);
    uint64_t n = 0;
    while (r->ok && lua_getupvalue(L, f, (int)n + 1)) {
        visit(L, r, -1);
        if (cells) {
            const void *id = lua_upvalueid(L, f, (int)n + 1);
            uint64_t tag, bits;
            lsb_upcell_read(id, &tag, &bits);
            fp_put(r, (uint64_t)(uintptr_t)id);
            fp_put(r, tag);
            fp_put(r, bits);
            keep_value(L, r, -1);
        } else {
            fp_value(L, r, -1);
        }
        lua_pop(L, 1);
        n++;
    }
    if (r->ok) r->fp[count_at] = n;
}

static int seal(lua_State *L, lsb_state *S, recorder *r);
static void split_sealed(lsb_state *S);

static void drop(lsb_state *S) {
    if (S->reuse_protected) lsb_tarena_unprotect(S->tarena);
    S->reuse_protected = 0;
    free(S->reuse_prot);
    S->reuse_prot = NULL;
    S->reuse_prot_len = 0;
    luaL_unref(S->L, LUA_REGISTRYINDEX, S->reuse_ref);
    S->reuse_ref = LUA_NOREF;
    S->reuse_T = NULL;
    S->reuse_held = S->reuse_lent = 0;
    free(S->reuse_fp);
    S->reuse_fp = NULL;
    S->reuse_fp_len = 0;
}

/* Records the current call's environment (env_ref) and require cache (loaded_ref) as the state's
 * kept environment; keeps none when they cannot be checked. */
static void record(lua_State *L, lsb_state *S) {
    int top = lua_gettop(L);
    recorder r = {0};
    r.ok = 1;
    r.images = S->reuse_images;
    r.arena = S->tarena;
    lua_createtable(L, 16, 0);
    r.rec = lua_gettop(L);
    lua_createtable(L, 32, 0);
    r.keep = lua_gettop(L);
    lua_pushvalue(L, r.keep);
    lua_rawseti(L, r.rec, 3);
    lua_createtable(L, 0, 16);
    r.seen = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_FROZEN);
    r.frozen = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ARRAYS);
    r.arrays = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_ENVMETA);
    r.envmeta = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_BASE);
    r.base = lua_gettop(L);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LSB_KEY_SNAPSHOTS);
    r.snapshots = lua_gettop(L);

    r.nodes = 3;
    lua_rawgeti(L, LUA_REGISTRYINDEX, S->env_ref);
    lua_pushvalue(L, -1);
    lua_rawseti(L, r.rec, 1);
    visit(L, &r, -1);
    lua_pop(L, 1);
    if (S->loaded_ref >= 0) lua_rawgeti(L, LUA_REGISTRYINDEX, S->loaded_ref);
    else lua_pushnil(L);
    if (lua_type(L, -1) == LUA_TTABLE) visit(L, &r, -1);
    else {
        lua_pop(L, 1);
        lua_pushboolean(L, 0);
    }
    lua_rawseti(L, r.rec, 2);
    r.qhead = 3;
    while (r.ok && r.qhead < r.nodes) {
        luaL_checkstack(L, 8, "cannot record the environment");
        lua_Integer node = ++r.qhead;
        lua_rawgeti(L, r.rec, node);
        int x = lua_gettop(L);
        if (lua_type(L, x) == LUA_TTABLE) record_table(L, &r, x, node);
        else record_function(L, &r, x, node);
        lua_settop(L, x - 1);
    }
    lua_State *T = NULL;
    if (r.ok) {   /* the nodes, in order, on the stack of a thread the record holds */
        T = lua_newthread(L);
        lua_rawseti(L, r.rec, 0);
        if (!lua_checkstack(T, (int)(r.nodes - 3) + 16)) r.ok = 0;
        for (lua_Integer k = 4; r.ok && k <= r.nodes; k++) {
            lua_rawgeti(L, r.rec, k);
            lua_xmove(L, T, 1);
        }
    }
    int sealed = r.ok && r.arena_blocks && seal(L, S, &r);   /* else the arena's tables get images */
    if (r.ok) {
        drop(S);   /* (none was kept: no protection to undo) */
        S->reuse_T = T;
        lua_rawgeti(L, r.rec, 2);
        S->reuse_had_loaded = lua_toboolean(L, -1);
        lua_pop(L, 1);
        lua_pushvalue(L, r.rec);
        S->reuse_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        S->reuse_fp = r.fp;
        S->reuse_fp_len = r.len;
        S->reuse_held = 1;
        if (++S->reuse_gen == 0) S->reuse_gen = 1;   /* 0 names none */
        S->reuse_marks_at = S->array_marks;
        if (sealed) split_sealed(S);
    } else {
        free(r.fp);
        S->reuse_off = 1;   /* the same top level would record the same way next time */
    }
    lua_settop(L, top);
}

/* The length in words of the record entry at w. */
static size_t entry_length(const uint64_t *w) {
    switch (w[0]) {
    case ENTRY_TABLE: return 6 + 4 * (size_t)w[5];
    case ENTRY_FUNCTION: return 3 + 2 * (size_t)w[2];
    case ENTRY_CELLS: return 3 + 3 * (size_t)w[2];
    default: return 6 + (size_t)w[5];   /* ENTRY_IMAGE, ENTRY_SEALED */
    }
}

/* The record's tables whose blocks are all in the arena (ENTRY_SEALED, which hold the
 * table's address instead of an image) are write-protected when nothing else is in the arena
 * (after a full collection, if garbage of the top level's run is there). Returns 1 when they
 * are. Else each gets its image (ENTRY_IMAGE), within LSB_REUSE_MAX_IMAGE, and 0 is returned (with
 * r->ok cleared when the images do not fit or cannot be made). */
static int seal(lua_State *L, lsb_state *S, recorder *r) {
    if (lsb_tarena_protect(S->tarena, r->arena_blocks, r->arena_bytes)) return 1;
    lua_gc(L, LUA_GCCOLLECT, 0);
    if (lsb_tarena_protect(S->tarena, r->arena_blocks, r->arena_bytes)) return 1;
    size_t words = r->len;
    for (const uint64_t *e = r->fp; e < r->fp + r->len; e += entry_length(e))
        if (e[0] == ENTRY_SEALED) words += lsb_timage_words((const void *)(uintptr_t)e[6]);
    uint64_t *fp = malloc(words * sizeof *fp), *out = fp;
    size_t images = 0;
    if (!fp) {
        r->ok = 0;
        return 0;
    }
    for (const uint64_t *e = r->fp; e < r->fp + r->len; e += entry_length(e)) {
        size_t n = entry_length(e);
        if (e[0] != ENTRY_SEALED) {
            memcpy(out, e, n * sizeof *e);
            if (e[0] == ENTRY_IMAGE) images += n;
            out += n;
            continue;
        }
        const void *t = (const void *)(uintptr_t)e[6];
        size_t w = lsb_timage_words(t);
        memcpy(out, e, 6 * sizeof *e);
        out[0] = ENTRY_IMAGE;
        out[5] = w;
        if (w) lsb_timage_take(t, out + 6);
        images += 6 + w;
        out += 6 + w;
        if (!w) r->ok = 0;   /* cannot happen: it had one when recorded */
    }
    if (images > LSB_REUSE_MAX_IMAGE) r->ok = 0;
    free(r->fp);
    r->fp = fp;
    r->len = r->cap = (size_t)(out - fp);
    return 0;
}

/* The sealed record's protected tables leave S->reuse_fp for S->reuse_prot (node index and
 * json.array mark: all the check still reads for them). */
static void split_sealed(lsb_state *S) {
    uint64_t *w = S->reuse_fp, *end = w + S->reuse_fp_len, *out = w;
    size_t pairs = 0;
    for (const uint64_t *e = w; e < end; e += entry_length(e)) pairs += e[0] == ENTRY_SEALED;
    uint64_t *prot = malloc(2 * pairs * sizeof *prot);
    if (!prot) {   /* compared as nothing else: drop the record instead */
        lsb_tarena_unprotect(S->tarena);
        drop(S);
        return;
    }
    size_t k = 0;
    while (w < end) {
        size_t n = entry_length(w);
        if (w[0] == ENTRY_SEALED) {
            prot[k++] = w[1];
            prot[k++] = w[3];
        } else {
            memmove(out, w, n * sizeof *w);
            out += n;
        }
        w += n;
    }
    S->reuse_fp_len = (size_t)(out - S->reuse_fp);
    S->reuse_prot = prot;
    S->reuse_prot_len = k;
    S->reuse_protected = 1;
}

void lsb_env_enter(lua_State *L, lsb_state *S) {
    S->fresh_running = 0;   /* an earlier fresh run that failed */
    lsb_tarena_end(S->tarena);
    if (!S->reuse_off && !S->reuse_held && !S->reuse_lent && S->reuse_ref >= 0) {
        if (lua_rawgeti(L, LUA_REGISTRYINDEX, S->reuse_ref) == LUA_TTABLE) {
            lua_rawgeti(L, -1, 1);
            lsb_ref_replace(L, &S->env_ref);
            luaL_unref(L, LUA_REGISTRYINDEX, S->loaded_ref);
            S->loaded_ref = LUA_NOREF;
            if (lua_rawgeti(L, -1, 2) == LUA_TTABLE) S->loaded_ref = luaL_ref(L, LUA_REGISTRYINDEX);
            else lua_pop(L, 1);
            lua_pop(L, 1);
            S->reuse_held = 1;
            S->reuse_marks_at = S->array_marks;
            return;
        }
        lua_pop(L, 1);
    }
    unsigned impure = S->impure;
    if (S->reuse_images && !S->reuse_off && S->reuse_ref < 0 && !S->tarena_failed &&
        S->fresh_vector_bytes >= LSB_TARENA_MIN_BYTES) {   /* a large top level: its tables from the arena */
        if (!S->tarena && !(S->tarena = lsb_tarena_new())) S->tarena_failed = 1;
        if (S->tarena && !lsb_tarena_begin(S->tarena)) {
            lua_gc(L, LUA_GCCOLLECT, 0);   /* the last record's tables, garbage now */
            lsb_tarena_begin(S->tarena);
        }
    }
    lsb_run_chunk_fresh(L, S);
    if (!S->reuse_off && S->reuse_ref < 0 && S->impure == impure) record(L, S);   /* none kept or lent */
}

/* ---- checking (at the end of a call; no allocation, no error) ---- */

static inline __attribute__((always_inline)) int same_fp(lua_State *L, int idx, const uint64_t *w) {
    uint64_t tag, bits;
    fingerprint(L, idx, &tag, &bits);
    return tag == w[0] && bits == w[1];
}

/* Whether table node x is marked by json.array (in the ARRAYS set at `arrays`) as recorded. */
static int same_mark(lua_State *L, int x, int arrays, uint64_t marked) {
    lua_pushvalue(L, x);
    uint64_t now = lua_rawget(L, arrays) != LUA_TNIL;
    lua_pop(L, 1);
    return now == marked;
}

/* Table node x against its entry at w; returns the entry's length, or 0 when they differ (the
 * stack may then hold more than before). */
static size_t check_table(lua_State *L, int x, int arrays, const uint64_t *w) {
    uint64_t mt = 0;
    if (lua_getmetatable(L, x)) {
        mt = (uint64_t)(uintptr_t)lua_topointer(L, -1);
        lua_pop(L, 1);
    }
    if (mt != w[2]) return 0;
    if (arrays && !same_mark(L, x, arrays, w[3])) return 0;   /* json.array was called during the call */
    if (w[4] != LSB_REUSE_NO_LENGTH && (uint64_t)lua_rawlen(L, x) != w[4]) return 0;
    const uint64_t *m = w + 6, *end = m + 4 * w[5];
    lua_pushnil(L);
    while (lua_next(L, x)) {
        if (m == end || !same_fp(L, -2, m) || !same_fp(L, -1, m + 2)) return 0;
        lua_pop(L, 1);
        m += 4;
    }
    return m == end ? (size_t)(end - w) : 0;
}

/* Table node x against its image entry at w; returns the entry's length, or 0 when they differ. */
static size_t check_image(lua_State *L, int x, int arrays, const uint64_t *w) {
    if (arrays && !same_mark(L, x, arrays, w[3])) return 0;   /* json.array was called during the call */
    if (!lsb_timage_same(w + 6)) return 0;   /* members, metatable, blocks */
    if (w[4] != LSB_REUSE_NO_LENGTH && (uint64_t)lua_rawlen(L, x) != w[4]) return 0;
    return 6 + (size_t)w[5];
}

/* A Lua function's upvalues read in their cells (ENTRY_CELLS at w): the entry's length, or
 * 0 when one differs. */
static size_t check_cells(const uint64_t *w) {
    const uint64_t *m = w + 3, *end = m + 3 * w[2];
    for (; m < end; m += 3)
        if (!lsb_upcell_same((const void *)(uintptr_t)m[0], m[1], m[2])) return 0;
    return (size_t)(end - w);
}

/* Function node x against its entry at w; returns the entry's length, or 0 when they differ. */
static size_t check_function(lua_State *L, int x, const uint64_t *w) {
    const uint64_t *m = w + 3;
    for (uint64_t u = 1; u <= w[2]; u++, m += 2) {
        if (!lua_getupvalue(L, x, (int)u)) return 0;
        int same = same_fp(L, -1, m);
        lua_pop(L, 1);
        if (!same) return 0;
    }
    return (size_t)(m - w);
}

/* Whether everything recorded is as it was. Works on the record's thread T, whose stack holds
 * node k at index k - 3, and leaves that stack as it found it. */
static int unchanged(lua_State *L, lsb_state *S) {
    lua_State *T = S->reuse_T;
    if (!T) return 0;
    /* a require cache made during the call (none was recorded) is a change */
    if (!S->reuse_had_loaded && S->loaded_ref >= 0) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, S->loaded_ref);
        int made = lua_type(L, -1) == LUA_TTABLE;
        lua_pop(L, 1);
        if (made) return 0;
    }
    int nodes = lua_gettop(T), arrays = 0;
    if (!lua_checkstack(T, 12)) return 0;
    if (S->array_marks != S->reuse_marks_at) {
        lua_rawgetp(T, LUA_REGISTRYINDEX, &LSB_KEY_ARRAYS);
        arrays = lua_gettop(T);
    }
    int same = 1;
    if (S->reuse_protected) {   /* the protected tables: written at all, or marked by json.array */
        if (lsb_tarena_written(S->tarena)) same = 0;
        for (size_t i = 0; same && arrays && i < S->reuse_prot_len; i += 2)
            same = same_mark(T, (int)S->reuse_prot[i] - 3, arrays, S->reuse_prot[i + 1]);
    }
    const uint64_t *w = S->reuse_fp, *end = same ? w + S->reuse_fp_len : w;
    while (w < end) {
        int x = (int)w[1] - 3;
        size_t n = 0;   /* ENTRY_SEALED: never here (split_sealed) */
        switch (w[0]) {
        case ENTRY_IMAGE: n = check_image(T, x, arrays, w); break;
        case ENTRY_CELLS: n = check_cells(w); break;
        case ENTRY_TABLE: n = check_table(T, x, arrays, w); break;
        case ENTRY_FUNCTION: n = check_function(T, x, w); break;
        }
        if (!n) {
            same = 0;
            break;
        }
        w += n;
    }
    lua_settop(T, nodes);
    return same;
}

void lsb_env_leave(lua_State *L, lsb_state *S) {
    S->fresh_running = 0;   /* a fresh run that failed */
    lsb_tarena_end(S->tarena);
    if (!S->reuse_held) return;
    S->reuse_held = 0;
    int top = lua_gettop(L);
    int same = lua_checkstack(L, 12) && unchanged(L, S);
    lua_settop(L, top);
    if (same) {
        S->reuse_misses = 0;
        S->reuse_lent = 0;   /* back from a suspended call, if it was lent */
        return;
    }
    drop(S);
    if (++S->reuse_misses >= LSB_REUSE_MAX_MISSES) S->reuse_off = 1;
}

unsigned lsb_env_lend(lsb_state *S) {
    if (!S->reuse_held) return 0;
    S->reuse_held = 0;
    S->reuse_lent = 1;
    return S->reuse_gen;
}

static int holds(const lsb_state *S, unsigned held) { return held && S->reuse_lent && held == S->reuse_gen; }

void lsb_env_resume(lsb_state *S, unsigned held) {
    S->reuse_held = holds(S, held);   /* its end checks the environment, and gives it back when unchanged */
}

void lsb_env_abandon(lsb_state *S, unsigned held) {
    if (holds(S, held)) drop(S);
}

void lsb_env_forget(lsb_state *S) {
    drop(S);
    S->reuse_off = 0;
    S->reuse_misses = 0;
}

void lsb_env_free(lsb_state *S) {
    free(S->reuse_fp);
    S->reuse_fp = NULL;
    free(S->reuse_prot);
    S->reuse_prot = NULL;
}
