/*
 * The floor of a read-only filter on this machine: a lower bound for what any host built on
 * liblua5.4 pays per event, measured beside what ours pays (issue: performance, 1M events/s/core).
 *
 *   floor_cost FILTER.lua EVENTS.ndjson [N] [ROUNDS]
 *
 * FILTER.lua defines transformEvent(event, metadata) reading only `type`, `userId` and, when
 * userId is not a non-empty string, `anonymousId` (Bench/peer-project/transformations/
 * read-only-filter.lua). Reads the first N envelope lines of EVENTS.ndjson, then times ROUNDS
 * interleaved rounds of these loops over them, single-threaded, no I/O:
 *
 *   validate        lsb_json_envelope on each line: exact validation, nothing recorded. Every
 *                   line must be validated: an invalid one is answered with an error, and a kept
 *                   event is re-emitted as its input bytes, which must be valid JSON;
 *   validate+index  lsb_json_envelope_indexed: the validation with the message's index, as the
 *                   stage makes it (the index serves lazy reads; a floor does not need it);
 *   bare call       an ideal host's calls: a plain Lua 5.4 state (no sandbox, no count hook, no
 *                   limits), one reused table per event holding only the fields the script will
 *                   read (values found before timing: a host would have to find them), and one
 *                   protected call per 200 events (a C loop of lua_call inside one lua_pcall: an
 *                   error would lose its batch, which no real host may do). No per-event
 *                   isolation, no output;
 *   floor           validate + bare call, a batch of 200 at a time;
 *   guarded call    the bare call plus the least that the product's guarantees need: one
 *                   protected call per event (an event's error must not cost another its
 *                   answer), the script's reads through __index (a host cannot know which fields
 *                   a script reads: the key is looked up among the message's top-level members,
 *                   its value made a string and cached), and the event's table emptied after
 *                   each call (nothing one call stores in it reaches the next). No sandboxed
 *                   environment, no limits, no output;
 *   guarded floor   validate + guarded call, a batch of 200 at a time.
 *
 * For callgrind (scripts/bench-floor counts instructions this way), the four loops' functions
 * are not inlined: validate, validate_indexed, call_all, guarded_all. With ROUNDS = 1 they run
 * 4, 2, 3 and 3 times per event (prepare, the warm-ups, and the timed loops).
 *
 * Prints the medians over the rounds of the CPU ns per event (this process's CPU clock) and the
 * events/s one core could reach at the floor. Built and run by scripts/bench-floor.
 */
#include "harness.h"
#include "lsb.h"
#include "lsb_json.h"
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <time.h>

static double cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

#define FIELDS 3
static const char *const field_names[FIELDS] = {"type", "userId", "anonymousId"};

typedef struct {
    const char *line;
    size_t len;
    const char *val[FIELDS];   /* a field's string value (between its quotes), or NULL: absent */
    size_t vlen[FIELDS];
    const char *msg;           /* the message object, and its top-level members as the index */
    uint32_t *members;         /* found them: key offset and length, value offset and length */
    int count;
} event;

static uint64_t bits[2 * 128];
static uint32_t members[4 * LSB_JSON_INDEX_MEMBERS];
static lsb_json_index ix = {.quotes = bits, .brackets = bits + 128, .words = 128, .members = members};

/* Validates one line (exactly, recording nothing); returns 0 when it is a valid envelope. */
__attribute__((noinline)) static int validate(const event *e) {
    int shape = 0;
    size_t ms, ml, ds, dl;
    char *err = lsb_json_envelope(e->line, e->len, &shape, &ms, &ml, &ds, &dl);
    if (err) {
        free(err);
        return 1;
    }
    return shape != 2;
}

/* Validates and indexes one line as the stage does; returns 0 when it is a valid envelope whose
 * message was indexed. */
__attribute__((noinline)) static int validate_indexed(const event *e) {
    int shape = 0;
    size_t ms, ml, ds, dl;
    char *err = lsb_json_envelope_indexed(e->line, e->len, &shape, &ms, &ml, &ds, &dl, &ix);
    if (err) {
        free(err);
        return 1;
    }
    return shape != 2 || !ix.json;
}

/* Finds the three fields' string values in the line's message index (before timing). */
static int prepare(event *e) {
    if (validate(e) || validate_indexed(e) || ix.count < 0) return 1;
    for (int f = 0; f < FIELDS; f++) {
        e->val[f] = NULL;
        for (int i = 0; i < ix.count; i++) {
            const uint32_t *m = &ix.members[4 * i];
            if (m[1] == strlen(field_names[f]) && memcmp(ix.json + m[0], field_names[f], m[1]) == 0 &&
                ix.json[m[2]] == '"') {
                e->val[f] = ix.json + m[2] + 1;   /* no escapes in the generated events' ids */
                e->vlen[f] = m[3] - 2;
            }
        }
    }
    e->msg = ix.json;
    e->count = ix.count;
    e->members = malloc(4 * sizeof(uint32_t) * (size_t)(ix.count ? ix.count : 1));
    if (!e->members) return 1;
    memcpy(e->members, ix.members, 4 * sizeof(uint32_t) * (size_t)ix.count);
    return 0;
}

static int usable(const event *e, int f) { return e->val[f] && e->vlen[f] > 0; }

typedef struct {
    lua_State *L;
    int fn, table, event, keys[FIELDS];   /* registry references */
    const event *ev;               /* the batch being called */
    size_t count, kept;
} host;

/* Sets field f of the table at the top to the event's value. */
static void set_field(lua_State *L, const host *h, const event *e, int f) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->keys[f]);
    lua_pushlstring(L, e->val[f], e->vlen[f]);
    lua_rawset(L, -3);
}

/* The ideal host's calls for one batch, inside one protected call: each event's table holds
 * exactly the fields the script reads (type, userId, and anonymousId when userId is unusable;
 * a field it does not read is left from an earlier event: it is never looked at). */
static int batch_body(lua_State *L) {
    host *h = lua_touserdata(L, 1);
    for (size_t i = 0; i < h->count; i++) {
        const event *e = &h->ev[i];
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->fn);
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->table);
        if (usable(e, 0)) set_field(L, h, e, 0);
        if (usable(e, 1)) set_field(L, h, e, 1);
        if (!usable(e, 1) && usable(e, 2)) set_field(L, h, e, 2);
        lua_pushnil(L);
        lua_call(L, 2, 1);
        h->kept += lua_type(L, -1) == LUA_TTABLE;
        lua_pop(L, 1);
    }
    return 0;
}

/* ---- the guarded call: what the product's guarantees add to the bare call, at their least ----
 * (see the top of the file). Emptying one table after each call measured cheaper than a fresh
 * table per event (which leaves garbage to collect), so the floor uses it. */

static const event *current;   /* the event being called */

static int event_index(lua_State *L) {
    size_t kn;
    const char *k = lua_tolstring(L, 2, &kn);
    if (!k) return 0;
    for (int i = 0; i < current->count; i++) {
        const uint32_t *m = &current->members[4 * i];
        if (m[1] == kn && memcmp(current->msg + m[0], k, kn) == 0) {
            const char *v = current->msg + m[2];
            if (*v == '"') lua_pushlstring(L, v + 1, m[3] - 2);   /* no escapes in these values */
            else lua_pushlstring(L, v, m[3]);                     /* not read by this script */
            lua_pushvalue(L, 2);
            lua_pushvalue(L, -2);
            lua_rawset(L, 1);
            return 1;
        }
    }
    return 0;
}

static int guarded_kept;

/* One event's guarded call (under its own lua_pcall). */
static int guarded_body(lua_State *L) {
    host *h = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->event);
    int t = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->fn);
    lua_pushvalue(L, t);
    lua_pushnil(L);
    lua_call(L, 2, 1);
    guarded_kept += lua_type(L, -1) == LUA_TTABLE;
    lua_pop(L, 1);
    lua_pushnil(L);   /* emptied for the next event: what this one's reads cached goes */
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, t);
    }
    return 0;
}

__attribute__((noinline)) static size_t guarded_all(host *h, const event *ev, size_t n) {
    guarded_kept = 0;
    for (size_t i = 0; i < n; i++) {
        current = &ev[i];
        lua_pushcfunction(h->L, guarded_body);
        lua_pushlightuserdata(h->L, h);
        if (lua_pcall(h->L, 1, 0, 0) != LUA_OK) {
            fprintf(stderr, "call failed: %s\n", lua_tostring(h->L, -1));
            exit(1);
        }
    }
    return (size_t)guarded_kept;
}

#define CALL_BATCH 200

/* Calls the script on events [0, n) in batches; returns how many it kept. */
__attribute__((noinline)) static size_t call_all(host *h, const event *ev, size_t n) {
    h->kept = 0;
    for (size_t at = 0; at < n; at += CALL_BATCH) {
        h->ev = ev + at;
        h->count = n - at < CALL_BATCH ? n - at : CALL_BATCH;
        lua_pushcfunction(h->L, batch_body);
        lua_pushlightuserdata(h->L, h);
        if (lua_pcall(h->L, 1, 0, 0) != LUA_OK) {
            fprintf(stderr, "call failed: %s\n", lua_tostring(h->L, -1));
            exit(1);
        }
    }
    return h->kept;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s FILTER.lua EVENTS.ndjson [N=20000] [ROUNDS=7]\n", argv[0]);
        return 2;
    }
    long asked = argc > 3 ? atol(argv[3]) : 20000;
    size_t want = asked > 0 ? (size_t)asked : 20000;
    int rounds = argc > 4 ? atoi(argv[4]) : 7;
    if (rounds < 1 || rounds > 100) rounds = 7;
    size_t len;
    char *buf = slurp(argv[2], &len);
    if (!buf) {
        perror(argv[2]);
        return 1;
    }
    event *ev = calloc(want, sizeof *ev);
    if (!ev) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    size_t n = 0, lineno = 0;
    for (char *p = buf, *end = buf + len; p < end && n < want;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        lineno++;
        if (nl > p) {
            ev[n].line = p;
            ev[n].len = (size_t)(nl - p);
            if (prepare(&ev[n])) {
                fprintf(stderr, "line %zu: not a valid envelope whose message the stage indexes (up to 8 KiB, 64 members)\n",
                        lineno);
                return 1;
            }
            n++;
        }
        p = nl + 1;
    }
    if (n == 0) {
        fprintf(stderr, "no events\n");
        return 1;
    }

    host h;
    h.L = luaL_newstate();
    luaL_openlibs(h.L);
    if (luaL_dofile(h.L, argv[1]) != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(h.L, -1));
        return 1;
    }
    if (lua_getglobal(h.L, "transformEvent") != LUA_TFUNCTION) {
        fprintf(stderr, "%s defines no transformEvent\n", argv[1]);
        return 1;
    }
    h.fn = luaL_ref(h.L, LUA_REGISTRYINDEX);
    lua_createtable(h.L, 0, FIELDS);
    h.table = luaL_ref(h.L, LUA_REGISTRYINDEX);
    lua_createtable(h.L, 0, 4);   /* the guarded call's event table, emptied after each call */
    lua_createtable(h.L, 0, 1);
    lua_pushcfunction(h.L, event_index);
    lua_setfield(h.L, -2, "__index");
    lua_setmetatable(h.L, -2);
    h.event = luaL_ref(h.L, LUA_REGISTRYINDEX);
    for (int f = 0; f < FIELDS; f++) {
        lua_pushstring(h.L, field_names[f]);
        h.keys[f] = luaL_ref(h.L, LUA_REGISTRYINDEX);
    }

    double v[100], x[100], c[100], b[100], g[100], gb[100];
    size_t bad = 0, kept = call_all(&h, ev, n);   /* warm-up, and the answers' count */
    if (guarded_all(&h, ev, n) != kept) {
        fprintf(stderr, "the guarded call kept other events than the bare call\n");
        return 1;
    }
    for (int r = 0; r < rounds; r++) {
        double t0 = cpu_ns();
        for (size_t i = 0; i < n; i++) bad += validate(&ev[i]);
        double t1 = cpu_ns();
        for (size_t i = 0; i < n; i++) bad += validate_indexed(&ev[i]);
        double t2 = cpu_ns();
        call_all(&h, ev, n);
        double t3 = cpu_ns();
        for (size_t at = 0; at < n; at += CALL_BATCH) {   /* the floor: a batch validated, then called */
            size_t count = n - at < CALL_BATCH ? n - at : CALL_BATCH;
            for (size_t i = at; i < at + count; i++) bad += validate(&ev[i]);
            call_all(&h, ev + at, count);
        }
        double t4 = cpu_ns();
        guarded_all(&h, ev, n);
        double t5 = cpu_ns();
        for (size_t at = 0; at < n; at += CALL_BATCH) {
            size_t count = n - at < CALL_BATCH ? n - at : CALL_BATCH;
            for (size_t i = at; i < at + count; i++) bad += validate(&ev[i]);
            guarded_all(&h, ev + at, count);
        }
        double t6 = cpu_ns();
        g[r] = (t5 - t4) / (double)n;
        gb[r] = (t6 - t5) / (double)n;
        v[r] = (t1 - t0) / (double)n;
        x[r] = (t2 - t1) / (double)n;
        c[r] = (t3 - t2) / (double)n;
        b[r] = (t4 - t3) / (double)n;
    }
    if (bad) {   /* the lines do not change: a failure here is a bug in this harness */
        fprintf(stderr, "%zu validations failed while timing\n", bad);
        return 1;
    }
    double mv = median(v, rounds), mx = median(x, rounds), mc = median(c, rounds), mb = median(b, rounds);
    double mg = median(g, rounds), mgb = median(gb, rounds);
    printf("%zu events (%zu kept by the filter), %d rounds, CPU ns per event (medians):\n", n, kept, rounds);
    printf("  validate           %7.1f ns\n", mv);
    printf("  validate + index   %7.1f ns  (as the stage does)\n", mx);
    printf("  bare Lua call      %7.1f ns\n", mc);
    printf("  floor              %7.1f ns  -> at most %.0f events/s on one core before reading and writing\n", mb,
           1e9 / mb);
    printf("  guarded Lua call   %7.1f ns\n", mg);
    printf("  guarded floor      %7.1f ns  -> at most %.0f events/s on one core before reading and writing\n", mgb,
           1e9 / mgb);
    lua_close(h.L);
    for (size_t i = 0; i < n; i++) free(ev[i].members);
    free(ev);
    free(buf);
    return 0;
}
