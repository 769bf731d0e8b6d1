/* moelm — fairseq-style log lines on stderr. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "moelm/log.h"

static MoelmLogLevel log_level = MOELM_LOG_INFO;
static GMutex log_mutex;
static gboolean progress_line = FALSE;
static FILE *log_file;         /* --log-file: every line also appended here */
static char **muted_components; /* --log-format none: the stats lines' components */

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

gboolean moelm_log_open_file(const char *path, GError **error)
{
  FILE *f = fopen(path, "a");
  if (f == NULL) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(errno), "--log-file %s: %s", path, g_strerror(errno));
    return FALSE;
  }
  setvbuf(f, NULL, _IOLBF, 0);
  g_mutex_lock(&log_mutex);
  if (log_file)
    fclose(log_file);
  log_file = f;
  g_mutex_unlock(&log_mutex);
  return TRUE;
}

void moelm_log_close_file(void)
{
  g_mutex_lock(&log_mutex);
  if (log_file)
    fclose(log_file);
  log_file = NULL;
  g_mutex_unlock(&log_mutex);
}

void moelm_log_to_file(const char *line)
{
  g_mutex_lock(&log_mutex);
  if (log_file)
    fprintf(log_file, "%s\n", line);
  g_mutex_unlock(&log_mutex);
}

void moelm_log_mute(const char *const *components)
{
  g_strfreev(muted_components);
  muted_components = components ? g_strdupv((char **)components) : NULL;
}

static gboolean muted(const char *component)
{
  return muted_components != NULL && g_strv_contains((const char *const *)muted_components, component);
}

void moelm_log(MoelmLogLevel level, const char *component, const char *fmt, ...)
{
  if (level < log_level || muted(component))
    return;
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  char *line = moelm_log_format(level, component, msg);

  g_mutex_lock(&log_mutex);
  fprintf(stderr, "%s%s\n", progress_line ? "\r\033[K" : "", line);
  fflush(stderr);
  if (log_file)
    fprintf(log_file, "%s\n", line);
  g_mutex_unlock(&log_mutex);
  g_free(line);
  g_free(msg);
}
