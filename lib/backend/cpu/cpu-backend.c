/* moelm — the CPU backend: memory ops (host memory), the two op tables and their creation. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#ifdef HAVE_OPENBLAS
#include <cblas.h>
#endif

#include "backend/cpu/cpu-internal.h"
#include "moelm/errors.h"

static void *cpu_alloc(MoelmBackend *be, size_t bytes, GError **error)
{
  void *ptr = NULL;
  /* aligned_alloc wants a multiple of the alignment; 0 bytes still gives a valid pointer. */
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0)
    rounded = 64;
  if (posix_memalign(&ptr, 64, rounded) != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "cpu backend: cannot allocate %zu bytes", bytes);
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

static void cpu_synchronize(MoelmBackend *be)
{
}

static void cpu_destroy(MoelmBackend *be)
{
  MoelmCpuState *state = be->priv;
  if (state->pool != NULL)
    moelm_thread_pool_free(state->pool);
  g_free(state);
  g_free(be);
}

static void fill_memory_ops(struct moelm_backend_ops *ops)
{
  ops->alloc = cpu_alloc;
  ops->free = cpu_free;
  ops->to_device = cpu_copy;
  ops->to_host = cpu_copy;
  ops->copy = cpu_copy;
  ops->zero = cpu_zero;
  ops->synchronize = cpu_synchronize;
  ops->destroy = cpu_destroy;
}

static struct moelm_backend_ops reference_ops, fast_ops;

static gpointer init_tables(gpointer unused)
{
  reference_ops.name = "cpu-reference";
  fill_memory_ops(&reference_ops);
  moelm_ref_fill_elementwise(&reference_ops);
  moelm_ref_fill_dense(&reference_ops);
  moelm_ref_fill_attention(&reference_ops);
  moelm_ref_fill_softmax(&reference_ops);

  fast_ops.name = "cpu";
  fill_memory_ops(&fast_ops);
  moelm_fast_fill_elementwise(&fast_ops);
  moelm_fast_fill_dense(&fast_ops);
  moelm_fast_fill_attention(&fast_ops);
  moelm_fast_fill_softmax(&fast_ops);
  return NULL;
}

MoelmBackend *moelm_backend_cpu_new(gboolean reference, int n_threads, GError **error)
{
  static GOnce once = G_ONCE_INIT;
  g_once(&once, init_tables, NULL);

  if (n_threads <= 0)
    n_threads = (int)g_get_num_processors();
  if (n_threads > 1024) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "cpu backend: %d threads is too many", n_threads);
    return NULL;
  }
  MoelmCpuState *state = g_new0(MoelmCpuState, 1);
  state->reference = reference;
  MoelmBackend *be = g_new0(MoelmBackend, 1);
  be->priv = state;
  if (reference) {
    be->ops = &reference_ops;
    be->n_threads = 1;
  } else {
    be->ops = &fast_ops;
    be->n_threads = n_threads;
    state->pool = moelm_thread_pool_new(n_threads);
#ifdef HAVE_OPENBLAS
    /* Every GEMM is split over our own pool (one thread per core), so OpenBLAS itself must
     * stay single-threaded: its spinning workers would otherwise fight the pool for cores. */
    openblas_set_num_threads(1);
#endif
  }
  return be;
}
