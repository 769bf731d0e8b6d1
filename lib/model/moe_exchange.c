/* moelm — expert parallel MoE layers: the experts of a layer are split over the ranks (rank q
 * holds experts q*El .. q*El+El-1), every rank routes its own tokens, and the dispatched rows
 * travel to the rank of their expert and back with all-to-all.
 *
 * Forward, on every rank (R = K*N dispatch rows, grouped by expert, hence by owner rank):
 *   counts per (owner, local expert) → alltoall → what each source sends me per expert
 *   xin rows → alltoallv → received rows (by source, then expert) → permute to expert-major
 *   → grouped GEMMs over my experts (fc1, act, dropout, fc2) → permute back → alltoallv back
 *   → y rows in the sender's dispatch order (the output dropout and the combine happen there,
 *   as without expert parallelism).
 * Backward mirrors it. The per-expert counts reach the host (one small copy per layer: MPI
 * needs them to size the exchange); everything else stays in backend memory.
 *
 * The activation dropout inside the experts draws from the owner's stream (layer, site
 * SITE_ACT_EP, the row's place on the owner): with --activation-dropout > 0 (fairseq's default
 * is 0) its masks differ from a single process's. Everything else matches it exactly. */
#include "config.h"

#include <string.h>

#include "model-private.h"

enum { SITE_ACT_EP = 4 };

struct MoelmExpertExchange {
  int cap;            /* rows the buffers below hold */
  MoelmAct *recv;     /* (cap, C) rows as received, or sent back */
  MoelmAct *tmp;      /* (cap, C) */
  MoelmAct *dbig, *dbig2; /* (cap, Fe) backward scratch */
  int32_t *h_offsets; /* host (E+1): the dispatch offsets of this rank's routing */
  int32_t *cnt, *rcnt; /* host (E): rows per (owner, local expert) sent and (source, local expert) received */
};

struct MoeEpLayer {
  int cap;                        /* rows the buffers hold */
  int rows;                       /* rows received in the last forward */
  int sent;                       /* rows this rank dispatched (and sent) in it */
  int32_t *send_rows, *recv_rows; /* host (W) */
  int32_t *h_perm, *h_inv, *h_local; /* host: (rows) expert-major ← received, its inverse; (El+1) */
  int32_t *perm, *inv, *local_offsets; /* backend copies */
  MoelmAct *xin, *fc1, *fcact;    /* (cap, C|Fe|Fe) expert-major, kept for the backward */
};

static void release_layer(MoelmModel *m, MoeEpLayer *e)
{
  void *bufs[] = {&e->perm, &e->inv, &e->local_offsets, &e->xin, &e->fc1, &e->fcact};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    moelm_model_release(m, bufs[i]);
  g_clear_pointer(&e->h_perm, g_free);
  g_clear_pointer(&e->h_inv, g_free);
  e->cap = 0;
}

void moelm_moe_exchange_layer_free(MoelmModel *m, MoeActs *a)
{
  if (a->ep == NULL)
    return;
  release_layer(m, a->ep);
  g_free(a->ep->send_rows);
  g_free(a->ep->recv_rows);
  g_free(a->ep->h_local);
  g_clear_pointer(&a->ep, g_free);
}

void moelm_moe_exchange_free(MoelmModel *m)
{
  MoelmExpertExchange *x = m->ep;
  if (x == NULL)
    return;
  void *bufs[] = {&x->recv, &x->tmp, &x->dbig, &x->dbig2};
  for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
    moelm_model_release(m, bufs[i]);
  g_free(x->h_offsets);
  g_free(x->cnt);
  g_free(x->rcnt);
  g_clear_pointer(&m->ep, g_free);
}

/* Grow the model-level and the layer's buffers to `rows` received rows. */
static gboolean ensure(MoelmModel *m, MoeEpLayer *e, int rows, GError **error)
{
  const size_t C = m->cfg.embed_dim, Fe = moelm_model_config_expert_ffn_dim(&m->cfg), A = m->be->act_size;
  const size_t n = (size_t)MAX(rows, 1);
  gboolean ok = TRUE;
  MoelmExpertExchange *x = m->ep;
  if (rows > x->cap) {
    void *bufs[] = {&x->recv, &x->tmp, &x->dbig, &x->dbig2};
    for (gsize i = 0; i < G_N_ELEMENTS(bufs); i++)
      moelm_model_release(m, bufs[i]);
    moelm_model_alloc(m, &x->recv, n * C, A, &ok, error);
    moelm_model_alloc(m, &x->tmp, n * C, A, &ok, error);
    moelm_model_alloc(m, &x->dbig, n * Fe, A, &ok, error);
    moelm_model_alloc(m, &x->dbig2, n * Fe, A, &ok, error);
    x->cap = ok ? rows : 0;
  }
  if (ok && rows > e->cap) {
    release_layer(m, e);
    moelm_model_alloc(m, &e->perm, n, sizeof(int32_t), &ok, error);
    moelm_model_alloc(m, &e->inv, n, sizeof(int32_t), &ok, error);
    moelm_model_alloc(m, &e->local_offsets, (size_t)m->local_experts + 1, sizeof(int32_t), &ok, error);
    moelm_model_alloc(m, &e->xin, n * C, A, &ok, error);
    moelm_model_alloc(m, &e->fc1, n * Fe, A, &ok, error);
    moelm_model_alloc(m, &e->fcact, n * Fe, A, &ok, error);
    e->h_perm = g_new(int32_t, n);
    e->h_inv = g_new(int32_t, n);
    e->cap = ok ? rows : 0;
  }
  return ok;
}

static gboolean setup(MoelmModel *m, MoeActs *a)
{
  const int W = m->expert_world, E = m->cfg.moe_experts;
  if (m->ep == NULL) {
    m->ep = g_new0(MoelmExpertExchange, 1);
    m->ep->h_offsets = g_new(int32_t, E + 1);
    m->ep->cnt = g_new(int32_t, E);
    m->ep->rcnt = g_new(int32_t, E);
  }
  if (a->ep == NULL) {
    a->ep = g_new0(MoeEpLayer, 1);
    a->ep->send_rows = g_new(int32_t, W);
    a->ep->recv_rows = g_new(int32_t, W);
    a->ep->h_local = g_new(int32_t, m->local_experts + 1);
  }
  return TRUE;
}

/* The exchange's plan from this rank's dispatch offsets: what goes to and comes from every
 * rank, and the permutation of the received rows into expert-major order. */
static gboolean plan(MoelmModel *m, MoeActs *a, GError **error)
{
  MoelmBackend *be = m->be;
  MoelmExpertExchange *x = m->ep;
  MoeEpLayer *e = a->ep;
  const int W = m->expert_world, E = m->cfg.moe_experts, El = m->local_experts;
  be->ops->to_host(be, x->h_offsets, a->route.offsets, (size_t)(E + 1) * sizeof(int32_t));
  e->sent = x->h_offsets[E];
  for (int q = 0; q < W; q++) {
    e->send_rows[q] = x->h_offsets[(q + 1) * El] - x->h_offsets[q * El];
    for (int j = 0; j < El; j++)
      x->cnt[q * El + j] = x->h_offsets[q * El + j + 1] - x->h_offsets[q * El + j];
  }
  if (!moelm_comm_alltoall_i32(m->expert_comm, x->cnt, x->rcnt, El, error))
    return FALSE;
  int rows = 0;
  for (int q = 0; q < W; q++) {
    e->recv_rows[q] = 0;
    for (int j = 0; j < El; j++)
      e->recv_rows[q] += x->rcnt[q * El + j];
    rows += e->recv_rows[q];
  }
  if (!ensure(m, e, rows, error))
    return FALSE;
  e->rows = rows;
  /* received: source q's rows for expert 0, 1, ...; expert-major: expert j's rows from q = 0, 1, ... */
  int *src_start = g_new(int, (gsize)W * El);
  for (int q = 0, at = 0; q < W; q++)
    for (int j = 0; j < El; j++) {
      src_start[q * El + j] = at;
      at += x->rcnt[q * El + j];
    }
  int out = 0;
  e->h_local[0] = 0;
  for (int j = 0; j < El; j++) {
    for (int q = 0; q < W; q++)
      for (int i = 0; i < x->rcnt[q * El + j]; i++, out++) {
        e->h_perm[out] = src_start[q * El + j] + i;
        e->h_inv[src_start[q * El + j] + i] = out;
      }
    e->h_local[j + 1] = out;
  }
  g_free(src_start);
  be->ops->to_device(be, e->perm, e->h_perm, (size_t)rows * sizeof(int32_t));
  be->ops->to_device(be, e->inv, e->h_inv, (size_t)rows * sizeof(int32_t));
  be->ops->to_device(be, e->local_offsets, e->h_local, (size_t)(El + 1) * sizeof(int32_t));
  return TRUE;
}

/* Rows [0, total sent) of `rows_out` (dispatch order) to the owners; the owners' rows in
 * `recv`; then back. `back`: from owners to senders. */
static gboolean exchange(MoelmModel *m, MoeEpLayer *e, const MoelmAct *send, MoelmAct *recv, gboolean back,
                         GError **error)
{
  const size_t row = moelm_act_bytes(m->be, (size_t)m->cfg.embed_dim);
  return back ? moelm_comm_alltoallv_rows(m->expert_comm, m->be, send, e->recv_rows, recv, e->send_rows, row, error)
              : moelm_comm_alltoallv_rows(m->expert_comm, m->be, send, e->send_rows, recv, e->recv_rows, row, error);
}

static void fail(MoelmModel *m, int l, GError *error)
{
  moelm_backend_set_error(m->be, error ? error->code : MOELM_ERROR_FAILED, "MoE layer %d, expert exchange: %s", l,
                          error ? error->message : "failed");
  g_clear_error(&error);
}

void moelm_moe_exchange_forward(MoelmModel *m, int l, MoeActs *a, const MoelmStepIds *ids, int R)
{
  MoelmBackend *be = m->be;
  const struct moelm_backend_ops *o = be->ops;
  const MoelmModelConfig *c = &m->cfg;
  const LayerParams *L = &m->layers[l];
  const int C = c->embed_dim, Fe = moelm_model_config_expert_ffn_dim(c), El = m->local_experts;
  const float pact = ids ? (float)c->activation_dropout : 0.0f;
  MoelmDropoutIds d_act = moelm_drop_ids(ids, l, SITE_ACT_EP);
  GError *error = NULL;
  setup(m, a);
  MoeEpLayer *e = a->ep;
  if (!plan(m, a, &error) || !exchange(m, e, a->xin, m->ep->recv, FALSE, &error)) {
    fail(m, l, error);
    return;
  }
  const int rows = e->rows;
  o->gather_rows(be, e->xin, m->ep->recv, e->perm, rows, C);
  o->grouped_linear_forward(be, e->fc1, e->xin, W_PARAM(m, EXPERT_FC1_W(L, 0)), L->expert_stride,
                            W_PARAM(m, EXPERT_FC1_B(L, 0, C, Fe)), L->expert_stride, e->local_offsets, El, rows, C, Fe);
  o->activation_forward(be, c->activation, e->fcact, e->fc1, (size_t)rows * Fe);
  o->dropout_forward(be, e->fcact, e->fcact, (size_t)rows * Fe, pact, &d_act);
  o->grouped_linear_forward(be, m->ep->tmp, e->fcact, W_PARAM(m, EXPERT_FC2_W(L, 0, C, Fe)), L->expert_stride,
                            W_PARAM(m, EXPERT_FC2_B(L, 0, C, Fe)), L->expert_stride, e->local_offsets, El, rows, Fe, C);
  o->gather_rows(be, m->ep->recv, m->ep->tmp, e->inv, rows, C); /* back to the received order */
  /* the expert outputs in this rank's dispatch order; rows past the dispatched ones are zero */
  const int sent = e->sent;
  if (!exchange(m, e, m->ep->recv, a->y, TRUE, &error)) {
    fail(m, l, error);
    return;
  }
  if (sent < R)
    o->zero(be, moelm_act_at(be, a->y, (size_t)sent * C), moelm_act_bytes(be, (size_t)(R - sent) * C));
}

void moelm_moe_exchange_backward(MoelmModel *m, int l, MoeActs *a, const MoelmStepIds *ids, MoelmAct *dy,
                                 MoelmAct *dxin, int R)
{
  MoelmBackend *be = m->be;
  const struct moelm_backend_ops *o = be->ops;
  const MoelmModelConfig *c = &m->cfg;
  const LayerParams *L = &m->layers[l];
  const int C = c->embed_dim, Fe = moelm_model_config_expert_ffn_dim(c), El = m->local_experts;
  const float pact = ids ? (float)c->activation_dropout : 0.0f;
  MoelmDropoutIds d_act = moelm_drop_ids(ids, l, SITE_ACT_EP);
  MoeEpLayer *e = a->ep;
  MoelmExpertExchange *x = m->ep;
  GError *error = NULL;
  if (e == NULL || x == NULL) {
    moelm_backend_set_error(be, MOELM_ERROR_FAILED, "MoE layer %d: expert-parallel backward without a forward", l);
    return;
  }
  const int rows = e->rows;
  const size_t RF = (size_t)rows * Fe, RC = (size_t)rows * C;
  /* dL/dy of the dispatched rows to their experts' ranks, into expert-major order */
  if (!exchange(m, e, dy, x->recv, FALSE, &error)) {
    fail(m, l, error);
    return;
  }
  o->gather_rows(be, x->tmp, x->recv, e->perm, rows, C);
  o->zero(be, x->dbig, moelm_act_bytes(be, RF));
  o->grouped_linear_backward(be, x->dbig, G_PARAM(m, EXPERT_FC2_W(L, 0, C, Fe)), G_PARAM(m, EXPERT_FC2_B(L, 0, C, Fe)),
                             x->tmp, e->fcact, W_PARAM(m, EXPERT_FC2_W(L, 0, C, Fe)), L->expert_stride,
                             L->expert_stride, e->local_offsets, El, rows, Fe, C);
  o->zero(be, x->dbig2, moelm_act_bytes(be, RF));
  o->dropout_backward(be, x->dbig2, x->dbig, RF, pact, &d_act);
  o->zero(be, x->dbig, moelm_act_bytes(be, RF));
  o->activation_backward(be, c->activation, x->dbig, e->fc1, x->dbig2, RF);
  o->zero(be, x->tmp, moelm_act_bytes(be, RC));
  o->grouped_linear_backward(be, x->tmp, G_PARAM(m, EXPERT_FC1_W(L, 0)), G_PARAM(m, EXPERT_FC1_B(L, 0, C, Fe)), x->dbig,
                             e->xin, W_PARAM(m, EXPERT_FC1_W(L, 0)), L->expert_stride, L->expert_stride,
                             e->local_offsets, El, rows, C, Fe);
  /* dL/dxin back to the senders, in their dispatch order */
  o->gather_rows(be, x->recv, x->tmp, e->inv, rows, C);
  const int sent = e->sent;
  if (!exchange(m, e, x->recv, dxin, TRUE, &error)) {
    fail(m, l, error);
    return;
  }
  if (sent < R)
    o->zero(be, moelm_act_at(be, dxin, (size_t)sent * C), moelm_act_bytes(be, (size_t)(R - sent) * C));
}
