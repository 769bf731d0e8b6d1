/* moelm preprocess — --bpe sentencepiece: encode each line into pieces before counting and
 * binarizing (the pieces are the words of dict.txt), and train a BPE model when none is
 * given. */
#include "config.h"

#include <errno.h>
#include <string.h>

#include <glib/gstdio.h>

#include "moelm/errors.h"
#include "preprocess_engine.h"

/* SentencePiece's own control pieces (<unk>, <s>, </s>): part of its vocabulary size, but
 * never produced as pieces of text, so they take no dict.txt line. */
#define PP_SPM_CONTROL_PIECES 3

/* Python's str.isspace() for one ASCII byte. */
static gboolean ascii_space(unsigned char c)
{
  return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20);
}

/* Whether the line has a word by fairseq's whitespace split. */
static gboolean line_has_content(const char *line, gsize len)
{
  gboolean non_ascii = FALSE;
  for (gsize i = 0; i < len; i++) {
    unsigned char c = (unsigned char)line[i];
    if (c >= 0x80)
      non_ascii = TRUE;
    else if (!ascii_space(c))
      return TRUE;
  }
  if (!non_ascii)
    return FALSE;
  /* Only non-ASCII characters and ASCII spaces: let the Unicode whitespace split decide. */
  GPtrArray *words = moelm_split_words(line, len);
  gboolean any = words->len > 0;
  g_ptr_array_unref(words);
  return any;
}

GPtrArray *pp_spm_tokenize_line(const char *line, gsize len, gpointer user_data, GError **error)
{
  const MoelmSpm *spm = user_data;
  if (!line_has_content(line, len))
    return g_ptr_array_new_with_free_func(g_free); /* stays a [</s>] document boundary */
  return moelm_spm_encode_pieces(spm, line, len, error);
}

int pp_spm_vocab_size_for(int nwords)
{
  /* dict.txt = 4 fairseq specials + the pieces the text uses; SentencePiece's vocabulary =
   * its 3 control pieces + the pieces. Same number of pieces on both sides. */
  return nwords - MOELM_NSPECIAL + PP_SPM_CONTROL_PIECES;
}

gboolean pp_spm_train(const char *train_path, const char *model_path, int vocab_size, int threads,
                      gboolean keep_whitespace, GError **error)
{
  if (!g_str_has_suffix(model_path, ".model")) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: a SentencePiece model name must end in .model",
                model_path);
    return FALSE;
  }
  char *prefix = g_strndup(model_path, strlen(model_path) - strlen(".model"));
  char *vocab = g_strconcat(prefix, ".vocab", NULL);
  gboolean ok = moelm_spm_train_bpe(train_path, prefix, vocab_size, threads, keep_whitespace, error);
  g_unlink(vocab); /* the pieces that matter are in dict.txt; the .vocab is not part of a data-bin */
  g_free(vocab);
  g_free(prefix);
  return ok;
}

gboolean pp_copy_file(const char *from, const char *to, GError **error)
{
  char *data = NULL;
  gsize len = 0;
  GError *local = NULL;
  if (!g_file_get_contents(from, &data, &len, &local)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: cannot read: %s", from, local->message);
    g_error_free(local);
    return FALSE;
  }
  gboolean ok = g_file_set_contents(to, data, (gssize)len, &local);
  if (!ok) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: cannot write: %s", to, local->message);
    g_error_free(local);
  }
  g_free(data);
  return ok;
}
