/* moelm — the trainer's checkpoint files: which to write (epoch, updates, best, last),
 * pruning (--keep-*), and restoring a run (--restore-file, --reset-*, --finetune-from-model). */
#ifndef MOELM_TASKS_TRAIN_CHECKPOINTS_H
#define MOELM_TASKS_TRAIN_CHECKPOINTS_H

#include <stdint.h>
#include <glib.h>

#include "moelm/checkpoint.h"
#include "moelm/dictionary.h"
#include "moelm/fileio.h"
#include "moelm/lr_scheduler.h"
#include "moelm/model.h"
#include "moelm/optim.h"

G_BEGIN_DECLS

struct MoelmTrainConfig_;

/* The loop's position and history: what "train_state" holds in a checkpoint. */
typedef struct {
  int epoch;                   /* 1-based, the epoch in progress */
  int64_t iterations_in_epoch; /* updates done in this epoch */
  int64_t num_updates;
  gboolean end_of_epoch;       /* saved at the end of `epoch` */
  double best;                 /* the best --best-checkpoint-metric value (loss: base 2) */
  gboolean has_best;
  /* read from a checkpoint: the metric and direction its best was kept under (a run with
   * other flags starts its best afresh); a running loop keeps the config's */
  char best_metric[32];
  gboolean best_maximize;
  double last_valid_loss;
  int num_bad_validations;     /* for --patience */
  double training_seconds;     /* wall time of every run up to this state (--stop-time-hours) */
} MoelmTrainState;

typedef struct {
  gboolean epoch_file;   /* checkpoint{epoch}.pt */
  gboolean updates_file; /* checkpoint_{epoch}_{updates}.pt */
  gboolean best_file;    /* checkpoint_best.pt */
  gboolean keep_best;    /* --keep-best-checkpoints: checkpoint.best_{metric}_{value}{d}.pt when
                          * keep_best_value is among the best kept */
  double keep_best_value;
  gboolean last_file;    /* checkpoint_last.pt */
} MoelmCheckpointRequest;

typedef struct {
  const void *cfg; /* const MoelmTrainConfig * (trainer.h includes this header) */
  const MoelmDictionary *dict;
  MoelmModel *model;
  MoelmAdam *adam;
  MoelmLrScheduler *sched;
  MoelmTrainState *st;
} MoelmTrainerCkptCtx;

/* Make --save-dir ready before any work: create it (*created says whether it was), take
 * its lock (a second training on it fails here, naming the first one's pid), check that
 * it is writable, and remove the temp files of a killed run. */
MoelmDirLock *moelm_trainer_open_save_dir(const char *save_dir, gboolean *created, GError **error);
/* Release the lock; after a failed run, remove the directory if this run created it and it
 * is still empty. */
void moelm_trainer_close_save_dir(MoelmDirLock *lock, const char *save_dir, gboolean created, gboolean failed);

gboolean moelm_trainer_save_checkpoints(const MoelmTrainerCkptCtx *ctx, const MoelmCheckpointRequest *req,
                                        GError **error);
/* A checkpoint's "train_state" with every member's type and range checked (errors name the
 * file and the member). */
gboolean moelm_trainer_read_train_state(const MoelmCheckpoint *ckpt, MoelmTrainState *st, GError **error);

/* Load save_dir/restore_file if it exists (or --finetune-from-model when no checkpoint exists). */
gboolean moelm_trainer_restore(const MoelmTrainerCkptCtx *ctx, GError **error);

G_END_DECLS

#endif
