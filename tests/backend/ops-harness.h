/* moelm — the cross-backend op harness (ggml's test-backend-ops is the model).
 *
 * An op case is DATA: which op (an OpsDef), its sizes and flags. Running a case on a backend
 * builds the case's inputs from a fixed seed on the host, uploads them through the backend's
 * memory ops, poisons every pure output with NaN (accumulating outputs start from known random
 * values instead), runs the op, downloads every output and compares it with the same case run
 * on the CPU reference backend: normalised mean squared error per output against a tolerance
 * per activation type, exact equality for integer outputs. A backend whose table lacks an op
 * the case needs (a NULL pointer) skips the case. The runners (ops-cases-*.c) only see the
 * OpsRun helpers below: they never dereference backend memory, so a device backend runs the
 * same cases. docs/backend.md ("The op harness") describes it for backend writers. */
#ifndef MOELM_OPS_HARNESS_H
#define MOELM_OPS_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <glib.h>

#include "moelm/backend.h"

/* Op families: one CUnit test and one column of the report each. */
typedef enum {
  OPS_MEM,     /* zero, copy, convert, fill, add, axpy, scale, sum_squares */
  OPS_GEMM,
  OPS_EMBED,
  OPS_LNORM,
  OPS_LINEAR,
  OPS_GROUPED, /* grouped linear (MoE experts) */
  OPS_ATTN,    /* attention forward, backward, decode */
  OPS_ACT,     /* activations */
  OPS_DROPOUT,
  OPS_ROWS,    /* gather / scatter */
  OPS_LOSS,    /* cross-entropy, target log-probs, log-softmax */
  OPS_ROUTE,   /* moe_gate_topk / dispatch / stats / backward, topk_dispatch */
  OPS_ADAM,
  OPS_N_FAMILIES
} OpsFamily;

const char *ops_family_name(OpsFamily f); /* short: "linear" */

/* Flags of a case (what each means for an op is in that op's runner). */
enum {
  OPS_BIAS = 1 << 0,       /* with a bias */
  OPS_MASK = 1 << 1,       /* with a key padding mask / padding tokens */
  OPS_INPLACE = 1 << 2,    /* out aliases the input */
  OPS_PARTIAL = 1 << 3,    /* some gradient outputs NULL (only the first one wanted) */
  OPS_NO_DINP = 1 << 4,    /* the input gradient NULL (parameter gradients only) */
  OPS_LEARNED = 1 << 5,    /* learned positions */
  OPS_TRANS_A = 1 << 6,
  OPS_TRANS_B = 1 << 7,
  OPS_BETA0 = 1 << 8,      /* gemm with beta == 0: c is a pure output */
  OPS_TO_ACT = 1 << 9,     /* convert fp32 to the activation type (else back) */
  OPS_NO_SAVE = 1 << 10,   /* attention forward without saved buffer (inference) */
  OPS_NO_WEIGHT = 1 << 11, /* scatter without weights */
  OPS_GRAD = 1 << 12,      /* cross-entropy with dloss (logits become their gradient) */
  OPS_NO_LOSS = 1 << 13,   /* cross-entropy without losses */
  OPS_NORM_BEFORE = 1 << 14, /* routing: normalize_before_dropping */
  OPS_BPR = 1 << 15,       /* routing: batch-prioritised */
  OPS_NOISE = 1 << 16,     /* routing: the policy's noise (training) */
  OPS_TIES = 1 << 17,      /* routing: quantised logits, many exact ties */
  OPS_SKEW = 1 << 18,      /* routing: one expert favoured, so capacity binds */
  OPS_ALL = 1 << 19,       /* routing: second expert policy "all" */
  OPS_RANDOM = 1 << 20,    /* routing: second expert policy "random" */
  OPS_N_FLAGS = 21
};

typedef struct OpsRun OpsRun;
typedef struct OpsCase OpsCase;

/* An op under test: how to run one case of it. */
typedef struct {
  const char *name;  /* "linear_backward" */
  OpsFamily family;
  const char *dims;  /* names of the case's d[] for its label: "N IC OC" */
  const char *scalar; /* name of the case's f for its label ("p", "alpha"), NULL: unused */
  size_t needs[6];   /* offsetof(struct moelm_backend_ops, op) of every op the runner calls;
                      * 0-terminated (offset 0 is the table's name, never an op) */
  double tol[3];     /* NMSE tolerance with fp32, bf16, fp16 activations */
  void (*run)(OpsRun *r, const OpsCase *c);
} OpsDef;

#define OPS_NEEDS(op) offsetof(struct moelm_backend_ops, op)

/* NMSE tolerances {fp32, bf16, fp16 activations}, measured and explained in docs/backend.md
 * ("The op harness"): element-wise ops, and ops that sum (GEMMs, reductions, softmax). Ops
 * whose data is fp32 on every backend (gemm, Adam, routing) use the fp32 one for all types. */
#define OPS_TOL_ELEMENTWISE {1e-12, 1e-4, 1e-5}
#define OPS_TOL_SUMS {1e-10, 1e-4, 1e-5}
#define OPS_TOL_F32_ELEMENTWISE {1e-12, 1e-12, 1e-12}
#define OPS_TOL_F32_SUMS {1e-10, 1e-10, 1e-10}

struct OpsCase {
  const OpsDef *def;
  int d[6];      /* sizes, named by def->dims */
  float f;       /* a scalar: dropout p, alpha, scale, aux coefficient (by op) */
  unsigned flags;
};

/* Case tables (ops-cases-*.c). */
typedef struct {
  const OpsCase *cases;
  size_t n;
} OpsTable;
extern const OpsTable ops_dense_table; /* memory, gemm, embedding, layer norm, linear, grouped,
                                        * activations, dropout, rows, Adam */
extern const OpsTable ops_attn_table;  /* attention, losses */
extern const OpsTable ops_route_table; /* token routing */

/* ---- what a runner uses --------------------------------------------------------------- */

struct OpsRun {
  MoelmBackend *be;
  MoelmDtype values;  /* activation inputs take values representable in this type (the
                       * backend under test's), on the reference too */
  uint64_t rng;       /* seeded by the case: the same draws on every backend */
  GPtrArray *bufs;    /* backend buffers to free */
  GArray *outs;       /* OpsOutput, in creation order */
  gboolean rounded;   /* activation inputs were made (rounded to `values`) */
  gboolean failed;    /* an allocation or staging failed (message in error) */
  GError *error;
};

/* FALSE once an allocation or upload failed: the runner then calls no op. */
#define OPS_OK(r) (!(r)->failed)

/* The case's random stream (splitmix64: inputs of big cases are drawn once per backend, and
 * Philox would be a third of the suite's time): a value in [0, n), one in [0, 1). */
uint32_t ops_below(OpsRun *r, uint32_t n);
double ops_unit(OpsRun *r);

/* Random host values in [lo, hi) (g_free them). */
float *ops_host_uniform(OpsRun *r, size_t n, float lo, float hi);
/* Round host values to what the activation type holds (in place). */
void ops_round_values(OpsRun *r, float *x, size_t n);

/* Inputs, uploaded through the backend's memory ops. */
MoelmAct *ops_act(OpsRun *r, size_t n, float lo, float hi);        /* random activations */
MoelmAct *ops_act_from(OpsRun *r, const float *host, size_t n);    /* given values (rounded) */
float *ops_f32(OpsRun *r, size_t n, float lo, float hi);
float *ops_f32_from(OpsRun *r, const float *host, size_t n);
int32_t *ops_i32_from(OpsRun *r, const int32_t *host, size_t n);
uint8_t *ops_u8_from(OpsRun *r, const uint8_t *host, size_t n);
/* Backend memory that is no output (saved buffers, routing state of an earlier op),
 * filled with 0xff bytes: NaN in every float type. */
void *ops_scratch(OpsRun *r, size_t bytes);

/* Outputs, downloaded and compared after the run. pure: poisoned (NaN, or a sentinel for
 * integers) and must be written entirely; acc: starts from random values in [lo, hi), the
 * same on every backend (+= targets; compared as ops_nmse says); inout: holds the input values
 * and is overwritten (in-place ops). Integer outputs must equal the reference exactly. */
MoelmAct *ops_act_out(OpsRun *r, const char *name, size_t n);
MoelmAct *ops_act_acc(OpsRun *r, const char *name, size_t n, float lo, float hi);
MoelmAct *ops_act_inout(OpsRun *r, const char *name, size_t n, float lo, float hi);
/* A unary op's input and output: one inout buffer when in_place, else a random input and a
 * pure output; returns the output, *inp the input. */
MoelmAct *ops_act_unary(OpsRun *r, const char *name, size_t n, float lo, float hi, gboolean in_place,
                        MoelmAct **inp);
float *ops_f32_out(OpsRun *r, const char *name, size_t n);
float *ops_f32_acc(OpsRun *r, const char *name, size_t n, float lo, float hi);
float *ops_f32_inout(OpsRun *r, const char *name, const float *host, size_t n);
int32_t *ops_i32_out(OpsRun *r, const char *name, size_t n);
uint8_t *ops_u8_out(OpsRun *r, const char *name, size_t n);
double *ops_f64_out(OpsRun *r, const char *name, size_t n, gboolean exact);
/* A value the op returned to the host (sum_squares). */
void ops_host_result(OpsRun *r, const char *name, const double *v, size_t n);

/* ---- running and checking ------------------------------------------------------------- */

typedef enum { OPS_PASS, OPS_FAIL, OPS_SKIP } OpsVerdict;

/* Reference outputs of one case, per value type, computed on first use. */
typedef struct OpsRefCache OpsRefCache;
OpsRefCache *ops_ref_cache_new(MoelmBackend *ref, const OpsCase *c);
void ops_ref_cache_free(OpsRefCache *cache);

/* Run case c on `be` and compare with the reference. worst_nmse: the largest NMSE of the
 * case's float outputs (0 when none); message (g_free) says why it failed or was skipped. */
OpsVerdict ops_check_case(const OpsCase *c, MoelmBackend *be, OpsRefCache *ref, double *worst_nmse, char **message);

/* MOELM_OPS_VERBOSE=1: print every output's NMSE while checking; 2: and the first values
 * (backend|reference) of every output. */
int ops_verbose(void);

/* "linear_backward N=67 IC=45 OC=83 bias" (g_free). */
char *ops_case_label(const OpsCase *c);

/* The normalised mean squared error of a against the reference b: sum((a-b)^2) / sum(b^2).
 * For an accumulating output (base = the values before the op) the denominator is
 * sum((b-base)^2 + base^2): the energy of what the op added plus what was there, so that an
 * op that overwrites instead of adding fails, and rounding the sum in a half type does not
 * when the increment is small. The plain sum of squares when the denominator is 0. */
double ops_nmse(const double *a, const double *b, const double *base, size_t n);

/* ---- backends under test (test-backend-ops.c) ----------------------------------------- */

/* A backend the harness runs: open returns NULL (with a reason in error) when it is not built
 * or not present on this machine, and the whole backend is reported as skipped. */
typedef struct {
  const char *name;
  MoelmBackend *(*open)(GError **error);
} OpsBackendEntry;

#endif
