/* `moelm generate` on a sequence-level mixture (hMoElp, K = 2, trained for 3 updates):
 * --gen-expert k decodes from <expert_k> (the P- scores are a forward pass from that BOS and
 * not from the other), `all` is each expert in turn, `auto` picks the expert of highest
 * posterior given the prompt, expert tokens are never generated, the seed's command line
 * runs, and the errors. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "../eval/mixture-cli-fixture.h"
#include "moelm-test.h"
#include "tasks/inference.h"

static const char *PROMPTS = "the of\n\nand the is\nIt was a\n";
#define N_PROMPTS 4

static char *generate(const char *ckpt, const char *const *extra, const char *stdin_text)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
  const char *base[] = {"generate", f->data, "--path", ckpt, "--threads", "1", NULL};
  char *out = NULL, *err = NULL;
  const int rc = moelm_test_run_cli2(base, extra, stdin_text, &out, &err);
  if (rc != 0)
    g_printerr("\n  generate: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  g_free(err);
  return out;
}

/* stdout without W- lines and, when `unlabel`, without the S- lines' "\texpert=k". */
static char *strip(const char *out, gboolean unlabel)
{
  gchar **lines = g_strsplit(out, "\n", -1);
  GString *s = g_string_new(NULL);
  for (int i = 0; lines[i]; i++) {
    if (g_str_has_prefix(lines[i], "W-") || !*lines[i])
      continue;
    char *tab = unlabel && g_str_has_prefix(lines[i], "S-") ? g_strrstr(lines[i], "\texpert=") : NULL;
    if (tab)
      *tab = '\0';
    g_string_append_printf(s, "%s\n", lines[i]);
  }
  g_strfreev(lines);
  return g_string_free(s, FALSE);
}

/* The block of lines from the S- line labelled "expert=k" of prompt `id` up to the next S-. */
static char *labelled_block(const char *out, int id, int k)
{
  char *label = g_strdup_printf("\texpert=%d\n", k), *tag = g_strdup_printf("S-%d\t", id);
  const char *at = out;
  char *block = NULL;
  while ((at = strstr(at, tag)) != NULL) {
    const char *eol = strchr(at, '\n');
    if (eol && (at == out || at[-1] == '\n') && g_str_has_prefix(eol - strlen(label) + 1, label)) {
      const char *next = strstr(eol, "\nS-");
      block = g_strndup(at, next ? (gsize)(next + 1 - at) : strlen(at));
      break;
    }
    at++;
  }
  g_free(label);
  g_free(tag);
  return block;
}

/* Every "P-" line's values, in order of the lines: an array of GArray (double). */
static GPtrArray *p_lines(const char *out)
{
  GPtrArray *all = g_ptr_array_new_with_free_func((GDestroyNotify)g_array_unref);
  gchar **lines = g_strsplit(out, "\n", -1);
  for (int i = 0; lines[i]; i++) {
    if (!g_str_has_prefix(lines[i], "P-"))
      continue;
    GArray *v = g_array_new(FALSE, FALSE, sizeof(double));
    gchar **f = g_strsplit(strchr(lines[i], '\t') + 1, " ", -1);
    for (int j = 0; f[j]; j++) {
      const double x = g_ascii_strtod(f[j], NULL);
      g_array_append_val(v, x);
    }
    g_strfreev(f);
    g_ptr_array_add(all, v);
  }
  g_strfreev(lines);
  return all;
}

/* Every "H-" line's tokens as ids, with the final </s>. */
static GPtrArray *h_lines(const char *out, const MoelmDictionary *dict)
{
  GPtrArray *all = g_ptr_array_new_with_free_func((GDestroyNotify)g_array_unref);
  gchar **lines = g_strsplit(out, "\n", -1);
  for (int i = 0; lines[i]; i++) {
    if (!g_str_has_prefix(lines[i], "H-"))
      continue;
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
    gchar **f = g_strsplit(lines[i], "\t", 3);
    gchar **w = g_strsplit(f[2], " ", -1);
    for (int j = 0; w[j]; j++)
      if (*w[j]) {
        const int32_t id = moelm_dictionary_index(dict, w[j]);
        g_array_append_val(ids, id);
      }
    const int32_t eos = MOELM_EOS;
    g_array_append_val(ids, eos);
    g_strfreev(w);
    g_strfreev(f);
    g_ptr_array_add(all, ids);
  }
  g_strfreev(lines);
  return all;
}

/* The per-token log2-probabilities of `ids` decoded from `bos`. */
static double *forward_from(MoelmInference *inf, int32_t bos, const GArray *ids)
{
  const int n = (int)ids->len;
  int32_t *src = g_new(int32_t, n);
  float *lp = g_new(float, n);
  double *out = g_new(double, n);
  src[0] = bos;
  for (int i = 1; i < n; i++)
    src[i] = g_array_index(ids, int32_t, i - 1);
  const MoelmBatch b = {1, n, src, (const int32_t *)(const void *)ids->data};
  CU_ASSERT_TRUE_FATAL(moelm_model_score(inf->model, &b, NULL, lp, NULL, NULL));
  for (int i = 0; i < n; i++)
    out[i] = lp[i] / G_LN2;
  g_free(src);
  g_free(lp);
  return out;
}

static MoelmInference *open_mixture(void)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
  MoelmInference *inf = moelm_inference_open(f->mixture, f->data, MOELM_TEST_CPU_SPEC(1), NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(inf);
  CU_ASSERT_TRUE_FATAL(inf->task.mixture && inf->task.mix.num_experts == MIXTURE_CLI_K);
  return inf;
}

/* Greedy decoding from expert k scores every token as a forward pass from <expert_k> does. */
static void test_bos_is_the_expert(void)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
  MoelmInference *inf = open_mixture();
  for (int k = 0; k < MIXTURE_CLI_K; k++) {
    char ks[8];
    g_snprintf(ks, sizeof ks, "%d", k);
    char *out = generate(f->mixture, (const char *const[]){"--gen-expert", ks, "--beam", "1", "--max-len-b", "12", NULL},
                         PROMPTS);
    GPtrArray *hs = h_lines(out, inf->dict), *ps = p_lines(out);
    CU_ASSERT_EQUAL_FATAL(hs->len, N_PROMPTS);
    CU_ASSERT_EQUAL_FATAL(ps->len, N_PROMPTS);
    for (guint i = 0; i < hs->len; i++) {
      const GArray *ids = g_ptr_array_index(hs, i), *p = g_ptr_array_index(ps, i);
      CU_ASSERT_EQUAL_FATAL(ids->len, p->len);
      double *mine = forward_from(inf, inf->task.mix.expert_token0 + k, ids);
      double *other = forward_from(inf, inf->task.mix.expert_token0 + (1 - k), ids);
      double worst = 0, apart = 0;
      for (guint j = 0; j < ids->len; j++) {
        worst = fmax(worst, fabs(g_array_index(p, double, j) - mine[j]));
        apart = fmax(apart, fabs(g_array_index(p, double, j) - other[j]));
      }
      CU_ASSERT(worst < 2e-4);
      CU_ASSERT(apart > 1e-3);
      g_free(mine);
      g_free(other);
    }
    /* a plain S- line: no label for a fixed expert */
    CU_ASSERT_PTR_NULL(strstr(out, "expert="));
    g_ptr_array_unref(hs);
    g_ptr_array_unref(ps);
    g_free(out);
  }
  moelm_inference_free(inf);
}

/* Same seed, same output; `all` is each expert's own run; no --gen-expert is expert 0. */
static void test_seeds_all_and_default(void)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
  char *runs[MIXTURE_CLI_K];
  for (int k = 0; k < MIXTURE_CLI_K; k++) {
    char ks[8];
    g_snprintf(ks, sizeof ks, "%d", k);
    const char *const args[] = {"--gen-expert", ks, "--sampling", "--beam", "2", "--nbest", "2", "--seed", "7",
                                "--sampling-topk", "20", "--max-len-b", "15", NULL};
    char *a = generate(f->mixture, args, PROMPTS), *b = generate(f->mixture, args, PROMPTS);
    runs[k] = strip(a, FALSE);
    char *again = strip(b, FALSE);
    CU_ASSERT_STRING_EQUAL(runs[k], again);
    g_free(again);
    g_free(a);
    g_free(b);
  }
  CU_ASSERT_STRING_NOT_EQUAL(runs[0], runs[1]);
  char *all = generate(f->mixture, (const char *const[]){"--gen-expert", "all", "--sampling", "--beam", "2", "--nbest",
                                                         "2", "--seed", "7", "--sampling-topk", "20", "--max-len-b",
                                                         "15", NULL},
                       PROMPTS);
  for (int k = 0; k < MIXTURE_CLI_K; k++) {
    GString *joined = g_string_new(NULL);
    for (int id = 0; id < N_PROMPTS; id++) {
      char *block = labelled_block(all, id, k);
      CU_ASSERT_PTR_NOT_NULL_FATAL(block);
      char *plain = strip(block, TRUE);
      g_string_append(joined, plain);
      g_free(plain);
      g_free(block);
    }
    CU_ASSERT_STRING_EQUAL(joined->str, runs[k]);
    g_string_free(joined, TRUE);
  }
  /* the blocks come prompt by prompt, experts in order: S-0 (0), S-0 (1), S-1 (0), ... */
  gchar **lines = g_strsplit(all, "\n", -1);
  int s_lines = 0;
  for (int i = 0; lines[i]; i++)
    if (g_str_has_prefix(lines[i], "S-")) {
      char *want = g_strdup_printf("S-%d\t", s_lines / MIXTURE_CLI_K);
      char *label = g_strdup_printf("\texpert=%d", s_lines % MIXTURE_CLI_K);
      CU_ASSERT_TRUE(g_str_has_prefix(lines[i], want) && g_str_has_suffix(lines[i], label));
      g_free(want);
      g_free(label);
      s_lines++;
    }
  CU_ASSERT_EQUAL(s_lines, N_PROMPTS * MIXTURE_CLI_K);
  g_strfreev(lines);
  g_free(all);
  /* without --gen-expert: expert 0 */
  char *dflt = generate(f->mixture, (const char *const[]){"--sampling", "--beam", "2", "--nbest", "2", "--seed", "7",
                                                          "--sampling-topk", "20", "--max-len-b", "15", NULL},
                        PROMPTS);
  char *d = strip(dflt, FALSE);
  CU_ASSERT_STRING_EQUAL(d, runs[0]);
  g_free(d);
  g_free(dflt);
  for (int k = 0; k < MIXTURE_CLI_K; k++)
    g_free(runs[k]);
}

/* Hot sampling over many draws from both experts: no expert token comes out. */
static void test_expert_tokens_never_generated(void)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
  char *out = generate(f->mixture, (const char *const[]){"--gen-expert", "all", "--sampling", "--temperature", "4",
                                                         "--beam", "4", "--nbest", "4", "--min-len", "28",
                                                         "--max-len-b", "30", NULL},
                       PROMPTS);
  int hyps = 0;
  gchar **lines = g_strsplit(out, "\n", -1);
  for (int i = 0; lines[i]; i++)
    if (g_str_has_prefix(lines[i], "H-")) {
      hyps++;
      CU_ASSERT_PTR_NULL(strstr(lines[i], "<expert_"));
    }
  CU_ASSERT_EQUAL(hyps, N_PROMPTS * MIXTURE_CLI_K * 4);
  g_strfreev(lines);
  g_free(out);
}

/* Words of a prompt line (split on spaces). */
static int count_words(const char *line)
{
  int n = 0;
  for (const char *p = line; *p; p++)
    n += *p != ' ' && (p == line || p[-1] == ' ');
  return n;
}

/* auto: the expert of highest log π_k + log p(prompt | k), from each expert's P- scores. */
static void test_auto(void)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
  const char *prompts = "the of\n\nand the is\nIt was a\nof of of of\nThe the\nis\n";
  const int n_prompts = 7;
  MoelmInference *inf = open_mixture();
  float prior[MIXTURE_CLI_K];
  int zero = 0;
  int32_t none = 0;
  CU_ASSERT_TRUE_FATAL(moelm_mean_pool_gate_forward(inf->gate, &none, &zero, 1, 1, NULL, prior, NULL));
  char *fixed[MIXTURE_CLI_K];
  GPtrArray *ps[MIXTURE_CLI_K];
  for (int k = 0; k < MIXTURE_CLI_K; k++) {
    char ks[8];
    g_snprintf(ks, sizeof ks, "%d", k);
    char *out = generate(f->mixture, (const char *const[]){"--gen-expert", ks, "--beam", "1", "--max-len-b", "10", NULL},
                         prompts);
    ps[k] = p_lines(out);
    fixed[k] = strip(out, FALSE);
    g_free(out);
  }
  char *auto_out = generate(f->mixture, (const char *const[]){"--gen-expert", "auto", "--beam", "1", "--max-len-b",
                                                              "10", NULL},
                            prompts);
  gchar **lines = g_strsplit(prompts, "\n", -1);
  int clear = 0;
  for (int id = 0; id < n_prompts; id++) {
    const int n = count_words(lines[id]);
    double joint[MIXTURE_CLI_K];
    for (int k = 0; k < MIXTURE_CLI_K; k++) {
      const GArray *p = g_ptr_array_index(ps[k], id);
      joint[k] = prior[k];
      for (int j = 0; j < n; j++)
        joint[k] += g_array_index(p, double, j) * G_LN2;
    }
    const int want = joint[1] > joint[0] ? 1 : 0;
    int got = -1;
    for (int k = 0; k < MIXTURE_CLI_K; k++) {
      char *block = labelled_block(auto_out, id, k);
      if (block == NULL)
        continue;
      CU_ASSERT_EQUAL(got, -1); /* one block per prompt */
      got = k;
      /* the block is expert k's own */
      char *plain = strip(block, TRUE);
      CU_ASSERT_PTR_NOT_NULL(strstr(fixed[k], plain));
      g_free(plain);
      g_free(block);
    }
    if (fabs(joint[1] - joint[0]) > 1e-3) {
      clear++;
      CU_ASSERT_EQUAL(got, want);
    }
  }
  CU_ASSERT(clear >= n_prompts - 1);
  g_strfreev(lines);
  g_free(auto_out);
  for (int k = 0; k < MIXTURE_CLI_K; k++) {
    g_free(fixed[k]);
    g_ptr_array_unref(ps[k]);
  }
  moelm_inference_free(inf);
}

/* The seed's generate line (its trailing backslash-space aside), under both names. */
static void test_seed_command(void)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
  for (int alias = 0; alias < 2; alias++) {
    const char *args[] = {alias ? "interactive" : "generate", f->data, "--path", f->seed_mixture, "--beam", "1",
                          "--sampling", "--sampling-topp", "0.9", "--remove-bpe", "--task", "language_model_moe",
                          "--user-dir", "examples/language_model_moe/src", "--method", "hMoEup",
                          "--mean-pool-gating-network", "--mean-pool-gating-network-encoder-dim", "512",
                          "--mean-pool-gating-network-dropout", "0.0", "--num-experts", "10", "--gen-expert", "0",
                          "--threads", "1", NULL};
    char *out = NULL, *err = NULL;
    const int rc = moelm_test_run_cli(args, "the of\n", &out, &err);
    if (rc != 0)
      g_printerr("\n  seed generate: %s\n", err);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_TRUE(g_str_has_prefix(out, "S-0\tthe of\nW-0\t"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\nH-0\t"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\nP-0\t"));
    g_free(out);
    g_free(err);
  }
}

static void test_errors(void)
{
  const MixtureCliFixture *f = mixture_cli_fixture();
#define GEN(...) ((const char *const[]){"generate", f->data, "--threads", "1", __VA_ARGS__, NULL})
  mixture_cli_check_fails(GEN("--path", f->mixture, "--gen-expert", "2"), "x\n", 1, "--gen-expert 2:");
  mixture_cli_check_fails(GEN("--path", f->mixture, "--gen-expert", "2"), "x\n", 1, "has 2 experts (0..1)");
  mixture_cli_check_fails(GEN("--path", f->mixture, "--gen-expert", "-1"), "x\n", 2, "--gen-expert must be");
  mixture_cli_check_fails(GEN("--path", f->mixture, "--gen-expert", "best"), "x\n", 2, "'best'");
  mixture_cli_check_fails(GEN("--path", f->dense, "--gen-expert", "0"), "x\n", 1,
                          "--gen-expert needs a --task language_model_moe checkpoint");
  mixture_cli_check_fails(GEN("--path", f->dense, "--gen-expert", "auto"), "x\n", 1, "language_modeling checkpoint");
  mixture_cli_check_fails(GEN("--path", f->mixture, "--num-experts", "10"), "x\n", 1,
                          "--num-experts 10, but the checkpoint was trained with --num-experts 2");
  mixture_cli_check_fails(GEN("--path", f->mixture, "--method", "hMoEup"), "x\n", 1, "--method hMoEup, but");
  mixture_cli_check_fails(GEN("--path", f->dense, "--task", "language_model_moe"), "x\n", 1, "--task language_model_moe");
#undef GEN
}

MOELM_TEST_SUITE(generate_mixture_cli)
{
  CU_add_test(suite, "--gen-expert k decodes from <expert_k>", test_bos_is_the_expert);
  CU_add_test(suite, "seeds, --gen-expert all, the default expert", test_seeds_all_and_default);
  CU_add_test(suite, "expert tokens are never generated", test_expert_tokens_never_generated);
  CU_add_test(suite, "--gen-expert auto picks the highest posterior", test_auto);
  CU_add_test(suite, "the seed's generate command line", test_seed_command);
  CU_add_test(suite, "errors: expert index, dense checkpoint, flags", test_errors);
}
