/* moelm — the plain language-modelling objective (fairseq's cross_entropy criterion). */
#include "config.h"

#include <string.h>

#include "moelm/dictionary.h"
#include "objective.h"

static gboolean lm_train(MoelmObjective *obj, MoelmModel *model, const MoelmLmBatch *b, const MoelmStepIds *ids,
                         double *loss_sum, double *sample_size, GError **error)
{
  const int B = b->batch.B;
  float *w = g_new(float, B), *rows = g_new(float, B);
  for (int i = 0; i < B; i++)
    w[i] = 1.0f; /* sum of token NLLs; the trainer divides by the sample size */
  gboolean ok = moelm_model_train_step(model, &b->batch, ids, w, NULL, rows, error);
  double s = 0;
  for (int i = 0; ok && i < B; i++)
    s -= rows[i];
  *loss_sum = s;
  *sample_size = (double)b->ntokens;
  g_free(w);
  g_free(rows);
  return ok;
}

static gboolean lm_valid(MoelmObjective *obj, MoelmModel *model, const MoelmLmBatch *b, double *loss_sum,
                         GError **error)
{
  const int B = b->batch.B;
  float *rows = g_new(float, B);
  gboolean ok = moelm_model_score(model, &b->batch, NULL, NULL, rows, error);
  double s = 0;
  for (int i = 0; ok && i < B; i++)
    s -= rows[i];
  *loss_sum = s;
  g_free(rows);
  return ok;
}

MoelmObjective *moelm_lm_objective_new(void)
{
  MoelmObjective *obj = g_new0(MoelmObjective, 1);
  obj->name = "language_modeling";
  obj->train_batch = lm_train;
  obj->valid_batch = lm_valid;
  return obj;
}

void moelm_objective_detach(MoelmObjective *obj)
{
  if (obj && obj->detach)
    obj->detach(obj);
}

void moelm_objective_free(MoelmObjective *obj)
{
  if (obj == NULL)
    return;
  moelm_objective_detach(obj);
  if (obj->free)
    obj->free(obj);
  g_free(obj);
}

void moelm_lm_batch_load(MoelmLmBatch *b, const MoelmLmSplit *split, const MoelmBatchIndices *indices)
{
  int32_t *src, *tgt;
  memset(b, 0, sizeof *b);
  b->split = split;
  b->indices = indices;
  b->ntokens = moelm_lm_collate(split, indices, &src, &tgt, &b->batch.B, &b->batch.T);
  b->batch.src = src;
  b->batch.tgt = tgt;
}

void moelm_lm_batch_load_empty(MoelmLmBatch *b, const MoelmLmSplit *split)
{
  memset(b, 0, sizeof *b);
  b->split = split;
  int32_t *src = g_new(int32_t, 1), *tgt = g_new(int32_t, 1);
  src[0] = tgt[0] = MOELM_PAD;
  b->batch.B = b->batch.T = 1;
  b->batch.src = src;
  b->batch.tgt = tgt;
}

void moelm_lm_batch_clear(MoelmLmBatch *b)
{
  g_free((int32_t *)b->batch.src);
  g_free((int32_t *)b->batch.tgt);
  b->batch.src = b->batch.tgt = NULL;
}

gboolean moelm_objective_score_batches(MoelmObjective *obj, MoelmModel *model, const MoelmLmSplit *split,
                                       GPtrArray *batches, double *nll, double *ntokens, double *nrows,
                                       GError **error)
{
  return moelm_objective_score_shard(obj, model, split, batches, 0, 1, NULL, nll, ntokens, nrows, error);
}

gboolean moelm_objective_score_shard(MoelmObjective *obj, MoelmModel *model, const MoelmLmSplit *split,
                                     GPtrArray *batches, int rank, int world, MoelmProgress *progress, double *nll,
                                     double *ntokens, double *nrows, GError **error)
{
  *nll = *ntokens = *nrows = 0;
  gboolean ok = TRUE;
  /* expert parallel: every rank runs as many forwards as rank 0 (empty batches at the end) */
  const gboolean lockstep = moelm_model_expert_world(model) > 1;
  for (guint i = (guint)rank; ok && (i < batches->len || (lockstep && i - (guint)rank < batches->len));
       i += (guint)world) {
    MoelmLmBatch b;
    if (i < batches->len)
      moelm_lm_batch_load(&b, split, g_ptr_array_index(batches, i));
    else
      moelm_lm_batch_load_empty(&b, split);
    double loss = 0;
    ok = obj->valid_batch(obj, model, &b, &loss, error);
    *nll += loss;
    *ntokens += (double)b.ntokens;
    *nrows += b.batch.B;
    moelm_lm_batch_clear(&b);
    if (progress && ok) {
      char *extra = g_strdup_printf("loss=%.3f", *ntokens > 0 ? *nll / *ntokens / G_LN2 : 0.0);
      moelm_progress_update(progress, (double)(i / (guint)world + 1), extra);
      g_free(extra);
    }
  }
  return ok;
}
