/* moelm generate (alias interactive) — fairseq-interactive for language models:
 * `moelm generate DATA --path CKPT [--beam N] [--sampling ...] < prompts`.
 *
 * Prompts are read one per line from stdin or --input. For prompt i, stdout gets what
 * fairseq-interactive prints:
 *   S-i <tab> the prompt's tokens (after --remove-bpe)
 *   W-i <tab> seconds spent generating <tab> "seconds"
 *   then for each of the --nbest best hypotheses:
 *   H-i <tab> score (base 2) <tab> the hypothesis' tokens (prompt + continuation)
 *   D-i <tab> score <tab> the hypothesis detokenized
 *   P-i <tab> each token's score (base 2)
 * Log lines go to stderr; stdout is flushed after each prompt so it can be used live.
 *
 * A sequence-level mixture checkpoint (--task language_model_moe) generates from one expert:
 * --gen-expert k starts decoding from <expert_k> (the default is expert 0, fairseq's
 * default), `auto` from the expert with the highest posterior given the prompt, `all` from
 * each expert in turn; the S- line of `auto` and `all` ends with a field "expert=k". Expert
 * tokens are never generated. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commands.h"
#include "common_options.h"
#include "generate.h"
#include "moelm/errors.h"
#include "moelm/log.h"
#include "moelm/progress.h"
#include "moelm/pyformat.h"
#include "tasks/generator.h"
#include "tasks/inference.h"
#include "tasks/mixture_scorer.h"

#define LOG "moelm.generate"

/* --gen-expert: a fixed expert, the most probable one given the prompt, or each in turn. */
typedef enum { GEN_EXPERT_FIXED, GEN_EXPERT_AUTO, GEN_EXPERT_ALL } GenExpertMode;

typedef struct {
  char *path, *input, *bpe, *spm_model, *post_process, *gen_expert;
  int buffer_size, batch_size, beam, nbest, topk, min_len, max_len_b, no_repeat;
  MoelmTaskFlagOptions taskflags;
  MoelmBackendOptions backend;
  MoelmBpeOptions gpt2_files; /* --gpt2-encoder-json, --gpt2-vocab-bpe (its .bpe is unused: o->bpe) */
  gint64 max_tokens, seed, tokens_per_sample;
  double topp, temperature, max_len_a, unkpen, lenpen;
  gboolean sampling, unnormalized, skip_invalid;
  MoelmMoefyTopKOption moefy;
  MoelmCheckpointOptions ckpt_opts;
  GenExpertMode expert_mode; /* from --gen-expert */
  int expert;                /* the fixed expert (0 when --gen-expert is not given) */
} GenOptions;

static void options_init(GenOptions *o)
{
  memset(o, 0, sizeof *o);
  o->input = g_strdup("-");
  moelm_task_flag_options_init(&o->taskflags);
  o->beam = 5;
  o->nbest = 1;
  o->topk = -1;
  o->topp = -1.0;
  o->temperature = 1.0;
  o->max_len_b = 200;
  o->min_len = 1;
  o->seed = 1;
  o->lenpen = 1.0;
  moelm_backend_options_init(&o->backend);
}

static const MoelmArgSpec *gen_table(GenOptions *o)
{
  static MoelmArgSpec t[48];
  const MoelmArgSpec spec[] = {
    {"--path", NULL, MOELM_ARG_STRING, &o->path, NULL, "the checkpoint to generate from (required)", NULL},
    {"--gen-expert", NULL, MOELM_ARG_STRING, &o->gen_expert, NULL,
     "mixture: generate from expert K, from the most probable one given the prompt (auto), or from each (all); 0",
     NULL},
    {"--input", NULL, MOELM_ARG_STRING, &o->input, NULL, "file to read prompts from, one per line ('-' = stdin)", NULL},
    {"--buffer-size", NULL, MOELM_ARG_INT, &o->buffer_size, NULL, "prompts read before generating (accepted)", NULL},
    {"--batch-size", "--max-sentences", MOELM_ARG_INT, &o->batch_size, NULL, "prompts per batch (accepted; 1)", NULL},
    {"--max-tokens", NULL, MOELM_ARG_INT64, &o->max_tokens, NULL, "tokens per batch (accepted)", NULL},
    {"--beam", NULL, MOELM_ARG_INT, &o->beam, NULL, "beam size (5); samples per prompt with --sampling", NULL},
    {"--nbest", NULL, MOELM_ARG_INT, &o->nbest, NULL, "hypotheses to print (1)", NULL},
    {"--sampling", NULL, MOELM_ARG_FLAG, &o->sampling, NULL, "sample instead of beam search", NULL},
    {"--sampling-topk", NULL, MOELM_ARG_INT, &o->topk, NULL, "sample from the k most likely tokens (-1: all)", NULL},
    {"--sampling-topp", NULL, MOELM_ARG_DOUBLE, &o->topp, NULL,
     "sample from the smallest set of tokens whose mass exceeds p (-1: off)", NULL},
    {"--temperature", NULL, MOELM_ARG_DOUBLE, &o->temperature, NULL, "divide log-probs by this (1.0)", NULL},
    {"--max-len-a", NULL, MOELM_ARG_DOUBLE, &o->max_len_a, NULL, "max length = a * (prompt + 1) + b (0)", NULL},
    {"--max-len-b", NULL, MOELM_ARG_INT, &o->max_len_b, NULL, "(200)", NULL},
    {"--min-len", NULL, MOELM_ARG_INT, &o->min_len, NULL, "no </s> before this many tokens (1)", NULL},
    {"--lenpen", NULL, MOELM_ARG_DOUBLE, &o->lenpen, NULL, "scores are divided by length^lenpen (1)", NULL},
    {"--unnormalized", NULL, MOELM_ARG_FLAG, &o->unnormalized, NULL, "do not divide scores by length", NULL},
    {"--unkpen", NULL, MOELM_ARG_DOUBLE, &o->unkpen, NULL, "subtracted from <unk>'s log-prob (0)", NULL},
    {"--no-repeat-ngram-size", NULL, MOELM_ARG_INT, &o->no_repeat, NULL, "never repeat an n-gram of this size", NULL},
    {"--seed", NULL, MOELM_ARG_INT64, &o->seed, NULL, "random seed for sampling (1)", NULL},
    {"--remove-bpe", "--post-process", MOELM_ARG_OPTIONAL, &o->post_process, "@@ ",
     "merge pieces into words: sentencepiece, subword_nmt, '@@ ' (alone: '@@ ')", NULL},
    {"--bpe", NULL, MOELM_ARG_STRING, &o->bpe, NULL,
     "sentencepiece: encode prompts with DATA/spm.model; gpt2: with GPT-2's BPE (D- lines decoded)", NULL},
    {"--sentencepiece-model", NULL, MOELM_ARG_STRING, &o->spm_model, NULL, "SentencePiece model (DATA/spm.model)",
     NULL},
    {"--tokens-per-sample", "--max-target-positions", MOELM_ARG_INT64, &o->tokens_per_sample, NULL,
     "longest prompt + 1 accepted (default: the model's positions)", NULL},
    {"--skip-invalid-size-inputs-valid-test", NULL, MOELM_ARG_FLAG, &o->skip_invalid, NULL,
     "skip prompts longer than the model's positions", NULL},
    {"--prefix-size", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
    {"--gen-subset", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
    {"--log-format", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
    {"--log-interval", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  memcpy(t, spec, sizeof spec);
  return t;
}

/* --gen-expert auto | all | a non-negative integer. */
static gboolean parse_gen_expert(GenOptions *o, GError **error)
{
  const char *v = o->gen_expert;
  o->expert_mode = GEN_EXPERT_FIXED;
  o->expert = 0;
  if (v == NULL)
    return TRUE;
  if (strcmp(v, "auto") == 0 || strcmp(v, "all") == 0) {
    o->expert_mode = strcmp(v, "auto") == 0 ? GEN_EXPERT_AUTO : GEN_EXPERT_ALL;
    return TRUE;
  }
  guint64 k = 0;
  if (!g_ascii_string_to_unsigned(v, 10, 0, G_MAXINT, &k, NULL)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--gen-expert must be an expert number (0, 1, ...), auto or all (got '%s')", v);
    return FALSE;
  }
  o->expert = (int)k;
  return TRUE;
}

/* The checks fairseq-interactive makes on its command line. */
static gboolean check_options(GenOptions *o, const MoelmGeneratorConfig *gc, GError **error)
{
  if (o->buffer_size < 1)
    o->buffer_size = 1;
  if (o->max_tokens <= 0 && o->batch_size <= 0)
    o->batch_size = 1;
  const char *problem = NULL;
  if (o->sampling && o->nbest != o->beam)
    problem = "--sampling requires --nbest to be equal to --beam";
  else if (o->batch_size > o->buffer_size)
    problem = "--batch-size cannot be larger than --buffer-size";
  if (problem) {
    g_set_error_literal(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, problem);
    return FALSE;
  }
  if (!gen_text_post_process_known(o->post_process)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "Unknown post_process option: %s", o->post_process);
    return FALSE;
  }
  if (o->bpe && strcmp(o->bpe, "sentencepiece") != 0 && strcmp(o->bpe, "gpt2") != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "--bpe %s is not supported (sentencepiece or gpt2)",
                o->bpe);
    return FALSE;
  }
  if (!parse_gen_expert(o, error))
    return FALSE;
  return moelm_generator_config_check(gc, error);
}

static void generator_config(const GenOptions *o, MoelmGeneratorConfig *gc)
{
  moelm_generator_config_init(gc);
  gc->beam = o->beam;
  gc->sampling = o->sampling;
  gc->sampling_topk = o->topk;
  gc->sampling_topp = o->topp;
  gc->temperature = o->temperature;
  gc->max_len_a = o->max_len_a;
  gc->max_len_b = o->max_len_b;
  gc->min_len = o->min_len;
  gc->normalize_scores = !o->unnormalized;
  gc->lenpen = o->lenpen;
  gc->unkpen = o->unkpen;
  gc->no_repeat_ngram_size = o->no_repeat;
  gc->seed = (uint64_t)o->seed;
}

typedef struct {
  const GenOptions *o;
  MoelmInference *inf;
  MoelmSpm *spm;        /* prompts are SentencePiece-encoded when set */
  MoelmGpt2Bpe *gpt2;   /* --bpe gpt2: prompts GPT-2-encoded, D- lines decoded */
  gboolean spm_decode;  /* D- lines join pieces (H- lines still hold them) */
  MoelmGenerator *gen;
  int max_positions;    /* longest prompt + 1 */
  const char *input_name;
  gint64 lineno, next_id;
  gint64 gen_us;        /* time spent generating */
  gboolean label;       /* S- lines end with "\texpert=k" (--gen-expert auto / all) */
  MoelmProgress bar;    /* --input FILE with stdout redirected: KB of the file read */
  FILE *bar_fp;         /* the file the bar follows (NULL: no bar) */
} Run;

/* --bpe sentencepiece, or leniently a data-bin that has its spm.model: prompts are raw text. */
static gboolean setup_spm(Run *run, const char *data_dir, GError **error)
{
  const GenOptions *o = run->o;
  MoelmBpeOptions files = o->gpt2_files;
  files.bpe = o->bpe;
  if (!moelm_bpe_options_load(&files, &run->gpt2, error))
    return FALSE;
  if (run->gpt2)
    return TRUE;
  char *path = o->spm_model ? g_strdup(o->spm_model) : g_build_filename(data_dir, "spm.model", NULL);
  const gboolean asked = o->bpe != NULL || o->spm_model != NULL;
  gboolean ok = TRUE;
  if (asked || g_file_test(path, G_FILE_TEST_EXISTS)) {
    run->spm = moelm_spm_load(path, error);
    ok = run->spm != NULL;
    if (ok && !asked)
      moelm_info(LOG, "encoding prompts with %s (as with --bpe sentencepiece)", path);
    run->spm_decode = ok && g_strcmp0(o->post_process, "sentencepiece") != 0;
  }
  g_free(path);
  return ok;
}

static void print_hypothesis(const Run *run, gint64 id, const MoelmHypothesis *h)
{
  const MoelmDictionary *dict = run->inf->dict;
  char *hyp = gen_text_tokens_string(dict, h->tokens, h->len, run->o->post_process);
  char *detok = run->gpt2       ? gen_text_gpt2_decode(dict, run->gpt2, h->tokens, h->len)
                : run->spm_decode ? gen_text_post_process(hyp, "sentencepiece")
                                  : g_strdup(hyp);
  /* float32 throughout, then Python's repr() of that float, as fairseq prints a tensor */
  char *score = moelm_py_repr_float((double)(h->score / (float)G_LN2));
  printf("H-%" G_GINT64_FORMAT "\t%s\t%s\n", id, score, hyp);
  printf("D-%" G_GINT64_FORMAT "\t%s\t%s\n", id, score, detok);
  printf("P-%" G_GINT64_FORMAT "\t", id);
  for (int i = 0; i < h->len; i++)
    printf("%s%.4f", i ? " " : "", (double)(h->positional_scores[i] / (float)G_LN2));
  putchar('\n');
  g_free(score);
  g_free(detok);
  g_free(hyp);
}

/* Generate for one prompt from `expert` (-1: the language model's </s> BOS) and print its
 * S-, W-, H-, D-, P- lines. */
static gboolean generate_block(Run *run, gint64 id, const int32_t *prompt, int n, int expert, GError **error)
{
  if (expert >= 0 && !moelm_generator_set_bos(run->gen, run->inf->task.mix.expert_token0 + expert, error))
    return FALSE;
  const gint64 t0 = g_get_monotonic_time();
  GPtrArray *hyps = moelm_generator_generate(run->gen, prompt, n, (uint64_t)id, error);
  const gint64 took = g_get_monotonic_time() - t0;
  run->gen_us += took;
  if (hyps == NULL)
    return FALSE;
  char *src = gen_text_tokens_string(run->inf->dict, prompt, n, run->o->post_process);
  if (run->label)
    printf("S-%" G_GINT64_FORMAT "\t%s\texpert=%d\n", id, src, expert);
  else
    printf("S-%" G_GINT64_FORMAT "\t%s\n", id, src);
  printf("W-%" G_GINT64_FORMAT "\t%.3f\tseconds\n", id, took / 1e6);
  for (guint i = 0; i < hyps->len && (int)i < run->o->nbest; i++)
    print_hypothesis(run, id, g_ptr_array_index(hyps, i));
  fflush(stdout);
  g_free(src);
  g_ptr_array_unref(hyps);
  return TRUE;
}

static gboolean handle_prompt(Run *run, const char *line, gsize len, GError **error)
{
  const gint64 id = run->next_id++;
  run->lineno++;
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
  gboolean ok = run->gpt2 ? gen_text_encode_gpt2_prompt(run->inf->dict, run->gpt2, line, len, ids, error)
                          : gen_text_encode_prompt(run->inf->dict, run->spm, line, len, ids, error);
  if (!ok) {
    moelm_error_prefix(error, "%s:%" G_GINT64_FORMAT, run->input_name, run->lineno);
    goto out;
  }
  const int n = (int)ids->len;
  if (n + 1 > run->max_positions) {
    if (run->o->skip_invalid) {
      moelm_warn(LOG, "sample #%" G_GINT64_FORMAT " has invalid size %d and will be skipped, max_positions=%d", id,
                 n + 1, run->max_positions);
      goto out;
    }
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "%s:%" G_GINT64_FORMAT ": Size of sample #%" G_GINT64_FORMAT " is invalid (=%d) since max_positions=%d, "
                "skip this example with --skip-invalid-size-inputs-valid-test",
                run->input_name, run->lineno, id, n + 1, run->max_positions);
    ok = FALSE;
    goto out;
  }
  const int32_t *prompt = (const int32_t *)(void *)ids->data;
  const MoelmInference *inf = run->inf;
  if (!inf->task.mixture) {
    ok = generate_block(run, id, prompt, n, -1, error);
  } else if (run->o->expert_mode == GEN_EXPERT_AUTO) {
    const int K = inf->task.mix.num_experts;
    double *joint = g_new(double, K);
    ok = moelm_mixture_prompt_log_joint(inf->model, inf->gate, &inf->task.mix, prompt, n, joint, error);
    int best = 0;
    for (int k = 1; ok && k < K; k++)
      if (joint[k] > joint[best])
        best = k;
    g_free(joint);
    ok = ok && generate_block(run, id, prompt, n, best, error);
  } else if (run->o->expert_mode == GEN_EXPERT_ALL) {
    for (int k = 0; ok && k < inf->task.mix.num_experts; k++)
      ok = generate_block(run, id, prompt, n, k, error);
  } else {
    ok = generate_block(run, id, prompt, n, run->o->expert, error);
  }
  if (!ok)
    moelm_error_prefix(error, "%s:%" G_GINT64_FORMAT, run->input_name, run->lineno);
out:
  g_array_unref(ids);
  return ok;
}

/* Every line of fp with universal newlines (\n, \r\n, a lone \r), each handled as soon as it
 * is complete (prompts typed at a terminal are answered one by one). */
static gboolean read_prompts(Run *run, FILE *fp, GError **error)
{
  char *buf = NULL;
  size_t cap = 0;
  ssize_t got;
  gboolean ok = TRUE;
  while (ok && (got = getline(&buf, &cap, fp)) >= 0) {
    gsize len = (gsize)got;
    if (len > 0 && buf[len - 1] == '\n')
      len--;
    if (len > 0 && buf[len - 1] == '\r')
      len--;
    gsize start = 0;
    for (gsize i = 0; ok && i <= len; i++)
      if (i == len || buf[i] == '\r') {
        ok = handle_prompt(run, buf + start, i - start, error);
        start = i + 1;
      }
    if (run->bar_fp) {
      char *extra = g_strdup_printf("%" G_GINT64_FORMAT " prompts", run->next_id);
      moelm_progress_update(&run->bar, (double)ftello(run->bar_fp) / 1e3, extra);
      g_free(extra);
    }
  }
  if (ok && ferror(fp)) {
    moelm_set_error_errno(error, errno, run->input_name, "read failed");
    ok = FALSE;
  }
  free(buf);
  return ok;
}

/* The generator, and for a mixture its expert: the task flags checked against the
 * checkpoint, the expert tokens banned, the BOS of a fixed expert. */
static gboolean setup_generator(Run *run, const MoelmGeneratorConfig *gc, GError **error)
{
  const GenOptions *o = run->o;
  const MoelmInference *inf = run->inf;
  const MoelmTaskFlags flags = moelm_task_flag_options_get(&o->taskflags);
  if (!moelm_inference_check_task(inf, &flags, error))
    return FALSE;
  MoelmGeneratorConfig cfg = *gc;
  const int K = inf->task.mixture ? inf->task.mix.num_experts : 0;
  if (o->gen_expert && !inf->task.mixture) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--gen-expert needs a --task language_model_moe checkpoint; %s is a %s checkpoint", o->path,
                inf->task.name);
    return FALSE;
  }
  if (inf->task.mixture && o->expert_mode == GEN_EXPERT_FIXED && o->expert >= K) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--gen-expert %d: %s has %d experts (0..%d)", o->expert,
                o->path, K, K - 1);
    return FALSE;
  }
  if (inf->task.mixture && o->gen_expert == NULL)
    moelm_info(LOG, "mixture of %d experts: generating from expert 0 (--gen-expert 0, fairseq's default)", K);
  if (inf->task.mixture)
    cfg.bos = inf->task.mix.expert_token0 + o->expert;
  run->label = inf->task.mixture && o->expert_mode != GEN_EXPERT_FIXED;
  if ((run->gen = moelm_generator_new(inf->model, &cfg, error)) == NULL)
    return FALSE;
  for (int k = 0; k < K; k++)
    if (!moelm_generator_ban_token(run->gen, inf->task.mix.expert_token0 + k, error))
      return FALSE;
  return TRUE;
}

static int generate(const GenOptions *o, const MoelmGeneratorConfig *gc, const char *data_dir, const char *cmd)
{
  GError *error = NULL;
  Run run = {.o = o};
  FILE *fp = NULL;
  int rc = 1;
  const gint64 start = g_get_monotonic_time();
  if (o->path == NULL) {
    error = g_error_new_literal(MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--path is required (the checkpoint to load)");
    goto out;
  }
  const gboolean from_stdin = strcmp(o->input, "-") == 0;
  run.input_name = from_stdin ? "<stdin>" : o->input;
  fp = from_stdin ? stdin : fopen(o->input, "r");
  if (fp == NULL) {
    moelm_set_error_errno(&error, errno, o->input, "cannot open");
    goto out;
  }
  moelm_info(LOG, "loading model(s) from %s", o->path);
  MoelmBackendSpec spec;
  if (!moelm_backend_options_apply(&o->backend, &spec, &error))
    goto out;
  run.inf = moelm_inference_open_with_overrides(o->path, data_dir, &spec, o->ckpt_opts.model_overrides,
                                                &error);
  if (run.inf == NULL)
    goto out;
  moelm_info(LOG, "running on %s: %s", run.inf->be->description, run.inf->be->reason);
  char *moefied = NULL;
  if (!moelm_moefy_top_k_apply(&o->moefy, run.inf->model, &moefied, &error))
    goto out;
  if (moefied)
    moelm_info(LOG, "%s", moefied);
  g_free(moefied);
  if (!setup_spm(&run, data_dir, &error) || !setup_generator(&run, gc, &error))
    goto out;
  run.max_positions = moelm_model_get_config(run.inf->model)->max_positions;
  if (o->tokens_per_sample > 0 && o->tokens_per_sample < run.max_positions)
    run.max_positions = (int)o->tokens_per_sample;
  moelm_info(LOG, "Max positions: %d", run.max_positions);
  if (o->buffer_size > 1)
    moelm_info(LOG, "Sentence buffer size: %d", o->buffer_size);
  moelm_info(LOG, "NOTE: hypothesis and token scores are output in base 2");
  moelm_info(LOG, "Type the input sentence and press return:");
  struct stat st;
  if (!from_stdin && !isatty(STDOUT_FILENO) && fstat(fileno(fp), &st) == 0 && S_ISREG(st.st_mode)) {
    /* the hypotheses go to a file or a pipe: the terminal can show how far the input is */
    char *what = g_strdup_printf("prompts of %s", o->input), *prog = g_strdup_printf("moelm %s", cmd);
    moelm_progress_start(&run.bar, prog, what, (double)st.st_size / 1e3, "KB");
    g_free(what);
    g_free(prog);
    run.bar_fp = fp;
  }
  const gboolean read = read_prompts(&run, fp, &error);
  moelm_progress_finish(&run.bar);
  if (!read)
    goto out;
  moelm_info(LOG, "Total time: %.3f seconds; translation time: %.3f", (g_get_monotonic_time() - start) / 1e6,
             run.gen_us / 1e6);
  rc = 0;
out:
  fflush(stdout);
  if (error)
    moelm_cli_fail(cmd, error, rc);
  g_clear_error(&error);
  if (fp && fp != stdin)
    fclose(fp);
  moelm_generator_free(run.gen);
  if (run.spm)
    moelm_spm_free(run.spm);
  moelm_gpt2_bpe_free(run.gpt2);
  moelm_inference_free(run.inf);
  return rc;
}

int moelm_cmd_generate(int argc, char **argv)
{
  const char *cmd = argv[0]; /* "generate" or "interactive" */
  char *prog = g_strdup_printf("moelm %s", cmd);
  GenOptions o;
  options_init(&o);
  const MoelmArgSpec *tables[] = {gen_table(&o), moelm_task_flag_options_table(&o.taskflags),
                                  moelm_moefy_top_k_table(&o.moefy), moelm_checkpoint_options_table(&o.ckpt_opts),
                                  moelm_backend_options_table(&o.backend),
                                  moelm_bpe_options_table(&o.gpt2_files, FALSE),
                                  moelm_ignored_options, NULL};
  GPtrArray *pos = g_ptr_array_new();
  gboolean help = FALSE;
  GError *error = NULL;
  int rc = 0;
  MoelmGeneratorConfig gc;
  if (!moelm_args_parse(prog, tables, argc, argv, 1, pos, &help, &error)) {
    rc = moelm_cli_fail(cmd, error, 2);
    goto out;
  }
  if (help) {
    moelm_args_print_help(stdout, prog, "DATA --path CKPT [options] < prompts", tables);
    goto out;
  }
  generator_config(&o, &gc);
  if (pos->len != 1)
    error = g_error_new(MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "expected exactly one DATA directory, got %u", pos->len);
  if (error || !check_options(&o, &gc, &error)) {
    rc = moelm_cli_fail(cmd, error, 2);
    goto out;
  }
  rc = generate(&o, &gc, g_ptr_array_index(pos, 0), cmd);
out:
  g_clear_error(&error);
  moelm_args_free_strings(tables);
  g_ptr_array_unref(pos);
  g_free(prog);
  return rc;
}
