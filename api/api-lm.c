/* moelm — the inference API: opening a model, what it is, encoding and decoding text. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include <glib/gstdio.h>

#include "api-internal.h"
#include "moelm/binarizer.h"
#include "moelm/errors.h"
#include "tasks/choice_scorer.h"
#include "tasks/convert_fairseq.h"
#ifdef HAVE_CUDA_BACKEND
#include "backend/cuda/cuda-backend.h"
#endif

int moelm_device_count(void)
{
#ifdef HAVE_CUDA_BACKEND
  const int n = moelm_cuda_device_count(NULL);
  return n > 0 ? n : 0;
#else
  return 0;
#endif
}

typedef struct {
  const char *device, *precision, *bpe, *encoder_json, *vocab_bpe, *spm_model;
  int threads;
} OpenOptions;

/* device=auto|cpu|cuda|cuda:N, precision=..., threads=N into a backend spec. */
static gboolean backend_spec(const OpenOptions *o, MoelmBackendSpec *spec, GError **error)
{
  moelm_backend_spec_init(spec);
  spec->threads = o->threads;
  const char *d = o->device;
  guint64 id = 0;
  if (strcmp(d, "cpu") == 0)
    spec->kind = MOELM_BACKEND_CPU;
  else if (strcmp(d, "cuda") == 0 || strcmp(d, "gpu") == 0)
    spec->kind = MOELM_BACKEND_CUDA;
  else if (g_str_has_prefix(d, "cuda:") && g_ascii_string_to_unsigned(d + 5, 10, 0, G_MAXINT, &id, NULL)) {
    spec->kind = MOELM_BACKEND_CUDA;
    spec->device_id = (int)id;
  } else if (strcmp(d, "auto") != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "device '%s': choose auto, cpu, cuda or cuda:N", d);
    return FALSE;
  }
  static const char *const precisions[] = {"default", "fp32", "bf16", "fp16"};
  for (guint i = 0; i < G_N_ELEMENTS(precisions); i++)
    if (strcmp(o->precision, precisions[i]) == 0) {
      spec->precision = (MoelmPrecision)i;
      return TRUE;
    }
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "precision '%s': choose default, fp32, bf16 or fp16",
              o->precision);
  return FALSE;
}

/* Whether `path` is one of fairseq's PyTorch checkpoints (a zip archive, or the legacy pickle
 * format that the converter names) or a directory of them, rather than a moelm checkpoint. */
static gboolean is_fairseq(const char *path)
{
  if (g_file_test(path, G_FILE_TEST_IS_DIR))
    return TRUE;
  FILE *fp = fopen(path, "rb");
  unsigned char magic[4] = {0};
  const size_t got = fp ? fread(magic, 1, sizeof magic, fp) : 0;
  if (fp)
    fclose(fp);
  /* a zip's local header, or the legacy format's pickled magic number (protocol 2, a long) */
  return got == 4 && (memcmp(magic, "PK\x03\x04", 4) == 0 || memcmp(magic, "\x80\x02\x8a\x0a", 4) == 0);
}

/* Replace every occurrence of `from` in the error's message by `to`. */
static void error_rename(GError *error, const char *from, const char *to)
{
  if (error == NULL || strstr(error->message, from) == NULL)
    return;
  char **parts = g_strsplit(error->message, from, -1);
  g_free(error->message);
  error->message = g_strjoinv(to, parts);
  g_strfreev(parts);
}

/* A fairseq checkpoint, converted into a temporary moelm checkpoint (written beside nothing
 * of the user's; removed once loaded), then opened. */
static MoelmInference *open_fairseq(const char *path, const char *data_dir, const MoelmBackendSpec *spec,
                                    GError **error)
{
  char *tmp = g_dir_make_tmp("moelm-convert-XXXXXX", NULL);
  if (tmp == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: cannot make a temporary directory to convert it in", path);
    return NULL;
  }
  char *out = g_build_filename(tmp, "model.pt", NULL), *dict = g_build_filename(data_dir, "dict.txt", NULL);
  const MoelmConvertOptions opt = {path, out, dict, MOELM_CONVERT_DTYPE_KEEP};
  MoelmConvertReport report;
  MoelmInference *inf = NULL;
  GError *err = NULL;
  if (moelm_convert_fairseq(&opt, &report, &err))
    inf = moelm_inference_open(out, data_dir, spec, &err);
  moelm_convert_report_clear(&report);
  if (inf) { /* messages name what the caller opened */
    g_free(inf->path);
    inf->path = g_strdup(path);
  }
  error_rename(err, out, path);
  if (err)
    g_propagate_error(error, err);
  g_remove(out);
  g_rmdir(tmp);
  g_free(out);
  g_free(dict);
  g_free(tmp);
  return inf;
}

/* The tokenizer: bpe=gpt2 with its two files, sentencepiece with its model, none, or auto
 * (gpt2 when its files are given, else SentencePiece when there is a model, else words). */
static gboolean open_bpe(MoelmLM *lm, const OpenOptions *o, const char *data_dir, GError **error)
{
  const char *bpe = o->bpe;
  const gboolean is_auto = strcmp(bpe, "auto") == 0;
  if (!is_auto && strcmp(bpe, "gpt2") != 0 && strcmp(bpe, "sentencepiece") != 0 && strcmp(bpe, "none") != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "bpe '%s': choose auto, gpt2, sentencepiece or none", bpe);
    return FALSE;
  }
  const gboolean gpt2_files = o->encoder_json || o->vocab_bpe;
  if (strcmp(bpe, "gpt2") == 0 || (is_auto && gpt2_files)) {
    if (o->encoder_json == NULL || o->vocab_bpe == NULL) {
      g_set_error_literal(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                          "bpe gpt2 needs both gpt2_encoder_json and gpt2_vocab_bpe "
                          "(GPT-2's encoder.json and vocab.bpe)");
      return FALSE;
    }
    lm->gpt2 = moelm_gpt2_bpe_load(o->encoder_json, o->vocab_bpe, error);
    return lm->gpt2 != NULL;
  }
  if (gpt2_files) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "gpt2_encoder_json and gpt2_vocab_bpe need bpe gpt2, not %s", bpe);
    return FALSE;
  }
  if (strcmp(bpe, "none") == 0)
    return TRUE;
  char *path = o->spm_model ? g_strdup(o->spm_model) : g_build_filename(data_dir, "spm.model", NULL);
  gboolean ok = TRUE;
  if (!is_auto || o->spm_model || g_file_test(path, G_FILE_TEST_EXISTS))
    ok = (lm->spm = moelm_spm_load(path, error)) != NULL;
  g_free(path);
  return ok;
}

int moelm_lm_open(const char *checkpoint, const char *data_dir, const char *const *options, MoelmLM **out)
{
  if (out == NULL || checkpoint == NULL || data_dir == NULL) {
    if (out)
      *out = NULL;
    return api_fail_invalid("moelm_lm_open: checkpoint, data_dir and out are required");
  }
  *out = NULL;
  OpenOptions o = {.device = "auto", .precision = "default", .bpe = "auto"};
  const ApiOption table[] = {
    {"device", API_OPT_STRING, &o.device},
    {"threads", API_OPT_INT, &o.threads},
    {"precision", API_OPT_STRING, &o.precision},
    {"bpe", API_OPT_STRING, &o.bpe},
    {"gpt2_encoder_json", API_OPT_STRING, &o.encoder_json},
    {"gpt2_vocab_bpe", API_OPT_STRING, &o.vocab_bpe},
    {"sentencepiece_model", API_OPT_STRING, &o.spm_model},
    {NULL, 0, NULL},
  };
  GError *error = NULL;
  MoelmBackendSpec spec;
  if (!api_options_parse(options, table, &error) || !backend_spec(&o, &spec, &error))
    return api_fail(error);
  if (o.threads < 0)
    return api_fail_invalid("option threads: %d is not >= 0", o.threads);
  MoelmLM *lm = g_new0(MoelmLM, 1);
  lm->checkpoint = g_strdup(checkpoint);
  lm->inf = is_fairseq(checkpoint) ? open_fairseq(checkpoint, data_dir, &spec, &error)
                                   : moelm_inference_open(checkpoint, data_dir, &spec, &error);
  if (lm->inf == NULL || !open_bpe(lm, &o, data_dir, &error)) {
    moelm_lm_close(lm);
    return api_fail(error);
  }
  *out = lm;
  return MOELM_OK;
}

void moelm_lm_close(MoelmLM *lm)
{
  if (lm == NULL)
    return;
  moelm_inference_free(lm->inf);
  moelm_gpt2_bpe_free(lm->gpt2);
  if (lm->spm)
    moelm_spm_free(lm->spm);
  g_free(lm->checkpoint);
  g_free(lm);
}

/* ---- what was opened ------------------------------------------------------------------ */

int moelm_lm_vocab_size(const MoelmLM *lm) { return moelm_model_get_config(lm->inf->model)->vocab_size; }
int moelm_lm_max_positions(const MoelmLM *lm) { return moelm_model_get_config(lm->inf->model)->max_positions; }
int moelm_lm_num_experts(const MoelmLM *lm)
{
  return lm->inf->task.mixture ? lm->inf->task.mix.num_experts : 0;
}
const char *moelm_lm_task(const MoelmLM *lm) { return lm->inf->task.name; }
const char *moelm_lm_method(const MoelmLM *lm) { return lm->inf->task.method ? lm->inf->task.method : ""; }
const char *moelm_lm_bpe(const MoelmLM *lm) { return lm->gpt2 ? "gpt2" : lm->spm ? "sentencepiece" : "none"; }
const char *moelm_lm_device(const MoelmLM *lm) { return lm->inf->be->description; }
const char *moelm_lm_device_reason(const MoelmLM *lm) { return lm->inf->be->reason ? lm->inf->be->reason : ""; }
int moelm_lm_device_id(const MoelmLM *lm) { return lm->inf->be->device_id; }
const char *moelm_lm_checkpoint(const MoelmLM *lm) { return lm->checkpoint; }
int32_t moelm_lm_index(const MoelmLM *lm, const char *symbol) { return moelm_dictionary_index(lm->inf->dict, symbol); }
const char *moelm_lm_symbol(const MoelmLM *lm, int32_t id) { return moelm_dictionary_symbol(lm->inf->dict, id); }

/* ---- text ----------------------------------------------------------------------------- */

int moelm_lm_encode(MoelmLM *lm, const char *text, int flags, int32_t **tokens, size_t *n)
{
  if (lm == NULL || text == NULL || tokens == NULL || n == NULL)
    return api_fail_invalid("moelm_lm_encode: lm, text, tokens and n are required");
  *tokens = NULL;
  *n = 0;
  if (flags & ~(MOELM_ENCODE_NEWLINES_AS_EOS | MOELM_ENCODE_NO_FINAL_EOS))
    return api_fail_invalid("moelm_lm_encode: unknown flags 0x%x", (unsigned)flags);
  const MoelmTextEncoder enc = {lm->inf->dict, lm->gpt2, lm->spm, (flags & MOELM_ENCODE_NEWLINES_AS_EOS) != 0};
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
  int n_context = 0;
  GError *error = NULL;
  /* as the context of a continuation, the text ends without its own </s> */
  const gboolean as_context = (flags & MOELM_ENCODE_NO_FINAL_EOS) != 0;
  if (!moelm_encode_continuation(&enc, as_context ? text : "", as_context ? "" : text, ids, &n_context, &error)) {
    g_array_unref(ids);
    return api_fail(error);
  }
  if (as_context)
    g_array_set_size(ids, (guint)n_context);
  *n = ids->len;
  *tokens = (int32_t *)(void *)g_array_free(ids, FALSE);
  return MOELM_OK;
}

/* fairseq's SentencepieceBPE.decode of the joined pieces: every space removed, U+2581
 * becomes a space, then Python's str.strip(). */
static char *spm_decode(GString *joined)
{
  GString *s = g_string_sized_new(joined->len);
  for (const char *p = joined->str; *p; p++) {
    if (*p == ' ')
      continue;
    if (g_str_has_prefix(p, "\xe2\x96\x81")) {
      g_string_append_c(s, ' ');
      p += 2;
    } else
      g_string_append_c(s, *p);
  }
  gsize start, end;
  moelm_strip_spaces(s->str, s->len, &start, &end);
  char *text = g_strndup(s->str + start, end - start);
  g_string_free(s, TRUE);
  return text;
}

int moelm_lm_decode(MoelmLM *lm, const int32_t *tokens, size_t n, char **text)
{
  if (lm == NULL || (tokens == NULL && n > 0) || text == NULL)
    return api_fail_invalid("moelm_lm_decode: lm, tokens and text are required");
  *text = NULL;
  GError *error = NULL;
  if (!api_check_tokens(lm, tokens, n, &error))
    return api_fail(error);
  /* Dictionary.string: </s> and <s> left out, the symbols joined by spaces */
  GPtrArray *words = g_ptr_array_new();
  GString *joined = g_string_new(NULL);
  for (size_t i = 0; i < n; i++) {
    if (tokens[i] == MOELM_EOS || tokens[i] == MOELM_BOS)
      continue;
    const char *w = moelm_dictionary_symbol(lm->inf->dict, tokens[i]);
    g_ptr_array_add(words, (gpointer)w);
    g_string_append_printf(joined, "%s%s", words->len > 1 ? " " : "", w);
  }
  if (lm->gpt2)
    *text = moelm_gpt2_bpe_decode_words(lm->gpt2, (const char *const *)words->pdata, words->len);
  else if (lm->spm)
    *text = spm_decode(joined);
  else
    *text = g_strdup(joined->str);
  g_string_free(joined, TRUE);
  g_ptr_array_unref(words);
  return MOELM_OK;
}
