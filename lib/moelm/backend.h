/* moelm — the compute backend: one table of ops that the model is written against.
 *
 * A backend (CPU reference loops, CPU fast path with OpenBLAS and threads, later CUDA)
 * fills `struct moelm_backend_ops`; the model calls `be->ops->linear_forward(be, ...)` and
 * never knows which one it runs on. Conventions (docs/backend.md has the full contract):
 *
 *  - Tensors are dense, row-major float32 (token ids and positions int32, masks uint8) in
 *    BACKEND memory: host memory for the CPU backends, device memory for CUDA. Only the
 *    backend dereferences them; move data with to_device / to_host.
 *  - Shapes: B batch rows, T time steps, N = B*T tokens, C channels, NH heads (C % NH == 0),
 *    V vocabulary, OC/IC output/input features. Shape comments name the layout.
 *  - Every op has a forward and a backward. Backward ops ACCUMULATE: parameter gradients
 *    and input gradients are `+=`-ed into caller-zeroed buffers, so residual branches and
 *    shared (tied) parameters add up naturally. A NULL gradient pointer means "not wanted".
 *    Gradient outputs never alias their inputs unless an op says so.
 *  - Dropout masks are a pure function of MoelmDropoutIds and the element index (Philox), so
 *    backward recomputes them and every backend draws the same masks. p == 0 means identity
 *    (the caller passes p = 0 when not training); ids may then be NULL.
 *  - Ops do not fail: shapes are the caller's contract. Creating a backend and allocating
 *    memory report errors through GError.
 */
#ifndef MOELM_BACKEND_H
#define MOELM_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

typedef struct MoelmBackend MoelmBackend;

/* Which Philox stream a dropout draws from; element i of the op's index space is kept iff
 * moelm_u32_to_unit_float(moelm_philox_word(seed, update, layer, site, i)) >= p. */
typedef struct {
  uint64_t seed;   /* the run's --seed */
  uint32_t update; /* optimizer update number (fresh masks every step) */
  uint16_t layer;  /* decoder layer (or any id unique to the call site's owner) */
  uint16_t site;   /* which dropout inside the layer */
} MoelmDropoutIds;

typedef enum {
  MOELM_ACT_RELU,
  MOELM_ACT_GELU,          /* exact: x * 0.5 * (1 + erf(x / sqrt(2))) */
  MOELM_ACT_GELU_ACCURATE, /* fairseq's tanh form: 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))) */
  MOELM_ACT_TANH
} MoelmActivation;

/* Hyper-parameters of one Adam step, fairseq's formulation (fairseq/optim/adam.py):
 *   g = grad * grad_scale
 *   m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g*g
 *   step_size = lr * sqrt(1 - beta2^step) / (1 - beta1^step)
 *   p -= weight_decay * lr * p            (decoupled, before the update)
 *   p -= step_size * m / (sqrt(v) + eps) */
typedef struct {
  double beta1, beta2; /* in double, as fairseq's (1 - beta) alphas are computed */
  float lr, eps, weight_decay;
  float grad_scale; /* 1/sample_size, clip factor and 1/loss_scale folded together */
  int64_t step;     /* 1 for the first update */
} MoelmAdamParams;

struct moelm_backend_ops {
  const char *name; /* "cpu-reference", "cpu", "cuda" */

  /* ---- memory ---------------------------------------------------------------------- */
  /* Allocate `bytes` of backend memory (64-byte aligned, contents undefined). */
  void *(*alloc)(MoelmBackend *be, size_t bytes, GError **error);
  void (*free)(MoelmBackend *be, void *ptr); /* NULL is fine */
  void (*to_device)(MoelmBackend *be, void *dst, const void *host_src, size_t bytes);
  void (*to_host)(MoelmBackend *be, void *host_dst, const void *src, size_t bytes);
  void (*copy)(MoelmBackend *be, void *dst, const void *src, size_t bytes); /* no overlap */
  void (*zero)(MoelmBackend *be, void *ptr, size_t bytes);
  /* Wait until every op issued so far has finished (a no-op on the CPU). */
  void (*synchronize)(MoelmBackend *be);

  /* ---- element-wise helpers (n elements; out may alias a or b) ---------------------- */
  void (*fill)(MoelmBackend *be, float *x, float value, size_t n);
  void (*add)(MoelmBackend *be, float *out, const float *a, const float *b, size_t n); /* out = a + b */
  void (*axpy)(MoelmBackend *be, float *y, float alpha, const float *x, size_t n);      /* y += alpha x */
  void (*scale)(MoelmBackend *be, float *x, float alpha, size_t n);                     /* x *= alpha */
  /* Sum of x[i]^2 accumulated in double, returned to the host (gradient norms). */
  double (*sum_squares)(MoelmBackend *be, const float *x, size_t n);

  /* ---- general matrix multiply --------------------------------------------------------
   * c(M,N) = alpha * op(a) op(b) + beta * c, op(a) (M,K), op(b) (K,N); a is stored (M,K),
   * or (K,M) when trans_a; b is stored (K,N), or (N,K) when trans_b. beta == 0 ignores c. */
  void (*gemm)(MoelmBackend *be, float *c, const float *a, const float *b, int M, int N, int K,
               gboolean trans_a, gboolean trans_b, float alpha, float beta);

  /* ---- embedding ----------------------------------------------------------------------
   * out[n] = scale * wte[tokens[n]] + (wpe ? wpe[positions[n]] : 0)
   *   out (N, C); tokens (N) int32; positions (N) int32 (ignored when wpe is NULL);
   *   wte (V, C); wpe (P, C) or NULL.
   * backward: dwte[tokens[n]] += scale * dout[n] (dwte NULL: skip);
   *           dwpe[positions[n]] += dout[n] (dwpe NULL: positions not learned). */
  void (*embedding_forward)(MoelmBackend *be, float *out, const int32_t *tokens, const int32_t *positions,
                            const float *wte, const float *wpe, int N, int C, float scale);
  void (*embedding_backward)(MoelmBackend *be, float *dwte, float *dwpe, const float *dout,
                             const int32_t *tokens, const int32_t *positions, int N, int C, float scale);

  /* ---- layer norm ---------------------------------------------------------------------
   * out(N,C) = (inp - mean) * rstd * weight + bias, per row; saves mean (N), rstd (N)
   * (both may be NULL when no backward follows). rstd = 1/sqrt(var + eps), var biased. */
  void (*layernorm_forward)(MoelmBackend *be, float *out, float *mean, float *rstd, const float *inp,
                            const float *weight, const float *bias, int N, int C, float eps);
  /* dinp (N,C), dweight (C), dbias (C) accumulate; any may be NULL. */
  void (*layernorm_backward)(MoelmBackend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                             const float *inp, const float *weight, const float *mean, const float *rstd,
                             int N, int C);

  /* ---- linear (fairseq/PyTorch layout: weight (OC, IC)) ------------------------------
   * out(N,OC) = inp(N,IC) weight(OC,IC)^T + bias(OC); bias may be NULL. out must not alias inp. */
  void (*linear_forward)(MoelmBackend *be, float *out, const float *inp, const float *weight, const float *bias,
                         int N, int IC, int OC);
  /* dinp (N,IC) += dout weight; dweight (OC,IC) += dout^T inp; dbias (OC) += sum_n dout.
   * Any of dinp, dweight, dbias may be NULL to skip it. */
  void (*linear_backward)(MoelmBackend *be, float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, int N, int IC, int OC);

  /* ---- causal multi-head self-attention core ------------------------------------------
   * qkv (B,T,3C): per row q | k | v, each C = NH heads of hs = C/NH channels (already
   * projected, biases added, q NOT yet scaled). out (B,T,C): heads concatenated.
   * For head h, query t: scores s = (q * hs^-0.5) . k over keys s' <= t whose
   * key_padding_mask[b, s'] == 0 (mask (B,T) uint8, 1 = pad, NULL = none); softmax; dropout
   * with probability p on the probabilities, index space (B,NH,T,T):
   * i = ((b*NH + h)*T + t)*T + s'; then probs @ v. A query with no visible key outputs zeros.
   * saved: attention_saved_floats(be, B, T, C, NH) floats the backward needs, or NULL for an
   * inference-only call. */
  size_t (*attention_saved_floats)(MoelmBackend *be, int B, int T, int C, int NH);
  void (*attention_forward)(MoelmBackend *be, float *out, float *saved, const float *qkv,
                            const uint8_t *key_padding_mask, int B, int T, int C, int NH, float p,
                            const MoelmDropoutIds *ids);
  /* dqkv (B,T,3C) += gradient w.r.t. qkv; same mask, p and ids as the forward. */
  void (*attention_backward)(MoelmBackend *be, float *dqkv, const float *dout, const float *qkv,
                             const float *saved, const uint8_t *key_padding_mask, int B, int T, int C, int NH,
                             float p, const MoelmDropoutIds *ids);
  /* Incremental decoding (forward only, no dropout): Tq new queries against a KV cache.
   * q (B,Tq,C) unscaled; k_cache, v_cache (B,Tcap,C) hold Tk valid positions (the last Tq of
   * them are the new ones); query i sits at position Tk-Tq+i and sees keys 0..Tk-Tq+i not
   * masked by key_padding_mask (B,Tk) (NULL = none). out (B,Tq,C). */
  void (*attention_decode)(MoelmBackend *be, float *out, const float *q, const float *k_cache,
                           const float *v_cache, const uint8_t *key_padding_mask, int B, int Tq, int Tk,
                           int Tcap, int C, int NH);

  /* ---- activations (n elements; out may alias inp) ------------------------------------ */
  void (*activation_forward)(MoelmBackend *be, MoelmActivation act, float *out, const float *inp, size_t n);
  /* dinp += dout * act'(inp); inp is the pre-activation input. */
  void (*activation_backward)(MoelmBackend *be, MoelmActivation act, float *dinp, const float *inp,
                              const float *dout, size_t n);

  /* ---- dropout (index space: element i of the n elements) ----------------------------
   * out = inp * keep / (1 - p); out may alias inp; p == 0 copies (or nothing, in place). */
  void (*dropout_forward)(MoelmBackend *be, float *out, const float *inp, size_t n, float p,
                          const MoelmDropoutIds *ids);
  /* dinp += dout * keep / (1 - p), the mask recomputed from ids. */
  void (*dropout_backward)(MoelmBackend *be, float *dinp, const float *dout, size_t n, float p,
                           const MoelmDropoutIds *ids);

  /* ---- rows: gather / weighted scatter-add (MoE dispatch/combine, beam reorder) ------
   * gather: out(n,C)[i] = inp[idx[i]]; its backward is scatter_add_rows with weight NULL. */
  void (*gather_rows)(MoelmBackend *be, float *out, const float *inp, const int32_t *idx, int n, int C);
  /* out[idx[i]] += (weight ? weight[i] : 1) * inp[i], inp (n,C), idx may repeat. */
  void (*scatter_add_rows)(MoelmBackend *be, float *out, const float *inp, const int32_t *idx,
                           const float *weight, int n, int C);
  /* Backward of scatter_add_rows: dinp[i] += w[i] * dout[idx[i]] (w = 1 when weight is NULL);
   * dweight[i] += dout[idx[i]] . inp[i]. Either of dinp, dweight may be NULL to skip it. */
  void (*scatter_add_rows_backward)(MoelmBackend *be, float *dinp, float *dweight, const float *dout,
                                    const float *inp, const int32_t *idx, const float *weight, int n, int C);

  /* ---- softmax / loss over rows of V ------------------------------------------------
   * Cross-entropy, fused: losses[n] = -log softmax(logits[n])[targets[n]], 0 where
   * targets[n] == ignore_index. When dloss (N) is not NULL the logits are OVERWRITTEN with
   * their gradient (softmax - onehot(target)) * dloss[n] (a zero row where ignored), which
   * saves an (N,V) buffer. logits (N,V); targets (N) int32; losses (N) may be NULL. */
  void (*cross_entropy)(MoelmBackend *be, float *losses, float *logits, const int32_t *targets,
                        const float *dloss, int N, int V, int ignore_index);
  /* lprobs[n] = log softmax(logits[n])[targets[n]] (0 where ignored); logits untouched. */
  void (*target_log_probs)(MoelmBackend *be, float *lprobs, const float *logits, const int32_t *targets,
                           int N, int V, int ignore_index);
  /* out(N,V) = log_softmax(inp) per row; out may alias inp. */
  void (*log_softmax_forward)(MoelmBackend *be, float *out, const float *inp, int N, int V);
  /* dinp += dout - exp(out) * sum_v dout, with out the forward's result. */
  void (*log_softmax_backward)(MoelmBackend *be, float *dinp, const float *out, const float *dout, int N, int V);

  /* ---- optimizer --------------------------------------------------------------------- */
  /* One Adam(W) step over n parameters (see MoelmAdamParams). */
  void (*adam_step)(MoelmBackend *be, float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                    size_t n, const MoelmAdamParams *hp);

  /* ---- lifetime ---------------------------------------------------------------------- */
  void (*destroy)(MoelmBackend *be); /* called by moelm_backend_free */
};

struct MoelmBackend {
  const struct moelm_backend_ops *ops;
  int n_threads; /* CPU threads the backend uses (1 for the reference) */
  void *priv;    /* backend-private state */
};

/* The CPU backend. reference: plain single-threaded loop nests (the oracle every other
 * path is tested against); otherwise the fast path (OpenBLAS sgemm when configured, a
 * persistent pool of n_threads threads, vectorised loops). n_threads <= 0 means all cores. */
MoelmBackend *moelm_backend_cpu_new(gboolean reference, int n_threads, GError **error);
void moelm_backend_free(MoelmBackend *be); /* NULL is fine */

/* Fill `table` (host memory, (max_positions + padding_idx + 1, C)) with fairseq's
 * SinusoidalPositionalEmbedding: row r = [sin(r*f_0..f_{h-1}) | cos(r*f_0..f_{h-1})] with
 * h = C/2, f_i = exp(-i * ln(10000)/(h-1)), a zero last column when C is odd, and the
 * padding_idx row all zero. Fails (INVALID_ARG) when C < 4 or sizes are negative. */
gboolean moelm_sinusoidal_positions(float *table, int max_positions, int C, int padding_idx, GError **error);

G_END_DECLS

#endif
