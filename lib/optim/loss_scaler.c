/* moelm — fairseq's fp16 DynamicLossScaler: back off on overflow, grow after a window of
 * clean iterations, stop at the minimum scale. Host logic only; the GPU trainer multiplies
 * the loss by loss_scale and the grads by 1/loss_scale. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm/errors.h"
#include "moelm/optim.h"
#include "optim/json_state.h"

void moelm_loss_scaler_config_init(MoelmLossScalerConfig *cfg)
{
  cfg->init_scale = 128.0;
  cfg->scale_factor = 2.0;
  cfg->scale_window = 0;
  cfg->tolerance = 0.0;
  cfg->threshold = 0.0;
  cfg->min_loss_scale = 1e-4;
}

int64_t moelm_loss_scaler_default_window(int world_size, int update_freq)
{
  /* fairseq: int(2**14 / data_parallel_size / update_freq[0]); a window of 0 would make its
   * modulo fail, so moelm keeps at least 1. */
  double w = 16384.0 / MAX(world_size, 1) / MAX(update_freq, 1);
  return MAX((int64_t)w, (int64_t)1);
}

gboolean moelm_loss_scaler_init(MoelmLossScaler *scaler, const MoelmLossScalerConfig *cfg, int world_size,
                                int update_freq, GError **error)
{
  memset(scaler, 0, sizeof *scaler);
  if (!(cfg->init_scale > 0.0 && isfinite(cfg->init_scale))) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--fp16-init-scale %g: must be > 0",
                cfg->init_scale);
    return FALSE;
  }
  if (!(cfg->scale_factor > 1.0 && isfinite(cfg->scale_factor))) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "loss scaler: scale factor %g must be > 1",
                cfg->scale_factor);
    return FALSE;
  }
  if (!(cfg->tolerance >= 0.0) || !isfinite(cfg->min_loss_scale) || !isfinite(cfg->threshold)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "loss scaler: --fp16-scale-tolerance, --min-loss-scale and --threshold-loss-scale must be "
                "finite (tolerance >= 0)");
    return FALSE;
  }
  scaler->cfg = *cfg;
  if (cfg->scale_window <= 0)
    scaler->cfg.scale_window = moelm_loss_scaler_default_window(world_size, update_freq);
  scaler->loss_scale = cfg->init_scale;
  scaler->iter = 0;
  scaler->last_overflow_iter = -1;
  scaler->last_rescale_iter = -1;
  scaler->overflows_since_rescale = 0;
  return TRUE;
}

void moelm_loss_scaler_update(MoelmLossScaler *scaler)
{
  if ((scaler->iter - scaler->last_overflow_iter) % scaler->cfg.scale_window == 0) {
    scaler->loss_scale *= scaler->cfg.scale_factor;
    scaler->last_rescale_iter = scaler->iter;
  }
  scaler->iter++;
}

gboolean moelm_loss_scaler_check_overflow(MoelmLossScaler *scaler, double grad_norm, gboolean *overflow,
                                          GError **error)
{
  *overflow = FALSE;
  if (isfinite(grad_norm))
    return TRUE;
  double prev_scale = scaler->loss_scale;
  int64_t since_rescale = scaler->iter - scaler->last_rescale_iter;
  if (since_rescale == 0)
    since_rescale = 1000; /* fairseq's stand-in for "just rescaled" */
  scaler->last_overflow_iter = scaler->iter;
  scaler->overflows_since_rescale++;
  double pct_overflow = (double)scaler->overflows_since_rescale / (double)since_rescale;
  if (pct_overflow >= scaler->cfg.tolerance) {
    scaler->loss_scale /= scaler->cfg.scale_factor;
    if (scaler->cfg.threshold > 0.0)
      scaler->loss_scale = MAX(scaler->loss_scale, scaler->cfg.threshold);
    scaler->last_rescale_iter = scaler->iter;
    scaler->overflows_since_rescale = 0;
  }
  if (scaler->loss_scale <= scaler->cfg.min_loss_scale) {
    scaler->loss_scale = prev_scale;
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FAILED,
                "fp16: minimum loss scale reached (%g); the loss is probably exploding: try a lower "
                "learning rate, gradient clipping (--clip-norm) or a larger batch",
                scaler->cfg.min_loss_scale);
    return FALSE;
  }
  scaler->iter++;
  *overflow = TRUE;
  return TRUE;
}

double moelm_loss_scaler_clip_coef(double grad_norm, double max_norm)
{
  return max_norm > 0.0 && grad_norm > max_norm ? max_norm / grad_norm : 1.0;
}

JsonNode *moelm_loss_scaler_state_to_json(const MoelmLossScaler *scaler)
{
  JsonObject *o = json_object_new();
  json_object_set_double_member(o, "loss_scale", scaler->loss_scale);
  JsonNode *node = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(node, o);
  return node;
}

gboolean moelm_loss_scaler_state_from_json(MoelmLossScaler *scaler, JsonNode *node, GError **error)
{
  JsonObject *o = moelm_optim_json_object(node, "loss scaler state", error);
  double scale;
  if (o == NULL || !moelm_optim_json_double(o, "loss_scale", "loss scaler state", &scale, error))
    return FALSE;
  if (!(scale > 0.0 && isfinite(scale))) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "loss scaler state: loss_scale %g is not > 0", scale);
    return FALSE;
  }
  scaler->loss_scale = scale;
  return TRUE;
}
