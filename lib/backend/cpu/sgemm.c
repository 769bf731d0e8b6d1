/* moelm — single-precision GEMM for the fast CPU path: OpenBLAS when configured, else a
 * blocked loop nest with a register-tiled kernel; and a split of one GEMM over the pool. */
#include "config.h"

#include <string.h>

#ifdef __AVX2__
#include <immintrin.h>
#endif

#ifdef HAVE_OPENBLAS
#include <cblas.h>
#endif

#include "backend/cpu/cpu-internal.h"

/* The fallback: C is scaled by beta once, then for each KC x NC panel of op(B) (packed
 * row-major) and each MC x KC block of alpha op(A) (packed row-major), 4 x 16 tiles of C
 * accumulate in registers (AVX2/FMA when available; plain loops at the edges). */
#define MC 64
#define KC 256
#define NC 256
#define TILE_M 4
#define TILE_N 16

/* C[0..4)[0..16) += A(4, kc) B(kc, 16) with A rows `lda` apart and B rows `ldb` apart. */
static void tile_4x16(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int kc)
{
#ifdef __AVX2__
  __m256 c[TILE_M][2];
  for (int r = 0; r < TILE_M; r++)
    c[r][0] = c[r][1] = _mm256_setzero_ps();
  for (int k = 0; k < kc; k++) {
    __m256 b0 = _mm256_loadu_ps(B + (size_t)k * ldb), b1 = _mm256_loadu_ps(B + (size_t)k * ldb + 8);
    for (int r = 0; r < TILE_M; r++) {
      __m256 a = _mm256_broadcast_ss(A + (size_t)r * lda + k);
      c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
      c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
    }
  }
  for (int r = 0; r < TILE_M; r++) {
    float *row = C + (size_t)r * ldc;
    _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), c[r][0]));
    _mm256_storeu_ps(row + 8, _mm256_add_ps(_mm256_loadu_ps(row + 8), c[r][1]));
  }
#else
  float c[TILE_M][TILE_N] = {{0}};
  for (int k = 0; k < kc; k++)
    for (int r = 0; r < TILE_M; r++)
      for (int j = 0; j < TILE_N; j++)
        c[r][j] += A[(size_t)r * lda + k] * B[(size_t)k * ldb + j];
  for (int r = 0; r < TILE_M; r++)
    for (int j = 0; j < TILE_N; j++)
      C[(size_t)r * ldc + j] += c[r][j];
#endif
}

/* The same for a partial tile of mr x nr. */
static void tile_edge(float *C, int ldc, const float *A, int lda, const float *B, int ldb, int kc, int mr, int nr)
{
  for (int r = 0; r < mr; r++)
    for (int j = 0; j < nr; j++) {
      float sum = 0.0f;
      for (int k = 0; k < kc; k++)
        sum += A[(size_t)r * lda + k] * B[(size_t)k * ldb + j];
      C[(size_t)r * ldc + j] += sum;
    }
}

void moelm_cpu_sgemm_blocked(gboolean trans_a, gboolean trans_b, int M, int N, int K, float alpha,
                             const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
  for (int i = 0; i < M; i++) {
    float *c = C + (size_t)i * ldc;
    if (beta == 0.0f)
      memset(c, 0, (size_t)N * sizeof(float));
    else if (beta != 1.0f)
      for (int j = 0; j < N; j++)
        c[j] *= beta;
  }
  if (K == 0 || alpha == 0.0f)
    return;
  float *bpanel = g_malloc((size_t)KC * NC * sizeof(float)); /* op(B)[k0:k0+kc, j0:j0+nc] */
  float *apanel = g_malloc((size_t)MC * KC * sizeof(float)); /* alpha op(A)[i0:i0+mc, k0:k0+kc] */
  for (int j0 = 0; j0 < N; j0 += NC) {
    int nc = N - j0 < NC ? N - j0 : NC;
    for (int k0 = 0; k0 < K; k0 += KC) {
      int kc = K - k0 < KC ? K - k0 : KC;
      for (int k = 0; k < kc; k++)
        for (int j = 0; j < nc; j++)
          bpanel[k * nc + j] = trans_b ? B[(size_t)(j0 + j) * ldb + k0 + k] : B[(size_t)(k0 + k) * ldb + j0 + j];
      for (int i0 = 0; i0 < M; i0 += MC) {
        int mc = M - i0 < MC ? M - i0 : MC;
        for (int i = 0; i < mc; i++)
          for (int k = 0; k < kc; k++)
            apanel[i * kc + k] =
                alpha * (trans_a ? A[(size_t)(k0 + k) * lda + i0 + i] : A[(size_t)(i0 + i) * lda + k0 + k]);
        for (int i = 0; i < mc; i += TILE_M)
          for (int j = 0; j < nc; j += TILE_N) {
            float *c = C + (size_t)(i0 + i) * ldc + j0 + j;
            if (i + TILE_M <= mc && j + TILE_N <= nc)
              tile_4x16(c, ldc, apanel + i * kc, kc, bpanel + j, nc, kc);
            else
              tile_edge(c, ldc, apanel + i * kc, kc, bpanel + j, nc, kc, mc - i < TILE_M ? mc - i : TILE_M,
                        nc - j < TILE_N ? nc - j : TILE_N);
          }
      }
    }
  }
  g_free(apanel);
  g_free(bpanel);
}

void moelm_cpu_sgemm(gboolean trans_a, gboolean trans_b, int M, int N, int K, float alpha, const float *A,
                     int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
  if (M <= 0 || N <= 0)
    return;
#ifdef HAVE_OPENBLAS
  if (K > 0) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
#endif
  moelm_cpu_sgemm_blocked(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

typedef struct {
  gboolean trans_a, trans_b, split_rows;
  int M, N, K;
  float alpha, beta;
  const float *A, *B;
  float *C;
  int lda, ldb, ldc;
} GemmJob;

/* Index = block of rows (or columns) of C; blocks are 16 wide so panels stay efficient. */
#define SPLIT 16

static void gemm_part(void *ctx, int64_t begin, int64_t end)
{
  const GemmJob *g = ctx;
  int lo = (int)begin * SPLIT;
  if (g->split_rows) {
    int hi = (int)end * SPLIT < g->M ? (int)end * SPLIT : g->M;
    const float *a = g->trans_a ? g->A + lo : g->A + (size_t)lo * g->lda;
    moelm_cpu_sgemm(g->trans_a, g->trans_b, hi - lo, g->N, g->K, g->alpha, a, g->lda, g->B, g->ldb, g->beta,
                    g->C + (size_t)lo * g->ldc, g->ldc);
  } else {
    int hi = (int)end * SPLIT < g->N ? (int)end * SPLIT : g->N;
    const float *b = g->trans_b ? g->B + (size_t)lo * g->ldb : g->B + lo;
    moelm_cpu_sgemm(g->trans_a, g->trans_b, g->M, hi - lo, g->K, g->alpha, g->A, g->lda, b, g->ldb, g->beta,
                    g->C + lo, g->ldc);
  }
}

void moelm_cpu_sgemm_parallel(MoelmThreadPool *pool, gboolean trans_a, gboolean trans_b, int M, int N, int K,
                              float alpha, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                              int ldc)
{
  int threads = moelm_thread_pool_size(pool);
  double flops = 2.0 * M * N * (double)K;
  if (threads == 1 || flops < 2e6) {
    moelm_cpu_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  GemmJob g = {trans_a, trans_b, M >= N, M, N, K, alpha, beta, A, B, C, lda, ldb, ldc};
  int blocks = ((g.split_rows ? M : N) + SPLIT - 1) / SPLIT;
  /* Pieces of at least 4 blocks (64 rows or columns), about four per thread: big enough for
   * efficient panels, small enough that a thread the OS preempts does not hold up the rest. */
  moelm_thread_pool_run(pool, blocks, 4, gemm_part, &g);
}
