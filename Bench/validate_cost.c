/*
 * Cost of the validating scan alone: lsb_json_envelope (or lsb_json_validate with -v, or
 * lsb_json_envelope_indexed with -i, which also indexes the message for lsb_lazy_push) over
 * every line of an NDJSON file, ROUNDS times. Meant for callgrind, which counts the
 * instructions (Ir) per event; it also prints the wall time per event.
 *
 *   clang -O2 -I Sources/CLuaSandbox/include -I Sources/CLuaSandbox $(pkg-config --cflags lua5.4) \
 *     Bench/validate_cost.c Sources/CLuaSandbox/lsb_*.c $(pkg-config --libs lua5.4) -lm -lpthread -o validate_cost
 *   python3 ../shared/bench/gen_events.py 2000 --envelope > events.ndjson
 *   valgrind --tool=callgrind --toggle-collect=lsb_json_envelope ./validate_cost events.ndjson 1
 *     (Ir of lsb_json_envelope and what it calls, divided by the event count printed; with -i:
 *     ./validate_cost events.ndjson 1 -i and --toggle-collect=lsb_json_envelope_indexed)
 */
#include "harness.h"
#include "lsb.h"
#include "lsb_json.h"
#include <time.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s EVENTS.ndjson [ROUNDS=1] [-v|-i]\n", argv[0]);
        return 2;
    }
    int rounds = argc > 2 ? atoi(argv[2]) : 1;
    int plain = argc > 3 && strcmp(argv[3], "-v") == 0, indexed = argc > 3 && strcmp(argv[3], "-i") == 0;
    uint64_t bits[2 * 128];
    uint32_t members[4 * LSB_JSON_INDEX_MEMBERS];
    lsb_json_index ix = {.quotes = bits, .brackets = bits + 128, .words = 128, .members = members};
    size_t len;
    char *buf = slurp(argv[1], &len);
    if (!buf) {
        perror(argv[1]);
        return 1;
    }
    size_t cap = 1024, n = 0, *starts = malloc(cap * sizeof *starts), *lens = malloc(cap * sizeof *lens);
    for (char *p = buf, *end = buf + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        if (nl > p) {
            if (n == cap) {
                cap *= 2;
                starts = realloc(starts, cap * sizeof *starts);
                lens = realloc(lens, cap * sizeof *lens);
            }
            starts[n] = (size_t)(p - buf);
            lens[n++] = (size_t)(nl - p);
        }
        p = nl + 1;
    }
    unsigned long invalid = 0, envelopes = 0, bytes = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < rounds; r++)
        for (size_t i = 0; i < n; i++) {
            int shape = 0;
            size_t ms = 0, ml = 0, ds = 0, dl = 0;
            char *err = plain     ? lsb_json_validate(buf + starts[i], lens[i])
                        : indexed ? lsb_json_envelope_indexed(buf + starts[i], lens[i], &shape, &ms, &ml, &ds, &dl, &ix)
                                  : lsb_json_envelope(buf + starts[i], lens[i], &shape, &ms, &ml, &ds, &dl);
            if (err) {
                invalid++;
                free(err);
            }
            envelopes += shape == 2;
            bytes += lens[i];
        }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    unsigned long calls = (unsigned long)rounds * n;
    printf("%lu calls (%zu events x %d), %.0f bytes/event, %lu invalid, %lu envelopes, %.1f ns/event\n",
           calls, n, rounds, (double)bytes / (double)calls, invalid, envelopes, ns / (double)calls);
    free(buf);
    free(starts);
    free(lens);
    return invalid != 0;
}
