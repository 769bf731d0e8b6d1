/* moelm score — fairseq hub's `score` on the command line, for zero-shot multiple choice:
 *   moelm score DATA --path CKPT --input FILE [--bpe gpt2 --gpt2-encoder-json F --gpt2-vocab-bpe F]
 *               [--replace-newlines-with-eos] [--gen-expert K|auto] [--jsonl]
 * FILE holds one JSON object per line: {"context": "...", "choices": ["...", ...], "label": 1}
 * ("label", the index of the right choice, is optional). For each item and choice it prints
 * the choice's summed and per-token log-probabilities given the context (tasks/choice_scorer.h)
 * and, when labels are given, the accuracy: plain (highest sum) and length-normalised (highest
 * sum per character of the choice, the common harnesses' acc_norm). */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "args.h"
#include "commands.h"
#include "common_options.h"
#include "moelm/errors.h"
#include "moelm/log.h"
#include "moelm/pyformat.h"
#include "moelm/spm.h"
#include "tasks/choice_scorer.h"
#include "tasks/inference.h"

#define PROG "moelm score"

typedef struct {
  char *path, *input, *gen_expert, *spm_model;
  gboolean replace_newlines, jsonl;
  MoelmBackendOptions backend;
  MoelmBpeOptions bpe;
  MoelmTaskFlagOptions taskflags;
  MoelmMoefyTopKOption moefy;
  MoelmCheckpointOptions ckpt_opts;
} ScoreOptions;

typedef struct {
  gint64 items, labelled, correct, correct_norm;
} Tally;

/* One item read from the input. */
typedef struct {
  const char *context;
  GPtrArray *choices; /* const char* (owned by the JSON) */
  gint64 label;       /* -1: none */
} Item;

static gboolean parse_item(JsonNode *root, Item *it, GError **error)
{
  it->label = -1;
  it->choices = g_ptr_array_new();
  JsonObject *o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  JsonNode *ctx = o ? json_object_get_member(o, "context") : NULL, *ch = o ? json_object_get_member(o, "choices") : NULL;
  JsonNode *label = o ? json_object_get_member(o, "label") : NULL;
  const char *problem = NULL;
  if (o == NULL)
    problem = "not a JSON object";
  else if (ctx == NULL || json_node_get_value_type(ctx) != G_TYPE_STRING)
    problem = "\"context\" must be a string";
  else if (ch == NULL || !JSON_NODE_HOLDS_ARRAY(ch) || json_array_get_length(json_node_get_array(ch)) == 0)
    problem = "\"choices\" must be a non-empty array of strings";
  else {
    it->context = json_node_get_string(ctx);
    JsonArray *a = json_node_get_array(ch);
    for (guint i = 0; i < json_array_get_length(a) && problem == NULL; i++) {
      JsonNode *c = json_array_get_element(a, i);
      if (!JSON_NODE_HOLDS_VALUE(c) || json_node_get_value_type(c) != G_TYPE_STRING)
        problem = "\"choices\" must be a non-empty array of strings";
      else
        g_ptr_array_add(it->choices, (gpointer)json_node_get_string(c));
    }
    if (problem == NULL && label && !JSON_NODE_HOLDS_NULL(label)) {
      if (!JSON_NODE_HOLDS_VALUE(label) || json_node_get_value_type(label) != G_TYPE_INT64 ||
          json_node_get_int(label) < 0 || json_node_get_int(label) >= (gint64)it->choices->len)
        problem = "\"label\" must be the index of a choice (0, 1, ...)";
      else
        it->label = json_node_get_int(label);
    }
  }
  if (problem)
    g_set_error_literal(error, MOELM_ERROR, MOELM_ERROR_FORMAT, problem);
  return problem == NULL;
}

/* A text on one line: \n, \r and \t written as escapes. */
static char *one_line(const char *s)
{
  GString *o = g_string_new(NULL);
  for (; *s; s++) {
    if (*s == '\n')
      g_string_append(o, "\\n");
    else if (*s == '\r')
      g_string_append(o, "\\r");
    else if (*s == '\t')
      g_string_append(o, "\\t");
    else
      g_string_append_c(o, *s);
  }
  return g_string_free(o, FALSE);
}

static int argmax(const double *v, guint n)
{
  guint best = 0;
  for (guint i = 1; i < n; i++)
    if (v[i] > v[best])
      best = i;
  return (int)best;
}

static void print_item(const ScoreOptions *o, gint64 id, const Item *it, const MoelmChoiceScore *sc, int pred,
                       int pred_norm)
{
  if (o->jsonl) {
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "id");
    json_builder_add_int_value(b, id);
    json_builder_set_member_name(b, "scores");
    json_builder_begin_array(b);
    for (guint j = 0; j < it->choices->len; j++) {
      json_builder_begin_object(b);
      json_builder_set_member_name(b, "sum");
      json_builder_add_double_value(b, sc[j].sum);
      json_builder_set_member_name(b, "tokens");
      json_builder_add_int_value(b, sc[j].n);
      json_builder_set_member_name(b, "positional_scores");
      json_builder_begin_array(b);
      for (int k = 0; k < sc[j].n; k++)
        json_builder_add_double_value(b, sc[j].lprobs[k]);
      json_builder_end_array(b);
      if (sc[j].expert >= 0) {
        json_builder_set_member_name(b, "expert");
        json_builder_add_int_value(b, sc[j].expert);
      }
      json_builder_end_object(b);
    }
    json_builder_end_array(b);
    json_builder_set_member_name(b, "pred");
    json_builder_add_int_value(b, pred);
    json_builder_set_member_name(b, "pred_norm");
    json_builder_add_int_value(b, pred_norm);
    if (it->label >= 0) {
      json_builder_set_member_name(b, "label");
      json_builder_add_int_value(b, it->label);
    }
    json_builder_end_object(b);
    JsonGenerator *g = json_generator_new();
    JsonNode *root = json_builder_get_root(b);
    json_generator_set_root(g, root);
    char *text = json_generator_to_data(g, NULL);
    printf("%s\n", text);
    g_free(text);
    json_node_unref(root);
    g_object_unref(g);
    g_object_unref(b);
    return;
  }
  char *ctx = one_line(it->context);
  printf("S-%" G_GINT64_FORMAT "\t%s\n", id, ctx);
  g_free(ctx);
  for (guint j = 0; j < it->choices->len; j++) {
    char *c = one_line(it->choices->pdata[j]);
    printf("C-%" G_GINT64_FORMAT "-%u\t%.4f\t%d\t%s", id, j, sc[j].sum, sc[j].n, c);
    if (sc[j].expert >= 0)
      printf("\texpert=%d", sc[j].expert);
    printf("\nP-%" G_GINT64_FORMAT "-%u\t", id, j);
    for (int k = 0; k < sc[j].n; k++)
      printf("%s%.4f", k ? " " : "", (double)sc[j].lprobs[k]);
    putchar('\n');
    g_free(c);
  }
  printf("A-%" G_GINT64_FORMAT "\t%d\t%d", id, pred, pred_norm);
  if (it->label >= 0)
    printf("\t%" G_GINT64_FORMAT, it->label);
  putchar('\n');
}

static gboolean score_item(const ScoreOptions *o, const MoelmTextEncoder *enc, const MoelmChoiceScorer *scorer,
                           gint64 id, const Item *it, Tally *tally, GError **error)
{
  const guint n = it->choices->len;
  MoelmChoiceScore *sc = g_new0(MoelmChoiceScore, n);
  double *sum = g_new(double, n), *norm = g_new(double, n);
  gboolean ok = TRUE;
  for (guint j = 0; ok && j < n; j++) {
    GArray *tokens = g_array_new(FALSE, FALSE, sizeof(int32_t));
    int n_ctx = 0;
    ok = moelm_encode_continuation(enc, it->context, it->choices->pdata[j], tokens, &n_ctx, error) &&
         moelm_score_continuation(scorer, (const int32_t *)(void *)tokens->data, (int)tokens->len, n_ctx, &sc[j],
                                  error);
    if (ok && sc[j].n == 0) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "choice %u has no tokens to score", j);
      ok = FALSE;
    }
    sum[j] = sc[j].sum;
    const glong chars = g_utf8_strlen(it->choices->pdata[j], -1);
    norm[j] = sc[j].sum / (double)MAX(chars, 1);
    g_array_unref(tokens);
  }
  if (ok) {
    const int pred = argmax(sum, n), pred_norm = argmax(norm, n);
    print_item(o, id, it, sc, pred, pred_norm);
    tally->items++;
    if (it->label >= 0) {
      tally->labelled++;
      tally->correct += pred == it->label;
      tally->correct_norm += pred_norm == it->label;
    }
  }
  for (guint j = 0; j < n; j++)
    moelm_choice_score_clear(&sc[j]);
  g_free(sc);
  g_free(sum);
  g_free(norm);
  return ok;
}

static gboolean score_file(const ScoreOptions *o, const MoelmTextEncoder *enc, const MoelmChoiceScorer *scorer,
                           Tally *tally, GError **error)
{
  char *text = NULL;
  gsize len = 0;
  GError *ferr = NULL;
  if (!g_file_get_contents(o->input, &text, &len, &ferr)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s", ferr->message);
    g_error_free(ferr);
    return FALSE;
  }
  gboolean ok = TRUE;
  if (memchr(text, 0, len) != NULL || !g_utf8_validate(text, (gssize)len, NULL)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: not UTF-8 text", o->input);
    ok = FALSE;
  }
  char **lines = ok ? g_strsplit(text, "\n", -1) : NULL;
  for (guint i = 0; ok && lines[i]; i++) {
    if (g_strstrip(lines[i])[0] == '\0')
      continue;
    JsonParser *p = json_parser_new();
    Item it = {0};
    GError *perr = NULL;
    ok = json_parser_load_from_data(p, lines[i], -1, &perr);
    if (!ok) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s:%u: not JSON: %s", o->input, i + 1, perr->message);
      g_error_free(perr);
    } else if (!(ok = parse_item(json_parser_get_root(p), &it, error)) ||
               !(ok = score_item(o, enc, scorer, tally->items, &it, tally, error)))
      moelm_error_prefix(error, "%s:%u", o->input, i + 1);
    if (it.choices)
      g_ptr_array_unref(it.choices);
    g_object_unref(p);
  }
  if (ok && tally->items == 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: no items", o->input);
    ok = FALSE;
  }
  g_strfreev(lines);
  g_free(text);
  return ok;
}

static void print_summary(const ScoreOptions *o, const Tally *t)
{
  if (t->labelled == 0)
    return;
  const double acc = (double)t->correct / (double)t->labelled, accn = (double)t->correct_norm / (double)t->labelled;
  if (o->jsonl)
    printf("{\"items\":%" G_GINT64_FORMAT ",\"accuracy\":%.6f,\"accuracy_norm\":%.6f}\n", t->labelled, acc, accn);
  else
    printf("accuracy %.4f (%" G_GINT64_FORMAT " of %" G_GINT64_FORMAT "), length-normalised accuracy %.4f (%"
           G_GINT64_FORMAT " of %" G_GINT64_FORMAT ")\n",
           acc, t->correct, t->labelled, accn, t->correct_norm, t->labelled);
}

/* --gen-expert K | auto on a mixture; nothing: the exact marginal. */
static gboolean choose_expert(const ScoreOptions *o, const MoelmInference *inf, int *expert, GError **error)
{
  *expert = MOELM_CHOICE_MARGINAL;
  if (o->gen_expert == NULL)
    return TRUE;
  guint64 k = 0;
  const gboolean is_auto = strcmp(o->gen_expert, "auto") == 0;
  if (!inf->task.mixture) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--gen-expert needs a --task language_model_moe "
                "checkpoint; %s is not one", o->path);
    return FALSE;
  }
  if (!is_auto && (!g_ascii_string_to_unsigned(o->gen_expert, 10, 0, (guint64)inf->task.mix.num_experts - 1, &k, NULL))) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--gen-expert %s: choose auto or an expert 0..%d",
                o->gen_expert, inf->task.mix.num_experts - 1);
    return FALSE;
  }
  *expert = is_auto ? MOELM_CHOICE_AUTO : (int)k;
  return TRUE;
}

static gboolean run(const ScoreOptions *o, const char *data, GError **error)
{
  MoelmGpt2Bpe *gpt2 = NULL;
  MoelmSpm *spm = NULL;
  MoelmInference *inf = NULL;
  gboolean ok = FALSE;
  if (o->bpe.bpe && strcmp(o->bpe.bpe, "gpt2") != 0 && strcmp(o->bpe.bpe, "sentencepiece") != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "--bpe %s is not supported (gpt2 or sentencepiece)",
                o->bpe.bpe);
    return FALSE;
  }
  if (!moelm_bpe_options_load(&o->bpe, &gpt2, error))
    return FALSE;
  char *spm_path = o->spm_model ? g_strdup(o->spm_model) : g_build_filename(data, "spm.model", NULL);
  if (gpt2 == NULL && (o->spm_model || g_strcmp0(o->bpe.bpe, "sentencepiece") == 0 ||
                       g_file_test(spm_path, G_FILE_TEST_EXISTS)) &&
      (spm = moelm_spm_load(spm_path, error)) == NULL)
    goto out;
  MoelmBackendSpec spec;
  if (!moelm_backend_options_apply(&o->backend, &spec, error))
    goto out;
  inf = moelm_inference_open_with_overrides(o->path, data, &spec, o->ckpt_opts.model_overrides, error);
  const MoelmTaskFlags flags = moelm_task_flag_options_get(&o->taskflags);
  MoelmChoiceScorer scorer = {0};
  char *moefied = NULL;
  if (inf == NULL || !moelm_inference_check_task(inf, &flags, error) || !choose_expert(o, inf, &scorer.expert, error) ||
      !moelm_moefy_top_k_apply(&o->moefy, inf->model, &moefied, error))
    goto out;
  if (moefied)
    moelm_info("moelm.score", "%s", moefied);
  g_free(moefied);
  scorer.model = inf->model;
  scorer.mix = inf->task.mixture ? &inf->task.mix : NULL;
  scorer.gate = inf->gate;
  const MoelmTextEncoder enc = {inf->dict, gpt2, spm, o->replace_newlines};
  Tally tally = {0};
  ok = score_file(o, &enc, &scorer, &tally, error);
  if (ok)
    print_summary(o, &tally);
out:
  g_free(spm_path);
  moelm_inference_free(inf);
  if (spm)
    moelm_spm_free(spm);
  moelm_gpt2_bpe_free(gpt2);
  return ok;
}

int moelm_cmd_score(int argc, char **argv)
{
  ScoreOptions o;
  memset(&o, 0, sizeof o);
  moelm_backend_options_init(&o.backend);
  moelm_task_flag_options_init(&o.taskflags);
  const MoelmArgSpec spec[] = {
    {"--path", NULL, MOELM_ARG_STRING, &o.path, NULL, "the checkpoint (required)", NULL},
    {"--input", NULL, MOELM_ARG_STRING, &o.input, NULL,
     "JSONL items {\"context\", \"choices\", \"label\"} (required)", NULL},
    {"--replace-newlines-with-eos", "--replace-newline-with-eos", MOELM_ARG_FLAG, &o.replace_newlines, NULL,
     "encode each line with its own </s>, as fairseq's hub (the models never saw a newline)", NULL},
    {"--gen-expert", NULL, MOELM_ARG_STRING, &o.gen_expert, NULL,
     "mixture: score under expert K, or the most probable one given the context (auto); default: the marginal",
     NULL},
    {"--sentencepiece-model", NULL, MOELM_ARG_STRING, &o.spm_model, NULL, "SentencePiece model (DATA/spm.model)",
     NULL},
    {"--jsonl", NULL, MOELM_ARG_FLAG, &o.jsonl, NULL, "one JSON object per item (and one for the accuracy)", NULL},
    {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  const MoelmArgSpec *tables[] = {spec, moelm_bpe_options_table(&o.bpe, TRUE),
                                  moelm_task_flag_options_table(&o.taskflags), moelm_moefy_top_k_table(&o.moefy),
                                  moelm_checkpoint_options_table(&o.ckpt_opts),
                                  moelm_backend_options_table(&o.backend),
                                  moelm_ignored_options, NULL};
  GPtrArray *pos = g_ptr_array_new();
  gboolean help = FALSE;
  GError *error = NULL;
  int rc = 0;
  if (!moelm_args_parse(PROG, tables, argc, argv, 1, pos, &help, &error))
    rc = moelm_cli_fail("score", error, 2);
  else if (help)
    moelm_args_print_help(stdout, PROG, "DATA --path CKPT --input FILE [options]", tables);
  else if (pos->len != 1 || o.path == NULL || o.input == NULL) {
    error = g_error_new_literal(MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                                pos->len != 1 ? "expected exactly one DATA directory (the one with dict.txt)"
                                              : "the following arguments are required: --path, --input");
    rc = moelm_cli_fail("score", error, 2);
  } else if (!run(&o, pos->pdata[0], &error))
    rc = moelm_cli_fail("score", error, 1);
  fflush(stdout);
  g_clear_error(&error);
  moelm_args_free_strings(tables);
  g_ptr_array_unref(pos);
  return rc;
}
