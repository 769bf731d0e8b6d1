/* moelm — the training loop. One update = update_freq sub-batches whose gradients add up,
 * divided by the summed sample size, clipped, then one Adam step and a schedule step. */
#include "config.h"

#include <math.h>
#include <signal.h>
#include <string.h>

#include <glib/gstdio.h>

#include "moelm/checkpoint.h"
#include "moelm/dist.h"
#include "moelm/errors.h"
#include "moelm/json.h"
#include "moelm/log.h"
#include "moelm/progress.h"
#include "moelm/sysmem.h"
#include "moelm/timer.h"
#include "mixture.h"
#include "train_best.h"
#include "train_checkpoints.h"
#include "train_meters.h"
#include "trainer.h"
#include "trainer_run.h"

void moelm_train_config_init(MoelmTrainConfig *c)
{
  memset(c, 0, sizeof *c);
  c->train_subset = g_strdup("train");
  c->valid_subset = g_strdup("valid");
  c->tokens_per_sample = 1024;
  c->break_mode = MOELM_BREAK_NONE;
  c->required_multiple = 8;
  c->update_freq = 1;
  c->seed = 1;
  c->stop_min_lr = -1;
  moelm_adam_config_init(&c->adam);
  moelm_lr_scheduler_config_init(&c->lr);
  c->validate_interval = 1;
  c->patience = -1;
  c->best_checkpoint_metric = g_strdup("loss");
  c->save_dir = g_strdup("checkpoints");
  c->save_interval = 1;
  c->keep_last_epochs = -1;
  c->keep_interval_updates = -1;
  c->keep_best_checkpoints = -1;
  c->restore_file = g_strdup("checkpoint_last.pt");
  c->log_interval = 100;
  moelm_backend_spec_init(&c->backend);
}

void moelm_train_config_clear(MoelmTrainConfig *c)
{
  g_free(c->data_dir);
  g_free(c->train_subset);
  g_free(c->valid_subset);
  g_free(c->save_dir);
  g_free(c->best_checkpoint_metric);
  g_free(c->restore_file);
  g_free(c->finetune_from_model);
  g_free(c->tensorboard_logdir);
  moelm_model_config_clear(&c->model);
  memset(c, 0, sizeof *c);
}


static int interrupted(const Run *r) { return r->stop; }

/* Read the caller's stop flag; over several ranks, agree on it (a rank that stopped alone
 * would leave the others waiting in the next update's all-reduce). Every rank polls at the
 * same points of the loop, so the collective lines up. */
static gboolean poll_stop(Run *r, GError **error)
{
  const MoelmTrainConfig *cfg = r->cfg;
  int sig = cfg->stop_signal ? (int)*cfg->stop_signal : 0;
  if (moelm_comm_size(cfg->comm) > 1) {
    double any[2] = {sig == SIGINT, sig == SIGTERM};
    if (!moelm_comm_allreduce_f64(cfg->comm, any, 2, error))
      return FALSE;
    sig = any[1] > 0 ? SIGTERM : any[0] > 0 ? SIGINT : 0;
  }
  r->stop = sig;
  return TRUE;
}


/* ---- validation --------------------------------------------------------------------- */
/* Score every --valid-subset; the first one's loss (*loss_out) and --best-checkpoint-metric
 * value (*metric_out) are what the loop decides on, and the latter updates the best. */
static gboolean validate(Run *r, double *loss_out, double *metric_out, GError **error)
{
  const MoelmTrainConfig *cfg = r->cfg;
  double first = NAN, first_metric = NAN;
  for (guint v = 0; v < r->valid->len; v++) {
    MoelmLmSplit *split = g_ptr_array_index(r->valid, v);
    int64_t mt = cfg->max_tokens_valid > 0 ? cfg->max_tokens_valid : cfg->max_tokens;
    int bs = cfg->batch_size_valid > 0 ? cfg->batch_size_valid : cfg->batch_size;
    GPtrArray *batches = moelm_lm_batches(split, mt, bs, cfg->required_multiple, FALSE, cfg->seed,
                                          r->cfg->model.max_positions, TRUE, error);
    if (batches == NULL)
      return FALSE;
    /* --max-valid-steps N: the first N batches of each rank's share, i.e. the first N * world
     * batches (fairseq's loop runs N + 1, see docs/train.md) */
    const int64_t keep = cfg->max_valid_steps * moelm_comm_size(cfg->comm);
    if (cfg->max_valid_steps > 0 && keep < (int64_t)batches->len)
      g_ptr_array_remove_range(batches, (guint)keep, batches->len - (guint)keep);
    double loss = 0, ntok = 0, nsent = 0, t0 = moelm_time_now();
    const double nbatches = batches->len;
    /* sharded: rank r scores every r-th batch; the sums are reduced */
    const int world = moelm_comm_size(cfg->comm);
    MoelmProgress bar;
    char *what = g_strdup_printf("valid on '%s' subset", split->name);
    moelm_progress_start(&bar, "moelm train", what, (double)((batches->len + (guint)world - 1) / (guint)world),
                         "batches");
    moelm_progress_set_enabled(&bar, bar.enabled && cfg->progress_bar);
    g_free(what);
    gboolean ok = moelm_objective_score_shard(r->obj, r->model, split, batches, moelm_comm_rank(cfg->comm), world,
                                              &bar, &loss, &ntok, &nsent, error);
    moelm_progress_finish(&bar);
    g_ptr_array_unref(batches);
    double sums[3] = {loss, ntok, nsent};
    if (!ok || !moelm_comm_allreduce_f64(cfg->comm, sums, 3, error))
      return FALSE;
    loss = sums[0];
    ntok = sums[1];
    nsent = sums[2];
    const double vloss = ntok > 0 ? moelm_trainer_base2(loss / ntok) : NAN;
    const double secs = moelm_time_now() - t0;
    const MoelmValidStats vs = {.loss = vloss,
                                .ppl = pow(2.0, vloss),
                                .wps = secs > 0 ? ntok / secs : 0,
                                .wpb = nbatches > 0 ? ntok / nbatches : 0,
                                .bsz = nbatches > 0 ? nsent / nbatches : 0,
                                .num_updates = (double)r->st.num_updates};
    if (v == 0) {
      first = vloss;
      first_metric = moelm_best_metric_value(&vs, cfg->best_checkpoint_metric);
      if (isfinite(first_metric) &&
          (!r->st.has_best || moelm_best_better(first_metric, r->st.best, cfg->maximize_best_metric))) {
        r->st.best = first_metric;
        r->st.has_best = TRUE;
      }
    }
    char *vprefix = g_strdup_printf("%s_", split->name);
    MoelmLogStyle style = {.kv_sep = " ",
                           .field_sep = cfg->log_json ? ", " : " | ",
                           .json_prefix = cfg->log_json ? vprefix : NULL,
                           .tb = moelm_trainer_tb_writer(r, split->name),
                           .tb_step = r->st.num_updates};
    GString *line = g_string_new(NULL);
    moelm_log_field(line, &style, "loss", vs.loss, 3);
    moelm_log_field(line, &style, "ppl", vs.ppl, 2);
    moelm_log_field(line, &style, "wps", vs.wps, 1);
    moelm_log_field(line, &style, "wpb", vs.wpb, 1);
    moelm_log_field(line, &style, "bsz", vs.bsz, 1);
    moelm_log_field(line, &style, "num_updates", vs.num_updates, 0);
    if (r->st.has_best) { /* fairseq's best_{metric}: the best so far, this validation included */
      char *key = g_strdup_printf("best_%s", cfg->best_checkpoint_metric);
      moelm_log_field(line, &style, key, r->st.best, moelm_best_metric_digits(cfg->best_checkpoint_metric));
      g_free(key);
    }
    if (r->obj->valid_log_fields && !r->obj->valid_log_fields(r->obj, split, cfg->comm, line, &style, error)) {
      g_string_free(line, TRUE);
      g_free(vprefix);
      return FALSE;
    }
    if (cfg->log_json)
      moelm_info("valid", "{%s, \"%sepoch\": %d}", line->str, vprefix, r->st.epoch);
    else
      moelm_info("valid", "epoch %03d | valid on '%s' subset | %s", r->st.epoch, split->name, line->str);
    g_string_free(line, TRUE);
    moelm_trainer_tb_flush(r, split->name);
    g_free(vprefix);
  }
  *loss_out = first;
  *metric_out = first_metric;
  return TRUE;
}

/* ---- one update ----------------------------------------------------------------------- */
/* A device op that failed during this update surfaces here, before anything is saved. */
static gboolean check_backend(Run *r, GError **error)
{
  char *what = g_strdup_printf("update %" G_GINT64_FORMAT, r->st.num_updates + 1);
  gboolean ok = moelm_backend_check(r->be, what, error);
  g_free(what);
  return ok;
}

/* The model reports each layer's finished gradient during the last sub-batch's backward: the
 * bucketed all-reduce starts on it while the backward goes on. */
static void grad_ready(void *data, size_t offset, size_t count)
{
  moelm_grad_sync_ready(data, offset, count);
}

/* One update: this rank's share of the update's update_freq * world sub-batches (rank r takes
 * the r-th of every `world`, fairseq's data-parallel split), their gradients summed over the
 * ranks. One rank with --update-freq F*N does exactly the same arithmetic as N ranks with F:
 * same sub-batches, same dropout streams, the same sums. */
static gboolean train_update(Run *r, GPtrArray *order, int64_t update_in_epoch, MoelmTrainMeters *m, GError **error)
{
  const MoelmTrainConfig *cfg = r->cfg;
  const size_t n = moelm_model_num_params(r->model);
  float *grads = moelm_model_grads(r->model);
  const int W = moelm_comm_size(cfg->comm), rank = moelm_comm_rank(cfg->comm);
  const int64_t per_update = (int64_t)cfg->update_freq * W;
  const int64_t first = update_in_epoch * per_update;
  moelm_stopwatch_start(&r->train_wall);
  const double t0 = moelm_time_now();
  moelm_model_zero_grad(r->model);
  if (r->sync)
    moelm_grad_sync_begin(r->sync);
  MoelmTrainMeters step;
  moelm_meters_reset(&step);
  const gboolean lockstep = moelm_model_expert_world(r->model) > 1; /* every forward is a collective */
  gboolean hooked = FALSE; /* the backward reported its finished layers to the all-reduce */
  for (int k = 0; k < cfg->update_freq; k++) {
    const int64_t slot = (int64_t)rank + (int64_t)W * k, g = first + slot;
    const gboolean mine = g < (int64_t)order->len;
    /* the epoch's last update may give this rank fewer sub-batches, or none; with expert
     * parallelism it still takes part in every exchange rank 0 makes, with an empty batch */
    if (!mine && !(lockstep && first + (int64_t)W * k < (int64_t)order->len))
      break;
    const gboolean last = k + 1 == cfg->update_freq || first + slot + W >= (int64_t)order->len;
    if (r->sync && last) {
      moelm_model_set_grad_ready(r->model, grad_ready, r->sync);
      hooked = TRUE;
    }
    MoelmLmBatch b;
    if (mine)
      moelm_lm_batch_load(&b, r->train, g_ptr_array_index(order, (guint)g));
    else
      moelm_lm_batch_load_empty(&b, r->train);
    MoelmStepIds ids = {cfg->seed, (uint32_t)(r->st.num_updates * per_update + slot)};
    double loss = 0, sample = 0;
    gboolean ok = r->obj->train_batch(r->obj, r->model, &b, &ids, &loss, &sample, error);
    moelm_model_set_grad_ready(r->model, NULL, NULL);
    step.loss_sum += loss;
    step.sample_size += sample;
    step.ntokens += (double)b.ntokens;
    step.nsentences += mine ? b.batch.B : 0;
    moelm_lm_batch_clear(&b);
    if (!ok) {
      moelm_error_prefix(error, "update %" G_GINT64_FORMAT, r->st.num_updates + 1);
      return FALSE;
    }
  }
  if (r->sync && !hooked) /* no batch here: start the reductions in the others' order */
    moelm_model_replay_grad_ready(r->model, grad_ready, r->sync);
  if (r->sync) { /* the gradient and the meters summed over the ranks */
    double sums[4] = {step.loss_sum, step.sample_size, step.ntokens, step.nsentences};
    if (!moelm_grad_sync_finish(r->sync, error) || !moelm_comm_allreduce_f64(cfg->comm, sums, 4, error)) {
      moelm_error_prefix(error, "update %" G_GINT64_FORMAT, r->st.num_updates + 1);
      return FALSE;
    }
    step.loss_sum = sums[0];
    step.sample_size = sums[1];
    step.ntokens = sums[2];
    step.nsentences = sums[3];
    r->comm_seconds += moelm_grad_sync_wait_seconds(r->sync);
  }
  if (!check_backend(r, error)) /* a failed device op, not a diverged run */
    return FALSE;
  const size_t shared = moelm_model_shared_params(r->model);
  if (shared < n && cfg->expert_grad_sqrt) /* fairseq's sqrt_world_size: experts' share scaled up */
    moelm_multiply_grads(r->be, grads + shared, n - shared, sqrt((double)W));
  if (step.sample_size > 0)
    moelm_multiply_grads(r->be, grads, n, 1.0 / step.sample_size);
  double gnorm;
  if (shared < n) { /* expert parallel: the norm over everyone's experts */
    double ss[2] = {moelm_grad_sumsq(r->be, grads, shared), moelm_grad_sumsq(r->be, grads + shared, n - shared)};
    if (!moelm_comm_allreduce_f64(cfg->comm, ss + 1, 1, error))
      return FALSE;
    gnorm = sqrt(ss[0] + ss[1]);
    const double coef = moelm_clip_coef(gnorm, cfg->clip_norm);
    if (coef < 1.0)
      moelm_multiply_grads(r->be, grads, n, coef);
  } else {
    gnorm = moelm_clip_grad_norm(r->be, grads, n, cfg->clip_norm);
  }
  if (!isfinite(gnorm)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FAILED,
                "gradient norm is %g at update %" G_GINT64_FORMAT ": training diverged (lower --lr or set --clip-norm)",
                gnorm, r->st.num_updates + 1);
    return FALSE;
  }
  if (!moelm_adam_step(&r->adam, moelm_model_params(r->model), grads, n, moelm_lr_get(r->sched), error) ||
      !check_backend(r, error))
    return FALSE;
  r->st.num_updates++;
  moelm_lr_step_update(r->sched, r->st.num_updates);
  step.gnorm_sum = gnorm;
  step.clipped = cfg->clip_norm > 0 && gnorm > cfg->clip_norm;
  step.updates = 1;
  step.seconds = moelm_time_now() - t0;
  moelm_stopwatch_stop(&r->train_wall);
  moelm_meters_add(m, &step);
  return TRUE;
}

/* ---- setup ---------------------------------------------------------------------------- */
static gboolean open_data(Run *r, GError **error)
{
  const MoelmTrainConfig *cfg = r->cfg;
  const guint V = (guint)cfg->model.vocab_size;
  r->train = moelm_lm_split_open(cfg->data_dir, cfg->train_subset, cfg->tokens_per_sample, cfg->break_mode, V, error);
  if (r->train == NULL)
    return FALSE;
  r->valid = g_ptr_array_new_with_free_func((GDestroyNotify)moelm_lm_split_free);
  if (!cfg->disable_validation) {
    gchar **names = g_strsplit(cfg->valid_subset, ",", -1);
    for (gchar **n = names; *n; n++) {
      MoelmLmSplit *s = moelm_lm_split_open(cfg->data_dir, *n, cfg->tokens_per_sample, cfg->break_mode, V, error);
      if (s == NULL) {
        g_strfreev(names);
        return FALSE;
      }
      g_ptr_array_add(r->valid, s);
    }
    g_strfreev(names);
  }
  r->train_batches = moelm_lm_batches(r->train, cfg->max_tokens, cfg->batch_size, cfg->required_multiple, TRUE,
                                      cfg->seed, cfg->model.max_positions, cfg->skip_invalid, error);
  if (r->train_batches == NULL)
    return FALSE;
  if (r->train_batches->len == 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: no training batches (empty split?)",
                r->train->prefix);
    return FALSE;
  }
  moelm_info("moelm.train", "loaded %zu blocks from %s (%u batches)", moelm_lm_split_n_blocks(r->train),
             r->train->prefix, r->train_batches->len);
  return TRUE;
}

/* Every rank must train the same thing: rank 0's description of the run against everyone's
 * (a mismatch ends every rank with an error, instead of a hang or silent divergence). */
static gboolean check_same_config(Run *r, GError **error)
{
  const MoelmTrainConfig *cfg = r->cfg;
  if (moelm_comm_size(cfg->comm) == 1)
    return TRUE;
  JsonNode *model = moelm_model_config_to_json(&cfg->model);
  char *text = moelm_json_to_string(model);
  json_node_unref(model);
  char *desc = g_strdup_printf("%s|%s|%s|%" G_GINT64_FORMAT "|%" G_GINT64_FORMAT "|%d|%d|%" G_GUINT64_FORMAT "|%s|%s",
                               text, cfg->data_dir, cfg->train_subset, cfg->tokens_per_sample, cfg->max_tokens,
                               cfg->batch_size, cfg->update_freq, cfg->seed, r->obj->name, cfg->lr.name);
  char *mine = g_compute_checksum_for_string(G_CHECKSUM_SHA256, desc, -1);
  char theirs[65];
  g_strlcpy(theirs, mine, sizeof theirs);
  gboolean same = FALSE;
  gboolean ok = moelm_comm_broadcast(cfg->comm, theirs, sizeof theirs, error) &&
                moelm_comm_all_true(cfg->comm, strcmp(theirs, mine) == 0, &same, error);
  if (ok && !same)
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH,
                "rank %d: the ranks were started with different training configurations (model, data, batch or "
                "seed flags differ): every rank must get the same command line",
                moelm_comm_rank(cfg->comm));
  g_free(mine);
  g_free(desc);
  g_free(text);
  return ok && same;
}

/* Refuse up front a run whose model and largest batch cannot fit in the memory there is
 * (it would be killed by the kernel after allocating gigabytes). */
static gboolean check_memory(const Run *r, GError **error)
{
  const MoelmTrainConfig *cfg = r->cfg;
  double rows = 0, longest = 1; /* token rows of the largest batch; its longest block */
  for (guint i = 0; i < r->train_batches->len; i++) {
    const MoelmBatchIndices *b = g_ptr_array_index(r->train_batches, i);
    const double n = (double)moelm_lm_batch_rows(r->train, b);
    rows = MAX(rows, n);
    longest = MAX(longest, n / MAX(b->n, 1));
  }
  const double batch_rows = rows;
  rows *= MAX(cfg->rows_per_sequence, 1);
  if (cfg->estep_copies > 0) { /* the E-step's largest model call */
    const double budget_rows = floor((double)moelm_mixture_estep_logits_bytes /
                                     (longest * (double)cfg->model.vocab_size * sizeof(float)));
    rows = MAX(rows, MIN(batch_rows * cfg->estep_copies, MAX(budget_rows, 1) * longest));
  }
  if (rows > G_MAXINT) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "a batch of %.0f token rows is too large for one forward: lower --batch-size or --max-tokens", rows);
    return FALSE;
  }
  const int expert_ranks = cfg->expert_parallel ? moelm_comm_size(cfg->comm) : 1;
  const double need = moelm_model_config_train_bytes(&cfg->model, rows, expert_ranks);
  const char *source = NULL;
  const guint64 have = moelm_memory_available(&source);
  if (need <= (double)have)
    return TRUE;
  guint64 params = 0;
  char *n = moelm_format_bytes(need), *h = moelm_format_bytes((double)have);
  if (!moelm_model_config_num_params(&cfg->model, &params))
    params = G_MAXUINT64;
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM,
              "training a model of %" G_GUINT64_FORMAT " parameters on forwards of %.0f token rows needs at least %s, "
              "more than the %s available (%s): lower --batch-size/--max-tokens or the model's size",
              params, rows, n, h, source);
  g_free(n);
  g_free(h);
  return FALSE;
}

static gboolean setup(Run *r, GError **error)
{
  const MoelmTrainConfig *cfg = r->cfg;
  r->be = moelm_backend_open(&cfg->backend, error);
  if (r->be == NULL)
    return FALSE;
  /* the data before the model: the memory estimate needs the largest batch. It is of host
   * memory, so made for a CPU backend (a GPU's memory is its own business). */
  if (!check_same_config(r, error) || !open_data(r, error) ||
      (g_str_has_prefix(r->be->ops->name, "cpu") && !check_memory(r, error)))
    return FALSE;
  r->model = moelm_model_new_placed(&cfg->model, r->be, cfg->expert_parallel ? cfg->comm : NULL, error);
  if (r->model == NULL)
    return FALSE;
  moelm_model_set_checkpoint_activations(r->model, cfg->checkpoint_activations);
  moelm_model_init_params(r->model, cfg->seed);
  if (!moelm_adam_init(&r->adam, &cfg->adam, r->be, moelm_model_num_params(r->model), error))
    return FALSE;
  MoelmLrSchedulerConfig lr = cfg->lr;
  lr.max_update = cfg->max_update;
  r->sched = moelm_lr_scheduler_new(&lr, error);
  if (r->sched == NULL)
    return FALSE;
  moelm_lr_step_update(r->sched, 0);
  if (moelm_comm_size(cfg->comm) > 1) {
    const double mb = cfg->bucket_cap_mb > 0 ? cfg->bucket_cap_mb : 25.0;
    /* expert parallel: each rank's experts sit after the shared parameters and are not reduced */
    r->sync = moelm_grad_sync_new(cfg->comm, r->be, moelm_model_grads(r->model), moelm_model_shared_params(r->model),
                                  (size_t)(mb * 1024 * 1024), error);
    if (r->sync == NULL)
      return FALSE;
    moelm_info("moelm.train", "data parallel over %d ranks (%s): gradients all-reduced in %d buckets of %.4g MB",
               moelm_comm_size(cfg->comm), moelm_comm_name(cfg->comm), moelm_grad_sync_n_buckets(r->sync), mb);
    if (moelm_model_expert_world(r->model) > 1)
      moelm_info("moelm.train", "expert parallel: %d of %d experts per MoE layer on each rank, tokens exchanged "
                 "with all-to-all", moelm_model_local_experts(r->model), cfg->model.moe_experts);
  }
  return TRUE;
}

static void teardown(Run *r)
{
  moelm_progress_finish(&r->bar);
  g_free(r->moe_epoch);
  if (r->tb)
    g_hash_table_unref(r->tb);
  moelm_objective_detach(r->obj); /* it may hold backend memory of this run's model */
  if (r->train_batches)
    g_ptr_array_unref(r->train_batches);
  if (r->valid)
    g_ptr_array_unref(r->valid);
  moelm_lm_split_free(r->train);
  moelm_lr_scheduler_free(r->sched);
  moelm_adam_free(&r->adam);
  moelm_grad_sync_free(r->sync);
  moelm_model_free(r->model);
  moelm_backend_free(r->be);
}

/* ---- the loop --------------------------------------------------------------------------- */
/* fairseq's cumulative_training_time: the wall time since this run began (setup and
 * validation included), plus that of the runs it resumes. */
static double training_seconds(const Run *r)
{
  return r->earlier_seconds + (moelm_time_now() - r->start_time);
}

/* Whether a limit ends the run now. after_update: called right after an update, where
 * --stop-time-hours is checked (as fairseq, which checks it after each update: a resumed run
 * past the limit trains one update, validates, saves and stops). */
static gboolean should_stop_updates(Run *r, gboolean after_update)
{
  const MoelmTrainConfig *cfg = r->cfg;
  if (cfg->max_update > 0 && r->st.num_updates >= cfg->max_update)
    return TRUE;
  if (r->time_up)
    return TRUE;
  if (after_update && cfg->stop_time_hours > 0) {
    double seconds = training_seconds(r);
    /* every rank stops at the same update: rank 0's clock decides (every rank is here after
     * the same update, so the broadcast lines up) */
    if (moelm_comm_size(cfg->comm) > 1)
      moelm_comm_broadcast(cfg->comm, &seconds, sizeof seconds, NULL);
    if (seconds / 3600.0 > cfg->stop_time_hours) {
      moelm_info("moelm.train",
                 "stopping: cumulative training time %g hours > --stop-time-hours %g (%.3f s in all, resumed "
                 "runs included)",
                 seconds / 3600.0, cfg->stop_time_hours, seconds);
      r->time_up = TRUE;
      return TRUE;
    }
  }
  if (cfg->stop_min_lr >= 0 && moelm_lr_get(r->sched) <= cfg->stop_min_lr) {
    moelm_info("moelm.train", "stopping: learning rate %g reached --stop-min-lr %g", moelm_lr_get(r->sched),
               cfg->stop_min_lr);
    return TRUE;
  }
  return FALSE;
}

/* Validate (when due) and save (when due); sets *stop when patience ran out. */
static gboolean validate_and_save(Run *r, gboolean end_of_epoch, gboolean stopping, gboolean *stop, GError **error)
{
  const MoelmTrainConfig *cfg = r->cfg;
  const int64_t u = r->st.num_updates;
  const gboolean save_updates = cfg->save_interval_updates > 0 && u > 0 && u % cfg->save_interval_updates == 0;
  const gboolean save_epoch = end_of_epoch && r->st.epoch % cfg->save_interval == 0;
  const gboolean do_save = !cfg->no_save && (save_epoch || save_updates || stopping);
  const gboolean do_validate =
      !cfg->disable_validation && r->valid->len > 0 &&
      ((!end_of_epoch && save_updates) || (end_of_epoch && r->st.epoch % cfg->validate_interval == 0) || stopping ||
       (cfg->validate_interval_updates > 0 && u > 0 && u % cfg->validate_interval_updates == 0));
  double vloss = NAN, metric = NAN;
  gboolean improved = FALSE, best_file = FALSE;
  if (do_validate) {
    const gboolean had_best = r->st.has_best;
    const double prev_best = r->st.best;
    if (!validate(r, &vloss, &metric, error))
      return FALSE;
    r->st.last_valid_loss = vloss;
    /* as fairseq: --patience counts validations without a strictly better value;
     * checkpoint_best.pt is written on a tie too */
    const gboolean maximize = cfg->maximize_best_metric;
    improved = isfinite(metric) && (!had_best || moelm_best_better(metric, prev_best, maximize));
    best_file = isfinite(metric) && (!had_best || moelm_best_not_worse(metric, prev_best, maximize));
    if (improved)
      r->st.num_bad_validations = 0;
    else
      r->st.num_bad_validations++;
    if (cfg->patience > 0 && r->st.num_bad_validations >= cfg->patience) {
      moelm_info("moelm.train", "early stop since valid performance hasn't improved for last %d runs",
                 cfg->patience);
      *stop = TRUE;
    }
  }
  r->st.end_of_epoch = end_of_epoch;
  r->st.training_seconds = training_seconds(r);
  /* one writer, rank 0; with expert parallelism every rank writes its experts' file */
  if (do_save && (moelm_comm_rank(cfg->comm) == 0 || moelm_model_expert_world(r->model) > 1)) {
    MoelmCheckpointRequest req = {.epoch_file = end_of_epoch && save_epoch && !cfg->no_epoch_checkpoints,
                                  .updates_file = !end_of_epoch && save_updates,
                                  .best_file = best_file,
                                  .keep_best = do_validate,
                                  .keep_best_value = metric,
                                  .last_file = !cfg->no_last_checkpoints};
    MoelmTrainerCkptCtx ctx = {cfg, r->dict, r->model, &r->adam, r->sched, &r->st};
    if (!moelm_trainer_save_checkpoints(&ctx, &req, error))
      return FALSE;
    if (req.last_file)
      r->last_saved_update = r->st.num_updates;
  }
  return TRUE;
}

static const char *signal_name(int sig)
{
  return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
}

/* After an interruption: checkpoint_last.pt (checkpoint_E_U.pt with --no-last-checkpoints)
 * at the update just finished, unless it already holds it or nothing was trained. A resumed
 * run continues exactly as the uninterrupted one would have. */
static gboolean save_on_interrupt(Run *r, MoelmTrainResult *result, GError **error)
{
  const MoelmTrainConfig *cfg = r->cfg;
  const int sig = interrupted(r);
  result->interrupted = sig;
  const char *why = NULL;
  if (cfg->no_save)
    why = "--no-save: nothing is saved";
  else if (r->st.num_updates == r->first_update)
    why = "no update was trained: nothing to save";
  else if (r->st.num_updates == r->last_saved_update)
    why = "checkpoint_last.pt already holds this update";
  if (why) {
    moelm_warn("moelm.train", "received %s after update %" G_GINT64_FORMAT ": %s", signal_name(sig),
               r->st.num_updates, why);
    result->saved_on_interrupt = !cfg->no_save && r->st.num_updates == r->last_saved_update;
    return TRUE;
  }
  moelm_warn("moelm.train",
             "received %s: stopping after update %" G_GINT64_FORMAT ", saving %s (a second signal stops at once, "
             "without saving)",
             signal_name(sig), r->st.num_updates,
             cfg->no_last_checkpoints ? "an update checkpoint" : "checkpoint_last.pt");
  r->st.end_of_epoch = FALSE; /* the position is (epoch, iterations_in_epoch) as it stands */
  r->st.training_seconds = training_seconds(r);
  MoelmCheckpointRequest req = {.updates_file = cfg->no_last_checkpoints, .last_file = !cfg->no_last_checkpoints};
  MoelmTrainerCkptCtx ctx = {cfg, r->dict, r->model, &r->adam, r->sched, &r->st};
  if (!moelm_trainer_save_checkpoints(&ctx, &req, error))
    return FALSE;
  result->saved_on_interrupt = TRUE;
  return TRUE;
}

static gboolean run_epochs(Run *r, MoelmTrainResult *result, GError **error)
{
  const MoelmTrainConfig *cfg = r->cfg;
  gboolean stop = should_stop_updates(r, FALSE);
  if (!poll_stop(r, error))
    return FALSE;
  while (!stop && !interrupted(r) && (cfg->max_epoch <= 0 || r->st.epoch <= cfg->max_epoch)) {
    moelm_lr_step_begin_epoch(r->sched, r->st.epoch);
    moelm_lr_step_update(r->sched, r->st.num_updates);
    GPtrArray *order = g_ptr_array_new();
    for (guint i = 0; i < r->train_batches->len; i++)
      g_ptr_array_add(order, g_ptr_array_index(r->train_batches, i));
    moelm_shuffle_batches(order, cfg->seed + (uint64_t)r->st.epoch);
    const int64_t n_updates = moelm_trainer_updates_per_epoch(r);
    if (r->st.iterations_in_epoch == 0)
      moelm_info("moelm.train", "begin training epoch %d", r->st.epoch);
    else
      moelm_info("moelm.train", "resuming epoch %d at update %" G_GINT64_FORMAT " of %" G_GINT64_FORMAT, r->st.epoch,
                 r->st.iterations_in_epoch, n_updates);
    if (r->bar.prefix == NULL || strcmp(r->bar.what, "epoch") == 0) { /* per-epoch bars start again */
      moelm_progress_finish(&r->bar);
      moelm_trainer_progress_start(r);
    }
    MoelmTrainMeters interval, epoch_m;
    moelm_meters_reset(&interval);
    moelm_meters_reset(&epoch_m);
    gboolean ok = TRUE, limit = FALSE; /* limit: --max-update or --stop-min-lr ended the run */
    while (ok && !stop && !interrupted(r) && r->st.iterations_in_epoch < n_updates) {
      MoelmTrainMeters before = interval;
      ok = train_update(r, order, r->st.iterations_in_epoch, &interval, error);
      if (!ok)
        break;
      MoelmTrainMeters step = interval;
      step.loss_sum -= before.loss_sum;
      step.sample_size -= before.sample_size;
      r->st.iterations_in_epoch++;
      moelm_trainer_progress(r, r->st.iterations_in_epoch, step.sample_size > 0 ? moelm_trainer_base2(step.loss_sum / step.sample_size) : 0);
      if (cfg->log_interval > 0 && r->st.num_updates % cfg->log_interval == 0) {
        moelm_trainer_log_stats(r, "train_inner", &interval, r->st.iterations_in_epoch, TRUE);
        moelm_meters_add(&epoch_m, &interval);
        moelm_meters_reset(&interval);
      }
      const gboolean stopping = should_stop_updates(r, TRUE);
      const gboolean end = r->st.iterations_in_epoch >= n_updates;
      if (!end || stopping) {
        ok = validate_and_save(r, FALSE, stopping, &stop, error);
        stop |= stopping;
        limit = stopping;
      }
      ok = ok && poll_stop(r, error); /* after each update */
    }
    g_ptr_array_unref(order);
    if (!ok)
      return FALSE;
    moelm_meters_add(&epoch_m, &interval);
    if (r->st.iterations_in_epoch >= n_updates) {
      moelm_info("moelm.train", "end of epoch %d (average epoch stats below)", r->st.epoch);
      moelm_trainer_log_stats(r, "train", &epoch_m, n_updates, FALSE);
      result->last_train_loss = epoch_m.sample_size > 0 ? moelm_trainer_base2(epoch_m.loss_sum / epoch_m.sample_size) : NAN;
      gboolean stopping = should_stop_updates(r, FALSE) || (cfg->max_epoch > 0 && r->st.epoch >= cfg->max_epoch);
      if (!validate_and_save(r, TRUE, stopping, &stop, error))
        return FALSE;
      moelm_lr_step_epoch(r->sched, r->st.epoch, r->st.last_valid_loss);
      r->st.epoch++;
      r->st.iterations_in_epoch = 0;
      stop |= stopping;
      if (!poll_stop(r, error)) /* a signal during the epoch's end */
        return FALSE;
    } else if (limit && epoch_m.updates > 0) {
      /* fairseq prints the epoch's average when the run stops inside it, too (the epoch is
       * not over: a resumed run continues it) */
      moelm_info("moelm.train", "end of epoch %d (average epoch stats below)", r->st.epoch);
      moelm_trainer_log_stats(r, "train", &epoch_m, r->st.iterations_in_epoch, FALSE);
      result->last_train_loss = moelm_trainer_base2(epoch_m.loss_sum / epoch_m.sample_size);
    } else if (epoch_m.updates > 0) {
      result->last_train_loss = moelm_trainer_base2(epoch_m.loss_sum / epoch_m.sample_size);
    }
  }
  return TRUE;
}

gboolean moelm_train(const MoelmTrainConfig *cfg, const MoelmDictionary *dict, MoelmObjective *objective,
                     MoelmTrainResult *result, GError **error)
{
  Run r = {.cfg = cfg, .dict = dict, .obj = objective, .last_saved_update = -1};
  MoelmTrainResult local;
  if (result == NULL)
    result = &local;
  memset(result, 0, sizeof *result);
  result->best_valid = result->last_valid_loss = result->last_train_loss = NAN;
  moelm_stopwatch_reset(&r.train_wall);
  r.start_time = moelm_time_now();
  r.st.epoch = 1;
  r.st.last_valid_loss = NAN;
  gboolean ok = moelm_train_config_validate(cfg, error) && setup(&r, error);
  MoelmDirLock *lock = NULL;
  gboolean created = FALSE;
  /* rank 0 owns the directory for the whole group (the other ranks write their expert files
   * into it under the same lock) */
  if (ok && !cfg->no_save && moelm_comm_rank(cfg->comm) == 0)
    ok = (lock = moelm_trainer_open_save_dir(cfg->save_dir, &created, error)) != NULL;
  if (ok && cfg->tensorboard_logdir && moelm_comm_rank(cfg->comm) == 0)
    r.tb = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)moelm_tb_writer_close);
  if (ok) {
    MoelmTrainerCkptCtx ctx = {cfg, dict, r.model, &r.adam, r.sched, &r.st};
    ok = moelm_trainer_restore(&ctx, error);
  }
  if (ok) {
    moelm_info("moelm.train", "running on %s: %s", r.be->description, r.be->reason ? r.be->reason : "");
    moelm_info("moelm.train", "model %s, %zu parameters", cfg->model.arch, moelm_model_num_params(r.model));
    moelm_info("moelm.train", "task: %s, max tokens per batch = %" G_GINT64_FORMAT ", max sentences = %d, update freq = %d",
               objective->name, cfg->max_tokens, cfg->batch_size, cfg->update_freq);
    r.first_update = r.st.num_updates;
    r.earlier_seconds = r.st.training_seconds;
    ok = run_epochs(&r, result, error);
    if (ok && interrupted(&r))
      ok = save_on_interrupt(&r, result, error);
  }
  if (ok && !result->interrupted)
    moelm_info("moelm.train", "done training in %.1f seconds", moelm_time_now() - r.start_time);
  if (ok && r.sync)
    moelm_info("moelm.train",
               "data parallel: %.2f s of %.2f s training waiting for the gradient all-reduce; %d of %d buckets "
               "started during the backward in the last update",
               r.comm_seconds, moelm_stopwatch_elapsed(&r.train_wall), moelm_grad_sync_overlapped(r.sync),
               moelm_grad_sync_n_buckets(r.sync));
  moelm_progress_finish(&r.bar); /* leave a clean terminal line for whatever comes next */
  result->num_updates = r.st.num_updates;
  result->epoch = r.st.epoch;
  result->best_valid = r.st.has_best ? r.st.best : NAN;
  result->last_valid_loss = r.st.last_valid_loss;
  teardown(&r);
  moelm_trainer_close_save_dir(lock, cfg->save_dir, created, !ok);
  return ok;
}
