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
#include <stdlib.h>
#include <string.h>

/* A piece of the answer format, measured once per share. */
typedef struct {
    const char *s;
    size_t n;
} piece;

typedef struct {
    piece kept_open, kept_mid, kept_close, dropped_open, dropped_member, dropped_close, no_metadata, separator;
} pieces;

static piece measured(const char *s) { return (piece){s, strlen(s)}; }

static pieces measure(const lsb_answer_format *f) {
    return (pieces){measured(f->kept_open), measured(f->kept_mid), measured(f->kept_close), measured(f->dropped_open),
                    measured(f->dropped_member), measured(f->dropped_close), measured(f->no_metadata), measured(f->separator)};
}

static int puts_(lsb_bytes *b, piece p) { return lsb_buf_put(b, p.s, p.n); }

static int is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* The metadata object with fmt->dropped_member added as its last member. */
static int put_dropped_metadata(lsb_bytes *b, const char *md, size_t n, piece member) {
    size_t close = n;
    while (close > 0 && md[close - 1] != '}') close--;
    if (close == 0) return lsb_buf_put(b, md, n);   /* not an object: echoed as is */
    close--;
    size_t open = 0;
    while (open < close && md[open] != '{') open++;
    int empty = 1;
    for (size_t i = open + 1; i < close; i++)
        if (!is_ws(md[i])) { empty = 0; break; }
    if (lsb_buf_put(b, md, close) || (!empty && lsb_buf_put(b, ",", 1)) || puts_(b, member)) return -1;
    return lsb_buf_put(b, "}", 1);
}

/* Writes the answers of a finished call that are common (kept, dropped) to b (a dropped one to
 * d when d is not NULL); returns 0, or 1 when the caller must answer from the report. */
static int answer_from(const lsb_report *r, const char *direct, const pieces *f, const char *md, size_t mdn,
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
        if (puts_(b, f->dropped_open) || put_dropped_metadata(b, md, mdn, f->dropped_member) || puts_(b, f->dropped_close))
            return -1;
    } else {
        a->kind = LSB_ANSWER_KEPT;
        for (size_t i = 0; i < count; i++) {
            if (i > 0 && puts_(b, f->separator)) return -1;
            if (puts_(b, f->kept_open) || lsb_buf_put(b, one ? one : r->outputs[i].json, r->outputs[i].json_len) || puts_(b, f->kept_mid) ||
                lsb_buf_put(b, md, mdn) || puts_(b, f->kept_close))
                return -1;
        }
    }
    a->outputs = count;
    a->len = b->len - a->start;
    return puts_(b, f->separator);
}

/* Finds the event and its metadata in an item; returns 0, or 1 when it is not usable input.
 * An envelope's message is indexed into ix on the way (lsb_json_envelope_indexed); an event's
 * index found while its request was split is read into rix (pointing into the record). */
static int split_item(const lsb_item *it, int lines, lsb_input *in, lsb_json_index *ix, lsb_json_index *rix) {
    memset(in, 0, sizeof *in);
    in->validated = 1;
    if (!lines) {
        char *err = it->validated ? NULL : lsb_json_validate(it->json, it->json_len);
        if (err) { free(err); return 1; }
        if (it->validated && it->index) lsb_json_index_from_record(it->index, it->json, it->json_len, rix);
        in->json = it->json;
        in->json_len = it->json_len;
        in->context = it->context;
        in->context_len = it->context_len;
        return 0;
    }
    int shape;
    size_t ms = 0, ml = 0, ds = 0, dl = 0;
    char *err = lsb_json_envelope_indexed(it->json, it->json_len, &shape, &ms, &ml, &ds, &dl, ix);
    if (err) { free(err); return 1; }
    if (shape == 0) return 1;
    if (shape == 1) {
        in->json = it->json;
        in->json_len = it->json_len;
        return 0;
    }
    in->json = it->json + ms;
    in->json_len = ml;
    if (dl && it->json[ds] != 'n') {   /* "metadata": null is no metadata */
        if (it->json[ds] != '{') return 1;
        in->context = it->json + ds;
        in->context_len = dl;
    }
    return 0;
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
    const pieces pf = measure(fmt);
    for (; i < count; i++) {
        if (lsb_is_poisoned(S)) break;
        lsb_answer *a = &answers[i];
        memset(a, 0, sizeof *a);
        lsb_input in;
        lsb_json_index rix = {0};
        ix.json = NULL;
        if (split_item(&items[i], lines, &in, &ix, &rix)) {
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
