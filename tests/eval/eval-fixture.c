/* Fixtures for the eval-lm suites. */
#include "config.h"

#include <string.h>

#include "eval-fixture.h"
#include "moelm-test.h"
#include "moelm/indexed_dataset.h"

void eval_fixture_init(EvalFixture *f, int sentences, int max_len, int max_positions, guint32 seed)
{
  memset(f, 0, sizeof *f);
  f->dir = moelm_test_tmpdir();
  f->dict = moelm_dictionary_new();
  for (int w = 0; w < FIXTURE_WORDS; w++) {
    char word[8];
    g_snprintf(word, sizeof word, "w%02d", w);
    moelm_dictionary_add_symbol(f->dict, word, 100 - w, FALSE);
  }
  char *dict_path = g_build_filename(f->dir, "dict.txt", NULL);
  CU_ASSERT_TRUE_FATAL(moelm_dictionary_save(f->dict, dict_path, NULL));
  g_free(dict_path);

  char *prefix = g_build_filename(f->dir, "test", NULL);
  MoelmIndexedDatasetBuilder *b = moelm_indexed_dataset_builder_new(prefix, MOELM_IDX_UINT16, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  GRand *rand = g_rand_new_with_seed(seed);
  GArray *all = g_array_new(FALSE, FALSE, sizeof(int32_t));
  int32_t *seq = g_new(int32_t, max_len);
  for (int s = 0; s < sentences; s++) {
    const int n = g_rand_int_range(rand, 0, 8) == 0 ? 1 : g_rand_int_range(rand, 1, max_len + 1);
    for (int k = 0; k < n - 1; k++)
      seq[k] = MOELM_NSPECIAL + g_rand_int_range(rand, 0, FIXTURE_WORDS);
    seq[n - 1] = MOELM_EOS;
    CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_add(b, seq, (gsize)n, NULL));
    g_array_append_vals(all, seq, (guint)n);
  }
  CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_finish(b, NULL));
  f->ntokens = all->len;
  f->stream = (int32_t *)g_array_free(all, FALSE);
  g_free(seq);
  g_rand_free(rand);
  g_free(prefix);

  MoelmModelConfig cfg;
  memset(&cfg, 0, sizeof cfg);
  CU_ASSERT_TRUE_FATAL(moelm_model_config_set_arch(&cfg, "transformer_lm", NULL));
  cfg.vocab_size = (int)moelm_dictionary_size(f->dict);
  cfg.embed_dim = 16;
  cfg.ffn_dim = 32;
  cfg.layers = 2;
  cfg.heads = 2;
  cfg.max_positions = max_positions;
  cfg.dropout = cfg.attention_dropout = cfg.activation_dropout = 0.0;
  f->be = moelm_backend_cpu_new(FALSE, 1, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f->be);
  f->model = moelm_model_new(&cfg, f->be, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f->model);
  moelm_model_init_params(f->model, seed);
  moelm_model_config_clear(&cfg);
}

void eval_fixture_clear(EvalFixture *f)
{
  moelm_model_free(f->model);
  moelm_backend_free(f->be);
  moelm_dictionary_free(f->dict);
  moelm_test_rmtree(f->dir);
  g_free(f->dir);
  g_free(f->stream);
  memset(f, 0, sizeof *f);
}
