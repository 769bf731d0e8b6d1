/* Hostile checkpoints for the safety suites: copies of a real checkpoint with one metadata
 * member, one metadata value or one weight changed, written by the test itself. */
#ifndef MOELM_TESTS_SAFETY_CRAFTED_H
#define MOELM_TESTS_SAFETY_CRAFTED_H

#include <glib.h>

/* DIR/NAME: SRC with member MEMBER of the JSON object under metadata KEY set to the JSON text
 * VALUE (NULL: the member removed). Returns the new path (g_free). */
char *crafted_member(const char *dir, const char *name, const char *src, const char *key, const char *member,
                     const char *value);
/* DIR/NAME: SRC with metadata KEY's whole value replaced by TEXT (any bytes, NULL: removed). */
char *crafted_meta(const char *dir, const char *name, const char *src, const char *key, const char *text);
/* DIR/NAME: SRC with element `index` of the F32 tensor TENSOR set to `value`. */
char *crafted_weight(const char *dir, const char *name, const char *src, const char *tensor, gsize index,
                     float value);

/* Assert: exit status `status`, stderr holds exactly one "error:" line (after any warnings),
 * and it contains every needle of the NULL-terminated list. CRAFTED_VERBOSE=1 in the
 * environment prints every stderr checked. */
void crafted_check_error(int rc, const char *err, int status, const char *const *needles);

/* Run `moelm ARGS` and check it as crafted_check_error does. */
void crafted_check_fails(const char *const *args, int status, const char *const *needles);

#endif
