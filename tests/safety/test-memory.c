/* Models and batches that cannot fit are refused before anything is allocated, with the
 * estimate and what limits it: --moe-expert-count 100000 was killed by the kernel at 24 GB,
 * --num-experts 100000 of a mixture ended in a double free after a failed allocation. */
#include "config.h"

#include <string.h>

#include "crafted.h"
#include "eval/mixture-cli-fixture.h"
#include "moelm-test.h"

static const char *const tiny[] = {"--decoder-layers", "1", "--decoder-embed-dim", "16", "--decoder-ffn-embed-dim",
                                   "16", "--decoder-attention-heads", "2", NULL};

/* `moelm train DATA ARGS...` under `ulimit -v kb` when kb > 0; returns the exit status. */
static int train_limited(long kb, const char *const *args, char **err)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  if (kb > 0) {
    g_ptr_array_add(argv, g_strdup("/bin/sh"));
    g_ptr_array_add(argv, g_strdup("-c"));
    /* OPENBLAS_NUM_THREADS=1: OpenBLAS's own worker threads retry their 128 MB buffer forever
     * under such a limit, and exit() waits for them */
    g_ptr_array_add(argv, g_strdup_printf("ulimit -v %ld && OPENBLAS_NUM_THREADS=1 exec \"$0\" \"$@\"", kb));
  }
  g_ptr_array_add(argv, moelm_test_cli_path());
  g_ptr_array_add(argv, g_strdup("train"));
  g_ptr_array_add(argv, g_strdup(fx->data));
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add(argv, g_strdup(*a));
  g_ptr_array_add(argv, NULL);
  int status = -1;
  CU_ASSERT_TRUE_FATAL(g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_STDIN_FROM_DEV_NULL, NULL, NULL, NULL,
                                    err, &status, NULL));
  g_ptr_array_unref(argv);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void refused(long kb, const char *const *model, const char *const *extra, const char *needle)
{
  char *tmp = moelm_test_tmpdir();
  char *ck = g_build_filename(tmp, "ck", NULL);
  GPtrArray *args = g_ptr_array_new();
  const char *base[] = {"--tokens-per-sample", "16", "--batch-size", "4", "--threads", "1", "--save-dir", ck, NULL};
  for (const char *const *lists[] = {base, model, extra}, *const **l = lists; l < lists + 3; l++)
    for (const char *const *a = *l; a && *a; a++)
      g_ptr_array_add(args, (gpointer)*a);
  g_ptr_array_add(args, NULL);
  char *err = NULL;
  const gint64 t0 = g_get_monotonic_time();
  const int rc = train_limited(kb, (const char *const *)args->pdata, &err);
  const double seconds = (g_get_monotonic_time() - t0) / 1e6;
  const char *needles[] = {"needs at least", needle, NULL};
  crafted_check_error(rc, err, 1, needles);
  CU_ASSERT(seconds < 20); /* refused by arithmetic, not after allocating */
  CU_ASSERT_FALSE(g_file_test(ck, G_FILE_TEST_EXISTS));
  g_free(err);
  g_ptr_array_unref(args);
  moelm_test_rmtree(tmp);
  g_free(ck);
  g_free(tmp);
}

static void test_too_big_for_any_machine(void)
{
  refused(0, NULL, (const char *const[]){"--moe-freq", "1", "--moe-expert-count", "100000", NULL}, "TiB");
  refused(0, NULL, (const char *const[]){"--decoder-layers", "60000", NULL}, "TiB");
  /* the soft M-step trains all K copies of a batch at once (the E-step scores them in chunks,
   * so a hard method's 100000 experts would fit, one slow forward after another) */
  refused(0, tiny,
          (const char *const[]){"--task", "language_model_moe", "--method", "sMoEup", "--num-experts", "100000", NULL},
          "6400000 token rows");
}

static void test_under_ulimit(void)
{
  if (MOELM_TEST_ASAN) /* ASan needs more address space than any limit worth testing */
    return;
  /* about 1.5 GiB of parameters, gradients and moments under a 1 GB address space */
  refused(1000000, NULL,
          (const char *const[]){"--decoder-embed-dim", "1024", "--decoder-ffn-embed-dim", "4096", "--decoder-layers",
                                "8", NULL},
          "ulimit -v");
}

MOELM_TEST_SUITE(memory_estimate)
{
  CU_add_test(suite, "models no machine holds are refused up front", test_too_big_for_any_machine);
  CU_add_test(suite, "a model over the ulimit -v is refused up front", test_under_ulimit);
}
