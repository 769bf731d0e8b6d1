/* moelm — fast causal self-attention: one task per (batch, head) on the pool; the score
 * and value products are single-threaded sgemm calls over blocks of query rows (or key
 * rows), each limited to the keys the causal mask lets that block see. Saved for the
 * backward: the pre-dropout probabilities (B, NH, T, T), as in the reference. */
#include "config.h"

#include <string.h>

#include "backend/cpu/cpu-internal.h"
#include "backend/cpu/simd.h"

/* Query (or key) rows per sgemm block: smaller wastes less on the masked triangle, larger
 * keeps the products efficient. */
#define BLOCK 64

typedef struct {
  float *out;
  float *saved;
  float *dqkv;
  const float *dout;
  const float *qkv;
  const uint8_t *kpm;
  int B, T, C, NH;
  float p;
  const MoelmDropoutIds *ids;
  /* decode */
  const float *q, *k_cache, *v_cache;
  int Tq, Tk, Tcap;
} AttnJob;

static size_t fast_attention_saved_bytes(MoelmBackend *be, int B, int T, int C, int NH)
{
  return (size_t)B * NH * T * T * sizeof(float); /* the pre-dropout probabilities */
}

/* Causal, key-padding-masked softmax of the scaled scores in row[0..T), in place: the
 * visible keys are s <= t with kpm[s] == 0; every other entry becomes exactly 0. */
static void masked_softmax_row(float *row, int t, int T, const uint8_t *kpm)
{
  int n = t + 1;
  if (kpm != NULL)
    for (int s = 0; s < n; s++)
      if (kpm[s])
        row[s] = -INFINITY;
  float max = moelm_vmax(row, n);
  if (max == -INFINITY) {
    memset(row, 0, (size_t)T * sizeof(float));
    return;
  }
  float sum = moelm_vexp_shift_sum(row, row, max, n);
  float inv = 1.0f / sum;
  for (int s = 0; s < n; s++)
    row[s] *= inv;
  if (kpm != NULL)
    for (int s = 0; s < n; s++)
      if (kpm[s])
        row[s] = 0.0f;
  memset(row + n, 0, (size_t)(T - n) * sizeof(float));
}

/* pd = probs of query row t with the dropout applied; mult receives the row's multipliers. */
static void dropped_row(float *pd, const float *probs, float *mult, const AttnJob *j, int b, int h, int t)
{
  int T = j->T, n = t + 1;
  uint64_t base = (((uint64_t)b * j->NH + h) * T + t) * T;
  moelm_dropout_fill_multipliers(mult, j->ids, j->p, base, n);
  moelm_vmul(pd, probs, mult, n);
  memset(pd + n, 0, (size_t)(T - n) * sizeof(float));
}

static void attention_forward_heads(void *ctx, int64_t begin, int64_t end)
{
  const AttnJob *j = ctx;
  int T = j->T, C = j->C, hs = C / j->NH;
  float scale = 1.0f / sqrtf((float)hs);
  float *scratch_p = j->saved == NULL ? g_new(float, (size_t)T * T) : NULL;
  float *pd = j->p > 0.0f ? g_new(float, (size_t)T * T) : NULL;
  float *mult = j->p > 0.0f ? g_new(float, T) : NULL;
  for (int64_t bh = begin; bh < end; bh++) {
    int b = (int)(bh / j->NH), h = (int)(bh % j->NH);
    const float *q = j->qkv + (size_t)b * T * 3 * C + h * hs, *k = q + C, *v = q + 2 * C;
    const uint8_t *kpm = j->kpm ? j->kpm + (size_t)b * T : NULL;
    float *probs = j->saved ? j->saved + (size_t)bh * T * T : scratch_p;
    for (int t0 = 0; t0 < T; t0 += BLOCK) {
      int t1 = t0 + BLOCK < T ? t0 + BLOCK : T;
      moelm_cpu_sgemm(FALSE, TRUE, t1 - t0, t1, hs, scale, q + (size_t)t0 * 3 * C, 3 * C, k, 3 * C, 0.0f,
                      probs + (size_t)t0 * T, T);
      for (int t = t0; t < t1; t++)
        masked_softmax_row(probs + (size_t)t * T, t, T, kpm);
    }
    const float *used = probs;
    if (pd != NULL) {
      for (int t = 0; t < T; t++)
        dropped_row(pd + (size_t)t * T, probs + (size_t)t * T, mult, j, b, h, t);
      used = pd;
    }
    float *o = j->out + (size_t)b * T * C + h * hs;
    for (int t0 = 0; t0 < T; t0 += BLOCK) {
      int t1 = t0 + BLOCK < T ? t0 + BLOCK : T;
      moelm_cpu_sgemm(FALSE, FALSE, t1 - t0, hs, t1, 1.0f, used + (size_t)t0 * T, T, v, 3 * C, 0.0f,
                      o + (size_t)t0 * C, C);
    }
  }
  g_free(scratch_p);
  g_free(pd);
  g_free(mult);
}

static void fast_attention_forward(MoelmBackend *be, MoelmAct *out_, void *saved_, const MoelmAct *qkv_,
                                   const uint8_t *key_padding_mask, int B, int T, int C, int NH, float p,
                                   const MoelmDropoutIds *ids)
{
  float *saved = saved_;
  float *out = (float *)out_;
  const float *qkv = (const float *)qkv_;
  AttnJob j = {.out = out, .saved = saved, .qkv = qkv, .kpm = key_padding_mask, .B = B, .T = T, .C = C, .NH = NH,
               .p = p, .ids = ids};
  moelm_thread_pool_run(moelm_cpu_pool(be), (int64_t)B * NH, 1, attention_forward_heads, &j);
}

static void attention_backward_heads(void *ctx, int64_t begin, int64_t end)
{
  const AttnJob *j = ctx;
  int T = j->T, C = j->C, hs = C / j->NH;
  float scale = 1.0f / sqrtf((float)hs);
  gboolean drop = j->p > 0.0f;
  float *pd = drop ? g_new(float, (size_t)T * T) : NULL;    /* dropped probabilities */
  float *mults = drop ? g_new(float, (size_t)T * T) : NULL; /* their dropout multipliers */
  float *ds = g_new(float, (size_t)T * T); /* d(dropped probs), then d(scores) */
  for (int64_t bh = begin; bh < end; bh++) {
    int b = (int)(bh / j->NH), h = (int)(bh % j->NH);
    const float *q = j->qkv + (size_t)b * T * 3 * C + h * hs, *k = q + C, *v = q + 2 * C;
    float *dq = j->dqkv + (size_t)b * T * 3 * C + h * hs, *dk = dq + C, *dv = dq + 2 * C;
    const float *dout = j->dout + (size_t)b * T * C + h * hs;
    const float *probs = j->saved + (size_t)bh * T * T;
    const float *used = probs;
    if (drop) {
      for (int t = 0; t < T; t++)
        dropped_row(pd + (size_t)t * T, probs + (size_t)t * T, mults + (size_t)t * T, j, b, h, t);
      used = pd;
    }
    /* dPd = dout V^T (query blocks, visible keys only); dV += Pd^T dout (key blocks) */
    for (int t0 = 0; t0 < T; t0 += BLOCK) {
      int t1 = t0 + BLOCK < T ? t0 + BLOCK : T;
      moelm_cpu_sgemm(FALSE, TRUE, t1 - t0, t1, hs, 1.0f, dout + (size_t)t0 * C, C, v, 3 * C, 0.0f,
                      ds + (size_t)t0 * T, T);
      moelm_cpu_sgemm(TRUE, FALSE, t1 - t0, hs, T - t0, 1.0f, used + (size_t)t0 * T + t0, T, dout + (size_t)t0 * C,
                      C, 1.0f, dv + (size_t)t0 * 3 * C, 3 * C);
    }
    /* through the dropout and the softmax: dS = P * (dP - sum(P dP)), times the q scale */
    for (int t = 0; t < T; t++) {
      float *row = ds + (size_t)t * T;
      const float *pr = probs + (size_t)t * T;
      int n = t + 1;
      if (drop)
        moelm_vmul(row, row, mults + (size_t)t * T, n);
      float dot = moelm_vdot(pr, row, n);
      for (int s = 0; s < n; s++)
        row[s] = pr[s] * (row[s] - dot) * scale;
      memset(row + n, 0, (size_t)(T - n) * sizeof(float));
    }
    /* dQ += dS K (query blocks); dK += dS^T Q (key blocks) */
    for (int t0 = 0; t0 < T; t0 += BLOCK) {
      int t1 = t0 + BLOCK < T ? t0 + BLOCK : T;
      moelm_cpu_sgemm(FALSE, FALSE, t1 - t0, hs, t1, 1.0f, ds + (size_t)t0 * T, T, k, 3 * C, 1.0f,
                      dq + (size_t)t0 * 3 * C, 3 * C);
      moelm_cpu_sgemm(TRUE, FALSE, t1 - t0, hs, T - t0, 1.0f, ds + (size_t)t0 * T + t0, T, q + (size_t)t0 * 3 * C,
                      3 * C, 1.0f, dk + (size_t)t0 * 3 * C, 3 * C);
    }
  }
  g_free(pd);
  g_free(mults);
  g_free(ds);
}

static void fast_attention_backward(MoelmBackend *be, MoelmAct *dqkv_, const MoelmAct *dout_, const MoelmAct *qkv_,
                                    const void *saved_, const uint8_t *key_padding_mask, int B, int T, int C, int NH,
                                    float p, const MoelmDropoutIds *ids)
{
  const float *saved = saved_;
  float *dqkv = (float *)dqkv_;
  const float *dout = (const float *)dout_;
  const float *qkv = (const float *)qkv_;
  AttnJob j = {.dqkv = dqkv, .dout = dout, .saved = (float *)saved, .qkv = qkv, .kpm = key_padding_mask, .B = B,
               .T = T, .C = C, .NH = NH, .p = p, .ids = ids};
  moelm_thread_pool_run(moelm_cpu_pool(be), (int64_t)B * NH, 1, attention_backward_heads, &j);
}

static void attention_decode_heads(void *ctx, int64_t begin, int64_t end)
{
  const AttnJob *j = ctx;
  int C = j->C, hs = C / j->NH;
  float scale = 1.0f / sqrtf((float)hs);
  float *probs = g_new(float, j->Tk);
  float *qs = g_new(float, hs);
  for (int64_t bh = begin; bh < end; bh++) {
    int b = (int)(bh / j->NH), h = (int)(bh % j->NH);
    const uint8_t *kpm = j->kpm ? j->kpm + (size_t)b * j->Tk : NULL;
    for (int t = 0; t < j->Tq; t++) {
      int n = j->Tk - j->Tq + t + 1;
      const float *qr = j->q + ((size_t)b * j->Tq + t) * C + h * hs;
      for (int i = 0; i < hs; i++)
        qs[i] = qr[i] * scale;
      float max = -INFINITY;
      for (int s = 0; s < n; s++) {
        probs[s] = kpm && kpm[s] ? -INFINITY : moelm_vdot(qs, j->k_cache + ((size_t)b * j->Tcap + s) * C + h * hs, hs);
        max = probs[s] > max ? probs[s] : max;
      }
      float *o = j->out + ((size_t)b * j->Tq + t) * C + h * hs;
      memset(o, 0, (size_t)hs * sizeof(float));
      if (max == -INFINITY)
        continue;
      float sum = 0.0f;
      for (int s = 0; s < n; s++) {
        probs[s] = probs[s] == -INFINITY ? 0.0f : expf(probs[s] - max);
        sum += probs[s];
      }
      for (int s = 0; s < n; s++)
        if (probs[s] != 0.0f)
          moelm_vaxpy(o, probs[s] / sum, j->v_cache + ((size_t)b * j->Tcap + s) * C + h * hs, hs);
    }
  }
  g_free(probs);
  g_free(qs);
}

static void fast_attention_decode(MoelmBackend *be, MoelmAct *out_, const MoelmAct *q_, const MoelmAct *k_cache_,
                                  const MoelmAct *v_cache_, const uint8_t *key_padding_mask, int B, int Tq, int Tk,
                                  int Tcap, int C, int NH)
{
  float *out = (float *)out_;
  const float *q = (const float *)q_;
  const float *k_cache = (const float *)k_cache_;
  const float *v_cache = (const float *)v_cache_;
  AttnJob j = {.out = out, .q = q, .k_cache = k_cache, .v_cache = v_cache, .kpm = key_padding_mask, .B = B,
               .C = C, .NH = NH, .Tq = Tq, .Tk = Tk, .Tcap = Tcap};
  int64_t work = (int64_t)Tq * Tk * C;
  moelm_thread_pool_run(moelm_cpu_pool(be), (int64_t)B * NH, work < 65536 ? (int64_t)B * NH : 1,
                        attention_decode_heads, &j);
}

void moelm_fast_fill_attention(struct moelm_backend_ops *ops)
{
  ops->attention_saved_bytes = fast_attention_saved_bytes;
  ops->attention_forward = fast_attention_forward;
  ops->attention_backward = fast_attention_backward;
  ops->attention_decode = fast_attention_decode;
}
