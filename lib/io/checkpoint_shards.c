/* moelm — the rank files of an expert-parallel checkpoint (see lib/moelm/checkpoint.h). */
#include "config.h"

#include <string.h>

#include "io/checkpoint_internal.h"
#include "moelm/errors.h"
#include "moelm/json.h"

static const char *meta_text(const MoelmSafetensors *st, const char *key)
{
  return moelm_safetensors_metadata(st, key);
}

/* {"rank": R, "world": W} of a shard file; FALSE when absent or malformed. */
static gboolean shard_info(const MoelmSafetensors *st, int *rank, int *world)
{
  const char *text = meta_text(st, "expert_shard");
  if (text == NULL)
    return FALSE;
  JsonNode *node = json_from_string(text, NULL);
  gboolean ok = node && JSON_NODE_HOLDS_OBJECT(node);
  if (ok) { /* typed and bounded: a world of 2^32 + 1 must not wrap to 1 */
    JsonObject *o = json_node_get_object(node);
    *rank = -1;
    *world = 0;
    ok = moelm_json_get_int(o, "world", 1, MOELM_MODEL_MAX_EXPERTS, world, NULL) &&
         moelm_json_get_int(o, "rank", 0, MOELM_MODEL_MAX_EXPERTS, rank, NULL) && *world >= 1 && *rank < *world;
  }
  if (node)
    json_node_unref(node);
  return ok;
}

/* The update a file was saved at (-1 when it does not say). */
static gint64 saved_update(const MoelmSafetensors *st)
{
  const char *text = meta_text(st, "train_state");
  JsonNode *node = text ? json_from_string(text, NULL) : NULL;
  gint64 u = node && JSON_NODE_HOLDS_OBJECT(node)
                 ? json_object_get_int_member_with_default(json_node_get_object(node), "num_updates", -1)
                 : -1;
  if (node)
    json_node_unref(node);
  return u;
}

gboolean moelm_checkpoint_open_shards(MoelmCheckpoint *ckpt, gboolean sharded, GError **error)
{
  int rank = 0, world = 0;
  if (!shard_info(ckpt->st, &rank, &world)) {
    if (meta_text(ckpt->st, "expert_shard") != NULL) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: malformed expert_shard metadata", ckpt->path);
      return FALSE;
    }
    return TRUE; /* one file holds everything */
  }
  /* the stem: NAME of NAME.pt, NAME-shared.pt or NAME-rank-R.pt */
  char *stem = g_strdup(ckpt->path);
  char *cut = g_strrstr(stem, "-shared.pt");
  if (cut == NULL)
    cut = g_strrstr(stem, "-rank-");
  if (cut == NULL && g_str_has_suffix(stem, ".pt"))
    cut = stem + strlen(stem) - 3;
  if (cut)
    *cut = '\0';
  char *base = g_strconcat(stem, ".pt", NULL);
  g_free(stem);
  gboolean ok = TRUE;
  if (!sharded && rank != 0) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG,
                "%s: one rank's experts of a sharded checkpoint; give the checkpoint's name (%s) or its -shared.pt",
                ckpt->path, base);
    ok = FALSE;
  }
  const int E = ckpt->model.moe_experts;
  if (ok && (ckpt->model.moe_freq <= 0 || E % world != 0)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: %d expert ranks do not divide the model's %d experts",
                ckpt->path, world, E);
    ok = FALSE;
  }
  const gint64 update = saved_update(ckpt->st);
  if (ok) {
    ckpt->experts_per_shard = E / world;
    ckpt->shards = g_new0(MoelmSafetensors *, world);
    ckpt->n_shards = world;
  }
  for (int r = 0; ok && r < world; r++) {
    char *path = moelm_checkpoint_part_path(base, MOELM_CKPT_EXPERTS, r);
    ckpt->shards[r] = moelm_safetensors_open(path, error);
    int rr = -1, ww = 0;
    if (ckpt->shards[r] == NULL) {
      ok = FALSE;
    } else if (!shard_info(ckpt->shards[r], &rr, &ww) || rr != r || ww != world) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: not rank %d of %d of %s", path, r, world, base);
      ok = FALSE;
    } else if (saved_update(ckpt->shards[r]) != update) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT,
                  "%s: saved at update %" G_GINT64_FORMAT " but its shared file at %" G_GINT64_FORMAT
                  " (the files of one checkpoint must come from the same save)",
                  path, saved_update(ckpt->shards[r]), update);
      ok = FALSE;
    }
    g_free(path);
  }
  g_free(base);
  return ok;
}
