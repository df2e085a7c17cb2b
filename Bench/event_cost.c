/*
 * Per-event cost of the sandbox engine alone, on its C API (no Swift, no I/O in the timed loop):
 * the floor that `transform run` / `transform serve` add their own work to.
 *
 *   event_cost FILE.lua LIBDIR EVENTS.ndjson [N] [ROUNDS]
 *
 * Loads FILE.lua (with `require` from LIBDIR) into one state, as a worker does, reads the first N
 * lines of EVENTS.ndjson ({message, metadata} envelopes are unwrapped: the message is the event,
 * the metadata its context, as the stage passes them), then runs every event through
 * lsb_call("transformEvent", one event, not batched) in ROUNDS interleaved rounds of each mode:
 *
 *   eager   validated = 0: the sandbox validates the JSON and decodes it into Lua tables, and
 *           encodes what the script returns;
 *   lazy    validated = 1: the JSON was validated by the caller (here lsb_json_envelope, outside
 *           the timed loop, as the stage's one pass over each line does); objects are decoded as
 *           they are read, and unchanged ones written back from their input bytes.
 *
 * Before timing, one pass checks that both modes give the same answers (kept/dropped/error, and
 * the same output JSON once canonicalised): lazy output keeps input key order, eager sorts keys.
 * Prints medians over the rounds of events/s by wall clock and per CPU-second of the process
 * (the harness is single-threaded, so the latter is events/s per core even on a busy machine),
 * and the lazy/eager ratio. Built and run by scripts/bench-engine.
 */
#include "lsb.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"

static double now_s(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct {
    const char *msg;
    size_t msg_len;
    const char *md;    /* NULL when the line is a bare event */
    size_t md_len;
} event;

/* Answer of one call in a comparable form: 'd' dropped, 'e' error, else the canonical JSON of
 * its outputs joined by newlines (malloc'd). */
static char *answer(lsb_report *r) {
    if (r->status != LSB_OK) return strdup("e");
    if (r->shape == LSB_SHAPE_NIL || r->output_count == 0) return strdup("d");
    size_t cap = 64, n = 0;
    char *s = malloc(cap);
    for (size_t i = 0; i < r->output_count; i++) {
        if (!r->outputs[i].json) {
            free(s);
            return strdup("e");
        }
        size_t clen;
        char *err = NULL;
        char *c = lsb_json_canonical(r->outputs[i].json, r->outputs[i].json_len, &clen, &err);
        if (!c) {
            free(err);
            free(s);
            return strdup("e");
        }
        while (n + clen + 2 > cap) s = realloc(s, cap *= 2);
        memcpy(s + n, c, clen);
        n += clen;
        s[n++] = '\n';
        free(c);
    }
    s[n] = 0;
    return s;
}

/* One pass over every event in one mode: counts, and the answers when asked. Returns 0, or -1
 * when the state was poisoned (a limit or an internal error). */
static int pass(lsb_state *S, event *ev, int n, int validated, char **answers, long *kept, long *errors) {
    for (int i = 0; i < n; i++) {
        lsb_input in = {.json = ev[i].msg, .json_len = ev[i].msg_len, .context = ev[i].md, .context_len = ev[i].md_len,
                        .validated = validated};
        lsb_report r;
        lsb_call(S, "transformEvent", &in, 1, 0, &r);
        if (r.status != LSB_OK) (*errors)++;
        else if (r.output_count > 0) (*kept)++;
        if (answers) answers[i] = answer(&r);
        lsb_report_clear(&r);
        if (lsb_is_poisoned(S)) {
            fprintf(stderr, "event_cost: state poisoned at event %d\n", i);
            return -1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: event_cost FILE.lua LIBDIR EVENTS.ndjson [N] [ROUNDS]\n");
        return 2;
    }
    int want = argc > 4 ? atoi(argv[4]) : 20000;
    int rounds = argc > 5 ? atoi(argv[5]) : 5;
    size_t srclen, flen;
    char *src = slurp(argv[1], &srclen), *file = slurp(argv[3], &flen);
    if (!src || !file || want < 1 || rounds < 1) {
        fprintf(stderr, "event_cost: cannot read %s or %s\n", argv[1], argv[3]);
        return 2;
    }

    /* Events: one per non-blank line; validated (and envelopes split) here, untimed. */
    event *ev = calloc((size_t)want, sizeof *ev);
    int n = 0;
    size_t bytes = 0;
    for (char *p = file, *end = file + flen; p < end && n < want;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        if (len > 0) {
            int shape;
            size_t ms, ml, ds, dl;
            char *err = lsb_json_envelope(p, len, &shape, &ms, &ml, &ds, &dl);
            if (err) {
                fprintf(stderr, "event_cost: line %d: %s\n", n + 1, err);
                return 2;
            }
            if (shape == 2) {
                ev[n] = (event){p + ms, ml, dl ? p + ds : NULL, dl};
            } else {
                ev[n] = (event){p, len, NULL, 0};
            }
            bytes += ev[n].msg_len;
            n++;
        }
        p = nl ? nl + 1 : end;
    }
    if (n == 0) {
        fprintf(stderr, "event_cost: no events in %s\n", argv[3]);
        return 2;
    }

    char chunk[4096];
    snprintf(chunk, sizeof chunk, "@%s", argv[1]);
    lsb_config cfg = {0};
    cfg.memory_limit = 64u << 20;
    cfg.time_limit_ns = 1000000000ull;
    cfg.max_log_lines = 200;
    cfg.max_log_bytes = 32 << 10;
    cfg.max_output_bytes = 8u << 20;
    cfg.loader = load_library;
    cfg.loader_ctx = argv[2];
    cfg.max_host_calls = 20;
    const char *entries[] = {"transformEvent", "transformBatch"};
    char err[256];
    lsb_state *S = lsb_new(&cfg, err, sizeof err);
    if (!S) {
        fprintf(stderr, "lsb_new: %s\n", err);
        return 1;
    }
    lsb_report r;
    lsb_load(S, src, srclen, chunk, entries, 2, &r);
    if (r.status != LSB_OK || !(r.entry_mask & 1)) {
        fprintf(stderr, "load: %s\n", r.message ? r.message : "no transformEvent");
        return 1;
    }
    lsb_report_clear(&r);

    /* Same answers in both modes (this pass also warms the state and the caches). */
    char **eager_ans = calloc((size_t)n, sizeof *eager_ans), **lazy_ans = calloc((size_t)n, sizeof *lazy_ans);
    long kept = 0, errors = 0, k2 = 0, e2 = 0;
    if (pass(S, ev, n, 0, eager_ans, &kept, &errors) || pass(S, ev, n, 1, lazy_ans, &k2, &e2)) return 1;
    int differ = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(eager_ans[i], lazy_ans[i]) != 0) {
            if (differ++ < 3)
                fprintf(stderr, "event_cost: event %d: eager and lazy answers differ:\n  eager %.300s\n  lazy  %.300s\n", i + 1,
                        eager_ans[i], lazy_ans[i]);
        }
        free(eager_ans[i]);
        free(lazy_ans[i]);
    }
    if (differ) {
        fprintf(stderr, "event_cost: %d of %d events answered differently by eager and lazy\n", differ, n);
        return 1;
    }

    double *wall[2], *cpu[2];
    for (int m = 0; m < 2; m++) {
        wall[m] = calloc((size_t)rounds, sizeof(double));
        cpu[m] = calloc((size_t)rounds, sizeof(double));
    }
    for (int k = 0; k < rounds; k++) {
        for (int j = 0; j < 2; j++) {
            int m = (k + j) % 2; /* alternate which mode goes first */
            long kk = 0, ee = 0;
            double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
            if (pass(S, ev, n, m, NULL, &kk, &ee)) return 1;
            double c1 = now_s(CLOCK_PROCESS_CPUTIME_ID), w1 = now_s(CLOCK_MONOTONIC);
            wall[m][k] = n / (w1 - w0);
            cpu[m][k] = n / (c1 - c0);
        }
    }
    double we = median(wall[0], rounds), wl = median(wall[1], rounds);
    double ce = median(cpu[0], rounds), cl = median(cpu[1], rounds);
    printf("%s: %d events (~%zu bytes), %ld kept, %ld dropped, %ld errors; medians of %d rounds\n", argv[1], n,
           bytes / (size_t)n, kept, n - kept - errors, errors, rounds);
    printf("  eager (validated=0)  %10.0f events/s  %10.0f events/cpu-s  %6.2f us/event\n", we, ce, 1e6 / ce);
    printf("  lazy  (validated=1)  %10.0f events/s  %10.0f events/cpu-s  %6.2f us/event\n", wl, cl, 1e6 / cl);
    printf("  lazy / eager         %10.2fx            %10.2fx\n", wl / we, cl / ce);
    lsb_free(S);
    return 0;
}
