/* fairseq's clip_grad_norm_ and multiply_grads over the flat gradient buffer. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/backend.h"
#include "moelm/optim.h"

/* 3 and 4 in a buffer of zeros long enough to use the vector blocks and the tail. */
static void fill_3_4(float *g, size_t n)
{
  memset(g, 0, n * sizeof(float));
  g[2] = 3.0f;
  g[n - 1] = -4.0f;
}

static void test_clips_to_max_norm(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 2, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(be);
  float g[21];
  fill_3_4(g, 21);
  double norm = moelm_clip_grad_norm(be, g, 21, 1.0);
  CU_ASSERT_DOUBLE_EQUAL(norm, 5.0, 1e-12);
  double coef = 1.0 / (5.0 + 1e-6);
  CU_ASSERT_DOUBLE_EQUAL(g[2], 3.0 * coef, 1e-7);
  CU_ASSERT_DOUBLE_EQUAL(g[20], -4.0 * coef, 1e-7);
  CU_ASSERT_EQUAL(g[0], 0.0f);
  CU_ASSERT_DOUBLE_EQUAL(sqrt(moelm_grad_sumsq(be, g, 21)), 1.0, 1e-6);
  moelm_backend_free(be);
}

static void test_no_clip_below_max_or_without_max(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 2, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(be);
  float g[21];
  fill_3_4(g, 21);
  CU_ASSERT_DOUBLE_EQUAL(moelm_clip_grad_norm(be, g, 21, 0.0), 5.0, 1e-12); /* measure only */
  CU_ASSERT_EQUAL(g[2], 3.0f);
  CU_ASSERT_EQUAL(g[20], -4.0f);
  CU_ASSERT_DOUBLE_EQUAL(moelm_clip_grad_norm(be, g, 21, 10.0), 5.0, 1e-12);
  CU_ASSERT_EQUAL(g[2], 3.0f);
  CU_ASSERT_EQUAL(g[20], -4.0f);
  /* fairseq's coefficient is max/(norm+1e-6) clamped at 1: at norm == max it still shrinks
   * the grads by a hair, as fairseq does. */
  CU_ASSERT_DOUBLE_EQUAL(moelm_clip_coef(5.0, 5.0), 5.0 / (5.0 + 1e-6), 1e-15);
  CU_ASSERT(moelm_clip_coef(5.0, 5.0) < 1.0);
  CU_ASSERT_EQUAL(moelm_clip_coef(5.0, 5.1), 1.0);
  CU_ASSERT_EQUAL(moelm_clip_coef(5.0, 0.0), 1.0);
  moelm_backend_free(be);
}

static void test_non_finite(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 2, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(be);
  float g[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  CU_ASSERT_TRUE(moelm_grads_all_finite(be, g, 10));
  g[9] = INFINITY;
  CU_ASSERT_FALSE(moelm_grads_all_finite(be, g, 10));
  double norm = moelm_clip_grad_norm(be, g, 10, 1.0);
  CU_ASSERT_TRUE(isinf(norm));
  CU_ASSERT_EQUAL(g[0], 1.0f); /* untouched: the caller skips this update */
  g[9] = 10;
  g[3] = NAN;
  CU_ASSERT_FALSE(moelm_grads_all_finite(be, g, 10));
  CU_ASSERT_TRUE(isnan(moelm_clip_grad_norm(be, g, 10, 1.0)));
  CU_ASSERT_EQUAL(g[0], 1.0f);
  g[3] = 4;
  CU_ASSERT_TRUE(moelm_grads_all_finite(be, g, 10));
  moelm_backend_free(be);
}

static void test_sumsq_and_multiply(void)
{
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 2, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(be);
  const size_t n = 100001;
  float *g = g_new(float, n);
  double expect = 0.0;
  for (size_t i = 0; i < n; i++) {
    g[i] = (float)((double)(i % 97) / 97.0 - 0.5);
    expect += (double)g[i] * (double)g[i];
  }
  CU_ASSERT_DOUBLE_EQUAL(moelm_grad_sumsq(be, g, n), expect, 1e-9 * expect);
  moelm_multiply_grads(be, g, n, 0.5);
  CU_ASSERT_DOUBLE_EQUAL(moelm_grad_sumsq(be, g, n), expect * 0.25, 1e-9 * expect);
  CU_ASSERT_EQUAL(g[n - 1], (float)((double)((n - 1) % 97) / 97.0 - 0.5) * 0.5f);
  CU_ASSERT_EQUAL(moelm_grad_sumsq(be, g, 0), 0.0);
  g_free(g);
  moelm_backend_free(be);
}

MOELM_TEST_SUITE(optim_clip)
{
  CU_add_test(suite, "clips to max norm", test_clips_to_max_norm);
  CU_add_test(suite, "no clipping below max or with max 0", test_no_clip_below_max_or_without_max);
  CU_add_test(suite, "inf and nan gradients", test_non_finite);
  CU_add_test(suite, "sum of squares and multiply_grads", test_sumsq_and_multiply);
}
