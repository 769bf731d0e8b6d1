/* moelm — fairseq-style log lines on stderr. */
#include "config.h"

#include <stdarg.h>
#include <time.h>

#include "moelm/log.h"

static MoelmLogLevel log_level = MOELM_LOG_INFO;
static GMutex log_mutex;
static gboolean progress_line = FALSE;

void moelm_log_set_progress_line(gboolean active) { progress_line = active; }

void moelm_log_set_level(MoelmLogLevel level) { log_level = level; }
MoelmLogLevel moelm_log_get_level(void) { return log_level; }

static const char *level_name(MoelmLogLevel level)
{
  switch (level) {
  case MOELM_LOG_DEBUG: return "DEBUG";
  case MOELM_LOG_INFO: return "INFO";
  case MOELM_LOG_WARNING: return "WARNING";
  default: return "ERROR";
  }
}

char *moelm_log_format(MoelmLogLevel level, const char *component, const char *msg)
{
  char stamp[32];
  time_t now = time(NULL);
  struct tm tm;
  localtime_r(&now, &tm);
  strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
  return g_strdup_printf("%s | %s | %s | %s", stamp, level_name(level), component, msg);
}

void moelm_log(MoelmLogLevel level, const char *component, const char *fmt, ...)
{
  if (level < log_level)
    return;
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  char *line = moelm_log_format(level, component, msg);

  g_mutex_lock(&log_mutex);
  fprintf(stderr, "%s%s\n", progress_line ? "\r\033[K" : "", line);
  fflush(stderr);
  g_mutex_unlock(&log_mutex);
  g_free(line);
  g_free(msg);
}
