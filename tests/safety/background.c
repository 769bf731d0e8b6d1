/* Background CLI runs: a child with a stderr pipe, read with poll(). */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "background.h"
#include "moelm-test.h"

struct BgRun {
  GPid pid;
  int err_fd;
  GString *err;
  gboolean exited;
  int status;
};

BgRun *bg_start(const char *const *args)
{
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(argv, moelm_test_cli_path());
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add(argv, g_strdup(*a));
  g_ptr_array_add(argv, NULL);
  BgRun *run = bg_start_program((const char *const *)argv->pdata);
  g_ptr_array_unref(argv);
  return run;
}

BgRun *bg_start_program(const char *const *argv)
{
  BgRun *run = g_new0(BgRun, 1);
  run->err = g_string_new(NULL);
  GError *error = NULL;
  gboolean ok = g_spawn_async_with_pipes(NULL, (char **)argv, NULL,
                                         G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL |
                                             G_SPAWN_STDOUT_TO_DEV_NULL,
                                         NULL, NULL, &run->pid, NULL, NULL, &run->err_fd, &error);
  if (!ok)
    g_printerr("\n  spawn: %s\n", error->message);
  CU_ASSERT_TRUE_FATAL(ok);
  return run;
}

GPid bg_pid(const BgRun *run) { return run->pid; }

/* Read what is there within `ms` milliseconds; FALSE at end of file. */
static gboolean read_some(BgRun *run, int ms)
{
  struct pollfd p = {run->err_fd, POLLIN, 0};
  if (poll(&p, 1, ms) <= 0)
    return TRUE;
  char buf[4096];
  const ssize_t n = read(run->err_fd, buf, sizeof buf);
  if (n < 0 && errno == EINTR)
    return TRUE;
  if (n <= 0)
    return FALSE;
  g_string_append_len(run->err, buf, n);
  return TRUE;
}

gboolean bg_wait_for(BgRun *run, const char *needle, double seconds)
{
  const gint64 deadline = g_get_monotonic_time() + (gint64)(seconds * G_USEC_PER_SEC);
  while (strstr(run->err->str, needle) == NULL) {
    if (g_get_monotonic_time() > deadline || !read_some(run, 100))
      return strstr(run->err->str, needle) != NULL;
  }
  return TRUE;
}

void bg_signal(BgRun *run, int sig)
{
  CU_ASSERT_EQUAL(kill(run->pid, sig), 0);
}

int bg_finish(BgRun *run, double seconds, char **err)
{
  const gint64 deadline = g_get_monotonic_time() + (gint64)(seconds * G_USEC_PER_SEC);
  int status = 0;
  gboolean killed = FALSE;
  for (;;) {
    const gboolean open = read_some(run, 50);
    const pid_t w = waitpid(run->pid, &status, WNOHANG);
    if ((w == run->pid && !open) || w < 0)
      break;
    if (w == run->pid) { /* exited: drain the pipe */
      while (read_some(run, 50))
        ;
      break;
    }
    if (!killed && g_get_monotonic_time() > deadline) {
      g_printerr("\n  background run did not exit within %.0f s: killed\n", seconds);
      kill(run->pid, SIGKILL);
      killed = TRUE;
    }
    if (!open)
      g_usleep(20000);
  }
  close(run->err_fd);
  g_spawn_close_pid(run->pid);
  moelm_test_check_sanitizers(run->err->str);
  if (err)
    *err = g_string_free(run->err, FALSE);
  else
    g_string_free(run->err, TRUE);
  g_free(run);
  CU_ASSERT_FALSE(killed);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
