/*
 * A share of a batch in one C call (lsb_run_share): for each item, split and validate it, call
 * the entry point on it (one event each), and write the common answers (kept, dropped) straight
 * into one host buffer in the caller's format. Everything else (invalid input, errors, fan-out
 * with bad elements, other return types) is handed back as a full report for the caller to
 * answer, so the caller's rules for those stay in one place; a call suspended on a host request
 * is handed back as its invocation. No Swift frame runs per event.
 */
#include "lsb_internal.h"
#include "lsb_lazy.h"
#include "lsb_share.h"
#include <stdlib.h>
#include <string.h>

/* Writes the answers of a finished call that are common (kept, dropped) to b (a dropped one to
 * d when d is not NULL); returns 0, or 1 when the caller must answer from the report. */
static int answer_from(const lsb_report *r, const char *direct, const lsb_pieces *f, const char *md, size_t mdn,
                       lsb_bytes *b, lsb_bytes *d, lsb_answer *a) {
    if (r->status != LSB_OK) return 1;
    size_t count = 0;
    const char *one = NULL;   /* the single object's JSON: in the report, or left in the state's buffer */
    switch (r->shape) {
    case LSB_SHAPE_NIL: break;
    case LSB_SHAPE_OBJECT:
        if (r->output_count != 1 || r->outputs[0].error) return 1;
        one = r->outputs[0].json ? r->outputs[0].json : direct;
        if (!one) return 1;
        if (r->outputs[0].json_len && one[0] != '[') count = 1;   /* an empty json.array() drops */
        break;
    case LSB_SHAPE_SEQUENCE:
        for (size_t i = 0; i < r->output_count; i++)
            if (!r->outputs[i].json) return 1;   /* an element that is not an event: an error */
        count = r->output_count;
        break;
    default: return 1;
    }
    if (count == 0 && d) b = d;
    a->start = b->len;
    if (count == 0) {
        a->kind = LSB_ANSWER_DROPPED;
        if (lsb_put_dropped(b, f, md, mdn)) return -1;
    } else {
        a->kind = LSB_ANSWER_KEPT;
        for (size_t i = 0; i < count; i++) {
            if (i > 0 && lsb_put_piece(b, f->separator)) return -1;
            if (lsb_put_kept(b, f, one ? one : r->outputs[i].json, r->outputs[i].json_len, md, mdn)) return -1;
        }
    }
    a->outputs = count;
    a->len = b->len - a->start;
    return lsb_put_piece(b, f->separator);
}

uint64_t lsb_clock_ns(void) { return lsb_now_ns(); }

#define SHARE_INDEX_WORDS 128   /* messages up to 8 KiB are indexed while validated (lsb_lazy's STACK_WORDS) */

size_t lsb_run_share(lsb_state *S, const char *entry, const lsb_item *items, size_t count, int lines,
                     const lsb_answer_format *fmt, lsb_answer *answers, lsb_bytes *bytes, lsb_bytes *dropped) {
    size_t i = 0;
    uint64_t bits[2 * SHARE_INDEX_WORDS];   /* the message index: quotes, then brackets */
    uint32_t members[4 * LSB_JSON_INDEX_MEMBERS];
    lsb_json_index ix = {.quotes = bits, .brackets = bits + SHARE_INDEX_WORDS, .words = SHARE_INDEX_WORDS,
                         .members = members};
    const lsb_pieces pf = lsb_measure_format(fmt);
    for (; i < count; i++) {
        if (lsb_is_poisoned(S)) break;
        lsb_answer *a = &answers[i];
        memset(a, 0, sizeof *a);
        lsb_input in;
        lsb_json_index rix = {0};
        ix.json = NULL;
        if (lsb_split_item(&items[i], lines, &in, &ix, &rix)) {
            a->kind = LSB_ANSWER_INVALID;
            continue;
        }
        S->call_ended_ns = 0;
        S->direct_json = NULL;
        S->direct_output = 1;
        lsb_lazy_offer(S, ix.json ? &ix : rix.json ? &rix : NULL);
        a->invocation = lsb_begin(S, entry, &in, 1, 0, &a->report);
        lsb_lazy_offer(S, NULL);
        S->direct_output = 0;
        a->started_ns = S->call_started_ns;   /* the call's own clock readings: no extra ones */
        if (a->invocation) {   /* suspended on a host request: the caller answers it */
            a->duration_ns = lsb_now_ns() - a->started_ns;
            a->kind = LSB_ANSWER_PENDING;
            continue;
        }
        a->duration_ns = (S->call_ended_ns ? S->call_ended_ns : lsb_now_ns()) - a->started_ns;
        a->peak_memory = a->report.peak_memory;
        const char *md = in.context ? in.context : pf.no_metadata.s;
        size_t mdn = in.context ? in.context_len : pf.no_metadata.n;
        size_t mark = bytes->len, dmark = dropped ? dropped->len : 0;
        const char *direct = S->direct_json;
        int r = answer_from(&a->report, direct, &pf, md, mdn, bytes, dropped, a);
        if (r == 0) {
            lsb_report_clear(&a->report);
        } else {
            if (direct && a->report.output_count == 1 && !a->report.outputs[0].json && !a->report.outputs[0].error)
                a->report.outputs[0].json = lsb_strndup(direct, a->report.outputs[0].json_len);   /* the report owns its bytes */
            bytes->len = mark;   /* a partial answer (host memory ran out) is dropped */
            if (dropped) dropped->len = dmark;
            a->kind = LSB_ANSWER_REPORT;
            a->start = a->len = a->outputs = 0;
        }
    }
    return i;
}
