// moelm — CUDA causal self-attention, the straightforward way first: one block of 128 threads
// per (batch row, head, query). The block computes the query's scores against its visible
// keys into shared memory (T floats), the softmax, saves the pre-dropout probabilities for the
// backward (B·NH·T·T floats, as the CPU backends do), applies the Philox dropout of the
// probabilities (index ((b·NH + h)·T + t)·T + s, the CPU's) and writes probs @ v. The
// backward recomputes the masks; the keys' and values' gradients collect contributions from
// every query, so they are summed in an fp32 scratch (atomics) and added to dqkv afterwards.
// A flash-style kernel (no T×T buffer) is issue 10's fast path and is not written yet.
#include "cuda-common.cuh"
#include "cuda-internal.h"

namespace {

constexpr unsigned ATT_THREADS = 128;

__device__ __forceinline__ bool visible(const uint8_t *kpm, int b, int T, int s) { return !kpm || !kpm[(size_t)b * T + s]; }

template <typename T>
__global__ void att_fwd(T *out, float *saved, const T *qkv, const uint8_t *kpm, int Tn, int C, int NH, float p,
                        uint64_t seed, uint32_t update, uint16_t layer, uint16_t site)
{
  extern __shared__ float sc[]; // (Tn) scores, then probabilities
  __shared__ float red[32];
  const int t = blockIdx.x % Tn, h = (blockIdx.x / Tn) % NH, b = blockIdx.x / (Tn * NH);
  const int hs = C / NH;
  const float scale = rsqrtf((float)hs);
  const size_t row3 = (size_t)3 * C;
  const T *q = qkv + ((size_t)b * Tn + t) * row3 + (size_t)h * hs;
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < Tn; s += blockDim.x) {
    float v = -INFINITY;
    if (s <= t && visible(kpm, b, Tn, s)) {
      const T *k = qkv + ((size_t)b * Tn + s) * row3 + C + (size_t)h * hs;
      float dot = 0;
      for (int d = 0; d < hs; d++)
        dot += ld(q, d) * ld(k, d);
      v = dot * scale;
    }
    sc[s] = v;
    mx = fmaxf(mx, v);
  }
  mx = block_max(mx, red);
  float sum = 0;
  for (int s = threadIdx.x; s < Tn; s += blockDim.x) {
    const float e = mx == -INFINITY || sc[s] == -INFINITY ? 0.0f : expf(sc[s] - mx);
    sc[s] = e;
    sum += e;
  }
  sum = block_sum(sum, red);
  const float inv = sum > 0 ? 1.0f / sum : 0.0f;
  const size_t base = (((size_t)b * NH + h) * Tn + t) * Tn;
  for (int s = threadIdx.x; s < Tn; s += blockDim.x) {
    const float pr = sc[s] * inv;
    if (saved)
      saved[base + s] = pr;
    sc[s] = pr * dropout_multiplier(seed, update, layer, site, base + s, p);
  }
  __syncthreads();
  T *o = out + ((size_t)b * Tn + t) * C + (size_t)h * hs;
  for (int d = threadIdx.x; d < hs; d += blockDim.x) {
    float acc = 0;
    for (int s = 0; s <= t; s++)
      if (sc[s] != 0.0f)
        acc += sc[s] * ld(qkv + ((size_t)b * Tn + s) * row3 + 2 * C + (size_t)h * hs, d);
    st(o, d, acc);
  }
}

// One block per (b, h, t): dq directly; dk, dv into the fp32 scratch dkv (B, T, 2C).
template <typename T>
__global__ void att_bwd(T *dqkv, float *dkv, const T *dout, const T *qkv, const float *saved, int Tn, int C, int NH,
                        float p, uint64_t seed, uint32_t update, uint16_t layer, uint16_t site)
{
  extern __shared__ float sh[]; // (Tn) dP, then dscore
  __shared__ float red[32];
  const int t = blockIdx.x % Tn, h = (blockIdx.x / Tn) % NH, b = blockIdx.x / (Tn * NH);
  const int hs = C / NH;
  const float scale = rsqrtf((float)hs);
  const size_t row3 = (size_t)3 * C, base = (((size_t)b * NH + h) * Tn + t) * Tn;
  const float *P = saved + base;
  const T *g = dout + ((size_t)b * Tn + t) * C + (size_t)h * hs;
  const T *q = qkv + ((size_t)b * Tn + t) * row3 + (size_t)h * hs;
  float dot_pdp = 0;
  for (int s = threadIdx.x; s <= t; s += blockDim.x) {
    const float m = dropout_multiplier(seed, update, layer, site, base + s, p);
    const T *v = qkv + ((size_t)b * Tn + s) * row3 + 2 * C + (size_t)h * hs;
    float dpd = 0;
    for (int d = 0; d < hs; d++)
      dpd += ld(g, d) * ld(v, d);
    // dV[s] += (P[s] m) dout
    if (P[s] * m != 0.0f) {
      float *dv = dkv + ((size_t)b * Tn + s) * 2 * C + C + (size_t)h * hs;
      for (int d = 0; d < hs; d++)
        atomicAdd(dv + d, P[s] * m * ld(g, d));
    }
    const float dp = dpd * m;
    sh[s] = dp;
    dot_pdp += P[s] * dp;
  }
  dot_pdp = block_sum(dot_pdp, red);
  for (int s = threadIdx.x; s <= t; s += blockDim.x)
    sh[s] = P[s] * (sh[s] - dot_pdp);
  __syncthreads();
  // dq = scale Σ_s ds[s] k[s]; dk[s] += scale ds[s] q
  T *dq = dqkv + ((size_t)b * Tn + t) * row3 + (size_t)h * hs;
  for (int d = threadIdx.x; d < hs; d += blockDim.x) {
    float acc = 0;
    for (int s = 0; s <= t; s++)
      if (sh[s] != 0.0f)
        acc += sh[s] * ld(qkv + ((size_t)b * Tn + s) * row3 + C + (size_t)h * hs, d);
    st(dq, d, ld(dq, d) + scale * acc);
  }
  for (int s = threadIdx.x; s <= t; s += blockDim.x)
    if (sh[s] != 0.0f) {
      float *dk = dkv + ((size_t)b * Tn + s) * 2 * C + (size_t)h * hs;
      for (int d = 0; d < hs; d++)
        atomicAdd(dk + d, scale * sh[s] * ld(q, d));
    }
}

// dqkv's k and v columns += the fp32 sums.
template <typename T> __global__ void add_kv(T *dqkv, const float *dkv, size_t rows, int C)
{
  MOELM_CUDA_GRID_STRIDE(i, rows * 2 * C)
  {
    const size_t r = i / (2 * C), c = i % (2 * C);
    const size_t at = r * 3 * C + C + c;
    st(dqkv, at, ld(dqkv, at) + dkv[i]);
  }
}

template <typename T>
__global__ void att_decode(T *out, const T *q, const T *kc, const T *vc, const uint8_t *kpm, int Tq, int Tk, int Tcap,
                           int C, int NH)
{
  extern __shared__ float sc[]; // (Tk)
  __shared__ float red[32];
  const int i = blockIdx.x % Tq, h = (blockIdx.x / Tq) % NH, b = blockIdx.x / (Tq * NH);
  const int hs = C / NH, last = Tk - Tq + i;
  const float scale = rsqrtf((float)hs);
  const T *qr = q + ((size_t)b * Tq + i) * C + (size_t)h * hs;
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < Tk; s += blockDim.x) {
    float v = -INFINITY;
    if (s <= last && (!kpm || !kpm[(size_t)b * Tk + s])) {
      const T *k = kc + ((size_t)b * Tcap + s) * C + (size_t)h * hs;
      float dot = 0;
      for (int d = 0; d < hs; d++)
        dot += ld(qr, d) * ld(k, d);
      v = dot * scale;
    }
    sc[s] = v;
    mx = fmaxf(mx, v);
  }
  mx = block_max(mx, red);
  float sum = 0;
  for (int s = threadIdx.x; s < Tk; s += blockDim.x) {
    const float e = mx == -INFINITY || sc[s] == -INFINITY ? 0.0f : expf(sc[s] - mx);
    sc[s] = e;
    sum += e;
  }
  sum = block_sum(sum, red);
  const float inv = sum > 0 ? 1.0f / sum : 0.0f;
  __syncthreads();
  T *o = out + ((size_t)b * Tq + i) * C + (size_t)h * hs;
  for (int d = threadIdx.x; d < hs; d += blockDim.x) {
    float acc = 0;
    for (int s = 0; s <= last && s < Tk; s++)
      if (sc[s] != 0.0f)
        acc += sc[s] * inv * ld(vc + ((size_t)b * Tcap + s) * C + (size_t)h * hs, d);
    st(o, d, acc);
  }
}

} // namespace

extern "C" {

int moelm_cuda_attention_forward(MoelmCudaStream s, int dt, void *out, float *saved, const void *qkv,
                                 const uint8_t *kpm, int B, int Tlen, int C, int NH, float p, uint64_t seed,
                                 uint32_t update, uint16_t layer, uint16_t site)
{
  if (B <= 0 || Tlen <= 0)
    return 0;
  const size_t shared = (size_t)Tlen * sizeof(float);
  MOELM_CUDA_DISPATCH(dt, {
    void (*kern)(T *, float *, const T *, const uint8_t *, int, int, int, float, uint64_t, uint32_t, uint16_t,
                 uint16_t) = att_fwd<T>;
    if (shared > 48 * 1024)
      cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared);
    kern<<<(unsigned)((size_t)B * NH * Tlen), ATT_THREADS, shared, s>>>((T *)out, saved, (const T *)qkv, kpm, Tlen,
                                                                           C, NH, p, seed, update, layer, site);
  });
  return launch_status();
}

int moelm_cuda_attention_backward(MoelmCudaStream s, int dt, void *dqkv, const void *dout, const void *qkv,
                                  const float *saved, const uint8_t *kpm, int B, int Tlen, int C, int NH, float p,
                                  uint64_t seed, uint32_t update, uint16_t layer, uint16_t site)
{
  if (B <= 0 || Tlen <= 0)
    return 0;
  (void)kpm; /* the saved probabilities are zero where a key is masked */
  const size_t rows = (size_t)B * Tlen, shared = (size_t)Tlen * sizeof(float);
  float *dkv = nullptr;
  int rc = (int)cudaMallocAsync((void **)&dkv, rows * 2 * C * sizeof(float), s);
  if (rc != 0)
    return rc;
  cudaMemsetAsync(dkv, 0, rows * 2 * C * sizeof(float), s);
  MOELM_CUDA_DISPATCH(dt, {
    void (*kern)(T *, float *, const T *, const T *, const float *, int, int, int, float, uint64_t, uint32_t,
                 uint16_t, uint16_t) = att_bwd<T>;
    if (shared > 48 * 1024)
      cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared);
    kern<<<(unsigned)((size_t)B * NH * Tlen), ATT_THREADS, shared, s>>>((T *)dqkv, dkv, (const T *)dout,
                                                                           (const T *)qkv, saved, Tlen, C, NH, p, seed,
                                                                           update, layer, site);
    add_kv<T><<<grid_for(rows * 2 * C, 256), 256, 0, s>>>((T *)dqkv, dkv, rows, C);
  });
  rc = launch_status();
  cudaFreeAsync(dkv, s);
  return rc;
}

int moelm_cuda_attention_decode(MoelmCudaStream s, int dt, void *out, const void *q, const void *k_cache,
                                const void *v_cache, const uint8_t *kpm, int B, int Tq, int Tk, int Tcap, int C, int NH)
{
  if (B <= 0 || Tq <= 0)
    return 0;
  const size_t shared = (size_t)Tk * sizeof(float);
  MOELM_CUDA_DISPATCH(dt, {
    void (*kern)(T *, const T *, const T *, const T *, const uint8_t *, int, int, int, int, int) = att_decode<T>;
    if (shared > 48 * 1024)
      cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared);
    kern<<<(unsigned)((size_t)B * NH * Tq), ATT_THREADS, shared, s>>>(
        (T *)out, (const T *)q, (const T *)k_cache, (const T *)v_cache, kpm, Tq, Tk, Tcap, C, NH);
  });
  return launch_status();
}

} // extern "C"
