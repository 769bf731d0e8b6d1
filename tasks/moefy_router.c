/* moelm — training MoEfication's MLP selector on the backend (see moefy_router.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moefy_router.h"
#include "moelm/errors.h"
#include "moelm/log.h"
#include "moelm/optim.h"
#include "moelm/rng.h"

#define LOG "moelm.moefy"

/* ---- owned buffers ----------------------------------------------------------------------- */

void moelm_moefy_buffers_init(MoelmMoefyBuffers *b, MoelmBackend *be)
{
  b->be = be;
  b->ptrs = g_ptr_array_new();
  b->ok = TRUE;
}

void *moelm_moefy_buffers_alloc(MoelmMoefyBuffers *b, size_t bytes, GError **error)
{
  if (!b->ok)
    return NULL;
  void *p = b->be->ops->alloc(b->be, bytes, error);
  if (p == NULL)
    b->ok = FALSE;
  else
    g_ptr_array_add(b->ptrs, p);
  return p;
}

void moelm_moefy_buffers_clear(MoelmMoefyBuffers *b)
{
  if (b->ptrs == NULL)
    return;
  for (guint i = 0; i < b->ptrs->len; i++)
    b->be->ops->free(b->be, g_ptr_array_index(b->ptrs, i));
  g_ptr_array_free(b->ptrs, TRUE);
  b->ptrs = NULL;
}

void moelm_router_report_clear(MoelmRouterReport *r)
{
  g_free(r->train_loss);
  g_free(r->heldout_loss);
  memset(r, 0, sizeof *r);
}

/* ---- the router -------------------------------------------------------------------------- */

typedef struct {
  MoelmBackend *be;
  int C, E, H, B, K;
  size_t P;                 /* parameters: fc1.weight, fc1.bias, fc2.weight, fc2.bias */
  float *params, *grads;    /* (P) */
  int32_t *idx;             /* (B) the batch's rows */
  MoelmAct *xb, *tb_act;    /* (B, C), (B, E) */
  float *tb, *pf;           /* (B, E) targets, predictions (then their difference), fp32 */
  MoelmAct *z1, *a1;        /* (B, H) pre- and post-relu */
  MoelmAct *p_act, *dp;     /* (B, E) */
  MoelmAct *da1, *dz1;      /* (B, H) */
  int32_t *choice, *offsets, *dtok; /* (B*K), (E+1), (B*K) top-k scratch (recall) */
} Router;

static float *w1(Router *r) { return r->params; }
static float *b1(Router *r) { return r->params + (size_t)r->H * r->C; }
static float *w2(Router *r) { return b1(r) + r->H; }
static float *b2(Router *r) { return w2(r) + (size_t)r->E * r->H; }

static gboolean router_alloc(Router *r, MoelmMoefyBuffers *bufs, GError **error)
{
  const size_t B = r->B, C = r->C, E = r->E, H = r->H, K = r->K, A = r->be->act_size;
  r->params = moelm_moefy_buffers_alloc(bufs, r->P * sizeof(float), error);
  r->grads = moelm_moefy_buffers_alloc(bufs, r->P * sizeof(float), error);
  r->idx = moelm_moefy_buffers_alloc(bufs, B * sizeof(int32_t), error);
  r->xb = moelm_moefy_buffers_alloc(bufs, B * C * A, error);
  r->tb_act = moelm_moefy_buffers_alloc(bufs, B * E * A, error);
  r->tb = moelm_moefy_buffers_alloc(bufs, B * E * sizeof(float), error);
  r->pf = moelm_moefy_buffers_alloc(bufs, B * E * sizeof(float), error);
  r->z1 = moelm_moefy_buffers_alloc(bufs, B * H * A, error);
  r->a1 = moelm_moefy_buffers_alloc(bufs, B * H * A, error);
  r->p_act = moelm_moefy_buffers_alloc(bufs, B * E * A, error);
  r->dp = moelm_moefy_buffers_alloc(bufs, B * E * A, error);
  r->da1 = moelm_moefy_buffers_alloc(bufs, B * H * A, error);
  r->dz1 = moelm_moefy_buffers_alloc(bufs, B * H * A, error);
  r->choice = moelm_moefy_buffers_alloc(bufs, B * K * sizeof(int32_t), error);
  r->offsets = moelm_moefy_buffers_alloc(bufs, (E + 1) * sizeof(int32_t), error);
  r->dtok = moelm_moefy_buffers_alloc(bufs, B * K * sizeof(int32_t), error);
  return bufs->ok;
}

/* nn.Linear's default initialisation: weights and biases uniform in +-1/sqrt(fan_in). */
static void router_init(Router *r, uint64_t seed)
{
  float *h = g_new(float, r->P);
  MoelmRng rng;
  moelm_rng_init(&rng, seed, 0x726f7574u /* "rout" */, 0);
  const size_t n1 = (size_t)r->H * r->C + r->H;
  for (size_t i = 0; i < r->P; i++) {
    const float bound = 1.0f / sqrtf((float)(i < n1 ? r->C : r->H));
    h[i] = bound * (2.0f * moelm_rng_next_float(&rng) - 1.0f);
  }
  r->be->ops->to_device(r->be, r->params, h, r->P * sizeof(float));
  g_free(h);
}

/* Gather the b rows `rows` (host) of x and targets, run the router; pf = prediction. */
static void router_forward(Router *r, const MoelmAct *x, const MoelmAct *targets, const int32_t *rows, int b)
{
  MoelmBackend *be = r->be;
  const struct moelm_backend_ops *o = be->ops;
  o->to_device(be, r->idx, rows, (size_t)b * sizeof(int32_t));
  o->gather_rows(be, r->xb, x, r->idx, b, r->C);
  o->gather_rows(be, r->tb_act, targets, r->idx, b, r->E);
  o->convert(be, r->tb, MOELM_DT_F32, r->tb_act, be->act_dtype, (size_t)b * r->E);
  o->linear_forward(be, r->z1, r->xb, w1(r), b1(r), b, r->C, r->H);
  o->activation_forward(be, MOELM_ACT_RELU, r->a1, r->z1, (size_t)b * r->H);
  o->linear_forward(be, r->p_act, r->a1, w2(r), b2(r), b, r->H, r->E);
  o->convert(be, r->pf, MOELM_DT_F32, r->p_act, be->act_dtype, (size_t)b * r->E);
}

/* The mean squared error of the last forward (pf becomes prediction - target); with `grad`,
 * its gradient is accumulated into r->grads. */
static double router_loss(Router *r, int b, gboolean grad)
{
  MoelmBackend *be = r->be;
  const struct moelm_backend_ops *o = be->ops;
  const size_t bE = (size_t)b * r->E, bH = (size_t)b * r->H;
  o->axpy(be, r->pf, -1.0f, r->tb, bE);
  const double loss = o->sum_squares(be, r->pf, bE) / (double)bE;
  if (grad) { /* d loss / d p = 2 (p - t) / (b E) */
    o->scale(be, r->pf, 2.0f / (float)bE, bE);
    o->convert(be, r->dp, be->act_dtype, r->pf, MOELM_DT_F32, bE);
    o->zero(be, r->da1, moelm_act_bytes(be, bH));
    o->linear_backward(be, r->da1, r->grads + (w2(r) - r->params), r->grads + (b2(r) - r->params), r->dp, r->a1,
                       w2(r), b, r->H, r->E);
    o->zero(be, r->dz1, moelm_act_bytes(be, bH));
    o->activation_backward(be, MOELM_ACT_RELU, r->dz1, r->z1, r->da1, bH);
    o->linear_backward(be, NULL, r->grads, r->grads + (b1(r) - r->params), r->dz1, r->xb, w1(r), b, r->C, r->H);
  }
  return loss;
}

/* The held-out mean squared error (NAN without held-out rows) and, with recall != NULL, the
 * share of each token's top-k experts by target that the router's top-k finds. */
static gboolean heldout(Router *r, const MoelmAct *x, const MoelmAct *targets, int64_t n0, int64_t n, double *mse,
                        double *recall, GError **error)
{
  MoelmBackend *be = r->be;
  const int K = r->K;
  int32_t *rows = g_new(int32_t, r->B), *cp = g_new(int32_t, (size_t)r->B * K), *ct = g_new(int32_t, (size_t)r->B * K);
  double sum = 0, found = 0;
  for (int64_t s = n0; s < n; s += r->B) {
    const int b = (int)MIN((int64_t)r->B, n - s);
    for (int i = 0; i < b; i++)
      rows[i] = (int32_t)(s + i);
    router_forward(r, x, targets, rows, b);
    if (recall) {
      be->ops->topk_dispatch(be, r->pf, NULL, b, r->E, K, r->choice, r->offsets, r->dtok);
      be->ops->to_host(be, cp, r->choice, (size_t)b * K * sizeof(int32_t));
      be->ops->topk_dispatch(be, r->tb, NULL, b, r->E, K, r->choice, r->offsets, r->dtok);
      be->ops->to_host(be, ct, r->choice, (size_t)b * K * sizeof(int32_t));
      for (int i = 0; i < b; i++)
        for (int k = 0; k < K; k++)
          for (int j = 0; j < K; j++)
            found += cp[(size_t)i * K + k] == ct[(size_t)i * K + j];
    }
    sum += router_loss(r, b, FALSE) * b;
  }
  g_free(ct);
  g_free(cp);
  g_free(rows);
  *mse = n > n0 ? sum / (double)(n - n0) : NAN;
  if (recall)
    *recall = n > n0 ? found / ((double)(n - n0) * K) : NAN;
  return moelm_backend_check(be, "router", error);
}

gboolean moelm_moefy_train_router(MoelmBackend *be, const MoelmAct *x, const MoelmAct *targets, int64_t n,
                                  int64_t n_held, int C, int E, int top_k, const MoelmRouterOptions *opt, int layer,
                                  float *params, MoelmRouterReport *report, GError **error)
{
  memset(report, 0, sizeof *report);
  const int64_t n_train = n - n_held;
  if (opt->hidden < 1 || opt->epochs < 1 || opt->batch < 1 || !(opt->lr > 0) || n_train < 1 || n_held < 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "router training needs a positive --router-dim, --router-epochs, --router-batch-size, --router-lr "
                "and training tokens (got %" G_GINT64_FORMAT ")",
                n_train);
    return FALSE;
  }
  Router r = {.be = be, .C = C, .E = E, .H = opt->hidden, .B = (int)MIN((int64_t)opt->batch, MAX(n_train, n_held)),
              .K = top_k};
  r.P = (size_t)r.H * C + r.H + (size_t)E * r.H + E;
  MoelmMoefyBuffers bufs;
  moelm_moefy_buffers_init(&bufs, be);
  MoelmAdam adam = {0};
  MoelmAdamConfig acfg;
  moelm_adam_config_init(&acfg);
  gboolean ok = router_alloc(&r, &bufs, error) && moelm_adam_init(&adam, &acfg, be, r.P, error);
  int32_t *order = g_new(int32_t, MAX(n_train, 1));
  report->train_loss = g_new(double, opt->epochs);
  report->heldout_loss = g_new(double, opt->epochs);
  report->heldout_recall = NAN;
  if (ok)
    router_init(&r, opt->seed);
  MoelmRng rng;
  moelm_rng_init(&rng, opt->seed, 0x72627463u /* "rbtc" */, (uint32_t)layer);
  for (int ep = 0; ok && ep < opt->epochs; ep++) {
    for (int64_t i = 0; i < n_train; i++) /* a fresh order every epoch (Fisher-Yates) */
      order[i] = (int32_t)i;
    for (int64_t i = n_train - 1; i > 0; i--) {
      const int64_t j = moelm_rng_next_below(&rng, (uint32_t)(i + 1));
      const int32_t t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
    double sum = 0;
    for (int64_t s = 0; ok && s < n_train; s += r.B) {
      const int b = (int)MIN((int64_t)r.B, n_train - s);
      be->ops->zero(be, r.grads, r.P * sizeof(float));
      router_forward(&r, x, targets, order + s, b);
      sum += router_loss(&r, b, TRUE) * b;
      ok = moelm_adam_step(&adam, r.params, r.grads, r.P, opt->lr, error);
    }
    ok = ok && moelm_backend_check(be, "router", error) &&
         heldout(&r, x, targets, n_train, n, &report->heldout_loss[ep], NULL, error);
    if (!ok)
      break;
    report->train_loss[ep] = sum / (double)n_train;
    report->epochs = ep + 1;
    moelm_info(LOG, "layer %d router epoch %d: train mse %.5f, held-out mse %.5f", layer, ep + 1,
               report->train_loss[ep], report->heldout_loss[ep]);
  }
  double last_mse = NAN;
  ok = ok && heldout(&r, x, targets, n_train, n, &last_mse, &report->heldout_recall, error);
  if (ok) {
    moelm_info(LOG, "layer %d router: the held-out tokens' top-%d experts by activation are %.1f%% in the router's "
                    "top-%d",
               layer, top_k, 100.0 * report->heldout_recall, top_k);
    be->ops->to_host(be, params, r.params, r.P * sizeof(float));
    ok = moelm_backend_check(be, "router", error);
  }
  g_free(order);
  moelm_adam_free(&adam);
  moelm_moefy_buffers_clear(&bufs);
  if (!ok)
    moelm_router_report_clear(report);
  return ok;
}
