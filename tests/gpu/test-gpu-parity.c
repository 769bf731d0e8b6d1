/* The whole model on the GPU against the CPU (issue 10): in fp32 the per-token
 * log-probabilities of a training step and every parameter's gradient equal the CPU
 * reference's to 1e-4 relative (dense, with dropout and padding; token MoE; sequence-routed
 * expert FFNs); bf16 activations within 2e-2. Skipped, with a message, where no CUDA device is present. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/backend.h"
#include "moelm/dictionary.h"
#include "moelm/model.h"
#include "moelm/rng.h"

enum { B = 4, T = 32, V = 1000 };
/* the model under test: dense, token-level MoE, or a mixture's sequence-routed expert FFNs
 * (--mixture-expert-ffn 1: row r starts with <expert_{r%4}> = V-4+r%4) */
typedef enum { DENSE, TOKEN_MOE, SEQUENCE_MOE } Kind;
static const char *const kind_names[] = {"dense", "moe", "sequence-moe"};

static MoelmBackend *open_gpu(MoelmPrecision precision)
{
  MoelmBackendSpec spec;
  moelm_backend_spec_init(&spec);
  spec.kind = MOELM_BACKEND_CUDA;
  spec.device_id = 0;
  spec.precision = precision;
  GError *error = NULL;
  MoelmBackend *be = moelm_backend_open(&spec, &error);
  if (be == NULL) {
    g_printerr("[skipped: %s] ", error->message);
    g_error_free(error);
  }
  return be;
}

static void config(MoelmModelConfig *cfg, Kind kind)
{
  memset(cfg, 0, sizeof *cfg);
  cfg->max_positions = T;
  CU_ASSERT_TRUE_FATAL(moelm_model_config_set_arch(cfg, "transformer_lm", NULL));
  cfg->vocab_size = V;
  cfg->embed_dim = 64;
  cfg->ffn_dim = 256;
  cfg->layers = 2;
  cfg->heads = 4;
  cfg->activation = MOELM_ACT_GELU;
  cfg->dropout = cfg->attention_dropout = 0.1;
  if (kind == TOKEN_MOE) {
    cfg->moe_freq = 2;
    cfg->moe_experts = 4;
    cfg->moe_top_k = 2;
    cfg->moe_second_expert_policy = MOELM_SECOND_EXPERT_ALL;
  } else if (kind == SEQUENCE_MOE) {
    cfg->moe_freq = 1;
    cfg->moe_experts = 4;
    cfg->moe_top_k = 1;
    cfg->moe_gate_loss_wt = 0;
    cfg->moe_route_token0 = V - 4;
  }
}

/* Random tokens, the last row padded from the middle. */
static void batch(int32_t *src, int32_t *tgt, MoelmBatch *b, Kind kind)
{
  MoelmRng rng;
  moelm_rng_init(&rng, 5, 1, 2);
  for (int r = 0; r < B; r++)
    for (int t = 0; t < T; t++) {
      const gboolean pad = r == B - 1 && t >= T / 2;
      tgt[r * T + t] = pad ? MOELM_PAD : 4 + (int32_t)moelm_rng_next_below(&rng, V - 4);
      const int32_t first = kind == SEQUENCE_MOE ? V - 4 + r % 4 : MOELM_EOS;
      src[r * T + t] = pad ? MOELM_PAD : t == 0 ? first : tgt[r * T + t - 1];
    }
  b->B = B;
  b->T = T;
  b->src = src;
  b->tgt = tgt;
}

/* ||a - b|| / ||b|| */
static double rel(const float *a, const float *b, size_t n)
{
  double d = 0, s = 0;
  for (size_t i = 0; i < n; i++) {
    d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    s += (double)b[i] * b[i];
  }
  return s > 0 ? sqrt(d / s) : sqrt(d);
}

static void compare_step(Kind kind, MoelmPrecision precision, double tol)
{
  MoelmBackend *gpu = open_gpu(precision);
  if (gpu == NULL)
    return;
  MoelmBackend *cpu = moelm_backend_cpu_new(TRUE, 1, NULL);
  MoelmModelConfig cfg;
  config(&cfg, kind);
  MoelmModel *mc = moelm_model_new(&cfg, cpu, NULL), *mg = moelm_model_new(&cfg, gpu, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(mc);
  CU_ASSERT_PTR_NOT_NULL_FATAL(mg);
  moelm_model_init_params(mc, 11);
  moelm_model_init_params(mg, 11);
  int32_t src[B * T], tgt[B * T];
  MoelmBatch b;
  batch(src, tgt, &b, kind);
  float w[B] = {1, 1, 1, 1}, lc[B * T], lg[B * T];
  MoelmStepIds ids = {7, 3};
  GError *error = NULL;
  CU_ASSERT_TRUE(moelm_model_train_step(mc, &b, &ids, w, lc, NULL, &error));
  CU_ASSERT_TRUE(moelm_model_train_step(mg, &b, &ids, w, lg, NULL, &error));
  if (error)
    g_printerr("\n  %s\n", error->message);
  g_clear_error(&error);
  const double dl = rel(lg, lc, (size_t)B * T);
  const size_t n = moelm_model_num_params(mc);
  float *gc = g_new(float, n), *gg = g_new(float, n);
  cpu->ops->to_host(cpu, gc, moelm_model_grads(mc), n * sizeof(float));
  gpu->ops->to_host(gpu, gg, moelm_model_grads(mg), n * sizeof(float));
  double worst = 0;
  const char *worst_name = "";
  for (guint i = 0; i < moelm_model_n_tensors(mc); i++) {
    const MoelmParam *p = moelm_model_tensor(mc, i);
    const double r = rel(gg + p->offset, gc + p->offset, p->numel);
    if (r > worst) {
      worst = r;
      worst_name = p->name;
    }
  }
  g_printerr("[%s %s: log-probs %.2g, worst gradient %.2g (%s)] ", kind_names[kind],
             precision == MOELM_PRECISION_FP32 ? "fp32" : "bf16", dl, worst, worst_name);
  CU_ASSERT(dl < tol);
  CU_ASSERT(worst < tol);
  g_free(gc);
  g_free(gg);
  moelm_model_free(mc);
  moelm_model_free(mg);
  moelm_model_config_clear(&cfg);
  moelm_backend_free(cpu);
  moelm_backend_free(gpu);
}

static void test_dense_fp32(void) { compare_step(DENSE, MOELM_PRECISION_FP32, 1e-4); }
static void test_moe_fp32(void) { compare_step(TOKEN_MOE, MOELM_PRECISION_FP32, 1e-4); }
static void test_sequence_moe_fp32(void) { compare_step(SEQUENCE_MOE, MOELM_PRECISION_FP32, 1e-4); }
static void test_dense_bf16(void) { compare_step(DENSE, MOELM_PRECISION_BF16, 2e-2); }

MOELM_TEST_SUITE(gpu_parity)
{
  CU_add_test(suite, "dense train step, fp32: log-probs and gradients = CPU to 1e-4", test_dense_fp32);
  CU_add_test(suite, "token MoE train step, fp32: = CPU to 1e-4", test_moe_fp32);
  CU_add_test(suite, "sequence-routed expert FFNs train step, fp32: = CPU to 1e-4", test_sequence_moe_fp32);
  CU_add_test(suite, "dense train step, bf16 activations: within 2e-2", test_dense_bf16);
}
