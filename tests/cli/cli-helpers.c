/* Helpers for the CLI end-to-end suites. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli-helpers.h"
#include "moelm-test.h"

char *cli_path(const char *dir, const char *name) { return g_build_filename(dir, name, NULL); }

char *cli_write(const char *dir, const char *name, const char *text)
{
  char *path = cli_path(dir, name);
  moelm_test_write_file(path, text, strlen(text));
  return path;
}

static int compare_names(gconstpointer a, gconstpointer b)
{
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

GPtrArray *cli_list_dir(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  if (d == NULL)
    return NULL;
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL)
    g_ptr_array_add(names, g_strdup(name));
  g_dir_close(d);
  g_ptr_array_sort(names, compare_names);
  return names;
}

int cli_count_lines(const char *text)
{
  int n = 0;
  const char *p = text;
  while (*p) {
    const char *nl = strchr(p, '\n');
    n++;
    if (nl == NULL)
      break;
    p = nl + 1;
  }
  return n;
}

gboolean cli_same_file(const char *a, const char *b)
{
  gsize la = 0, lb = 0;
  char *da = moelm_test_read_file(a, &la), *db = moelm_test_read_file(b, &lb);
  gboolean same = da && db && la == lb && memcmp(da, db, la) == 0;
  if (!same) {
    gsize i = 0;
    while (da && db && i < la && i < lb && da[i] == db[i])
      i++;
    g_printerr("\n  %s (%s, %" G_GSIZE_FORMAT " bytes) and %s (%s, %" G_GSIZE_FORMAT " bytes) differ at byte %"
               G_GSIZE_FORMAT "\n", a, da ? "exists" : "missing", la, b, db ? "exists" : "missing", lb, i);
  }
  g_free(da);
  g_free(db);
  return same;
}

gboolean cli_file_equals(const char *path, const void *expected, gsize len)
{
  gsize n = 0;
  char *data = moelm_test_read_file(path, &n);
  gboolean same = data && n == len && memcmp(data, expected, len) == 0;
  if (!same)
    g_printerr("\n  %s: %" G_GSIZE_FORMAT " bytes, expected %" G_GSIZE_FORMAT "\n", path, data ? n : 0, len);
  g_free(data);
  return same;
}

char *cli_generate_text(gsize bytes, guint32 seed)
{
  static const char *const stems[] = {"the", "of", "and", "model", "expert", "token", "gate", "über", "naïve",
                                      "数据", "layer", "mixture", "data", "train", "loss", "café", "ζeta"};
  GRand *rng = g_rand_new_with_seed(seed);
  GString *out = g_string_sized_new(bytes + 256);
  while (out->len < bytes) {
    guint32 r = g_rand_int_range(rng, 0, 100);
    if (r < 3) {
      g_string_append_c(out, '\n'); /* document boundary */
      continue;
    }
    int words = g_rand_int_range(rng, 1, 25);
    for (int w = 0; w < words; w++) {
      /* Zipf-like: small ids are frequent. */
      double u = g_rand_double(rng);
      guint id = (guint)(2000.0 * u * u * u);
      if (w > 0)
        g_string_append_c(out, g_rand_int_range(rng, 0, 40) == 0 ? '\t' : ' ');
      g_string_append(out, stems[id % G_N_ELEMENTS(stems)]);
      if (id >= G_N_ELEMENTS(stems))
        g_string_append_printf(out, "%u", id);
    }
    g_string_append(out, r < 10 ? "\r\n" : "\n");
  }
  g_rand_free(rng);
  return g_string_free(out, FALSE);
}

double cli_log_field(const char *line, const char *key)
{
  char *probe = g_strdup_printf("| %s ", key);
  const char *at = strstr(line, probe);
  const double v = at ? g_ascii_strtod(at + strlen(probe), NULL) : NAN;
  g_free(probe);
  return v;
}

char **cli_log_lines(const char *log, const char *needle)
{
  GPtrArray *out = g_ptr_array_new();
  char **lines = g_strsplit(log, "\n", -1);
  for (char **l = lines; *l; l++)
    if (strstr(*l, needle))
      g_ptr_array_add(out, g_strdup(*l));
  g_strfreev(lines);
  g_ptr_array_add(out, NULL);
  return (char **)g_ptr_array_free(out, FALSE);
}

int cli_count(const char *text, const char *needle)
{
  int n = 0;
  for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
    n++;
  return n;
}
