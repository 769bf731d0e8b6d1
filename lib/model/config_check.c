/* moelm — validating a model config (from flags or from a checkpoint) and counting what it
 * costs: the exact number of parameters and a lower bound of the memory a training step takes. */
#include "config.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "config-limits.h"
#include "moelm/dictionary.h"
#include "moelm/errors.h"
#include "moelm/model_config.h"

#define INT_FIELD(key, flag, field, min, max) {key, flag, offsetof(MoelmModelConfig, field), min, max}

const MoelmIntLimit moelm_model_int_limits[] = {
  INT_FIELD("vocab_size", "the dictionary size", vocab_size, 5, G_MAXINT32),
  INT_FIELD("decoder_embed_dim", "--decoder-embed-dim", embed_dim, 1, MOELM_MODEL_MAX_DIM),
  INT_FIELD("decoder_ffn_embed_dim", "--decoder-ffn-embed-dim", ffn_dim, 1, MOELM_MODEL_MAX_FFN_DIM),
  INT_FIELD("decoder_layers", "--decoder-layers", layers, 0, MOELM_MODEL_MAX_LAYERS),
  INT_FIELD("decoder_attention_heads", "--decoder-attention-heads", heads, 1, MOELM_MODEL_MAX_DIM),
  INT_FIELD("max_target_positions", "--max-target-positions", max_positions, 1, MOELM_MODEL_MAX_POSITIONS),
  INT_FIELD("gating_network_experts", "--num-experts", gate_experts, 0, MOELM_MODEL_MAX_EXPERTS),
  INT_FIELD("moe_freq", "--moe-freq", moe_freq, 0, MOELM_MODEL_MAX_LAYERS),
  INT_FIELD("moe_expert_count", "--moe-expert-count", moe_experts, 0, MOELM_MODEL_MAX_EXPERTS),
  INT_FIELD("moe_expert_ffn_dim", "--moe-expert-ffn-dim", moe_expert_ffn_dim, 0, MOELM_MODEL_MAX_FFN_DIM),
  INT_FIELD("moe_route_expert_token0", "--mixture-expert-ffn's <expert_0>", moe_route_token0, 0, G_MAXINT32),
  /* MoEfication (moelm moefy, docs/moefy.md); 0: not moefied */
  INT_FIELD("moefy_num_experts", "moefy --num-experts", moefy_experts, 0, MOELM_MODEL_MAX_FFN_DIM),
  INT_FIELD("moefy_top_k", "--moefy-top-k", moefy_top_k, 0, MOELM_MODEL_MAX_FFN_DIM),
  INT_FIELD("moefy_router_dim", "moefy --router-dim", moefy_router_dim, 0, MOELM_MODEL_MAX_FFN_DIM),
};
const size_t moelm_model_n_int_limits = G_N_ELEMENTS(moelm_model_int_limits);

#define REAL_FIELD(key, flag, field, min, max, open) {key, flag, offsetof(MoelmModelConfig, field), min, max, open}

const MoelmRealLimit moelm_model_real_limits[] = {
  REAL_FIELD("dropout", "--dropout", dropout, 0.0, 1.0, TRUE),
  REAL_FIELD("attention_dropout", "--attention-dropout", attention_dropout, 0.0, 1.0, TRUE),
  REAL_FIELD("activation_dropout", "--activation-dropout", activation_dropout, 0.0, 1.0, TRUE),
  REAL_FIELD("mean_pool_gating_network_dropout", "--mean-pool-gating-network-dropout", gate_dropout, 0.0, 1.0, TRUE),
  /* > 0: checked below (a closed range cannot say it) */
  REAL_FIELD("moe_capacity_factor", "--moe-capacity-factor", moe_capacity_factor, 0.0, 1e9, FALSE),
  /* <= 0 means "dropless at eval" */
  REAL_FIELD("moe_eval_capacity_token_fraction", "--moe-eval-capacity-token-fraction",
             moe_eval_capacity_token_fraction, -1e9, 1.0, FALSE),
  REAL_FIELD("moe_gate_loss_wt", "--moe-gate-loss-wt", moe_gate_loss_wt, 0.0, 1e9, FALSE),
};
const size_t moelm_model_n_real_limits = G_N_ELEMENTS(moelm_model_real_limits);

static gboolean invalid(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static gboolean invalid(GError **error, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "model config: %s", msg);
  g_free(msg);
  return FALSE;
}

static gboolean check_ranges(const MoelmModelConfig *cfg, GError **error)
{
  for (size_t i = 0; i < moelm_model_n_int_limits; i++) {
    const MoelmIntLimit *l = &moelm_model_int_limits[i];
    const int v = *MOELM_CFG_INT(cfg, l);
    if (v < l->min || v > l->max) {
      if (l == &moelm_model_int_limits[0])
        return invalid(error, "the vocabulary (%d symbols) must have more than the 4 special symbols", v);
      return invalid(error, "%s must be in %d..%d, got %d", l->flag, l->min, l->max, v);
    }
  }
  for (size_t i = 0; i < moelm_model_n_real_limits; i++) {
    const MoelmRealLimit *l = &moelm_model_real_limits[i];
    const double v = *MOELM_CFG_REAL(cfg, l);
    if (!(v >= l->min && (l->max_open ? v < l->max : v <= l->max)))
      return invalid(error, "%s must be in [%g, %g%c, got %g", l->flag, l->min, l->max, l->max_open ? ')' : ']', v);
  }
  return TRUE;
}

static gboolean check_moe(const MoelmModelConfig *cfg, GError **error)
{
  if (cfg->moe_freq == 0)
    return cfg->moe_route_token0 == 0 || invalid(error, "sequence routing (--mixture-expert-ffn) needs MoE layers");
  if (cfg->moe_top_k != 1 && cfg->moe_top_k != 2)
    return invalid(error, "--moe-top-k must be 1 or 2, got %d", cfg->moe_top_k);
  if (cfg->moe_experts < cfg->moe_top_k)
    return invalid(error, cfg->moe_top_k == 2
                              ? "--moe-expert-count must be at least 2 for top-2 gating (or use --moe-top1-expert), got %d"
                              : "--moe-expert-count must be at least 1, got %d",
                   cfg->moe_experts);
  if (!(cfg->moe_capacity_factor > 0))
    return invalid(error, "--moe-capacity-factor must be positive, got %g", cfg->moe_capacity_factor);
  if ((unsigned)cfg->moe_second_expert_policy > MOELM_SECOND_EXPERT_RANDOM)
    return invalid(error, "unknown --moe-second-expert-policy");
  if (cfg->moe_route_token0 > 0 && cfg->moe_top_k != 1)
    return invalid(error, "sequence-routed MoE layers (--mixture-expert-ffn) route top-1, got top-%d", cfg->moe_top_k);
  if (cfg->moe_route_token0 > 0 && (int64_t)cfg->moe_route_token0 + cfg->moe_experts > cfg->vocab_size)
    return invalid(error, "sequence routing's expert tokens %d..%d are outside the vocabulary of %d",
                   cfg->moe_route_token0, cfg->moe_route_token0 + cfg->moe_experts - 1, cfg->vocab_size);
  return TRUE;
}

static gboolean check_moefy(const MoelmModelConfig *cfg, GError **error)
{
  const int E = cfg->moefy_experts;
  if (E == 0)
    return TRUE;
  if (cfg->moe_freq > 0)
    return invalid(error, "a moefied model has no token-MoE layers (moe_freq %d)", cfg->moe_freq);
  if (cfg->ffn_dim % E != 0)
    return invalid(error, "moefy_num_experts %d must divide --decoder-ffn-embed-dim %d", E, cfg->ffn_dim);
  if (cfg->moefy_top_k < 1 || cfg->moefy_top_k > E)
    return invalid(error, "moefy_top_k must be between 1 and moefy_num_experts %d, got %d", E, cfg->moefy_top_k);
  if ((unsigned)cfg->moefy_select > MOELM_MOEFY_SELECT_GROUNDTRUTH)
    return invalid(error, "unknown moefy_select");
  if (cfg->moefy_select == MOELM_MOEFY_SELECT_MLP && cfg->moefy_router_dim <= 0)
    return invalid(error, "the MLP selector needs a positive moefy_router_dim");
  return TRUE;
}

gboolean moelm_model_config_validate(const MoelmModelConfig *cfg, GError **error)
{
  if (!check_ranges(cfg, error))
    return FALSE;
  if (cfg->embed_dim % cfg->heads != 0)
    return invalid(error, "--decoder-embed-dim %d must be divisible by --decoder-attention-heads %d", cfg->embed_dim,
                   cfg->heads);
  if (cfg->gate_experts == 1)
    return invalid(error, "a gating network needs at least 2 experts");
  if ((unsigned)cfg->activation > MOELM_ACT_TANH)
    return invalid(error, "unknown --activation-fn");
  return check_moe(cfg, error) && check_moefy(cfg, error);
}

int moelm_model_config_moe_layers(const MoelmModelConfig *cfg)
{
  return cfg->moe_freq > 0 ? cfg->layers / cfg->moe_freq : 0; /* layers l with (l+1) % freq == 0 */
}

/* a += b * c, FALSE on overflow. */
static gboolean mul_add(guint64 *a, guint64 b, guint64 c)
{
  guint64 p;
  return g_uint64_checked_mul(&p, b, c) && g_uint64_checked_add(a, *a, p);
}

gboolean moelm_model_config_num_params(const MoelmModelConfig *cfg, guint64 *count)
{
  const guint64 C = (guint64)cfg->embed_dim, F = (guint64)cfg->ffn_dim, V = (guint64)cfg->vocab_size;
  const guint64 E = (guint64)cfg->moe_experts, Fe = (guint64)moelm_model_config_expert_ffn_dim(cfg);
  const guint64 moe = (guint64)moelm_model_config_moe_layers(cfg), dense = (guint64)cfg->layers - moe;
  /* attention (q, k, v, out with biases) and the two layer norms: in every layer */
  const guint64 per_layer = 4 * C * C + 4 * C + 4 * C;
  /* fc1, fc2 (dense) or the router and E experts (MoE) */
  const guint64 dense_ffn = 2 * C * F + F + C, expert = 2 * C * Fe + Fe + C;
  guint64 n = 0, moe_ffn = E * C;
  gboolean ok = mul_add(&moe_ffn, E, expert) && mul_add(&n, V, C) && mul_add(&n, cfg->layers, per_layer) &&
                mul_add(&n, dense, dense_ffn) && mul_add(&n, moe, moe_ffn);
  if (ok && cfg->learned_pos)
    ok = mul_add(&n, (guint64)cfg->max_positions + MOELM_PAD + 1, C);
  if (ok && cfg->normalize_before && cfg->final_norm)
    ok = mul_add(&n, 2, C);
  if (ok && !cfg->share_embed)
    ok = mul_add(&n, V, C);
  if (ok && cfg->gate_experts > 0)
    ok = mul_add(&n, C + 1, C + (guint64)cfg->gate_experts);
  /* a moefied FFN holds the dense one's parameters, reordered, plus its selector's router */
  const guint64 ME = (guint64)cfg->moefy_experts, H = (guint64)cfg->moefy_router_dim, L = (guint64)cfg->layers;
  if (ok && ME > 0 && cfg->moefy_select == MOELM_MOEFY_SELECT_SIMILARITY)
    ok = mul_add(&n, L, ME * C);
  if (ok && ME > 0 && cfg->moefy_select == MOELM_MOEFY_SELECT_MLP)
    ok = mul_add(&n, L, H * C + H + ME * H + ME);
  *count = ok ? n : G_MAXUINT64;
  return ok;
}

double moelm_model_config_train_bytes(const MoelmModelConfig *cfg, double rows, int expert_ranks)
{
  const double C = cfg->embed_dim, F = cfg->ffn_dim, V = cfg->vocab_size, E = cfg->moe_experts;
  const double Fe = moelm_model_config_expert_ffn_dim(cfg), K = cfg->moe_top_k;
  const double moe = moelm_model_config_moe_layers(cfg), dense = cfg->layers - moe;
  guint64 n = 0;
  const double R = MAX(expert_ranks, 1);
  const double expert_params = moe * E * (2 * C * Fe + Fe + C);
  /* this rank's parameters: all but the experts of the other expert ranks */
  const double params = (moelm_model_config_num_params(cfg, &n) ? (double)n : 1.8e19) - expert_params * (R - 1) / R;
  /* parameters, gradients and Adam's two moments; the initialisation's host copy comes and
   * goes before the moments are allocated */
  double floats = 4 * params;
  if (!cfg->learned_pos)
    floats += ((double)cfg->max_positions + MOELM_PAD + 1) * C;
  /* per token row: logits, the backward's scratch, each layer's saved activations (norms,
   * q/k/v, attention output, residuals) and its FFN's (dense: fc1 and its activation; MoE:
   * K routed copies of the row through an expert, and the router logits) */
  const double per_row = V + 7 * C + cfg->layers * 8 * C + dense * 2 * F + moe * (K * (2 * Fe + 2 * C) / R + E);
  floats += rows * per_row;
  return floats * sizeof(float);
}
