/* moelm info — describe and validate a data-bin: the dictionary, the SentencePiece model if
 * there is one, and every split ({train,valid*,test*}.idx): sequences, tokens, dtype, and
 * that every token id is inside the vocabulary. Every file is validated completely before
 * anything is printed; the first invalid one is a one-line error and exit status 1. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "commands.h"
#include "moelm/dictionary.h"
#include "moelm/errors.h"
#include "moelm/indexed_dataset.h"
#include "moelm/spm.h"

#define PROG "moelm info"

typedef struct {
  char *name; /* "train", "valid1", "train.en-None.en", ... */
  gsize sequences;
  int64_t tokens;
  int dtype;
  int64_t max_token;
} SplitInfo;

static void split_info_free(gpointer p)
{
  SplitInfo *s = p;
  g_free(s->name);
  g_free(s);
}

/* train < valid < test; then valid < valid1 < valid2 < valid10; then the full name. */
static int split_rank(const char *name, long *number)
{
  static const char *const bases[] = {"train", "valid", "test"};
  for (int r = 0; r < 3; r++) {
    gsize n = strlen(bases[r]);
    if (strncmp(name, bases[r], n) == 0) {
      *number = g_ascii_isdigit(name[n]) ? strtol(name + n, NULL, 10) : 0;
      return r;
    }
  }
  *number = 0;
  return 3;
}

static int compare_split_names(gconstpointer a, gconstpointer b)
{
  const char *x = *(const char *const *)a, *y = *(const char *const *)b;
  long nx, ny;
  int rx = split_rank(x, &nx), ry = split_rank(y, &ny);
  if (rx != ry)
    return rx - ry;
  if (nx != ny)
    return nx < ny ? -1 : 1;
  return strcmp(x, y);
}

static gboolean is_split_index(const char *file)
{
  long n;
  return g_str_has_suffix(file, ".idx") && split_rank(file, &n) < 3;
}

/* dict.txt, or the one dict.LANG.txt of a data-bin made with --source-lang. */
static char *find_dictionary(const char *dir, GError **error)
{
  char *path = g_build_filename(dir, "dict.txt", NULL);
  if (g_file_test(path, G_FILE_TEST_EXISTS))
    return path;
  g_free(path);
  GError *local = NULL;
  GDir *d = g_dir_open(dir, 0, &local);
  if (d == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: cannot open directory: %s", dir, local->message);
    g_error_free(local);
    return NULL;
  }
  char *found = NULL;
  int n = 0;
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL)
    if (g_str_has_prefix(name, "dict.") && g_str_has_suffix(name, ".txt") && n++ == 0)
      found = g_build_filename(dir, name, NULL);
  g_dir_close(d);
  if (n == 1)
    return found;
  g_free(found);
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: %s", dir,
              n == 0 ? "no dict.txt: not a data-bin" : "several dict.LANG.txt and no dict.txt");
  return NULL;
}

static gboolean inspect_split(const char *dir, const char *idx_file, guint vocab, GPtrArray *splits,
                              GError **error)
{
  char *name = g_strndup(idx_file, strlen(idx_file) - strlen(".idx"));
  char *prefix = g_build_filename(dir, name, NULL);
  MoelmIndexedDataset *ds = moelm_indexed_dataset_open(prefix, error);
  gboolean ok = ds != NULL;
  if (ok) {
    SplitInfo *s = g_new0(SplitInfo, 1);
    s->name = g_strdup(name);
    s->sequences = moelm_indexed_dataset_len(ds);
    s->tokens = moelm_indexed_dataset_num_tokens(ds);
    s->dtype = moelm_indexed_dataset_dtype(ds);
    s->max_token = moelm_indexed_dataset_max_token(ds);
    g_ptr_array_add(splits, s);
    if (s->max_token >= (int64_t)vocab) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH,
                  "%s.bin: token id %" G_GINT64_FORMAT " is outside the vocabulary (%u symbols)", prefix,
                  s->max_token, vocab);
      ok = FALSE;
    }
    moelm_indexed_dataset_close(ds);
  }
  g_free(prefix);
  g_free(name);
  return ok;
}

static gboolean collect_splits(const char *dir, guint vocab, GPtrArray *splits, GError **error)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  if (d == NULL)
    return TRUE; /* find_dictionary has read it already */
  GPtrArray *files = g_ptr_array_new_with_free_func(g_free);
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL)
    if (is_split_index(name))
      g_ptr_array_add(files, g_strdup(name));
  g_dir_close(d);
  g_ptr_array_sort(files, compare_split_names); /* the same order every time, errors included */
  gboolean ok = TRUE;
  for (guint i = 0; ok && i < files->len; i++)
    ok = inspect_split(dir, g_ptr_array_index(files, i), vocab, splits, error);
  g_ptr_array_unref(files);
  return ok;
}

static int info(const char *dir)
{
  GError *error = NULL;
  MoelmDictionary *dict = NULL;
  MoelmSpm *spm = NULL;
  GPtrArray *splits = g_ptr_array_new_with_free_func(split_info_free);
  char *dict_path = NULL, *spm_path = g_build_filename(dir, "spm.model", NULL);
  gboolean has_spm = g_file_test(spm_path, G_FILE_TEST_EXISTS);
  gboolean ok = g_file_test(dir, G_FILE_TEST_IS_DIR);
  if (!ok)
    g_set_error(&error, MOELM_ERROR, MOELM_ERROR_IO, "%s: not a directory", dir);
  ok = ok && (dict_path = find_dictionary(dir, &error)) != NULL && (dict = moelm_dictionary_load(dict_path, &error));
  ok = ok && (!has_spm || (spm = moelm_spm_load(spm_path, &error)) != NULL);
  ok = ok && collect_splits(dir, moelm_dictionary_size(dict), splits, &error);
  int rc = 0;
  if (!ok) {
    rc = moelm_cli_fail("info", error, 1);
    g_error_free(error);
  } else {
    guint vocab = moelm_dictionary_size(dict);
    char *dict_name = g_path_get_basename(dict_path);
    printf("data-bin:   %s\n", dir);
    printf("dictionary: %s: %u types (%u words + %d specials), dtype %s\n", dict_name, vocab,
           vocab - MOELM_NSPECIAL, MOELM_NSPECIAL, moelm_idx_dtype_name(moelm_idx_best_dtype(vocab)));
    if (spm)
      printf("spm.model:  present, %d pieces\n", moelm_spm_vocab_size(spm));
    else
      printf("spm.model:  absent\n");
    if (splits->len == 0)
      printf("splits:     none\n");
    else
      printf("%-24s %12s %14s  %-7s %8s  %s\n", "split", "sequences", "tokens", "dtype", "max id", "ids < vocab");
    for (guint i = 0; i < splits->len; i++) {
      const SplitInfo *s = g_ptr_array_index(splits, i);
      printf("%-24s %12" G_GSIZE_FORMAT " %14" G_GINT64_FORMAT "  %-7s %8" G_GINT64_FORMAT "  ok\n", s->name,
             s->sequences, s->tokens, moelm_idx_dtype_name(s->dtype), s->max_token);
    }
    g_free(dict_name);
  }
  if (dict)
    moelm_dictionary_free(dict);
  if (spm)
    moelm_spm_free(spm);
  g_ptr_array_unref(splits);
  g_free(dict_path);
  g_free(spm_path);
  return rc;
}

int moelm_cmd_info(int argc, char **argv)
{
  const MoelmArgSpec none[] = {{NULL, NULL, 0, NULL, NULL, NULL, NULL}};
  const MoelmArgSpec *const tables[] = {none, NULL};
  GPtrArray *positional = g_ptr_array_new();
  gboolean help = FALSE;
  GError *error = NULL;
  int rc;
  if (!moelm_args_parse(PROG, tables, argc, argv, 1, positional, &help, &error)) {
    moelm_error_escape_controls(&error); /* one line, even for an argument with a newline */
    const char *m = error->message;
    fprintf(stderr, PROG ": error: %s\n", g_str_has_prefix(m, PROG ": ") ? m + strlen(PROG ": ") : m);
    g_error_free(error);
    rc = 2;
  } else if (help) {
    moelm_args_print_help(stdout, PROG, "DATA_DIR", tables);
    rc = 0;
  } else if (positional->len != 1) {
    fprintf(stderr, PROG ": error: expected one DATA_DIR (a data-bin directory), got %u arguments\n",
            positional->len);
    rc = 2;
  } else {
    rc = info(g_ptr_array_index(positional, 0));
  }
  g_ptr_array_unref(positional);
  return rc;
}
