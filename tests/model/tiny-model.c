/* The tiny decoder and batch shared by the model tests. */
#include "config.h"

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
