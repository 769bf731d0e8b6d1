/* Token-level MoE end to end: `moelm train --moe-freq 2 --moe-expert-count 4` for 3 updates
 * logs the gate metadata and writes a checkpoint that `moelm eval-lm` and `moelm generate`
 * run on; the sequence mixture trains with MoE layers too; bad MoE options are one-line errors. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"

static int run(const char *const *args, const char *input, char **out, char **err)
{
  char *o = NULL, *e = NULL;
  int rc = moelm_test_run_cli(args, input, &o, &e);
  if (rc != 0)
    g_printerr("\n  moelm %s exited %d: %s", args[0], rc, e ? e : "");
  if (out)
    *out = o;
  else
    g_free(o);
  if (err)
    *err = e;
  else
    g_free(e);
  return rc;
}

/* `moelm train` on the shipped demo data-bin with a tiny MoE transformer_lm. */
static int train(const char *data, const char *save, const char *const *extra, char **err)
{
  GPtrArray *a = g_ptr_array_new();
  const char *base[] = {"train", data, "--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim", "16",
                        "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2", "--tokens-per-sample", "32",
                        "--batch-size", "4", "--lr", "0.001", "--max-update", "3", "--save-dir", save, "--threads", "1",
                        "--no-epoch-checkpoints", "--log-interval", "1", "--disable-validation",
                        "--moe-freq", "2", "--moe-expert-count", "4"};
  for (gsize i = 0; i < G_N_ELEMENTS(base); i++)
    g_ptr_array_add(a, (gpointer)base[i]);
  for (; extra && *extra; extra++)
    g_ptr_array_add(a, (gpointer)*extra);
  g_ptr_array_add(a, NULL);
  const int rc = run((const char *const *)a->pdata, NULL, NULL, err);
  g_ptr_array_free(a, TRUE);
  return rc;
}

static void test_train_eval_generate(void)
{
  char *tmp = moelm_test_tmpdir();
  char *data = moelm_test_srcpath("data-bin/demo");
  char *save = g_build_filename(tmp, "ckpt", NULL);
  char *err = NULL;
  CU_ASSERT_EQUAL_FATAL(train(data, save, NULL, &err), 0);
  /* fairseq's MoECriterion fields in its order: loss (NLL + weighted gate loss), the gate
   * loss and the metadata averaged over the MoE layers, then inner_loss (the NLL) and ppl */
  const char *line = strstr(err, "| train_inner | epoch 001:");
  CU_ASSERT_PTR_NOT_NULL_FATAL(line);
  double loss = 0, gate = 0, inner = 0, ppl = 0;
  const char *p = strstr(line, " loss=");
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  CU_ASSERT_EQUAL(sscanf(p, " loss=%lf, moe_gate_loss=%lf, overflow_expert1=", &loss, &gate), 2);
  const char *q = strstr(p, ", overflow_expert1=");
  const char *fields[] = {", overflow_expert2=", ", entropy_gating=", ", unused_expert1_count=",
                          ", expert1_balance_top=", ", expert1_balance_bottom=", ", inner_loss=", ", ppl=", ", wps="};
  for (gsize i = 0; i < G_N_ELEMENTS(fields) && q; i++) {
    const char *next = strstr(q, fields[i]);
    CU_ASSERT_PTR_NOT_NULL(next);
    q = next;
  }
  p = strstr(p, ", inner_loss=");
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  CU_ASSERT_EQUAL(sscanf(p, ", inner_loss=%lf, ppl=%lf", &inner, &ppl), 2);
  /* loss = inner_loss + 0.01 * moe_gate_loss / ln 2 (to the printed rounding) */
  CU_ASSERT_DOUBLE_EQUAL(loss, inner + 0.01 * gate / M_LN2, 2e-3);
  CU_ASSERT_TRUE(gate > 0);
  CU_ASSERT_DOUBLE_EQUAL(ppl, pow(2.0, inner), 0.02 * ppl);
  /* and moelm's per-layer metadata at the end (layer 1 is the MoE layer) */
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "layer1_overflow_expert1="));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "layer1_entropy_gating="));
  CU_ASSERT_PTR_NULL(strstr(err, "layer0_"));
  /* the epoch's line: the metadata over the whole epoch (here the mean of the 3 inner lines,
   * one update each), not what is left after the last inner line */
  double sum = 0, epoch_gate = -1;
  int lines = 0;
  for (const char *l = strstr(err, "| train_inner |"); l; l = strstr(l + 1, "| train_inner |"), lines++) {
    const char *g = strstr(l, "moe_gate_loss=");
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    sum += g_ascii_strtod(g + strlen("moe_gate_loss="), NULL);
  }
  CU_ASSERT_EQUAL(lines, 3);
  const char *epoch = strstr(err, "| train | epoch 001 |");
  CU_ASSERT_PTR_NOT_NULL_FATAL(epoch);
  const char *g = strstr(epoch, "| moe_gate_loss ");
  CU_ASSERT_PTR_NOT_NULL_FATAL(g);
  epoch_gate = g_ascii_strtod(g + strlen("| moe_gate_loss "), NULL);
  CU_ASSERT_DOUBLE_EQUAL(epoch_gate, sum / 3, 1e-4);
  CU_ASSERT_PTR_NOT_NULL(strstr(epoch, "| inner_loss "));
  CU_ASSERT_PTR_NOT_NULL(strstr(epoch, "| layer1_entropy_gating "));
  g_free(err);
  char *ckpt = g_build_filename(save, "checkpoint_last.pt", NULL);

  const char *eval[] = {"eval-lm", data, "--path", ckpt, "--gen-subset", "valid", "--threads", "1", NULL};
  char *out = NULL;
  CU_ASSERT_EQUAL(run(eval, NULL, &out, &err), 0);
  CU_ASSERT(out && strstr(out, "Perplexity: "));
  g_free(out);
  g_free(err);

  const char *gen[] = {"generate", data, "--path", ckpt, "--max-len-b", "8", "--threads", "1", NULL};
  CU_ASSERT_EQUAL(run(gen, "hello world\n", &out, &err), 0);
  CU_ASSERT(out && strstr(out, "H-0\t"));
  g_free(out);
  g_free(err);
  g_free(ckpt);
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(save);
  g_free(data);
}

/* The sequence mixture (soft, learned prior: posterior-weighted rows) through MoE layers,
 * top-1 and dropless, and eval-lm's mixture marginal on its checkpoint. */
static void test_mixture_with_moe(void)
{
  char *tmp = moelm_test_tmpdir();
  char *data = moelm_test_srcpath("data-bin/demo");
  char *save = g_build_filename(tmp, "ckpt", NULL);
  const char *extra[] = {"--task", "language_model_moe", "--method", "sMoElp", "--num-experts", "2", "--mean-pool-gating-network",
                         "--moe-top1-expert", "--moe-dropless", NULL};
  char *err = NULL;
  CU_ASSERT_EQUAL(train(data, save, extra, &err), 0);
  CU_ASSERT(err && strstr(err, "layer1_moe_gate_loss="));
  CU_ASSERT(err && !strstr(err, "layer1_overflow_expert2")); /* top-1: no second expert */
  g_free(err);
  /* the mixture's exact marginal through MoE layers */
  char *ckpt = g_build_filename(save, "checkpoint_last.pt", NULL);
  const char *eval[] = {"eval-lm", data, "--path", ckpt, "--gen-subset", "valid", "--threads", "1", NULL};
  char *out = NULL;
  CU_ASSERT_EQUAL(run(eval, NULL, &out, &err), 0);
  CU_ASSERT(out && strstr(out, "Perplexity: "));
  g_free(out);
  g_free(err);
  g_free(ckpt);
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(save);
  g_free(data);
}

static void test_bad_options(void)
{
  char *tmp = moelm_test_tmpdir();
  char *data = moelm_test_srcpath("data-bin/demo");
  char *save = g_build_filename(tmp, "ckpt", NULL);
  static const struct {
    const char *opt, *value, *needle;
  } cases[] = {
      {"--moe-top-k", "3", "--moe-top-k must be 1 or 2"},
      {"--moe-second-expert-policy", "best", "--moe-second-expert-policy"},
      {"--moe-capacity-factor", "0", "--moe-capacity-factor must be positive"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    const char *extra[] = {cases[i].opt, cases[i].value, NULL};
    char *o = NULL, *e = NULL;
    GPtrArray *a = g_ptr_array_new();
    const char *base[] = {"train", data, "--batch-size", "4", "--save-dir", save, "--moe-freq", "2",
                          "--moe-expert-count", "4", "--tokens-per-sample", "32", "--max-update", "1"};
    for (gsize k = 0; k < G_N_ELEMENTS(base); k++)
      g_ptr_array_add(a, (gpointer)base[k]);
    g_ptr_array_add(a, (gpointer)extra[0]);
    g_ptr_array_add(a, (gpointer)extra[1]);
    g_ptr_array_add(a, NULL);
    const int rc = moelm_test_run_cli((const char *const *)a->pdata, NULL, &o, &e);
    CU_ASSERT(rc != 0);
    CU_ASSERT(e && strstr(e, cases[i].needle));
    if (e && !strstr(e, cases[i].needle))
      g_printerr("\n  %s %s: %s", cases[i].opt, cases[i].value, e);
    /* one error line */
    const char *first = e ? strstr(e, "error:") : NULL;
    CU_ASSERT(first && strstr(first + 1, "error:") == NULL);
    g_ptr_array_free(a, TRUE);
    g_free(o);
    g_free(e);
  }
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(save);
  g_free(data);
}

MOELM_TEST_SUITE(moe_cli)
{
  CU_add_test(suite, "train 3 updates, eval-lm and generate on the checkpoint", test_train_eval_generate);
  CU_add_test(suite, "sequence mixture with MoE layers", test_mixture_with_moe);
  CU_add_test(suite, "bad MoE options: one-line errors", test_bad_options);
}
