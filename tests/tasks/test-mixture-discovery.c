/* Domain discovery for sequence-level mixtures: the assignment solver against brute force,
 * balanced assignment (no expert left empty, limits kept, the best total), the annealing
 * schedule and weights, documents of a split and their labels, the document-level E-step
 * (a document's scores are the sum over its blocks, remembered across batches), the tf-idf
 * clustering, the adjusted Rand index and the consensus pick among clusterings, and the best
 * matching of experts to domains. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/dictionary.h"
#include "moelm/indexed_dataset.h"
#include "moelm/rng.h"
#include "tasks/mixture.h"
#include "tasks/mixture_assign.h"
#include "tasks/mixture_cluster.h"
#include "tasks/mixture_docs.h"
#include "tasks/partition_consensus.h"

/* The best total of s (B, K) over all assignments with lo <= rows per expert <= hi. */
static double brute_best(const double *s, int B, int K, int lo, int hi, int b, int *count)
{
  if (b == B) {
    for (int k = 0; k < K; k++)
      if (count[k] < lo || count[k] > hi)
        return -INFINITY;
    return 0;
  }
  double best = -INFINITY;
  for (int k = 0; k < K; k++) {
    count[k]++;
    best = fmax(best, s[b * K + k] + brute_best(s, B, K, lo, hi, b + 1, count));
    count[k]--;
  }
  return best;
}

static void random_scores(MoelmRng *rng, double *s, int n)
{
  for (int i = 0; i < n; i++)
    s[i] = 20.0 * moelm_rng_next_double(rng) - 10.0;
}

static void test_assignment_solver(void)
{
  MoelmRng rng;
  moelm_rng_init(&rng, 11, 0, 0);
  for (int trial = 0; trial < 40; trial++) {
    const int n = 1 + (int)moelm_rng_next_below(&rng, 5), m = n + (int)moelm_rng_next_below(&rng, 3);
    double cost[5 * 7];
    random_scores(&rng, cost, n * m);
    int col[5];
    moelm_min_cost_assignment(cost, n, m, col);
    double got = 0;
    gboolean used[7] = {FALSE};
    for (int i = 0; i < n; i++) {
      CU_ASSERT(col[i] >= 0 && col[i] < m);
      CU_ASSERT_FALSE(used[col[i]]);
      used[col[i]] = TRUE;
      got += cost[i * m + col[i]];
    }
    /* brute force over injective maps rows -> columns */
    double best = INFINITY;
    int pick[5] = {0};
    for (;;) {
      gboolean ok = TRUE;
      for (int i = 0; i < n && ok; i++)
        for (int j = 0; j < i && ok; j++)
          ok = pick[i] != pick[j];
      if (ok) {
        double c = 0;
        for (int i = 0; i < n; i++)
          c += cost[i * m + pick[i]];
        best = fmin(best, c);
      }
      int i = 0;
      while (i < n && ++pick[i] == m)
        pick[i++] = 0;
      if (i == n)
        break;
    }
    CU_ASSERT_DOUBLE_EQUAL(got, best, 1e-9);
  }
}

static void test_balanced_assignment(void)
{
  MoelmRng rng;
  moelm_rng_init(&rng, 12, 0, 0);
  const double factors[] = {1.0, 1.5, 2.0, 4.0, 100.0};
  for (int trial = 0; trial < 200; trial++) {
    const int K = 2 + (int)moelm_rng_next_below(&rng, 4), B = K + (int)moelm_rng_next_below(&rng, 24);
    const double F = factors[trial % G_N_ELEMENTS(factors)];
    double s[32 * 5];
    random_scores(&rng, s, B * K);
    for (int b = 0; b < B; b++) /* every row prefers expert 0: plain argmax starves the others */
      s[b * K] += 30.0;
    int w[32], count[5] = {0}, lo, hi;
    moelm_mixture_assign(s, B, K, F, w);
    moelm_mixture_balance_limits(B, K, F, &lo, &hi);
    CU_ASSERT(lo >= 1);
    for (int b = 0; b < B; b++)
      count[w[b]]++;
    for (int k = 0; k < K; k++) {
      CU_ASSERT(count[k] >= 1); /* never an empty expert when B >= K */
      CU_ASSERT(count[k] >= lo && count[k] <= hi);
    }
    if (F == 1.0 && B % K == 0)
      for (int k = 0; k < K; k++)
        CU_ASSERT_EQUAL(count[k], B / K);
    if (B <= 7) { /* the best total under the limits */
      int c[5] = {0};
      double got = 0;
      for (int b = 0; b < B; b++)
        got += s[b * K + w[b]];
      CU_ASSERT_DOUBLE_EQUAL(got, brute_best(s, B, K, lo, hi, 0, c), 1e-9);
    }
  }
  /* off (< 1): the argmax, ties to the lower expert */
  const double s[] = {1, 3, 3, 0, 5, -1};
  int w[2];
  moelm_mixture_assign(s, 2, 3, 0.0, w);
  CU_ASSERT_EQUAL(w[0], 1);
  CU_ASSERT_EQUAL(w[1], 1);
  /* fewer rows than experts: nothing is forced */
  moelm_mixture_assign(s, 1, 3, 1.0, w);
  CU_ASSERT_EQUAL(w[0], 1);
}

static void test_temperature_schedule_and_weights(void)
{
  CU_ASSERT_DOUBLE_EQUAL(moelm_mixture_temperature(2.0, 0.0, 100, 0), 2.0, 1e-12);
  CU_ASSERT_DOUBLE_EQUAL(moelm_mixture_temperature(2.0, 0.0, 100, 50), 1.0, 1e-12);
  CU_ASSERT_DOUBLE_EQUAL(moelm_mixture_temperature(2.0, 1.0, 100, 75), 1.25, 1e-12);
  CU_ASSERT_DOUBLE_EQUAL(moelm_mixture_temperature(2.0, 0.0, 100, 100), 0.0, 1e-12);
  CU_ASSERT_DOUBLE_EQUAL(moelm_mixture_temperature(0.0, 1.0, 100, 3), 1.0, 1e-12);
  /* softmax(s / (τ·n)), with a floor; τ·n == 0: the argmax */
  const double s[] = {0.0, log(2.0), log(5.0), /**/ 3.0, 1.0, 3.0};
  const double ntok[] = {4.0, 10.0};
  double p[6];
  moelm_mixture_annealed_weights(s, ntok, 2, 3, 0.5, 0.0, p); /* temperatures 2 and 5 */
  CU_ASSERT_DOUBLE_EQUAL(p[0] + p[1] + p[2], 1.0, 1e-12);
  CU_ASSERT_DOUBLE_EQUAL(p[1] / p[0], sqrt(2.0), 1e-9);
  CU_ASSERT_DOUBLE_EQUAL(p[3] / p[4], exp(2.0 / 5.0), 1e-9);
  moelm_mixture_annealed_weights(s, ntok, 2, 3, 0.01, 1.0, p); /* the floor: the posterior */
  CU_ASSERT_DOUBLE_EQUAL(p[2] / p[0], 5.0, 1e-9);
  moelm_mixture_annealed_weights(s, ntok, 2, 3, 0.0, 0.0, p);
  const double hard[] = {0, 0, 1, 1, 0, 0}; /* ties to the lower expert */
  for (int i = 0; i < 6; i++)
    CU_ASSERT_EQUAL(p[i], hard[i]);
}

/* A data-bin split: documents of `lens[d]` sentences of 3 tokens (2 words + </s>) drawn from
 * vocabulary half `half[d]` (words 4..13 or 14..23), separated by one empty line (two after
 * document 1, which makes no empty document). */
typedef struct {
  char *dir;
  MoelmLmSplit *split;
} Docs;

/* Writes the split and opens it as f->split. */
static void docs_finish(Docs *f, MoelmIndexedDatasetBuilder *b, char *prefix, MoelmBreakMode mode, int tps)
{
  CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_finish(b, NULL));
  f->split = moelm_lm_split_open(f->dir, "valid", tps, mode, 30, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f->split);
  g_free(prefix);
}

static void docs_init(Docs *f, const int *lens, const int *half, int n_docs, MoelmBreakMode mode, int tps)
{
  f->dir = moelm_test_tmpdir();
  char *prefix = g_build_filename(f->dir, "valid", NULL);
  MoelmIndexedDatasetBuilder *b = moelm_indexed_dataset_builder_new(prefix, MOELM_IDX_UINT16, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  MoelmRng rng;
  moelm_rng_init(&rng, 14, 0, 0);
  const int32_t eos[1] = {MOELM_EOS};
  for (int d = 0; d < n_docs; d++) {
    for (int s = 0; s < lens[d]; s++) {
      int32_t t[3] = {4 + 10 * half[d] + (int32_t)moelm_rng_next_below(&rng, 10),
                      4 + 10 * half[d] + (int32_t)moelm_rng_next_below(&rng, 10), MOELM_EOS};
      CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_add(b, t, 3, NULL));
    }
    CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_add(b, eos, 1, NULL));
    if (d == 1)
      CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_add(b, eos, 1, NULL));
  }
  docs_finish(f, b, prefix, mode, tps);
}

/* The same from given tokens (n_docs, len): each document in sentences of at most 12 tokens
 * and </s>, then one empty line. */
static void docs_init_tokens(Docs *f, const int32_t *tok, int n_docs, int len, int tps)
{
  f->dir = moelm_test_tmpdir();
  char *prefix = g_build_filename(f->dir, "valid", NULL);
  MoelmIndexedDatasetBuilder *b = moelm_indexed_dataset_builder_new(prefix, MOELM_IDX_UINT16, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  const int32_t eos[1] = {MOELM_EOS};
  for (int d = 0; d < n_docs; d++) {
    for (int at = 0; at < len; at += 12) {
      int32_t t[13];
      const int n = MIN(12, len - at);
      memcpy(t, tok + (gsize)d * len + at, sizeof(int32_t) * n);
      t[n] = MOELM_EOS;
      CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_add(b, t, n + 1, NULL));
    }
    CU_ASSERT_TRUE_FATAL(moelm_indexed_dataset_builder_add(b, eos, 1, NULL));
  }
  docs_finish(f, b, prefix, MOELM_BREAK_COMPLETE_DOC, tps);
}

static void docs_clear(Docs *f)
{
  moelm_lm_split_free(f->split);
  moelm_test_rmtree(f->dir);
  g_free(f->dir);
}

static void test_doc_map_and_labels(void)
{
  const int lens[] = {1, 5, 2, 4}, half[] = {0, 1, 0, 1};
  Docs f;
  docs_init(&f, lens, half, 4, MOELM_BREAK_COMPLETE_DOC, 6); /* two sentences per block */
  MoelmDocMap *m = moelm_doc_map_new(f.split);
  CU_ASSERT_EQUAL(m->n_docs, 4);
  CU_ASSERT_EQUAL(moelm_count_documents(moelm_indexed_dataset_sizes(f.split->ds),
                                        moelm_indexed_dataset_len(f.split->ds)),
                  4);
  const guint32 want[] = {0, 1, 1, 1, 2, 3, 3}; /* blocks of 1, 3, 1, 2 */
  CU_ASSERT_EQUAL_FATAL(m->n_blocks, G_N_ELEMENTS(want));
  for (gsize b = 0; b < m->n_blocks; b++)
    CU_ASSERT_EQUAL(m->block_doc[b], want[b]);
  CU_ASSERT_EQUAL(m->doc_blocks[1], 1);
  CU_ASSERT_EQUAL(m->doc_blocks[2], 4);
  CU_ASSERT_EQUAL(m->doc_order[5], 5);
  moelm_doc_map_free(m);

  char *path = g_build_filename(f.dir, "valid.domains", NULL);
  moelm_test_write_file(path, "a\nb\na\nb\n", 8);
  MoelmDomainLabels *l = moelm_domain_labels_load(path, 4, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(l);
  CU_ASSERT_EQUAL(l->n_domains, 2);
  CU_ASSERT_STRING_EQUAL(l->names[1], "b");
  CU_ASSERT_EQUAL(l->doc_domain[2], 0);
  moelm_domain_labels_free(l);
  CU_ASSERT_TRUE(moelm_mixture_check_domain_labels(f.dir, "valid,test", NULL));
  GError *error = NULL;
  CU_ASSERT_PTR_NULL(moelm_domain_labels_load(path, 5, &error));
  MOELM_ASSERT_ERROR(error, "4 labels, but the split has 5 documents");
  g_clear_error(&error);
  moelm_test_write_file(path, "a\nb\n\nb\n", 7);
  CU_ASSERT_FALSE(moelm_mixture_check_domain_labels(f.dir, "valid", &error));
  MOELM_ASSERT_ERROR(error, "valid.domains:3: empty label");
  g_clear_error(&error);
  g_free(path);
  docs_clear(&f);
}

static void test_document_estep_sums_blocks(void)
{
  const int lens[] = {1, 5, 2, 4}, half[] = {0, 1, 0, 1};
  enum { K = 3 };
  Docs f;
  docs_init(&f, lens, half, 4, MOELM_BREAK_COMPLETE_DOC, 6);
  MoelmDocMemory *mem = moelm_doc_memory_new(f.split, K);
  MoelmRng rng;
  moelm_rng_init(&rng, 15, 0, 0);
  /* a batch holding document 1 (blocks 1-3) and block 5 of document 3 */
  guint32 idx[] = {2, 5, 1, 3};
  MoelmBatchIndices batch = {4, idx};
  float lprob[4 * K], prior[4 * K];
  for (int i = 0; i < 4 * K; i++) {
    lprob[i] = -10.0f * (float)moelm_rng_next_double(&rng);
    prior[i] = (float)-log(K) + 0.1f * (i % K);
  }
  double s[4 * K];
  double ntok[4];
  moelm_doc_memory_scores(mem, &batch, lprob, prior, s, ntok);
  CU_ASSERT_DOUBLE_EQUAL(ntok[0], 6 + 6 + 3, 0); /* document 1: blocks of 2, 2 and 1 sentences */
  CU_ASSERT_DOUBLE_EQUAL(ntok[1], 6, 0);
  for (int k = 0; k < K; k++) {
    const double doc1 = (double)lprob[0 * K + k] + lprob[2 * K + k] + lprob[3 * K + k];
    CU_ASSERT_DOUBLE_EQUAL(s[0 * K + k], prior[0 * K + k] + doc1, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(s[2 * K + k], prior[2 * K + k] + doc1, 1e-9);
    CU_ASSERT_DOUBLE_EQUAL(s[1 * K + k], (double)prior[1 * K + k] + lprob[1 * K + k], 1e-9); /* block 6 unseen */
  }
  /* the next batch, block 6 of document 3: block 5 comes from memory */
  guint32 idx2[] = {6};
  MoelmBatchIndices batch2 = {1, idx2};
  float l2[K] = {-1, -2, -3}, p2[K] = {0, 0, 0};
  double s2[K];
  moelm_doc_memory_scores(mem, &batch2, l2, p2, s2, NULL);
  for (int k = 0; k < K; k++)
    CU_ASSERT_DOUBLE_EQUAL(s2[k], (double)l2[k] + lprob[1 * K + k], 1e-9);
  /* a block seen again replaces what was remembered */
  float l3[K] = {-4, -4, -4};
  guint32 idx3[] = {5};
  MoelmBatchIndices batch3 = {1, idx3};
  moelm_doc_memory_scores(mem, &batch3, l3, p2, s2, NULL);
  for (int k = 0; k < K; k++)
    CU_ASSERT_DOUBLE_EQUAL(s2[k], (double)l2[k] + l3[k], 1e-9);
  moelm_doc_memory_free(mem);
  docs_clear(&f);
}

static void test_tfidf_clusters(void)
{
  /* twelve documents over two disjoint vocabularies: two clusters, found for any seed */
  int lens[12], half[12];
  for (int d = 0; d < 12; d++) {
    lens[d] = 3 + d % 4;
    half[d] = (d * 7) % 3 == 0;
  }
  Docs f;
  docs_init(&f, lens, half, 12, MOELM_BREAK_COMPLETE_DOC, 6);
  MoelmDocMap *m = moelm_doc_map_new(f.split);
  for (uint64_t seed = 1; seed <= 5; seed++) {
    int c[12], u[12], a[12];
    CU_ASSERT_TRUE(moelm_mixture_cluster_documents(f.split, m, 2, seed, c, NULL));
    CU_ASSERT_TRUE(moelm_mixture_cluster_documents_unigram(f.split, m, 2, seed, u, NULL));
    CU_ASSERT_TRUE(moelm_mixture_cluster_documents_auto(f.split, m, 2, seed, a, NULL));
    for (int d = 1; d < 12; d++) {
      CU_ASSERT_EQUAL(c[d] == c[0], half[d] == half[0]);
      CU_ASSERT_EQUAL(u[d] == u[0], half[d] == half[0]); /* the mixture of multinomials too */
      CU_ASSERT_EQUAL(a[d] == a[0], half[d] == half[0]); /* and the best of both */
    }
    CU_ASSERT(c[0] == 0 || c[0] == 1);
    CU_ASSERT(u[0] == 0 || u[0] == 1);
    CU_ASSERT(a[0] == 0 || a[0] == 1);
  }
  moelm_doc_map_free(m);
  docs_clear(&f);
}

/* Sixteen documents, two crossed partitions: a domain, written with 6 of its 8 pieces once
 * each (4..11 or 12..19), and a topic, one piece (20 or 21) repeated 30 times. By raw counts
 * the topic weighs most (the unigram mixture splits by it); by damped counts log(1 + n),
 * which --mixture-init auto refines and ranks its candidates by, the domain does: most of the
 * best third of its candidates split by domain (with seed 5 as many as by topic, and the
 * domain's higher likelihood breaks the tie). With the counts not damped, auto splits by
 * topic on every seed. */
static void test_auto_clusters_damp_repeats(void)
{
  enum { N = 16, LEN = 36 };
  int32_t tok[N * LEN];
  for (int d = 0; d < N; d++) {
    const int domain = d % 2, topic = (d / 2) % 2;
    for (int j = 0; j < LEN; j++)
      tok[d * LEN + j] = j % 6 == 0 ? 4 + 8 * domain + (d * 3 + j / 6) % 8 : 20 + topic;
  }
  Docs f;
  docs_init_tokens(&f, tok, N, LEN, 64);
  MoelmDocMap *m = moelm_doc_map_new(f.split);
  CU_ASSERT_EQUAL_FATAL(m->n_docs, N);
  for (uint64_t seed = 1; seed <= 5; seed++) {
    int u[N], a[N];
    CU_ASSERT_TRUE(moelm_mixture_cluster_documents_unigram(f.split, m, 2, seed, u, NULL));
    CU_ASSERT_TRUE(moelm_mixture_cluster_documents_auto(f.split, m, 2, seed, a, NULL));
    for (int d = 1; d < N; d++) {
      CU_ASSERT_EQUAL(u[d] == u[0], (d / 2) % 2 == 0);
      CU_ASSERT_EQUAL(a[d] == a[0], d % 2 == 0);
    }
  }
  moelm_doc_map_free(m);
  docs_clear(&f);
}

static void test_matching_and_tally(void)
{
  /* domains (rows) x experts: the best matching is not the greedy one */
  const int64_t counts[] = {5, 4, 0, /**/ 4, 0, 0, /**/ 0, 1, 6};
  int match[3];
  CU_ASSERT_EQUAL(moelm_best_matching(counts, 3, 3, match), 4 + 4 + 6);
  CU_ASSERT_EQUAL(match[0], 1);
  CU_ASSERT_EQUAL(match[1], 0);
  CU_ASSERT_EQUAL(match[2], 2);
  double acc, per;
  moelm_domain_accuracy(counts, 3, 3, &acc, &per, NULL);
  CU_ASSERT_DOUBLE_EQUAL(acc, 14.0 / 20.0, 1e-12);
  CU_ASSERT_DOUBLE_EQUAL(per, (4.0 / 9 + 4.0 / 4 + 6.0 / 7) / 3, 1e-12);
  /* more domains than experts: one domain stays unmatched */
  const int64_t wide[] = {3, 0, /**/ 0, 2, /**/ 1, 1};
  CU_ASSERT_EQUAL(moelm_best_matching(wide, 3, 2, match), 5);
  CU_ASSERT_EQUAL(match[2], -1);

  /* the tally assigns documents by the sum over their blocks plus the first block's prior */
  const int lens[] = {1, 5, 2, 4}, half[] = {0, 1, 0, 1};
  Docs f;
  docs_init(&f, lens, half, 4, MOELM_BREAK_COMPLETE_DOC, 6);
  char *path = g_build_filename(f.dir, "valid.domains", NULL);
  moelm_test_write_file(path, "x\ny\nx\ny\n", 8);
  MoelmDomainTally *t = moelm_domain_tally_new(f.split, 2, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t);
  CU_ASSERT_PTR_NOT_NULL_FATAL(t->labels);
  const float none[2] = {0, 0}, first[2] = {0, -30};
  const float to0[2] = {-1, -5}, to1[2] = {-5, -1};
  moelm_domain_tally_add(t, 0, to0, none);  /* doc 0 -> expert 0 */
  moelm_domain_tally_add(t, 1, to0, first); /* doc 1: its first block's prior outweighs */
  moelm_domain_tally_add(t, 2, to1, first); /* later blocks' priors are not added */
  moelm_domain_tally_add(t, 3, to1, first);
  moelm_domain_tally_add(t, 4, to1, none);  /* doc 2 -> expert 1 */
  moelm_domain_tally_add(t, 5, to1, none);  /* doc 3 -> expert 1 */
  int64_t c[4];
  moelm_domain_tally_counts(t, c);
  const int64_t want[] = {1, 1, 1, 1};
  for (int i = 0; i < 4; i++)
    CU_ASSERT_EQUAL(c[i], want[i]);
  CU_ASSERT_DOUBLE_EQUAL(t->blocks, 6, 0);
  CU_ASSERT_DOUBLE_EQUAL(t->mass[0] + t->mass[1], 6, 1e-9);
  moelm_domain_tally_free(t);
  g_free(path);
  docs_clear(&f);
}

/* The adjusted Rand index from its definition over pairs of documents: a pairs together in
 * both, b only in x, c only in y, d apart in both. */
static double ari_by_pairs(const int *x, const int *y, int N)
{
  double a = 0, b = 0, c = 0, d = 0;
  for (int i = 0; i < N; i++)
    for (int j = i + 1; j < N; j++) {
      const int sx = x[i] == x[j], sy = y[i] == y[j];
      a += sx && sy;
      b += sx && !sy;
      c += !sx && sy;
      d += !sx && !sy;
    }
  return 2 * (a * d - b * c) / ((a + b) * (b + d) + (a + c) * (c + d));
}

static void test_adjusted_rand_index(void)
{
  const int a[] = {0, 0, 1, 1, 2, 2}, renamed[] = {2, 2, 0, 0, 1, 1}, one[] = {0, 0, 0, 0, 0, 0};
  CU_ASSERT_DOUBLE_EQUAL(moelm_adjusted_rand_index(a, a, 6, 3), 1.0, 1e-12);
  CU_ASSERT_DOUBLE_EQUAL(moelm_adjusted_rand_index(a, renamed, 6, 3), 1.0, 1e-12);
  CU_ASSERT_DOUBLE_EQUAL(moelm_adjusted_rand_index(one, one, 6, 3), 1.0, 1e-12);
  CU_ASSERT_DOUBLE_EQUAL(moelm_adjusted_rand_index(a, one, 6, 3), 0.0, 1e-12); /* as chance would */
  const int x[] = {0, 0, 1, 1}, y[] = {0, 1, 0, 1};
  CU_ASSERT_DOUBLE_EQUAL(moelm_adjusted_rand_index(x, y, 4, 2), -0.5, 1e-12); /* worse than chance */
  MoelmRng rng;
  moelm_rng_init(&rng, 5, 0, 0);
  for (int trial = 0; trial < 20; trial++) {
    enum { N = 40, K = 4 };
    int p[N], q[N];
    for (int i = 0; i < N; i++) {
      p[i] = (int)moelm_rng_next_below(&rng, K);
      q[i] = moelm_rng_next_double(&rng) < 0.6 ? p[i] : (int)moelm_rng_next_below(&rng, K);
    }
    CU_ASSERT_DOUBLE_EQUAL(moelm_adjusted_rand_index(p, q, N, K), ari_by_pairs(p, q, N), 1e-12);
    CU_ASSERT_DOUBLE_EQUAL(moelm_adjusted_rand_index(q, p, N, K), ari_by_pairs(p, q, N), 1e-12);
  }
}

/* The consensus keeps the candidates with the best scores, and of those the one closest to the
 * others: not the single best score, and never a candidate outside the kept ones. */
static void test_partition_consensus(void)
{
  enum { N = 8, K = 2 };
  const int parts[][N] = {
      {0, 1, 0, 1, 0, 1, 0, 1}, /* the best score, alone */
      {0, 0, 0, 0, 1, 1, 1, 1}, /* three near copies of one partition */
      {0, 0, 0, 1, 1, 1, 1, 1},
      {1, 1, 1, 1, 0, 0, 0, 1},
      {0, 0, 1, 1, 0, 0, 1, 1}, /* low scores: dropped, though they agree with each other */
      {0, 0, 1, 1, 0, 0, 1, 1},
      {0, 0, 1, 1, 0, 0, 1, 1},
      {0, 0, 1, 1, 0, 0, 1, 0},
  };
  const double score[] = {-10, -12, -11, -13, -20, -21, -22, -23};
  const int n = G_N_ELEMENTS(score);
  CU_ASSERT_EQUAL(moelm_partition_consensus(&parts[0][0], score, n, N, K, 1), 0); /* the best score */
  CU_ASSERT_EQUAL(moelm_partition_consensus(&parts[0][0], score, n, N, K, 0), 0); /* keep at least one */
  CU_ASSERT_EQUAL(moelm_partition_consensus(&parts[0][0], score, n, N, K, 4), 1); /* closest to 2 and 3 */
  CU_ASSERT_EQUAL(moelm_partition_consensus(&parts[0][0], score, n, N, K, 8), 4); /* the low ones win all */
  CU_ASSERT_EQUAL(moelm_partition_consensus(&parts[0][0], score, n, N, K, 20), 4);
  /* two kept: a tie, so the higher score */
  CU_ASSERT_EQUAL(moelm_partition_consensus(&parts[0][0], score, n, N, K, 2), 0);
  /* equal partitions tie: the higher score, and with equal scores the earlier candidate */
  const double reversed[] = {-23, -22, -21, -20, -13, -11, -12, -10}, level[8] = {0};
  CU_ASSERT_EQUAL(moelm_partition_consensus(&parts[0][0], reversed, n, N, K, 4), 5);
  CU_ASSERT_EQUAL(moelm_partition_consensus(&parts[0][0], level, n, N, K, 8), 4);
}

static void test_discovery_json(void)
{
  MoelmDiscoveryConfig d = {.doc_estep = TRUE,
                            .balance = 4.0,
                            .temperature = 1.5,
                            .anneal_updates = 300,
                            .init = MOELM_MIXTURE_INIT_LABELS,
                            .init_after = 100,
                            .init_updates = 200,
                            .update_freq = 2},
                       back;
  JsonNode *n = moelm_mixture_discovery_to_json(&d);
  CU_ASSERT_TRUE_FATAL(moelm_mixture_discovery_from_json(json_node_get_object(n), &back, NULL));
  CU_ASSERT_TRUE(back.doc_estep);
  CU_ASSERT_DOUBLE_EQUAL(back.balance, 4.0, 0);
  CU_ASSERT_DOUBLE_EQUAL(back.temperature, 1.5, 0);
  CU_ASSERT_EQUAL(back.anneal_updates, 300);
  CU_ASSERT_EQUAL(back.init, MOELM_MIXTURE_INIT_LABELS);
  CU_ASSERT_EQUAL(back.init_after, 100);
  CU_ASSERT_EQUAL(back.init_updates, 200);
  json_node_unref(n);
  d.init = MOELM_MIXTURE_INIT_UNIGRAM;
  n = moelm_mixture_discovery_to_json(&d);
  CU_ASSERT_TRUE_FATAL(moelm_mixture_discovery_from_json(json_node_get_object(n), &back, NULL));
  CU_ASSERT_EQUAL(back.init, MOELM_MIXTURE_INIT_UNIGRAM);
  json_node_unref(n);
  d.init = MOELM_MIXTURE_INIT_AUTO;
  n = moelm_mixture_discovery_to_json(&d);
  CU_ASSERT_STRING_EQUAL(json_object_get_string_member(json_node_get_object(n), "init"), "auto");
  CU_ASSERT_TRUE_FATAL(moelm_mixture_discovery_from_json(json_node_get_object(n), &back, NULL));
  CU_ASSERT_EQUAL(back.init, MOELM_MIXTURE_INIT_AUTO);
  json_object_set_int_member(json_node_get_object(n), "estep", 3);
  GError *error = NULL;
  CU_ASSERT_FALSE(moelm_mixture_discovery_from_json(json_node_get_object(n), &back, &error));
  MOELM_ASSERT_ERROR(error, "discovery");
  g_clear_error(&error);
  json_node_unref(n);
}

MOELM_TEST_SUITE(mixture_discovery)
{
  CU_add_test(suite, "assignment solver equals brute force", test_assignment_solver);
  CU_add_test(suite, "balanced assignment: no expert empty, limits, best total", test_balanced_assignment);
  CU_add_test(suite, "annealing: the schedule and the weights", test_temperature_schedule_and_weights);
  CU_add_test(suite, "documents of a split and their labels", test_doc_map_and_labels);
  CU_add_test(suite, "document E-step: the sum over the document's blocks", test_document_estep_sums_blocks);
  CU_add_test(suite, "tf-idf, unigram and auto clusterings separate disjoint vocabularies", test_tfidf_clusters);
  CU_add_test(suite, "auto clustering: damped counts, the domain over a repeated topic piece",
              test_auto_clusters_damp_repeats);
  CU_add_test(suite, "adjusted Rand index equals its definition over pairs", test_adjusted_rand_index);
  CU_add_test(suite, "consensus of the best-scoring clusterings", test_partition_consensus);
  CU_add_test(suite, "matching experts to domains, validation tally", test_matching_and_tally);
  CU_add_test(suite, "discovery settings in checkpoint metadata", test_discovery_json);
}
