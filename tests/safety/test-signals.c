/* SIGTERM (a cluster's preemption) and SIGINT during training: the update in progress
 * finishes, checkpoint_last.pt is written, stderr says so, the exit status is 128 + the
 * signal, and resuming gives byte for byte the checkpoint an uninterrupted run writes. A
 * second signal ends the process at once. */
#include "config.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

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

MOELM_TEST_SUITE(signals)
{
  CU_add_test(suite, "SIGTERM: exit 143, checkpoint_last.pt resumes byte for byte", test_sigterm);
  CU_add_test(suite, "SIGINT: exit 130, checkpoint_last.pt resumes byte for byte", test_sigint);
  CU_add_test(suite, "a second signal exits at once", test_second_signal_exits_at_once);
}
