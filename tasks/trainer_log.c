/* moelm — the training loop's log lines: fairseq's train_inner and train lines (with a
 * token-MoE model's gate metadata and a mixture's expert mass), their TensorBoard events, and
 * the progress line. */
#include "config.h"

#include <string.h>

#include "moelm/dist.h"
#include "moelm/log.h"
#include "trainer_run.h"

/* The TensorBoard writer of a kind of log line, opened on first use (NULL: none). A
 * directory that cannot be written is warned about once and TensorBoard is off. */
MoelmTbWriter *moelm_trainer_tb_writer(Run *r, const char *tag)
{
  if (r->tb == NULL)
    return NULL;
  MoelmTbWriter *w = g_hash_table_lookup(r->tb, tag);
  if (w == NULL) {
    char *dir = g_build_filename(r->cfg->tensorboard_logdir, tag, NULL);
    GError *err = NULL;
    w = moelm_tb_writer_open(dir, &err);
    g_free(dir);
    if (w == NULL) {
      moelm_warn("moelm.train", "--tensorboard-logdir: %s; TensorBoard logging is off", err->message);
      g_error_free(err);
      g_clear_pointer(&r->tb, g_hash_table_unref);
      return NULL;
    }
    g_hash_table_insert(r->tb, g_strdup(tag), w);
  }
  return w;
}

void moelm_trainer_tb_flush(Run *r, const char *tag)
{
  MoelmTbWriter *w = r->tb ? g_hash_table_lookup(r->tb, tag) : NULL;
  GError *err = NULL;
  if (w && !moelm_tb_flush(w, &err)) {
    moelm_warn("moelm.train", "--tensorboard-logdir: %s; TensorBoard logging is off", err->message);
    g_error_free(err);
    g_clear_pointer(&r->tb, g_hash_table_unref);
  }
}

/* ---- logging ------------------------------------------------------------------------ */
/* The metadata fields of a layer's stats as an array (layer left out). */
/* The metadata fields of a layer's stats (its layer index left out), in the order of moe_keys. */
enum { MOE_STAT_FIELDS = 7 };
static double *moe_stat_field(MoelmMoeLayerStats *s, int k)
{
  double *const f[MOE_STAT_FIELDS] = {&s->gate_loss,      &s->overflow_expert1,    &s->overflow_expert2,
                                      &s->entropy,        &s->unused_expert1,      &s->expert1_balance_top,
                                      &s->expert1_balance_bottom};
  return f[k];
}
static double moe_stat(const MoelmMoeLayerStats *s, int k) { return *moe_stat_field((MoelmMoeLayerStats *)s, k); }

/* Token-level MoE: fairseq's MoECriterion metadata per MoE layer, averaged over the updates
 * since the last log line (and over the ranks), or for the epoch's line (`epoch`) over the
 * whole epoch. Returns the number of MoE layers filled in *out (g_free), 0 when the model has
 * none or no forward ran. */
static int take_moe_stats(Run *r, MoelmMoeLayerStats **out, gboolean epoch)
{
  *out = NULL;
  const int n = moelm_model_moe_layers(r->model);
  if (n == 0 || r->cfg->model.moe_route_token0 > 0) /* sequence routing: no gate to report on */
    return 0;
  MoelmMoeLayerStats *st = g_new0(MoelmMoeLayerStats, n);
  int64_t forwards = moelm_model_moe_stats_take(r->model, st);
  if (moelm_comm_size(r->cfg->comm) > 1) { /* the mean over the ranks */
    const int W = moelm_comm_size(r->cfg->comm), F = MOE_STAT_FIELDS;
    double *v = g_new(double, (size_t)n * F + 1);
    for (int i = 0; i < n; i++)
      for (int k = 0; k < F; k++)
        v[(size_t)i * F + k] = *moe_stat_field(&st[i], k);
    v[(size_t)n * F] = (double)forwards;
    if (moelm_comm_allreduce_f64(r->cfg->comm, v, (size_t)n * F + 1, NULL)) {
      for (int i = 0; i < n; i++)
        for (int k = 0; k < F; k++)
          *moe_stat_field(&st[i], k) = v[(size_t)i * F + k] / W;
      forwards = (int64_t)v[(size_t)n * F];
    }
    g_free(v);
  }
  if (r->moe_epoch == NULL)
    r->moe_epoch = g_new0(MoelmMoeLayerStats, n);
  for (int i = 0; forwards > 0 && i < n; i++) /* the interval joins the epoch's sums */
    for (int k = 0; k < MOE_STAT_FIELDS; k++)
      *moe_stat_field(&r->moe_epoch[i], k) += *moe_stat_field(&st[i], k) * (double)forwards;
  r->moe_epoch_forwards += (double)MAX(forwards, 0);
  if (epoch) {
    for (int i = 0; i < n; i++)
      for (int k = 0; k < MOE_STAT_FIELDS; k++)
        *moe_stat_field(&st[i], k) =
          r->moe_epoch_forwards > 0 ? *moe_stat_field(&r->moe_epoch[i], k) / r->moe_epoch_forwards : 0;
    forwards = (int64_t)r->moe_epoch_forwards;
    memset(r->moe_epoch, 0, sizeof(MoelmMoeLayerStats) * n);
    r->moe_epoch_forwards = 0;
  }
  if (forwards <= 0) {
    g_free(st);
    return 0;
  }
  *out = st;
  return n;
}

/* The combined l_aux (sum or average over the layers, unweighted): fairseq's moe_gate_loss. */
static double moe_gate_loss(const Run *r, const MoelmMoeLayerStats *st, int n)
{
  double total = 0;
  for (int i = 0; i < n; i++)
    total += st[i].gate_loss;
  return r->cfg->model.moe_gate_loss_sum ? total : total / n;
}

static const char *const moe_keys[] = {"moe_gate_loss",         "overflow_expert1",    "overflow_expert2",
                                       "entropy_gating",        "unused_expert1_count", "expert1_balance_top",
                                       "expert1_balance_bottom"};

/* fairseq's moe fields, in its order, right after `loss`: moe_gate_loss, then the metadata
 * averaged over the MoE layers (MoECriterion.get_moe_metadata). */
static void log_moe_fields(const Run *r, GString *line, const MoelmLogStyle *style, const MoelmMoeLayerStats *st,
                           int n)
{
  moelm_log_field(line, style, "moe_gate_loss", moe_gate_loss(r, st, n), 8);
  for (gsize k = 1; k < G_N_ELEMENTS(moe_keys); k++) {
    if (k == 2 && r->cfg->model.moe_top_k == 1)
      continue;
    double mean = 0;
    for (int i = 0; i < n; i++)
      mean += moe_stat(&st[i], (int)k);
    moelm_log_field(line, style, moe_keys[k], mean / n, 3);
  }
}

/* moelm's addition at the end of the line: the same metadata for each MoE layer. */
static void log_moe_layer_fields(const Run *r, GString *line, const MoelmLogStyle *style,
                                 const MoelmMoeLayerStats *st, int n)
{
  for (int i = 0; i < n; i++)
    for (gsize k = 0; k < G_N_ELEMENTS(moe_keys); k++) {
      if (k == 2 && r->cfg->model.moe_top_k == 1)
        continue;
      char *key = g_strdup_printf("layer%d_%s", st[i].layer, moe_keys[k]);
      moelm_log_field(line, style, key, moe_stat(&st[i], (int)k), 3);
      g_free(key);
    }
}

void moelm_trainer_log_stats(Run *r, const char *tag, const MoelmTrainMeters *m, int64_t iter, gboolean inner)
{
  const MoelmTrainConfig *cfg = r->cfg;
  MoelmLogStyle style = {.kv_sep = inner ? "=" : " ", .field_sep = inner ? ", " : " | "};
  if (cfg->log_json)
    style = (MoelmLogStyle){.kv_sep = "", .field_sep = ", ", .json_prefix = inner ? "" : "train_"};
  style.tb = moelm_trainer_tb_writer(r, tag);
  style.tb_step = r->st.num_updates;
  GString *line = g_string_new(NULL);
  const double nll = m->sample_size > 0 ? m->loss_sum / m->sample_size : NAN; /* nats per token */
  const double ups = m->seconds > 0 ? m->updates / m->seconds : 0;
  MoelmMoeLayerStats *moe = NULL;
  const int n_moe = take_moe_stats(r, &moe, !inner);
  if (n_moe > 0) {
    /* as fairseq's MoECriterion: loss is what was minimised (the NLL plus the weighted gate
     * loss), inner_loss the NLL alone, and ppl that of the NLL */
    moelm_log_field(line, &style, "loss", moelm_trainer_base2(nll + cfg->model.moe_gate_loss_wt * moe_gate_loss(r, moe, n_moe)), 3);
    log_moe_fields(r, line, &style, moe, n_moe);
    moelm_log_field(line, &style, "inner_loss", moelm_trainer_base2(nll), 3);
  } else {
    moelm_log_field(line, &style, "loss", moelm_trainer_base2(nll), 3);
  }
  moelm_log_field(line, &style, "ppl", pow(2.0, moelm_trainer_base2(nll)), 2);
  moelm_log_field(line, &style, "wps", m->seconds > 0 ? m->ntokens / m->seconds : 0, 0);
  moelm_log_field(line, &style, "ups", ups, 2);
  moelm_log_field(line, &style, "wpb", m->updates ? m->ntokens / m->updates : 0, 1);
  moelm_log_field(line, &style, "bsz", m->updates ? m->nsentences / m->updates : 0, 1);
  moelm_log_field(line, &style, "num_updates", (double)r->st.num_updates, 0);
  moelm_log_field(line, &style, "lr", moelm_lr_get(r->sched), -1);
  moelm_log_field(line, &style, "gnorm", m->updates ? m->gnorm_sum / m->updates : 0, 3);
  if (cfg->clip_norm > 0)
    moelm_log_field(line, &style, "clip", m->updates ? 100.0 * m->clipped / m->updates : 0, 1);
  moelm_log_field(line, &style, "train_wall", moelm_stopwatch_elapsed(&r->train_wall), 0);
  if (r->obj->all_reduce && moelm_comm_size(cfg->comm) > 1)
    r->obj->all_reduce(r->obj, cfg->comm, NULL);
  if (r->obj->log_fields)
    r->obj->log_fields(r->obj, line, &style, !inner);
  if (n_moe > 0)
    log_moe_layer_fields(r, line, &style, moe, n_moe);
  g_free(moe);
  moelm_log_field(line, &style, "wall", moelm_time_now() - r->start_time, 0);
  if (cfg->log_json && inner)
    moelm_info(tag, "{%s, \"epoch\": %d, \"update\": %.3f}", line->str, r->st.epoch,
               (r->st.epoch - 1) + (double)iter / (double)MAX(1, moelm_trainer_updates_per_epoch(r)));
  else if (cfg->log_json)
    moelm_info(tag, "{%s, \"train_epoch\": %d}", line->str, r->st.epoch);
  else if (inner)
    moelm_info(tag, "epoch %03d: %6" G_GINT64_FORMAT " / %" G_GINT64_FORMAT " %s", r->st.epoch, iter,
               moelm_trainer_updates_per_epoch(r), line->str);
  else
    moelm_info(tag, "epoch %03d | %s", r->st.epoch, line->str);
  g_string_free(line, TRUE);
  moelm_trainer_tb_flush(r, tag);
}

/* The training progress line: updates done against --max-update, else against the epochs of
 * --max-epoch, else against this epoch; rate and ETA over this run's updates. */
void moelm_trainer_progress_start(Run *r)
{
  const MoelmTrainConfig *cfg = r->cfg;
  const int64_t per_epoch = moelm_trainer_updates_per_epoch(r);
  double total = 0;
  if (cfg->max_update > 0)
    total = (double)cfg->max_update;
  else if (cfg->max_epoch > 0)
    total = (double)cfg->max_epoch * (double)per_epoch;
  moelm_progress_start(&r->bar, "moelm train", total > 0 ? "training" : "epoch", total > 0 ? total : (double)per_epoch,
                       "updates");
  moelm_progress_set_enabled(&r->bar, r->bar.enabled && cfg->progress_bar);
  moelm_progress_set_base(&r->bar, total > 0 ? (double)r->st.num_updates : (double)r->st.iterations_in_epoch);
  moelm_progress_set_plain_interval(&r->bar, 30); /* the train_inner lines already say a lot */
}

void moelm_trainer_progress(Run *r, int64_t iter, double loss)
{
  if (!r->bar.enabled)
    return;
  const gboolean whole_run = r->bar.total > 0 && strcmp(r->bar.what, "training") == 0;
  char *extra = g_strdup_printf("epoch %d, loss=%.3f, lr=%g", r->st.epoch, loss, moelm_lr_get(r->sched));
  moelm_progress_update(&r->bar, whole_run ? (double)r->st.num_updates : (double)iter, extra);
  g_free(extra);
}
