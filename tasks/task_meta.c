/* moelm — the task metadata of checkpoints: writing, reading, validating. */
#include "config.h"

#include <string.h>

#include "moelm/errors.h"
#include "moelm/json.h"
#include "tasks/task_meta.h"

static const char *const break_modes[] = {"none", "complete", "complete_doc", "eos"};

void moelm_task_meta_init(MoelmTaskMeta *meta)
{
  memset(meta, 0, sizeof *meta);
  meta->name = g_strdup(MOELM_TASK_LM);
  meta->tokens_per_sample = 1024;
  meta->break_mode = MOELM_BREAK_NONE;
  meta->mix.gating_context = 256;
  meta->mix.expert_token0 = -1;
}

void moelm_task_meta_clear(MoelmTaskMeta *meta)
{
  g_free(meta->name);
  g_free(meta->method);
  memset(meta, 0, sizeof *meta);
}

gboolean moelm_task_meta_set(MoelmTaskMeta *meta, const char *name, const char *method, GError **error)
{
  const gboolean mixture = g_strcmp0(name, MOELM_TASK_MIXTURE) == 0;
  if (!mixture && g_strcmp0(name, MOELM_TASK_LM) != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "unknown task '%s' (known: %s, %s)", name ? name : "",
                MOELM_TASK_LM, MOELM_TASK_MIXTURE);
    return FALSE;
  }
  if (mixture && !moelm_mixture_method_parse(method, &meta->mix.hard, &meta->mix.learned_prior, error))
    return FALSE;
  g_free(meta->name);
  meta->name = g_strdup(name);
  meta->mixture = mixture;
  g_free(meta->method);
  meta->method = mixture ? g_strdup(method) : NULL;
  return TRUE;
}

gboolean moelm_task_meta_validate(const MoelmTaskMeta *meta, GError **error)
{
  const MoelmMixtureConfig *c = &meta->mix;
  char *bad = NULL;
  if (meta->tokens_per_sample < 1 || meta->tokens_per_sample > MOELM_MODEL_MAX_POSITIONS)
    bad = g_strdup_printf("--tokens-per-sample must be in 1..%d, got %" G_GINT64_FORMAT, MOELM_MODEL_MAX_POSITIONS,
                          meta->tokens_per_sample);
  else if (meta->mixture && (c->num_experts < 1 || c->num_experts > MOELM_MODEL_MAX_EXPERTS))
    bad = g_strdup_printf("--num-experts must be in 1..%d, got %d", MOELM_MODEL_MAX_EXPERTS, c->num_experts);
  else if (meta->mixture && c->learned_prior && c->num_experts < 2)
    bad = g_strdup_printf("--method %s has a learned prior, which needs --num-experts >= 2", meta->method);
  else if (meta->mixture && (c->gating_context < 0 || c->gating_context > MOELM_MAX_GATING_CONTEXT))
    bad = g_strdup_printf("--gating-context must be in 0..%d, got %d", MOELM_MAX_GATING_CONTEXT, c->gating_context);
  if (bad == NULL)
    return TRUE;
  g_set_error_literal(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, bad);
  g_free(bad);
  return FALSE;
}

JsonNode *moelm_task_meta_to_json(const MoelmTaskMeta *meta)
{
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "task", meta->name);
  json_object_set_int_member(o, "tokens_per_sample", meta->tokens_per_sample);
  json_object_set_string_member(o, "sample_break_mode", break_modes[meta->break_mode]);
  if (meta->mixture) {
    json_object_set_string_member(o, "method", meta->method);
    json_object_set_int_member(o, "num_experts", meta->mix.num_experts);
    json_object_set_int_member(o, "gating_context", meta->mix.gating_context);
    json_object_set_int_member(o, "expert_token0", meta->mix.expert_token0);
    if (moelm_mixture_discovery_on(&meta->mix)) /* absent: fairseq's method */
      json_object_set_member(o, "discovery", moelm_mixture_discovery_to_json(&meta->mix.discovery));
  }
  JsonNode *node = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(node, o);
  return node;
}

static gboolean read_fields(MoelmTaskMeta *meta, JsonObject *o, GError **error)
{
  const char *name = MOELM_TASK_LM, *method = NULL, *mode = "none";
  if (!moelm_json_get_string(o, "task", &name, error) || !moelm_json_get_string(o, "method", &method, error) ||
      !moelm_json_get_string(o, "sample_break_mode", &mode, error) || !moelm_task_meta_set(meta, name, method, error) ||
      !moelm_break_mode_parse(mode, &meta->break_mode, error) ||
      !moelm_json_get_int64(o, "tokens_per_sample", 1, MOELM_MODEL_MAX_POSITIONS, &meta->tokens_per_sample, error))
    return FALSE;
  if (!meta->mixture)
    return TRUE;
  static const char *const required[] = {"num_experts", "expert_token0", NULL};
  if (!moelm_json_require(o, required, error) ||
      !moelm_json_get_int(o, "num_experts", 1, MOELM_MODEL_MAX_EXPERTS, &meta->mix.num_experts, error) ||
      !moelm_json_get_int(o, "gating_context", 0, MOELM_MAX_GATING_CONTEXT, &meta->mix.gating_context, error) ||
      !moelm_json_get_int(o, "expert_token0", 4, G_MAXINT32, &meta->mix.expert_token0, error))
    return FALSE;
  /* the domain-discovery settings (the assignment rule eval-lm and generate follow) */
  JsonNode *d = json_object_get_member(o, "discovery");
  if (d && !JSON_NODE_HOLDS_OBJECT(d)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "'discovery' must be an object");
    return FALSE;
  }
  return moelm_mixture_discovery_from_json(d ? json_node_get_object(d) : NULL, &meta->mix.discovery, error);
}

gboolean moelm_task_meta_from_json(MoelmTaskMeta *meta, JsonNode *node, GError **error)
{
  moelm_task_meta_init(meta);
  if (node == NULL)
    return TRUE;
  JsonObject *o = moelm_json_object(node, "task metadata", error);
  if (o == NULL || !read_fields(meta, o, error) || !moelm_task_meta_validate(meta, error)) {
    if (o != NULL)
      moelm_error_prefix(error, "task metadata");
    moelm_error_escape_controls(error); /* the names it quotes come from the file */
    moelm_task_meta_clear(meta);
    return FALSE;
  }
  return TRUE;
}

gboolean moelm_task_meta_check_model(const MoelmTaskMeta *meta, const MoelmModelConfig *model, guint dict_size,
                                     GError **error)
{
  if (!meta->mixture)
    return TRUE;
  const int64_t K = meta->mix.num_experts, token0 = meta->mix.expert_token0;
  if (token0 + K != model->vocab_size) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT,
                "task metadata: %" G_GINT64_FORMAT " experts from token %" G_GINT64_FORMAT
                " do not end the model's vocabulary of %d symbols",
                K, token0, model->vocab_size);
    return FALSE;
  }
  if (token0 != (int64_t)dict_size) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH,
                "<expert_0> was token %" G_GINT64_FORMAT " in training but would be %u after this dict.txt", token0,
                dict_size);
    return FALSE;
  }
  return TRUE;
}
