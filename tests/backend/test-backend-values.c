/* Known values and contracts of the backend: fairseq's sinusoidal table, cross-entropy's
 * ignore_index, fully masked attention rows, incremental decoding against the full
 * forward, dropout masks, one Adam step by hand, and the thread pool under load. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "moelm/errors.h"
#include "backend-test-util.h"
#include "backend/cpu/cpu-internal.h"

static void test_sinusoidal_table(void)
{
  /* C = 8, padding_idx = 1, max_positions = 4: 6 rows, frequencies 10000^(-i/3) */
  float table[6 * 8];
  GError *error = NULL;
  CU_ASSERT_TRUE_FATAL(moelm_sinusoidal_positions(table, 4, 8, 1, &error));
  static const float row2[8] = {0.9092974f, 0.0926985f, 0.0043089f, 0.0002f,
                                -0.4161468f, 0.9956942f, 0.9999907f, 1.0f};
  static const float row5[8] = {-0.9589243f, 0.2300017f, 0.0107720f, 0.0005f,
                                0.2836622f, 0.9731902f, 0.9999420f, 0.9999999f};
  bt_assert_close("sinusoidal row 2", table + 2 * 8, row2, 8, 0, 1e-6);
  bt_assert_close("sinusoidal row 5", table + 5 * 8, row5, 8, 0, 1e-6);
  for (int c = 0; c < 8; c++) {
    CU_ASSERT_EQUAL(table[1 * 8 + c], 0.0f);            /* the padding row */
    CU_ASSERT_EQUAL(table[0 * 8 + c], c < 4 ? 0.0f : 1.0f); /* sin 0 | cos 0 */
  }
  /* odd dimension: the same 8 columns, then a zero column */
  float odd[6 * 9];
  CU_ASSERT_TRUE_FATAL(moelm_sinusoidal_positions(odd, 4, 9, 1, &error));
  for (int r = 0; r < 6; r++) {
    bt_assert_close("sinusoidal odd dim", odd + r * 9, table + r * 8, 8, 0, 0);
    CU_ASSERT_EQUAL(odd[r * 9 + 8], 0.0f);
  }
  CU_ASSERT_FALSE(moelm_sinusoidal_positions(odd, 4, 3, 1, &error));
  MOELM_ASSERT_ERROR(error, "dim >= 4");
  g_clear_error(&error);
}

static void test_cross_entropy_values(void)
{
  /* row 0: logits (0, ln 2, ln 3), target 2: loss = ln 6 - ln 3 = ln 2; row 1 ignored */
  float logits[2 * 3] = {0.0f, (float)M_LN2, (float)log(3.0), 5.0f, -1.0f, 2.0f};
  int32_t targets[2] = {2, 1};
  float dloss[2] = {2.0f, 7.0f};
  for (int which = 0; which < 2; which++) {
    MoelmBackend *be = which == 0 ? bt_reference() : bt_fast(2);
    float l[6], losses[2] = {-1, -1}, lprobs[2] = {-1, -1};
    memcpy(l, logits, sizeof(l));
    be->ops->target_log_probs(be, lprobs, A(logits), targets, 2, 3, 1);
    be->ops->cross_entropy(be, losses, A(l), targets, dloss, 2, 3, 1);
    CU_ASSERT_DOUBLE_EQUAL(losses[0], M_LN2, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(lprobs[0], -M_LN2, 1e-6);
    CU_ASSERT_EQUAL(losses[1], 0.0f);
    CU_ASSERT_EQUAL(lprobs[1], 0.0f);
    /* gradient (softmax - onehot) * dloss = ((1/6, 2/6, 3/6) - (0, 0, 1)) * 2 */
    CU_ASSERT_DOUBLE_EQUAL(l[0], 2.0 / 6, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(l[1], 4.0 / 6, 1e-6);
    CU_ASSERT_DOUBLE_EQUAL(l[2], -1.0, 1e-6);
    for (int v = 3; v < 6; v++)
      CU_ASSERT_EQUAL(l[v], 0.0f);
    /* without dloss the logits are left alone */
    memcpy(l, logits, sizeof(l));
    be->ops->cross_entropy(be, losses, A(l), targets, NULL, 2, 3, 1);
    CU_ASSERT_EQUAL(memcmp(l, logits, sizeof(l)), 0);
    moelm_backend_free(be);
  }
}

static void test_attention_masked_rows(void)
{
  /* B = 2, T = 5: row 0 has every key padded; row 1 pads keys 0 and 1 (queries 0, 1 see nothing) */
  const int B = 2, T = 5, C = 6, NH = 2;
  uint8_t kpm[2 * 5] = {1, 1, 1, 1, 1, 1, 1, 0, 0, 0};
  MoelmRng rng;
  moelm_rng_init(&rng, 31, 0, 0);
  float *qkv = bt_uniform(&rng, (size_t)B * T * 3 * C, -1, 1), *dout = bt_uniform(&rng, (size_t)B * T * C, -1, 1);
  MoelmDropoutIds ids = {.seed = 1};
  for (int which = 0; which < 2; which++) {
    MoelmBackend *be = which == 0 ? bt_reference() : bt_fast(2);
    float *out = bt_uniform(&rng, (size_t)B * T * C, -1, 1); /* garbage that must be overwritten */
    float *saved = bt_zeros(be->ops->attention_saved_bytes(be, B, T, C, NH) / sizeof(float));
    float *dqkv = bt_zeros((size_t)B * T * 3 * C);
    be->ops->attention_forward(be, A(out), saved, A(qkv), kpm, B, T, C, NH, 0.2f, &ids);
    be->ops->attention_backward(be, A(dqkv), A(dout), A(qkv), saved, kpm, B, T, C, NH, 0.2f, &ids);
    for (int i = 0; i < T * C; i++)
      CU_ASSERT_EQUAL(out[i], 0.0f); /* batch row 0: all zeros */
    for (int i = 0; i < 2 * C; i++)
      CU_ASSERT_EQUAL(out[T * C + i], 0.0f); /* batch row 1, queries 0 and 1 */
    for (int t = 2; t < T; t++) { /* the others are real outputs */
      double norm = 0;
      for (int i = 0; i < C; i++)
        norm += fabs(out[(T + t) * C + i]);
      CU_ASSERT(norm > 0);
    }
    for (int i = 0; i < B * T * 3 * C; i++)
      CU_ASSERT_FATAL(isfinite(dqkv[i]));
    for (int i = 0; i < T * 3 * C; i++)
      CU_ASSERT_EQUAL(dqkv[i], 0.0f); /* nothing flows into a fully masked batch row */
    g_free(out), g_free(saved), g_free(dqkv);
    moelm_backend_free(be);
  }
  g_free(qkv), g_free(dout);
}

static void test_attention_uniform(void)
{
  /* q = 0 makes every visible key equally likely: out[t] = mean of v[0..t] */
  const int T = 4, C = 2, NH = 1;
  float qkv[4 * 6] = {0};
  for (int t = 0; t < T; t++)
    qkv[t * 6 + 4] = (float)(t + 1), qkv[t * 6 + 5] = (float)(10 * (t + 1)), qkv[t * 6 + 2] = (float)t;
  for (int which = 0; which < 2; which++) {
    MoelmBackend *be = which == 0 ? bt_reference() : bt_fast(2);
    float out[4 * 2];
    be->ops->attention_forward(be, A(out), NULL, A(qkv), NULL, 1, T, C, NH, 0.0f, NULL);
    static const float expect[8] = {1, 10, 1.5f, 15, 2, 20, 2.5f, 25};
    bt_assert_close("attention with uniform probabilities", out, expect, 8, 1e-6, 1e-6);
    moelm_backend_free(be);
  }
}

static void test_attention_decode(void)
{
  const int B = 2, T = 11, C = 12, NH = 3, Tcap = 16;
  MoelmRng rng;
  moelm_rng_init(&rng, 32, 0, 0);
  float *qkv = bt_uniform(&rng, (size_t)B * T * 3 * C, -2, 2);
  uint8_t kpm[2 * 11] = {0};
  kpm[0] = kpm[1] = 1; /* row 0 is left-padded by 2 */
  kpm[11 + 5] = 1;
  float *q = bt_zeros((size_t)B * T * C), *kc = bt_zeros((size_t)B * Tcap * C), *vc = bt_zeros((size_t)B * Tcap * C);
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const float *row = qkv + ((size_t)b * T + t) * 3 * C;
      memcpy(q + ((size_t)b * T + t) * C, row, C * sizeof(float));
      memcpy(kc + ((size_t)b * Tcap + t) * C, row + C, C * sizeof(float));
      memcpy(vc + ((size_t)b * Tcap + t) * C, row + 2 * C, C * sizeof(float));
    }
  for (int which = 0; which < 2; which++) {
    MoelmBackend *be = which == 0 ? bt_reference() : bt_fast(2);
    float *full = bt_zeros((size_t)B * T * C), *dec = bt_zeros((size_t)B * T * C);
    be->ops->attention_forward(be, A(full), NULL, A(qkv), kpm, B, T, C, NH, 0.0f, NULL);
    /* all T queries at once */
    be->ops->attention_decode(be, A(dec), A(q), A(kc), A(vc), kpm, B, T, T, Tcap, C, NH);
    bt_assert_close("decode of all positions vs forward", dec, full, (size_t)B * T * C, 1e-5, 1e-6);
    /* one step at a time, the cache growing; the mask has Tk columns */
    for (int t = 0; t < T; t++) {
      uint8_t mask_t[2 * 11];
      for (int b = 0; b < B; b++)
        memcpy(mask_t + b * (t + 1), kpm + b * T, (size_t)t + 1);
      float qt[2 * 12], ot[2 * 12];
      for (int b = 0; b < B; b++)
        memcpy(qt + b * C, q + ((size_t)b * T + t) * C, C * sizeof(float));
      be->ops->attention_decode(be, A(ot), A(qt), A(kc), A(vc), mask_t, B, 1, t + 1, Tcap, C, NH);
      for (int b = 0; b < B; b++)
        bt_assert_close("decode step vs forward", ot + b * C, full + ((size_t)b * T + t) * C, C, 1e-5, 1e-6);
    }
    g_free(full), g_free(dec);
    moelm_backend_free(be);
  }
  g_free(qkv), g_free(q), g_free(kc), g_free(vc);
}

static void test_dropout_masks(void)
{
  const size_t n = 200000;
  const float p = 0.25f;
  MoelmDropoutIds ids = {.seed = 1234, .update = 17, .layer = 2, .site = 3};
  float *ones = g_new(float, n), *out = g_new(float, n), *other = g_new(float, n);
  for (size_t i = 0; i < n; i++)
    ones[i] = 1.0f;
  MoelmBackend *be = bt_fast(2);
  be->ops->dropout_forward(be, A(out), A(ones), n, p, &ids);
  size_t dropped = 0, wrong = 0;
  for (size_t i = 0; i < n; i++) {
    gboolean keep = moelm_u32_to_unit_float(moelm_philox_word(1234, 17, 2, 3, i)) >= p;
    wrong += out[i] != (keep ? 1.0f / (1.0f - p) : 0.0f);
    dropped += !keep;
  }
  CU_ASSERT_EQUAL(wrong, 0);
  CU_ASSERT_DOUBLE_EQUAL((double)dropped / n, p, 0.01);
  /* another site draws another mask; p = 0 is the identity */
  MoelmDropoutIds ids2 = ids;
  ids2.site = 4;
  be->ops->dropout_forward(be, A(other), A(ones), n, p, &ids2);
  CU_ASSERT_NOT_EQUAL(memcmp(out, other, n * sizeof(float)), 0);
  be->ops->dropout_forward(be, A(other), A(ones), n, 0.0f, NULL);
  CU_ASSERT_EQUAL(memcmp(ones, other, n * sizeof(float)), 0);
  moelm_backend_free(be);
  g_free(ones), g_free(out), g_free(other);
}

static void test_dropout_multipliers(void)
{
  /* the vectorised mask fill against the scalar definition at unaligned starts and odd
   * lengths, and where 8 consecutive blocks cross a 2^32 boundary of the block counter */
  const float p = 0.4f;
  MoelmDropoutIds ids = {.seed = 0x123456789abcULL, .update = 5, .layer = 7, .site = 9};
  static const uint64_t bases[] = {0, 1, 2, 3, 4, 37, 4 * (((uint64_t)1 << 32) - 5) + 1};
  float mult[200];
  size_t wrong = 0, checked = 0;
  for (size_t b = 0; b < G_N_ELEMENTS(bases); b++)
    for (size_t n = 1; n <= 200; n += 7) {
      moelm_dropout_fill_multipliers(mult, &ids, p, bases[b], n);
      for (size_t k = 0; k < n; k++, checked++)
        wrong += mult[k] != (moelm_dropout_keep(&ids, p, bases[b] + k) ? 1.0f / (1.0f - p) : 0.0f);
    }
  CU_ASSERT(checked > 1000);
  CU_ASSERT_EQUAL(wrong, 0);
}

static void test_adam_by_hand(void)
{
  /* one first step: m = 0.02, v = 4e-5, step size = lr sqrt(1-b2)/(1-b1) = sqrt(1e-3);
   * p = 1 - wd lr = 0.99, then p -= sqrt(1e-3) * 0.02 / sqrt(4e-5) = 0.1 -> 0.89 */
  MoelmAdamParams hp = {.lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f,
                        .grad_scale = 0.5f, .step = 1};
  for (int which = 0; which < 2; which++) {
    MoelmBackend *be = which == 0 ? bt_reference() : bt_fast(2);
    float p = 1.0f, g = 0.4f, m = 0.0f, v = 0.0f;
    be->ops->adam_step(be, &p, &g, &m, &v, 1, &hp);
    CU_ASSERT_DOUBLE_EQUAL(m, 0.02, 1e-7);
    CU_ASSERT_DOUBLE_EQUAL(v, 4e-5, 1e-8); /* 1 - beta2 is rounded to float */
    CU_ASSERT_DOUBLE_EQUAL(p, 0.89, 1e-5);
    moelm_backend_free(be);
  }
}

typedef struct {
  gint64 *counts;
} PoolCtx;

static void count_indices(void *ctx, int64_t begin, int64_t end)
{
  PoolCtx *c = ctx;
  for (int64_t i = begin; i < end; i++)
    c->counts[i]++; /* each index is handed out once: no atomics needed */
}

static void test_thread_pool(void)
{
  for (int threads = 1; threads <= 4; threads++) {
    MoelmThreadPool *pool = moelm_thread_pool_new(threads);
    CU_ASSERT_EQUAL(moelm_thread_pool_size(pool), threads);
    const int64_t n = 1000;
    gint64 *counts = g_new0(gint64, n);
    PoolCtx c = {counts};
    /* many small jobs back to back: the pattern of a training step */
    for (int rep = 0; rep < 2000; rep++)
      moelm_thread_pool_run(pool, n - rep % 7, 1 + rep % 3, count_indices, &c);
    gboolean ok = TRUE;
    for (int64_t i = 0; i < n; i++) {
      int64_t expect = 0;
      for (int rep = 0; rep < 2000; rep++)
        expect += i < n - rep % 7;
      ok = ok && counts[i] == expect;
    }
    CU_ASSERT_TRUE(ok);
    g_free(counts);
    moelm_thread_pool_free(pool);
  }
}

static void test_backend_creation(void)
{
  GError *error = NULL;
  MoelmBackend *ref = moelm_backend_cpu_new(TRUE, 8, &error);
  MoelmBackend *fast = moelm_backend_cpu_new(FALSE, 0, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
  CU_ASSERT_PTR_NOT_NULL_FATAL(fast);
  CU_ASSERT_STRING_EQUAL(ref->ops->name, "cpu-reference");
  CU_ASSERT_STRING_EQUAL(fast->ops->name, "cpu");
  CU_ASSERT_EQUAL(ref->n_threads, 1);
  CU_ASSERT_EQUAL(fast->n_threads, (int)g_get_num_processors());
  /* memory ops round-trip */
  float host[5] = {1, 2, 3, 4, 5}, back[5] = {0};
  float *dev = fast->ops->alloc(fast, sizeof(host), &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(dev);
  CU_ASSERT_EQUAL((uintptr_t)dev % 64, 0);
  fast->ops->to_device(fast, dev, host, sizeof(host));
  fast->ops->to_host(fast, back, dev, sizeof(host));
  CU_ASSERT_EQUAL(memcmp(host, back, sizeof(host)), 0);
  fast->ops->zero(fast, dev, sizeof(host));
  CU_ASSERT_TRUE(fast->ops->synchronize(fast, NULL));
  fast->ops->to_host(fast, back, dev, sizeof(host));
  CU_ASSERT_EQUAL(back[0] + back[4], 0.0f);
  fast->ops->free(fast, dev);
  moelm_backend_free(ref);
  moelm_backend_free(fast);
  moelm_backend_free(NULL);
  CU_ASSERT_PTR_NULL(moelm_backend_cpu_new(FALSE, 100000, &error));
  MOELM_ASSERT_ERROR(error, "threads");
  g_clear_error(&error);
}

MOELM_TEST_SUITE(backend_values)
{
  CU_add_test(suite, "sinusoidal table: fairseq values, padding row, odd dim", test_sinusoidal_table);
  CU_add_test(suite, "cross-entropy values, ignore_index, gradient in place", test_cross_entropy_values);
  CU_add_test(suite, "attention: fully masked rows give zeros", test_attention_masked_rows);
  CU_add_test(suite, "attention: uniform probabilities average the values", test_attention_uniform);
  CU_add_test(suite, "attention_decode matches the full forward", test_attention_decode);
  CU_add_test(suite, "dropout masks follow Philox(seed, update, layer, site, i)", test_dropout_masks);
  CU_add_test(suite, "dropout multipliers: vector fill equals the scalar rule", test_dropout_multipliers);
  CU_add_test(suite, "adam step by hand", test_adam_by_hand);
  CU_add_test(suite, "thread pool hands every index out once", test_thread_pool);
  CU_add_test(suite, "backend creation, names, memory ops", test_backend_creation);
}
