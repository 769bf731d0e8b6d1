/* moelm preprocess — the passes over a whole file whose per-thread results combine in any
 * order: the text check (the first bad byte) and the word counts.
 *
 * A pass cuts the file into line-aligned steps of about a megabyte; `workers` tasks on a
 * GThreadPool take the next step until none is left (a slow region does not leave a thread
 * idle), each accumulating into its own result, while the main thread shows progress. A
 * failing step stops the others early. */
#include "config.h"

#include <glib/gstdio.h>

#include <stdatomic.h>
#include <string.h>

#include "moelm/errors.h"
#include "moelm/progress.h"
#include "moelm/log.h"
#include "moelm/timer.h"
#include "preprocess_engine.h"

/* One step of work on bytes [start, end) of the mapped file (both line starts), by the
 * task numbered `worker`. */
typedef gboolean (*PpStepFunc)(int worker, const char *data, gsize start, gsize end, gpointer user,
                               GError **error);

typedef struct {
  const char *path;
  const char *what; /* for the progress line: "binarizing", ... */
  int workers;
  const char *data; /* the whole file, read-only */
  gsize len;
  GArray *bounds; /* (n_steps + 1,) gsize step boundaries */
  guint n_steps;
  atomic_uint next_step;
  PpStepFunc step;
  gpointer user;

  atomic_size_t done_bytes;
  atomic_int failed;
  GMutex lock;
  GCond cond;
  int finished;  /* tasks that returned, under lock */
  GError *error; /* the first failure, under lock */
} PpPass;

static void run_task(gpointer task, gpointer pass_ptr)
{
  PpPass *pass = pass_ptr;
  int w = GPOINTER_TO_INT(task) - 1;
  GError *error = NULL;
  gboolean ok = TRUE;
  while (ok && !atomic_load(&pass->failed)) {
    guint k = atomic_fetch_add(&pass->next_step, 1);
    if (k >= pass->n_steps)
      break;
    gsize start = g_array_index(pass->bounds, gsize, k), end = g_array_index(pass->bounds, gsize, k + 1);
    ok = pass->step(w, pass->data, start, end, pass->user, &error);
    atomic_fetch_add(&pass->done_bytes, end - start);
  }
  g_mutex_lock(&pass->lock);
  if (!ok) {
    atomic_store(&pass->failed, 1);
    if (pass->error == NULL)
      pass->error = error;
    else
      g_clear_error(&error);
  }
  pass->finished++;
  g_cond_signal(&pass->cond);
  g_mutex_unlock(&pass->lock);
}

/* Map `path`, cut it into steps, run the tasks and wait for them with progress. */
static gboolean run_pass(const char *path, const char *what, int workers, PpStepFunc step, gpointer user,
                         GError **error)
{
  GMappedFile *map = g_mapped_file_new(path, FALSE, NULL);
  if (map == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: cannot open or map the file", path);
    return FALSE;
  }
  PpPass pass = {
      .path = path,
      .what = what,
      .workers = workers,
      .data = g_mapped_file_get_contents(map),
      .len = g_mapped_file_get_length(map),
      .step = step,
      .user = user,
  };
  pass.bounds = pp_cut_steps(pass.data, pass.len);
  pass.n_steps = pass.bounds->len - 1;
  atomic_init(&pass.next_step, 0);
  atomic_init(&pass.done_bytes, 0);
  atomic_init(&pass.failed, 0);
  g_mutex_init(&pass.lock);
  g_cond_init(&pass.cond);
  double wall0 = moelm_time_now(), cpu0 = pp_cpu_seconds();
  GThreadPool *pool = g_thread_pool_new(run_task, &pass, workers, FALSE, error);
  gboolean ok = pool != NULL;
  if (ok) {
    for (int w = 0; w < workers; w++)
      g_thread_pool_push(pool, GINT_TO_POINTER(w + 1), NULL);
    MoelmProgress progress;
    char *progress_what = g_strdup_printf("%s %s", what, path);
    moelm_progress_start(&progress, "moelm preprocess", progress_what, (double)pass.len / 1e6, "MB");
    g_free(progress_what);
    g_mutex_lock(&pass.lock);
    while (pass.finished < workers) {
      gint64 until = g_get_monotonic_time() + 250 * G_TIME_SPAN_MILLISECOND;
      if (!g_cond_wait_until(&pass.cond, &pass.lock, until))
        moelm_progress_update(&progress, (double)atomic_load(&pass.done_bytes) / 1e6, NULL);
    }
    g_mutex_unlock(&pass.lock);
    moelm_progress_finish(&progress);
    g_thread_pool_free(pool, FALSE, TRUE);
    moelm_debug("moelm.preprocess", "%s %s: %.3f s, %.3f s of CPU, %d workers", what, path,
                moelm_time_now() - wall0, pp_cpu_seconds() - cpu0, workers);
    if (pass.error) {
      g_propagate_error(error, pass.error);
      ok = FALSE;
    }
  }
  g_mutex_clear(&pass.lock);
  g_cond_clear(&pass.cond);
  g_array_unref(pass.bounds);
  g_mapped_file_unref(map);
  return ok;
}

/* ---- UTF-8 ---- */

/* Length of the valid UTF-8 prefix of [p, p+n): strict like Python's decoder (no overlong
 * forms, no surrogates, nothing above U+10FFFF), and without NUL bytes, which the binarizer
 * refuses too. */
static gsize utf8_valid_prefix(const unsigned char *p, gsize n)
{
  gsize i = 0;
  while (i < n) {
    /* ASCII fast path, 8 bytes at a time: no high bit and no zero byte. */
    while (i + 8 <= n) {
      guint64 word;
      memcpy(&word, p + i, 8);
      const guint64 ones = G_GUINT64_CONSTANT(0x0101010101010101), highs = G_GUINT64_CONSTANT(0x8080808080808080);
      if ((word & highs) || ((word - ones) & ~word & highs))
        break;
      i += 8;
    }
    if (i >= n)
      break;
    unsigned char c = p[i];
    if (c == 0)
      return i;
    if (c < 0x80) {
      i++;
      continue;
    }
    gsize need;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf)
      need = 1;
    else if (c >= 0xe0 && c <= 0xef) {
      need = 2;
      if (c == 0xe0)
        lo = 0xa0;
      else if (c == 0xed)
        hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      need = 3;
      if (c == 0xf0)
        lo = 0x90;
      else if (c == 0xf4)
        hi = 0x8f;
    } else
      return i;
    if (i + need >= n)
      return i; /* truncated sequence */
    if (p[i + 1] < lo || p[i + 1] > hi)
      return i;
    for (gsize k = 2; k <= need; k++)
      if ((p[i + k] & 0xc0) != 0x80)
        return i;
    i += need + 1;
  }
  return n;
}

typedef struct {
  gsize *first_bad; /* (workers,) the first invalid byte in the steps of each task, or G_MAXSIZE */
} Utf8Check;

/* Never fails: every step is checked, so the error found is the first in the file whatever
 * the scheduling. */
static gboolean utf8_step(int worker, const char *data, gsize start, gsize end, gpointer user, GError **error)
{
  Utf8Check *check = user;
  if (start > check->first_bad[worker])
    return TRUE; /* this task already has an earlier one */
  gsize ok = utf8_valid_prefix((const unsigned char *)data + start, end - start);
  if (ok < end - start)
    check->first_bad[worker] = MIN(check->first_bad[worker], start + ok);
  return TRUE;
}

gboolean pp_check_text(const char *path, int workers, GError **error)
{
  Utf8Check check = {g_new(gsize, workers)};
  for (int w = 0; w < workers; w++)
    check.first_bad[w] = G_MAXSIZE;
  gboolean ok = run_pass(path, "checking", workers, utf8_step, &check, error);
  gsize bad = G_MAXSIZE;
  for (int w = 0; ok && w < workers; w++)
    bad = MIN(bad, check.first_bad[w]);
  g_free(check.first_bad);
  if (!ok || bad == G_MAXSIZE)
    return ok;

  /* Report the line (1-based, universal newlines) and the byte. Only on failure. */
  GMappedFile *map = g_mapped_file_new(path, FALSE, NULL);
  const char *data = map ? g_mapped_file_get_contents(map) : NULL;
  gsize len = map ? g_mapped_file_get_length(map) : 0, pos = 0, line_len = 0, line_no = 0;
  const char *line = NULL;
  while (bad < len && moelm_next_line(data, len, &pos, &line, &line_len)) {
    line_no++;
    if (pos > bad)
      break;
  }
  if (bad < len && line && data[bad] == '\0')
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT,
                "%s:%" G_GSIZE_FORMAT ": NUL byte in text (byte %" G_GSIZE_FORMAT " of the line)", path, line_no,
                (gsize)(data + bad - line) + 1);
  else if (bad < len && line)
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT,
                "%s:%" G_GSIZE_FORMAT ": invalid UTF-8 (byte 0x%02x at byte %" G_GSIZE_FORMAT " of the line)", path,
                line_no, (unsigned char)data[bad], (gsize)(data + bad - line) + 1);
  else
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: invalid UTF-8", path);
  if (map)
    g_mapped_file_unref(map);
  return FALSE;
}

/* ---- word counts ---- */

typedef struct {
  const char *path;
  gsize len;                /* the file's size (the pass maps it once) */
  MoelmDictionary **counts; /* (workers,) one counter per task */
} CountJob;

static gboolean count_step(int worker, const char *data, gsize start, gsize end, gpointer user, GError **error)
{
  CountJob *job = user;
  return moelm_count_words_in_buffer(job->path, data, job->len, start, end, NULL, NULL, job->counts[worker], error);
}

MoelmDictionary *pp_count_words(const char *path, int workers, GError **error)
{
  GStatBuf st;
  CountJob job = {path, g_stat(path, &st) == 0 ? (gsize)st.st_size : 0, g_new(MoelmDictionary *, workers)};
  for (int w = 0; w < workers; w++)
    job.counts[w] = moelm_dictionary_new();
  gboolean ok = run_pass(path, "counting words in", workers, count_step, &job, error);
  /* The first task's counter becomes the result (the counts are what merging every counter
   * into a new dictionary gives, without copying the first one). */
  double merge0 = moelm_time_now();
  for (int w = 1; w < workers; w++) {
    if (ok)
      moelm_dictionary_update(job.counts[0], job.counts[w]);
    moelm_dictionary_free(job.counts[w]);
  }
  moelm_debug("moelm.preprocess", "merging %d word counts of %s: %.3f s", workers, path, moelm_time_now() - merge0);
  MoelmDictionary *counts = job.counts[0];
  g_free(job.counts);
  if (!ok) {
    moelm_dictionary_free(counts);
    return NULL;
  }
  return counts;
}
