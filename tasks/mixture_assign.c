/* moelm — the E-step's decision: scores, temperature, balanced hard assignment, document
 * memory. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "mixture_assign.h"

void moelm_min_cost_assignment(const double *cost, int n, int m, int *col)
{
  /* potentials u (rows), v (columns); p[j] = row (1-based) holding column j, 0 = free */
  double *u = g_new0(double, n + 1), *v = g_new0(double, m + 1), *minv = g_new(double, m + 1);
  int *p = g_new0(int, m + 1), *way = g_new0(int, m + 1);
  gboolean *used = g_new(gboolean, m + 1);
  for (int i = 1; i <= n; i++) {
    p[0] = i;
    int j0 = 0;
    for (int j = 0; j <= m; j++) {
      minv[j] = INFINITY;
      used[j] = FALSE;
    }
    do { /* grow an alternating tree from row i until it reaches a free column */
      used[j0] = TRUE;
      const int i0 = p[j0];
      double delta = INFINITY;
      int j1 = 0;
      for (int j = 1; j <= m; j++) {
        if (used[j])
          continue;
        const double cur = cost[(gsize)(i0 - 1) * m + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (int j = 0; j <= m; j++) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do { /* flip the augmenting path */
      const int j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0);
  }
  for (int j = 1; j <= m; j++)
    if (p[j] > 0)
      col[p[j] - 1] = j - 1;
  g_free(u);
  g_free(v);
  g_free(minv);
  g_free(p);
  g_free(way);
  g_free(used);
}

double moelm_mixture_temperature(double t0, double final, int64_t n, int64_t t)
{
  if (t0 <= 0 || n <= 0 || t >= n)
    return final;
  const double f = (double)t / (double)n;
  return t0 + (final - t0) * f;
}

void moelm_mixture_softmax(const double *s, int B, int K, double tau, double *post)
{
  for (int b = 0; b < B; b++) {
    const double *x = s + (gsize)b * K;
    double mx = -INFINITY, z = 0;
    for (int k = 0; k < K; k++)
      mx = fmax(mx, x[k] / tau);
    for (int k = 0; k < K; k++)
      z += exp(x[k] / tau - mx);
    for (int k = 0; k < K; k++)
      post[(gsize)b * K + k] = exp(x[k] / tau - mx) / z;
  }
}

void moelm_mixture_balance_limits(int B, int K, double balance, int *min_rows, int *max_rows)
{
  *max_rows = MIN(B, (int)ceil(balance * B / K - 1e-9));
  *min_rows = B >= K ? MAX(1, (int)floor(B / (balance * K) + 1e-9)) : 0;
  *min_rows = MIN(*min_rows, B / K);
}

void moelm_mixture_annealed_weights(const double *s, const double *ntok, int B, int K, double tau, double floor,
                                    double *post)
{
  for (int b = 0; b < B; b++) {
    const double t = fmax(floor, tau * ntok[b]);
    if (t > 0) {
      moelm_mixture_softmax(s + (gsize)b * K, 1, K, t, post + (gsize)b * K);
      continue;
    }
    int best = 0;
    for (int k = 1; k < K; k++)
      if (s[(gsize)b * K + k] > s[(gsize)b * K + best])
        best = k;
    for (int k = 0; k < K; k++)
      post[(gsize)b * K + k] = k == best;
  }
}

void moelm_mixture_assign(const double *s, int B, int K, double balance, int *w)
{
  const double *x = s;
  if (balance < 1 || K == 1) {
    for (int b = 0; b < B; b++) {
      int best = 0;
      for (int k = 1; k < K; k++)
        if (x[(gsize)b * K + k] > x[(gsize)b * K + best])
          best = k;
      w[b] = best;
    }
    return;
  }
  /* rows to slots: expert k has max_rows slots, the first min_rows of them worth a bonus that
   * outweighs any difference of scores, so that they are always filled */
  int lo, hi;
  moelm_mixture_balance_limits(B, K, balance, &lo, &hi);
  double mn = INFINITY, mx = -INFINITY;
  for (gsize i = 0; i < (gsize)B * K; i++) {
    mn = fmin(mn, x[i]);
    mx = fmax(mx, x[i]);
  }
  const double bonus = (isfinite(mx - mn) ? mx - mn : 0) * B + 1.0;
  const int m = K * hi;
  double *cost = g_new(double, (gsize)B * m);
  for (int b = 0; b < B; b++)
    for (int k = 0; k < K; k++)
      for (int q = 0; q < hi; q++) {
        const double v = isfinite(x[(gsize)b * K + k]) ? x[(gsize)b * K + k] - mx : -bonus;
        cost[(gsize)b * m + k * hi + q] = -v - (q < lo ? bonus : 0.0);
      }
  int *slot = g_new(int, B);
  moelm_min_cost_assignment(cost, B, m, slot);
  for (int b = 0; b < B; b++)
    w[b] = slot[b] / hi;
  g_free(slot);
  g_free(cost);
}

MoelmDocMemory *moelm_doc_memory_new(const MoelmLmSplit *split, int K)
{
  MoelmDocMemory *mem = g_new0(MoelmDocMemory, 1);
  mem->split = split;
  mem->map = moelm_doc_map_new(split);
  mem->K = K;
  const gsize n = mem->map->n_blocks * (gsize)K;
  mem->lprob = g_new(float, MAX(n, 1));
  for (gsize i = 0; i < n; i++)
    mem->lprob[i] = NAN;
  mem->ntok = g_new0(int32_t, MAX(mem->map->n_blocks, 1));
  return mem;
}

void moelm_doc_memory_free(MoelmDocMemory *mem)
{
  if (mem == NULL)
    return;
  moelm_doc_map_free(mem->map);
  g_free(mem->lprob);
  g_free(mem->ntok);
  g_free(mem);
}

void moelm_doc_memory_scores(MoelmDocMemory *mem, const MoelmBatchIndices *indices, const float *lprob,
                             const float *log_prior, double *s, double *ntok)
{
  const int K = mem->K;
  const MoelmDocMap *map = mem->map;
  for (guint b = 0; b < indices->n; b++) {
    memcpy(mem->lprob + (gsize)indices->idx[b] * K, lprob + (gsize)b * K, sizeof(float) * K);
    mem->ntok[indices->idx[b]] = (int32_t)moelm_token_blocks_size(mem->split->blocks, indices->idx[b]);
  }
  for (guint b = 0; b < indices->n; b++) {
    const guint32 doc = map->block_doc[indices->idx[b]];
    double *row = s + (gsize)b * K;
    for (int k = 0; k < K; k++)
      row[k] = log_prior[(gsize)b * K + k];
    double n = 0;
    for (guint32 i = map->doc_blocks[doc]; i < map->doc_blocks[doc + 1]; i++) {
      const float *l = mem->lprob + (gsize)map->doc_order[i] * K;
      if (isnan(l[0]))
        continue;
      n += mem->ntok[map->doc_order[i]];
      for (int k = 0; k < K; k++)
        row[k] += l[k];
    }
    if (ntok)
      ntok[b] = n;
  }
}
