/* moelm — a checkpoint and its data-bin, ready for scoring or generation. */
#include "config.h"

#include <string.h>

#include "inference.h"
#include "moelm/errors.h"

#define MIXTURE_TASK "language_model_moe"

/* The mixture configuration from the task metadata; appends the expert tokens to the
 * dictionary. */
static gboolean mixture_setup(MoelmInference *inf, GError **error)
{
  MoelmMixtureConfig *c = &inf->mix;
  const char *method = moelm_inference_task_string(inf, "method", NULL);
  if (!moelm_mixture_method_parse(method, &c->hard, &c->learned_prior, error)) {
    moelm_error_prefix(error, "%s: task metadata", inf->path);
    return FALSE;
  }
  inf->method = g_strdup(method);
  c->num_experts = (int)moelm_inference_task_int(inf, "num_experts", 0);
  c->gating_context = (int)moelm_inference_task_int(inf, "gating_context", 256);
  const gint64 token0 = moelm_inference_task_int(inf, "expert_token0", -1);
  if (c->num_experts < 1 || c->gating_context < 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: task metadata: bad num_experts %d / gating_context %d",
                inf->path, c->num_experts, c->gating_context);
    return FALSE;
  }
  c->expert_token0 = moelm_mixture_add_expert_tokens(inf->dict, c->num_experts);
  if (token0 != c->expert_token0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH,
                "%s: <expert_0> was token %" G_GINT64_FORMAT " in training but is %d after this dict.txt", inf->path,
                token0, c->expert_token0);
    return FALSE;
  }
  return TRUE;
}

/* The learned prior's gating network (checked against the mixture's K). */
static gboolean gate_setup(MoelmInference *inf, GError **error)
{
  const int gk = moelm_model_get_config(inf->model)->gate_experts;
  if (!inf->mix.learned_prior)
    return TRUE;
  if (gk != inf->mix.num_experts) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT,
                "%s: --method %s needs a gating network over %d experts, the model has %d", inf->path, inf->method,
                inf->mix.num_experts, gk);
    return FALSE;
  }
  inf->gate = moelm_mean_pool_gate_new(inf->model, error);
  if (inf->gate == NULL)
    moelm_error_prefix(error, "%s", inf->path);
  return inf->gate != NULL;
}

MoelmInference *moelm_inference_open(const char *ckpt_path, const char *data_dir, const MoelmBackendSpec *backend,
                                     GError **error)
{
  if (strchr(ckpt_path, ':') != NULL && !g_file_test(ckpt_path, G_FILE_TEST_EXISTS)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "%s: model ensembles (--path a:b) are not supported",
                ckpt_path);
    return NULL;
  }
  MoelmInference *inf = g_new0(MoelmInference, 1);
  inf->path = g_strdup(ckpt_path);
  char *dict_path = g_build_filename(data_dir, "dict.txt", NULL);
  inf->ckpt = moelm_checkpoint_open(ckpt_path, error);
  if (inf->ckpt == NULL)
    goto fail;
  JsonNode *task = moelm_checkpoint_meta(inf->ckpt, "task");
  if (task && JSON_NODE_HOLDS_OBJECT(task))
    inf->task = json_node_get_object(task);
  inf->mixture = strcmp(moelm_inference_task_name(inf), MIXTURE_TASK) == 0;
  inf->dict = moelm_dictionary_load(dict_path, error);
  if (inf->dict == NULL || (inf->mixture && !mixture_setup(inf, error)) ||
      !moelm_checkpoint_check_dictionary(inf->ckpt, inf->dict, dict_path, error))
    goto fail;
  inf->be = moelm_backend_open(backend, error);
  if (inf->be == NULL)
    goto fail;
  inf->model = moelm_model_new(&inf->ckpt->model, inf->be, error);
  if (inf->model == NULL || !moelm_checkpoint_load_params(inf->ckpt, inf->model, error) || !gate_setup(inf, error))
    goto fail;
  g_free(dict_path);
  return inf;
fail:
  g_free(dict_path);
  moelm_inference_free(inf);
  return NULL;
}

void moelm_inference_free(MoelmInference *inf)
{
  if (inf == NULL)
    return;
  moelm_mean_pool_gate_free(inf->gate);
  moelm_model_free(inf->model);
  moelm_backend_free(inf->be);
  moelm_dictionary_free(inf->dict);
  moelm_checkpoint_close(inf->ckpt);
  g_free(inf->method);
  g_free(inf->path);
  g_free(inf);
}

gint64 moelm_inference_task_int(const MoelmInference *inf, const char *key, gint64 fallback)
{
  return inf->task ? json_object_get_int_member_with_default(inf->task, key, fallback) : fallback;
}

const char *moelm_inference_task_string(const MoelmInference *inf, const char *key, const char *fallback)
{
  return inf->task ? json_object_get_string_member_with_default(inf->task, key, fallback) : fallback;
}

const char *moelm_inference_task_name(const MoelmInference *inf)
{
  return moelm_inference_task_string(inf, "task", "language_modeling");
}

gboolean moelm_inference_check_task(const MoelmInference *inf, const MoelmTaskFlags *f, GError **error)
{
  const char *task = moelm_inference_task_name(inf);
  const MoelmMixtureConfig *c = &inf->mix;
  char *problem = NULL;
  if (f->task && strcmp(f->task, task) != 0)
    problem = g_strdup_printf("--task %s, but the checkpoint was trained with --task %s", f->task, task);
  else if (!inf->mixture && (f->method || f->num_experts > 0 || f->gating_context >= 0 || f->mean_pool_gating))
    problem = g_strdup_printf("%s applies to --task %s, but the checkpoint was trained with --task %s",
                              f->method               ? "--method"
                              : f->num_experts > 0    ? "--num-experts"
                              : f->mean_pool_gating   ? "--mean-pool-gating-network"
                                                      : "--gating-context",
                              MIXTURE_TASK, task);
  else if (!inf->mixture)
    return TRUE;
  else if (f->method && strcmp(f->method, inf->method) != 0)
    problem = g_strdup_printf("--method %s, but the checkpoint was trained with --method %s", f->method, inf->method);
  else if (f->num_experts > 0 && f->num_experts != c->num_experts)
    problem = g_strdup_printf("--num-experts %d, but the checkpoint was trained with --num-experts %d",
                              f->num_experts, c->num_experts);
  else if (f->gating_context >= 0 && f->gating_context != c->gating_context)
    problem = g_strdup_printf("--gating-context %d, but the checkpoint was trained with --gating-context %d",
                              f->gating_context, c->gating_context);
  else if (c->learned_prior && f->gating_encoder_dim > 0 &&
           f->gating_encoder_dim != moelm_model_get_config(inf->model)->embed_dim)
    problem = g_strdup_printf("--mean-pool-gating-network-encoder-dim %d, but the checkpoint's gating network pools "
                              "%d-dim embeddings",
                              f->gating_encoder_dim, moelm_model_get_config(inf->model)->embed_dim);
  if (problem == NULL)
    return TRUE;
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH, "%s: %s", inf->path, problem);
  g_free(problem);
  return FALSE;
}
