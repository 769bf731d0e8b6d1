/* moelm — CPU backend internals: the two op families (reference loop nests and the fast
 * path), the thread pool, the sgemm wrapper and the small math both families share.
 * Not installed; tests include it to check the internal pieces (blocked sgemm, pool). */
#ifndef MOELM_CPU_INTERNAL_H
#define MOELM_CPU_INTERNAL_H

#include <math.h>
#include <stdint.h>

#include "moelm/backend.h"
#include "moelm/rng.h"

/* ---- thread pool ------------------------------------------------------------------ */

typedef struct MoelmThreadPool MoelmThreadPool;

/* Work on the index range [begin, end). */
typedef void (*MoelmParallelFn)(void *ctx, int64_t begin, int64_t end);

/* n_threads counts the caller: n_threads - 1 workers are started once and sleep between jobs. */
MoelmThreadPool *moelm_thread_pool_new(int n_threads);
void moelm_thread_pool_free(MoelmThreadPool *pool);
int moelm_thread_pool_size(const MoelmThreadPool *pool);
/* Run fn over [0, n) in chunks of at least `grain` indices, on all threads, and return when
 * every chunk is done. Chunks are handed out dynamically. Not reentrant: fn must not call
 * moelm_thread_pool_run on the same pool. */
void moelm_thread_pool_run(MoelmThreadPool *pool, int64_t n, int64_t grain, MoelmParallelFn fn, void *ctx);

/* ---- backend state ----------------------------------------------------------------- */

typedef struct MoelmHalfScratch MoelmHalfScratch;

typedef struct {
  gboolean reference;
  MoelmCpuIsa isa;       /* the fast kernels' instruction set */
  MoelmThreadPool *pool; /* NULL for the reference backend */
  /* the half-storage variant: the fp32 table it computes with, and its staging buffers */
  const struct moelm_backend_ops *inner;
  MoelmHalfScratch *half;
  /* fault injection for the error channel's tests: ops left before a failure (0: never) */
  int fail_after_ops;
  gboolean own_table; /* be->ops is this backend's own (faulty) copy */
} MoelmCpuState;

static inline MoelmThreadPool *moelm_cpu_pool(MoelmBackend *be)
{
  return ((MoelmCpuState *)be->priv)->pool;
}

/* ---- kernels built once per instruction set ------------------------------------------
 * The fast kernels (fast-*.c, sgemm.c, dropout-mask.c) are compiled twice: for the x86-64
 * baseline (names ending in _generic) and, with -march=x86-64-v3, for AVX2 + FMA (_avx2,
 * when configure found the compiler able to: HAVE_CPU_AVX2_KERNELS). The backend picks one
 * set at run time (moelm_cpu_has_avx2). Inside those files the plain names below refer to
 * the set being compiled. */
#ifdef MOELM_CPU_AVX2_BUILD
#define MOELM_CPU_ISA_SYM(name) name##_avx2
#else
#define MOELM_CPU_ISA_SYM(name) name##_generic
#endif
#define moelm_cpu_sgemm MOELM_CPU_ISA_SYM(moelm_cpu_sgemm)
#define moelm_cpu_sgemm_blocked MOELM_CPU_ISA_SYM(moelm_cpu_sgemm_blocked)
#define moelm_cpu_sgemm_parallel MOELM_CPU_ISA_SYM(moelm_cpu_sgemm_parallel)
#define moelm_dropout_fill_multipliers MOELM_CPU_ISA_SYM(moelm_dropout_fill_multipliers)
#define moelm_fast_fill_elementwise MOELM_CPU_ISA_SYM(moelm_fast_fill_elementwise)
#define moelm_fast_fill_dense MOELM_CPU_ISA_SYM(moelm_fast_fill_dense)
#define moelm_fast_fill_attention MOELM_CPU_ISA_SYM(moelm_fast_fill_attention)
#define moelm_fast_fill_softmax MOELM_CPU_ISA_SYM(moelm_fast_fill_softmax)

/* ---- sgemm ------------------------------------------------------------------------- */

/* Row-major C(M,N) = alpha op(A) op(B) + beta C with leading dimensions, single-threaded:
 * OpenBLAS when configured, else moelm_cpu_sgemm_blocked. beta == 0 ignores C's content. */
void moelm_cpu_sgemm(gboolean trans_a, gboolean trans_b, int M, int N, int K, float alpha, const float *A,
                     int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* The portable blocked, vectorisable fallback (always built, so it is always tested). */
void moelm_cpu_sgemm_blocked(gboolean trans_a, gboolean trans_b, int M, int N, int K, float alpha,
                             const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* moelm_cpu_sgemm split over the pool's threads by rows of C (or columns when M is small). */
void moelm_cpu_sgemm_parallel(MoelmThreadPool *pool, gboolean trans_a, gboolean trans_b, int M, int N, int K,
                              float alpha, const float *A, int lda, const float *B, int ldb, float beta, float *C,
                              int ldc);

/* ---- shared math ------------------------------------------------------------------- */

#define MOELM_SQRT_2_OVER_PI 0.7978845608028654
#define MOELM_GELU_COEF 0.044715

static inline double moelm_act_ref(MoelmActivation act, double x)
{
  switch (act) {
  case MOELM_ACT_RELU:
    return x > 0 ? x : 0;
  case MOELM_ACT_GELU:
    return 0.5 * x * (1.0 + erf(x * M_SQRT1_2));
  case MOELM_ACT_GELU_ACCURATE:
    return 0.5 * x * (1.0 + tanh(MOELM_SQRT_2_OVER_PI * (x + MOELM_GELU_COEF * x * x * x)));
  case MOELM_ACT_TANH:
    return tanh(x);
  }
  return 0;
}

static inline double moelm_act_grad_ref(MoelmActivation act, double x)
{
  switch (act) {
  case MOELM_ACT_RELU:
    return x > 0 ? 1 : 0;
  case MOELM_ACT_GELU: {
    double cdf = 0.5 * (1.0 + erf(x * M_SQRT1_2));
    double pdf = exp(-0.5 * x * x) * 0.3989422804014327; /* 1/sqrt(2 pi) */
    return cdf + x * pdf;
  }
  case MOELM_ACT_GELU_ACCURATE: {
    double u = MOELM_SQRT_2_OVER_PI * (x + MOELM_GELU_COEF * x * x * x);
    double th = tanh(u);
    double du = MOELM_SQRT_2_OVER_PI * (1.0 + 3.0 * MOELM_GELU_COEF * x * x);
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du;
  }
  case MOELM_ACT_TANH: {
    double th = tanh(x);
    return 1.0 - th * th;
  }
  }
  return 0;
}

/* Dropout: the keep decision for element i, and the kept elements' multiplier. */
static inline gboolean moelm_dropout_keep(const MoelmDropoutIds *ids, float p, uint64_t i)
{
  return moelm_u32_to_unit_float(moelm_philox_word(ids->seed, ids->update, ids->layer, ids->site, i)) >= p;
}

static inline float moelm_dropout_multiplier(float p)
{
  return 1.0f / (1.0f - p);
}

/* Multipliers for elements [i0, i0 + n): 0 or 1/(1-p). One Philox block per 4 elements. */
void moelm_dropout_fill_multipliers(float *mult, const MoelmDropoutIds *ids, float p, uint64_t i0, size_t n);

/* ---- the op families --------------------------------------------------------------- */

/* Reference op groups (ref-*.c) and fast op groups (fast-*.c) fill their part of a table. */
void moelm_ref_fill_elementwise(struct moelm_backend_ops *ops);
void moelm_ref_fill_dense(struct moelm_backend_ops *ops);
void moelm_ref_fill_attention(struct moelm_backend_ops *ops);
void moelm_ref_fill_softmax(struct moelm_backend_ops *ops);
void moelm_fast_fill_elementwise(struct moelm_backend_ops *ops);
void moelm_fast_fill_dense(struct moelm_backend_ops *ops);
void moelm_fast_fill_attention(struct moelm_backend_ops *ops);
void moelm_fast_fill_softmax(struct moelm_backend_ops *ops);
/* Shared by every CPU table: routing (routing.c), top-k dispatch (topk-dispatch.c), grouped
 * linear (grouped-linear.c). */
void moelm_cpu_fill_routing(struct moelm_backend_ops *ops);
void moelm_cpu_fill_topk_dispatch(struct moelm_backend_ops *ops);
void moelm_cpu_fill_grouped_linear(struct moelm_backend_ops *ops);
/* The half-storage variant (half-storage.c): every activation op converts its inputs to
 * fp32, runs the fp32 op of state->inner and rounds its outputs back. */
void moelm_cpu_fill_half_storage(struct moelm_backend_ops *ops);
void moelm_half_scratch_free(MoelmHalfScratch *scratch);

/* Count one op against the fault-injection budget; TRUE when the op must fail (it records
 * the error and does nothing). */
gboolean moelm_cpu_inject_fault(MoelmBackend *be, const char *op);
/* Make `be` (a CPU backend) record a failure in its `ops`-th linear_forward and every one
 * after it (its own copy of the table). */
void moelm_cpu_backend_inject_faults(MoelmBackend *be, int ops);

#endif
