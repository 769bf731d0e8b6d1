/* Moefied FFNs (MoEfication, docs/moefy.md): the topk_dispatch op against its definition;
 * with k = E a moefied model scores exactly as the dense one it came from (relu and gelu,
 * pre- and post-norm, every split and selector); with k < E the FFN's output is the sum of
 * exactly the selected experts (checked against a host computation from the definition);
 * incremental decoding equals recomputation; a moefied checkpoint round-trips; bad
 * configurations are errors. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/checkpoint.h"
#include "moelm/dictionary.h"
#include "tasks/moefy.h"
#include "tasks/moefy_split.h"
#include "tiny-model.h"

/* ---- topk_dispatch ------------------------------------------------------------------------- */

static float rank_of(float v) { return isnan(v) ? -INFINITY : v; }

/* The definition, by brute force: token s's k-th choice is the expert that exactly k others
 * rank before. */
static void topk_reference(const float *x, const uint8_t *pad, int S, int E, int K, int32_t *choice, int32_t *offsets,
                           int32_t *tok)
{
  for (int s = 0; s < S; s++)
    for (int e = 0; e < E; e++) {
      int before = 0;
      for (int f = 0; f < E; f++) {
        const float a = rank_of(x[s * E + f]), b = rank_of(x[s * E + e]);
        before += a > b || (a == b && f < e);
      }
      if (before < K)
        choice[s * K + before] = (pad && pad[s]) ? -1 : e;
    }
  int row = 0;
  for (int e = 0; e < E; e++) {
    offsets[e] = row;
    for (int s = 0; s < S; s++)
      for (int k = 0; k < K; k++)
        if (choice[s * K + k] == e)
          tok[row++] = s;
  }
  offsets[E] = row;
  for (; row < S * K; row++)
    tok[row] = -1;
}

static void check_topk(MoelmBackend *be, int S, int E, int K, gboolean ties, gboolean with_pad)
{
  float *x = g_new(float, S * E);
  uint8_t *pad = g_new0(uint8_t, S);
  srand(7 + S + E + K);
  for (int i = 0; i < S * E; i++)
    x[i] = ties ? (float)(rand() % 3) : (float)rand() / RAND_MAX - 0.5f;
  x[3] = NAN; /* ranks last */
  for (int s = 0; s < S; s++)
    pad[s] = with_pad && s % 4 == 1;
  int32_t *c = g_new(int32_t, S * K), *o = g_new(int32_t, E + 1), *t = g_new(int32_t, S * K);
  int32_t *rc = g_new(int32_t, S * K), *ro = g_new(int32_t, E + 1), *rt = g_new(int32_t, S * K);
  be->ops->topk_dispatch(be, x, with_pad ? pad : NULL, S, E, K, c, o, t);
  topk_reference(x, with_pad ? pad : NULL, S, E, K, rc, ro, rt);
  CU_ASSERT_EQUAL(memcmp(c, rc, S * K * sizeof(int32_t)), 0);
  CU_ASSERT_EQUAL(memcmp(o, ro, (E + 1) * sizeof(int32_t)), 0);
  CU_ASSERT_EQUAL(memcmp(t, rt, S * K * sizeof(int32_t)), 0);
  CU_ASSERT_EQUAL(o[E], (with_pad ? S - (S + 2) / 4 : S) * K);
  for (int k = 0; E > 3 && K < E && k < K; k++) /* token 0's NaN (expert 3) ranks after every number */
    CU_ASSERT_NOT_EQUAL(c[k], 3);
  g_free(x);
  g_free(pad);
  g_free(c);
  g_free(o);
  g_free(t);
  g_free(rc);
  g_free(ro);
  g_free(rt);
}

static void test_topk_dispatch(void)
{
  for (int reference = 0; reference < 2; reference++) {
    MoelmBackend *be = moelm_backend_cpu_new(reference, 2, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    const int cases[][3] = {{37, 7, 1}, {37, 7, 3}, {37, 7, 7}, {1, 5, 2}, {64, 32, 6}};
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++)
      for (int ties = 0; ties < 2; ties++)
        for (int with_pad = 0; with_pad < 2; with_pad++)
          check_topk(be, cases[i][0], cases[i][1], cases[i][2], ties, with_pad);
    /* by hand: scores (2 tokens, 4 experts), k = 2 */
    const float x[8] = {0.1f, 0.9f, 0.5f, 0.9f, /* token 0: experts 1, 3 (tie: the lower first) */
                        2.0f, -1.0f, 3.0f, 0.0f}; /* token 1: experts 2, 0 */
    int32_t c[4], o[5], t[4];
    be->ops->topk_dispatch(be, x, NULL, 2, 4, 2, c, o, t);
    const int32_t ec[4] = {1, 3, 2, 0}, eo[5] = {0, 1, 2, 3, 4}, et[4] = {1, 0, 1, 0};
    CU_ASSERT_EQUAL(memcmp(c, ec, sizeof c), 0);
    CU_ASSERT_EQUAL(memcmp(o, eo, sizeof o), 0);
    CU_ASSERT_EQUAL(memcmp(t, et, sizeof t), 0);
    moelm_backend_free(be);
  }
}

/* ---- moefied models ------------------------------------------------------------------------- */

/* The tiny dense model with every parameter random (biases too, so that their paths count). */
static MoelmModel *dense_model(MoelmBackend *be, MoelmActivation act, gboolean pre, MoelmModelConfig *cfg)
{
  tiny_model_config(cfg);
  cfg->activation = act;
  cfg->normalize_before = pre;
  MoelmModel *m = moelm_model_new(cfg, be, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  moelm_model_init_params(m, 5);
  const size_t n = moelm_model_num_params(m);
  float *h = g_new(float, n);
  be->ops->to_host(be, h, moelm_model_params(m), n * sizeof(float));
  srand(11);
  for (size_t i = 0; i < n; i++)
    h[i] += 0.3f * ((float)rand() / RAND_MAX - 0.5f);
  be->ops->to_device(be, moelm_model_params(m), h, n * sizeof(float));
  g_free(h);
  return m;
}

/* The FFN inputs of the tiny batch (pads included: they are rows like any other here). */
static void tiny_samples(MoelmModel *dense, MoelmFfnSamples *s)
{
  MoelmBackend *be = moelm_model_backend(dense);
  const MoelmModelConfig *c = moelm_model_get_config(dense);
  int32_t src[TB * TT], tgt[TB * TT];
  MoelmBatch batch;
  tiny_model_batch(src, tgt, &batch);
  CU_ASSERT_TRUE_FATAL(moelm_model_score(dense, &batch, NULL, NULL, NULL, NULL));
  s->be = be;
  s->layers = c->layers;
  s->C = c->embed_dim;
  s->n = TB * TT;
  s->x = g_new0(MoelmAct *, c->layers);
  for (int l = 0; l < c->layers; l++) {
    s->x[l] = be->ops->alloc(be, moelm_act_bytes(be, (size_t)s->n * s->C), NULL);
    be->ops->copy(be, s->x[l], moelm_model_ffn_input(dense, l), moelm_act_bytes(be, (size_t)s->n * s->C));
  }
}

static MoelmModel *moefy(MoelmModel *dense, int E, int K, MoelmMoefySplit split, MoelmMoefySelect select)
{
  MoelmMoefyOptions opt;
  moelm_moefy_options_init(&opt);
  opt.num_experts = E;
  opt.top_k = K;
  opt.split = split;
  opt.select = select;
  opt.router.epochs = 3;
  opt.router.hidden = 5;
  MoelmFfnSamples s = {0};
  if (moelm_moefy_needs_samples(&opt))
    tiny_samples(dense, &s);
  MoelmMoefyReport rep;
  GError *error = NULL;
  MoelmModel *m = moelm_moefy_build(dense, &opt, &s, &rep, &error);
  if (error)
    g_printerr("\n  moefy: %s\n", error->message);
  CU_ASSERT_PTR_NOT_NULL(m);
  g_clear_error(&error);
  moelm_moefy_report_clear(&rep);
  moelm_ffn_samples_clear(&s);
  return m;
}

static void scores(MoelmModel *m, float *tok)
{
  int32_t src[TB * TT], tgt[TB * TT];
  MoelmBatch batch;
  tiny_model_batch(src, tgt, &batch);
  GError *error = NULL;
  CU_ASSERT_TRUE(moelm_model_score(m, &batch, NULL, tok, NULL, &error));
  g_clear_error(&error);
}

static void test_all_experts_equal_dense(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 2, NULL);
  const MoelmActivation acts[] = {MOELM_ACT_RELU, MOELM_ACT_GELU};
  for (gsize a = 0; a < G_N_ELEMENTS(acts); a++)
    for (int pre = 0; pre < 2; pre++) {
      MoelmModelConfig cfg;
      MoelmModel *dense = dense_model(be, acts[a], pre, &cfg);
      float want[TB * TT], got[TB * TT];
      scores(dense, want);
      const int experts[] = {1, 3, 4, 12};
      for (gsize ei = 0; ei < G_N_ELEMENTS(experts); ei++)
        for (int split = 0; split < 2; split++)
          for (int select = 0; select < 3; select++) {
            const int E = experts[ei];
            if (split == MOELM_MOEFY_SPLIT_COACTIVATION && !moelm_moefy_require_metis(NULL))
              continue;
            MoelmModel *mf = moefy(dense, E, E, split, select);
            if (mf == NULL)
              continue;
            scores(mf, got);
            double worst = 0;
            for (int i = 0; i < TB * TT; i++)
              worst = fmax(worst, fabs(got[i] - want[i]));
            if (worst > 1e-5)
              g_printerr("\n  %s, E=%d, split %d, select %d: |moefied - dense| = %g\n", moelm_activation_name(acts[a]),
                         E, split, select, worst);
            CU_ASSERT(worst <= 1e-5);
            moelm_model_free(mf);
          }
      moelm_model_free(dense);
      moelm_model_config_clear(&cfg);
    }
  moelm_backend_free(be);
}

/* The host definition of a moefied FFN on one token x (C): scores by the selector, the top k,
 * out = fc2 bias + sum over the selected experts of W2_e act(W1_e x + b1_e). */
static float act_fn(MoelmActivation act, float v)
{
  return act == MOELM_ACT_RELU ? fmaxf(v, 0.0f) : 0.5f * v * (1.0f + erff(v / sqrtf(2.0f)));
}

static const float *host_tensor(MoelmModel *m, const float *h, const char *fmt, int l)
{
  char *name = g_strdup_printf(fmt, l);
  const MoelmParam *p = moelm_model_find(m, name);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  g_free(name);
  return h + p->offset;
}

static void ffn_reference(MoelmModel *m, const float *h, int l, const float *x, float *out)
{
  const MoelmModelConfig *c = moelm_model_get_config(m);
  const int C = c->embed_dim, F = c->ffn_dim, E = c->moefy_experts, K = c->moefy_top_k, Fe = F / E,
            H = c->moefy_router_dim;
  const float *w1 = host_tensor(m, h, "decoder.layers.%d.moefied.experts.0.fc1.weight", l);
  const float *b1 = host_tensor(m, h, "decoder.layers.%d.moefied.experts.0.fc1.bias", l);
  const float *w2 = host_tensor(m, h, "decoder.layers.%d.moefied.experts.0.fc2.weight", l);
  const float *b2 = host_tensor(m, h, "decoder.layers.%d.moefied.fc2.bias", l);
  float act[64], score[16], hid[16];
  for (int i = 0; i < F; i++) {
    float v = b1[i];
    for (int k = 0; k < C; k++)
      v += w1[i * C + k] * x[k];
    act[i] = act_fn(c->activation, v);
  }
  for (int e = 0; e < E; e++) {
    score[e] = 0;
    if (c->moefy_select == MOELM_MOEFY_SELECT_GROUNDTRUTH) {
      for (int j = 0; j < Fe; j++)
        score[e] += fmaxf(act[e * Fe + j], 0.0f);
    } else if (c->moefy_select == MOELM_MOEFY_SELECT_SIMILARITY) {
      const float *r = host_tensor(m, h, "decoder.layers.%d.moefied.router.weight", l);
      for (int k = 0; k < C; k++)
        score[e] += r[e * C + k] * x[k];
    } else {
      const float *r1 = host_tensor(m, h, "decoder.layers.%d.moefied.router.fc1.weight", l);
      const float *rb1 = host_tensor(m, h, "decoder.layers.%d.moefied.router.fc1.bias", l);
      const float *r2 = host_tensor(m, h, "decoder.layers.%d.moefied.router.fc2.weight", l);
      const float *rb2 = host_tensor(m, h, "decoder.layers.%d.moefied.router.fc2.bias", l);
      for (int j = 0; j < H; j++) {
        hid[j] = rb1[j];
        for (int k = 0; k < C; k++)
          hid[j] += r1[j * C + k] * x[k];
        hid[j] = fmaxf(hid[j], 0.0f);
      }
      score[e] = rb2[e];
      for (int j = 0; j < H; j++)
        score[e] += r2[e * H + j] * hid[j];
    }
  }
  for (int k = 0; k < C; k++)
    out[k] = b2[k];
  for (int e = 0; e < E; e++) {
    int before = 0;
    for (int f = 0; f < E; f++)
      before += score[f] > score[e] || (score[f] == score[e] && f < e);
    if (before >= K)
      continue;
    for (int k = 0; k < C; k++)
      for (int j = 0; j < Fe; j++)
        out[k] += w2[(e * C + k) * Fe + j] * act[e * Fe + j];
  }
}

static void test_selected_experts_only(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 1, NULL);
  MoelmModelConfig cfg;
  MoelmModel *dense = dense_model(be, MOELM_ACT_GELU, TRUE, &cfg);
  enum { N = 9, C = 8 };
  float x[N * C], got[N * C], full[N * C], want[C];
  srand(3);
  for (int i = 0; i < N * C; i++)
    x[i] = 2.0f * ((float)rand() / RAND_MAX - 0.5f);
  for (int select = 0; select < 3; select++) {
    MoelmModel *mf = moefy(dense, 4, 4, MOELM_MOEFY_SPLIT_PARAM_CLUSTER, select);
    CU_ASSERT_PTR_NOT_NULL_FATAL(mf);
    CU_ASSERT_TRUE(moelm_model_ffn_forward(mf, 1, A(x), A(full), N, NULL));
    const size_t n = moelm_model_num_params(mf);
    float *h = g_new(float, n);
    be->ops->to_host(be, h, moelm_model_params(mf), n * sizeof(float));
    for (int k = 1; k <= 4; k++) {
      CU_ASSERT_TRUE(moelm_model_set_moefy_top_k(mf, k, NULL));
      CU_ASSERT_TRUE(moelm_model_ffn_forward(mf, 1, A(x), A(got), N, NULL));
      double worst = 0, diff = 0;
      for (int t = 0; t < N; t++) {
        ffn_reference(mf, h, 1, x + t * C, want);
        for (int c = 0; c < C; c++) {
          worst = fmax(worst, fabs(got[t * C + c] - want[c]));
          diff = fmax(diff, fabs(got[t * C + c] - full[t * C + c]));
        }
      }
      CU_ASSERT(worst < 1e-5);
      CU_ASSERT(k == 4 ? diff < 1e-6 : diff > 1e-3); /* fewer experts: another output */
    }
    g_free(h);
    moelm_model_free(mf);
  }
  moelm_model_free(dense);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(be);
}

/* Incremental decoding of a moefied model (k < E) equals full recomputation. */
static void test_decode(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 2, NULL);
  MoelmModelConfig cfg;
  MoelmModel *dense = dense_model(be, MOELM_ACT_RELU, TRUE, &cfg);
  MoelmModel *m = moefy(dense, 4, 2, MOELM_MOEFY_SPLIT_PARAM_CLUSTER, MOELM_MOEFY_SELECT_SIMILARITY);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  tiny_model_check_decode(m);
  moelm_model_free(m);
  moelm_model_free(dense);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(be);
}

static void test_checkpoint_round_trip(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 1, NULL);
  MoelmModelConfig cfg;
  MoelmModel *dense = dense_model(be, MOELM_ACT_GELU, TRUE, &cfg);
  char *tmp = moelm_test_tmpdir();
  char *path = g_build_filename(tmp, "moe.pt", NULL);
  for (int select = 0; select < 3; select++) {
    MoelmModel *m = moefy(dense, 3, 2, MOELM_MOEFY_SPLIT_PARAM_CLUSTER, select);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    GError *error = NULL;
    CU_ASSERT_TRUE_FATAL(moelm_checkpoint_save(path, m, NULL, NULL, NULL, &error));
    MoelmCheckpoint *ck = moelm_checkpoint_open(path, &error);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ck);
    CU_ASSERT_EQUAL(ck->model.moefy_experts, 3);
    CU_ASSERT_EQUAL(ck->model.moefy_top_k, 2);
    CU_ASSERT_EQUAL(ck->model.moefy_select, (MoelmMoefySelect)select);
    CU_ASSERT_EQUAL(ck->model.moefy_router_dim, select == MOELM_MOEFY_SELECT_MLP ? 5 : 0);
    MoelmModel *back = moelm_model_new(&ck->model, be, &error);
    CU_ASSERT_PTR_NOT_NULL_FATAL(back);
    CU_ASSERT_TRUE(moelm_checkpoint_load_params(ck, back, &error));
    CU_ASSERT_PTR_NOT_NULL(moelm_model_find(back, "decoder.layers.1.moefied.experts.2.fc2.weight"));
    CU_ASSERT_PTR_NULL(moelm_model_find(back, "decoder.layers.1.fc1.weight"));
    float a[TB * TT], b[TB * TT];
    scores(m, a);
    scores(back, b);
    CU_ASSERT_EQUAL(memcmp(a, b, sizeof a), 0);
    moelm_model_free(back);
    moelm_checkpoint_close(ck);
    moelm_model_free(m);
  }
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(path);
  moelm_model_free(dense);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(be);
}

static void test_bad_configs(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 1, NULL);
  MoelmModelConfig cfg;
  MoelmModel *dense = dense_model(be, MOELM_ACT_RELU, TRUE, &cfg);
  GError *error = NULL;
  /* the model config */
  MoelmModelConfig c = cfg;
  c.moefy_experts = 5; /* 12 neurons */
  c.moefy_top_k = 1;
  CU_ASSERT_FALSE(moelm_model_config_validate(&c, &error));
  MOELM_ASSERT_ERROR(error, "must divide --decoder-ffn-embed-dim");
  g_clear_error(&error);
  c.moefy_experts = 4;
  c.moefy_top_k = 5;
  CU_ASSERT_FALSE(moelm_model_config_validate(&c, &error));
  MOELM_ASSERT_ERROR(error, "moefy_top_k must be between 1 and moefy_num_experts");
  g_clear_error(&error);
  c.moefy_top_k = 2;
  c.moefy_select = MOELM_MOEFY_SELECT_MLP;
  CU_ASSERT_FALSE(moelm_model_config_validate(&c, &error));
  MOELM_ASSERT_ERROR(error, "moefy_router_dim");
  g_clear_error(&error);
  /* moefy's own checks */
  MoelmMoefyOptions opt;
  moelm_moefy_options_init(&opt);
  opt.num_experts = 5;
  opt.top_k = 1;
  CU_ASSERT_FALSE(moelm_moefy_check(&cfg, &opt, "x.pt", &error));
  MOELM_ASSERT_ERROR(error, "x.pt: --num-experts 5 does not divide the FFN width 12");
  g_clear_error(&error);
  opt.num_experts = 4;
  opt.top_k = 6;
  CU_ASSERT_FALSE(moelm_moefy_check(&cfg, &opt, "x.pt", &error));
  MOELM_ASSERT_ERROR(error, "--top-k 6 must be between 1 and --num-experts 4");
  g_clear_error(&error);
  opt.top_k = 2;
  MoelmModelConfig moe = cfg;
  moe.moe_freq = 2;
  moe.moe_experts = 2;
  CU_ASSERT_FALSE(moelm_moefy_check(&moe, &opt, "x.pt", &error));
  MOELM_ASSERT_ERROR(error, "has token-MoE layers");
  g_clear_error(&error);
  /* a moefied model: not again, not trained, k within 1..E */
  MoelmModel *m = moefy(dense, 4, 2, MOELM_MOEFY_SPLIT_PARAM_CLUSTER, MOELM_MOEFY_SELECT_SIMILARITY);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  CU_ASSERT_FALSE(moelm_moefy_check(moelm_model_get_config(m), &opt, "x.pt", &error));
  MOELM_ASSERT_ERROR(error, "is moefied already");
  g_clear_error(&error);
  CU_ASSERT_FALSE(moelm_model_set_moefy_top_k(m, 5, &error));
  MOELM_ASSERT_ERROR(error, "--moefy-top-k 5 must be between 1 and the model's 4 experts");
  g_clear_error(&error);
  CU_ASSERT_FALSE(moelm_model_set_moefy_top_k(dense, 1, &error));
  MOELM_ASSERT_ERROR(error, "needs a moefied checkpoint");
  g_clear_error(&error);
  int32_t src[TB * TT], tgt[TB * TT];
  MoelmBatch batch;
  tiny_model_batch(src, tgt, &batch);
  const float w[TB] = {1, 1};
  CU_ASSERT_FALSE(moelm_model_train_step(m, &batch, NULL, w, NULL, NULL, &error));
  MOELM_ASSERT_ERROR(error, "for inference only");
  g_clear_error(&error);
  moelm_model_free(m);
  moelm_model_free(dense);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(be);
}

MOELM_TEST_SUITE(moefy_model)
{
  CU_add_test(suite, "topk_dispatch against its definition and by hand", test_topk_dispatch);
  CU_add_test(suite, "k = E scores as the dense model (relu, gelu, pre/post-norm, every split and selector)",
              test_all_experts_equal_dense);
  CU_add_test(suite, "k < E computes exactly the selected experts", test_selected_experts_only);
  CU_add_test(suite, "incremental decoding of a moefied model equals recomputation", test_decode);
  CU_add_test(suite, "a moefied checkpoint round-trips", test_checkpoint_round_trip);
  CU_add_test(suite, "bad configurations are errors", test_bad_configs);
}
