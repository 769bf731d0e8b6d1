/* moelm — a strict RFC 8259 syntax check run before json-glib sees a header.
 * json-glib is lenient (comments, single quotes, leading zeros, text after the root value,
 * integers that silently wrap) and recursive (deep nesting exhausts the stack); a file
 * format reader must reject all of that, so headers pass through this check first. */
#ifndef MOELM_JSON_STRICT_H
#define MOELM_JSON_STRICT_H

#include <glib.h>

G_BEGIN_DECLS

/* TRUE when text[0..len) is exactly one JSON value (surrounded by optional whitespace)
 * nested at most max_depth deep, with every integer literal within int64 and no \u0000
 * in strings. The text must already be valid UTF-8. On failure *error (MOELM_ERROR_FORMAT)
 * says "at byte N: what" without a file name; the caller prefixes it. */
gboolean moelm_json_check_strict(const char *text, gsize len, int max_depth, GError **error);

G_END_DECLS

#endif
