#ifndef LSB_JSON_H
#define LSB_JSON_H
/* Byte-level JSON helpers shared by the decoder, encoder and scanner. */
#include <stddef.h>

#define LSB_JSON_MAX_DEPTH 200   /* input nesting */
#define LSB_JSON_MAX_OUT_DEPTH 100 /* output nesting (also catches cycles) */

/* Length of the valid UTF-8 sequence starting at p (lead byte >= 0x80), or 0 if invalid. */
size_t lsb_utf8_seq(const char *p, const char *end);
/* Writes code point cp as UTF-8 into out (>= 4 bytes); returns the length. */
size_t lsb_utf8_put(unsigned cp, char *out);
/* Decodes one escape at *p (pointing at the backslash), advancing *p. Returns 0, -1 for a
 * malformed escape, -2 for a lone surrogate. */
int lsb_json_unescape(const char **p, const char *end, unsigned *cp);
/* Whole-buffer UTF-8 validity. */
int lsb_utf8_valid(const char *s, size_t n);

/* Eight bytes at a time (SWAR): lsb_has_byte is non-zero when some byte of x equals the byte
 * replicated in b (LSB_ONES * c). Both tests may report extra bytes, never miss one. */
#include <stdint.h>
#include <string.h>
#define LSB_ONES 0x0101010101010101ULL
#define LSB_HIGHS 0x8080808080808080ULL
static inline uint64_t lsb_load8(const char *p) {
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}
static inline uint64_t lsb_has_byte(uint64_t x, uint64_t b) {
    uint64_t y = x ^ b;
    return (y - LSB_ONES) & ~y & LSB_HIGHS;
}
/* Any byte that ends a plain run of string text: '"', '\\', a control byte or non-ASCII. */
static inline uint64_t lsb_string_stop8(uint64_t x) {
    return lsb_has_byte(x, LSB_ONES * '"') | lsb_has_byte(x, LSB_ONES * '\\') |
           ((x - LSB_ONES * 0x20) & ~x & LSB_HIGHS) | (x & LSB_HIGHS);
}

/* Where an envelope's message object has its strings, brackets and members, found while
 * lsb_json_envelope_indexed validates it: the index and the member scan lsb_lazy_push would
 * otherwise compute (lsb_lazy.h), bit i standing for byte i of the message. */
#define LSB_JSON_INDEX_MEMBERS 64   /* LSB_LAZY_MAX_MEMBERS */
typedef struct lsb_json_index {
    uint64_t *quotes;     /* the caller's `words` words: the quotes that open or close a string */
    uint64_t *brackets;   /* the caller's `words` words: { } [ ] outside strings */
    size_t words;         /* only a message of at most 64 * words bytes is indexed */
    const char *json;     /* the indexed message's bytes (its first is '{'), or NULL: none */
    size_t len;           /* and their count; bits at len and after are clear */
    int compact;          /* no whitespace outside strings */
    int escapes;          /* some backslash occurs */
    uint32_t *members;    /* the caller's 4 * LSB_JSON_INDEX_MEMBERS: key offset and length, value
                           * offset and length (offsets into json; a key between its quotes) */
    int count;            /* members recorded, or -1: none (too many, a key with an escape or a
                           * key twice: the lazy table decodes those objects eagerly) */
    uint32_t height;      /* the message's nesting: 1 + the most containers open at once in a member */
} lsb_json_index;

/* One record of an lsb_split_index: the message's index as lsb_json_index holds it, followed
 * by its quote and bracket bitmaps (`words` uint64_t each) and its members (4 uint32_t each,
 * `count` of them when count > 0). */
typedef struct {
    uint32_t len, words;
    int32_t count;
    uint32_t height;
    uint8_t compact, escapes, pad[6];
} lsb_index_record;

/* Fills ix from a record of lsb_split_index for json[0, len); returns 0, or -1 when the record
 * is not for these bytes (ix untouched). ix points into the record. */
int lsb_json_index_from_record(const void *record, const char *json, size_t len, lsb_json_index *ix);

/* lsb_json_envelope (same answers and outputs) that also fills ix when the envelope is valid
 * and its message, the last "message" member, is an object that fits. */
char *lsb_json_envelope_indexed(const char *json, size_t len, int *shape, size_t *msg_start, size_t *msg_len,
                                size_t *md_start, size_t *md_len, lsb_json_index *ix);

/* The first byte at or after p (before end) that is not plain string text: the lowest flagged
 * byte of a SWAR test is always a real match. */
static inline const char *lsb_skip_plain(const char *p, const char *end) {
    while (end - p >= 8) {
        uint64_t m = lsb_string_stop8(lsb_load8(p));
        if (m) return p + (__builtin_ctzll(m) >> 3);
        p += 8;
    }
    while (p < end) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) return p;
        p++;
    }
    return p;
}

/* The float the JSON number literal [s, end) (syntax-checked; a fraction or exponent makes it a
 * float) stands for, when Clinger's fast path gives it exactly: 1 with *out, else 0 (strtod's
 * job). lsb_json_decode.c. */
int lsb_json_short_float(const char *s, const char *end, double *out);
/* 10^0 .. 10^22: every power of ten a double holds exactly (the float fast paths of the decoder
 * and encoder). */
extern const double lsb_pow10[23];

#endif
