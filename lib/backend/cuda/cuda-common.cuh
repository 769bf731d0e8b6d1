// moelm — what the CUDA kernels share: activation loads/stores in the three storage types,
// Philox (the same words as lib/core/rng.c, so CPU and GPU draw the same dropout masks), the
// dtype dispatch and launch helpers. CUDA C++, included by the .cu files only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

// MoelmDtype values (lib/moelm/dtype.h), as the launchers receive them.
enum { MOELM_CUDA_F32 = 0, MOELM_CUDA_F16 = 1, MOELM_CUDA_BF16 = 2 };

template <typename T> __device__ __forceinline__ float ld(const T *p, size_t i);
template <> __device__ __forceinline__ float ld<float>(const float *p, size_t i) { return p[i]; }
template <> __device__ __forceinline__ float ld<__nv_bfloat16>(const __nv_bfloat16 *p, size_t i)
{
  return __bfloat162float(p[i]);
}
template <> __device__ __forceinline__ float ld<__half>(const __half *p, size_t i) { return __half2float(p[i]); }

template <typename T> __device__ __forceinline__ void st(T *p, size_t i, float v);
template <> __device__ __forceinline__ void st<float>(float *p, size_t i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<__nv_bfloat16>(__nv_bfloat16 *p, size_t i, float v)
{
  p[i] = __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ void st<__half>(__half *p, size_t i, float v) { p[i] = __float2half_rn(v); }

// Philox 4x32-10, as moelm_philox4x32_10 / moelm_philox_word.
__device__ __forceinline__ uint32_t philox_word(uint64_t seed, uint32_t update, uint16_t layer, uint16_t site,
                                                uint64_t i)
{
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  const uint64_t block = i >> 2;
  uint32_t c0 = (uint32_t)block, c1 = (uint32_t)(block >> 32), c2 = update, c3 = ((uint32_t)layer << 16) | site;
#pragma unroll
  for (int round = 0; round < 10; round++) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  const uint32_t w[4] = {c0, c1, c2, c3};
  return w[i & 3];
}

__device__ __forceinline__ float dropout_multiplier(uint64_t seed, uint32_t update, uint16_t layer, uint16_t site,
                                                    uint64_t i, float p)
{
  if (p == 0.0f)
    return 1.0f;
  const float u = (float)(philox_word(seed, update, layer, site, i) >> 8) * (1.0f / 16777216.0f);
  return u >= p ? 1.0f / (1.0f - p) : 0.0f;
}

// Grid-stride launch over n elements.
static inline unsigned grid_for(size_t n, unsigned block)
{
  size_t g = (n + block - 1) / block;
  return (unsigned)(g < 65535 * 16 ? (g > 0 ? g : 1) : 65535 * 16);
}

#define MOELM_CUDA_GRID_STRIDE(i, n)                                                                                 \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)blockDim.x * gridDim.x)

// Run the statement(s) after `dt` with T bound to the storage type of dtype `dt` (variadic:
// a kernel launch's <<<grid, block, shared, stream>>> has commas).
#define MOELM_CUDA_DISPATCH(dt, ...)                                                                                 \
  do {                                                                                                               \
    if ((dt) == MOELM_CUDA_BF16) {                                                                                   \
      typedef __nv_bfloat16 T;                                                                                       \
      __VA_ARGS__;                                                                                                   \
    } else if ((dt) == MOELM_CUDA_F16) {                                                                             \
      typedef __half T;                                                                                              \
      __VA_ARGS__;                                                                                                   \
    } else {                                                                                                         \
      typedef float T;                                                                                               \
      __VA_ARGS__;                                                                                                   \
    }                                                                                                                \
  } while (0)

static inline int launch_status(void) { return (int)cudaGetLastError(); }

// Block-wide sum of a float (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v, float *shared32)
{
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0)
    shared32[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = lane < warps ? shared32[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float block_max(float v, float *shared32)
{
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0)
    shared32[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = lane < warps ? shared32[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
