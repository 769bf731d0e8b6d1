/* MoEfication's construction (tasks/moefy*.c, docs/moefy.md): balanced k-means and the METIS
 * co-activation split are balanced, cover every neuron once and find planted structure; the
 * rebalancing keeps strong ties; the MLP router's loss falls and it ranks experts; and
 * `moelm moefy` end to end: with k = E eval-lm gives the dense model's loss for every split and
 * selector, the checkpoint's partitions are permutations of the neurons, --moefy-top-k trades
 * experts for loss, generate runs, and bad arguments are one-line errors that write nothing. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/checkpoint.h"
#include "tasks/moefy.h"
#include "tasks/moefy_split.h"

static float uniform(void) { return (float)rand() / RAND_MAX - 0.5f; }

/* Whether every expert holds neurons of one planted group only (group of neuron i: group[i]). */
static gboolean recovers(const int32_t *expert_of, const int *group, int F, int E)
{
  for (int e = 0; e < E; e++) {
    int g = -1;
    for (int i = 0; i < F; i++)
      if (expert_of[i] == e) {
        if (g >= 0 && group[i] != g)
          return FALSE;
        g = group[i];
      }
  }
  return TRUE;
}

static void test_param_cluster(void)
{
  enum { F = 48, C = 6, E = 4 };
  float rows[F * C];
  int group[F];
  int32_t expert_of[F];
  srand(1);
  /* four planted directions, twelve noisy (and differently scaled) copies of each, interleaved */
  float dir[E][C];
  for (int e = 0; e < E; e++)
    for (int c = 0; c < C; c++)
      dir[e][c] = uniform();
  for (int i = 0; i < F; i++) {
    group[i] = (i * 7) % E;
    const float scale = 0.5f + (float)(i % 5);
    for (int c = 0; c < C; c++)
      rows[i * C + c] = scale * (dir[group[i]][c] + 0.05f * uniform());
  }
  GError *error = NULL;
  CU_ASSERT_TRUE(moelm_moefy_param_cluster(rows, F, C, E, 30, 1, expert_of, &error));
  CU_ASSERT_TRUE(moelm_moefy_partition_check(expert_of, F, E, NULL));
  CU_ASSERT_TRUE(recovers(expert_of, group, F, E));
  /* random rows: still exactly balanced, every neuron once */
  for (int i = 0; i < F * C; i++)
    rows[i] = uniform();
  for (int e = 1; e <= F; e *= 2)
    if (F % e == 0) {
      CU_ASSERT_TRUE(moelm_moefy_param_cluster(rows, F, C, e, 30, 3, expert_of, NULL));
      CU_ASSERT_TRUE(moelm_moefy_partition_check(expert_of, F, e, NULL));
    }
  CU_ASSERT_TRUE(moelm_moefy_param_cluster(rows, F, C, F, 5, 3, expert_of, NULL)); /* one neuron each */
  CU_ASSERT_FALSE(moelm_moefy_param_cluster(rows, F, C, 5, 30, 1, expert_of, &error));
  MOELM_ASSERT_ERROR(error, "5 experts cannot split 48 neurons evenly");
  g_clear_error(&error);
  /* the check itself fails on a bad partition */
  for (int i = 0; i < F; i++)
    expert_of[i] = i % E;
  expert_of[0] = 1;
  CU_ASSERT_FALSE(moelm_moefy_partition_check(expert_of, F, E, &error));
  MOELM_ASSERT_ERROR(error, "expert 0 holds 11 neurons instead of 12");
  g_clear_error(&error);
  int32_t perm[F];
  for (int i = 0; i < F; i++)
    expert_of[i] = (i * 5) % E;
  moelm_moefy_partition_order(expert_of, F, E, perm);
  for (int p = 0; p < F; p++)
    CU_ASSERT_EQUAL(expert_of[perm[p]], p / (F / E));
}

/* A block graph: strong edges inside the planted groups, weak noise across. */
static void block_graph(float *adj, const int *group, int F)
{
  for (int i = 0; i < F; i++)
    for (int j = 0; j <= i; j++) {
      const float w = i == j ? 99.0f : group[i] == group[j] ? 20.0f + (float)(rand() % 10) : (float)(rand() % 3);
      adj[i * F + j] = adj[j * F + i] = w;
    }
}

static void test_coactivation_split(void)
{
  enum { F = 32, E = 4 };
  float adj[F * F];
  int group[F];
  int32_t expert_of[F];
  srand(2);
  for (int i = 0; i < F; i++)
    group[i] = (i * 3) % E;
  block_graph(adj, group, F);
  GError *error = NULL;
  if (!moelm_moefy_require_metis(NULL)) { /* a build without METIS says what to install */
    CU_ASSERT_FALSE(moelm_moefy_coactivation_split(adj, F, E, 1, expert_of, &error));
    MOELM_ASSERT_ERROR(error, "install libmetis-dev");
    g_clear_error(&error);
    return;
  }
  CU_ASSERT_TRUE(moelm_moefy_coactivation_split(adj, F, E, 1, expert_of, &error));
  CU_ASSERT_TRUE(moelm_moefy_partition_check(expert_of, F, E, NULL));
  CU_ASSERT_TRUE(recovers(expert_of, group, F, E));
  CU_ASSERT_TRUE(moelm_moefy_coactivation_split(adj, F, 1, 1, expert_of, NULL));
  CU_ASSERT_TRUE(moelm_moefy_coactivation_split(adj, F, 8, 1, expert_of, NULL));
  CU_ASSERT_TRUE(moelm_moefy_partition_check(expert_of, F, 8, NULL));
  memset(adj, 0, sizeof adj); /* no co-activation at all: still a balanced split */
  CU_ASSERT_TRUE(moelm_moefy_coactivation_split(adj, F, E, 1, expert_of, NULL));
  CU_ASSERT_TRUE(moelm_moefy_partition_check(expert_of, F, E, NULL));
}

static void test_rebalance(void)
{
  enum { F = 12, E = 2 };
  float adj[F * F];
  int group[F];
  srand(3);
  for (int i = 0; i < F; i++)
    group[i] = i < 6 ? 0 : 1;
  block_graph(adj, group, F);
  /* part 0 holds group 0 and two of group 1; part 1 the other four */
  int32_t expert_of[F] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1};
  moelm_moefy_rebalance(adj, F, E, expert_of);
  CU_ASSERT_TRUE(moelm_moefy_partition_check(expert_of, F, E, NULL));
  for (int i = 0; i < F; i++)
    CU_ASSERT_EQUAL(expert_of[i], group[i]); /* the two moved back, nobody else */
}

static void test_router_learns(void)
{
  enum { N = 3000, HELD = 500, C = 8, E = 6, K = 2 };
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 1, NULL);
  float *x = g_new(float, N * C), *t = g_new(float, N * E), w[E * C];
  srand(4);
  for (int i = 0; i < E * C; i++)
    w[i] = 2.0f * uniform();
  for (int i = 0; i < N * C; i++)
    x[i] = 2.0f * uniform();
  for (int n = 0; n < N; n++) /* targets: positive parts of a linear map, as experts' sums are */
    for (int e = 0; e < E; e++) {
      float v = 0;
      for (int c = 0; c < C; c++)
        v += w[e * C + c] * x[n * C + c];
      t[n * E + e] = fmaxf(v, 0.0f);
    }
  MoelmRouterOptions opt = {.hidden = 16, .epochs = 8, .batch = 64, .lr = 3e-3, .seed = 1};
  float params[16 * C + 16 + E * 16 + E];
  MoelmRouterReport rep;
  GError *error = NULL;
  CU_ASSERT_TRUE_FATAL(moelm_moefy_train_router(be, A(x), A(t), N, HELD, C, E, K, &opt, 0, params, &rep, &error));
  CU_ASSERT_EQUAL(rep.epochs, 8);
  CU_ASSERT(rep.train_loss[7] < 0.3 * rep.train_loss[0]);
  CU_ASSERT(rep.heldout_loss[7] < 0.5 * rep.heldout_loss[0]);
  CU_ASSERT(rep.heldout_recall > 0.8); /* chance: K/E = 0.33 */
  moelm_router_report_clear(&rep);
  opt.epochs = 0;
  CU_ASSERT_FALSE(moelm_moefy_train_router(be, A(x), A(t), N, HELD, C, E, K, &opt, 0, params, &rep, &error));
  MOELM_ASSERT_ERROR(error, "--router-epochs");
  g_clear_error(&error);
  g_free(x);
  g_free(t);
  moelm_backend_free(be);
}

/* ---- the command ------------------------------------------------------------------------------ */

static int run(const char *const *args, char **out, char **err)
{
  return moelm_test_run_cli(args, NULL, out, err);
}

/* A tiny dense (or token-MoE) model trained for 30 updates on the shipped data-bin. */
static char *train(const char *tmp, const char *data, const char *name, const char *act, gboolean moe)
{
  char *save = g_build_filename(tmp, name, NULL);
  const char *args[] = {"train", data, "--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim", "32",
                        "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2", "--activation-fn", act,
                        "--tokens-per-sample", "32", "--batch-size", "8", "--lr", "0.002", "--max-update", "30",
                        "--save-dir", save, "--threads", "1", "--no-epoch-checkpoints", "--disable-validation",
                        moe ? "--moe-freq" : NULL, "2", "--moe-expert-count", "2", NULL};
  CU_ASSERT_EQUAL_FATAL(run(args, NULL, NULL), 0);
  char *ckpt = g_build_filename(save, "checkpoint_last.pt", NULL);
  g_free(save);
  return ckpt;
}

/* eval-lm's loss in base 2 (NAN when it failed); extra options may be NULL. */
static double eval_loss(const char *data, const char *ckpt, const char *opt, const char *value, char **out_text)
{
  const char *args[] = {"eval-lm", data, "--path", ckpt, "--gen-subset", "valid", "--threads", "1", opt, value, NULL};
  char *out = NULL;
  double loss = NAN;
  if (run(args, &out, NULL) == 0 && out && strstr(out, "Loss (base 2): "))
    loss = g_ascii_strtod(strstr(out, "Loss (base 2): ") + strlen("Loss (base 2): "), NULL);
  if (out_text)
    *out_text = out;
  else
    g_free(out);
  return loss;
}

static int moefy(const char *data, const char *ckpt, const char *save, const char *split, const char *select,
                 const char *experts, const char *k, char **err)
{
  const char *args[] = {"moefy", data, "--path", ckpt, "--save", save, "--num-experts", experts, "--top-k", k,
                        "--split", split, "--select", select, "--threads", "1", "--moefy-tokens", "3000",
                        "--router-epochs", "4", NULL};
  return run(args, NULL, err);
}

/* The "moefy" metadata's neuron order of every layer is a permutation of 0..F-1. */
static void check_partitions(const char *path, int layers, int F)
{
  MoelmCheckpoint *ck = moelm_checkpoint_open(path, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ck);
  JsonNode *meta = moelm_checkpoint_meta(ck, "moefy");
  CU_ASSERT_PTR_NOT_NULL_FATAL(meta);
  JsonArray *ls = json_object_get_array_member(json_node_get_object(meta), "layers");
  CU_ASSERT_EQUAL_FATAL(json_array_get_length(ls), (guint)layers);
  for (int l = 0; l < layers; l++) {
    JsonArray *nr = json_object_get_array_member(json_array_get_object_element(ls, l), "neurons");
    CU_ASSERT_EQUAL_FATAL(json_array_get_length(nr), (guint)F);
    int *seen = g_new0(int, F);
    for (int p = 0; p < F; p++) {
      const gint64 i = json_array_get_int_element(nr, p);
      CU_ASSERT_FATAL(i >= 0 && i < F);
      seen[i]++;
    }
    for (int i = 0; i < F; i++)
      CU_ASSERT_EQUAL(seen[i], 1);
    g_free(seen);
  }
  CU_ASSERT_PTR_NOT_NULL(moelm_checkpoint_meta(ck, "task"));
  moelm_checkpoint_close(ck);
}

/* The first and the last "train mse" of layer 0's router in a moefy log. */
static void router_losses(const char *log, double *first, double *last)
{
  *first = *last = NAN;
  for (const char *p = log; (p = strstr(p, "layer 0 router epoch ")) != NULL; p++) {
    const char *m = strstr(p, "train mse ");
    if (m == NULL)
      break;
    const double v = g_ascii_strtod(m + strlen("train mse "), NULL);
    if (isnan(*first))
      *first = v;
    *last = v;
  }
}

static void test_cli_end_to_end(void)
{
  char *tmp = moelm_test_tmpdir();
  char *data = moelm_test_srcpath("data-bin/demo");
  static const char *const acts[] = {"relu", "gelu"};
  for (gsize a = 0; a < G_N_ELEMENTS(acts); a++) {
    char *name = g_strdup_printf("dense-%s", acts[a]);
    char *dense = train(tmp, data, name, acts[a], FALSE);
    const double base = eval_loss(data, dense, NULL, NULL, NULL);
    CU_ASSERT_FALSE_FATAL(isnan(base));
    static const char *const splits[] = {"param-cluster", "coactivation"};
    static const char *const selects[] = {"similarity", "mlp", "groundtruth"};
    for (gsize s = 0; s < G_N_ELEMENTS(splits); s++)
      for (gsize t = 0; t < G_N_ELEMENTS(selects); t++) {
        if (s == 1 && !moelm_moefy_require_metis(NULL))
          continue;
        char *save = g_strdup_printf("%s/%s-%s-%s.pt", tmp, acts[a], splits[s], selects[t]);
        char *err = NULL;
        CU_ASSERT_EQUAL_FATAL(moefy(data, dense, save, splits[s], selects[t], "8", "2", &err), 0);
        if (t == 1) { /* the MLP router's loss falls */
          double first, last;
          router_losses(err, &first, &last);
          CU_ASSERT(last < first);
        }
        g_free(err);
        check_partitions(save, 2, 64);
        char *out = NULL;
        const double all = eval_loss(data, save, "--moefy-top-k", "8", &out);
        CU_ASSERT(fabs(all - base) <= 2e-4); /* k = E: the dense model, to rounding */
        CU_ASSERT(out && strstr(out, "moefied FFNs: 8 experts of 8 neurons per layer, top-8"));
        CU_ASSERT((t == 2) == (out && strstr(out, "UPPER BOUND") != NULL));
        g_free(out);
        if (s == 0 && t == 0) { /* the checkpoint's --top-k 2: fewer experts, another loss */
          const double two = eval_loss(data, save, NULL, NULL, NULL);
          CU_ASSERT(!isnan(two) && fabs(two - base) > 1e-3);
        }
        g_free(save);
      }
    g_free(dense);
    g_free(name);
  }
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(data);
}

static void test_cli_generate_and_errors(void)
{
  char *tmp = moelm_test_tmpdir();
  char *data = moelm_test_srcpath("data-bin/demo");
  char *dense = train(tmp, data, "dense", "relu", FALSE);
  char *moe = train(tmp, data, "moe", "relu", TRUE);
  char *save = g_build_filename(tmp, "m.pt", NULL);
  char *err = NULL;
  CU_ASSERT_EQUAL_FATAL(moefy(data, dense, save, "param-cluster", "similarity", "4", "1", NULL), 0);
  const char *gen[] = {"generate", data, "--path", save, "--max-len-b", "6", "--threads", "1", "--moefy-top-k", "2",
                       NULL};
  char *out = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(gen, "hello world\n", &out, &err), 0);
  CU_ASSERT(out && strstr(out, "H-0\t"));
  CU_ASSERT(err && strstr(err, "top-2 computed per token (50.0% of each FFN)"));
  g_free(out);
  g_free(err);

  /* score (fairseq hub's) runs it too, with the same flag */
  char *items = g_build_filename(tmp, "items.jsonl", NULL);
  const char *jsonl = "{\"context\": \"the quick\", \"choices\": [\"brown fox\", \"lazy dog\"], \"label\": 0}\n";
  moelm_test_write_file(items, jsonl, strlen(jsonl));
  const char *score[] = {"score", data, "--path", save, "--input", items, "--threads", "1", "--moefy-top-k", "3", NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(score, NULL, &out, &err), 0);
  CU_ASSERT(out && strstr(out, "accuracy"));
  CU_ASSERT(err && strstr(err, "top-3 computed per token (75.0% of each FFN)"));
  g_free(out);
  g_free(err);
  g_free(items);

  char *nowhere = g_build_filename(tmp, "never.pt", NULL);
  static const struct {
    const char *which, *experts, *k, *needle;
  } bad[] = {
      {"dense", "5", "1", "--num-experts 5 does not divide the FFN width 64"},
      {"dense", "4", "5", "--top-k 5 must be between 1 and --num-experts 4"},
      {"moe", "4", "1", "has token-MoE layers (--moe-freq 2); moefy takes a dense checkpoint"},
      {"moefied", "4", "1", "is moefied already"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    const char *path = strcmp(bad[i].which, "dense") == 0 ? dense : strcmp(bad[i].which, "moe") == 0 ? moe : save;
    CU_ASSERT_EQUAL(moefy(data, path, nowhere, "param-cluster", "similarity", bad[i].experts, bad[i].k, &err), 1);
    CU_ASSERT(err && strstr(err, bad[i].needle) && strstr(err, "moelm moefy: error: "));
    if (err && !strstr(err, bad[i].needle))
      g_printerr("\n  stderr was: %s\n", err);
    CU_ASSERT_FALSE(g_file_test(nowhere, G_FILE_TEST_EXISTS));
    g_free(err);
  }
  const char *no_e[] = {"moefy", data, "--path", dense, "--save", nowhere, NULL};
  CU_ASSERT_EQUAL(run(no_e, NULL, &err), 2);
  CU_ASSERT(err && strstr(err, "required: --num-experts"));
  g_free(err);
  const char *bad_split[] = {"moefy", data, "--path", dense, "--save", nowhere, "--num-experts", "4", "--split", "kmeans",
                             NULL};
  CU_ASSERT_EQUAL(run(bad_split, NULL, &err), 2);
  CU_ASSERT(err && strstr(err, "--split"));
  g_free(err);
  CU_ASSERT_FALSE(g_file_test(nowhere, G_FILE_TEST_EXISTS));
  /* --moefy-top-k at eval time: only on moefied checkpoints, within 1..E */
  char *text = NULL;
  CU_ASSERT_TRUE(isnan(eval_loss(data, dense, "--moefy-top-k", "2", NULL)));
  CU_ASSERT_TRUE(isnan(eval_loss(data, save, "--moefy-top-k", "5", NULL)));
  CU_ASSERT_TRUE(isnan(eval_loss(data, save, "--moefy-top-k", "0", NULL)));
  const char *e1[] = {"eval-lm", data, "--path", dense, "--gen-subset", "valid", "--moefy-top-k", "2", NULL};
  CU_ASSERT_EQUAL(run(e1, NULL, &text), 1);
  CU_ASSERT(text && strstr(text, "--moefy-top-k needs a moefied checkpoint"));
  g_free(text);
  g_free(nowhere);
  g_free(save);
  g_free(moe);
  g_free(dense);
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(data);
}

MOELM_TEST_SUITE(moefy)
{
  CU_add_test(suite, "balanced k-means: balanced, every neuron once, planted clusters found", test_param_cluster);
  CU_add_test(suite, "METIS co-activation split: balanced, planted blocks found", test_coactivation_split);
  CU_add_test(suite, "rebalancing moves the loosely tied neurons", test_rebalance);
  CU_add_test(suite, "the MLP router's loss falls and it ranks the experts", test_router_learns);
  CU_add_test(suite, "moelm moefy: k = E gives the dense loss for every split and selector (relu, gelu)",
              test_cli_end_to_end);
  CU_add_test(suite, "moelm moefy: generate, --moefy-top-k and bad arguments", test_cli_generate_and_errors);
}
