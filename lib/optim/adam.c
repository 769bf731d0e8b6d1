/* moelm — fairseq's Adam (AdamW weight decay) over the flat parameter arena.
 *
 * Element-wise, in float32 as fairseq's fp32 Adam does it, with coefficients computed in
 * double and rounded once:
 *   m = m*b1 + (1-b1)*g;  v = v*b2 + (1-b2)*g*g;  p = p + (-lr*wd)*p;
 *   p = p + (-step_size) * (m / (sqrt(v) + eps)),  step_size = lr*sqrt(1-b2^t)/(1-b1^t). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moelm/errors.h"
#include "moelm/optim.h"
#include "optim/json_state.h"
#include "optim/number_list.h"

#define ADAM_ALIGN 64
/* Below this many elements per thread, a thread costs more than it saves. */
#define ADAM_MIN_PER_THREAD ((size_t)1 << 15)
/* Thread ranges start on multiples of this (whole cache lines, whole vectors). */
#define ADAM_CHUNK_ALIGN ((size_t)16)
#define ADAM_MAX_THREADS 64

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
  if (!(cfg->eps >= 0.0 && isfinite(cfg->eps))) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--adam-eps %g: must be a finite number >= 0",
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

static float *alloc_zeroed(size_t n, GError **error)
{
  if (n > (SIZE_MAX - ADAM_ALIGN) / sizeof(float)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "adam: %zu floats do not fit in memory", n);
    return NULL;
  }
  size_t bytes = (n * sizeof(float) + ADAM_ALIGN - 1) / ADAM_ALIGN * ADAM_ALIGN;
  void *mem = NULL;
  if (posix_memalign(&mem, ADAM_ALIGN, bytes > 0 ? bytes : ADAM_ALIGN) != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "adam: cannot allocate %zu bytes for a moment buffer",
                bytes);
    return NULL;
  }
  memset(mem, 0, bytes);
  return mem;
}

gboolean moelm_adam_init(MoelmAdam *adam, const MoelmAdamConfig *cfg, size_t n, GError **error)
{
  memset(adam, 0, sizeof *adam);
  if (!moelm_adam_config_validate(cfg, error))
    return FALSE;
  adam->exp_avg = alloc_zeroed(n, error);
  if (adam->exp_avg == NULL)
    return FALSE;
  adam->exp_avg_sq = alloc_zeroed(n, error);
  if (adam->exp_avg_sq == NULL) {
    free(adam->exp_avg);
    adam->exp_avg = NULL;
    return FALSE;
  }
  adam->cfg = *cfg;
  adam->n = n;
  adam->n_threads = 1;
  return TRUE;
}

void moelm_adam_free(MoelmAdam *adam)
{
  free(adam->exp_avg);
  free(adam->exp_avg_sq);
  memset(adam, 0, sizeof *adam);
}

void moelm_adam_reset(MoelmAdam *adam)
{
  if (adam->n > 0) {
    memset(adam->exp_avg, 0, adam->n * sizeof(float));
    memset(adam->exp_avg_sq, 0, adam->n * sizeof(float));
  }
  adam->step = 0;
}

double moelm_adam_step_size(const MoelmAdamConfig *cfg, int64_t step, double lr)
{
  double bias_correction1 = 1.0 - pow(cfg->beta1, (double)step);
  double bias_correction2 = 1.0 - pow(cfg->beta2, (double)step);
  return lr * sqrt(bias_correction2) / bias_correction1;
}

typedef struct {
  float beta1, one_minus_beta1;
  float beta2, one_minus_beta2;
  float eps;
  float neg_decay;      /* -lr * weight_decay */
  float neg_step_size;  /* -step_size */
} AdamCoefs;

/* The update over [0, n) of four aligned mirrors. Blocks of 8 with a fixed trip count let
 * the -O2 vectoriser turn the inner loop into one AVX2 vector per array. */
static void adam_range(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
                       size_t n, const AdamCoefs *c)
{
  const float b1 = c->beta1, a1 = c->one_minus_beta1, b2 = c->beta2, a2 = c->one_minus_beta2;
  const float eps = c->eps, decay = c->neg_decay, step = c->neg_step_size;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (size_t k = i; k < i + 8; k++) {
      float gk = g[k];
      float mk = m[k] * b1 + a1 * gk;
      float vk = v[k] * b2 + a2 * gk * gk;
      m[k] = mk;
      v[k] = vk;
      float pk = p[k] + decay * p[k];
      p[k] = pk + step * (mk / (sqrtf(vk) + eps));
    }
  }
  for (; i < n; i++) {
    float gi = g[i];
    float mi = m[i] * b1 + a1 * gi;
    float vi = v[i] * b2 + a2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    float pi = p[i] + decay * p[i];
    p[i] = pi + step * (mi / (sqrtf(vi) + eps));
  }
}

typedef struct {
  float *p;
  const float *g;
  float *m, *v;
  size_t n;
  const AdamCoefs *c;
} AdamSlice;

static gpointer adam_slice_thread(gpointer data)
{
  AdamSlice *s = data;
  adam_range(s->p, s->g, s->m, s->v, s->n, s->c);
  return NULL;
}

gboolean moelm_adam_step(MoelmAdam *adam, float *params, const float *grads, size_t n, double lr,
                         GError **error)
{
  if (n != adam->n) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH,
                "adam: step over %zu parameters, but the moments hold %zu", n, adam->n);
    return FALSE;
  }
  adam->step++;
  const MoelmAdamConfig *cfg = &adam->cfg;
  AdamCoefs c = {
    .beta1 = (float)cfg->beta1,
    .one_minus_beta1 = (float)(1.0 - cfg->beta1),
    .beta2 = (float)cfg->beta2,
    .one_minus_beta2 = (float)(1.0 - cfg->beta2),
    .eps = (float)cfg->eps,
    .neg_decay = (float)(-cfg->weight_decay * lr),
    .neg_step_size = (float)(-moelm_adam_step_size(cfg, adam->step, lr)),
  };

  size_t n_threads = adam->n_threads > 1 ? (size_t)MIN(adam->n_threads, ADAM_MAX_THREADS) : 1;
  n_threads = MIN(n_threads, MAX(n / ADAM_MIN_PER_THREAD, (size_t)1));
  if (n_threads <= 1) {
    adam_range(params, grads, adam->exp_avg, adam->exp_avg_sq, n, &c);
    return TRUE;
  }
  /* Equal slices rounded to ADAM_CHUNK_ALIGN; the caller's thread takes the last one. */
  size_t per = (n / n_threads + ADAM_CHUNK_ALIGN - 1) / ADAM_CHUNK_ALIGN * ADAM_CHUNK_ALIGN;
  AdamSlice slices[ADAM_MAX_THREADS];
  GThread *threads[ADAM_MAX_THREADS];
  for (size_t t = 0; t < n_threads; t++) {
    size_t lo = MIN(t * per, n), hi = t + 1 == n_threads ? n : MIN(lo + per, n);
    slices[t] = (AdamSlice){params + lo, grads + lo, adam->exp_avg + lo, adam->exp_avg_sq + lo, hi - lo, &c};
    if (t + 1 < n_threads) {
      /* A thread that cannot start leaves its slice to the caller (below). */
      threads[t] = g_thread_try_new("moelm-adam", adam_slice_thread, &slices[t], NULL);
    }
  }
  adam_range(slices[n_threads - 1].p, slices[n_threads - 1].g, slices[n_threads - 1].m,
             slices[n_threads - 1].v, slices[n_threads - 1].n, &c);
  for (size_t t = 0; t + 1 < n_threads; t++) {
    if (threads[t] != NULL)
      g_thread_join(threads[t]);
    else
      adam_slice_thread(&slices[t]);
  }
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
