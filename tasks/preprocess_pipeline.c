/* moelm preprocess — an ordered parallel pipeline: steps produced by `workers` threads in
 * any order, consumed by the calling thread strictly in step order.
 *
 * The calling thread is one of the workers: while the step it must consume next is not
 * ready it produces the next unclaimed step itself, so `workers` threads are busy, not
 * workers + 1 (with one worker everything runs in the calling thread). Steps are claimed in
 * order and never more than WINDOW_PER_WORKER × workers ahead of the consumer, so the memory
 * held by produced-but-unconsumed steps stays bounded. */
#include "config.h"

#include <stdatomic.h>

#include "moelm/errors.h"
#include "moelm/progress.h"
#include "preprocess_engine.h"

#define WINDOW_PER_WORKER 4

typedef struct {
  const GArray *bounds; /* (n_steps + 1,) gsize: input bytes of each step, for progress */
  guint n_steps;
  PpProduceFunc produce;
  PpConsumeFunc consume;
  gpointer user;
  guint window;

  GMutex lock;
  GCond cond;        /* broadcast on every change below */
  gboolean *ready;   /* (n_steps,) */
  guint next;        /* the next step a worker takes */
  guint consumed;    /* steps consumed */
  guint next_worker; /* worker numbers handed out (0 is the calling thread) */
  gboolean failed;
  GError *error;     /* the first failure */
  atomic_size_t done_bytes;
} Pipeline;

static gsize step_bytes(const Pipeline *pl, guint k)
{
  return g_array_index(pl->bounds, gsize, k + 1) - g_array_index(pl->bounds, gsize, k);
}

static void fail(Pipeline *pl, GError *error)
{
  pl->failed = TRUE;
  if (pl->error == NULL)
    pl->error = error;
  else
    g_clear_error(&error);
  g_cond_broadcast(&pl->cond);
}

static gboolean can_claim(const Pipeline *pl)
{
  return !pl->failed && pl->next < pl->n_steps && pl->next < pl->consumed + pl->window;
}

/* Claim the next step, produce it as worker w, publish it. Called and returns with the lock
 * held. */
static void produce_next(Pipeline *pl, int w)
{
  guint k = pl->next++;
  g_mutex_unlock(&pl->lock);
  GError *error = NULL;
  gboolean ok = pl->produce(k, w, pl->user, &error);
  atomic_fetch_add(&pl->done_bytes, step_bytes(pl, k));
  g_mutex_lock(&pl->lock);
  if (ok) {
    pl->ready[k] = TRUE;
    g_cond_broadcast(&pl->cond);
  } else {
    fail(pl, error);
  }
}

static void worker(gpointer task, gpointer pl_ptr)
{
  Pipeline *pl = pl_ptr;
  g_mutex_lock(&pl->lock);
  int w = (int)pl->next_worker++;
  for (;;) {
    while (!pl->failed && pl->next < pl->n_steps && !can_claim(pl))
      g_cond_wait(&pl->cond, &pl->lock); /* far enough ahead of the consumer */
    if (!can_claim(pl))
      break;
    produce_next(pl, w);
  }
  g_mutex_unlock(&pl->lock);
}

gboolean pp_run_ordered(const char *what, const char *path, const GArray *bounds, int workers,
                        PpProduceFunc produce, PpConsumeFunc consume, gpointer user, GError **error)
{
  Pipeline pl = {
      .bounds = bounds,
      .n_steps = bounds->len - 1,
      .produce = produce,
      .consume = consume,
      .user = user,
      .window = (guint)(WINDOW_PER_WORKER * workers),
      .next_worker = 1,
  };
  pl.ready = g_new0(gboolean, pl.n_steps + 1);
  atomic_init(&pl.done_bytes, 0);
  g_mutex_init(&pl.lock);
  g_cond_init(&pl.cond);
  GThreadPool *pool = NULL;
  if (workers > 1 && (pool = g_thread_pool_new(worker, &pl, workers - 1, FALSE, error)) == NULL) {
    g_free(pl.ready);
    return FALSE;
  }
  for (int w = 1; pool && w < workers; w++)
    g_thread_pool_push(pool, GINT_TO_POINTER(w), NULL);

  MoelmProgress progress;
  char *progress_what = g_strdup_printf("%s %s", what, path);
  moelm_progress_start(&progress, "moelm preprocess", progress_what,
                       (double)g_array_index(bounds, gsize, pl.n_steps) / 1e6, "MB");
  g_free(progress_what);
  g_mutex_lock(&pl.lock);
  for (guint k = 0; k < pl.n_steps && !pl.failed; k++) {
    /* Wait for step k, producing steps here meanwhile. */
    while (!pl.ready[k] && !pl.failed) {
      if (can_claim(&pl)) {
        produce_next(&pl, 0);
      } else {
        gint64 until = g_get_monotonic_time() + 250 * G_TIME_SPAN_MILLISECOND;
        g_cond_wait_until(&pl.cond, &pl.lock, until);
      }
      moelm_progress_update(&progress, (double)atomic_load(&pl.done_bytes) / 1e6, NULL);
    }
    if (pl.failed)
      break;
    g_mutex_unlock(&pl.lock);
    GError *local = NULL;
    gboolean ok = consume(k, user, &local);
    g_mutex_lock(&pl.lock);
    if (!ok)
      fail(&pl, local); /* also stops the workers */
    pl.consumed = k + 1;
    g_cond_broadcast(&pl.cond);
  }
  g_mutex_unlock(&pl.lock);
  if (pool)
    g_thread_pool_free(pool, FALSE, TRUE);
  moelm_progress_finish(&progress);
  g_mutex_clear(&pl.lock);
  g_cond_clear(&pl.cond);
  g_free(pl.ready);
  if (pl.error) {
    g_propagate_error(error, pl.error);
    return FALSE;
  }
  return TRUE;
}
