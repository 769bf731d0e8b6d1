/* moelm — fairseq checkpoints (dense, or MoE with expert shards) to moelm checkpoints. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "moelm/checkpoint.h"
#include "moelm/dictionary.h"
#include "moelm/errors.h"
#include "moelm/json.h"
#include "moelm/model.h"
#include "moelm/safetensors.h"
#include "moelm/torch_load.h"
#include "convert_fairseq.h"

/* Where a parameter comes from. */
typedef struct {
  MoelmTorchFile *file;
  const MoelmPyObj *value;
  char *source_name; /* its name in that file */
} Source;

typedef struct {
  const MoelmConvertOptions *opt;
  MoelmConvertReport *report;
  GPtrArray *files;     /* MoelmTorchFile* */
  GHashTable *sources;  /* moelm name → Source* */
  GPtrArray *buffers;   /* converted data, alive until the write */
} Conv;

static void source_free(gpointer p)
{
  Source *s = p;
  g_free(s->source_name);
  g_free(s);
}

gboolean moelm_convert_dtype_parse(const char *name, MoelmConvertDtype *out, GError **error)
{
  static const char *const names[] = {"keep", "fp32", "fp16", "bf16"};
  for (gsize i = 0; i < G_N_ELEMENTS(names); i++)
    if (strcmp(name, names[i]) == 0) {
      *out = (MoelmConvertDtype)i;
      return TRUE;
    }
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "--dtype %s: choose fp32, fp16, bf16 (or keep)", name);
  return FALSE;
}

void moelm_convert_report_clear(MoelmConvertReport *r)
{
  g_free(r->fairseq_arch);
  moelm_model_config_clear(&r->model);
  if (r->notes)
    g_ptr_array_unref(r->notes);
  memset(r, 0, sizeof *r);
}

/* The main file and the rank files: NAME-shared.pt → NAME-rank-0.pt, NAME-rank-1.pt, ... */
static gboolean resolve_inputs(const char *path, char **main_path, GPtrArray *ranks, GError **error)
{
  char *p = NULL;
  if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
    char *shared = g_build_filename(path, "model-shared.pt", NULL), *plain = g_build_filename(path, "model.pt", NULL);
    if (g_file_test(shared, G_FILE_TEST_EXISTS))
      p = g_strdup(shared);
    else if (g_file_test(plain, G_FILE_TEST_EXISTS))
      p = g_strdup(plain);
    g_free(shared);
    g_free(plain);
    if (p == NULL) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: a directory without model.pt or model-shared.pt", path);
      return FALSE;
    }
  } else
    p = g_strdup(path);
  if (!g_file_test(p, G_FILE_TEST_IS_REGULAR)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: no such checkpoint file", p);
    g_free(p);
    return FALSE;
  }
  if (g_str_has_suffix(p, "-shared.pt")) {
    const gsize stem = strlen(p) - strlen("-shared.pt");
    for (int r = 0;; r++) {
      char *rp = g_strdup_printf("%.*s-rank-%d.pt", (int)stem, p, r);
      if (!g_file_test(rp, G_FILE_TEST_IS_REGULAR)) {
        g_free(rp);
        break;
      }
      g_ptr_array_add(ranks, rp);
    }
    if (ranks->len == 0) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: no expert shards %.*s-rank-0.pt, ... beside it", p,
                  (int)stem, p);
      g_free(p);
      return FALSE;
    }
  }
  *main_path = p;
  return TRUE;
}

static MoelmTorchFile *open_file(Conv *c, const char *path, GError **error)
{
  MoelmTorchFile *f = moelm_torch_open(path, error);
  if (f) {
    g_ptr_array_add(c->files, f);
    c->report->n_files++;
  }
  return f;
}

/* The state dict of a checkpoint: root["model"]. */
static const GPtrArray *state_items(MoelmTorchFile *f, GError **error)
{
  const GPtrArray *kv = moelm_py_dict_items(moelm_py_get(moelm_torch_root(f), "model"));
  if (kv == NULL)
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: no 'model' state dict: not a fairseq checkpoint",
                moelm_torch_path(f));
  return kv;
}

static gboolean skipped_name(const char *name, gboolean share)
{
  return g_str_has_suffix(name, "._float_tensor") || strcmp(name, "decoder.version") == 0 ||
         strcmp(name, "version") == 0 || (share && strcmp(name, "decoder.output_projection.weight") == 0);
}

/* "decoder.layers.L.moe_layer.experts.J.REST": the expert number J and where it is. */
static gboolean expert_name(const char *name, int *j, const char **before_j, const char **after_j)
{
  const char *k = strstr(name, ".moe_layer.experts.");
  if (!g_str_has_prefix(name, "decoder.layers.") || k == NULL)
    return FALSE;
  const char *num = k + strlen(".moe_layer.experts.");
  char *end = NULL;
  const long v = strtol(num, &end, 10);
  if (end == num || *end != '.' || v < 0 || v > G_MAXINT || (num[0] == '0' && end - num > 1))
    return FALSE;
  *j = (int)v;
  *before_j = num;
  *after_j = end;
  return TRUE;
}

static gboolean add_source(Conv *c, MoelmTorchFile *f, const MoelmPyObj *key, const MoelmPyObj *value,
                           const char *moelm_name, GError **error)
{
  if (!moelm_torch_is_tensor(value)) {
    char *d = moelm_py_describe(value);
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: model['%s'] is a %s, not a tensor", moelm_torch_path(f),
                key->s, d);
    g_free(d);
    return FALSE;
  }
  if (g_hash_table_contains(c->sources, moelm_name)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: tensor '%s' appears twice", moelm_torch_path(f),
                moelm_name);
    return FALSE;
  }
  Source *s = g_new0(Source, 1);
  s->file = f;
  s->value = value;
  s->source_name = g_strdup(key->s);
  g_hash_table_insert(c->sources, g_strdup(moelm_name), s);
  return TRUE;
}

/* With tied embeddings fairseq's state dict holds the output projection too, normally the
 * same storage as the embedding; its values must agree, since only one matrix is kept. */
static gboolean check_tied(MoelmTorchFile *f, GError **error)
{
  const MoelmPyObj *state = moelm_py_get(moelm_torch_root(f), "model");
  const MoelmPyObj *emb = moelm_py_get(state, "decoder.embed_tokens.weight");
  const MoelmPyObj *out = moelm_py_get(state, "decoder.output_projection.weight");
  MoelmTorchTensor a, b;
  if (out == NULL)
    return TRUE;
  if (!moelm_torch_tensor(f, emb, &a, error) || !moelm_torch_tensor(f, out, &b, error))
    return FALSE;
  gboolean same = a.ndim == b.ndim && moelm_torch_tensor_numel(&a) == moelm_torch_tensor_numel(&b);
  for (int d = 0; same && d < a.ndim; d++)
    same = a.shape[d] == b.shape[d];
  if (same && !(a.storage == b.storage && a.storage_offset == b.storage_offset && a.dtype == b.dtype &&
                memcmp(a.stride, b.stride, sizeof a.stride) == 0)) {
    const uint64_t n = moelm_torch_tensor_numel(&a);
    float *x = g_try_new(float, n), *y = g_try_new(float, n);
    same = x && y && moelm_torch_tensor_copy(&a, MOELM_DT_F32, x, NULL) &&
           moelm_torch_tensor_copy(&b, MOELM_DT_F32, y, NULL) && memcmp(x, y, n * sizeof(float)) == 0;
    g_free(x);
    g_free(y);
  }
  if (!same)
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: share_decoder_input_output_embed is set, but "
                "decoder.output_projection.weight differs from decoder.embed_tokens.weight", moelm_torch_path(f));
  return same;
}

static gboolean collect_main(Conv *c, MoelmTorchFile *f, gboolean share, gboolean sharded, GError **error)
{
  if (share && !check_tied(f, error))
    return FALSE;
  const GPtrArray *kv = state_items(f, error);
  if (kv == NULL)
    return FALSE;
  for (guint i = 0; i + 1 < kv->len; i += 2) {
    const MoelmPyObj *k = kv->pdata[i], *v = kv->pdata[i + 1];
    int j;
    const char *a, *b;
    if (k->type != MOELM_PY_STR || strlen(k->s) != k->len) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: a state dict key that is not a str",
                  moelm_torch_path(f));
      return FALSE;
    }
    if (skipped_name(k->s, share)) {
      c->report->n_skipped++;
      continue;
    }
    if (sharded && expert_name(k->s, &j, &a, &b)) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: expert tensor '%s' in the shared file, beside "
                  "expert shards: which one is meant?", moelm_torch_path(f), k->s);
      return FALSE;
    }
    if (!add_source(c, f, k, v, k->s, error))
      return FALSE;
  }
  return TRUE;
}

/* Rank file r holds experts 0..local-1 of every MoE layer: they are experts r*local + j. */
static gboolean collect_rank(Conv *c, MoelmTorchFile *f, int r, int *local, GError **error)
{
  const GPtrArray *kv = state_items(f, error);
  if (kv == NULL)
    return FALSE;
  int n = 0;
  for (guint i = 0; i + 1 < kv->len; i += 2) {
    const MoelmPyObj *k = kv->pdata[i];
    int j;
    const char *a, *b;
    if (k->type == MOELM_PY_STR && expert_name(k->s, &j, &a, &b))
      n = MAX(n, j + 1);
  }
  if (n == 0 || (*local > 0 && n != *local)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: holds %d experts per layer, %s", moelm_torch_path(f), n,
                n == 0 ? "none" : "unlike the shards before it");
    return FALSE;
  }
  *local = n;
  for (guint i = 0; i + 1 < kv->len; i += 2) {
    const MoelmPyObj *k = kv->pdata[i];
    int j;
    const char *a, *b;
    if (k->type != MOELM_PY_STR || !expert_name(k->s, &j, &a, &b)) {
      c->report->n_skipped++; /* the shared parameters live in the shared file */
      continue;
    }
    char *name = g_strdup_printf("%.*s%d%s", (int)(a - k->s), k->s, r * n + j, b);
    const gboolean ok = add_source(c, f, k, kv->pdata[i + 1], name, error);
    g_free(name);
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

static MoelmDtype out_dtype(MoelmConvertDtype want, MoelmDtype src)
{
  switch (want) {
  case MOELM_CONVERT_DTYPE_FP32: return MOELM_DT_F32;
  case MOELM_CONVERT_DTYPE_FP16: return MOELM_DT_F16;
  case MOELM_CONVERT_DTYPE_BF16: return MOELM_DT_BF16;
  default: return src == MOELM_DT_F16 || src == MOELM_DT_BF16 ? src : MOELM_DT_F32;
  }
}

static char *shape_text(int ndim, const int64_t *shape)
{
  GString *s = g_string_new("[");
  for (int d = 0; d < ndim; d++)
    g_string_append_printf(s, "%s%" G_GINT64_FORMAT, d ? ", " : "", shape[d]);
  g_string_append_c(s, ']');
  return g_string_free(s, FALSE);
}

/* Every parameter of the layout from its source, converted, into the writer. */
static gboolean add_tensors(Conv *c, GPtrArray *layout, MoelmSafetensorsWriter *w, GError **error)
{
  for (guint i = 0; i < layout->len; i++) {
    const MoelmParam *p = layout->pdata[i];
    Source *s = g_hash_table_lookup(c->sources, p->name);
    if (s == NULL) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: missing tensor '%s' (the configuration needs it)",
                  c->opt->path, p->name);
      return FALSE;
    }
    MoelmTorchTensor t;
    if (!moelm_torch_tensor(s->file, s->value, &t, error))
      return FALSE;
    gboolean same = t.ndim == p->ndim;
    for (int d = 0; same && d < p->ndim; d++)
      same = t.shape[d] == p->shape[d];
    if (!same) {
      char *a = shape_text(t.ndim, t.shape), *b = shape_text(p->ndim, p->shape);
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH, "%s: tensor '%s' has shape %s, the configuration needs %s",
                  moelm_torch_path(s->file), s->source_name, a, b);
      g_free(a);
      g_free(b);
      return FALSE;
    }
    const MoelmDtype dt = out_dtype(c->opt->dtype, t.dtype);
    void *buf = g_try_malloc(MAX(p->numel * moelm_dtype_size(dt), 1));
    if (buf == NULL) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_NOMEM, "%s: out of memory converting '%s'", c->opt->path, p->name);
      return FALSE;
    }
    g_ptr_array_add(c->buffers, buf);
    if (!moelm_torch_tensor_copy(&t, dt, buf, error)) {
      moelm_error_prefix(error, "%s: tensor '%s'", moelm_torch_path(s->file), s->source_name);
      return FALSE;
    }
    if (!moelm_safetensors_writer_add(w, p->name, dt, p->ndim, p->shape, buf, error))
      return FALSE;
    g_hash_table_remove(c->sources, p->name);
    c->report->n_tensors++;
    c->report->n_params += p->numel;
  }
  if (g_hash_table_size(c->sources) > 0) {
    GHashTableIter it;
    gpointer key, val;
    g_hash_table_iter_init(&it, c->sources);
    g_hash_table_iter_next(&it, &key, &val);
    const Source *s = val;
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_UNSUPPORTED,
                "%s: tensor '%s' is not part of moelm's model for this configuration (%u such tensors)",
                moelm_torch_path(s->file), s->source_name, g_hash_table_size(c->sources));
    return FALSE;
  }
  return TRUE;
}

static void set_meta_json(MoelmSafetensorsWriter *w, const char *key, JsonNode *node)
{
  char *text = moelm_json_to_string(node);
  moelm_safetensors_writer_set_metadata(w, key, text);
  g_free(text);
}

static gboolean write_checkpoint(Conv *c, GPtrArray *layout, JsonObject *task, const MoelmDictionary *dict,
                                 GError **error)
{
  MoelmSafetensorsWriter *w = moelm_safetensors_writer_new();
  gboolean ok = add_tensors(c, layout, w, error);
  if (ok) {
    moelm_safetensors_writer_set_metadata(w, "format", MOELM_CHECKPOINT_FORMAT);
    JsonNode *n = moelm_model_config_to_json(&c->report->model);
    set_meta_json(w, "model", n);
    json_node_unref(n);
    n = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(n, task);
    set_meta_json(w, "task", n);
    json_node_unref(n);
    n = moelm_dictionary_fingerprint(dict);
    set_meta_json(w, "dictionary", n);
    json_node_unref(n);
    JsonObject *from = json_object_new();
    json_object_set_string_member(from, "format", "fairseq");
    json_object_set_string_member(from, "arch", c->report->fairseq_arch);
    json_object_set_int_member(from, "files", c->report->n_files);
    n = json_node_new(JSON_NODE_OBJECT);
    json_node_take_object(n, from);
    set_meta_json(w, "converted_from", n);
    json_node_unref(n);
    ok = moelm_safetensors_writer_write(w, c->opt->save, error);
  }
  moelm_safetensors_writer_free(w);
  return ok;
}

static gboolean vocab_rows(Conv *c, MoelmTorchFile *f, int *rows, GError **error)
{
  const MoelmPyObj *emb = moelm_py_get(moelm_py_get(moelm_torch_root(f), "model"), "decoder.embed_tokens.weight");
  MoelmTorchTensor t;
  if (emb == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: no decoder.embed_tokens.weight in the state dict",
                moelm_torch_path(f));
    return FALSE;
  }
  if (!moelm_torch_tensor(f, emb, &t, error))
    return FALSE;
  if (t.ndim != 2 || t.shape[0] > G_MAXINT) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: decoder.embed_tokens.weight is not a matrix",
                moelm_torch_path(f));
    return FALSE;
  }
  *rows = (int)t.shape[0];
  return TRUE;
}

gboolean moelm_convert_fairseq(const MoelmConvertOptions *opt, MoelmConvertReport *report, GError **error)
{
  memset(report, 0, sizeof *report);
  report->notes = g_ptr_array_new_with_free_func(g_free);
  Conv c = {opt, report, g_ptr_array_new_with_free_func((GDestroyNotify)moelm_torch_close),
            g_hash_table_new_full(g_str_hash, g_str_equal, g_free, source_free), g_ptr_array_new_with_free_func(g_free)};
  GPtrArray *ranks = g_ptr_array_new_with_free_func(g_free), *layout = NULL;
  char *main_path = NULL, *dict_path = NULL;
  MoelmDictionary *dict = NULL;
  JsonObject *task = NULL;
  gboolean ok = FALSE;
  int vocab = 0;
  if (!resolve_inputs(opt->path, &main_path, ranks, error))
    goto out;
  MoelmTorchFile *f = open_file(&c, main_path, error);
  if (f == NULL || !vocab_rows(&c, f, &vocab, error) ||
      !moelm_fairseq_model_config(moelm_torch_root(f), vocab, main_path, &report->model, &report->fairseq_arch, &task,
                                  report->notes, error))
    goto out;
  if (opt->dict)
    dict_path = g_strdup(opt->dict);
  else {
    char *dir = g_path_get_dirname(main_path); /* fairseq keeps dict.txt beside model.pt */
    dict_path = g_build_filename(dir, "dict.txt", NULL);
    g_free(dir);
  }
  dict = moelm_dictionary_load(dict_path, error);
  if (dict == NULL)
    goto out;
  if ((int)moelm_dictionary_size(dict) != vocab) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH, "%s: %u symbols (4 specials + %u lines), but %s's "
                "embedding has %d rows: not the model's dictionary", dict_path, moelm_dictionary_size(dict),
                moelm_dictionary_size(dict) - 4, main_path, vocab);
    goto out;
  }
  if (ranks->len > 0 && report->model.moe_freq <= 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: expert shards beside a model without MoE layers",
                main_path);
    goto out;
  }
  if (!collect_main(&c, f, report->model.share_embed, ranks->len > 0, error))
    goto out;
  int local = 0;
  for (guint r = 0; r < ranks->len; r++) {
    MoelmTorchFile *rf = open_file(&c, ranks->pdata[r], error);
    if (rf == NULL || !collect_rank(&c, rf, (int)r, &local, error))
      goto out;
  }
  if (ranks->len > 0 && (int)ranks->len * local != report->model.moe_experts) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_MISMATCH, "%s: %u expert shards of %d experts each, but "
                "moe_expert_count is %d", main_path, ranks->len, local, report->model.moe_experts);
    goto out;
  }
  layout = moelm_model_param_layout(&report->model, error);
  if (layout == NULL)
    goto out;
  ok = write_checkpoint(&c, layout, task, dict, error);
out:
  if (layout)
    g_ptr_array_unref(layout);
  if (task)
    json_object_unref(task);
  moelm_dictionary_free(dict);
  g_free(dict_path);
  g_free(main_path);
  g_ptr_array_unref(ranks);
  g_ptr_array_unref(c.buffers);
  g_hash_table_destroy(c.sources);
  g_ptr_array_unref(c.files);
  return ok;
}
