/* Helpers for the CLI end-to-end suites: files, directory listings, stderr checks. */
#ifndef MOELM_TESTS_CLI_HELPERS_H
#define MOELM_TESTS_CLI_HELPERS_H

#include <glib.h>

/* DIR/NAME (g_free). */
char *cli_path(const char *dir, const char *name);
/* Write a NUL-terminated text to DIR/NAME; returns the path (g_free). */
char *cli_write(const char *dir, const char *name, const char *text);
/* The sorted names in DIR, hidden ones included; NULL when DIR does not exist. */
GPtrArray *cli_list_dir(const char *dir);
/* Number of '\n'-terminated lines (a last line without '\n' counts too). */
int cli_count_lines(const char *text);
/* Whether two files exist and hold the same bytes (prints the first difference if not). */
gboolean cli_same_file(const char *a, const char *b);
/* Whether a file's bytes equal `expected`. */
gboolean cli_file_equals(const char *path, const void *expected, gsize len);
/* The value after "| KEY " in a simple-format log line (NAN when the field is absent). */
double cli_log_field(const char *line, const char *key);
/* The lines of a log that contain `needle`, in order (g_strfreev). */
char **cli_log_lines(const char *log, const char *needle);
/* How many times `needle` occurs in `text`. */
int cli_count(const char *text, const char *needle);
/* A deterministic text of about `bytes` bytes: words from a Zipf-like vocabulary (some
 * non-ASCII), random line lengths, empty lines, some "\r\n" endings. g_free. */
char *cli_generate_text(gsize bytes, guint32 seed);

#endif
