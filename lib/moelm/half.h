/* moelm — IEEE half (fp16) and bfloat16 conversions on the host: checkpoints store either,
 * the CPU computes in fp32. float → half/bf16 rounds to nearest even; NaN stays NaN. */
#ifndef MOELM_HALF_H
#define MOELM_HALF_H

#include <stddef.h>
#include <stdint.h>

float moelm_half_to_float(uint16_t h);
uint16_t moelm_float_to_half(float f);
float moelm_bf16_to_float(uint16_t b);
uint16_t moelm_float_to_bf16(float f);

/* n values from possibly unaligned little-endian bytes to floats. */
void moelm_half_to_float_n(const void *src, float *dst, size_t n);
void moelm_bf16_to_float_n(const void *src, float *dst, size_t n);

#endif
