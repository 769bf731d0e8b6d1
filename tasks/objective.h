/* moelm — what a task trains and validates: given a collated batch, a task's objective runs
 * the model (forward/backward through the weighted-row API) and reports the loss. The plain
 * LM (cross_entropy) and the sequence-level mixtures implement this; the trainer, eval-lm and
 * logging are written once against it. */
#ifndef MOELM_TASKS_OBJECTIVE_H
#define MOELM_TASKS_OBJECTIVE_H

#include <stdint.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "lm_data.h"
#include "train_meters.h"
#include "moelm/dist.h"
#include "moelm/model.h"
#include "moelm/progress.h"

G_BEGIN_DECLS

/* A collated batch with where it came from (mixtures read the gating context from the split). */
typedef struct {
  MoelmBatch batch;                 /* (B, T) src/tgt */
  int64_t ntokens;                  /* non-pad targets */
  const MoelmLmSplit *split;
  const MoelmBatchIndices *indices; /* block indices of the rows */
} MoelmLmBatch;

typedef struct MoelmObjective MoelmObjective;

struct MoelmObjective {
  const char *name;
  /* Forward + backward for one sub-batch of an update: grads += d(loss_sum)/dθ (not yet
   * divided by the sample size). *loss_sum: the summed NLL in nats; *sample_size: what the
   * gradient will be divided by (fairseq's sample_size: the target tokens). */
  gboolean (*train_batch)(MoelmObjective *obj, MoelmModel *model, const MoelmLmBatch *b, const MoelmStepIds *ids,
                          double *loss_sum, double *sample_size, GError **error);
  /* Exact validation NLL (nats, summed) of a batch; no dropout, no gradient. */
  gboolean (*valid_batch)(MoelmObjective *obj, MoelmModel *model, const MoelmLmBatch *b, double *loss_sum,
                          GError **error);
  /* Append the objective's own log fields (e.g. expert utilisation) with moelm_log_field:
   * for a train_inner line (epoch FALSE) what it accumulated since the last call, for the
   * epoch's train line (epoch TRUE) what it accumulated over the epoch; then reset what was
   * reported. NULL: none. */
  void (*log_fields)(MoelmObjective *obj, GString *line, const MoelmLogStyle *style, gboolean epoch);
  /* Data parallel: sum what log_fields reports over the ranks (called on every rank before
   * log_fields). NULL: nothing to sum. */
  gboolean (*all_reduce)(MoelmObjective *obj, MoelmComm *comm, GError **error);
  /* Append what the objective saw while validating `split` since the last call (e.g. expert
   * posteriors, domain accuracy), summed over the ranks of `comm` (a collective: every rank
   * calls it), then reset it. NULL: nothing. */
  gboolean (*valid_log_fields)(MoelmObjective *obj, const MoelmLmSplit *split, MoelmComm *comm, GString *line,
                               const MoelmLogStyle *style, GError **error);
  /* Drop everything tied to the model it was last given (called before that model and its
   * backend are freed). NULL: nothing to drop. */
  void (*detach)(MoelmObjective *obj);
  void (*free)(MoelmObjective *obj);
  void *priv;
};

/* Collate the blocks `indices` of `split` into b (padded src/tgt owned by b). */
void moelm_lm_batch_load(MoelmLmBatch *b, const MoelmLmSplit *split, const MoelmBatchIndices *indices);
void moelm_lm_batch_clear(MoelmLmBatch *b);
/* A batch of one padding token (no targets): an expert-parallel rank with nothing left to
 * train or score still takes part in the other ranks' exchanges with it. */
void moelm_lm_batch_load_empty(MoelmLmBatch *b, const MoelmLmSplit *split);

/* The exact validation NLL of `batches` of `split` with obj->valid_batch: sums of the loss
 * (nats), of the target tokens and of the rows. */
gboolean moelm_objective_score_batches(MoelmObjective *obj, MoelmModel *model, const MoelmLmSplit *split,
                                       GPtrArray *batches, double *nll, double *ntokens, double *nrows,
                                       GError **error);
/* The same over batches rank, rank + world, rank + 2*world, ... (a data-parallel shard);
 * `progress` (NULL: none) is told the batches done with the running loss. */
gboolean moelm_objective_score_shard(MoelmObjective *obj, MoelmModel *model, const MoelmLmSplit *split,
                                     GPtrArray *batches, int rank, int world, MoelmProgress *progress, double *nll,
                                     double *ntokens, double *nrows, GError **error);

/* fairseq's language_modeling + cross_entropy: every row weight 1, sample size = tokens. */
MoelmObjective *moelm_lm_objective_new(void);
void moelm_objective_detach(MoelmObjective *obj);
void moelm_objective_free(MoelmObjective *obj);

G_END_DECLS

#endif
