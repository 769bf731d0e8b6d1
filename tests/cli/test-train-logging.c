/* moelm train's logging as fairseq users rely on it: --tensorboard-logdir writes event files
 * (read back by the spec reader) holding the logged scalars at their update; a run stopped by
 * --max-update inside an epoch still prints the epoch's `train` line. */
#include "config.h"

#include <string.h>

#include "moelm-test.h"
#include "moelm/tensorboard.h"

typedef struct {
  int loss_events;
  int64_t last_step;
  gboolean saw_num_updates;
} Scalars;

static void on_scalar(void *data, const char *tag, float value, int64_t step, double wall)
{
  Scalars *s = data;
  (void)wall;
  if (strcmp(tag, "loss") == 0 && value > 0) {
    s->loss_events++;
    s->last_step = step;
  }
  if (strcmp(tag, "num_updates") == 0)
    s->saw_num_updates = TRUE;
}

/* The scalars of the one event file in DIR. */
static Scalars read_dir(const char *dir)
{
  Scalars s = {0};
  GDir *d = g_dir_open(dir, 0, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  const char *name;
  int files = 0;
  while ((name = g_dir_read_name(d)) != NULL) {
    if (!g_str_has_prefix(name, "events.out.tfevents."))
      continue;
    files++;
    char *path = g_build_filename(dir, name, NULL);
    GError *err = NULL;
    CU_ASSERT_TRUE(moelm_tb_read(path, on_scalar, &s, &err));
    g_clear_error(&err);
    g_free(path);
  }
  g_dir_close(d);
  CU_ASSERT_EQUAL(files, 1);
  return s;
}

static void test_tensorboard_and_epoch_line(void)
{
  char *tmp = moelm_test_tmpdir();
  char *data = moelm_test_srcpath("data-bin/demo");
  char *save = g_build_filename(tmp, "ckpt", NULL), *tb = g_build_filename(tmp, "tb", NULL);
  const char *args[] = {"train", data, "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim", "16",
                        "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2", "--tokens-per-sample", "32",
                        "--batch-size", "4", "--lr", "0.001", "--max-update", "6", "--save-dir", save, "--threads", "1",
                        "--no-epoch-checkpoints", "--log-interval", "2", "--tensorboard-logdir", tb, NULL};
  char *out = NULL, *err = NULL;
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(args, NULL, &out, &err), 0);
  /* stopped by --max-update inside epoch 1: its average still printed, after validation */
  const char *valid = strstr(err, "| valid | epoch 001 | valid on 'valid' subset");
  const char *end = strstr(err, "end of epoch 1 (average epoch stats below)");
  CU_ASSERT_PTR_NOT_NULL(valid);
  CU_ASSERT_PTR_NOT_NULL_FATAL(end);
  CU_ASSERT_TRUE(valid < end);
  CU_ASSERT_PTR_NOT_NULL(strstr(end, "| train | epoch 001 | loss "));
  CU_ASSERT_PTR_NOT_NULL(strstr(end, "| num_updates 6 |"));
  /* train_inner: a loss at updates 2, 4, 6; train and valid: one each, at update 6 */
  char *dir = g_build_filename(tb, "train_inner", NULL);
  Scalars s = read_dir(dir);
  CU_ASSERT_EQUAL(s.loss_events, 3);
  CU_ASSERT_EQUAL(s.last_step, 6);
  CU_ASSERT_FALSE(s.saw_num_updates); /* fairseq leaves num_updates out: it is the step */
  g_free(dir);
  const char *once[] = {"train", "valid"};
  for (int i = 0; i < 2; i++) {
    dir = g_build_filename(tb, once[i], NULL);
    s = read_dir(dir);
    CU_ASSERT_EQUAL(s.loss_events, 1);
    CU_ASSERT_EQUAL(s.last_step, 6);
    g_free(dir);
  }
  g_free(out);
  g_free(err);
  moelm_test_rmtree(tmp);
  g_free(tmp);
  g_free(save);
  g_free(tb);
  g_free(data);
}

MOELM_TEST_SUITE(train_logging)
{
  CU_add_test(suite, "--tensorboard-logdir event files; the epoch line at --max-update",
              test_tensorboard_and_epoch_line);
}
