/* moelm — element types: names, sizes, and the fp32/bf16/fp16 conversions. */
#include "config.h"

#include <math.h>

#include "moelm/dtype.h"

typedef struct {
  const char *name;
  gsize size;
} DtypeDesc;

/* Indexed by MoelmDtype. */
static const DtypeDesc dtypes[] = {
  [MOELM_DT_F32] = {"F32", 4},  [MOELM_DT_F16] = {"F16", 2}, [MOELM_DT_BF16] = {"BF16", 2},
  [MOELM_DT_F64] = {"F64", 8},  [MOELM_DT_I64] = {"I64", 8}, [MOELM_DT_I32] = {"I32", 4},
  [MOELM_DT_I16] = {"I16", 2},  [MOELM_DT_I8] = {"I8", 1},   [MOELM_DT_U64] = {"U64", 8},
  [MOELM_DT_U32] = {"U32", 4},  [MOELM_DT_U16] = {"U16", 2}, [MOELM_DT_U8] = {"U8", 1},
  [MOELM_DT_BOOL] = {"BOOL", 1},
};

gboolean moelm_dtype_is_valid(int dt) { return dt >= 0 && dt < (int)G_N_ELEMENTS(dtypes); }

const char *moelm_dtype_name(MoelmDtype dt) { return moelm_dtype_is_valid((int)dt) ? dtypes[dt].name : "?"; }

gsize moelm_dtype_size(MoelmDtype dt) { return moelm_dtype_is_valid((int)dt) ? dtypes[dt].size : 0; }

uint16_t moelm_f32_to_f16(float f)
{
  uint32_t u;
  memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) /* NaN */
    return (uint16_t)(sign | 0x7e00u);
  if (abs >= 0x477ff000u) /* rounds to >= 65520: infinity (also inf itself) */
    return (uint16_t)(sign | 0x7c00u);
  if (abs < 0x38800000u) { /* below 2^-14: a subnormal half (or zero) */
    if (abs < 0x33000000u) /* below half the smallest subnormal: zero */
      return (uint16_t)sign;
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - (int)(abs >> 23); /* 14 .. 24 */
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1u)))
      h++;
    return (uint16_t)(sign | h);
  }
  /* normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even */
  uint32_t h = ((abs >> 13) - (112u << 10));
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
    h++;
  return (uint16_t)(sign | h);
}

float moelm_f16_to_f32(uint16_t h)
{
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else { /* subnormal: mant * 2^-24 */
      float f = ldexpf((float)mant, -24);
      memcpy(&u, &f, 4);
      u |= sign;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

void moelm_convert_floats(void *dst, MoelmDtype to, const void *src, MoelmDtype from, size_t n)
{
  if (to == from) {
    if (dst != src && n > 0)
      memmove(dst, src, n * moelm_dtype_size(to));
    return;
  }
  float *df = dst;
  uint16_t *dh = dst;
  const float *sf = src;
  const uint16_t *sh = src;
  for (size_t i = 0; i < n; i++) {
    float v = from == MOELM_DT_F32 ? sf[i] : from == MOELM_DT_BF16 ? moelm_bf16_to_f32(sh[i]) : moelm_f16_to_f32(sh[i]);
    if (to == MOELM_DT_F32)
      df[i] = v;
    else
      dh[i] = to == MOELM_DT_BF16 ? moelm_f32_to_bf16(v) : moelm_f32_to_f16(v);
  }
}
