/* moelm — helpers shared by the backend test suites: backends, random tensors, and
 * comparisons that report the first mismatch. */
#ifndef MOELM_BACKEND_TEST_UTIL_H
#define MOELM_BACKEND_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "moelm/backend.h"
#include "moelm/rng.h"

/* The reference backend and a fast one with n_threads threads (both asserted non-NULL). */
MoelmBackend *bt_reference(void);
MoelmBackend *bt_fast(int n_threads);

/* A host array of n floats, uniform in [lo, hi) from rng (g_free it). */
float *bt_uniform(MoelmRng *rng, size_t n, float lo, float hi);
float *bt_copy(const float *x, size_t n);
float *bt_zeros(size_t n);

/* Assert |a[i] - b[i]| <= atol + rtol * max(|a[i]|, |b[i]|) for all i; on failure print
 * `what`, the first bad index and the values, and fail the current test. */
void bt_assert_close(const char *what, const float *a, const float *b, size_t n, double rtol, double atol);

/* Central-difference check of an analytic gradient: loss(ctx) evaluates the forward with
 * the current contents of x and returns the scalar loss (accumulated in double).
 * Checks every `stride`-th element of x (x is restored after each probe). */
typedef double (*BtLossFn)(void *ctx);
void bt_check_grad(const char *what, BtLossFn loss, void *ctx, float *x, size_t n, const float *analytic,
                   size_t stride, double h, double rtol, double atol);

/* sum_i a[i] * r[i] in double. */
double bt_dot(const float *a, const float *r, size_t n);

#endif
