/* moelm — Philox 4x32-10 and streams built on it. */
#include "config.h"

#include <math.h>

#include "moelm/rng.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo)
{
  uint64_t p = (uint64_t)a * b;
  *hi = (uint32_t)(p >> 32);
  *lo = (uint32_t)p;
}

MoelmPhiloxCtr moelm_philox4x32_10(MoelmPhiloxCtr ctr, MoelmPhiloxKey key)
{
  for (int round = 0; round < 10; round++) {
    if (round > 0) {
      key.v[0] += PHILOX_W0;
      key.v[1] += PHILOX_W1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(PHILOX_M0, ctr.v[0], &hi0, &lo0);
    mulhilo(PHILOX_M1, ctr.v[2], &hi1, &lo1);
    MoelmPhiloxCtr out = {{hi1 ^ ctr.v[1] ^ key.v[0], lo1, hi0 ^ ctr.v[3] ^ key.v[1], lo0}};
    ctr = out;
  }
  return ctr;
}

void moelm_rng_init(MoelmRng *rng, uint64_t seed, uint32_t stream_hi, uint32_t stream_lo)
{
  rng->key.v[0] = (uint32_t)seed;
  rng->key.v[1] = (uint32_t)(seed >> 32);
  rng->stream[0] = stream_lo;
  rng->stream[1] = stream_hi;
  rng->index = 0;
  rng->used = 4;
}

uint32_t moelm_rng_next_u32(MoelmRng *rng)
{
  if (rng->used >= 4) {
    MoelmPhiloxCtr c = {{(uint32_t)rng->index, (uint32_t)(rng->index >> 32), rng->stream[0], rng->stream[1]}};
    MoelmPhiloxCtr r = moelm_philox4x32_10(c, rng->key);
    for (int i = 0; i < 4; i++)
      rng->buf[i] = r.v[i];
    rng->index++;
    rng->used = 0;
  }
  return rng->buf[rng->used++];
}

float moelm_rng_next_float(MoelmRng *rng) { return moelm_u32_to_unit_float(moelm_rng_next_u32(rng)); }

double moelm_rng_next_double(MoelmRng *rng)
{
  uint64_t hi = moelm_rng_next_u32(rng) >> 5, lo = moelm_rng_next_u32(rng) >> 6;
  return (double)(hi * 67108864u + lo) * (1.0 / 9007199254740992.0);
}

uint32_t moelm_rng_next_below(MoelmRng *rng, uint32_t n)
{
  g_return_val_if_fail(n > 0, 0);
  /* Lemire-free rejection: discard the biased tail of the 32-bit range. */
  uint32_t limit = UINT32_MAX - (UINT32_MAX % n);
  uint32_t x;
  do
    x = moelm_rng_next_u32(rng);
  while (x >= limit);
  return x % n;
}

float moelm_rng_next_normal(MoelmRng *rng)
{
  double u1 = moelm_rng_next_double(rng), u2 = moelm_rng_next_double(rng);
  if (u1 < 1e-300)
    u1 = 1e-300;
  return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * G_PI * u2));
}

void moelm_rng_get_state(const MoelmRng *rng, uint64_t out[4])
{
  out[0] = (uint64_t)rng->key.v[0] | ((uint64_t)rng->key.v[1] << 32);
  out[1] = (uint64_t)rng->stream[0] | ((uint64_t)rng->stream[1] << 32);
  /* The buffered block is recomputed from index, so the position is (index, used). */
  out[2] = rng->used >= 4 ? rng->index : rng->index - 1;
  out[3] = (uint64_t)(rng->used >= 4 ? 4 : rng->used);
}

void moelm_rng_set_state(MoelmRng *rng, const uint64_t in[4])
{
  rng->key.v[0] = (uint32_t)in[0];
  rng->key.v[1] = (uint32_t)(in[0] >> 32);
  rng->stream[0] = (uint32_t)in[1];
  rng->stream[1] = (uint32_t)(in[1] >> 32);
  rng->index = in[2];
  rng->used = 4;
  if (in[3] < 4) {
    (void)moelm_rng_next_u32(rng); /* refill the block at index, then skip consumed words */
    rng->used = (int)in[3];
  }
}

uint32_t moelm_philox_word(uint64_t seed, uint32_t update, uint16_t layer, uint16_t site, uint64_t i)
{
  MoelmPhiloxKey key = {{(uint32_t)seed, (uint32_t)(seed >> 32)}};
  uint64_t block = i >> 2;
  MoelmPhiloxCtr c = {{(uint32_t)block, (uint32_t)(block >> 32), update, ((uint32_t)layer << 16) | site}};
  return moelm_philox4x32_10(c, key).v[i & 3];
}
