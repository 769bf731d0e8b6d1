/* moelm — eval-lm scoring: context-window rows, batched model calls, fairseq's bpe merging. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm/errors.h"
#include "moelm/log.h"
#include "moelm/timer.h"
#include "scorer.h"

/* ---- row construction ---------------------------------------------------------------- */

void moelm_context_window_init(MoelmContextWindow *cw, int context_window, int64_t max_row)
{
  cw->context_window = MAX(context_window, 0);
  cw->max_row = max_row;
  cw->prev = g_new(int32_t, cw->context_window > 0 ? cw->context_window : 1);
  cw->n_prev = 0;
}

void moelm_context_window_clear(MoelmContextWindow *cw)
{
  g_free(cw->prev);
  cw->prev = NULL;
  cw->n_prev = 0;
}

int moelm_context_window_next(MoelmContextWindow *cw, const int32_t *source, const int32_t *target, int64_t n,
                              int32_t *row_src, int32_t *row_tgt)
{
  const int C = cw->context_window;
  /* fairseq measures the block by its non-pad source tokens */
  int64_t sample_len = 0;
  for (int64_t j = 0; j < n; j++)
    sample_len += source[j] != MOELM_PAD;
  const int64_t extra = cw->n_prev + sample_len - cw->max_row;
  if (extra > 0) { /* drop the oldest context so the row stays within max_row */
    const int keep = extra >= cw->n_prev ? 0 : cw->n_prev - (int)extra;
    memmove(cw->prev, cw->prev + (cw->n_prev - keep), (gsize)keep * sizeof(int32_t));
    cw->n_prev = keep;
  }
  const int ctx = cw->n_prev;
  memcpy(row_src, cw->prev, (gsize)ctx * sizeof(int32_t));
  memcpy(row_src + ctx, source, (gsize)n * sizeof(int32_t));
  for (int j = 0; j < ctx; j++)
    row_tgt[j] = MOELM_PAD;
  memcpy(row_tgt + ctx, target, (gsize)n * sizeof(int32_t));
  /* the next context: the last C non-pad tokens of this row */
  int got = 0;
  for (int64_t j = ctx + n - 1; j >= 0 && got < C; j--)
    if (row_src[j] != MOELM_PAD)
      cw->prev[C - 1 - got++] = row_src[j];
  memmove(cw->prev, cw->prev + (C - got), (gsize)got * sizeof(int32_t));
  cw->n_prev = got;
  return ctx;
}

/* ---- word merging -------------------------------------------------------------------- */

#define SP_WORD_START "\xe2\x96\x81" /* U+2581 */

gboolean moelm_bpe_kind_parse(const char *name, MoelmBpeKind *kind, GError **error)
{
  if (name == NULL)
    *kind = MOELM_BPE_NONE;
  else if (strcmp(name, "@@ ") == 0 || strcmp(name, "@@") == 0 || strcmp(name, "subword_nmt") == 0)
    *kind = MOELM_BPE_SUFFIX;
  else if (strcmp(name, "sentencepiece") == 0)
    *kind = MOELM_BPE_SENTENCEPIECE;
  else if (strcmp(name, "gpt2") == 0)
    *kind = MOELM_BPE_GPT2;
  else {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--post-process=%s is not implemented (use '@@ ', subword_nmt, sentencepiece or gpt2)", name);
    return FALSE;
  }
  return TRUE;
}

/* <s> <pad> </s> <unk> stand alone: they neither continue nor get continued. */
static gboolean is_special(int32_t id) { return id < MOELM_NSPECIAL; }

gboolean moelm_bpe_piece_continues(const MoelmDictionary *dict, MoelmBpeKind kind, const MoelmGpt2Bpe *gpt2,
                                   const int32_t *targets, int64_t n, int64_t i)
{
  switch (kind) {
  case MOELM_BPE_SUFFIX:
    return g_str_has_suffix(moelm_dictionary_symbol(dict, targets[i]), "@@");
  case MOELM_BPE_SENTENCEPIECE:
    return i + 1 < n && !is_special(targets[i]) && !is_special(targets[i + 1]) &&
           !g_str_has_prefix(moelm_dictionary_symbol(dict, targets[i + 1]), SP_WORD_START);
  case MOELM_BPE_GPT2:
    return gpt2 && i + 1 < n && !is_special(targets[i]) && !is_special(targets[i + 1]) &&
           !moelm_gpt2_bpe_word_starts_with_space(gpt2, moelm_dictionary_symbol(dict, targets[i + 1]));
  default:
    return FALSE;
  }
}

int64_t moelm_bpe_merge_scores(const MoelmDictionary *dict, MoelmBpeKind kind, const MoelmGpt2Bpe *gpt2,
                               const int32_t *targets, float *lprobs, int64_t n)
{
  if (kind == MOELM_BPE_NONE)
    return 0;
  int64_t merged = 0;
  for (int64_t i = 0; i + 1 < n; i++)
    if (moelm_bpe_piece_continues(dict, kind, gpt2, targets, n, i)) {
      lprobs[i + 1] += lprobs[i];
      lprobs[i] = 0.0f;
      merged++;
    }
  return merged;
}

static void word_prob_free(gpointer p)
{
  MoelmWordProb *w = p;
  g_free(w->word);
  g_free(w);
}

GPtrArray *moelm_row_words(const MoelmDictionary *dict, MoelmBpeKind kind, const MoelmGpt2Bpe *gpt2,
                           const int32_t *targets, const float *lprobs, int64_t n)
{
  GPtrArray *out = g_ptr_array_new_with_free_func(word_prob_free);
  GString *w = g_string_new(NULL);
  GPtrArray *syms = g_ptr_array_new(); /* --bpe gpt2: the word's tokens, decoded together */
  gboolean is_bpe = FALSE;
  for (int64_t i = 0; i < n; i++) {
    g_string_append(w, moelm_dictionary_symbol(dict, targets[i]));
    g_ptr_array_add(syms, (gpointer)moelm_dictionary_symbol(dict, targets[i]));
    if (kind != MOELM_BPE_NONE && moelm_bpe_piece_continues(dict, kind, gpt2, targets, n, i)) {
      if (kind == MOELM_BPE_SUFFIX)
        g_string_truncate(w, w->len - 2);
      is_bpe = TRUE;
      continue;
    }
    if (gpt2) {
      char *text = moelm_gpt2_bpe_decode_words(gpt2, (const char *const *)syms->pdata, syms->len);
      g_string_assign(w, text + (kind == MOELM_BPE_GPT2 && text[0] == ' ' && text[1] ? 1 : 0));
      g_free(text);
    }
    g_ptr_array_set_size(syms, 0);
    MoelmWordProb *wp = g_new0(MoelmWordProb, 1);
    const gsize skip = kind == MOELM_BPE_SENTENCEPIECE && g_str_has_prefix(w->str, SP_WORD_START) && w->len > 3 ? 3 : 0;
    wp->word = g_strdup(w->str + skip);
    wp->lprob = lprobs[i];
    wp->is_bpe = is_bpe;
    for (int64_t j = i + 1; j < n; j++)
      if (lprobs[j] != 0.0f) {
        wp->has_next = TRUE;
        wp->next_lprob = lprobs[j];
        break;
      }
    g_ptr_array_add(out, wp);
    g_string_truncate(w, 0);
    is_bpe = FALSE;
  }
  g_string_free(w, TRUE);
  g_ptr_array_unref(syms);
  return out;
}

/* ---- scoring a split ----------------------------------------------------------------- */

double moelm_score_loss_base2(const MoelmScoreResult *r)
{
  return r->count > 0 ? r->nll_sum / (double)r->count / M_LN2 : 0.0;
}

double moelm_score_perplexity(const MoelmScoreResult *r) { return pow(2.0, moelm_score_loss_base2(r)); }

/* The rows of one batch before padding: each row's tokens back to back. */
typedef struct {
  guint n;          /* rows */
  gsize *block;     /* (n) block index */
  int64_t *len;     /* (n) block length */
  int *ctx;         /* (n) context length */
  gsize *off;       /* (n) offset of the row in src/tgt */
  int32_t *src, *tgt;
  gsize cap;        /* tokens allocated in src/tgt */
} RowBatch;

static void row_batch_clear(RowBatch *rb)
{
  g_free(rb->block);
  g_free(rb->len);
  g_free(rb->ctx);
  g_free(rb->off);
  g_free(rb->src);
  g_free(rb->tgt);
}

/* The blocks from *next on that fit one batch, into rb->block / rb->n: at most max_sentences
 * rows and, as fairseq's batch_by_size, (rows x longest block) <= max_tokens. Blocks longer
 * than max_positions are passed over (counted in *skipped); rb->n = 0 at the end. */
static gboolean next_batch(const MoelmLmSplit *split, const MoelmScoreOptions *opt, int64_t max_positions, gsize *next,
                           RowBatch *rb, int64_t *skipped, GError **error)
{
  const gsize n = moelm_lm_split_n_blocks(split);
  int64_t longest = 0;
  rb->n = 0;
  while (*next < n) {
    const int64_t size = moelm_token_blocks_size(split->blocks, *next);
    if (size > max_positions) {
      (*skipped)++;
      (*next)++;
      continue;
    }
    if (opt->max_tokens > 0 && size > opt->max_tokens) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                  "%s: block %zu of %" G_GINT64_FORMAT " tokens exceeds --max-tokens %" G_GINT64_FORMAT,
                  split->prefix, *next, size, opt->max_tokens);
      return FALSE;
    }
    const int64_t wider = MAX(longest, size);
    const guint k = rb->n;
    if (k > 0 && ((opt->max_sentences > 0 && (int)k >= opt->max_sentences) ||
                  (opt->max_tokens > 0 && (int64_t)(k + 1) * wider > opt->max_tokens)))
      break;
    rb->block[rb->n++] = *next;
    longest = wider;
    (*next)++;
  }
  return TRUE;
}

/* Lay the batch's blocks out as rows (advancing the context window). */
static void build_rows(const MoelmLmSplit *split, MoelmContextWindow *cw, RowBatch *rb)
{
  gsize need = 0;
  for (guint r = 0; r < rb->n; r++)
    need += (gsize)cw->context_window + (gsize)moelm_token_blocks_size(split->blocks, rb->block[r]);
  if (need > rb->cap) {
    rb->src = g_renew(int32_t, rb->src, need);
    rb->tgt = g_renew(int32_t, rb->tgt, need);
    rb->cap = need;
  }
  gsize off = 0;
  for (guint r = 0; r < rb->n; r++) {
    const int64_t len = moelm_token_blocks_size(split->blocks, rb->block[r]);
    int32_t *source = g_new(int32_t, len > 0 ? len : 1), *target = g_new(int32_t, len > 0 ? len : 1);
    moelm_token_blocks_get(split->blocks, split->ds, rb->block[r], source, target);
    rb->len[r] = len;
    rb->off[r] = off;
    rb->ctx[r] = moelm_context_window_next(cw, source, target, len, rb->src + off, rb->tgt + off);
    off += (gsize)rb->ctx[r] + (gsize)len;
    g_free(source);
    g_free(target);
  }
}

/* Pad the rows to (B, W), score them, and hand each row's targets to the accounting. */
static gboolean score_rows(MoelmRowScorerFunc score, gpointer score_data, const MoelmLmSplit *split,
                           const MoelmScoreOptions *opt, const RowBatch *rb, MoelmScoredRowFunc cb, gpointer cb_data,
                           MoelmScoreResult *out, GError **error)
{
  const int B = (int)rb->n;
  int W = 1;
  for (int r = 0; r < B; r++)
    W = MAX(W, rb->ctx[r] + (int)rb->len[r]);
  int32_t *src = g_new(int32_t, (gsize)B * W), *tgt = g_new(int32_t, (gsize)B * W);
  float *lp = g_new0(float, (gsize)B * W);
  int64_t *start = g_new(int64_t, B);
  for (gsize i = 0; i < (gsize)B * W; i++)
    src[i] = tgt[i] = MOELM_PAD;
  for (int r = 0; r < B; r++) {
    const gsize w = (gsize)rb->ctx[r] + (gsize)rb->len[r];
    memcpy(src + (gsize)r * W, rb->src + rb->off[r], w * sizeof(int32_t));
    memcpy(tgt + (gsize)r * W, rb->tgt + rb->off[r], w * sizeof(int32_t));
    start[r] = moelm_token_blocks_slice(split->blocks, rb->block[r]).start;
  }
  const MoelmScoreRows rows = {B, W, src, tgt, rb->ctx, rb->len, start};
  const double t0 = moelm_time_now();
  gboolean ok = score(&rows, lp, score_data, error);
  out->seconds += moelm_time_now() - t0;
  if (!ok)
    moelm_error_prefix(error, "%s", split->prefix);
  for (int r = 0; ok && r < B; r++) {
    const int64_t n = rb->len[r];
    const int32_t *targets = tgt + (gsize)r * W + rb->ctx[r];
    float *row = lp + (gsize)r * W + rb->ctx[r];
    const int64_t merged = moelm_bpe_merge_scores(opt->dict, opt->bpe, opt->gpt2, targets, row, n);
    int64_t finite = 0;
    for (int64_t j = 0; j < n; j++) {
      if (isinf(row[j])) {
        out->skipped_inf++;
        continue;
      }
      out->nll_sum -= row[j];
      finite++;
    }
    out->count += finite - merged;
    out->ntokens += n;
    out->rows++;
    if (cb) {
      const MoelmScoredRow sr = {rb->block[r], start[r], n, rb->ctx[r], targets, row};
      ok = cb(&sr, cb_data, error);
    }
  }
  g_free(src);
  g_free(tgt);
  g_free(lp);
  g_free(start);
  return ok;
}

gboolean moelm_score_split_with(MoelmRowScorerFunc score, gpointer score_data, const MoelmLmSplit *split,
                                const MoelmScoreOptions *opt, MoelmScoredRowFunc cb, gpointer cb_data,
                                MoelmScoreResult *out, GError **error)
{
  memset(out, 0, sizeof *out);
  if (opt->context_window < 0 || opt->tokens_per_sample <= 0 || opt->max_positions <= 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "%s: bad context window %d / tokens per sample %" G_GINT64_FORMAT " / max positions %" G_GINT64_FORMAT,
                split->prefix, opt->context_window, opt->tokens_per_sample, opt->max_positions);
    return FALSE;
  }
  if (opt->max_sentences <= 0 && opt->max_tokens <= 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: a batch needs --max-tokens or --batch-size",
                split->prefix);
    return FALSE;
  }
  if ((opt->bpe != MOELM_BPE_NONE && opt->dict == NULL) || (opt->bpe == MOELM_BPE_GPT2 && opt->gpt2 == NULL)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: bpe merging needs the dictionary (and the GPT-2 files for gpt2)", split->prefix);
    return FALSE;
  }
  MoelmContextWindow cw;
  moelm_context_window_init(&cw, opt->context_window, opt->tokens_per_sample + opt->context_window);
  const gsize n = moelm_lm_split_n_blocks(split);
  const gsize rows_cap = opt->max_sentences > 0 ? MIN((gsize)opt->max_sentences, MAX(n, 1)) : MAX(n, 1);
  RowBatch rb = {0};
  rb.block = g_new(gsize, rows_cap);
  rb.len = g_new(int64_t, rows_cap);
  rb.ctx = g_new(int, rows_cap);
  rb.off = g_new(gsize, rows_cap);
  gboolean ok = TRUE;
  gsize next = 0;
  while (ok && next < n) {
    ok = next_batch(split, opt, opt->max_positions, &next, &rb, &out->skipped_blocks, error);
    if (!ok || rb.n == 0)
      break;
    build_rows(split, &cw, &rb);
    ok = score_rows(score, score_data, split, opt, &rb, cb, cb_data, out, error);
  }
  if (ok && out->skipped_blocks > 0)
    moelm_warn("moelm.eval", "%s: %" G_GINT64_FORMAT " blocks have invalid sizes and were skipped, max_positions=%"
               G_GINT64_FORMAT, split->prefix, out->skipped_blocks, opt->max_positions);
  row_batch_clear(&rb);
  moelm_context_window_clear(&cw);
  return ok;
}

/* The plain language model: one pass over the rows as they are. */
static gboolean dense_score(const MoelmScoreRows *rows, float *lprobs, gpointer data, GError **error)
{
  const MoelmBatch batch = {.B = rows->B, .T = rows->W, .src = rows->src, .tgt = rows->tgt};
  return moelm_model_score(data, &batch, NULL, lprobs, NULL, error);
}

gboolean moelm_score_split(MoelmModel *m, const MoelmLmSplit *split, const MoelmScoreOptions *opt,
                           MoelmScoredRowFunc cb, gpointer cb_data, MoelmScoreResult *out, GError **error)
{
  MoelmScoreOptions o = *opt;
  if (o.max_positions <= 0)
    o.max_positions = moelm_model_get_config(m)->max_positions;
  return moelm_score_split_with(dense_score, m, split, &o, cb, cb_data, out, error);
}
