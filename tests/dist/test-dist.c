/* Distributed training (lib/dist, DESIGN §11): the bucketed all-reduce's bookkeeping in one
 * process, and under `mpirun --oversubscribe -np 2` (where this build has MPI and Open MPI's
 * mpirun is installed; skipped otherwise): N ranks with the batch split between them train the
 * same parameters as one rank with the whole batch (to rounding) for a dense model, token MoE
 * (data and expert parallel) and the sequence mixtures; an expert-parallel checkpoint loads on
 * 1 and 2 ranks; a dead rank, a configuration that differs between the ranks and a wrong
 * --distributed-world-size end the job with an error instead of a hang. */
#include "config.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "cli/cli-helpers.h"
#include "moelm-test.h"
#include "moelm/dist.h"
#include "moelm/safetensors.h"

/* ---- the bucket bookkeeping, one process ------------------------------------------------ */

static void test_grad_sync_buckets(void)
{
  GError *error = NULL;
  MoelmComm *comm = moelm_comm_open(&error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(comm);
  MoelmBackend *be = moelm_backend_cpu_new(FALSE, 1, NULL);
  float grads[10000];
  /* 4 KB buckets = 1024 floats: 10 buckets, the last one short */
  MoelmGradSync *s = moelm_grad_sync_new(comm, be, grads, 10000, 4096, &error);
  CU_ASSERT_EQUAL(moelm_grad_sync_n_buckets(s), 10);
  moelm_grad_sync_begin(s);
  /* the backward finishes the arena from the end: 3 "layers" of 2500 floats */
  moelm_grad_sync_ready(s, 7500, 2500); /* buckets 8 and 9 complete, 7 (7168..8191) partly */
  CU_ASSERT_EQUAL(moelm_grad_sync_overlapped(s), 2);
  moelm_grad_sync_ready(s, 5000, 2500); /* 7 completes, 6 and 5 too; 4 (4096..5119) partly */
  CU_ASSERT_EQUAL(moelm_grad_sync_overlapped(s), 5);
  moelm_grad_sync_ready(s, 2500, 2500); /* 4 completes, and 3; 2 (2048..3071) partly */
  CU_ASSERT_EQUAL(moelm_grad_sync_overlapped(s), 7);
  CU_ASSERT_TRUE(moelm_grad_sync_finish(s, &error)); /* 0, 1, 2 start here */
  CU_ASSERT_EQUAL(moelm_grad_sync_overlapped(s), 7);
  /* a new update starts over */
  moelm_grad_sync_begin(s);
  CU_ASSERT_EQUAL(moelm_grad_sync_overlapped(s), 0);
  moelm_grad_sync_ready(s, 0, 10000);
  CU_ASSERT_EQUAL(moelm_grad_sync_overlapped(s), 10);
  CU_ASSERT_TRUE(moelm_grad_sync_finish(s, &error));
  moelm_grad_sync_free(s);
  CU_ASSERT_EQUAL(moelm_comm_size(comm), 1);
  CU_ASSERT_STRING_EQUAL(moelm_comm_name(comm), "single");
  double x[2] = {1, 2};
  CU_ASSERT_TRUE(moelm_comm_allreduce_f64(comm, x, 2, &error));
  CU_ASSERT_EQUAL(x[1], 2.0);
  moelm_backend_free(be);
  moelm_comm_free(comm);
}

/* ---- mpirun ----------------------------------------------------------------------------- */

static char *mpirun_path(void)
{
#ifdef HAVE_MPI
  return g_find_program_in_path("mpirun");
#else
  return NULL;
#endif
}

/* Run `mpirun --oversubscribe -np N moelm ARGS...` (or MPMD when `args2`: -np 1 ARGS : -np 1
 * ARGS2). Returns the exit status; the output in *out (both streams), g_free. */
static int run_mpi(int np, const char *const *args, const char *const *args2, char **out)
{
  char *mpirun = mpirun_path(), *cli = moelm_test_cli_path();
  GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(argv, g_strdup(mpirun));
  g_ptr_array_add(argv, g_strdup("--oversubscribe"));
  for (int part = 0; part < (args2 ? 2 : 1); part++) {
    if (part == 1)
      g_ptr_array_add(argv, g_strdup(":"));
    g_ptr_array_add(argv, g_strdup("-np"));
    g_ptr_array_add(argv, g_strdup_printf("%d", args2 ? 1 : np));
    g_ptr_array_add(argv, g_strdup(cli));
    for (const char *const *a = part == 0 ? args : args2; *a; a++)
      g_ptr_array_add(argv, g_strdup(*a));
  }
  g_ptr_array_add(argv, NULL);
  char *sout = NULL, *serr = NULL;
  int status = -1, code = -1;
  GError *error = NULL;
  if (g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_STDIN_FROM_DEV_NULL, NULL, NULL, &sout, &serr, &status,
                   &error)) {
    GError *exit_error = NULL;
    code = g_spawn_check_wait_status(status, &exit_error) ? 0 : exit_error->domain == G_SPAWN_EXIT_ERROR ? exit_error->code
                                                                                                         : 128;
    g_clear_error(&exit_error);
  } else {
    g_printerr("spawn %s: %s\n", mpirun, error->message);
    g_clear_error(&error);
  }
  *out = g_strconcat(sout ? sout : "", serr ? serr : "", NULL);
  g_free(sout);
  g_free(serr);
  g_ptr_array_free(argv, TRUE);
  g_free(cli);
  g_free(mpirun);
  return code;
}

typedef struct {
  char *tmp, *data;
} Fixture;

static gboolean fixture_init(Fixture *f)
{
  char *mpirun = mpirun_path();
  if (mpirun == NULL) {
    g_printerr("[skipped: no MPI] ");
    return FALSE;
  }
  g_free(mpirun);
  g_setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", TRUE); /* CI runs as root */
  g_setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", TRUE);
  g_setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", TRUE);
  f->tmp = moelm_test_tmpdir();
  char *text = cli_generate_text(60000, 11);
  char *train = cli_write(f->tmp, "train.txt", text);
  f->data = cli_path(f->tmp, "data");
  const char *args[] = {"preprocess", "--only-source", "--trainpref", train, "--validpref", train,
                        "--destdir",  f->data,         NULL};
  CU_ASSERT_EQUAL_FATAL(moelm_test_run_cli(args, NULL, NULL, NULL), 0);
  g_free(train);
  g_free(text);
  return TRUE;
}

static void fixture_clear(Fixture *f)
{
  moelm_test_rmtree(f->tmp);
  g_free(f->tmp);
  g_free(f->data);
}

/* The training command line: a tiny model, 4-token sub-batches... plus `extra` (NULL-ended). */
static GPtrArray *train_args(const Fixture *f, const char *save, const char *const *extra)
{
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  const char *base[] = {"train", f->data, "--arch", "transformer_lm", "--decoder-layers", "2", "--decoder-embed-dim",
                        "32", "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2", "--tokens-per-sample",
                        "32", "--max-tokens", "256", "--lr", "0.002", "--optimizer", "adam", "--log-interval", "5",
                        "--no-epoch-checkpoints", "--threads", "1", "--seed", "5", "--dropout", "0.1",
                        "--bucket-cap-mb", "0.05", NULL};
  for (const char *const *p = base; *p; p++)
    g_ptr_array_add(a, g_strdup(*p));
  g_ptr_array_add(a, g_strdup("--save-dir"));
  g_ptr_array_add(a, cli_path(f->tmp, save));
  for (const char *const *p = extra; p && *p; p++)
    g_ptr_array_add(a, g_strdup(*p));
  g_ptr_array_add(a, NULL);
  return a;
}

/* The parameters of a safetensors file added to t (name → float array), expert numbers
 * shifted by expert_base (< 0: as they are). */
static void add_file(GHashTable *t, const char *path, int expert_base)
{
  MoelmSafetensors *st = moelm_safetensors_open(path, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  for (gsize i = 0; i < moelm_safetensors_n_tensors(st); i++) {
    const MoelmTensorInfo *info = moelm_safetensors_tensor(st, i);
    const char *name = info->name;
    if (g_str_has_prefix(name, "optimizer."))
      continue;
    const guint n = (guint)((info->end - info->begin) / sizeof(float));
    GArray *v = g_array_sized_new(FALSE, FALSE, sizeof(float), n);
    g_array_append_vals(v, moelm_safetensors_data(st, info), n);
    char *key = g_strdup(name);
    const char *at = strstr(name, ".experts.");
    if (at && expert_base >= 0) { /* renumber: local → global */
      const int local = atoi(at + 9);
      const char *rest = strchr(at + 9, '.');
      g_free(key);
      key = g_strdup_printf("%.*s.experts.%d%s", (int)(at - name), name, expert_base + local, rest);
    }
    g_hash_table_insert(t, key, v);
  }
  moelm_safetensors_close(st);
}

/* The parameters of a checkpoint (or of NAME-shared.pt + NAME-rank-R.pt, merged with global
 * expert numbers). */
static GHashTable *load_tensors(const char *path)
{
  GHashTable *t = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_array_unref);
  if (g_file_test(path, G_FILE_TEST_EXISTS)) {
    add_file(t, path, -1);
    return t;
  }
  char *stem = g_strndup(path, strlen(path) - 3);
  char *shared = g_strconcat(stem, "-shared.pt", NULL);
  add_file(t, shared, -1);
  for (int r = 0; r < 2; r++) {
    char *rank = g_strdup_printf("%s-rank-%d.pt", stem, r);
    add_file(t, rank, r * 2); /* 4 experts over 2 ranks */
    g_free(rank);
  }
  g_free(shared);
  g_free(stem);
  return t;
}

/* The largest |a - b| over every parameter; -1 when the tensor sets differ. */
static double max_diff(const char *a, const char *b)
{
  GHashTable *ta = load_tensors(a), *tb = load_tensors(b);
  double worst = g_hash_table_size(ta) == g_hash_table_size(tb) && g_hash_table_size(ta) > 0 ? 0 : -1;
  GHashTableIter it;
  gpointer key, value;
  g_hash_table_iter_init(&it, ta);
  while (worst >= 0 && g_hash_table_iter_next(&it, &key, &value)) {
    GArray *va = value, *vb = g_hash_table_lookup(tb, key);
    if (vb == NULL || vb->len != va->len) {
      worst = -1;
      break;
    }
    for (guint i = 0; i < va->len; i++)
      worst = MAX(worst, fabs((double)g_array_index(va, float, i) - g_array_index(vb, float, i)));
  }
  g_hash_table_unref(ta);
  g_hash_table_unref(tb);
  return worst;
}

/* The train_inner / valid log lines, without the timing fields. */
static char *loss_lines(const char *log)
{
  GString *out = g_string_new(NULL);
  gchar **lines = g_strsplit(log, "\n", -1);
  GRegex *timing = g_regex_new("(wps|ups|wall|train_wall)[=: ][0-9.]+[,|]? ?", 0, 0, NULL);
  for (gchar **l = lines; *l; l++)
    if (strstr(*l, "| train_inner |") || strstr(*l, "| valid on")) {
      char *clean = g_regex_replace(timing, strstr(*l, "epoch"), -1, 0, "", 0, NULL);
      g_string_append_printf(out, "%s\n", clean);
      g_free(clean);
    }
  g_regex_unref(timing);
  g_strfreev(lines);
  return g_string_free(out, FALSE);
}

/* One rank with --update-freq 2 against two ranks with the batches split: same logged losses,
 * parameters equal to rounding (summation order and Adam's division by sqrt(v) make the last
 * bits differ; 20 updates at lr 0.002 stay far below this). */
#define PARAM_TOLERANCE 2e-3

static void compare_one_and_two(const Fixture *f, const char *name, const char *const *model)
{
  char *one = g_strdup_printf("%s-one", name), *two = g_strdup_printf("%s-two", name);
  GPtrArray *extra1 = g_ptr_array_new(), *extra2 = g_ptr_array_new();
  for (const char *const *p = model; *p; p++) {
    g_ptr_array_add(extra1, (gpointer)*p);
    g_ptr_array_add(extra2, (gpointer)*p);
  }
  g_ptr_array_add(extra1, "--update-freq");
  g_ptr_array_add(extra1, "2");
  g_ptr_array_add(extra1, NULL);
  g_ptr_array_add(extra2, NULL);
  GPtrArray *a1 = train_args(f, one, (const char *const *)extra1->pdata);
  GPtrArray *a2 = train_args(f, two, (const char *const *)extra2->pdata);
  char *log1 = NULL, *log2 = NULL;
  const int rc1 = moelm_test_run_cli((const char *const *)a1->pdata, NULL, NULL, &log1);
  const int rc2 = run_mpi(2, (const char *const *)a2->pdata, NULL, &log2);
  CU_ASSERT_EQUAL(rc1, 0);
  CU_ASSERT_EQUAL(rc2, 0);
  if (rc1 != 0 || rc2 != 0)
    g_printerr("\n%s: one rank:\n%s\ntwo ranks:\n%s\n", name, log1, log2);
  CU_ASSERT_PTR_NOT_NULL(strstr(log2, "data parallel over 2 ranks (mpi)"));
  char *l1 = loss_lines(log1), *l2 = loss_lines(log2);
  if (strcmp(l1, l2) != 0)
    g_printerr("\n%s: losses differ:\n%s---\n%s", name, l1, l2);
  CU_ASSERT_STRING_EQUAL(l1, l2);
  CU_ASSERT(strlen(l1) > 0);
  char *c1 = g_build_filename(f->tmp, one, "checkpoint_last.pt", NULL);
  char *c2 = g_build_filename(f->tmp, two, "checkpoint_last.pt", NULL);
  const double d = max_diff(c1, c2);
  g_printerr("[%s: max |delta param| %.2g] ", name, d);
  CU_ASSERT(d >= 0 && d < PARAM_TOLERANCE);
  g_free(c1);
  g_free(c2);
  g_free(l1);
  g_free(l2);
  g_free(log1);
  g_free(log2);
  g_ptr_array_unref(a1);
  g_ptr_array_unref(a2);
  g_ptr_array_unref(extra1);
  g_ptr_array_unref(extra2);
  g_free(one);
  g_free(two);
}

static void test_one_rank_equals_two(void)
{
  Fixture f;
  if (!fixture_init(&f))
    return;
  const char *dense[] = {"--max-update", "20", NULL};
  const char *moe[] = {"--max-update", "20", "--moe-freq", "2", "--moe-expert-count", "4", "--criterion",
                       "moe_cross_entropy", NULL};
  const char *ep[] = {"--max-update", "20", "--moe-freq", "2", "--moe-expert-count", "4", "--criterion",
                      "moe_cross_entropy", "--moe-expert-parallel", NULL};
  const char *hard[] = {"--max-update", "10", "--task", "language_model_moe", "--method", "hMoElp", "--num-experts", "3",
                        "--mean-pool-gating-network", NULL};
  const char *soft[] = {"--max-update", "10", "--task", "language_model_moe", "--method", "sMoEup", "--num-experts", "3",
                        NULL};
  compare_one_and_two(&f, "dense", dense);
  compare_one_and_two(&f, "moe-dp", moe);
  compare_one_and_two(&f, "moe-ep", ep);
  compare_one_and_two(&f, "hMoElp", hard);
  compare_one_and_two(&f, "sMoEup", soft);
  /* the expert-parallel run wrote fairseq's layout: a shared file and one per rank */
  const char *files[] = {"checkpoint_last-shared.pt", "checkpoint_last-rank-0.pt", "checkpoint_last-rank-1.pt"};
  for (gsize i = 0; i < G_N_ELEMENTS(files); i++) {
    char *p = g_build_filename(f.tmp, "moe-ep-two", files[i], NULL);
    CU_ASSERT_TRUE(g_file_test(p, G_FILE_TEST_EXISTS));
    g_free(p);
  }
  char *full = g_build_filename(f.tmp, "moe-ep-two", "checkpoint_last.pt", NULL);
  CU_ASSERT_FALSE(g_file_test(full, G_FILE_TEST_EXISTS));
  /* eval-lm on one process reads it as the 1-rank run's checkpoint: the same loss */
  char *ref = g_build_filename(f.tmp, "moe-ep-one", "checkpoint_last.pt", NULL);
  double loss[2] = {NAN, NAN};
  const char *paths[2] = {full, ref};
  for (int i = 0; i < 2; i++) {
    const char *args[] = {"eval-lm", f.data, "--path", paths[i], "--gen-subset", "valid", "--threads", "1", NULL};
    char *out = NULL;
    CU_ASSERT_EQUAL(moelm_test_run_cli(args, NULL, &out, NULL), 0);
    const char *l = out ? strstr(out, "Loss (base 2): ") : NULL;
    if (l)
      loss[i] = g_ascii_strtod(l + 15, NULL);
    g_free(out);
  }
  CU_ASSERT_TRUE(isfinite(loss[0]) && fabs(loss[0] - loss[1]) < 1e-4);
  /* it resumes on one rank and on two */
  const char *more1[] = {"--max-update", "25", "--moe-freq", "2", "--moe-expert-count", "4", "--criterion",
                         "moe_cross_entropy", NULL};
  const char *more2[] = {"--max-update", "25", "--moe-freq", "2", "--moe-expert-count", "4", "--criterion",
                         "moe_cross_entropy", "--moe-expert-parallel", NULL};
  char *src = g_build_filename(f.tmp, "moe-ep-two", NULL);
  for (int w = 1; w <= 2; w++) {
    char *copy = g_strdup_printf("moe-ep-resume%d", w), *dst = g_build_filename(f.tmp, copy, NULL);
    char *cmd = g_strdup_printf("cp -r '%s' '%s'", src, dst);
    CU_ASSERT_EQUAL(system(cmd), 0);
    GPtrArray *a = train_args(&f, copy, w == 1 ? more1 : more2);
    char *log = NULL;
    const int rc = w == 1 ? moelm_test_run_cli((const char *const *)a->pdata, NULL, NULL, &log)
                          : run_mpi(2, (const char *const *)a->pdata, NULL, &log);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "@ 20 updates")); /* it loaded the checkpoint */
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "num_updates=25"));
    g_free(log);
    g_ptr_array_unref(a);
    g_free(cmd);
    g_free(dst);
    g_free(copy);
  }
  g_free(src);
  g_free(full);
  g_free(ref);
  fixture_clear(&f);
}

static void test_failures_end_the_job(void)
{
  Fixture f;
  if (!fixture_init(&f))
    return;
  /* a wrong --distributed-world-size */
  const char *ws[] = {"--max-update", "2", "--distributed-world-size", "3", NULL};
  GPtrArray *a = train_args(&f, "ws", ws);
  char *log = NULL;
  CU_ASSERT_NOT_EQUAL(run_mpi(2, (const char *const *)a->pdata, NULL, &log), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(log, "--distributed-world-size 3, but 2 processes"));
  g_free(log);
  g_ptr_array_unref(a);
  /* ranks started with different command lines (MPMD: another seed on rank 1) */
  const char *s5[] = {"--max-update", "2", NULL};
  const char *s6[] = {"--max-update", "2", "--seed", "6", NULL};
  GPtrArray *a5 = train_args(&f, "mismatch", s5), *a6 = train_args(&f, "mismatch", s6);
  log = NULL;
  const double t0 = g_get_monotonic_time() / 1e6;
  CU_ASSERT_NOT_EQUAL(run_mpi(2, (const char *const *)a5->pdata, (const char *const *)a6->pdata, &log), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(log, "different training configurations"));
  CU_ASSERT(g_get_monotonic_time() / 1e6 - t0 < 60);
  g_free(log);
  g_ptr_array_unref(a5);
  g_ptr_array_unref(a6);
  /* a rank killed mid-run: mpirun ends the other within seconds; the last checkpoint loads */
  const char *slow[] = {"--max-update", "100000", "--save-interval-updates", "5", "--disable-validation", NULL};
  a = train_args(&f, "killed", slow);
  char *mpirun = mpirun_path(), *cli = moelm_test_cli_path();
  GPtrArray *argv = g_ptr_array_new();
  g_ptr_array_add(argv, mpirun);
  g_ptr_array_add(argv, "-np");
  g_ptr_array_add(argv, "2");
  g_ptr_array_add(argv, cli);
  for (guint i = 0; i + 1 < a->len; i++)
    g_ptr_array_add(argv, g_ptr_array_index(a, i));
  g_ptr_array_add(argv, NULL);
  GPid pid;
  CU_ASSERT_FATAL(g_spawn_async(NULL, (char **)argv->pdata, NULL,
                                G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL, NULL,
                                NULL, &pid, NULL));
  char *ckpt = g_build_filename(f.tmp, "killed", "checkpoint_last.pt", NULL);
  for (int i = 0; i < 600 && !g_file_test(ckpt, G_FILE_TEST_EXISTS); i++)
    g_usleep(100000);
  CU_ASSERT_TRUE(g_file_test(ckpt, G_FILE_TEST_EXISTS));
  /* the rank-1 process: the moelm child of mpirun with OMPI_COMM_WORLD_RANK=1 */
  char *find = g_strdup_printf("for p in $(pgrep -P %d); do tr '\\0' '\\n' < /proc/$p/environ | grep -qx "
                               "OMPI_COMM_WORLD_RANK=1 && echo $p; done",
                               (int)pid);
  char *out = NULL;
  const char *sh[] = {"/bin/sh", "-c", find, NULL};
  g_spawn_sync(NULL, (char **)sh, NULL, 0, NULL, NULL, &out, NULL, NULL, NULL);
  const int victim = out ? atoi(out) : 0;
  CU_ASSERT(victim > 0);
  const double t1 = g_get_monotonic_time() / 1e6;
  if (victim > 0)
    kill(victim, SIGKILL);
  int status = 0;
  gboolean ended = FALSE;
  for (int i = 0; i < 300 && !ended; i++) { /* 30 s at most */
    ended = waitpid(pid, &status, WNOHANG) == pid;
    if (!ended)
      g_usleep(100000);
  }
  if (!ended) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  g_printerr("[dead rank: job ended after %.1f s] ", g_get_monotonic_time() / 1e6 - t1);
  CU_ASSERT_TRUE(ended);
  CU_ASSERT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  g_spawn_close_pid(pid);
  const char *eval[] = {"eval-lm", f.data, "--path", ckpt, "--gen-subset", "valid", "--threads", "1", NULL};
  char *eout = NULL;
  CU_ASSERT_EQUAL(moelm_test_run_cli(eval, NULL, &eout, NULL), 0);
  CU_ASSERT_PTR_NOT_NULL(eout ? strstr(eout, "Perplexity") : NULL);
  g_free(eout);
  g_free(out);
  g_free(find);
  g_free(ckpt);
  g_ptr_array_free(argv, TRUE);
  g_free(cli);
  g_free(mpirun);
  g_ptr_array_unref(a);
  fixture_clear(&f);
}

MOELM_TEST_SUITE(dist)
{
  CU_add_test(suite, "gradient buckets start as the backward finishes them", test_grad_sync_buckets);
  CU_add_test(suite, "mpirun -np 2 trains what one rank trains (dense, MoE DP/EP, mixtures)", test_one_rank_equals_two);
  CU_add_test(suite, "a dead rank, mismatched ranks, a wrong world size: an error, no hang", test_failures_end_the_job);
}
