/* moelm — checkpoints as safetensors with JSON metadata. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "io/checkpoint_internal.h"
#include "moelm/checkpoint.h"
#include "moelm/errors.h"
#include "moelm/half.h"
#include "moelm/json.h"
#include "json_strict.h"

/* Metadata values are small objects (the model config, the optimizer state). */
#define MAX_META_DEPTH 16

static gboolean add_tensor(MoelmSafetensorsWriter *w, const char *name, const MoelmParam *p, const float *data,
                           GError **error)
{
  return moelm_safetensors_writer_add(w, name, MOELM_DT_F32, p->ndim, p->shape, data, error);
}

gboolean moelm_checkpoint_save(const char *path, MoelmModel *model, const float *exp_avg, const float *exp_avg_sq,
                               JsonObject *meta, GError **error)
{
  return moelm_checkpoint_save_part(path, model, exp_avg, exp_avg_sq, meta, MOELM_CKPT_ALL, error);
}

/* "decoder.layers.3.moe_layer.experts.12.fc1.weight" with the expert number replaced (g_free). */
static char *renumber_expert(const char *name, int expert)
{
  static const char key[] = ".moe_layer.experts.";
  const char *at = strstr(name, key);
  if (at == NULL)
    return g_strdup(name);
  const char *num = at + strlen(key), *rest = strchr(num, '.');
  return g_strdup_printf("%.*s%d%s", (int)(num - name), name, expert, rest ? rest : "");
}

static gboolean in_part(const MoelmParam *p, MoelmCheckpointPart part)
{
  return part == MOELM_CKPT_ALL || (part == MOELM_CKPT_SHARED) == (p->expert < 0);
}

/* The name a tensor is saved under in `part`: experts of a rank file under local numbers. */
static char *part_name(const MoelmModel *model, const MoelmParam *p, MoelmCheckpointPart part)
{
  if (part != MOELM_CKPT_EXPERTS)
    return g_strdup(p->name);
  const int local = moelm_model_local_experts(model);
  return renumber_expert(p->name, p->expert % local);
}

char *moelm_checkpoint_part_path(const char *path, MoelmCheckpointPart part, int rank)
{
  if (part == MOELM_CKPT_ALL)
    return g_strdup(path);
  const size_t len = strlen(path);
  const int stem = len > 3 && strcmp(path + len - 3, ".pt") == 0 ? (int)len - 3 : (int)len;
  return part == MOELM_CKPT_SHARED ? g_strdup_printf("%.*s-shared.pt", stem, path)
                                   : g_strdup_printf("%.*s-rank-%d.pt", stem, path, rank);
}

gboolean moelm_checkpoint_save_part(const char *path, MoelmModel *model, const float *exp_avg, const float *exp_avg_sq,
                                    JsonObject *meta, MoelmCheckpointPart part, GError **error)
{
  MoelmBackend *be = moelm_model_backend(model);
  const size_t n = moelm_model_num_params(model);
  const int n_bufs = exp_avg && exp_avg_sq ? 3 : 1;
  /* host staging: the parameters, then the two moments (all backend memory) */
  float *host = n <= G_MAXSIZE / sizeof(float) / 3 ? g_try_new(float, n * n_bufs) : NULL;
  if (host == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "%s: out of memory staging %zu parameters", path, n);
    return FALSE;
  }
  const float *src[3] = {moelm_model_params(model), exp_avg, exp_avg_sq};
  for (int k = 0; k < n_bufs; k++)
    be->ops->to_host(be, host + (size_t)k * n, src[k], n * sizeof(float));

  MoelmSafetensorsWriter *w = moelm_safetensors_writer_new();
  gboolean ok = TRUE;
  for (int which = 0; ok && which < n_bufs; which++) {
    const float *buf = host + (size_t)which * n;
    static const char *const prefix[3] = {"", "optimizer.exp_avg.", "optimizer.exp_avg_sq."};
    for (guint i = 0; ok && i < moelm_model_n_tensors(model); i++) {
      const MoelmParam *p = moelm_model_tensor(model, i);
      if (!in_part(p, part))
        continue;
      char *base = part_name(model, p, part), *name = g_strconcat(prefix[which], base, NULL);
      ok = add_tensor(w, name, p, buf + p->offset, error);
      g_free(name);
      g_free(base);
    }
  }
  if (ok && part != MOELM_CKPT_ALL) {
    char *shard = g_strdup_printf("{\"rank\":%d,\"world\":%d}",
                                  moelm_model_local_experts(model) > 0
                                      ? moelm_model_first_expert(model) / moelm_model_local_experts(model)
                                      : 0,
                                  moelm_model_expert_world(model));
    moelm_safetensors_writer_set_metadata(w, "expert_shard", shard);
    g_free(shard);
  }
  if (ok) {
    moelm_safetensors_writer_set_metadata(w, "format", MOELM_CHECKPOINT_FORMAT);
    JsonNode *cfg = moelm_model_config_to_json(moelm_model_get_config(model));
    char *text = moelm_json_to_string(cfg);
    moelm_safetensors_writer_set_metadata(w, "model", text);
    g_free(text);
    json_node_unref(cfg);
    if (meta) {
      GList *keys = json_object_get_members(meta);
      for (GList *k = keys; k; k = k->next) {
        char *t = moelm_json_to_string(json_object_get_member(meta, k->data));
        moelm_safetensors_writer_set_metadata(w, k->data, t);
        g_free(t);
      }
      g_list_free(keys);
    }
    ok = moelm_safetensors_writer_write(w, path, error);
  }
  moelm_safetensors_writer_free(w);
  g_free(host);
  return ok;
}

void moelm_checkpoint_close(MoelmCheckpoint *ckpt)
{
  if (ckpt == NULL)
    return;
  moelm_safetensors_close(ckpt->st);
  for (int r = 0; r < ckpt->n_shards; r++)
    moelm_safetensors_close(ckpt->shards[r]);
  g_free(ckpt->shards);
  if (ckpt->meta)
    json_object_unref(ckpt->meta);
  moelm_model_config_clear(&ckpt->model);
  g_free(ckpt->path);
  g_free(ckpt);
}

/* The file that holds PREFIX<p's name>, and the tensor's name in it: the shared file, or the
 * rank file of p's expert under its local number. */
static const MoelmSafetensors *locate(const MoelmCheckpoint *ckpt, const char *name, const MoelmParam *p,
                                      char **name_in_file)
{
  if (ckpt->n_shards == 0 || p->expert < 0) {
    *name_in_file = g_strdup(name);
    return ckpt->st;
  }
  const int shard = p->expert / ckpt->experts_per_shard;
  *name_in_file = renumber_expert(name, p->expert % ckpt->experts_per_shard);
  return shard < ckpt->n_shards ? ckpt->shards[shard] : NULL;
}

static gboolean check_tensor(const MoelmCheckpoint *ckpt, const char *name, const MoelmParam *p,
                             const MoelmTensorInfo **out, const MoelmSafetensors **file, GError **error)
{
  char *local = NULL;
  const MoelmSafetensors *st = locate(ckpt, name, p, &local);
  const MoelmTensorInfo *t = st ? moelm_safetensors_find(st, local) : NULL;
  g_free(local);
  if (t == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: missing tensor '%s'", ckpt->path, name);
    return FALSE;
  }
  *file = st;
  /* fp16/bf16 checkpoints (moelm convert --dtype) are widened to fp32 on loading */
  gboolean same = (t->dtype == MOELM_DT_F32 || t->dtype == MOELM_DT_F16 || t->dtype == MOELM_DT_BF16) &&
                  t->ndim == p->ndim;
  for (int d = 0; same && d < p->ndim; d++)
    same = t->shape[d] == p->shape[d];
  if (!same) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH,
                "%s: tensor '%s' has the wrong dtype or shape for the model config", ckpt->path, name);
    return FALSE;
  }
  *out = t;
  return TRUE;
}

/* Parse every metadata value (except "format") as strict JSON into ckpt->meta. */
static gboolean parse_metadata(MoelmCheckpoint *ckpt, GError **error)
{
  ckpt->meta = json_object_new();
  for (const char *const *k = moelm_safetensors_metadata_keys(ckpt->st); *k; k++) {
    if (strcmp(*k, "format") == 0)
      continue;
    const char *text = moelm_safetensors_metadata(ckpt->st, *k);
    JsonParser *parser = json_parser_new();
    GError *perr = NULL;
    if (!moelm_json_check_strict(text, strlen(text), MAX_META_DEPTH, &perr) ||
        !json_parser_load_from_data(parser, text, -1, &perr)) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: metadata '%s' is not valid JSON: %s", ckpt->path, *k,
                  perr->message);
      g_error_free(perr);
      g_object_unref(parser);
      return FALSE;
    }
    json_object_set_member(ckpt->meta, *k, json_node_copy(json_parser_get_root(parser)));
    g_object_unref(parser);
  }
  return TRUE;
}

/* The config against the tensors the file really holds, before anyone allocates a model of
 * that config: the token embedding has the config's (V, C), and the config's parameters are
 * no more than the file's (so a config of 10^8 layers is refused by counting, in O(1)). */
static gboolean check_config_against_tensors(const MoelmCheckpoint *ckpt, GError **error)
{
  const MoelmModelConfig *c = &ckpt->model;
  const char *emb = "decoder.embed_tokens.weight";
  const MoelmTensorInfo *t = moelm_safetensors_find(ckpt->st, emb);
  if (t == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: missing tensor '%s'", ckpt->path, emb);
    return FALSE;
  }
  if (t->ndim != 2 || t->shape[0] != c->vocab_size || t->shape[1] != c->embed_dim) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT,
                "%s: tensor '%s' does not have the (vocab_size %d, decoder_embed_dim %d) of the model config", ckpt->path,
                emb, c->vocab_size, c->embed_dim);
    return FALSE;
  }
  guint64 in_file = 0, wanted = 0; /* parameters in the file (and its rank files) */
  for (int f = -1; f < ckpt->n_shards; f++) {
    const MoelmSafetensors *st = f < 0 ? ckpt->st : ckpt->shards[f];
    for (gsize i = 0; i < moelm_safetensors_n_tensors(st); i++) {
      const MoelmTensorInfo *ti = moelm_safetensors_tensor(st, i);
      const gboolean is_float = ti->dtype == MOELM_DT_F32 || ti->dtype == MOELM_DT_F16 || ti->dtype == MOELM_DT_BF16;
      if (is_float && !g_str_has_prefix(ti->name, "optimizer.")) /* fp16/bf16 weights load widened */
        in_file += (ti->end - ti->begin) / moelm_dtype_size(ti->dtype);
    }
  }
  const gboolean counted = moelm_model_config_num_params(c, &wanted);
  if (!counted || wanted > in_file) {
    char *need = counted ? g_strdup_printf("%" G_GUINT64_FORMAT, wanted) : g_strdup("more than 2^64");
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT,
                "%s: the model config (decoder_layers %d, moe_expert_count %d, ...) needs %s parameters, the file "
                "holds %" G_GUINT64_FORMAT ": metadata and tensors disagree",
                ckpt->path, c->layers, c->moe_experts, need, in_file);
    g_free(need);
    return FALSE;
  }
  return TRUE;
}

static MoelmCheckpoint *open_parsed(MoelmCheckpoint *ckpt, gboolean sharded, GError **error)
{
  if (ckpt->st == NULL)
    goto fail;
  const char *format = moelm_safetensors_metadata(ckpt->st, "format");
  if (format == NULL || strcmp(format, MOELM_CHECKPOINT_FORMAT) != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: not a moelm checkpoint (metadata format is %s)",
                ckpt->path, format ? format : "missing");
    goto fail;
  }
  if (!parse_metadata(ckpt, error))
    goto fail;
  if (!moelm_model_config_from_json(&ckpt->model, json_object_get_member(ckpt->meta, "model"), error)) {
    moelm_error_prefix(error, "%s", ckpt->path);
    goto fail;
  }
  if (!moelm_checkpoint_open_shards(ckpt, sharded, error) || !check_config_against_tensors(ckpt, error))
    goto fail;
  return ckpt;
fail:
  moelm_checkpoint_close(ckpt);
  return NULL;
}

MoelmCheckpoint *moelm_checkpoint_open(const char *path, GError **error)
{
  MoelmCheckpoint *ckpt = g_new0(MoelmCheckpoint, 1);
  ckpt->path = g_strdup(path);
  /* NAME.pt of an expert-parallel run is NAME-shared.pt + NAME-rank-R.pt */
  char *shared = moelm_checkpoint_part_path(path, MOELM_CKPT_SHARED, 0);
  const gboolean sharded = !g_file_test(path, G_FILE_TEST_EXISTS) && g_file_test(shared, G_FILE_TEST_EXISTS);
  ckpt->st = moelm_safetensors_open(sharded ? shared : path, error);
  g_free(shared);
  return open_parsed(ckpt, sharded, error);
}

MoelmCheckpoint *moelm_checkpoint_open_bytes(const void *data, gsize len, const char *name, GError **error)
{
  MoelmCheckpoint *ckpt = g_new0(MoelmCheckpoint, 1);
  ckpt->path = g_strdup(name);
  ckpt->st = moelm_safetensors_open_bytes(data, len, name, error);
  return open_parsed(ckpt, FALSE, error);
}

JsonNode *moelm_checkpoint_meta(const MoelmCheckpoint *ckpt, const char *key)
{
  return ckpt->meta && json_object_has_member(ckpt->meta, key) ? json_object_get_member(ckpt->meta, key) : NULL;
}

/* Copy tensors named PREFIX<param name> into a host arena of num_params floats. */
static gboolean gather(const MoelmCheckpoint *ckpt, MoelmModel *model, const char *prefix, float *dst,
                       GError **error)
{
  for (guint i = 0; i < moelm_model_n_tensors(model); i++) {
    const MoelmParam *p = moelm_model_tensor(model, i);
    char *name = g_strconcat(prefix, p->name, NULL);
    const MoelmTensorInfo *t = NULL;
    const MoelmSafetensors *file = NULL;
    gboolean ok = check_tensor(ckpt, name, p, &t, &file, error);
    g_free(name);
    if (!ok)
      return FALSE;
    const void *src = moelm_safetensors_data(file, t);
    float *w = dst + p->offset;
    if (t->dtype == MOELM_DT_F16)
      moelm_half_to_float_n(src, w, p->numel);
    else if (t->dtype == MOELM_DT_BF16)
      moelm_bf16_to_float_n(src, w, p->numel);
    else
      memcpy(w, src, p->numel * sizeof(float));
    for (size_t k = 0; k < p->numel; k++)
      if (!isfinite(w[k])) {
        g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: tensor '%s%s' holds %s at element %zu", ckpt->path,
                    prefix, p->name, isnan(w[k]) ? "NaN" : "Inf", k);
        return FALSE;
      }
  }
  return TRUE;
}

/* Gather tensors PREFIX<param name> into the backend arena `dst` (num_params floats),
 * staged through host memory. */
static gboolean load_arena(const MoelmCheckpoint *ckpt, MoelmModel *model, const char *prefix, float *dst,
                           GError **error)
{
  const size_t n = moelm_model_num_params(model);
  float *host = g_try_new(float, n);
  if (host == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "%s: out of memory", ckpt->path);
    return FALSE;
  }
  gboolean ok = gather(ckpt, model, prefix, host, error);
  if (ok) {
    MoelmBackend *be = moelm_model_backend(model);
    be->ops->to_device(be, dst, host, n * sizeof(float));
  }
  g_free(host);
  return ok;
}

gboolean moelm_checkpoint_load_params(const MoelmCheckpoint *ckpt, MoelmModel *model, GError **error)
{
  return load_arena(ckpt, model, "", moelm_model_params(model), error);
}

gboolean moelm_checkpoint_load_moments(const MoelmCheckpoint *ckpt, MoelmModel *model, float *exp_avg,
                                       float *exp_avg_sq, GError **error)
{
  const MoelmParam *first = moelm_model_tensor(model, 0);
  char *probe = g_strconcat("optimizer.exp_avg.", first->name, NULL);
  gboolean present = moelm_safetensors_find(ckpt->st, probe) != NULL;
  g_free(probe);
  if (!present) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH,
                "%s: has no optimizer state (saved with --no-save-optimizer-state?); use --reset-optimizer",
                ckpt->path);
    return FALSE;
  }
  return load_arena(ckpt, model, "optimizer.exp_avg.", exp_avg, error) &&
         load_arena(ckpt, model, "optimizer.exp_avg_sq.", exp_avg_sq, error);
}

JsonNode *moelm_dictionary_fingerprint(const MoelmDictionary *dict)
{
  JsonObject *o = json_object_new();
  json_object_set_int_member(o, "size", moelm_dictionary_size(dict));
  char *hex = g_strdup_printf("%016" G_GINT64_MODIFIER "x", (guint64)moelm_dictionary_hash(dict));
  json_object_set_string_member(o, "hash", hex);
  g_free(hex);
  JsonNode *node = json_node_new(JSON_NODE_OBJECT);
  json_node_take_object(node, o);
  return node;
}

gboolean moelm_checkpoint_check_dictionary(const MoelmCheckpoint *ckpt, const MoelmDictionary *dict,
                                           const char *dict_path, GError **error)
{
  JsonNode *saved = moelm_checkpoint_meta(ckpt, "dictionary");
  JsonNode *now = moelm_dictionary_fingerprint(dict);
  gboolean same = saved && JSON_NODE_HOLDS_OBJECT(saved) &&
                  json_object_get_int_member_with_default(json_node_get_object(saved), "size", -1) ==
                      json_object_get_int_member(json_node_get_object(now), "size") &&
                  g_strcmp0(json_object_get_string_member_with_default(json_node_get_object(saved), "hash", ""),
                            json_object_get_string_member(json_node_get_object(now), "hash")) == 0;
  if (!same)
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH,
                "%s: vocabulary does not match %s (%u symbols): the checkpoint was trained on another dictionary",
                ckpt->path, dict_path, moelm_dictionary_size(dict));
  json_node_unref(now);
  return same;
}
