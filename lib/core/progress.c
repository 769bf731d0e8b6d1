/* moelm — the progress line (see lib/moelm/progress.h). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <unistd.h>

#include "moelm/log.h"
#include "moelm/progress.h"
#include "moelm/timer.h"

#define PROGRESS_QUIET_S 2.0
#define PROGRESS_PLAIN_EVERY_S 5.0
#define PROGRESS_TTY_EVERY_S 0.2 /* a terminal line is rewritten at most this often */

void moelm_progress_start(MoelmProgress *p, const char *prefix, const char *what, double total, const char *unit)
{
  *p = (MoelmProgress){
      .prefix = g_strdup(prefix),
      .what = g_strdup(what),
      .unit = g_strdup(unit ? unit : ""),
      .total = total,
      .quiet_s = PROGRESS_QUIET_S,
      .every_s = PROGRESS_PLAIN_EVERY_S,
      .tty = isatty(STDERR_FILENO),
      .enabled = g_getenv("MOELM_NO_PROGRESS") == NULL && moelm_log_get_level() <= MOELM_LOG_INFO,
      .started = moelm_time_now(),
  };
  /* scripts and tests that want every line from the start: MOELM_PROGRESS_QUIET_S=0 */
  const char *quiet = g_getenv("MOELM_PROGRESS_QUIET_S");
  if (quiet && *quiet)
    p->quiet_s = g_ascii_strtod(quiet, NULL);
}

void moelm_progress_set_enabled(MoelmProgress *p, gboolean enabled) { p->enabled = enabled; }
void moelm_progress_set_base(MoelmProgress *p, double base) { p->base = base; }
void moelm_progress_set_plain_interval(MoelmProgress *p, double seconds) { p->every_s = seconds; }

char *moelm_progress_format_duration(double seconds)
{
  if (!isfinite(seconds) || seconds < 0)
    return g_strdup("?");
  long s = lround(seconds);
  if (s >= 3600)
    return g_strdup_printf("%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
  return g_strdup_printf("%ld:%02ld", s / 60, s % 60);
}

void moelm_progress_update(MoelmProgress *p, double done, const char *extra)
{
  if (!p->enabled || p->prefix == NULL)
    return;
  double now = moelm_time_now(), elapsed = now - p->started;
  if (elapsed < p->quiet_s)
    return;
  if (p->shown && now - p->last_line < (p->tty ? PROGRESS_TTY_EVERY_S : p->every_s))
    return;
  double rate = elapsed > 0 ? (done - p->base) / elapsed : 0;
  GString *line = g_string_new(NULL);
  g_string_append_printf(line, "%s: %s: ", p->prefix, p->what);
  /* counts (updates, blocks) as integers; small amounts (MB) with one decimal */
  const gboolean whole = done == floor(done) && p->total == floor(p->total);
  int digits = whole || p->total >= 100 || done >= 100 ? 0 : 1;
  if (p->total > 0) {
    g_string_append_printf(line, "%.*f/%.*f %s (%.0f%%)", digits, done, digits, p->total, p->unit,
                           100.0 * MIN(done, p->total) / p->total);
  } else {
    g_string_append_printf(line, "%.*f %s", digits, done, p->unit);
  }
  g_string_append_printf(line, ", %.*f %s/s", rate >= 100 ? 0 : rate >= 1 ? 1 : 3, rate, p->unit);
  if (p->total > 0) {
    char *eta = moelm_progress_format_duration(rate > 0 ? (p->total - done) / rate : NAN);
    g_string_append_printf(line, ", ETA %s", eta);
    g_free(eta);
  }
  if (extra && *extra)
    g_string_append_printf(line, ", %s", extra);
  fprintf(stderr, "%s%s%s", p->tty ? "\r" : "", line->str, p->tty ? "\033[K" : "\n");
  fflush(stderr);
  g_string_free(line, TRUE);
  if (p->tty)
    moelm_log_set_progress_line(TRUE);
  p->shown = TRUE;
  p->last_line = now;
}

void moelm_progress_finish(MoelmProgress *p)
{
  if (p->shown && p->tty) {
    fputs("\r\033[K", stderr); /* leave the terminal line clean for what follows */
    fflush(stderr);
    moelm_log_set_progress_line(FALSE);
  }
  p->shown = FALSE;
  g_clear_pointer(&p->prefix, g_free);
  g_clear_pointer(&p->what, g_free);
  g_clear_pointer(&p->unit, g_free);
}
