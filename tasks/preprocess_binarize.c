/* moelm preprocess — binarizing with several threads, in file order, on the ordered
 * pipeline (preprocess_pipeline.c): the file is cut into line-aligned steps of about a
 * megabyte, workers turn steps into token ids in memory, and the calling thread appends them
 * to the one output dataset in order while the workers go on. No per-worker temporary
 * datasets are written, re-read and copied, and a slow region of the file does not leave the
 * other workers idle.
 *
 * With --bpe sentencepiece the train split is encoded once: the pass that counts its pieces
 * also writes them to a piece cache (in the run's temporary directory), and binarizing the
 * train split reads the cache instead of running SentencePiece a second time. Cache record
 * per line: u32 piece count, then per piece u32 length, the bytes and a NUL. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <glib/gstdio.h>

#include "moelm/errors.h"
#include "moelm/indexed_dataset.h"
#include "moelm/log.h"
#include "moelm/timer.h"
#include "preprocess_engine.h"

/* ---- token ids of a step, appended to the output in order ---- */

typedef struct {
  GArray *tokens; /* (n_tok,) int32 ids of the step's lines, back to back */
  GArray *sizes;  /* (n_lines,) int32 tokens per line */
  int64_t n_replaced;
} StepIds;

typedef struct {
  const char *path;    /* the input, for messages */
  const char *shown;   /* the file the progress line names */
  const GArray *progress_bounds; /* (n_steps + 1,) step boundaries in that file */
  const char *data;    /* the mapped input (text or piece cache) */
  gsize len;
  const GArray *bounds; /* (n_steps + 1,) gsize, at line (record) starts */
  const MoelmDictionary *dict;
  MoelmLineTokenizer tokenizer;
  gpointer tokenizer_data;
  StepIds *out;        /* (n_steps,) */
  MoelmIndexedDatasetBuilder *builder;
  MoelmBinarizeStats *stats;
} IdsJob;

static gsize bound(const GArray *bounds, guint k) { return g_array_index(bounds, gsize, k); }

/* "PATH:LINE: " before an error at byte `offset` of a text (counts lines: failures only). */
static void prefix_line(GError **error, const char *path, const char *data, gsize len, gsize offset)
{
  gsize pos = 0, line_len, line_no = 0;
  const char *line;
  while (moelm_next_line(data, len, &pos, &line, &line_len)) {
    line_no++;
    if (pos > offset)
      break;
  }
  moelm_error_prefix(error, "%s:%" G_GSIZE_FORMAT, path, line_no);
}

static void step_ids_init(StepIds *o, gsize input_bytes)
{
  o->tokens = g_array_sized_new(FALSE, FALSE, sizeof(int32_t), (guint)(input_bytes / 4 + 16));
  o->sizes = g_array_new(FALSE, FALSE, sizeof(int32_t));
}

static void step_ids_clear(StepIds *o)
{
  g_clear_pointer(&o->tokens, g_array_unref);
  g_clear_pointer(&o->sizes, g_array_unref);
}

/* Text lines -> ids with the dictionary (fairseq's encode_line). */
static gboolean produce_from_text(guint k, int worker, gpointer user, GError **error)
{
  IdsJob *job = user;
  StepIds *o = &job->out[k];
  gsize pos = bound(job->bounds, k), end = bound(job->bounds, k + 1), len;
  step_ids_init(o, end - pos);
  const char *line;
  while (moelm_next_line(job->data, end, &pos, &line, &len)) {
    guint before = o->tokens->len;
    if (!moelm_encode_line(job->dict, line, len, job->tokenizer, job->tokenizer_data, o->tokens, &o->n_replaced,
                           error)) {
      prefix_line(error, job->path, job->data, job->len, (gsize)(line - job->data));
      return FALSE;
    }
    int32_t size = (int32_t)(o->tokens->len - before);
    g_array_append_val(o->sizes, size);
  }
  return TRUE;
}

static guint32 read_u32(const char *p)
{
  guint32 v;
  memcpy(&v, p, 4);
  return v;
}

/* Piece-cache records -> ids: the lookup fairseq's encode_line does for each word. */
static gboolean produce_from_pieces(guint k, int worker, gpointer user, GError **error)
{
  IdsJob *job = user;
  StepIds *o = &job->out[k];
  gsize pos = bound(job->bounds, k), end = bound(job->bounds, k + 1);
  step_ids_init(o, end - pos);
  const int32_t eos = MOELM_EOS;
  const char *unk_word = moelm_dictionary_symbol(job->dict, MOELM_UNK);
  while (pos < end) {
    guint32 n = read_u32(job->data + pos);
    pos += 4;
    for (guint32 i = 0; i < n; i++) {
      guint32 piece_len = read_u32(job->data + pos);
      const char *piece = job->data + pos + 4; /* NUL-terminated in the cache */
      pos += 4 + (gsize)piece_len + 1;
      int32_t id = moelm_dictionary_index(job->dict, piece);
      if (id == MOELM_UNK && strcmp(piece, unk_word) != 0)
        o->n_replaced++;
      g_array_append_val(o->tokens, id);
    }
    g_array_append_val(o->tokens, eos);
    int32_t size = (int32_t)n + 1;
    g_array_append_val(o->sizes, size);
  }
  if (pos != end) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: piece cache is inconsistent", job->path);
    return FALSE;
  }
  return TRUE;
}

static gboolean consume_ids(guint k, gpointer user, GError **error)
{
  IdsJob *job = user;
  StepIds *o = &job->out[k];
  const int32_t *tokens = (const int32_t *)(void *)o->tokens->data;
  gsize offset = 0;
  gboolean ok = TRUE;
  for (guint i = 0; ok && i < o->sizes->len; i++) {
    gsize n = (gsize)g_array_index(o->sizes, int32_t, i);
    ok = moelm_indexed_dataset_builder_add(job->builder, tokens + offset, n, error);
    offset += n;
  }
  job->stats->n_seq += o->sizes->len;
  job->stats->n_tok += (int64_t)o->tokens->len;
  job->stats->n_replaced += o->n_replaced;
  step_ids_clear(o);
  return ok;
}

/* Run an IdsJob whose input is mapped and cut; writes OUT_PREFIX.bin/.idx. */
static gboolean run_ids_job(IdsJob *job, PpProduceFunc produce, const char *out_prefix, int workers,
                            GError **error)
{
  memset(job->stats, 0, sizeof *job->stats);
  job->builder =
      moelm_indexed_dataset_builder_new(out_prefix, moelm_idx_best_dtype(moelm_dictionary_size(job->dict)), error);
  if (job->builder == NULL)
    return FALSE;
  guint n_steps = job->bounds->len - 1;
  job->out = g_new0(StepIds, n_steps);
  double wall0 = moelm_time_now(), cpu0 = pp_cpu_seconds();
  gboolean ok = pp_run_ordered("binarizing", job->shown, job->progress_bounds, workers, produce, consume_ids, job,
                               error);
  moelm_debug("moelm.preprocess", "binarizing %s: %.3f s, %.3f s of CPU, %d workers, %u steps", job->shown,
              moelm_time_now() - wall0, pp_cpu_seconds() - cpu0, workers, n_steps);
  if (ok) {
    double t0 = moelm_time_now();
    ok = moelm_indexed_dataset_builder_finish(job->builder, error); /* frees the builder either way */
    moelm_debug("moelm.preprocess", "writing %s.idx: %.3f s", out_prefix, moelm_time_now() - t0);
  } else {
    moelm_indexed_dataset_builder_abort(job->builder);
  }
  job->builder = NULL;
  for (guint k = 0; k < n_steps; k++)
    step_ids_clear(&job->out[k]);
  g_clear_pointer(&job->out, g_free);
  return ok;
}

static GMappedFile *map_input(const char *path, GError **error)
{
  GMappedFile *map = g_mapped_file_new(path, FALSE, NULL);
  if (map == NULL)
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s: cannot open or map the file", path);
  return map;
}

gboolean pp_binarize(const char *path, const char *out_prefix, int workers, const MoelmDictionary *dict,
                     MoelmLineTokenizer tokenizer, gpointer tokenizer_data, MoelmBinarizeStats *stats,
                     GError **error)
{
  GMappedFile *map = map_input(path, error);
  if (map == NULL)
    return FALSE;
  IdsJob job = {
      .path = path,
      .data = g_mapped_file_get_contents(map),
      .len = g_mapped_file_get_length(map),
      .dict = dict,
      .tokenizer = tokenizer,
      .tokenizer_data = tokenizer_data,
      .stats = stats,
  };
  GArray *bounds = pp_cut_steps(job.data, job.len);
  job.bounds = job.progress_bounds = bounds;
  job.shown = path;
  gboolean ok = run_ids_job(&job, produce_from_text, out_prefix, workers, error);
  g_array_unref(bounds);
  g_mapped_file_unref(map);
  return ok;
}

gboolean pp_binarize_pieces(const PpPieceCache *cache, const char *out_prefix, int workers,
                            const MoelmDictionary *dict, MoelmBinarizeStats *stats, GError **error)
{
  GMappedFile *map = map_input(cache->path, error);
  if (map == NULL)
    return FALSE;
  IdsJob job = {
      .path = cache->path,
      .shown = cache->input,
      .progress_bounds = cache->input_bounds,
      .data = g_mapped_file_get_contents(map),
      .len = g_mapped_file_get_length(map),
      .bounds = cache->bounds,
      .dict = dict,
      .stats = stats,
  };
  gboolean ok = bound(cache->bounds, cache->bounds->len - 1) == job.len;
  if (!ok)
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: piece cache has the wrong size", cache->path);
  ok = ok && run_ids_job(&job, produce_from_pieces, out_prefix, workers, error);
  g_mapped_file_unref(map);
  return ok;
}

/* ---- the train split into the piece cache, counting the pieces ---- */

typedef struct {
  const char *path;
  const char *data;
  gsize len;
  const GArray *bounds;
  MoelmLineTokenizer tokenizer;
  gpointer tokenizer_data;
  MoelmDictionary **counts; /* (workers,) one counter per worker */
  GByteArray **out;         /* (n_steps,) the step's records */
  FILE *cache;
  PpPieceCache *result;
} PiecesJob;

static void append_u32(GByteArray *buf, guint32 v) { g_byte_array_append(buf, (const guint8 *)&v, 4); }

static gboolean produce_pieces(guint k, int worker, gpointer user, GError **error)
{
  PiecesJob *job = user;
  MoelmDictionary *counts = job->counts[worker];
  gsize pos = bound(job->bounds, k), end = bound(job->bounds, k + 1), len;
  GByteArray *buf = job->out[k] = g_byte_array_sized_new((guint)((end - pos) * 3 / 2 + 64));
  const char *line;
  while (moelm_next_line(job->data, end, &pos, &line, &len)) {
    GPtrArray *pieces = job->tokenizer(line, len, job->tokenizer_data, error);
    if (pieces == NULL) {
      prefix_line(error, job->path, job->data, job->len, (gsize)(line - job->data));
      return FALSE;
    }
    append_u32(buf, pieces->len);
    for (guint i = 0; i < pieces->len; i++) {
      const char *piece = g_ptr_array_index(pieces, i);
      guint32 piece_len = (guint32)strlen(piece);
      append_u32(buf, piece_len);
      g_byte_array_append(buf, (const guint8 *)piece, piece_len + 1);
      moelm_dictionary_add_symbol(counts, piece, 1, FALSE);
    }
    moelm_dictionary_add_symbol(counts, "</s>", 1, FALSE); /* once per line, as fairseq counts */
    g_ptr_array_unref(pieces);
  }
  return TRUE;
}

static gboolean consume_pieces(guint k, gpointer user, GError **error)
{
  PiecesJob *job = user;
  GByteArray *buf = job->out[k];
  gboolean ok = fwrite(buf->data, 1, buf->len, job->cache) == buf->len;
  if (!ok)
    moelm_set_error_errno(error, errno, job->result->path, "write failed");
  gsize end = bound(job->result->bounds, job->result->bounds->len - 1) + buf->len;
  g_array_append_val(job->result->bounds, end);
  g_byte_array_unref(buf);
  job->out[k] = NULL;
  return ok;
}

MoelmDictionary *pp_encode_pieces(const char *path, const char *cache_path, int workers,
                                  MoelmLineTokenizer tokenizer, gpointer tokenizer_data, PpPieceCache *cache,
                                  GError **error)
{
  cache->path = g_strdup(cache_path);
  cache->input = g_strdup(path);
  cache->bounds = g_array_new(FALSE, FALSE, sizeof(gsize));
  gsize zero = 0;
  g_array_append_val(cache->bounds, zero);
  GMappedFile *map = map_input(path, error);
  if (map == NULL)
    return NULL;
  PiecesJob job = {
      .path = path,
      .data = g_mapped_file_get_contents(map),
      .len = g_mapped_file_get_length(map),
      .tokenizer = tokenizer,
      .tokenizer_data = tokenizer_data,
      .counts = g_new(MoelmDictionary *, workers),
      .cache = g_fopen(cache_path, "wb"),
      .result = cache,
  };
  GArray *bounds = cache->input_bounds = pp_cut_steps(job.data, job.len);
  job.bounds = bounds;
  job.out = g_new0(GByteArray *, bounds->len);
  for (int w = 0; w < workers; w++)
    job.counts[w] = moelm_dictionary_new();
  gboolean ok = job.cache != NULL;
  if (!ok)
    moelm_set_error_errno(error, errno, cache_path, "cannot create");
  double wall0 = moelm_time_now(), cpu0 = pp_cpu_seconds();
  ok = ok && pp_run_ordered("encoding", path, bounds, workers, produce_pieces, consume_pieces, &job, error);
  moelm_debug("moelm.preprocess", "encoding %s into pieces: %.3f s, %.3f s of CPU, %d workers", path,
              moelm_time_now() - wall0, pp_cpu_seconds() - cpu0, workers);
  if (job.cache && fclose(job.cache) != 0 && ok) {
    moelm_set_error_errno(error, errno, cache_path, "write failed");
    ok = FALSE;
  }
  /* The first worker's counter becomes the result (the counts do not depend on which worker
   * counted which step; finalize() sorts by count and text). */
  for (int w = 1; w < workers; w++) {
    if (ok)
      moelm_dictionary_update(job.counts[0], job.counts[w]);
    moelm_dictionary_free(job.counts[w]);
  }
  MoelmDictionary *counts = job.counts[0];
  if (!ok)
    g_clear_pointer(&counts, moelm_dictionary_free);
  for (guint k = 0; k < bounds->len; k++)
    if (job.out[k])
      g_byte_array_unref(job.out[k]);
  g_free(job.out);
  g_free(job.counts);
  g_mapped_file_unref(map);
  return counts;
}

void pp_piece_cache_clear(PpPieceCache *cache)
{
  if (cache->path)
    g_unlink(cache->path);
  g_clear_pointer(&cache->path, g_free);
  g_clear_pointer(&cache->input, g_free);
  g_clear_pointer(&cache->bounds, g_array_unref);
  g_clear_pointer(&cache->input_bounds, g_array_unref);
}
