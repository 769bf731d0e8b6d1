/* moelm preprocess — binarizing one text file with several threads, in file order.
 *
 * The file is cut into line-aligned steps of about a megabyte. Worker threads take steps
 * in order (never more than WINDOW_PER_WORKER × workers ahead of the output) and encode
 * each into an in-memory buffer of token ids and line sizes; the calling thread appends the
 * steps to the one output dataset strictly in order, while the workers go on with later
 * steps. The output is the same bytes for every number of workers, no temporary per-worker
 * datasets are written, re-read and copied, and a slow part of the file (long lines,
 * SentencePiece) does not leave the other workers idle. */
#include "config.h"

#include <stdatomic.h>
#include <string.h>

#include "moelm/errors.h"
#include "moelm/indexed_dataset.h"
#include "moelm/log.h"
#include "moelm/timer.h"
#include "preprocess.h"

#define WINDOW_PER_WORKER 4

typedef struct {
  GArray *tokens; /* (n_tok,) int32 ids of the step's lines, back to back */
  GArray *sizes;  /* (n_lines,) int32 tokens per line */
  int64_t n_replaced;
  gboolean ready; /* under Pipeline.lock */
} StepOut;

typedef struct {
  const char *path;
  const char *data; /* the whole file */
  gsize len;
  GArray *bounds; /* (n_steps + 1,) gsize step boundaries, at line starts */
  guint n_steps;
  const MoelmDictionary *dict;
  MoelmLineTokenizer tokenizer;
  gpointer tokenizer_data;
  StepOut *out; /* (n_steps,) */
  guint window;

  GMutex lock;
  GCond cond;     /* broadcast on every change below */
  guint next;     /* the next step a worker takes */
  guint written;  /* steps appended to the output */
  gboolean failed;
  GError *error;  /* the first failure */
  atomic_size_t done_bytes;
} Pipeline;

static gsize step_start(const Pipeline *pl, guint k) { return g_array_index(pl->bounds, gsize, k); }

/* "PATH:LINE: " for an error at byte `offset` (only on failure: counts lines from the top). */
static void prefix_line(GError **error, const Pipeline *pl, gsize offset)
{
  gsize pos = 0, len, line_no = 0;
  const char *line;
  while (moelm_next_line(pl->data, pl->len, &pos, &line, &len)) {
    line_no++;
    if (pos > offset)
      break;
  }
  moelm_error_prefix(error, "%s:%" G_GSIZE_FORMAT, pl->path, line_no);
}

static gboolean encode_step(Pipeline *pl, guint k, GError **error)
{
  StepOut *o = &pl->out[k];
  gsize pos = step_start(pl, k), end = step_start(pl, k + 1), len;
  o->tokens = g_array_sized_new(FALSE, FALSE, sizeof(int32_t), (guint)((end - pos) / 4 + 16));
  o->sizes = g_array_new(FALSE, FALSE, sizeof(int32_t));
  const char *line;
  while (moelm_next_line(pl->data, end, &pos, &line, &len)) {
    guint before = o->tokens->len;
    if (!moelm_encode_line(pl->dict, line, len, pl->tokenizer, pl->tokenizer_data, o->tokens, &o->n_replaced,
                           error)) {
      prefix_line(error, pl, (gsize)(line - pl->data));
      return FALSE;
    }
    int32_t size = (int32_t)(o->tokens->len - before);
    g_array_append_val(o->sizes, size);
  }
  atomic_fetch_add(&pl->done_bytes, step_start(pl, k + 1) - step_start(pl, k));
  return TRUE;
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

static void worker(gpointer task, gpointer pl_ptr)
{
  Pipeline *pl = pl_ptr;
  g_mutex_lock(&pl->lock);
  for (;;) {
    while (!pl->failed && pl->next < pl->n_steps && pl->next >= pl->written + pl->window)
      g_cond_wait(&pl->cond, &pl->lock); /* far enough ahead of the output: wait */
    if (pl->failed || pl->next >= pl->n_steps)
      break;
    guint k = pl->next++;
    g_mutex_unlock(&pl->lock);
    GError *error = NULL;
    gboolean ok = encode_step(pl, k, &error);
    g_mutex_lock(&pl->lock);
    if (ok) {
      pl->out[k].ready = TRUE;
      g_cond_broadcast(&pl->cond);
    } else {
      fail(pl, error);
    }
  }
  g_mutex_unlock(&pl->lock);
}

/* Append step k to the output and free its buffers. */
static gboolean write_step(Pipeline *pl, guint k, MoelmIndexedDatasetBuilder *builder, MoelmBinarizeStats *stats,
                           GError **error)
{
  StepOut *o = &pl->out[k];
  const int32_t *tokens = (const int32_t *)(void *)o->tokens->data;
  gsize offset = 0;
  gboolean ok = TRUE;
  for (guint i = 0; ok && i < o->sizes->len; i++) {
    gsize n = (gsize)g_array_index(o->sizes, int32_t, i);
    ok = moelm_indexed_dataset_builder_add(builder, tokens + offset, n, error);
    offset += n;
  }
  stats->n_seq += o->sizes->len;
  stats->n_tok += (int64_t)o->tokens->len;
  stats->n_replaced += o->n_replaced;
  g_clear_pointer(&o->tokens, g_array_unref);
  g_clear_pointer(&o->sizes, g_array_unref);
  return ok;
}

/* Run the steps: encoded by the pool (or here, with one worker), written here in order. */
static gboolean run_steps(Pipeline *pl, int workers, MoelmIndexedDatasetBuilder *builder,
                          MoelmBinarizeStats *stats, GError **error)
{
  GThreadPool *pool = NULL;
  if (workers > 1 && (pool = g_thread_pool_new(worker, pl, workers, FALSE, error)) == NULL)
    return FALSE;
  for (int w = 0; pool && w < workers; w++)
    g_thread_pool_push(pool, GINT_TO_POINTER(w + 1), NULL);
  PpProgress progress;
  pp_progress_start(&progress, "binarizing", pl->path, pl->len);
  gboolean ok = TRUE;
  GError *write_error = NULL;
  for (guint k = 0; ok && k < pl->n_steps; k++) {
    if (pool == NULL) {
      ok = encode_step(pl, k, &write_error);
    } else {
      g_mutex_lock(&pl->lock);
      while (!pl->out[k].ready && !pl->failed) {
        gint64 until = g_get_monotonic_time() + 250 * G_TIME_SPAN_MILLISECOND;
        if (!g_cond_wait_until(&pl->cond, &pl->lock, until))
          pp_progress_update(&progress, atomic_load(&pl->done_bytes));
      }
      ok = !pl->failed;
      g_mutex_unlock(&pl->lock);
    }
    ok = ok && write_step(pl, k, builder, stats, &write_error);
    g_mutex_lock(&pl->lock);
    if (write_error)
      fail(pl, g_steal_pointer(&write_error)); /* also stops the workers */
    pl->written = k + 1;
    g_cond_broadcast(&pl->cond);
    g_mutex_unlock(&pl->lock);
    if (pool == NULL)
      pp_progress_update(&progress, atomic_load(&pl->done_bytes));
  }
  if (pool)
    g_thread_pool_free(pool, FALSE, TRUE);
  pp_progress_finish(&progress);
  if (pl->error) {
    g_propagate_error(error, g_steal_pointer(&pl->error));
    return FALSE;
  }
  return TRUE;
}

gboolean pp_binarize(const char *path, const char *out_prefix, int workers, const MoelmDictionary *dict,
                     MoelmLineTokenizer tokenizer, gpointer tokenizer_data, MoelmBinarizeStats *stats,
                     GError **error)
{
  memset(stats, 0, sizeof *stats);
  GMappedFile *map = g_mapped_file_new(path, FALSE, NULL);
  if (map == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: cannot open or map the file", path);
    return FALSE;
  }
  MoelmIndexedDatasetBuilder *builder =
      moelm_indexed_dataset_builder_new(out_prefix, moelm_idx_best_dtype(moelm_dictionary_size(dict)), error);
  if (builder == NULL) {
    g_mapped_file_unref(map);
    return FALSE;
  }
  Pipeline pl = {
      .path = path,
      .data = g_mapped_file_get_contents(map),
      .len = g_mapped_file_get_length(map),
      .dict = dict,
      .tokenizer = tokenizer,
      .tokenizer_data = tokenizer_data,
      .window = (guint)(WINDOW_PER_WORKER * workers),
  };
  pl.bounds = pp_cut_steps(pl.data, pl.len);
  pl.n_steps = pl.bounds->len - 1;
  pl.out = g_new0(StepOut, pl.n_steps);
  atomic_init(&pl.done_bytes, 0);
  g_mutex_init(&pl.lock);
  g_cond_init(&pl.cond);

  double wall0 = moelm_time_now(), cpu0 = pp_cpu_seconds();
  gboolean ok = run_steps(&pl, workers, builder, stats, error);
  moelm_debug("moelm.preprocess", "binarizing %s: %.3f s, %.3f s of CPU, %d workers, %u steps", path,
              moelm_time_now() - wall0, pp_cpu_seconds() - cpu0, workers, pl.n_steps);
  if (ok) {
    double t0 = moelm_time_now();
    ok = moelm_indexed_dataset_builder_finish(builder, error); /* frees the builder either way */
    moelm_debug("moelm.preprocess", "writing %s.idx: %.3f s", out_prefix, moelm_time_now() - t0);
  } else {
    moelm_indexed_dataset_builder_abort(builder);
  }
  for (guint k = 0; k < pl.n_steps; k++) {
    if (pl.out[k].tokens)
      g_array_unref(pl.out[k].tokens);
    if (pl.out[k].sizes)
      g_array_unref(pl.out[k].sizes);
  }
  g_free(pl.out);
  g_array_unref(pl.bounds);
  g_mutex_clear(&pl.lock);
  g_cond_clear(&pl.cond);
  g_mapped_file_unref(map);
  return ok;
}
