/* moelm — the checkpoint's "task" metadata, written by training and read by eval-lm and
 * generate in this one place, with the one validation both sides share:
 *   {"task": "language_modeling" | "language_model_moe", "tokens_per_sample": N,
 *    "sample_break_mode": "none" | "complete" | "complete_doc" | "eos",
 *    and for a mixture: "method", "num_experts", "gating_context", "expert_token0"} */
#ifndef MOELM_TASKS_TASK_META_H
#define MOELM_TASKS_TASK_META_H

#include <stdint.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "moelm/model_config.h"
#include "moelm/token_blocks.h"
#include "tasks/mixture.h"

G_BEGIN_DECLS

#define MOELM_TASK_LM "language_modeling"
#define MOELM_TASK_MIXTURE "language_model_moe"

/* The longest --gating-context (tokens before a block that the gating network pools). */
#define MOELM_MAX_GATING_CONTEXT (1 << 20)

typedef struct {
  char *name;                /* MOELM_TASK_LM or MOELM_TASK_MIXTURE */
  int64_t tokens_per_sample; /* --tokens-per-sample of the training run */
  MoelmBreakMode break_mode; /* --sample-break-mode */
  gboolean mixture;          /* name is MOELM_TASK_MIXTURE */
  char *method;              /* mixture: --method hMoEup|hMoElp|sMoEup|sMoElp */
  MoelmMixtureConfig mix;    /* mixture: K, gating context, <expert_0>, hard/learned from the method */
} MoelmTaskMeta;

/* language_modeling, 1024 tokens per sample, break mode none (a checkpoint without "task"). */
void moelm_task_meta_init(MoelmTaskMeta *meta);
void moelm_task_meta_clear(MoelmTaskMeta *meta);

/* Set the task by name (MOELM_TASK_LM / MOELM_TASK_MIXTURE) and, for a mixture, its --method;
 * an unknown name or method is an error. */
gboolean moelm_task_meta_set(MoelmTaskMeta *meta, const char *name, const char *method, GError **error);

/* The bounds both sides check: tokens per sample in 1..MOELM_MODEL_MAX_POSITIONS; a mixture's
 * --num-experts in 1..MOELM_MODEL_MAX_EXPERTS (2 or more with a learned prior) and
 * --gating-context in 0..MOELM_MAX_GATING_CONTEXT. Errors name the flag and the value. */
gboolean moelm_task_meta_validate(const MoelmTaskMeta *meta, GError **error);

JsonNode *moelm_task_meta_to_json(const MoelmTaskMeta *meta);

/* Read and validate; node NULL: the defaults of moelm_task_meta_init. Errors name the member
 * ("task metadata: 'num_experts' must be ..."); the caller prefixes the file. */
gboolean moelm_task_meta_from_json(MoelmTaskMeta *meta, JsonNode *node, GError **error);

/* A mixture's expert tokens against the model they were trained into: <expert_0> ...
 * <expert_{K-1}> are the last K symbols of the model's vocabulary, after the `dict_size`
 * symbols of the data-bin's dict.txt. Checked before the tokens are appended (so a K of 10^9
 * allocates nothing). No-op for language_modeling. */
gboolean moelm_task_meta_check_model(const MoelmTaskMeta *meta, const MoelmModelConfig *model, guint dict_size,
                                     GError **error);

G_END_DECLS

#endif
