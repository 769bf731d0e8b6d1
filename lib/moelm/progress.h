/* moelm — a progress line on stderr for work that takes a while (preprocess passes,
 * training, validation, eval-lm): on a terminal one line rewritten in place, otherwise a
 * plain line every few seconds, so `| tee` and log files still see it move.
 *
 *   MoelmProgress p;
 *   moelm_progress_start(&p, "moelm preprocess", "binarizing train.txt", total_mb, "MB");
 *   moelm_progress_update(&p, done_mb, NULL);   (cheap: prints at most a few times a second)
 *   moelm_progress_finish(&p);                  (clears the terminal line)
 *
 * The line reads "PREFIX: WHAT: done/total UNIT (pct%), rate UNIT/s, ETA h:mm:ss[, EXTRA]".
 * It stays quiet for work that ends within `quiet_s` seconds (2 by default, or
 * $MOELM_PROGRESS_QUIET_S). While it is
 * shown, moelm_log lines clear it first (moelm_log_set_progress_line). */
#ifndef MOELM_PROGRESS_H
#define MOELM_PROGRESS_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  char *prefix, *what; /* owned copies */
  char *unit;          /* "MB", "updates", "tokens" */
  double total;        /* units of the whole job; <= 0: unknown (no percentage, no ETA) */
  double quiet_s;      /* nothing is printed before this many seconds */
  double every_s;      /* plain lines (not a terminal): one every this many seconds */
  gboolean tty, shown, enabled;
  double started, last_line;
  double base;         /* units already done at the start (a resumed run): not in the rate */
} MoelmProgress;

/* Start timing a job of `total` units. Printing is enabled unless $MOELM_NO_PROGRESS is set
 * or the log level is above INFO; moelm_progress_set_enabled() overrides that. */
void moelm_progress_start(MoelmProgress *p, const char *prefix, const char *what, double total, const char *unit);
void moelm_progress_set_enabled(MoelmProgress *p, gboolean enabled);
/* `base` units were done before this process began (resumed training): the rate and the ETA
 * count only what this run does. */
void moelm_progress_set_base(MoelmProgress *p, double base);
/* Plain lines (not a terminal) every `seconds` instead of every 5. */
void moelm_progress_set_plain_interval(MoelmProgress *p, double seconds);
/* `done` units are finished; `extra` (may be NULL) is appended, e.g. "loss=4.21". */
void moelm_progress_update(MoelmProgress *p, double done, const char *extra);
/* Clear the line on a terminal and free the strings. Safe to call twice. */
void moelm_progress_finish(MoelmProgress *p);

/* "1:02:03" or "2:03" for a number of seconds (g_free); "?" when unknown or negative. */
char *moelm_progress_format_duration(double seconds);

G_END_DECLS

#endif
