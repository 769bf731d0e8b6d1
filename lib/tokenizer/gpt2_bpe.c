/* moelm — GPT-2 byte-level BPE: the vocabulary as byte strings, merges as (id, id) → id with a
 * rank, PCRE2 for the pre-tokenising pattern, a per-thread cache of encoded pieces. */
#include "config.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include <json-glib/json-glib.h>

#include "moelm/binarizer.h"
#include "moelm/errors.h"
#include "moelm/gpt2_bpe.h"

/* GPT-2's pattern; \s and \S as Python's `regex` module reads them: Unicode White_Space. */
static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\p{White_Space}\\p{L}\\p{N}]+"
                                   "|\\p{White_Space}+(?!\\P{White_Space})|\\p{White_Space}+";

#define CACHE_MAX 200000 /* pieces cached per thread before the cache is emptied */

typedef struct {
  int32_t rank, result;
} Merge;

struct MoelmGpt2Bpe {
  guint64 generation;   /* tells a thread's cache which object it belongs to */
  GPtrArray *token_bytes; /* id → GBytes* (NULL for an unused id) */
  int32_t byte_id[256];  /* the one-byte tokens */
  GHashTable *merges;    /* (a << 32 | b) → Merge* */
  GArray *merge_store;   /* Merge */
  guint n_merges;
  pcre2_code *re;
};

typedef struct {
  guint64 generation;
  pcre2_match_data *md;
  GHashTable *cache; /* piece bytes (GBytes*) → GArray of int32 */
} ThreadState;

static void thread_state_free(gpointer p)
{
  ThreadState *t = p;
  if (t == NULL)
    return;
  pcre2_match_data_free(t->md);
  g_hash_table_destroy(t->cache);
  g_free(t);
}

static GPrivate thread_state = G_PRIVATE_INIT(thread_state_free);
static gint next_generation = 1; /* atomic */

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * for U+0100 onwards, in byte order. Returns the byte a code point stands for, -1 if none. */
static int unicode_to_byte(gunichar c)
{
  static int table[324];
  static gsize done = 0;
  if (g_once_init_enter(&done)) {
    for (int i = 0; i < 324; i++)
      table[i] = -1;
    int n = 0;
    for (int b = 0; b < 256; b++) {
      const gboolean printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
      table[printable ? b : 256 + n++] = b;
    }
    g_once_init_leave(&done, 1);
  }
  return c < 324 ? table[c] : -1;
}

static void merge_key_free(gpointer p) { g_free(p); }

static guint64 *pair_key(int32_t a, int32_t b)
{
  guint64 *k = g_new(guint64, 1);
  *k = (guint64)(guint32)a << 32 | (guint32)b;
  return k;
}

/* A token's text in GPT-2's alphabet → its bytes; NULL if a character is outside it. */
static GBytes *token_to_bytes(const char *text)
{
  GByteArray *out = g_byte_array_new();
  for (const char *p = text; *p; p = g_utf8_next_char(p)) {
    const int b = unicode_to_byte(g_utf8_get_char(p));
    if (b < 0) {
      g_byte_array_unref(out);
      return NULL;
    }
    guint8 v = (guint8)b;
    g_byte_array_append(out, &v, 1);
  }
  return g_byte_array_free_to_bytes(out);
}

static gboolean load_encoder(MoelmGpt2Bpe *bpe, const char *path, GHashTable *by_bytes, GError **error)
{
  JsonParser *parser = json_parser_new();
  GError *perr = NULL;
  gboolean ok = FALSE;
  if (!json_parser_load_from_mapped_file(parser, path, &perr)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: not a GPT-2 encoder.json: %s", path, perr->message);
    g_error_free(perr);
    goto out;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: not a JSON object of token → id", path);
    goto out;
  }
  JsonObjectIter it;
  const char *key;
  JsonNode *val;
  json_object_iter_init(&it, json_node_get_object(root));
  while (json_object_iter_next(&it, &key, &val)) {
    const gint64 id = JSON_NODE_HOLDS_VALUE(val) && json_node_get_value_type(val) == G_TYPE_INT64
                          ? json_node_get_int(val)
                          : -1;
    GBytes *bytes = token_to_bytes(key);
    if (id < 0 || id >= (1 << 24) || bytes == NULL || g_bytes_get_size(bytes) == 0) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: token '%s': %s", path, key,
                  bytes == NULL || g_bytes_get_size(bytes) == 0 ? "not in GPT-2's byte alphabet"
                                                                : "its id is not an integer in [0, 2^24)");
      if (bytes)
        g_bytes_unref(bytes);
      goto out;
    }
    if ((guint)id >= bpe->token_bytes->len)
      g_ptr_array_set_size(bpe->token_bytes, (guint)id + 1);
    if (bpe->token_bytes->pdata[id] != NULL || g_hash_table_contains(by_bytes, bytes)) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: token '%s' or its id %" G_GINT64_FORMAT
                  " appears twice", path, key, id);
      g_bytes_unref(bytes);
      goto out;
    }
    bpe->token_bytes->pdata[id] = bytes;
    g_hash_table_insert(by_bytes, g_bytes_ref(bytes), GINT_TO_POINTER((int)id + 1));
  }
  for (int b = 0; b < 256; b++) {
    guint8 v = (guint8)b;
    GBytes *one = g_bytes_new(&v, 1);
    const int id = GPOINTER_TO_INT(g_hash_table_lookup(by_bytes, one)) - 1;
    g_bytes_unref(one);
    if (id < 0) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: no token for byte 0x%02x", path, b);
      goto out;
    }
    bpe->byte_id[b] = id;
  }
  ok = TRUE;
out:
  g_object_unref(parser);
  return ok;
}

static int32_t lookup(GHashTable *by_bytes, const char *text, gboolean *outside)
{
  GBytes *b = token_to_bytes(text);
  *outside = b == NULL;
  if (b == NULL)
    return -1;
  const int id = GPOINTER_TO_INT(g_hash_table_lookup(by_bytes, b)) - 1;
  g_bytes_unref(b);
  return id;
}

static gboolean load_merges(MoelmGpt2Bpe *bpe, const char *path, GHashTable *by_bytes, GError **error)
{
  char *text = NULL;
  gsize len = 0;
  GError *ferr = NULL;
  if (!g_file_get_contents(path, &text, &len, &ferr)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_IO, "%s", ferr->message);
    g_error_free(ferr);
    return FALSE;
  }
  gboolean ok = g_utf8_validate(text, (gssize)len, NULL);
  if (!ok)
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s: not UTF-8 text", path);
  char **lines = ok ? g_strsplit(text, "\n", -1) : NULL;
  for (guint i = 0; ok && lines[i]; i++) {
    const char *line = lines[i];
    if (i == 0 && g_str_has_prefix(line, "#version"))
      continue;
    char **parts = g_strsplit_set(line, " \t\r", -1);
    const char *ab[2] = {NULL, NULL};
    int n = 0;
    for (char **p = parts; *p; p++) {
      if (**p == '\0')
        continue;
      if (n < 2)
        ab[n] = *p;
      n++;
    }
    if (n == 0) { /* the empty last line */
      g_strfreev(parts);
      continue;
    }
    gboolean out_a, out_b, out_r;
    const int32_t a = n == 2 ? lookup(by_bytes, ab[0], &out_a) : -1, b = n == 2 ? lookup(by_bytes, ab[1], &out_b) : -1;
    char *joined = n == 2 ? g_strconcat(ab[0], ab[1], NULL) : NULL;
    const int32_t r = n == 2 ? lookup(by_bytes, joined, &out_r) : -1;
    if (n != 2 || out_a || out_b) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s:%u: a merge is two tokens of GPT-2's alphabet", path,
                  i + 1);
      ok = FALSE;
    } else if (a >= 0 && b >= 0) { /* a merge of tokens that never exist cannot apply */
      guint64 *key = pair_key(a, b);
      if (r < 0) {
        g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "%s:%u: merge '%s %s' makes a token encoder.json lacks",
                    path, i + 1, ab[0], ab[1]);
        ok = FALSE;
        g_free(key);
      } else if (g_hash_table_contains(bpe->merges, key)) {
        /* a repeated merge takes its last rank, as GPT-2's dict(zip(merges, ranks)) does */
        const guint at = GPOINTER_TO_UINT(g_hash_table_lookup(bpe->merges, key));
        g_array_index(bpe->merge_store, Merge, at - 1).rank = (int32_t)bpe->n_merges;
        g_free(key);
      } else {
        Merge m = {(int32_t)bpe->n_merges, r};
        g_array_append_val(bpe->merge_store, m);
        g_hash_table_insert(bpe->merges, key, GUINT_TO_POINTER(bpe->merge_store->len));
      }
    }
    bpe->n_merges++;
    g_free(joined);
    g_strfreev(parts);
  }
  g_strfreev(lines);
  g_free(text);
  return ok;
}

MoelmGpt2Bpe *moelm_gpt2_bpe_load(const char *encoder_json, const char *vocab_bpe, GError **error)
{
  MoelmGpt2Bpe *bpe = g_new0(MoelmGpt2Bpe, 1);
  bpe->generation = (guint64)g_atomic_int_add(&next_generation, 1);
  bpe->token_bytes = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
  bpe->merges = g_hash_table_new_full(g_int64_hash, g_int64_equal, merge_key_free, NULL);
  bpe->merge_store = g_array_new(FALSE, FALSE, sizeof(Merge));
  GHashTable *by_bytes = g_hash_table_new_full(g_bytes_hash, g_bytes_equal, (GDestroyNotify)g_bytes_unref, NULL);
  gboolean ok = load_encoder(bpe, encoder_json, by_bytes, error) && load_merges(bpe, vocab_bpe, by_bytes, error);
  g_hash_table_destroy(by_bytes);
  if (ok) {
    int code;
    PCRE2_SIZE at;
    bpe->re = pcre2_compile((PCRE2_SPTR)GPT2_PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
    if (bpe->re == NULL) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_FAILED, "PCRE2 cannot compile GPT-2's pattern (error %d)", code);
      ok = FALSE;
    } else
      pcre2_jit_compile(bpe->re, PCRE2_JIT_COMPLETE); /* optional: the interpreter is the fallback */
  }
  if (!ok) {
    moelm_gpt2_bpe_free(bpe);
    return NULL;
  }
  return bpe;
}

void moelm_gpt2_bpe_free(MoelmGpt2Bpe *bpe)
{
  if (bpe == NULL)
    return;
  pcre2_code_free(bpe->re);
  g_hash_table_destroy(bpe->merges);
  g_array_free(bpe->merge_store, TRUE);
  g_ptr_array_free(bpe->token_bytes, TRUE);
  g_free(bpe);
}

int moelm_gpt2_bpe_vocab_size(const MoelmGpt2Bpe *bpe) { return (int)bpe->token_bytes->len; }
guint moelm_gpt2_bpe_n_merges(const MoelmGpt2Bpe *bpe) { return bpe->n_merges; }

static const Merge *find_merge(const MoelmGpt2Bpe *bpe, int32_t a, int32_t b)
{
  const guint64 key = (guint64)(guint32)a << 32 | (guint32)b;
  const guint i = GPOINTER_TO_UINT(g_hash_table_lookup(bpe->merges, &key));
  return i ? &g_array_index(bpe->merge_store, Merge, i - 1) : NULL;
}

/* GPT-2's bpe(): merge the lowest-ranked adjacent pair, every occurrence left to right, until
 * no pair has a rank. `sym` holds the piece's byte tokens and is rewritten in place. */
static void bpe_piece(const MoelmGpt2Bpe *bpe, GArray *sym)
{
  int32_t *s = (int32_t *)sym->data;
  while (sym->len > 1) {
    int32_t best = G_MAXINT32, a = -1, b = -1, result = -1;
    for (guint i = 0; i + 1 < sym->len; i++) {
      const Merge *m = find_merge(bpe, s[i], s[i + 1]);
      if (m && m->rank < best) {
        best = m->rank;
        a = s[i];
        b = s[i + 1];
        result = m->result;
      }
    }
    if (result < 0)
      break;
    guint out = 0;
    for (guint i = 0; i < sym->len;) {
      if (i + 1 < sym->len && s[i] == a && s[i + 1] == b) {
        s[out++] = result;
        i += 2;
      } else
        s[out++] = s[i++];
    }
    g_array_set_size(sym, out);
  }
}

static ThreadState *state_for(const MoelmGpt2Bpe *bpe)
{
  ThreadState *t = g_private_get(&thread_state);
  if (t && t->generation == bpe->generation)
    return t;
  t = g_new0(ThreadState, 1);
  t->generation = bpe->generation;
  t->md = pcre2_match_data_create_from_pattern(bpe->re, NULL);
  t->cache = g_hash_table_new_full(g_bytes_hash, g_bytes_equal, (GDestroyNotify)g_bytes_unref,
                                   (GDestroyNotify)g_array_unref);
  g_private_replace(&thread_state, t);
  return t;
}

gboolean moelm_gpt2_bpe_encode(const MoelmGpt2Bpe *bpe, const char *text, gsize len, GArray *ids, GError **error)
{
  if (!g_utf8_validate_len(text, len, NULL)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "GPT-2 BPE: the text is not valid UTF-8");
    return FALSE;
  }
  ThreadState *t = state_for(bpe);
  GArray *sym = g_array_new(FALSE, FALSE, sizeof(int32_t));
  gsize pos = 0;
  gboolean ok = TRUE;
  while (pos < len) {
    const int rc = pcre2_match(bpe->re, (PCRE2_SPTR)text, len, pos, PCRE2_NO_UTF_CHECK, t->md, NULL);
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(t->md);
    if (rc < 0 || ov[0] != pos || ov[1] <= pos) { /* every character matches one alternative */
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_FAILED, "GPT-2 BPE: the pattern stopped at byte %" G_GSIZE_FORMAT,
                  pos);
      ok = FALSE;
      break;
    }
    GBytes *piece = g_bytes_new(text + pos, ov[1] - pos);
    GArray *cached = g_hash_table_lookup(t->cache, piece);
    if (cached == NULL) {
      g_array_set_size(sym, 0);
      for (gsize i = pos; i < ov[1]; i++) {
        const int32_t id = bpe->byte_id[(guint8)text[i]];
        g_array_append_val(sym, id);
      }
      bpe_piece(bpe, sym);
      if (g_hash_table_size(t->cache) >= CACHE_MAX)
        g_hash_table_remove_all(t->cache);
      cached = g_array_sized_new(FALSE, FALSE, sizeof(int32_t), sym->len);
      g_array_append_vals(cached, sym->data, sym->len);
      g_hash_table_insert(t->cache, g_bytes_ref(piece), cached);
    }
    g_array_append_vals(ids, cached->data, cached->len);
    g_bytes_unref(piece);
    pos = ov[1];
  }
  g_array_unref(sym);
  return ok;
}

gboolean moelm_gpt2_bpe_decode(const MoelmGpt2Bpe *bpe, const int32_t *ids, gsize n, GString *out, GError **error)
{
  for (gsize i = 0; i < n; i++) {
    GBytes *b = ids[i] >= 0 && (guint)ids[i] < bpe->token_bytes->len ? bpe->token_bytes->pdata[ids[i]] : NULL;
    if (b == NULL) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "GPT-2 BPE: no token has id %d", ids[i]);
      return FALSE;
    }
    gsize sz;
    const char *d = g_bytes_get_data(b, &sz);
    g_string_append_len(out, d, (gssize)sz);
  }
  return TRUE;
}

GPtrArray *moelm_gpt2_bpe_encode_words(const MoelmGpt2Bpe *bpe, const char *text, gsize len, GError **error)
{
  GArray *ids = g_array_new(FALSE, FALSE, sizeof(int32_t));
  if (!moelm_gpt2_bpe_encode(bpe, text, len, ids, error)) {
    g_array_unref(ids);
    return NULL;
  }
  GPtrArray *words = g_ptr_array_new_full(ids->len, g_free);
  for (guint i = 0; i < ids->len; i++)
    g_ptr_array_add(words, g_strdup_printf("%d", g_array_index(ids, int32_t, i)));
  g_array_unref(ids);
  return words;
}

/* A word that is a GPT-2 id, as fairseq writes them (decimal, no sign, no leading zero). */
static gboolean word_id(const MoelmGpt2Bpe *bpe, const char *word, int32_t *id)
{
  if (!g_ascii_isdigit(word[0]) || (word[0] == '0' && word[1] != '\0') || strlen(word) > 9)
    return FALSE;
  for (const char *p = word; *p; p++)
    if (!g_ascii_isdigit(*p))
      return FALSE;
  const long v = strtol(word, NULL, 10);
  if (v >= (long)bpe->token_bytes->len || bpe->token_bytes->pdata[v] == NULL)
    return FALSE;
  *id = (int32_t)v;
  return TRUE;
}

char *moelm_gpt2_bpe_decode_words(const MoelmGpt2Bpe *bpe, const char *const *words, gsize n)
{
  GString *out = g_string_new(NULL);
  for (gsize i = 0; i < n; i++) {
    int32_t id;
    if (word_id(bpe, words[i], &id))
      moelm_gpt2_bpe_decode(bpe, &id, 1, out, NULL);
    else
      g_string_append(out, words[i]);
  }
  char *text = g_utf8_make_valid(out->str, (gssize)out->len);
  g_string_free(out, TRUE);
  return text;
}

gboolean moelm_gpt2_bpe_word_starts_with_space(const MoelmGpt2Bpe *bpe, const char *word)
{
  int32_t id;
  if (!word_id(bpe, word, &id))
    return FALSE;
  gsize sz;
  const char *d = g_bytes_get_data(bpe->token_bytes->pdata[id], &sz);
  return sz > 0 && d[0] == ' ';
}

GPtrArray *moelm_gpt2_bpe_tokenize_line(const char *line, gsize len, gpointer bpe, GError **error)
{
  gsize a, b;
  moelm_strip_spaces(line, len, &a, &b); /* fairseq's encoder script: line.strip() */
  return moelm_gpt2_bpe_encode_words(bpe, line + a, b - a, error);
}
