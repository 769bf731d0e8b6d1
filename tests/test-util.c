/* moelm — helpers shared by the test suites: paths, temp dirs, running the CLI. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <unistd.h>

#include <glib/gstdio.h>

#include "moelm-test.h"

static char *tree_path(const char *env, const char *relative)
{
  const char *root = g_getenv(env);
  return g_build_filename(root && *root ? root : ".", relative, NULL);
}

char *moelm_test_srcpath(const char *relative) { return tree_path("MOELM_SRCDIR", relative); }
char *moelm_test_buildpath(const char *relative) { return tree_path("MOELM_BUILDDIR", relative); }
char *moelm_test_cli_path(void) { return moelm_test_buildpath("cli/moelm"); }

char *moelm_test_tmpdir(void)
{
  GError *error = NULL;
  char *dir = g_dir_make_tmp("moelm-test-XXXXXX", &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(dir);
  return dir;
}

void moelm_test_rmtree(const char *path)
{
  if (path == NULL)
    return;
  GDir *dir = g_dir_open(path, 0, NULL);
  if (dir) {
    const char *name;
    while ((name = g_dir_read_name(dir)) != NULL) {
      char *child = g_build_filename(path, name, NULL);
      if (g_file_test(child, G_FILE_TEST_IS_DIR) && !g_file_test(child, G_FILE_TEST_IS_SYMLINK))
        moelm_test_rmtree(child);
      else
        g_unlink(child);
      g_free(child);
    }
    g_dir_close(dir);
  }
  g_rmdir(path);
}

void moelm_test_write_file(const char *path, const void *data, gsize len)
{
  GError *error = NULL;
  gboolean ok = g_file_set_contents(path, data, (gssize)len, &error);
  if (!ok)
    g_printerr("write %s: %s\n", path, error->message);
  CU_ASSERT_TRUE_FATAL(ok);
}

int moelm_test_spm_spaces(const char *s, gsize len)
{
  if (len % 3 != 0)
    return 0;
  for (gsize k = 0; k < len; k += 3)
    if (memcmp(s + k, "\xe2\x96\x81", 3) != 0)
      return 0;
  return (int)(len / 3);
}

char *moelm_test_read_file(const char *path, gsize *len)
{
  char *contents = NULL;
  if (!g_file_get_contents(path, &contents, len, NULL))
    return NULL;
  return contents;
}

int moelm_test_run_cli(const char *const *args, const char *stdin_text, char **out, char **err)
{
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  char *stdin_path = NULL;
  if (stdin_text) {
    /* Feed stdin from a temp file through sh, so large outputs cannot deadlock a pipe. */
    int fd = g_file_open_tmp("moelm-stdin-XXXXXX", &stdin_path, NULL);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    moelm_test_write_file(stdin_path, stdin_text, strlen(stdin_text));
    g_ptr_array_add(argv, g_strdup("/bin/sh"));
    g_ptr_array_add(argv, g_strdup("-c"));
    g_ptr_array_add(argv, g_strdup("f=$1; shift; exec \"$@\" < \"$f\""));
    g_ptr_array_add(argv, g_strdup("sh"));
    g_ptr_array_add(argv, g_strdup(stdin_path));
  }
  /* A hung run fails its test instead of holding make check until CI's limit: coreutils'
   * timeout ends it (exit 124) after MOELM_TEST_CLI_TIMEOUT seconds (900). */
  if (g_file_test("/usr/bin/timeout", G_FILE_TEST_IS_EXECUTABLE)) {
    const char *limit = g_getenv("MOELM_TEST_CLI_TIMEOUT");
    g_ptr_array_add(argv, g_strdup("/usr/bin/timeout"));
    g_ptr_array_add(argv, g_strdup("--kill-after=10"));
    g_ptr_array_add(argv, g_strdup(limit && *limit ? limit : "900"));
  }
  g_ptr_array_add(argv, moelm_test_cli_path());
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add(argv, g_strdup(*a));
  g_ptr_array_add(argv, NULL);

  GError *error = NULL;
  char *sout = NULL, *serr = NULL;
  int status = -1, code = -1;
  if (g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_STDIN_FROM_DEV_NULL, NULL, NULL, &sout,
                   &serr, &status, &error)) {
    GError *exit_error = NULL;
    if (g_spawn_check_wait_status(status, &exit_error))
      code = 0;
    else
      code = exit_error->domain == G_SPAWN_EXIT_ERROR ? exit_error->code : 128;
    g_clear_error(&exit_error);
  } else {
    g_printerr("spawn %s: %s\n", (char *)argv->pdata[0], error->message);
    g_clear_error(&error);
  }
  if (stdin_path) {
    g_unlink(stdin_path);
    g_free(stdin_path);
  }
  g_ptr_array_free(argv, TRUE);
  if (code == 124)
    g_printerr("\n  a CLI run did not end within its time limit (MOELM_TEST_CLI_TIMEOUT)\n");
  moelm_test_check_sanitizers(serr);
  if (out)
    *out = sout ? sout : g_strdup("");
  else
    g_free(sout);
  if (err)
    *err = serr ? serr : g_strdup("");
  else
    g_free(serr);
  return code;
}

void moelm_test_check_sanitizers(const char *err)
{
  static const char *const reports[] = {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                                        "WARNING: ThreadSanitizer"};
  for (gsize i = 0; err && i < G_N_ELEMENTS(reports); i++)
    if (strstr(err, reports[i])) {
      g_printerr("\n  a CLI run reported \"%s\":\n%s\n", reports[i], err);
      CU_FAIL("sanitizer report from a CLI run");
      return;
    }
}

int moelm_test_run_cli2(const char *const *base, const char *const *extra, const char *stdin_text, char **out,
                        char **err)
{
  GPtrArray *a = g_ptr_array_new();
  for (const char *const *p = base; *p; p++)
    g_ptr_array_add(a, (gpointer)*p);
  for (const char *const *p = extra; p && *p; p++)
    g_ptr_array_add(a, (gpointer)*p);
  g_ptr_array_add(a, NULL);
  int rc = moelm_test_run_cli((const char *const *)a->pdata, stdin_text, out, err);
  g_ptr_array_unref(a);
  return rc;
}
