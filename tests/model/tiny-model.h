/* The tiny decoder the model tests share: vocabulary 13, 2 layers, dim 8, FFN 12, 2 heads,
 * 16 positions, gelu, no dropout, and a 2×6 batch with one padded row. */
#ifndef MOELM_TESTS_TINY_MODEL_H
#define MOELM_TESTS_TINY_MODEL_H

#include "moelm/model.h"

enum { TB = 2, TT = 6, TV = 13 };

/* The shared shape (pre-norm, untied, sinusoidal positions); tests change what they vary. */
void tiny_model_config(MoelmModelConfig *cfg);

/* rows {5 7 9 4 11 </s>} and {6 8 </s> pad pad pad}: src = tgt shifted right, </s> first.
 * src, tgt: TB*TT each. */
void tiny_model_batch(int32_t *src, int32_t *tgt, MoelmBatch *batch);

/* A model of `cfg` with moelm_model_init_params(seed) (a failure is fatal). */
MoelmModel *tiny_model_new(const MoelmModelConfig *cfg, MoelmBackend *be, uint64_t seed);

/* log p(seq[t] | seq[0..t)) by a full forward of that one row (t < 16). */
float tiny_model_full_lprob(MoelmModel *m, const int32_t *seq, int t);

/* Incremental decoding of `m` (a prefill of 3 tokens, then one at a time up to 7) gives the
 * log-probabilities of a full recomputation over each prefix, summing to one. */
void tiny_model_check_decode(MoelmModel *m);

/* Copy tensor `src_name` of `src` over tensor `dst_name` of `dst` (same size). */
void tiny_model_copy_tensor(MoelmModel *dst, const char *dst_name, MoelmModel *src, const char *src_name);

/* Copy between a dense model and an MoE model of its shape: the tensors both have by name, and
 * every dense FFN tensor ("decoder.layers.L.fc1.weight") with the same tensor of each expert e in
 * [e0, e1) ("decoder.layers.L.moe_layer.experts.E.fc1.weight"). to_moe: dense into those
 * experts; else expert e0 into the dense model. */
void tiny_model_copy_dense_moe(MoelmModel *dense, MoelmModel *moe, int e0, int e1, gboolean to_moe);

#endif
