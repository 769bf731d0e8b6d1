/* Hostile checkpoints, crafted from a good one through the safetensors reader and writer. */
#include "config.h"

#include <string.h>

#include "crafted.h"
#include "moelm-test.h"
#include "moelm/json.h"
#include "moelm/safetensors.h"

/* How to change the copy: the metadata KEY (a member of it, or all of it), or one weight. */
typedef struct {
  const char *key, *member, *value; /* member NULL: value replaces the whole text */
  gboolean whole;
  const char *tensor;
  gsize index;
  float weight;
} Change;

static char *edit_member(const char *text, const Change *c)
{
  JsonParser *p = json_parser_new();
  CU_ASSERT_TRUE_FATAL(json_parser_load_from_data(p, text, -1, NULL));
  JsonNode *root = json_node_copy(json_parser_get_root(p));
  g_object_unref(p);
  CU_ASSERT_TRUE_FATAL(JSON_NODE_HOLDS_OBJECT(root));
  JsonObject *o = json_node_get_object(root);
  if (c->value == NULL) {
    json_object_remove_member(o, c->member);
  } else {
    JsonParser *vp = json_parser_new();
    CU_ASSERT_TRUE_FATAL(json_parser_load_from_data(vp, c->value, -1, NULL));
    json_object_set_member(o, c->member, json_node_copy(json_parser_get_root(vp)));
    g_object_unref(vp);
  }
  char *out = moelm_json_to_string(root);
  json_node_unref(root);
  return out;
}

static char *write_copy(const char *dir, const char *name, const char *src, const Change *c)
{
  GError *error = NULL;
  MoelmSafetensors *st = moelm_safetensors_open(src, &error);
  CU_ASSERT_PTR_NOT_NULL_FATAL(st);
  MoelmSafetensorsWriter *w = moelm_safetensors_writer_new();
  GPtrArray *owned = g_ptr_array_new_with_free_func(g_free);
  for (gsize i = 0; i < moelm_safetensors_n_tensors(st); i++) {
    const MoelmTensorInfo *t = moelm_safetensors_tensor(st, i);
    const void *data = moelm_safetensors_data(st, t);
    if (c->tensor && strcmp(t->name, c->tensor) == 0) {
      CU_ASSERT_FATAL((c->index + 1) * sizeof(float) <= t->end - t->begin);
      float *copy = g_malloc(t->end - t->begin);
      memcpy(copy, data, t->end - t->begin);
      copy[c->index] = c->weight;
      g_ptr_array_add(owned, copy);
      data = copy;
    }
    CU_ASSERT_TRUE_FATAL(moelm_safetensors_writer_add(w, t->name, t->dtype, t->ndim, t->shape, data, NULL));
  }
  gboolean found = c->key == NULL;
  for (const char *const *k = moelm_safetensors_metadata_keys(st); *k; k++) {
    const char *text = moelm_safetensors_metadata(st, *k);
    if (c->key == NULL || strcmp(*k, c->key) != 0) {
      moelm_safetensors_writer_set_metadata(w, *k, text);
      continue;
    }
    found = TRUE;
    if (c->whole) {
      if (c->value)
        moelm_safetensors_writer_set_metadata(w, *k, c->value);
    } else {
      char *edited = edit_member(text, c);
      moelm_safetensors_writer_set_metadata(w, *k, edited);
      g_free(edited);
    }
  }
  if (!found && c->whole && c->value)
    moelm_safetensors_writer_set_metadata(w, c->key, c->value);
  else
    CU_ASSERT_TRUE(found);
  char *path = g_build_filename(dir, name, NULL);
  CU_ASSERT_TRUE_FATAL(moelm_safetensors_writer_write(w, path, NULL));
  moelm_safetensors_writer_free(w);
  g_ptr_array_unref(owned);
  moelm_safetensors_close(st);
  return path;
}

char *crafted_member(const char *dir, const char *name, const char *src, const char *key, const char *member,
                     const char *value)
{
  const Change c = {.key = key, .member = member, .value = value};
  return write_copy(dir, name, src, &c);
}

char *crafted_meta(const char *dir, const char *name, const char *src, const char *key, const char *text)
{
  const Change c = {.key = key, .value = text, .whole = TRUE};
  return write_copy(dir, name, src, &c);
}

char *crafted_weight(const char *dir, const char *name, const char *src, const char *tensor, gsize index,
                     float value)
{
  const Change c = {.tensor = tensor, .index = index, .weight = value};
  return write_copy(dir, name, src, &c);
}

void crafted_check_error(int rc, const char *err, int status, const char *const *needles)
{
  moelm_test_check_sanitizers(err);
  const char *line = err ? strstr(err, "error:") : NULL;
  const char *nl = line ? strchr(line, '\n') : NULL;
  gboolean ok = rc == status && line && nl && nl[1] == '\0';
  for (const char *const *n = needles; ok && *n; n++)
    ok = g_strstr_len(line, nl - line, *n) != NULL;
  if (g_getenv("CRAFTED_VERBOSE"))
    g_printerr("\n  %s", err);
  if (!ok) {
    g_printerr("\n  exit %d (expected %d), stderr: %s  expected one error line with:", rc, status, err ? err : "");
    for (const char *const *n = needles; *n; n++)
      g_printerr(" '%s'", *n);
    g_printerr("\n");
  }
  CU_ASSERT_TRUE(ok);
}

void crafted_check_fails(const char *const *args, int status, const char *const *needles)
{
  char *err = NULL;
  const int rc = moelm_test_run_cli(args, NULL, NULL, &err);
  crafted_check_error(rc, err, status, needles);
  g_free(err);
}
