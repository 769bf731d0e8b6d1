/* SIGTERM (a cluster's preemption) and SIGINT during training: the update in progress
 * finishes, checkpoint_last.pt is written, stderr says so, the exit status is 128 + the
 * signal, and resuming gives byte for byte the checkpoint an uninterrupted run writes. A
 * second signal ends the process at once. */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "background.h"
#include "cli/cli-helpers.h"
#include "eval/mixture-cli-fixture.h"
#include "moelm-test.h"

/* `train` with the tiny model on short blocks (long epochs: most signals land inside one),
 * every update logged, up to `updates`. */
static GPtrArray *train_args(const char *ck, int64_t updates)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  const char *base[] = {"train", fx->data, "--decoder-layers", "1", "--decoder-embed-dim", "16",
                        "--decoder-ffn-embed-dim", "16", "--decoder-attention-heads", "2", "--tokens-per-sample", "8",
                        "--batch-size", "1", "--threads", "1", "--log-interval", "1", "--no-epoch-checkpoints",
                        "--dropout", "0.1", "--save-dir", ck, "--max-update", NULL};
  for (const char *const *p = base; *p; p++)
    g_ptr_array_add(a, g_strdup(*p));
  g_ptr_array_add(a, g_strdup_printf("%" G_GINT64_FORMAT, updates));
  g_ptr_array_add(a, NULL);
  return a;
}

/* Start a long run, let it train a few updates, send `sig`; returns the update it stopped
 * after (from its last line) and checks the status and what it said. */
static int64_t interrupt_run(const char *ck, int sig)
{
  GPtrArray *args = train_args(ck, 100000000);
  BgRun *run = bg_start((const char *const *)args->pdata);
  CU_ASSERT_TRUE(bg_wait_for(run, "num_updates=20,", 60));
  bg_signal(run, sig);
  char *err = NULL;
  const int rc = bg_finish(run, 60, &err);
  CU_ASSERT_EQUAL(rc, 128 + sig);
  const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
  char *said = g_strdup_printf("received %s", name), *last = g_strdup_printf("interrupted by %s after update ", name);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, said));
  if (g_getenv("SIGNALS_VERBOSE"))
    g_printerr("\n  %s", strstr(err, said));
  const char *at = strstr(err, last);
  CU_ASSERT_PTR_NOT_NULL_FATAL(at);
  const int64_t k = g_ascii_strtoll(at + strlen(last), NULL, 10);
  CU_ASSERT(k >= 20);
  if (rc != 128 + sig || k < 20)
    g_printerr("\n  exit %d, stderr tail: %s\n", rc, err + MAX(0, (long)strlen(err) - 800));
  g_free(said);
  g_free(last);
  g_free(err);
  g_ptr_array_unref(args);
  return k;
}

static void run_to(const char *ck, int64_t updates)
{
  GPtrArray *args = train_args(ck, updates);
  char *err = NULL;
  const int rc = moelm_test_run_cli((const char *const *)args->pdata, NULL, NULL, &err);
  if (rc != 0)
    g_printerr("\n  train: %s\n", err);
  CU_ASSERT_EQUAL(rc, 0);
  g_free(err);
  g_ptr_array_unref(args);
}

/* Interrupt with `sig`, resume to k + 7 updates, and compare with a run never interrupted. */
static void check_interrupt_and_resume(int sig)
{
  char *tmp = moelm_test_tmpdir();
  char *ck = g_build_filename(tmp, "interrupted", NULL), *ref = g_build_filename(tmp, "reference", NULL);
  const int64_t k = interrupt_run(ck, sig);
  char *last = g_build_filename(ck, "checkpoint_last.pt", NULL);
  CU_ASSERT_TRUE_FATAL(g_file_test(last, G_FILE_TEST_EXISTS));
  run_to(ck, k + 7);
  run_to(ref, k + 7);
  char *ref_last = g_build_filename(ref, "checkpoint_last.pt", NULL);
  CU_ASSERT_TRUE(cli_same_file(last, ref_last));
  moelm_test_rmtree(tmp);
  g_free(ref_last);
  g_free(last);
  g_free(ref);
  g_free(ck);
  g_free(tmp);
}

static void test_sigterm(void) { check_interrupt_and_resume(SIGTERM); }
static void test_sigint(void) { check_interrupt_and_resume(SIGINT); }

/* Both signals pending at once (the process is stopped while they are sent): the first asks
 * for a stop, the second exits at once, saving nothing more. */
static void test_second_signal_exits_at_once(void)
{
  char *tmp = moelm_test_tmpdir();
  char *ck = g_build_filename(tmp, "ck", NULL);
  GPtrArray *args = train_args(ck, 100000000);
  BgRun *run = bg_start((const char *const *)args->pdata);
  CU_ASSERT_TRUE(bg_wait_for(run, "num_updates=5,", 60));
  bg_signal(run, SIGSTOP);
  bg_signal(run, SIGINT);
  bg_signal(run, SIGTERM);
  bg_signal(run, SIGCONT);
  char *err = NULL;
  const int rc = bg_finish(run, 60, &err);
  CU_ASSERT(rc == 128 + SIGINT || rc == 128 + SIGTERM);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "second signal: exiting at once"));
  CU_ASSERT_PTR_NULL(strstr(err, "interrupted by"));
  g_free(err);
  g_ptr_array_unref(args);
  moelm_test_rmtree(tmp);
  g_free(ck);
  g_free(tmp);
}

/* `mpirun -np 2 moelm train ...` (NULL without MPI): the argv prefix. */
static GPtrArray *mpirun_prefix(void)
{
#ifdef HAVE_MPI
  char *mpirun = g_find_program_in_path("mpirun");
  if (mpirun == NULL)
    return NULL;
  g_setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", TRUE); /* CI runs as root */
  g_setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", TRUE);
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(a, mpirun);
  g_ptr_array_add(a, g_strdup("--oversubscribe"));
  g_ptr_array_add(a, g_strdup("-np"));
  g_ptr_array_add(a, g_strdup("2"));
  g_ptr_array_add(a, moelm_test_cli_path());
  return a;
#else
  return NULL;
#endif
}

static int run_mpi_to(const char *ck, int64_t updates)
{
  GPtrArray *argv = mpirun_prefix(), *args = train_args(ck, updates);
  for (guint i = 0; i + 1 < args->len; i++)
    g_ptr_array_add(argv, g_strdup(g_ptr_array_index(args, i)));
  g_ptr_array_add(argv, NULL);
  char *err = NULL;
  int status = -1;
  CU_ASSERT_TRUE_FATAL(g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_STDIN_FROM_DEV_NULL |
                                    G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL, &err, &status, NULL));
  moelm_test_check_sanitizers(err);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    g_printerr("\n  mpirun train: %s\n", err);
  g_free(err);
  g_ptr_array_unref(args);
  g_ptr_array_unref(argv);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The pid of rank `rank` among mpirun's children (its OMPI_COMM_WORLD_RANK), 0 if none. */
static GPid rank_pid(GPid mpirun, int rank)
{
  char *want = g_strdup_printf("OMPI_COMM_WORLD_RANK=%d", rank);
  GPid found = 0;
  GDir *proc = g_dir_open("/proc", 0, NULL);
  const char *name;
  while (proc && found == 0 && (name = g_dir_read_name(proc)) != NULL) {
    if (!g_ascii_isdigit(name[0]))
      continue;
    char *stat_path = g_build_filename("/proc", name, "stat", NULL);
    char *env_path = g_build_filename("/proc", name, "environ", NULL);
    char *stat = NULL, *env = NULL;
    gsize env_len = 0;
    if (g_file_get_contents(stat_path, &stat, NULL, NULL) && strrchr(stat, ')')) {
      int ppid = 0;
      if (sscanf(strrchr(stat, ')') + 2, "%*c %d", &ppid) == 1 && ppid == mpirun &&
          g_file_get_contents(env_path, &env, &env_len, NULL))
        for (gsize at = 0; at < env_len; at += strlen(env + at) + 1)
          if (strcmp(env + at, want) == 0)
            found = (GPid)atoi(name);
    }
    g_free(stat);
    g_free(env);
    g_free(stat_path);
    g_free(env_path);
  }
  if (proc)
    g_dir_close(proc);
  g_free(want);
  return found;
}

/* Two ranks, and only rank 1 gets SIGTERM (the hardest case: a rank stopping alone would leave
 * the other waiting in the next all-reduce): they agree on the update to stop after, save
 * together, and the resumed run equals an uninterrupted one. */
static void test_sigterm_one_of_two_ranks(void)
{
  GPtrArray *prefix = mpirun_prefix();
  if (prefix == NULL) {
    g_printerr("[skipped: no MPI] ");
    return;
  }
  char *tmp = moelm_test_tmpdir();
  char *ck = g_build_filename(tmp, "interrupted", NULL), *ref = g_build_filename(tmp, "reference", NULL);
  GPtrArray *args = train_args(ck, 100000000);
  for (guint i = 0; i + 1 < args->len; i++)
    g_ptr_array_add(prefix, g_strdup(g_ptr_array_index(args, i)));
  g_ptr_array_add(prefix, NULL);
  BgRun *run = bg_start_program((const char *const *)prefix->pdata);
  CU_ASSERT_TRUE(bg_wait_for(run, "num_updates=20,", 120));
  const GPid rank1 = rank_pid(bg_pid(run), 1);
  CU_ASSERT_FATAL(rank1 > 0);
  CU_ASSERT_EQUAL(kill(rank1, SIGTERM), 0);
  char *err = NULL;
  CU_ASSERT_NOT_EQUAL(bg_finish(run, 120, &err), 0); /* the ranks exit with 143 */
  const char *at = strstr(err, "interrupted by SIGTERM after update ");
  if (at == NULL)
    g_printerr("\n  mpirun stderr tail: %s\n", err + MAX(0, (long)strlen(err) - 1500));
  CU_ASSERT_PTR_NOT_NULL_FATAL(at);
  CU_ASSERT_PTR_NULL(strstr(err, "MPI_ABORT")); /* the ranks stopped together, nobody was aborted */
  const int64_t k = g_ascii_strtoll(at + strlen("interrupted by SIGTERM after update "), NULL, 10);
  CU_ASSERT_EQUAL(run_mpi_to(ck, k + 5), 0);
  CU_ASSERT_EQUAL(run_mpi_to(ref, k + 5), 0);
  char *a = g_build_filename(ck, "checkpoint_last.pt", NULL), *b = g_build_filename(ref, "checkpoint_last.pt", NULL);
  CU_ASSERT_TRUE(cli_same_file(a, b));
  moelm_test_rmtree(tmp);
  g_free(a);
  g_free(b);
  g_free(err);
  g_ptr_array_unref(args);
  g_ptr_array_unref(prefix);
  g_free(ref);
  g_free(ck);
  g_free(tmp);
}

MOELM_TEST_SUITE(signals)
{
  CU_add_test(suite, "SIGTERM: exit 143, checkpoint_last.pt resumes byte for byte", test_sigterm);
  CU_add_test(suite, "SIGINT: exit 130, checkpoint_last.pt resumes byte for byte", test_sigint);
  CU_add_test(suite, "a second signal exits at once", test_second_signal_exits_at_once);
  CU_add_test(suite, "SIGTERM to one of two ranks: both stop at one update, resume exactly",
              test_sigterm_one_of_two_ranks);
}
