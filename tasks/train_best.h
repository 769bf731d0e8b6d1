/* moelm — which validation is "best": --best-checkpoint-metric names a field of the valid
 * line and --maximize-best-checkpoint-metric says which way is better, for
 * checkpoint_best.pt, --patience and the valid line's best_{metric} (fairseq's
 * checkpoint_utils.save_checkpoint and should_stop_early). */
#ifndef MOELM_TASKS_TRAIN_BEST_H
#define MOELM_TASKS_TRAIN_BEST_H

#include <glib.h>

G_BEGIN_DECLS

/* The numbers of one valid line (the first --valid-subset's decides). */
typedef struct {
  double loss;        /* base 2, per target token */
  double ppl;         /* 2^loss */
  double wps, wpb, bsz;
  double num_updates;
} MoelmValidStats;

/* The names --best-checkpoint-metric takes. nll_loss is loss: the valid loss is the NLL
 * (no gate loss is added in validation), as fairseq's nll_loss of a language model. */
#define MOELM_BEST_METRICS "loss, nll_loss, ppl, wps, wpb, bsz, num_updates"

/* FALSE with an error naming the flag and the choices when `name` is not one of them. */
gboolean moelm_best_metric_check(const char *name, GError **error);
/* The digits the valid line rounds the metric to (loss 3, ppl 2, ...). */
int moelm_best_metric_digits(const char *name);
/* The metric's value in *s (NAN for an unknown name). */
double moelm_best_metric_value(const MoelmValidStats *s, const char *name);
/* Whether a is strictly better than b (b: the best so far). NAN is never better. */
gboolean moelm_best_better(double a, double b, gboolean maximize);
/* Whether a is at least as good as b (fairseq writes checkpoint_best.pt on a tie). */
gboolean moelm_best_not_worse(double a, double b, gboolean maximize);

/* --keep-best-checkpoints: the files checkpoint.best_{metric}_{value:.3f}{d}.pt in save_dir,
 * d one digit in 0..9 so that equal values get different names. */
typedef struct {
  char *name;   /* the file name (a sharded checkpoint's NAME-shared.pt is listed as NAME.pt) */
  double key;   /* the number in the name, the digit included: the order of the files */
  double value; /* the metric as saved, to 3 decimals (the digit dropped) */
} MoelmKeptBest;

/* The kept files of `metric` in save_dir, best first (g_ptr_array_unref). */
GPtrArray *moelm_best_kept_list(const char *save_dir, const char *metric, gboolean maximize);
/* The name for a new value (g_free), or NULL when `keep` files are kept already and the value,
 * rounded to 3 decimals, is worse than the worst of them. `digit_seed` picks the digit. */
char *moelm_best_kept_name(const char *save_dir, const char *metric, gboolean maximize, int keep, double value,
                           guint64 digit_seed);

G_END_DECLS

#endif
