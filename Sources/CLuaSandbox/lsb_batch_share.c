/*
 * A share of a batch as one transformBatch call, in C (lsb_run_batch): split and validate every
 * item (indexing each event on the way, so its lazy table need not index it again), call the
 * entry point once on the valid ones, attribute the returned events to their inputs and write
 * each input's answers (kept, dropped) in input order straight into the host's buffers. A call
 * that failed, or returned anything but nil, a table or a sequence of tables, is handed back as
 * its report; one suspended on a host request as its invocation. No Swift frame runs per event.
 */
#include "lsb_job.h"
#include "lsb_lazy.h"
#include "lsb_share.h"
#include <stdlib.h>
#include <string.h>

#define BATCH_INDEX_WORDS 128   /* messages up to 8 KiB are indexed while validated (as lsb_run_share) */

/* Where one valid item's index lives while the share is split: in the record its request's split
 * made (ix points there), or copied into the share's blob (offsets, fixed up once the blob stops
 * growing). */
typedef struct {
    lsb_json_index ix;
    size_t bits_at, members_at;   /* in the blob, when in_blob */
    int in_blob;
} held_index;

/* Splits and validates the items: the valid ones' inputs and indexes, in item order; returns how
 * many are valid, or -1 when host memory ran out. answers[i] is INVALID for the others. */
static long split_items(const lsb_item *items, size_t count, int lines, lsb_answer *answers, lsb_input *ins,
                        held_index *held, size_t *valid, lsb_buf *blob) {
    uint64_t bits[2 * BATCH_INDEX_WORDS];
    uint32_t members[4 * LSB_JSON_INDEX_MEMBERS];
    long n = 0;
    for (size_t i = 0; i < count; i++) {
        memset(&answers[i], 0, sizeof answers[i]);
        lsb_json_index ix = {.quotes = bits, .brackets = bits + BATCH_INDEX_WORDS, .words = BATCH_INDEX_WORDS,
                             .members = members};
        lsb_json_index rix = {0};
        held_index *h = &held[n];
        memset(h, 0, sizeof *h);
        if (lsb_split_item(&items[i], lines, &ins[n], &ix, &rix)) {
            answers[i].kind = LSB_ANSWER_INVALID;
            continue;
        }
        if (ix.json) {   /* indexed while validated: its words and members go to the blob */
            size_t words = (ix.len + 63) / 64, nm = ix.count > 0 ? (size_t)ix.count : 0;
            h->ix = ix;
            h->in_blob = 1;
            h->bits_at = blob->len;
            if (lsb_buf_put(blob, (const char *)ix.quotes, words * 8) || lsb_buf_put(blob, (const char *)ix.brackets, words * 8))
                return -1;
            h->members_at = blob->len;
            if (nm && lsb_buf_put(blob, (const char *)ix.members, nm * 4 * sizeof(uint32_t))) return -1;
            h->ix.words = words;
        } else if (rix.json) {
            h->ix = rix;
        }
        valid[n++] = i;
    }
    return n;
}

/* The index of each valid item, pointing into the blob or the split's records, or NULL. */
static void fix_up(held_index *held, size_t n, const lsb_buf *blob, const lsb_json_index **out) {
    for (size_t k = 0; k < n; k++) {
        held_index *h = &held[k];
        out[k] = NULL;
        if (h->in_blob) {
            h->ix.quotes = (uint64_t *)(void *)(blob->data + h->bits_at);
            h->ix.brackets = h->ix.quotes + h->ix.words;
            h->ix.members = (uint32_t *)(void *)(blob->data + h->members_at);
        }
        if (h->ix.json) out[k] = &h->ix;
    }
}

/* How many events the finished call returned, in r->outputs (0 for nil or an empty
 * json.array()); -1 when the caller must answer from the report (a failure, another type, an
 * element that is not an event). */
static long returned_events(const lsb_report *r) {
    if (r->status != LSB_OK) return -1;
    switch (r->shape) {
    case LSB_SHAPE_NIL: return 0;
    case LSB_SHAPE_OBJECT:
        if (r->output_count != 1 || !r->outputs[0].json) return -1;
        return r->outputs[0].json_len && r->outputs[0].json[0] != '[' ? 1 : 0;   /* an empty json.array() drops */
    case LSB_SHAPE_SEQUENCE:
        for (size_t i = 0; i < r->output_count; i++)
            if (!r->outputs[i].json) return -1;
        return (long)r->output_count;
    default: return -1;
    }
}

/* Writes every valid item's answers in item order: its events (those attributed to it, in the
 * order returned) as kept answers, or the dropped answer; each input's followed by the
 * separator. An event is attributed to the input it came from (r->outputs[o].origin, a position
 * among the call's inputs), else to the input at its own position (the last one past the end).
 * Returns 0, or -1 when host memory ran out. */
static int write_answers(const lsb_report *r, size_t events, const lsb_pieces *f, const lsb_input *ins, const size_t *valid,
                         size_t n, lsb_answer *answers, lsb_bytes *b, lsb_bytes *d) {
    /* one block: first[n + 1], next[n], owner[events], order[events] */
    size_t *first = calloc(2 * n + 1 + 2 * events, sizeof *first);
    if (!first) return -1;
    size_t *next = first + n + 1, *owner = next + n, *order = owner + events;
    /* a counting sort of the events by owner, stable: order[first[k] ..< first[k+1]] are input k's */
    for (size_t o = 0; o < events; o++) {
        long g = r->outputs[o].origin;
        owner[o] = g >= 0 && (size_t)g < n ? (size_t)g : (o < n ? o : n - 1);
        first[owner[o] + 1]++;
    }
    for (size_t k = 0; k < n; k++) first[k + 1] += first[k];
    memcpy(next, first, n * sizeof *next);
    for (size_t o = 0; o < events; o++) order[next[owner[o]]++] = o;
    int rc = -1;
    for (size_t k = 0; k < n; k++) {
        lsb_answer *a = &answers[valid[k]];
        const lsb_input *in = &ins[k];
        const char *md = in->context ? in->context : f->no_metadata.s;
        size_t mdn = in->context ? in->context_len : f->no_metadata.n;
        size_t count = first[k + 1] - first[k];
        lsb_bytes *to = count == 0 && d ? d : b;
        a->start = to->len;
        a->outputs = count;
        if (count == 0) {
            a->kind = LSB_ANSWER_DROPPED;
            if (lsb_put_dropped(to, f, md, mdn)) goto out;
        } else {
            a->kind = LSB_ANSWER_KEPT;
            for (size_t e = first[k]; e < first[k + 1]; e++) {
                const lsb_output *o = &r->outputs[order[e]];
                if ((e > first[k] && lsb_put_piece(to, f->separator)) || lsb_put_kept(to, f, o->json, o->json_len, md, mdn))
                    goto out;
            }
        }
        a->len = to->len - a->start;
        if (lsb_put_piece(to, f->separator)) goto out;
    }
    rc = 0;
out:
    free(first);
    return rc;
}

lsb_invocation *lsb_run_batch(lsb_state *S, const char *entry, const lsb_item *items, size_t count, int lines,
                              const lsb_answer_format *fmt, lsb_answer *answers, lsb_bytes *bytes, lsb_bytes *dropped,
                              lsb_report *report) {
    memset(report, 0, sizeof *report);
    size_t slots = count ? count : 1;
    lsb_input *ins = malloc(slots * sizeof *ins);
    held_index *held = malloc(slots * sizeof *held);
    size_t *valid = malloc(slots * sizeof *valid);
    const lsb_json_index **indexes = malloc(slots * sizeof *indexes);
    lsb_buf blob = {0};
    lsb_invocation *inv = NULL;
    long n = ins && held && valid && indexes ? split_items(items, count, lines, answers, ins, held, valid, &blob) : -1;
    if (n < 0) {   /* out of host memory: the call's report says so, for every item */
        for (size_t i = 0; i < count; i++) {
            memset(&answers[i], 0, sizeof answers[i]);
            answers[i].kind = LSB_ANSWER_REPORT;
        }
        report->status = LSB_ERR_INTERNAL;
        report->message = lsb_strndup("out of host memory", 18);
        goto out;
    }
    if (n == 0) goto out;   /* nothing valid: no call */
    fix_up(held, (size_t)n, &blob, indexes);
    S->call_ended_ns = 0;
    inv = lsb_begin_indexed(S, entry, ins, indexes, (size_t)n, 1, report);
    lsb_lazy_offer(S, NULL);   /* an index offered to a push that raised is not left behind */
    uint64_t started = S->call_started_ns;
    uint64_t duration = (!inv && S->call_ended_ns ? S->call_ended_ns : lsb_now_ns()) - started;
    const lsb_pieces pf = lsb_measure_format(fmt);
    long events = inv ? -1 : returned_events(report);
    size_t mark = bytes->len, dmark = dropped ? dropped->len : 0;
    int written = events >= 0 && write_answers(report, (size_t)events, &pf, ins, valid, (size_t)n, answers, bytes, dropped) == 0;
    if (!written) {
        bytes->len = mark;   /* a partial answer (host memory ran out) is dropped */
        if (dropped) dropped->len = dmark;
    }
    for (long k = 0; k < n; k++) {
        lsb_answer *a = &answers[valid[k]];
        if (!written) {
            a->kind = inv ? LSB_ANSWER_PENDING : LSB_ANSWER_REPORT;
            a->start = a->len = a->outputs = 0;
        }
        a->started_ns = started;
        a->duration_ns = duration;
        a->peak_memory = report->peak_memory;
    }
    if (written) lsb_report_clear(report);
out:
    free(ins);
    free(held);
    free(valid);
    free(indexes);
    free(blob.data);
    return inv;
}
