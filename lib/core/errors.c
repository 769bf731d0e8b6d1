/* moelm — the error domain and helpers to build one-line messages. */
#include "config.h"

#include <string.h>

#include "moelm/errors.h"

G_DEFINE_QUARK(moelm-error-quark, moelm_error)

void moelm_set_error_errno(GError **error, int errsv, const char *path, const char *what)
{
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: %s: %s", path, what, g_strerror(errsv));
}

void moelm_error_prefix(GError **error, const char *fmt, ...)
{
  if (error == NULL || *error == NULL)
    return;
  va_list ap;
  va_start(ap, fmt);
  char *prefix = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  char *msg = g_strdup_printf("%s: %s", prefix, (*error)->message);
  g_free((*error)->message);
  (*error)->message = msg;
  g_free(prefix);
}

char *moelm_escape_controls(const char *s, gsize max_bytes)
{
  GString *out = g_string_new(NULL);
  gsize n = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++, n++) {
    if (max_bytes > 0 && n >= max_bytes && (*p & 0xc0) != 0x80) { /* cut between UTF-8 characters */
      g_string_append(out, "...");
      break;
    }
    if (*p < 0x20 || *p == 0x7f)
      g_string_append_printf(out, "\\x%02x", *p);
    else
      g_string_append_c(out, (char)*p);
  }
  return g_string_free(out, FALSE);
}

void moelm_error_escape_controls(GError **error)
{
  if (error == NULL || *error == NULL)
    return;
  char *escaped = moelm_escape_controls((*error)->message, 0);
  g_free((*error)->message);
  (*error)->message = escaped;
}
