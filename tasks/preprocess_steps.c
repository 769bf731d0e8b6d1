/* moelm preprocess — what the passes over a file share: cutting it at line starts, the
 * CPU time for the debug timings. */
#include "config.h"

#include <time.h>

#include "preprocess_engine.h"

#define PP_STEP ((gsize)1 << 20)
/* Tests set MOELM_PREPROCESS_STEP (bytes) to cut small inputs into many steps. */
#define PP_STEP_ENV "MOELM_PREPROCESS_STEP"

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
