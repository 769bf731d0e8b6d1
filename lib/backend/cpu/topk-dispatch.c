/* moelm — top-k selection by score and the dispatch rows it makes (MoEfication's expert
 * selection, docs/moefy.md; semantics in lib/moelm/backend.h, topk_dispatch). One
 * implementation serves every CPU table, as the token routing does (routing.c): it is O(S*E*K)
 * at worst, small next to the experts' GEMMs, and the reference any other backend's selection
 * is tested against. It allocates nothing: the choices are kept sorted in their own output
 * rows, and the offsets double as the fill cursors. */
#include "config.h"

#include <math.h>

#include "backend/cpu/cpu-internal.h"

/* A score as the ranking sees it: NaN ranks last. */
static inline float rank_value(const float *x, int e)
{
  return isnan(x[e]) ? -INFINITY : x[e];
}

/* Whether expert a ranks before expert b: the larger score, then the lower expert. */
static inline gboolean ranks_before(const float *x, int a, int b)
{
  const float va = rank_value(x, a), vb = rank_value(x, b);
  return va > vb || (va == vb && a < b);
}

/* The K best experts of one token's scores x (E), in decreasing order, into best (K): an
 * insertion into the sorted list of the best so far. */
static void select_row(const float *x, int E, int K, int32_t *best)
{
  int n = 0;
  for (int e = 0; e < E; e++) {
    if (n == K && !ranks_before(x, e, best[K - 1]))
      continue;
    int i = n < K ? n++ : K - 1; /* the slot it enters from: a new one, or the last one's */
    for (; i > 0 && ranks_before(x, e, best[i - 1]); i--)
      best[i] = best[i - 1];
    best[i] = e;
  }
}

static void cpu_topk_dispatch(MoelmBackend *be, const float *scores, const uint8_t *pad, int S, int E, int K,
                              int32_t *choice, int32_t *offsets, int32_t *dispatch_token)
{
  const size_t SK = (size_t)S * K;
  for (int e = 0; e <= E; e++)
    offsets[e] = 0;
  for (int s = 0; s < S; s++) {
    int32_t *c = choice + (size_t)s * K;
    if (pad && pad[s]) {
      for (int k = 0; k < K; k++)
        c[k] = -1;
      continue;
    }
    select_row(scores + (size_t)s * E, E, K, c);
    for (int k = 0; k < K; k++)
      offsets[c[k] + 1]++;
  }
  for (int e = 0; e < E; e++)
    offsets[e + 1] += offsets[e];
  /* fill in token order with offsets[e] as expert e's cursor; afterwards offsets[e] holds
   * where expert e + 1 starts, so shifting by one restores the offsets */
  for (int s = 0; s < S; s++)
    for (int k = 0; k < K; k++) {
      const int32_t e = choice[(size_t)s * K + k];
      if (e >= 0)
        dispatch_token[offsets[e]++] = s;
    }
  for (int e = E; e > 0; e--)
    offsets[e] = offsets[e - 1];
  offsets[0] = 0;
  for (size_t row = (size_t)offsets[E]; row < SK; row++)
    dispatch_token[row] = -1;
}

void moelm_cpu_fill_topk_dispatch(struct moelm_backend_ops *ops)
{
  ops->topk_dispatch = cpu_topk_dispatch;
}
