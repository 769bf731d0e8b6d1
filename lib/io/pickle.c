/* moelm — the restricted unpickler (see moelm/pickle.h). A loop over opcodes with an explicit
 * stack: no recursion, so deep nesting costs memory (bounded), never the C stack. Every value
 * lives in one arena freed with the pickle; memo references share values. */
#include "config.h"

#include <string.h>

#include "moelm/errors.h"
#include "moelm/pickle.h"
#include "io_internal.h"

struct MoelmPickle {
  char *name;
  GPtrArray *arena; /* every MoelmPyObj, owned */
  MoelmPyObj *root;
};

typedef struct {
  MoelmPickle *p;
  const guint8 *data;
  gsize len, pos, op_at; /* op_at: offset of the current opcode */
  GPtrArray *stack;
  GArray *marks; /* guint: stack lengths at MARK */
  GHashTable *memo;
} Unpickler;

/* Modules whose globals may appear: torch.save'd fairseq checkpoints hold torch tensors and
 * storages, OrderedDicts, argparse Namespaces, numpy scalars, fairseq's own classes (meters,
 * configs) and omegaconf containers. Their classes are recorded, never imported or called. */
static const char *const allowed_modules[] = {
  "torch", "collections", "argparse", "numpy", "fairseq", "fairseq_cli", "omegaconf", "hydra", "_codecs",
  "copyreg", "copy_reg", "enum", "typing", "pathlib", "datetime", "decimal", "fractions", "uuid", "examples",
};
/* builtins: the plain types only (never eval, exec, getattr, __import__, open, ...). */
static const char *const allowed_builtins[] = {
  "set", "frozenset", "slice", "complex", "bytearray", "object", "range", "list", "dict", "tuple", "int", "float",
  "str", "bytes", "bool", "type", "long", "unicode", /* the last two: Python 2 names protocol 2 uses */
};

static gboolean module_allowed(const char *module, const char *name)
{
  if (strcmp(module, "builtins") == 0 || strcmp(module, "__builtin__") == 0) {
    for (gsize i = 0; i < G_N_ELEMENTS(allowed_builtins); i++)
      if (strcmp(name, allowed_builtins[i]) == 0)
        return TRUE;
    return FALSE;
  }
  for (gsize i = 0; i < G_N_ELEMENTS(allowed_modules); i++) {
    const gsize n = strlen(allowed_modules[i]);
    if (strncmp(module, allowed_modules[i], n) == 0 && (module[n] == '\0' || module[n] == '.'))
      return TRUE;
  }
  return FALSE;
}

static void obj_free(gpointer data)
{
  MoelmPyObj *o = data;
  g_free(o->s);
  g_free(o->module);
  g_free(o->name);
  if (o->items)
    g_ptr_array_free(o->items, TRUE);
  if (o->dict_items)
    g_ptr_array_free(o->dict_items, TRUE);
  g_free(o);
}

static gboolean fail(Unpickler *u, GError **error, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static gboolean fail(Unpickler *u, GError **error, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, MOELM_ERROR, MOELM_ERROR_CORRUPT, "%s: byte %" G_GSIZE_FORMAT ": %s", u->p->name, u->op_at, msg);
  g_free(msg);
  return FALSE;
}

static MoelmPyObj *new_obj(Unpickler *u, MoelmPyType type)
{
  MoelmPyObj *o = g_new0(MoelmPyObj, 1);
  o->type = type;
  o->offset = u->op_at;
  if (type == MOELM_PY_TUPLE || type == MOELM_PY_LIST || type == MOELM_PY_DICT || type == MOELM_PY_OBJECT)
    o->items = g_ptr_array_new();
  g_ptr_array_add(u->p->arena, o);
  return o;
}

static gboolean push(Unpickler *u, MoelmPyObj *o, GError **error)
{
  if (u->stack->len >= MOELM_PICKLE_MAX_STACK)
    return fail(u, error, "more than %d values on the stack", MOELM_PICKLE_MAX_STACK);
  g_ptr_array_add(u->stack, o);
  return TRUE;
}

/* The values above the topmost mark (0 when there is none). */
static guint mark_base(const Unpickler *u) { return u->marks->len ? g_array_index(u->marks, guint, u->marks->len - 1) : 0; }

static MoelmPyObj *pop(Unpickler *u, GError **error)
{
  if (u->stack->len <= mark_base(u)) {
    fail(u, error, "stack underflow (opcode 0x%02x needs a value)", u->data[u->op_at]);
    return NULL;
  }
  return g_ptr_array_steal_index(u->stack, u->stack->len - 1);
}

static MoelmPyObj *top(Unpickler *u, GError **error)
{
  if (u->stack->len <= mark_base(u)) {
    fail(u, error, "stack underflow (opcode 0x%02x needs a value)", u->data[u->op_at]);
    return NULL;
  }
  return u->stack->pdata[u->stack->len - 1];
}

/* Pop the values above the topmost mark into a new array (and the mark itself). */
static GPtrArray *pop_mark(Unpickler *u, GError **error)
{
  if (u->marks->len == 0) {
    fail(u, error, "opcode 0x%02x without a MARK", u->data[u->op_at]);
    return NULL;
  }
  const guint base = mark_base(u);
  g_array_set_size(u->marks, u->marks->len - 1);
  GPtrArray *out = g_ptr_array_sized_new(u->stack->len - base);
  for (guint i = base; i < u->stack->len; i++)
    g_ptr_array_add(out, u->stack->pdata[i]);
  g_ptr_array_set_size(u->stack, base);
  return out;
}

static gboolean need(Unpickler *u, gsize n, GError **error)
{
  if (u->len - u->pos >= n)
    return TRUE;
  return fail(u, error, "truncated: opcode 0x%02x needs %" G_GSIZE_FORMAT " more bytes, %" G_GSIZE_FORMAT " left",
              u->data[u->op_at], n, u->len - u->pos);
}

static uint64_t le(const guint8 *p, int n)
{
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

/* A length field of `width` bytes, then that many bytes that must be there. */
static gboolean read_length(Unpickler *u, int width, const char *what, uint64_t *n, GError **error)
{
  if (!need(u, (gsize)width, error))
    return FALSE;
  *n = le(u->data + u->pos, width);
  u->pos += (gsize)width;
  if (*n > u->len - u->pos)
    return fail(u, error, "truncated: a %s of %" G_GUINT64_FORMAT " bytes, %" G_GSIZE_FORMAT " left", what, *n,
                u->len - u->pos);
  return TRUE;
}

/* A length-prefixed string or bytes value (width: the length field's bytes). */
static gboolean read_string(Unpickler *u, int width, MoelmPyType type, GError **error)
{
  uint64_t n;
  if (!read_length(u, width, "string", &n, error))
    return FALSE;
  const char *s = (const char *)u->data + u->pos;
  if (type == MOELM_PY_STR && !g_utf8_validate_len(s, (gsize)n, NULL))
    return fail(u, error, "string is not valid UTF-8");
  MoelmPyObj *o = new_obj(u, type);
  o->s = g_strndup(s, (gsize)n);
  if (memchr(s, 0, (gsize)n) != NULL) { /* g_strndup stops at a NUL: keep every byte */
    g_free(o->s);
    o->s = g_malloc((gsize)n + 1);
    memcpy(o->s, s, (gsize)n);
    o->s[n] = '\0';
  }
  o->len = (gsize)n;
  u->pos += (gsize)n;
  return push(u, o, error);
}

/* LONG1/LONG4: little-endian two's complement of n bytes. */
static gboolean read_long(Unpickler *u, int width, GError **error)
{
  uint64_t n;
  if (!read_length(u, width, "long", &n, error))
    return FALSE;
  MoelmPyObj *o = new_obj(u, MOELM_PY_INT);
  const guint8 *b = u->data + u->pos;
  if (n == 0)
    o->i = 0;
  else if (n <= 8) {
    uint64_t v = le(b, (int)n);
    if (n < 8 && (b[n - 1] & 0x80))
      v |= ~(uint64_t)0 << (8 * n);
    o->i = (int64_t)v;
  } else {
    /* Longer encodings are still 64-bit values when the extra bytes only extend the sign. */
    const guint8 ext = (b[7] & 0x80) ? 0xff : 0x00;
    o->big = FALSE;
    for (uint64_t k = 8; k < n; k++)
      if (b[k] != ext)
        o->big = TRUE;
    o->i = o->big ? 0 : (int64_t)le(b, 8);
  }
  u->pos += (gsize)n;
  return push(u, o, error);
}

static gboolean read_global(Unpickler *u, GError **error)
{
  const char *start = (const char *)u->data + u->pos;
  const char *nl1 = memchr(start, '\n', u->len - u->pos);
  const char *nl2 = nl1 ? memchr(nl1 + 1, '\n', u->len - u->pos - (gsize)(nl1 + 1 - start)) : NULL;
  if (nl2 == NULL)
    return fail(u, error, "truncated: GLOBAL without its two lines");
  char *module = g_strndup(start, (gsize)(nl1 - start)), *name = g_strndup(nl1 + 1, (gsize)(nl2 - nl1 - 1));
  u->pos += (gsize)(nl2 + 1 - start);
  gboolean ok = TRUE;
  if (!g_utf8_validate(module, -1, NULL) || !g_utf8_validate(name, -1, NULL) ||
      strlen(module) != (gsize)(nl1 - start) || strlen(name) != (gsize)(nl2 - nl1 - 1))
    ok = fail(u, error, "GLOBAL with a name that is not UTF-8 text");
  else if (!module_allowed(module, name)) {
    char *m = moelm_printable_name(module), *n = moelm_printable_name(name);
    ok = fail(u, error, "GLOBAL '%s.%s' is outside the allowed set (a PyTorch checkpoint never needs it)", m, n);
    g_free(m);
    g_free(n);
  }
  if (!ok) {
    g_free(module);
    g_free(name);
    return FALSE;
  }
  MoelmPyObj *o = new_obj(u, MOELM_PY_GLOBAL);
  o->module = module;
  o->name = name;
  return push(u, o, error);
}

/* STACK_GLOBAL: module and name as str values on the stack. */
static gboolean stack_global(Unpickler *u, GError **error)
{
  MoelmPyObj *name = pop(u, error), *module = name ? pop(u, error) : NULL;
  if (module == NULL)
    return FALSE;
  if (module->type != MOELM_PY_STR || name->type != MOELM_PY_STR || strlen(module->s) != module->len ||
      strlen(name->s) != name->len)
    return fail(u, error, "STACK_GLOBAL needs two strings");
  if (!module_allowed(module->s, name->s)) {
    char *m = moelm_printable_name(module->s), *n = moelm_printable_name(name->s);
    fail(u, error, "GLOBAL '%s.%s' is outside the allowed set (a PyTorch checkpoint never needs it)", m, n);
    g_free(m);
    g_free(n);
    return FALSE;
  }
  MoelmPyObj *o = new_obj(u, MOELM_PY_GLOBAL);
  o->module = g_strdup(module->s);
  o->name = g_strdup(name->s);
  return push(u, o, error);
}

/* REDUCE / NEWOBJ: record the call. */
static gboolean call(Unpickler *u, gboolean newobj, GError **error)
{
  MoelmPyObj *args = pop(u, error), *callable = args ? pop(u, error) : NULL;
  if (callable == NULL)
    return FALSE;
  if (callable->type != MOELM_PY_GLOBAL)
    return fail(u, error, "%s of a value that is not a GLOBAL (that would need code to run)",
                newobj ? "NEWOBJ" : "REDUCE");
  if (args->type != MOELM_PY_TUPLE)
    return fail(u, error, "%s with arguments that are not a tuple", newobj ? "NEWOBJ" : "REDUCE");
  MoelmPyObj *o = new_obj(u, MOELM_PY_OBJECT);
  o->cls = callable;
  o->args = args;
  o->newobj = newobj;
  return push(u, o, error);
}

static gboolean set_items(Unpickler *u, MoelmPyObj *target, GPtrArray *kv, guint from, GError **error)
{
  GPtrArray *dst = NULL;
  if (target->type == MOELM_PY_DICT)
    dst = target->items;
  else if (target->type == MOELM_PY_OBJECT) {
    if (target->dict_items == NULL)
      target->dict_items = g_ptr_array_new();
    dst = target->dict_items;
  } else
    return fail(u, error, "SETITEM on a value that is not a dict");
  for (guint i = from; i + 1 < kv->len; i += 2) {
    g_ptr_array_add(dst, kv->pdata[i]);
    g_ptr_array_add(dst, kv->pdata[i + 1]);
  }
  return TRUE;
}

static gboolean append_items(Unpickler *u, MoelmPyObj *target, GPtrArray *vals, GError **error)
{
  if (target->type != MOELM_PY_LIST && target->type != MOELM_PY_OBJECT)
    return fail(u, error, "APPEND on a value that is not a list");
  for (guint i = 0; i < vals->len; i++)
    g_ptr_array_add(target->items, vals->pdata[i]);
  return TRUE;
}

static gboolean memo_put(Unpickler *u, uint64_t idx, GError **error)
{
  MoelmPyObj *o = top(u, error);
  if (o == NULL)
    return FALSE;
  g_hash_table_insert(u->memo, GSIZE_TO_POINTER((gsize)idx), o);
  return TRUE;
}

static gboolean memo_get(Unpickler *u, uint64_t idx, GError **error)
{
  gpointer o;
  if (!g_hash_table_lookup_extended(u->memo, GSIZE_TO_POINTER((gsize)idx), NULL, &o))
    return fail(u, error, "memo key %" G_GUINT64_FORMAT " was never stored", idx);
  return push(u, o, error);
}

/* Opcodes whose result is a tuple of the values above the mark, or of the top n. */
static gboolean make_tuple(Unpickler *u, int n, GError **error)
{
  MoelmPyObj *t = new_obj(u, MOELM_PY_TUPLE);
  if (n < 0) {
    GPtrArray *vals = pop_mark(u, error);
    if (vals == NULL)
      return FALSE;
    g_ptr_array_extend_and_steal(t->items, vals);
    return push(u, t, error);
  }
  if (u->stack->len < mark_base(u) + (guint)n)
    return fail(u, error, "stack underflow (TUPLE%d needs %d values)", n, n);
  for (guint i = u->stack->len - (guint)n; i < u->stack->len; i++)
    g_ptr_array_add(t->items, u->stack->pdata[i]);
  g_ptr_array_set_size(u->stack, u->stack->len - (guint)n);
  return push(u, t, error);
}

static gboolean step(Unpickler *u, gboolean *stop, GError **error)
{
  u->op_at = u->pos;
  const guint8 op = u->data[u->pos++];
  MoelmPyObj *o, *v, *k;
  GPtrArray *vals;
  gboolean ok;
  switch (op) {
  case 0x80: /* PROTO */
    if (!need(u, 1, error))
      return FALSE;
    if (u->data[u->pos] > 5)
      return fail(u, error, "pickle protocol %u is not supported", u->data[u->pos]);
    u->pos++;
    return TRUE;
  case 0x95: /* FRAME: an 8-byte length; frames carry no meaning for a reader of the whole data */
    if (!need(u, 8, error))
      return FALSE;
    u->pos += 8;
    return TRUE;
  case '.': /* STOP */
    *stop = TRUE;
    return TRUE;
  case '(': /* MARK */
    if (u->marks->len >= MOELM_PICKLE_MAX_DEPTH)
      return fail(u, error, "nested deeper than %d marks", MOELM_PICKLE_MAX_DEPTH);
    g_array_append_val(u->marks, u->stack->len);
    return TRUE;
  case '0': /* POP */
    if (u->stack->len > mark_base(u) || u->marks->len == 0)
      return pop(u, error) != NULL;
    g_ptr_array_free(pop_mark(u, error), TRUE); /* an empty mark on top: POP removes the mark */
    return TRUE;
  case '1': /* POP_MARK */
    vals = pop_mark(u, error);
    if (vals)
      g_ptr_array_free(vals, TRUE);
    return vals != NULL;
  case '2': /* DUP */
    return (o = top(u, error)) != NULL && push(u, o, error);
  case 'N':
    return push(u, new_obj(u, MOELM_PY_NONE), error);
  case 0x88: case 0x89: /* NEWTRUE, NEWFALSE */
    o = new_obj(u, MOELM_PY_BOOL);
    o->b = op == 0x88;
    return push(u, o, error);
  case 'K': case 'M': case 'J': { /* BININT1, BININT2, BININT */
    const int w = op == 'K' ? 1 : op == 'M' ? 2 : 4;
    if (!need(u, (gsize)w, error))
      return FALSE;
    o = new_obj(u, MOELM_PY_INT);
    o->i = op == 'J' ? (int64_t)(int32_t)le(u->data + u->pos, 4) : (int64_t)le(u->data + u->pos, w);
    u->pos += (gsize)w;
    return push(u, o, error);
  }
  case 0x8a: return read_long(u, 1, error); /* LONG1 */
  case 0x8b: return read_long(u, 4, error); /* LONG4 */
  case 'G': { /* BINFLOAT: big-endian IEEE double */
    if (!need(u, 8, error))
      return FALSE;
    uint64_t bits = 0;
    for (int i = 0; i < 8; i++)
      bits = bits << 8 | u->data[u->pos + i];
    u->pos += 8;
    o = new_obj(u, MOELM_PY_FLOAT);
    memcpy(&o->f, &bits, sizeof o->f);
    return push(u, o, error);
  }
  case 'X': return read_string(u, 4, MOELM_PY_STR, error);   /* BINUNICODE */
  case 0x8c: return read_string(u, 1, MOELM_PY_STR, error);  /* SHORT_BINUNICODE */
  case 0x8d: return read_string(u, 8, MOELM_PY_STR, error);  /* BINUNICODE8 */
  case 'T': return read_string(u, 4, MOELM_PY_BYTES, error); /* BINSTRING (Python 2 str) */
  case 'U': return read_string(u, 1, MOELM_PY_BYTES, error); /* SHORT_BINSTRING */
  case 'B': return read_string(u, 4, MOELM_PY_BYTES, error); /* BINBYTES */
  case 'C': return read_string(u, 1, MOELM_PY_BYTES, error); /* SHORT_BINBYTES */
  case 0x8e: return read_string(u, 8, MOELM_PY_BYTES, error); /* BINBYTES8 */
  case ')': return push(u, new_obj(u, MOELM_PY_TUPLE), error);
  case ']': return push(u, new_obj(u, MOELM_PY_LIST), error);
  case '}': return push(u, new_obj(u, MOELM_PY_DICT), error);
  case 't': return make_tuple(u, -1, error);
  case 0x85: return make_tuple(u, 1, error);
  case 0x86: return make_tuple(u, 2, error);
  case 0x87: return make_tuple(u, 3, error);
  case 'l': case 'd': /* LIST, DICT from the values above the mark */
    vals = pop_mark(u, error);
    if (vals == NULL)
      return FALSE;
    if (op == 'd' && vals->len % 2 != 0) {
      g_ptr_array_free(vals, TRUE);
      return fail(u, error, "DICT with an odd number of values");
    }
    o = new_obj(u, op == 'l' ? MOELM_PY_LIST : MOELM_PY_DICT);
    g_ptr_array_extend_and_steal(o->items, vals);
    return push(u, o, error);
  case 'a': /* APPEND */
    if ((v = pop(u, error)) == NULL || (o = top(u, error)) == NULL)
      return FALSE;
    vals = g_ptr_array_new();
    g_ptr_array_add(vals, v);
    ok = append_items(u, o, vals, error);
    g_ptr_array_free(vals, TRUE);
    return ok;
  case 'e': /* APPENDS */
    if ((vals = pop_mark(u, error)) == NULL)
      return FALSE;
    ok = (o = top(u, error)) != NULL && append_items(u, o, vals, error);
    g_ptr_array_free(vals, TRUE);
    return ok;
  case 's': /* SETITEM */
    if ((v = pop(u, error)) == NULL || (k = pop(u, error)) == NULL || (o = top(u, error)) == NULL)
      return FALSE;
    vals = g_ptr_array_new();
    g_ptr_array_add(vals, k);
    g_ptr_array_add(vals, v);
    ok = set_items(u, o, vals, 0, error);
    g_ptr_array_free(vals, TRUE);
    return ok;
  case 'u': /* SETITEMS */
    if ((vals = pop_mark(u, error)) == NULL)
      return FALSE;
    if (vals->len % 2 != 0) {
      g_ptr_array_free(vals, TRUE);
      return fail(u, error, "SETITEMS with an odd number of values");
    }
    ok = (o = top(u, error)) != NULL && set_items(u, o, vals, 0, error);
    g_ptr_array_free(vals, TRUE);
    return ok;
  case 'q': case 'h': /* BINPUT, BINGET */
    if (!need(u, 1, error))
      return FALSE;
    u->pos++;
    return op == 'q' ? memo_put(u, u->data[u->pos - 1], error) : memo_get(u, u->data[u->pos - 1], error);
  case 'r': case 'j': /* LONG_BINPUT, LONG_BINGET */
    if (!need(u, 4, error))
      return FALSE;
    u->pos += 4;
    return op == 'r' ? memo_put(u, le(u->data + u->pos - 4, 4), error)
                     : memo_get(u, le(u->data + u->pos - 4, 4), error);
  case 0x94: /* MEMOIZE */
    return memo_put(u, g_hash_table_size(u->memo), error);
  case 'c': return read_global(u, error);
  case 0x93: return stack_global(u, error);
  case 'R': return call(u, FALSE, error);
  case 0x81: return call(u, TRUE, error);
  case 0x92: /* NEWOBJ_EX: cls, args, kwargs */
    if ((v = pop(u, error)) == NULL)
      return FALSE;
    if (v->type != MOELM_PY_DICT || v->items->len != 0)
      return fail(u, error, "NEWOBJ_EX with keyword arguments is not supported");
    return call(u, TRUE, error);
  case 'b': /* BUILD */
    if ((v = pop(u, error)) == NULL || (o = top(u, error)) == NULL)
      return FALSE;
    if (o->type != MOELM_PY_OBJECT)
      return fail(u, error, "BUILD on a value that is not an object");
    o->state = v;
    return TRUE;
  case 'Q': /* BINPERSID */
    if ((v = pop(u, error)) == NULL)
      return FALSE;
    o = new_obj(u, MOELM_PY_PERSID);
    o->args = v;
    return push(u, o, error);
  default:
    if (op >= 0x20 && op < 0x7f)
      return fail(u, error, "opcode 0x%02x ('%c') is not supported", op, op);
    return fail(u, error, "opcode 0x%02x is not supported", op);
  }
}

MoelmPickle *moelm_pickle_load(const void *data, gsize len, const char *name, GError **error)
{
  MoelmPickle *p = g_new0(MoelmPickle, 1);
  p->name = g_strdup(name);
  p->arena = g_ptr_array_new_with_free_func(obj_free);
  Unpickler u = {p, data, len, 0, 0, g_ptr_array_new(), g_array_new(FALSE, FALSE, sizeof(guint)),
                 g_hash_table_new(g_direct_hash, g_direct_equal)};
  gboolean stop = FALSE, ok = TRUE;
  while (ok && !stop) {
    if (u.pos >= u.len) {
      u.op_at = u.pos;
      ok = fail(&u, error, "truncated: no STOP opcode");
      break;
    }
    ok = step(&u, &stop, error);
  }
  if (ok && (u.stack->len != 1 || u.marks->len != 0))
    ok = fail(&u, error, "STOP with %u values and %u marks on the stack (expected one value)", u.stack->len,
              u.marks->len);
  if (ok && u.pos != u.len) {
    u.op_at = u.pos;
    ok = fail(&u, error, "%" G_GSIZE_FORMAT " bytes after STOP", u.len - u.pos);
  }
  if (ok)
    p->root = u.stack->pdata[0];
  g_ptr_array_free(u.stack, TRUE);
  g_array_free(u.marks, TRUE);
  g_hash_table_destroy(u.memo);
  if (!ok) {
    moelm_pickle_free(p);
    return NULL;
  }
  return p;
}

void moelm_pickle_free(MoelmPickle *p)
{
  if (p == NULL)
    return;
  g_ptr_array_free(p->arena, TRUE);
  g_free(p->name);
  g_free(p);
}

const MoelmPyObj *moelm_pickle_root(const MoelmPickle *p) { return p->root; }
const char *moelm_pickle_name(const MoelmPickle *p) { return p->name; }

gboolean moelm_py_is_global(const MoelmPyObj *o, const char *module, const char *name)
{
  return o && o->type == MOELM_PY_GLOBAL && strcmp(o->module, module) == 0 && strcmp(o->name, name) == 0;
}

gboolean moelm_py_is_call(const MoelmPyObj *o, const char *module, const char *name)
{
  return o && o->type == MOELM_PY_OBJECT && moelm_py_is_global(o->cls, module, name);
}

const GPtrArray *moelm_py_dict_items(const MoelmPyObj *o)
{
  if (o == NULL)
    return NULL;
  if (o->type == MOELM_PY_DICT)
    return o->items;
  if (o->type != MOELM_PY_OBJECT)
    return NULL;
  if (o->dict_items && o->dict_items->len > 0)
    return o->dict_items;
  if (o->state && o->state->type == MOELM_PY_DICT)
    return o->state->items;
  return o->dict_items;
}

const MoelmPyObj *moelm_py_get(const MoelmPyObj *o, const char *key)
{
  const GPtrArray *kv = moelm_py_dict_items(o);
  const MoelmPyObj *found = NULL;
  for (guint i = 0; kv && i + 1 < kv->len; i += 2) {
    const MoelmPyObj *k = kv->pdata[i];
    if (k->type == MOELM_PY_STR && strcmp(k->s, key) == 0)
      found = kv->pdata[i + 1]; /* the last assignment wins, as in Python */
  }
  return found;
}

char *moelm_py_describe(const MoelmPyObj *o)
{
  static const char *const names[] = {"NoneType", "bool", "int", "float", "str", "bytes",
                                      "tuple", "list", "dict", "global", "object", "persistent id"};
  if (o == NULL)
    return g_strdup("nothing");
  if (o->type == MOELM_PY_OBJECT) {
    char *m = moelm_printable_name(o->cls->module), *n = moelm_printable_name(o->cls->name);
    char *s = g_strdup_printf("%s.%s object", m, n);
    g_free(m);
    g_free(n);
    return s;
  }
  if (o->type == MOELM_PY_GLOBAL) {
    char *m = moelm_printable_name(o->module), *n = moelm_printable_name(o->name);
    char *s = g_strdup_printf("global %s.%s", m, n);
    g_free(m);
    g_free(n);
    return s;
  }
  return g_strdup(names[o->type]);
}
