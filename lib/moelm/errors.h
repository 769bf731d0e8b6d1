/* moelm — error domain. Library code reports failures as GError in MOELM_ERROR and
 * returns FALSE/NULL; it never prints to stdout or exits. The message is one line that
 * names the file (or object) and the problem, ready for the CLI to print as it is. */
#ifndef MOELM_ERRORS_H
#define MOELM_ERRORS_H

#include <glib.h>

G_BEGIN_DECLS

#define MOELM_ERROR (moelm_error_quark())
GQuark moelm_error_quark(void);

typedef enum {
  MOELM_ERROR_IO,          /* open/read/write/rename/mmap failed */
  MOELM_ERROR_FORMAT,      /* a file does not have the expected format */
  MOELM_ERROR_CORRUPT,     /* a file has the right format but inconsistent content */
  MOELM_ERROR_INVALID_ARG, /* a bad option value or an impossible configuration */
  MOELM_ERROR_MISMATCH,    /* two things that must agree do not (vocab vs checkpoint, ...) */
  MOELM_ERROR_EXISTS,      /* refusing to overwrite */
  MOELM_ERROR_UNSUPPORTED, /* a feature this build or this backend does not have */
  MOELM_ERROR_NOMEM,
  MOELM_ERROR_FAILED       /* anything else */
} MoelmError;

/* Set *error from errno of a failed syscall: "PATH: WHAT: strerror(errsv)". */
void moelm_set_error_errno(GError **error, int errsv, const char *path, const char *what);

/* Prefix an existing error's message with "PREFIX: " (no-op when error is NULL/unset). */
void moelm_error_prefix(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

/* A copy of s (UTF-8) fit for a one-line message: control bytes as \xNN; with max_bytes > 0,
 * cut after about that many bytes with "..." (g_free). */
char *moelm_escape_controls(const char *s, gsize max_bytes);

/* Keep a message that quotes a file's strings on one line: its control bytes become \xNN
 * (no-op when error is NULL/unset). */
void moelm_error_escape_controls(GError **error);

G_END_DECLS

#endif
