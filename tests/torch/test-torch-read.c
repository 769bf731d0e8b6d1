/* Reading PyTorch files without Python: the restricted unpickler on valid and malformed
 * pickles, the zip container and tensors on hand-made archives (tests/torch/fixtures/bad,
 * written by make-fixtures.py with Python's pickle and zipfile), convert's refusals (nothing
 * written), and the fp16/bf16 conversions. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/errors.h"
#include "moelm/half.h"
#include "moelm/pickle.h"
#include "moelm/torch_load.h"
#include "tasks/convert_fairseq.h"

typedef struct {
  const char *what;
  const char *bytes;
  gsize len;            /* 0: strlen */
  const char *expected; /* substring of the error; NULL: accepted */
} PickleCase;

#define P(s) s, sizeof(s) - 1

static const PickleCase pickle_cases[] = {
  {"dict", P("\x80\x02}q\x00(X\x01\x00\x00\x00" "aq\x01K\x01u."), NULL},
  {"list, tuple, memo", P("\x80\x02]q\x00(K\x01K\x02" "e\x85q\x01h\x00\x86."), NULL},
  {"protocol 4 frame and short strings", P("\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00\x8c\x01x\x94."), NULL},
  {"opaque class with state", P("\x80\x02" "cfairseq.logging.meters\nAverageMeter\n)\x81}X\x01\x00\x00\x00vK\x05sb."),
   NULL},
  {"truncated string", P("\x80\x02X\x05\x00\x00\x00" "ab"), "truncated: a string of 5 bytes, 2 left"},
  {"no STOP", P("\x80\x02K\x01"), "truncated: no STOP opcode"},
  {"unknown opcode", P("\x80\x02\xff."), "byte 2: opcode 0xff is not supported"},
  {"text opcode", P("I1\n."), "opcode 0x49 ('I') is not supported"},
  {"protocol 6", P("\x80\x06."), "pickle protocol 6 is not supported"},
  {"GLOBAL os.system", P("\x80\x02" "cos\nsystem\nq\x00."), "byte 2: GLOBAL 'os.system' is outside the allowed set"},
  {"GLOBAL builtins.eval", P("cbuiltins\neval\n."), "GLOBAL 'builtins.eval' is outside the allowed set"},
  {"GLOBAL subprocess", P("\x80\x02" "csubprocess\nPopen\n."), "outside the allowed set"},
  {"STACK_GLOBAL posix", P("\x80\x04\x8c\x05posix\x8c\x06system\x93."), "GLOBAL 'posix.system' is outside"},
  {"GLOBAL without lines", P("\x80\x02" "cos"), "GLOBAL without its two lines"},
  {"REDUCE of a non-global", P("\x80\x02K\x01)R."), "REDUCE of a value that is not a GLOBAL"},
  {"REDUCE with a non-tuple", P("\x80\x02" "ctorch\nFloatStorage\nK\x01R."), "arguments that are not a tuple"},
  {"deep nesting", P("((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((("
                     "(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((("
                     "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((."),
   "nested deeper than 256 marks"},
  {"huge length", P("\x80\x02X\xff\xff\xff\xff"), "a string of 4294967295 bytes"},
  {"huge BINUNICODE8", P("\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f."), "truncated: a string of"},
  {"stack underflow", P("\x80\x02" "a."), "stack underflow"},
  {"POP of an empty mark", P("\x80\x02K\x01(0."), NULL},
  {"SETITEM below a mark", P("\x80\x02}K\x01(K\x02s."), "stack underflow"},
  {"memo miss", P("\x80\x02h\x05."), "memo key 5 was never stored"},
  {"bytes after STOP", P("K\x01.K"), "1 bytes after STOP"},
  {"two values", P("K\x01K\x02."), "STOP with 2 values"},
  {"mark left open", P("(K\x01."), "STOP with 1 values and 1 marks"},
  {"invalid UTF-8", P("X\x01\x00\x00\x00\xff."), "string is not valid UTF-8"},
  {"SETITEMS odd", P("}(K\x01u."), "SETITEMS with an odd number of values"},
  {"BUILD on an int", P("K\x01}b."), "BUILD on a value that is not an object"},
  {"APPEND on a dict", P("}K\x01" "a."), "APPEND on a value that is not a list"},
  {"SETITEM on a list", P("]K\x01K\x02s."), "SETITEM on a value that is not a dict"},
  {"empty", "", 0, "truncated: no STOP opcode"},
};

static void test_pickles(void)
{
  for (gsize i = 0; i < G_N_ELEMENTS(pickle_cases); i++) {
    const PickleCase *c = &pickle_cases[i];
    GError *error = NULL;
    MoelmPickle *p = moelm_pickle_load(c->bytes, c->len, "test.pkl", &error);
    if ((p == NULL) != (c->expected != NULL) || (error && !strstr(error->message, c->expected)))
      g_printerr("\n  %s: %s\n", c->what, error ? error->message : "accepted");
    if (c->expected) {
      CU_ASSERT_PTR_NULL(p);
      MOELM_ASSERT_ERROR(error, c->expected);
      CU_ASSERT_TRUE(g_str_has_prefix(error->message, "test.pkl: byte "));
      CU_ASSERT_PTR_NULL(strchr(error->message, '\n'));
      g_clear_error(&error);
    } else
      CU_ASSERT_PTR_NOT_NULL(p);
    moelm_pickle_free(p);
  }
}

/* Values as Python would build them, and the accessors. */
static void test_values(void)
{
  static const char meter[] = "\x80\x02}X\x05\x00\x00\x00statecargparse\nNamespace\n)\x81}(X\x01\x00\x00\x00" "aK\x07"
                              "X\x01\x00\x00\x00" "b\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01ub"
                              "sX\x01\x00\x00\x00" "cG?\xf8\x00\x00\x00\x00\x00\x00s.";
  GError *error = NULL;
  MoelmPickle *p = moelm_pickle_load(meter, sizeof meter - 1, "m.pkl", &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  const MoelmPyObj *root = moelm_pickle_root(p);
  CU_ASSERT_EQUAL(root->type, MOELM_PY_DICT);
  const MoelmPyObj *ns = moelm_py_get(root, "state");
  CU_ASSERT_TRUE(moelm_py_is_call(ns, "argparse", "Namespace"));
  CU_ASSERT_EQUAL(moelm_py_get(ns, "a")->i, 7);
  CU_ASSERT_TRUE(moelm_py_get(ns, "b")->big); /* 2^64 does not fit */
  CU_ASSERT_DOUBLE_EQUAL(moelm_py_get(root, "c")->f, 1.5, 0);
  CU_ASSERT_PTR_NULL(moelm_py_get(root, "missing"));
  char *d = moelm_py_describe(ns);
  CU_ASSERT_STRING_EQUAL(d, "argparse.Namespace object");
  g_free(d);
  moelm_pickle_free(p);
}

static MoelmTorchFile *open_bad(const char *name, GError **error)
{
  char *rel = g_strdup_printf("tests/torch/fixtures/bad/%s", name), *path = moelm_test_srcpath(rel);
  MoelmTorchFile *f = moelm_torch_open(path, error);
  g_free(rel);
  g_free(path);
  return f;
}

/* The tensor "w" of a hand-made archive, as floats (NULL with the error). */
static float *read_w(const char *name, int *n, GError **error)
{
  MoelmTorchFile *f = open_bad(name, error);
  if (f == NULL)
    return NULL;
  const MoelmPyObj *w = moelm_py_get(moelm_py_get(moelm_torch_root(f), "model"), "w");
  MoelmTorchTensor t;
  float *out = NULL;
  if (moelm_torch_tensor(f, w, &t, error)) {
    *n = (int)moelm_torch_tensor_numel(&t);
    out = g_new(float, *n);
    if (!moelm_torch_tensor_copy(&t, MOELM_DT_F32, out, error))
      g_clear_pointer(&out, g_free);
  }
  moelm_torch_close(f);
  return out;
}

static void test_archives(void)
{
  const float rows[] = {0, 1, 2, 3, 4, 5}, cols[] = {0, 3, 1, 4, 2, 5};
  const struct {
    const char *file;
    const float *want;
  } good[] = {{"ok-stored.pt", rows}, {"ok-deflated.pt", rows}, {"ok-zip64.pt", rows}, {"ok-transposed.pt", cols}};
  for (gsize i = 0; i < G_N_ELEMENTS(good); i++) {
    GError *error = NULL;
    int n = 0;
    float *v = read_w(good[i].file, &n, &error);
    if (v == NULL)
      g_printerr("\n  %s: %s\n", good[i].file, error->message);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(n, 6);
    for (int k = 0; k < 6; k++)
      CU_ASSERT_EQUAL(v[k], good[i].want[k]);
    g_free(v);
  }
  const struct {
    const char *file, *expected;
  } bad[] = {
    {"bad-stride.pt", "addresses element 6 of a storage of 6 elements"},
    {"bad-numel.pt", "holds 24 bytes, not 9 × F32"},
    {"missing-storage.pt", "storage entry 'archive/data/0' is missing"},
    {"bad-storage-type.pt", "unsupported storage type global torch.ComplexFloatStorage"},
    {"evil-global.pt", "archive/data.pkl: byte 17: GLOBAL 'os.system' is outside the allowed set"},
    {"truncated.pt", "zip: byte"},
    {"bad-crc.pt", "fails its CRC-32 check"},
    {"legacy-format.pt", "legacy (pre-1.6) checkpoint format is not supported"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    GError *error = NULL;
    int n;
    float *v = read_w(bad[i].file, &n, &error);
    CU_ASSERT_PTR_NULL(v);
    if (v == NULL && error && !strstr(error->message, bad[i].expected))
      g_printerr("\n  %s: %s\n", bad[i].file, error->message);
    MOELM_ASSERT_ERROR(error, bad[i].expected);
    CU_ASSERT_PTR_NOT_NULL(strstr(error->message, bad[i].file)); /* the file is named */
    g_clear_error(&error);
    g_free(v);
  }
}

/* convert refuses, naming the problem, and writes nothing. */
static void test_convert_refusals(void)
{
  const struct {
    const char *file, *expected;
  } cases[] = {
    {"unsupported-option.pt", "cfg.model.layernorm_embedding is set: moelm's transformer_lm does not implement it"},
    {"extra-tensor.pt", "tensor 'decoder.extra_thing.weight' is not part of moelm's model"},
    {"missing-tensor.pt", "missing tensor 'decoder.layers.1.fc2.bias'"},
    {"tied-differ.pt", "decoder.output_projection.weight differs from decoder.embed_tokens.weight"},
    {"evil-global.pt", "GLOBAL 'os.system' is outside the allowed set"},
    {"truncated.pt", "truncated"},
    {"ok-stored.pt", "no decoder.embed_tokens.weight in the state dict"},
    {"no-such-file.pt", "no such checkpoint file"},
  };
  char *dir = moelm_test_tmpdir(), *out = g_build_filename(dir, "out.pt", NULL);
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    char *rel = g_strdup_printf("tests/torch/fixtures/bad/%s", cases[i].file), *path = moelm_test_srcpath(rel);
    MoelmConvertOptions opt = {path, out, NULL, MOELM_CONVERT_DTYPE_KEEP};
    MoelmConvertReport rep;
    GError *error = NULL;
    CU_ASSERT_FALSE(moelm_convert_fairseq(&opt, &rep, &error));
    if (error && !strstr(error->message, cases[i].expected))
      g_printerr("\n  %s: %s\n", cases[i].file, error->message);
    MOELM_ASSERT_ERROR(error, cases[i].expected);
    g_clear_error(&error);
    moelm_convert_report_clear(&rep);
    CU_ASSERT_FALSE(g_file_test(out, G_FILE_TEST_EXISTS));
    g_free(rel);
    g_free(path);
  }
  /* a dictionary of the wrong size */
  char *model = moelm_test_srcpath("tests/torch/fixtures/dense/model.pt"), *dict = g_build_filename(dir, "d.txt", NULL);
  moelm_test_write_file(dict, "a 1\nb 1\n", 8);
  MoelmConvertOptions opt = {model, out, dict, MOELM_CONVERT_DTYPE_KEEP};
  MoelmConvertReport rep;
  GError *error = NULL;
  CU_ASSERT_FALSE(moelm_convert_fairseq(&opt, &rep, &error));
  MOELM_ASSERT_ERROR(error, "6 symbols (4 specials + 2 lines), but");
  g_clear_error(&error);
  moelm_convert_report_clear(&rep);
  CU_ASSERT_FALSE(g_file_test(out, G_FILE_TEST_EXISTS));
  moelm_test_rmtree(dir);
  g_free(model);
  g_free(dict);
  g_free(out);
  g_free(dir);
}

/* fp16: every finite value round-trips; rounding to nearest even; overflow; subnormals. */
static void test_half(void)
{
  int bad = 0;
  for (uint32_t h = 0; h < 65536; h++) {
    const float f = moelm_half_to_float((uint16_t)h);
    if (isnan(f))
      bad += !isnan(moelm_half_to_float(moelm_float_to_half(f)));
    else
      bad += moelm_float_to_half(f) != h;
  }
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT_EQUAL(moelm_float_to_half(1.0f), 0x3c00);
  CU_ASSERT_EQUAL(moelm_float_to_half(1.0f + 1.0f / 2048), 0x3c00); /* halfway: even */
  CU_ASSERT_EQUAL(moelm_float_to_half(1.0f + 3.0f / 2048), 0x3c02);
  CU_ASSERT_EQUAL(moelm_float_to_half(65504.0f), 0x7bff);
  CU_ASSERT_EQUAL(moelm_float_to_half(65520.0f), 0x7c00);
  CU_ASSERT_EQUAL(moelm_float_to_half(-1e-8f), 0x8000);
  CU_ASSERT_EQUAL(moelm_float_to_half(5.96046448e-8f), 0x0001);
  CU_ASSERT_DOUBLE_EQUAL(moelm_half_to_float(0x0001), 5.96046448e-8, 1e-15);
  for (uint32_t b = 0; b < 65536; b++) {
    const float f = moelm_bf16_to_float((uint16_t)b);
    if (!isnan(f))
      bad += moelm_float_to_bf16(f) != b;
  }
  CU_ASSERT_EQUAL(bad, 0);
  CU_ASSERT_EQUAL(moelm_float_to_bf16(1.0f + 1.0f / 256), 0x3f80); /* halfway: even */
  CU_ASSERT_EQUAL(moelm_float_to_bf16(1.0f + 3.0f / 256), 0x3f82);
}

MOELM_TEST_SUITE(torch_read)
{
  CU_add_test(suite, "malformed and hostile pickles: clear errors with offsets", test_pickles);
  CU_add_test(suite, "pickled values and accessors", test_values);
  CU_add_test(suite, "archives: stored, deflated, strided; broken ones refused", test_archives);
  CU_add_test(suite, "convert refuses and writes nothing", test_convert_refusals);
  CU_add_test(suite, "fp16 and bf16 conversions", test_half);
}
