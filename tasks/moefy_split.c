/* moelm — splitting an FFN's neurons into equal experts: balanced k-means and a METIS
 * partition of the co-activation graph (see moefy_split.h). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_METIS
#include <metis.h>
#endif

#include "moefy_split.h"
#include "moelm/errors.h"
#include "moelm/rng.h"

/* ---- balanced k-means ------------------------------------------------------------------ */

static double dist2(const double *a, const double *b, int C)
{
  double s = 0;
  for (int c = 0; c < C; c++)
    s += (a[c] - b[c]) * (a[c] - b[c]);
  return s;
}

/* k-means++ seeding: the first centre uniformly, each next one with probability proportional
 * to the squared distance to the nearest centre so far. */
static void seed_centres(const double *x, int F, int C, int E, uint64_t seed, double *cent)
{
  MoelmRng rng;
  moelm_rng_init(&rng, seed, 0x6b6d6e73u /* "kmns" */, 0);
  double *near = g_new(double, F);
  int first = (int)moelm_rng_next_below(&rng, (uint32_t)F);
  memcpy(cent, x + (size_t)first * C, (size_t)C * sizeof(double));
  for (int i = 0; i < F; i++)
    near[i] = dist2(x + (size_t)i * C, cent, C);
  for (int e = 1; e < E; e++) {
    double total = 0;
    for (int i = 0; i < F; i++)
      total += near[i];
    int pick = F - 1;
    if (total > 0) {
      double u = moelm_rng_next_double(&rng) * total;
      for (int i = 0; i < F; i++)
        if ((u -= near[i]) < 0) {
          pick = i;
          break;
        }
    } else {
      pick = (int)moelm_rng_next_below(&rng, (uint32_t)F);
    }
    double *ce = cent + (size_t)e * C;
    memcpy(ce, x + (size_t)pick * C, (size_t)C * sizeof(double));
    for (int i = 0; i < F; i++)
      near[i] = MIN(near[i], dist2(x + (size_t)i * C, ce, C));
  }
  g_free(near);
}

typedef struct {
  double d;
  int i, e;
} Pair;

static int by_distance(const void *a, const void *b)
{
  const Pair *p = a, *q = b;
  if (p->d != q->d)
    return p->d < q->d ? -1 : 1;
  return p->i != q->i ? p->i - q->i : p->e - q->e;
}

/* The greedy balanced assignment: (neuron, expert) pairs by increasing distance, each taken
 * when the neuron is still free and the expert not yet full. */
static void greedy_assign(const double *D, int F, int E, int32_t *expert_of)
{
  const int Fe = F / E;
  Pair *pairs = g_new(Pair, (size_t)F * E);
  for (int i = 0; i < F; i++)
    for (int e = 0; e < E; e++)
      pairs[(size_t)i * E + e] = (Pair){D[(size_t)i * E + e], i, e};
  qsort(pairs, (size_t)F * E, sizeof *pairs, by_distance);
  int *fill = g_new0(int, E);
  for (int i = 0; i < F; i++)
    expert_of[i] = -1;
  for (size_t k = 0; k < (size_t)F * E; k++) {
    const Pair *p = &pairs[k];
    if (expert_of[p->i] < 0 && fill[p->e] < Fe) {
      expert_of[p->i] = p->e;
      fill[p->e]++;
    }
  }
  g_free(fill);
  g_free(pairs);
}

/* Pairwise swaps that lower the total distance, until none does: for experts a, b the best
 * swap exchanges the member of a that gains most by moving to b with the member of b that
 * gains most by moving to a (the gain separates, so no other pair does better). Returns the
 * number of swaps. */
static int improve_by_swaps(const double *D, int F, int E, int32_t *expert_of)
{
  const int Fe = F / E;
  int *members = g_new(int, F), *fill = g_new0(int, E);
  for (int i = 0; i < F; i++) {
    const int e = expert_of[i];
    members[e * Fe + fill[e]++] = i;
  }
  int swaps = 0;
  for (int pass = 0; pass < 200; pass++) {
    int this_pass = 0;
    for (int a = 0; a < E; a++)
      for (int b = a + 1; b < E; b++) {
        int bi = -1, bj = -1;
        double gi = -INFINITY, gj = -INFINITY;
        for (int k = 0; k < Fe; k++) {
          const int i = members[a * Fe + k], j = members[b * Fe + k];
          const double g1 = D[(size_t)i * E + a] - D[(size_t)i * E + b];
          const double g2 = D[(size_t)j * E + b] - D[(size_t)j * E + a];
          if (g1 > gi) {
            gi = g1;
            bi = k;
          }
          if (g2 > gj) {
            gj = g2;
            bj = k;
          }
        }
        if (gi + gj > 1e-12) {
          const int i = members[a * Fe + bi], j = members[b * Fe + bj];
          members[a * Fe + bi] = j;
          members[b * Fe + bj] = i;
          expert_of[i] = b;
          expert_of[j] = a;
          this_pass++;
        }
      }
    swaps += this_pass;
    if (this_pass == 0)
      break;
  }
  g_free(fill);
  g_free(members);
  return swaps;
}

gboolean moelm_moefy_param_cluster(const float *rows, int F, int C, int E, int iters, uint64_t seed,
                                   int32_t *expert_of, GError **error)
{
  if (E < 1 || F < E || F % E != 0 || C < 1) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%d experts cannot split %d neurons evenly", E, F);
    return FALSE;
  }
  double *x = g_new(double, (size_t)F * C), *cent = g_new0(double, (size_t)E * C), *D = g_new(double, (size_t)F * E);
  int *count = g_new(int, E);
  for (int i = 0; i < F; i++) { /* L2-normalised rows (a zero row stays zero) */
    double n = 0;
    for (int c = 0; c < C; c++)
      n += (double)rows[(size_t)i * C + c] * rows[(size_t)i * C + c];
    const double inv = n > 0 ? 1.0 / sqrt(n) : 0.0;
    for (int c = 0; c < C; c++)
      x[(size_t)i * C + c] = rows[(size_t)i * C + c] * inv;
  }
  seed_centres(x, F, C, E, seed, cent);
  for (int it = 0; it < MAX(iters, 1); it++) {
    for (int i = 0; i < F; i++)
      for (int e = 0; e < E; e++)
        D[(size_t)i * E + e] = dist2(x + (size_t)i * C, cent + (size_t)e * C, C);
    /* the first round assigns from scratch; later ones only swap, so the total distance never
     * rises and the loop ends when the centres stop moving anyone */
    if (it == 0)
      greedy_assign(D, F, E, expert_of);
    if (improve_by_swaps(D, F, E, expert_of) == 0 && it > 0)
      break;
    memset(cent, 0, (size_t)E * C * sizeof(double));
    memset(count, 0, (size_t)E * sizeof(int));
    for (int i = 0; i < F; i++) {
      double *ce = cent + (size_t)expert_of[i] * C;
      for (int c = 0; c < C; c++)
        ce[c] += x[(size_t)i * C + c];
      count[expert_of[i]]++;
    }
    for (int e = 0; e < E; e++)
      for (int c = 0; c < C; c++)
        cent[(size_t)e * C + c] /= count[e];
  }
  g_free(count);
  g_free(D);
  g_free(cent);
  g_free(x);
  return moelm_moefy_partition_check(expert_of, F, E, error);
}

/* ---- the co-activation graph ------------------------------------------------------------- */

gboolean moelm_moefy_require_metis(GError **error)
{
#ifdef HAVE_METIS
  (void)error;
  return TRUE;
#else
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED,
              "--split coactivation needs METIS, which this build does not have: install libmetis-dev "
              "(apt-get install libmetis-dev), then re-run configure and make");
  return FALSE;
#endif
}

void moelm_moefy_rebalance(const float *adj, int F, int E, int32_t *expert_of)
{
  const int Fe = F / E;
  int *size = g_new0(int, E);
  double *conn = g_new0(double, (size_t)F * E); /* conn[i, p]: i's edge weight into part p */
  for (int i = 0; i < F; i++)
    size[expert_of[i]]++;
  for (int i = 0; i < F; i++)
    for (int j = 0; j < F; j++)
      if (j != i)
        conn[(size_t)i * E + expert_of[j]] += adj[(size_t)i * F + j];
  for (;;) {
    int best_i = -1, best_p = -1;
    double best = -INFINITY;
    for (int i = 0; i < F; i++) {
      const int from = expert_of[i];
      if (size[from] <= Fe)
        continue;
      for (int p = 0; p < E; p++)
        if (size[p] < Fe) {
          const double gain = conn[(size_t)i * E + p] - conn[(size_t)i * E + from];
          if (gain > best) {
            best = gain;
            best_i = i;
            best_p = p;
          }
        }
    }
    if (best_i < 0)
      break;
    const int from = expert_of[best_i];
    for (int k = 0; k < F; k++)
      if (k != best_i) {
        conn[(size_t)k * E + from] -= adj[(size_t)k * F + best_i];
        conn[(size_t)k * E + best_p] += adj[(size_t)k * F + best_i];
      }
    expert_of[best_i] = best_p;
    size[from]--;
    size[best_p]++;
  }
  g_free(conn);
  g_free(size);
}

#ifdef HAVE_METIS
/* METIS's k-way partition of adj as an integer-weighted graph. METIS sums edge weights in
 * idx_t (32 bits in Debian's build), so the counts are scaled to keep the total below 2^29;
 * an edge whose scaled weight rounds to 0 is left out. */
static gboolean metis_partition(const float *adj, int F, int E, uint64_t seed, int32_t *part_out, GError **error)
{
  double mx = 0;
  for (size_t k = 0; k < (size_t)F * F; k++)
    mx = MAX(mx, (double)adj[k]);
  const double cap = MAX(1.0, floor((double)(1 << 29) / ((double)F * F)));
  const double scale = mx > 0 ? cap / mx : 0;
  idx_t *xadj = g_new(idx_t, F + 1);
  GArray *adjncy = g_array_new(FALSE, FALSE, sizeof(idx_t)), *wgt = g_array_new(FALSE, FALSE, sizeof(idx_t));
  xadj[0] = 0;
  for (int i = 0; i < F; i++) {
    for (int j = 0; j < F; j++) {
      /* symmetric by construction: the mean of the two halves, so rounding cannot differ */
      const idx_t w = (idx_t)llround(0.5 * ((double)adj[(size_t)i * F + j] + adj[(size_t)j * F + i]) * scale);
      if (j != i && w > 0) {
        const idx_t jj = j;
        g_array_append_val(adjncy, jj);
        g_array_append_val(wgt, w);
      }
    }
    xadj[i + 1] = (idx_t)adjncy->len;
  }
  idx_t n = F, ncon = 1, nparts = E, objval = 0, options[METIS_NOPTIONS];
  idx_t *part = g_new(idx_t, F);
  METIS_SetDefaultOptions(options);
  options[METIS_OPTION_SEED] = (idx_t)(seed & 0x7fffffff);
  options[METIS_OPTION_NUMBERING] = 0;
  int rc = METIS_OK;
  if (adjncy->len > 0) {
    rc = METIS_PartGraphKway(&n, &ncon, xadj, (idx_t *)adjncy->data, NULL, NULL, (idx_t *)wgt->data, &nparts, NULL,
                             NULL, options, &objval, part);
  } else { /* no edge at all (no neuron ever active): any split is as good */
    for (int i = 0; i < F; i++)
      part[i] = i % E;
  }
  for (int i = 0; i < F; i++)
    part_out[i] = (int32_t)part[i];
  g_free(part);
  g_array_unref(wgt);
  g_array_unref(adjncy);
  g_free(xadj);
  if (rc != METIS_OK) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FAILED, "METIS_PartGraphKway failed (status %d) for %d parts", rc, E);
    return FALSE;
  }
  return TRUE;
}
#endif

gboolean moelm_moefy_coactivation_split(const float *adj, int F, int E, uint64_t seed, int32_t *expert_of,
                                        GError **error)
{
  if (E < 1 || F < E || F % E != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%d experts cannot split %d neurons evenly", E, F);
    return FALSE;
  }
  if (!moelm_moefy_require_metis(error))
    return FALSE;
#ifdef HAVE_METIS
  if (E == 1) {
    memset(expert_of, 0, (size_t)F * sizeof(int32_t));
  } else {
    if (!metis_partition(adj, F, E, seed, expert_of, error))
      return FALSE;
    for (int i = 0; i < F; i++) /* METIS leaves no vertex out; be sure before indexing with it */
      if (expert_of[i] < 0 || expert_of[i] >= E)
        expert_of[i] = 0;
    moelm_moefy_rebalance(adj, F, E, expert_of);
  }
#else
  (void)adj;
  (void)seed;
#endif
  return moelm_moefy_partition_check(expert_of, F, E, error);
}

gboolean moelm_moefy_partition_check(const int32_t *expert_of, int F, int E, GError **error)
{
  int *size = g_new0(int, MAX(E, 1));
  gboolean ok = TRUE;
  for (int i = 0; i < F && ok; i++) {
    ok = expert_of[i] >= 0 && expert_of[i] < E;
    if (ok)
      size[expert_of[i]]++;
    else
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_FAILED, "unbalanced partition: neuron %d is in no expert", i);
  }
  for (int e = 0; e < E && ok; e++) {
    ok = size[e] == F / E;
    if (!ok)
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_FAILED,
                  "unbalanced partition: expert %d holds %d neurons instead of %d", e, size[e], F / E);
  }
  g_free(size);
  return ok;
}

void moelm_moefy_partition_order(const int32_t *expert_of, int F, int E, int32_t *perm)
{
  const int Fe = F / E;
  int *fill = g_new0(int, E);
  for (int i = 0; i < F; i++) {
    const int e = expert_of[i];
    perm[e * Fe + fill[e]++] = i;
  }
  g_free(fill);
}
