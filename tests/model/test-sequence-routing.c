/* Sequence-routed MoE layers (a mixture's --mixture-expert-ffn): every token of a row goes to
 * the FFN of the expert named by the row's first token. A row scores as the dense model
 * holding that expert's FFN, whatever else shares its batch; training routing drops nothing;
 * gradients match central differences, with none for the other experts or the unused gate;
 * KV-cache decoding keeps each row's expert through a beam reorder; the config round-trips
 * and its contradictions are refused. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "moelm-test.h"
#include "tiny-model.h"
#include "moelm/dictionary.h"
#include "moelm/model.h"
#include "moelm/rng.h"

enum { E = 3, TOKEN0 = 10 }; /* <expert_k> = 10 + k in the tiny vocabulary of 13 */

static void routed_config(MoelmModelConfig *cfg)
{
  tiny_model_config(cfg);
  cfg->moe_freq = 1;
  cfg->moe_experts = E;
  cfg->moe_top_k = 1;
  cfg->moe_gate_loss_wt = 0;
  cfg->moe_route_token0 = TOKEN0;
}

/* The dense model with the routed model's shared tensors and expert e's FFNs. */
static MoelmModel *dense_of_expert(MoelmModel *routed, MoelmBackend *be, int e)
{
  MoelmModelConfig cfg;
  tiny_model_config(&cfg);
  MoelmModel *d = tiny_model_new(&cfg, be, 99);
  tiny_model_copy_dense_moe(d, routed, e, e + 1, FALSE);
  moelm_model_config_clear(&cfg);
  return d;
}

/* R rows of TT tokens: row r starts with first[r], then tokens of its own, the last row's
 * second half padding. */
enum { R = 4 };
static void routed_batch(const int32_t *first, int32_t *src, int32_t *tgt, MoelmBatch *batch)
{
  for (int r = 0; r < R; r++)
    for (int t = 0; t < TT; t++) {
      const gboolean pad = r == R - 1 && t >= TT / 2;
      src[r * TT + t] = pad ? MOELM_PAD : t == 0 ? first[r] : (int32_t)(4 + (r * 3 + t * 5) % 6);
      tgt[r * TT + t] = pad ? MOELM_PAD : (int32_t)(4 + (r * 3 + (t + 1) * 5) % 6);
    }
  *batch = (MoelmBatch){R, TT, src, tgt};
}

static void test_rows_score_as_their_expert(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 2, NULL);
  MoelmModelConfig cfg;
  routed_config(&cfg);
  MoelmModel *m = tiny_model_new(&cfg, be, 4);
  CU_ASSERT_EQUAL(moelm_model_moe_layers(m), 2);
  /* experts 0, 2, 1, and a row that starts with </s>: expert 0 */
  const int32_t first[R] = {TOKEN0, TOKEN0 + 2, TOKEN0 + 1, MOELM_EOS};
  const int expert[R] = {0, 2, 1, 0};
  int32_t src[R * TT], tgt[R * TT];
  MoelmBatch batch;
  routed_batch(first, src, tgt, &batch);
  float all[R * TT], train[R * TT];
  CU_ASSERT_TRUE_FATAL(moelm_model_score(m, &batch, NULL, all, NULL, NULL));
  /* training routing: no capacity (top-1 capacity would be 4 of these 24 tokens per expert) */
  const MoelmStepIds ids = {3, 1};
  CU_ASSERT_TRUE_FATAL(moelm_model_score(m, &batch, &ids, train, NULL, NULL));
  MoelmModel *dense[E];
  for (int e = 0; e < E; e++)
    dense[e] = dense_of_expert(m, be, e);
  double other = 0;
  for (int r = 0; r < R; r++) {
    MoelmBatch one = {1, TT, src + r * TT, tgt + r * TT};
    float own[TT], alt[TT];
    CU_ASSERT_TRUE_FATAL(moelm_model_score(dense[expert[r]], &one, NULL, own, NULL, NULL));
    CU_ASSERT_TRUE_FATAL(moelm_model_score(dense[(expert[r] + 1) % E], &one, NULL, alt, NULL, NULL));
    for (int t = 0; t < TT; t++) {
      CU_ASSERT_DOUBLE_EQUAL(all[r * TT + t], own[t], 1e-5);
      CU_ASSERT_DOUBLE_EQUAL(train[r * TT + t], own[t], 1e-5);
      other = fmax(other, fabs(alt[t] - own[t]));
    }
  }
  CU_ASSERT(other > 1e-3); /* the experts really differ */
  for (int e = 0; e < E; e++)
    moelm_model_free(dense[e]);
  moelm_model_free(m);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(be);
}

static double weighted_loss(MoelmModel *m, const MoelmBatch *b, const MoelmStepIds *ids, const float *w)
{
  float rows[R];
  CU_ASSERT_TRUE_FATAL(moelm_model_score(m, b, ids, NULL, rows, NULL));
  double loss = 0;
  for (int r = 0; r < b->B; r++)
    loss -= (double)w[r] * rows[r];
  return loss;
}

static void test_gradients(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(TRUE, 1, NULL);
  MoelmModelConfig cfg;
  routed_config(&cfg);
  cfg.normalize_before = FALSE; /* post-norm here, pre-norm in the forward test */
  MoelmModel *m = tiny_model_new(&cfg, be, 6);
  const int32_t first[R] = {TOKEN0 + 2, TOKEN0, TOKEN0 + 2, TOKEN0}; /* expert 1 gets no row */
  int32_t src[R * TT], tgt[R * TT];
  MoelmBatch batch;
  routed_batch(first, src, tgt, &batch);
  const float w[R] = {0.7f, 1.3f, 1.0f, 0.4f};
  const MoelmStepIds ids = {5, 2};
  moelm_model_zero_grad(m);
  CU_ASSERT_TRUE_FATAL(moelm_model_train_step(m, &batch, &ids, w, NULL, NULL, NULL));
  float *params = moelm_model_params(m), *grads = moelm_model_grads(m);
  MoelmRng rng;
  moelm_rng_init(&rng, 11, 0, 0);
  int checked = 0, bad = 0, zero_bad = 0, expert_checked = 0;
  for (guint i = 0; i < moelm_model_n_tensors(m); i++) {
    const MoelmParam *p = moelm_model_tensor(m, i);
    if (strstr(p->name, ".gate.wg.") || strstr(p->name, ".experts.1.")) { /* unused: no gradient */
      for (size_t k = 0; k < p->numel; k++)
        zero_bad += grads[p->offset + k] != 0.0f;
      continue;
    }
    const gboolean is_expert = strstr(p->name, ".experts.") != NULL;
    for (int k = 0; k < 4; k++) {
      const size_t j = p->offset + moelm_rng_next_below(&rng, (uint32_t)p->numel);
      const float saved = params[j], h = 1e-2f;
      params[j] = saved + h;
      const double lp = weighted_loss(m, &batch, &ids, w);
      params[j] = saved - h;
      const double lm = weighted_loss(m, &batch, &ids, w);
      params[j] = saved;
      const double numeric = (lp - lm) / (2.0 * h), analytic = grads[j];
      if (fabs(numeric - analytic) > 2e-2 * fmax(fabs(numeric), fabs(analytic)) + 2e-3) {
        bad++;
        g_printerr("\n  %s[%zu]: analytic %.6g numeric %.6g", p->name, j - p->offset, analytic, numeric);
      }
      checked++;
      expert_checked += is_expert;
    }
  }
  CU_ASSERT(checked > 50);
  CU_ASSERT(expert_checked >= 30);
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT_EQUAL(zero_bad, 0);
  moelm_model_free(m);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(be);
}

static void test_decode_keeps_row_experts(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 1, NULL);
  MoelmModelConfig cfg;
  routed_config(&cfg);
  MoelmModel *m = tiny_model_new(&cfg, be, 8);
  /* two rows of different experts, decoded together; after 4 tokens the rows swap (a beam
   * reorder) and each must go on with its own expert */
  const int32_t rows[2][8] = {{TOKEN0 + 1, 5, 9, 4, 7, 6, 8, 5}, {TOKEN0 + 2, 6, 4, 8, 9, 5, 7, 4}};
  MoelmKvCache *kc = moelm_kv_cache_new(m, 2, 8, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(kc);
  float lp[2 * TV];
  int32_t in[2 * 3] = {rows[0][0], rows[0][1], rows[0][2], rows[1][0], rows[1][1], rows[1][2]};
  CU_ASSERT_TRUE_FATAL(moelm_model_decode(m, kc, in, 3, lp, NULL));
  int order_of[2] = {0, 1}; /* cache row -> sequence */
  double cross = 0;
  for (int t = 3; t < 7; t++) {
    for (int r = 0; r < 2; r++) {
      const int32_t *seq = rows[order_of[r]], *other = rows[1 - order_of[r]];
      CU_ASSERT_DOUBLE_EQUAL(lp[r * TV + seq[t]], tiny_model_full_lprob(m, seq, t), 1e-4);
      /* the same tokens under the other row's expert score differently */
      int32_t swapped[8];
      memcpy(swapped, seq, sizeof swapped);
      swapped[0] = other[0];
      cross = fmax(cross, fabs(lp[r * TV + seq[t]] - tiny_model_full_lprob(m, swapped, t)));
    }
    if (t == 4) {
      const int32_t order[2] = {1, 0};
      CU_ASSERT_TRUE_FATAL(moelm_kv_cache_reorder(kc, order, NULL));
      const int o0 = order_of[0];
      order_of[0] = order_of[1];
      order_of[1] = o0;
    }
    const int32_t next[2] = {rows[order_of[0]][t], rows[order_of[1]][t]};
    CU_ASSERT_TRUE_FATAL(moelm_model_decode(m, kc, next, 1, lp, NULL));
  }
  CU_ASSERT(cross > 1e-3);
  moelm_kv_cache_free(kc);
  moelm_model_free(m);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(be);
}

static void check_invalid(const MoelmModelConfig *cfg, const char *needle)
{
  GError *error = NULL;
  CU_ASSERT_FALSE(moelm_model_config_validate(cfg, &error));
  MOELM_ASSERT_ERROR(error, needle);
  g_clear_error(&error);
}

static void test_config(void)
{
  MoelmModelConfig cfg, back;
  routed_config(&cfg);
  JsonNode *j = moelm_model_config_to_json(&cfg);
  GError *error = NULL;
  CU_ASSERT_TRUE_FATAL(moelm_model_config_from_json(&back, j, &error));
  CU_ASSERT_EQUAL(back.moe_route_token0, TOKEN0);
  CU_ASSERT_EQUAL(back.moe_top_k, 1);
  moelm_model_config_clear(&back);
  json_node_unref(j);
  cfg.moe_top_k = 2;
  check_invalid(&cfg, "route top-1");
  cfg.moe_top_k = 1;
  cfg.moe_route_token0 = TV - 2; /* experts 11..13 of a vocabulary of 13 */
  check_invalid(&cfg, "outside the vocabulary");
  cfg.moe_route_token0 = TOKEN0;
  cfg.moe_freq = 0;
  check_invalid(&cfg, "needs MoE layers");
  /* a token-MoE model's config has no routing member, and reads back without one */
  cfg.moe_freq = 1;
  cfg.moe_route_token0 = 0;
  cfg.moe_top_k = 2;
  j = moelm_model_config_to_json(&cfg);
  CU_ASSERT_FALSE(json_object_has_member(json_node_get_object(j), "moe_route_expert_token0"));
  CU_ASSERT_TRUE(moelm_model_config_from_json(&back, j, NULL));
  CU_ASSERT_EQUAL(back.moe_route_token0, 0);
  moelm_model_config_clear(&back);
  json_node_unref(j);
  moelm_model_config_clear(&cfg);
}

MOELM_TEST_SUITE(sequence_routing)
{
  CU_add_test(suite, "each row scores as the dense model of its expert, training routing drops nothing",
              test_rows_score_as_their_expert);
  CU_add_test(suite, "gradients: central differences, none for unused experts or the gate", test_gradients);
  CU_add_test(suite, "KV-cache decoding keeps each row's expert through a reorder", test_decode_keeps_row_experts);
  CU_add_test(suite, "config: JSON round trip, contradictions refused", test_config);
}
