/* moelm — counter-based random numbers: Philox 4x32-10 (Salmon et al., SC'11).
 * A draw is a pure function of (key, counter), so CPU and GPU, any thread and any rank
 * produce the same numbers for the same (seed, update, layer, site, index). */
#ifndef MOELM_RNG_H
#define MOELM_RNG_H

#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

typedef struct { uint32_t v[4]; } MoelmPhiloxCtr;
typedef struct { uint32_t v[2]; } MoelmPhiloxKey;

/* One Philox4x32-10 block: 4 independent 32-bit words for (ctr, key). */
MoelmPhiloxCtr moelm_philox4x32_10(MoelmPhiloxCtr ctr, MoelmPhiloxKey key);

/* Uniform float in [0, 1) from a 32-bit word (24 significant bits). */
static inline float moelm_u32_to_unit_float(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

/* A stream: key = seed, counter = (index, stream id words). Drawing advances the index.
 * Each call to moelm_rng_next_u32 consumes one word; four words share one block. */
typedef struct {
  MoelmPhiloxKey key;
  uint32_t stream[2]; /* ctr.v[2], ctr.v[3]: which stream (e.g. update, layer/site) */
  uint64_t index;     /* ctr.v[0..1]: block number */
  uint32_t buf[4];
  int used;           /* words of buf already consumed (4 = empty) */
} MoelmRng;

void moelm_rng_init(MoelmRng *rng, uint64_t seed, uint32_t stream_hi, uint32_t stream_lo);
uint32_t moelm_rng_next_u32(MoelmRng *rng);
float moelm_rng_next_float(MoelmRng *rng);   /* [0, 1) */
double moelm_rng_next_double(MoelmRng *rng); /* [0, 1), 53 bits */
uint32_t moelm_rng_next_below(MoelmRng *rng, uint32_t n); /* uniform in [0, n), unbiased */
float moelm_rng_next_normal(MoelmRng *rng);  /* standard normal (Box-Muller) */

/* Serialise / restore the complete stream state (for checkpoints). */
void moelm_rng_get_state(const MoelmRng *rng, uint64_t out[4]);
void moelm_rng_set_state(MoelmRng *rng, const uint64_t in[4]);

/* The dropout/site draw: word `i` of the stream (seed, update, layer, site), computed
 * directly without a stream object; what every backend uses for masks. */
uint32_t moelm_philox_word(uint64_t seed, uint32_t update, uint16_t layer, uint16_t site, uint64_t i);

G_END_DECLS

#endif
