/* The training loop: resuming equals never stopping, a small model learns the shipped data,
 * and bad inputs fail cleanly without touching the checkpoint directory. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/checkpoint.h"
#include "moelm/dictionary.h"
#include "moelm/indexed_dataset.h"
#include "moelm/log.h"
#include "tasks/trainer.h"

/* A tiny pre-tokenised data-bin made with `moelm preprocess` from the shipped text. */
static char *make_tiny_data(const char *dir, int lines)
{
  char *src = moelm_test_srcpath("data-bin/text/test.txt");
  gsize len = 0;
  char *text = moelm_test_read_file(src, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  char *end = text;
  for (int i = 0; i < lines && end; i++) {
    end = strchr(end, '\n');
    if (end)
      end++;
  }
  char *train = g_build_filename(dir, "train.txt", NULL), *valid = g_build_filename(dir, "valid.txt", NULL);
  moelm_test_write_file(train, text, (gsize)(end - text));
  moelm_test_write_file(valid, text, (gsize)(end - text) / 3);
  char *data = g_build_filename(dir, "data", NULL);
  const char *args[] = {"preprocess", "--only-source", "--trainpref", train, "--validpref", valid, "--destdir", data,
                        NULL};
  char *err = NULL;
  int rc = moelm_test_run_cli(args, NULL, NULL, &err);
  if (rc != 0)
    g_printerr("preprocess: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  g_free(err);
  g_free(train);
  g_free(valid);
  g_free(text);
  g_free(src);
  return data;
}

static void tiny_train_config(MoelmTrainConfig *c, const char *data, const char *save_dir, guint vocab)
{
  moelm_train_config_init(c);
  c->data_dir = g_strdup(data);
  g_free(c->save_dir);
  c->save_dir = g_strdup(save_dir);
  c->tokens_per_sample = 32;
  c->batch_size = 4;
  c->required_multiple = 1;
  c->log_interval = 1000000; /* no train_inner lines */
  c->backend.kind = MOELM_BACKEND_CPU;
  c->backend.threads = 1;
  c->seed = 3;
  c->lr.name = "inverse_sqrt";
  c->lr.lr[0] = 1e-3;
  c->lr.n_lr = 1;
  c->lr.warmup_updates = 4;
  c->lr.warmup_init_lr = 1e-7;
  c->adam.beta2 = 0.98;
  c->no_epoch_checkpoints = TRUE;
  c->model.max_positions = 32;
  CU_ASSERT_TRUE_FATAL(moelm_model_config_set_arch(&c->model, "transformer_lm", NULL));
  c->model.vocab_size = (int)vocab;
  c->model.embed_dim = 16;
  c->model.ffn_dim = 32;
  c->model.layers = 2;
  c->model.heads = 2;
  c->model.dropout = 0.1;
}

static float *read_params(const char *path, gsize *n)
{
  MoelmCheckpoint *ck = moelm_checkpoint_open(path, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ck);
  const MoelmTensorInfo *t = moelm_safetensors_find(ck->st, "decoder.layers.1.fc1.weight");
  CU_ASSERT_PTR_NOT_NULL_FATAL(t);
  *n = (t->end - t->begin) / sizeof(float);
  float *copy = g_memdup2(moelm_safetensors_data(ck->st, t), t->end - t->begin);
  moelm_checkpoint_close(ck);
  return copy;
}

static MoelmDictionary *load_dict(const char *data)
{
  char *p = g_build_filename(data, "dict.txt", NULL);
  MoelmDictionary *d = moelm_dictionary_load(p, NULL);
  g_free(p);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  return d;
}

static void run_to(const char *data, const char *save_dir, int64_t max_update, MoelmDictionary *dict)
{
  MoelmTrainConfig c;
  tiny_train_config(&c, data, save_dir, moelm_dictionary_size(dict));
  c.max_update = max_update;
  MoelmObjective *obj = moelm_lm_objective_new();
  GError *error = NULL;
  MoelmTrainResult res;
  gboolean ok = moelm_train(&c, dict, obj, &res, &error);
  if (!ok)
    g_printerr("train: %s\n", error->message);
  CU_ASSERT_TRUE_FATAL(ok);
  CU_ASSERT_EQUAL(res.num_updates, max_update);
  moelm_objective_free(obj);
  moelm_train_config_clear(&c);
}

/* Stopping mid-epoch and at an epoch end, then resuming, gives the same weights as one run. */
static void test_resume_equals_uninterrupted(void)
{
  char *tmp = moelm_test_tmpdir();
  char *data = make_tiny_data(tmp, 40);
  MoelmDictionary *dict = load_dict(data);
  char *a = g_build_filename(tmp, "a", NULL), *b = g_build_filename(tmp, "b", NULL);
  run_to(data, a, 13, dict);
  run_to(data, b, 5, dict);
  run_to(data, b, 9, dict);
  run_to(data, b, 13, dict);
  char *pa = g_build_filename(a, "checkpoint_last.pt", NULL), *pb = g_build_filename(b, "checkpoint_last.pt", NULL);
  gsize na, nb;
  float *wa = read_params(pa, &na), *wb = read_params(pb, &nb);
  CU_ASSERT_EQUAL_FATAL(na, nb);
  CU_ASSERT_EQUAL(memcmp(wa, wb, na * sizeof(float)), 0);
  /* and training did move the weights away from a fresh start */
  char *c = g_build_filename(tmp, "c", NULL);
  run_to(data, c, 1, dict);
  char *pc = g_build_filename(c, "checkpoint_last.pt", NULL);
  gsize nc;
  float *wc = read_params(pc, &nc);
  CU_ASSERT_NOT_EQUAL(memcmp(wa, wc, na * sizeof(float)), 0);
  g_free(wa);
  g_free(wb);
  g_free(wc);
  g_free(pa);
  g_free(pb);
  g_free(pc);
  g_free(a);
  g_free(b);
  g_free(c);
  moelm_dictionary_free(dict);
  moelm_test_rmtree(tmp);
  g_free(data);
  g_free(tmp);
}

/* Unigram entropy (bits/token) of valid under train's unigram distribution (add-one). */
static double unigram_cross_entropy(const char *data, guint vocab)
{
  double *counts = g_new0(double, vocab);
  double total = vocab;
  char *pt = g_build_filename(data, "train", NULL), *pv = g_build_filename(data, "valid", NULL);
  MoelmIndexedDataset *tr = moelm_indexed_dataset_open(pt, NULL), *va = moelm_indexed_dataset_open(pv, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(tr);
  CU_ASSERT_PTR_NOT_NULL_FATAL(va);
  int32_t *buf = g_new(int32_t, 100000);
  for (gsize i = 0; i < moelm_indexed_dataset_len(tr); i++) {
    moelm_indexed_dataset_get(tr, i, buf);
    for (int k = 0; k < moelm_indexed_dataset_sizes(tr)[i]; k++, total++)
      counts[buf[k]]++;
  }
  double h = 0, n = 0;
  for (gsize i = 0; i < moelm_indexed_dataset_len(va); i++) {
    moelm_indexed_dataset_get(va, i, buf);
    for (int k = 0; k < moelm_indexed_dataset_sizes(va)[i]; k++, n++)
      h -= log2((counts[buf[k]] + 1) / total);
  }
  moelm_indexed_dataset_close(tr);
  moelm_indexed_dataset_close(va);
  g_free(buf);
  g_free(pt);
  g_free(pv);
  g_free(counts);
  return h / n;
}

/* A small model beats the unigram entropy of the shipped data by a wide margin. */
static void test_small_model_learns(void)
{
  char *data = moelm_test_srcpath("data-bin/demo");
  MoelmDictionary *dict = load_dict(data);
  const guint V = moelm_dictionary_size(dict);
  const double unigram = unigram_cross_entropy(data, V);
  char *tmp = moelm_test_tmpdir();
  MoelmTrainConfig c;
  tiny_train_config(&c, data, tmp, V);
  c.tokens_per_sample = 64;
  c.model.max_positions = 64;
  c.model.embed_dim = 64;
  c.model.ffn_dim = 128;
  c.model.share_embed = TRUE;
  c.model.dropout = 0.0;
  c.batch_size = 16;
  c.max_update = 400;
  c.lr.lr[0] = 5e-3;
  c.lr.warmup_updates = 40;
  c.backend.kind = MOELM_BACKEND_CPU;
  c.backend.threads = 2;
  c.no_save = TRUE;
  MoelmObjective *obj = moelm_lm_objective_new();
  MoelmTrainResult res;
  GError *error = NULL;
  gboolean ok = moelm_train(&c, dict, obj, &res, &error);
  if (!ok)
    g_printerr("train: %s\n", error->message);
  CU_ASSERT_TRUE_FATAL(ok);
  g_printerr("\n  unigram %.3f bits, valid %.3f bits after %" G_GINT64_FORMAT " updates ", unigram, res.last_valid_loss,
             res.num_updates);
  CU_ASSERT(res.last_valid_loss < unigram - 1.5);
  moelm_objective_free(obj);
  moelm_train_config_clear(&c);
  moelm_dictionary_free(dict);
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(data);
}

MOELM_TEST_SUITE(trainer)
{
  CU_add_test(suite, "resume from checkpoint_last equals an uninterrupted run", test_resume_equals_uninterrupted);
  CU_add_test(suite, "a small model learns the shipped data", test_small_model_learns);
}
