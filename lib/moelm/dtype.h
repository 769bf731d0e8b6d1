/* moelm — element types (safetensors' names) and the float conversions every part shares:
 * fp32 <-> bf16 and fp32 <-> fp16, rounding to nearest even (NaN stays NaN), as PyTorch's
 * .to(torch.bfloat16) / .half() round. */
#ifndef MOELM_DTYPE_H
#define MOELM_DTYPE_H

#include <stdint.h>
#include <string.h>
#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  MOELM_DT_F32, MOELM_DT_F16, MOELM_DT_BF16, MOELM_DT_F64,
  MOELM_DT_I64, MOELM_DT_I32, MOELM_DT_I16, MOELM_DT_I8,
  MOELM_DT_U64, MOELM_DT_U32, MOELM_DT_U16, MOELM_DT_U8, MOELM_DT_BOOL
} MoelmDtype;

const char *moelm_dtype_name(MoelmDtype dt); /* "F32", ... as safetensors spells them */
gsize moelm_dtype_size(MoelmDtype dt);
gboolean moelm_dtype_is_valid(int dt);

static inline uint16_t moelm_f32_to_bf16(float f)
{
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet and a NaN */
    return (uint16_t)((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

static inline float moelm_bf16_to_f32(uint16_t h)
{
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* IEEE half precision; values beyond 65504 round to infinity, subnormals are kept. */
uint16_t moelm_f32_to_f16(float f);
float moelm_f16_to_f32(uint16_t h);

/* n elements of src (type `from`) to dst (type `to`); both must be one of F32, BF16, F16.
 * src and dst must not overlap unless they are the same type (then it is a copy). */
void moelm_convert_floats(void *dst, MoelmDtype to, const void *src, MoelmDtype from, size_t n);

G_END_DECLS

#endif
