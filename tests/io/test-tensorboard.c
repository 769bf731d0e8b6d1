/* TensorBoard event files: CRC-32C against its known check value, a written file read back by
 * the spec-following reader (header, tags, steps, values), and damaged files rejected. */
#include "config.h"

#include <string.h>

#include "moelm-test.h"
#include "moelm/tensorboard.h"

typedef struct {
  GString *seen;
} Seen;

static void collect(void *data, const char *tag, float value, int64_t step, double wall)
{
  Seen *s = data;
  g_string_append_printf(s->seen, "%s@%" G_GINT64_FORMAT "=%g;", tag, step, value);
  CU_ASSERT(wall > 1.6e9); /* a real time stamp */
}

static void test_crc32c(void)
{
  /* the standard check value of CRC-32C: "123456789" */
  CU_ASSERT_EQUAL(moelm_crc32c("123456789", 9), 0xE3069283u);
  CU_ASSERT_EQUAL(moelm_crc32c("", 0), 0u);
}

static void test_round_trip(void)
{
  char *dir = moelm_test_tmpdir(), *sub = g_build_filename(dir, "tb", "train", NULL);
  GError *error = NULL;
  MoelmTbWriter *w = moelm_tb_writer_open(sub, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(w);
  CU_ASSERT_TRUE(g_str_has_prefix(moelm_tb_writer_path(w), sub));
  CU_ASSERT_PTR_NOT_NULL(strstr(moelm_tb_writer_path(w), "events.out.tfevents."));
  CU_ASSERT_TRUE(moelm_tb_add_scalar(w, "loss", 9.5, 100, &error));
  CU_ASSERT_TRUE(moelm_tb_add_scalar(w, "ppl", 724.08, 100, &error));
  CU_ASSERT_TRUE(moelm_tb_add_scalar(w, "loss", 8.25, 200, &error));
  CU_ASSERT_TRUE(moelm_tb_add_scalar(w, "lr", 0.0005, 300000000000LL, &error)); /* a multi-byte varint */
  char *path = g_strdup(moelm_tb_writer_path(w));
  moelm_tb_writer_close(w);
  Seen s = {g_string_new(NULL)};
  CU_ASSERT_TRUE(moelm_tb_read(path, collect, &s, &error));
  CU_ASSERT_STRING_EQUAL(s.seen->str, "loss@100=9.5;ppl@100=724.08;loss@200=8.25;lr@300000000000=0.0005;");
  /* damaged: a flipped data byte, a truncated record, a file that is not one */
  gsize len = 0;
  char *bytes = moelm_test_read_file(path, &len);
  bytes[len - 6] ^= 0x40;
  moelm_test_write_file(path, bytes, len);
  CU_ASSERT_FALSE(moelm_tb_read(path, NULL, NULL, &error));
  MOELM_ASSERT_ERROR(error, "CRC");
  g_clear_error(&error);
  moelm_test_write_file(path, bytes, len - 3);
  CU_ASSERT_FALSE(moelm_tb_read(path, NULL, NULL, &error));
  MOELM_ASSERT_ERROR(error, "record 4");
  g_clear_error(&error);
  moelm_test_write_file(path, "hello world, not tfrecords", 26);
  CU_ASSERT_FALSE(moelm_tb_read(path, NULL, NULL, &error));
  MOELM_ASSERT_ERROR(error, "record 0");
  g_clear_error(&error);
  g_free(bytes);
  g_string_free(s.seen, TRUE);
  g_free(path);
  moelm_test_rmtree(dir);
  g_free(sub);
  g_free(dir);
}

MOELM_TEST_SUITE(tensorboard)
{
  CU_add_test(suite, "CRC-32C check value", test_crc32c);
  CU_add_test(suite, "scalars written and read back; damage rejected", test_round_trip);
}
