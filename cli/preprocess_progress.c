/* moelm preprocess — what the passes over a file share: cutting it at line starts, the
 * progress line on stderr, CPU time for the debug timings. */
#include "config.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "moelm/timer.h"
#include "preprocess.h"

#define PP_STEP ((gsize)1 << 20)
/* Tests set MOELM_PREPROCESS_STEP (bytes) to cut small inputs into many steps. */
#define PP_STEP_ENV "MOELM_PREPROCESS_STEP"
#define PP_PROGRESS_AFTER_S 2.0      /* quiet for passes that take less than this */
#define PP_PROGRESS_LINE_EVERY_S 5.0 /* when stderr is not a terminal */

gsize pp_step_bytes(void)
{
  const char *env = g_getenv(PP_STEP_ENV);
  guint64 v = env ? g_ascii_strtoull(env, NULL, 10) : 0;
  return v > 0 ? (gsize)v : PP_STEP;
}

gsize pp_next_line_start(const char *data, gsize limit, gsize from)
{
  gsize i = from;
  while (i < limit && data[i] != '\n' && data[i] != '\r')
    i++;
  if (i >= limit)
    return limit;
  i += (data[i] == '\r' && i + 1 < limit && data[i + 1] == '\n') ? 2 : 1;
  return MIN(i, limit);
}

GArray *pp_cut_steps(const char *data, gsize len)
{
  gsize step = pp_step_bytes();
  GArray *bounds = g_array_new(FALSE, FALSE, sizeof(gsize));
  gsize pos = 0;
  g_array_append_val(bounds, pos);
  while (pos < len) {
    pos = len - pos > step ? pp_next_line_start(data, len, pos + step) : len;
    g_array_append_val(bounds, pos);
  }
  return bounds;
}

double pp_cpu_seconds(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void pp_progress_start(PpProgress *pr, const char *what, const char *path, gsize total)
{
  *pr = (PpProgress){.what = what, .path = path, .total = total, .tty = isatty(STDERR_FILENO),
                     .started = moelm_time_now()};
}

void pp_progress_update(PpProgress *pr, gsize done_bytes)
{
  double now = moelm_time_now(), elapsed = now - pr->started;
  if (elapsed < PP_PROGRESS_AFTER_S)
    return;
  if (!pr->tty && pr->shown && now - pr->last_line < PP_PROGRESS_LINE_EVERY_S)
    return;
  double done = (double)done_bytes / 1e6, total = (double)pr->total / 1e6;
  fprintf(stderr, "%smoelm preprocess: %s %s: %.1f/%.1f MB (%.0f%%), %.1f MB/s%s", pr->tty ? "\r" : "", pr->what,
          pr->path, done, total, total > 0 ? 100.0 * done / total : 100.0, done / elapsed,
          pr->tty ? "\033[K" : "\n");
  fflush(stderr);
  pr->shown = TRUE;
  pr->last_line = now;
}

void pp_progress_finish(PpProgress *pr)
{
  if (pr->shown && pr->tty) {
    fputs("\r\033[K", stderr); /* leave the terminal line clean for the log lines */
    fflush(stderr);
  }
}
