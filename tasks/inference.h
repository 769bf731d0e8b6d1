/* moelm — loading a trained model for eval-lm and generation: the checkpoint, the data-bin's
 * dictionary (checked against the checkpoint's fingerprint), and a backend.
 *
 * A sequence-level mixture checkpoint (task metadata "task": "language_model_moe") trained
 * with <expert_0> ... <expert_{K-1}> appended to DATA/dict.txt: they are appended again
 * before the fingerprint check, and the mixture's configuration (and, for a learned prior,
 * its gating network) come with the model. */
#ifndef MOELM_TASKS_INFERENCE_H
#define MOELM_TASKS_INFERENCE_H

#include <glib.h>
#include <json-glib/json-glib.h>

#include "moelm/backend.h"
#include "moelm/checkpoint.h"
#include "moelm/dictionary.h"
#include "moelm/model.h"
#include "gating/mean_pool.h"
#include "tasks/mixture.h"
#include "tasks/task_meta.h"

G_BEGIN_DECLS

typedef struct {
  MoelmBackend *be;
  MoelmDictionary *dict;    /* DATA/dict.txt */
  MoelmModel *model;
  MoelmCheckpoint *ckpt;    /* kept open for its metadata */
  MoelmTaskMeta task;       /* the checkpoint's task: name, blocks, and a mixture's configuration */
  char *path;               /* the checkpoint's path, for messages */
  MoelmGate *gate;          /* a mixture's learned prior (NULL: uniform, or not a mixture) */
} MoelmInference;

/* Open CKPT (`--path`; fairseq's "a:b" ensembles are refused), load DATA/dict.txt, check the
 * fingerprint, build the model on the backend `backend` asks for (NULL: the defaults) and load
 * the weights.
 * Errors name the file. */
MoelmInference *moelm_inference_open(const char *ckpt_path, const char *data_dir, const MoelmBackendSpec *backend,
                                     GError **error);
/* The same with fairseq's --model-overrides text applied to the checkpoint's configuration
 * (NULL: none; see tasks/model_overrides.h); the keys without effect are named in one warning. */
MoelmInference *moelm_inference_open_with_overrides(const char *ckpt_path, const char *data_dir,
                                                    const MoelmBackendSpec *backend, const char *model_overrides,
                                                    GError **error);
void moelm_inference_free(MoelmInference *inf);

/* fairseq's task flags on an eval-lm / generate command line: --task and the flags of
 * language_model_moe, which the checkpoint already fixes. Values are "not given" when NULL,
 * <= 0 or FALSE. */
typedef struct {
  const char *task;          /* --task */
  const char *method;        /* --method */
  int num_experts;           /* --num-experts */
  gboolean mean_pool_gating; /* --mean-pool-gating-network */
  int gating_encoder_dim;    /* --mean-pool-gating-network-encoder-dim */
  int gating_context;        /* --gating-context (-1: not given) */
} MoelmTaskFlags;

/* Check the flags against the checkpoint: a --task, --method, --num-experts or
 * --gating-context that differs from what the checkpoint was trained with, mixture flags on
 * a language_modeling checkpoint, or an encoder dim other than the embedding dim of a
 * learned prior are errors naming the checkpoint. On a mixture checkpoint
 * --mean-pool-gating-network changes nothing (the checkpoint's --method decides whether its
 * prior is learned; fairseq's seed passes it with hMoEup too). */
gboolean moelm_inference_check_task(const MoelmInference *inf, const MoelmTaskFlags *flags, GError **error);

G_END_DECLS

#endif
