/* moelm — the CUDA backend's host glue (plain C): the device, one stream, cuBLAS, memory, the
 * error channel, and the op table. The kernels are in the .cu files of this folder; matrix
 * products go to cuBLAS (fp32 SGEMM; bf16/fp16 activations through cublasGemmEx with fp32
 * accumulation, the fp32 master weights rounded to the activation type into a scratch buffer
 * per call). Token routing and the grouped expert GEMMs run here correctly but simply: routing
 * on the host over copies of the router's buffers (with the CPU's implementation, which is the
 * reference), experts one cuBLAS call each. Issue 11 moves both onto the device.
 *
 * Every CUDA or cuBLAS failure inside an op is recorded with moelm_backend_set_error and comes
 * back at the next synchronize. Not yet run on a GPU: tests/gpu/device-check.sh is the check. */
#include "config.h"

#include <math.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backend/cpu/cpu-internal.h"
#include "backend/cuda/cuda-backend.h"
#include "backend/cuda/cuda-internal.h"
#include "moelm/backend.h"
#include "moelm/errors.h"

typedef struct {
  int device;
  cudaStream_t stream;
  cublasHandle_t blas;
  double *sumsq; /* device: MOELM_CUDA_SUMSQ_BLOCKS partials + the total */
  float *ln_scratch;
  size_t ln_cap;     /* floats */
  void *wcast;       /* a weight rounded to the activation type, for cublasGemmEx */
  size_t wcast_cap;  /* bytes */
  MoelmBackend *host_router; /* the CPU reference backend: routing runs there */
  MoelmRouteBuffers hr;      /* its host buffers */
  int hr_S, hr_E, hr_K;
  char name[256];
} CudaState;

#define ST(be) ((CudaState *)(be)->priv)
#define STREAM(be) ((MoelmCudaStream)ST(be)->stream)
#define DT(be) ((int)(be)->act_dtype)

/* Record a failed CUDA call or launch (rc != 0) in the error channel. */
static void check_rc(MoelmBackend *be, int rc, const char *what)
{
  if (rc != 0)
    moelm_backend_set_error(be, MOELM_ERROR_FAILED, "cuda device %d: %s failed: %s", ST(be)->device, what,
                            cudaGetErrorString((cudaError_t)rc));
}

static void check_blas(MoelmBackend *be, cublasStatus_t rc, const char *what)
{
  if (rc != CUBLAS_STATUS_SUCCESS)
    moelm_backend_set_error(be, MOELM_ERROR_FAILED, "cuda device %d: cuBLAS %s failed (status %d)", ST(be)->device,
                            what, (int)rc);
}

/* ---- memory ------------------------------------------------------------------------------ */

static void *cuda_alloc(MoelmBackend *be, size_t bytes, GError **error)
{
  void *p = NULL;
  cudaError_t rc = cudaMalloc(&p, bytes > 0 ? bytes : 64);
  if (rc != cudaSuccess) {
    size_t free_b = 0, total = 0;
    cudaMemGetInfo(&free_b, &total);
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM,
                "cuda device %d: out of GPU memory allocating %.1f MB (%.1f of %.1f GB free): %s", ST(be)->device,
                (double)bytes / 1e6, (double)free_b / 1e9, (double)total / 1e9, cudaGetErrorString(rc));
    cudaGetLastError(); /* the failure is reported; do not let it poison the next check */
    return NULL;
  }
  return p;
}

static void cuda_free(MoelmBackend *be, void *ptr)
{
  if (ptr)
    cudaFree(ptr);
}

/* Host buffers are often freed right after: copies to and from the host complete before
 * returning. */
static void cuda_to_device(MoelmBackend *be, void *dst, const void *src, size_t bytes)
{
  if (bytes == 0)
    return;
  check_rc(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ST(be)->stream), "copy to device");
  check_rc(be, cudaStreamSynchronize(ST(be)->stream), "copy to device");
}

static void cuda_to_host(MoelmBackend *be, void *dst, const void *src, size_t bytes)
{
  if (bytes == 0)
    return;
  check_rc(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ST(be)->stream), "copy to host");
  check_rc(be, cudaStreamSynchronize(ST(be)->stream), "copy to host");
}

static void cuda_copy(MoelmBackend *be, void *dst, const void *src, size_t bytes)
{
  if (bytes > 0)
    check_rc(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ST(be)->stream), "device copy");
}

static void cuda_zero(MoelmBackend *be, void *ptr, size_t bytes)
{
  if (bytes > 0)
    check_rc(be, cudaMemsetAsync(ptr, 0, bytes, ST(be)->stream), "memset");
}

static gboolean cuda_synchronize(MoelmBackend *be, GError **error)
{
  check_rc(be, cudaStreamSynchronize(ST(be)->stream), "a queued operation");
  if (be->op_error == NULL)
    return TRUE;
  g_propagate_error(error, be->op_error);
  be->op_error = NULL;
  return FALSE;
}

static void cuda_convert(MoelmBackend *be, void *dst, MoelmDtype dt, const void *src, MoelmDtype st, size_t n)
{
  check_rc(be, moelm_cuda_convert(STREAM(be), dst, (int)dt, src, (int)st, n), "convert");
}

/* ---- helpers ----------------------------------------------------------------------------- */

static void cuda_fill(MoelmBackend *be, float *x, float v, size_t n)
{
  check_rc(be, moelm_cuda_fill(STREAM(be), x, v, n), "fill");
}

static void cuda_add(MoelmBackend *be, MoelmAct *out, const MoelmAct *a, const MoelmAct *b, size_t n)
{
  check_rc(be, moelm_cuda_add(STREAM(be), DT(be), out, a, b, n), "add");
}

static void cuda_axpy(MoelmBackend *be, float *y, float alpha, const float *x, size_t n)
{
  check_rc(be, moelm_cuda_axpy(STREAM(be), y, alpha, x, n), "axpy");
}

static void cuda_scale(MoelmBackend *be, float *x, float alpha, size_t n)
{
  check_rc(be, moelm_cuda_scale(STREAM(be), x, alpha, n), "scale");
}

static double cuda_sum_squares(MoelmBackend *be, const float *x, size_t n)
{
  CudaState *s = ST(be);
  check_rc(be, moelm_cuda_sum_squares(STREAM(be), x, n, s->sumsq, s->sumsq + MOELM_CUDA_SUMSQ_BLOCKS), "sum_squares");
  double out = NAN;
  cuda_to_host(be, &out, s->sumsq + MOELM_CUDA_SUMSQ_BLOCKS, sizeof out);
  return out;
}

/* ---- matrix products (cuBLAS, column-major: a row-major (R, C) matrix is its transpose) ---- */

static void cuda_gemm(MoelmBackend *be, float *c, const float *a, const float *b, int M, int N, int K, gboolean ta,
                      gboolean tb, float alpha, float beta)
{
  /* row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T */
  check_blas(be,
             cublasSgemm(ST(be)->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha,
                         b, tb ? K : N, a, ta ? M : K, &beta, c, N),
             "sgemm");
}

static cudaDataType_t cuda_type(MoelmDtype dt)
{
  return dt == MOELM_DT_BF16 ? CUDA_R_16BF : dt == MOELM_DT_F16 ? CUDA_R_16F : CUDA_R_32F;
}

/* The fp32 weight in the activation type (for a half-precision GEMM), in the scratch. */
static const void *weight_as_act(MoelmBackend *be, const float *w, size_t n)
{
  CudaState *s = ST(be);
  if (be->act_dtype == MOELM_DT_F32)
    return w;
  const size_t bytes = moelm_act_bytes(be, n);
  if (bytes > s->wcast_cap) {
    cudaFree(s->wcast);
    s->wcast = NULL;
    check_rc(be, cudaMalloc(&s->wcast, bytes), "weight scratch");
    s->wcast_cap = s->wcast ? bytes : 0;
  }
  if (s->wcast)
    check_rc(be, moelm_cuda_convert(STREAM(be), s->wcast, (int)be->act_dtype, w, MOELM_DT_F32, n), "weight cast");
  return s->wcast;
}

/* column-major C(m,n) = op(A) op(B), A/B/C of the given types, fp32 accumulation */
static void gemm_ex(MoelmBackend *be, cublasOperation_t oa, cublasOperation_t ob, int m, int n, int k, const void *A,
                    cudaDataType_t ta, int lda, const void *B, cudaDataType_t tb, int ldb, float beta, void *C,
                    cudaDataType_t tc, int ldc, const char *what)
{
  const float alpha = 1.0f;
  check_blas(be,
             cublasGemmEx(ST(be)->blas, oa, ob, m, n, k, &alpha, A, ta, lda, B, tb, ldb, &beta, C, tc, ldc,
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             what);
}

static void cuda_linear_forward(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const float *weight,
                                const float *bias, int N, int IC, int OC)
{
  if (N <= 0)
    return;
  const cudaDataType_t at = cuda_type(be->act_dtype);
  /* out^T (OC, N) = W (OC, IC) inp^T (IC, N); W row-major is column-major (IC, OC) */
  const void *w = weight_as_act(be, weight, (size_t)OC * IC);
  gemm_ex(be, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, IC, w, at, IC, inp, at, IC, 0.0f, out, at, OC, "linear forward");
  if (bias)
    check_rc(be, moelm_cuda_bias_add(STREAM(be), DT(be), out, bias, N, OC), "bias");
}

static void cuda_linear_backward(MoelmBackend *be, MoelmAct *dinp, float *dweight, float *dbias, const MoelmAct *dout,
                                 const MoelmAct *inp, const float *weight, int N, int IC, int OC)
{
  if (N <= 0)
    return;
  const cudaDataType_t at = cuda_type(be->act_dtype);
  if (dinp) { /* dinp^T (IC, N) += W^T (IC, OC) dout^T (OC, N) */
    const void *w = weight_as_act(be, weight, (size_t)OC * IC);
    gemm_ex(be, CUBLAS_OP_N, CUBLAS_OP_N, IC, N, OC, w, at, IC, dout, at, OC, 1.0f, dinp, at, IC, "linear dinp");
  }
  if (dweight) /* dW^T (IC, OC) += inp^T (IC, N) dout (N, OC), fp32 result */
    gemm_ex(be, CUBLAS_OP_N, CUBLAS_OP_T, IC, OC, N, inp, at, IC, dout, at, OC, 1.0f, dweight, CUDA_R_32F, IC,
            "linear dweight");
  if (dbias)
    check_rc(be, moelm_cuda_bias_grad(STREAM(be), DT(be), dbias, dout, N, OC), "bias grad");
}

/* Experts one linear each over their rows; the offsets come to the host (one copy). */
static void cuda_grouped_linear_forward(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const float *weight,
                                        size_t w_stride, const float *bias, size_t b_stride, const int32_t *offsets,
                                        int E, int R, int IC, int OC)
{
  int32_t *h = g_new(int32_t, E + 1);
  cuda_to_host(be, h, offsets, (size_t)(E + 1) * sizeof(int32_t));
  for (int e = 0; e < E; e++) {
    const int n = h[e + 1] - h[e];
    if (n > 0)
      cuda_linear_forward(be, moelm_act_at(be, out, (size_t)h[e] * OC), moelm_act_at(be, inp, (size_t)h[e] * IC),
                          weight + (size_t)e * w_stride, bias ? bias + (size_t)e * b_stride : NULL, n, IC, OC);
  }
  if (h[E] < R)
    cuda_zero(be, moelm_act_at(be, out, (size_t)h[E] * OC), moelm_act_bytes(be, (size_t)(R - h[E]) * OC));
  g_free(h);
}

static void cuda_grouped_linear_backward(MoelmBackend *be, MoelmAct *dinp, float *dweight, float *dbias,
                                         const MoelmAct *dout, const MoelmAct *inp, const float *weight,
                                         size_t w_stride, size_t b_stride, const int32_t *offsets, int E, int R, int IC,
                                         int OC)
{
  int32_t *h = g_new(int32_t, E + 1);
  cuda_to_host(be, h, offsets, (size_t)(E + 1) * sizeof(int32_t));
  for (int e = 0; e < E; e++) {
    const int n = h[e + 1] - h[e];
    if (n > 0)
      cuda_linear_backward(be, dinp ? moelm_act_at(be, dinp, (size_t)h[e] * IC) : NULL,
                           dweight ? dweight + (size_t)e * w_stride : NULL, dbias ? dbias + (size_t)e * b_stride : NULL,
                           moelm_act_at(be, dout, (size_t)h[e] * OC), moelm_act_at(be, inp, (size_t)h[e] * IC),
                           weight + (size_t)e * w_stride, n, IC, OC);
  }
  g_free(h);
}

/* ---- rows, embeddings, norms, losses, attention: the kernels ------------------------------ */

static void cuda_embedding_forward(MoelmBackend *be, MoelmAct *out, const int32_t *tokens, const int32_t *positions,
                                   const float *wte, const float *wpe, int N, int C, float scale)
{
  check_rc(be, moelm_cuda_embedding_forward(STREAM(be), DT(be), out, tokens, positions, wte, wpe, N, C, scale),
           "embedding");
}

static void cuda_embedding_backward(MoelmBackend *be, float *dwte, float *dwpe, const MoelmAct *dout,
                                    const int32_t *tokens, const int32_t *positions, int N, int C, float scale)
{
  check_rc(be, moelm_cuda_embedding_backward(STREAM(be), DT(be), dwte, dwpe, dout, tokens, positions, N, C, scale),
           "embedding backward");
}

static void cuda_layernorm_forward(MoelmBackend *be, MoelmAct *out, float *mean, float *rstd, const MoelmAct *inp,
                                   const float *weight, const float *bias, int N, int C, float eps)
{
  check_rc(be, moelm_cuda_layernorm_forward(STREAM(be), DT(be), out, mean, rstd, inp, weight, bias, N, C, eps),
           "layernorm");
}

static void cuda_layernorm_backward(MoelmBackend *be, MoelmAct *dinp, float *dweight, float *dbias,
                                    const MoelmAct *dout, const MoelmAct *inp, const float *weight, const float *mean,
                                    const float *rstd, int N, int C)
{
  CudaState *s = ST(be);
  const size_t need = moelm_cuda_layernorm_scratch_floats(N, C);
  if (need > s->ln_cap) {
    cudaFree(s->ln_scratch);
    s->ln_scratch = NULL;
    check_rc(be, cudaMalloc((void **)&s->ln_scratch, need * sizeof(float)), "layernorm scratch");
    s->ln_cap = s->ln_scratch ? need : 0;
  }
  check_rc(be,
           moelm_cuda_layernorm_backward(STREAM(be), DT(be), dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C,
                                         s->ln_scratch),
           "layernorm backward");
}

static size_t cuda_attention_saved_bytes(MoelmBackend *be, int B, int T, int C, int NH)
{
  return (size_t)B * NH * T * T * sizeof(float);
}

static void cuda_attention_forward(MoelmBackend *be, MoelmAct *out, void *saved, const MoelmAct *qkv,
                                   const uint8_t *kpm, int B, int T, int C, int NH, float p,
                                   const MoelmDropoutIds *ids)
{
  const MoelmDropoutIds z = {0, 0, 0, 0}, *d = ids ? ids : &z;
  check_rc(be,
           moelm_cuda_attention_forward(STREAM(be), DT(be), out, saved, qkv, kpm, B, T, C, NH, p, d->seed, d->update,
                                        d->layer, d->site),
           "attention");
}

static void cuda_attention_backward(MoelmBackend *be, MoelmAct *dqkv, const MoelmAct *dout, const MoelmAct *qkv,
                                    const void *saved, const uint8_t *kpm, int B, int T, int C, int NH, float p,
                                    const MoelmDropoutIds *ids)
{
  const MoelmDropoutIds z = {0, 0, 0, 0}, *d = ids ? ids : &z;
  check_rc(be,
           moelm_cuda_attention_backward(STREAM(be), DT(be), dqkv, dout, qkv, saved, kpm, B, T, C, NH, p, d->seed,
                                         d->update, d->layer, d->site),
           "attention backward");
}

static void cuda_attention_decode(MoelmBackend *be, MoelmAct *out, const MoelmAct *q, const MoelmAct *k,
                                  const MoelmAct *v, const uint8_t *kpm, int B, int Tq, int Tk, int Tcap, int C, int NH)
{
  check_rc(be, moelm_cuda_attention_decode(STREAM(be), DT(be), out, q, k, v, kpm, B, Tq, Tk, Tcap, C, NH),
           "attention decode");
}

static void cuda_activation_forward(MoelmBackend *be, MoelmActivation act, MoelmAct *out, const MoelmAct *inp, size_t n)
{
  check_rc(be, moelm_cuda_activation_forward(STREAM(be), DT(be), (int)act, out, inp, n), "activation");
}

static void cuda_activation_backward(MoelmBackend *be, MoelmActivation act, MoelmAct *dinp, const MoelmAct *inp,
                                     const MoelmAct *dout, size_t n)
{
  check_rc(be, moelm_cuda_activation_backward(STREAM(be), DT(be), (int)act, dinp, inp, dout, n),
           "activation backward");
}

static void cuda_dropout_forward(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, size_t n, float p,
                                 const MoelmDropoutIds *ids)
{
  if (p == 0.0f) {
    if (out != inp)
      cuda_copy(be, out, inp, moelm_act_bytes(be, n));
    return;
  }
  check_rc(be,
           moelm_cuda_dropout_forward(STREAM(be), DT(be), out, inp, n, p, ids->seed, ids->update, ids->layer,
                                      ids->site),
           "dropout");
}

static void cuda_dropout_backward(MoelmBackend *be, MoelmAct *dinp, const MoelmAct *dout, size_t n, float p,
                                  const MoelmDropoutIds *ids)
{
  const MoelmDropoutIds z = {0, 0, 0, 0};
  if (ids == NULL)
    ids = &z;
  check_rc(be,
           moelm_cuda_dropout_backward(STREAM(be), DT(be), dinp, dout, n, p, ids->seed, ids->update, ids->layer,
                                       ids->site),
           "dropout backward");
}

static void cuda_gather_rows(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const int32_t *idx, int n, int C)
{
  check_rc(be, moelm_cuda_gather_rows(STREAM(be), DT(be), out, inp, idx, n, C), "gather rows");
}

static void cuda_scatter_add_rows(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const int32_t *idx,
                                  const float *weight, int n, int C)
{
  check_rc(be, moelm_cuda_scatter_add_rows(STREAM(be), DT(be), out, inp, idx, weight, n, C), "scatter rows");
}

static void cuda_scatter_add_rows_backward(MoelmBackend *be, MoelmAct *dinp, float *dweight, const MoelmAct *dout,
                                           const MoelmAct *inp, const int32_t *idx, const float *weight, int n, int C)
{
  check_rc(be, moelm_cuda_scatter_add_rows_backward(STREAM(be), DT(be), dinp, dweight, dout, inp, idx, weight, n, C),
           "scatter rows backward");
}

static void cuda_cross_entropy(MoelmBackend *be, float *losses, MoelmAct *logits, const int32_t *targets,
                               const float *dloss, int N, int V, int ignore_index)
{
  check_rc(be, moelm_cuda_cross_entropy(STREAM(be), DT(be), losses, logits, targets, dloss, N, V, ignore_index),
           "cross entropy");
}

static void cuda_target_log_probs(MoelmBackend *be, float *lprobs, const MoelmAct *logits, const int32_t *targets,
                                  int N, int V, int ignore_index)
{
  check_rc(be, moelm_cuda_target_log_probs(STREAM(be), DT(be), lprobs, logits, targets, N, V, ignore_index),
           "target log-probs");
}

static void cuda_log_softmax_forward(MoelmBackend *be, float *out, const MoelmAct *inp, int N, int V)
{
  check_rc(be, moelm_cuda_log_softmax_forward(STREAM(be), DT(be), out, inp, N, V), "log_softmax");
}

static void cuda_log_softmax_backward(MoelmBackend *be, MoelmAct *dinp, const float *out, const float *dout, int N,
                                      int V)
{
  check_rc(be, moelm_cuda_log_softmax_backward(STREAM(be), DT(be), dinp, out, dout, N, V), "log_softmax backward");
}

static void cuda_adam_step(MoelmBackend *be, float *param, const float *grad, float *m, float *v, size_t n,
                           const MoelmAdamParams *hp)
{
  const double bc1 = 1.0 - pow(hp->beta1, (double)hp->step), bc2 = 1.0 - pow(hp->beta2, (double)hp->step);
  check_rc(be,
           moelm_cuda_adam(STREAM(be), param, grad, m, v, n, hp->lr, (float)hp->beta1, (float)hp->beta2,
                           (float)(1.0 - hp->beta1), (float)(1.0 - hp->beta2), hp->eps, hp->weight_decay * hp->lr,
                           (float)(hp->lr * sqrt(bc2) / bc1), hp->grad_scale),
           "adam");
}

/* ---- token routing on the host, with the CPU reference over copies ------------------------ */

static void free_host_route(CudaState *s)
{
  MoelmRouteBuffers *h = &s->hr;
  void *bufs[] = {h->gates, h->choice, h->norm, h->queued, h->location, h->kept, h->weight, h->count1,
                  h->offsets, h->dispatch_token, h->dispatch_slot, h->dispatch_weight, h->order};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    g_free(bufs[i]);
  memset(h, 0, sizeof *h);
  s->hr_S = s->hr_E = s->hr_K = 0;
}

static MoelmRouteBuffers *host_route(CudaState *s, int S, int E, int K)
{
  if (S > s->hr_S || E != s->hr_E || K != s->hr_K) {
    free_host_route(s);
    MoelmRouteBuffers *h = &s->hr;
    const size_t n = (size_t)MAX(S, 1), slots = n * K;
    h->gates = g_new0(float, n * E);
    h->choice = g_new0(int32_t, slots);
    h->norm = g_new0(float, slots);
    h->queued = g_new0(uint8_t, slots);
    h->location = g_new0(int32_t, slots);
    h->kept = g_new0(uint8_t, slots);
    h->weight = g_new0(float, slots);
    h->count1 = g_new0(int32_t, E);
    h->offsets = g_new0(int32_t, E + 1);
    h->dispatch_token = g_new0(int32_t, slots);
    h->dispatch_slot = g_new0(int32_t, slots);
    h->dispatch_weight = g_new0(float, slots);
    h->order = g_new0(int32_t, n);
    s->hr_S = S;
    s->hr_E = E;
    s->hr_K = K;
  }
  return &s->hr;
}

/* Move every routing buffer between the device and the host mirror. */
static void route_copy(MoelmBackend *be, const MoelmRouteBuffers *d, MoelmRouteBuffers *h, int S, int E, int K,
                       gboolean to_host)
{
  const size_t slots = (size_t)S * K;
  struct {
    void *dev, *host;
    size_t bytes;
  } b[] = {{d->gates, h->gates, (size_t)S * E * 4},  {d->choice, h->choice, slots * 4},
           {d->norm, h->norm, slots * 4},            {d->queued, h->queued, slots},
           {d->location, h->location, slots * 4},    {d->kept, h->kept, slots},
           {d->weight, h->weight, slots * 4},        {d->count1, h->count1, (size_t)E * 4},
           {d->offsets, h->offsets, (size_t)(E + 1) * 4}, {d->dispatch_token, h->dispatch_token, slots * 4},
           {d->dispatch_slot, h->dispatch_slot, slots * 4}, {d->dispatch_weight, h->dispatch_weight, slots * 4},
           {d->order, h->order, (size_t)S * 4}};
  for (gsize i = 0; i < G_N_ELEMENTS(b); i++) {
    if (to_host)
      cuda_to_host(be, b[i].host, b[i].dev, b[i].bytes);
    else
      cuda_to_device(be, b[i].dev, b[i].host, b[i].bytes);
  }
}

static void cuda_moe_gate_topk(MoelmBackend *be, const MoelmRouteParams *p, const float *logits, const uint8_t *pad,
                               int S, const MoelmRouteBuffers *r)
{
  CudaState *s = ST(be);
  MoelmRouteBuffers *h = host_route(s, S, p->experts, p->top_k);
  float *hl = g_new(float, (size_t)MAX(S, 1) * p->experts);
  uint8_t *hp = pad ? g_new(uint8_t, MAX(S, 1)) : NULL;
  cuda_to_host(be, hl, logits, (size_t)S * p->experts * sizeof(float));
  if (pad)
    cuda_to_host(be, hp, pad, (size_t)S);
  s->host_router->ops->moe_gate_topk(s->host_router, p, hl, hp, S, h);
  route_copy(be, r, h, S, p->experts, p->top_k, FALSE);
  g_free(hl);
  g_free(hp);
}

static void cuda_moe_gate_dispatch(MoelmBackend *be, const MoelmRouteParams *p, int S, const MoelmRouteBuffers *r)
{
  CudaState *s = ST(be);
  MoelmRouteBuffers *h = host_route(s, S, p->experts, p->top_k);
  route_copy(be, r, h, S, p->experts, p->top_k, TRUE);
  s->host_router->ops->moe_gate_dispatch(s->host_router, p, S, h);
  route_copy(be, r, h, S, p->experts, p->top_k, FALSE);
}

static void cuda_moe_gate_stats(MoelmBackend *be, const MoelmRouteParams *p, int S, const MoelmRouteBuffers *r,
                                double *stats)
{
  CudaState *s = ST(be);
  MoelmRouteBuffers *h = host_route(s, S, p->experts, p->top_k);
  route_copy(be, r, h, S, p->experts, p->top_k, TRUE);
  double hs[MOELM_ROUTE_N_STATS];
  s->host_router->ops->moe_gate_stats(s->host_router, p, S, h, hs);
  cuda_to_device(be, stats, hs, sizeof hs);
}

static void cuda_moe_gate_backward(MoelmBackend *be, const MoelmRouteParams *p, int S, const MoelmRouteBuffers *r,
                                   const float *drow_weight, double aux_coef, float *dlogits)
{
  CudaState *s = ST(be);
  MoelmRouteBuffers *h = host_route(s, S, p->experts, p->top_k);
  route_copy(be, r, h, S, p->experts, p->top_k, TRUE);
  const size_t slots = (size_t)MAX(S, 1) * p->top_k;
  float *hd = g_new(float, slots), *hl = g_new(float, (size_t)MAX(S, 1) * p->experts);
  cuda_to_host(be, hd, drow_weight, (size_t)S * p->top_k * sizeof(float));
  s->host_router->ops->moe_gate_backward(s->host_router, p, S, h, hd, aux_coef, hl);
  cuda_to_device(be, dlogits, hl, (size_t)S * p->experts * sizeof(float));
  g_free(hd);
  g_free(hl);
}

/* ---- the table and creation -------------------------------------------------------------- */

static void cuda_destroy(MoelmBackend *be)
{
  CudaState *s = ST(be);
  cudaStreamSynchronize(s->stream);
  cudaFree(s->sumsq);
  cudaFree(s->ln_scratch);
  cudaFree(s->wcast);
  free_host_route(s);
  moelm_backend_free(s->host_router);
  cublasDestroy(s->blas);
  cudaStreamDestroy(s->stream);
  g_clear_error(&be->op_error);
  g_free(be->description);
  g_free(be->reason);
  g_free(s);
  g_free(be);
}

static const struct moelm_backend_ops cuda_ops = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .free = cuda_free,
    .to_device = cuda_to_device,
    .to_host = cuda_to_host,
    .copy = cuda_copy,
    .zero = cuda_zero,
    .synchronize = cuda_synchronize,
    .convert = cuda_convert,
    .fill = cuda_fill,
    .add = cuda_add,
    .axpy = cuda_axpy,
    .scale = cuda_scale,
    .sum_squares = cuda_sum_squares,
    .gemm = cuda_gemm,
    .embedding_forward = cuda_embedding_forward,
    .embedding_backward = cuda_embedding_backward,
    .layernorm_forward = cuda_layernorm_forward,
    .layernorm_backward = cuda_layernorm_backward,
    .linear_forward = cuda_linear_forward,
    .linear_backward = cuda_linear_backward,
    .grouped_linear_forward = cuda_grouped_linear_forward,
    .grouped_linear_backward = cuda_grouped_linear_backward,
    .attention_saved_bytes = cuda_attention_saved_bytes,
    .attention_forward = cuda_attention_forward,
    .attention_backward = cuda_attention_backward,
    .attention_decode = cuda_attention_decode,
    .activation_forward = cuda_activation_forward,
    .activation_backward = cuda_activation_backward,
    .dropout_forward = cuda_dropout_forward,
    .dropout_backward = cuda_dropout_backward,
    .gather_rows = cuda_gather_rows,
    .scatter_add_rows = cuda_scatter_add_rows,
    .scatter_add_rows_backward = cuda_scatter_add_rows_backward,
    .cross_entropy = cuda_cross_entropy,
    .target_log_probs = cuda_target_log_probs,
    .log_softmax_forward = cuda_log_softmax_forward,
    .log_softmax_backward = cuda_log_softmax_backward,
    .moe_gate_topk = cuda_moe_gate_topk,
    .moe_gate_dispatch = cuda_moe_gate_dispatch,
    .moe_gate_stats = cuda_moe_gate_stats,
    .moe_gate_backward = cuda_moe_gate_backward,
    .adam_step = cuda_adam_step,
    .destroy = cuda_destroy,
};

int moelm_cuda_device_count(GError **error)
{
  int n = 0;
  cudaError_t rc = cudaGetDeviceCount(&n);
  if (rc == cudaErrorNoDevice || (rc == cudaSuccess && n == 0)) {
    cudaGetLastError();
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "no CUDA device found");
    return 0;
  }
  if (rc != cudaSuccess) {
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    cudaGetLastError();
    if (drv == 0)
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "no NVIDIA driver found (no GPU on this machine?)");
    else if (rc == cudaErrorInsufficientDriver || drv < rt)
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED,
                  "the NVIDIA driver (CUDA %d.%d) is older than this build's CUDA %d.%d: update the driver", drv / 1000,
                  drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
    else
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED, "cannot use CUDA: %s", cudaGetErrorString(rc));
    return 0;
  }
  return n;
}

MoelmBackend *moelm_backend_cuda_new(int device_id, MoelmDtype act_dtype, GError **error)
{
  GError *local = NULL;
  const int n = moelm_cuda_device_count(&local);
  if (n == 0) {
    g_propagate_error(error, local);
    return NULL;
  }
  if (device_id < 0 || device_id >= n) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--device-id %d: this machine has %d CUDA device%s (0..%d)",
                device_id, n, n == 1 ? "" : "s", n - 1);
    return NULL;
  }
  cudaError_t rc = cudaSetDevice(device_id);
  CudaState *s = g_new0(CudaState, 1);
  s->device = device_id;
  if (rc == cudaSuccess)
    rc = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
  if (rc == cudaSuccess)
    rc = cudaMalloc((void **)&s->sumsq, (MOELM_CUDA_SUMSQ_BLOCKS + 1) * sizeof(double));
  if (rc != cudaSuccess) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FAILED, "cuda device %d: %s", device_id, cudaGetErrorString(rc));
    cudaGetLastError();
    g_free(s);
    return NULL;
  }
  if (cublasCreate(&s->blas) != CUBLAS_STATUS_SUCCESS) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FAILED, "cuda device %d: cannot create a cuBLAS handle", device_id);
    cudaStreamDestroy(s->stream);
    g_free(s);
    return NULL;
  }
  cublasSetStream(s->blas, s->stream);
  /* fp32 means fp32: no TF32 shortcut in parity runs */
  cublasSetMathMode(s->blas, act_dtype == MOELM_DT_F32 ? CUBLAS_PEDANTIC_MATH : CUBLAS_DEFAULT_MATH);
  s->host_router = moelm_backend_cpu_new(TRUE, 1, NULL);
  struct cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, device_id);
  MoelmBackend *be = g_new0(MoelmBackend, 1);
  be->ops = &cuda_ops;
  be->priv = s;
  be->act_dtype = act_dtype;
  be->act_size = moelm_dtype_size(act_dtype);
  be->n_threads = 1;
  be->device_id = device_id;
  be->native_stream = s->stream;
  be->description = g_strdup_printf("cuda device %d (%s, %.0f GB, sm_%d%d, %s activations)", device_id, prop.name,
                                    (double)prop.totalGlobalMem / 1e9, prop.major, prop.minor,
                                    act_dtype == MOELM_DT_BF16 ? "bf16" : act_dtype == MOELM_DT_F16 ? "fp16" : "fp32");
  return be;
}
