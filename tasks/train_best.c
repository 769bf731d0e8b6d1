/* moelm — the best-checkpoint metric: its names, its value in a valid line, comparisons. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "moelm/errors.h"
#include "moelm/checkpoint.h"
#include "train_best.h"

typedef struct {
  const char *name;
  size_t offset; /* in MoelmValidStats */
  int digits;    /* as the valid line rounds it */
} Metric;

static const Metric metrics[] = {
  {"loss", offsetof(MoelmValidStats, loss), 3},
  {"nll_loss", offsetof(MoelmValidStats, loss), 3},
  {"ppl", offsetof(MoelmValidStats, ppl), 2},
  {"wps", offsetof(MoelmValidStats, wps), 1},
  {"wpb", offsetof(MoelmValidStats, wpb), 1},
  {"bsz", offsetof(MoelmValidStats, bsz), 1},
  {"num_updates", offsetof(MoelmValidStats, num_updates), 0},
};

static const Metric *find(const char *name)
{
  for (gsize i = 0; name && i < G_N_ELEMENTS(metrics); i++)
    if (strcmp(metrics[i].name, name) == 0)
      return &metrics[i];
  return NULL;
}

gboolean moelm_best_metric_check(const char *name, GError **error)
{
  if (find(name))
    return TRUE;
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
              "--best-checkpoint-metric %s: not a field of the valid line (choose from %s)", name ? name : "(null)",
              MOELM_BEST_METRICS);
  return FALSE;
}

int moelm_best_metric_digits(const char *name)
{
  const Metric *m = find(name);
  return m ? m->digits : 3;
}

double moelm_best_metric_value(const MoelmValidStats *s, const char *name)
{
  const Metric *m = find(name);
  return m ? *(const double *)((const char *)s + m->offset) : NAN;
}

gboolean moelm_best_better(double a, double b, gboolean maximize)
{
  return maximize ? a > b : a < b;
}

gboolean moelm_best_not_worse(double a, double b, gboolean maximize)
{
  return maximize ? a >= b : a <= b;
}

static void kept_free(gpointer p)
{
  MoelmKeptBest *k = p;
  g_free(k->name);
  g_free(k);
}

/* "checkpoint.best_{metric}_{number}.pt" or its "-shared.pt" form; the digit after the 3
 * decimals is part of the number. */
static MoelmKeptBest *parse_kept(const char *name, const char *prefix)
{
  if (!g_str_has_prefix(name, prefix))
    return NULL;
  const char *num = name + strlen(prefix);
  char *end = NULL;
  const double key = g_ascii_strtod(num, &end);
  const char *dot = end ? strchr(num, '.') : NULL;
  if (end == num || dot == NULL || end - dot != 5 || !isfinite(key))
    return NULL; /* not {value:.3f}{digit} */
  if (strcmp(end, ".pt") != 0 && strcmp(end, "-shared.pt") != 0)
    return NULL;
  MoelmKeptBest *k = g_new0(MoelmKeptBest, 1);
  k->name = g_strdup_printf("%.*s.pt", (int)(end - name), name);
  k->key = key;
  char *trimmed = g_strndup(num, (gsize)(end - num - 1)); /* without the digit */
  k->value = g_ascii_strtod(trimmed, NULL);
  g_free(trimmed);
  return k;
}

/* best first; data: the gboolean maximize */
static int kept_order(gconstpointer a, gconstpointer b, gpointer data)
{
  const MoelmKeptBest *x = *(MoelmKeptBest *const *)a, *y = *(MoelmKeptBest *const *)b;
  if (x->key == y->key)
    return strcmp(x->name, y->name);
  return moelm_best_better(x->key, y->key, *(const gboolean *)data) ? -1 : 1;
}

GPtrArray *moelm_best_kept_list(const char *save_dir, const char *metric, gboolean maximize)
{
  GPtrArray *out = g_ptr_array_new_with_free_func(kept_free);
  GDir *d = g_dir_open(save_dir, 0, NULL);
  if (d == NULL)
    return out;
  char *prefix = g_strdup_printf("checkpoint.best_%s_", metric);
  GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal); /* NAME.pt and NAME-shared.pt once */
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL) {
    MoelmKeptBest *k = parse_kept(name, prefix);
    if (k && !g_hash_table_contains(seen, k->name)) {
      g_ptr_array_add(out, k);
      g_hash_table_add(seen, k->name);
    } else if (k) {
      kept_free(k);
    }
  }
  g_hash_table_unref(seen);
  g_dir_close(d);
  g_free(prefix);
  g_ptr_array_sort_with_data(out, kept_order, &maximize);
  return out;
}

char *moelm_best_kept_name(const char *save_dir, const char *metric, gboolean maximize, int keep, double value,
                           guint64 digit_seed)
{
  char num[G_ASCII_DTOSTR_BUF_SIZE];
  g_ascii_formatd(num, sizeof num, "%.3f", value);
  GPtrArray *kept = moelm_best_kept_list(save_dir, metric, maximize);
  gboolean wanted = (int)kept->len < keep;
  if (!wanted && kept->len > 0) {
    const MoelmKeptBest *worst = g_ptr_array_index(kept, MIN((guint)keep, kept->len) - 1);
    wanted = moelm_best_not_worse(g_ascii_strtod(num, NULL), worst->value, maximize);
  }
  g_ptr_array_unref(kept);
  if (!wanted)
    return NULL;
  /* splitmix64's finaliser: a digit that is a function of the run's seed and position */
  guint64 z = digit_seed + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return g_strdup_printf("checkpoint.best_%s_%s%d.pt", metric, num, (int)(z % 10));
}
