/* moelm — logging to stderr in fairseq's layout:
 *   2026-11-23 05:10:00 | INFO | moelm.preprocess | message
 * Library code logs through here (never stdout); the CLI sets the level. */
#ifndef MOELM_LOG_H
#define MOELM_LOG_H

#include <stdio.h>
#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  MOELM_LOG_DEBUG = 0,
  MOELM_LOG_INFO = 1,
  MOELM_LOG_WARNING = 2,
  MOELM_LOG_ERROR = 3,
  MOELM_LOG_QUIET = 4
} MoelmLogLevel;

void moelm_log_set_level(MoelmLogLevel level);
MoelmLogLevel moelm_log_get_level(void);

/* The line moelm_log writes, without the newline: "DATE TIME | LEVEL | component | msg" (g_free).
 * For a CLI that prints fairseq's log lines on stdout (eval-lm). */
char *moelm_log_format(MoelmLogLevel level, const char *component, const char *msg);

/* While a "\r" progress line is on the terminal, log lines first clear it ("\r\033[K"), so
 * the two never run into each other. */
void moelm_log_set_progress_line(gboolean active);

/* --log-file: from now on every line moelm_log writes is also appended to `path` (opened
 * for appending, line-buffered, as fairseq's FileHandler). The error names the flag and file. */
gboolean moelm_log_open_file(const char *path, GError **error);
void moelm_log_close_file(void);
/* Append a line written elsewhere (eval-lm's stdout lines) to the log file, if one is open. */
void moelm_log_to_file(const char *line);
/* Drop the lines of these components (NULL-terminated; NULL: none), e.g. the training
 * statistics ("train_inner", "train", "valid") under --log-format none. */
void moelm_log_mute(const char *const *components);

void moelm_log(MoelmLogLevel level, const char *component, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

#define moelm_info(component, ...) moelm_log(MOELM_LOG_INFO, (component), __VA_ARGS__)
#define moelm_warn(component, ...) moelm_log(MOELM_LOG_WARNING, (component), __VA_ARGS__)
#define moelm_debug(component, ...) moelm_log(MOELM_LOG_DEBUG, (component), __VA_ARGS__)

G_END_DECLS

#endif
