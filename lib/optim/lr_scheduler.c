/* moelm — fairseq's learning-rate schedulers (fairseq/optim/lr_scheduler, 0.12):
 * inverse_sqrt, cosine, polynomial_decay, fixed. The struct mirrors the few attributes the
 * Python objects carry (self.lr, warmup_factor, best, the optimizer's lr); the formulas
 * follow the Python line for line, in double, so the values agree to the last bit or two. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "moelm/errors.h"
#include "moelm/lr_scheduler.h"
#include "optim/json_state.h"
#include "optim/number_list.h"

typedef enum {
  SCHED_INVERSE_SQRT,
  SCHED_COSINE,
  SCHED_POLYNOMIAL_DECAY,
  SCHED_FIXED,
} SchedKind;

static const char *const sched_names[] = {"inverse_sqrt", "cosine", "polynomial_decay", "fixed"};

struct MoelmLrScheduler {
  SchedKind kind;
  MoelmLrSchedulerConfig cfg; /* resolved: warmup_updates >= 0, warmup_init_lr >= 0 where used */
  /* derived constants */
  double lr_step;         /* inverse_sqrt, cosine: warmup increment per update */
  double decay_factor;    /* inverse_sqrt: lr * sqrt(warmup_updates) */
  double max_lr;          /* cosine */
  double period;          /* cosine: updates in the first period */
  double total_num_update;/* polynomial_decay */
  /* state (MoelmLrSchedulerState) */
  double lr;              /* the optimizer's lr: what every step returns */
  double base_lr;         /* fairseq's self.lr for fixed / polynomial_decay */
  double warmup_factor;
  double best;
  gboolean has_best;
};

void moelm_lr_scheduler_config_init(MoelmLrSchedulerConfig *cfg)
{
  memset(cfg, 0, sizeof *cfg);
  cfg->name = "fixed";
  cfg->lr[0] = 0.25;
  cfg->n_lr = 1;
  cfg->max_update = 0;
  cfg->warmup_updates = -1;
  cfg->warmup_init_lr = -1.0;
  cfg->min_lr = 0.0;
  cfg->lr_period_updates = -1.0;
  cfg->t_mult = 1.0;
  cfg->lr_shrink = 0.1;
  cfg->force_anneal = -1;
  cfg->end_learning_rate = 0.0;
  cfg->power = 1.0;
  cfg->total_num_update = 0.0;
}

gboolean moelm_parse_lr_list(const char *text, double *lrs, int max_lrs, int *n_lrs, GError **error)
{
  GError *local = NULL;
  int n = 0;
  if (!moelm_parse_number_list(text, lrs, max_lrs, &n, &local)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "--lr '%s': %s; expected a learning rate or a comma-separated list like '0.25,0.1'", text,
                local->message);
    g_error_free(local);
    return FALSE;
  }
  for (int i = 0; i < n; i++) {
    if (lrs[i] < 0.0) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--lr '%s': %g is negative", text, lrs[i]);
      return FALSE;
    }
  }
  *n_lrs = n;
  return TRUE;
}

static gboolean fail(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static gboolean fail(GError **error, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error_literal(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, msg);
  g_free(msg);
  return FALSE;
}

static gboolean check_config(const MoelmLrSchedulerConfig *c, GError **error)
{
  if (c->n_lr < 1 || c->n_lr > MOELM_LR_MAX)
    return fail(error, "--lr: between 1 and %d values are needed, not %d", MOELM_LR_MAX, c->n_lr);
  for (int i = 0; i < c->n_lr; i++)
    if (!(c->lr[i] >= 0.0 && isfinite(c->lr[i])))
      return fail(error, "--lr: %g is not a finite learning rate >= 0", c->lr[i]);
  const double reals[] = {c->warmup_init_lr, c->min_lr,    c->lr_period_updates, c->t_mult,
                          c->lr_shrink,      c->end_learning_rate, c->power,    c->total_num_update};
  for (size_t i = 0; i < G_N_ELEMENTS(reals); i++)
    if (!isfinite(reals[i]))
      return fail(error, "--lr-scheduler %s: a scheduler option is not a finite number", c->name);
  if (c->max_update < 0)
    return fail(error, "--max-update %" G_GINT64_FORMAT ": must be >= 0", c->max_update);
  return TRUE;
}

static gboolean setup_inverse_sqrt(MoelmLrScheduler *s, GError **error)
{
  MoelmLrSchedulerConfig *c = &s->cfg;
  if (c->n_lr > 1)
    return fail(error, "Cannot use a fixed learning rate schedule with inverse_sqrt (--lr has %d values); "
                       "consider --lr-scheduler fixed instead", c->n_lr);
  if (c->warmup_updates < 0)
    c->warmup_updates = 4000;
  /* fairseq divides by warmup_updates here, so a run without warmup fails there too. */
  if (c->warmup_updates == 0)
    return fail(error, "--lr-scheduler inverse_sqrt needs --warmup-updates > 0");
  double end_lr = c->lr[0];
  if (c->warmup_init_lr < 0)
    c->warmup_init_lr = 0.0; /* warmup_updates > 0 here */
  s->lr_step = (end_lr - c->warmup_init_lr) / (double)c->warmup_updates;
  s->decay_factor = end_lr * pow((double)c->warmup_updates, 0.5);
  s->lr = c->warmup_init_lr;
  return TRUE;
}

static gboolean setup_cosine(MoelmLrScheduler *s, GError **error)
{
  MoelmLrSchedulerConfig *c = &s->cfg;
  if (c->n_lr > 1)
    return fail(error, "Cannot use a fixed learning rate schedule with cosine (--lr has %d values); "
                       "consider --lr-scheduler fixed instead", c->n_lr);
  if (c->warmup_updates < 0)
    c->warmup_updates = 0;
  s->max_lr = c->lr[0];
  if (!(s->max_lr > c->min_lr))
    return fail(error, "--lr-scheduler cosine: --lr (%g, the maximum) must be more than --min-lr (%g)", s->max_lr,
                c->min_lr);
  if (c->warmup_init_lr < 0)
    c->warmup_init_lr = c->min_lr;
  s->period = c->lr_period_updates;
  if (s->period <= 0) {
    if (c->max_update <= 0)
      return fail(error, "--lr-scheduler cosine: either --max-update or --lr-period-updates must be set");
    s->period = (double)(c->max_update - c->warmup_updates);
    if (s->period <= 0)
      return fail(error,
                  "--lr-scheduler cosine: --max-update (%" G_GINT64_FORMAT ") must exceed --warmup-updates (%" G_GINT64_FORMAT
                  "), or give --lr-period-updates",
                  c->max_update, c->warmup_updates);
  }
  if (!(c->t_mult > 0))
    return fail(error, "--lr-scheduler cosine: --t-mult %g must be > 0", c->t_mult);
  s->lr_step = c->warmup_updates > 0 ? (s->max_lr - c->warmup_init_lr) / (double)c->warmup_updates : 1.0;
  s->lr = c->warmup_init_lr;
  return TRUE;
}

static gboolean setup_polynomial_decay(MoelmLrScheduler *s, GError **error)
{
  MoelmLrSchedulerConfig *c = &s->cfg;
  if (c->warmup_updates < 0)
    c->warmup_updates = 0;
  s->total_num_update = c->total_num_update > 0 ? c->total_num_update : (double)c->max_update;
  if (!(s->total_num_update > 0))
    return fail(error, "--lr-scheduler polynomial_decay needs --total-num-update or --max-update > 0");
  s->base_lr = c->lr[0];
  s->warmup_factor = c->warmup_updates > 0 ? 1.0 / (double)c->warmup_updates : 1.0;
  s->lr = s->warmup_factor * s->base_lr;
  return TRUE;
}

static gboolean setup_fixed(MoelmLrScheduler *s, GError **error)
{
  MoelmLrSchedulerConfig *c = &s->cfg;
  if (c->warmup_updates < 0)
    c->warmup_updates = 0;
  s->base_lr = c->lr[0];
  s->warmup_factor = c->warmup_updates > 0 ? 1.0 / (double)c->warmup_updates : 1.0;
  /* fixed sets no lr at construction: the optimizer keeps --lr[0] until the first step. */
  s->lr = c->lr[0];
  return TRUE;
}

MoelmLrScheduler *moelm_lr_scheduler_new(const MoelmLrSchedulerConfig *cfg, GError **error)
{
  const char *name = cfg->name != NULL ? cfg->name : "fixed";
  int kind = -1;
  for (int i = 0; i < (int)G_N_ELEMENTS(sched_names); i++)
    if (strcmp(name, sched_names[i]) == 0)
      kind = i;
  if (kind < 0) {
    fail(error, "--lr-scheduler %s: not supported (choose inverse_sqrt, cosine, polynomial_decay or fixed)", name);
    return NULL;
  }
  if (!check_config(cfg, error))
    return NULL;
  MoelmLrScheduler *s = g_new0(MoelmLrScheduler, 1);
  s->kind = (SchedKind)kind;
  s->cfg = *cfg;
  s->cfg.name = sched_names[kind];
  s->base_lr = cfg->lr[0];
  s->warmup_factor = 1.0;
  gboolean ok = FALSE;
  switch (s->kind) {
  case SCHED_INVERSE_SQRT: ok = setup_inverse_sqrt(s, error); break;
  case SCHED_COSINE: ok = setup_cosine(s, error); break;
  case SCHED_POLYNOMIAL_DECAY: ok = setup_polynomial_decay(s, error); break;
  case SCHED_FIXED: ok = setup_fixed(s, error); break;
  }
  if (!ok) {
    g_free(s);
    return NULL;
  }
  return s;
}

void moelm_lr_scheduler_free(MoelmLrScheduler *sched)
{
  g_free(sched);
}

const char *moelm_lr_scheduler_name(const MoelmLrScheduler *sched)
{
  return sched_names[sched->kind];
}

double moelm_lr_get(const MoelmLrScheduler *sched)
{
  return sched->lr;
}

static double cosine_lr(const MoelmLrScheduler *s, int64_t num_updates)
{
  const MoelmLrSchedulerConfig *c = &s->cfg;
  if (num_updates < c->warmup_updates)
    return c->warmup_init_lr + (double)num_updates * s->lr_step;
  double curr = (double)(num_updates - c->warmup_updates);
  double i, t_i, t_curr;
  if (c->t_mult != 1) {
    /* Period k lasts period * t_mult^k updates: find the period holding curr. */
    i = floor(log(1 - curr / s->period * (1 - c->t_mult)) / log(c->t_mult));
    t_i = pow(c->t_mult, i) * s->period;
    t_curr = curr - (1 - pow(c->t_mult, i)) / (1 - c->t_mult) * s->period;
  } else {
    i = floor(curr / s->period);
    t_i = s->period;
    t_curr = curr - s->period * i;
  }
  double shrink = pow(c->lr_shrink, i);
  double min_lr = c->min_lr * shrink;
  double max_lr = s->max_lr * shrink;
  return min_lr + 0.5 * (max_lr - min_lr) * (1 + cos(G_PI * t_curr / t_i));
}

static double polynomial_lr(MoelmLrScheduler *s, int64_t num_updates)
{
  const MoelmLrSchedulerConfig *c = &s->cfg;
  if (c->warmup_updates > 0 && num_updates <= c->warmup_updates) {
    s->warmup_factor = (double)num_updates / (double)c->warmup_updates;
    return s->warmup_factor * s->base_lr;
  }
  if ((double)num_updates >= s->total_num_update)
    return c->end_learning_rate;
  double warmup = (double)c->warmup_updates;
  double lr_range = s->base_lr - c->end_learning_rate;
  double pct_remaining = 1 - ((double)num_updates - warmup) / (s->total_num_update - warmup);
  return lr_range * pow(pct_remaining, c->power) + c->end_learning_rate;
}

double moelm_lr_step_update(MoelmLrScheduler *sched, int64_t num_updates)
{
  MoelmLrScheduler *s = sched;
  const MoelmLrSchedulerConfig *c = &s->cfg;
  switch (s->kind) {
  case SCHED_INVERSE_SQRT:
    if (num_updates < c->warmup_updates)
      s->lr = c->warmup_init_lr + (double)num_updates * s->lr_step;
    else
      s->lr = s->decay_factor * pow((double)num_updates, -0.5);
    break;
  case SCHED_COSINE:
    s->lr = cosine_lr(s, num_updates);
    break;
  case SCHED_POLYNOMIAL_DECAY:
    s->lr = polynomial_lr(s, num_updates);
    break;
  case SCHED_FIXED:
    if (c->warmup_updates > 0 && num_updates < c->warmup_updates) {
      s->warmup_factor = (double)(num_updates + 1) / (double)c->warmup_updates;
      s->lr = s->warmup_factor * s->base_lr;
    } else {
      s->lr = s->base_lr;
    }
    break;
  }
  return s->lr;
}

double moelm_lr_step_begin_epoch(MoelmLrScheduler *sched, int epoch)
{
  MoelmLrScheduler *s = sched;
  const MoelmLrSchedulerConfig *c = &s->cfg;
  gboolean annealing = c->force_anneal >= 0 && epoch >= c->force_anneal;
  switch (s->kind) {
  case SCHED_INVERSE_SQRT:
  case SCHED_COSINE:
    return s->lr; /* they change nothing at epoch boundaries */
  case SCHED_POLYNOMIAL_DECAY:
    /* fairseq indexes the list by epoch here (not epoch - 1), and when annealing keeps the
     * optimizer's current lr as the new base. */
    if (!annealing)
      s->base_lr = c->lr[MIN(MAX(epoch, 0), c->n_lr - 1)];
    else
      s->base_lr = s->lr;
    break;
  case SCHED_FIXED:
    if (!annealing)
      s->base_lr = c->lr[MIN(MAX(epoch - 1, 0), c->n_lr - 1)];
    else
      s->base_lr = c->lr[c->n_lr - 1] * pow(c->lr_shrink, (double)(epoch + 1 - c->force_anneal));
    break;
  }
  s->lr = s->warmup_factor * s->base_lr;
  return s->lr;
}

double moelm_lr_step_epoch(MoelmLrScheduler *sched, int epoch, double val_loss)
{
  /* None of these schedulers changes the lr at the end of an epoch. */
  if (!isnan(val_loss)) {
    if (!sched->has_best || val_loss < sched->best)
      sched->best = val_loss;
    sched->has_best = TRUE;
  }
  return sched->lr;
}

gboolean moelm_lr_scheduler_best(const MoelmLrScheduler *sched, double *best)
{
  if (sched->has_best && best != NULL)
    *best = sched->best;
  return sched->has_best;
}

void moelm_lr_scheduler_get_state(const MoelmLrScheduler *sched, MoelmLrSchedulerState *state)
{
  state->lr = sched->lr;
  state->base_lr = sched->base_lr;
  state->warmup_factor = sched->warmup_factor;
  state->best = sched->best;
  state->has_best = sched->has_best;
}

void moelm_lr_scheduler_set_state(MoelmLrScheduler *sched, const MoelmLrSchedulerState *state)
{
  sched->lr = state->lr;
  sched->base_lr = state->base_lr;
  sched->warmup_factor = state->warmup_factor;
  sched->best = state->best;
  sched->has_best = state->has_best;
}

JsonNode *moelm_lr_scheduler_state_to_json(const MoelmLrScheduler *sched)
{
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "name", moelm_lr_scheduler_name(sched));
  json_object_set_double_member(o, "lr", sched->lr);
  json_object_set_double_member(o, "base_lr", sched->base_lr);
  json_object_set_double_member(o, "warmup_factor", sched->warmup_factor);
  if (sched->has_best)
    json_object_set_double_member(o, "best", sched->best);
  else
    json_object_set_null_member(o, "best");
  JsonNode *node = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(node, o);
  return node;
}

gboolean moelm_lr_scheduler_state_from_json(MoelmLrScheduler *sched, JsonNode *node, GError **error)
{
  const char *what = "lr scheduler state";
  JsonObject *o = moelm_optim_json_object(node, what, error);
  if (o == NULL)
    return FALSE;
  MoelmLrSchedulerState st;
  moelm_lr_scheduler_get_state(sched, &st);
  JsonNode *best = json_object_get_member(o, "best");
  if (best == NULL || JSON_NODE_HOLDS_NULL(best)) {
    st.has_best = FALSE;
  } else {
    if (!moelm_optim_json_double(o, "best", what, &st.best, error))
      return FALSE;
    st.has_best = TRUE;
  }
  const char *name = moelm_optim_json_string(o, "name");
  if (name != NULL && strcmp(name, moelm_lr_scheduler_name(sched)) == 0) {
    if (!moelm_optim_json_double(o, "lr", what, &st.lr, error) ||
        !moelm_optim_json_double(o, "base_lr", what, &st.base_lr, error) ||
        !moelm_optim_json_double(o, "warmup_factor", what, &st.warmup_factor, error))
      return FALSE;
  }
  moelm_lr_scheduler_set_state(sched, &st);
  return TRUE;
}
