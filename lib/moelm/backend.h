/* moelm — the compute backend: one table of ops that the model is written against.
 *
 * A backend (CPU reference loops, CPU fast path with OpenBLAS and threads, a CPU variant that
 * stores activations in bf16/fp16, later CUDA) fills `struct moelm_backend_ops`; the model
 * calls `be->ops->linear_forward(be, ...)` and never knows which one it runs on.
 * docs/backend.md has the full contract; in short:
 *
 *  - Every pointer an op takes is BACKEND memory (host memory for the CPU backends, device
 *    memory for CUDA). Only the backend dereferences it; data moves with to_device/to_host.
 *  - Precision. Parameters, parameter gradients, optimizer state, losses and
 *    log-probabilities are float32 (`float *`). Activations and their gradients are
 *    `MoelmAct *`: elements of the backend's activation type `be->act_dtype` (F32 on the CPU,
 *    BF16 or F16 on a half-precision backend), `be->act_size` bytes each. Size activation
 *    buffers with moelm_act_bytes() and offset them with moelm_act_at(), never with
 *    sizeof(float). Token ids and positions are int32, masks uint8.
 *  - Shapes: B batch rows, T time steps, N = B*T tokens, C channels, NH heads (C % NH == 0),
 *    V vocabulary, OC/IC output/input features, E experts, S routed tokens, K = top-k.
 *  - Every op has a forward and a backward. Backward ops ACCUMULATE: parameter gradients
 *    and input gradients are `+=`-ed into caller-zeroed buffers, so residual branches and
 *    shared (tied) parameters add up naturally. A NULL gradient pointer means "not wanted".
 *    Gradient outputs never alias their inputs unless an op says so.
 *  - Dropout masks are a pure function of MoelmDropoutIds and the element index (Philox), so
 *    backward recomputes them and every backend draws the same masks. p == 0 means identity
 *    (the caller passes p = 0 when not training); ids may then be NULL.
 *  - Errors. Shapes are the caller's contract. A device op can fail asynchronously (out of
 *    memory, a bad launch): it records the failure with moelm_backend_set_error() (the first
 *    one is kept) and the caller finds it at the next synchronize(), which every loop calls
 *    once per step. Creating a backend and allocating memory report errors through GError.
 *  - An op pointer may be NULL when a backend does not implement it (the op harness then
 *    reports the op as skipped on that backend); the CPU backends fill every op.
 */
#ifndef MOELM_BACKEND_H
#define MOELM_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include <glib.h>

#include "moelm/dtype.h"

G_BEGIN_DECLS

typedef struct MoelmBackend MoelmBackend;

/* An activation element of the backend's activation type (opaque: never dereferenced
 * outside a backend, never offset by pointer arithmetic; use moelm_act_at). */
typedef struct MoelmAct MoelmAct;

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

/* ---- token routing (fairseq's Top1Gate / Top2Gate as backend ops) -------------------------
 * Over the router logits of S tokens (S, E), fp32:
 *   gates = softmax(logits)
 *   first expert  e1 = argmax gates   (the first maximum on ties, as torch.argmax)
 *   second expert e2 (top-2) by policy: all = argmax over the others; sampling = argmax of
 *     logits + Gumbel noise over the others; random = argmax, queued only when 2 * g2 > u
 *     (g2 normalised first with normalize_before_dropping)
 *   padding tokens (pad[s] != 0, when pad is given) take no expert and no capacity
 *   capacity locations: in token order (or, batch-prioritised, in order of decreasing top-1
 *     gate, ties by token), the first choices of each expert queue first, then the second
 *     choices; an assignment at location >= capacity is dropped (the token rides the
 *     residual for it)
 *   combine weights: top-1: g1 of the kept choice. top-2: g1, g2 masked by what survived,
 *     renormalised to sum to one; with normalize_before_dropping normalised before the
 *     masking instead (denominators clamped at FLT_EPSILON as fairseq)
 *   l_aux = E * sum_e mean_s(gates[s,e]) * (non-pad first choices of e) / S
 * Noise (when `noise`; at eval the second expert is the argmax and always queued): word i of
 * Philox (seed, update, layer, site) as u = ((word >> 8) + 0.5) / 2^24 in (0, 1); Gumbel noise
 * for token s, expert e is -log(-log u) with i = s*E + e at site MOELM_GATE_SITE_GUMBEL; the
 * random policy draws u with i = s at site MOELM_GATE_SITE_RANDOM. */
enum { MOELM_GATE_SITE_GUMBEL = 16, MOELM_GATE_SITE_RANDOM = 17 };

/* How a top-2 gate picks the second expert (fairseq's --moe-second-expert-policy). */
typedef enum {
  MOELM_SECOND_EXPERT_SAMPLING, /* argmax of logits + Gumbel noise over the other experts (fairseq's default) */
  MOELM_SECOND_EXPERT_ALL,      /* argmax over the other experts */
  MOELM_SECOND_EXPERT_RANDOM    /* argmax, kept only with probability 2 * its gate value */
} MoelmSecondExpertPolicy;

typedef struct {
  int experts;                    /* E */
  int top_k;                      /* K: 1 or 2 */
  int capacity;                   /* slots per expert; <= 0: unlimited (dropless) */
  MoelmSecondExpertPolicy policy; /* top-2 only */
  gboolean normalize_before_dropping;
  gboolean batch_prioritized;
  gboolean noise;                 /* draw the policy's noise (training); FALSE: none */
  uint64_t seed;                  /* the noise stream */
  uint32_t update;
  uint16_t layer;
} MoelmRouteParams;

/* What one routing decides, in backend memory (the caller allocates every buffer for the S
 * tokens it routes). Slot j = s*K + k is token s's k-th choice. Dispatch rows are the kept
 * slots grouped by expert (expert e owns rows offsets[e] .. offsets[e+1]-1), by location
 * within an expert; rows offsets[E] .. S*K-1 are unused: token -1, slot -1, weight 0. */
typedef struct {
  float *gates;            /* (S, E) softmax of the logits */
  int32_t *choice;         /* (S*K) the chosen expert of each slot */
  float *norm;             /* (S*K) gate value after normalize-before-dropping (else the raw gate) */
  uint8_t *queued;         /* (S*K) 1 when the slot takes part in capacity assignment */
  int32_t *location;       /* (S*K) its place in the expert's queue; -1 when it never queued */
  uint8_t *kept;           /* (S*K) 1 when dispatched (queued below capacity) */
  float *weight;           /* (S*K) combine weight, 0 when not kept */
  int32_t *count1;         /* (E) queued first choices per expert */
  int32_t *offsets;        /* (E+1) first dispatch row of each expert; offsets[E] rows in all */
  int32_t *dispatch_token; /* (S*K) token of each dispatch row (-1: unused row) */
  int32_t *dispatch_slot;  /* (S*K) slot of each dispatch row (-1: unused row) */
  float *dispatch_weight;  /* (S*K) combine weight of each dispatch row (0: unused row) */
  int32_t *order;          /* (S) scratch: the batch-prioritised token order */
} MoelmRouteBuffers;

/* fairseq's gate metadata of one routing, written by moe_gate_stats as doubles. */
enum {
  MOELM_ROUTE_STAT_L_AUX,
  MOELM_ROUTE_STAT_ENTROPY,         /* mean gate entropy (nats) over the S tokens */
  MOELM_ROUTE_STAT_OVERFLOW1,       /* % of queued first choices dropped (0 when none queued) */
  MOELM_ROUTE_STAT_OVERFLOW2,       /* % of queued second choices dropped */
  MOELM_ROUTE_STAT_UNUSED1,         /* experts that are no token's first choice */
  MOELM_ROUTE_STAT_UNUSED2,
  MOELM_ROUTE_STAT_BALANCE_TOP1,    /* % of tokens whose first choice is among the 20% */
  MOELM_ROUTE_STAT_BALANCE_BOTTOM1, /* most / least used experts (ceil(0.2 E), at least 1) */
  MOELM_ROUTE_STAT_BALANCE_TOP2,
  MOELM_ROUTE_STAT_BALANCE_BOTTOM2,
  MOELM_ROUTE_N_STATS
};

struct moelm_backend_ops {
  const char *name; /* "cpu-reference", "cpu", "cpu-bf16", "cuda" */

  /* ---- memory ---------------------------------------------------------------------- */
  /* Allocate `bytes` of backend memory (64-byte aligned, contents undefined). */
  void *(*alloc)(MoelmBackend *be, size_t bytes, GError **error);
  void (*free)(MoelmBackend *be, void *ptr); /* NULL is fine */
  void (*to_device)(MoelmBackend *be, void *dst, const void *host_src, size_t bytes);
  void (*to_host)(MoelmBackend *be, void *host_dst, const void *src, size_t bytes);
  void (*copy)(MoelmBackend *be, void *dst, const void *src, size_t bytes); /* no overlap */
  void (*zero)(MoelmBackend *be, void *ptr, size_t bytes);
  /* Wait until every op issued so far has finished; FALSE with the first failure any op
   * recorded since the last call (which clears it). */
  gboolean (*synchronize)(MoelmBackend *be, GError **error);
  /* n elements of src (F32 or the activation type) to dst (F32 or the activation type). */
  void (*convert)(MoelmBackend *be, void *dst, MoelmDtype dst_type, const void *src, MoelmDtype src_type, size_t n);

  /* ---- element-wise helpers (n elements; out may alias a or b) ---------------------- */
  void (*fill)(MoelmBackend *be, float *x, float value, size_t n);
  void (*add)(MoelmBackend *be, MoelmAct *out, const MoelmAct *a, const MoelmAct *b, size_t n); /* out = a + b */
  void (*axpy)(MoelmBackend *be, float *y, float alpha, const float *x, size_t n);              /* y += alpha x */
  void (*scale)(MoelmBackend *be, float *x, float alpha, size_t n);                             /* x *= alpha */
  /* Sum of x[i]^2 accumulated in double, returned to the host (gradient norms). */
  double (*sum_squares)(MoelmBackend *be, const float *x, size_t n);

  /* ---- general matrix multiply (fp32) -------------------------------------------------
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
  void (*embedding_forward)(MoelmBackend *be, MoelmAct *out, const int32_t *tokens, const int32_t *positions,
                            const float *wte, const float *wpe, int N, int C, float scale);
  void (*embedding_backward)(MoelmBackend *be, float *dwte, float *dwpe, const MoelmAct *dout,
                             const int32_t *tokens, const int32_t *positions, int N, int C, float scale);

  /* ---- layer norm ---------------------------------------------------------------------
   * out(N,C) = (inp - mean) * rstd * weight + bias, per row; saves mean (N), rstd (N) fp32
   * (both may be NULL when no backward follows). rstd = 1/sqrt(var + eps), var biased.
   * out may alias inp when mean and rstd are NULL (inference). */
  void (*layernorm_forward)(MoelmBackend *be, MoelmAct *out, float *mean, float *rstd, const MoelmAct *inp,
                            const float *weight, const float *bias, int N, int C, float eps);
  /* dinp (N,C), dweight (C), dbias (C) accumulate; any may be NULL. */
  void (*layernorm_backward)(MoelmBackend *be, MoelmAct *dinp, float *dweight, float *dbias, const MoelmAct *dout,
                             const MoelmAct *inp, const float *weight, const float *mean, const float *rstd, int N,
                             int C);

  /* ---- linear (fairseq/PyTorch layout: weight (OC, IC)) ------------------------------
   * out(N,OC) = inp(N,IC) weight(OC,IC)^T + bias(OC); bias may be NULL. out must not alias inp. */
  void (*linear_forward)(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const float *weight,
                         const float *bias, int N, int IC, int OC);
  /* dinp (N,IC) += dout weight; dweight (OC,IC) += dout^T inp; dbias (OC) += sum_n dout.
   * Any of dinp, dweight, dbias may be NULL to skip it. */
  void (*linear_backward)(MoelmBackend *be, MoelmAct *dinp, float *dweight, float *dbias, const MoelmAct *dout,
                          const MoelmAct *inp, const float *weight, int N, int IC, int OC);
  /* Grouped linear (token-MoE experts): rows offsets[e] .. offsets[e+1]-1 of inp (R,IC) go
   * through expert e's weight (weight + e*w_stride, (OC,IC)) and bias (bias + e*b_stride,
   * (OC), NULL: none) into the same rows of out (R,OC); rows offsets[E] .. R-1 of out are
   * set to zero. offsets (E+1) int32 in backend memory (read by the op, never by the host). */
  void (*grouped_linear_forward)(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const float *weight,
                                 size_t w_stride, const float *bias, size_t b_stride, const int32_t *offsets, int E,
                                 int R, int IC, int OC);
  /* The per-expert linear_backward over the same groups (rows past offsets[E] contribute
   * nothing); dweight/dbias of expert e at + e*w_stride / + e*b_stride; any may be NULL. */
  void (*grouped_linear_backward)(MoelmBackend *be, MoelmAct *dinp, float *dweight, float *dbias,
                                  const MoelmAct *dout, const MoelmAct *inp, const float *weight, size_t w_stride,
                                  size_t b_stride, const int32_t *offsets, int E, int R, int IC, int OC);

  /* ---- causal multi-head self-attention core ------------------------------------------
   * qkv (B,T,3C): per row q | k | v, each C = NH heads of hs = C/NH channels (already
   * projected, biases added, q NOT yet scaled). out (B,T,C): heads concatenated.
   * For head h, query t: scores s = (q * hs^-0.5) . k over keys s' <= t whose
   * key_padding_mask[b, s'] == 0 (mask (B,T) uint8, 1 = pad, NULL = none); softmax; dropout
   * with probability p on the probabilities, index space (B,NH,T,T):
   * i = ((b*NH + h)*T + t)*T + s'; then probs @ v. A query with no visible key outputs zeros.
   * saved: attention_saved_bytes(be, B, T, C, NH) bytes the backward needs, or NULL for an
   * inference-only call. */
  size_t (*attention_saved_bytes)(MoelmBackend *be, int B, int T, int C, int NH);
  void (*attention_forward)(MoelmBackend *be, MoelmAct *out, void *saved, const MoelmAct *qkv,
                            const uint8_t *key_padding_mask, int B, int T, int C, int NH, float p,
                            const MoelmDropoutIds *ids);
  /* dqkv (B,T,3C) += gradient w.r.t. qkv; same mask, p and ids as the forward. */
  void (*attention_backward)(MoelmBackend *be, MoelmAct *dqkv, const MoelmAct *dout, const MoelmAct *qkv,
                             const void *saved, const uint8_t *key_padding_mask, int B, int T, int C, int NH,
                             float p, const MoelmDropoutIds *ids);
  /* Incremental decoding (forward only, no dropout): Tq new queries against a KV cache.
   * q (B,Tq,C) unscaled; k_cache, v_cache (B,Tcap,C) hold Tk valid positions (the last Tq of
   * them are the new ones); query i sits at position Tk-Tq+i and sees keys 0..Tk-Tq+i not
   * masked by key_padding_mask (B,Tk) (NULL = none). out (B,Tq,C). */
  void (*attention_decode)(MoelmBackend *be, MoelmAct *out, const MoelmAct *q, const MoelmAct *k_cache,
                           const MoelmAct *v_cache, const uint8_t *key_padding_mask, int B, int Tq, int Tk,
                           int Tcap, int C, int NH);

  /* ---- activations (n elements; out may alias inp) ------------------------------------ */
  void (*activation_forward)(MoelmBackend *be, MoelmActivation act, MoelmAct *out, const MoelmAct *inp, size_t n);
  /* dinp += dout * act'(inp); inp is the pre-activation input. */
  void (*activation_backward)(MoelmBackend *be, MoelmActivation act, MoelmAct *dinp, const MoelmAct *inp,
                              const MoelmAct *dout, size_t n);

  /* ---- dropout (index space: element i of the n elements) ----------------------------
   * out = inp * keep / (1 - p); out may alias inp; p == 0 copies (or nothing, in place). */
  void (*dropout_forward)(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, size_t n, float p,
                          const MoelmDropoutIds *ids);
  /* dinp += dout * keep / (1 - p), the mask recomputed from ids. */
  void (*dropout_backward)(MoelmBackend *be, MoelmAct *dinp, const MoelmAct *dout, size_t n, float p,
                           const MoelmDropoutIds *ids);

  /* ---- rows: gather / weighted scatter-add (MoE dispatch/combine, beam reorder) ------
   * An index < 0 marks an unused row: gather writes zeros, scatter skips it.
   * gather: out(n,C)[i] = inp[idx[i]]; its backward is scatter_add_rows with weight NULL. */
  void (*gather_rows)(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const int32_t *idx, int n, int C);
  /* out[idx[i]] += (weight ? weight[i] : 1) * inp[i], inp (n,C), idx may repeat. */
  void (*scatter_add_rows)(MoelmBackend *be, MoelmAct *out, const MoelmAct *inp, const int32_t *idx,
                           const float *weight, int n, int C);
  /* Backward of scatter_add_rows: dinp[i] += w[i] * dout[idx[i]] (w = 1 when weight is NULL);
   * dweight[i] += dout[idx[i]] . inp[i]. Either of dinp, dweight may be NULL to skip it. */
  void (*scatter_add_rows_backward)(MoelmBackend *be, MoelmAct *dinp, float *dweight, const MoelmAct *dout,
                                    const MoelmAct *inp, const int32_t *idx, const float *weight, int n, int C);

  /* ---- softmax / loss over rows of V ------------------------------------------------
   * Cross-entropy, fused: losses[n] = -log softmax(logits[n])[targets[n]], 0 where
   * targets[n] == ignore_index. When dloss (N) is not NULL the logits are OVERWRITTEN with
   * their gradient (softmax - onehot(target)) * dloss[n] (a zero row where ignored), which
   * saves an (N,V) buffer. logits (N,V); targets (N) int32; losses (N) fp32, may be NULL. */
  void (*cross_entropy)(MoelmBackend *be, float *losses, MoelmAct *logits, const int32_t *targets,
                        const float *dloss, int N, int V, int ignore_index);
  /* lprobs[n] = log softmax(logits[n])[targets[n]] (0 where ignored); logits untouched. */
  void (*target_log_probs)(MoelmBackend *be, float *lprobs, const MoelmAct *logits, const int32_t *targets, int N,
                           int V, int ignore_index);
  /* out(N,V) fp32 = log_softmax(inp) per row. */
  void (*log_softmax_forward)(MoelmBackend *be, float *out, const MoelmAct *inp, int N, int V);
  /* dinp += dout - exp(out) * sum_v dout, with out the forward's result. */
  void (*log_softmax_backward)(MoelmBackend *be, MoelmAct *dinp, const float *out, const float *dout, int N, int V);

  /* ---- token routing (see MoelmRouteParams; all fp32) ---------------------------------
   * Softmax and top-k: r->gates, r->choice, r->norm, r->queued for S tokens; pad (S) uint8
   * or NULL. */
  void (*moe_gate_topk)(MoelmBackend *be, const MoelmRouteParams *p, const float *logits, const uint8_t *pad,
                        int S, const MoelmRouteBuffers *r);
  /* Capacity locations, kept, combine weights, count1, offsets and the dispatch rows, from
   * what moe_gate_topk left in r. */
  void (*moe_gate_dispatch)(MoelmBackend *be, const MoelmRouteParams *p, int S, const MoelmRouteBuffers *r);
  /* stats (MOELM_ROUTE_N_STATS doubles, backend memory) of the routing in r. */
  void (*moe_gate_stats)(MoelmBackend *be, const MoelmRouteParams *p, int S, const MoelmRouteBuffers *r,
                         double *stats);
  /* dlogits (S,E) = gradient of  sum_rows drow_weight[i] * dispatch_weight[i] + aux_coef * l_aux
   * with respect to the logits, the decisions (choices, masks, noise) held fixed;
   * overwritten. drow_weight (S*K) per dispatch row (unused rows are ignored). */
  void (*moe_gate_backward)(MoelmBackend *be, const MoelmRouteParams *p, int S, const MoelmRouteBuffers *r,
                            const float *drow_weight, double aux_coef, float *dlogits);

  /* ---- top-k selection by score (MoEfication's experts, docs/moefy.md; fp32) ----------
   * For each of S tokens the K of E experts with the largest scores (S, E), 1 <= K <= E
   * (ties: the lower expert first; a NaN score counts as -inf): choice (S*K) int32 lists them
   * in decreasing score, -1 for a padding token (pad[s] != 0; pad (S) uint8 or NULL). The
   * chosen (token, expert) pairs are then grouped by expert, tokens in increasing order within
   * an expert: expert e owns dispatch rows offsets[e] .. offsets[e+1]-1 (offsets (E+1) int32),
   * dispatch_token (S*K) holds each row's token, and rows offsets[E] .. S*K-1 (the padding
   * tokens' share) are unused: token -1. There are no weights: MoEfication adds the selected
   * experts' outputs (scatter_add_rows with weight NULL). */
  void (*topk_dispatch)(MoelmBackend *be, const float *scores, const uint8_t *pad, int S, int E, int K,
                        int32_t *choice, int32_t *offsets, int32_t *dispatch_token);

  /* ---- optimizer --------------------------------------------------------------------- */
  /* One Adam(W) step over n fp32 parameters (see MoelmAdamParams). */
  void (*adam_step)(MoelmBackend *be, float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                    size_t n, const MoelmAdamParams *hp);

  /* ---- lifetime ---------------------------------------------------------------------- */
  void (*destroy)(MoelmBackend *be); /* called by moelm_backend_free */
};

struct MoelmBackend {
  const struct moelm_backend_ops *ops;
  MoelmDtype act_dtype; /* activations: MOELM_DT_F32, MOELM_DT_BF16 or MOELM_DT_F16 */
  size_t act_size;      /* bytes per activation element */
  int n_threads;        /* CPU threads the backend uses (1 for the reference) */
  int device_id;        /* the GPU (-1 on the CPU) */
  char *description;    /* what it is: "cpu (AVX2 kernels, 2 threads, OpenBLAS)" */
  char *reason;         /* why moelm_backend_open chose it ("--cpu", "this build has no CUDA backend") */
  GError *op_error;     /* the first failure an op recorded since the last synchronize */
  void *native_stream;  /* a CUDA backend's cudaStream_t (NCCL works on it); NULL elsewhere */
  void *priv;           /* backend-private state */
};

/* Bytes of n activation elements, and element i of an activation buffer. */
static inline size_t moelm_act_bytes(const MoelmBackend *be, size_t n) { return n * be->act_size; }
#define moelm_act_at(be, p, i)                                                                           \
  _Generic((p),                                                                                          \
      const MoelmAct *: (const MoelmAct *)((const char *)(p) + (size_t)(i) * (be)->act_size),            \
      MoelmAct *: (MoelmAct *)((char *)(p) + (size_t)(i) * (be)->act_size))

/* ---- choosing a backend ------------------------------------------------------------------ */

typedef enum {
  MOELM_BACKEND_AUTO,          /* a GPU when the build has CUDA and one is present, else the CPU */
  MOELM_BACKEND_CPU,           /* the fast CPU path (--cpu) */
  MOELM_BACKEND_CPU_REFERENCE, /* the reference loops (tests, --cpu-reference) */
  MOELM_BACKEND_CUDA           /* a GPU (--device-id N) */
} MoelmBackendKind;

typedef enum {
  MOELM_PRECISION_DEFAULT, /* fp32 on the CPU, bf16 on a GPU */
  MOELM_PRECISION_FP32,    /* --fp32 */
  MOELM_PRECISION_BF16,    /* --bf16: activations stored in bf16 */
  MOELM_PRECISION_FP16     /* --fp16: activations stored in fp16 (with a loss scaler) */
} MoelmPrecision;

typedef enum {
  MOELM_CPU_ISA_AUTO,    /* the best the CPU supports */
  MOELM_CPU_ISA_GENERIC, /* x86-64 baseline (SSE2) or the compiler's default elsewhere */
  MOELM_CPU_ISA_AVX2     /* AVX2 + FMA (x86-64-v3) */
} MoelmCpuIsa;

typedef struct {
  MoelmBackendKind kind;
  int device_id;           /* --device-id N; -1: not given */
  int threads;             /* --threads N for the CPU; <= 0: all cores */
  MoelmPrecision precision;
  gboolean amp;            /* --amp: the GPU's mixed precision (bf16 activations, fp32 weights);
                            * the CPU stays in fp32 and says so */
  MoelmCpuIsa cpu_isa;     /* which fast CPU kernels (tests force one) */
  int fail_after_ops;      /* > 0: the backend records a failure after this many ops (tests of
                            * the error channel); 0: never */
} MoelmBackendSpec;

/* The defaults: AUTO, no device, all cores, default precision, the best ISA. */
void moelm_backend_spec_init(MoelmBackendSpec *spec);

/* Open the backend the spec asks for. Without --cpu or --device-id a GPU is used when the
 * build has CUDA and a device is present, else the CPU; be->description and be->reason say
 * which and why, for the caller's log. Fails with a clear message for a GPU that is asked for and
 * cannot be had (built without CUDA, no device, --device-id out of range, old driver). */
MoelmBackend *moelm_backend_open(const MoelmBackendSpec *spec, GError **error);
void moelm_backend_free(MoelmBackend *be); /* NULL is fine */

/* The CPU backends directly. reference: plain single-threaded loop nests (the oracle every
 * other path is tested against); otherwise the fast path (OpenBLAS sgemm when configured, a
 * persistent pool of n_threads threads, vectorised loops for `isa`). n_threads <= 0: all
 * cores. act_dtype F32, or BF16/F16 for the variant that stores activations in half
 * precision and computes in fp32 (fast path only). */
MoelmBackend *moelm_backend_cpu_new(gboolean reference, int n_threads, GError **error);
MoelmBackend *moelm_backend_cpu_new_full(gboolean reference, int n_threads, MoelmCpuIsa isa, MoelmDtype act_dtype,
                                         GError **error);
/* Whether this machine runs the AVX2 kernels (always FALSE off x86-64). */
gboolean moelm_cpu_has_avx2(void);

/* ---- the error channel ------------------------------------------------------------------ */
/* Record a failure (for ops; the first one is kept until synchronize). */
void moelm_backend_set_error(MoelmBackend *be, int code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
/* synchronize, with a prefix for the message ("update 12: ..."); NULL prefix: none. */
gboolean moelm_backend_check(MoelmBackend *be, const char *what, GError **error);

/* ---- activations from and to host float32 (tests, staging) ----------------------------- */
/* host (n) fp32 <- src (n) activations, and dst (n) activations <- host (n) fp32. */
gboolean moelm_backend_act_to_host(MoelmBackend *be, float *host, const MoelmAct *src, size_t n, GError **error);
gboolean moelm_backend_act_from_host(MoelmBackend *be, MoelmAct *dst, const float *host, size_t n, GError **error);

/* Fill `table` (host memory, (max_positions + padding_idx + 1, C)) with fairseq's
 * SinusoidalPositionalEmbedding: row r = [sin(r*f_0..f_{h-1}) | cos(r*f_0..f_{h-1})] with
 * h = C/2, f_i = exp(-i * ln(10000)/(h-1)), a zero last column when C is odd, and the
 * padding_idx row all zero. Fails (INVALID_ARG) when C < 4 or sizes are negative. */
gboolean moelm_sinusoidal_positions(float *table, int max_positions, int C, int padding_idx, GError **error);

/* fairseq's capacity for S tokens: training top-1 int(factor * ceil(S/E)), top-2
 * int(factor * 2 * ceil(S/E)) (fairseq's top-2 has no factor: factor 1 is fairseq's);
 * eval ceil(eval_fraction * S) when eval_fraction > 0, else unlimited; dropless: unlimited.
 * Returns 0 for unlimited (a training capacity is at least 1). */
int moelm_route_capacity(int S, int E, int top_k, double capacity_factor, gboolean dropless, gboolean eval,
                         double eval_fraction);

G_END_DECLS

#endif
