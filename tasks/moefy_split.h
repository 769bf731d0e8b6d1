/* moelm — MoEfication's expert construction (docs/moefy.md): splitting one FFN's F neurons
 * into E experts of exactly F/E neurons each. Host computations over weights and co-activation
 * counts staged from the backend.
 *
 *  - param-cluster: balanced k-means over the L2-normalised rows of fc1 (neuron i's input
 *    weights): each neuron goes to the expert whose centre is nearest, under the constraint
 *    that every expert gets F/E neurons (a greedy assignment by increasing distance, then
 *    pairwise swaps while one lowers the total distance), centres re-estimated until no
 *    neuron moves;
 *  - coactivation: a METIS k-way partition of the graph whose edge (i, j) weighs how often
 *    neurons i and j were positive for the same token, then rebalanced to F/E per expert by
 *    moving, each time, the neuron whose move loses the least edge weight. */
#ifndef MOELM_TASKS_MOEFY_SPLIT_H
#define MOELM_TASKS_MOEFY_SPLIT_H

#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

/* expert_of (F) from the rows (F, C) (normalised here): exactly F/E neurons per expert (E must
 * divide F). iters: k-means rounds at most; seed: the k-means++ initialisation. */
gboolean moelm_moefy_param_cluster(const float *rows, int F, int C, int E, int iters, uint64_t seed,
                                   int32_t *expert_of, GError **error);

/* TRUE when this build has METIS (configure found libmetis-dev); else FALSE with an error
 * saying to install it. */
gboolean moelm_moefy_require_metis(GError **error);

/* expert_of (F) from the co-activation counts adj (F, F) (symmetric; the diagonal is not
 * read): METIS's k-way partition into E parts, then moelm_moefy_rebalance. Without METIS: an
 * error saying to install libmetis-dev. */
gboolean moelm_moefy_coactivation_split(const float *adj, int F, int E, uint64_t seed, int32_t *expert_of,
                                        GError **error);

/* Make every part hold F/E vertices: while a part is too large, move the vertex of a too
 * large part to the too small part that loses the least edge weight (adj (F, F)) by it. */
void moelm_moefy_rebalance(const float *adj, int F, int E, int32_t *expert_of);

/* Every neuron in an expert 0..E-1 and each expert holding F/E: else an error naming it. */
gboolean moelm_moefy_partition_check(const int32_t *expert_of, int F, int E, GError **error);

/* The neurons in expert order: perm[e*F/E + j] is the j-th lowest neuron of expert e. */
void moelm_moefy_partition_order(const int32_t *expert_of, int F, int E, int32_t *perm);

G_END_DECLS

#endif
