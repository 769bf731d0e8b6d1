/* The fast CPU path (OpenBLAS/blocked sgemm, thread pool, AVX2 helpers) against the
 * reference loops, forward and backward, on random inputs whose sizes are not multiples
 * of the vector width or the block sizes, with 2 and 3 threads. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "moelm-test.h"
#include "backend-test-util.h"
#include "backend/cpu/cpu-internal.h"

#define RTOL 1e-4
#define ATOL 1e-5

static const int thread_counts[] = {2, 3};

/* ---- gemm ----------------------------------------------------------------------------- */

static void check_gemm(MoelmBackend *ref, MoelmBackend *fast, int M, int N, int K, gboolean ta, gboolean tb,
                       float alpha, float beta)
{
  MoelmRng rng;
  moelm_rng_init(&rng, (uint64_t)M * 1000 + N, K, ta * 2 + tb);
  float *a = bt_uniform(&rng, (size_t)M * K, -1, 1), *b = bt_uniform(&rng, (size_t)K * N, -1, 1);
  float *c0 = bt_uniform(&rng, (size_t)M * N, -1, 1);
  float *c_ref = bt_copy(c0, (size_t)M * N), *c_fast = bt_copy(c0, (size_t)M * N), *c_blk = bt_copy(c0, (size_t)M * N);
  ref->ops->gemm(ref, c_ref, a, b, M, N, K, ta, tb, alpha, beta);
  fast->ops->gemm(fast, c_fast, a, b, M, N, K, ta, tb, alpha, beta);
  moelm_cpu_sgemm_blocked(ta, tb, M, N, K, alpha, a, ta ? M : K, b, tb ? K : N, beta, c_blk, N);
  bt_assert_close("gemm fast vs reference", c_fast, c_ref, (size_t)M * N, RTOL, ATOL);
  bt_assert_close("blocked sgemm vs reference", c_blk, c_ref, (size_t)M * N, RTOL, ATOL);
  g_free(a), g_free(b), g_free(c0), g_free(c_ref), g_free(c_fast), g_free(c_blk);
}

static void test_gemm(void)
{
  static const int shapes[][3] = {{37, 29, 45}, {1, 70, 33}, {130, 3, 17}, {300, 200, 64}, {20, 500, 300},
                                  {70, 300, 270}};
  MoelmBackend *ref = bt_reference();
  for (size_t t = 0; t < G_N_ELEMENTS(thread_counts); t++) {
    MoelmBackend *fast = bt_fast(thread_counts[t]);
    for (size_t s = 0; s < G_N_ELEMENTS(shapes); s++)
      for (int tr = 0; tr < 4; tr++) {
        check_gemm(ref, fast, shapes[s][0], shapes[s][1], shapes[s][2], tr & 1, tr >> 1, 0.7f, 0.3f);
        check_gemm(ref, fast, shapes[s][0], shapes[s][1], shapes[s][2], tr & 1, tr >> 1, 1.0f, 0.0f);
      }
    moelm_backend_free(fast);
  }
  moelm_backend_free(ref);
}

/* ---- linear --------------------------------------------------------------------------- */

static void check_linear(MoelmBackend *ref, MoelmBackend *fast, int N, int IC, int OC, gboolean with_bias)
{
  MoelmRng rng;
  moelm_rng_init(&rng, 21, N, IC);
  size_t ni = (size_t)N * IC, nw = (size_t)OC * IC, no = (size_t)N * OC;
  float *inp = bt_uniform(&rng, ni, -1, 1), *w = bt_uniform(&rng, nw, -1, 1), *b = bt_uniform(&rng, OC, -1, 1);
  float *dout = bt_uniform(&rng, no, -1, 1);
  float *o_ref = bt_zeros(no), *o_fast = bt_zeros(no);
  ref->ops->linear_forward(ref, A(o_ref), A(inp), w, with_bias ? b : NULL, N, IC, OC);
  fast->ops->linear_forward(fast, A(o_fast), A(inp), w, with_bias ? b : NULL, N, IC, OC);
  bt_assert_close("linear forward", o_fast, o_ref, no, RTOL, ATOL);
  float *di0 = bt_uniform(&rng, ni, -1, 1), *dw0 = bt_uniform(&rng, nw, -1, 1), *db0 = bt_uniform(&rng, OC, -1, 1);
  float *di_r = bt_copy(di0, ni), *dw_r = bt_copy(dw0, nw), *db_r = bt_copy(db0, OC);
  float *di_f = bt_copy(di0, ni), *dw_f = bt_copy(dw0, nw), *db_f = bt_copy(db0, OC);
  ref->ops->linear_backward(ref, A(di_r), dw_r, with_bias ? db_r : NULL, A(dout), A(inp), w, N, IC, OC);
  fast->ops->linear_backward(fast, A(di_f), dw_f, with_bias ? db_f : NULL, A(dout), A(inp), w, N, IC, OC);
  bt_assert_close("linear dinp", di_f, di_r, ni, RTOL, ATOL);
  bt_assert_close("linear dweight", dw_f, dw_r, nw, RTOL, ATOL);
  bt_assert_close("linear dbias", db_f, db_r, OC, RTOL, ATOL);
  g_free(inp), g_free(w), g_free(b), g_free(dout), g_free(o_ref), g_free(o_fast), g_free(di0), g_free(dw0);
  g_free(db0), g_free(di_r), g_free(dw_r), g_free(db_r), g_free(di_f), g_free(dw_f), g_free(db_f);
}

static void test_linear(void)
{
  MoelmBackend *ref = bt_reference();
  for (size_t t = 0; t < G_N_ELEMENTS(thread_counts); t++) {
    MoelmBackend *fast = bt_fast(thread_counts[t]);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
      check_linear(ref, fast, 67, 45, 83, with_bias);
      check_linear(ref, fast, 300, 64, 130, with_bias);
      check_linear(ref, fast, 3, 200, 1003, with_bias);
    }
    moelm_backend_free(fast);
  }
  moelm_backend_free(ref);
}

/* ---- embedding and layer norm --------------------------------------------------------- */

static void check_embedding(MoelmBackend *ref, MoelmBackend *fast, int N, int C, gboolean learned)
{
  MoelmRng rng;
  moelm_rng_init(&rng, 22, N, C);
  int V = 50, P = 40;
  int32_t *tokens = g_new(int32_t, N), *positions = g_new(int32_t, N);
  for (int n = 0; n < N; n++) {
    tokens[n] = (int32_t)moelm_rng_next_below(&rng, V);
    positions[n] = (int32_t)moelm_rng_next_below(&rng, P);
  }
  float *wte = bt_uniform(&rng, (size_t)V * C, -1, 1), *wpe = bt_uniform(&rng, (size_t)P * C, -1, 1);
  float *dout = bt_uniform(&rng, (size_t)N * C, -1, 1);
  float *o_r = bt_zeros((size_t)N * C), *o_f = bt_zeros((size_t)N * C);
  ref->ops->embedding_forward(ref, A(o_r), tokens, positions, wte, learned ? wpe : NULL, N, C, 1.3f);
  fast->ops->embedding_forward(fast, A(o_f), tokens, positions, wte, learned ? wpe : NULL, N, C, 1.3f);
  bt_assert_close("embedding forward", o_f, o_r, (size_t)N * C, RTOL, ATOL);
  float *dte_r = bt_copy(wte, (size_t)V * C), *dte_f = bt_copy(wte, (size_t)V * C);
  float *dpe_r = bt_copy(wpe, (size_t)P * C), *dpe_f = bt_copy(wpe, (size_t)P * C);
  ref->ops->embedding_backward(ref, dte_r, learned ? dpe_r : NULL, A(dout), tokens, positions, N, C, 1.3f);
  fast->ops->embedding_backward(fast, dte_f, learned ? dpe_f : NULL, A(dout), tokens, positions, N, C, 1.3f);
  bt_assert_close("embedding dwte", dte_f, dte_r, (size_t)V * C, RTOL, ATOL);
  bt_assert_close("embedding dwpe", dpe_f, dpe_r, (size_t)P * C, RTOL, ATOL);
  g_free(tokens), g_free(positions), g_free(wte), g_free(wpe), g_free(dout), g_free(o_r), g_free(o_f);
  g_free(dte_r), g_free(dte_f), g_free(dpe_r), g_free(dpe_f);
}

static void check_layernorm(MoelmBackend *ref, MoelmBackend *fast, int N, int C)
{
  MoelmRng rng;
  moelm_rng_init(&rng, 23, N, C);
  size_t nc = (size_t)N * C;
  float *inp = bt_uniform(&rng, nc, -3, 5), *w = bt_uniform(&rng, C, 0.5f, 1.5f), *b = bt_uniform(&rng, C, -1, 1);
  float *dout = bt_uniform(&rng, nc, -1, 1);
  float *o_r = bt_zeros(nc), *o_f = bt_zeros(nc), *m_r = bt_zeros(N), *m_f = bt_zeros(N);
  float *s_r = bt_zeros(N), *s_f = bt_zeros(N);
  ref->ops->layernorm_forward(ref, A(o_r), m_r, s_r, A(inp), w, b, N, C, 1e-5f);
  fast->ops->layernorm_forward(fast, A(o_f), m_f, s_f, A(inp), w, b, N, C, 1e-5f);
  bt_assert_close("layernorm forward", o_f, o_r, nc, RTOL, 1e-4);
  bt_assert_close("layernorm mean", m_f, m_r, N, RTOL, ATOL);
  bt_assert_close("layernorm rstd", s_f, s_r, N, RTOL, ATOL);
  float *di_r = bt_copy(dout, nc), *di_f = bt_copy(dout, nc);
  float *dw_r = bt_copy(w, C), *dw_f = bt_copy(w, C), *db_r = bt_copy(b, C), *db_f = bt_copy(b, C);
  ref->ops->layernorm_backward(ref, A(di_r), dw_r, db_r, A(dout), A(inp), w, m_r, s_r, N, C);
  fast->ops->layernorm_backward(fast, A(di_f), dw_f, db_f, A(dout), A(inp), w, m_r, s_r, N, C);
  bt_assert_close("layernorm dinp", di_f, di_r, nc, RTOL, 1e-4);
  bt_assert_close("layernorm dweight", dw_f, dw_r, C, RTOL, 1e-4);
  bt_assert_close("layernorm dbias", db_f, db_r, C, RTOL, 1e-4);
  g_free(inp), g_free(w), g_free(b), g_free(dout), g_free(o_r), g_free(o_f), g_free(m_r), g_free(m_f);
  g_free(s_r), g_free(s_f), g_free(di_r), g_free(di_f), g_free(dw_r), g_free(dw_f), g_free(db_r), g_free(db_f);
}

static void test_embedding_layernorm(void)
{
  MoelmBackend *ref = bt_reference();
  for (size_t t = 0; t < G_N_ELEMENTS(thread_counts); t++) {
    MoelmBackend *fast = bt_fast(thread_counts[t]);
    check_embedding(ref, fast, 37, 45, TRUE);
    check_embedding(ref, fast, 2000, 70, TRUE);
    check_embedding(ref, fast, 2000, 70, FALSE);
    check_layernorm(ref, fast, 67, 45);
    check_layernorm(ref, fast, 513, 100);
    moelm_backend_free(fast);
  }
  moelm_backend_free(ref);
}

/* ---- attention ------------------------------------------------------------------------ */

static void check_attention(MoelmBackend *ref, MoelmBackend *fast, int B, int T, int C, int NH, gboolean mask,
                            float p)
{
  MoelmRng rng;
  moelm_rng_init(&rng, 24, B * 1000 + T, C * 10 + NH);
  size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
  size_t ns = ref->ops->attention_saved_bytes(ref, B, T, C, NH) / sizeof(float);
  CU_ASSERT_EQUAL(fast->ops->attention_saved_bytes(fast, B, T, C, NH) / sizeof(float), ns);
  float *qkv = bt_uniform(&rng, nqkv, -2, 2), *dout = bt_uniform(&rng, no, -1, 1);
  uint8_t *kpm = g_new0(uint8_t, (size_t)B * T);
  if (mask) /* row 0: left padding of 3; row 1: pads scattered; others none */
    for (int t = 0; t < T; t++) {
      kpm[t] = t < 3;
      if (B > 1)
        kpm[T + t] = t % 7 == 2 || t == T - 1;
    }
  MoelmDropoutIds ids = {.seed = 77, .update = 4, .layer = 3, .site = 1};
  float *o_r = bt_zeros(no), *o_f = bt_zeros(no), *s_r = bt_zeros(ns), *s_f = bt_zeros(ns);
  ref->ops->attention_forward(ref, A(o_r), s_r, A(qkv), mask ? kpm : NULL, B, T, C, NH, p, &ids);
  fast->ops->attention_forward(fast, A(o_f), s_f, A(qkv), mask ? kpm : NULL, B, T, C, NH, p, &ids);
  bt_assert_close("attention forward", o_f, o_r, no, RTOL, ATOL);
  bt_assert_close("attention saved probabilities", s_f, s_r, ns, RTOL, ATOL);
  /* the output does not depend on whether anything is saved */
  float *o_nosave = bt_zeros(no);
  fast->ops->attention_forward(fast, A(o_nosave), NULL, A(qkv), mask ? kpm : NULL, B, T, C, NH, p, &ids);
  bt_assert_close("attention forward without saving", o_nosave, o_f, no, 0, 0);
  float *d0 = bt_uniform(&rng, nqkv, -1, 1), *d_r = bt_copy(d0, nqkv), *d_f = bt_copy(d0, nqkv);
  ref->ops->attention_backward(ref, A(d_r), A(dout), A(qkv), s_r, mask ? kpm : NULL, B, T, C, NH, p, &ids);
  fast->ops->attention_backward(fast, A(d_f), A(dout), A(qkv), s_r, mask ? kpm : NULL, B, T, C, NH, p, &ids);
  bt_assert_close("attention dqkv", d_f, d_r, nqkv, 1e-3, 1e-4);
  g_free(qkv), g_free(dout), g_free(kpm), g_free(o_r), g_free(o_f), g_free(s_r), g_free(s_f), g_free(o_nosave);
  g_free(d0), g_free(d_r), g_free(d_f);
}

static void test_attention(void)
{
  MoelmBackend *ref = bt_reference();
  for (size_t t = 0; t < G_N_ELEMENTS(thread_counts); t++) {
    MoelmBackend *fast = bt_fast(thread_counts[t]);
    check_attention(ref, fast, 2, 70, 24, 3, TRUE, 0.1f);
    check_attention(ref, fast, 2, 70, 24, 3, TRUE, 0.0f);
    check_attention(ref, fast, 3, 130, 40, 5, FALSE, 0.0f);
    check_attention(ref, fast, 1, 9, 12, 2, FALSE, 0.5f);
    moelm_backend_free(fast);
  }
  moelm_backend_free(ref);
}

/* ---- element-wise --------------------------------------------------------------------- */

static void test_elementwise(void)
{
  static const MoelmActivation acts[] = {MOELM_ACT_RELU, MOELM_ACT_GELU, MOELM_ACT_GELU_ACCURATE, MOELM_ACT_TANH};
  const size_t n = 100003;
  MoelmRng rng;
  moelm_rng_init(&rng, 25, 0, 0);
  float *x = bt_uniform(&rng, n, -4, 4), *y = bt_uniform(&rng, n, -1, 1), *g0 = bt_uniform(&rng, n, -1, 1);
  MoelmBackend *ref = bt_reference();
  for (size_t t = 0; t < G_N_ELEMENTS(thread_counts); t++) {
    MoelmBackend *fast = bt_fast(thread_counts[t]);
    float *r = bt_zeros(n), *f = bt_zeros(n);
    for (size_t a = 0; a < G_N_ELEMENTS(acts); a++) {
      ref->ops->activation_forward(ref, acts[a], A(r), A(x), n);
      fast->ops->activation_forward(fast, acts[a], A(f), A(x), n);
      bt_assert_close("activation forward", f, r, n, RTOL, ATOL);
      memcpy(r, g0, n * sizeof(float)), memcpy(f, g0, n * sizeof(float));
      ref->ops->activation_backward(ref, acts[a], A(r), A(x), A(y), n);
      fast->ops->activation_backward(fast, acts[a], A(f), A(x), A(y), n);
      bt_assert_close("activation backward", f, r, n, RTOL, ATOL);
    }
    MoelmDropoutIds ids = {.seed = 3, .update = 8, .layer = 0, .site = 4};
    ref->ops->dropout_forward(ref, A(r), A(x), n, 0.2f, &ids);
    fast->ops->dropout_forward(fast, A(f), A(x), n, 0.2f, &ids);
    bt_assert_close("dropout forward (bit-identical masks)", f, r, n, 0, 0);
    float *inplace = bt_copy(x, n);
    fast->ops->dropout_forward(fast, A(inplace), A(inplace), n, 0.2f, &ids);
    bt_assert_close("dropout forward in place", inplace, r, n, 0, 0);
    memcpy(r, g0, n * sizeof(float)), memcpy(f, g0, n * sizeof(float));
    ref->ops->dropout_backward(ref, A(r), A(y), n, 0.2f, &ids);
    fast->ops->dropout_backward(fast, A(f), A(y), n, 0.2f, &ids);
    bt_assert_close("dropout backward", f, r, n, 1e-6, 1e-6); /* FMA or not */
    ref->ops->add(ref, A(r), A(x), A(y), n);
    fast->ops->add(fast, A(f), A(x), A(y), n);
    bt_assert_close("add", f, r, n, 0, 0);
    ref->ops->axpy(ref, r, 0.3f, y, n);
    fast->ops->axpy(fast, f, 0.3f, y, n);
    bt_assert_close("axpy", f, r, n, 1e-6, 1e-7);
    ref->ops->scale(ref, r, -1.5f, n);
    fast->ops->scale(fast, f, -1.5f, n);
    bt_assert_close("scale", f, r, n, 1e-6, 1e-7);
    ref->ops->fill(ref, r, 2.5f, n);
    fast->ops->fill(fast, f, 2.5f, n);
    bt_assert_close("fill", f, r, n, 0, 0);
    double ss_r = ref->ops->sum_squares(ref, x, n), ss_f = fast->ops->sum_squares(fast, x, n);
    CU_ASSERT_DOUBLE_EQUAL(ss_f, ss_r, 1e-5 * ss_r);
    /* Adam on copies of the same state */
    MoelmAdamParams hp = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.98f, .eps = 1e-8f, .weight_decay = 0.01f,
                          .grad_scale = 0.5f, .step = 3};
    float *m_r = bt_uniform(&rng, n, -0.1f, 0.1f), *v_r = bt_uniform(&rng, n, 0, 0.01f);
    float *m_f = bt_copy(m_r, n), *v_f = bt_copy(v_r, n);
    memcpy(r, x, n * sizeof(float)), memcpy(f, x, n * sizeof(float));
    ref->ops->adam_step(ref, r, y, m_r, v_r, n, &hp);
    fast->ops->adam_step(fast, f, y, m_f, v_f, n, &hp);
    bt_assert_close("adam param", f, r, n, 1e-6, 1e-6);
    bt_assert_close("adam exp_avg", m_f, m_r, n, 1e-5, 1e-7);
    bt_assert_close("adam exp_avg_sq", v_f, v_r, n, 1e-5, 1e-9);
    g_free(r), g_free(f), g_free(inplace), g_free(m_r), g_free(v_r), g_free(m_f), g_free(v_f);
    moelm_backend_free(fast);
  }
  moelm_backend_free(ref);
  g_free(x), g_free(y), g_free(g0);
}

/* ---- softmax family and rows ---------------------------------------------------------- */

static void test_softmax_family(void)
{
  const int N = 37, V = 1003;
  size_t nl = (size_t)N * V;
  MoelmRng rng;
  moelm_rng_init(&rng, 26, 0, 0);
  float *logits = bt_uniform(&rng, nl, -8, 8), *dloss = bt_uniform(&rng, N, 0, 1), *g = bt_uniform(&rng, nl, -1, 1);
  int32_t targets[37];
  for (int n = 0; n < N; n++)
    targets[n] = n % 5 == 3 ? 1 : (int32_t)moelm_rng_next_below(&rng, V);
  MoelmBackend *ref = bt_reference();
  for (size_t t = 0; t < G_N_ELEMENTS(thread_counts); t++) {
    MoelmBackend *fast = bt_fast(thread_counts[t]);
    float *lr = bt_copy(logits, nl), *lf = bt_copy(logits, nl), *loss_r = bt_zeros(N), *loss_f = bt_zeros(N);
    ref->ops->cross_entropy(ref, loss_r, A(lr), targets, dloss, N, V, 1);
    fast->ops->cross_entropy(fast, loss_f, A(lf), targets, dloss, N, V, 1);
    bt_assert_close("cross_entropy losses", loss_f, loss_r, N, RTOL, ATOL);
    bt_assert_close("cross_entropy dlogits", lf, lr, nl, 1e-4, 1e-8);
    float *lp_r = bt_zeros(N), *lp_f = bt_zeros(N);
    ref->ops->target_log_probs(ref, lp_r, A(logits), targets, N, V, 1);
    fast->ops->target_log_probs(fast, lp_f, A(logits), targets, N, V, 1);
    bt_assert_close("target_log_probs", lp_f, lp_r, N, RTOL, ATOL);
    float *ls_r = bt_zeros(nl), *ls_f = bt_zeros(nl);
    ref->ops->log_softmax_forward(ref, ls_r, A(logits), N, V);
    fast->ops->log_softmax_forward(fast, ls_f, A(logits), N, V);
    bt_assert_close("log_softmax forward", ls_f, ls_r, nl, RTOL, ATOL);
    float *d_r = bt_copy(g, nl), *d_f = bt_copy(g, nl);
    ref->ops->log_softmax_backward(ref, A(d_r), ls_r, g, N, V);
    fast->ops->log_softmax_backward(fast, A(d_f), ls_r, g, N, V);
    bt_assert_close("log_softmax backward", d_f, d_r, nl, RTOL, 1e-4);
    g_free(lr), g_free(lf), g_free(loss_r), g_free(loss_f), g_free(lp_r), g_free(lp_f), g_free(ls_r);
    g_free(ls_f), g_free(d_r), g_free(d_f);
    moelm_backend_free(fast);
  }
  moelm_backend_free(ref);
  g_free(logits), g_free(dloss), g_free(g);
}

static void test_rows(void)
{
  const int n = 300, C = 45, rows = 20;
  MoelmRng rng;
  moelm_rng_init(&rng, 27, 0, 0);
  int32_t *idx = g_new(int32_t, n);
  for (int i = 0; i < n; i++)
    idx[i] = (int32_t)moelm_rng_next_below(&rng, rows);
  float *inp = bt_uniform(&rng, (size_t)n * C, -1, 1), *w = bt_uniform(&rng, n, -1, 1);
  float *table = bt_uniform(&rng, (size_t)rows * C, -1, 1);
  MoelmBackend *ref = bt_reference();
  for (size_t t = 0; t < G_N_ELEMENTS(thread_counts); t++) {
    MoelmBackend *fast = bt_fast(thread_counts[t]);
    float *gr = bt_zeros((size_t)n * C), *gf = bt_zeros((size_t)n * C);
    ref->ops->gather_rows(ref, A(gr), A(table), idx, n, C);
    fast->ops->gather_rows(fast, A(gf), A(table), idx, n, C);
    bt_assert_close("gather_rows", gf, gr, (size_t)n * C, 0, 0);
    float *sr = bt_copy(table, (size_t)rows * C), *sf = bt_copy(table, (size_t)rows * C);
    ref->ops->scatter_add_rows(ref, A(sr), A(inp), idx, w, n, C);
    fast->ops->scatter_add_rows(fast, A(sf), A(inp), idx, w, n, C);
    bt_assert_close("scatter_add_rows", sf, sr, (size_t)rows * C, RTOL, ATOL);
    float *di_r = bt_copy(inp, (size_t)n * C), *di_f = bt_copy(inp, (size_t)n * C);
    float *dw_r = bt_copy(w, n), *dw_f = bt_copy(w, n);
    ref->ops->scatter_add_rows_backward(ref, A(di_r), dw_r, A(table), A(inp), idx, w, n, C);
    fast->ops->scatter_add_rows_backward(fast, A(di_f), dw_f, A(table), A(inp), idx, w, n, C);
    bt_assert_close("scatter_add_rows backward dinp", di_f, di_r, (size_t)n * C, RTOL, ATOL);
    bt_assert_close("scatter_add_rows backward dweight", dw_f, dw_r, n, RTOL, ATOL);
    g_free(gr), g_free(gf), g_free(sr), g_free(sf), g_free(di_r), g_free(di_f), g_free(dw_r), g_free(dw_f);
    moelm_backend_free(fast);
  }
  moelm_backend_free(ref);
  g_free(idx), g_free(inp), g_free(w), g_free(table);
}

MOELM_TEST_SUITE(backend_fast)
{
  CU_add_test(suite, "gemm (OpenBLAS/parallel and blocked) vs reference", test_gemm);
  CU_add_test(suite, "linear forward/backward vs reference", test_linear);
  CU_add_test(suite, "embedding and layernorm vs reference", test_embedding_layernorm);
  CU_add_test(suite, "attention (masks, dropout) vs reference", test_attention);
  CU_add_test(suite, "element-wise, activations, dropout, adam vs reference", test_elementwise);
  CU_add_test(suite, "cross-entropy, log_softmax vs reference", test_softmax_family);
  CU_add_test(suite, "gather/scatter rows vs reference", test_rows);
}
