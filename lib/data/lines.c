/* moelm — lines and words with Python's rules: universal newlines, str.isspace() splitting,
 * and the line ranges that let workers binarize one file in parallel. */
#include "config.h"

#include <string.h>

#include "data/mapped-file.h"
#include "data/unicode-space.h"
#include "moelm/binarizer.h"
#include "moelm/errors.h"

gsize moelm_space_len(const char *p, gsize avail)
{
  const guchar *u = (const guchar *)p;
  if (avail == 0)
    return 0;
  guchar b = u[0];
  if (b < 0x80)
    return (b >= 0x09 && b <= 0x0d) || (b >= 0x1c && b <= 0x20) ? 1 : 0;
  if (b == 0xc2)
    return avail >= 2 && (u[1] == 0x85 || u[1] == 0xa0) ? 2 : 0;
  if (avail < 3 || b < 0xe1 || b > 0xe3)
    return 0;
  if (b == 0xe1) /* U+1680 OGHAM SPACE MARK */
    return u[1] == 0x9a && u[2] == 0x80 ? 3 : 0;
  if (b == 0xe3) /* U+3000 IDEOGRAPHIC SPACE */
    return u[1] == 0x80 && u[2] == 0x80 ? 3 : 0;
  /* 0xe2: U+2000-U+200A, U+2028, U+2029, U+202F (e2 80 xx) and U+205F (e2 81 9f). */
  if (u[1] == 0x80)
    return (u[2] >= 0x80 && u[2] <= 0x8a) || u[2] == 0xa8 || u[2] == 0xa9 || u[2] == 0xaf ? 3 : 0;
  return u[1] == 0x81 && u[2] == 0x9f ? 3 : 0;
}

gsize moelm_space_len_before(const char *s, gsize len)
{
  /* In valid UTF-8 a lead byte cannot be a continuation byte, so matching the last 1, 2 or
   * 3 bytes against a whole whitespace character is unambiguous. */
  if (len >= 1 && moelm_space_len(s + len - 1, 1) == 1)
    return 1;
  if (len >= 2 && moelm_space_len(s + len - 2, 2) == 2)
    return 2;
  if (len >= 3 && moelm_space_len(s + len - 3, 3) == 3)
    return 3;
  return 0;
}

gboolean moelm_next_line(const char *buf, gsize buf_len, gsize *pos, const char **line, gsize *len)
{
  gsize i = *pos;
  if (i >= buf_len)
    return FALSE;
  gsize start = i;
  while (i < buf_len && buf[i] != '\n' && buf[i] != '\r')
    i++;
  *line = buf + start;
  *len = i - start;
  if (i < buf_len) {
    /* "\r\n" is one line end; a lone "\r" is one too (Python's universal newlines). */
    i += (buf[i] == '\r' && i + 1 < buf_len && buf[i + 1] == '\n') ? 2 : 1;
  }
  *pos = i;
  return TRUE;
}

gboolean moelm_next_word(const char *line, gsize len, gsize *pos, const char **word, gsize *word_len)
{
  gsize i = *pos;
  gsize n;
  while (i < len && (n = moelm_space_len(line + i, len - i)) > 0)
    i += n;
  if (i >= len) {
    *pos = len;
    return FALSE;
  }
  gsize start = i;
  while (i < len && moelm_space_len(line + i, len - i) == 0)
    i++;
  *word = line + start;
  *word_len = i - start;
  *pos = i;
  return TRUE;
}

GPtrArray *moelm_split_words(const char *line, gsize len)
{
  GPtrArray *words = g_ptr_array_new_with_free_func(g_free);
  gsize pos = 0, wlen;
  const char *w;
  while (moelm_next_word(line, len, &pos, &w, &wlen))
    g_ptr_array_add(words, g_strndup(w, wlen));
  return words;
}

/* End of the line end that comes first at or after `from` (the start of the next line), or
 * len when there is none. */
static gsize next_line_start(const char *buf, gsize len, gsize from)
{
  gsize i = from;
  while (i < len && buf[i] != '\n' && buf[i] != '\r')
    i++;
  if (i >= len)
    return len;
  /* `from` may point at the "\n" of a "\r\n": that "\n" ends the line by itself here. */
  return i + ((buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n') ? 2 : 1);
}

gboolean moelm_find_line_offsets(const char *path, int n, gsize *offsets, GError **error)
{
  if (n < 1) {
    g_set_error(error, MOELM_ERROR, MOELM_ERROR_INVALID_ARG, "%s: cannot split into %d pieces", path, n);
    return FALSE;
  }
  MoelmMappedFile mf;
  if (!moelm_mapped_file_open(&mf, path, error))
    return FALSE;
  /* As fairseq's find_offsets: piece i starts after the line that holds byte i*(size/n). */
  gsize chunk = mf.len / (gsize)n;
  offsets[0] = 0;
  for (int i = 1; i < n; i++) {
    gsize off = next_line_start(mf.data, mf.len, chunk * (gsize)i);
    offsets[i] = MAX(off, offsets[i - 1]);
  }
  offsets[n] = mf.len;
  moelm_mapped_file_close(&mf);
  return TRUE;
}

void moelm_strip_spaces(const char *line, gsize len, gsize *start, gsize *end)
{
  gsize a = 0, b = len, n;
  while (a < b && (n = moelm_space_len(line + a, b - a)) > 0)
    a += n;
  while (b > a && (n = moelm_space_len_before(line + a, b - a)) > 0)
    b -= n;
  *start = a;
  *end = b;
}
