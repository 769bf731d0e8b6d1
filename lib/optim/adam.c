/* moelm — fairseq's Adam (AdamW weight decay) over the flat parameter arena: the state
 * (moments, step) and its checkpoint form. The element-wise update itself is the backend's
 * adam_step (one kernel per backend, see lib/moelm/backend.h). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moelm/errors.h"
#include "moelm/optim.h"
#include "optim/json_state.h"
#include "optim/number_list.h"

void moelm_adam_config_init(MoelmAdamConfig *cfg)
{
  cfg->beta1 = 0.9;
  cfg->beta2 = 0.999;
  cfg->eps = 1e-8;
  cfg->weight_decay = 0.0;
}

gboolean moelm_adam_config_validate(const MoelmAdamConfig *cfg, GError **error)
{
  const double betas[2] = {cfg->beta1, cfg->beta2};
  for (int i = 0; i < 2; i++) {
    if (!(betas[i] >= 0.0 && betas[i] < 1.0)) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                  "--adam-betas: beta%d = %g is outside [0, 1)", i + 1, betas[i]);
      return FALSE;
    }
  }
  /* 0 divides 0 by 0 wherever a gradient is zero (the padding row of the embeddings): NaN */
  if (!(cfg->eps > 0.0 && isfinite(cfg->eps))) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--adam-eps %g: must be a finite number > 0 (with 0, a parameter whose gradient is 0 becomes NaN)",
                cfg->eps);
    return FALSE;
  }
  if (!isfinite(cfg->weight_decay)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--weight-decay %g: must be finite",
                cfg->weight_decay);
    return FALSE;
  }
  return TRUE;
}

gboolean moelm_optimizer_check_name(const char *name, GError **error)
{
  if (name != NULL && (strcmp(name, "adam") == 0 || strcmp(name, "adamw") == 0))
    return TRUE;
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
              "--optimizer %s: not supported (choose adam; adamw is the same optimizer)",
              name != NULL ? name : "(none)");
  return FALSE;
}

gboolean moelm_parse_adam_betas(const char *text, double *beta1, double *beta2, GError **error)
{
  double v[2];
  int n = 0;
  GError *local = NULL;
  if (!moelm_parse_number_list(text, v, 2, &n, &local) || n != 2) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--adam-betas '%s': %s; expected two numbers like '(0.9, 0.98)'", text,
                local != NULL ? local->message : "only one value");
    g_clear_error(&local);
    return FALSE;
  }
  for (int i = 0; i < 2; i++) {
    if (!(v[i] >= 0.0 && v[i] < 1.0)) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                  "--adam-betas '%s': beta%d = %g is outside [0, 1)", text, i + 1, v[i]);
      return FALSE;
    }
  }
  *beta1 = v[0];
  *beta2 = v[1];
  return TRUE;
}

gboolean moelm_adam_init(MoelmAdam *adam, const MoelmAdamConfig *cfg, MoelmBackend *be, size_t n, GError **error)
{
  memset(adam, 0, sizeof *adam);
  if (!moelm_adam_config_validate(cfg, error))
    return FALSE;
  if (n > SIZE_MAX / sizeof(float)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "adam: %zu floats do not fit in memory", n);
    return FALSE;
  }
  adam->be = be;
  adam->exp_avg = be->ops->alloc(be, n * sizeof(float), error);
  adam->exp_avg_sq = adam->exp_avg ? be->ops->alloc(be, n * sizeof(float), error) : NULL;
  if (adam->exp_avg_sq == NULL) {
    moelm_adam_free(adam);
    return FALSE;
  }
  adam->cfg = *cfg;
  adam->n = n;
  moelm_adam_reset(adam);
  return TRUE;
}

void moelm_adam_free(MoelmAdam *adam)
{
  if (adam->be) {
    adam->be->ops->free(adam->be, adam->exp_avg);
    adam->be->ops->free(adam->be, adam->exp_avg_sq);
  }
  memset(adam, 0, sizeof *adam);
}

void moelm_adam_reset(MoelmAdam *adam)
{
  if (adam->n > 0) {
    adam->be->ops->zero(adam->be, adam->exp_avg, adam->n * sizeof(float));
    adam->be->ops->zero(adam->be, adam->exp_avg_sq, adam->n * sizeof(float));
  }
  adam->step = 0;
}

double moelm_adam_step_size(const MoelmAdamConfig *cfg, int64_t step, double lr)
{
  double bias_correction1 = 1.0 - pow(cfg->beta1, (double)step);
  double bias_correction2 = 1.0 - pow(cfg->beta2, (double)step);
  return lr * sqrt(bias_correction2) / bias_correction1;
}

gboolean moelm_adam_step(MoelmAdam *adam, float *params, const float *grads, size_t n, double lr, GError **error)
{
  if (n != adam->n) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH,
                "adam: step over %zu parameters, but the moments hold %zu", n, adam->n);
    return FALSE;
  }
  adam->step++;
  const MoelmAdamConfig *cfg = &adam->cfg;
  const MoelmAdamParams hp = {
    .lr = (float)lr,
    .beta1 = cfg->beta1,
    .beta2 = cfg->beta2,
    .eps = (float)cfg->eps,
    .weight_decay = (float)cfg->weight_decay,
    .grad_scale = 1.0f,
    .step = adam->step,
  };
  adam->be->ops->adam_step(adam->be, params, grads, adam->exp_avg, adam->exp_avg_sq, n, &hp);
  return TRUE;
}

JsonNode *moelm_adam_state_to_json(const MoelmAdam *adam)
{
  JsonBuilder *b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "name");
  json_builder_add_string_value(b, "adam");
  json_builder_set_member_name(b, "step");
  json_builder_add_int_value(b, adam->step);
  json_builder_set_member_name(b, "betas");
  json_builder_begin_array(b);
  json_builder_add_double_value(b, adam->cfg.beta1);
  json_builder_add_double_value(b, adam->cfg.beta2);
  json_builder_end_array(b);
  json_builder_set_member_name(b, "eps");
  json_builder_add_double_value(b, adam->cfg.eps);
  json_builder_set_member_name(b, "weight_decay");
  json_builder_add_double_value(b, adam->cfg.weight_decay);
  json_builder_end_object(b);
  JsonNode *root = json_builder_get_root(b);
  g_object_unref(b);
  return root;
}

gboolean moelm_adam_state_from_json(MoelmAdam *adam, JsonNode *node, GError **error)
{
  JsonObject *o = moelm_optim_json_object(node, "optimizer state", error);
  if (o == NULL)
    return FALSE;
  const char *name = moelm_optim_json_string(o, "name");
  if (name == NULL || strcmp(name, "adam") != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH,
                "optimizer state: saved by optimizer '%s', not adam (use --reset-optimizer)",
                name != NULL ? name : "?");
    return FALSE;
  }
  int64_t step;
  if (!moelm_optim_json_count(o, "step", "optimizer state", &step, error))
    return FALSE;
  adam->step = step;
  return TRUE;
}
