/* moelm convert --from fairseq: checkpoints written by PyTorch itself (tests/torch/fixtures,
 * made by tests/torch/make-fixtures.py) convert to moelm checkpoints whose per-token
 * log-probabilities match the float64 reference table computed in PyTorch. */
#include "config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/errors.h"
#include "moelm/safetensors.h"
#include "tasks/convert_fairseq.h"
#include "tasks/inference.h"

typedef struct {
  char *model;
  GArray *tokens;  /* int32 */
  GArray *lprobs;  /* double */
} RefRow;

static GPtrArray *read_reference(void)
{
  char *path = moelm_test_srcpath("tests/torch/fixtures/reference.tsv");
  char *text = moelm_test_read_file(path, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  GPtrArray *rows = g_ptr_array_new();
  char **lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++) {
    if (**l == '\0' || **l == '#')
      continue;
    char **f = g_strsplit(*l, "\t", -1);
    CU_ASSERT_EQUAL_FATAL(g_strv_length(f), 4);
    RefRow *r = g_new0(RefRow, 1);
    r->model = g_strdup(f[0]);
    r->tokens = g_array_new(FALSE, FALSE, sizeof(int32_t));
    r->lprobs = g_array_new(FALSE, FALSE, sizeof(double));
    char **t = g_strsplit(f[2], " ", -1), **p = g_strsplit(f[3], " ", -1);
    for (char **x = t; *x; x++) {
      int32_t v = (int32_t)strtol(*x, NULL, 10);
      g_array_append_val(r->tokens, v);
    }
    for (char **x = p; *x; x++) {
      double v = g_ascii_strtod(*x, NULL);
      g_array_append_val(r->lprobs, v);
    }
    CU_ASSERT_EQUAL(r->tokens->len, r->lprobs->len);
    g_strfreev(t);
    g_strfreev(p);
    g_strfreev(f);
    g_ptr_array_add(rows, r);
  }
  g_strfreev(lines);
  g_free(text);
  g_free(path);
  return rows;
}

static void free_reference(GPtrArray *rows)
{
  for (guint i = 0; i < rows->len; i++) {
    RefRow *r = rows->pdata[i];
    g_free(r->model);
    g_array_free(r->tokens, TRUE);
    g_array_free(r->lprobs, TRUE);
    g_free(r);
  }
  g_ptr_array_free(rows, TRUE);
}

/* Convert fixture `model` with `dtype`, load it, score every reference row of that model and
 * return the largest |moelm - reference|. */
static double max_error(const char *dir_name, const char *model, MoelmConvertDtype dtype, MoelmDtype expect_stored)
{
  char *dir = moelm_test_tmpdir(), *out = g_build_filename(dir, "converted.pt", NULL);
  char *rel = g_strdup_printf("tests/torch/fixtures/%s", dir_name), *src = moelm_test_srcpath(rel);
  MoelmConvertOptions opt = {src, out, NULL, dtype};
  MoelmConvertReport rep;
  GError *error = NULL;
  gboolean ok = moelm_convert_fairseq(&opt, &rep, &error);
  if (!ok)
    g_printerr("\n  convert %s: %s\n", model, error->message);
  CU_ASSERT_TRUE_FATAL(ok);
  moelm_convert_report_clear(&rep);

  MoelmSafetensors *st = moelm_safetensors_open(out, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  const MoelmTensorInfo *emb = moelm_safetensors_find(st, "decoder.embed_tokens.weight");
  CU_ASSERT_PTR_NOT_NULL_FATAL(emb);
  CU_ASSERT_EQUAL(emb->dtype, expect_stored);
  moelm_safetensors_close(st);

  MoelmInference *inf = moelm_inference_open(out, src, MOELM_TEST_CPU_SPEC(1), &error);
  if (inf == NULL)
    g_printerr("\n  load %s: %s\n", model, error->message);
  CU_ASSERT_PTR_NOT_NULL_FATAL(inf);
  GPtrArray *rows = read_reference();
  double worst = 0;
  int n_rows = 0;
  for (guint i = 0; i < rows->len; i++) {
    RefRow *r = rows->pdata[i];
    if (strcmp(r->model, model) != 0)
      continue;
    const int T = (int)r->tokens->len;
    int32_t *srcrow = g_new(int32_t, T);
    float *lp = g_new(float, T);
    srcrow[0] = 2;
    for (int t = 1; t < T; t++)
      srcrow[t] = g_array_index(r->tokens, int32_t, t - 1);
    MoelmBatch batch = {1, T, srcrow, (const int32_t *)r->tokens->data};
    CU_ASSERT_TRUE(moelm_model_score(inf->model, &batch, NULL, lp, NULL, &error));
    for (int t = 0; t < T; t++)
      worst = fmax(worst, fabs(lp[t] - g_array_index(r->lprobs, double, t)));
    g_free(srcrow);
    g_free(lp);
    n_rows++;
  }
  CU_ASSERT_EQUAL(n_rows, 4);
  free_reference(rows);
  moelm_inference_free(inf);
  moelm_test_rmtree(dir);
  g_free(dir);
  g_free(out);
  g_free(rel);
  g_free(src);
  return worst;
}

static void check_dir(const char *dir, const char *model, MoelmConvertDtype dtype, MoelmDtype stored, double tol)
{
  const double err = max_error(dir, model, dtype, stored);
  if (!(err <= tol) || g_getenv("MOELM_TEST_VERBOSE"))
    g_printerr("\n  %s as %s: max |moelm - PyTorch| = %.3g (tolerance %.3g)\n", model, moelm_dtype_name(stored), err, tol);
  CU_ASSERT_TRUE(err <= tol);
}

static void check(const char *model, MoelmConvertDtype dtype, MoelmDtype stored, double tol)
{
  check_dir(model, model, dtype, stored, tol);
}

/* fp32 checkpoint with a cfg dict, tied embeddings, sinusoidal positions, GELU. */
static void test_dense_fp32(void) { check("dense", MOELM_CONVERT_DTYPE_KEEP, MOELM_DT_F32, 1e-4); }
/* The same stored as fp16 / bf16: the reference is the fp32 model, so the rounding of the
 * weights shows (fp16: ~1e-3 relative per weight; bf16: ~8e-3). */
static void test_dense_fp16(void) { check("dense", MOELM_CONVERT_DTYPE_FP16, MOELM_DT_F16, 1e-2); }
static void test_dense_bf16(void) { check("dense", MOELM_CONVERT_DTYPE_BF16, MOELM_DT_BF16, 1e-1); }
/* Legacy args Namespace, fp16 weights kept as fp16 (the reference used the same fp16 weights,
 * so only fp32 arithmetic differs), learned positions, separate output projection, ReLU. */
static void test_legacy_fp16(void) { check("legacy", MOELM_CONVERT_DTYPE_KEEP, MOELM_DT_F16, 1e-4); }
static void test_legacy_as_fp32(void) { check("legacy", MOELM_CONVERT_DTYPE_FP32, MOELM_DT_F32, 1e-4); }
/* The dense model with cfg pickled as an omegaconf DictConfig (nodes and all). */
static void test_omegaconf_cfg(void) { check_dir("omegaconf", "dense", MOELM_CONVERT_DTYPE_KEEP, MOELM_DT_F32, 1e-4); }
/* model-shared.pt + model-rank-{0,1}.pt: experts merged in order, top-2 MoE layer. */
static void test_moe_shards(void) { check("moe", MOELM_CONVERT_DTYPE_KEEP, MOELM_DT_F32, 1e-4); }

MOELM_TEST_SUITE(torch_convert)
{
  CU_add_test(suite, "dense fp32 (cfg dict) matches PyTorch", test_dense_fp32);
  CU_add_test(suite, "dense stored as fp16", test_dense_fp16);
  CU_add_test(suite, "dense stored as bf16", test_dense_bf16);
  CU_add_test(suite, "legacy args, fp16 kept", test_legacy_fp16);
  CU_add_test(suite, "legacy args, fp16 widened to fp32", test_legacy_as_fp32);
  CU_add_test(suite, "cfg as an omegaconf DictConfig", test_omegaconf_cfg);
  CU_add_test(suite, "MoE shared + 2 rank shards", test_moe_shards);
}
