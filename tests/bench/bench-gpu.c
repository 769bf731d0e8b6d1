/* moelm benchmark on one GPU (issue 10 and 11): transformer_lm_gpt (12 layers, embed 768, 12
 * heads, FFN 3072, vocabulary 50264), 1024 tokens per sample, 16 sequences per batch, bf16
 * activations, dropout 0.1: training tokens/s (forward + backward + clip + AdamW), model
 * TFLOP/s and MFU (6·params + 12·layers·T·embed FLOPs per token, against 989 TFLOP/s bf16 for
 * an H100), peak GPU memory; eval tokens/s (fp32 losses); batch-1 greedy decoding tokens/s
 * after a 128-token prompt. Also the same with 8 experts, top-2, every other layer. Prints a
 * markdown table. usage: bench-gpu [--steps N] [--fp32] [--device N] */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "moelm/backend.h"
#include "moelm/dictionary.h"
#include "moelm/model.h"
#include "moelm/optim.h"
#include "moelm/rng.h"
#include "moelm/timer.h"

enum { LAYERS = 12, DIM = 768, HEADS = 12, FFN = 3072, VOCAB = 50264, T = 1024, B = 16, PROMPT = 128, GEN = 128 };
#define H100_BF16_TFLOPS 989.0

static void fill(int32_t *src, int32_t *tgt, int n, MoelmRng *rng)
{
  for (int i = 0; i < n; i++)
    tgt[i] = 4 + (int32_t)moelm_rng_next_below(rng, VOCAB - 4);
  for (int i = 0; i < n; i++)
    src[i] = i % T == 0 ? MOELM_EOS : tgt[i - 1];
}

static double gpu_used_gb(void)
{
  size_t free_b = 0, total = 0;
  cudaMemGetInfo(&free_b, &total);
  return (double)(total - free_b) / 1e9;
}

static int compare_double(const void *a, const void *b)
{
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n)
{
  qsort(v, n, sizeof *v, compare_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void run(const char *label, MoelmBackend *be, int moe_experts, int steps)
{
  MoelmModelConfig cfg = {0};
  cfg.max_positions = T;
  moelm_model_config_set_arch(&cfg, "transformer_lm_gpt", NULL);
  cfg.vocab_size = VOCAB;
  cfg.share_embed = TRUE;
  cfg.dropout = cfg.attention_dropout = 0.1;
  if (moe_experts > 0) {
    cfg.moe_freq = 2;
    cfg.moe_experts = moe_experts;
    cfg.moe_top_k = 2;
  }
  const double mem0 = gpu_used_gb();
  GError *error = NULL;
  MoelmModel *m = moelm_model_new(&cfg, be, &error);
  if (m == NULL) {
    fprintf(stderr, "bench-gpu: %s\n", error->message);
    exit(1);
  }
  moelm_model_init_params(m, 1);
  MoelmAdamConfig acfg;
  moelm_adam_config_init(&acfg);
  MoelmAdam adam;
  if (!moelm_adam_init(&adam, &acfg, be, moelm_model_num_params(m), &error)) {
    fprintf(stderr, "bench-gpu: %s\n", error->message);
    exit(1);
  }
  const size_t np = moelm_model_num_params(m);
  int32_t *src = g_new(int32_t, B * T), *tgt = g_new(int32_t, B * T);
  MoelmRng rng;
  moelm_rng_init(&rng, 3, 0, 0);
  fill(src, tgt, B * T, &rng);
  MoelmBatch batch = {B, T, src, tgt};
  float w[B];
  for (int i = 0; i < B; i++)
    w[i] = 1.0f;
  double *train_s = g_new(double, steps), *eval_s = g_new(double, steps);
  for (int s = -2; s < steps; s++) { /* two warm-up steps */
    MoelmStepIds ids = {1, (uint32_t)(s + 2)};
    be->ops->synchronize(be, NULL);
    double t0 = moelm_time_now();
    moelm_model_zero_grad(m);
    if (!moelm_model_train_step(m, &batch, &ids, w, NULL, NULL, &error)) {
      fprintf(stderr, "bench-gpu: %s\n", error->message);
      exit(1);
    }
    moelm_multiply_grads(be, moelm_model_grads(m), np, 1.0 / (B * T));
    moelm_clip_grad_norm(be, moelm_model_grads(m), np, 1.0);
    moelm_adam_step(&adam, moelm_model_params(m), moelm_model_grads(m), np, 1e-4, NULL);
    be->ops->synchronize(be, NULL);
    double t1 = moelm_time_now();
    moelm_model_score(m, &batch, NULL, NULL, NULL, NULL);
    be->ops->synchronize(be, NULL);
    double t2 = moelm_time_now();
    if (s >= 0) {
      train_s[s] = t1 - t0;
      eval_s[s] = t2 - t1;
    }
  }
  const double peak = gpu_used_gb() - mem0;
  const double ts = median(train_s, steps), es = median(eval_s, steps);
  /* model FLOPs per token: 6 x the parameters a token passes through + attention */
  double active = (double)np;
  if (moe_experts > 0) /* a token passes through 2 of the experts of each MoE layer */
    active -= (double)(LAYERS / 2) * (moe_experts - 2) * (2.0 * DIM * FFN + FFN + DIM);
  const double flops = (6.0 * active + 12.0 * LAYERS * T * DIM) * B * T / ts;
  /* decoding: a 128-token prompt, then greedy steps at batch 1 */
  MoelmKvCache *kc = moelm_kv_cache_new(m, 1, PROMPT + GEN + 1, &error);
  float *lp = g_new(float, VOCAB);
  int32_t tok[PROMPT];
  memcpy(tok, src, sizeof tok);
  moelm_model_decode(m, kc, tok, PROMPT, lp, &error);
  be->ops->synchronize(be, NULL);
  double d0 = moelm_time_now();
  for (int g = 0; g < GEN; g++) {
    int32_t best = 4;
    for (int v = 5; v < VOCAB; v++)
      if (lp[v] > lp[best])
        best = v;
    moelm_model_decode(m, kc, &best, 1, lp, &error);
  }
  be->ops->synchronize(be, NULL);
  const double dec = GEN / (moelm_time_now() - d0);
  printf("| %s | %.2fM | %.0f | %.1f | %.1f%% | %.1f GB | %.0f | %.0f |\n", label, (double)np / 1e6, B * T / ts,
         flops / 1e12, 100.0 * flops / 1e12 / H100_BF16_TFLOPS, peak, B * T / es, dec);
  fflush(stdout);
  g_free(lp);
  moelm_kv_cache_free(kc);
  g_free(train_s);
  g_free(eval_s);
  g_free(src);
  g_free(tgt);
  moelm_adam_free(&adam);
  moelm_model_free(m);
  moelm_model_config_clear(&cfg);
}

int main(int argc, char **argv)
{
  int steps = 5, device = 0;
  MoelmPrecision precision = MOELM_PRECISION_BF16;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--device") == 0 && i + 1 < argc)
      device = atoi(argv[++i]);
    else if (strcmp(argv[i], "--fp32") == 0)
      precision = MOELM_PRECISION_FP32;
    else {
      fprintf(stderr, "usage: bench-gpu [--steps N] [--fp32] [--device N]\n");
      return 2;
    }
  }
  MoelmBackendSpec spec;
  moelm_backend_spec_init(&spec);
  spec.kind = MOELM_BACKEND_CUDA;
  spec.device_id = device;
  spec.precision = precision;
  GError *error = NULL;
  MoelmBackend *be = moelm_backend_open(&spec, &error);
  if (be == NULL) {
    fprintf(stderr, "bench-gpu: %s\n", error->message);
    return 77;
  }
  printf("%s, %s activations, B=%d T=%d, %d timed steps (median)\n\n", be->description,
         precision == MOELM_PRECISION_FP32 ? "fp32" : "bf16", B, T, steps);
  printf("| model | params | train tokens/s | model TFLOP/s | MFU | peak GPU memory | eval tokens/s | decode "
         "tokens/s (batch 1) |\n|---|---|---|---|---|---|---|---|\n");
  run("transformer_lm_gpt", be, 0, steps);
  run("transformer_lm_gpt, 8 experts top-2 every 2nd layer", be, 8, steps);
  moelm_backend_free(be);
  return 0;
}
