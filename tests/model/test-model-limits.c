/* The model under hostile sizes and failing allocations: every allocation of the workspace
 * failing in turn leaves a model that still frees cleanly and works once memory is back. */
#include "config.h"

#include <string.h>

#include "moelm-test.h"
#include "tiny-model.h"
#include "moelm/errors.h"
#include "moelm/model.h"

/* A CPU backend whose alloc fails on the fail_at-th call from now (0: never). */
static struct moelm_backend_ops failing_ops;
static const struct moelm_backend_ops *real_ops;
static int alloc_calls, fail_at;

static void *failing_alloc(MoelmBackend *be, size_t bytes, GError **error)
{
  if (fail_at > 0 && ++alloc_calls == fail_at) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "test: allocation %d refused", fail_at);
    return NULL;
  }
  return real_ops->alloc(be, bytes, error);
}

static MoelmBackend *failing_backend(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(TRUE, 1, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(be);
  real_ops = be->ops;
  failing_ops = *be->ops;
  failing_ops.alloc = failing_alloc;
  be->ops = &failing_ops;
  return be;
}

static void check_alloc_failures(MoelmModelConfig *cfg)
{
  MoelmBackend *be = failing_backend();
  int32_t src[TB * TT], tgt[TB * TT];
  MoelmBatch batch;
  tiny_model_batch(src, tgt, &batch);
  float rows_ok[TB];
  int refused = 0;
  for (int k = 1; k < 400; k++) {
    fail_at = 0;
    MoelmModel *m = moelm_model_new(cfg, be, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    moelm_model_init_params(m, 3);
    alloc_calls = 0;
    fail_at = k; /* the k-th allocation of the workspace fails */
    GError *error = NULL;
    float rows[TB];
    gboolean ok = moelm_model_score(m, &batch, NULL, NULL, rows, &error);
    fail_at = 0;
    if (ok) { /* k is past the last allocation: every one has failed once */
      CU_ASSERT_TRUE(refused > 10);
      moelm_model_free(m);
      break;
    }
    MOELM_ASSERT_ERROR(error, "refused");
    g_clear_error(&error);
    refused++;
    /* the failed attempt left nothing dangling: a retry works and gives the same scores */
    CU_ASSERT_TRUE(moelm_model_score(m, &batch, NULL, NULL, rows, NULL));
    if (refused == 1)
      memcpy(rows_ok, rows, sizeof rows);
    CU_ASSERT_EQUAL(memcmp(rows, rows_ok, sizeof rows), 0);
    moelm_model_free(m);
  }
  CU_ASSERT_TRUE(refused > 10);
  moelm_backend_free(be);
}

static void test_workspace_alloc_failures_dense(void)
{
  MoelmModelConfig cfg;
  tiny_model_config(&cfg);
  check_alloc_failures(&cfg);
  moelm_model_config_clear(&cfg);
}

static void test_workspace_alloc_failures_moe(void)
{
  MoelmModelConfig cfg;
  tiny_model_config(&cfg);
  cfg.moe_freq = 1;
  cfg.moe_experts = 3;
  check_alloc_failures(&cfg);
  moelm_model_config_clear(&cfg);
}

/* The O(1) count the checkpoint loader trusts equals the real layout, for every shape. */
static void test_num_params_matches_layout(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(TRUE, 1, NULL);
  for (int variant = 0; variant < 7; variant++) {
    MoelmModelConfig cfg;
    tiny_model_config(&cfg);
    cfg.layers = 5;
    switch (variant) {
    case 1: cfg.learned_pos = TRUE; break;
    case 2: cfg.share_embed = TRUE; break;
    case 3: cfg.final_norm = FALSE; break;
    case 4: cfg.moe_freq = 2, cfg.moe_experts = 3, cfg.moe_expert_ffn_dim = 5; break;
    case 5: cfg.moe_freq = 1, cfg.moe_experts = 4, cfg.moe_top_k = 1; break;
    case 6: cfg.gate_experts = 3, cfg.normalize_before = FALSE; break;
    }
    guint64 count = 0;
    CU_ASSERT_TRUE(moelm_model_config_num_params(&cfg, &count));
    MoelmModel *m = moelm_model_new(&cfg, be, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(m);
    if (count != moelm_model_num_params(m))
      g_printerr("\n  variant %d: counted %" G_GUINT64_FORMAT ", laid out %zu", variant, count, moelm_model_num_params(m));
    CU_ASSERT_EQUAL(count, moelm_model_num_params(m));
    moelm_model_free(m);
    moelm_model_config_clear(&cfg);
  }
  moelm_backend_free(be);
  /* the largest config the bounds allow overflows nothing: the count says so */
  MoelmModelConfig big;
  tiny_model_config(&big);
  big.embed_dim = big.heads = MOELM_MODEL_MAX_DIM;
  big.layers = big.moe_freq = 1;
  big.moe_experts = MOELM_MODEL_MAX_EXPERTS;
  big.moe_expert_ffn_dim = MOELM_MODEL_MAX_FFN_DIM;
  guint64 count = 0;
  CU_ASSERT_TRUE(moelm_model_config_validate(&big, NULL));
  CU_ASSERT_TRUE(moelm_model_config_num_params(&big, &count));
  CU_ASSERT_TRUE(count > ((guint64)1 << 57));
  moelm_model_config_clear(&big);
}

MOELM_TEST_SUITE(model_limits)
{
  CU_add_test(suite, "the counted parameters equal the layout", test_num_params_matches_layout);
  CU_add_test(suite, "every failed workspace allocation is recoverable (dense)", test_workspace_alloc_failures_dense);
  CU_add_test(suite, "every failed workspace allocation is recoverable (MoE)", test_workspace_alloc_failures_moe);
}
