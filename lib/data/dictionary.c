/* moelm — fairseq's Dictionary: symbols, counts, dict.txt load/save, finalize. */
#include "config.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "data/mapped-file.h"
#include "data/unicode-space.h"
#include "data/word-index.h"
#include "moelm/binarizer.h"
#include "moelm/dictionary.h"
#include "moelm/errors.h"
#include "moelm/fileio.h"

struct MoelmDictionary {
  GPtrArray *symbols; /* (n,) owned strings; with #fairseq:overwrite one word may repeat */
  GArray *counts;     /* (n,) int64_t */
  GArray *lens;       /* (n,) guint32 byte length of each symbol */
  MoelmWordIndex index; /* word → index of its latest entry */
};

static MoelmDictionary *dict_alloc(void)
{
  MoelmDictionary *d = g_new0(MoelmDictionary, 1);
  d->symbols = g_ptr_array_new_with_free_func(g_free);
  d->counts = g_array_new(FALSE, FALSE, sizeof(int64_t));
  d->lens = g_array_new(FALSE, FALSE, sizeof(guint32));
  moelm_word_index_init(&d->index);
  return d;
}

static const char *const special_words[MOELM_NSPECIAL] = {"<s>", "<pad>", "</s>", "<unk>"};

MoelmDictionary *moelm_dictionary_new(void)
{
  MoelmDictionary *d = dict_alloc();
  for (int i = 0; i < MOELM_NSPECIAL; i++)
    moelm_dictionary_add_symbol(d, special_words[i], 1, FALSE);
  return d;
}

void moelm_dictionary_free(MoelmDictionary *dict)
{
  if (dict == NULL)
    return;
  moelm_word_index_clear(&dict->index);
  g_ptr_array_unref(dict->symbols);
  g_array_unref(dict->counts);
  g_array_unref(dict->lens);
  g_free(dict);
}

static gboolean lookup_len(const MoelmDictionary *dict, const char *word, gsize len, int32_t *index)
{
  *index = moelm_word_index_find(&dict->index, dict->symbols, dict->lens, word, len);
  return *index >= 0;
}

static gboolean lookup(const MoelmDictionary *dict, const char *word, int32_t *index)
{
  return lookup_len(dict, word, strlen(word), index);
}

static int32_t append_symbol_len(MoelmDictionary *dict, const char *word, gsize len, int64_t n)
{
  int32_t idx = (int32_t)dict->symbols->len;
  guint32 len32 = (guint32)len;
  g_ptr_array_add(dict->symbols, g_strndup(word, len));
  g_array_append_val(dict->counts, n);
  g_array_append_val(dict->lens, len32);
  /* the word now maps to its newest entry, as fairseq's indices[word] = idx does */
  moelm_word_index_set(&dict->index, dict->symbols, dict->lens, idx);
  return idx;
}

static int32_t append_symbol(MoelmDictionary *dict, const char *word, int64_t n)
{
  return append_symbol_len(dict, word, strlen(word), n);
}

int32_t moelm_dictionary_add_symbol_len(MoelmDictionary *dict, const char *word, gsize len, int64_t n,
                                        gboolean overwrite)
{
  int32_t idx;
  if (!overwrite && lookup_len(dict, word, len, &idx)) {
    g_array_index(dict->counts, int64_t, idx) += n;
    return idx;
  }
  return append_symbol_len(dict, word, len, n);
}

int32_t moelm_dictionary_add_symbol(MoelmDictionary *dict, const char *word, int64_t n, gboolean overwrite)
{
  return moelm_dictionary_add_symbol_len(dict, word, strlen(word), n, overwrite);
}

int32_t moelm_dictionary_index_len(const MoelmDictionary *dict, const char *word, gsize len)
{
  int32_t idx;
  return lookup_len(dict, word, len, &idx) ? idx : MOELM_UNK;
}

guint moelm_dictionary_size(const MoelmDictionary *dict) { return dict->symbols->len; }

int32_t moelm_dictionary_index(const MoelmDictionary *dict, const char *word)
{
  int32_t idx;
  return lookup(dict, word, &idx) ? idx : MOELM_UNK;
}

gboolean moelm_dictionary_contains(const MoelmDictionary *dict, const char *word)
{
  int32_t idx;
  return lookup(dict, word, &idx);
}

const char *moelm_dictionary_symbol(const MoelmDictionary *dict, int32_t index)
{
  /* fairseq's __getitem__: an index past the end reads as <unk>. */
  if (index < 0 || (guint)index >= dict->symbols->len)
    return special_words[MOELM_UNK];
  return g_ptr_array_index(dict->symbols, index);
}

int64_t moelm_dictionary_count(const MoelmDictionary *dict, int32_t index)
{
  g_return_val_if_fail(index >= 0 && (guint)index < dict->counts->len, 0);
  return g_array_index(dict->counts, int64_t, index);
}

/* ---- dict.txt ------------------------------------------------------------------------ */

/* Python's int() on the count field: surrounding whitespace, an optional sign, ASCII digits
 * with single underscores between them. (Python also takes non-ASCII decimal digits; dict.txt
 * files never hold them, and they are refused here.) */
static gboolean parse_count(const char *s, gsize len, int64_t *out)
{
  gsize n;
  while (len > 0 && (n = moelm_space_len(s, len)) > 0) {
    s += n;
    len -= n;
  }
  while (len > 0 && (n = moelm_space_len_before(s, len)) > 0)
    len -= n;
  gboolean neg = FALSE;
  if (len > 0 && (*s == '+' || *s == '-')) {
    neg = *s == '-';
    s++;
    len--;
  }
  if (len == 0)
    return FALSE;
  uint64_t v = 0;
  const uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  for (gsize i = 0; i < len; i++) {
    if (s[i] == '_') {
      if (i == 0 || i + 1 == len || s[i - 1] == '_')
        return FALSE;
      continue;
    }
    if (s[i] < '0' || s[i] > '9')
      return FALSE;
    uint64_t d = (uint64_t)(s[i] - '0');
    if (v > (limit - d) / 10)
      return FALSE;
    v = v * 10 + d;
  }
  *out = neg ? (int64_t)(0 - v) : (int64_t)v;
  return TRUE;
}

/* The last " " in s[0, len), or NULL. */
static const char *last_space(const char *s, gsize len)
{
  while (len > 0) {
    if (s[--len] == ' ')
      return s + len;
  }
  return NULL;
}

/* One dict.txt line (no line end), as fairseq's add_from_file reads it. */
static gboolean load_line(MoelmDictionary *d, const char *line, gsize len, GError **error)
{
  if (len > 0 && !g_utf8_validate_len(line, len, NULL)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT,
                memchr(line, '\0', len) ? "contains a NUL byte" : "invalid UTF-8");
    return FALSE;
  }
  gsize n;
  while (len > 0 && (n = moelm_space_len_before(line, len)) > 0) /* str.rstrip() */
    len -= n;
  const char *sp = last_space(line, len);
  if (sp == NULL) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "expected '<token> <cnt> [flags]', found \"%.*s\"", (int)len,
                line);
    return FALSE;
  }
  gsize word_len = (gsize)(sp - line);
  const char *field = sp + 1;
  gsize field_len = len - word_len - 1;
  gboolean overwrite = FALSE;
  static const char flag[] = "#fairseq:overwrite";
  if (field_len == sizeof flag - 1 && memcmp(field, flag, field_len) == 0) {
    overwrite = TRUE;
    sp = last_space(line, word_len);
    if (sp == NULL) {
      g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "expected '<token> <cnt> [flags]', found \"%.*s\"",
                  (int)len, line);
      return FALSE;
    }
    field = sp + 1;
    field_len = word_len - (gsize)(sp - line) - 1;
    word_len = (gsize)(sp - line);
  }
  int64_t count;
  if (!parse_count(field, field_len, &count)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT, "bad count \"%.*s\" (expected an integer)", (int)field_len,
                field);
    return FALSE;
  }
  char *word = g_strndup(line, word_len);
  gboolean ok = TRUE;
  if (!overwrite && moelm_dictionary_contains(d, word)) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_FORMAT,
                "duplicate word '%s' (add #fairseq:overwrite to the line to let it replace the earlier one)", word);
    ok = FALSE;
  } else {
    moelm_dictionary_add_symbol(d, word, count, overwrite);
  }
  g_free(word);
  return ok;
}

MoelmDictionary *moelm_dictionary_load_from_data(const char *data, gsize len, const char *name, GError **error)
{
  MoelmDictionary *d = moelm_dictionary_new();
  gsize pos = 0, line_len;
  const char *line;
  int64_t lineno = 0;
  while (moelm_next_line(data, len, &pos, &line, &line_len)) {
    lineno++;
    if (!load_line(d, line, line_len, error)) {
      moelm_error_prefix(error, "%s:%" G_GINT64_FORMAT, name, lineno);
      moelm_dictionary_free(d);
      return NULL;
    }
  }
  return d;
}

MoelmDictionary *moelm_dictionary_load(const char *path, GError **error)
{
  MoelmMappedFile mf;
  if (!moelm_mapped_file_open(&mf, path, error))
    return NULL;
  MoelmDictionary *d = moelm_dictionary_load_from_data(mf.data, mf.len, path, error);
  moelm_mapped_file_close(&mf);
  return d;
}

char *moelm_dictionary_to_data(const MoelmDictionary *dict, gsize *len)
{
  GString *s = g_string_new(NULL);
  for (guint i = MOELM_NSPECIAL; i < dict->symbols->len; i++)
    g_string_append_printf(s, "%s %" PRId64 "\n", (const char *)g_ptr_array_index(dict->symbols, i),
                           g_array_index(dict->counts, int64_t, i));
  if (len != NULL)
    *len = s->len;
  return g_string_free(s, FALSE);
}

gboolean moelm_dictionary_save(const MoelmDictionary *dict, const char *path, GError **error)
{
  gsize len;
  char *data = moelm_dictionary_to_data(dict, &len);
  gboolean ok = moelm_write_file_atomic(path, data, len, error);
  g_free(data);
  return ok;
}

/* ---- finalize ------------------------------------------------------------------------ */

typedef struct {
  const char *word;
  int64_t count;
} Entry;

static int by_word_then_count(const void *a, const void *b)
{
  const Entry *x = a, *y = b;
  int c = strcmp(x->word, y->word);
  if (c != 0)
    return c;
  return (x->count > y->count) - (x->count < y->count);
}

static int by_count_desc_then_word(const void *a, const void *b)
{
  const Entry *x = a, *y = b;
  if (x->count != y->count)
    return x->count < y->count ? 1 : -1;
  return strcmp(x->word, y->word);
}

void moelm_dictionary_finalize(MoelmDictionary *dict, int64_t threshold, int64_t nwords, int padding_factor)
{
  guint n = dict->symbols->len;
  if (nwords <= 0)
    nwords = n;
  /* fairseq builds Counter(dict(sorted(zip(words, counts)))): sorted by (word, count), so a
   * word repeated through #fairseq:overwrite keeps its largest count, and most_common() (a
   * stable sort by count) breaks ties in code point order = UTF-8 byte order. */
  guint m = n - MOELM_NSPECIAL;
  Entry *e = g_new(Entry, MAX(m, 1));
  for (guint i = 0; i < m; i++) {
    e[i].word = g_ptr_array_index(dict->symbols, MOELM_NSPECIAL + i);
    e[i].count = g_array_index(dict->counts, int64_t, MOELM_NSPECIAL + i);
  }
  qsort(e, m, sizeof *e, by_word_then_count);
  guint u = 0;
  for (guint i = 0; i < m; i++) {
    if (u > 0 && strcmp(e[u - 1].word, e[i].word) == 0)
      e[u - 1] = e[i];
    else
      e[u++] = e[i];
  }
  qsort(e, u, sizeof *e, by_count_desc_then_word);
  int64_t keep = MIN((int64_t)u, nwords - MOELM_NSPECIAL);

  MoelmDictionary *out = dict_alloc();
  for (int i = 0; i < MOELM_NSPECIAL; i++)
    append_symbol(out, g_ptr_array_index(dict->symbols, i), g_array_index(dict->counts, int64_t, i));
  for (int64_t i = 0; i < keep && e[i].count >= threshold; i++)
    append_symbol(out, e[i].word, e[i].count);
  g_free(e);

  /* Swap the new tables in (the entries above still pointed into the old symbols). */
  MoelmDictionary old = *dict;
  *dict = *out;
  *out = old;
  moelm_dictionary_free(out);

  moelm_dictionary_pad_to_multiple(dict, padding_factor);
}

void moelm_dictionary_pad_to_multiple(MoelmDictionary *dict, int padding_factor)
{
  if (padding_factor <= 1)
    return;
  /* As fairseq: add_symbol (not overwrite), so an existing madeupwordNNNN is skipped. */
  for (int i = 0; dict->symbols->len % (guint)padding_factor != 0; i++) {
    char word[32];
    g_snprintf(word, sizeof word, "madeupword%04d", i);
    moelm_dictionary_add_symbol(dict, word, 0, FALSE);
  }
}

void moelm_dictionary_update(MoelmDictionary *dst, const MoelmDictionary *src)
{
  /* fairseq's update(): every symbol of src, specials included, with the count of its
   * latest entry. */
  for (guint i = 0; i < src->symbols->len; i++) {
    const char *word = g_ptr_array_index(src->symbols, i);
    int32_t j;
    if (!lookup(src, word, &j))
      j = (int32_t)i;
    moelm_dictionary_add_symbol(dst, word, g_array_index(src->counts, int64_t, j), FALSE);
  }
}

uint64_t moelm_dictionary_hash(const MoelmDictionary *dict)
{
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (guint i = 0; i < dict->symbols->len; i++) {
    for (const guchar *p = g_ptr_array_index(dict->symbols, i); *p; p++)
      h = (h ^ *p) * UINT64_C(0x100000001b3);
    h = (h ^ (guchar)'\n') * UINT64_C(0x100000001b3);
  }
  return h;
}
