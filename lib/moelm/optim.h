/* moelm — the optimizer over the flat parameter arena, as fairseq does it:
 *
 *   - `--optimizer adam`: fairseq's Adam, which is AdamW (decoupled weight decay
 *     `p -= lr*wd*p` before the update; denominator sqrt(exp_avg_sq) + eps; step size
 *     lr*sqrt(1-b2^t)/(1-b1^t));
 *   - gradient clipping as fairseq's clip_grad_norm_ (`--clip-norm`), gradient scaling
 *     (fairseq's multiply_grads, used to divide by the sample size);
 *   - the fp16 dynamic loss scaler (fairseq's DynamicLossScaler), pure host logic.
 *
 * Parameters, gradients and both Adam moments are flat float32 arrays of the same length n
 * (the arena and its mirrors), so one step is one loop. See docs/optim.md. */
#ifndef MOELM_OPTIM_H
#define MOELM_OPTIM_H

#include <stddef.h>
#include <stdint.h>
#include <glib.h>
#include <json-glib/json-glib.h>

#include "moelm/backend.h"

G_BEGIN_DECLS

/* ---- Adam (fairseq `--optimizer adam`, i.e. AdamW) ---------------------------------- */

typedef struct {
  double beta1, beta2;  /* --adam-betas '(0.9, 0.999)' */
  double eps;           /* --adam-eps 1e-8 */
  double weight_decay;  /* --weight-decay 0.0 (decoupled: p -= lr*wd*p) */
} MoelmAdamConfig;

/* fairseq's defaults. */
void moelm_adam_config_init(MoelmAdamConfig *cfg);

/* 0 <= beta < 1, eps >= 0, all finite. */
gboolean moelm_adam_config_validate(const MoelmAdamConfig *cfg, GError **error);

/* `--optimizer NAME`: "adam" (fairseq's only Adam, already AdamW) and "adamw" (moelm's
 * alias for the same thing) are accepted; anything else is an error naming the choices. */
gboolean moelm_optimizer_check_name(const char *name, GError **error);

/* Parse `--adam-betas` as fairseq users write it: "(0.9, 0.98)", "0.9,0.98", "[0.9, 0.98]"
 * (spaces anywhere, one trailing comma allowed). Exactly two numbers in [0, 1). The error
 * names the option and the text. */
gboolean moelm_parse_adam_betas(const char *text, double *beta1, double *beta2, GError **error);

typedef struct {
  MoelmAdamConfig cfg;
  MoelmBackend *be;   /* whose memory holds the moments */
  size_t n;           /* floats in the arena */
  float *exp_avg;     /* (n) first moment (backend memory); saved as optimizer.exp_avg.<param> */
  float *exp_avg_sq;  /* (n) second moment (backend memory); saved as optimizer.exp_avg_sq.<param> */
  int64_t step;       /* updates taken (fairseq's state["step"]); bias corrections use it */
} MoelmAdam;

/* Zeroed moments of n floats each in `be`'s memory, step 0. */
gboolean moelm_adam_init(MoelmAdam *adam, const MoelmAdamConfig *cfg, MoelmBackend *be, size_t n, GError **error);
void moelm_adam_free(MoelmAdam *adam);

/* Zero the moments and the step count (--reset-optimizer). */
void moelm_adam_reset(MoelmAdam *adam);

/* The bias-corrected step size of update number `step` (1-based), in double as fairseq
 * computes it: lr * sqrt(1 - beta2^step) / (1 - beta1^step). For other Adam kernels (CUDA). */
double moelm_adam_step_size(const MoelmAdamConfig *cfg, int64_t step, double lr);

/* One update over the whole arena, done by the backend's adam_step (its threads, its
 * memory): step += 1, then for every i
 *   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
 *   p -= lr*wd*p;  p -= step_size * m / (sqrt(v) + eps).
 * n must equal adam->n (else an error and nothing changes). */
gboolean moelm_adam_step(MoelmAdam *adam, float *params, const float *grads, size_t n, double lr, GError **error);

/* Checkpoint metadata: {"name": "adam", "step": N, "betas": [b1, b2], "eps": e,
 * "weight_decay": wd}. Loading restores `step` only: like fairseq (optimizer_overrides), the
 * hyper-parameters come from the current command line. The moments travel as tensors. */
JsonNode *moelm_adam_state_to_json(const MoelmAdam *adam);
gboolean moelm_adam_state_from_json(MoelmAdam *adam, JsonNode *node, GError **error);

/* ---- gradients ------------------------------------------------------------------------ */

/* The gradient functions below run on the backend that holds the gradients (its
 * sum_squares and scale ops). */

/* Sum of squares in double (for a distributed norm: all-reduce this, then sqrt). */
double moelm_grad_sumsq(MoelmBackend *be, const float *grads, size_t n);

/* fairseq's clip coefficient: min(1, max_norm / (total_norm + 1e-6)); 1 when max_norm <= 0
 * or the norm is not finite. */
double moelm_clip_coef(double total_norm, double max_norm);

/* fairseq's clip_grad_norm_ over the flat gradient buffer: the total L2 norm (computed in
 * double) is returned (logged as gnorm); if max_norm > 0 the grads are multiplied by
 * moelm_clip_coef(norm, max_norm) when that is below 1. max_norm 0 only measures. A
 * non-finite norm leaves the grads untouched: the caller treats it as an overflow. */
double moelm_clip_grad_norm(MoelmBackend *be, float *grads, size_t n, double max_norm);

/* grads *= c (fairseq's multiply_grads: the trainer divides by the sample size). */
void moelm_multiply_grads(MoelmBackend *be, float *grads, size_t n, double c);

/* FALSE when any gradient is inf or nan. */
gboolean moelm_grads_all_finite(MoelmBackend *be, const float *grads, size_t n);

/* ---- fp16 dynamic loss scaler (fairseq's DynamicLossScaler) ---------------------------- */

typedef struct {
  double init_scale;      /* --fp16-init-scale 128 (2^7) */
  double scale_factor;    /* 2.0 */
  int64_t scale_window;   /* --fp16-scale-window; <= 0: 2^14 / (world_size * update_freq) */
  double tolerance;       /* --fp16-scale-tolerance 0.0 */
  double threshold;       /* --threshold-loss-scale; <= 0: none (the scale never floors) */
  double min_loss_scale;  /* --min-loss-scale 1e-4: reaching it stops training */
} MoelmLossScalerConfig;

void moelm_loss_scaler_config_init(MoelmLossScalerConfig *cfg);

/* fairseq's derived window: int(2^14 / world_size / update_freq), at least 1. */
int64_t moelm_loss_scaler_default_window(int world_size, int update_freq);

typedef struct {
  MoelmLossScalerConfig cfg;  /* with the window resolved */
  double loss_scale;          /* multiply the loss by this before backward */
  int64_t iter;
  int64_t last_overflow_iter;
  int64_t last_rescale_iter;
  int64_t overflows_since_rescale;
} MoelmLossScaler;

gboolean moelm_loss_scaler_init(MoelmLossScaler *scaler, const MoelmLossScalerConfig *cfg,
                                int world_size, int update_freq, GError **error);

/* After a successful optimizer step: grow the scale by scale_factor every scale_window
 * iterations without overflow. */
void moelm_loss_scaler_update(MoelmLossScaler *scaler);

/* With the unscaled gradient norm of this iteration: a non-finite norm is an overflow
 * (*overflow = TRUE: skip this update and zero the grads); the scale backs off by
 * scale_factor when the overflow rate since the last rescale reaches `tolerance`. Returns
 * FALSE with an error (training must stop) when the scale would fall to min_loss_scale or
 * below; the scale is then left as it was. */
gboolean moelm_loss_scaler_check_overflow(MoelmLossScaler *scaler, double grad_norm, gboolean *overflow,
                                          GError **error);

/* Clipping under the scaler (fairseq's FP16Optimizer.clip_grad_norm): the coefficient is
 * max_norm / grad_norm when grad_norm > max_norm > 0 (no 1e-6 here), else 1. */
double moelm_loss_scaler_clip_coef(double grad_norm, double max_norm);

/* Checkpoint metadata as fairseq saves it: {"loss_scale": S}; loading restores the scale. */
JsonNode *moelm_loss_scaler_state_to_json(const MoelmLossScaler *scaler);
gboolean moelm_loss_scaler_state_from_json(MoelmLossScaler *scaler, JsonNode *node, GError **error);

G_END_DECLS

#endif
