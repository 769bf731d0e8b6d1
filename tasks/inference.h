/* moelm — loading a trained model for eval-lm and generation: the checkpoint, the data-bin's
 * dictionary (checked against the checkpoint's fingerprint), and a backend. */
#ifndef MOELM_TASKS_INFERENCE_H
#define MOELM_TASKS_INFERENCE_H

#include <glib.h>
#include <json-glib/json-glib.h>

#include "moelm/backend.h"
#include "moelm/checkpoint.h"
#include "moelm/dictionary.h"
#include "moelm/model.h"

G_BEGIN_DECLS

typedef struct {
  MoelmBackend *be;
  MoelmDictionary *dict;    /* DATA/dict.txt */
  MoelmModel *model;
  MoelmCheckpoint *ckpt;    /* kept open for its metadata */
  JsonObject *task;         /* the checkpoint's "task" metadata (may be NULL) */
} MoelmInference;

/* Open CKPT (`--path`; fairseq's "a:b" ensembles are refused), load DATA/dict.txt, check the
 * fingerprint, build the model on a CPU backend with `threads` threads and load the weights.
 * Errors name the file. */
MoelmInference *moelm_inference_open(const char *ckpt_path, const char *data_dir, int threads, GError **error);
void moelm_inference_free(MoelmInference *inf);

/* The checkpoint's task metadata value for `key` as an int, or `fallback`. */
gint64 moelm_inference_task_int(const MoelmInference *inf, const char *key, gint64 fallback);
const char *moelm_inference_task_string(const MoelmInference *inf, const char *key, const char *fallback);

G_END_DECLS

#endif
