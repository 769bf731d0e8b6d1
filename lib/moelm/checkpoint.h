/* moelm — checkpoints: one safetensors file (despite fairseq's ".pt" names).
 *
 * Tensors: every model parameter under its fairseq name (F32; F16 or BF16 are accepted and
 * widened to F32 on loading, as `moelm convert --dtype` writes them), and unless the optimizer
 * state is left out, optimizer.exp_avg.<name> and optimizer.exp_avg_sq.<name>.
 * __metadata__ (string → string, values are JSON texts):
 *   "format"          "moelm-checkpoint-1"
 *   "model"           the model config (moelm_model_config_to_json)
 *   "task"            the task config (written by the task: name, tokens_per_sample, ...)
 *   "dictionary"      {"size": V, "hash": "<16 hex>"} of the data-bin's dict.txt
 *   "optimizer"       optimizer state (step, hyper-parameters) or absent
 *   "lr_scheduler"    scheduler state or absent
 *   "train_state"     {"epoch", "iterations_in_epoch", "num_updates", "best_{metric}", "seed", ...}
 * Written to a temp file, fsynced and renamed: a crash never leaves a torn checkpoint. */
#ifndef MOELM_CHECKPOINT_H
#define MOELM_CHECKPOINT_H

#include <glib.h>
#include <json-glib/json-glib.h>

#include "moelm/dictionary.h"
#include "moelm/model.h"
#include "moelm/safetensors.h"

G_BEGIN_DECLS

#define MOELM_CHECKPOINT_FORMAT "moelm-checkpoint-1"

/* Save `model` (and the Adam moments when exp_avg/exp_avg_sq are not NULL, each
 * moelm_model_num_params floats in the model's backend memory, staged through the host) with
 * `meta`: an object whose members are stored as JSON texts under the same keys ("format" and
 * "model" are added). */
gboolean moelm_checkpoint_save(const char *path, MoelmModel *model, const float *exp_avg, const float *exp_avg_sq,
                               JsonObject *meta, GError **error);

/* What one file of a checkpoint holds: everything, or (expert parallel) the tensors every
 * rank shares (NAME-shared.pt) or one rank's experts (NAME-rank-R.pt, under the rank's local
 * expert numbers, as fairseq's MoE checkpoints). */
typedef enum { MOELM_CKPT_ALL, MOELM_CKPT_SHARED, MOELM_CKPT_EXPERTS } MoelmCheckpointPart;

/* moelm_checkpoint_save for one part; the "expert_shard" metadata {"rank", "world"} is added
 * to both parts of a sharded checkpoint. */
gboolean moelm_checkpoint_save_part(const char *path, MoelmModel *model, const float *exp_avg, const float *exp_avg_sq,
                                    JsonObject *meta, MoelmCheckpointPart part, GError **error);
/* NAME.pt → NAME-shared.pt / NAME-rank-R.pt (g_free). */
char *moelm_checkpoint_part_path(const char *path, MoelmCheckpointPart part, int rank);

typedef struct {
  char *path;
  MoelmSafetensors *st;
  /* an expert-parallel checkpoint: st is NAME-shared.pt, shards[R] NAME-rank-R.pt, each with
   * experts_per_shard experts per MoE layer under local numbers */
  MoelmSafetensors **shards;
  int n_shards, experts_per_shard;
  JsonObject *meta;        /* parsed metadata: each key's JSON value */
  MoelmModelConfig model;  /* from "model" */
} MoelmCheckpoint;

/* Open and validate a checkpoint: a valid safetensors file, our format tag, metadata values
 * that are strict JSON, a model config whose every field has its type and bounds, and tensors
 * that can hold that config (the token embedding's shape, and at least as many parameters as
 * the config has: checked by counting before any model is allocated). Names and shapes of
 * the other tensors are checked when they are loaded. Errors name the file.
 * PATH may be a sharded (expert-parallel) checkpoint: NAME.pt is then read from
 * NAME-shared.pt and every NAME-rank-R.pt (the files must come from the same update); its
 * experts load into a model with any number of expert ranks. */
MoelmCheckpoint *moelm_checkpoint_open(const char *path, GError **error);
/* The same from bytes in memory (copied); `name` stands for the path in messages. */
MoelmCheckpoint *moelm_checkpoint_open_bytes(const void *data, gsize len, const char *name, GError **error);
void moelm_checkpoint_close(MoelmCheckpoint *ckpt);

/* A metadata member (NULL when absent). */
JsonNode *moelm_checkpoint_meta(const MoelmCheckpoint *ckpt, const char *key);

/* Copy the parameters into a model built from ckpt->model (names and shapes checked; a
 * NaN or Inf weight is an error naming the tensor). */
gboolean moelm_checkpoint_load_params(const MoelmCheckpoint *ckpt, MoelmModel *model, GError **error);
/* Copy the Adam moments into exp_avg/exp_avg_sq (num_params floats each, the model's backend
 * memory); FALSE with an error naming the file when the checkpoint has no optimizer state. */
gboolean moelm_checkpoint_load_moments(const MoelmCheckpoint *ckpt, MoelmModel *model, float *exp_avg,
                                       float *exp_avg_sq, GError **error);

/* {"size": V, "hash": "hex"} for a dictionary, and the check against a checkpoint. */
JsonNode *moelm_dictionary_fingerprint(const MoelmDictionary *dict);
gboolean moelm_checkpoint_check_dictionary(const MoelmCheckpoint *ckpt, const MoelmDictionary *dict,
                                           const char *dict_path, GError **error);

G_END_DECLS

#endif
