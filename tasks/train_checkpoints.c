/* moelm — writing, pruning and restoring the trainer's checkpoints. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <glib/gstdio.h>

#include "moelm/checkpoint.h"
#include "moelm/errors.h"
#include "moelm/fileio.h"
#include "moelm/json.h"
#include "moelm/log.h"
#include "train_best.h"
#include "train_checkpoints.h"
#include "trainer.h"

#define CFG(ctx) ((const MoelmTrainConfig *)(ctx)->cfg)

/* "best_{metric}" with the metric of --best-checkpoint-metric, under which the best is read
 * back; checkpoints from before the flag hold best_loss and no metric, which reads as loss. */
static JsonNode *train_state_json(const MoelmTrainState *st, const MoelmTrainConfig *cfg)
{
  char *best_key = g_strdup_printf("best_%s", cfg->best_checkpoint_metric);
  JsonObject *o = json_object_new();
  json_object_set_int_member(o, "epoch", st->epoch);
  json_object_set_int_member(o, "iterations_in_epoch", st->iterations_in_epoch);
  json_object_set_int_member(o, "num_updates", st->num_updates);
  json_object_set_boolean_member(o, "end_of_epoch", st->end_of_epoch);
  json_object_set_string_member(o, "best_checkpoint_metric", cfg->best_checkpoint_metric);
  json_object_set_boolean_member(o, "maximize_best_checkpoint_metric", cfg->maximize_best_metric);
  if (st->has_best)
    json_object_set_double_member(o, best_key, st->best);
  else
    json_object_set_null_member(o, best_key);
  g_free(best_key);
  json_object_set_int_member(o, "num_bad_validations", st->num_bad_validations);
  /* fairseq's name. A wall time differs from run to run: written only under --stop-time-hours,
   * so that other runs' checkpoints stay byte for byte reproducible (an interrupted and
   * resumed run writes the same files as an uninterrupted one) */
  if (cfg->stop_time_hours > 0)
    json_object_set_double_member(o, "previous_training_time", st->training_seconds);
  /* the epoch-end validation the scheduler steps on right after this save (null: none) */
  if (isfinite(st->last_valid_loss))
    json_object_set_double_member(o, "last_valid_loss", st->last_valid_loss);
  else
    json_object_set_null_member(o, "last_valid_loss");
  json_object_set_int_member(o, "seed", (gint64)cfg->seed);
  JsonNode *n = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(n, o);
  return n;
}

static JsonObject *build_meta(const MoelmTrainerCkptCtx *ctx)
{
  const MoelmTrainConfig *cfg = CFG(ctx);
  JsonObject *meta = json_object_new();
  if (cfg->task_meta)
    json_object_set_member(meta, "task", json_node_copy(cfg->task_meta));
  json_object_set_member(meta, "dictionary", moelm_dictionary_fingerprint(ctx->dict));
  json_object_set_member(meta, "optimizer", moelm_adam_state_to_json(ctx->adam));
  json_object_set_member(meta, "lr_scheduler", moelm_lr_scheduler_state_to_json(ctx->sched));
  json_object_set_member(meta, "train_state", train_state_json(ctx->st, cfg));
  return meta;
}

/* Copy a finished checkpoint to another name, atomically. */
static gboolean copy_checkpoint(const char *from, const char *to, GError **error)
{
  char *data = NULL;
  gsize len = 0;
  GError *local = NULL;
  if (!g_file_get_contents(from, &data, &len, &local)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: %s", from, local->message);
    g_error_free(local);
    return FALSE;
  }
  gboolean ok = moelm_write_file_atomic(to, data, len, error);
  g_free(data);
  return ok;
}

/* Remove checkpoints matching "checkpointN.pt" (epochs) or "checkpoint_E_U.pt" (updates)
 * beyond the newest `keep`. */
static void prune(const char *dir, gboolean updates, int keep)
{
  if (keep < 0)
    return;
  GDir *d = g_dir_open(dir, 0, NULL);
  if (d == NULL)
    return;
  GArray *found = g_array_new(FALSE, FALSE, sizeof(gint64));
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL) {
    gint64 key = -1, e = 0, u = 0;
    char tail[8];
    if (updates && sscanf(name, "checkpoint_%" G_GINT64_FORMAT "_%" G_GINT64_FORMAT "%7s", &e, &u, tail) == 3 &&
        strcmp(tail, ".pt") == 0)
      key = u;
    else if (!updates && sscanf(name, "checkpoint%" G_GINT64_FORMAT "%7s", &e, tail) == 2 && strcmp(tail, ".pt") == 0)
      key = e;
    if (key >= 0) {
      g_array_append_val(found, key);
      g_ptr_array_add(names, g_strdup(name));
    }
  }
  g_dir_close(d);
  /* drop all but the `keep` largest keys */
  for (guint i = 0; i < found->len; i++) {
    guint newer = 0;
    for (guint j = 0; j < found->len; j++)
      newer += g_array_index(found, gint64, j) > g_array_index(found, gint64, i);
    if ((int)newer >= keep) {
      char *path = g_build_filename(dir, g_ptr_array_index(names, i), NULL);
      g_unlink(path);
      g_free(path);
    }
  }
  g_array_free(found, TRUE);
  g_ptr_array_unref(names);
}

/* A checkpoint NAME.pt is one file or NAME-shared.pt + NAME-rank-R.pt: after saving one
 * form, the other (from an earlier run with another world size) must go, or a resume would
 * read it. */
static void remove_other_form(const char *path, gboolean sharded)
{
  if (sharded) {
    g_unlink(path);
    return;
  }
  char *shared = moelm_checkpoint_part_path(path, MOELM_CKPT_SHARED, 0);
  g_unlink(shared);
  g_free(shared);
  for (int r = 0;; r++) {
    char *part = moelm_checkpoint_part_path(path, MOELM_CKPT_EXPERTS, r);
    const gboolean gone = g_unlink(part) != 0;
    g_free(part);
    if (gone)
      break;
  }
}

/* --keep-best-checkpoints: add checkpoint.best_{metric}_{value}{d}.pt to the targets when the
 * value is among the best kept. The digit is a function of (seed, epoch, updates), so a run
 * names its files the same way every time. Sharded, rank 0's choice is everyone's (its
 * pruning of the last save may still be under way when another rank looks). */
static gboolean add_kept_best(const MoelmTrainerCkptCtx *ctx, double value, GPtrArray *targets, GError **error)
{
  const MoelmTrainConfig *cfg = CFG(ctx);
  const guint64 seed = cfg->seed * 0x100000001B3ull ^ ((guint64)ctx->st->epoch << 40) ^ (guint64)ctx->st->num_updates;
  char *name = moelm_best_kept_name(cfg->save_dir, cfg->best_checkpoint_metric, cfg->maximize_best_metric,
                                    cfg->keep_best_checkpoints, value, seed);
  if (moelm_model_expert_world(ctx->model) > 1) {
    char buf[256] = {0};
    if (name && moelm_comm_rank(cfg->comm) == 0)
      g_strlcpy(buf, name, sizeof buf);
    g_free(name);
    if (!moelm_comm_broadcast(cfg->comm, buf, sizeof buf, error))
      return FALSE;
    name = buf[0] ? g_strdup(buf) : NULL;
  }
  if (name)
    g_ptr_array_add(targets, name);
  return TRUE;
}

/* Remove a checkpoint in both its forms (one file, or NAME-shared.pt + NAME-rank-R.pt). */
static void remove_checkpoint(const char *path)
{
  g_unlink(path);
  remove_other_form(path, FALSE);
}

/* Keep the --keep-best-checkpoints best of the metric's checkpoint.best_* files. */
static void prune_kept_best(const MoelmTrainConfig *cfg)
{
  if (cfg->keep_best_checkpoints <= 0)
    return;
  GPtrArray *kept = moelm_best_kept_list(cfg->save_dir, cfg->best_checkpoint_metric, cfg->maximize_best_metric);
  for (guint i = (guint)cfg->keep_best_checkpoints; i < kept->len; i++) {
    const MoelmKeptBest *k = g_ptr_array_index(kept, i);
    char *path = g_build_filename(cfg->save_dir, k->name, NULL);
    remove_checkpoint(path);
    moelm_info("moelm.checkpoint", "removed %s: --keep-best-checkpoints %d keeps better ones", path,
               cfg->keep_best_checkpoints);
    g_free(path);
  }
  g_ptr_array_unref(kept);
}

#define SAVE_DIR_LOCK ".moelm-train.lock"

MoelmDirLock *moelm_trainer_open_save_dir(const char *save_dir, gboolean *created, GError **error)
{
  *created = !g_file_test(save_dir, G_FILE_TEST_EXISTS);
  if (g_mkdir_with_parents(save_dir, 0755) != 0) {
    moelm_set_error_errno(error, errno, save_dir, "cannot create --save-dir");
    *created = FALSE;
    return NULL;
  }
  MoelmDirLock *lock = moelm_dir_lock(save_dir, SAVE_DIR_LOCK, "training run", error);
  if (lock != NULL && !moelm_dir_check_writable(save_dir, error)) {
    moelm_dir_unlock(lock);
    lock = NULL;
  }
  if (lock == NULL) {
    moelm_error_prefix(error, "--save-dir");
    if (*created)
      g_rmdir(save_dir);
    *created = FALSE;
    return NULL;
  }
  GPtrArray *stale = moelm_remove_stale_temps(save_dir, ".pt");
  for (guint i = 0; i < stale->len; i++)
    moelm_info("moelm.checkpoint", "removed %s/%s, left by a run that was killed while saving", save_dir,
               (const char *)g_ptr_array_index(stale, i));
  g_ptr_array_unref(stale);
  return lock;
}

void moelm_trainer_close_save_dir(MoelmDirLock *lock, const char *save_dir, gboolean created, gboolean failed)
{
  moelm_dir_unlock(lock);
  if (failed && created)
    g_rmdir(save_dir); /* only when nothing was written into it */
}

gboolean moelm_trainer_save_checkpoints(const MoelmTrainerCkptCtx *ctx, const MoelmCheckpointRequest *req,
                                        GError **error)
{
  const MoelmTrainConfig *cfg = CFG(ctx);
  if (g_mkdir_with_parents(cfg->save_dir, 0755) != 0) {
    moelm_set_error_errno(error, errno, cfg->save_dir, "cannot create --save-dir");
    return FALSE;
  }
  GPtrArray *targets = g_ptr_array_new_with_free_func(g_free);
  if (req->epoch_file)
    g_ptr_array_add(targets, g_strdup_printf("checkpoint%d.pt", ctx->st->epoch));
  if (req->updates_file)
    g_ptr_array_add(targets, g_strdup_printf("checkpoint_%d_%" G_GINT64_FORMAT ".pt", ctx->st->epoch,
                                             ctx->st->num_updates));
  if (req->best_file)
    g_ptr_array_add(targets, g_strdup("checkpoint_best.pt"));
  if (req->keep_best && cfg->keep_best_checkpoints > 0 && isfinite(req->keep_best_value) &&
      !add_kept_best(ctx, req->keep_best_value, targets, error)) {
    g_ptr_array_unref(targets);
    return FALSE;
  }
  if (req->last_file)
    g_ptr_array_add(targets, g_strdup("checkpoint_last.pt"));
  gboolean ok = TRUE;
  /* expert parallel: every rank writes its experts' file, rank 0 also the shared one */
  const gboolean sharded = moelm_model_expert_world(ctx->model) > 1;
  const int rank = moelm_comm_rank(cfg->comm);
  if (targets->len > 0) {
    JsonObject *meta = build_meta(ctx);
    char *first = g_build_filename(cfg->save_dir, g_ptr_array_index(targets, 0), NULL);
    const gboolean moments = !cfg->no_save_optimizer_state;
    for (int part = sharded ? MOELM_CKPT_SHARED : MOELM_CKPT_ALL; ok && part <= (sharded ? MOELM_CKPT_EXPERTS : 0);
         part++) {
      if (part == MOELM_CKPT_SHARED && rank != 0)
        continue;
      char *file = moelm_checkpoint_part_path(first, (MoelmCheckpointPart)part, rank);
      ok = moelm_checkpoint_save_part(file, ctx->model, moments ? ctx->adam->exp_avg : NULL,
                                      moments ? ctx->adam->exp_avg_sq : NULL, meta, (MoelmCheckpointPart)part, error);
      for (guint i = 1; ok && i < targets->len; i++) {
        char *path = g_build_filename(cfg->save_dir, g_ptr_array_index(targets, i), NULL);
        char *to = moelm_checkpoint_part_path(path, (MoelmCheckpointPart)part, rank);
        ok = copy_checkpoint(file, to, error);
        g_free(to);
        g_free(path);
      }
      g_free(file);
    }
    if (sharded) { /* nobody goes on until every rank's files are written */
      gboolean all = FALSE;
      if (!moelm_comm_all_true(cfg->comm, ok, &all, ok ? error : NULL))
        ok = FALSE;
      else if (ok && !all) {
        g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: another rank could not write its part", first);
        ok = FALSE;
      }
    }
    for (guint i = 0; ok && rank == 0 && i < targets->len; i++) {
      char *path = g_build_filename(cfg->save_dir, g_ptr_array_index(targets, i), NULL);
      remove_other_form(path, sharded);
      g_free(path);
    }
    if (ok)
      moelm_info("moelm.checkpoint", "saved checkpoint %s (epoch %d @ %" G_GINT64_FORMAT " updates)", first,
                 ctx->st->epoch, ctx->st->num_updates);
    g_free(first);
    json_object_unref(meta);
  }
  g_ptr_array_unref(targets);
  if (ok) {
    prune(cfg->save_dir, FALSE, cfg->keep_last_epochs);
    prune(cfg->save_dir, TRUE, cfg->keep_interval_updates);
    if (rank == 0)
      prune_kept_best(cfg);
  }
  return ok;
}

/* The checkpoint's "train_state", every member type and range checked (a negative epoch
 * once wrote checkpoint-3.pt; a best loss that is not a number stopped checkpoint_best.pt). */
gboolean moelm_trainer_read_train_state(const MoelmCheckpoint *ckpt, MoelmTrainState *st, GError **error)
{
  JsonObject *o = moelm_json_object(moelm_checkpoint_meta(ckpt, "train_state"), "train_state", error);
  memset(st, 0, sizeof *st);
  st->epoch = 1;
  const char *metric = "loss";
  gboolean ok = o != NULL && moelm_json_get_string(o, "best_checkpoint_metric", &metric, error) &&
                moelm_json_get_bool(o, "maximize_best_checkpoint_metric", &st->best_maximize, error);
  if (ok && !moelm_best_metric_check(metric, NULL)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "'best_checkpoint_metric' %.40s is not one of %s", metric,
                MOELM_BEST_METRICS);
    ok = FALSE;
  }
  if (ok)
    g_strlcpy(st->best_metric, metric, sizeof st->best_metric);
  char *best_key = g_strdup_printf("best_%s", st->best_metric);
  JsonNode *best = ok ? json_object_get_member(o, best_key) : NULL;
  JsonNode *last = o ? json_object_get_member(o, "last_valid_loss") : NULL;
  st->has_best = best != NULL && !JSON_NODE_HOLDS_NULL(best);
  st->best = st->last_valid_loss = NAN;
  ok = ok && moelm_json_get_int(o, "epoch", 1, G_MAXINT, &st->epoch, error) &&
                moelm_json_get_int64(o, "iterations_in_epoch", 0, G_MAXINT64, &st->iterations_in_epoch, error) &&
                moelm_json_get_int64(o, "num_updates", 0, G_MAXINT64, &st->num_updates, error) &&
                moelm_json_get_bool(o, "end_of_epoch", &st->end_of_epoch, error) &&
                moelm_json_get_int(o, "num_bad_validations", 0, G_MAXINT, &st->num_bad_validations, error) &&
                moelm_json_get_double(o, "previous_training_time", 0, G_MAXDOUBLE, &st->training_seconds, error) &&
                (!st->has_best || moelm_json_get_double(o, best_key, -G_MAXDOUBLE, G_MAXDOUBLE, &st->best, error)) &&
                (last == NULL || JSON_NODE_HOLDS_NULL(last) ||
                 moelm_json_get_double(o, "last_valid_loss", -G_MAXDOUBLE, G_MAXDOUBLE, &st->last_valid_loss, error));
  g_free(best_key);
  if (ok && st->end_of_epoch && st->epoch == G_MAXINT) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "'epoch' %d is the last one there is", st->epoch);
    ok = FALSE;
  }
  if (!ok && o)
    moelm_error_prefix(error, "%s: train_state", ckpt->path);
  else if (!ok)
    moelm_error_prefix(error, "%s", ckpt->path);
  return ok;
}

/* Where the loop resumes: the saved position, the next epoch's start after an epoch's end. */
static void restore_position(const MoelmTrainState *saved, MoelmTrainState *st)
{
  st->epoch = saved->epoch;
  st->iterations_in_epoch = saved->iterations_in_epoch;
  st->end_of_epoch = saved->end_of_epoch;
  st->num_bad_validations = saved->num_bad_validations;
  st->has_best = saved->has_best;
  st->best = saved->best;
  st->last_valid_loss = saved->last_valid_loss;
  st->training_seconds = saved->training_seconds;
  if (st->end_of_epoch) { /* the next epoch starts from its beginning */
    st->epoch++;
    st->iterations_in_epoch = 0;
  }
}

/* The layout of the MoE layers, in the words of the options that make it. */
static char *moe_layout(int freq, gboolean by_sequence)
{
  if (freq <= 0)
    return g_strdup("no MoE layers");
  if (by_sequence)
    return g_strdup_printf("one FFN per expert (--mixture-expert-ffn %d)", freq);
  return g_strdup_printf("token-level MoE layers (--moe-freq %d)", freq);
}

/* A checkpoint whose MoE layers differ from the run's would fail on its first missing tensor;
 * say which options differ instead (--domain-discovery turns on --mixture-expert-ffn 1, so
 * resuming without it is the likely case). */
static gboolean check_moe_layout(const MoelmCheckpoint *ckpt, const char *path, const MoelmModelConfig *run,
                                 GError **error)
{
  const MoelmModelConfig *had = &ckpt->model;
  const gboolean by_sequence = had->moe_route_token0 > 0, run_by_sequence = run->moe_route_token0 > 0;
  if (had->moe_freq == run->moe_freq && (had->moe_freq <= 0 || by_sequence == run_by_sequence))
    return TRUE;
  char *a = moe_layout(had->moe_freq, by_sequence), *b = moe_layout(run->moe_freq, run_by_sequence);
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
              "%s: the checkpoint's model has %s but this run's has %s; give the options it was trained with "
              "(--domain-discovery includes --mixture-expert-ffn 1)",
              path, a, b);
  g_free(a);
  g_free(b);
  return FALSE;
}

gboolean moelm_trainer_restore(const MoelmTrainerCkptCtx *ctx, GError **error)
{
  const MoelmTrainConfig *cfg = CFG(ctx);
  char *path = g_path_is_absolute(cfg->restore_file) || strchr(cfg->restore_file, '/')
                   ? g_strdup(cfg->restore_file)
                   : g_build_filename(cfg->save_dir, cfg->restore_file, NULL);
  char *shared = moelm_checkpoint_part_path(path, MOELM_CKPT_SHARED, 0);
  const gboolean exists = g_file_test(path, G_FILE_TEST_EXISTS) || g_file_test(shared, G_FILE_TEST_EXISTS);
  g_free(shared);
  const gboolean finetune = !exists && cfg->finetune_from_model != NULL;
  if (!exists && !finetune) {
    if (strcmp(cfg->restore_file, "checkpoint_last.pt") != 0) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: --restore-file not found", path);
      g_free(path);
      return FALSE;
    }
    g_free(path);
    return TRUE; /* a fresh run */
  }
  if (finetune) {
    g_free(path);
    path = g_strdup(cfg->finetune_from_model);
  }
  MoelmCheckpoint *ckpt = moelm_checkpoint_open(path, error);
  gboolean ok = ckpt != NULL;
  if (ok)
    ok = moelm_checkpoint_check_dictionary(ckpt, ctx->dict, "the data-bin's dict.txt", error);
  if (ok)
    ok = check_moe_layout(ckpt, path, moelm_model_get_config(ctx->model), error);
  if (ok)
    ok = moelm_checkpoint_load_params(ckpt, ctx->model, error);
  const gboolean reset_opt = finetune || cfg->reset_optimizer, reset_data = finetune || cfg->reset_dataloader;
  MoelmTrainState saved;
  if (ok && (!reset_opt || !reset_data))
    ok = moelm_trainer_read_train_state(ckpt, &saved, error);
  if (ok && !reset_opt) {
    ok = moelm_checkpoint_load_moments(ckpt, ctx->model, ctx->adam->exp_avg, ctx->adam->exp_avg_sq, error);
    JsonNode *opt = moelm_checkpoint_meta(ckpt, "optimizer");
    if (ok && opt)
      ok = moelm_adam_state_from_json(ctx->adam, opt, error);
    ctx->st->num_updates = saved.num_updates;
    JsonNode *lr = moelm_checkpoint_meta(ckpt, "lr_scheduler");
    if (ok && lr && !cfg->reset_lr_scheduler)
      ok = moelm_lr_scheduler_state_from_json(ctx->sched, lr, error);
    /* saved at an epoch's end, before the loop stepped the scheduler on that epoch's
     * validation: take that step now, as the uninterrupted run did */
    if (ok && lr && !cfg->reset_lr_scheduler && saved.end_of_epoch)
      moelm_lr_step_epoch(ctx->sched, saved.epoch, saved.last_valid_loss);
  }
  if (ok && !reset_data) {
    restore_position(&saved, ctx->st);
    /* a best kept under another metric or direction means nothing to this run */
    if (ctx->st->has_best && (strcmp(saved.best_metric, cfg->best_checkpoint_metric) != 0 ||
                              saved.best_maximize != cfg->maximize_best_metric)) {
      moelm_info("moelm.checkpoint", "the checkpoint's best is of %s%s, this run's of %s%s: starting the best afresh",
                 saved.best_metric, saved.best_maximize ? " (maximized)" : "", cfg->best_checkpoint_metric,
                 cfg->maximize_best_metric ? " (maximized)" : "");
      ctx->st->has_best = FALSE;
      ctx->st->num_bad_validations = 0;
    }
  }
  if (ok && (finetune || cfg->reset_meters)) {
    ctx->st->has_best = FALSE;
    ctx->st->num_bad_validations = 0;
  }
  if (ok) {
    moelm_lr_step_update(ctx->sched, ctx->st->num_updates);
    moelm_info("moelm.checkpoint", "loaded checkpoint %s (epoch %d @ %" G_GINT64_FORMAT " updates)%s", path,
               ctx->st->epoch, ctx->st->num_updates, finetune ? " for fine-tuning" : "");
  }
  moelm_checkpoint_close(ckpt);
  g_free(path);
  return ok;
}
