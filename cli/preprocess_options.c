/* moelm preprocess — fairseq-preprocess's command line (fairseq 0.12) and the Namespace
 * line it logs first. fairseq's common options (logging, precision, --seed, --user-dir, ...)
 * mean nothing to preprocessing, in fairseq too: they are accepted with a warning, and shown
 * with their values in the Namespace line. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "moelm/errors.h"
#include "moelm/log.h"
#include "moelm/pyformat.h"
#include "preprocess.h"

#define PROG "moelm preprocess"

typedef enum { NS_FLAG, NS_INT, NS_FLOAT, NS_STR } NsKind;

/* A fairseq option that has no effect on preprocessing, with its Namespace key and the text
 * argparse prints when it is not given. */
typedef struct {
  const char *name;
  const char *key;
  NsKind kind;
  const char *fallback;
} CommonOption;

static const CommonOption common_options[] = {
    {"--no-progress-bar", "no_progress_bar", NS_FLAG, "False"},
    {"--log-interval", "log_interval", NS_INT, "100"},
    {"--log-format", "log_format", NS_STR, "None"},
    {"--log-file", "log_file", NS_STR, "None"},
    {"--aim-repo", "aim_repo", NS_STR, "None"},
    {"--aim-run-hash", "aim_run_hash", NS_STR, "None"},
    {"--tensorboard-logdir", "tensorboard_logdir", NS_STR, "None"},
    {"--wandb-project", "wandb_project", NS_STR, "None"},
    {"--azureml-logging", "azureml_logging", NS_FLAG, "False"},
    {"--seed", "seed", NS_INT, "1"},
    {"--cpu", "cpu", NS_FLAG, "False"},
    {"--tpu", "tpu", NS_FLAG, "False"},
    {"--bf16", "bf16", NS_FLAG, "False"},
    {"--memory-efficient-bf16", "memory_efficient_bf16", NS_FLAG, "False"},
    {"--fp16", "fp16", NS_FLAG, "False"},
    {"--memory-efficient-fp16", "memory_efficient_fp16", NS_FLAG, "False"},
    {"--fp16-no-flatten-grads", "fp16_no_flatten_grads", NS_FLAG, "False"},
    {"--fp16-init-scale", "fp16_init_scale", NS_INT, "128"},
    {"--fp16-scale-window", "fp16_scale_window", NS_INT, "None"},
    {"--fp16-scale-tolerance", "fp16_scale_tolerance", NS_FLOAT, "0.0"},
    {"--on-cpu-convert-precision", "on_cpu_convert_precision", NS_FLAG, "False"},
    {"--min-loss-scale", "min_loss_scale", NS_FLOAT, "0.0001"},
    {"--threshold-loss-scale", "threshold_loss_scale", NS_FLOAT, "None"},
    {"--amp", "amp", NS_FLAG, "False"},
    {"--amp-batch-retries", "amp_batch_retries", NS_INT, "2"},
    {"--amp-init-scale", "amp_init_scale", NS_INT, "128"},
    {"--amp-scale-window", "amp_scale_window", NS_INT, "None"},
    {"--user-dir", "user_dir", NS_STR, "None"},
    {"--empty-cache-freq", "empty_cache_freq", NS_INT, "0"},
    {"--all-gather-list-size", "all_gather_list_size", NS_INT, "16384"},
    {"--model-parallel-size", "model_parallel_size", NS_INT, "1"},
    {"--quantization-config-path", "quantization_config_path", NS_STR, "None"},
    {"--profile", "profile", NS_FLAG, "False"},
    {"--reset-logging", "reset_logging", NS_FLAG, "False"},
    {"--suppress-crashes", "suppress_crashes", NS_FLAG, "False"},
    {"--use-plasma-view", "use_plasma_view", NS_FLAG, "False"},
    {"--plasma-path", "plasma_path", NS_STR, "'/tmp/plasma'"},
    {"--criterion", "criterion", NS_STR, "'cross_entropy'"},
    {"--tokenizer", "tokenizer", NS_STR, "None"},
    {"--optimizer", "optimizer", NS_STR, "None"},
    {"--lr-scheduler", "lr_scheduler", NS_STR, "'fixed'"},
    {"--scoring", "scoring", NS_STR, "'bleu'"},
};
#define N_COMMON G_N_ELEMENTS(common_options)

/* fairseq's --dataset-impl and --bpe choices. */
static const char *const dataset_impls[] = {"raw", "lazy", "cached", "mmap", "fasta", "huffman", NULL};
static const char *const bpe_names[] = {"byte_bpe", "bytes",       "characters", "fastbpe",      "gpt2",
                                        "bert",     "hf_byte_bpe", "sentencepiece", "subword_nmt", NULL};

typedef struct {
  gboolean flag[N_COMMON];
  char *value[N_COMMON];
  gboolean seen[N_COMMON];
} CommonValues;

static int usage_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static int usage_error(const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  /* The parser's messages start with the program name; print it once. */
  const char *text = g_str_has_prefix(msg, PROG ": ") ? msg + strlen(PROG ": ") : msg;
  char *shown = moelm_escape_controls(text, 0); /* one line, even for an argument with a newline */
  fprintf(stderr, PROG ": error: %s\n", shown);
  g_free(shown);
  g_free(msg);
  return 2;
}

static char *repr_int(int v) { return g_strdup_printf("%d", v); }
static char *repr_bool(gboolean v) { return g_strdup(v ? "True" : "False"); }

static void add_item(GPtrArray *items, const char *key, char *value)
{
  g_ptr_array_add(items, g_strdup_printf("%s=%s", key, value));
  g_free(value);
}

/* The Namespace text of a common option's value, or NULL after printing a usage error. */
static char *common_value_repr(const CommonOption *c, const CommonValues *v, gsize i)
{
  if (c->kind == NS_FLAG)
    return g_strdup(v->flag[i] ? "True" : c->fallback);
  if (!v->seen[i])
    return g_strdup(c->fallback);
  const char *s = v->value[i];
  char *end = NULL;
  errno = 0;
  if (c->kind == NS_INT) {
    long long n = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno) {
      usage_error("argument %s: invalid int value: '%s'", c->name, s);
      return NULL;
    }
    return g_strdup_printf("%lld", n);
  }
  if (c->kind == NS_FLOAT) {
    double d = g_ascii_strtod(s, &end);
    if (end == s || *end != '\0') {
      usage_error("argument %s: invalid float value: '%s'", c->name, s);
      return NULL;
    }
    return moelm_py_repr_float(d);
  }
  return moelm_py_repr_str(s);
}

/* The Namespace line: the options moelm uses, the common ones, in argparse's sorted order. */
static gboolean build_namespace(MoelmPreprocessConfig *o, const CommonValues *cv)
{
  GPtrArray *items = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GString) ignored = g_string_new(NULL); /* one warning line for all of them */
  for (gsize i = 0; i < N_COMMON; i++) {
    if (common_options[i].kind != NS_FLAG && cv->seen[i])
      g_string_append_printf(ignored, "%s%s %s", ignored->len ? ", " : "", common_options[i].name, cv->value[i]);
    else if (cv->flag[i])
      g_string_append_printf(ignored, "%s%s", ignored->len ? ", " : "", common_options[i].name);
    char *value = common_value_repr(&common_options[i], cv, i);
    if (value == NULL) {
      g_ptr_array_unref(items);
      return FALSE;
    }
    add_item(items, common_options[i].key, value);
  }
  if (ignored->len)
    moelm_warn("moelm.args", "moelm preprocess: fairseq options with no effect on preprocessing, ignored: %s",
               ignored->str);
  add_item(items, "align_suffix", moelm_py_repr_str(o->align_suffix));
  add_item(items, "alignfile", moelm_py_repr_str(o->alignfile));
  add_item(items, "bpe", moelm_py_repr_str(o->bpe));
  add_item(items, "dataset_impl", moelm_py_repr_str(o->dataset_impl));
  add_item(items, "destdir", moelm_py_repr_str(o->destdir));
  add_item(items, "dict_only", repr_bool(o->dict_only));
  if (o->gpt2) { /* fairseq adds GPT2BPEConfig's fields with --bpe gpt2 */
    add_item(items, "gpt2_encoder_json", moelm_py_repr_str(o->gpt2_encoder_json));
    add_item(items, "gpt2_vocab_bpe", moelm_py_repr_str(o->gpt2_vocab_bpe));
  }
  add_item(items, "joined_dictionary", repr_bool(o->joined_dictionary));
  add_item(items, "nwordssrc", repr_int(o->nwordssrc));
  add_item(items, "nwordstgt", repr_int(o->nwordstgt));
  add_item(items, "only_source", repr_bool(o->only_source));
  add_item(items, "padding_factor", repr_int(o->padding_factor));
  if (o->sentencepiece_keep_whitespace) /* moelm's extensions: only shown when used */
    add_item(items, "sentencepiece_keep_whitespace", repr_bool(TRUE));
  if (o->sentencepiece_model)
    add_item(items, "sentencepiece_model", moelm_py_repr_str(o->sentencepiece_model));
  add_item(items, "source_lang", moelm_py_repr_str(o->source_lang));
  add_item(items, "srcdict", moelm_py_repr_str(o->srcdict));
  add_item(items, "target_lang", moelm_py_repr_str(o->target_lang));
  add_item(items, "task", moelm_py_repr_str(o->task));
  add_item(items, "testpref", moelm_py_repr_str(o->testpref));
  add_item(items, "tgtdict", moelm_py_repr_str(o->tgtdict));
  add_item(items, "thresholdsrc", repr_int(o->thresholdsrc));
  add_item(items, "thresholdtgt", repr_int(o->thresholdtgt));
  add_item(items, "trainpref", moelm_py_repr_str(o->trainpref));
  add_item(items, "validpref", moelm_py_repr_str(o->validpref));
  add_item(items, "workers", repr_int(o->workers));
  o->namespace_line = moelm_py_namespace_line(items);
  g_ptr_array_unref(items);
  return TRUE;
}

/* Combinations fairseq would reject or moelm does not do. Returns 0 when fine. */
static int check_options(MoelmPreprocessConfig *o)
{
  if (!g_strv_contains(dataset_impls, o->dataset_impl))
    return usage_error("argument --dataset-impl: invalid choice: '%s' (choose from raw, lazy, cached, mmap, "
                       "fasta, huffman)",
                       o->dataset_impl);
  if (strcmp(o->dataset_impl, "mmap") != 0)
    return usage_error("--dataset-impl %s is not supported: moelm writes only fairseq's mmap format "
                       "(--dataset-impl mmap, the default)",
                       o->dataset_impl);
  if (!o->only_source)
    return usage_error("--only-source is required: moelm preprocesses language-model data, not translation "
                       "pairs");
  if (o->bpe && !g_strv_contains(bpe_names, o->bpe))
    return usage_error("argument --bpe: invalid choice: '%s' (choose from byte_bpe, bytes, characters, "
                       "fastbpe, gpt2, bert, hf_byte_bpe, sentencepiece, subword_nmt)",
                       o->bpe);
  o->spm = o->bpe && strcmp(o->bpe, "sentencepiece") == 0;
  o->gpt2 = o->bpe && strcmp(o->bpe, "gpt2") == 0;
  if (o->bpe && !o->spm && !o->gpt2)
    moelm_warn("moelm.args", "--bpe %s has no effect on preprocessing (as in fairseq): the input must already be "
               "encoded; only --bpe sentencepiece and --bpe gpt2 encode",
               o->bpe);
  if ((o->gpt2_encoder_json || o->gpt2_vocab_bpe) && !o->gpt2)
    return usage_error("--gpt2-encoder-json/--gpt2-vocab-bpe need --bpe gpt2");
  if (o->gpt2 && (!o->gpt2_encoder_json || !o->gpt2_vocab_bpe))
    return usage_error("--bpe gpt2 needs --gpt2-encoder-json and --gpt2-vocab-bpe (GPT-2's encoder.json and "
                       "vocab.bpe; moelm ships them in data-bin/gpt2/)");
  if (o->sentencepiece_model && !o->spm)
    return usage_error("--sentencepiece-model needs --bpe sentencepiece");
  if (o->sentencepiece_keep_whitespace && !o->spm)
    return usage_error("--sentencepiece-keep-whitespace needs --bpe sentencepiece");
  if (o->sentencepiece_keep_whitespace && o->sentencepiece_model)
    return usage_error("--sentencepiece-keep-whitespace trains a model; with --sentencepiece-model the given "
                       "model decides what happens to spaces");
  if (o->spm && o->srcdict && !o->sentencepiece_model)
    return usage_error("--bpe sentencepiece with --srcdict needs the --sentencepiece-model that dictionary "
                       "was made with");
  if (!o->srcdict && !o->trainpref)
    return usage_error("--trainpref must be set if --srcdict is not specified");
  if (o->workers < 1)
    return usage_error("argument --workers: must be at least 1, not %d", o->workers);
  if (o->padding_factor < 1)
    return usage_error("argument --padding-factor: must be at least 1, not %d", o->padding_factor);
  if (o->joined_dictionary || o->tgtdict)
    moelm_warn("moelm.args", "--joined-dictionary/--tgtdict have no effect with --only-source; ignored");
  if (o->align_suffix || o->alignfile)
    moelm_warn("moelm.args", "--align-suffix/--alignfile have no effect with --only-source; ignored");
  return 0;
}

int pp_options_parse(MoelmPreprocessConfig *o, int argc, char **argv)
{
  *o = (MoelmPreprocessConfig){
      .destdir = g_strdup("data-bin"),
      .nwordssrc = -1,
      .nwordstgt = -1,
      .padding_factor = 8,
      .workers = 1,
      .dataset_impl = g_strdup("mmap"),
      .task = g_strdup("translation"),
  };
  const MoelmArgSpec main_options[] = {
      {"--source-lang", "-s", MOELM_ARG_STRING, &o->source_lang, NULL, "source language (input file suffix)", NULL},
      {"--target-lang", "-t", MOELM_ARG_STRING, &o->target_lang, NULL, "target language (ignored with --only-source)",
       NULL},
      {"--trainpref", NULL, MOELM_ARG_STRING, &o->trainpref, NULL, "train file prefix (also builds the dictionary)",
       NULL},
      {"--validpref", NULL, MOELM_ARG_STRING, &o->validpref, NULL, "comma separated valid file prefixes", NULL},
      {"--testpref", NULL, MOELM_ARG_STRING, &o->testpref, NULL, "comma separated test file prefixes", NULL},
      {"--destdir", NULL, MOELM_ARG_STRING, &o->destdir, NULL, "destination dir (default data-bin)", NULL},
      {"--srcdict", NULL, MOELM_ARG_STRING, &o->srcdict, NULL, "reuse a given dictionary", NULL},
      {"--nwordssrc", NULL, MOELM_ARG_INT, &o->nwordssrc, NULL, "number of symbols to keep, specials included",
       NULL},
      {"--thresholdsrc", NULL, MOELM_ARG_INT, &o->thresholdsrc, NULL,
       "drop words that occur fewer times than this", NULL},
      {"--padding-factor", NULL, MOELM_ARG_INT, &o->padding_factor, NULL,
       "pad the dictionary size to a multiple of this (default 8)", NULL},
      {"--workers", NULL, MOELM_ARG_INT, &o->workers, NULL, "number of parallel workers (default 1)", NULL},
      {"--dataset-impl", NULL, MOELM_ARG_STRING, &o->dataset_impl, NULL, "output format: mmap (the only one)",
       NULL},
      {"--only-source", NULL, MOELM_ARG_FLAG, &o->only_source, NULL, "language-model data (required)", NULL},
      {"--dict-only", NULL, MOELM_ARG_FLAG, &o->dict_only, NULL, "only build the dictionary", NULL},
      {"--bpe", NULL, MOELM_ARG_STRING, &o->bpe, NULL,
       "sentencepiece or gpt2: encode the text (moelm); other fairseq names: no effect", NULL},
      {"--sentencepiece-model", NULL, MOELM_ARG_STRING, &o->sentencepiece_model, NULL,
       "the SentencePiece model for --bpe sentencepiece (else one is trained)", NULL},
      {"--sentencepiece-keep-whitespace", NULL, MOELM_ARG_FLAG, &o->sentencepiece_keep_whitespace, NULL,
       "train the SentencePiece model to keep indentation and runs of spaces (code, formatted text)", NULL},
      {"--gpt2-encoder-json", NULL, MOELM_ARG_STRING, &o->gpt2_encoder_json, NULL,
       "GPT-2's encoder.json for --bpe gpt2", NULL},
      {"--gpt2-vocab-bpe", NULL, MOELM_ARG_STRING, &o->gpt2_vocab_bpe, NULL, "GPT-2's vocab.bpe for --bpe gpt2",
       NULL},
      {"--task", NULL, MOELM_ARG_STRING, &o->task, NULL, "fairseq task name (same dictionary for every task)",
       NULL},
      {"--tgtdict", NULL, MOELM_ARG_STRING, &o->tgtdict, NULL, "ignored with --only-source", NULL},
      {"--nwordstgt", NULL, MOELM_ARG_INT, &o->nwordstgt, NULL, "ignored with --only-source", NULL},
      {"--thresholdtgt", NULL, MOELM_ARG_INT, &o->thresholdtgt, NULL, "ignored with --only-source", NULL},
      {"--joined-dictionary", NULL, MOELM_ARG_FLAG, &o->joined_dictionary, NULL, "ignored with --only-source",
       NULL},
      {"--align-suffix", NULL, MOELM_ARG_STRING, &o->align_suffix, NULL, "ignored with --only-source", NULL},
      {"--alignfile", NULL, MOELM_ARG_STRING, &o->alignfile, NULL, "ignored with --only-source", NULL},
      {NULL, NULL, 0, NULL, NULL, NULL, NULL},
  };
  CommonValues cv;
  memset(&cv, 0, sizeof cv);
  MoelmArgSpec common_specs[N_COMMON + 1];
  memset(common_specs, 0, sizeof common_specs);
  for (gsize i = 0; i < N_COMMON; i++) {
    const CommonOption *c = &common_options[i];
    common_specs[i] = (MoelmArgSpec){c->name, NULL, c->kind == NS_FLAG ? MOELM_ARG_FLAG : MOELM_ARG_STRING,
                                     c->kind == NS_FLAG ? (void *)&cv.flag[i] : (void *)&cv.value[i], NULL,
                                     "no effect", &cv.seen[i]};
  }
  const MoelmArgSpec *const tables[] = {main_options, common_specs, NULL};
  const MoelmArgSpec *const help_tables[] = {main_options, NULL};

  GPtrArray *positional = g_ptr_array_new();
  gboolean help = FALSE;
  GError *error = NULL;
  int rc = -1;
  if (!moelm_args_parse(PROG, tables, argc, argv, 1, positional, &help, &error)) {
    rc = usage_error("%s", error->message);
    g_error_free(error);
  } else if (help) {
    moelm_args_print_help(stdout, PROG, "--only-source --trainpref FILE [--validpref FILES] [--testpref FILES] "
                          "[options]", help_tables);
    printf("\nfairseq's common options (--seed, --log-format, --user-dir, --fp16, ...) are accepted and have no "
           "effect.\n");
    rc = 0;
  } else if (positional->len > 0) {
    rc = usage_error("unrecognized arguments: %s", (const char *)g_ptr_array_index(positional, 0));
  } else if ((rc = check_options(o)) != 0) {
    /* reported */
  } else if (!build_namespace(o, &cv)) {
    rc = 2;
  } else {
    rc = -1;
  }
  g_ptr_array_unref(positional);
  for (gsize i = 0; i < N_COMMON; i++)
    g_free(cv.value[i]);
  return rc;
}
