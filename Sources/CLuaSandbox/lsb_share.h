#ifndef LSB_SHARE_H
#define LSB_SHARE_H
/* What the C share loops (lsb_share.c: one event per call; lsb_batch_share.c: a whole share as
 * one transformBatch call) have in common: the answer format's pieces and the answers written
 * with them, and the split of an item into its event and metadata. Not part of the public API. */
#include "lsb_internal.h"
#include "lsb_json.h"

/* A piece of the answer format, measured once per share. */
typedef struct {
    const char *s;
    size_t n;
} lsb_piece;

typedef struct {
    lsb_piece kept_open, kept_mid, kept_close, dropped_open, dropped_member, dropped_close, no_metadata, separator;
} lsb_pieces;

lsb_pieces lsb_measure_format(const lsb_answer_format *f);

static inline int lsb_put_piece(lsb_bytes *b, lsb_piece p) { return lsb_buf_put(b, p.s, p.n); }

/* One kept answer: kept_open EVENT kept_mid METADATA kept_close. 0, or -1 when out of memory. */
int lsb_put_kept(lsb_bytes *b, const lsb_pieces *f, const char *event, size_t n, const char *md, size_t mdn);

/* The dropped answer: dropped_open METADATA-with-dropped_member dropped_close. 0, or -1. */
int lsb_put_dropped(lsb_bytes *b, const lsb_pieces *f, const char *md, size_t mdn);

/* Finds the event and its metadata in an item; returns 0, or 1 when it is not usable input.
 * An envelope's message is indexed into ix on the way (lsb_json_envelope_indexed; ix->json is
 * left NULL when it was not); an event's index found while its request was split is read into
 * rix (pointing into the record). */
int lsb_split_item(const lsb_item *it, int lines, lsb_input *in, lsb_json_index *ix, lsb_json_index *rix);

#endif
