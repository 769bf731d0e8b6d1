/* Token-level MoE layers in the decoder: parameter names, whole-model gradients (gate,
 * experts, everything else, the gate loss included) against central differences with and
 * without capacity drops, copies of one FFN equal the dense model, eval scores that do not
 * depend on the batch size, KV-cache decoding, fast backend against reference, and a
 * checkpoint round trip. */
#include "config.h"

#include <math.h>
#include <string.h>

#include <glib/gstdio.h>

#include "moelm-test.h"
#include "tiny-model.h"
#include "moelm/checkpoint.h"
#include "moelm/dictionary.h"
#include "moelm/model.h"
#include "moelm/rng.h"

static void moe_config(MoelmModelConfig *cfg, int freq, int experts, int top_k)
{
  tiny_model_config(cfg);
  cfg->moe_freq = freq;
  cfg->moe_experts = experts;
  cfg->moe_top_k = top_k;
}

/* Multiply every router weight: confident, well separated gates, so that the finite
 * differences below do not flip a routing decision. */
static void sharpen_gates(MoelmModel *m, float factor)
{
  for (guint i = 0; i < moelm_model_n_tensors(m); i++) {
    const MoelmParam *p = moelm_model_tensor(m, i);
    if (strstr(p->name, ".gate.wg.weight"))
      for (size_t k = 0; k < p->numel; k++)
        moelm_model_params(m)[p->offset + k] *= factor;
  }
}

static void test_names_and_layout(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(TRUE, 1, NULL);
  MoelmModelConfig cfg;
  moe_config(&cfg, 2, 3, 2);
  cfg.moe_expert_ffn_dim = 5;
  MoelmModel *m = tiny_model_new(&cfg, be, 1);
  CU_ASSERT_EQUAL(moelm_model_moe_layers(m), 1);
  CU_ASSERT_PTR_NOT_NULL(moelm_model_find(m, "decoder.layers.0.fc1.weight")); /* layer 0 stays dense */
  CU_ASSERT_PTR_NULL(moelm_model_find(m, "decoder.layers.1.fc1.weight"));
  const MoelmParam *wg = moelm_model_find(m, "decoder.layers.1.moe_layer.gate.wg.weight");
  CU_ASSERT_PTR_NOT_NULL_FATAL(wg);
  CU_ASSERT_EQUAL(wg->shape[0], 3);
  CU_ASSERT_EQUAL(wg->shape[1], 8);
  const MoelmParam *f1 = moelm_model_find(m, "decoder.layers.1.moe_layer.experts.2.fc1.weight");
  const MoelmParam *b2 = moelm_model_find(m, "decoder.layers.1.moe_layer.experts.2.fc2.bias");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b2);
  CU_ASSERT_EQUAL(f1->shape[0], 5);
  CU_ASSERT_EQUAL(f1->shape[1], 8);
  CU_ASSERT_EQUAL(b2->numel, 8);
  CU_ASSERT_PTR_NULL(moelm_model_find(m, "decoder.layers.1.moe_layer.experts.3.fc1.weight"));
  CU_ASSERT_PTR_NOT_NULL(moelm_model_find(m, "decoder.layers.1.final_layer_norm.weight"));
  size_t total = 0;
  for (guint i = 0; i < moelm_model_n_tensors(m); i++)
    total += moelm_model_tensor(m, i)->numel;
  CU_ASSERT_EQUAL(total, moelm_model_num_params(m));
  moelm_model_free(m);
  /* validation: top-2 needs two experts */
  cfg.moe_experts = 1;
  GError *error = NULL;
  CU_ASSERT_PTR_NULL(moelm_model_new(&cfg, be, &error));
  MOELM_ASSERT_ERROR(error, "--moe-expert-count");
  g_clear_error(&error);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(be);
}

/* ---- gradients -------------------------------------------------------------------------- */

typedef struct {
  int freq, experts, top_k;
  gboolean pre, pad_mask, prioritized, normalize_before, dropless;
  MoelmSecondExpertPolicy policy;
  double capacity_factor, gate_loss_wt;
  gboolean gate_loss_sum;
  gboolean expect_drops;
} GradCase;

/* The training loss the model differentiates: weighted NLL + wt * S_w * combined l_aux,
 * with training routing (ids given, no dropout in the config). */
static double train_loss(MoelmModel *m, const MoelmBatch *batch, const MoelmStepIds *ids, const float *w,
                         double sample_size, double wt)
{
  float rows[TB];
  CU_ASSERT_TRUE_FATAL(moelm_model_score(m, batch, ids, NULL, rows, NULL));
  double loss = 0;
  for (int b = 0; b < TB; b++)
    loss -= (double)w[b] * rows[b];
  return loss + wt * sample_size * moelm_model_last_gate_loss(m);
}

static void check_gradients(const GradCase *gc)
{
  MoelmBackend *be = moelm_backend_cpu_new(TRUE, 1, NULL);
  MoelmModelConfig cfg;
  moe_config(&cfg, gc->freq, gc->experts, gc->top_k);
  cfg.normalize_before = gc->pre;
  cfg.moe_pad_mask = gc->pad_mask;
  cfg.moe_batch_prioritized_routing = gc->prioritized;
  cfg.moe_normalize_gate_prob_before_dropping = gc->normalize_before;
  cfg.moe_second_expert_policy = gc->policy;
  cfg.moe_capacity_factor = gc->capacity_factor;
  cfg.moe_dropless = gc->dropless;
  cfg.moe_gate_loss_wt = gc->gate_loss_wt;
  cfg.moe_gate_loss_sum = gc->gate_loss_sum;
  MoelmModel *m = tiny_model_new(&cfg, be, 7);
  sharpen_gates(m, 6.0f);
  int32_t src[TB * TT], tgt[TB * TT];
  MoelmBatch batch;
  tiny_model_batch(src, tgt, &batch);
  const float w[TB] = {0.7f, 1.3f};
  const double sample_size = 0.7 * 6 + 1.3 * 3; /* weighted non-pad targets */
  const MoelmStepIds ids = {5, 2};

  moelm_model_zero_grad(m);
  float rows_train[TB], rows_score[TB];
  CU_ASSERT_TRUE_FATAL(moelm_model_train_step(m, &batch, &ids, w, NULL, rows_train, NULL));
  const double aux_train = moelm_model_last_gate_loss(m);
  MoelmMoeLayerStats st[4];
  CU_ASSERT_EQUAL(moelm_model_moe_stats_take(m, st), 1);
  CU_ASSERT_EQUAL(moelm_model_moe_stats_take(m, st), 0); /* taken: reset */
  CU_ASSERT_TRUE_FATAL(moelm_model_score(m, &batch, &ids, NULL, rows_score, NULL));
  CU_ASSERT_DOUBLE_EQUAL(aux_train, moelm_model_last_gate_loss(m), 1e-9);
  CU_ASSERT(aux_train > 0.5);
  for (int b = 0; b < TB; b++)
    CU_ASSERT_DOUBLE_EQUAL(rows_train[b], rows_score[b], 1e-5);
  if (gc->expect_drops) { /* the case must really drop something */
    moelm_model_train_step(m, &batch, &ids, w, NULL, NULL, NULL);
    moelm_model_moe_stats_take(m, st);
    double overflow = 0;
    for (int i = 0; i < moelm_model_moe_layers(m); i++)
      overflow += st[i].overflow_expert1 + st[i].overflow_expert2;
    CU_ASSERT(overflow > 0);
    moelm_model_zero_grad(m);
    CU_ASSERT_TRUE_FATAL(moelm_model_train_step(m, &batch, &ids, w, NULL, NULL, NULL));
  }

  float *params = moelm_model_params(m), *grads = moelm_model_grads(m);
  MoelmRng rng;
  moelm_rng_init(&rng, 3, 0, 0);
  int checked = 0, bad = 0, gate_checked = 0, flips = 0;
  for (guint i = 0; i < moelm_model_n_tensors(m); i++) {
    const MoelmParam *p = moelm_model_tensor(m, i);
    const gboolean is_gate = strstr(p->name, ".gate.wg.") != NULL;
    for (int k = 0; k < (is_gate ? 12 : 4); k++) {
      const size_t j = p->offset + moelm_rng_next_below(&rng, (uint32_t)p->numel);
      const float saved = params[j], h = 1e-2f;
      params[j] = saved + h;
      const double lp = train_loss(m, &batch, &ids, w, sample_size, gc->gate_loss_wt);
      params[j] = saved - h;
      const double lm = train_loss(m, &batch, &ids, w, sample_size, gc->gate_loss_wt);
      params[j] = saved;
      const double l0 = train_loss(m, &batch, &ids, w, sample_size, gc->gate_loss_wt);
      const double numeric = (lp - lm) / (2.0 * h), analytic = grads[j];
      const double tol = 2e-2 * fmax(fabs(numeric), fabs(analytic)) + 2e-3;
      /* a routing decision that flips inside [-h, h] makes the loss jump: the one-sided
       * slopes disagree wildly; such a point says nothing about the gradient */
      const double right = (lp - l0) / h, left = (l0 - lm) / h;
      if (fabs(right - left) > 0.5 * fmax(fabs(right), fabs(left)) + 0.5) {
        flips++;
        continue;
      }
      if (fabs(numeric - analytic) > tol) {
        bad++;
        g_printerr("\n  %s[%zu]: analytic %.6g numeric %.6g", p->name, j - p->offset, analytic, numeric);
      }
      checked++;
      gate_checked += is_gate;
    }
  }
  CU_ASSERT(checked > 50);
  CU_ASSERT(gate_checked >= 12);
  CU_ASSERT(flips <= checked / 50);
  CU_ASSERT_EQUAL(bad, 0);
  moelm_model_free(m);
  moelm_backend_free(be);
  moelm_model_config_clear(&cfg);
}

static void test_grad_top2_no_drops(void)
{
  GradCase gc = {.freq = 1, .experts = 3, .top_k = 2, .pre = TRUE, .policy = MOELM_SECOND_EXPERT_ALL,
                 .capacity_factor = 1.0, .dropless = TRUE, .gate_loss_wt = 0.5};
  check_gradients(&gc);
}

static void test_grad_top2_drops(void)
{
  GradCase gc = {.freq = 1, .experts = 4, .top_k = 2, .pre = TRUE, .policy = MOELM_SECOND_EXPERT_SAMPLING,
                 .capacity_factor = 0.5, .gate_loss_wt = 0.5, .gate_loss_sum = TRUE, .expect_drops = TRUE};
  check_gradients(&gc);
}

static void test_grad_top2_drops_normalize_before_prioritized_padmask(void)
{
  GradCase gc = {.freq = 2, .experts = 4, .top_k = 2, .pre = TRUE, .policy = MOELM_SECOND_EXPERT_RANDOM,
                 .normalize_before = TRUE, .prioritized = TRUE, .pad_mask = TRUE, .capacity_factor = 0.5,
                 .gate_loss_wt = 0.5, .expect_drops = TRUE};
  check_gradients(&gc);
}

static void test_grad_top1_drops_postnorm(void)
{
  GradCase gc = {.freq = 1, .experts = 3, .top_k = 1, .pre = FALSE, .capacity_factor = 1.0, .gate_loss_wt = 0.5,
                 .pad_mask = TRUE, .expect_drops = TRUE};
  check_gradients(&gc);
}

static void test_grad_top2_postnorm_no_drops(void)
{
  GradCase gc = {.freq = 2, .experts = 2, .top_k = 2, .pre = FALSE, .policy = MOELM_SECOND_EXPERT_ALL,
                 .capacity_factor = 4.0, .gate_loss_wt = 0.5};
  check_gradients(&gc);
}

/* ---- equivalences ------------------------------------------------------------------------- */

/* Every dense tensor into the MoE model: shared ones by name, fc1/fc2 into each expert. */
static void copy_into_experts(MoelmModel *moe, MoelmModel *dense, int experts)
{
  tiny_model_copy_dense_moe(dense, moe, 0, experts, TRUE);
}

/* E experts that are copies of one FFN with top-2 routing and no drops: the renormalised
 * combine weights sum to one, so the MoE model is the dense model. */
static void test_copies_equal_dense(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 2, NULL);
  MoelmModelConfig dcfg, mcfg;
  moe_config(&dcfg, 0, 0, 2);
  moe_config(&mcfg, 2, 4, 2);
  mcfg.layers = dcfg.layers = 4;
  MoelmModel *dense = tiny_model_new(&dcfg, be, 3), *moe = tiny_model_new(&mcfg, be, 4);
  copy_into_experts(moe, dense, 4);
  int32_t src[TB * TT], tgt[TB * TT];
  MoelmBatch batch;
  tiny_model_batch(src, tgt, &batch);
  float a[TB * TT], b[TB * TT];
  CU_ASSERT_TRUE_FATAL(moelm_model_score(dense, &batch, NULL, a, NULL, NULL));
  CU_ASSERT_TRUE_FATAL(moelm_model_score(moe, &batch, NULL, b, NULL, NULL)); /* eval: dropless */
  for (int i = 0; i < TB * TT; i++)
    CU_ASSERT_DOUBLE_EQUAL(a[i], b[i], 1e-5);
  /* training routing with a binding capacity drops assignments: no longer the dense model */
  moelm_model_free(moe);
  mcfg.moe_capacity_factor = 0.25;
  moe = tiny_model_new(&mcfg, be, 4);
  copy_into_experts(moe, dense, 4);
  const MoelmStepIds ids = {1, 1};
  CU_ASSERT_TRUE_FATAL(moelm_model_score(moe, &batch, &ids, b, NULL, NULL));
  double diff = 0;
  for (int i = 0; i < TB * TT; i++)
    diff = fmax(diff, fabs(a[i] - b[i]));
  CU_ASSERT(diff > 1e-3);
  moelm_model_free(moe);
  moelm_model_free(dense);
  moelm_model_config_clear(&dcfg);
  moelm_model_config_clear(&mcfg);
  moelm_backend_free(be);
}

/* Four rows of different lengths scored together, in pairs and one by one. */
static void score_in_batches(MoelmModel *m, int per_batch, float *out /* (4, 8) */)
{
  enum { R = 4, T = 8 };
  static const int lens[R] = {8, 5, 7, 3};
  for (int first = 0; first < R; first += per_batch) {
    int32_t src[R * T], tgt[R * T];
    for (int r = 0; r < per_batch; r++)
      for (int t = 0; t < T; t++) {
        const int row = first + r;
        const int32_t tok = (int32_t)(4 + (row * 5 + t * 3) % (TV - 4));
        const gboolean pad = t >= lens[row];
        tgt[r * T + t] = pad ? MOELM_PAD : tok;
        src[r * T + t] = pad ? MOELM_PAD : t == 0 ? MOELM_EOS : (int32_t)(4 + (row * 5 + (t - 1) * 3) % (TV - 4));
      }
    MoelmBatch batch = {per_batch, T, src, tgt};
    CU_ASSERT_TRUE_FATAL(moelm_model_score(m, &batch, NULL, out + (size_t)first * T, NULL, NULL));
  }
}

static double max_diff(const float *a, const float *b, int n)
{
  double d = 0;
  for (int i = 0; i < n; i++)
    d = fmax(d, fabs(a[i] - b[i]));
  return d;
}

static void test_eval_independent_of_batch_size(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 2, NULL);
  MoelmModelConfig cfg;
  moe_config(&cfg, 1, 4, 2);
  MoelmModel *m = tiny_model_new(&cfg, be, 9);
  sharpen_gates(m, 3.0f); /* skewed routing: a capacity would bind */
  float by1[32], by2[32], by4[32];
  score_in_batches(m, 1, by1);
  score_in_batches(m, 2, by2);
  score_in_batches(m, 4, by4);
  CU_ASSERT(max_diff(by1, by2, 32) < 1e-5);
  CU_ASSERT(max_diff(by1, by4, 32) < 1e-5);
  moelm_model_free(m);
  /* with --moe-eval-capacity-token-fraction the eval capacity binds and scores move */
  cfg.moe_eval_capacity_token_fraction = 0.1;
  m = tiny_model_new(&cfg, be, 9);
  sharpen_gates(m, 3.0f);
  float cap4[32], cap1[32];
  score_in_batches(m, 4, cap4);
  score_in_batches(m, 1, cap1);
  CU_ASSERT(max_diff(cap4, by4, 32) > 1e-4);
  CU_ASSERT(max_diff(cap4, cap1, 32) > 1e-4);
  moelm_model_free(m);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(be);
}

/* Incremental decoding through MoE layers equals full recomputation (eval: dropless). */
static void test_kv_cache(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 2, NULL);
  MoelmModelConfig cfg;
  moe_config(&cfg, 1, 3, 2);
  MoelmModel *m = tiny_model_new(&cfg, be, 21);
  tiny_model_check_decode(m);
  moelm_model_free(m);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(be);
}

/* The fast backend gives the reference's log-probs and gradients, dropout and noise included. */
static void test_fast_matches_reference(void)
{
  MoelmBackend *ref = moelm_backend_cpu_new(TRUE, 1, NULL), *fast = moelm_backend_cpu_new(FALSE, 2, NULL);
  MoelmModelConfig cfg;
  moe_config(&cfg, 2, 4, 2);
  cfg.dropout = 0.1;
  cfg.activation_dropout = 0.1;
  cfg.moe_capacity_factor = 0.5;
  MoelmModel *a = tiny_model_new(&cfg, ref, 11), *b = tiny_model_new(&cfg, fast, 11);
  int32_t src[TB * TT], tgt[TB * TT];
  MoelmBatch batch;
  tiny_model_batch(src, tgt, &batch);
  const float w[TB] = {1.0f, 0.5f};
  MoelmStepIds ids = {5, 3};
  float ta[TB * TT], tb[TB * TT];
  moelm_model_zero_grad(a);
  moelm_model_zero_grad(b);
  CU_ASSERT_TRUE_FATAL(moelm_model_train_step(a, &batch, &ids, w, ta, NULL, NULL));
  CU_ASSERT_TRUE_FATAL(moelm_model_train_step(b, &batch, &ids, w, tb, NULL, NULL));
  CU_ASSERT(max_diff(ta, tb, TB * TT) < 1e-4);
  const float *ga = moelm_model_grads(a), *gb = moelm_model_grads(b);
  double maxdiff = 0, norm = 0;
  for (size_t i = 0; i < moelm_model_num_params(a); i++) {
    maxdiff = fmax(maxdiff, fabs(ga[i] - gb[i]));
    norm += (double)ga[i] * ga[i];
  }
  CU_ASSERT(maxdiff < 1e-4);
  CU_ASSERT(norm > 0);
  moelm_model_free(a);
  moelm_model_free(b);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(ref);
  moelm_backend_free(fast);
}

/* Save, reopen, load into a fresh model: the same config (every MoE option) and scores. */
static void test_checkpoint_round_trip(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 2, NULL);
  MoelmModelConfig cfg;
  moe_config(&cfg, 2, 3, 1);
  cfg.moe_expert_ffn_dim = 7;
  cfg.moe_second_expert_policy = MOELM_SECOND_EXPERT_RANDOM;
  cfg.moe_normalize_gate_prob_before_dropping = TRUE;
  cfg.moe_capacity_factor = 1.25;
  cfg.moe_dropless = TRUE;
  cfg.moe_eval_capacity_token_fraction = 0.5;
  cfg.moe_batch_prioritized_routing = TRUE;
  cfg.moe_pad_mask = TRUE;
  cfg.moe_gating_use_fp32 = TRUE;
  cfg.moe_gate_loss_wt = 0.02;
  cfg.moe_gate_loss_sum = TRUE;
  MoelmModel *m = tiny_model_new(&cfg, be, 5);
  char *tmp = moelm_test_tmpdir();
  char *path = g_build_filename(tmp, "checkpoint_last.pt", NULL);
  JsonObject *meta = json_object_new();
  GError *error = NULL;
  CU_ASSERT_TRUE_FATAL(moelm_checkpoint_save(path, m, NULL, NULL, meta, &error));
  json_object_unref(meta);
  MoelmCheckpoint *ck = moelm_checkpoint_open(path, &error);
  if (ck == NULL)
    g_printerr("\n  %s", error->message);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ck);
  const MoelmModelConfig *c = &ck->model;
  CU_ASSERT_EQUAL(c->moe_freq, 2);
  CU_ASSERT_EQUAL(c->moe_experts, 3);
  CU_ASSERT_EQUAL(c->moe_top_k, 1);
  CU_ASSERT_EQUAL(c->moe_expert_ffn_dim, 7);
  CU_ASSERT_EQUAL(c->moe_second_expert_policy, MOELM_SECOND_EXPERT_RANDOM);
  CU_ASSERT_TRUE(c->moe_normalize_gate_prob_before_dropping);
  CU_ASSERT_DOUBLE_EQUAL(c->moe_capacity_factor, 1.25, 1e-12);
  CU_ASSERT_TRUE(c->moe_dropless);
  CU_ASSERT_DOUBLE_EQUAL(c->moe_eval_capacity_token_fraction, 0.5, 1e-12);
  CU_ASSERT_TRUE(c->moe_batch_prioritized_routing);
  CU_ASSERT_TRUE(c->moe_pad_mask);
  CU_ASSERT_TRUE(c->moe_gating_use_fp32);
  CU_ASSERT_DOUBLE_EQUAL(c->moe_gate_loss_wt, 0.02, 1e-12);
  CU_ASSERT_TRUE(c->moe_gate_loss_sum);
  MoelmModel *fresh = moelm_model_new(c, be, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(fresh);
  CU_ASSERT_TRUE_FATAL(moelm_checkpoint_load_params(ck, fresh, &error));
  CU_ASSERT_EQUAL(moelm_model_num_params(fresh), moelm_model_num_params(m));
  int32_t src[TB * TT], tgt[TB * TT];
  MoelmBatch batch;
  tiny_model_batch(src, tgt, &batch);
  float a[TB * TT], b[TB * TT];
  CU_ASSERT_TRUE_FATAL(moelm_model_score(m, &batch, NULL, a, NULL, NULL));
  CU_ASSERT_TRUE_FATAL(moelm_model_score(fresh, &batch, NULL, b, NULL, NULL));
  CU_ASSERT_EQUAL(memcmp(a, b, sizeof a), 0);
  moelm_checkpoint_close(ck);
  moelm_model_free(fresh);
  moelm_model_free(m);
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(path);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(be);
}

MOELM_TEST_SUITE(moe_model)
{
  CU_add_test(suite, "parameter names and layout", test_names_and_layout);
  CU_add_test(suite, "gradient: top-2, dropless", test_grad_top2_no_drops);
  CU_add_test(suite, "gradient: top-2 sampling, capacity drops, summed gate loss", test_grad_top2_drops);
  CU_add_test(suite, "gradient: top-2 random, normalise before dropping, prioritised, pad mask",
              test_grad_top2_drops_normalize_before_prioritized_padmask);
  CU_add_test(suite, "gradient: top-1, post-norm, drops, pad mask", test_grad_top1_drops_postnorm);
  CU_add_test(suite, "gradient: top-2, post-norm, every other layer", test_grad_top2_postnorm_no_drops);
  CU_add_test(suite, "copies of one FFN equal the dense model", test_copies_equal_dense);
  CU_add_test(suite, "eval scores do not depend on the batch size", test_eval_independent_of_batch_size);
  CU_add_test(suite, "KV-cache decoding equals recomputation", test_kv_cache);
  CU_add_test(suite, "fast backend equals reference (dropout, drops, noise)", test_fast_matches_reference);
  CU_add_test(suite, "checkpoint round trip", test_checkpoint_round_trip);
}
