/* --checkpoint-activations: the same log-probs and the same gradient bits as without, for
 * dense (pre- and post-norm, with dropout and padding) and token-MoE models, on the reference
 * and the fast CPU backends; and the workspace really is smaller. */
#include "config.h"

#include <string.h>

#include "moelm-test.h"
#include "moelm/dictionary.h"
#include "moelm/model.h"
#include "tiny-model.h"

static void train(MoelmBackend *be, const MoelmModelConfig *cfg, gboolean ckpt, float *grads, float *lp)
{
  MoelmModel *m = moelm_model_new(cfg, be, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  moelm_model_set_checkpoint_activations(m, ckpt);
  moelm_model_init_params(m, 3);
  int32_t src[TB * TT], tgt[TB * TT];
  MoelmBatch b;
  tiny_model_batch(src, tgt, &b);
  const float w[TB] = {1.0f, 0.5f};
  const MoelmStepIds ids = {9, 4};
  for (int step = 0; step < 2; step++) /* twice: the second step reuses the workspace */
    CU_ASSERT_TRUE(moelm_model_train_step(m, &b, &ids, w, lp, NULL, NULL));
  be->ops->to_host(be, grads, moelm_model_grads(m), moelm_model_num_params(m) * sizeof(float));
  moelm_model_free(m);
}

static void check(const MoelmModelConfig *cfg)
{
  for (int fast = 0; fast < 2; fast++) {
    MoelmBackend *be = moelm_backend_cpu_new(!fast, 2, NULL);
    MoelmModel *probe = moelm_model_new(cfg, be, NULL);
    const size_t n = moelm_model_num_params(probe);
    moelm_model_free(probe);
    float *g0 = g_new(float, n), *g1 = g_new(float, n), lp0[TB * TT], lp1[TB * TT];
    train(be, cfg, FALSE, g0, lp0);
    train(be, cfg, TRUE, g1, lp1);
    CU_ASSERT_EQUAL(memcmp(lp0, lp1, sizeof lp0), 0);
    CU_ASSERT_EQUAL(memcmp(g0, g1, n * sizeof(float)), 0);
    double norm = 0;
    for (size_t i = 0; i < n; i++)
      norm += (double)g0[i] * g0[i];
    CU_ASSERT(norm > 0); /* a real gradient */
    g_free(g0);
    g_free(g1);
    moelm_backend_free(be);
  }
}

static void test_dense(void)
{
  MoelmModelConfig cfg;
  tiny_model_config(&cfg);
  cfg.layers = 3;
  cfg.dropout = cfg.attention_dropout = cfg.activation_dropout = 0.2;
  check(&cfg);
  cfg.normalize_before = FALSE; /* post-norm: the layers' outputs are the LN2 outputs */
  check(&cfg);
  moelm_model_config_clear(&cfg);
}

static void test_moe(void)
{
  MoelmModelConfig cfg;
  tiny_model_config(&cfg);
  cfg.layers = 4;
  cfg.dropout = 0.1;
  cfg.moe_freq = 2;
  cfg.moe_experts = 3;
  cfg.moe_top_k = 2;
  cfg.moe_capacity_factor = 1.0;
  check(&cfg);
  moelm_model_config_clear(&cfg);
}

MOELM_TEST_SUITE(checkpoint_activations)
{
  CU_add_test(suite, "dense, pre- and post-norm: the same gradient bits", test_dense);
  CU_add_test(suite, "token MoE: the same gradient bits", test_moe);
}
