/* The whole decoder: gradients against central differences (pre/post-norm, tied/untied,
 * learned/sinusoidal positions), fast backend against reference, KV-cache decoding against
 * full recomputation, parameter names. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "tiny-model.h"
#include "moelm/dictionary.h"
#include "moelm/model.h"
#include "moelm/rng.h"

static void tiny_config(MoelmModelConfig *cfg, gboolean pre, gboolean tied, gboolean learned)
{
  tiny_model_config(cfg);
  cfg->normalize_before = pre;
  cfg->share_embed = tied;
  cfg->learned_pos = learned;
}

static double weighted_loss(MoelmModel *m, const MoelmBatch *batch, const float *w)
{
  float rows[TB];
  CU_ASSERT_TRUE_FATAL(moelm_model_score(m, batch, NULL, NULL, rows, NULL));
  double loss = 0;
  for (int b = 0; b < TB; b++)
    loss -= (double)w[b] * rows[b];
  return loss;
}

static void check_gradients(gboolean pre, gboolean tied, gboolean learned)
{
  MoelmBackend *be = moelm_backend_cpu_new(TRUE, 1, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(be);
  MoelmModelConfig cfg;
  tiny_config(&cfg, pre, tied, learned);
  MoelmModel *m = moelm_model_new(&cfg, be, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  moelm_model_init_params(m, 7);
  int32_t src[TB * TT], tgt[TB * TT];
  MoelmBatch batch;
  tiny_model_batch(src, tgt, &batch);
  const float w[TB] = {0.7f, 1.3f};

  moelm_model_zero_grad(m);
  float rows_train[TB], rows_score[TB];
  CU_ASSERT_TRUE_FATAL(moelm_model_train_step(m, &batch, NULL, w, NULL, rows_train, NULL));
  CU_ASSERT_TRUE_FATAL(moelm_model_score(m, &batch, NULL, NULL, rows_score, NULL));
  for (int b = 0; b < TB; b++)
    CU_ASSERT_DOUBLE_EQUAL(rows_train[b], rows_score[b], 1e-5);

  float *params = moelm_model_params(m), *grads = moelm_model_grads(m);
  const size_t n = moelm_model_num_params(m);
  MoelmRng rng;
  moelm_rng_init(&rng, 3, 0, 0);
  int checked = 0, bad = 0;
  for (guint i = 0; i < moelm_model_n_tensors(m); i++) {
    const MoelmParam *p = moelm_model_tensor(m, i);
    for (int k = 0; k < 6; k++) { /* a few entries of every tensor */
      size_t j = p->offset + moelm_rng_next_below(&rng, (uint32_t)p->numel);
      if (!learned && strstr(p->name, "embed_positions"))
        continue;
      const float saved = params[j], h = 1e-2f;
      params[j] = saved + h;
      double lp = weighted_loss(m, &batch, w);
      params[j] = saved - h;
      double lm = weighted_loss(m, &batch, w);
      params[j] = saved;
      double numeric = (lp - lm) / (2.0 * h), analytic = grads[j];
      double tol = 2e-2 * fmax(fabs(numeric), fabs(analytic)) + 2e-3;
      if (fabs(numeric - analytic) > tol) {
        bad++;
        g_printerr("\n  %s[%zu]: analytic %.6g numeric %.6g", p->name, j - p->offset, analytic, numeric);
      }
      checked++;
    }
  }
  CU_ASSERT(checked > 50);
  CU_ASSERT_EQUAL(bad, 0);
  (void)n;
  moelm_model_free(m);
  moelm_backend_free(be);
  moelm_model_config_clear(&cfg);
}

static void test_grad_prenorm_untied(void) { check_gradients(TRUE, FALSE, FALSE); }
static void test_grad_prenorm_tied_learned(void) { check_gradients(TRUE, TRUE, TRUE); }
static void test_grad_postnorm_untied(void) { check_gradients(FALSE, FALSE, TRUE); }
static void test_grad_postnorm_tied(void) { check_gradients(FALSE, TRUE, FALSE); }

static void test_names_and_layout(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(TRUE, 1, NULL);
  MoelmModelConfig cfg;
  tiny_config(&cfg, TRUE, FALSE, TRUE);
  MoelmModel *m = moelm_model_new(&cfg, be, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  const MoelmParam *q = moelm_model_find(m, "decoder.layers.1.self_attn.q_proj.weight");
  const MoelmParam *k = moelm_model_find(m, "decoder.layers.1.self_attn.k_proj.weight");
  const MoelmParam *v = moelm_model_find(m, "decoder.layers.1.self_attn.v_proj.weight");
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  CU_ASSERT_PTR_NOT_NULL_FATAL(k);
  CU_ASSERT_PTR_NOT_NULL_FATAL(v);
  CU_ASSERT_EQUAL(k->offset, q->offset + 64); /* fused (3C, C) projection */
  CU_ASSERT_EQUAL(v->offset, k->offset + 64);
  CU_ASSERT_PTR_NOT_NULL(moelm_model_find(m, "decoder.layer_norm.weight"));
  CU_ASSERT_PTR_NOT_NULL(moelm_model_find(m, "decoder.output_projection.weight"));
  const MoelmParam *pos = moelm_model_find(m, "decoder.embed_positions.weight");
  CU_ASSERT_PTR_NOT_NULL_FATAL(pos);
  CU_ASSERT_EQUAL(pos->shape[0], 16 + 2);
  CU_ASSERT_EQUAL(moelm_model_find(m, "decoder.layers.0.fc1.weight")->shape[0], 12);
  CU_ASSERT_EQUAL(moelm_model_find(m, "decoder.layers.0.fc1.weight")->shape[1], 8);
  size_t total = 0;
  for (guint i = 0; i < moelm_model_n_tensors(m); i++)
    total += moelm_model_tensor(m, i)->numel;
  CU_ASSERT_EQUAL(total, moelm_model_num_params(m));
  moelm_model_free(m);
  moelm_model_config_clear(&cfg);
  /* tied: no output projection tensor */
  tiny_config(&cfg, TRUE, TRUE, FALSE);
  m = moelm_model_new(&cfg, be, NULL);
  CU_ASSERT_PTR_NULL(moelm_model_find(m, "decoder.output_projection.weight"));
  CU_ASSERT_PTR_NULL(moelm_model_find(m, "decoder.embed_positions.weight"));
  moelm_model_free(m);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(be);
}

/* The fast backend gives the same log-probs and gradients as the reference. */
static void test_fast_matches_reference(void)
{
  MoelmBackend *ref = moelm_backend_cpu_new(TRUE, 1, NULL), *fast = moelm_backend_cpu_new(FALSE, 2, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(fast);
  MoelmModelConfig cfg;
  tiny_config(&cfg, TRUE, TRUE, FALSE);
  cfg.dropout = 0.1;
  cfg.attention_dropout = 0.1;
  MoelmModel *a = moelm_model_new(&cfg, ref, NULL), *b = moelm_model_new(&cfg, fast, NULL);
  moelm_model_init_params(a, 11);
  moelm_model_init_params(b, 11);
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
  for (int i = 0; i < TB * TT; i++)
    CU_ASSERT_DOUBLE_EQUAL(ta[i], tb[i], 1e-4);
  const float *ga = moelm_model_grads(a), *gb = moelm_model_grads(b);
  double maxdiff = 0;
  for (size_t i = 0; i < moelm_model_num_params(a); i++)
    maxdiff = fmax(maxdiff, fabs(ga[i] - gb[i]));
  CU_ASSERT(maxdiff < 1e-4);
  moelm_model_free(a);
  moelm_model_free(b);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(ref);
  moelm_backend_free(fast);
}

/* Incremental decoding (prefill + one token at a time) equals full recomputation. */
static void check_kv_cache(gboolean pre)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 2, NULL);
  MoelmModelConfig cfg;
  tiny_config(&cfg, pre, FALSE, FALSE);
  MoelmModel *m = moelm_model_new(&cfg, be, NULL);
  moelm_model_init_params(m, 21);
  tiny_model_check_decode(m);
  moelm_model_free(m);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(be);
}

static void test_kv_cache_prenorm(void) { check_kv_cache(TRUE); }
static void test_kv_cache_postnorm(void) { check_kv_cache(FALSE); }

MOELM_TEST_SUITE(model)
{
  CU_add_test(suite, "parameter names and fused qkv layout", test_names_and_layout);
  CU_add_test(suite, "gradient: pre-norm, untied, sinusoidal", test_grad_prenorm_untied);
  CU_add_test(suite, "gradient: pre-norm, tied, learned positions", test_grad_prenorm_tied_learned);
  CU_add_test(suite, "gradient: post-norm, untied, learned positions", test_grad_postnorm_untied);
  CU_add_test(suite, "gradient: post-norm, tied, sinusoidal", test_grad_postnorm_tied);
  CU_add_test(suite, "fast backend equals reference (with dropout)", test_fast_matches_reference);
  CU_add_test(suite, "KV-cache decoding equals recomputation (pre-norm)", test_kv_cache_prenorm);
  CU_add_test(suite, "KV-cache decoding equals recomputation (post-norm)", test_kv_cache_postnorm);
}
