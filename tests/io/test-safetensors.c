/* safetensors writer and reader: round trips, the exact bytes of a small file, interop
 * with an independent reader, and atomic replacement when a write fails. */
#include "config.h"

#include <signal.h>
#include <string.h>
#include <sys/resource.h>

#include <glib/gstdio.h>

#include "moelm-test.h"
#include "moelm/safetensors.h"

static const char *const utf8_key = "caf\xc3\xa9 \"quoted\"\nline";

static void test_round_trip(void)
{
  char *dir = moelm_test_tmpdir();
  char *path = g_build_filename(dir, "ckpt.safetensors", NULL);

  float f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e30f};
  int64_t i64[4] = {G_MININT64, -1, 0, G_MAXINT64};
  uint16_t bf16[3] = {0x3f80, 0xbf80, 0x7fc0};
  uint8_t flag = 1;
  double f64 = 3.141592653589793;
  int8_t i8[5] = {-128, -1, 0, 1, 127};

  MoelmSafetensorsWriter *w = moelm_safetensors_writer_new();
  GError *error = NULL;
  int64_t s_f32[2] = {2, 3}, s_i64[1] = {4}, s_bf16[1] = {3}, s_empty[2] = {0, 5}, s_f64[8] = {1, 1, 1, 1, 1, 1, 1, 1},
          s_i8[1] = {5};
  /* Added out of alphabetical order: the file keeps the order of addition. */
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "z.weight", MOELM_DT_F32, 2, s_f32, f32, &error));
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "a.steps", MOELM_DT_I64, 1, s_i64, i64, &error));
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "m.bf16", MOELM_DT_BF16, 1, s_bf16, bf16, &error));
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "empty", MOELM_DT_F16, 2, s_empty, NULL, &error));
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "flag", MOELM_DT_BOOL, 0, NULL, &flag, &error));
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "deep", MOELM_DT_F64, 8, s_f64, &f64, &error));
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "i8", MOELM_DT_I8, 1, s_i8, i8, &error));
  CU_ASSERT_PTR_NULL(error);
  moelm_safetensors_writer_set_metadata(w, "format", "pt");
  moelm_safetensors_writer_set_metadata(w, utf8_key, "{\"json\": [1, 2]}");
  moelm_safetensors_writer_set_metadata(w, "format", "moelm"); /* replaces, keeps position */
  CU_ASSERT_TRUE_FATAL(moelm_safetensors_writer_write(w, path, &error));
  moelm_safetensors_writer_free(w);

  gsize len = 0;
  char *bytes = moelm_test_read_file(path, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(bytes);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = (hlen << 8) | (guint8)bytes[i];
  CU_ASSERT_EQUAL(hlen % 8, 0);
  CU_ASSERT_EQUAL(len, 8 + hlen + sizeof f32 + sizeof i64 + sizeof bf16 + 1 + sizeof f64 + sizeof i8);

  for (int pass = 0; pass < 2; pass++) {
    MoelmSafetensors *st = pass == 0 ? moelm_safetensors_open(path, &error)
                                     : moelm_safetensors_open_bytes(bytes, len, "in-memory", &error);
    CU_ASSERT_PTR_NOT_NULL_FATAL(st);
    CU_ASSERT_EQUAL(moelm_safetensors_n_tensors(st), 7);
    const char *order[] = {"z.weight", "a.steps", "m.bf16", "empty", "flag", "deep", "i8"};
    for (gsize i = 0; i < 7; i++)
      CU_ASSERT_STRING_EQUAL(moelm_safetensors_tensor(st, i)->name, order[i]);
    CU_ASSERT_PTR_NULL(moelm_safetensors_tensor(st, 7));

    const MoelmTensorInfo *t = moelm_safetensors_find(st, "z.weight");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(t->dtype, MOELM_DT_F32);
    CU_ASSERT_EQUAL(t->ndim, 2);
    CU_ASSERT_EQUAL(t->shape[0], 2);
    CU_ASSERT_EQUAL(t->shape[1], 3);
    CU_ASSERT_EQUAL(t->begin, 0);
    CU_ASSERT_EQUAL(t->end, 24);
    CU_ASSERT_EQUAL(memcmp(moelm_safetensors_data(st, t), f32, sizeof f32), 0);

    t = moelm_safetensors_find(st, "a.steps");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(t->dtype, MOELM_DT_I64);
    CU_ASSERT_EQUAL(t->begin, 24);
    CU_ASSERT_EQUAL(memcmp(moelm_safetensors_data(st, t), i64, sizeof i64), 0);

    t = moelm_safetensors_find(st, "m.bf16");
    CU_ASSERT_EQUAL(t->dtype, MOELM_DT_BF16);
    CU_ASSERT_EQUAL(memcmp(moelm_safetensors_data(st, t), bf16, sizeof bf16), 0);

    t = moelm_safetensors_find(st, "empty");
    CU_ASSERT_EQUAL(t->dtype, MOELM_DT_F16);
    CU_ASSERT_EQUAL(t->ndim, 2);
    CU_ASSERT_EQUAL(t->shape[1], 5);
    CU_ASSERT_EQUAL(t->begin, t->end);

    t = moelm_safetensors_find(st, "flag");
    CU_ASSERT_EQUAL(t->dtype, MOELM_DT_BOOL);
    CU_ASSERT_EQUAL(t->ndim, 0);
    CU_ASSERT_EQUAL(*(const uint8_t *)moelm_safetensors_data(st, t), 1);

    t = moelm_safetensors_find(st, "deep");
    CU_ASSERT_EQUAL(t->ndim, 8);
    double d;
    memcpy(&d, moelm_safetensors_data(st, t), sizeof d);
    CU_ASSERT_EQUAL(d, f64);

    t = moelm_safetensors_find(st, "i8");
    CU_ASSERT_EQUAL(t->dtype, MOELM_DT_I8);
    CU_ASSERT_EQUAL(memcmp(moelm_safetensors_data(st, t), i8, sizeof i8), 0);
    CU_ASSERT_PTR_NULL(moelm_safetensors_find(st, "missing"));

    const char *const *keys = moelm_safetensors_metadata_keys(st);
    CU_ASSERT_STRING_EQUAL(keys[0], "format");
    CU_ASSERT_STRING_EQUAL(keys[1], utf8_key);
    CU_ASSERT_PTR_NULL(keys[2]);
    CU_ASSERT_STRING_EQUAL(moelm_safetensors_metadata(st, "format"), "moelm");
    CU_ASSERT_STRING_EQUAL(moelm_safetensors_metadata(st, utf8_key), "{\"json\": [1, 2]}");
    CU_ASSERT_PTR_NULL(moelm_safetensors_metadata(st, "__metadata__"));
    moelm_safetensors_close(st);
  }
  g_free(bytes);

  /* Overwrite the existing file with an empty one (no tensors, no metadata). */
  w = moelm_safetensors_writer_new();
  CU_ASSERT_TRUE(moelm_safetensors_writer_write(w, path, &error));
  moelm_safetensors_writer_free(w);
  bytes = moelm_test_read_file(path, &len);
  CU_ASSERT_EQUAL(len, 16);
  CU_ASSERT_EQUAL(memcmp(bytes, "\x08\0\0\0\0\0\0\0{}      ", 16), 0);
  g_free(bytes);
  MoelmSafetensors *st = moelm_safetensors_open(path, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  CU_ASSERT_EQUAL(moelm_safetensors_n_tensors(st), 0);
  CU_ASSERT_PTR_NULL(moelm_safetensors_metadata_keys(st)[0]);
  moelm_safetensors_close(st);

  g_free(path);
  moelm_test_rmtree(dir);
  g_free(dir);
}

/* The bytes the format prescribes for a tiny file, written out by hand: LE u64 header
 * length (136), compact JSON with __metadata__ first and the tensors in the order added,
 * spaces up to a multiple of 8, then the data back to back. */
static void test_exact_bytes(void)
{
  static const char expected_header[] =
    "{\"__metadata__\":{\"k\":\"v\"},"
    "\"b\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[3,11]}}"
    "    ";
  static const char expected_data[] = "\x01\x02\x03"
                                      "\x00\x00\x80\x3f" /* 1.0f */
                                      "\x00\x00\x20\xc0"; /* -2.5f */
  CU_ASSERT_EQUAL_FATAL(sizeof expected_header - 1, 136);

  char *dir = moelm_test_tmpdir();
  char *path = g_build_filename(dir, "tiny.safetensors", NULL);
  GError *error = NULL;
  uint8_t b[3] = {1, 2, 3};
  float a[2] = {1.0f, -2.5f};
  int64_t s3 = 3, s2 = 2;
  MoelmSafetensorsWriter *w = moelm_safetensors_writer_new();
  moelm_safetensors_writer_set_metadata(w, "k", "v");
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "b", MOELM_DT_U8, 1, &s3, b, &error));
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "a", MOELM_DT_F32, 1, &s2, a, &error));
  CU_ASSERT_TRUE_FATAL(moelm_safetensors_writer_write(w, path, &error));
  moelm_safetensors_writer_free(w);

  gsize len = 0;
  char *bytes = moelm_test_read_file(path, &len);
  CU_ASSERT_EQUAL_FATAL(len, 8 + 136 + 11);
  CU_ASSERT_EQUAL(memcmp(bytes, "\x88\0\0\0\0\0\0\0", 8), 0);
  CU_ASSERT_EQUAL(memcmp(bytes + 8, expected_header, 136), 0);
  CU_ASSERT_EQUAL(memcmp(bytes + 8 + 136, expected_data, 11), 0);
  g_free(bytes);
  g_free(path);
  moelm_test_rmtree(dir);
  g_free(dir);
}

/* An independent reader: Python's json and struct following the format description
 * (the `safetensors` package itself is not installed here). */
static void test_python_reads_it(void)
{
  char *python = g_find_program_in_path("python3");
  if (python == NULL) {
    g_printerr("\n  (python3 not found: interop check skipped)\n");
    return;
  }
  static const char script[] =
    "import json, struct, sys\n"
    "b = open(sys.argv[1], 'rb').read()\n"
    "n, = struct.unpack('<Q', b[:8])\n"
    "h = json.loads(b[8:8 + n].decode('utf-8'))\n"
    "data = b[8 + n:]\n"
    "meta = h.pop('__metadata__')\n"
    "out = [meta['run']]\n"
    "for name, t in h.items():\n"
    "    s, e = t['data_offsets']\n"
    "    fmt = {'F32': 'f', 'I32': 'i'}[t['dtype']]\n"
    "    vals = struct.unpack('<%d%s' % ((e - s) // 4, fmt), data[s:e])\n"
    "    out.append('%s %s %s %s' % (name, t['dtype'], t['shape'], ' '.join(repr(v) for v in vals)))\n"
    "assert len(data) == max(t['data_offsets'][1] for t in h.values())\n"
    "print('|'.join(out))\n";
  char *dir = moelm_test_tmpdir();
  char *path = g_build_filename(dir, "py.safetensors", NULL);
  char *script_path = g_build_filename(dir, "read.py", NULL);
  moelm_test_write_file(script_path, script, strlen(script));
  GError *error = NULL;
  float x[4] = {0.5f, -1.0f, 2.0f, 4.0f};
  int32_t y[3] = {7, -8, 9};
  int64_t sx[2] = {2, 2}, sy[1] = {3};
  MoelmSafetensorsWriter *w = moelm_safetensors_writer_new();
  moelm_safetensors_writer_set_metadata(w, "run", "r\xc3\xa9sum\xc3\xa9");
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "decoder.x", MOELM_DT_F32, 2, sx, x, &error));
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "decoder.y", MOELM_DT_I32, 1, sy, y, &error));
  CU_ASSERT_TRUE_FATAL(moelm_safetensors_writer_write(w, path, &error));
  moelm_safetensors_writer_free(w);

  const char *argv[] = {python, script_path, path, NULL};
  char *out = NULL;
  int status = 0;
  CU_ASSERT_TRUE(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDERR_TO_DEV_NULL, NULL, NULL, &out, NULL, &status,
                              &error));
  CU_ASSERT_TRUE(g_spawn_check_wait_status(status, NULL));
  CU_ASSERT_STRING_EQUAL(out, "r\xc3\xa9sum\xc3\xa9|decoder.x F32 [2, 2] 0.5 -1.0 2.0 4.0|decoder.y I32 [3] 7 -8 9\n");
  g_free(out);
  g_free(script_path);
  g_free(path);
  g_free(python);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static int count_entries(const char *dir)
{
  GDir *d = g_dir_open(dir, 0, NULL);
  int n = 0;
  while (d && g_dir_read_name(d))
    n++;
  if (d)
    g_dir_close(d);
  return n;
}

/* A write that fails half way (the file size limit makes write() return EFBIG) leaves the
 * old file as it was and no temporary file behind. */
static void test_failed_write_keeps_old_file(void)
{
  char *dir = moelm_test_tmpdir();
  char *path = g_build_filename(dir, "checkpoint_last.pt", NULL);
  GError *error = NULL;
  float small[4] = {1, 2, 3, 4};
  int64_t s4 = 4;
  MoelmSafetensorsWriter *w = moelm_safetensors_writer_new();
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "w", MOELM_DT_F32, 1, &s4, small, &error));
  CU_ASSERT_TRUE_FATAL(moelm_safetensors_writer_write(w, path, &error));
  moelm_safetensors_writer_free(w);
  gsize old_len = 0;
  char *old = moelm_test_read_file(path, &old_len);

  const gsize n_big = 1 << 20; /* 4 MiB of floats, over the 64 KiB limit below */
  float *big = g_new0(float, n_big);
  int64_t sbig = (int64_t)n_big;
  w = moelm_safetensors_writer_new();
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "w", MOELM_DT_F32, 1, &sbig, big, &error));
  struct rlimit saved;
  CU_ASSERT_EQUAL_FATAL(getrlimit(RLIMIT_FSIZE, &saved), 0);
  struct rlimit limited = saved;
  limited.rlim_cur = 65536;
  void (*saved_handler)(int) = signal(SIGXFSZ, SIG_IGN);
  CU_ASSERT_EQUAL_FATAL(setrlimit(RLIMIT_FSIZE, &limited), 0);
  gboolean ok = moelm_safetensors_writer_write(w, path, &error);
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, saved_handler);
  CU_ASSERT_FALSE(ok);
  MOELM_ASSERT_ERROR(error, path);
  MOELM_ASSERT_ERROR(error, "write failed");
  g_clear_error(&error);
  moelm_safetensors_writer_free(w);
  g_free(big);

  gsize now_len = 0;
  char *now = moelm_test_read_file(path, &now_len);
  CU_ASSERT_EQUAL(now_len, old_len);
  CU_ASSERT_EQUAL(memcmp(now, old, old_len), 0);
  CU_ASSERT_EQUAL(count_entries(dir), 1); /* no PATH.tmp-XXXXXX left */

  /* A directory that does not exist: an error naming the path, nothing created. */
  char *nowhere = g_build_filename(dir, "no-such-dir", "x.safetensors", NULL);
  w = moelm_safetensors_writer_new();
  CU_ASSERT_FALSE(moelm_safetensors_writer_write(w, nowhere, &error));
  MOELM_ASSERT_ERROR(error, nowhere);
  g_clear_error(&error);
  moelm_safetensors_writer_free(w);
  CU_ASSERT_EQUAL(count_entries(dir), 1);

  g_free(nowhere);
  g_free(now);
  g_free(old);
  g_free(path);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static void test_writer_rejects_bad_tensors(void)
{
  GError *error = NULL;
  float x[2] = {0, 0};
  int64_t s2 = 2, neg = -1, nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  MoelmSafetensorsWriter *w = moelm_safetensors_writer_new();
  CU_ASSERT_TRUE(moelm_safetensors_writer_add(w, "x", MOELM_DT_F32, 1, &s2, x, &error));
  CU_ASSERT_FALSE(moelm_safetensors_writer_add(w, "x", MOELM_DT_F32, 1, &s2, x, &error));
  MOELM_ASSERT_ERROR(error, "'x': a tensor of that name was already added");
  g_clear_error(&error);
  CU_ASSERT_FALSE(moelm_safetensors_writer_add(w, "__metadata__", MOELM_DT_F32, 1, &s2, x, &error));
  MOELM_ASSERT_ERROR(error, "reserved");
  g_clear_error(&error);
  CU_ASSERT_FALSE(moelm_safetensors_writer_add(w, "n", MOELM_DT_F32, 1, &neg, x, &error));
  MOELM_ASSERT_ERROR(error, "negative");
  g_clear_error(&error);
  CU_ASSERT_FALSE(moelm_safetensors_writer_add(w, "d", MOELM_DT_F32, 9, nine, x, &error));
  MOELM_ASSERT_ERROR(error, "9 dimensions");
  g_clear_error(&error);
  CU_ASSERT_FALSE(moelm_safetensors_writer_add(w, "nodata", MOELM_DT_F32, 1, &s2, NULL, &error));
  MOELM_ASSERT_ERROR(error, "no data");
  g_clear_error(&error);
  CU_ASSERT_FALSE(moelm_safetensors_writer_add(w, "t", (MoelmDtype)99, 1, &s2, x, &error));
  MOELM_ASSERT_ERROR(error, "unknown dtype");
  g_clear_error(&error);
  moelm_safetensors_writer_free(w);
}

static void test_dtype_table(void)
{
  CU_ASSERT_STRING_EQUAL(moelm_dtype_name(MOELM_DT_BF16), "BF16");
  CU_ASSERT_STRING_EQUAL(moelm_dtype_name(MOELM_DT_BOOL), "BOOL");
  CU_ASSERT_STRING_EQUAL(moelm_dtype_name(MOELM_DT_U64), "U64");
  CU_ASSERT_EQUAL(moelm_dtype_size(MOELM_DT_F32), 4);
  CU_ASSERT_EQUAL(moelm_dtype_size(MOELM_DT_BF16), 2);
  CU_ASSERT_EQUAL(moelm_dtype_size(MOELM_DT_I64), 8);
  CU_ASSERT_EQUAL(moelm_dtype_size(MOELM_DT_BOOL), 1);
}

MOELM_TEST_SUITE(safetensors)
{
  CU_add_test(suite, "dtype names and sizes", test_dtype_table);
  CU_add_test(suite, "round trip of dtypes, shapes and metadata", test_round_trip);
  CU_add_test(suite, "exact bytes of a tiny file", test_exact_bytes);
  CU_add_test(suite, "an independent (Python stdlib) reader agrees", test_python_reads_it);
  CU_add_test(suite, "a failed write keeps the old file, no temp file", test_failed_write_keeps_old_file);
  CU_add_test(suite, "writer rejects bad tensors", test_writer_rejects_bad_tensors);
}
