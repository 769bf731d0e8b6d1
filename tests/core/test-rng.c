/* Philox 4x32-10 against the Random123 known-answer vectors, and stream properties. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/rng.h"

static void check_kat(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1,
                      uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3)
{
  MoelmPhiloxCtr ctr = {{c0, c1, c2, c3}};
  MoelmPhiloxKey key = {{k0, k1}};
  MoelmPhiloxCtr r = moelm_philox4x32_10(ctr, key);
  CU_ASSERT_EQUAL(r.v[0], r0);
  CU_ASSERT_EQUAL(r.v[1], r1);
  CU_ASSERT_EQUAL(r.v[2], r2);
  CU_ASSERT_EQUAL(r.v[3], r3);
}

static void test_known_answers(void)
{
  check_kat(0, 0, 0, 0, 0, 0, 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u);
  check_kat(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0x408f276du,
            0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu);
  check_kat(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u, 0xd16cfe09u,
            0x94fdccebu, 0x5001e420u, 0x24126ea1u);
}

static void test_stream_state_round_trip(void)
{
  MoelmRng a, b;
  moelm_rng_init(&a, 1234, 7, 9);
  for (int i = 0; i < 6; i++)
    (void)moelm_rng_next_u32(&a);
  uint64_t state[4];
  moelm_rng_get_state(&a, state);
  moelm_rng_set_state(&b, state);
  for (int i = 0; i < 20; i++)
    CU_ASSERT_EQUAL(moelm_rng_next_u32(&a), moelm_rng_next_u32(&b));
}

static void test_streams_differ_and_word_matches(void)
{
  MoelmRng a, b;
  moelm_rng_init(&a, 42, 0, 1);
  moelm_rng_init(&b, 42, 0, 2);
  int same = 0;
  for (int i = 0; i < 64; i++)
    same += moelm_rng_next_u32(&a) == moelm_rng_next_u32(&b);
  CU_ASSERT(same < 2);
  /* moelm_philox_word(i) equals word i of the stream (update, layer<<16|site). */
  MoelmRng s;
  moelm_rng_init(&s, 99, (3u << 16) | 5u, 17);
  for (uint64_t i = 0; i < 12; i++)
    CU_ASSERT_EQUAL(moelm_rng_next_u32(&s), moelm_philox_word(99, 17, 3, 5, i));
}

static void test_uniform_moments(void)
{
  MoelmRng r;
  moelm_rng_init(&r, 5, 0, 0);
  double sum = 0, sum2 = 0, nsum = 0, nsum2 = 0;
  const int n = 200000;
  int below[10] = {0};
  for (int i = 0; i < n; i++) {
    float u = moelm_rng_next_float(&r);
    CU_ASSERT_FATAL(u >= 0.0f && u < 1.0f);
    sum += u;
    sum2 += (double)u * u;
    below[moelm_rng_next_below(&r, 10)]++;
    float z = moelm_rng_next_normal(&r);
    nsum += z;
    nsum2 += (double)z * z;
  }
  CU_ASSERT_DOUBLE_EQUAL(sum / n, 0.5, 0.005);
  CU_ASSERT_DOUBLE_EQUAL(sum2 / n - (sum / n) * (sum / n), 1.0 / 12, 0.002);
  CU_ASSERT_DOUBLE_EQUAL(nsum / n, 0.0, 0.01);
  CU_ASSERT_DOUBLE_EQUAL(nsum2 / n, 1.0, 0.02);
  for (int k = 0; k < 10; k++)
    CU_ASSERT_DOUBLE_EQUAL(below[k] / (double)n, 0.1, 0.005);
}

MOELM_TEST_SUITE(rng)
{
  CU_add_test(suite, "Philox4x32-10 known answers", test_known_answers);
  CU_add_test(suite, "stream state round trip", test_stream_state_round_trip);
  CU_add_test(suite, "streams differ; direct word equals stream", test_streams_differ_and_word_matches);
  CU_add_test(suite, "uniform, below and normal moments", test_uniform_moments);
}
