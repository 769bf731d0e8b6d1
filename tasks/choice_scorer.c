/* moelm — scoring continuations as fairseq's hub does (see choice_scorer.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm/binarizer.h"
#include "moelm/errors.h"
#include "tasks/choice_scorer.h"
#include "tasks/mixture_scorer.h"

/* Python's str.splitlines() boundaries: \n \r \r\n \v \f \x1c \x1d \x1e U+0085 U+2028 U+2029.
 * Returns the byte length of the line break at p (0: none). */
static gsize line_break_len(const char *p, gsize avail)
{
  const unsigned char c = (unsigned char)p[0];
  if (c == '\r')
    return avail >= 2 && p[1] == '\n' ? 2 : 1;
  if (c == '\n' || c == 0x0b || c == 0x0c || (c >= 0x1c && c <= 0x1e))
    return 1;
  if (avail >= 2 && c == 0xc2 && (unsigned char)p[1] == 0x85)
    return 2;
  if (avail >= 3 && c == 0xe2 && (unsigned char)p[1] == 0x80 &&
      ((unsigned char)p[2] == 0xa8 || (unsigned char)p[2] == 0xa9))
    return 3;
  return 0;
}

static gboolean encode_piece(const MoelmTextEncoder *enc, const char *text, gsize len, GArray *tokens,
                             GError **error)
{
  if (len == 0)
    return TRUE;
  GPtrArray *words = enc->gpt2  ? moelm_gpt2_bpe_encode_words(enc->gpt2, text, len, error)
                     : enc->spm ? moelm_spm_encode_pieces(enc->spm, text, len, error)
                                : moelm_split_words(text, len);
  if (words == NULL)
    return FALSE;
  for (guint i = 0; i < words->len; i++) {
    const int32_t id = moelm_dictionary_index(enc->dict, words->pdata[i]);
    g_array_append_val(tokens, id);
  }
  g_ptr_array_unref(words);
  return TRUE;
}

/* One part of the text: with newlines replaced, every complete line gets its </s>; the
 * trailing unterminated line gets one only when `last`. Without, only the end of the text
 * gets </s>. */
static gboolean encode_part(const MoelmTextEncoder *enc, const char *text, gboolean last, GArray *tokens,
                            GError **error)
{
  const gsize len = strlen(text);
  const int32_t eos = MOELM_EOS;
  if (!enc->replace_newlines_with_eos) {
    if (!encode_piece(enc, text, len, tokens, error))
      return FALSE;
    if (last)
      g_array_append_val(tokens, eos);
    return TRUE;
  }
  gsize start = 0;
  for (gsize i = 0; i < len;) {
    const gsize br = line_break_len(text + i, len - i);
    if (br == 0) {
      i++;
      continue;
    }
    if (!encode_piece(enc, text + start, i - start, tokens, error))
      return FALSE;
    g_array_append_val(tokens, eos);
    i += br;
    start = i;
  }
  if (start < len && !encode_piece(enc, text + start, len - start, tokens, error))
    return FALSE;
  if (last && start < len) /* (a trailing </s> is stripped before scoring anyway) */
    g_array_append_val(tokens, eos);
  return TRUE;
}

gboolean moelm_encode_continuation(const MoelmTextEncoder *enc, const char *context, const char *choice,
                                   GArray *tokens, int *n_context, GError **error)
{
  if (!g_utf8_validate(context, -1, NULL) || !g_utf8_validate(choice, -1, NULL)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "the text is not valid UTF-8");
    return FALSE;
  }
  const guint base = tokens->len;
  if (!encode_part(enc, context, FALSE, tokens, error))
    return FALSE;
  *n_context = (int)(tokens->len - base);
  return encode_part(enc, choice, TRUE, tokens, error);
}

void moelm_choice_score_clear(MoelmChoiceScore *c)
{
  g_free(c->tokens);
  g_free(c->lprobs);
  memset(c, 0, sizeof *c);
}

static double lse(const double *v, int n)
{
  double m = -INFINITY, s = 0;
  for (int i = 0; i < n; i++)
    m = fmax(m, v[i]);
  if (isinf(m))
    return m;
  for (int i = 0; i < n; i++)
    s += exp(v[i] - m);
  return m + log(s);
}

/* Per-position log-probs (rows, n): row r with `first[r]` at position 0. */
static gboolean score_rows(MoelmModel *m, const int32_t *t, int n, const int32_t *first, int rows, float *lp,
                           GError **error)
{
  int32_t *src = g_new(int32_t, (gsize)rows * n), *tgt = g_new(int32_t, (gsize)rows * n);
  for (int r = 0; r < rows; r++) {
    src[(gsize)r * n] = first[r];
    memcpy(src + (gsize)r * n + 1, t, (gsize)(n - 1) * sizeof(int32_t));
    memcpy(tgt + (gsize)r * n, t, (gsize)n * sizeof(int32_t));
  }
  const MoelmBatch b = {rows, n, src, tgt};
  const gboolean ok = moelm_model_score(m, &b, NULL, lp, NULL, error);
  g_free(src);
  g_free(tgt);
  return ok;
}

gboolean moelm_score_continuation(const MoelmChoiceScorer *s, const int32_t *tokens, int n, int n_context,
                                  MoelmChoiceScore *out, GError **error)
{
  memset(out, 0, sizeof *out);
  out->expert = -1;
  /* fairseq's StripTokenDataset: no </s> at either end is scored */
  int lo = 0, hi = n;
  while (hi > lo && tokens[hi - 1] == MOELM_EOS)
    hi--;
  while (lo < hi && tokens[lo] == MOELM_EOS)
    lo++;
  const int ctx = CLAMP(n_context - lo, 0, hi - lo), len = hi - lo;
  const int32_t *t = tokens + lo;
  out->n = len - ctx;
  out->tokens = g_new(int32_t, MAX(out->n, 1));
  out->lprobs = g_new0(float, MAX(out->n, 1));
  memcpy(out->tokens, t + ctx, (gsize)out->n * sizeof(int32_t));
  if (out->n == 0)
    return TRUE;
  const int max_pos = moelm_model_get_config(s->model)->max_positions;
  if (len > max_pos) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%d tokens exceed the model's %d positions", len,
                max_pos);
    return FALSE;
  }
  const int K = s->mix ? s->mix->num_experts : 1;
  int32_t *first = g_new(int32_t, K);
  for (int k = 0; k < K; k++)
    first[k] = s->mix ? s->mix->expert_token0 + k : MOELM_EOS;
  float *lp = g_new(float, (gsize)K * len);
  double *log_prior = g_new0(double, K), *acc = g_new(double, K);
  gboolean ok = score_rows(s->model, t, len, first, K, lp, error);
  if (ok && s->mix)
    ok = moelm_mixture_prompt_log_joint(s->model, s->gate, s->mix, NULL, 0, log_prior, error);
  if (ok && s->mix && s->expert == MOELM_CHOICE_AUTO) { /* the best expert given the context */
    int best = 0;
    for (int k = 0; k < K; k++) {
      acc[k] = log_prior[k];
      for (int i = 0; i < ctx; i++)
        acc[k] += lp[(gsize)k * len + i];
      if (acc[k] > acc[best])
        best = k;
    }
    out->expert = best;
  } else if (s->mix && s->expert >= 0)
    out->expert = s->expert;
  if (ok && s->mix && out->expert < 0) { /* the exact marginal, token by token */
    memcpy(acc, log_prior, (gsize)K * sizeof(double));
    double prev = lse(acc, K);
    for (int i = 0; i < len; i++) {
      for (int k = 0; k < K; k++)
        acc[k] += lp[(gsize)k * len + i];
      const double now = lse(acc, K);
      if (i >= ctx)
        out->lprobs[i - ctx] = (float)(now - prev);
      prev = now;
    }
  } else if (ok) {
    const float *row = lp + (gsize)(out->expert > 0 ? out->expert : 0) * len;
    memcpy(out->lprobs, row + ctx, (gsize)out->n * sizeof(float));
  }
  for (int i = 0; ok && i < out->n; i++)
    out->sum += out->lprobs[i];
  g_free(first);
  g_free(lp);
  g_free(log_prior);
  g_free(acc);
  return ok;
}
