/* moelm — monotonic wall-clock timing. */
#ifndef MOELM_TIMER_H
#define MOELM_TIMER_H

#include <glib.h>

G_BEGIN_DECLS

/* Seconds on a monotonic clock (arbitrary origin). */
double moelm_time_now(void);

/* A stopwatch that can be paused and resumed; elapsed() includes the running span. */
typedef struct {
  double total;   /* accumulated seconds of finished spans */
  double started; /* start of the running span, < 0 when stopped */
} MoelmStopwatch;

void moelm_stopwatch_reset(MoelmStopwatch *sw);
void moelm_stopwatch_start(MoelmStopwatch *sw);
void moelm_stopwatch_stop(MoelmStopwatch *sw);
double moelm_stopwatch_elapsed(const MoelmStopwatch *sw);

G_END_DECLS

#endif
