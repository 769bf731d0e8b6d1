/* moelm benchmark: training and eval throughput of the "tiny" transformer_lm on the CPU
 * (4 layers, embed 256, 4 heads, FFN 1024, vocabulary 8000, 256 tokens per sample,
 * batch 8 sequences, fp32). A training step is forward + backward + gradient clipping +
 * Adam, exactly what `moelm train` does per update. Prints a table.
 * usage: bench-train [--threads N] [--steps N] [--reference] */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moelm/backend.h"
#include "moelm/model.h"
#include "moelm/optim.h"
#include "moelm/rng.h"
#include "moelm/timer.h"

typedef struct {
  const char *name;
  int layers, dim, heads, ffn, vocab, T, B;
} BenchConfig;

static const BenchConfig tiny = {"tiny", 4, 256, 4, 1024, 8000, 256, 8};

static void fill_batch(int32_t *src, int32_t *tgt, int n, int vocab, MoelmRng *rng)
{
  for (int i = 0; i < n; i++)
    tgt[i] = 4 + (int32_t)moelm_rng_next_below(rng, (uint32_t)(vocab - 4));
  for (int i = 0; i < n; i++)
    src[i] = (i % tiny.T == 0) ? 2 : tgt[i - 1];
}

int main(int argc, char **argv)
{
  int threads = 0, steps = 6;
  gboolean reference = FALSE;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--reference") == 0)
      reference = TRUE;
    else {
      fprintf(stderr, "usage: bench-train [--threads N] [--steps N] [--reference]\n");
      return 2;
    }
  }
  GError *error = NULL;
  MoelmBackend *be = moelm_backend_cpu_new(reference, threads, &error);
  if (be == NULL) {
    fprintf(stderr, "bench-train: %s\n", error->message);
    return 1;
  }
  const BenchConfig *bc = &tiny;
  MoelmModelConfig cfg = {0};
  cfg.max_positions = bc->T;
  moelm_model_config_set_arch(&cfg, "transformer_lm", NULL);
  cfg.vocab_size = bc->vocab;
  cfg.embed_dim = bc->dim;
  cfg.ffn_dim = bc->ffn;
  cfg.layers = bc->layers;
  cfg.heads = bc->heads;
  cfg.dropout = 0.1;
  MoelmModel *m = moelm_model_new(&cfg, be, &error);
  if (m == NULL) {
    fprintf(stderr, "bench-train: %s\n", error->message);
    return 1;
  }
  moelm_model_init_params(m, 1);
  const size_t np = moelm_model_num_params(m);
  MoelmAdamConfig acfg;
  moelm_adam_config_init(&acfg);
  MoelmAdam adam;
  moelm_adam_init(&adam, &acfg, np, NULL);

  const int N = bc->B * bc->T;
  int32_t *src = g_new(int32_t, N), *tgt = g_new(int32_t, N);
  float *w = g_new(float, bc->B), *rows = g_new(float, bc->B);
  for (int b = 0; b < bc->B; b++)
    w[b] = 1.0f / (float)N;
  MoelmRng rng;
  moelm_rng_init(&rng, 1, 0, 0);
  MoelmBatch batch = {bc->B, bc->T, src, tgt};

  double train_s = 0, eval_s = 0;
  for (int s = 0; s < steps + 1; s++) { /* step 0 warms up */
    fill_batch(src, tgt, N, bc->vocab, &rng);
    MoelmStepIds ids = {1, (uint32_t)s};
    double t0 = moelm_time_now();
    moelm_model_zero_grad(m);
    moelm_model_train_step(m, &batch, &ids, w, NULL, rows, NULL);
    moelm_clip_grad_norm(be, moelm_model_grads(m), np, 1.0);
    moelm_adam_step(&adam, be, moelm_model_params(m), moelm_model_grads(m), np, 1e-4, NULL);
    double t1 = moelm_time_now();
    moelm_model_score(m, &batch, NULL, NULL, rows, NULL);
    double t2 = moelm_time_now();
    if (s > 0) {
      train_s += t1 - t0;
      eval_s += t2 - t1;
    }
  }
  const double tokens = (double)N * steps;
  printf("| config | backend | threads | params | train tokens/s | eval tokens/s | ms/step |\n");
  printf("|---|---|---|---|---|---|---|\n");
  printf("| %s | %s | %d | %.2fM | %.0f | %.0f | %.1f |\n", bc->name, be->ops->name, be->n_threads, np / 1e6,
         tokens / train_s, tokens / eval_s, 1000.0 * train_s / steps);
  moelm_adam_free(&adam);
  moelm_model_free(m);
  moelm_backend_free(be);
  moelm_model_config_clear(&cfg);
  g_free(src);
  g_free(tgt);
  g_free(w);
  g_free(rows);
  return 0;
}
