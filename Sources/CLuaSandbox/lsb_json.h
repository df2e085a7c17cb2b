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

#endif
