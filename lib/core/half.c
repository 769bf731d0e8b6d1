/* moelm — fp16 / bf16 <-> fp32 on the host (bit manipulation, no hardware conversion needed). */
#include "config.h"

#include <string.h>

#include "moelm/half.h"

static uint32_t float_bits(float f)
{
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float bits_float(uint32_t u)
{
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

float moelm_half_to_float(uint16_t h)
{
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp == 0x1f) /* inf / NaN */
    return bits_float(sign | 0x7f800000u | mant << 13);
  if (exp != 0)
    return bits_float(sign | (exp + 112) << 23 | mant << 13);
  /* subnormal (or zero): mant * 2^-24 is exact in fp32 */
  const float v = (float)mant * (1.0f / 16777216.0f);
  return sign ? -v : v;
}

uint16_t moelm_float_to_half(float f)
{
  const uint32_t u = float_bits(f), sign = (u >> 16) & 0x8000;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) /* NaN: keep it quiet and non-zero */
    return (uint16_t)(sign | 0x7e00 | ((abs >> 13) & 0x3ff));
  if (abs >= 0x477ff000u) /* rounds to or beyond 65520: infinity */
    return (uint16_t)(sign | 0x7c00);
  if (abs < 0x38800000u) { /* below 2^-14: subnormal half, round to nearest even at 2^-24 */
    const float v = bits_float(abs) * 16777216.0f; /* exact: a power-of-two scaling */
    uint32_t m = (uint32_t)v;
    const float rest = v - (float)m;
    if (rest > 0.5f || (rest == 0.5f && (m & 1)))
      m++;
    return (uint16_t)(sign | m); /* m == 0x400 carries into the smallest normal: still right */
  }
  uint32_t r = abs - 0x38000000u; /* rebias the exponent: 127 - 15 = 112 (<< 23) */
  r += 0x0fffu + ((r >> 13) & 1); /* round to nearest even on the 13 dropped bits */
  return (uint16_t)(sign | (r >> 13));
}

float moelm_bf16_to_float(uint16_t b) { return bits_float((uint32_t)b << 16); }

uint16_t moelm_float_to_bf16(float f)
{
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}

void moelm_half_to_float_n(const void *src, float *dst, size_t n)
{
  const unsigned char *p = src;
  for (size_t i = 0; i < n; i++)
    dst[i] = moelm_half_to_float((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
}

void moelm_bf16_to_float_n(const void *src, float *dst, size_t n)
{
  const unsigned char *p = src;
  for (size_t i = 0; i < n; i++)
    dst[i] = moelm_bf16_to_float((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
}
