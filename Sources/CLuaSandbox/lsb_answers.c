/*
 * The answers the C share loops write (lsb_share.h), and the split of an item into its event and
 * metadata.
 */
#include "lsb_share.h"
#include <stdlib.h>
#include <string.h>

static lsb_piece measured(const char *s) { return (lsb_piece){s, strlen(s)}; }

lsb_pieces lsb_measure_format(const lsb_answer_format *f) {
    return (lsb_pieces){measured(f->kept_open), measured(f->kept_mid), measured(f->kept_close), measured(f->dropped_open),
                        measured(f->dropped_member), measured(f->dropped_close), measured(f->no_metadata), measured(f->separator)};
}

static int is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* The metadata object with `member` added as its last member. */
static int put_dropped_metadata(lsb_bytes *b, const char *md, size_t n, lsb_piece member) {
    size_t close = n;
    while (close > 0 && md[close - 1] != '}') close--;
    if (close == 0) return lsb_buf_put(b, md, n);   /* not an object: echoed as is */
    close--;
    size_t open = 0;
    while (open < close && md[open] != '{') open++;
    int empty = 1;
    for (size_t i = open + 1; i < close; i++)
        if (!is_ws(md[i])) { empty = 0; break; }
    if (lsb_buf_put(b, md, close) || (!empty && lsb_buf_put(b, ",", 1)) || lsb_put_piece(b, member)) return -1;
    return lsb_buf_put(b, "}", 1);
}

int lsb_put_kept(lsb_bytes *b, const lsb_pieces *f, const char *event, size_t n, const char *md, size_t mdn) {
    if (lsb_put_piece(b, f->kept_open) || lsb_buf_put(b, event, n) || lsb_put_piece(b, f->kept_mid) || lsb_buf_put(b, md, mdn))
        return -1;
    return lsb_put_piece(b, f->kept_close);
}

int lsb_put_dropped(lsb_bytes *b, const lsb_pieces *f, const char *md, size_t mdn) {
    if (lsb_put_piece(b, f->dropped_open) || put_dropped_metadata(b, md, mdn, f->dropped_member)) return -1;
    return lsb_put_piece(b, f->dropped_close);
}

int lsb_split_item(const lsb_item *it, int lines, lsb_input *in, lsb_json_index *ix, lsb_json_index *rix) {
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
