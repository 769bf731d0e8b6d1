/* moelm — reference causal multi-head self-attention: per (batch, head, query) loops with
 * double accumulators. Saved for backward: the pre-dropout probabilities (B, NH, T, T). */
#include "config.h"

#include <string.h>

#include "backend/cpu/cpu-internal.h"

static size_t ref_attention_saved_bytes(MoelmBackend *be, int B, int T, int C, int NH)
{
  return (size_t)B * NH * T * T * sizeof(float); /* the pre-dropout probabilities */
}

/* Softmax over the keys query t may see; writes probs[0..T) (zeros where invisible).
 * Returns FALSE (all zeros) when no key is visible. */
static gboolean softmax_row(double *probs, const float *qkv, const uint8_t *kpm, int b, int h, int t, int T,
                            int C, int hs, int n_keys)
{
  const float *q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
  double scale = 1.0 / sqrt((double)hs);
  double max = -INFINITY;
  for (int s = 0; s < T; s++) {
    probs[s] = -INFINITY;
    if (s >= n_keys || (kpm != NULL && kpm[(size_t)b * T + s]))
      continue;
    const float *k = qkv + ((size_t)b * T + s) * 3 * C + C + h * hs;
    double dot = 0;
    for (int i = 0; i < hs; i++)
      dot += (double)((float)(q[i] * scale)) * k[i];
    probs[s] = dot;
    if (dot > max)
      max = dot;
  }
  if (max == -INFINITY) {
    for (int s = 0; s < T; s++)
      probs[s] = 0;
    return FALSE;
  }
  double sum = 0;
  for (int s = 0; s < T; s++) {
    probs[s] = probs[s] == -INFINITY ? 0.0 : exp(probs[s] - max);
    sum += probs[s];
  }
  for (int s = 0; s < T; s++)
    probs[s] /= sum;
  return TRUE;
}

/* The dropout multiplier of probability (b, h, t, s). */
static double attn_drop(const MoelmDropoutIds *ids, float p, int NH, int T, int b, int h, int t, int s)
{
  if (p == 0.0f)
    return 1.0;
  uint64_t i = (((uint64_t)b * NH + h) * T + t) * T + s;
  return moelm_dropout_keep(ids, p, i) ? moelm_dropout_multiplier(p) : 0.0;
}

static void ref_attention_forward(MoelmBackend *be, MoelmAct *out_, void *saved_, const MoelmAct *qkv_,
                                  const uint8_t *key_padding_mask, int B, int T, int C, int NH, float p,
                                  const MoelmDropoutIds *ids)
{
  float *saved = saved_;
  float *out = (float *)out_;
  const float *qkv = (const float *)qkv_;
  int hs = C / NH;
  double *probs = g_new(double, T);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++)
      for (int t = 0; t < T; t++) {
        softmax_row(probs, qkv, key_padding_mask, b, h, t, T, C, hs, t + 1);
        if (saved != NULL) {
          float *row = saved + (((size_t)b * NH + h) * T + t) * T;
          for (int s = 0; s < T; s++)
            row[s] = (float)probs[s];
        }
        float *o = out + ((size_t)b * T + t) * C + h * hs;
        for (int i = 0; i < hs; i++) {
          double sum = 0;
          for (int s = 0; s <= t; s++) {
            const float *v = qkv + ((size_t)b * T + s) * 3 * C + 2 * C + h * hs;
            sum += probs[s] * attn_drop(ids, p, NH, T, b, h, t, s) * v[i];
          }
          o[i] = (float)sum;
        }
      }
  g_free(probs);
}

static void ref_attention_backward(MoelmBackend *be, MoelmAct *dqkv_, const MoelmAct *dout_, const MoelmAct *qkv_,
                                   const void *saved_, const uint8_t *key_padding_mask, int B, int T, int C, int NH,
                                   float p, const MoelmDropoutIds *ids)
{
  const float *saved = saved_;
  float *dqkv = (float *)dqkv_;
  const float *dout = (const float *)dout_;
  const float *qkv = (const float *)qkv_;
  int hs = C / NH;
  double scale = 1.0 / sqrt((double)hs);
  double *dprobs = g_new(double, T);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++)
      for (int t = 0; t < T; t++) {
        const float *probs = saved + (((size_t)b * NH + h) * T + t) * T;
        const float *g = dout + ((size_t)b * T + t) * C + h * hs;
        const float *q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
        float *dq = dqkv + ((size_t)b * T + t) * 3 * C + h * hs;
        /* through probs @ v (and the dropout between them) */
        double dot_pd = 0;
        for (int s = 0; s <= t; s++) {
          const float *v = qkv + ((size_t)b * T + s) * 3 * C + 2 * C + h * hs;
          float *dv = dqkv + ((size_t)b * T + s) * 3 * C + 2 * C + h * hs;
          double drop = attn_drop(ids, p, NH, T, b, h, t, s);
          double dp = 0;
          for (int i = 0; i < hs; i++) {
            dp += (double)g[i] * v[i];
            dv[i] += (float)(probs[s] * drop * g[i]);
          }
          dprobs[s] = dp * drop;
          dot_pd += probs[s] * dprobs[s];
        }
        /* through the softmax and the scaled dot products */
        for (int s = 0; s <= t; s++) {
          double ds = probs[s] * (dprobs[s] - dot_pd);
          if (ds == 0.0)
            continue;
          const float *k = qkv + ((size_t)b * T + s) * 3 * C + C + h * hs;
          float *dk = dqkv + ((size_t)b * T + s) * 3 * C + C + h * hs;
          for (int i = 0; i < hs; i++) {
            dq[i] += (float)(ds * k[i] * scale);
            dk[i] += (float)(ds * q[i] * scale);
          }
        }
      }
  g_free(dprobs);
}

static void ref_attention_decode(MoelmBackend *be, MoelmAct *out_, const MoelmAct *q_, const MoelmAct *k_cache_,
                                 const MoelmAct *v_cache_, const uint8_t *key_padding_mask, int B, int Tq, int Tk,
                                 int Tcap, int C, int NH)
{
  float *out = (float *)out_;
  const float *q = (const float *)q_;
  const float *k_cache = (const float *)k_cache_;
  const float *v_cache = (const float *)v_cache_;
  int hs = C / NH;
  double scale = 1.0 / sqrt((double)hs);
  double *probs = g_new(double, Tk);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < NH; h++)
      for (int t = 0; t < Tq; t++) {
        int n_keys = Tk - Tq + t + 1;
        const float *qr = q + ((size_t)b * Tq + t) * C + h * hs;
        double max = -INFINITY;
        for (int s = 0; s < n_keys; s++) {
          probs[s] = -INFINITY;
          if (key_padding_mask != NULL && key_padding_mask[(size_t)b * Tk + s])
            continue;
          const float *k = k_cache + ((size_t)b * Tcap + s) * C + h * hs;
          double dot = 0;
          for (int i = 0; i < hs; i++)
            dot += (double)((float)(qr[i] * scale)) * k[i];
          probs[s] = dot;
          if (dot > max)
            max = dot;
        }
        double sum = 0;
        for (int s = 0; s < n_keys; s++) {
          probs[s] = max == -INFINITY || probs[s] == -INFINITY ? 0.0 : exp(probs[s] - max);
          sum += probs[s];
        }
        float *o = out + ((size_t)b * Tq + t) * C + h * hs;
        for (int i = 0; i < hs; i++) {
          double acc = 0;
          for (int s = 0; s < n_keys; s++)
            acc += probs[s] * v_cache[((size_t)b * Tcap + s) * C + h * hs + i];
          o[i] = sum > 0 ? (float)(acc / sum) : 0.0f;
        }
      }
  g_free(probs);
}

void moelm_ref_fill_attention(struct moelm_backend_ops *ops)
{
  ops->attention_saved_bytes = ref_attention_saved_bytes;
  ops->attention_forward = ref_attention_forward;
  ops->attention_backward = ref_attention_backward;
  ops->attention_decode = ref_attention_decode;
}
