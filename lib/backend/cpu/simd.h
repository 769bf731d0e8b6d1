/* moelm — small vector helpers for the fast CPU path. AVX2/FMA when the compiler targets
 * it (the build uses -march=x86-64-v3), plain loops otherwise; every helper handles any
 * length (the tail is done element by element). */
#ifndef MOELM_CPU_SIMD_H
#define MOELM_CPU_SIMD_H

#include <math.h>
#include <stddef.h>

#ifdef __AVX2__
#include <immintrin.h>

static inline float moelm_hsum8(__m256 v)
{
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline float moelm_hmax8(__m256 v)
{
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* exp(x) for 8 floats: range reduction by ln 2 (split in two constants), a degree-6
 * polynomial, then scaling by 2^n through the exponent bits. About 2 ulp; inputs below
 * -87.3 give 0 (or a tiny value), which is what masked softmax entries need. */
static inline __m256 moelm_exp8(__m256 x)
{
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  /* 2^n, split in two factors so n = -127 or 128 (clamped inputs) stays representable */
  __m256i ni = _mm256_cvtps_epi32(n);
  __m256i half = _mm256_srai_epi32(ni, 1);
  __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
  __m256 p2 = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
  return _mm256_mul_ps(_mm256_mul_ps(y, p1), p2);
}
#endif

/* sum_i a[i] * b[i] */
static inline float moelm_vdot(const float *a, const float *b, int n)
{
  int i = 0;
  float sum = 0.0f;
#ifdef __AVX2__
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8)
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  sum = moelm_hsum8(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; i++)
    sum += a[i] * b[i];
  return sum;
}

/* y[i] += alpha * x[i] */
static inline void moelm_vaxpy(float *y, float alpha, const float *x, int n)
{
  int i = 0;
#ifdef __AVX2__
  __m256 va = _mm256_set1_ps(alpha);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
  for (; i < n; i++)
    y[i] += alpha * x[i];
}

/* max_i x[i] (-INFINITY for n == 0) */
static inline float moelm_vmax(const float *x, int n)
{
  int i = 0;
  float max = -INFINITY;
#ifdef __AVX2__
  __m256 m = _mm256_set1_ps(-INFINITY);
  for (; i + 8 <= n; i += 8)
    m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  max = moelm_hmax8(m);
#endif
  for (; i < n; i++)
    max = x[i] > max ? x[i] : max;
  return max;
}

/* out[i] = exp(x[i] - shift) (out may alias x); returns the sum of the outputs. */
static inline float moelm_vexp_shift_sum(float *out, const float *x, float shift, int n)
{
  int i = 0;
  float sum = 0.0f;
#ifdef __AVX2__
  __m256 vs = _mm256_set1_ps(shift), acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    __m256 e = moelm_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs));
    _mm256_storeu_ps(out + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  sum = moelm_hsum8(acc);
#endif
  for (; i < n; i++) {
    out[i] = expf(x[i] - shift);
    sum += out[i];
  }
  return sum;
}

/* sum_i exp(x[i] - shift), nothing written. */
static inline float moelm_vsum_exp_shift(const float *x, float shift, int n)
{
  int i = 0;
  float sum = 0.0f;
#ifdef __AVX2__
  __m256 vs = _mm256_set1_ps(shift), acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_add_ps(acc0, moelm_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs)));
    acc1 = _mm256_add_ps(acc1, moelm_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vs)));
  }
  for (; i + 8 <= n; i += 8)
    acc0 = _mm256_add_ps(acc0, moelm_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs)));
  sum = moelm_hsum8(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; i++)
    sum += expf(x[i] - shift);
  return sum;
}

/* out[i] = scale * exp(x[i] - shift) (out may alias x). */
static inline void moelm_vexp_shift_scale(float *out, const float *x, float shift, float scale, int n)
{
  int i = 0;
#ifdef __AVX2__
  __m256 vs = _mm256_set1_ps(shift), vk = _mm256_set1_ps(scale);
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(vk, moelm_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs))));
#endif
  for (; i < n; i++)
    out[i] = scale * expf(x[i] - shift);
}

/* out[i] = a[i] * b[i] (out may alias a or b) */
static inline void moelm_vmul(float *out, const float *a, const float *b, size_t n)
{
  size_t i = 0;
#ifdef __AVX2__
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
#endif
  for (; i < n; i++)
    out[i] = a[i] * b[i];
}

/* out[i] += a[i] * b[i] */
static inline void moelm_vmul_add(float *out, const float *a, const float *b, size_t n)
{
  size_t i = 0;
#ifdef __AVX2__
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i,
                     _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), _mm256_loadu_ps(out + i)));
#endif
  for (; i < n; i++)
    out[i] += a[i] * b[i];
}

/* out[i] = max(x[i], 0) (out may alias x) */
static inline void moelm_vrelu(float *out, const float *x, size_t n)
{
  size_t i = 0;
#ifdef __AVX2__
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_max_ps(_mm256_loadu_ps(x + i), _mm256_setzero_ps()));
#endif
  for (; i < n; i++)
    out[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dinp[i] += x[i] > 0 ? dout[i] : 0 */
static inline void moelm_vrelu_backward(float *dinp, const float *x, const float *dout, size_t n)
{
  size_t i = 0;
#ifdef __AVX2__
  for (; i + 8 <= n; i += 8) {
    __m256 pos = _mm256_cmp_ps(_mm256_loadu_ps(x + i), _mm256_setzero_ps(), _CMP_GT_OQ);
    _mm256_storeu_ps(dinp + i, _mm256_add_ps(_mm256_loadu_ps(dinp + i), _mm256_and_ps(pos, _mm256_loadu_ps(dout + i))));
  }
#endif
  for (; i < n; i++)
    dinp[i] += x[i] > 0.0f ? dout[i] : 0.0f;
}

#endif
