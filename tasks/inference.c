/* moelm — a checkpoint and its data-bin, ready for scoring or generation. */
#include "config.h"

#include <string.h>

#include "inference.h"
#include "model_overrides.h"
#include "moelm/errors.h"
#include "moelm/log.h"

/* The task metadata, checked against the model, then the mixture's expert tokens appended to
 * the dictionary (which the fingerprint check then covers). */
static gboolean task_setup(MoelmInference *inf, GError **error)
{
  if (!moelm_task_meta_from_json(&inf->task, moelm_checkpoint_meta(inf->ckpt, "task"), error) ||
      !moelm_task_meta_check_model(&inf->task, &inf->ckpt->model, moelm_dictionary_size(inf->dict), error)) {
    moelm_error_prefix(error, "%s", inf->path);
    return FALSE;
  }
  if (inf->task.mixture)
    moelm_mixture_add_expert_tokens(inf->dict, inf->task.mix.num_experts);
  return TRUE;
}

/* The learned prior's gating network (checked against the mixture's K). */
static gboolean gate_setup(MoelmInference *inf, GError **error)
{
  const int gk = moelm_model_get_config(inf->model)->gate_experts;
  if (!inf->task.mix.learned_prior)
    return TRUE;
  if (gk != inf->task.mix.num_experts) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT,
                "%s: --method %s needs a gating network over %d experts, the model has %d", inf->path, inf->task.method,
                inf->task.mix.num_experts, gk);
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
  return moelm_inference_open_with_overrides(ckpt_path, data_dir, backend, NULL, error);
}

static gboolean apply_overrides(MoelmInference *inf, const char *text, GError **error)
{
  JsonObject *o = moelm_model_overrides_parse(text, error);
  if (o == NULL)
    return FALSE;
  char *no_effect = NULL;
  const gboolean ok = moelm_model_overrides_apply(o, &inf->ckpt->model, inf->path, &no_effect, error);
  if (no_effect)
    moelm_warn("moelm.inference", "--model-overrides: no model option of %s here, no effect: %s", inf->path,
               no_effect);
  g_free(no_effect);
  json_object_unref(o);
  return ok;
}

MoelmInference *moelm_inference_open_with_overrides(const char *ckpt_path, const char *data_dir,
                                                    const MoelmBackendSpec *backend, const char *model_overrides,
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
  inf->dict = moelm_dictionary_load(dict_path, error);
  if (inf->dict == NULL || !task_setup(inf, error) ||
      !moelm_checkpoint_check_dictionary(inf->ckpt, inf->dict, dict_path, error))
    goto fail;
  if (model_overrides && !apply_overrides(inf, model_overrides, error))
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
  moelm_task_meta_clear(&inf->task);
  g_free(inf->path);
  g_free(inf);
}

gboolean moelm_inference_check_task(const MoelmInference *inf, const MoelmTaskFlags *f, GError **error)
{
  const char *task = inf->task.name;
  const MoelmMixtureConfig *c = &inf->task.mix;
  char *problem = NULL;
  if (f->task && strcmp(f->task, task) != 0)
    problem = g_strdup_printf("--task %s, but the checkpoint was trained with --task %s", f->task, task);
  else if (!inf->task.mixture && (f->method || f->num_experts > 0 || f->gating_context >= 0 || f->mean_pool_gating))
    problem = g_strdup_printf("%s applies to --task %s, but the checkpoint was trained with --task %s",
                              f->method               ? "--method"
                              : f->num_experts > 0    ? "--num-experts"
                              : f->mean_pool_gating   ? "--mean-pool-gating-network"
                                                      : "--gating-context",
                              MOELM_TASK_MIXTURE, task);
  else if (!inf->task.mixture)
    return TRUE;
  else if (f->method && strcmp(f->method, inf->task.method) != 0)
    problem = g_strdup_printf("--method %s, but the checkpoint was trained with --method %s", f->method,
                              inf->task.method);
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
