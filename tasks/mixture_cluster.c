/* moelm — tf-idf spherical k-means over a split's documents (--mixture-init tfidf). */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mixture_cluster.h"
#include "moelm/dictionary.h"
#include "moelm/rng.h"

enum { MAX_TERMS = 1000, MAX_ROUNDS = 30, N_INIT = 5 };

typedef struct {
  guint n;
  guint32 *term; /* (n) */
  float *w;      /* (n) L2-normalised weights */
} SparseVec;

/* The tokens of document d (specials left out) into *buf. */
static void doc_tokens(const MoelmLmSplit *split, const MoelmDocMap *map, guint d, GArray *buf)
{
  g_array_set_size(buf, 0);
  for (guint32 i = map->doc_blocks[d]; i < map->doc_blocks[d + 1]; i++) {
    const MoelmBlockSlice s = moelm_token_blocks_slice(split->blocks, map->doc_order[i]);
    const guint len = (guint)(s.end - s.start), at = buf->len;
    g_array_set_size(buf, at + len);
    moelm_token_blocks_stream(split->blocks, split->ds, s.start, s.end, &g_array_index(buf, int32_t, at));
  }
  guint k = 0;
  for (guint i = 0; i < buf->len; i++)
    if (g_array_index(buf, int32_t, i) >= MOELM_NSPECIAL)
      g_array_index(buf, int32_t, k++) = g_array_index(buf, int32_t, i);
  g_array_set_size(buf, k);
}

static const guint32 *df_sort_key;
static int by_df_desc(const void *a, const void *b)
{
  const guint32 x = *(const guint32 *)a, y = *(const guint32 *)b;
  if (df_sort_key[x] != df_sort_key[y])
    return df_sort_key[x] > df_sort_key[y] ? -1 : 1;
  return x < y ? -1 : x > y;
}

static double dot(const SparseVec *v, const double *c)
{
  double s = 0;
  for (guint i = 0; i < v->n; i++)
    s += v->w[i] * c[v->term[i]];
  return s;
}

/* One run: k-means++ seeding on the cosine distance 1 - cos, then spherical k-means (nearest
 * centroid by cosine, centroid = normalised sum). Returns the total similarity. */
static double kmeans(const SparseVec *vec, guint N, gsize V, int K, MoelmRng *rng, double *cent, double *dist,
                     int *clusters)
{
  memset(cent, 0, sizeof(double) * (gsize)K * V);
  guint pick = moelm_rng_next_below(rng, N);
  for (int k = 0; k < K; k++) {
    double *c = cent + (gsize)k * V;
    for (guint i = 0; i < vec[pick].n; i++)
      c[vec[pick].term[i]] = vec[pick].w[i];
    if (k + 1 == K)
      break;
    double total = 0;
    for (guint d = 0; d < N; d++) {
      const double dd = fmax(0.0, 1.0 - dot(&vec[d], c));
      dist[d] = k == 0 ? dd : fmin(dist[d], dd);
      total += dist[d] * dist[d];
    }
    double r = moelm_rng_next_double(rng) * total;
    pick = N - 1;
    for (guint d = 0; d < N; d++) {
      r -= dist[d] * dist[d];
      if (r < 0) {
        pick = d;
        break;
      }
    }
  }
  double total = 0;
  for (int round = 0; round < MAX_ROUNDS; round++) {
    guint moved = 0;
    total = 0;
    for (guint d = 0; d < N; d++) {
      int best = 0;
      double bs = -INFINITY;
      for (int k = 0; k < K; k++) {
        const double s = dot(&vec[d], cent + (gsize)k * V);
        if (s > bs) {
          bs = s;
          best = k;
        }
      }
      moved += round == 0 || clusters[d] != best;
      clusters[d] = best;
      total += bs;
    }
    if (moved == 0)
      break;
    memset(cent, 0, sizeof(double) * (gsize)K * V);
    for (guint d = 0; d < N; d++)
      for (guint i = 0; i < vec[d].n; i++)
        cent[(gsize)clusters[d] * V + vec[d].term[i]] += vec[d].w[i];
    for (int k = 0; k < K; k++) {
      double z = 0, *c = cent + (gsize)k * V;
      for (gsize t = 0; t < V; t++)
        z += c[t] * c[t];
      for (gsize t = 0; t < V && z > 0; t++)
        c[t] /= sqrt(z);
    }
  }
  return total;
}

/* N_INIT runs of k-means++ seeding and spherical k-means; the one with the highest total
 * similarity of documents to their centroids wins. */
static void best_of_runs(const SparseVec *vec, guint N, gsize V, int K, uint64_t seed, int *clusters)
{
  double *cent = g_new0(double, (gsize)K * V), *dist = g_new(double, N), best_total = -INFINITY;
  int *cur = g_new(int, N);
  MoelmRng rng;
  moelm_rng_init(&rng, seed, 0x636c7573u /* "clus" */, 0);
  for (int run = 0; run < N_INIT; run++) {
    const double total = kmeans(vec, N, V, K, &rng, cent, dist, cur);
    if (total > best_total) {
      best_total = total;
      memcpy(clusters, cur, sizeof(int) * N);
    }
  }
  g_free(cur);
  g_free(cent);
  g_free(dist);
}

gboolean moelm_mixture_cluster_documents(const MoelmLmSplit *split, const MoelmDocMap *map, int K, uint64_t seed,
                                         int *clusters, GError **error)
{
  (void)error;
  const guint N = map->n_docs;
  const gsize V = (gsize)moelm_indexed_dataset_max_token(split->ds) + 1;
  for (guint d = 0; d < N; d++)
    clusters[d] = 0;
  if (N == 0 || K <= 1)
    return TRUE;
  guint32 *df = g_new0(guint32, V), *count = g_new0(guint32, V);
  GArray *buf = g_array_new(FALSE, FALSE, sizeof(int32_t));
  for (guint d = 0; d < N; d++) { /* document frequencies */
    doc_tokens(split, map, d, buf);
    for (guint i = 0; i < buf->len; i++) {
      const int32_t t = g_array_index(buf, int32_t, i);
      if (count[t]++ == 0)
        df[t]++;
    }
    for (guint i = 0; i < buf->len; i++)
      count[g_array_index(buf, int32_t, i)] = 0;
  }
  /* keep the MAX_TERMS terms most documents use, if used by two or more */
  guint32 *order = g_new(guint32, V);
  for (gsize t = 0; t < V; t++)
    order[t] = (guint32)t;
  df_sort_key = df;
  qsort(order, V, sizeof *order, by_df_desc);
  gboolean *keep = g_new0(gboolean, V);
  for (gsize i = 0; i < V && i < MAX_TERMS && df[order[i]] >= 2; i++)
    keep[order[i]] = TRUE;
  SparseVec *vec = g_new0(SparseVec, N);
  for (guint d = 0; d < N; d++) {
    doc_tokens(split, map, d, buf);
    GArray *terms = g_array_new(FALSE, FALSE, sizeof(guint32));
    for (guint i = 0; i < buf->len; i++) {
      const int32_t t = g_array_index(buf, int32_t, i);
      if (keep[t] && count[t]++ == 0)
        g_array_append_val(terms, t);
    }
    vec[d].n = terms->len;
    vec[d].term = g_new(guint32, MAX(terms->len, 1));
    vec[d].w = g_new(float, MAX(terms->len, 1));
    double z = 0;
    for (guint i = 0; i < terms->len; i++) {
      const guint32 t = g_array_index(terms, guint32, i);
      const double w = (1.0 + log((double)count[t])) * log((double)N / df[t]);
      vec[d].term[i] = t;
      vec[d].w[i] = (float)w;
      z += w * w;
      count[t] = 0;
    }
    for (guint i = 0; i < terms->len && z > 0; i++)
      vec[d].w[i] = (float)(vec[d].w[i] / sqrt(z));
    g_array_unref(terms);
  }
  g_array_unref(buf);

  best_of_runs(vec, N, V, K, seed, clusters);
  for (guint d = 0; d < N; d++) {
    g_free(vec[d].term);
    g_free(vec[d].w);
  }
  g_free(vec);
  g_free(keep);
  g_free(order);
  g_free(df);
  g_free(count);
  return TRUE;
}

/* ---- a mixture of multinomials (--mixture-init unigram) ------------------------------- */
enum { EM_ROUNDS = 50, EM_STARTS = 5 };
#define EM_SMOOTHING 0.1 /* added to every piece count of a component */

typedef struct {
  guint n;
  guint32 *term; /* (n) distinct pieces */
  double *count; /* (n) their counts */
} CountVec;

/* One EM run from random soft responsibilities R (N, K); returns the log-likelihood of its
 * last E-step and leaves the responsibilities in R. logp (K, V), acc (K, V) are scratch. */
static double em_run(const CountVec *docs, guint N, gsize V, int K, MoelmRng *rng, double *R, double *logp,
                     double *acc)
{
  double *pi = g_new(double, K), *nk = g_new(double, K), *s = g_new(double, K), ll = -INFINITY;
  for (guint d = 0; d < N; d++) {
    double z = 0;
    for (int k = 0; k < K; k++)
      z += R[(gsize)d * K + k] = moelm_rng_next_double(rng) + 1e-3;
    for (int k = 0; k < K; k++)
      R[(gsize)d * K + k] /= z;
  }
  for (int round = 0; round < EM_ROUNDS; round++) {
    /* M: each component's smoothed piece distribution and its weight */
    memset(acc, 0, sizeof(double) * (gsize)K * V);
    memset(nk, 0, sizeof(double) * K);
    for (guint d = 0; d < N; d++)
      for (int k = 0; k < K; k++) {
        const double r = R[(gsize)d * K + k];
        nk[k] += r;
        if (r < 1e-9)
          continue;
        for (guint i = 0; i < docs[d].n; i++)
          acc[(gsize)k * V + docs[d].term[i]] += r * docs[d].count[i];
      }
    for (int k = 0; k < K; k++) {
      double z = 0, *a = acc + (gsize)k * V, *l = logp + (gsize)k * V;
      for (gsize t = 0; t < V; t++)
        z += a[t] + EM_SMOOTHING;
      for (gsize t = 0; t < V; t++)
        l[t] = log((a[t] + EM_SMOOTHING) / z);
      pi[k] = (nk[k] + 1.0) / ((double)N + K);
    }
    /* E: the posterior of each component given the document's pieces */
    ll = 0;
    for (guint d = 0; d < N; d++) {
      double mx = -INFINITY, z = 0;
      for (int k = 0; k < K; k++) {
        double v = log(pi[k]);
        for (guint i = 0; i < docs[d].n; i++)
          v += docs[d].count[i] * logp[(gsize)k * V + docs[d].term[i]];
        s[k] = v;
        mx = fmax(mx, v);
      }
      for (int k = 0; k < K; k++)
        z += s[k] = exp(s[k] - mx);
      for (int k = 0; k < K; k++)
        R[(gsize)d * K + k] = s[k] / z;
      ll += mx + log(z);
    }
  }
  g_free(pi);
  g_free(nk);
  g_free(s);
  return ll;
}

gboolean moelm_mixture_cluster_documents_unigram(const MoelmLmSplit *split, const MoelmDocMap *map, int K,
                                                 uint64_t seed, int *clusters, GError **error)
{
  (void)error;
  const guint N = map->n_docs;
  const gsize V = (gsize)moelm_indexed_dataset_max_token(split->ds) + 1;
  for (guint d = 0; d < N; d++)
    clusters[d] = 0;
  if (N == 0 || K <= 1)
    return TRUE;
  CountVec *docs = g_new0(CountVec, N);
  guint32 *count = g_new0(guint32, V);
  GArray *buf = g_array_new(FALSE, FALSE, sizeof(int32_t)), *terms = g_array_new(FALSE, FALSE, sizeof(guint32));
  for (guint d = 0; d < N; d++) {
    doc_tokens(split, map, d, buf);
    g_array_set_size(terms, 0);
    for (guint i = 0; i < buf->len; i++) {
      const guint32 t = (guint32)g_array_index(buf, int32_t, i);
      if (count[t]++ == 0)
        g_array_append_val(terms, t);
    }
    docs[d].n = terms->len;
    docs[d].term = g_new(guint32, MAX(terms->len, 1));
    docs[d].count = g_new(double, MAX(terms->len, 1));
    for (guint i = 0; i < terms->len; i++) {
      const guint32 t = g_array_index(terms, guint32, i);
      docs[d].term[i] = t;
      docs[d].count[i] = count[t];
      count[t] = 0;
    }
  }
  double *R = g_new(double, (gsize)N * K), *logp = g_new(double, (gsize)K * V), *acc = g_new(double, (gsize)K * V);
  double best = -INFINITY;
  MoelmRng rng;
  moelm_rng_init(&rng, seed, 0x756e6967u /* "unig" */, 0);
  for (int start = 0; start < EM_STARTS; start++) {
    const double ll = em_run(docs, N, V, K, &rng, R, logp, acc);
    if (ll <= best)
      continue;
    best = ll;
    for (guint d = 0; d < N; d++) {
      int b = 0;
      for (int k = 1; k < K; k++)
        if (R[(gsize)d * K + k] > R[(gsize)d * K + b])
          b = k;
      clusters[d] = b;
    }
  }
  for (guint d = 0; d < N; d++) {
    g_free(docs[d].term);
    g_free(docs[d].count);
  }
  g_free(docs);
  g_free(count);
  g_free(R);
  g_free(logp);
  g_free(acc);
  g_array_unref(buf);
  g_array_unref(terms);
  return TRUE;
}
