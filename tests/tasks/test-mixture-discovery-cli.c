/* `moelm train --task language_model_moe --domain-discovery` end to end: validation logs the
 * posterior mass per expert and, with DATA/valid.domains, the domain accuracy; the checkpoint
 * records the settings and eval-lm's --mixture-report assigns by the same rule; a label file
 * that does not fit, and options that contradict each other, fail before training;
 * --mixture-expert-ffn trains, evaluates and generates with one FFN per expert. */
#include "config.h"

#include <string.h>

#include "moelm-test.h"

typedef struct {
  char *dir, *data, *labels;
} Data;

/* The first 30 documents of the shipped valid split (train = valid = test) and their labels. */
static void data_init(Data *d)
{
  d->dir = moelm_test_tmpdir();
  char *src = moelm_test_srcpath("data-bin/text/valid.txt"), *lsrc = moelm_test_srcpath("data-bin/text/valid.domains");
  char *text = moelm_test_read_file(src, NULL), *labels = moelm_test_read_file(lsrc, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  CU_ASSERT_PTR_NOT_NULL_FATAL(labels);
  gchar **docs = g_strsplit(text, "\n\n", 31), **names = g_strsplit(labels, "\n", 31);
  GString *t = g_string_new(NULL), *l = g_string_new(NULL);
  for (int i = 0; i < 30; i++) {
    g_string_append_printf(t, "%s%s\n", i ? "\n" : "", docs[i]);
    g_string_append_printf(l, "%s\n", names[i]);
  }
  char *txt = g_build_filename(d->dir, "text.txt", NULL);
  moelm_test_write_file(txt, t->str, t->len);
  d->data = g_build_filename(d->dir, "data", NULL);
  const char *pre[] = {"preprocess", "--only-source", "--trainpref", txt, "--validpref", txt, "--destdir", d->data,
                       NULL};
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(pre, NULL, NULL, NULL), 0);
  d->labels = g_build_filename(d->data, "valid.domains", NULL);
  moelm_test_write_file(d->labels, l->str, l->len);
  g_free(txt);
  g_string_free(t, TRUE);
  g_string_free(l, TRUE);
  g_strfreev(docs);
  g_strfreev(names);
  g_free(text);
  g_free(labels);
  g_free(src);
  g_free(lsrc);
}

static void data_clear(Data *d)
{
  moelm_test_rmtree(d->dir);
  g_free(d->dir);
  g_free(d->data);
  g_free(d->labels);
}

static int train(const Data *d, const char *save, const char *const *extra, char **err)
{
  const char *base[] = {"train", d->data, "--task", "language_model_moe", "--num-experts", "2", "--arch",
                        "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "16",
                        "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2", "--tokens-per-sample", "32",
                        "--sample-break-mode", "complete_doc", "--batch-size", "4", "--lr", "0.001", "--max-update", "4",
                        "--threads", "1", "--no-epoch-checkpoints", "--save-dir", save, NULL};
  return moelm_test_run_cli2(base, extra, NULL, NULL, err);
}

/* The "domain NAME (N documents): expert 0 a, expert 1 b, ..." lines: one per label of the
 * file, in order of first appearance, a + b + ... = N, and the N add up to the documents. */
static void check_domain_table(const char *out, const char *label_path)
{
  char *labels = moelm_test_read_file(label_path, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(labels);
  gchar **lines = g_strsplit(labels, "\n", -1);
  GPtrArray *names = g_ptr_array_new();
  int n_docs = 0;
  for (gchar **l = lines; *l && **l; l++, n_docs++) {
    gboolean seen = FALSE;
    for (guint i = 0; i < names->len; i++)
      seen |= strcmp(g_ptr_array_index(names, i), *l) == 0;
    if (!seen)
      g_ptr_array_add(names, *l);
  }
  int64_t total = 0;
  const char *from = out;
  for (guint i = 0; i < names->len; i++) {
    char *head = g_strdup_printf("| domain %s (", (char *)g_ptr_array_index(names, i));
    const char *p = strstr(from, head);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    from = p;
    p += strlen(head);
    const int64_t n = g_ascii_strtoll(p, NULL, 10);
    int64_t sum = 0;
    const char *eol = strchr(p, '\n');
    for (const char *e = strstr(p, "expert "); e && e < eol; e = strstr(e + 1, "expert ")) {
      const char *num = strchr(e + strlen("expert "), ' ');
      sum += g_ascii_strtoll(num + 1, NULL, 10);
    }
    CU_ASSERT_EQUAL(sum, n);
    total += n;
    g_free(head);
  }
  CU_ASSERT_EQUAL(total, n_docs);
  g_ptr_array_free(names, TRUE);
  g_strfreev(lines);
  g_free(labels);
}

static void test_discovery_end_to_end(void)
{
  Data d;
  data_init(&d);
  char *save = g_build_filename(d.dir, "dd", NULL), *err = NULL;
  CU_ASSERT_EQUAL_FATAL(train(&d, save, (const char *const[]){"--method", "hMoEup", "--domain-discovery", NULL}, &err), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "(--mixture-expert-ffn 1, chosen by --domain-discovery)"));
  const char *valid = strstr(err, "valid on 'valid' subset");
  CU_ASSERT_PTR_NOT_NULL_FATAL(valid);
  CU_ASSERT_PTR_NOT_NULL(strstr(valid, "| expert_mass "));
  CU_ASSERT_PTR_NOT_NULL(strstr(valid, "| domain_acc 0."));
  CU_ASSERT_PTR_NOT_NULL(strstr(valid, "| domain_acc_per_domain "));
  g_free(err);
  char *ckpt = g_build_filename(save, "checkpoint_last.pt", NULL);
  gsize len = 0;
  char *bytes = moelm_test_read_file(ckpt, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bytes);
  CU_ASSERT_PTR_NOT_NULL(g_strstr_len(bytes + 8, MIN(len, 65536) - 8, "\\\"discovery\\\":{\\\"estep\\\":\\\"document\\\""));
  /* the switch's choice: the first 200 updates on the documents' auto clusters */
  CU_ASSERT_PTR_NOT_NULL(g_strstr_len(bytes + 8, MIN(len, 65536) - 8, "\\\"init\\\":\\\"auto\\\""));
  CU_ASSERT_PTR_NOT_NULL(g_strstr_len(bytes + 8, MIN(len, 65536) - 8, "\\\"init_updates\\\":200"));
  /* and one FFN per expert (sequence routing by the expert token) */
  CU_ASSERT_PTR_NOT_NULL(g_strstr_len(bytes + 8, MIN(len, 65536) - 8, "\\\"moe_route_expert_token0\\\":"));
  g_free(bytes);
  /* eval-lm assigns whole documents, as training did, and scores them against the labels */
  const char *ev[] = {"eval-lm", d.data, "--path", ckpt, "--gen-subset", "valid", "--mixture-report", "--threads", "1",
                      NULL};
  char *out = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(ev, NULL, &out, NULL), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "assigned by training's rule (whole documents): expert 0 "));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "domain accuracy (documents by their posterior"));
  check_domain_table(out, d.labels);
  g_free(out);
  g_free(ckpt);
  g_free(save);

  /* fairseq's method with no option: block rows, no "discovery" metadata, still the report */
  save = g_build_filename(d.dir, "faithful", NULL);
  CU_ASSERT_EQUAL_FATAL(train(&d, save, (const char *const[]){"--method", "sMoEup", NULL}, &err), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "| domain_acc "));
  g_free(err);
  ckpt = g_build_filename(save, "checkpoint_last.pt", NULL);
  bytes = moelm_test_read_file(ckpt, &len);
  CU_ASSERT_PTR_NULL(g_strstr_len(bytes + 8, MIN(len, 65536) - 8, "discovery"));
  g_free(bytes);
  ev[3] = ckpt;
  CU_ASSERT_EQUAL(moelm_test_run_cli(ev, NULL, &out, NULL), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "assigned by training's rule (blocks): expert 0 "));
  g_free(out);
  g_free(ckpt);
  g_free(save);
  data_clear(&d);
}

/* The sum of the expert_mass values after `from` (its line's), or -1 when there are none. */
static double mass_sum(const char *from, const char *kv)
{
  const char *p = strstr(from, kv);
  if (p == NULL)
    return -1;
  double sum = 0;
  for (char *e = (char *)p + strlen(kv);; e++) {
    sum += g_ascii_strtod(e, &e);
    if (*e != ',')
      break;
  }
  return sum;
}

/* Every train_inner line and the epoch's train line report the posterior mass of the blocks
 * they cover (the epoch line all of the epoch's, not what is left after the last inner line). */
static void test_train_lines_mass(void)
{
  Data d;
  data_init(&d);
  char *save = g_build_filename(d.dir, "mass", NULL), *err = NULL;
  CU_ASSERT_EQUAL_FATAL(
    train(&d, save, (const char *const[]){"--method", "hMoEup", "--log-interval", "2", NULL}, &err), 0);
  int inner = 0;
  for (const char *p = strstr(err, "| train_inner |"); p; p = strstr(p + 1, "| train_inner |"), inner++)
    CU_ASSERT_DOUBLE_EQUAL(mass_sum(p, "expert_mass="), 1.0, 0.01);
  CU_ASSERT_EQUAL(inner, 2);
  const char *epoch = strstr(err, "| train | epoch 001 |");
  CU_ASSERT_PTR_NOT_NULL_FATAL(epoch);
  CU_ASSERT_DOUBLE_EQUAL(mass_sum(epoch, "| expert_mass "), 1.0, 0.01);
  g_free(err);
  g_free(save);
  data_clear(&d);
}

/* The parameter count eval-lm logs for a checkpoint (-1 when absent). */
static long long eval_params(const Data *d, const char *ckpt, char **out)
{
  const char *ev[] = {"eval-lm", d->data, "--path", ckpt, "--gen-subset", "valid", "--mixture-report", "--threads", "1",
                      NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(ev, NULL, out, NULL), 0);
  const char *p = *out ? strstr(*out, "num. model params: ") : NULL;
  return p ? g_ascii_strtoll(p + strlen("num. model params: "), NULL, 10) : -1;
}

/* --mixture-expert-ffn 1: every layer's FFN once per expert (K = 2 here: one more FFN of
 * 16x32 and 32x16 with biases, and the unused 2x16 gate), no gate metadata in the log;
 * eval-lm and generate use the expert FFNs. */
static void test_expert_ffn(void)
{
  Data d;
  data_init(&d);
  char *shared = g_build_filename(d.dir, "shared", NULL), *own = g_build_filename(d.dir, "own", NULL), *err = NULL;
  CU_ASSERT_EQUAL_FATAL(train(&d, shared, (const char *const[]){"--method", "hMoEup", NULL}, &err), 0);
  g_free(err);
  CU_ASSERT_EQUAL_FATAL(
    train(&d, own, (const char *const[]){"--method", "hMoEup", "--mixture-expert-ffn", "1", "--log-interval", "2", NULL},
          &err),
    0);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "expert_mass="));
  CU_ASSERT_PTR_NULL(strstr(err, "moe_gate_loss")); /* no gate to report on */
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "mixture: one FFN per expert (2) in 1 of the 1 decoder layers (--mixture-expert-ffn 1)"));
  g_free(err);
  char *c_shared = g_build_filename(shared, "checkpoint_last.pt", NULL), *c_own = g_build_filename(own, "checkpoint_last.pt", NULL);
  char *out = NULL;
  const long long n_shared = eval_params(&d, c_shared, &out);
  g_free(out);
  const long long n_own = eval_params(&d, c_own, &out);
  CU_ASSERT_EQUAL(n_own - n_shared, 16 * 32 + 32 + 32 * 16 + 16 + 2 * 16);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "expert 1 alone") : NULL);
  g_free(out);
  const char *gen[] = {"generate", d.data, "--path", c_own, "--gen-expert", "1", "--max-len-b", "6", "--threads", "1",
                       NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(gen, "the\n", &out, NULL), 0);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "H-0\t") : NULL);
  g_free(out);
  /* resuming with other MoE layers than the checkpoint's: one line naming the options, the
   * checkpoint untouched; with the same options it goes on */
  gsize len_before = 0, len_after = 0;
  char *before = moelm_test_read_file(c_own, &len_before);
  CU_ASSERT_EQUAL(train(&d, own, (const char *const[]){"--method", "hMoEup", "--max-update", "6", NULL}, &err), 1);
  CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, "the checkpoint's model has one FFN per expert (--mixture-expert-ffn 1) "
                                           "but this run's has no MoE layers")
                             : NULL);
  g_free(err);
  char *after = moelm_test_read_file(c_own, &len_after);
  CU_ASSERT(before && after && len_before == len_after && memcmp(before, after, len_before) == 0);
  g_free(after);
  CU_ASSERT_EQUAL(
    train(&d, shared, (const char *const[]){"--method", "hMoEup", "--mixture-expert-ffn", "1", "--max-update", "6", NULL},
          &err),
    1);
  CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, "has no MoE layers but this run's has one FFN per expert") : NULL);
  g_free(err);
  CU_ASSERT_EQUAL(
    train(&d, own, (const char *const[]){"--method", "hMoEup", "--mixture-expert-ffn", "1", "--max-update", "6", NULL},
          &err),
    0);
  CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, "num_updates 6") : NULL);
  g_free(err);
  g_free(before);
  /* --domain-discovery on a model with token-level MoE layers keeps their gate */
  char *tok = g_build_filename(d.dir, "token-moe", NULL);
  CU_ASSERT_EQUAL(train(&d, tok,
                        (const char *const[]){"--method", "hMoEup", "--domain-discovery", "--moe-freq", "1",
                                              "--moe-expert-count", "2", "--log-interval", "2", NULL},
                        &err),
                  0);
  CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, "moe_gate_loss=") : NULL);
  g_free(err);
  g_free(tok);
  g_free(c_shared);
  g_free(c_own);
  g_free(shared);
  g_free(own);
  data_clear(&d);
}

/* Exit `status` with one error line naming `needle`, nothing written. */
static void check_fails(const Data *d, const char *const *extra, int status, const char *needle)
{
  char *save = g_build_filename(d->dir, "bad", NULL), *err = NULL;
  CU_ASSERT_EQUAL(train(d, save, extra, &err), status);
  if (err == NULL || strstr(err, needle) == NULL)
    g_printerr("\n  stderr was: %s (expected \"%s\")\n", err ? err : "(none)", needle);
  int lines = 0; /* the error is one line */
  for (const char *p = err ? strstr(err, "moelm train: error:") : NULL; p; p = strstr(p + 1, "moelm train: error:"))
    lines++;
  CU_ASSERT_EQUAL(lines, 1);
  CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, needle) : NULL);
  CU_ASSERT_FALSE(g_file_test(save, G_FILE_TEST_EXISTS));
  g_free(err);
  g_free(save);
}

static void test_discovery_errors(void)
{
  Data d;
  data_init(&d);
  check_fails(&d, (const char *const[]){"--method", "sMoEup", "--mixture-balance", "2", NULL}, 1,
              "--mixture-balance needs a hard --method");
  check_fails(&d, (const char *const[]){"--method", "hMoEup", "--mixture-balance", "0.5", NULL}, 1,
              "--mixture-balance must be 0 (off) or at least 1");
  check_fails(&d, (const char *const[]){"--method", "hMoEup", "--mixture-temperature", "2", NULL}, 1,
              "--mixture-temperature needs --mixture-anneal-updates");
  check_fails(&d, (const char *const[]){"--method", "hMoEup", "--mixture-estep", "page", NULL}, 2, "--mixture-estep");
  check_fails(&d, (const char *const[]){"--method", "hMoEup", "--mixture-expert-ffn", "2", NULL}, 1,
              "the model has only 1 decoder layers");
  check_fails(&d, (const char *const[]){"--method", "hMoEup", "--mixture-expert-ffn", "-1", NULL}, 1,
              "--mixture-expert-ffn must be in [0, ");
  check_fails(&d,
              (const char *const[]){"--method", "hMoEup", "--mixture-expert-ffn", "1", "--moe-freq", "1",
                                    "--moe-expert-count", "2", NULL},
              1, "it does not combine with token-level MoE");
  moelm_test_write_file(d.labels, "licence\nfortune\n", 16);
  check_fails(&d, (const char *const[]){"--method", "hMoEup", NULL}, 1,
              "valid.domains: 2 labels, but the split has 30 documents");
  data_clear(&d);
}

MOELM_TEST_SUITE(mixture_discovery_cli)
{
  CU_add_test(suite, "--domain-discovery: valid log, checkpoint, eval-lm report", test_discovery_end_to_end);
  CU_add_test(suite, "bad labels and contradicting options fail before training", test_discovery_errors);
  CU_add_test(suite, "--mixture-expert-ffn: train, eval-lm, generate with one FFN per expert", test_expert_ffn);
  CU_add_test(suite, "train_inner and epoch lines report the expert mass of their blocks", test_train_lines_mass);
}
