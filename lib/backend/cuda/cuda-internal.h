/* moelm — the CUDA backend's internals: the state the host glue (cuda-backend.c, plain C)
 * keeps, and the kernel launchers the .cu files export with C linkage. Not installed.
 *
 * Every launcher takes the backend's stream and returns the launch's cudaError_t as an int
 * (0 = success); the host glue records a failure in the backend's error channel, so a bad
 * launch surfaces at the next synchronize (docs/backend.md, "Errors"). Activations are `void *`
 * here with their dtype passed along (MOELM_DT_F32 / _BF16 / _F16 as ints). */
#ifndef MOELM_CUDA_INTERNAL_H
#define MOELM_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *MoelmCudaStream;

/* ---- element-wise (cuda-elementwise.cu) ---- */
int moelm_cuda_fill(MoelmCudaStream s, float *x, float value, size_t n);
int moelm_cuda_axpy(MoelmCudaStream s, float *y, float alpha, const float *x, size_t n);
int moelm_cuda_scale(MoelmCudaStream s, float *x, float alpha, size_t n);
/* sum of x^2 in double, deterministic: fixed blocks, partials summed in order into *out
 * (device memory, one double); `scratch` holds MOELM_CUDA_SUMSQ_BLOCKS doubles. */
#define MOELM_CUDA_SUMSQ_BLOCKS 1024
int moelm_cuda_sum_squares(MoelmCudaStream s, const float *x, size_t n, double *scratch, double *out);
int moelm_cuda_convert(MoelmCudaStream s, void *dst, int dst_type, const void *src, int src_type, size_t n);
int moelm_cuda_add(MoelmCudaStream s, int dt, void *out, const void *a, const void *b, size_t n);
int moelm_cuda_activation_forward(MoelmCudaStream s, int dt, int act, void *out, const void *inp, size_t n);
int moelm_cuda_activation_backward(MoelmCudaStream s, int dt, int act, void *dinp, const void *inp, const void *dout,
                                   size_t n);
/* dropout with the masks of lib/core/rng.c's moelm_philox_word (seed, update, layer, site, i) */
int moelm_cuda_dropout_forward(MoelmCudaStream s, int dt, void *out, const void *inp, size_t n, float p,
                               uint64_t seed, uint32_t update, uint16_t layer, uint16_t site);
int moelm_cuda_dropout_backward(MoelmCudaStream s, int dt, void *dinp, const void *dout, size_t n, float p,
                                uint64_t seed, uint32_t update, uint16_t layer, uint16_t site);
int moelm_cuda_adam(MoelmCudaStream s, float *param, const float *grad, float *m, float *v, size_t n, float lr,
                    float beta1, float beta2, float one_minus_beta1, float one_minus_beta2, float eps, float decay,
                    float step_size, float grad_scale);

/* ---- dense, rows and losses (cuda-dense.cu) ---- */
int moelm_cuda_embedding_forward(MoelmCudaStream s, int dt, void *out, const int32_t *tokens, const int32_t *positions,
                                 const float *wte, const float *wpe, int N, int C, float scale);
int moelm_cuda_embedding_backward(MoelmCudaStream s, int dt, float *dwte, float *dwpe, const void *dout,
                                  const int32_t *tokens, const int32_t *positions, int N, int C, float scale);
int moelm_cuda_layernorm_forward(MoelmCudaStream s, int dt, void *out, float *mean, float *rstd, const void *inp,
                                 const float *weight, const float *bias, int N, int C, float eps);
/* dweight/dbias partials: (blocks, C) floats of scratch each, reduced in order */
int moelm_cuda_layernorm_backward(MoelmCudaStream s, int dt, void *dinp, float *dweight, float *dbias,
                                  const void *dout, const void *inp, const float *weight, const float *mean,
                                  const float *rstd, int N, int C, float *scratch);
size_t moelm_cuda_layernorm_scratch_floats(int N, int C);
int moelm_cuda_bias_add(MoelmCudaStream s, int dt, void *out, const float *bias, int N, int OC);
/* dbias(OC) += column sums of dout(N,OC), deterministic (a fixed split, summed in order) */
int moelm_cuda_bias_grad(MoelmCudaStream s, int dt, float *dbias, const void *dout, int N, int OC);
int moelm_cuda_gather_rows(MoelmCudaStream s, int dt, void *out, const void *inp, const int32_t *idx, int n, int C);
int moelm_cuda_scatter_add_rows(MoelmCudaStream s, int dt, void *out, const void *inp, const int32_t *idx,
                                const float *weight, int n, int C);
int moelm_cuda_scatter_add_rows_backward(MoelmCudaStream s, int dt, void *dinp, float *dweight, const void *dout,
                                         const void *inp, const int32_t *idx, const float *weight, int n, int C);
int moelm_cuda_cross_entropy(MoelmCudaStream s, int dt, float *losses, void *logits, const int32_t *targets,
                             const float *dloss, int N, int V, int ignore_index);
int moelm_cuda_target_log_probs(MoelmCudaStream s, int dt, float *lprobs, const void *logits, const int32_t *targets,
                                int N, int V, int ignore_index);
int moelm_cuda_log_softmax_forward(MoelmCudaStream s, int dt, float *out, const void *inp, int N, int V);
int moelm_cuda_log_softmax_backward(MoelmCudaStream s, int dt, void *dinp, const float *out, const float *dout, int N,
                                    int V);

/* ---- attention (cuda-attention.cu) ---- */
/* saved: (B, NH, T, T) fp32 pre-dropout probabilities (NULL: inference) */
int moelm_cuda_attention_forward(MoelmCudaStream s, int dt, void *out, float *saved, const void *qkv,
                                 const uint8_t *kpm, int B, int T, int C, int NH, float p, uint64_t seed,
                                 uint32_t update, uint16_t layer, uint16_t site);
int moelm_cuda_attention_backward(MoelmCudaStream s, int dt, void *dqkv, const void *dout, const void *qkv,
                                  const float *saved, const uint8_t *kpm, int B, int T, int C, int NH, float p,
                                  uint64_t seed, uint32_t update, uint16_t layer, uint16_t site);
int moelm_cuda_attention_decode(MoelmCudaStream s, int dt, void *out, const void *q, const void *k_cache,
                                const void *v_cache, const uint8_t *kpm, int B, int Tq, int Tk, int Tcap, int C, int NH);

#ifdef __cplusplus
}
#endif

#endif
