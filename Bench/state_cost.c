/*
 * Cold start and idle cost of a transformation's state, measured on the sandbox's C API
 * (what a new transformation version costs the stage before its first event):
 *
 *   cold start   lsb_new (hardened state, standard library, allowlist) + lsb_load (compile
 *                and run the file's top level, which requires its libraries), per state;
 *   first call   one event through the fresh state;
 *   idle heap    the state's Lua heap after that call (lsb_memory_used);
 *   idle RSS     growth of the process's resident memory per warm state, with N kept alive.
 *
 *   state_cost FILE.lua LIBDIR EVENT.json [N]
 *
 * Built and run by scripts/bench-states. Prints medians and p99 over N states.
 */
#include "lsb.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p) { return v[(int)(p * (n - 1))]; }

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: state_cost FILE.lua LIBDIR EVENT.json [N]\n");
        return 2;
    }
    int n = argc > 4 ? atoi(argv[4]) : 1000;
    size_t srclen, evlen;
    char *src = slurp(argv[1], &srclen), *ev = slurp(argv[3], &evlen);
    if (!src || !ev || n < 1) {
        fprintf(stderr, "state_cost: cannot read %s or %s\n", argv[1], argv[3]);
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
    lsb_state **states = calloc((size_t)n, sizeof *states);
    double *cold = calloc((size_t)n, sizeof *cold), *first = calloc((size_t)n, sizeof *first);
    double *heap = calloc((size_t)n, sizeof *heap);
    long rss_before = rss_kib();
    for (int i = 0; i < n; i++) {
        char err[256];
        double t0 = now_us();
        lsb_state *S = lsb_new(&cfg, err, sizeof err);
        if (!S) {
            fprintf(stderr, "lsb_new: %s\n", err);
            return 1;
        }
        lsb_report r;
        lsb_load(S, src, srclen, chunk, entries, 2, &r);
        double t1 = now_us();
        if (r.status != LSB_OK) {
            fprintf(stderr, "load: %s\n", r.message ? r.message : "?");
            return 1;
        }
        lsb_report_clear(&r);
        lsb_input in = {ev, evlen, NULL, 0, 1};
        lsb_call(S, "transformEvent", &in, 1, 0, &r);
        double t2 = now_us();
        if (r.status != LSB_OK) {
            fprintf(stderr, "call: %s\n", r.message ? r.message : "?");
            return 1;
        }
        lsb_report_clear(&r);
        cold[i] = t1 - t0;
        first[i] = t2 - t1;
        heap[i] = (double)lsb_memory_used(S);
        states[i] = S;
    }
    long rss_after = rss_kib();
    qsort(cold, (size_t)n, sizeof *cold, cmp);
    qsort(first, (size_t)n, sizeof *first, cmp);
    qsort(heap, (size_t)n, sizeof *heap, cmp);
    printf("states            %d (kept alive)\n", n);
    printf("cold start        median %.1f us, p99 %.1f us  (lsb_new + load + libraries)\n", pct(cold, n, 0.5), pct(cold, n, 0.99));
    printf("first call        median %.1f us, p99 %.1f us\n", pct(first, n, 0.5), pct(first, n, 0.99));
    printf("idle Lua heap     median %.1f KiB per state\n", pct(heap, n, 0.5) / 1024);
    printf("idle RSS          %.1f KiB per state (process RSS %ld -> %ld KiB)\n", (double)(rss_after - rss_before) / n,
           rss_before, rss_after);
    printf("10,000 states     ~%.0f MiB of RSS\n", (double)(rss_after - rss_before) / n * 10000 / 1024);
    for (int i = 0; i < n; i++) lsb_free(states[i]);
    return 0;
}
