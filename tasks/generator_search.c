/* moelm — one step of generation: fairseq's BeamSearch and Sampling (fairseq/search.py),
 * temperature and no-repeat-ngram blocking, on host float32 log-probs as fairseq keeps
 * them. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "generator_search.h"

void gen_apply_temperature(float *lp, int V, double temperature)
{
  /* dividing the log-probs instead of the logits changes only the constant the
   * log_softmax takes out */
  const float t = (float)temperature;
  float mx = -INFINITY;
  for (int v = 0; v < V; v++) {
    lp[v] /= t;
    if (lp[v] > mx)
      mx = lp[v];
  }
  if (mx == -INFINITY)
    return;
  double sum = 0;
  for (int v = 0; v < V; v++)
    sum += exp((double)(lp[v] - mx));
  const float shift = mx + (float)log(sum);
  for (int v = 0; v < V; v++)
    lp[v] -= shift;
}

void gen_block_ngrams(float *lp, const int32_t *seq, int len, int n)
{
  /* the last n-1 tokens, followed by any token that followed them before, would repeat an
   * n-gram: for every earlier window equal to the tail, ban what came after it */
  const int32_t *tail = seq + len - (n - 1);
  for (int i = 0; i + n <= len; i++)
    if (memcmp(seq + i, tail, (size_t)(n - 1) * sizeof(int32_t)) == 0)
      lp[seq[i + n - 1]] = -INFINITY;
}

/* Keep the `cap` best (score, flat index) pairs seen so far, best first; an equal score never
 * displaces an earlier (lower) index. */
typedef struct {
  int n, cap;
  float *score;
  int64_t *flat;
} TopN;

static void topn_offer(TopN *t, float s, int64_t flat)
{
  if (t->n == t->cap && !(s > t->score[t->n - 1]))
    return;
  int pos = t->n < t->cap ? t->n++ : t->n - 1;
  while (pos > 0 && s > t->score[pos - 1]) {
    t->score[pos] = t->score[pos - 1];
    t->flat[pos] = t->flat[pos - 1];
    pos--;
  }
  t->score[pos] = s;
  t->flat[pos] = flat;
}

typedef struct {
  float lp;
  int32_t token;
} LprobToken;

void gen_scratch_init(GenScratch *s, int V, int K)
{
  const int n = V > 2 * K ? V : 2 * K;
  s->lp = g_new(float, n);
  s->idx = g_new(int32_t, n);
  s->flat = g_new(int64_t, n);
  s->pairs = g_new(LprobToken, n);
}

void gen_scratch_clear(GenScratch *s)
{
  g_free(s->lp);
  g_free(s->idx);
  g_free(s->flat);
  g_free(s->pairs);
  memset(s, 0, sizeof *s);
}

void gen_beam_step(const float *lprobs, const float *prev, int K, int V, GenScratch *scratch, GenCandidates *out)
{
  const int rows = prev ? K : 1;
  const int64_t total = (int64_t)rows * V;
  int cap = 2 * K;
  if (cap > total - 1)
    cap = (int)(total - 1); /* fairseq: "-1 so we never select pad" */
  TopN t = {0, cap, out->score, scratch->flat};
  for (int r = 0; r < rows; r++) {
    const float *row = lprobs + (size_t)r * V;
    const float base = prev ? prev[r] : 0.0f;
    for (int v = 0; v < V; v++)
      topn_offer(&t, prev ? row[v] + base : row[v], (int64_t)r * V + v);
  }
  out->n = t.n;
  for (int i = 0; i < t.n; i++) {
    out->beam[i] = (int32_t)(t.flat[i] / V);
    out->token[i] = (int32_t)(t.flat[i] % V);
  }
}

static int compare_lprob_desc(const void *a, const void *b)
{
  const LprobToken *x = a, *y = b;
  if (x->lp != y->lp)
    return x->lp > y->lp ? -1 : 1;
  return (x->token > y->token) - (x->token < y->token);
}

/* The candidate set of one row, by rank: n (log-prob, token) pairs in scratch->lp/idx. */
static int sampling_candidates(const float *row, int V, int topk, double topp, GenScratch *s)
{
  if (topp > 0) {
    /* the smallest prefix of the probability-sorted row whose mass exceeds p: the tokens
     * whose cumulative mass is < p, plus one more (masked tokens keep their mass out, as
     * fairseq does not renormalise) */
    LprobToken *pairs = s->pairs;
    for (int v = 0; v < V; v++)
      pairs[v] = (LprobToken){row[v], v};
    qsort(pairs, (size_t)V, sizeof *pairs, compare_lprob_desc);
    double cum = 0;
    int below = 0;
    for (int i = 0; i < V; i++) {
      cum += expf(pairs[i].lp);
      if ((float)cum < (float)topp)
        below++;
    }
    const int n = below < V - 1 ? below + 1 : V;
    for (int i = 0; i < n; i++) {
      s->lp[i] = pairs[i].lp;
      s->idx[i] = pairs[i].token;
    }
    return n;
  }
  if (topk > 0) {
    TopN t = {0, topk < V ? topk : V, s->lp, s->flat};
    for (int v = 0; v < V; v++)
      topn_offer(&t, row[v], v);
    for (int i = 0; i < t.n; i++)
      s->idx[i] = (int32_t)t.flat[i];
    return t.n;
  }
  memcpy(s->lp, row, (size_t)V * sizeof(float));
  for (int v = 0; v < V; v++)
    s->idx[v] = v;
  return V;
}

/* torch.multinomial with replacement, one draw: position i with probability
 * exp(lp[i]) / Σ exp(lp). Weights are taken relative to the largest log-prob, so a set
 * of tiny probabilities (a forced token at a low temperature) cannot underflow to nothing. */
static int draw(const float *lp, int n, MoelmRng *rng)
{
  float mx = -INFINITY;
  int best = 0;
  for (int i = 0; i < n; i++)
    if (lp[i] > mx) {
      mx = lp[i];
      best = i;
    }
  if (mx == -INFINITY)
    return 0; /* nothing possible: the draw scores -inf and never finishes */
  double total = 0;
  for (int i = 0; i < n; i++)
    total += exp((double)lp[i] - mx);
  const double u = moelm_rng_next_double(rng) * total;
  double cum = 0;
  for (int i = 0; i < n; i++) {
    const double w = exp((double)lp[i] - mx);
    cum += w;
    if (w > 0 && cum > u)
      return i;
  }
  return best;
}

void gen_sampling_step(const float *lprobs, const float *prev, int K, int V, int topk, double topp, MoelmRng *rng,
                       GenScratch *scratch, GenCandidates *out)
{
  int n = 0;
  for (int i = 0; i < K; i++) {
    /* first step: every hypothesis is the same, so all K draws come from row 0 */
    const int r = prev ? i : 0;
    if (prev || i == 0)
      n = sampling_candidates(lprobs + (size_t)r * V, V, topk, topp, scratch);
    const int pick = draw(scratch->lp, n, rng);
    out->token[i] = scratch->idx[pick];
    out->score[i] = scratch->lp[pick] + (prev ? prev[r] : 0.0f);
    out->beam[i] = prev ? r : 0;
  }
  out->n = K;
}
