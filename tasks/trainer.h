/* moelm — the training loop (fairseq-train): epochs of shuffled batches, gradient
 * accumulation (--update-freq), clipping, Adam, the LR schedule, fairseq-style logs,
 * validation, checkpoints and exact resumption. */
#ifndef MOELM_TASKS_TRAINER_H
#define MOELM_TASKS_TRAINER_H

#include <signal.h>
#include <stdint.h>
#include <glib.h>

#include "moelm/backend.h"
#include "moelm/dist.h"
#include "moelm/lr_scheduler.h"
#include "moelm/model_config.h"
#include "moelm/optim.h"
#include "moelm/token_blocks.h"
#include "objective.h"

G_BEGIN_DECLS

typedef struct {
  /* data */
  char *data_dir;
  char *train_subset;          /* --train-subset (train) */
  char *valid_subset;          /* --valid-subset (valid; comma list) */
  int64_t tokens_per_sample;   /* --tokens-per-sample 1024 */
  MoelmBreakMode break_mode;   /* --sample-break-mode none */
  int64_t max_tokens;          /* --max-tokens (0: none) */
  int batch_size;              /* --batch-size/--max-sentences (0: none) */
  int batch_size_valid;        /* --batch-size-valid (0: batch_size) */
  int64_t max_tokens_valid;    /* --max-tokens-valid (0: max_tokens) */
  int required_multiple;       /* --required-batch-size-multiple 8 */
  gboolean skip_invalid;       /* --skip-invalid-size-inputs-valid-test */
  int64_t max_valid_steps;     /* --max-valid-steps: score only the first N batches of each valid
                                * split on each rank (0: all) */
  /* schedule */
  int update_freq;             /* --update-freq 1 */
  int64_t max_update;          /* --max-update (0: none) */
  int max_epoch;               /* --max-epoch (0: none) */
  uint64_t seed;               /* --seed 1 */
  double clip_norm;            /* --clip-norm 0 */
  double stop_min_lr;          /* --stop-min-lr -1 */
  double stop_time_hours;      /* --stop-time-hours: stop once the cumulative training time
                                * (over resumes) exceeds it (0: off) */
  MoelmAdamConfig adam;
  MoelmLrSchedulerConfig lr;
  /* validation and checkpoints */
  int validate_interval;             /* --validate-interval 1 (epochs) */
  int64_t validate_interval_updates; /* 0 */
  gboolean disable_validation;
  int patience;                      /* --patience -1 */
  char *best_checkpoint_metric;      /* --best-checkpoint-metric loss: a field of the valid line
                                      * (train_best.h) deciding checkpoint_best.pt, --patience
                                      * and best_{metric} */
  gboolean maximize_best_metric;     /* --maximize-best-checkpoint-metric: higher is better */
  char *save_dir;                    /* --save-dir checkpoints */
  int save_interval;                 /* --save-interval 1 (epochs) */
  int64_t save_interval_updates;     /* 0 */
  int keep_last_epochs;              /* -1 */
  int keep_interval_updates;         /* -1 */
  int keep_best_checkpoints;         /* -1: keep the N best validations as checkpoint.best_* */
  gboolean no_epoch_checkpoints, no_last_checkpoints, no_save, no_save_optimizer_state;
  char *restore_file;                /* --restore-file checkpoint_last.pt */
  char *finetune_from_model;
  gboolean reset_optimizer, reset_lr_scheduler, reset_dataloader, reset_meters;
  /* logging */
  int log_interval;                  /* --log-interval 100 */
  gboolean log_json;                 /* --log-format json */
  gboolean progress_bar;             /* progress lines (rate, ETA) for training and validation */
  char *tensorboard_logdir;          /* --tensorboard-logdir: event files in DIR/train_inner, DIR/train,
                                      * DIR/<valid subset> (rank 0); NULL: none */
  /* model and compute */
  MoelmModelConfig model;
  MoelmBackendSpec backend;          /* --cpu, --device-id, --threads, --fp32/--bf16/--fp16 */
  gboolean checkpoint_activations;   /* --checkpoint-activations: recompute layers in the backward */
  /* distributed */
  MoelmComm *comm;                   /* the process group (borrowed; NULL: one process) */
  double bucket_cap_mb;              /* --bucket-cap-mb 25: all-reduce bucket size */
  gboolean expert_parallel;          /* --moe-expert-parallel: experts split over the ranks */
  gboolean expert_grad_sqrt;         /* --moe-normalize-expert-grad sqrt_world_size (default world_size) */
  /* the task's metadata written into checkpoints ("task"), owned by the caller */
  JsonNode *task_meta;
  /* Polled after every update: non-zero (the number of the signal that the caller's handler
   * caught) ends the run there, with checkpoint_last.pt written. The trainer installs no
   * handler: cli/ does, and its handler only sets this. NULL: never interrupted. */
  const volatile sig_atomic_t *stop_signal;
  /* For the memory estimate made before anything is allocated: model rows per batch row in
   * the task's largest training forward (a soft mixture's M-step: K; 0 means 1), and the
   * copies of each row an E-step scores (a mixture's K, in model calls of at most
   * moelm_mixture_estep_logits_bytes of logits; 0: no E-step). */
  int rows_per_sequence;
  int estep_copies;
} MoelmTrainConfig;

/* fairseq's defaults for everything above (model left zeroed; the caller sets the arch). */
void moelm_train_config_init(MoelmTrainConfig *cfg);
void moelm_train_config_clear(MoelmTrainConfig *cfg);
/* The options above in their ranges (--update-freq >= 1, --log-interval >= 1, --clip-norm
 * finite and >= 0, ...); errors name the flag and the value. moelm_train checks it first. */
gboolean moelm_train_config_validate(const MoelmTrainConfig *cfg, GError **error);

/* Summary of a finished run (for tests and the CLI's last line). */
typedef struct {
  int64_t num_updates;
  int epoch;
  double last_train_loss;  /* base 2, the last epoch's average */
  double best_valid;       /* the best --best-checkpoint-metric value (loss: base 2); NAN when never validated */
  double last_valid_loss;  /* base 2; NAN when never validated */
  int interrupted;         /* the *stop_signal that ended the run early (0: it ran to its end) */
  gboolean saved_on_interrupt; /* a checkpoint holds the state at the interruption */
} MoelmTrainResult;

/* Train with `objective` (the task's). The dictionary at data_dir/dict.txt must already be
 * loaded by the caller (its size is cfg->model.vocab_size; extra symbols like expert tokens
 * are the task's business): `dict` is used for the checkpoint fingerprint. */
gboolean moelm_train(const MoelmTrainConfig *cfg, const MoelmDictionary *dict, MoelmObjective *objective,
                     MoelmTrainResult *result, GError **error);

G_END_DECLS

#endif
