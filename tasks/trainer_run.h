/* moelm — the training loop's private state and its log lines (tasks/trainer.c runs the
 * loop, tasks/trainer_log.c writes fairseq's train_inner/train lines, the TensorBoard events
 * and the progress line). Not installed: only the two files share it. */
#ifndef MOELM_TASKS_TRAINER_RUN_H
#define MOELM_TASKS_TRAINER_RUN_H

#include <math.h>

#include "moelm/progress.h"
#include "moelm/timer.h"
#include "train_checkpoints.h"
#include "train_meters.h"
#include "trainer.h"

G_BEGIN_DECLS

/* Everything the loop carries. */
typedef struct {
  const MoelmTrainConfig *cfg;
  const MoelmDictionary *dict;
  MoelmObjective *obj;
  MoelmBackend *be;
  MoelmModel *model;
  MoelmAdam adam;
  MoelmLrScheduler *sched;
  MoelmLmSplit *train;
  GPtrArray *valid;          /* MoelmLmSplit* */
  GPtrArray *train_batches;  /* the fixed batch list; shuffled per epoch */
  MoelmTrainState st;
  double start_time;
  MoelmStopwatch train_wall;
  MoelmGradSync *sync;       /* data parallel: the bucketed all-reduce (NULL on one rank) */
  double comm_seconds;       /* waiting for the all-reduce, since the start */
  GHashTable *tb;            /* --tensorboard-logdir: line tag (train_inner, train, a valid split) ->
                              * MoelmTbWriter* of LOGDIR/TAG; NULL without it or off rank 0 */
  int64_t first_update;      /* num_updates when this run's loop began */
  int64_t last_saved_update; /* num_updates of the last checkpoint_last.pt written (-1: none) */
  double earlier_seconds;    /* the training time of the runs before this one (from the checkpoint) */
  gboolean time_up;          /* --stop-time-hours was reached */
  int stop;                  /* the signal every rank agreed to stop on (0: none) */
  MoelmProgress bar;         /* the progress line of training (rank 0, cfg->progress_bar) */
  MoelmMoeLayerStats *moe_epoch; /* token MoE: each layer's metadata x forwards, summed over the
                                  * epoch's earlier log lines */
  double moe_epoch_forwards;
} Run;

static inline int64_t moelm_trainer_updates_per_epoch(const Run *r)
{
  const int64_t per_update = (int64_t)r->cfg->update_freq * moelm_comm_size(r->cfg->comm);
  return ((int64_t)r->train_batches->len + per_update - 1) / per_update;
}

static inline double moelm_trainer_base2(double nats_per_token) { return nats_per_token / M_LN2; }

/* The TensorBoard writer of a kind of log line, opened on first use (NULL: none). A
 * directory that cannot be written is warned about once and TensorBoard is off. */
MoelmTbWriter *moelm_trainer_tb_writer(Run *r, const char *tag);
void moelm_trainer_tb_flush(Run *r, const char *tag);
/* One train_inner (inner) or epoch train line of the meters m, iter updates into the epoch. */
void moelm_trainer_log_stats(Run *r, const char *tag, const MoelmTrainMeters *m, int64_t iter, gboolean inner);
/* The training progress line: updates done against --max-update, else against the epochs of
 * --max-epoch, else against this epoch; rate and ETA over this run's updates. */
void moelm_trainer_progress_start(Run *r);
void moelm_trainer_progress(Run *r, int64_t iter, double loss);

G_END_DECLS

#endif
