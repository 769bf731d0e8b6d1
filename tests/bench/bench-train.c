/* moelm benchmark: CPU training and eval throughput of the "tiny" transformer_lm (4 layers,
 * embed 256, 4 heads, FFN 1024, vocabulary 8000, 256 tokens per sample, batch 8, fp32) with
 * token-level MoE layers (4 experts, top-2, every other layer: --moe-freq 2) next to the
 * dense "tiny". A training step is forward + backward (gate loss included) + gradient
 * clipping + Adam, as `moelm train` does per update. The two models step in turn and the
 * median step is reported, so that other jobs on a shared machine hurt both alike. Prints a
 * table.
 * usage: bench-train [--threads N] [--steps N] [--experts E] [--top-k K] [--reference] */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moelm/backend.h"
#include "moelm/model.h"
#include "moelm/optim.h"
#include "moelm/rng.h"
#include "moelm/timer.h"

enum { LAYERS = 4, DIM = 256, HEADS = 4, FFN = 1024, VOCAB = 8000, T = 256, B = 8 };

/* One model under test, with its optimizer and per-step timings. */
typedef struct {
  MoelmModel *m;
  MoelmAdam adam;
  double *train_s, *eval_s; /* per timed step */
} Bench;

static void fill_batch(int32_t *src, int32_t *tgt, int n, MoelmRng *rng)
{
  for (int i = 0; i < n; i++)
    tgt[i] = 4 + (int32_t)moelm_rng_next_below(rng, VOCAB - 4);
  for (int i = 0; i < n; i++)
    src[i] = (i % T == 0) ? 2 : tgt[i - 1];
}

static gboolean bench_init(Bench *bm, MoelmBackend *be, int moe_freq, int experts, int top_k, int steps)
{
  MoelmModelConfig cfg = {0};
  cfg.max_positions = T;
  moelm_model_config_set_arch(&cfg, "transformer_lm", NULL);
  cfg.vocab_size = VOCAB;
  cfg.embed_dim = DIM;
  cfg.ffn_dim = FFN;
  cfg.layers = LAYERS;
  cfg.heads = HEADS;
  cfg.dropout = 0.1;
  cfg.moe_freq = moe_freq;
  cfg.moe_experts = experts;
  cfg.moe_top_k = top_k;
  GError *error = NULL;
  bm->m = moelm_model_new(&cfg, be, &error);
  moelm_model_config_clear(&cfg);
  if (bm->m == NULL) {
    fprintf(stderr, "bench-train: %s\n", error->message);
    g_error_free(error);
    return FALSE;
  }
  moelm_model_init_params(bm->m, 1);
  MoelmAdamConfig acfg;
  moelm_adam_config_init(&acfg);
  moelm_adam_init(&bm->adam, &acfg, be, moelm_model_num_params(bm->m), NULL);
  bm->train_s = g_new0(double, steps);
  bm->eval_s = g_new0(double, steps);
  return TRUE;
}

static void bench_clear(Bench *bm)
{
  moelm_adam_free(&bm->adam);
  moelm_model_free(bm->m);
  g_free(bm->train_s);
  g_free(bm->eval_s);
}

/* One training update (timed into slot s unless s < 0) and one eval forward. */
static void bench_step(Bench *bm, const MoelmBatch *batch, uint32_t update, int s)
{
  const int N = batch->B * batch->T;
  const size_t np = moelm_model_num_params(bm->m);
  float w[B], rows[B];
  for (int b = 0; b < B; b++)
    w[b] = 1.0f; /* summed NLL; the grads are scaled by 1/N below, as the trainer does */
  MoelmStepIds ids = {1, update};
  const double t0 = moelm_time_now();
  moelm_model_zero_grad(bm->m);
  moelm_model_train_step(bm->m, batch, &ids, w, NULL, rows, NULL);
  moelm_multiply_grads(moelm_model_backend(bm->m), moelm_model_grads(bm->m), np, 1.0 / N);
  moelm_clip_grad_norm(moelm_model_backend(bm->m), moelm_model_grads(bm->m), np, 1.0);
  moelm_adam_step(&bm->adam, moelm_model_params(bm->m), moelm_model_grads(bm->m), np, 1e-4, NULL);
  const double t1 = moelm_time_now();
  moelm_model_score(bm->m, batch, NULL, NULL, rows, NULL);
  const double t2 = moelm_time_now();
  if (s >= 0) {
    bm->train_s[s] = t1 - t0;
    bm->eval_s[s] = t2 - t1;
  }
}

static int cmp_double(const void *a, const void *b)
{
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The median step: robust to other jobs on a shared machine. */
static double median(double *v, int n)
{
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void print_row(const char *name, MoelmBackend *be, Bench *bm, int steps)
{
  const double tokens = (double)B * T, train = median(bm->train_s, steps), eval = median(bm->eval_s, steps);
  const int n_moe = moelm_model_moe_layers(bm->m);
  char dropped[32] = "-";
  if (n_moe > 0) {
    MoelmMoeLayerStats *st = g_new0(MoelmMoeLayerStats, n_moe);
    moelm_model_moe_stats_take(bm->m, st);
    double d = 0;
    for (int i = 0; i < n_moe; i++)
      d += (st[i].overflow_expert1 + st[i].overflow_expert2) / (2.0 * n_moe);
    g_snprintf(dropped, sizeof dropped, "%.1f", d);
    g_free(st);
  }
  printf("| %s | %s | %d | %.2fM | %.0f | %.0f | %.1f | %s |\n", name, be->ops->name, be->n_threads,
         moelm_model_num_params(bm->m) / 1e6, tokens / train, tokens / eval, 1000.0 * train, dropped);
}

int main(int argc, char **argv)
{
  int threads = 0, steps = 6, experts = 4, top_k = 2;
  gboolean reference = FALSE;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = atoi(argv[++i]);
    else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc)
      steps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--experts") == 0 && i + 1 < argc)
      experts = atoi(argv[++i]);
    else if (strcmp(argv[i], "--top-k") == 0 && i + 1 < argc)
      top_k = atoi(argv[++i]);
    else if (strcmp(argv[i], "--reference") == 0)
      reference = TRUE;
    else {
      fprintf(stderr, "usage: bench-train [--threads N] [--steps N] [--experts E] [--top-k K] [--reference]\n");
      return 2;
    }
  }
  GError *error = NULL;
  MoelmBackend *be = moelm_backend_cpu_new(reference, threads, &error);
  if (be == NULL) {
    fprintf(stderr, "bench-train: %s\n", error->message);
    return 1;
  }
  Bench dense, moe;
  if (!bench_init(&dense, be, 0, 0, top_k, steps) || !bench_init(&moe, be, 2, experts, top_k, steps)) {
    moelm_backend_free(be);
    return 1;
  }
  const int N = B * T;
  int32_t *src = g_new(int32_t, N), *tgt = g_new(int32_t, N);
  MoelmBatch batch = {B, T, src, tgt};
  MoelmRng rng;
  moelm_rng_init(&rng, 1, 0, 0);
  /* interleaved, so that both see the same machine; step 0 warms up */
  for (int s = -1; s < steps; s++) {
    fill_batch(src, tgt, N, &rng);
    bench_step(&dense, &batch, (uint32_t)(s + 1), s);
    bench_step(&moe, &batch, (uint32_t)(s + 1), s);
  }
  char name[96];
  g_snprintf(name, sizeof name, "tiny, %d experts top-%d every 2nd layer", experts, top_k);
  printf("| config | backend | threads | params | train tokens/s | eval tokens/s | ms/step | dropped %% |\n");
  printf("|---|---|---|---|---|---|---|---|\n");
  print_row("tiny (dense)", be, &dense, steps);
  print_row(name, be, &moe, steps);
  bench_clear(&dense);
  bench_clear(&moe);
  g_free(src);
  g_free(tgt);
  moelm_backend_free(be);
  return 0;
}
