/* moelm — the op harness's engine: building a case's buffers through the backend's memory
 * ops, poisoning outputs, downloading them, and comparing a backend's run with the
 * reference's (ops-harness.h). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops-harness.h"

/* Integer poison: values no op writes (routing writes small counts, ids, -1 and 0/1). */
#define POISON_I32 ((int32_t)0x7fabcdef)
#define POISON_U8 ((uint8_t)0xa5)

typedef enum { SRC_ACT, SRC_F32, SRC_I32, SRC_U8, SRC_F64, SRC_HOST } OutSource;
typedef enum { MODE_PURE, MODE_ACC, MODE_INOUT } OutMode;

typedef struct {
  char *name;
  OutSource src;
  OutMode mode;
  gboolean exact;
  const void *dev; /* backend memory (NULL for SRC_HOST) */
  size_t n;
  double *pre;     /* MODE_ACC: the values before the op */
  double *host;    /* the values after it */
} OpsOutput;

const char *ops_family_name(OpsFamily f)
{
  static const char *const names[OPS_N_FAMILIES] = {"mem",  "gemm",    "embed", "lnorm", "linear", "grouped", "attn",
                                                    "act",  "dropout", "rows",  "loss",  "route",  "adam"};
  return f < OPS_N_FAMILIES ? names[f] : "?";
}

/* ---- buffers ------------------------------------------------------------------------------ */

static void *dev_alloc(OpsRun *r, size_t bytes)
{
  if (r->failed)
    return NULL;
  void *p = r->be->ops->alloc(r->be, bytes > 0 ? bytes : 1, &r->error);
  if (p == NULL) {
    r->failed = TRUE;
    return NULL;
  }
  g_ptr_array_add(r->bufs, p);
  return p;
}

static void upload(OpsRun *r, void *dst, const void *host, size_t bytes)
{
  if (dst != NULL && bytes > 0)
    r->be->ops->to_device(r->be, dst, host, bytes);
}

static void upload_act(OpsRun *r, MoelmAct *dst, const float *host, size_t n)
{
  if (dst != NULL && !moelm_backend_act_from_host(r->be, dst, host, n, &r->error))
    r->failed = TRUE;
}

static uint64_t next_u64(OpsRun *r)
{
  uint64_t z = (r->rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint32_t ops_below(OpsRun *r, uint32_t n)
{
  return (uint32_t)(((next_u64(r) >> 32) * (uint64_t)n) >> 32); /* bias < 2^-32: fine for tests */
}

double ops_unit(OpsRun *r)
{
  return (double)(next_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

float *ops_host_uniform(OpsRun *r, size_t n, float lo, float hi)
{
  float *x = g_new(float, n + 1);
  for (size_t i = 0; i < n; i++)
    x[i] = lo + (hi - lo) * (float)((next_u64(r) >> 40) * (1.0 / 16777216.0));
  return x;
}

void ops_round_values(OpsRun *r, float *x, size_t n)
{
  r->rounded = TRUE; /* the run depends on the activation type even when nothing changes */
  if (r->values == MOELM_DT_F32)
    return;
  uint16_t *h = g_new(uint16_t, n + 1);
  moelm_convert_floats(h, r->values, x, MOELM_DT_F32, n);
  moelm_convert_floats(x, MOELM_DT_F32, h, r->values, n);
  g_free(h);
}

MoelmAct *ops_act_from(OpsRun *r, const float *host, size_t n)
{
  float *x = g_memdup2(host, (n + 1) * sizeof(float));
  ops_round_values(r, x, n);
  MoelmAct *p = dev_alloc(r, moelm_act_bytes(r->be, n));
  upload_act(r, p, x, n);
  g_free(x);
  return p;
}

MoelmAct *ops_act(OpsRun *r, size_t n, float lo, float hi)
{
  float *x = ops_host_uniform(r, n, lo, hi);
  MoelmAct *p = ops_act_from(r, x, n);
  g_free(x);
  return p;
}

float *ops_f32_from(OpsRun *r, const float *host, size_t n)
{
  float *p = dev_alloc(r, n * sizeof(float));
  upload(r, p, host, n * sizeof(float));
  return p;
}

float *ops_f32(OpsRun *r, size_t n, float lo, float hi)
{
  float *x = ops_host_uniform(r, n, lo, hi);
  float *p = ops_f32_from(r, x, n);
  g_free(x);
  return p;
}

int32_t *ops_i32_from(OpsRun *r, const int32_t *host, size_t n)
{
  int32_t *p = dev_alloc(r, n * sizeof(int32_t));
  upload(r, p, host, n * sizeof(int32_t));
  return p;
}

uint8_t *ops_u8_from(OpsRun *r, const uint8_t *host, size_t n)
{
  uint8_t *p = dev_alloc(r, n);
  upload(r, p, host, n);
  return p;
}

void *ops_scratch(OpsRun *r, size_t bytes)
{
  void *p = dev_alloc(r, bytes);
  if (p != NULL && bytes > 0) {
    void *h = g_malloc(bytes);
    memset(h, 0xff, bytes);
    upload(r, p, h, bytes);
    g_free(h);
  }
  return p;
}

/* ---- outputs ------------------------------------------------------------------------------ */

static OpsOutput *add_output(OpsRun *r, const char *name, OutSource src, OutMode mode, const void *dev, size_t n)
{
  OpsOutput o = {.name = g_strdup(name), .src = src, .mode = mode, .exact = src == SRC_I32 || src == SRC_U8,
                 .dev = dev, .n = n};
  g_array_append_val(r->outs, o);
  return &g_array_index(r->outs, OpsOutput, r->outs->len - 1);
}

static float *nans(size_t n)
{
  float *x = g_new(float, n + 1);
  for (size_t i = 0; i < n; i++)
    x[i] = NAN;
  return x;
}

static double *to_doubles(const float *x, size_t n)
{
  double *d = g_new(double, n + 1);
  for (size_t i = 0; i < n; i++)
    d[i] = x[i];
  return d;
}

MoelmAct *ops_act_out(OpsRun *r, const char *name, size_t n)
{
  MoelmAct *p = dev_alloc(r, moelm_act_bytes(r->be, n));
  float *x = nans(n);
  upload_act(r, p, x, n);
  g_free(x);
  add_output(r, name, SRC_ACT, MODE_PURE, p, n);
  return p;
}

static MoelmAct *act_prefilled(OpsRun *r, const char *name, size_t n, float lo, float hi, OutMode mode)
{
  float *x = ops_host_uniform(r, n, lo, hi);
  ops_round_values(r, x, n);
  MoelmAct *p = dev_alloc(r, moelm_act_bytes(r->be, n));
  upload_act(r, p, x, n);
  OpsOutput *o = add_output(r, name, SRC_ACT, mode, p, n);
  if (mode == MODE_ACC)
    o->pre = to_doubles(x, n);
  g_free(x);
  return p;
}

MoelmAct *ops_act_acc(OpsRun *r, const char *name, size_t n, float lo, float hi)
{
  return act_prefilled(r, name, n, lo, hi, MODE_ACC);
}

MoelmAct *ops_act_inout(OpsRun *r, const char *name, size_t n, float lo, float hi)
{
  return act_prefilled(r, name, n, lo, hi, MODE_INOUT);
}

MoelmAct *ops_act_unary(OpsRun *r, const char *name, size_t n, float lo, float hi, gboolean in_place,
                        MoelmAct **inp)
{
  if (in_place)
    return *inp = ops_act_inout(r, name, n, lo, hi);
  *inp = ops_act(r, n, lo, hi);
  return ops_act_out(r, name, n);
}

float *ops_f32_out(OpsRun *r, const char *name, size_t n)
{
  float *x = nans(n);
  float *p = ops_f32_from(r, x, n);
  g_free(x);
  add_output(r, name, SRC_F32, MODE_PURE, p, n);
  return p;
}

float *ops_f32_acc(OpsRun *r, const char *name, size_t n, float lo, float hi)
{
  float *x = ops_host_uniform(r, n, lo, hi);
  float *p = ops_f32_from(r, x, n);
  add_output(r, name, SRC_F32, MODE_ACC, p, n)->pre = to_doubles(x, n);
  g_free(x);
  return p;
}

float *ops_f32_inout(OpsRun *r, const char *name, const float *host, size_t n)
{
  float *p = ops_f32_from(r, host, n);
  add_output(r, name, SRC_F32, MODE_INOUT, p, n);
  return p;
}

int32_t *ops_i32_out(OpsRun *r, const char *name, size_t n)
{
  int32_t *x = g_new(int32_t, n + 1);
  for (size_t i = 0; i < n; i++)
    x[i] = POISON_I32;
  int32_t *p = ops_i32_from(r, x, n);
  g_free(x);
  add_output(r, name, SRC_I32, MODE_PURE, p, n);
  return p;
}

uint8_t *ops_u8_out(OpsRun *r, const char *name, size_t n)
{
  uint8_t *x = g_malloc(n + 1);
  memset(x, POISON_U8, n + 1);
  uint8_t *p = ops_u8_from(r, x, n);
  g_free(x);
  add_output(r, name, SRC_U8, MODE_PURE, p, n);
  return p;
}

double *ops_f64_out(OpsRun *r, const char *name, size_t n, gboolean exact)
{
  double *x = g_new(double, n + 1);
  for (size_t i = 0; i < n; i++)
    x[i] = NAN;
  double *p = dev_alloc(r, n * sizeof(double));
  upload(r, p, x, n * sizeof(double));
  g_free(x);
  add_output(r, name, SRC_F64, MODE_PURE, p, n)->exact = exact;
  return p;
}

void ops_host_result(OpsRun *r, const char *name, const double *v, size_t n)
{
  add_output(r, name, SRC_HOST, MODE_PURE, NULL, n)->host = g_memdup2(v, MAX(n, 1) * sizeof(double));
}

/* Every output to host doubles, after the backend says its ops finished. */
static void download(OpsRun *r)
{
  if (r->failed)
    return;
  if (!r->be->ops->synchronize(r->be, &r->error)) {
    r->failed = TRUE;
    return;
  }
  for (guint k = 0; k < r->outs->len; k++) {
    OpsOutput *o = &g_array_index(r->outs, OpsOutput, k);
    if (o->src == SRC_HOST)
      continue;
    const size_t n = o->n;
    double *d = o->host = g_new(double, n + 1);
    if (o->src == SRC_ACT || o->src == SRC_F32) {
      float *x = g_new(float, n + 1);
      if (o->src == SRC_F32)
        r->be->ops->to_host(r->be, x, o->dev, n * sizeof(float));
      else if (!moelm_backend_act_to_host(r->be, x, o->dev, n, &r->error))
        r->failed = TRUE;
      for (size_t i = 0; i < n; i++)
        d[i] = x[i];
      g_free(x);
    } else if (o->src == SRC_I32) {
      int32_t *x = g_new(int32_t, n + 1);
      r->be->ops->to_host(r->be, x, o->dev, n * sizeof(int32_t));
      for (size_t i = 0; i < n; i++)
        d[i] = x[i] == POISON_I32 ? NAN : x[i];
      g_free(x);
    } else if (o->src == SRC_U8) {
      uint8_t *x = g_malloc(n + 1);
      r->be->ops->to_host(r->be, x, o->dev, n);
      for (size_t i = 0; i < n; i++)
        d[i] = x[i] == POISON_U8 ? NAN : x[i];
      g_free(x);
    } else {
      r->be->ops->to_host(r->be, d, o->dev, n * sizeof(double));
    }
  }
}

/* ---- one run -------------------------------------------------------------------------------- */

static uint64_t case_seed(const OpsCase *c)
{
  char *label = ops_case_label(c);
  uint64_t h = 1469598103934665603ull; /* FNV-1a: a case's inputs depend on the case alone */
  for (const char *s = label; *s; s++)
    h = (h ^ (uint8_t)*s) * 1099511628211ull;
  g_free(label);
  return h;
}

static OpsRun *run_case(MoelmBackend *be, MoelmDtype values, const OpsCase *c)
{
  OpsRun *r = g_new0(OpsRun, 1);
  r->be = be;
  r->values = values;
  r->rng = case_seed(c);
  r->bufs = g_ptr_array_new();
  r->outs = g_array_new(FALSE, TRUE, sizeof(OpsOutput));
  c->def->run(r, c);
  download(r);
  return r;
}

static void run_free(OpsRun *r)
{
  if (r == NULL)
    return;
  if (!r->failed)
    r->be->ops->synchronize(r->be, NULL);
  for (guint i = 0; i < r->bufs->len; i++)
    r->be->ops->free(r->be, g_ptr_array_index(r->bufs, i));
  g_ptr_array_free(r->bufs, TRUE);
  for (guint k = 0; k < r->outs->len; k++) {
    OpsOutput *o = &g_array_index(r->outs, OpsOutput, k);
    g_free(o->name), g_free(o->pre), g_free(o->host);
  }
  g_array_free(r->outs, TRUE);
  g_clear_error(&r->error);
  g_free(r);
}

/* ---- the reference ---------------------------------------------------------------------- */

struct OpsRefCache {
  MoelmBackend *ref;
  const OpsCase *c;
  GPtrArray *runs; /* OpsRun, one per value type asked for */
};

OpsRefCache *ops_ref_cache_new(MoelmBackend *ref, const OpsCase *c)
{
  OpsRefCache *cache = g_new0(OpsRefCache, 1);
  cache->ref = ref;
  cache->c = c;
  cache->runs = g_ptr_array_new_with_free_func((GDestroyNotify)run_free);
  return cache;
}

void ops_ref_cache_free(OpsRefCache *cache)
{
  if (cache == NULL)
    return;
  g_ptr_array_free(cache->runs, TRUE);
  g_free(cache);
}

/* The reference run for inputs of `values`; a run that rounded nothing serves every type. */
static OpsRun *reference_for(OpsRefCache *cache, MoelmDtype values)
{
  for (guint i = 0; i < cache->runs->len; i++) {
    OpsRun *r = g_ptr_array_index(cache->runs, i);
    if (r->values == values || !r->rounded)
      return r;
  }
  OpsRun *r = run_case(cache->ref, values, cache->c);
  g_ptr_array_add(cache->runs, r);
  return r;
}

/* ---- comparing -------------------------------------------------------------------------- */

double ops_nmse(const double *a, const double *b, const double *base, size_t n)
{
  double err = 0, ref = 0;
  for (size_t i = 0; i < n; i++) {
    const double d = a[i] - b[i];
    err += d * d;
    if (base == NULL)
      ref += b[i] * b[i];
    else /* what the op added, and what was there: rounding the sum is no error of the op */
      ref += (b[i] - base[i]) * (b[i] - base[i]) + base[i] * base[i];
  }
  return ref > 0 ? err / ref : err;
}

static size_t count_nan(const double *x, size_t n, size_t *first)
{
  size_t k = 0;
  for (size_t i = n; i-- > 0;)
    if (isnan(x[i])) {
      k++;
      *first = i;
    }
  return k;
}

static int tol_index(MoelmDtype dt)
{
  return dt == MOELM_DT_BF16 ? 1 : dt == MOELM_DT_F16 ? 2 : 0;
}

int ops_verbose(void)
{
  static int v = -1;
  if (v < 0)
    v = g_getenv("MOELM_OPS_VERBOSE") != NULL ? atoi(g_getenv("MOELM_OPS_VERBOSE")) : 0;
  return v;
}

/* MOELM_OPS_VERBOSE=2: the first values of both runs, to see what a mismatch looks like. */
static void show_values(const OpsOutput *got, const OpsOutput *want)
{
  fprintf(stderr, "\n    %s (%zu):", want->name, want->n);
  for (size_t i = 0; i < want->n && i < 8; i++)
    fprintf(stderr, " %.6g|%.6g", got->host[i], want->host[i]);
  fprintf(stderr, "%s", want->n > 8 ? " ..." : "");
}

/* Compare one output; appends to msg on a failure. */
static gboolean compare_output(const OpsOutput *got, const OpsOutput *want, double tol, double *worst, GString *msg)
{
  const size_t n = want->n;
  size_t first = 0, k;
  if (got->n != n || strcmp(got->name, want->name) != 0) {
    g_string_append_printf(msg, "; %s: the runs disagree on the outputs (a runner bug)", want->name);
    return FALSE;
  }
  if (ops_verbose() >= 2)
    show_values(got, want);
  if (want->mode == MODE_PURE && (k = count_nan(want->host, n, &first)) > 0) {
    g_string_append_printf(msg, "; %s: the REFERENCE left %zu of %zu elements unwritten or NaN (first at %zu)",
                           want->name, k, n, first);
    return FALSE;
  }
  if (want->mode == MODE_PURE && (k = count_nan(got->host, n, &first)) > 0) {
    g_string_append_printf(msg, "; %s: %zu of %zu elements unwritten or NaN (first at %zu)", want->name, k, n, first);
    return FALSE;
  }
  if (want->exact) {
    k = 0;
    for (size_t i = n; i-- > 0;)
      if (!(got->host[i] == want->host[i])) {
        k++;
        first = i;
      }
    if (k > 0)
      g_string_append_printf(msg, "; %s: %zu of %zu differ (first at %zu: %.17g, reference %.17g)", want->name, k, n,
                             first, got->host[first], want->host[first]);
    return k == 0;
  }
  const double e = ops_nmse(got->host, want->host, want->mode == MODE_ACC ? want->pre : NULL, n);
  if (ops_verbose())
    fprintf(stderr, " %s=%.2e", want->name, e);
  if (!(e <= tol)) {
    g_string_append_printf(msg, "; %s: NMSE %.3g > %.3g", want->name, e, tol);
    return FALSE;
  }
  if (e > *worst)
    *worst = e;
  return TRUE;
}

static gboolean has_op(const MoelmBackend *be, size_t offset)
{
  void (*fn)(void);
  memcpy(&fn, (const char *)be->ops + offset, sizeof fn);
  return fn != NULL;
}

static const char *op_name_at(size_t offset)
{
  /* the names a runner can need, for the skip message */
#define OP_NAME(op) {OPS_NEEDS(op), #op}
  static const struct {
    size_t off;
    const char *name;
  } names[] = {OP_NAME(copy), OP_NAME(zero), OP_NAME(convert), OP_NAME(fill), OP_NAME(add), OP_NAME(axpy),
               OP_NAME(scale), OP_NAME(sum_squares), OP_NAME(gemm), OP_NAME(embedding_forward),
               OP_NAME(embedding_backward), OP_NAME(layernorm_forward), OP_NAME(layernorm_backward),
               OP_NAME(linear_forward), OP_NAME(linear_backward), OP_NAME(grouped_linear_forward),
               OP_NAME(grouped_linear_backward), OP_NAME(attention_saved_bytes), OP_NAME(attention_forward),
               OP_NAME(attention_backward), OP_NAME(attention_decode), OP_NAME(activation_forward),
               OP_NAME(activation_backward), OP_NAME(dropout_forward), OP_NAME(dropout_backward),
               OP_NAME(gather_rows), OP_NAME(scatter_add_rows), OP_NAME(scatter_add_rows_backward),
               OP_NAME(cross_entropy), OP_NAME(target_log_probs), OP_NAME(log_softmax_forward),
               OP_NAME(log_softmax_backward), OP_NAME(moe_gate_topk), OP_NAME(moe_gate_dispatch),
               OP_NAME(moe_gate_stats), OP_NAME(moe_gate_backward), OP_NAME(adam_step)};
#undef OP_NAME
  for (size_t i = 0; i < G_N_ELEMENTS(names); i++)
    if (names[i].off == offset)
      return names[i].name;
  return "an op";
}

OpsVerdict ops_check_case(const OpsCase *c, MoelmBackend *be, OpsRefCache *cache, double *worst_nmse, char **message)
{
  *worst_nmse = 0;
  *message = NULL;
  for (int i = 0; i < (int)G_N_ELEMENTS(c->def->needs) && c->def->needs[i] != 0; i++)
    if (!has_op(be, c->def->needs[i])) {
      *message = g_strdup_printf("%s is not in this backend's table", op_name_at(c->def->needs[i]));
      return OPS_SKIP;
    }
  OpsRun *want = reference_for(cache, be->act_dtype);
  if (want->failed) {
    *message = g_strdup_printf("the reference run failed: %s", want->error ? want->error->message : "?");
    return OPS_FAIL;
  }
  OpsRun *got = run_case(be, be->act_dtype, c);
  GString *msg = g_string_new(NULL);
  gboolean ok = TRUE;
  if (got->failed) {
    g_string_append_printf(msg, "; the run failed: %s", got->error ? got->error->message : "?");
    ok = FALSE;
  } else if (got->outs->len != want->outs->len || want->outs->len == 0) {
    g_string_append(msg, "; the runs disagree on the outputs (a runner bug)");
    ok = FALSE;
  } else {
    const double tol = c->def->tol[tol_index(be->act_dtype)];
    for (guint k = 0; k < want->outs->len; k++)
      ok &= compare_output(&g_array_index(got->outs, OpsOutput, k), &g_array_index(want->outs, OpsOutput, k), tol,
                           worst_nmse, msg);
  }
  run_free(got);
  if (!ok)
    *message = g_strdup(msg->str + 2);
  g_string_free(msg, TRUE);
  return ok ? OPS_PASS : OPS_FAIL;
}

char *ops_case_label(const OpsCase *c)
{
  static const char *const flag_names[OPS_N_FLAGS] = {
      "bias",    "mask",     "in-place",    "partial-grads", "no-dinp",  "learned", "trans-a",
      "trans-b", "beta=0",   "to-act",      "no-saved",      "no-weight", "grad",   "no-losses",
      "norm-before", "batch-prioritized", "noise", "ties",   "skew",     "second=all", "second=random"};
  GString *s = g_string_new(c->def->name);
  char **dims = g_strsplit(c->def->dims, " ", -1);
  for (int i = 0; dims[i] != NULL && i < (int)G_N_ELEMENTS(c->d); i++)
    g_string_append_printf(s, " %s=%d", dims[i], c->d[i]);
  g_strfreev(dims);
  if (c->def->scalar != NULL)
    g_string_append_printf(s, " %s=%g", c->def->scalar, c->f);
  for (int b = 0; b < OPS_N_FLAGS; b++)
    if (c->flags & (1u << b))
      g_string_append_printf(s, " %s", flag_names[b]);
  return g_string_free(s, FALSE);
}
