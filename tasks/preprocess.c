/* moelm preprocess — the job: checks, the order of the work, committing the outputs
 * (see tasks/preprocess.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "moelm/errors.h"
#include "moelm/fileio.h"
#include "moelm/gpt2_bpe.h"
#include "moelm/indexed_dataset.h"
#include "moelm/log.h"
#include "moelm/timer.h"
#include "moelm/pyformat.h"
#include "preprocess.h"
#include "preprocess_engine.h"

#define LOG_COMPONENT "fairseq_cli.preprocess"
#define PP_DEFAULT_SPM_NWORDS 8000 /* --bpe sentencepiece, no model, --nwordssrc -1 */

typedef struct {
  char *input;  /* the text file: PREFIX or PREFIX.LANG */
  char *output; /* the dataset file name prefix inside DESTDIR: "train" or "train.en-None.en" */
} Split;

typedef struct {
  const MoelmPreprocessConfig *opts;
  GPtrArray *splits; /* Split* in fairseq's order: train, valid, valid1, ..., test, ... */
  char *dict_name;   /* "dict.txt" or "dict.LANG.txt" */
  MoelmDictionary *dict;
  MoelmSpm *spm;
  MoelmGpt2Bpe *gpt2; /* --bpe gpt2 */
  PpPieceCache train_pieces; /* --bpe sentencepiece: the train split, encoded once */
  GString *log;      /* preprocess.log lines of this run */
  gboolean created_destdir;
  MoelmDirLock *lock; /* DESTDIR/.moelm-preprocess.lock while this run writes there */
  char *tmpdir;      /* DESTDIR/.moelm-preprocess-XXXXXX */
  GPtrArray *commit; /* pairs of (temporary path, final path), in commit order */
} Run;

static void split_free(gpointer p)
{
  Split *s = p;
  g_free(s->input);
  g_free(s->output);
  g_free(s);
}

/* A fairseq log line: stderr in fairseq's layout, and the bare message in preprocess.log
 * (fairseq's FileHandler has no formatter; $LOGLEVEL above INFO silences both). */
static void pp_log(Run *run, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static void pp_log(Run *run, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  moelm_info(LOG_COMPONENT, "%s", msg);
  if (moelm_log_get_level() <= MOELM_LOG_INFO)
    g_string_append_printf(run->log, "%s\n", msg);
  g_free(msg);
}

static const char *lang_label(const Run *run) { return run->opts->source_lang ? run->opts->source_lang : "None"; }

/* fairseq's names: input PREFIX[.LANG]; output SPLIT[.SRC-TGT.LANG] (TGT "None" with
 * --only-source and no -t). */
static void add_split(Run *run, const char *name, const char *prefix)
{
  const MoelmPreprocessConfig *o = run->opts;
  Split *s = g_new0(Split, 1);
  s->input = o->source_lang ? g_strdup_printf("%s.%s", prefix, o->source_lang) : g_strdup(prefix);
  s->output = o->source_lang ? g_strdup_printf("%s.%s-%s.%s", name, o->source_lang,
                                               o->target_lang ? o->target_lang : "None", o->source_lang)
                             : g_strdup(name);
  g_ptr_array_add(run->splits, s);
}

static void add_split_list(Run *run, const char *base, const char *prefixes)
{
  gchar **list = g_strsplit(prefixes, ",", -1);
  for (int k = 0; list[k]; k++) {
    char *name = k == 0 ? g_strdup(base) : g_strdup_printf("%s%d", base, k);
    add_split(run, name, list[k]);
    g_free(name);
  }
  g_strfreev(list);
}

static const Split *train_split(const Run *run)
{
  return run->opts->trainpref ? g_ptr_array_index(run->splits, 0) : NULL;
}

/* ---- checks before anything is written ---- */

static gboolean check_input(const char *path, GError **error)
{
  struct stat st;
  if (g_stat(path, &st) != 0) {
    moelm_set_error_errno(error, errno, path, "cannot open");
    return FALSE;
  }
  if (!S_ISREG(st.st_mode)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: not a regular file", path);
    return FALSE;
  }
  if (access(path, R_OK) != 0) {
    moelm_set_error_errno(error, errno, path, "cannot open");
    return FALSE;
  }
  if (st.st_size == 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: empty input (no lines)", path);
    return FALSE;
  }
  return TRUE;
}

static gboolean preflight(Run *run, GError **error)
{
  const MoelmPreprocessConfig *o = run->opts;
  char *dict_path = g_build_filename(o->destdir, run->dict_name, NULL);
  gboolean exists = g_file_test(dict_path, G_FILE_TEST_EXISTS);
  if (exists && !o->srcdict)
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_EXISTS,
                "%s: already exists (fairseq refuses to overwrite it: remove it, or pass --srcdict to reuse a "
                "dictionary)",
                dict_path);
  g_free(dict_path);
  if (exists && !o->srcdict)
    return FALSE;
  for (guint i = 0; i < run->splits->len; i++)
    if (!check_input(((Split *)g_ptr_array_index(run->splits, i))->input, error))
      return FALSE;
  if (o->srcdict && (run->dict = moelm_dictionary_load(o->srcdict, error)) == NULL)
    return FALSE;
  if (o->sentencepiece_model && (run->spm = moelm_spm_load(o->sentencepiece_model, error)) == NULL)
    return FALSE;
  if (o->gpt2 && (run->gpt2 = moelm_gpt2_bpe_load(o->gpt2_encoder_json, o->gpt2_vocab_bpe, error)) == NULL)
    return FALSE;
  /* Every input is read completely here, so a bad byte fails the run before it starts. */
  for (guint i = 0; i < run->splits->len; i++)
    if (!pp_check_text(((Split *)g_ptr_array_index(run->splits, i))->input, o->workers, error))
      return FALSE;
  return TRUE;
}

/* ---- output files ---- */

static char *tmp_path(const Run *run, const char *name) { return g_build_filename(run->tmpdir, name, NULL); }

/* Schedule tmpdir/NAME to become DESTDIR/NAME at commit time. */
static void will_commit(Run *run, const char *name)
{
  g_ptr_array_add(run->commit, tmp_path(run, name));
  g_ptr_array_add(run->commit, g_build_filename(run->opts->destdir, name, NULL));
}

static gboolean make_dirs(Run *run, GError **error)
{
  const char *destdir = run->opts->destdir;
  if (!g_file_test(destdir, G_FILE_TEST_IS_DIR)) {
    if (g_mkdir_with_parents(destdir, 0777) != 0) {
      moelm_set_error_errno(error, errno, destdir, "cannot create directory");
      return FALSE;
    }
    run->created_destdir = TRUE;
  }
  /* one run per DESTDIR; holding it, the work directories of killed runs are stale */
  run->lock = moelm_dir_lock(destdir, ".moelm-preprocess.lock", "preprocess run", error);
  if (run->lock == NULL) {
    moelm_error_prefix(error, "--destdir");
    return FALSE;
  }
  GPtrArray *stale = moelm_remove_stale_temp_dirs(destdir, ".moelm-preprocess-");
  for (guint i = 0; i < stale->len; i++)
    moelm_info(LOG_COMPONENT, "removed %s/%s, left by a run that was killed", destdir,
               (const char *)g_ptr_array_index(stale, i)); /* not preprocess.log: fairseq's lines only */
  g_ptr_array_unref(stale);
  run->tmpdir = g_build_filename(destdir, ".moelm-preprocess-XXXXXX", NULL);
  if (g_mkdtemp(run->tmpdir) == NULL) {
    moelm_set_error_errno(error, errno, run->tmpdir, "cannot create temporary directory");
    g_clear_pointer(&run->tmpdir, g_free);
    return FALSE;
  }
  return TRUE;
}

/* Remove the temporary directory (empty after a commit); after a failure also DESTDIR when
 * this run created it and nothing else is in it. */
static void remove_tmpdir(Run *run, gboolean failed)
{
  if (run->tmpdir == NULL) {
    moelm_dir_unlock(run->lock);
    run->lock = NULL;
    if (failed && run->created_destdir)
      g_rmdir(run->opts->destdir);
    return;
  }
  GDir *dir = g_dir_open(run->tmpdir, 0, NULL);
  if (dir) {
    const char *name;
    while ((name = g_dir_read_name(dir)) != NULL) {
      char *path = tmp_path(run, name);
      g_unlink(path);
      g_free(path);
    }
    g_dir_close(dir);
  }
  g_rmdir(run->tmpdir);
  g_clear_pointer(&run->tmpdir, g_free);
  moelm_dir_unlock(run->lock); /* before DESTDIR could be removed: it holds the lock file */
  run->lock = NULL;
  if (failed && run->created_destdir)
    g_rmdir(run->opts->destdir); /* only succeeds when nothing else is in it */
}

static gboolean fsync_path(const char *path, GError **error)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) {
    moelm_set_error_errno(error, errno, path, "cannot sync");
    if (fd >= 0)
      close(fd);
    return FALSE;
  }
  close(fd);
  return TRUE;
}

/* Rename every finished file into DESTDIR, in order (dict.txt last). */
static gboolean commit(Run *run, GError **error)
{
  double t0 = moelm_time_now();
  for (guint i = 0; i < run->commit->len; i += 2)
    if (!fsync_path(g_ptr_array_index(run->commit, i), error))
      return FALSE;
  for (guint i = 0; i < run->commit->len; i += 2) {
    const char *from = g_ptr_array_index(run->commit, i), *to = g_ptr_array_index(run->commit, i + 1);
    if (g_rename(from, to) != 0) {
      moelm_set_error_errno(error, errno, to, "cannot rename the finished file into place");
      return FALSE;
    }
  }
  gboolean ok = moelm_fsync_parent_dir(g_ptr_array_index(run->commit, 1), error);
  moelm_debug("moelm.preprocess", "commit (sync and rename %u files): %.3f s", run->commit->len / 2,
              moelm_time_now() - t0);
  return ok;
}

/* fairseq appends to preprocess.log (a logging.FileHandler): old lines + this run's. */
static gboolean write_log(Run *run, GError **error)
{
  char *final = g_build_filename(run->opts->destdir, "preprocess.log", NULL);
  char *old = NULL;
  gsize old_len = 0;
  if (!g_file_get_contents(final, &old, &old_len, NULL))
    old = NULL, old_len = 0;
  GString *all = g_string_new_len(old, (gssize)old_len);
  g_string_append_len(all, run->log->str, (gssize)run->log->len);
  char *path = tmp_path(run, "preprocess.log");
  gboolean ok = moelm_write_file_atomic(path, all->str, all->len, error);
  if (ok)
    will_commit(run, "preprocess.log");
  g_free(path);
  g_string_free(all, TRUE);
  g_free(old);
  g_free(final);
  return ok;
}

/* ---- the work ---- */

static MoelmLineTokenizer line_tokenizer(const Run *run)
{
  return run->spm ? pp_spm_tokenize_line : run->gpt2 ? moelm_gpt2_bpe_tokenize_line : NULL;
}

static gpointer line_tokenizer_data(const Run *run) { return run->spm ? (gpointer)run->spm : (gpointer)run->gpt2; }

/* --bpe sentencepiece: the model goes into the data-bin, trained on the train split when
 * none is given. */
static gboolean prepare_spm(Run *run, int nwords, GError **error)
{
  const MoelmPreprocessConfig *o = run->opts;
  char *model = tmp_path(run, "spm.model");
  gboolean ok;
  if (o->sentencepiece_model)
    ok = pp_copy_file(o->sentencepiece_model, model, error);
  else
    ok = pp_spm_train(train_split(run)->input, model, pp_spm_vocab_size_for(nwords), o->workers,
                      o->sentencepiece_keep_whitespace, error) &&
         (run->spm = moelm_spm_load(model, error)) != NULL;
  g_free(model);
  if (ok)
    will_commit(run, "spm.model");
  return ok;
}

static gboolean build_dictionary(Run *run, GError **error)
{
  const MoelmPreprocessConfig *o = run->opts;
  int nwords = o->nwordssrc;
  if (o->spm && !o->sentencepiece_model && nwords <= 0)
    nwords = PP_DEFAULT_SPM_NWORDS;
  if (o->spm && !prepare_spm(run, nwords, error))
    return FALSE;
  if (run->dict)
    return TRUE; /* --srcdict: used as it is, as fairseq does (no finalize, no padding) */
  const char *train = train_split(run)->input;
  if (o->spm || o->gpt2) {
    char *cache = tmp_path(run, "train.pieces");
    run->dict = pp_encode_pieces(train, cache, o->workers, line_tokenizer(run), line_tokenizer_data(run),
                                 &run->train_pieces, error);
    g_free(cache);
  } else {
    run->dict = pp_count_words(train, o->workers, error);
  }
  if (run->dict == NULL)
    return FALSE;
  moelm_dictionary_finalize(run->dict, o->thresholdsrc, nwords, o->padding_factor);
  return TRUE;
}

/* More <unk> than this in a split of a SentencePiece data-bin deserves a warning: the model
 * can encode any text, so the unknowns are pieces the dictionary lacks. */
#define UNK_WARN_FRACTION 0.005

static void warn_spm_unknowns(const Run *run, const Split *split, const char *percent)
{
  const guint pieces = moelm_dictionary_size(run->dict) - MOELM_NSPECIAL;
  /* a third of the pieces in use: measured on the shipped corpus, 29k pieces in use left 4.4%
   * of valid as <unk>, 16k 0.22%, 8k 0.07% */
  guint suggest = MAX(pieces / 3, 1u);
  if (suggest >= 3000)
    suggest -= suggest % 1000;
  moelm_warn(LOG_COMPONENT,
             "%s: %s%% of the tokens became %s: dict.txt holds only the %u SentencePiece pieces that occur in the "
             "training split, and this split uses others (the rare pieces of a large vocabulary). Use a smaller "
             "--nwordssrc (e.g. %u) or a larger training split",
             split->input, percent, moelm_dictionary_symbol(run->dict, MOELM_UNK), pieces, suggest);
}

static gboolean binarize_split(Run *run, const Split *split, GError **error)
{
  guint vocab = moelm_dictionary_size(run->dict);
  pp_log(run, "[%s] Dictionary: %u types", lang_label(run), vocab);
  char *prefix = tmp_path(run, split->output);
  MoelmBinarizeStats stats;
  gboolean ok;
  if (split == train_split(run) && run->train_pieces.path)
    ok = pp_binarize_pieces(&run->train_pieces, prefix, run->opts->workers, run->dict, &stats, error);
  else
    ok = pp_binarize(split->input, prefix, run->opts->workers, run->dict, line_tokenizer(run),
                     line_tokenizer_data(run), &stats, error);
  g_free(prefix);
  if (!ok)
    return FALSE;
  char *bin = g_strconcat(split->output, ".bin", NULL), *idx = g_strconcat(split->output, ".idx", NULL);
  will_commit(run, bin);
  will_commit(run, idx);
  g_free(bin);
  g_free(idx);
  char *percent = moelm_py_format_g3(100.0 * (double)stats.n_replaced / (double)stats.n_tok);
  pp_log(run, "[%s] %s: %" G_GINT64_FORMAT " sents, %" G_GINT64_FORMAT " tokens, %s%% replaced (by %s)",
         lang_label(run), split->input, stats.n_seq, stats.n_tok, percent,
         moelm_dictionary_symbol(run->dict, MOELM_UNK));
  if (run->opts->spm && stats.n_tok > 0 && (double)stats.n_replaced > UNK_WARN_FRACTION * (double)stats.n_tok)
    warn_spm_unknowns(run, split, percent);
  g_free(percent);
  return TRUE;
}

static gboolean run_preprocess(Run *run, GError **error)
{
  const MoelmPreprocessConfig *o = run->opts;
  if (!preflight(run, error))
    return FALSE;
  pp_log(run, "%s", o->namespace_line);
  if (!make_dirs(run, error) || !build_dictionary(run, error))
    return FALSE;
  char *dict_tmp = tmp_path(run, run->dict_name);
  gboolean ok = moelm_dictionary_save(run->dict, dict_tmp, error);
  g_free(dict_tmp);
  if (!ok)
    return FALSE;
  if (!o->dict_only) {
    for (guint i = 0; i < run->splits->len; i++)
      if (!binarize_split(run, g_ptr_array_index(run->splits, i), error))
        return FALSE;
    pp_log(run, "Wrote preprocessed data to %s", o->destdir);
  }
  will_commit(run, run->dict_name); /* last: its presence means the data-bin is complete */
  return write_log(run, error) && commit(run, error);
}

void moelm_preprocess_config_clear(MoelmPreprocessConfig *o)
{
  char **strings[] = {&o->source_lang, &o->target_lang, &o->trainpref, &o->validpref,
                      &o->testpref,    &o->destdir,     &o->srcdict,   &o->tgtdict,
                      &o->dataset_impl, &o->bpe,        &o->sentencepiece_model, &o->task,
                      &o->align_suffix, &o->alignfile,  &o->namespace_line, &o->gpt2_encoder_json,
                      &o->gpt2_vocab_bpe};
  for (gsize i = 0; i < G_N_ELEMENTS(strings); i++)
    g_clear_pointer(strings[i], g_free);
}

gboolean moelm_preprocess_run(const MoelmPreprocessConfig *opts, GError **error)
{
  Run run = {
      .opts = opts,
      .splits = g_ptr_array_new_with_free_func(split_free),
      .dict_name = opts->source_lang ? g_strdup_printf("dict.%s.txt", opts->source_lang) : g_strdup("dict.txt"),
      .log = g_string_new(NULL),
      .commit = g_ptr_array_new_with_free_func(g_free),
  };
  if (opts->trainpref)
    add_split(&run, "train", opts->trainpref);
  if (opts->validpref && !opts->dict_only)
    add_split_list(&run, "valid", opts->validpref);
  if (opts->testpref && !opts->dict_only)
    add_split_list(&run, "test", opts->testpref);

  gboolean ok = run_preprocess(&run, error);
  pp_piece_cache_clear(&run.train_pieces);
  remove_tmpdir(&run, !ok);
  if (run.dict)
    moelm_dictionary_free(run.dict);
  if (run.spm)
    moelm_spm_free(run.spm);
  moelm_gpt2_bpe_free(run.gpt2);
  g_ptr_array_unref(run.splits);
  g_ptr_array_unref(run.commit);
  g_string_free(run.log, TRUE);
  g_free(run.dict_name);
  return ok;
}
