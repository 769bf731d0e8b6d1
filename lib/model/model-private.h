/* moelm — the decoder's internals shared by params.c, decoder.c and decode.c. */
#ifndef MOELM_MODEL_PRIVATE_H
#define MOELM_MODEL_PRIVATE_H

#include "moelm/model.h"

/* Offsets (in floats) of one layer's parameters in the arena. */
typedef struct {
  size_t qkv_w, qkv_b;       /* (3C, C), (3C): q, k, v projections back to back */
  size_t out_w, out_b;       /* (C, C), (C) */
  size_t ln1_w, ln1_b;       /* self_attn_layer_norm (C) */
  size_t fc1_w, fc1_b;       /* (F, C), (F) */
  size_t fc2_w, fc2_b;       /* (C, F), (C) */
  size_t ln2_w, ln2_b;       /* final_layer_norm (C) */
} LayerParams;

/* Activations of one layer kept for the backward pass (N = B*T rows). */
typedef struct {
  float *x_in;       /* (N,C) layer input (points at the previous layer's output) */
  float *n1;         /* (N,C) LN1 output (pre: LN1(x_in); post: LN1(r1)) */
  float *mean1, *rstd1; /* (N) */
  float *qkv;        /* (N,3C) */
  float *att_saved;  /* attention_saved_floats */
  float *atty;       /* (N,C) attention output before out_proj */
  float *r1;         /* (N,C) x_in + dropout(out_proj(atty)) */
  float *n2;         /* (N,C) LN2 output (pre: LN2(r1); post: LN2(r2)) */
  float *mean2, *rstd2; /* (N) */
  float *fc1;        /* (N,F) pre-activation */
  float *fcact;      /* (N,F) dropout(act(fc1)) */
  float *r2;         /* (N,C) residual sum after the FFN */
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

  /* activation workspace, sized for max_rows tokens */
  int max_rows;
  size_t att_cap;     /* floats allocated per layer for att_saved */
  int32_t *d_src, *d_tgt, *d_pos; /* (N) backend memory */
  uint8_t *d_pad;                 /* (N) key padding mask, backend memory */
  gboolean any_pad;
  float *x0;          /* (N,C) embedding output */
  LayerActs *acts;
  float *xf;          /* (N,C) final normed output (input to the output projection) */
  float *meanf, *rstdf;
  float *logits;      /* (N,V) */
  float *losses;      /* (N) */
  float *dloss;       /* (N) */
  float *dx, *dtmp, *dbig, *dbig2, *dqkv, *datt; /* backward scratch */
  float *save_row;    /* (C) scratch to protect pad rows of embedding grads */
};

/* Allocate activations for N token rows (grows, never shrinks). */
gboolean moelm_model_ensure_workspace(MoelmModel *m, int N, GError **error);
/* Make each layer's att_saved hold the attention's saved state for (B, T). */
gboolean moelm_model_ensure_attention(MoelmModel *m, int B, int T, GError **error);
/* Fill d_src/d_tgt/d_pos/d_pad for a batch (fairseq make_positions: non-pad tokens count
 * from padding_idx+1, pad positions are padding_idx). */
void moelm_model_upload_batch(MoelmModel *m, const MoelmBatch *batch);
/* x (N,C) = embed(src) + positions, before dropout. */
void moelm_model_embed(MoelmModel *m, float *x, const int32_t *d_tokens, const int32_t *d_pos, int N);

/* A parameter tensor at `off` floats into the arena. */
#define W_PARAM(m, off) ((m)->params + (off))

#endif
