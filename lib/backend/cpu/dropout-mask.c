/* moelm — dropout multipliers from Philox4x32-10, eight counter blocks at a time with AVX2
 * (the scalar moelm_philox4x32_10 is the definition; the tests hold the two together). */
#include "config.h"

#include <string.h>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#include "backend/cpu/cpu-internal.h"

/* Scalar: multipliers for elements [i, i + n) that lie in one block (n <= 4 - i % 4). */
static void block_scalar(float *mult, MoelmPhiloxKey key, uint32_t update, uint32_t stream, float p, float keep,
                         uint64_t i, size_t n)
{
  uint64_t block = i >> 2;
  MoelmPhiloxCtr ctr = {{(uint32_t)block, (uint32_t)(block >> 32), update, stream}};
  MoelmPhiloxCtr words = moelm_philox4x32_10(ctr, key);
  for (size_t k = 0; k < n; k++)
    mult[k] = moelm_u32_to_unit_float(words.v[(i & 3) + k]) >= p ? keep : 0.0f;
}

#ifdef __AVX2__
/* (hi, lo) halves of the 32x32-bit products a * m in each of the 8 lanes. */
static inline void mulhilo8(__m256i a, __m256i m, __m256i *hi, __m256i *lo)
{
  __m256i even = _mm256_mul_epu32(a, m);
  __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

static inline __m256 keep8(__m256i words, __m256 p, __m256 keep)
{
  __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(words, 8)), _mm256_set1_ps(1.0f / 16777216.0f));
  return _mm256_and_ps(_mm256_cmp_ps(u, p, _CMP_GE_OQ), keep);
}

/* 32 multipliers for the 8 blocks starting at `block` (same high counter word). */
static void blocks8(float *mult, MoelmPhiloxKey key, uint32_t update, uint32_t stream, __m256 vp, __m256 vkeep,
                    uint64_t block)
{
  __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)block), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i c1 = _mm256_set1_epi32((int)(uint32_t)(block >> 32));
  __m256i c2 = _mm256_set1_epi32((int)update);
  __m256i c3 = _mm256_set1_epi32((int)stream);
  const __m256i m0 = _mm256_set1_epi32((int)0xD2511F53u), m1 = _mm256_set1_epi32((int)0xCD9E8D57u);
  uint32_t k0 = key.v[0], k1 = key.v[1];
  for (int round = 0; round < 10; round++) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    __m256i hi0, lo0, hi1, lo1;
    mulhilo8(c0, m0, &hi0, &lo0);
    mulhilo8(c2, m1, &hi1, &lo1);
    __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32((int)k0));
    __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32((int)k1));
    c0 = n0, c1 = lo1, c2 = n2, c3 = lo0;
  }
  /* lane j holds word w of block j in c_w; the output wants element 4j + w */
  __m256 w0 = keep8(c0, vp, vkeep), w1 = keep8(c1, vp, vkeep), w2 = keep8(c2, vp, vkeep), w3 = keep8(c3, vp, vkeep);
  __m256 t0 = _mm256_unpacklo_ps(w0, w1), t1 = _mm256_unpackhi_ps(w0, w1);
  __m256 t2 = _mm256_unpacklo_ps(w2, w3), t3 = _mm256_unpackhi_ps(w2, w3);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)); /* blocks 0 | 4 */
  __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)); /* blocks 1 | 5 */
  __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)); /* blocks 2 | 6 */
  __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2)); /* blocks 3 | 7 */
  _mm256_storeu_ps(mult, _mm256_permute2f128_ps(u0, u1, 0x20));
  _mm256_storeu_ps(mult + 8, _mm256_permute2f128_ps(u2, u3, 0x20));
  _mm256_storeu_ps(mult + 16, _mm256_permute2f128_ps(u0, u1, 0x31));
  _mm256_storeu_ps(mult + 24, _mm256_permute2f128_ps(u2, u3, 0x31));
}
#endif

void moelm_dropout_fill_multipliers(float *mult, const MoelmDropoutIds *ids, float p, uint64_t i0, size_t n)
{
  float keep = moelm_dropout_multiplier(p);
  MoelmPhiloxKey key = {{(uint32_t)ids->seed, (uint32_t)(ids->seed >> 32)}};
  uint32_t stream = ((uint32_t)ids->layer << 16) | ids->site;
  size_t done = 0;
#ifdef __AVX2__
  /* Groups of 8 blocks (32 elements) from the block holding i0; a group that sticks out of
   * [i0, i0 + n) at either end is computed whole into `part` and only its overlap copied:
   * cheaper than the scalar blocks it replaces. */
  __m256 vp = _mm256_set1_ps(p), vkeep = _mm256_set1_ps(keep);
  float part[32];
  while (done < n) {
    uint64_t i = i0 + done;
    uint64_t block = i >> 2;
    if ((uint32_t)block > UINT32_MAX - 7) /* the 8 blocks would not share the high counter word */
      break;
    size_t skip = (size_t)(i & 3), len = n - done < 32 - skip ? n - done : 32 - skip;
    if (skip == 0 && len == 32) {
      blocks8(mult + done, key, ids->update, stream, vp, vkeep, block);
    } else {
      blocks8(part, key, ids->update, stream, vp, vkeep, block);
      memcpy(mult + done, part + skip, len * sizeof(float));
    }
    done += len;
  }
#endif
  while (done < n) {
    uint64_t i = i0 + done;
    size_t len = n - done < 4 - (i & 3) ? n - done : 4 - (i & 3);
    block_scalar(mult + done, key, ids->update, stream, p, keep, i, len);
    done += len;
  }
}
