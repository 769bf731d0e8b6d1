/* safetensors reader: every malformed file is refused with one line naming the file and
 * the problem; well-formed edge cases are accepted. */
#include "config.h"

#include <string.h>

#include "moelm-test.h"
#include "moelm/errors.h"
#include "moelm/safetensors.h"

#define F32_A "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

typedef struct {
  const char *what;
  const char *header;    /* JSON text after the length */
  uint64_t hlen;         /* the length field; 0: strlen(header) */
  gsize data_len;        /* bytes after the header */
  const char *expected;  /* substring of the error message; NULL: must be accepted */
  gsize text_len;        /* bytes of `header` to write; 0: strlen(header) */
} Case;

static const Case cases[] = {
  {"minimal", "{}", 0, 0, NULL, 0},
  {"padded with spaces", "{" F32_A "}       ", 0, 8, NULL, 0},
  {"one tensor", "{" F32_A "}", 0, 8, NULL, 0},
  {"scalar and empty tensors",
   "{\"s\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]},"
   "\"e\":{\"dtype\":\"F32\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
   "\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[4,5]}}",
   0, 5, NULL, 0},
  {"header length over the limit", "{}", 200000000, 0, "exceeds the limit", 0},
  {"header length beyond the file", "{}", 64, 0, "truncated: header length 64", 0},
  {"header length too small", "{}", 1, 1, "too small", 0},
  {"not JSON", "{not json}", 0, 0, "header is not valid JSON", 0},
  {"JSON with a comment", "{/*c*/}", 0, 0, "header is not valid JSON", 0},
  {"text after the object", "{}{}", 0, 0, "not valid JSON: at byte 2: unexpected text", 0},
  {"root is an array", "[]", 0, 0, "not a JSON object", 0},
  {"invalid UTF-8", "{\"\xff\":1}", 0, 0, "not valid UTF-8", 0},
  {"NUL in the header", "{}\0 ", 0, 0, "not valid UTF-8", 4},
  {"deep nesting", "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}", 0, 0, "nested too deeply", 0},
  {"integer beyond 64 bits", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551617]}}", 0, 1,
   "integer out of the 64-bit range", 0},
  {"unknown dtype", "{\"a\":{\"dtype\":\"F7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8, "tensor 'a': unknown dtype 'F7'", 0},
  {"dtype moelm lacks", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 0, 2, "unknown dtype", 0},
  {"size mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 8,
   "tensor 'a': data_offsets [0, 8] hold 8 bytes but shape × F32 size is 12 bytes", 0},
  {"size overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}", 0, 8,
   "overflows", 0},
  {"negative dimension", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 0, 8, "non-negative", 0},
  {"fractional dimension", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 0, 8, "non-negative integer", 0},
  {"nine dimensions", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 0, 1,
   "9 dimensions, more than 8", 0},
  {"offsets reversed", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 0, 4, "end before they begin", 0},
  {"offsets of three", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 0, 1, "[begin, end]", 0},
  {"missing shape", "{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 0, 1, "missing 'shape'", 0},
  {"unknown field", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}", 0, 1, "unknown field 'x'", 0},
  {"entry not an object", "{\"a\":[1]}", 0, 0, "entry is not an object", 0},
  {"overlapping offsets",
   "{" F32_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 12, "tensor 'b': data_offsets [4, 12] overlap", 0},
  {"gap between tensors",
   "{" F32_A ",\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", 0, 20, "tensor 'b': gap of 4 bytes", 0},
  {"data not starting at 0", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 12, "gap of 4 bytes", 0},
  {"trailing bytes", "{" F32_A "}", 0, 12, "4 trailing bytes after the last tensor", 0},
  {"truncated data", "{" F32_A "}", 0, 5, "tensor 'a': truncated: data ends at byte 8 but the data section has 5 bytes", 0},
  {"duplicate tensor name",
   "{" F32_A ",\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 0, 8, "duplicate name 'a'", 0},
  {"duplicate field in an entry", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0,
   8, "duplicate name 'dtype'", 0},
  {"duplicate metadata", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, 0, "duplicate name '__metadata__'", 0},
  {"metadata value not a string", "{\"__metadata__\":{\"k\":1}}", 0, 0, "__metadata__ value 'k' is not a string", 0},
  {"metadata not an object", "{\"__metadata__\":\"x\"}", 0, 0, "__metadata__ is not an object", 0},
  {"control character in a name", "{\"a\\nb\":{\"dtype\":\"F7\",\"shape\":[],\"data_offsets\":[0,0]}}", 0, 0,
   "tensor 'a\\x0ab': unknown dtype", 0},
};

static char *write_case(const char *dir, gsize i, const Case *c)
{
  gsize text_len = c->text_len ? c->text_len : strlen(c->header);
  uint64_t field = c->hlen ? c->hlen : text_len;
  GByteArray *b = g_byte_array_new();
  for (int k = 0; k < 8; k++) {
    guint8 byte = (guint8)(field >> (8 * k));
    g_byte_array_append(b, &byte, 1);
  }
  g_byte_array_append(b, (const guint8 *)c->header, (guint)text_len);
  for (gsize k = 0; k < c->data_len; k++) {
    guint8 byte = (guint8)k;
    g_byte_array_append(b, &byte, 1);
  }
  char *name = g_strdup_printf("case%02" G_GSIZE_FORMAT ".safetensors", i);
  char *path = g_build_filename(dir, name, NULL);
  moelm_test_write_file(path, b->data, b->len);
  g_free(name);
  g_byte_array_unref(b);
  return path;
}

static void test_cases(void)
{
  char *dir = moelm_test_tmpdir();
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    const Case *c = &cases[i];
    char *path = write_case(dir, i, c);
    GError *error = NULL;
    MoelmSafetensors *st = moelm_safetensors_open(path, &error);
    if (c->expected == NULL) {
      if (st == NULL)
        g_printerr("\n  case '%s' refused: %s\n", c->what, error->message);
      CU_ASSERT_PTR_NOT_NULL(st);
    } else {
      if (st != NULL)
        g_printerr("\n  case '%s' accepted\n", c->what);
      CU_ASSERT_PTR_NULL(st);
      if (error) {
        MOELM_ASSERT_ERROR(error, path);
        MOELM_ASSERT_ERROR(error, c->expected);
        CU_ASSERT_PTR_NULL(strchr(error->message, '\n'));
        CU_ASSERT_EQUAL(error->domain, MOELM_ERROR);
      }
    }
    moelm_safetensors_close(st);
    g_clear_error(&error);
    g_free(path);
  }
  moelm_test_rmtree(dir);
  g_free(dir);
}

static void test_accepted_contents(void)
{
  /* "scalar and empty tensors": file order is by offset, zero-size tensors included. */
  char *dir = moelm_test_tmpdir();
  char *path = write_case(dir, 3, &cases[3]);
  GError *error = NULL;
  MoelmSafetensors *st = moelm_safetensors_open(path, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  CU_ASSERT_EQUAL(moelm_safetensors_n_tensors(st), 3);
  CU_ASSERT_STRING_EQUAL(moelm_safetensors_tensor(st, 0)->name, "s");
  CU_ASSERT_STRING_EQUAL(moelm_safetensors_tensor(st, 1)->name, "e");
  CU_ASSERT_STRING_EQUAL(moelm_safetensors_tensor(st, 2)->name, "t");
  const MoelmTensorInfo *t = moelm_safetensors_find(st, "t");
  CU_ASSERT_EQUAL(*(const guint8 *)moelm_safetensors_data(st, t), 4);
  moelm_safetensors_close(st);
  g_free(path);
  moelm_test_rmtree(dir);
  g_free(dir);
}

static void test_short_and_missing_files(void)
{
  char *dir = moelm_test_tmpdir();
  char *path = g_build_filename(dir, "short.safetensors", NULL);
  GError *error = NULL;
  for (gsize n = 0; n < 8; n++) {
    moelm_test_write_file(path, "\x02\0\0\0\0\0\0", n);
    CU_ASSERT_PTR_NULL(moelm_safetensors_open(path, &error));
    MOELM_ASSERT_ERROR(error, path);
    MOELM_ASSERT_ERROR(error, "truncated");
    g_clear_error(&error);
  }
  char *missing = g_build_filename(dir, "missing.safetensors", NULL);
  CU_ASSERT_PTR_NULL(moelm_safetensors_open(missing, &error));
  MOELM_ASSERT_ERROR(error, missing);
  MOELM_ASSERT_ERROR(error, "cannot open");
  CU_ASSERT_EQUAL(error->code, MOELM_ERROR_IO);
  g_clear_error(&error);
  CU_ASSERT_PTR_NULL(moelm_safetensors_open(dir, &error));
  MOELM_ASSERT_ERROR(error, "not a regular file");
  g_clear_error(&error);
  /* The in-memory reader uses the given name in its messages. */
  CU_ASSERT_PTR_NULL(moelm_safetensors_open_bytes("\x03\0\0\0\0\0\0\0{}x", 11, "blob", &error));
  MOELM_ASSERT_ERROR(error, "blob: header is not valid JSON");
  g_clear_error(&error);
  g_free(missing);
  g_free(path);
  moelm_test_rmtree(dir);
  g_free(dir);
}

MOELM_TEST_SUITE(safetensors_corrupt)
{
  CU_add_test(suite, "malformed headers and layouts are refused, edge cases accepted", test_cases);
  CU_add_test(suite, "accepted file: order by offset, zero-size tensors", test_accepted_contents);
  CU_add_test(suite, "short, missing and non-regular files", test_short_and_missing_files);
}
