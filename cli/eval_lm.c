/* moelm eval-lm — fairseq-eval-lm: `moelm eval-lm DATA --path CKPT [--context-window N]`.
 * A sequence-level mixture checkpoint (--task language_model_moe) is scored with the exact
 * marginal over its experts (tasks/mixture_scorer.h); --mixture-report adds per-expert lines.
 *
 * Like fairseq's CLI, whose logging goes to stdout, the report is written to stdout as log
 * lines "DATE | INFO | fairseq_cli.eval_lm | ..."; warnings and errors go to stderr. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "moelm/pyformat.h"
#include "common_options.h"
#include "moelm/errors.h"
#include "moelm/log.h"
#include "moelm/progress.h"
#include "tasks/inference.h"
#include "tasks/lm_data.h"
#include "tasks/mixture_scorer.h"
#include "tasks/scorer.h"

/* Without --batch-size, a model call takes about CALL_TOKENS row tokens, and its logits
 * (rows x tokens_per_sample x vocabulary floats) at most LOGITS_BUDGET: fairseq's default of
 * 36000 tokens suits a GPU, while on the CPU calls of ~1k tokens ran fastest (measured with
 * 64- and 256-dim models: 1k-token calls 1.5-3x faster than 4k-16k-token calls). */
#define CALL_TOKENS ((int64_t)1024)
#define LOGITS_BUDGET ((int64_t)1 << 23)

typedef struct {
  char *path, *gen_subset, *break_mode, *post_process, *log_format, *log_file;
  int context_window, batch_size;
  gint64 tokens_per_sample, max_tokens;
  MoelmTaskFlagOptions taskflags;
  MoelmBackendOptions backend;
  MoelmBpeOptions bpe;
  gboolean output_word_probs, output_word_stats, mixture_report;
  gboolean tps_seen, mode_seen, no_progress_bar;
  MoelmMoefyTopKOption moefy;
  MoelmCheckpointOptions ckpt_opts;
} EvalOptions;

static void options_init(EvalOptions *o)
{
  memset(o, 0, sizeof *o);
  o->gen_subset = g_strdup("test");
  o->break_mode = g_strdup("none");
  o->log_format = g_strdup("simple");
  moelm_task_flag_options_init(&o->taskflags);
  moelm_backend_options_init(&o->backend);
}

static const MoelmArgSpec *eval_table(EvalOptions *o)
{
  static MoelmArgSpec t[32];
  const MoelmArgSpec spec[] = {
    {"--path", NULL, MOELM_ARG_STRING, &o->path, NULL, "the checkpoint to evaluate (required)", NULL},
    {"--mixture-report", NULL, MOELM_ARG_FLAG, &o->mixture_report, NULL,
     "mixture: per-expert perplexities and the best-expert oracle", NULL},
    {"--gen-subset", NULL, MOELM_ARG_STRING, &o->gen_subset, NULL, "split to evaluate (test)", NULL},
    {"--context-window", NULL, MOELM_ARG_INT, &o->context_window, NULL,
     "tokens of preceding context per block, not scored (0)", NULL},
    {"--tokens-per-sample", NULL, MOELM_ARG_INT64, &o->tokens_per_sample, NULL,
     "block size incl. context (default: the checkpoint's)", &o->tps_seen},
    {"--sample-break-mode", NULL, MOELM_ARG_CHOICE, &o->break_mode, "none|complete|complete_doc|eos",
     "block boundaries (default: the checkpoint's)", &o->mode_seen},
    {"--max-tokens", NULL, MOELM_ARG_INT64, &o->max_tokens, NULL, "max block tokens per batch (36000)", NULL},
    {"--batch-size", "--max-sentences", MOELM_ARG_INT, &o->batch_size, NULL, "max blocks per batch", NULL},
    {"--output-word-probs", NULL, MOELM_ARG_FLAG, &o->output_word_probs, NULL, "log every word's log-probability",
     NULL},
    {"--output-word-stats", NULL, MOELM_ARG_FLAG, &o->output_word_stats, NULL, "log per-word statistics", NULL},
    {"--post-process", "--remove-bpe", MOELM_ARG_OPTIONAL, &o->post_process, "@@ ",
     "merge subword pieces into words: '@@ ', subword_nmt, sentencepiece or gpt2", NULL},
    {"--seed", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
    {"--softmax-batch", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
    {"--log-format", NULL, MOELM_ARG_CHOICE, &o->log_format, "simple|json|none|tqdm",
     "none: no progress line (the results are printed as always)", NULL},
    {"--log-file", NULL, MOELM_ARG_STRING, &o->log_file, NULL, "also append the log lines to FILE", NULL},
    {"--no-progress-bar", NULL, MOELM_ARG_FLAG, &o->no_progress_bar, NULL, "no progress line", NULL},
    {"--log-interval", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
    {"--required-batch-size-multiple", NULL, MOELM_ARG_IGNORED, NULL, NULL, NULL, NULL},
    {"--skip-invalid-size-inputs-valid-test", NULL, MOELM_ARG_IGNORED_FLAG, NULL, NULL, NULL, NULL},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  memcpy(t, spec, sizeof spec);
  return t;
}

/* One fairseq log line on stdout. */
static void say(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void say(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  char *line = moelm_log_format(MOELM_LOG_INFO, "fairseq_cli.eval_lm", msg);
  printf("%s\n", line);
  moelm_log_to_file(line);
  g_free(line);
  g_free(msg);
}

/* fairseq's WordStat. */
typedef struct {
  char *word;
  gboolean is_bpe;
  int64_t count, missing_next;
  double log_prob, next_word_prob;
} WordStat;

static void word_stat_free(gpointer p)
{
  WordStat *w = p;
  g_free(w->word);
  g_free(w);
}

typedef struct {
  const EvalOptions *o;
  const MoelmDictionary *dict;
  MoelmBpeKind bpe;
  const MoelmGpt2Bpe *gpt2;
  GHashTable *by_word; /* word → WordStat* (owned by `order`) */
  GPtrArray *order;    /* first-seen order, as a Python dict */
  gboolean words;      /* --output-word-probs or --output-word-stats */
  MoelmProgress bar;   /* blocks scored, with the running loss */
  gsize rows;
  double nll, ntokens;
} WordReport;

static gboolean report_row(const MoelmScoredRow *row, gpointer data, GError **error)
{
  (void)error;
  WordReport *r = data;
  GPtrArray *words = moelm_row_words(r->dict, r->bpe, r->gpt2, row->targets, row->lprobs, row->n);
  if (r->o->output_word_probs) {
    GString *line = g_string_new(NULL);
    g_string_printf(line, "%zu ", row->block);
    for (guint i = 0; i < words->len; i++) {
      const MoelmWordProb *w = g_ptr_array_index(words, i);
      g_string_append_printf(line, "%s%s [%2f]", i ? "\t" : "", w->word, (double)w->lprob);
    }
    say("%s", line->str);
    g_string_free(line, TRUE);
  }
  if (r->o->output_word_stats)
    for (guint i = 0; i < words->len; i++) {
      const MoelmWordProb *w = g_ptr_array_index(words, i);
      WordStat *ws = g_hash_table_lookup(r->by_word, w->word);
      if (ws == NULL) {
        ws = g_new0(WordStat, 1);
        ws->word = g_strdup(w->word);
        ws->is_bpe = w->is_bpe;
        g_ptr_array_add(r->order, ws);
        g_hash_table_insert(r->by_word, ws->word, ws);
      }
      if (w->has_next)
        ws->next_word_prob += w->next_lprob;
      else
        ws->missing_next++;
      ws->log_prob += w->lprob;
      ws->count++;
    }
  g_ptr_array_unref(words);
  return TRUE;
}

/* Every scored row: the progress line, then the word report when one was asked for. */
static gboolean eval_row(const MoelmScoredRow *row, gpointer data, GError **error)
{
  WordReport *r = data;
  r->rows++;
  for (int64_t j = 0; j < row->n; j++)
    r->nll -= row->lprobs[j];
  r->ntokens += (double)row->n;
  char *extra = g_strdup_printf("loss=%.3f", r->ntokens > 0 ? r->nll / r->ntokens / G_LN2 : 0.0);
  moelm_progress_update(&r->bar, (double)r->rows, extra);
  g_free(extra);
  return r->words ? report_row(row, data, error) : TRUE;
}

static gint by_count_desc(gconstpointer a, gconstpointer b)
{
  const WordStat *x = *(WordStat *const *)a, *y = *(WordStat *const *)b;
  return x->count < y->count ? 1 : x->count > y->count ? -1 : 0;
}

static void print_word_stats(GPtrArray *order)
{
  g_ptr_array_sort(order, by_count_desc); /* stable, as Python's sorted() */
  for (guint i = 0; i < order->len; i++) {
    const WordStat *w = g_ptr_array_index(order, i);
    char *lp = moelm_py_repr_float(w->log_prob);
    char *next = w->count - w->missing_next > 0 ? moelm_py_repr_float(w->next_word_prob) : g_strdup("0");
    say("%s\t%" G_GINT64_FORMAT "\t%s\t%s\t%s\t%" G_GINT64_FORMAT, w->word, w->count, lp,
        w->is_bpe ? "True" : "False", next, w->count - w->missing_next);
    g_free(lp);
    g_free(next);
  }
}

static gboolean check_options(const EvalOptions *o, GError **error)
{
  if (o->context_window < 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--context-window must be >= 0, got %d",
                o->context_window);
    return FALSE;
  }
  if (o->batch_size < 0 || o->max_tokens < 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--batch-size and --max-tokens must be positive");
    return FALSE;
  }
  return TRUE;
}

/* Block size and break mode: the options when given, else the checkpoint's training values. */
static gboolean resolve_blocks(const EvalOptions *o, const MoelmInference *inf, int64_t *tps, MoelmBreakMode *mode,
                               GError **error)
{
  const char *task = inf->task.name;
  const MoelmTaskFlags flags = moelm_task_flag_options_get(&o->taskflags);
  if (!moelm_inference_check_task(inf, &flags, error))
    return FALSE;
  if (o->mixture_report && !inf->task.mixture) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--mixture-report needs a --task language_model_moe checkpoint; %s is a %s checkpoint", o->path, task);
    return FALSE;
  }
  *tps = o->tps_seen ? o->tokens_per_sample : inf->task.tokens_per_sample;
  *mode = inf->task.break_mode;
  if (o->mode_seen && !moelm_break_mode_parse(o->break_mode, mode, error))
    return FALSE;
  const int max_pos = moelm_model_get_config(inf->model)->max_positions;
  if (*tps <= 0 || *tps > max_pos) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--tokens-per-sample %" G_GINT64_FORMAT " must be in 1..%d (the model's positions in %s)", *tps,
                max_pos, o->path);
    return FALSE;
  }
  if (o->context_window >= *tps) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--context-window %d must be smaller than --tokens-per-sample %" G_GINT64_FORMAT, o->context_window,
                *tps);
    return FALSE;
  }
  return TRUE;
}

/* Loss (base 2) and perplexity of a summed NLL over `count` scored tokens. */
static void loss_ppl(double nll, int64_t count, double *loss, double *ppl)
{
  *loss = count > 0 ? nll / (double)count / M_LN2 : 0.0;
  *ppl = pow(2.0, *loss);
}

/* --mixture-report: each expert alone, then the best-expert oracle (never the "Loss (base 2):"
 * wording of the real result, which stays the last line). */
static void print_mixture_report(const MoelmMixtureReport *r, int64_t count)
{
  double loss, ppl;
  for (int k = 0; k < r->K; k++) {
    loss_ppl(r->expert_nll[k], count, &loss, &ppl);
    say("expert %d alone (prior ignored): loss (base 2) %.4f, perplexity %.2f; best expert for %" G_GINT64_FORMAT
        " of %" G_GINT64_FORMAT " blocks; mean posterior %.4f",
        k, loss, ppl, r->best_rows[k], r->rows, r->rows > 0 ? r->post_mass[k] / (double)r->rows : 0.0);
  }
  GString *a = g_string_new(NULL);
  for (int k = 0; k < r->K; k++)
    g_string_append_printf(a, "%sexpert %d %" G_GINT64_FORMAT, k ? ", " : "", k, r->assigned[k]);
  say("assigned by training's rule (%s): %s", r->by_document ? "whole documents" : "blocks", a->str);
  g_string_free(a, TRUE);
  if (r->has_accuracy) {
    for (int d = 0; d < r->n_domains; d++) { /* which expert took which domain */
      GString *row = g_string_new(NULL);
      int64_t docs = 0;
      for (int k = 0; k < r->K; k++) {
        const int64_t n = r->domain_counts[(gsize)d * r->K + k];
        docs += n;
        g_string_append_printf(row, "%sexpert %d %" G_GINT64_FORMAT, k ? ", " : "", k, n);
      }
      say("domain %s (%" G_GINT64_FORMAT " documents): %s", r->domain_names[d], docs, row->str);
      g_string_free(row, TRUE);
    }
    say("domain accuracy (documents by their posterior, best one-to-one matching of experts to domains): %.4f; "
        "per-domain average %.4f",
        r->accuracy, r->per_domain);
  }
  loss_ppl(r->oracle_nll, count, &loss, &ppl);
  say("ORACLE best expert per block (chosen by looking at the scored tokens; not a model's perplexity): "
      "loss (base 2) %.4f, perplexity %.2f",
      loss, ppl);
}

static gboolean run(const EvalOptions *o, const char *data, GError **error)
{
  MoelmBpeKind bpe;
  MoelmGpt2Bpe *gpt2 = NULL;
  if (!moelm_bpe_kind_parse(o->post_process, &bpe, error) || !moelm_bpe_options_load(&o->bpe, &gpt2, error))
    return FALSE;
  if (o->bpe.bpe && !gpt2)
    moelm_warn("moelm.args", "--bpe %s has no effect on eval-lm (only --bpe gpt2 shows tokens as text)", o->bpe.bpe);
  if (bpe == MOELM_BPE_GPT2 && gpt2 == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--remove-bpe gpt2 needs --bpe gpt2 and its files");
    return FALSE;
  }
  say("loading model(s) from %s", o->path);
  MoelmBackendSpec spec;
  if (!moelm_backend_options_apply(&o->backend, &spec, error))
    return FALSE;
  MoelmInference *inf = moelm_inference_open_with_overrides(o->path, data, &spec, o->ckpt_opts.model_overrides,
                                                            error);
  if (inf == NULL) {
    moelm_gpt2_bpe_free(gpt2);
    return FALSE;
  }
  say("running on %s: %s", inf->be->description, inf->be->reason);
  MoelmLmSplit *split = NULL;
  gboolean ok = FALSE;
  int64_t tps;
  MoelmBreakMode mode;
  if (!resolve_blocks(o, inf, &tps, &mode, error))
    goto out;
  say("num. model params: %zu", moelm_model_num_params(inf->model));
  char *moefied = NULL;
  if (!moelm_moefy_top_k_apply(&o->moefy, inf->model, &moefied, error))
    goto out;
  if (moefied)
    say("%s", moefied);
  g_free(moefied);
  const int K = inf->task.mixture ? inf->task.mix.num_experts : 1;
  if (inf->task.mixture)
    say("mixture of %d experts (--method %s), %s", K, inf->task.method,
        inf->gate ? "prior from the gating network" : "uniform prior");
  /* fairseq: the blocks shrink by the context window, which fills the rest of each row */
  split = moelm_lm_split_open(data, o->gen_subset, tps - o->context_window, mode, moelm_dictionary_size(inf->dict),
                              error);
  if (split == NULL)
    goto out;
  say("%s %s %zu examples", data, o->gen_subset, moelm_lm_split_n_blocks(split));
  if (moelm_lm_split_n_blocks(split) == 0) { /* fairseq would report a perplexity of 1 */
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: the split is empty: no tokens to score",
                split->prefix);
    goto out;
  }

  const int64_t V = moelm_dictionary_size(inf->dict);
  /* a mixture runs every row K times */
  const int64_t default_rows = MIN(CALL_TOKENS / (tps * K), LOGITS_BUDGET / (tps * V * K));
  MoelmScoreOptions so = {
    .context_window = o->context_window,
    .tokens_per_sample = tps - o->context_window,
    .max_sentences = o->batch_size > 0 ? o->batch_size : (int)MAX(1, default_rows),
    .max_tokens = o->max_tokens > 0 ? o->max_tokens : 36000,
    .dict = inf->dict,
    .bpe = bpe,
    .gpt2 = gpt2,
  };
  WordReport wr = {.o = o, .dict = inf->dict, .bpe = bpe, .gpt2 = gpt2,
                   .by_word = g_hash_table_new(g_str_hash, g_str_equal),
                   .order = g_ptr_array_new_with_free_func(word_stat_free),
                   .words = o->output_word_probs || o->output_word_stats};
  char *what = g_strdup_printf("%s on '%s'", o->path, o->gen_subset);
  moelm_progress_start(&wr.bar, "moelm eval-lm", what, (double)moelm_lm_split_n_blocks(split), "blocks");
  moelm_progress_set_enabled(&wr.bar, wr.bar.enabled && !o->no_progress_bar && strcmp(o->log_format, "none") != 0);
  g_free(what);
  MoelmScoreResult res;
  MoelmMixtureReport mr;
  moelm_mixture_report_init(&mr, K);
  if (inf->task.mixture)
    ok = moelm_mixture_score_split(inf->model, inf->gate, &inf->task.mix, split, &so, LOGITS_BUDGET,
                                   eval_row, &wr, &res, &mr, error);
  else
    ok = moelm_score_split(inf->model, split, &so, eval_row, &wr, &res, error);
  moelm_progress_finish(&wr.bar);
  if (ok && (res.count == 0 || !isfinite(res.nll_sum))) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FAILED, "%s: %s", o->path,
                res.count == 0 ? "no token was scored" : "the loss is not a finite number");
    ok = FALSE;
  }
  if (ok) {
    say("Evaluated %" G_GINT64_FORMAT " tokens in %.1fs (%.2f tokens/s)", res.ntokens, res.seconds,
        res.seconds > 0 ? (double)res.ntokens / res.seconds : 0.0);
    if (o->output_word_stats)
      print_word_stats(wr.order);
    if (o->mixture_report)
      print_mixture_report(&mr, res.count);
    say("Loss (base 2): %.4f, Perplexity: %.2f", moelm_score_loss_base2(&res), moelm_score_perplexity(&res));
  }
  moelm_mixture_report_clear(&mr);
  g_hash_table_unref(wr.by_word);
  g_ptr_array_unref(wr.order);
out:
  moelm_lm_split_free(split);
  moelm_inference_free(inf);
  moelm_gpt2_bpe_free(gpt2);
  return ok;
}

int moelm_cmd_eval_lm(int argc, char **argv)
{
  EvalOptions o;
  options_init(&o);
  const MoelmArgSpec *tables[] = {eval_table(&o), moelm_task_flag_options_table(&o.taskflags),
                                  moelm_moefy_top_k_table(&o.moefy), moelm_checkpoint_options_table(&o.ckpt_opts),
                                  moelm_backend_options_table(&o.backend), moelm_bpe_options_table(&o.bpe, TRUE),
                                  moelm_ignored_options, NULL};
  GPtrArray *pos = g_ptr_array_new();
  gboolean help = FALSE;
  GError *error = NULL;
  int rc = 0;
  if (!moelm_args_parse("moelm eval-lm", tables, argc, argv, 1, pos, &help, &error)) {
    rc = moelm_cli_fail("eval-lm", error, 2);
    goto out;
  }
  if (help) {
    moelm_args_print_help(stdout, "moelm eval-lm", "DATA --path CHECKPOINT [options]", tables);
    goto out;
  }
  if (pos->len != 1 || o.path == NULL) {
    error = g_error_new(MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s",
                        pos->len != 1 ? "expected exactly one DATA directory"
                                      : "the following arguments are required: --path");
    rc = moelm_cli_fail("eval-lm", error, 2);
    goto out;
  }
  if (o.log_file && !moelm_log_open_file(o.log_file, &error)) {
    rc = moelm_cli_fail("eval-lm", error, 1);
    goto out;
  }
  if (!check_options(&o, &error) || !run(&o, g_ptr_array_index(pos, 0), &error))
    rc = moelm_cli_fail("eval-lm", error, 1);
  fflush(stdout);
  moelm_log_close_file();
out:
  g_clear_error(&error);
  moelm_args_free_strings(tables);
  g_ptr_array_unref(pos);
  return rc;
}
