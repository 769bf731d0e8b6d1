/* moelm — strict JSON syntax check (iterative: the nesting stack is an explicit array). */
#include "config.h"

#include <stdint.h>
#include <string.h>

#include "moelm/errors.h"
#include "json_strict.h"

#define MAX_STACK 64

typedef struct {
  const char *s;
  gsize len, pos;
  char stack[MAX_STACK]; /* '{' or '[' per open container */
  int depth, max_depth;
  GError **error;
} Scanner;

static gboolean fail(Scanner *sc, const char *what)
{
  g_set_error(sc->error, MOELM_ERROR, MOELM_ERROR_FORMAT, "at byte %" G_GSIZE_FORMAT ": %s", sc->pos, what);
  return FALSE;
}

static int peek(const Scanner *sc) { return sc->pos < sc->len ? (unsigned char)sc->s[sc->pos] : -1; }

static void skip_ws(Scanner *sc)
{
  while (sc->pos < sc->len) {
    char c = sc->s[sc->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
      break;
    sc->pos++;
  }
}

static int hex_value(int c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Four hex digits after "\u"; -1 when malformed. */
static long read_u_escape(Scanner *sc)
{
  if (sc->len - sc->pos < 4)
    return -1;
  long v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hex_value((unsigned char)sc->s[sc->pos + i]);
    if (h < 0)
      return -1;
    v = v * 16 + h;
  }
  sc->pos += 4;
  return v;
}

static gboolean scan_string(Scanner *sc)
{
  sc->pos++; /* opening quote */
  for (;;) {
    int c = peek(sc);
    if (c < 0)
      return fail(sc, "unterminated string");
    if (c == '"') {
      sc->pos++;
      return TRUE;
    }
    if (c < 0x20)
      return fail(sc, "unescaped control character in a string");
    if (c != '\\') {
      sc->pos++;
      continue;
    }
    sc->pos++;
    c = peek(sc);
    if (c < 0)
      return fail(sc, "unterminated string");
    sc->pos++;
    if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' || c == 't')
      continue;
    if (c != 'u')
      return fail(sc, "invalid escape in a string");
    long u = read_u_escape(sc);
    if (u < 0)
      return fail(sc, "invalid \\u escape");
    if (u == 0)
      return fail(sc, "\\u0000 in a string is not supported");
    if (u >= 0xdc00 && u <= 0xdfff)
      return fail(sc, "lone low surrogate in a \\u escape");
    if (u >= 0xd800 && u <= 0xdbff) {
      if (sc->len - sc->pos < 2 || sc->s[sc->pos] != '\\' || sc->s[sc->pos + 1] != 'u')
        return fail(sc, "high surrogate without its low half");
      sc->pos += 2;
      long lo = read_u_escape(sc);
      if (lo < 0xdc00 || lo > 0xdfff)
        return fail(sc, "high surrogate without its low half");
    }
  }
}

static gboolean scan_digits(Scanner *sc)
{
  gsize start = sc->pos;
  while (peek(sc) >= '0' && peek(sc) <= '9')
    sc->pos++;
  return sc->pos > start;
}

static gboolean scan_number(Scanner *sc)
{
  gsize start = sc->pos;
  gboolean negative = FALSE;
  if (peek(sc) == '-') {
    negative = TRUE;
    sc->pos++;
  }
  gsize int_start = sc->pos;
  if (peek(sc) == '0')
    sc->pos++;
  else if (!scan_digits(sc))
    return fail(sc, "invalid number");
  gsize int_end = sc->pos;
  if (peek(sc) >= '0' && peek(sc) <= '9')
    return fail(sc, "leading zero in a number");
  gboolean integer = TRUE;
  if (peek(sc) == '.') {
    sc->pos++;
    integer = FALSE;
    if (!scan_digits(sc))
      return fail(sc, "invalid number");
  }
  if (peek(sc) == 'e' || peek(sc) == 'E') {
    sc->pos++;
    integer = FALSE;
    if (peek(sc) == '+' || peek(sc) == '-')
      sc->pos++;
    if (!scan_digits(sc))
      return fail(sc, "invalid number");
  }
  if (integer) {
    /* json-glib wraps integers beyond int64 silently: refuse them here. */
    uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t v = 0;
    for (gsize i = int_start; i < int_end; i++) {
      uint64_t d = (uint64_t)(sc->s[i] - '0');
      if (v > (limit - d) / 10) {
        sc->pos = start;
        return fail(sc, "integer out of the 64-bit range");
      }
      v = v * 10 + d;
    }
  }
  return TRUE;
}

static gboolean scan_literal(Scanner *sc, const char *word)
{
  gsize n = strlen(word);
  if (sc->len - sc->pos < n || memcmp(sc->s + sc->pos, word, n) != 0)
    return fail(sc, "invalid literal");
  sc->pos += n;
  return TRUE;
}

static gboolean push(Scanner *sc, char kind)
{
  if (sc->depth >= sc->max_depth)
    return fail(sc, "nested too deeply");
  sc->stack[sc->depth++] = kind;
  sc->pos++;
  return TRUE;
}

typedef enum { WANT_VALUE, WANT_KEY, AFTER_VALUE } State;

gboolean moelm_json_check_strict(const char *text, gsize len, int max_depth, GError **error)
{
  Scanner sc = {.s = text, .len = len, .max_depth = MIN(max_depth, MAX_STACK), .error = error};
  State state = WANT_VALUE;
  for (;;) {
    skip_ws(&sc);
    int c = peek(&sc);
    switch (state) {
    case WANT_VALUE:
      if (c == '{') {
        if (!push(&sc, '{'))
          return FALSE;
        skip_ws(&sc);
        if (peek(&sc) == '}') {
          sc.pos++;
          sc.depth--;
          state = AFTER_VALUE;
        } else {
          state = WANT_KEY;
        }
        continue;
      }
      if (c == '[') {
        if (!push(&sc, '['))
          return FALSE;
        skip_ws(&sc);
        if (peek(&sc) == ']') {
          sc.pos++;
          sc.depth--;
          state = AFTER_VALUE;
        }
        continue;
      }
      if (c == '"') {
        if (!scan_string(&sc))
          return FALSE;
      } else if (c == '-' || (c >= '0' && c <= '9')) {
        if (!scan_number(&sc))
          return FALSE;
      } else if (c == 't' || c == 'f' || c == 'n') {
        if (!scan_literal(&sc, c == 't' ? "true" : c == 'f' ? "false" : "null"))
          return FALSE;
      } else {
        return fail(&sc, c < 0 ? "unexpected end of text, expected a value" : "expected a value");
      }
      state = AFTER_VALUE;
      continue;
    case WANT_KEY:
      if (c != '"')
        return fail(&sc, "expected a member name");
      if (!scan_string(&sc))
        return FALSE;
      skip_ws(&sc);
      if (peek(&sc) != ':')
        return fail(&sc, "expected ':' after a member name");
      sc.pos++;
      state = WANT_VALUE;
      continue;
    case AFTER_VALUE:
      if (sc.depth == 0) {
        if (c >= 0)
          return fail(&sc, "unexpected text after the JSON value");
        return TRUE;
      }
      if (c == ',') {
        sc.pos++;
        state = sc.stack[sc.depth - 1] == '{' ? WANT_KEY : WANT_VALUE;
        continue;
      }
      if (c == (sc.stack[sc.depth - 1] == '{' ? '}' : ']')) {
        sc.pos++;
        sc.depth--;
        continue;
      }
      return fail(&sc, sc.stack[sc.depth - 1] == '{' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
  }
}
