/* moelm — a persistent thread pool for parallel-for. Workers are created once per backend
 * and wait between jobs (a short spin, then a condition variable), because the ops call
 * it tens of thousands of times per epoch and creating threads per call would cost more
 * than many of the ops themselves.
 *
 * A job is finished when all its chunks are done, not when every worker has seen it: the
 * caller takes chunks too, so a worker that the OS has not scheduled yet (a loaded machine)
 * costs nothing; it finds the job closed when it arrives and goes back to waiting.
 * `generation` is even while a job is open and odd while none is; a worker enters a job by
 * raising `inflight` and then checking that the generation is still the one it saw, and the
 * caller closes a job by making the generation odd and waiting for `inflight` to drop to 0,
 * after which no worker can touch the job's fields. */
#include "config.h"

#include "backend/cpu/cpu-internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* How long an idle worker polls for the next job before sleeping (pause instructions).
 * Ops come back to back during a training step, so a short poll avoids most sleeps. */
#define SPIN_ROUNDS 20000

struct MoelmThreadPool {
  int n_threads; /* including the caller */
  GThread **workers;

  GMutex lock;
  GCond wake;
  gint sleepers; /* atomic: workers blocked (or about to block) on wake */
  gint quit;     /* atomic */

  /* The open job; written by the caller only while the generation is odd and inflight 0. */
  MoelmParallelFn fn;
  void *ctx;
  int64_t n, chunk, n_chunks;
  int64_t next_chunk;  /* atomic: chunks handed out */
  int64_t done_chunks; /* atomic: chunks finished */
  gint inflight;       /* atomic: workers inside the job */
  gint generation;     /* atomic */
};

static void take_chunks(MoelmThreadPool *pool)
{
  for (;;) {
    int64_t c = __atomic_fetch_add(&pool->next_chunk, 1, __ATOMIC_SEQ_CST);
    if (c >= pool->n_chunks)
      return;
    int64_t begin = c * pool->chunk;
    int64_t end = begin + pool->chunk < pool->n ? begin + pool->chunk : pool->n;
    pool->fn(pool->ctx, begin, end);
    __atomic_fetch_add(&pool->done_chunks, 1, __ATOMIC_SEQ_CST);
  }
}

static gboolean job_waiting(MoelmThreadPool *pool, gint seen, gint *gen)
{
  *gen = __atomic_load_n(&pool->generation, __ATOMIC_SEQ_CST);
  return (*gen & 1) == 0 && *gen != seen;
}

static gpointer worker_main(gpointer data)
{
  MoelmThreadPool *pool = data;
  gint seen = -1;
  for (;;) {
    gint gen;
    int spins = 0;
    while (!job_waiting(pool, seen, &gen) && !__atomic_load_n(&pool->quit, __ATOMIC_SEQ_CST)) {
      if (++spins < SPIN_ROUNDS) {
        cpu_relax();
        continue;
      }
      g_mutex_lock(&pool->lock);
      __atomic_fetch_add(&pool->sleepers, 1, __ATOMIC_SEQ_CST);
      while (!job_waiting(pool, seen, &gen) && !__atomic_load_n(&pool->quit, __ATOMIC_SEQ_CST))
        g_cond_wait(&pool->wake, &pool->lock);
      __atomic_fetch_sub(&pool->sleepers, 1, __ATOMIC_SEQ_CST);
      g_mutex_unlock(&pool->lock);
      spins = 0;
    }
    if (__atomic_load_n(&pool->quit, __ATOMIC_SEQ_CST))
      return NULL;
    seen = gen;
    __atomic_fetch_add(&pool->inflight, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&pool->generation, __ATOMIC_SEQ_CST) == gen)
      take_chunks(pool);
    __atomic_fetch_sub(&pool->inflight, 1, __ATOMIC_SEQ_CST);
  }
}

MoelmThreadPool *moelm_thread_pool_new(int n_threads)
{
  MoelmThreadPool *pool = g_new0(MoelmThreadPool, 1);
  pool->n_threads = n_threads < 1 ? 1 : n_threads;
  pool->generation = 1; /* no job open */
  g_mutex_init(&pool->lock);
  g_cond_init(&pool->wake);
  pool->workers = g_new0(GThread *, pool->n_threads);
  for (int i = 0; i < pool->n_threads - 1; i++)
    pool->workers[i] = g_thread_new("moelm-cpu", worker_main, pool);
  return pool;
}

void moelm_thread_pool_free(MoelmThreadPool *pool)
{
  if (pool == NULL)
    return;
  g_mutex_lock(&pool->lock);
  __atomic_store_n(&pool->quit, 1, __ATOMIC_SEQ_CST);
  g_cond_broadcast(&pool->wake);
  g_mutex_unlock(&pool->lock);
  for (int i = 0; i < pool->n_threads - 1; i++)
    g_thread_join(pool->workers[i]);
  g_free(pool->workers);
  g_mutex_clear(&pool->lock);
  g_cond_clear(&pool->wake);
  g_free(pool);
}

int moelm_thread_pool_size(const MoelmThreadPool *pool)
{
  return pool == NULL ? 1 : pool->n_threads;
}

/* Spin on a condition, yielding the core after a while (the thread we wait for may need it). */
#define WAIT_UNTIL(cond)                                                                                        \
  do {                                                                                                          \
    int spins_ = 0;                                                                                             \
    while (!(cond)) {                                                                                           \
      if (++spins_ < SPIN_ROUNDS)                                                                               \
        cpu_relax();                                                                                            \
      else                                                                                                      \
        g_thread_yield();                                                                                       \
    }                                                                                                           \
  } while (0)

void moelm_thread_pool_run(MoelmThreadPool *pool, int64_t n, int64_t grain, MoelmParallelFn fn, void *ctx)
{
  if (n <= 0)
    return;
  if (grain < 1)
    grain = 1;
  if (pool == NULL || pool->n_threads == 1 || n <= grain) {
    fn(ctx, 0, n);
    return;
  }
  /* About four chunks per thread balance uneven chunks without much handing out. */
  int64_t chunk = (n + 4 * pool->n_threads - 1) / (4 * pool->n_threads);
  if (chunk < grain)
    chunk = grain;
  pool->fn = fn;
  pool->ctx = ctx;
  pool->n = n;
  pool->chunk = chunk;
  pool->n_chunks = (n + chunk - 1) / chunk;
  __atomic_store_n(&pool->next_chunk, 0, __ATOMIC_SEQ_CST);
  __atomic_store_n(&pool->done_chunks, 0, __ATOMIC_SEQ_CST);
  __atomic_fetch_add(&pool->generation, 1, __ATOMIC_SEQ_CST); /* open: even */
  if (__atomic_load_n(&pool->sleepers, __ATOMIC_SEQ_CST) > 0) {
    g_mutex_lock(&pool->lock);
    g_cond_broadcast(&pool->wake);
    g_mutex_unlock(&pool->lock);
  }

  take_chunks(pool);

  WAIT_UNTIL(__atomic_load_n(&pool->done_chunks, __ATOMIC_SEQ_CST) == pool->n_chunks);
  __atomic_fetch_add(&pool->generation, 1, __ATOMIC_SEQ_CST); /* closed: odd */
  WAIT_UNTIL(__atomic_load_n(&pool->inflight, __ATOMIC_SEQ_CST) == 0);
}
