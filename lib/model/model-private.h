/* moelm — the decoder's internals shared by params.c, decoder.c and decode.c. */
#ifndef MOELM_MODEL_PRIVATE_H
#define MOELM_MODEL_PRIVATE_H

#include "moelm/dist.h"
#include "moelm/errors.h"
#include "moelm/model.h"

typedef struct MoelmExpertExchange MoelmExpertExchange;
typedef struct MoefiedActs MoefiedActs;
typedef struct MoeEpLayer MoeEpLayer;

/* Offsets (in floats) of one layer's parameters in the arena. */
typedef struct {
  size_t qkv_w, qkv_b;       /* (3C, C), (3C): q, k, v projections back to back */
  size_t out_w, out_b;       /* (C, C), (C) */
  size_t ln1_w, ln1_b;       /* self_attn_layer_norm (C) */
  size_t fc1_w, fc1_b;       /* (F, C), (F) (dense layers) */
  size_t fc2_w, fc2_b;       /* (C, F), (C) */
  size_t ln2_w, ln2_b;       /* final_layer_norm (C) */
  /* MoE layers: moe_layer.gate.wg.weight (E, C), then expert e's fc1.weight (Fe, C),
   * fc1.bias (Fe), fc2.weight (C, Fe), fc2.bias (C) at experts + e * expert_stride. */
  gboolean moe;
  int moe_index;             /* 0-based among the MoE layers */
  size_t gate_w;
  size_t experts, expert_stride;
  /* moefied layers (moefied_layer.c, docs/moefy.md): fc1_w (F, C) and fc1_b (F) hold the E
   * experts' rows in expert order (expert e's at + e*Fe*C and + e*Fe), fc2_w the E experts'
   * (C, Fe) blocks back to back, fc2_b the layer's one output bias; the selector's router:
   * similarity router_w (E, C); MLP router_w (H, C), router_b (H), router2_w (E, H),
   * router2_b (E); groundtruth none */
  gboolean moefied;
  size_t router_w, router_b, router2_w, router2_b;
  size_t begin, end;         /* the layer's whole range of the arena */
} LayerParams;

/* Offsets of expert e's tensors (Fe = expert FFN dim, C = embed dim). */
#define EXPERT_FC1_W(L, e) ((L)->experts + (size_t)(e) * (L)->expert_stride)
#define EXPERT_FC1_B(L, e, C, Fe) (EXPERT_FC1_W(L, e) + (size_t)(Fe) * (C))
#define EXPERT_FC2_W(L, e, C, Fe) (EXPERT_FC1_B(L, e, C, Fe) + (size_t)(Fe))
#define EXPERT_FC2_B(L, e, C, Fe) (EXPERT_FC2_W(L, e, C, Fe) + (size_t)(C) * (Fe))

/* One MoE layer's activations: the routing and the dispatched rows (at most R = K*N of
 * them, grouped by expert) the backward needs. The KV cache keeps one for inference.
 * Everything is backend memory. */
typedef struct {
  MoelmRouteBuffers route; /* the last forward's routing (for S = N tokens) */
  double *stats;           /* (MOELM_ROUTE_N_STATS) its gate metadata */
  float *logits;           /* (N, E) router logits, fp32 */
  MoelmAct *logits_act;    /* (N, E) router logits as the linear writes them (act type) */
  MoelmAct *xin;           /* (R, C) dispatched inputs */
  MoelmAct *fc1;           /* (R, Fe) pre-activation */
  MoelmAct *fcact;         /* (R, Fe) dropout(act(fc1)) */
  MoelmAct *y;             /* (R, C) expert outputs after dropout */
  int rows;                /* N the buffers hold */
  MoeEpLayer *ep;          /* expert parallel: the exchange's plan and the experts' rows */
} MoeActs;

/* Running sums of one MoE layer's gate metadata over training forwards. */
typedef struct {
  double l_aux, entropy, overflow1, overflow2, unused1, balance_top1, balance_bottom1;
  int64_t n;
} MoeStatsAcc;

/* Activations of one layer kept for the backward pass (N = B*T rows), backend memory. */
typedef struct {
  const MoelmAct *x_in; /* (N,C) layer input (points at the previous layer's output) */
  MoelmAct *n1;         /* (N,C) LN1 output (pre: LN1(x_in); post: LN1(r1)) */
  float *mean1, *rstd1; /* (N) */
  MoelmAct *qkv;        /* (N,3C) */
  void *att_saved;      /* attention_saved_bytes */
  MoelmAct *atty;       /* (N,C) attention output before out_proj */
  MoelmAct *r1;         /* (N,C) x_in + dropout(out_proj(atty)) */
  MoelmAct *n2;         /* (N,C) LN2 output (pre: LN2(r1); post: LN2(r2)) */
  float *mean2, *rstd2; /* (N) */
  MoelmAct *fc1;        /* (N,F) pre-activation */
  MoelmAct *fcact;      /* (N,F) dropout(act(fc1)) */
  MoelmAct *r2;         /* (N,C) residual sum after the FFN */
  MoeActs *moe;         /* MoE layers: the routed FFN's state (fc1/fcact unused) */
} LayerActs;

struct MoelmModel {
  MoelmModelConfig cfg;
  MoelmBackend *be;
  GPtrArray *tensors; /* MoelmParam* in arena order */
  GHashTable *by_name;
  size_t n_params;
  float *params, *grads; /* backend memory (n_params) */

  size_t wte, wpe, out_proj; /* offsets; wpe only when learned; out_proj == wte when shared */
  size_t lnf_w, lnf_b;       /* final layer norm (when present) */
  size_t gate_fc1_w, gate_fc1_b, gate_fc2_w, gate_fc2_b; /* gating network (gate_experts > 0) */
  gboolean has_final_norm;
  LayerParams *layers;
  float *sinusoid; /* (P, C) backend memory when positions are not learned */

  /* activation workspace, sized for max_rows tokens (backend memory) */
  int max_rows;
  size_t att_cap;     /* bytes allocated per layer for att_saved */
  int32_t *d_src, *d_tgt, *d_pos; /* (N) */
  uint8_t *d_pad;                 /* (N) key padding mask */
  gboolean any_pad;
  MoelmAct *x0;       /* (N,C) embedding output */
  LayerActs *acts;    /* host array of per-layer pointers */
  MoelmAct *xf;       /* (N,C) final normed output (input to the output projection) */
  float *meanf, *rstdf;
  MoelmAct *logits;   /* (N,V) */
  float *losses;      /* (N) */
  float *dloss;       /* (N) */
  MoelmAct *dx, *dtmp, *dbig, *dbig2, *dqkv, *datt; /* backward scratch */
  float *save_row, *save_row_pe; /* (C) scratch to protect pad rows of embedding grads */

  /* token-level MoE */
  int n_moe;                /* MoE layers */
  MoelmAct *moe_d1, *moe_d2; /* (K*N, C) backward scratch */
  float *moe_dw;            /* (K*N) dL/d combine weight of each dispatch row */
  float *moe_dlogits;       /* (N, E) */
  MoelmAct *moe_dlogits_act; /* (N, E) the same in the activation type, for the router's linear */
  double *moe_stats_host;   /* host: (n_moe, MOELM_ROUTE_N_STATS) the last forward's gate metadata */
  MoeStatsAcc *moe_acc;     /* (n_moe) */
  double last_gate_loss;    /* combined l_aux of the last forward */
  float *route_logits;      /* (N, E) backend memory: sequence routing's router logits, shared by
                             * the MoE layers of the next forward (and its recomputation) */
  size_t route_cap;         /* floats route_logits holds */

  /* expert parallel: this rank holds experts [first_expert, first_expert + local_experts) of
   * every MoE layer, after the n_shared floats the ranks share */
  MoelmComm *expert_comm;   /* NULL: every expert is here */
  int expert_world, local_experts, first_expert;
  size_t n_shared;
  MoelmExpertExchange *ep;  /* the exchange's scratch (moe_exchange.c) */

  /* --checkpoint-activations: one set of layer activations shared by every layer (recomputed
   * in the backward) and each layer's output kept */
  gboolean checkpoint_activations;
  MoelmAct **layer_out;     /* (layers) of (N, C), when checkpointing */

  /* MoEfication: the moefied layers' scratch (forward only, shared by the layers, the
   * scorer's forward and the KV cache's decoding; grows with the tokens of a call) */
  MoefiedActs *mf;

  MoelmGradReadyFunc grad_ready; /* see moelm_model_set_grad_ready */
  void *grad_ready_data;
};

/* Allocate activations for N token rows (grows, never shrinks). */
gboolean moelm_model_ensure_workspace(MoelmModel *m, int N, GError **error);
/* Make each layer's att_saved hold the attention's saved state for (B, T). */
gboolean moelm_model_ensure_attention(MoelmModel *m, int B, int T, GError **error);
/* Fill d_src/d_tgt/d_pos/d_pad for a batch (fairseq make_positions: non-pad tokens count
 * from padding_idx+1, pad positions are padding_idx). */
void moelm_model_upload_batch(MoelmModel *m, const MoelmBatch *batch);
/* x (N,C) = embed(src) + positions, before dropout. */
void moelm_model_embed(MoelmModel *m, MoelmAct *x, const int32_t *d_tokens, const int32_t *d_pos, int N);

/* Dropout sites inside a layer (the MoE experts use SITE_ACT and SITE_FFN_OUT over their
 * dispatched rows); the embedding dropout uses layer EMBED_LAYER. */
enum { SITE_ATTN_PROBS = 0, SITE_ATTN_OUT = 1, SITE_ACT = 2, SITE_FFN_OUT = 3 };
#define EMBED_LAYER 0xFFFFu

static inline MoelmDropoutIds moelm_drop_ids(const MoelmStepIds *ids, int layer, int site)
{
  MoelmDropoutIds d = {ids ? ids->seed : 0, ids ? ids->update : 0, (uint16_t)layer, (uint16_t)site};
  return d;
}

/* ---- MoE layers (moe_layer.c) ---- */
/* Allocate / free one MoE layer's activations for N tokens. */
gboolean moelm_moe_acts_alloc(MoelmModel *m, MoeActs *a, int N, GError **error);
void moelm_moe_acts_free(MoelmModel *m, MoeActs *a);
/* out (N,C) = the MoE FFN of layer l on inp (N,C) (before the residual). training: fairseq's
 * training capacity and the second-expert noise; otherwise eval capacity (dropless unless
 * the eval token fraction is set). ids: dropout and noise stream (NULL: no dropout, noise
 * from stream 0). pad (N) backend memory or NULL: tokens that are not routed
 * (--use-moe-pad-mask). The gate metadata goes to a->stats (backend memory). */
void moelm_moe_forward(MoelmModel *m, int l, MoeActs *a, const MoelmAct *inp, MoelmAct *out, int N,
                       gboolean training, const MoelmStepIds *ids, const uint8_t *pad);
/* Backward of the last forward: dinp (N,C) += dL/dinp (dinp may alias dout), the layer's
 * gate and expert gradients +=. aux_coef: dL/d l_aux of this layer. */
void moelm_moe_backward(MoelmModel *m, int l, MoeActs *a, const MoelmAct *inp, const MoelmAct *dout,
                        MoelmAct *dinp, int N, const MoelmStepIds *ids, double aux_coef);
/* Sequence routing (cfg.moe_route_token0 > 0): m->route_logits := the one-hot router logits
 * (R*Tq, E) of R rows of Tq tokens, row r to the expert of its first token first[r * stride]
 * (its <expert_k>; expert 0 for any other token), uploaded once for every MoE layer. */
gboolean moelm_moe_route_rows(MoelmModel *m, const int32_t *first, size_t stride, int R, int Tq, GError **error);
/* Expert parallel (moe_exchange.c): the experts' part of the forward, from the dispatched
 * rows a->xin (R of them) to a->y, through the experts' ranks; and its backward, from dL/dy (R
 * rows) to dL/dxin. Failures of the exchange are recorded in the backend's error channel. */
void moelm_moe_exchange_forward(MoelmModel *m, int l, MoeActs *a, const MoelmStepIds *ids, int R);
void moelm_moe_exchange_backward(MoelmModel *m, int l, MoeActs *a, const MoelmStepIds *ids, MoelmAct *dy,
                                 MoelmAct *dxin, int R);
void moelm_moe_exchange_layer_free(MoelmModel *m, MoeActs *a);
void moelm_moe_exchange_free(MoelmModel *m);

/* ---- moefied layers (moefied_layer.c) ---- */
/* Make the moefied layers' scratch hold N tokens (no-op for a model that is not moefied). */
gboolean moelm_moefied_ensure(MoelmModel *m, int N, GError **error);
void moelm_moefied_free(MoelmModel *m);
/* out (N,C) = the moefied FFN of layer l on inp (N,C) (before the residual): only the
 * moefy_top_k experts the selector scores highest for each token are computed; pad (N)
 * backend memory or NULL: tokens that choose no expert (out = the fc2 bias). */
void moelm_moefied_forward(MoelmModel *m, int l, const MoelmAct *inp, MoelmAct *out, int N, const uint8_t *pad);

/* Allocate the model-level MoE scratch for N tokens (no-op for a dense model). */
gboolean moelm_moe_workspace_alloc(MoelmModel *m, int N, GError **error);
void moelm_moe_workspace_free(MoelmModel *m);

/* Allocate `count` elements of `size` bytes into *ptr unless an earlier call failed (*ok
 * FALSE): the one allocation helper of the model's workspaces. */
static inline void moelm_model_alloc(MoelmModel *m, void *ptr, size_t count, size_t size, gboolean *ok,
                                     GError **error)
{
  void **p = ptr;
  if (!*ok) {
    *p = NULL;
    return;
  }
  if (size != 0 && count > SIZE_MAX / size) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "a workspace of %zu x %zu bytes does not fit in memory", count,
                size);
    *ok = FALSE;
    *p = NULL;
    return;
  }
  *p = m->be->ops->alloc(m->be, count * size, error);
  *ok = *p != NULL;
}

/* Free a backend pointer and clear it. */
static inline void moelm_model_release(MoelmModel *m, void *ptr)
{
  void **p = ptr;
  m->be->ops->free(m->be, *p);
  *p = NULL;
}

/* A parameter tensor, and its gradient, at `off` floats into the arenas. */
#define W_PARAM(m, off) ((m)->params + (off))
#define G_PARAM(m, off) ((m)->grads + (off))

#endif
