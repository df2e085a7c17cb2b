/*
 * The floor of a read-only filter on this machine: what any host built on liblua5.4 pays per
 * event at the least, measured beside what ours pays (issue: performance, 1M events/s/core).
 *
 *   floor_cost FILTER.lua EVENTS.ndjson [N] [ROUNDS]
 *
 * FILTER.lua defines transformEvent(event, metadata) reading only `type`, `userId` and
 * `anonymousId` (Bench/peer-project/transformations/read-only-filter.lua). Reads the first N
 * envelope lines of EVENTS.ndjson, then times ROUNDS interleaved rounds of three loops over them,
 * single-threaded, no I/O:
 *
 *   validate   lsb_json_envelope_indexed on each line: the exact validation and message index
 *              the stage makes of every line (an invalid line must be answered with an error,
 *              and a kept event is re-emitted as its input bytes);
 *   bare call  an ideal host's Lua call: a plain Lua 5.4 state (no sandbox, no count hook, no
 *              limits), one reused table per event holding only the three fields the script reads
 *              (their values found before timing), lua_pcall(transformEvent, event, nil). No
 *              per-event isolation, no laziness, no output: a lower bound for the call of any
 *              host that runs the script in liblua5.4;
 *   both       the two together per event: the floor of a read-only event before the line is
 *              read and the answer written.
 *
 * Prints the medians over the rounds of ns per event (CPU time of this process) and the events/s
 * one core could reach at that floor. Built and run by scripts/bench-floor.
 */
#include "harness.h"
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

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define FIELDS 3
static const char *const field_names[FIELDS] = {"type", "userId", "anonymousId"};

typedef struct {
    const char *line;
    size_t len;
    const char *val[FIELDS];   /* a field's string value (between its quotes), or NULL: absent */
    size_t vlen[FIELDS];
} event;

static uint64_t bits[2 * 128];
static uint32_t members[4 * LSB_JSON_INDEX_MEMBERS];
static lsb_json_index ix = {.quotes = bits, .brackets = bits + 128, .words = 128, .members = members};

/* Validates and indexes one line as the stage does; returns 0 when it is a valid envelope. */
static int validate(const event *e) {
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
    if (validate(e)) return 1;
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
    return 0;
}

typedef struct {
    lua_State *L;
    int fn, table, keys[FIELDS];   /* registry references */
} host;

/* The ideal host's call for one event; returns 1 when the script kept it. */
static int call(host *h, const event *e) {
    lua_State *L = h->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->fn);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->table);
    for (int f = 0; f < FIELDS; f++) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->keys[f]);
        if (e->val[f]) lua_pushlstring(L, e->val[f], e->vlen[f]);
        else lua_pushnil(L);
        lua_rawset(L, -3);
    }
    lua_pushnil(L);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        fprintf(stderr, "call failed: %s\n", lua_tostring(L, -1));
        exit(1);
    }
    int kept = lua_type(L, -1) == LUA_TTABLE;
    lua_pop(L, 1);
    return kept;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s FILTER.lua EVENTS.ndjson [N=20000] [ROUNDS=7]\n", argv[0]);
        return 2;
    }
    size_t want = argc > 3 ? (size_t)atol(argv[3]) : 20000;
    int rounds = argc > 4 ? atoi(argv[4]) : 7;
    if (rounds < 1 || rounds > 100) rounds = 7;
    size_t len;
    char *buf = slurp(argv[2], &len);
    if (!buf) {
        perror(argv[2]);
        return 1;
    }
    event *ev = calloc(want ? want : 1, sizeof *ev);
    size_t n = 0;
    for (char *p = buf, *end = buf + len; p < end && n < want;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        if (nl > p) {
            ev[n].line = p;
            ev[n].len = (size_t)(nl - p);
            if (prepare(&ev[n])) {
                fprintf(stderr, "line %zu is not a valid envelope with an indexed message\n", n + 1);
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
    for (int f = 0; f < FIELDS; f++) {
        lua_pushstring(h.L, field_names[f]);
        h.keys[f] = luaL_ref(h.L, LUA_REGISTRYINDEX);
    }

    double v[100], c[100], b[100];
    size_t kept = 0, bad = 0;
    for (size_t i = 0; i < n; i++) kept += call(&h, &ev[i]);   /* warm-up, and the answers' count */
    for (int r = 0; r < rounds; r++) {
        double t0 = cpu_ns();
        for (size_t i = 0; i < n; i++) bad += validate(&ev[i]);
        double t1 = cpu_ns();
        for (size_t i = 0; i < n; i++) call(&h, &ev[i]);
        double t2 = cpu_ns();
        for (size_t i = 0; i < n; i++) {
            bad += validate(&ev[i]);
            call(&h, &ev[i]);
        }
        double t3 = cpu_ns();
        v[r] = (t1 - t0) / (double)n;
        c[r] = (t2 - t1) / (double)n;
        b[r] = (t3 - t2) / (double)n;
    }
    if (bad) {
        fprintf(stderr, "%zu validations failed\n", bad);
        return 1;
    }
    double mv = median(v, rounds), mc = median(c, rounds), mb = median(b, rounds);
    printf("%zu events (%zu kept by the filter), %d rounds, CPU ns per event (medians):\n", n, kept, rounds);
    printf("  validate + index   %7.1f ns\n", mv);
    printf("  bare Lua call      %7.1f ns\n", mc);
    printf("  both               %7.1f ns  -> at most %.0f events/s on one core before reading and writing\n", mb,
           1e9 / mb);
    lua_close(h.L);
    free(ev);
    free(buf);
    return 0;
}
