/* The tiny decoder and batch shared by the model tests. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/dictionary.h"
#include "tiny-model.h"

void tiny_model_config(MoelmModelConfig *cfg)
{
  memset(cfg, 0, sizeof *cfg);
  cfg->max_positions = 16;
  CU_ASSERT_TRUE_FATAL(moelm_model_config_set_arch(cfg, "transformer_lm", NULL));
  cfg->vocab_size = TV;
  cfg->embed_dim = 8;
  cfg->ffn_dim = 12;
  cfg->layers = 2;
  cfg->heads = 2;
  cfg->activation = MOELM_ACT_GELU;
  cfg->dropout = cfg->attention_dropout = cfg->activation_dropout = 0.0;
}

void tiny_model_batch(int32_t *src, int32_t *tgt, MoelmBatch *batch)
{
  static const int32_t rows[TB][TT] = {{5, 7, 9, 4, 11, 2}, {6, 8, 2, 1, 1, 1}};
  for (int b = 0; b < TB; b++)
    for (int t = 0; t < TT; t++) {
      tgt[b * TT + t] = rows[b][t];
      src[b * TT + t] = t == 0 ? MOELM_EOS : (rows[b][t] == MOELM_PAD ? MOELM_PAD : rows[b][t - 1]);
    }
  batch->B = TB;
  batch->T = TT;
  batch->src = src;
  batch->tgt = tgt;
}

MoelmModel *tiny_model_new(const MoelmModelConfig *cfg, MoelmBackend *be, uint64_t seed)
{
  GError *error = NULL;
  MoelmModel *m = moelm_model_new(cfg, be, &error);
  if (m == NULL)
    g_printerr("\n  %s", error->message);
  g_clear_error(&error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(m);
  moelm_model_init_params(m, seed);
  return m;
}

float tiny_model_full_lprob(MoelmModel *m, const int32_t *seq, int t)
{
  int32_t src[16], tgt[16];
  for (int i = 0; i < t; i++) {
    src[i] = seq[i];
    tgt[i] = seq[i + 1];
  }
  MoelmBatch batch = {1, t, src, tgt};
  float tok[16];
  CU_ASSERT_TRUE_FATAL(moelm_model_score(m, &batch, NULL, tok, NULL, NULL));
  return tok[t - 1];
}

void tiny_model_check_decode(MoelmModel *m)
{
  const int32_t seq[8] = {2, 5, 9, 4, 12, 7, 6, 10};
  MoelmKvCache *kc = moelm_kv_cache_new(m, 1, 8, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(kc);
  float lp[TV];
  CU_ASSERT_TRUE_FATAL(moelm_model_decode(m, kc, seq, 3, lp, NULL)); /* prefill 3 */
  for (int t = 3; t <= 7; t++) {
    CU_ASSERT_DOUBLE_EQUAL(lp[seq[t]], tiny_model_full_lprob(m, seq, t), 1e-4);
    float sum = 0;
    for (int v = 0; v < TV; v++)
      sum += expf(lp[v]);
    CU_ASSERT_DOUBLE_EQUAL(sum, 1.0, 1e-4);
    if (t < 7)
      CU_ASSERT_TRUE_FATAL(moelm_model_decode(m, kc, &seq[t], 1, lp, NULL));
  }
  CU_ASSERT_EQUAL(moelm_kv_cache_len(kc), 7);
  moelm_kv_cache_free(kc);
}

void tiny_model_copy_tensor(MoelmModel *dst, const char *dst_name, MoelmModel *src, const char *src_name)
{
  const MoelmParam *d = moelm_model_find(dst, dst_name), *s = moelm_model_find(src, src_name);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  CU_ASSERT_PTR_NOT_NULL_FATAL(s);
  CU_ASSERT_EQUAL_FATAL(d->numel, s->numel);
  memcpy(moelm_model_params(dst) + d->offset, moelm_model_params(src) + s->offset, d->numel * sizeof(float));
}

void tiny_model_copy_dense_moe(MoelmModel *dense, MoelmModel *moe, int e0, int e1, gboolean to_moe)
{
  for (guint i = 0; i < moelm_model_n_tensors(dense); i++) {
    const char *name = moelm_model_tensor(dense, i)->name;
    if (moelm_model_find(moe, name)) {
      if (to_moe)
        tiny_model_copy_tensor(moe, name, dense, name);
      else
        tiny_model_copy_tensor(dense, name, moe, name);
      continue;
    }
    int l = -1;
    char part[32];
    CU_ASSERT_EQUAL_FATAL(sscanf(name, "decoder.layers.%d.%31s", &l, part), 2);
    for (int e = e0; e < (to_moe ? e1 : e0 + 1); e++) {
      char *expert = g_strdup_printf("decoder.layers.%d.moe_layer.experts.%d.%s", l, e, part);
      if (to_moe)
        tiny_model_copy_tensor(moe, expert, dense, name);
      else
        tiny_model_copy_tensor(dense, name, moe, expert);
      g_free(expert);
    }
  }
}
