/* --save-dir belongs to one run: a second training on it fails at start naming the first's
 * pid (both used to exit 0, one overwriting the other's checkpoints); a read-only one fails
 * at start (it failed at the first save, after the work); the temp files of a killed run are
 * removed by the next one, and nothing else is. */
#include "config.h"

#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "background.h"
#include "cli/cli-helpers.h"
#include "crafted.h"
#include "eval/mixture-cli-fixture.h"
#include "moelm-test.h"
#include "moelm/fileio.h"

#define TRAIN_ARGS(data, ck, updates)                                                                                  \
  "train", (data), "--decoder-layers", "1", "--decoder-embed-dim", "16", "--decoder-ffn-embed-dim", "16",            \
      "--decoder-attention-heads", "2", "--tokens-per-sample", "16", "--batch-size", "2", "--max-update", (updates), \
      "--threads", "1", "--log-interval", "1", "--save-dir", (ck)

static void test_second_run_is_refused(void)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  char *tmp = moelm_test_tmpdir();
  char *ck = g_build_filename(tmp, "ck", NULL);
  const char *first[] = {TRAIN_ARGS(fx->data, ck, "1000000"), "--disable-validation", NULL};
  BgRun *a = bg_start(first);
  CU_ASSERT_TRUE(bg_wait_for(a, "num_updates=2,", 60));
  /* the second run on the same directory: refused at start, naming the first */
  char *pid = g_strdup_printf("pid %d", (int)bg_pid(a));
  const char *second[] = {TRAIN_ARGS(fx->data, ck, "3"), NULL};
  const char *needles[] = {ck, "in use by another training run", pid, NULL};
  crafted_check_fails(second, 1, needles);
  /* kill -9 leaves the lock file, but not the lock: the next run goes ahead */
  bg_signal(a, SIGKILL);
  CU_ASSERT_EQUAL(bg_finish(a, 30, NULL), 128 + SIGKILL);
  char *lock = g_build_filename(ck, ".moelm-train.lock", NULL);
  CU_ASSERT_TRUE(g_file_test(lock, G_FILE_TEST_EXISTS));
  const char *third[] = {TRAIN_ARGS(fx->data, ck, "2"), "--restore-file", "none.pt", NULL};
  char *err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(third, NULL, NULL, &err), 1); /* --restore-file not found: but not locked */
  CU_ASSERT_PTR_NULL(strstr(err, "in use"));
  g_free(err);
  const char *fourth[] = {TRAIN_ARGS(fx->data, ck, "2"), "--reset-optimizer", "--reset-dataloader", NULL};
  CU_ASSERT_EQUAL(moelm_test_run_cli(fourth, NULL, NULL, &err), 0);
  g_free(err);
  CU_ASSERT_FALSE(g_file_test(lock, G_FILE_TEST_EXISTS)); /* removed on a normal exit */
  moelm_test_rmtree(tmp);
  g_free(lock);
  g_free(pid);
  g_free(ck);
  g_free(tmp);
}

/* Run as nobody when root (root writes anywhere; nobody cannot write a 0555 directory). */
static void drop_root(gpointer unused)
{
  if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
    _exit(99);
}

static void test_read_only_save_dir(void)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  char *tmp = moelm_test_tmpdir();
  g_chmod(tmp, 0755);
  /* a copy of the data-bin anyone can read (the fixture's lives in a 0700 directory) */
  char *data = g_build_filename(tmp, "data", NULL);
  g_mkdir(data, 0755);
  const char *const names[] = {"dict.txt", "train.bin", "train.idx", "valid.bin", "valid.idx"};
  for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
    char *from = g_build_filename(fx->data, names[i], NULL), *to = g_build_filename(data, names[i], NULL);
    gsize len = 0;
    char *bytes = moelm_test_read_file(from, &len);
    moelm_test_write_file(to, bytes, len);
    g_chmod(to, 0644);
    g_free(bytes);
    g_free(from);
    g_free(to);
  }
  char *ck = g_build_filename(tmp, "ck", NULL);
  g_mkdir(ck, 0555);
  char *cli = moelm_test_cli_path();
  const char *argv[] = {cli, TRAIN_ARGS(data, ck, "2"), NULL};
  char *err = NULL;
  int status = -1;
  CU_ASSERT_TRUE_FATAL(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDIN_FROM_DEV_NULL | G_SPAWN_STDOUT_TO_DEV_NULL,
                                    drop_root, NULL, NULL, &err, &status, NULL));
  const char *needles[] = {ck, "not writable", NULL};
  crafted_check_error(WIFEXITED(status) ? WEXITSTATUS(status) : -1, err, 1, needles);
  /* at start: before any update was trained */
  CU_ASSERT_PTR_NULL(strstr(err, "num_updates"));
  g_free(err);
  g_chmod(ck, 0755);
  moelm_test_rmtree(tmp);
  g_free(cli);
  g_free(ck);
  g_free(data);
  g_free(tmp);
}

static void test_stale_temps_removed(void)
{
  const MixtureCliFixture *fx = mixture_cli_fixture();
  char *tmp = moelm_test_tmpdir();
  char *ck = g_build_filename(tmp, "ck", NULL);
  g_mkdir(ck, 0755);
  /* what kill -9 during a save leaves (moelm_create_temp's names), and look-alikes to keep */
  const char *const stale[] = {"checkpoint_last.pt.tmp-Ab3dE9", "checkpoint7.pt.tmp-zzzzzz",
                               "checkpoint_1_40.pt.tmp-000000"};
  const char *const keep[] = {"notes.pt.tmp-abc", "mydata.tmp-abcdef", "checkpoint_last.pt.tmp-ab_de!",
                              "checkpoint.pt.tmp-abcdefg", "README"};
  for (gsize i = 0; i < G_N_ELEMENTS(stale); i++) {
    char *p = g_build_filename(ck, stale[i], NULL);
    moelm_test_write_file(p, "torn", 4);
    g_free(p);
  }
  for (gsize i = 0; i < G_N_ELEMENTS(keep); i++) {
    char *p = g_build_filename(ck, keep[i], NULL);
    moelm_test_write_file(p, "mine", 4);
    g_free(p);
  }
  char *sub = g_build_filename(ck, "dir.pt.tmp-abcdef", NULL); /* a directory: not a temp file */
  g_mkdir(sub, 0755);
  const char *args[] = {TRAIN_ARGS(fx->data, ck, "1"), NULL};
  char *err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, NULL, &err), 0);
  for (gsize i = 0; i < G_N_ELEMENTS(stale); i++) {
    char *p = g_build_filename(ck, stale[i], NULL);
    CU_ASSERT_FALSE(g_file_test(p, G_FILE_TEST_EXISTS));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, stale[i])); /* and it says so */
    g_free(p);
  }
  for (gsize i = 0; i < G_N_ELEMENTS(keep); i++) {
    char *p = g_build_filename(ck, keep[i], NULL);
    CU_ASSERT_TRUE(cli_file_equals(p, "mine", 4));
    g_free(p);
  }
  CU_ASSERT_TRUE(g_file_test(sub, G_FILE_TEST_IS_DIR));
  g_free(err);
  moelm_test_rmtree(tmp);
  g_free(sub);
  g_free(ck);
  g_free(tmp);
}

/* preprocess: the work directories of a killed run are removed, look-alikes kept; a
 * --destdir another preprocess holds is refused. */
static void test_preprocess_destdir(void)
{
  char *tmp = moelm_test_tmpdir();
  char *txt = g_build_filename(tmp, "text.txt", NULL);
  moelm_test_write_file(txt, "a b c\nb c d\n", 12);
  char *dest = g_build_filename(tmp, "data", NULL);
  g_mkdir(dest, 0755);
  char *stale = g_build_filename(dest, ".moelm-preprocess-AbC123", NULL);
  g_mkdir(stale, 0755);
  char *torn = g_build_filename(stale, "train.bin", NULL);
  moelm_test_write_file(torn, "torn", 4);
  const char *const keep[] = {".moelm-preprocess-abc", ".moelm-preprocess-abcdefg", ".moelm-preprocess-"};
  for (gsize i = 0; i < G_N_ELEMENTS(keep); i++) {
    char *p = g_build_filename(dest, keep[i], NULL);
    g_mkdir(p, 0755);
    g_free(p);
  }
  char *file_like = g_build_filename(dest, ".moelm-preprocess-Zz9Zz9", NULL); /* a file, not a directory */
  moelm_test_write_file(file_like, "mine", 4);
  const char *args[] = {"preprocess", "--only-source", "--trainpref", txt, "--destdir", dest, NULL};
  /* held by another run: refused, naming it */
  MoelmDirLock *held = moelm_dir_lock(dest, ".moelm-preprocess.lock", "test", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(held);
  char *pid = g_strdup_printf("pid %d", (int)getpid());
  const char *needles[] = {dest, "in use by another preprocess run", pid, NULL};
  crafted_check_fails(args, 1, needles);
  CU_ASSERT_TRUE(g_file_test(stale, G_FILE_TEST_IS_DIR)); /* not cleaned by a run that did not get the lock */
  moelm_dir_unlock(held);
  char *err = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, NULL, &err), 0);
  CU_ASSERT_FALSE(g_file_test(stale, G_FILE_TEST_EXISTS));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, ".moelm-preprocess-AbC123"));
  for (gsize i = 0; i < G_N_ELEMENTS(keep); i++) {
    char *p = g_build_filename(dest, keep[i], NULL);
    CU_ASSERT_TRUE(g_file_test(p, G_FILE_TEST_IS_DIR));
    g_free(p);
  }
  CU_ASSERT_TRUE(cli_file_equals(file_like, "mine", 4));
  char *dict = g_build_filename(dest, "dict.txt", NULL), *lock = g_build_filename(dest, ".moelm-preprocess.lock", NULL);
  CU_ASSERT_TRUE(g_file_test(dict, G_FILE_TEST_EXISTS));
  CU_ASSERT_FALSE(g_file_test(lock, G_FILE_TEST_EXISTS));
  g_free(err);
  moelm_test_rmtree(tmp);
  g_free(lock);
  g_free(dict);
  g_free(pid);
  g_free(file_like);
  g_free(torn);
  g_free(stale);
  g_free(dest);
  g_free(txt);
  g_free(tmp);
}

MOELM_TEST_SUITE(save_dir)
{
  CU_add_test(suite, "a second training on the same --save-dir fails at start", test_second_run_is_refused);
  CU_add_test(suite, "a read-only --save-dir fails at start", test_read_only_save_dir);
  CU_add_test(suite, "temp files of a killed run are removed, nothing else", test_stale_temps_removed);
  CU_add_test(suite, "preprocess: a locked --destdir, stale work directories", test_preprocess_destdir);
}
