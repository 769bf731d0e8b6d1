/* A `moelm` run in the background for the safety suites: wait for a line on its stderr,
 * signal it, collect its exit status. */
#ifndef MOELM_TESTS_SAFETY_BACKGROUND_H
#define MOELM_TESTS_SAFETY_BACKGROUND_H

#include <glib.h>

typedef struct BgRun BgRun;

/* Start `moelm ARGS...` (stdin /dev/null, stdout discarded, stderr kept). */
BgRun *bg_start(const char *const *args);
/* The same for any program: argv[0] is its path. */
BgRun *bg_start_program(const char *const *argv);
GPid bg_pid(const BgRun *run);
/* Read its stderr until it contains `needle` (TRUE) or `seconds` pass or it exits (FALSE). */
gboolean bg_wait_for(BgRun *run, const char *needle, double seconds);
void bg_signal(BgRun *run, int sig);
/* Wait for the exit (killing it with SIGKILL after `seconds`); returns the exit status, or
 * 128 + the signal that ended it, and its whole stderr in *err (g_free). Frees run. */
int bg_finish(BgRun *run, double seconds, char **err);

#endif
