/*
 * libFuzzer target for the JSON bridge: the byte scanners (validate, split, envelope),
 * canonicalisation, and a full call (JSON -> Lua table -> identity transformation -> JSON)
 * in one long-lived sandbox state, as the runtime uses them. Checks invariants, not just
 * crashes: valid input round-trips to canonical JSON that is valid and stable.
 *
 *   scripts/fuzz-json [SECONDS]
 */
#include "lsb.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lsb_state *S;

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "invariant broken: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    const char *json = (const char *)data;
    if (!S) {
        lsb_config cfg = {0};
        cfg.memory_limit = 32 << 20;
        cfg.time_limit_ns = 500000000ull;
        cfg.max_log_lines = 10;
        cfg.max_log_bytes = 1024;
        cfg.max_output_bytes = 1 << 20;
        char err[200];
        S = lsb_new(&cfg, err, sizeof err);
        check(S != NULL, "lsb_new");
        static const char src[] = "function transformEvent(e) return e end";
        lsb_report r;
        lsb_load(S, src, sizeof src - 1, "@fuzz.lua", (const char *const[]){"transformEvent"}, 1, &r);
        check(r.status == LSB_OK && r.entry_mask == 1, "load");
        lsb_report_clear(&r);
    }
    char *verr = lsb_json_validate(json, size);
    int valid = verr == NULL;
    free(verr);

    size_t *st = NULL, *ln = NULL;
    char *serr = NULL;
    long n = lsb_json_split_array(json, size, &st, &ln, &serr);
    for (long i = 0; i < n; i++) check(st[i] + ln[i] <= size, "split range");
    free(st);
    free(ln);
    free(serr);

    int shape;
    size_t ms, ml, ds, dl;
    char *eerr = lsb_json_envelope(json, size, &shape, &ms, &ml, &ds, &dl);
    check((eerr == NULL) == valid, "envelope and validate agree");
    if (!eerr && shape == 2) check(ms + ml <= size && (dl == 0 || ds + dl <= size), "envelope ranges");
    free(eerr);

    size_t clen = 0;
    char *cerr = NULL;
    char *canon = lsb_json_canonical(json, size, &clen, &cerr);
    if (valid && canon) {
        char *v2 = lsb_json_validate(canon, clen);
        check(v2 == NULL, "canonical output is valid JSON");
        free(v2);
        size_t c2len = 0;
        char *c2err = NULL;
        char *canon2 = lsb_json_canonical(canon, clen, &c2len, &c2err);
        check(canon2 && c2len == clen && memcmp(canon, canon2, clen) == 0, "canonical form is stable");
        free(canon2);
        free(c2err);
    }
    free(canon);
    free(cerr);

    if (valid && shape >= 1) {
        lsb_input in = {json, size, NULL, 0, 0};
        lsb_report r;
        lsb_call(S, "transformEvent", &in, 1, 0, &r);
        check(r.status == LSB_OK || r.status == LSB_ERR_OUTPUT || r.status == LSB_ERR_INPUT || r.status == LSB_ERR_MEMORY,
              "identity call: ok, or a clean output/input/memory error");
        if (r.status == LSB_OK && r.output_count == 1 && r.outputs[0].json) {
            char *v3 = lsb_json_validate(r.outputs[0].json, r.outputs[0].json_len);
            check(v3 == NULL, "encoded output is valid JSON");
            free(v3);
        }
        int poisoned = lsb_is_poisoned(S);
        lsb_report_clear(&r);
        if (poisoned) {   /* memory limit: start over with a fresh state */
            lsb_free(S);
            S = NULL;
        }
    }
    return 0;
}
