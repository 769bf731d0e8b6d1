// moelm — CUDA element-wise kernels: helpers, conversions, activations, dropout (Philox masks
// equal to the CPU's), the deterministic sum of squares, AdamW. All grid-stride loops of 256
// threads; each thread reads and writes consecutive elements across the warp (coalesced).
#include "cuda-common.cuh"
#include "cuda-internal.h"

namespace {

__global__ void fill_kernel(float *x, float v, size_t n)
{
  MOELM_CUDA_GRID_STRIDE(i, n) x[i] = v;
}

__global__ void axpy_kernel(float *y, float a, const float *x, size_t n)
{
  MOELM_CUDA_GRID_STRIDE(i, n) y[i] += a * x[i];
}

__global__ void scale_kernel(float *x, float a, size_t n)
{
  MOELM_CUDA_GRID_STRIDE(i, n) x[i] *= a;
}

template <typename T> __global__ void add_kernel(T *out, const T *a, const T *b, size_t n)
{
  MOELM_CUDA_GRID_STRIDE(i, n) st(out, i, ld(a, i) + ld(b, i));
}

template <typename D, typename S> __global__ void convert_kernel(D *dst, const S *src, size_t n)
{
  MOELM_CUDA_GRID_STRIDE(i, n) st(dst, i, ld(src, i));
}

// Block b sums x^2 over its fixed slice in double; a second pass adds the block partials in
// order: the same result for the same n whatever the timing.
__global__ void sumsq_partial_kernel(const float *x, size_t n, double *partials)
{
  __shared__ double s[256];
  const size_t per = (n + gridDim.x - 1) / gridDim.x, lo = per * blockIdx.x, hi = min(n, lo + per);
  double acc = 0;
  for (size_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
    acc += (double)x[i] * (double)x[i];
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w)
      s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0)
    partials[blockIdx.x] = s[0];
}

__global__ void sumsq_final_kernel(const double *partials, int n, double *out)
{
  double acc = 0;
  for (int i = 0; i < n; i++)
    acc += partials[i];
  *out = acc;
}

__device__ __forceinline__ float act_f(int act, float x)
{
  switch (act) {
  case 0: // relu
    return x > 0.0f ? x : 0.0f;
  case 1: // gelu, exact
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
  case 2: { // fairseq's tanh form
    const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
  }
  default:
    return tanhf(x);
  }
}

__device__ __forceinline__ float act_grad(int act, float x)
{
  switch (act) {
  case 0:
    return x > 0.0f ? 1.0f : 0.0f;
  case 1: {
    const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    return cdf + x * 0.3989422804014327f * expf(-0.5f * x * x);
  }
  case 2: {
    const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x), th = tanhf(u);
    const float du = 0.7978845608028654f * (1.0f + 3.0f * 0.044715f * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
  }
  default: {
    const float th = tanhf(x);
    return 1.0f - th * th;
  }
  }
}

template <typename T> __global__ void act_fwd_kernel(int act, T *out, const T *inp, size_t n)
{
  MOELM_CUDA_GRID_STRIDE(i, n) st(out, i, act_f(act, ld(inp, i)));
}

template <typename T> __global__ void act_bwd_kernel(int act, T *dinp, const T *inp, const T *dout, size_t n)
{
  MOELM_CUDA_GRID_STRIDE(i, n) st(dinp, i, ld(dinp, i) + ld(dout, i) * act_grad(act, ld(inp, i)));
}

template <typename T>
__global__ void dropout_fwd_kernel(T *out, const T *inp, size_t n, float p, uint64_t seed, uint32_t update,
                                   uint16_t layer, uint16_t site)
{
  MOELM_CUDA_GRID_STRIDE(i, n) st(out, i, ld(inp, i) * dropout_multiplier(seed, update, layer, site, i, p));
}

template <typename T>
__global__ void dropout_bwd_kernel(T *dinp, const T *dout, size_t n, float p, uint64_t seed, uint32_t update,
                                   uint16_t layer, uint16_t site)
{
  MOELM_CUDA_GRID_STRIDE(i, n)
  st(dinp, i, ld(dinp, i) + ld(dout, i) * dropout_multiplier(seed, update, layer, site, i, p));
}

// fairseq's Adam(W): decay first, then the bias-corrected step (step_size from the host).
__global__ void adam_kernel(float *param, const float *grad, float *m, float *v, size_t n, float b1, float b2,
                            float omb1, float omb2, float eps, float decay, float step_size, float grad_scale)
{
  MOELM_CUDA_GRID_STRIDE(i, n)
  {
    const float g = grad[i] * grad_scale;
    const float mi = b1 * m[i] + omb1 * g, vi = b2 * v[i] + omb2 * g * g;
    m[i] = mi;
    v[i] = vi;
    float p = param[i];
    if (decay != 0.0f)
      p -= decay * p;
    param[i] = p - step_size * mi / (sqrtf(vi) + eps);
  }
}

constexpr unsigned BLOCK = 256;

} // namespace

extern "C" {

int moelm_cuda_fill(MoelmCudaStream s, float *x, float value, size_t n)
{
  fill_kernel<<<grid_for(n, BLOCK), BLOCK, 0, s>>>(x, value, n);
  return launch_status();
}

int moelm_cuda_axpy(MoelmCudaStream s, float *y, float alpha, const float *x, size_t n)
{
  axpy_kernel<<<grid_for(n, BLOCK), BLOCK, 0, s>>>(y, alpha, x, n);
  return launch_status();
}

int moelm_cuda_scale(MoelmCudaStream s, float *x, float alpha, size_t n)
{
  scale_kernel<<<grid_for(n, BLOCK), BLOCK, 0, s>>>(x, alpha, n);
  return launch_status();
}

int moelm_cuda_sum_squares(MoelmCudaStream s, const float *x, size_t n, double *scratch, double *out)
{
  sumsq_partial_kernel<<<MOELM_CUDA_SUMSQ_BLOCKS, 256, 0, s>>>(x, n, scratch);
  sumsq_final_kernel<<<1, 1, 0, s>>>(scratch, MOELM_CUDA_SUMSQ_BLOCKS, out);
  return launch_status();
}

int moelm_cuda_convert(MoelmCudaStream s, void *dst, int dst_type, const void *src, int src_type, size_t n)
{
  if (dst_type == src_type) {
    const size_t elem = dst_type == MOELM_CUDA_F32 ? 4 : 2;
    return dst == src ? 0 : (int)cudaMemcpyAsync(dst, src, n * elem, cudaMemcpyDeviceToDevice, s);
  }
  const unsigned g = grid_for(n, BLOCK);
  if (src_type == MOELM_CUDA_F32) {
    MOELM_CUDA_DISPATCH(dst_type, convert_kernel<T, float><<<g, BLOCK, 0, s>>>((T *)dst, (const float *)src, n));
  } else if (dst_type == MOELM_CUDA_F32) {
    MOELM_CUDA_DISPATCH(src_type, convert_kernel<float, T><<<g, BLOCK, 0, s>>>((float *)dst, (const T *)src, n));
  } else if (dst_type == MOELM_CUDA_BF16) {
    convert_kernel<__nv_bfloat16, __half><<<g, BLOCK, 0, s>>>((__nv_bfloat16 *)dst, (const __half *)src, n);
  } else {
    convert_kernel<__half, __nv_bfloat16><<<g, BLOCK, 0, s>>>((__half *)dst, (const __nv_bfloat16 *)src, n);
  }
  return launch_status();
}

int moelm_cuda_add(MoelmCudaStream s, int dt, void *out, const void *a, const void *b, size_t n)
{
  MOELM_CUDA_DISPATCH(dt, add_kernel<T><<<grid_for(n, BLOCK), BLOCK, 0, s>>>((T *)out, (const T *)a, (const T *)b, n));
  return launch_status();
}

int moelm_cuda_activation_forward(MoelmCudaStream s, int dt, int act, void *out, const void *inp, size_t n)
{
  MOELM_CUDA_DISPATCH(dt, act_fwd_kernel<T><<<grid_for(n, BLOCK), BLOCK, 0, s>>>(act, (T *)out, (const T *)inp, n));
  return launch_status();
}

int moelm_cuda_activation_backward(MoelmCudaStream s, int dt, int act, void *dinp, const void *inp, const void *dout,
                                   size_t n)
{
  MOELM_CUDA_DISPATCH(dt, act_bwd_kernel<T><<<grid_for(n, BLOCK), BLOCK, 0, s>>>(act, (T *)dinp, (const T *)inp,
                                                                                 (const T *)dout, n));
  return launch_status();
}

int moelm_cuda_dropout_forward(MoelmCudaStream s, int dt, void *out, const void *inp, size_t n, float p,
                               uint64_t seed, uint32_t update, uint16_t layer, uint16_t site)
{
  MOELM_CUDA_DISPATCH(dt, dropout_fwd_kernel<T><<<grid_for(n, BLOCK), BLOCK, 0, s>>>((T *)out, (const T *)inp, n, p,
                                                                                     seed, update, layer, site));
  return launch_status();
}

int moelm_cuda_dropout_backward(MoelmCudaStream s, int dt, void *dinp, const void *dout, size_t n, float p,
                                uint64_t seed, uint32_t update, uint16_t layer, uint16_t site)
{
  MOELM_CUDA_DISPATCH(dt, dropout_bwd_kernel<T><<<grid_for(n, BLOCK), BLOCK, 0, s>>>((T *)dinp, (const T *)dout, n, p,
                                                                                     seed, update, layer, site));
  return launch_status();
}

int moelm_cuda_adam(MoelmCudaStream s, float *param, const float *grad, float *m, float *v, size_t n, float lr,
                    float beta1, float beta2, float one_minus_beta1, float one_minus_beta2, float eps, float decay,
                    float step_size, float grad_scale)
{
  adam_kernel<<<grid_for(n, BLOCK), BLOCK, 0, s>>>(param, grad, m, v, n, beta1, beta2, one_minus_beta1,
                                                   one_minus_beta2, eps, decay, step_size, grad_scale);
  return launch_status();
}

} // extern "C"
