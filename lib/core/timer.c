/* moelm — monotonic timers. */
#include "config.h"

#include "moelm/timer.h"

double moelm_time_now(void) { return (double)g_get_monotonic_time() * 1e-6; }

void moelm_stopwatch_reset(MoelmStopwatch *sw)
{
  sw->total = 0.0;
  sw->started = -1.0;
}

void moelm_stopwatch_start(MoelmStopwatch *sw)
{
  if (sw->started < 0)
    sw->started = moelm_time_now();
}

void moelm_stopwatch_stop(MoelmStopwatch *sw)
{
  if (sw->started >= 0) {
    sw->total += moelm_time_now() - sw->started;
    sw->started = -1.0;
  }
}

double moelm_stopwatch_elapsed(const MoelmStopwatch *sw)
{
  return sw->total + (sw->started >= 0 ? moelm_time_now() - sw->started : 0.0);
}
