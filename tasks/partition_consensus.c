/* moelm — the adjusted Rand index and the consensus of candidate partitions. */
#include "config.h"

#include "partition_consensus.h"

#define AGREEMENT_TIE 1e-9 /* sums of adjusted Rand indices closer than this are equal */

static double pairs(double n)
{
  return n * (n - 1) / 2;
}

double moelm_adjusted_rand_index(const int *a, const int *b, guint N, int K)
{
  double *table = g_new0(double, (gsize)K * K), *row = g_new0(double, K), *col = g_new0(double, K);
  for (guint d = 0; d < N; d++) {
    table[(gsize)a[d] * K + b[d]] += 1;
    row[a[d]] += 1;
    col[b[d]] += 1;
  }
  double both = 0, in_a = 0, in_b = 0;
  for (int i = 0; i < K * K; i++)
    both += pairs(table[i]);
  for (int k = 0; k < K; k++) {
    in_a += pairs(row[k]);
    in_b += pairs(col[k]);
  }
  g_free(table);
  g_free(row);
  g_free(col);
  /* Hubert and Arabie: (index - expected) / (max - expected), pairs of documents counted */
  const double expected = N < 2 ? 0 : in_a * in_b / pairs(N), max = (in_a + in_b) / 2;
  return max == expected ? 1.0 : (both - expected) / (max - expected);
}

int moelm_partition_consensus(const int *parts, const double *score, int n, guint N, int K, int keep)
{
  int *order = g_new(int, n);
  for (int i = 0; i < n; i++) { /* insertion sort by score, descending, stable: n is small */
    int at = i;
    for (; at > 0 && score[order[at - 1]] < score[i]; at--)
      order[at] = order[at - 1];
    order[at] = i;
  }
  keep = CLAMP(keep, 1, n);
  double *sum = g_new0(double, keep); /* (keep) each kept one's agreement with the others */
  for (int i = 0; i < keep; i++)
    for (int j = i + 1; j < keep; j++) { /* the index is symmetric: each pair once */
      const double r = moelm_adjusted_rand_index(parts + (gsize)order[i] * N, parts + (gsize)order[j] * N, N, K);
      sum[i] += r;
      sum[j] += r;
    }
  int pick = 0;
  for (int i = 1; i < keep; i++) /* in score order, so a tie keeps the higher score */
    /* a tie is a tie: the same indices summed in another order differ by rounding, and
     * rounding must not decide which of two equally supported partitions wins */
    if (sum[i] > sum[pick] + AGREEMENT_TIE)
      pick = i;
  pick = order[pick];
  g_free(sum);
  g_free(order);
  return pick;
}
