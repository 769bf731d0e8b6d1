/* moelm — learning-rate schedulers, fairseq's formulas and defaults (fairseq 0.12):
 * `--lr-scheduler inverse_sqrt | cosine | polynomial_decay | fixed`.
 *
 * The trainer drives a scheduler the way fairseq's trainer does:
 *   - right after creation:          moelm_lr_step_update(s, 0)   (or num_updates on resume)
 *   - at the start of every epoch:   moelm_lr_step_begin_epoch(s, epoch); moelm_lr_step_update(s, n)
 *   - after every optimizer update:  moelm_lr_step_update(s, num_updates)
 *   - at the end of every epoch:     moelm_lr_step_epoch(s, epoch, val_loss); moelm_lr_step_update(s, n)
 * Each call returns the learning rate to use from then on (fairseq's optimizer.get_lr()).
 * Epochs start at 1. See docs/optim.md for the formulas and what is saved in checkpoints. */
#ifndef MOELM_LR_SCHEDULER_H
#define MOELM_LR_SCHEDULER_H

#include <stdint.h>
#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

#define MOELM_LR_MAX 16 /* values in a `--lr` list */

typedef struct {
  const char *name;          /* --lr-scheduler (fairseq default "fixed"); borrowed */
  double lr[MOELM_LR_MAX];   /* --lr: one value, or a per-epoch list (fixed, polynomial_decay) */
  int n_lr;                  /* default 1 value: 0.25 */
  int64_t max_update;        /* --max-update (0: unlimited); cosine period, polynomial total */
  int64_t warmup_updates;    /* --warmup-updates; -1: the scheduler's default (4000 for
                              * inverse_sqrt, 0 for the others) */
  double warmup_init_lr;     /* --warmup-init-lr; < 0: 0 (inverse_sqrt; its lr without warmup),
                              * --min-lr (cosine) */
  double min_lr;             /* --min-lr: cosine's floor, 0.0 */
  double lr_period_updates;  /* --lr-period-updates (cosine); <= 0: max_update - warmup */
  double t_mult;             /* --t-mult (cosine) 1.0 */
  double lr_shrink;          /* --lr-shrink (cosine per period, fixed per epoch) 0.1 */
  int64_t force_anneal;      /* --force-anneal (fixed, polynomial_decay); -1: none */
  double end_learning_rate;  /* --end-learning-rate (polynomial_decay) 0.0 */
  double power;              /* --power (polynomial_decay) 1.0 */
  double total_num_update;   /* --total-num-update (polynomial_decay); <= 0: max_update */
} MoelmLrSchedulerConfig;

/* fairseq's defaults (name "fixed", lr 0.25, the rest as documented above). */
void moelm_lr_scheduler_config_init(MoelmLrSchedulerConfig *cfg);

/* Parse `--lr` as fairseq does: "0.0005", "0.25,0.1", "[0.25, 0.1]", "(0.25,)": 1 to
 * max_lrs finite numbers >= 0. */
gboolean moelm_parse_lr_list(const char *text, double *lrs, int max_lrs, int *n_lrs, GError **error);

typedef struct MoelmLrScheduler MoelmLrScheduler;

/* Validates the configuration for the named scheduler (an unknown name, a `--lr` list
 * where only one value makes sense, a cosine period or polynomial total that is missing,
 * inverse_sqrt without warmup, ... are errors). The initial lr is fairseq's. */
MoelmLrScheduler *moelm_lr_scheduler_new(const MoelmLrSchedulerConfig *cfg, GError **error);
void moelm_lr_scheduler_free(MoelmLrScheduler *sched);

const char *moelm_lr_scheduler_name(const MoelmLrScheduler *sched);

/* The current learning rate (the last value returned). */
double moelm_lr_get(const MoelmLrScheduler *sched);

double moelm_lr_step_update(MoelmLrScheduler *sched, int64_t num_updates);
double moelm_lr_step_begin_epoch(MoelmLrScheduler *sched, int epoch);
/* val_loss: NAN when there was no validation; otherwise the best (lowest) is tracked. */
double moelm_lr_step_epoch(MoelmLrScheduler *sched, int epoch, double val_loss);

/* The best validation loss seen (FALSE when none yet). */
gboolean moelm_lr_scheduler_best(const MoelmLrScheduler *sched, double *best);

/* Everything a scheduler carries between calls. inverse_sqrt and cosine are pure functions
 * of num_updates; fixed of (epoch, num_updates); polynomial_decay too unless
 * --force-anneal, where base_lr carries the history. Saving this struct plus num_updates
 * and epoch resumes any scheduler exactly. */
typedef struct {
  double lr;             /* the current learning rate */
  double base_lr;        /* fairseq's self.lr for fixed / polynomial_decay (else the --lr) */
  double warmup_factor;  /* fixed / polynomial_decay warmup factor (else 1) */
  double best;           /* best validation loss, valid when has_best */
  gboolean has_best;
} MoelmLrSchedulerState;

void moelm_lr_scheduler_get_state(const MoelmLrScheduler *sched, MoelmLrSchedulerState *state);
void moelm_lr_scheduler_set_state(MoelmLrScheduler *sched, const MoelmLrSchedulerState *state);

/* Checkpoint metadata: {"name": ..., "lr": ..., "base_lr": ..., "warmup_factor": ...,
 * "best": x|null}. Loading a state saved by another scheduler restores only "best" (as
 * fairseq does); the lr is then recomputed by the next step calls. */
JsonNode *moelm_lr_scheduler_state_to_json(const MoelmLrScheduler *sched);
gboolean moelm_lr_scheduler_state_from_json(MoelmLrScheduler *sched, JsonNode *node, GError **error);

G_END_DECLS

#endif
