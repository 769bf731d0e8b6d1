/* moelm — token routing on the CPU: fairseq's Top1Gate / Top2Gate (fairseq/modules/moe/
 * top1gate.py, top2gate.py) as the four moe_gate_* ops of the table (semantics in
 * lib/moelm/backend.h). One implementation serves the reference and the fast path: routing
 * is O(S*E) and sequential by nature (capacity queues), and this is the reference any other
 * backend's routing is tested against. */
#include "config.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu-internal.h"

/* fairseq's logging: the top/bottom 20% of experts (SAMPLE_FRACTION in top2gate.py). */
#define BALANCE_FRACTION 0.2

static float unit_open(uint64_t seed, uint32_t update, uint16_t layer, uint16_t site, uint64_t i)
{
  const uint32_t w = moelm_philox_word(seed, update, layer, site, i);
  return ((float)(w >> 8) + 0.5f) * (1.0f / 16777216.0f);
}

/* Softmax per token, in double for the sums (fp32 gating, as --moe-gating-use-fp32). */
static void softmax_rows(const float *logits, float *gates, int S, int E)
{
  for (int s = 0; s < S; s++) {
    const float *x = logits + (size_t)s * E;
    float *g = gates + (size_t)s * E;
    float mx = x[0];
    for (int e = 1; e < E; e++)
      mx = fmaxf(mx, x[e]);
    double sum = 0;
    for (int e = 0; e < E; e++)
      sum += (g[e] = expf(x[e] - mx));
    const float inv = (float)(1.0 / sum);
    for (int e = 0; e < E; e++)
      g[e] *= inv;
  }
}

/* The k-th choices: first = argmax of the gates; second per policy. */
static void choose(const MoelmRouteParams *p, const float *logits, const MoelmRouteBuffers *r, int S)
{
  const int E = p->experts, K = p->top_k;
  for (int s = 0; s < S; s++) {
    const float *g = r->gates + (size_t)s * E;
    int e1 = 0;
    for (int e = 1; e < E; e++)
      if (g[e] > g[e1])
        e1 = e;
    r->choice[(size_t)s * K] = e1;
    if (K < 2)
      continue;
    const gboolean gumbel = p->noise && p->policy == MOELM_SECOND_EXPERT_SAMPLING;
    const float *x = logits + (size_t)s * E;
    int e2 = -1;
    float best = -INFINITY;
    for (int e = 0; e < E; e++) {
      if (e == e1)
        continue;
      float v = x[e];
      if (gumbel)
        v += -logf(-logf(unit_open(p->seed, p->update, p->layer, MOELM_GATE_SITE_GUMBEL, (uint64_t)s * E + e)));
      if (e2 < 0 || v > best) {
        e2 = e;
        best = v;
      }
    }
    r->choice[(size_t)s * K + 1] = e2;
  }
}

/* norm: the gate values combined (normalised over the two choices before dropping when
 * asked); queued: whether a slot takes part in capacity assignment at all. */
static void gate_values(const MoelmRouteParams *p, const uint8_t *pad, const MoelmRouteBuffers *r, int S)
{
  const int E = p->experts, K = p->top_k;
  for (int s = 0; s < S; s++) {
    const float *g = r->gates + (size_t)s * E;
    float *nv = r->norm + (size_t)s * K;
    for (int k = 0; k < K; k++)
      nv[k] = g[r->choice[(size_t)s * K + k]];
    if (K == 2 && p->normalize_before_dropping) {
      const float denom = fmaxf(nv[0] + nv[1], FLT_EPSILON);
      nv[0] /= denom;
      nv[1] /= denom;
    }
    const gboolean real = pad == NULL || !pad[s];
    for (int k = 0; k < K; k++)
      r->queued[(size_t)s * K + k] = real;
    if (K == 2 && p->noise && p->policy == MOELM_SECOND_EXPERT_RANDOM &&
        !(2.0f * nv[1] > unit_open(p->seed, p->update, p->layer, MOELM_GATE_SITE_RANDOM, (uint64_t)s)))
      r->queued[(size_t)s * K + 1] = 0;
  }
}

static void cpu_moe_gate_topk(MoelmBackend *be, const MoelmRouteParams *p, const float *logits, const uint8_t *pad,
                              int S, const MoelmRouteBuffers *r)
{
  softmax_rows(logits, r->gates, S, p->experts);
  choose(p, logits, r, S);
  gate_values(p, pad, r, S);
}

/* Queue positions: first choices before second choices, tokens in `order` (NULL: token
 * order); count1 = queued first choices per expert (for l_aux). */
static void assign_locations(const MoelmRouteParams *p, const MoelmRouteBuffers *r, int S, const int32_t *order)
{
  const int E = p->experts, K = p->top_k;
  int32_t *fill = g_new0(int32_t, E);
  for (int k = 0; k < K; k++) {
    for (int i = 0; i < S; i++) {
      const int s = order ? order[i] : i;
      const size_t j = (size_t)s * K + k;
      r->location[j] = r->queued[j] ? fill[r->choice[j]]++ : -1;
    }
    if (k == 0)
      memcpy(r->count1, fill, (size_t)E * sizeof(int32_t));
  }
  g_free(fill);
}

static int cmp_priority(const void *a, const void *b, void *data)
{
  const float *key = data; /* the top-1 gate of each token */
  const int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
  if (key[i] != key[j])
    return key[i] > key[j] ? -1 : 1;
  return (i > j) - (i < j);
}

static void combine_weights(const MoelmRouteParams *p, const MoelmRouteBuffers *r, int S)
{
  const int K = p->top_k;
  const gboolean normalize_before = K == 2 && p->normalize_before_dropping;
  for (int s = 0; s < S; s++) {
    float *w = r->weight + (size_t)s * K;
    const float *nv = r->norm + (size_t)s * K;
    const uint8_t *kept = r->kept + (size_t)s * K;
    for (int k = 0; k < K; k++)
      w[k] = kept[k] ? nv[k] : 0.0f;
    if (K == 2 && !normalize_before) {
      const float denom = fmaxf(w[0] + w[1], FLT_EPSILON);
      w[0] /= denom;
      w[1] /= denom;
    }
  }
}

static void dispatch_order(const MoelmRouteParams *p, const MoelmRouteBuffers *r, int S)
{
  const int E = p->experts, K = p->top_k;
  const size_t slots = (size_t)S * K;
  memset(r->offsets, 0, (size_t)(E + 1) * sizeof(int32_t));
  for (size_t j = 0; j < slots; j++)
    if (r->kept[j])
      r->offsets[r->choice[j] + 1]++;
  for (int e = 0; e < E; e++)
    r->offsets[e + 1] += r->offsets[e];
  /* kept locations of an expert are 0..kept_e-1, so offset + location is the row */
  for (size_t j = 0; j < slots; j++)
    if (r->kept[j]) {
      const int row = r->offsets[r->choice[j]] + r->location[j];
      r->dispatch_token[row] = (int32_t)(j / (size_t)K);
      r->dispatch_slot[row] = (int32_t)j;
      r->dispatch_weight[row] = r->weight[j];
    }
  for (size_t row = (size_t)r->offsets[E]; row < slots; row++) {
    r->dispatch_token[row] = r->dispatch_slot[row] = -1;
    r->dispatch_weight[row] = 0.0f;
  }
}

static void cpu_moe_gate_dispatch(MoelmBackend *be, const MoelmRouteParams *p, int S, const MoelmRouteBuffers *r)
{
  const int E = p->experts, K = p->top_k;
  int32_t *order = NULL;
  if (p->batch_prioritized) {
    float *key = g_new(float, S > 0 ? S : 1);
    order = r->order;
    for (int s = 0; s < S; s++) {
      key[s] = r->gates[(size_t)s * E + r->choice[(size_t)s * K]];
      order[s] = s;
    }
    g_qsort_with_data(order, S, sizeof(int32_t), cmp_priority, key);
    g_free(key);
  }
  assign_locations(p, r, S, order);
  for (size_t j = 0; j < (size_t)S * K; j++)
    r->kept[j] = r->location[j] >= 0 && (p->capacity <= 0 || r->location[j] < p->capacity);
  combine_weights(p, r, S);
  dispatch_order(p, r, S);
}

/* fairseq's balance metadata from the histogram of k-th choices over all S tokens. */
static void balance(const MoelmRouteParams *p, const MoelmRouteBuffers *r, int S, int k, double *unused,
                    double *top, double *bottom)
{
  const int E = p->experts, K = p->top_k;
  double *hist = g_new0(double, E);
  for (int s = 0; s < S; s++)
    hist[r->choice[(size_t)s * K + k]] += 100.0 / S;
  *unused = 0;
  for (int e = 0; e < E; e++)
    *unused += hist[e] == 0;
  /* descending insertion sort: E is small */
  for (int i = 1; i < E; i++)
    for (int j = i; j > 0 && hist[j] > hist[j - 1]; j--) {
      double t = hist[j];
      hist[j] = hist[j - 1];
      hist[j - 1] = t;
    }
  const int n = MAX(1, (int)ceil(E * BALANCE_FRACTION));
  *top = *bottom = 0;
  for (int i = 0; i < n; i++) {
    *top += hist[i];
    *bottom += hist[E - 1 - i];
  }
  g_free(hist);
}

static void cpu_moe_gate_stats(MoelmBackend *be, const MoelmRouteParams *p, int S, const MoelmRouteBuffers *r,
                               double *stats)
{
  const int E = p->experts, K = p->top_k;
  memset(stats, 0, MOELM_ROUTE_N_STATS * sizeof(double));
  if (S <= 0)
    return;
  double ent = 0, aux = 0;
  for (int s = 0; s < S; s++) {
    const float *g = r->gates + (size_t)s * E;
    for (int e = 0; e < E; e++)
      if (g[e] > 0)
        ent -= (double)g[e] * log((double)g[e]);
  }
  for (int e = 0; e < E; e++) {
    double me = 0;
    for (int s = 0; s < S; s++)
      me += r->gates[(size_t)s * E + e];
    aux += (me / S) * ((double)r->count1[e] / S);
  }
  stats[MOELM_ROUTE_STAT_ENTROPY] = ent / S;
  stats[MOELM_ROUTE_STAT_L_AUX] = aux * E;
  for (int k = 0; k < K; k++) {
    double queued_n = 0, dropped = 0;
    for (int s = 0; s < S; s++) {
      const size_t j = (size_t)s * K + k;
      queued_n += r->queued[j];
      dropped += r->queued[j] && !r->kept[j];
    }
    stats[k == 0 ? MOELM_ROUTE_STAT_OVERFLOW1 : MOELM_ROUTE_STAT_OVERFLOW2] =
        queued_n > 0 ? 100.0 * dropped / queued_n : 0.0;
  }
  balance(p, r, S, 0, &stats[MOELM_ROUTE_STAT_UNUSED1], &stats[MOELM_ROUTE_STAT_BALANCE_TOP1],
          &stats[MOELM_ROUTE_STAT_BALANCE_BOTTOM1]);
  if (K == 2)
    balance(p, r, S, 1, &stats[MOELM_ROUTE_STAT_UNUSED2], &stats[MOELM_ROUTE_STAT_BALANCE_TOP2],
            &stats[MOELM_ROUTE_STAT_BALANCE_BOTTOM2]);
}

static void cpu_moe_gate_backward(MoelmBackend *be, const MoelmRouteParams *p, int S, const MoelmRouteBuffers *r,
                                  const float *drow_weight, double aux_coef, float *dlogits)
{
  const int E = p->experts, K = p->top_k;
  const gboolean normalize_before = K == 2 && p->normalize_before_dropping;
  /* the dispatch rows' gradients back to their slots */
  float *dweight = g_new0(float, (size_t)S * K + 1);
  for (int row = 0; row < r->offsets[E]; row++)
    dweight[r->dispatch_slot[row]] = drow_weight[row];
  /* d l_aux / d gates[s,e] = E * count1[e] / S^2 (the mask term carries no gradient) */
  float *daux = g_new(float, E);
  for (int e = 0; e < E; e++)
    daux[e] = (float)(aux_coef * E * (double)r->count1[e] / ((double)S * S));
  float *dg = g_new(float, E);
  for (int s = 0; s < S; s++) {
    const float *g = r->gates + (size_t)s * E;
    memcpy(dg, daux, (size_t)E * sizeof(float));
    const size_t j = (size_t)s * K;
    const uint8_t *kept = r->kept + j;
    float dn[2] = {0, 0}; /* d/d norm[k] */
    for (int k = 0; k < K; k++)
      dn[k] = kept[k] ? dweight[j + k] : 0.0f;
    if (K == 2) {
      /* the pair normalisation a/(a+b), b/(a+b): over the kept values after dropping, or over
       * the raw gates before it */
      float a, b, da, db;
      if (normalize_before) {
        a = g[r->choice[j]];
        b = g[r->choice[j + 1]];
      } else {
        a = kept[0] ? g[r->choice[j]] : 0.0f;
        b = kept[1] ? g[r->choice[j + 1]] : 0.0f;
      }
      const float sum = a + b;
      if (sum > FLT_EPSILON) {
        const float d2 = sum * sum;
        da = b * (dn[0] - dn[1]) / d2;
        db = a * (dn[1] - dn[0]) / d2;
      } else { /* clamped denominator: a / eps */
        da = dn[0] / FLT_EPSILON;
        db = dn[1] / FLT_EPSILON;
      }
      if (normalize_before || kept[0])
        dg[r->choice[j]] += da;
      if (normalize_before || kept[1])
        dg[r->choice[j + 1]] += db;
    } else {
      dg[r->choice[j]] += dn[0];
    }
    /* softmax backward */
    double dot = 0;
    for (int e = 0; e < E; e++)
      dot += (double)g[e] * dg[e];
    float *dl = dlogits + (size_t)s * E;
    for (int e = 0; e < E; e++)
      dl[e] = g[e] * (dg[e] - (float)dot);
  }
  g_free(dg);
  g_free(daux);
  g_free(dweight);
}

void moelm_cpu_fill_routing(struct moelm_backend_ops *ops)
{
  ops->moe_gate_topk = cpu_moe_gate_topk;
  ops->moe_gate_dispatch = cpu_moe_gate_dispatch;
  ops->moe_gate_stats = cpu_moe_gate_stats;
  ops->moe_gate_backward = cpu_moe_gate_backward;
}
