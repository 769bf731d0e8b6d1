/* moelm — helpers shared by the backend test suites. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "moelm-test.h"
#include "backend-test-util.h"

MoelmBackend *bt_reference(void)
{
  GError *error = NULL;
  MoelmBackend *be = moelm_backend_cpu_new(TRUE, 1, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(be);
  return be;
}

MoelmBackend *bt_fast(int n_threads)
{
  GError *error = NULL;
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, n_threads, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(be);
  return be;
}

float *bt_uniform(MoelmRng *rng, size_t n, float lo, float hi)
{
  float *x = g_new(float, n + 1);
  for (size_t i = 0; i < n; i++)
    x[i] = lo + (hi - lo) * moelm_rng_next_float(rng);
  return x;
}

float *bt_copy(const float *x, size_t n)
{
  return g_memdup2(x, (n + 1) * sizeof(float));
}

float *bt_zeros(size_t n)
{
  return g_new0(float, n + 1);
}

void bt_assert_close(const char *what, const float *a, const float *b, size_t n, double rtol, double atol)
{
  for (size_t i = 0; i < n; i++) {
    double x = a[i], y = b[i];
    double tol = atol + rtol * fmax(fabs(x), fabs(y));
    if (!(fabs(x - y) <= tol)) {
      fprintf(stderr, "\n  %s: element %zu: %.9g vs %.9g (tolerance %.3g)\n", what, i, x, y, tol);
      CU_FAIL(what);
      return;
    }
  }
  CU_PASS(what);
}

double bt_dot(const float *a, const float *r, size_t n)
{
  double sum = 0;
  for (size_t i = 0; i < n; i++)
    sum += (double)a[i] * r[i];
  return sum;
}

void bt_check_grad(const char *what, BtLossFn loss, void *ctx, float *x, size_t n, const float *analytic,
                   size_t stride, double h, double rtol, double atol)
{
  size_t checked = 0;
  for (size_t i = 0; i < n; i += stride) {
    float saved = x[i];
    x[i] = (float)(saved + h);
    double up = loss(ctx);
    x[i] = (float)(saved - h);
    double down = loss(ctx);
    /* the step actually taken in float */
    double step = (double)(float)(saved + h) - (double)(float)(saved - h);
    x[i] = saved;
    double numeric = (up - down) / step;
    double tol = atol + rtol * fmax(fabs(numeric), fabs(analytic[i]));
    if (!(fabs(numeric - analytic[i]) <= tol)) {
      fprintf(stderr, "\n  %s: d/dx[%zu]: analytic %.9g, numeric %.9g (tolerance %.3g)\n", what, i, analytic[i],
              numeric, tol);
      CU_FAIL(what);
      return;
    }
    checked++;
  }
  CU_ASSERT(checked > 0);
}
