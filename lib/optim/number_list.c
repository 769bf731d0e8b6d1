/* moelm — parsing "(0.9, 0.98)"-style number lists without a Python evaluator. */
#include "config.h"

#include <math.h>

#include "moelm/errors.h"
#include "optim/number_list.h"

static const char *skip_spaces(const char *p)
{
  while (g_ascii_isspace(*p))
    p++;
  return p;
}

gboolean moelm_parse_number_list(const char *text, double *out, int max, int *n, GError **error)
{
  const char *p = skip_spaces(text);
  char close = 0;
  if (*p == '(' || *p == '[') {
    close = *p == '(' ? ')' : ']';
    p = skip_spaces(p + 1);
  }
  int count = 0;
  while (*p != '\0' && *p != close) {
    char *end = NULL;
    double v = g_ascii_strtod(p, &end);
    if (end == p) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "expected a number at '%s'", p);
      return FALSE;
    }
    if (!isfinite(v)) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "'%.*s' is not a finite number",
                  (int)(end - p), p);
      return FALSE;
    }
    if (count == max) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "more than %d value%s", max,
                  max == 1 ? "" : "s");
      return FALSE;
    }
    out[count++] = v;
    p = skip_spaces(end);
    if (*p != ',')
      break;
    p = skip_spaces(p + 1);
  }
  if (close != 0) {
    if (*p != close) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                  *p == '\0' ? "missing '%c'" : "expected ',' or '%c'", close);
      return FALSE;
    }
    p = skip_spaces(p + 1);
  }
  if (*p != '\0') {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "unexpected '%s'", p);
    return FALSE;
  }
  if (count == 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "no value");
    return FALSE;
  }
  *n = count;
  return TRUE;
}
