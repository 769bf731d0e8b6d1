/* moelm — the CPU backend: memory ops (host memory), the op tables (reference, fast for each
 * instruction set, half-storage) and their creation. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#ifdef HAVE_OPENBLAS
#include <cblas.h>
#endif

#include "backend/cpu/cpu-internal.h"
#include "moelm/errors.h"

/* The fast kernels of each instruction set (cpu-internal.h maps the plain names inside
 * their own files). */
void moelm_fast_fill_elementwise_generic(struct moelm_backend_ops *ops);
void moelm_fast_fill_dense_generic(struct moelm_backend_ops *ops);
void moelm_fast_fill_attention_generic(struct moelm_backend_ops *ops);
void moelm_fast_fill_softmax_generic(struct moelm_backend_ops *ops);
#ifdef HAVE_CPU_AVX2_KERNELS
void moelm_fast_fill_elementwise_avx2(struct moelm_backend_ops *ops);
void moelm_fast_fill_dense_avx2(struct moelm_backend_ops *ops);
void moelm_fast_fill_attention_avx2(struct moelm_backend_ops *ops);
void moelm_fast_fill_softmax_avx2(struct moelm_backend_ops *ops);
#endif

static void *cpu_alloc(MoelmBackend *be, size_t bytes, GError **error)
{
  void *ptr = NULL;
  /* aligned_alloc wants a multiple of the alignment; 0 bytes still gives a valid pointer. */
  if (bytes > SIZE_MAX - 64) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "cpu backend: cannot allocate %zu bytes", bytes);
    return NULL;
  }
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0)
    rounded = 64;
  if (posix_memalign(&ptr, 64, rounded) != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "cpu backend: out of memory allocating %.1f MB",
                (double)bytes / 1e6);
    return NULL;
  }
  return ptr;
}

static void cpu_free(MoelmBackend *be, void *ptr)
{
  free(ptr);
}

static void cpu_copy(MoelmBackend *be, void *dst, const void *src, size_t bytes)
{
  if (bytes > 0)
    memcpy(dst, src, bytes);
}

static void cpu_zero(MoelmBackend *be, void *ptr, size_t bytes)
{
  if (bytes > 0)
    memset(ptr, 0, bytes);
}

static gboolean cpu_synchronize(MoelmBackend *be, GError **error)
{
  if (be->op_error == NULL)
    return TRUE;
  g_propagate_error(error, be->op_error);
  be->op_error = NULL;
  return FALSE;
}

static void cpu_convert(MoelmBackend *be, void *dst, MoelmDtype dst_type, const void *src, MoelmDtype src_type,
                        size_t n)
{
  moelm_convert_floats(dst, dst_type, src, src_type, n);
}

static void cpu_destroy(MoelmBackend *be)
{
  MoelmCpuState *state = be->priv;
  if (state->pool != NULL)
    moelm_thread_pool_free(state->pool);
  moelm_half_scratch_free(state->half);
  if (state->own_table)
    g_free((gpointer)be->ops); /* its own faulty copy */
  g_free(state);
  g_clear_error(&be->op_error);
  g_free(be->description);
  g_free(be->reason);
  g_free(be);
}

static void fill_common_ops(struct moelm_backend_ops *ops)
{
  ops->alloc = cpu_alloc;
  ops->free = cpu_free;
  ops->to_device = cpu_copy;
  ops->to_host = cpu_copy;
  ops->copy = cpu_copy;
  ops->zero = cpu_zero;
  ops->synchronize = cpu_synchronize;
  ops->convert = cpu_convert;
  ops->destroy = cpu_destroy;
  moelm_cpu_fill_routing(ops);
  moelm_cpu_fill_topk_dispatch(ops);
  moelm_cpu_fill_grouped_linear(ops);
}

static struct moelm_backend_ops reference_ops, generic_ops, half_ops[2];
#ifdef HAVE_CPU_AVX2_KERNELS
static struct moelm_backend_ops avx2_ops;
#endif

static gpointer init_tables(gpointer unused)
{
  reference_ops.name = "cpu-reference";
  fill_common_ops(&reference_ops);
  moelm_ref_fill_elementwise(&reference_ops);
  moelm_ref_fill_dense(&reference_ops);
  moelm_ref_fill_attention(&reference_ops);
  moelm_ref_fill_softmax(&reference_ops);

  generic_ops.name = "cpu";
  fill_common_ops(&generic_ops);
  moelm_fast_fill_elementwise_generic(&generic_ops);
  moelm_fast_fill_dense_generic(&generic_ops);
  moelm_fast_fill_attention_generic(&generic_ops);
  moelm_fast_fill_softmax_generic(&generic_ops);
#ifdef HAVE_CPU_AVX2_KERNELS
  avx2_ops.name = "cpu";
  fill_common_ops(&avx2_ops);
  moelm_fast_fill_elementwise_avx2(&avx2_ops);
  moelm_fast_fill_dense_avx2(&avx2_ops);
  moelm_fast_fill_attention_avx2(&avx2_ops);
  moelm_fast_fill_softmax_avx2(&avx2_ops);
#endif
  for (int i = 0; i < 2; i++) {
    half_ops[i].name = i == 0 ? "cpu-bf16" : "cpu-fp16";
    fill_common_ops(&half_ops[i]);
    moelm_cpu_fill_half_storage(&half_ops[i]);
  }
  return NULL;
}

gboolean moelm_cpu_has_avx2(void)
{
#if defined(HAVE_CPU_AVX2_KERNELS) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return FALSE;
#endif
}

static const struct moelm_backend_ops *fast_table(MoelmCpuIsa isa)
{
#ifdef HAVE_CPU_AVX2_KERNELS
  if (isa == MOELM_CPU_ISA_AVX2)
    return &avx2_ops;
#endif
  return &generic_ops;
}

/* ---- fault injection (tests of the error channel) ---------------------------------------- */

gboolean moelm_cpu_inject_fault(MoelmBackend *be, const char *op)
{
  MoelmCpuState *state = be->priv;
  if (state->fail_after_ops <= 0)
    return FALSE;
  if (--state->fail_after_ops > 0)
    return FALSE;
  state->fail_after_ops = 1; /* every later op fails too, as on a device in an error state */
  moelm_backend_set_error(be, MOELM_ERROR_FAILED, "%s: injected device failure in %s (out of memory)", be->ops->name,
                          op);
  return TRUE;
}

/* The faulty tables count linear_forward calls: every forward has some, early and often. */
typedef void (*LinearForwardFn)(MoelmBackend *, MoelmAct *, const MoelmAct *, const float *, const float *, int, int,
                                int);

static LinearForwardFn base_linear_forward(const MoelmBackend *be)
{
  const MoelmCpuState *state = be->priv;
  if (state->inner != NULL)
    return half_ops[be->act_dtype == MOELM_DT_BF16 ? 0 : 1].linear_forward;
  return state->reference ? reference_ops.linear_forward : fast_table(state->isa)->linear_forward;
}

static void faulty_linear_forward(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const float *weight,
                                  const float *bias, int N, int IC, int OC)
{
  if (!moelm_cpu_inject_fault(be, "linear_forward"))
    base_linear_forward(be)(be, out, inp, weight, bias, N, IC, OC);
}

/* ---- creation ------------------------------------------------------------------------------ */

MoelmBackend *moelm_backend_cpu_new_full(gboolean reference, int n_threads, MoelmCpuIsa isa, MoelmDtype act_dtype,
                                         GError **error)
{
  static GOnce once = G_ONCE_INIT;
  g_once(&once, init_tables, NULL);

  if (n_threads <= 0)
    n_threads = (int)g_get_num_processors();
  if (n_threads > 1024) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--threads %d: too many for the cpu backend", n_threads);
    return NULL;
  }
  if (act_dtype != MOELM_DT_F32 && act_dtype != MOELM_DT_BF16 && act_dtype != MOELM_DT_F16) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "cpu backend: activations cannot be %s",
                moelm_dtype_name(act_dtype));
    return NULL;
  }
  if (reference && act_dtype != MOELM_DT_F32) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "cpu backend: the reference loops compute and store fp32 only");
    return NULL;
  }
  if (isa == MOELM_CPU_ISA_AUTO)
    isa = moelm_cpu_has_avx2() ? MOELM_CPU_ISA_AVX2 : MOELM_CPU_ISA_GENERIC;
  else if (isa == MOELM_CPU_ISA_AVX2 && !moelm_cpu_has_avx2()) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED,
                "cpu backend: the AVX2 kernels were not built or this CPU lacks AVX2/FMA");
    return NULL;
  }
  MoelmCpuState *state = g_new0(MoelmCpuState, 1);
  state->reference = reference;
  state->isa = isa;
  MoelmBackend *be = g_new0(MoelmBackend, 1);
  be->priv = state;
  be->device_id = -1;
  be->act_dtype = act_dtype;
  be->act_size = moelm_dtype_size(act_dtype);
  const char *isa_name = isa == MOELM_CPU_ISA_AVX2 ? "AVX2" : "generic";
  if (reference) {
    be->ops = &reference_ops;
    be->n_threads = 1;
    be->description = g_strdup("cpu-reference (loop nests, 1 thread)");
  } else {
    be->n_threads = n_threads;
    state->pool = moelm_thread_pool_new(n_threads);
    if (act_dtype == MOELM_DT_F32) {
      be->ops = fast_table(isa);
    } else {
      state->inner = fast_table(isa);
      be->ops = &half_ops[act_dtype == MOELM_DT_BF16 ? 0 : 1];
    }
    be->description = g_strdup_printf("%s (%s kernels, %d thread%s%s)", be->ops->name, isa_name, n_threads,
                                      n_threads == 1 ? "" : "s",
#ifdef HAVE_OPENBLAS
                                      ", OpenBLAS"
#else
                                      ""
#endif
    );
#ifdef HAVE_OPENBLAS
    /* Every GEMM is split over our own pool (one thread per core), so OpenBLAS itself must
     * stay single-threaded: its spinning workers would otherwise fight the pool for cores. */
    openblas_set_num_threads(1);
#endif
  }
  return be;
}

MoelmBackend *moelm_backend_cpu_new(gboolean reference, int n_threads, GError **error)
{
  return moelm_backend_cpu_new_full(reference, n_threads, MOELM_CPU_ISA_AUTO, MOELM_DT_F32, error);
}

void moelm_cpu_backend_inject_faults(MoelmBackend *be, int ops)
{
  MoelmCpuState *state = be->priv;
  if (ops <= 0 || state->own_table)
    return;
  struct moelm_backend_ops *copy = g_new(struct moelm_backend_ops, 1);
  *copy = *be->ops;
  copy->linear_forward = faulty_linear_forward;
  be->ops = copy;
  state->own_table = TRUE;
  state->fail_after_ops = ops;
}
