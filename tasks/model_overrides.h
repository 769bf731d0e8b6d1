/* moelm — fairseq's --model-overrides for eval-lm, generate and score: a Python dict literal
 * such as "{'moe_eval_capacity_token_fraction': 0.05}" (or a JSON object) whose keys are
 * fairseq's model option names. Options that only steer routing and dropout take the new
 * value; those that fix the stored parameters' shapes may only repeat the checkpoint's. */
#ifndef MOELM_TASKS_MODEL_OVERRIDES_H
#define MOELM_TASKS_MODEL_OVERRIDES_H

#include <glib.h>
#include <json-glib/json-glib.h>

#include "moelm/model_config.h"

G_BEGIN_DECLS

/* Parse the flag's text (json_object_unref); the error quotes it. */
JsonObject *moelm_model_overrides_parse(const char *text, GError **error);

/* Apply `overrides` to `cfg` (the checkpoint's configuration, read from `ckpt_path`): the
 * result is validated as a checkpoint's would be. Keys that are no model option of this
 * model come back in *no_effect ("a, b"; g_free; NULL when none) for the caller's warning. */
gboolean moelm_model_overrides_apply(JsonObject *overrides, MoelmModelConfig *cfg, const char *ckpt_path,
                                     char **no_effect, GError **error);

G_END_DECLS

#endif
