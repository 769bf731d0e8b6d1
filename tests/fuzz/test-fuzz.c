/* The fuzz harnesses inside `make check`: each harness gets its seed corpus, every prefix
 * of every seed, then deterministic random mutations (Philox, fixed seed) for a bounded
 * time and count. The seeds named valid-* must be accepted by the reader and near-* must
 * be refused. MOELM_FUZZ_SECONDS=N runs each harness for N seconds instead of 2. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "moelm-test.h"
#include "moelm/dictionary.h"
#include "moelm/indexed_dataset.h"
#include "moelm/rng.h"
#include "moelm/pickle.h"
#include "moelm/safetensors.h"
#include "moelm/torch_load.h"

typedef gboolean (*ReadFunc)(const uint8_t *data, gsize len, GError **error);

static gboolean read_dict(const uint8_t *data, gsize len, GError **error)
{
  MoelmDictionary *d = moelm_dictionary_load_from_data((const char *)data, len, "seed", error);
  moelm_dictionary_free(d);
  return d != NULL;
}

static gboolean read_idx(const uint8_t *data, gsize len, GError **error)
{
  return moelm_indexed_dataset_validate_index(data, len, (gsize)-1, "seed", error);
}

static gboolean read_safetensors(const uint8_t *data, gsize len, GError **error)
{
  MoelmSafetensors *st = moelm_safetensors_open_bytes(data, len, "seed", error);
  moelm_safetensors_close(st);
  return st != NULL;
}

static gboolean read_pickle(const uint8_t *data, gsize len, GError **error)
{
  MoelmPickle *p = moelm_pickle_load(data, len, "seed", error);
  moelm_pickle_free(p);
  return p != NULL;
}

/* A zip seed is accepted when it is a PyTorch file whose every state-dict tensor resolves. */
static gboolean read_zip(const uint8_t *data, gsize len, GError **error)
{
  MoelmTorchFile *f = moelm_torch_open_bytes(data, len, "seed", error);
  if (f == NULL)
    return FALSE;
  const GPtrArray *kv = moelm_py_dict_items(moelm_py_get(moelm_torch_root(f), "model"));
  gboolean ok = kv != NULL;
  for (guint i = 0; ok && i + 1 < kv->len; i += 2) {
    MoelmTorchTensor t;
    ok = moelm_torch_tensor(f, kv->pdata[i + 1], &t, error);
  }
  moelm_torch_close(f);
  return ok;
}

static gboolean read_checkpoint(const uint8_t *data, gsize len, GError **error)
{
  return moelm_fuzz_checkpoint_read(data, len, error);
}

typedef struct {
  const char *corpus; /* tests/fuzz/corpus/<corpus> */
  int (*harness)(const uint8_t *data, size_t size);
  ReadFunc read;
  uint32_t stream; /* Philox stream: one per harness */
} Target;

static const Target targets[] = {
  {"dict", moelm_fuzz_dict, read_dict, 1},
  {"idx", moelm_fuzz_idx, read_idx, 2},
  {"safetensors", moelm_fuzz_safetensors, read_safetensors, 3},
  {"pickle", moelm_fuzz_pickle, read_pickle, 4},
  {"zip", moelm_fuzz_zip, read_zip, 5},
  {"checkpoint", moelm_fuzz_checkpoint, read_checkpoint, 6},
};

typedef struct {
  char *name;
  GBytes *bytes;
} Seed;

/* g_ptr_array_sort passes pointers to the elements. */
static gint by_name(gconstpointer a, gconstpointer b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static GPtrArray *load_corpus(const char *corpus)
{
  char *rel = g_build_filename("tests", "fuzz", "corpus", corpus, NULL);
  char *dir = moelm_test_srcpath(rel);
  GDir *d = g_dir_open(dir, 0, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL)
    g_ptr_array_add(names, g_strdup(name));
  g_dir_close(d);
  g_ptr_array_sort(names, by_name);
  GPtrArray *seeds = g_ptr_array_new();
  for (guint i = 0; i < names->len; i++) {
    char *path = g_build_filename(dir, names->pdata[i], NULL);
    gsize len = 0;
    char *data = moelm_test_read_file(path, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(data);
    Seed *s = g_new(Seed, 1);
    s->name = g_strdup(names->pdata[i]);
    s->bytes = g_bytes_new_take(data, len);
    g_ptr_array_add(seeds, s);
    g_free(path);
  }
  g_ptr_array_unref(names);
  g_free(dir);
  g_free(rel);
  return seeds;
}

static void free_corpus(GPtrArray *seeds)
{
  for (guint i = 0; i < seeds->len; i++) {
    Seed *s = seeds->pdata[i];
    g_free(s->name);
    g_bytes_unref(s->bytes);
    g_free(s);
  }
  g_ptr_array_free(seeds, TRUE);
}

/* Run the harness on an exact-size private copy, so a sanitizer build sees overreads. */
static void run_one(const Target *t, const uint8_t *data, gsize len)
{
  uint8_t *copy = g_malloc(MAX(len, 1));
  if (len > 0)
    memcpy(copy, data, len);
  CU_ASSERT_EQUAL(t->harness(copy, len), 0);
  g_free(copy);
}

/* ---- mutations ----------------------------------------------------------------------- */

static const uint8_t interesting_bytes[] = {0, 1, 2, 7, 8, 0x7f, 0x80, 0xff, '"', '\\', '{', '}', '[', ']', ',', ':',
                                            ' ', '\n', '\r', '-', '0', '9', 'e', '#'};
static const uint64_t interesting_ints[] = {0, 1, 2, 8, 0x7f, 0x80, 0xff, 0x7fff, 0xffff, 0x7fffffff, 0x80000000u,
                                            0xffffffffu, 0x100000000ull, 0x7fffffffffffffffull,
                                            0x8000000000000000ull, 0xffffffffffffffffull};

static guint below(MoelmRng *rng, guint n) { return n == 0 ? 0 : moelm_rng_next_below(rng, n); }

/* src must not point into buf. */
static void insert_bytes(GByteArray *buf, guint pos, const uint8_t *src, guint n)
{
  guint old = buf->len;
  g_byte_array_set_size(buf, old + n);
  memmove(buf->data + pos + n, buf->data + pos, old - pos);
  memcpy(buf->data + pos, src, n);
}

static void mutate(GByteArray *buf, MoelmRng *rng, GPtrArray *seeds)
{
  guint len = buf->len;
  guint pos = below(rng, len + 1);
  switch (below(rng, 9)) {
  case 0: /* flip one bit */
    if (len > 0)
      buf->data[below(rng, len)] ^= (uint8_t)(1u << below(rng, 8));
    break;
  case 1: /* a random byte */
    if (len > 0)
      buf->data[below(rng, len)] = (uint8_t)moelm_rng_next_u32(rng);
    break;
  case 2: /* a byte that matters to the formats */
    if (len > 0)
      buf->data[below(rng, len)] = interesting_bytes[below(rng, G_N_ELEMENTS(interesting_bytes))];
    break;
  case 3: { /* insert 1-4 bytes */
    uint8_t ins[4];
    guint n = 1 + below(rng, 4);
    for (guint i = 0; i < n; i++)
      ins[i] = below(rng, 2) ? (uint8_t)moelm_rng_next_u32(rng)
                             : interesting_bytes[below(rng, G_N_ELEMENTS(interesting_bytes))];
    insert_bytes(buf, pos, ins, n);
    break;
  }
  case 4: { /* delete 1-8 bytes */
    guint n = 1 + below(rng, 8);
    if (pos < len)
      g_byte_array_remove_range(buf, pos, MIN(len - pos, n));
    break;
  }
  case 5: /* truncate */
    g_byte_array_set_size(buf, pos);
    break;
  case 6: { /* splice in a piece of another seed */
    const Seed *other = seeds->pdata[below(rng, seeds->len)];
    gsize olen;
    const uint8_t *odata = g_bytes_get_data(other->bytes, &olen);
    if (olen == 0)
      break;
    guint from = below(rng, (guint)olen), n = 1 + below(rng, (guint)MIN(olen - from, 64));
    if (below(rng, 2))
      g_byte_array_set_size(buf, pos); /* head of this one + tail of the other */
    insert_bytes(buf, MIN(pos, buf->len), odata + from, n);
    break;
  }
  case 7: { /* overwrite a little-endian integer (lengths, counts, offsets) */
    guint width = below(rng, 2) ? 8 : 4;
    if (len < width)
      break;
    uint64_t v = interesting_ints[below(rng, G_N_ELEMENTS(interesting_ints))];
    if (below(rng, 4) == 0)
      v += (uint64_t)(int)below(rng, 5) - 2;
    guint at = below(rng, len - width + 1);
    for (guint i = 0; i < width; i++)
      buf->data[at + i] = (uint8_t)(v >> (8 * i));
    break;
  }
  default: { /* duplicate a chunk */
    if (len == 0)
      break;
    guint from = below(rng, len), n = 1 + below(rng, MIN(len - from, 32));
    uint8_t *chunk = g_malloc(n);
    memcpy(chunk, buf->data + from, n);
    insert_bytes(buf, pos, chunk, n);
    g_free(chunk);
    break;
  }
  }
}

static double budget_seconds(void)
{
  const char *env = g_getenv("MOELM_FUZZ_SECONDS");
  double s = env ? g_ascii_strtod(env, NULL) : 0.0;
  return s > 0 ? s : 2.0;
}

static void fuzz_target(const Target *t)
{
  GPtrArray *seeds = load_corpus(t->corpus);
  CU_ASSERT_FATAL(seeds->len > 0);
  int valid = 0, near = 0;
  for (guint i = 0; i < seeds->len; i++) {
    const Seed *s = seeds->pdata[i];
    gsize len;
    const uint8_t *data = g_bytes_get_data(s->bytes, &len);
    GError *error = NULL;
    gboolean accepted = t->read(data, len, &error);
    if (g_str_has_prefix(s->name, "valid-")) {
      if (!accepted)
        g_printerr("\n  %s/%s refused: %s\n", t->corpus, s->name, error->message);
      CU_ASSERT_TRUE(accepted);
      valid++;
    } else if (g_str_has_prefix(s->name, "near-")) {
      if (accepted)
        g_printerr("\n  %s/%s accepted\n", t->corpus, s->name);
      CU_ASSERT_FALSE(accepted);
      near++;
    }
    g_clear_error(&error);
    /* The seed and every prefix of it. */
    for (gsize cut = 0; cut <= len; cut++)
      run_one(t, data, cut);
  }
  CU_ASSERT(valid > 0 && near > 0);

  double seconds = budget_seconds();
  guint max_iterations = (guint)(100000 * seconds);
  gint64 deadline = g_get_monotonic_time() + (gint64)(seconds * G_USEC_PER_SEC);
  MoelmRng rng;
  moelm_rng_init(&rng, 0x5eedf00du, t->stream, 0);
  GByteArray *buf = g_byte_array_new();
  guint it, accepted = 0;
  for (it = 0; it < max_iterations; it++) {
    if ((it & 63) == 0 && g_get_monotonic_time() > deadline)
      break;
    const Seed *s = seeds->pdata[below(&rng, seeds->len)];
    gsize len;
    const uint8_t *data = g_bytes_get_data(s->bytes, &len);
    g_byte_array_set_size(buf, 0);
    g_byte_array_append(buf, data, (guint)len);
    for (guint m = 1 + below(&rng, 4); m > 0; m--)
      mutate(buf, &rng, seeds);
    run_one(t, buf->data, buf->len);
    if ((it & 7) == 0 && t->read(buf->data, buf->len, NULL))
      accepted++;
  }
  CU_ASSERT(it > 100); /* the loop really ran */
  /* Mutants stay close enough to the formats that some are still accepted. */
  CU_ASSERT(accepted > 0);
  if (g_getenv("MOELM_FUZZ_SECONDS"))
    g_printerr("\n  %s: %u inputs, %u of %u sampled mutants accepted\n", t->corpus, it, accepted, (it + 7) / 8);
  g_byte_array_unref(buf);
  free_corpus(seeds);
}

static void test_fuzz_dict(void) { fuzz_target(&targets[0]); }
static void test_fuzz_idx(void) { fuzz_target(&targets[1]); }
static void test_fuzz_safetensors(void) { fuzz_target(&targets[2]); }
static void test_fuzz_pickle(void) { fuzz_target(&targets[3]); }
static void test_fuzz_zip(void) { fuzz_target(&targets[4]); }
static void test_fuzz_checkpoint(void) { fuzz_target(&targets[5]); }

MOELM_TEST_SUITE(fuzz)
{
  CU_add_test(suite, "dict.txt reader: seeds, prefixes, mutations", test_fuzz_dict);
  CU_add_test(suite, "MMIDIDX index validator: seeds, prefixes, mutations", test_fuzz_idx);
  CU_add_test(suite, "safetensors reader: seeds, prefixes, mutations", test_fuzz_safetensors);
  CU_add_test(suite, "restricted unpickler: seeds, prefixes, mutations", test_fuzz_pickle);
  CU_add_test(suite, "zip reader and PyTorch tensors: seeds, prefixes, mutations", test_fuzz_zip);
  CU_add_test(suite, "checkpoint metadata: seeds, prefixes, mutations", test_fuzz_checkpoint);
}
