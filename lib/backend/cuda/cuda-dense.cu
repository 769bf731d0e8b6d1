// moelm — CUDA row kernels: embeddings, layer norm, bias, row gather/scatter, and the
// softmax family (fused cross-entropy with the gradient written over the logits, target
// log-probabilities, log-softmax). A row (C or V elements) is one block of 256 threads that
// strides over it (coalesced), with block-wide reductions in fp32 through warp shuffles.
// Correctness first: no fused epilogues yet (docs/backend.md, "CUDA").
#include "cuda-common.cuh"
#include "cuda-internal.h"

namespace {

constexpr unsigned ROW = 256;

template <typename T>
__global__ void embed_fwd(T *out, const int32_t *tokens, const int32_t *positions, const float *wte, const float *wpe,
                          int C, float scale)
{
  const int n = blockIdx.x;
  const float *e = wte + (size_t)tokens[n] * C;
  const float *p = wpe ? wpe + (size_t)positions[n] * C : nullptr;
  for (int c = threadIdx.x; c < C; c += blockDim.x)
    st(out, (size_t)n * C + c, scale * e[c] + (p ? p[c] : 0.0f));
}

// Rows of the table receive from several tokens: atomics (fp32 sums in a timing-dependent
// order; the parity tolerance covers it).
template <typename T>
__global__ void embed_bwd(float *dwte, float *dwpe, const T *dout, const int32_t *tokens, const int32_t *positions,
                          int C, float scale)
{
  const int n = blockIdx.x;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float g = ld(dout, (size_t)n * C + c);
    if (dwte)
      atomicAdd(dwte + (size_t)tokens[n] * C + c, scale * g);
    if (dwpe)
      atomicAdd(dwpe + (size_t)positions[n] * C + c, g);
  }
}

template <typename T>
__global__ void ln_fwd(T *out, float *mean, float *rstd, const T *inp, const float *w, const float *b, int C, float eps)
{
  __shared__ float sh[32];
  const size_t row = (size_t)blockIdx.x * C;
  float s = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x)
    s += ld(inp, row + c);
  const float mu = block_sum(s, sh) / C;
  float v = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float d = ld(inp, row + c) - mu;
    v += d * d;
  }
  const float r = rsqrtf(block_sum(v, sh) / C + eps);
  __syncthreads(); // every read of inp is done: out may alias it
  for (int c = threadIdx.x; c < C; c += blockDim.x)
    st(out, row + c, (ld(inp, row + c) - mu) * r * w[c] + b[c]);
  if (threadIdx.x == 0) {
    if (mean)
      mean[blockIdx.x] = mu;
    if (rstd)
      rstd[blockIdx.x] = r;
  }
}

// dinp per row; dweight/dbias partials per block of rows (fixed), reduced in order afterwards.
template <typename T>
__global__ void ln_bwd(T *dinp, float *pw, float *pb, const T *dout, const T *inp, const float *w, const float *mean,
                       const float *rstd, int N, int C, int rows_per_block)
{
  __shared__ float sh[32];
  const int r0 = blockIdx.x * rows_per_block, r1 = min(N, r0 + rows_per_block);
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    if (pw)
      pw[(size_t)blockIdx.x * C + c] = 0;
    if (pb)
      pb[(size_t)blockIdx.x * C + c] = 0;
  }
  for (int n = r0; n < r1; n++) {
    const size_t row = (size_t)n * C;
    const float mu = mean[n], rs = rstd[n];
    float s1 = 0, s2 = 0; // sum g*w, sum g*w*xhat
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
      const float g = ld(dout, row + c), xh = (ld(inp, row + c) - mu) * rs;
      s1 += g * w[c];
      s2 += g * w[c] * xh;
      if (pw)
        pw[(size_t)blockIdx.x * C + c] += g * xh;
      if (pb)
        pb[(size_t)blockIdx.x * C + c] += g;
    }
    s1 = block_sum(s1, sh) / C;
    s2 = block_sum(s2, sh) / C;
    if (dinp)
      for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float g = ld(dout, row + c), xh = (ld(inp, row + c) - mu) * rs;
        st(dinp, row + c, ld(dinp, row + c) + rs * (g * w[c] - s1 - xh * s2));
      }
  }
}

__global__ void reduce_columns(float *dst, const float *partials, int blocks, int C)
{
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C)
    return;
  float s = 0;
  for (int b = 0; b < blocks; b++)
    s += partials[(size_t)b * C + c];
  dst[c] += s;
}

template <typename T> __global__ void bias_add(T *out, const float *bias, size_t n, int OC)
{
  MOELM_CUDA_GRID_STRIDE(i, n) st(out, i, ld(out, i) + bias[i % OC]);
}

// Column sums in a fixed order: one thread per column walks the rows.
template <typename T> __global__ void bias_grad(float *dbias, const T *dout, int N, int OC)
{
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= OC)
    return;
  float s = 0;
  for (int n = 0; n < N; n++)
    s += ld(dout, (size_t)n * OC + c);
  dbias[c] += s;
}

template <typename T> __global__ void gather(T *out, const T *inp, const int32_t *idx, int C)
{
  const int i = blockIdx.x, src = idx[i];
  for (int c = threadIdx.x; c < C; c += blockDim.x)
    out[(size_t)i * C + c] = src < 0 ? T(0.0f) : inp[(size_t)src * C + c];
}

// Destination rows may repeat: atomics in fp32 storage; half storage goes through a lock-free
// compare-and-swap on the 16-bit word's 32-bit container.
__device__ __forceinline__ void atomic_add_store(float *p, float v) { atomicAdd(p, v); }
__device__ __forceinline__ void atomic_add_store(__nv_bfloat16 *p, float v) { atomicAdd(p, __float2bfloat16_rn(v)); }
__device__ __forceinline__ void atomic_add_store(__half *p, float v) { atomicAdd(p, __float2half_rn(v)); }

template <typename T> __global__ void scatter(T *out, const T *inp, const int32_t *idx, const float *w, int C)
{
  const int i = blockIdx.x, dst = idx[i];
  if (dst < 0)
    return;
  const float wi = w ? w[i] : 1.0f;
  for (int c = threadIdx.x; c < C; c += blockDim.x)
    atomic_add_store(out + (size_t)dst * C + c, wi * ld(inp, (size_t)i * C + c));
}

template <typename T>
__global__ void scatter_bwd(T *dinp, float *dw, const T *dout, const T *inp, const int32_t *idx, const float *w, int C)
{
  __shared__ float sh[32];
  const int i = blockIdx.x, src = idx[i];
  if (src < 0)
    return;
  const float wi = w ? w[i] : 1.0f;
  float dot = 0;
  for (int c = threadIdx.x; c < C; c += blockDim.x) {
    const float g = ld(dout, (size_t)src * C + c);
    if (dinp)
      st(dinp, (size_t)i * C + c, ld(dinp, (size_t)i * C + c) + wi * g);
    if (dw)
      dot += g * ld(inp, (size_t)i * C + c);
  }
  if (dw) {
    dot = block_sum(dot, sh);
    if (threadIdx.x == 0)
      dw[i] += dot;
  }
}

template <typename T> __device__ float row_lse(const T *row, int V, float *sh)
{
  float mx = -INFINITY;
  for (int v = threadIdx.x; v < V; v += blockDim.x)
    mx = fmaxf(mx, ld(row, v));
  mx = block_max(mx, sh);
  float s = 0;
  for (int v = threadIdx.x; v < V; v += blockDim.x)
    s += expf(ld(row, v) - mx);
  return mx + logf(block_sum(s, sh));
}

template <typename T>
__global__ void xent(float *losses, T *logits, const int32_t *targets, const float *dloss, int V, int ignore)
{
  __shared__ float sh[32];
  T *row = logits + (size_t)blockIdx.x * V;
  const int t = targets[blockIdx.x];
  const bool ignored = t == ignore;
  const float lse = row_lse(row, V, sh);
  const float tl = ignored ? 0.0f : ld(row, t); // read before the row is overwritten
  __syncthreads();
  if (threadIdx.x == 0 && losses)
    losses[blockIdx.x] = ignored ? 0.0f : lse - tl;
  if (!dloss)
    return;
  const float w = ignored ? 0.0f : dloss[blockIdx.x];
  for (int v = threadIdx.x; v < V; v += blockDim.x)
    st(row, v, (expf(ld(row, v) - lse) - (v == t ? 1.0f : 0.0f)) * w);
}

template <typename T> __global__ void target_lp(float *lp, const T *logits, const int32_t *targets, int V, int ignore)
{
  __shared__ float sh[32];
  const T *row = logits + (size_t)blockIdx.x * V;
  const int t = targets[blockIdx.x];
  const float lse = row_lse(row, V, sh);
  if (threadIdx.x == 0)
    lp[blockIdx.x] = t == ignore ? 0.0f : ld(row, t) - lse;
}

template <typename T> __global__ void lsm_fwd(float *out, const T *inp, int V)
{
  __shared__ float sh[32];
  const T *row = inp + (size_t)blockIdx.x * V;
  const float lse = row_lse(row, V, sh);
  for (int v = threadIdx.x; v < V; v += blockDim.x)
    out[(size_t)blockIdx.x * V + v] = ld(row, v) - lse;
}

template <typename T> __global__ void lsm_bwd(T *dinp, const float *out, const float *dout, int V)
{
  __shared__ float sh[32];
  const size_t row = (size_t)blockIdx.x * V;
  float s = 0;
  for (int v = threadIdx.x; v < V; v += blockDim.x)
    s += dout[row + v];
  s = block_sum(s, sh);
  for (int v = threadIdx.x; v < V; v += blockDim.x)
    st(dinp, row + v, ld(dinp, row + v) + dout[row + v] - expf(out[row + v]) * s);
}

constexpr int LN_ROWS_PER_BLOCK = 32;

} // namespace

extern "C" {

size_t moelm_cuda_layernorm_scratch_floats(int N, int C)
{
  const size_t blocks = ((size_t)N + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK;
  return 2 * (blocks > 0 ? blocks : 1) * (size_t)C;
}

int moelm_cuda_embedding_forward(MoelmCudaStream s, int dt, void *out, const int32_t *tokens, const int32_t *positions,
                                 const float *wte, const float *wpe, int N, int C, float scale)
{
  if (N <= 0)
    return 0;
  MOELM_CUDA_DISPATCH(dt, embed_fwd<T><<<N, ROW, 0, s>>>((T *)out, tokens, positions, wte, wpe, C, scale));
  return launch_status();
}

int moelm_cuda_embedding_backward(MoelmCudaStream s, int dt, float *dwte, float *dwpe, const void *dout,
                                  const int32_t *tokens, const int32_t *positions, int N, int C, float scale)
{
  if (N <= 0)
    return 0;
  MOELM_CUDA_DISPATCH(dt, embed_bwd<T><<<N, ROW, 0, s>>>(dwte, dwpe, (const T *)dout, tokens, positions, C, scale));
  return launch_status();
}

int moelm_cuda_layernorm_forward(MoelmCudaStream s, int dt, void *out, float *mean, float *rstd, const void *inp,
                                 const float *weight, const float *bias, int N, int C, float eps)
{
  if (N <= 0)
    return 0;
  MOELM_CUDA_DISPATCH(dt, ln_fwd<T><<<N, ROW, 0, s>>>((T *)out, mean, rstd, (const T *)inp, weight, bias, C, eps));
  return launch_status();
}

int moelm_cuda_layernorm_backward(MoelmCudaStream s, int dt, void *dinp, float *dweight, float *dbias,
                                  const void *dout, const void *inp, const float *weight, const float *mean,
                                  const float *rstd, int N, int C, float *scratch)
{
  if (N <= 0)
    return 0;
  const int blocks = (N + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK;
  float *pw = dweight ? scratch : nullptr, *pb = dbias ? scratch + (size_t)blocks * C : nullptr;
  MOELM_CUDA_DISPATCH(dt, ln_bwd<T><<<blocks, ROW, 0, s>>>((T *)dinp, pw, pb, (const T *)dout, (const T *)inp, weight,
                                                           mean, rstd, N, C, LN_ROWS_PER_BLOCK));
  const unsigned g = (unsigned)((C + 255) / 256);
  if (dweight)
    reduce_columns<<<g, 256, 0, s>>>(dweight, pw, blocks, C);
  if (dbias)
    reduce_columns<<<g, 256, 0, s>>>(dbias, pb, blocks, C);
  return launch_status();
}

int moelm_cuda_bias_add(MoelmCudaStream s, int dt, void *out, const float *bias, int N, int OC)
{
  const size_t n = (size_t)N * OC;
  if (n == 0)
    return 0;
  MOELM_CUDA_DISPATCH(dt, bias_add<T><<<grid_for(n, 256), 256, 0, s>>>((T *)out, bias, n, OC));
  return launch_status();
}

int moelm_cuda_bias_grad(MoelmCudaStream s, int dt, float *dbias, const void *dout, int N, int OC)
{
  if (OC <= 0)
    return 0;
  MOELM_CUDA_DISPATCH(dt, bias_grad<T><<<(OC + 127) / 128, 128, 0, s>>>(dbias, (const T *)dout, N, OC));
  return launch_status();
}

int moelm_cuda_gather_rows(MoelmCudaStream s, int dt, void *out, const void *inp, const int32_t *idx, int n, int C)
{
  if (n <= 0)
    return 0;
  MOELM_CUDA_DISPATCH(dt, gather<T><<<n, ROW, 0, s>>>((T *)out, (const T *)inp, idx, C));
  return launch_status();
}

int moelm_cuda_scatter_add_rows(MoelmCudaStream s, int dt, void *out, const void *inp, const int32_t *idx,
                                const float *weight, int n, int C)
{
  if (n <= 0)
    return 0;
  MOELM_CUDA_DISPATCH(dt, scatter<T><<<n, ROW, 0, s>>>((T *)out, (const T *)inp, idx, weight, C));
  return launch_status();
}

int moelm_cuda_scatter_add_rows_backward(MoelmCudaStream s, int dt, void *dinp, float *dweight, const void *dout,
                                         const void *inp, const int32_t *idx, const float *weight, int n, int C)
{
  if (n <= 0)
    return 0;
  MOELM_CUDA_DISPATCH(dt, scatter_bwd<T><<<n, ROW, 0, s>>>((T *)dinp, dweight, (const T *)dout, (const T *)inp, idx,
                                                           weight, C));
  return launch_status();
}

int moelm_cuda_cross_entropy(MoelmCudaStream s, int dt, float *losses, void *logits, const int32_t *targets,
                             const float *dloss, int N, int V, int ignore_index)
{
  if (N <= 0)
    return 0;
  MOELM_CUDA_DISPATCH(dt, xent<T><<<N, 512, 0, s>>>(losses, (T *)logits, targets, dloss, V, ignore_index));
  return launch_status();
}

int moelm_cuda_target_log_probs(MoelmCudaStream s, int dt, float *lprobs, const void *logits, const int32_t *targets,
                                int N, int V, int ignore_index)
{
  if (N <= 0)
    return 0;
  MOELM_CUDA_DISPATCH(dt, target_lp<T><<<N, 512, 0, s>>>(lprobs, (const T *)logits, targets, V, ignore_index));
  return launch_status();
}

int moelm_cuda_log_softmax_forward(MoelmCudaStream s, int dt, float *out, const void *inp, int N, int V)
{
  if (N <= 0)
    return 0;
  MOELM_CUDA_DISPATCH(dt, lsm_fwd<T><<<N, 256, 0, s>>>(out, (const T *)inp, V));
  return launch_status();
}

int moelm_cuda_log_softmax_backward(MoelmCudaStream s, int dt, void *dinp, const float *out, const float *dout, int N,
                                    int V)
{
  if (N <= 0)
    return 0;
  MOELM_CUDA_DISPATCH(dt, lsm_bwd<T><<<N, 256, 0, s>>>((T *)dinp, out, dout, V));
  return launch_status();
}

} // extern "C"
