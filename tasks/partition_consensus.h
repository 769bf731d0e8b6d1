/* moelm — how much two clusterings of the same documents agree, and the consensus pick among
 * candidate clusterings (--mixture-init auto). */
#ifndef MOELM_TASKS_PARTITION_CONSENSUS_H
#define MOELM_TASKS_PARTITION_CONSENSUS_H

#include <glib.h>

G_BEGIN_DECLS

/* The adjusted Rand index of two partitions a, b (N) with labels in [0, K): 1 when they are the
 * same up to a renaming of the clusters, about 0 when they agree no more than chance would.
 * 1 when both put everything in one cluster (nothing to disagree on). */
double moelm_adjusted_rand_index(const int *a, const int *b, guint N, int K);

/* Among the n >= 1 candidate partitions parts (n, N), the `keep` with the highest score are the
 * good ones; returns the index of the one whose mean adjusted Rand index to the other good
 * ones is highest (ties to the higher score, then the earlier candidate). A partition that
 * many starts reach is preferred over a single one that scores a little higher. keep is taken
 * into [1, n]. */
int moelm_partition_consensus(const int *parts, const double *score, int n, guint N, int K, int keep);

G_END_DECLS

#endif
