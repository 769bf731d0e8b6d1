/* moelm — Python's str.isspace() set on UTF-8 text (internal to lib/data).
 * The set: \t \n \v \f \r, \x1c-\x1f, space, U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028,
 * U+2029, U+202F, U+205F, U+3000. */
#ifndef MOELM_DATA_UNICODE_SPACE_H
#define MOELM_DATA_UNICODE_SPACE_H

#include <glib.h>

G_BEGIN_DECLS

/* Byte length of the whitespace character starting at p (avail bytes readable), 0 if the
 * character there is not whitespace. */
gsize moelm_space_len(const char *p, gsize avail);

/* Byte length of the whitespace character that ends at s + len (valid UTF-8), 0 if none. */
gsize moelm_space_len_before(const char *s, gsize len);

G_END_DECLS

#endif
