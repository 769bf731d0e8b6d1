/* moelm — the best-checkpoint metric: its names, its value in a valid line, comparisons. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "moelm/errors.h"
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
