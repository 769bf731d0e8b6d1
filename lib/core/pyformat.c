/* moelm — Python's number and string formatting, so the log lines read exactly
 * as fairseq's ("{:.3}%" of the replaced tokens, the argparse Namespace dump). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moelm/pyformat.h"

/* Remove trailing zeros after a decimal point; keep `min_frac` digits after it (0 also
 * drops the point itself). */
static void strip_fraction_zeros(char *s, int min_frac)
{
  char *dot = strchr(s, '.');
  if (dot == NULL)
    return;
  char *end = s + strlen(s);
  while (end > dot + 1 + min_frac && end[-1] == '0')
    end--;
  if (end == dot + 1 && min_frac == 0)
    end--;
  *end = '\0';
}

char *moelm_py_format_g3(double x)
{
  const int precision = 3;
  if (isnan(x))
    return g_strdup("nan");
  if (isinf(x))
    return g_strdup(x < 0 ? "-inf" : "inf");
  if (x == 0.0)
    return g_strdup(signbit(x) ? "-0.0" : "0.0");
  /* Round to `precision` significant digits first: the exponent that decides between fixed
   * and scientific notation is the one of the rounded value (99.96 -> "1e+02"). */
  char sci[64];
  snprintf(sci, sizeof sci, "%.*e", precision - 1, x);
  char *e = strchr(sci, 'e');
  int exponent = atoi(e + 1);
  if (exponent < -4 || exponent >= precision - 1) {
    /* Python's format type None switches to scientific at exp >= precision - 1. */
    *e = '\0';
    strip_fraction_zeros(sci, 0);
    return g_strdup_printf("%se%c%02d", sci, exponent < 0 ? '-' : '+', abs(exponent));
  }
  char fixed[64];
  snprintf(fixed, sizeof fixed, "%.*f", precision - 1 - exponent, x);
  if (strchr(fixed, '.') == NULL)
    return g_strdup_printf("%s.0", fixed);
  strip_fraction_zeros(fixed, 1);
  return g_strdup(fixed);
}

char *moelm_py_repr_str(const char *s)
{
  if (s == NULL)
    return g_strdup("None");
  /* Python prefers single quotes and switches to double quotes only when the text holds a
   * single quote and no double quote. */
  char quote = (strchr(s, '\'') && !strchr(s, '"')) ? '"' : '\'';
  GString *out = g_string_new(NULL);
  g_string_append_c(out, quote);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    unsigned char c = *p;
    if (c == '\\' || c == (unsigned char)quote) {
      g_string_append_c(out, '\\');
      g_string_append_c(out, (char)c);
    } else if (c == '\n') {
      g_string_append(out, "\\n");
    } else if (c == '\r') {
      g_string_append(out, "\\r");
    } else if (c == '\t') {
      g_string_append(out, "\\t");
    } else if (c < 0x20 || c == 0x7f) {
      g_string_append_printf(out, "\\x%02x", c);
    } else if (c == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
      /* C1 control characters U+0080-U+009F are not printable either. */
      g_string_append_printf(out, "\\x%02x", p[1]);
      p++;
    } else {
      g_string_append_c(out, (char)c);
    }
  }
  g_string_append_c(out, quote);
  return g_string_free(out, FALSE);
}

static int compare_items(gconstpointer a, gconstpointer b)
{
  const char *x = *(const char *const *)a, *y = *(const char *const *)b;
  gsize nx = strcspn(x, "="), ny = strcspn(y, "=");
  int c = strncmp(x, y, MIN(nx, ny));
  if (c != 0)
    return c;
  return (nx > ny) - (nx < ny);
}

char *moelm_py_namespace_line(GPtrArray *items)
{
  g_ptr_array_sort(items, compare_items);
  GString *out = g_string_new("Namespace(");
  for (guint i = 0; i < items->len; i++) {
    if (i > 0)
      g_string_append(out, ", ");
    g_string_append(out, g_ptr_array_index(items, i));
  }
  g_string_append_c(out, ')');
  return g_string_free(out, FALSE);
}

char *moelm_py_repr_float(double x)
{
  if (isnan(x))
    return g_strdup("nan");
  if (isinf(x))
    return g_strdup(x < 0 ? "-inf" : "inf");
  if (x == 0.0)
    return g_strdup(signbit(x) ? "-0.0" : "0.0");
  /* The fewest significant digits that read back as x (what Python's repr() prints). */
  char sci[64];
  int precision;
  for (precision = 1; precision < 17; precision++) {
    snprintf(sci, sizeof sci, "%.*e", precision - 1, x);
    if (g_ascii_strtod(sci, NULL) == x)
      break;
  }
  snprintf(sci, sizeof sci, "%.*e", precision - 1, x);
  char *e = strchr(sci, 'e');
  int exponent = atoi(e + 1);
  *e = '\0';
  GString *digits = g_string_new(NULL); /* d1 d2 d3 ...: x = ±d1.d2d3... × 10^exponent */
  for (const char *p = sci; *p; p++)
    if (g_ascii_isdigit(*p))
      g_string_append_c(digits, *p);
  while (digits->len > 1 && digits->str[digits->len - 1] == '0')
    g_string_truncate(digits, digits->len - 1);
  GString *out = g_string_new(x < 0 ? "-" : "");
  int n = (int)digits->len;
  if (exponent < -4 || exponent >= 16) {
    g_string_append_c(out, digits->str[0]);
    if (n > 1)
      g_string_append_printf(out, ".%s", digits->str + 1);
    g_string_append_printf(out, "e%c%02d", exponent < 0 ? '-' : '+', abs(exponent));
  } else if (exponent >= 0) {
    for (int i = 0; i <= exponent; i++)
      g_string_append_c(out, i < n ? digits->str[i] : '0');
    g_string_append_c(out, '.');
    g_string_append(out, exponent + 1 < n ? digits->str + exponent + 1 : "0");
  } else {
    g_string_append(out, "0.");
    for (int i = 0; i < -exponent - 1; i++)
      g_string_append_c(out, '0');
    g_string_append(out, digits->str);
  }
  g_string_free(digits, TRUE);
  return g_string_free(out, FALSE);
}
