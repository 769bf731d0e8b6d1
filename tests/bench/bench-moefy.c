/* moelm benchmark helper: how long do the FFNs of a dense model and of its moefied versions
 * take, at each top-k?
 *
 * Takes the FFN inputs of real tokens (one batch of rows of DATA's valid split through the
 * dense model: --tokens of them), then times every layer's FFN alone
 * (moelm_model_ffn_forward: the dense fc1 → act → fc2, or the moefied selector → top-k →
 * gather → grouped GEMMs → scatter) on those same inputs: the dense FFN and every (checkpoint,
 * k) in turn, --reps rounds, the best round of each. Prints the dense FFNs' activation
 * sparsity and one markdown row per (checkpoint, k): milliseconds for all layers' FFNs over
 * the tokens, and the speed-up against the dense FFN.
 * usage: bench-moefy DATA DENSE.pt MOEFIED.pt... [--ks 4,8,12,20,40] [--tokens 1024]
 *        [--reps 5] [--threads 1] */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moelm/timer.h"
#include "tasks/inference.h"
#include "tasks/lm_data.h"

static int die(const char *what, GError *error)
{
  fprintf(stderr, "bench-moefy: %s: %s\n", what, error ? error->message : "failed");
  return 1;
}

/* One timing of every layer's FFN on the inputs x[l] (N rows each). */
static gboolean time_ffns(MoelmModel *m, MoelmAct **x, MoelmAct *out, int N, double *t, GError **error)
{
  const int L = moelm_model_get_config(m)->layers;
  const double t0 = moelm_time_now();
  for (int l = 0; l < L; l++)
    if (!moelm_model_ffn_forward(m, l, x[l], out, N, error))
      return FALSE;
  *t = moelm_time_now() - t0;
  return TRUE;
}

int main(int argc, char **argv)
{
  const char *ks_text = "4,8,12,20,40";
  int tokens = 1024, reps = 5, threads = 1;
  GPtrArray *pos = g_ptr_array_new();
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--ks") == 0 && i + 1 < argc)
      ks_text = argv[++i];
    else if (strcmp(argv[i], "--tokens") == 0 && i + 1 < argc)
      tokens = atoi(argv[++i]);
    else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      threads = atoi(argv[++i]);
    else
      g_ptr_array_add(pos, argv[i]);
  }
  if (pos->len < 2) {
    fprintf(stderr, "usage: bench-moefy DATA DENSE.pt MOEFIED.pt... [--ks 4,8,12] [--tokens N] [--reps R] "
                    "[--threads T]\n");
    return 2;
  }
  const char *data = g_ptr_array_index(pos, 0);
  MoelmBackendSpec spec = {.kind = MOELM_BACKEND_CPU, .device_id = -1, .threads = threads};
  GError *error = NULL;
  MoelmInference *dense = moelm_inference_open(g_ptr_array_index(pos, 1), data, &spec, &error);
  if (dense == NULL)
    return die("dense checkpoint", error);
  const MoelmModelConfig *c = moelm_model_get_config(dense->model);
  const int L = c->layers, C = c->embed_dim;
  MoelmBackend *be = dense->be;

  /* the FFN inputs of `tokens` real tokens: rows of the valid split, no padding */
  const int64_t tps = dense->task.tokens_per_sample > 0 ? dense->task.tokens_per_sample : 128;
  MoelmLmSplit *split = moelm_lm_split_open(data, "valid", tps, MOELM_BREAK_NONE, moelm_dictionary_size(dense->dict),
                                            &error);
  if (split == NULL)
    return die("valid split", error);
  const int rows = (int)((tokens + tps - 1) / tps);
  GPtrArray *batches = moelm_lm_batches_sequential(split, rows);
  int32_t *src = NULL, *tgt = NULL;
  int B = 0, T = 0;
  moelm_lm_collate(split, g_ptr_array_index(batches, 0), &src, &tgt, &B, &T);
  const MoelmBatch batch = {B, T, src, tgt};
  if (!moelm_model_score(dense->model, &batch, NULL, NULL, NULL, &error))
    return die("dense forward", error);
  const int N = MIN(tokens, B * T);
  MoelmAct **x = g_new(MoelmAct *, L), *out = be->ops->alloc(be, moelm_act_bytes(be, (size_t)N * C), &error);
  for (int l = 0; l < L; l++) {
    x[l] = be->ops->alloc(be, moelm_act_bytes(be, (size_t)N * C), &error);
    be->ops->copy(be, x[l], moelm_model_ffn_input(dense->model, l), moelm_act_bytes(be, (size_t)N * C));
  }

  /* how sparse the dense FFNs are on these tokens: the share of neurons with fc1(x) > 0 */
  const int F = c->ffn_dim;
  MoelmAct *h = be->ops->alloc(be, moelm_act_bytes(be, (size_t)N * F), &error);
  float *hh = g_new(float, (size_t)N * F);
  printf("dense FFN neurons with fc1(x) > 0 per token, by layer:");
  for (int l = 0; l < L; l++) {
    char *wn = g_strdup_printf("decoder.layers.%d.fc1.weight", l), *bn = g_strdup_printf("decoder.layers.%d.fc1.bias", l);
    const MoelmParam *w = moelm_model_find(dense->model, wn), *b = moelm_model_find(dense->model, bn);
    g_free(wn);
    g_free(bn);
    if (w == NULL || b == NULL)
      return die("dense checkpoint", NULL);
    float *params = moelm_model_params(dense->model);
    be->ops->linear_forward(be, h, x[l], params + w->offset, params + b->offset, N, C, F);
    if (!moelm_backend_act_to_host(be, hh, h, (size_t)N * F, &error))
      return die("staging activations", error);
    size_t pos_n = 0;
    for (size_t i = 0; i < (size_t)N * F; i++)
      pos_n += hh[i] > 0;
    printf(" %.1f%%", 100.0 * (double)pos_n / ((double)N * F));
  }
  printf("\n");
  g_free(hh);
  be->ops->free(be, h);

  /* every configuration in turn, round after round (the machine is shared: a load that comes
   * and goes then hits them all alike), keeping each one's best round; round 0 warms up */
  char **ks = g_strsplit(ks_text, ",", -1);
  const guint nk = g_strv_length(ks), nm = pos->len - 2;
  MoelmInference **mf = g_new0(MoelmInference *, MAX(nm, 1));
  for (guint p = 0; p < nm; p++)
    if ((mf[p] = moelm_inference_open(g_ptr_array_index(pos, p + 2), data, &spec, &error)) == NULL)
      return die("moefied checkpoint", error);
  double base = 1e30, *best = g_new(double, (size_t)MAX(nm, 1) * MAX(nk, 1));
  for (size_t i = 0; i < (size_t)nm * nk; i++)
    best[i] = 1e30;
  for (int r = 0; r <= reps; r++) {
    double t;
    if (!time_ffns(dense->model, x, out, N, &t, &error))
      return die("dense FFN", error);
    if (r > 0)
      base = MIN(base, t);
    for (guint p = 0; p < nm; p++)
      for (guint k = 0; k < nk; k++) {
        if (!moelm_model_set_moefy_top_k(mf[p]->model, atoi(ks[k]), &error) ||
            !time_ffns(mf[p]->model, x, out, N, &t, &error))
          return die(g_ptr_array_index(pos, p + 2), error);
        if (r > 0)
          best[p * nk + k] = MIN(best[p * nk + k], t);
      }
  }
  printf("FFN time of %d layers over %d tokens, best of %d rounds, %s\n\n", L, N, reps, be->description);
  printf("| checkpoint | selection | k/E | FFN ms | speed-up |\n|---|---|---|---|---|\n");
  printf("| %s (dense) | - | - | %.2f | 1.00 |\n", (char *)g_ptr_array_index(pos, 1), 1e3 * base);
  for (guint p = 0; p < nm; p++) {
    const MoelmModelConfig *mc = moelm_model_get_config(mf[p]->model);
    for (guint k = 0; k < nk; k++)
      printf("| %s | %s | %d/%d | %.2f | %.2f |\n", (char *)g_ptr_array_index(pos, p + 2),
             moelm_moefy_select_name(mc->moefy_select), atoi(ks[k]), mc->moefy_experts, 1e3 * best[p * nk + k],
             base / best[p * nk + k]);
    moelm_inference_free(mf[p]);
  }
  g_free(mf);
  g_free(best);
  g_strfreev(ks);
  for (int l = 0; l < L; l++)
    be->ops->free(be, x[l]);
  be->ops->free(be, out);
  g_free(x);
  g_free(src);
  g_free(tgt);
  g_ptr_array_unref(batches);
  moelm_lm_split_free(split);
  moelm_inference_free(dense);
  g_ptr_array_unref(pos);
  return 0;
}
