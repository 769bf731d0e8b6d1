/* moelm — a moefied FFN (MoEfication, docs/moefy.md): the dense FFN's neurons split into E
 * experts of Fe = F/E neurons, of which each token computes only the K its selector scores
 * highest. It is the token-MoE execution pattern with MoEfication's combine rule:
 *   scores (N, E) = selector(x)      similarity: x . centre_e; MLP: fc2(relu(fc1(x)));
 *                                    groundtruth: sum of the expert's positive activations
 *   topk_dispatch → the N*K (token, expert) rows grouped by expert
 *   gather_rows x → grouped fc1 slices → activation → grouped fc2 slices (no bias)
 *   out = fc2 bias on every token + scatter_add_rows of the expert outputs, weight 1
 * so with K = E it is the dense FFN, summed in another order. Inference only: no dropout, no
 * backward. Everything stays in backend memory; the host never sees the choices. */
#include "config.h"

#include <string.h>

#include "model-private.h"
#include "moelm/errors.h"

struct MoefiedActs {
  int rows, K;             /* tokens and top-k the buffers hold */
  float *scores;           /* (N, E) selector scores, fp32 */
  MoelmAct *scores_act;    /* (N, E) the same as the linear writes them */
  MoelmAct *hid;           /* (N, H) the MLP router's hidden layer, or (N, F) groundtruth activations */
  int32_t *choice;         /* (N*K) */
  int32_t *offsets;        /* (E+1) */
  int32_t *dispatch_token; /* (N*K) */
  int32_t *zeros;          /* (N) all 0: gathers the fc2 bias onto every token */
  MoelmAct *bias;          /* (C) a layer's fc2 bias in the activation type */
  MoelmAct *xin;           /* (N*K, C) dispatched inputs */
  MoelmAct *h;             /* (N*K, Fe) the experts' activations */
  MoelmAct *y;             /* (N*K, C) the experts' outputs */
  float *indicator;        /* (E, F) groundtruth: row e is 1 on expert e's neurons */
};

static void acts_release(MoelmModel *m, MoefiedActs *a)
{
  void *bufs[] = {&a->scores, &a->scores_act, &a->hid, &a->choice, &a->offsets, &a->dispatch_token,
                  &a->zeros,  &a->bias,       &a->xin, &a->h,      &a->y,       &a->indicator};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    moelm_model_release(m, bufs[i]);
  a->rows = a->K = 0;
}

void moelm_moefied_free(MoelmModel *m)
{
  if (m->mf == NULL)
    return;
  acts_release(m, m->mf);
  g_clear_pointer(&m->mf, g_free);
}

gboolean moelm_moefied_ensure(MoelmModel *m, int N, GError **error)
{
  const MoelmModelConfig *c = &m->cfg;
  if (c->moefy_experts <= 0)
    return TRUE;
  if (m->mf == NULL)
    m->mf = g_new0(MoefiedActs, 1);
  MoefiedActs *a = m->mf;
  if (N <= a->rows && c->moefy_top_k == a->K)
    return TRUE;
  acts_release(m, a);
  N = MAX(N, 1);
  const size_t E = c->moefy_experts, K = c->moefy_top_k, C = c->embed_dim, F = c->ffn_dim, Fe = F / E;
  const size_t n = (size_t)N, A = m->be->act_size;
  const gboolean truth = c->moefy_select == MOELM_MOEFY_SELECT_GROUNDTRUTH;
  const size_t hid = truth ? F : c->moefy_select == MOELM_MOEFY_SELECT_MLP ? (size_t)c->moefy_router_dim : 0;
  gboolean ok = TRUE;
  moelm_model_alloc(m, &a->scores, n * E, sizeof(float), &ok, error);
  moelm_model_alloc(m, &a->scores_act, n * E, A, &ok, error);
  if (hid > 0)
    moelm_model_alloc(m, &a->hid, n * hid, A, &ok, error);
  moelm_model_alloc(m, &a->choice, n * K, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &a->offsets, E + 1, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &a->dispatch_token, n * K, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &a->zeros, n, sizeof(int32_t), &ok, error);
  moelm_model_alloc(m, &a->bias, C, A, &ok, error);
  moelm_model_alloc(m, &a->xin, n * K * C, A, &ok, error);
  moelm_model_alloc(m, &a->h, n * K * Fe, A, &ok, error);
  moelm_model_alloc(m, &a->y, n * K * C, A, &ok, error);
  if (truth)
    moelm_model_alloc(m, &a->indicator, E * F, sizeof(float), &ok, error);
  if (!ok) {
    acts_release(m, a);
    return FALSE;
  }
  MoelmBackend *be = m->be;
  be->ops->zero(be, a->zeros, n * sizeof(int32_t));
  if (truth) { /* built once per size; E*F floats are small next to the weights */
    float *host = g_new0(float, E * F);
    for (size_t e = 0; e < E; e++)
      for (size_t j = 0; j < Fe; j++)
        host[e * F + e * Fe + j] = 1.0f;
    be->ops->to_device(be, a->indicator, host, E * F * sizeof(float));
    g_free(host);
  }
  a->rows = N;
  a->K = (int)K;
  return TRUE;
}

/* scores (N, E) fp32 of the selector on inp (N, C). */
static void select_scores(MoelmModel *m, const LayerParams *L, MoefiedActs *a, const MoelmAct *inp, int N)
{
  MoelmBackend *be = m->be;
  const struct moelm_backend_ops *o = be->ops;
  const MoelmModelConfig *c = &m->cfg;
  const int E = c->moefy_experts, C = c->embed_dim, F = c->ffn_dim, H = c->moefy_router_dim;
  switch (c->moefy_select) {
  case MOELM_MOEFY_SELECT_SIMILARITY:
    o->linear_forward(be, a->scores_act, inp, W_PARAM(m, L->router_w), NULL, N, C, E);
    break;
  case MOELM_MOEFY_SELECT_MLP:
    o->linear_forward(be, a->hid, inp, W_PARAM(m, L->router_w), W_PARAM(m, L->router_b), N, C, H);
    o->activation_forward(be, MOELM_ACT_RELU, a->hid, a->hid, (size_t)N * H);
    o->linear_forward(be, a->scores_act, a->hid, W_PARAM(m, L->router2_w), W_PARAM(m, L->router2_b), N, H, E);
    break;
  case MOELM_MOEFY_SELECT_GROUNDTRUTH:
    /* the whole FFN's activations (the experts' fc1 rows are one (F, C) matrix), their
     * positive part (gelu has a negative one), summed per expert by the indicator */
    o->linear_forward(be, a->hid, inp, W_PARAM(m, L->fc1_w), W_PARAM(m, L->fc1_b), N, C, F);
    o->activation_forward(be, c->activation, a->hid, a->hid, (size_t)N * F);
    if (c->activation != MOELM_ACT_RELU)
      o->activation_forward(be, MOELM_ACT_RELU, a->hid, a->hid, (size_t)N * F);
    o->linear_forward(be, a->scores_act, a->hid, a->indicator, NULL, N, F, E);
    break;
  }
  o->convert(be, a->scores, MOELM_DT_F32, a->scores_act, be->act_dtype, (size_t)N * E);
}

void moelm_moefied_forward(MoelmModel *m, int l, const MoelmAct *inp, MoelmAct *out, int N, const uint8_t *pad)
{
  MoelmBackend *be = m->be;
  const struct moelm_backend_ops *o = be->ops;
  const MoelmModelConfig *c = &m->cfg;
  const LayerParams *L = &m->layers[l];
  MoefiedActs *a = m->mf;
  const int E = c->moefy_experts, K = c->moefy_top_k, C = c->embed_dim, Fe = c->ffn_dim / E;
  const int R = K * N; /* dispatch rows */
  const size_t w1 = (size_t)Fe * C, w2 = (size_t)C * Fe; /* one expert's fc1 / fc2 to the next's */

  select_scores(m, L, a, inp, N);
  o->topk_dispatch(be, a->scores, pad, N, E, K, a->choice, a->offsets, a->dispatch_token);
  o->gather_rows(be, a->xin, inp, a->dispatch_token, R, C);
  o->grouped_linear_forward(be, a->h, a->xin, W_PARAM(m, L->fc1_w), w1, W_PARAM(m, L->fc1_b), Fe, a->offsets, E, R,
                            C, Fe);
  o->activation_forward(be, c->activation, a->h, a->h, (size_t)R * Fe);
  o->grouped_linear_forward(be, a->y, a->h, W_PARAM(m, L->fc2_w), w2, NULL, 0, a->offsets, E, R, Fe, C);
  /* the fc2 bias once per token, then the selected experts' outputs added to it */
  o->convert(be, a->bias, be->act_dtype, W_PARAM(m, L->fc2_b), MOELM_DT_F32, (size_t)C);
  o->gather_rows(be, out, a->bias, a->zeros, N, C);
  o->scatter_add_rows(be, out, a->y, a->dispatch_token, NULL, R, C);
}

/* ---- the public MoEfication helpers (lib/moelm/model.h) ------------------------------- */

gboolean moelm_model_set_moefy_top_k(MoelmModel *m, int k, GError **error)
{
  const int E = m->cfg.moefy_experts;
  if (E <= 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--moefy-top-k needs a moefied checkpoint (made by moelm moefy); this model is not moefied");
    return FALSE;
  }
  if (k < 1 || k > E) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--moefy-top-k %d must be between 1 and the model's %d experts per layer", k, E);
    return FALSE;
  }
  m->cfg.moefy_top_k = k; /* the scratch is sized by k: the next call regrows it */
  return TRUE;
}

const MoelmAct *moelm_model_ffn_input(const MoelmModel *m, int layer)
{
  if (m->acts == NULL || layer < 0 || layer >= m->cfg.layers || m->checkpoint_activations)
    return NULL; /* (checkpointed layers share one set of activations: only the last is left) */
  return m->cfg.normalize_before ? m->acts[layer].n2 : m->acts[layer].n1;
}

gboolean moelm_model_ffn_forward(MoelmModel *m, int layer, const MoelmAct *inp, MoelmAct *out, int N, GError **error)
{
  if (layer < 0 || layer >= m->cfg.layers) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "no decoder layer %d", layer);
    return FALSE;
  }
  if (!moelm_model_ensure_workspace(m, N, error) || !moelm_moefied_ensure(m, N, error))
    return FALSE;
  MoelmBackend *be = m->be;
  const LayerParams *L = &m->layers[layer];
  const int C = m->cfg.embed_dim, F = m->cfg.ffn_dim;
  if (L->moefied) {
    moelm_moefied_forward(m, layer, inp, out, N, NULL);
  } else if (L->moe) {
    moelm_moe_forward(m, layer, m->acts[layer].moe, inp, out, N, FALSE, NULL, NULL);
  } else {
    MoelmAct *h = m->acts[layer].fc1;
    be->ops->linear_forward(be, h, inp, W_PARAM(m, L->fc1_w), W_PARAM(m, L->fc1_b), N, C, F);
    be->ops->activation_forward(be, m->cfg.activation, h, h, (size_t)N * F);
    be->ops->linear_forward(be, out, h, W_PARAM(m, L->fc2_w), W_PARAM(m, L->fc2_b), N, F, C);
  }
  return moelm_backend_check(be, NULL, error);
}
