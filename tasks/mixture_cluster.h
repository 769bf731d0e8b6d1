/* moelm — a clustering of a split's documents to start a mixture's responsibilities from.
 * --mixture-init tfidf: each document is a tf-idf vector over its tokens (sublinear term
 * frequency 1 + log tf, idf = log(N / df), only the MAX_TERMS terms that most documents
 * use, L2-normalised), clustered into K groups by spherical k-means (cosine similarity,
 * k-means++ seeding drawn from Philox(seed), at most 30 rounds or until nothing moves; the best
 * of 5 runs by total similarity). */
#ifndef MOELM_TASKS_MIXTURE_CLUSTER_H
#define MOELM_TASKS_MIXTURE_CLUSTER_H

#include <stdint.h>
#include <glib.h>

#include "lm_data.h"
#include "mixture_docs.h"

G_BEGIN_DECLS

/* clusters (map->n_docs) in [0, K). Fewer documents than K leave clusters empty. */
gboolean moelm_mixture_cluster_documents(const MoelmLmSplit *split, const MoelmDocMap *map, int K, uint64_t seed,
                                         int *clusters, GError **error);

/* The same from a mixture of K multinomials over the documents' pieces (specials left out):
 * EM from random soft responsibilities drawn from Philox(seed), add-0.1 smoothing of each
 * component's piece distribution, mixing weights learned; 50 rounds, the best of 5 starts by
 * log-likelihood; each document goes to its most probable component. It is the sequence
 * mixture with unigram experts, and on the shipped corpus it finds the domains (0.96 of the
 * training documents) where tf-idf k-means does not (0.63-0.81): tests/bench/NOTES.md. */
gboolean moelm_mixture_cluster_documents_unigram(const MoelmLmSplit *split, const MoelmDocMap *map, int K,
                                                 uint64_t seed, int *clusters, GError **error);

/* The consensus of 3 x 10 candidate partitions: 10 EM starts from random responsibilities, and
 * 10 spherical k-means runs each over raw and over sublinear tf-idf vectors, each partition
 * refined by EM of a mixture of K multinomials over damped counts log(1 + count) (50 rounds,
 * add-0.1 smoothing, as above); all drawn from Philox(seed). The 10 with the highest damped
 * log-likelihood are kept, and of those the one with the highest mean adjusted Rand index to
 * the other nine wins (partition_consensus.h). No single kind of candidate finds the domains
 * of all three benchmark corpora, and the likelihood alone misranks docs; over ten seeds the
 * consensus puts 0.93 of docs' and code's training documents and 0.97 of the shipped corpus's
 * with their domain (tests/bench/NOTES.md). */
gboolean moelm_mixture_cluster_documents_auto(const MoelmLmSplit *split, const MoelmDocMap *map, int K,
                                              uint64_t seed, int *clusters, GError **error);

G_END_DECLS

#endif
