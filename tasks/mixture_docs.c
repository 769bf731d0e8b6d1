/* moelm — documents of a split, domain labels, matching experts to domains. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "mixture_assign.h"
#include "mixture_docs.h"
#include "moelm/errors.h"

guint moelm_count_documents(const int32_t *sizes, gsize n)
{
  guint docs = 0;
  gboolean in_doc = FALSE;
  for (gsize i = 0; i < n; i++) {
    if (sizes[i] == 1)
      in_doc = FALSE;
    else if (!in_doc) {
      in_doc = TRUE;
      docs++;
    }
  }
  return docs;
}

gboolean moelm_mixture_check_domain_labels(const char *data_dir, const char *subsets, GError **error)
{
  gchar **names = g_strsplit(subsets ? subsets : "", ",", -1);
  gboolean ok = TRUE;
  for (gchar **n = names; ok && *n; n++) {
    char *prefix = g_build_filename(data_dir, *n, NULL);
    char *path = g_strconcat(prefix, ".domains", NULL), *idx = g_strconcat(prefix, ".idx", NULL);
    if (g_file_test(path, G_FILE_TEST_EXISTS) && g_file_test(idx, G_FILE_TEST_EXISTS)) {
      MoelmIndexedDataset *ds = moelm_indexed_dataset_open(prefix, error);
      ok = ds != NULL;
      if (ok) {
        MoelmDomainLabels *l = moelm_domain_labels_load(
            path, moelm_count_documents(moelm_indexed_dataset_sizes(ds), moelm_indexed_dataset_len(ds)), error);
        ok = l != NULL;
        moelm_domain_labels_free(l);
        moelm_indexed_dataset_close(ds);
      }
    }
    g_free(prefix);
    g_free(path);
    g_free(idx);
  }
  g_strfreev(names);
  return ok;
}

MoelmDocMap *moelm_doc_map_new(const MoelmLmSplit *split)
{
  const int32_t *sizes = moelm_indexed_dataset_sizes(split->ds);
  const gsize n = moelm_indexed_dataset_len(split->ds);
  /* the stream offset where each document starts */
  GArray *starts = g_array_new(FALSE, FALSE, sizeof(int64_t));
  int64_t pos = 0;
  gboolean in_doc = FALSE;
  for (gsize i = 0; i < n; pos += sizes[i], i++) {
    if (sizes[i] == 1)
      in_doc = FALSE;
    else if (!in_doc) {
      in_doc = TRUE;
      g_array_append_val(starts, pos);
    }
  }
  MoelmDocMap *m = g_new0(MoelmDocMap, 1);
  m->n_docs = starts->len;
  m->n_blocks = moelm_lm_split_n_blocks(split);
  m->block_doc = g_new0(guint32, MAX(m->n_blocks, 1));
  m->doc_blocks = g_new0(guint32, m->n_docs + 1);
  m->doc_order = g_new0(guint32, MAX(m->n_blocks, 1));
  const int64_t *st = (const int64_t *)(void *)starts->data;
  guint d = 0;
  for (gsize b = 0; b < m->n_blocks; b++) { /* blocks come in stream order */
    const int64_t s = moelm_token_blocks_slice(split->blocks, b).start;
    while (d + 1 < m->n_docs && st[d + 1] <= s)
      d++;
    m->block_doc[b] = d;
    m->doc_blocks[d + 1]++;
  }
  for (guint k = 0; k < m->n_docs; k++)
    m->doc_blocks[k + 1] += m->doc_blocks[k];
  guint *fill = g_new0(guint, MAX(m->n_docs, 1));
  for (gsize b = 0; b < m->n_blocks; b++) {
    const guint32 doc = m->block_doc[b];
    m->doc_order[m->doc_blocks[doc] + fill[doc]++] = (guint32)b;
  }
  g_free(fill);
  g_array_unref(starts);
  return m;
}

void moelm_doc_map_free(MoelmDocMap *m)
{
  if (m == NULL)
    return;
  g_free(m->block_doc);
  g_free(m->doc_blocks);
  g_free(m->doc_order);
  g_free(m);
}

MoelmDomainLabels *moelm_domain_labels_load(const char *path, guint n_docs, GError **error)
{
  char *text = NULL;
  GError *local = NULL;
  if (!g_file_get_contents(path, &text, NULL, &local)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: %s", path, local->message);
    g_error_free(local);
    return NULL;
  }
  gchar **lines = g_strsplit(text, "\n", -1);
  g_free(text);
  guint n = g_strv_length(lines);
  if (n > 0 && lines[n - 1][0] == '\0') /* the final newline */
    n--;
  MoelmDomainLabels *l = NULL;
  if (n != n_docs) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH,
                "%s: %u labels, but the split has %u documents (one label per document expected)", path, n, n_docs);
    goto out;
  }
  l = g_new0(MoelmDomainLabels, 1);
  l->n_docs = n;
  l->doc_domain = g_new0(int, MAX(n, 1));
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free); /* the names, owned until l takes them */
  for (guint i = 0; i < n; i++) {
    const char *name = g_strstrip(lines[i]);
    if (name[0] == '\0') {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s:%u: empty label", path, i + 1);
      g_ptr_array_free(names, TRUE);
      moelm_domain_labels_free(l);
      l = NULL;
      goto out;
    }
    guint d = 0;
    while (d < names->len && strcmp(g_ptr_array_index(names, d), name) != 0)
      d++;
    if (d == names->len)
      g_ptr_array_add(names, g_strdup(name));
    l->doc_domain[i] = (int)d;
  }
  l->n_domains = (int)names->len;
  g_ptr_array_add(names, NULL);
  l->names = (char **)g_ptr_array_free(names, FALSE);
out:
  g_strfreev(lines);
  return l;
}

void moelm_domain_labels_free(MoelmDomainLabels *l)
{
  if (l == NULL)
    return;
  g_strfreev(l->names);
  g_free(l->doc_domain);
  g_free(l);
}

int64_t moelm_best_matching(const int64_t *counts, int rows, int cols, int *match)
{
  for (int r = 0; r < rows; r++)
    match[r] = -1;
  if (rows == 0 || cols == 0)
    return 0;
  /* the assignment solver wants rows <= columns: transpose when there are more domains */
  const gboolean tr = rows > cols;
  const int n = tr ? cols : rows, m = tr ? rows : cols;
  double *cost = g_new(double, (gsize)n * m);
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < cols; c++)
      cost[tr ? (gsize)c * m + r : (gsize)r * m + c] = -(double)counts[(gsize)r * cols + c];
  int *col = g_new(int, n);
  moelm_min_cost_assignment(cost, n, m, col);
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    const int r = tr ? col[i] : i, c = tr ? i : col[i];
    match[r] = c;
    total += counts[(gsize)r * cols + c];
  }
  g_free(col);
  g_free(cost);
  return total;
}

void moelm_domain_accuracy(const int64_t *counts, int D, int K, double *accuracy, double *per_domain, int *match)
{
  int *m = g_new(int, MAX(D, 1));
  const int64_t right = moelm_best_matching(counts, D, K, m);
  int64_t all = 0;
  double mean = 0;
  for (int d = 0; d < D; d++) {
    int64_t n = 0;
    for (int k = 0; k < K; k++)
      n += counts[(gsize)d * K + k];
    all += n;
    if (n > 0 && m[d] >= 0)
      mean += (double)counts[(gsize)d * K + m[d]] / (double)n;
  }
  *accuracy = all > 0 ? (double)right / (double)all : 0.0;
  *per_domain = D > 0 ? mean / D : 0.0;
  if (match)
    memcpy(match, m, sizeof(int) * D);
  g_free(m);
}

MoelmDomainTally *moelm_domain_tally_new(const MoelmLmSplit *split, int K, GError **error)
{
  MoelmDomainTally *t = g_new0(MoelmDomainTally, 1);
  t->K = K;
  t->map = moelm_doc_map_new(split);
  char *path = g_strconcat(split->prefix, ".domains", NULL);
  if (g_file_test(path, G_FILE_TEST_EXISTS)) {
    t->labels = moelm_domain_labels_load(path, t->map->n_docs, error);
    if (t->labels == NULL) {
      g_free(path);
      moelm_domain_tally_free(t);
      return NULL;
    }
  }
  g_free(path);
  t->doc_score = g_new0(double, (gsize)MAX(t->map->n_docs, 1) * K);
  t->doc_seen = g_new0(guint8, MAX(t->map->n_docs, 1));
  t->mass = g_new0(double, K);
  return t;
}

void moelm_domain_tally_free(MoelmDomainTally *t)
{
  if (t == NULL)
    return;
  moelm_doc_map_free(t->map);
  moelm_domain_labels_free(t->labels);
  g_free(t->doc_score);
  g_free(t->doc_seen);
  g_free(t->mass);
  g_free(t);
}

void moelm_domain_tally_reset(MoelmDomainTally *t)
{
  memset(t->doc_score, 0, sizeof(double) * (gsize)MAX(t->map->n_docs, 1) * t->K);
  memset(t->doc_seen, 0, MAX(t->map->n_docs, 1));
  memset(t->mass, 0, sizeof(double) * t->K);
  t->blocks = 0;
}

void moelm_domain_tally_add(MoelmDomainTally *t, gsize block, const float *lprob, const float *log_prior)
{
  const int K = t->K;
  double mx = -INFINITY, z = 0;
  for (int k = 0; k < K; k++)
    mx = fmax(mx, (double)lprob[k] + log_prior[k]);
  for (int k = 0; k < K; k++)
    z += exp((double)lprob[k] + log_prior[k] - mx);
  for (int k = 0; k < K && isfinite(mx); k++)
    t->mass[k] += exp((double)lprob[k] + log_prior[k] - mx) / z;
  t->blocks++;
  const guint32 doc = t->map->block_doc[block];
  const gboolean first = t->map->doc_order[t->map->doc_blocks[doc]] == block;
  double *row = t->doc_score + (gsize)doc * K;
  for (int k = 0; k < K; k++)
    row[k] += (double)lprob[k] + (first ? log_prior[k] : 0.0);
  t->doc_seen[doc] = 1;
}

gboolean moelm_domain_tally_all_reduce(MoelmDomainTally *t, MoelmComm *comm, GError **error)
{
  const int K = t->K;
  const gsize nd = t->map->n_docs, n = nd * K + nd + K + 1;
  double *v = g_new(double, MAX(n, 1));
  memcpy(v, t->doc_score, sizeof(double) * nd * K);
  for (gsize d = 0; d < nd; d++)
    v[nd * K + d] = t->doc_seen[d];
  memcpy(v + nd * K + nd, t->mass, sizeof(double) * K);
  v[n - 1] = t->blocks;
  const gboolean ok = moelm_comm_allreduce_f64(comm, v, n, error);
  if (ok) {
    memcpy(t->doc_score, v, sizeof(double) * nd * K);
    for (gsize d = 0; d < nd; d++)
      t->doc_seen[d] = v[nd * K + d] > 0;
    memcpy(t->mass, v + nd * K + nd, sizeof(double) * K);
    t->blocks = v[n - 1];
  }
  g_free(v);
  return ok;
}

void moelm_domain_tally_counts(const MoelmDomainTally *t, int64_t *counts)
{
  const int K = t->K, D = t->labels->n_domains;
  memset(counts, 0, sizeof(int64_t) * (gsize)D * K);
  for (guint d = 0; d < t->map->n_docs; d++) {
    if (!t->doc_seen[d])
      continue;
    const double *row = t->doc_score + (gsize)d * K;
    int best = 0;
    for (int k = 1; k < K; k++)
      if (row[k] > row[best])
        best = k;
    counts[(gsize)t->labels->doc_domain[d] * K + best]++;
  }
}
