/* Fixtures for the mixture end-to-end suites. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mixture-cli-fixture.h"
#include "moelm-test.h"

static MixtureCliFixture fx;

static void fixture_remove(void)
{
  moelm_test_rmtree(fx.dir);
  g_free(fx.dir);
  g_free(fx.data);
  g_free(fx.mixture);
  g_free(fx.dense);
  g_free(fx.seed_mixture);
}

void mixture_cli_check_fails(const char *const *args, const char *stdin_text, int status, const char *needle)
{
  char *err = NULL;
  const int rc = moelm_test_run_cli(args, stdin_text, NULL, &err);
  CU_ASSERT_EQUAL(rc, status);
  /* the error line, after any warnings about ignored fairseq options */
  const char *line = err ? strstr(err, "error:") : NULL;
  const gboolean one_line = line && strchr(line, '\n') == line + strlen(line) - 1;
  if (rc != status || !one_line || strstr(line, needle) == NULL)
    g_printerr("\n  exit %d, stderr was: %s (expected exit %d, one error line naming %s)\n", rc, err, status, needle);
  CU_ASSERT_TRUE(one_line);
  CU_ASSERT_PTR_NOT_NULL(line ? strstr(line, needle) : NULL);
  g_free(err);
}

/* `moelm train` with the tiny shape; extra options after it. Returns the checkpoint. */
static char *train(const char *name, const char *const *extra, char **log)
{
  char *save = g_build_filename(fx.dir, name, NULL);
  const char *base[] = {"train", fx.data, "--arch", "transformer_lm", "--decoder-layers", "1", "--decoder-embed-dim",
                        "16", "--decoder-ffn-embed-dim", "32", "--decoder-attention-heads", "2", "--tokens-per-sample",
                        "32", "--batch-size", "4", "--lr", "0.001", "--max-update", "3", "--threads", "1",
                        "--no-epoch-checkpoints", "--save-dir", save, NULL};
  char *err = NULL;
  const int rc = moelm_test_run_cli2(base, extra, NULL, NULL, &err);
  if (rc != 0)
    g_printerr("\n  train %s: exit %d: %s\n", name, rc, err);
  /* a failure, but the checkpoint may still be there for the suites' own checks */
  CU_ASSERT_EQUAL(rc, 0);
  if (log)
    *log = err;
  else
    g_free(err);
  char *ckpt = g_build_filename(save, "checkpoint_last.pt", NULL);
  CU_ASSERT_TRUE_FATAL(g_file_test(ckpt, G_FILE_TEST_EXISTS));
  g_free(save);
  return ckpt;
}

const MixtureCliFixture *mixture_cli_fixture(void)
{
  if (fx.dir)
    return &fx;
  fx.dir = moelm_test_tmpdir();
  atexit(fixture_remove);
  char *src = moelm_test_srcpath("data-bin/text/valid.txt");
  char *text = moelm_test_read_file(src, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  gchar **lines = g_strsplit(text, "\n", 61);
  GString *some = g_string_new(NULL);
  for (int i = 0; lines[i] && i < 60; i++)
    g_string_append_printf(some, "%s\n", lines[i]);
  char *txt = g_build_filename(fx.dir, "text.txt", NULL);
  moelm_test_write_file(txt, some->str, some->len);
  fx.data = g_build_filename(fx.dir, "data", NULL);
  const char *pre[] = {"preprocess", "--only-source", "--trainpref", txt, "--validpref", txt, "--testpref", txt,
                       "--destdir", fx.data, NULL};
  char *err = NULL;
  const int rc = moelm_test_run_cli(pre, NULL, NULL, &err);
  if (rc != 0)
    g_printerr("\n  preprocess: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  g_free(err);
  char *log = NULL;
  fx.mixture = train("mix", (const char *const[]){"--task", "language_model_moe", "--method", "hMoElp",
                                                  "--num-experts", "2", "--mean-pool-gating-network",
                                                  "--gating-context", "16", NULL},
                     &log);
  const char *at = strstr(log, "valid on 'valid' subset | loss ");
  CU_ASSERT_PTR_NOT_NULL_FATAL(at);
  fx.mixture_valid = g_ascii_strtod(at + strlen("valid on 'valid' subset | loss "), NULL);
  fx.dense = train("dense", NULL, NULL);
  fx.seed_mixture = train("seed", (const char *const[]){"--task", "language_model_moe", "--user-dir",
                                                       "examples/language_model_moe/src", "--method", "hMoEup",
                                                       "--num-experts", "10", "--mean-pool-gating-network",
                                                       "--mean-pool-gating-network-encoder-dim", "512",
                                                       "--mean-pool-gating-network-dropout", "0.0",
                                                       "--max-target-positions", "512", NULL},
                          NULL);
  g_free(log);
  g_free(txt);
  g_string_free(some, TRUE);
  g_strfreev(lines);
  g_free(text);
  g_free(src);
  return &fx;
}
