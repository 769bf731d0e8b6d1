/* moelm — a restricted unpickler: builds Python values from a pickle (protocol 2, as
 * torch.save writes it; the opcodes of protocols 3-5 that need no execution are read too)
 * and NEVER executes anything.
 *
 * A GLOBAL becomes a MOELM_PY_GLOBAL value (module, name) — nothing is imported. Calling it
 * (REDUCE, NEWOBJ) builds a MOELM_PY_OBJECT that records the callable and its arguments;
 * BUILD records the state, SETITEM(S)/APPEND(S) on an object record its items. What such an
 * object means is up to the reader (lib/moelm/torch_load.h turns _rebuild_tensor_v2 objects
 * into tensors, OrderedDict objects into dicts); every other class stays an opaque object.
 * A persistent id (BINPERSID) becomes a MOELM_PY_PERSID value holding the id.
 *
 * Refused, with an error naming the pickle and the byte offset: truncation, unknown or
 * unsupported opcodes, a stack or mark underflow, a GLOBAL from a module outside the allowed
 * set (torch, collections, argparse, numpy, fairseq, omegaconf, ...; see pickle.c), a REDUCE
 * whose callable is not a GLOBAL (that would need code to run), nesting deeper than
 * MOELM_PICKLE_MAX_DEPTH marks, more than MOELM_PICKLE_MAX_STACK stack entries, invalid UTF-8
 * in a string, and any byte after STOP. */
#ifndef MOELM_PICKLE_H
#define MOELM_PICKLE_H

#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

#define MOELM_PICKLE_MAX_DEPTH 256
#define MOELM_PICKLE_MAX_STACK (1 << 22)

typedef enum {
  MOELM_PY_NONE,
  MOELM_PY_BOOL,
  MOELM_PY_INT,     /* `i`; `big` when the value does not fit 64 bits (then `i` is meaningless) */
  MOELM_PY_FLOAT,
  MOELM_PY_STR,     /* UTF-8, NUL-terminated (may contain NUL: use len) */
  MOELM_PY_BYTES,
  MOELM_PY_TUPLE,   /* items */
  MOELM_PY_LIST,    /* items */
  MOELM_PY_DICT,    /* items: key, value, key, value, ... in insertion order */
  MOELM_PY_GLOBAL,  /* module, name */
  MOELM_PY_OBJECT,  /* cls (a GLOBAL), args, state, items (appended), dict_items (set) */
  MOELM_PY_PERSID   /* args: the persistent id */
} MoelmPyType;

typedef struct MoelmPyObj MoelmPyObj;
struct MoelmPyObj {
  MoelmPyType type;
  gsize offset;          /* byte offset of the opcode that made it, for messages */
  gboolean b;
  gboolean big;
  int64_t i;
  double f;
  char *s;               /* STR, BYTES (NUL-terminated copy) */
  gsize len;
  char *module, *name;   /* GLOBAL */
  GPtrArray *items;      /* TUPLE, LIST, DICT; OBJECT: APPEND(S) */
  GPtrArray *dict_items; /* OBJECT: SETITEM(S), key/value alternating */
  MoelmPyObj *cls;       /* OBJECT: the GLOBAL called */
  MoelmPyObj *args;      /* OBJECT: its arguments (a TUPLE); PERSID: the id */
  MoelmPyObj *state;     /* OBJECT: BUILD's state, or NULL */
  gboolean newobj;       /* OBJECT: made by NEWOBJ (cls.__new__) rather than REDUCE */
};

typedef struct MoelmPickle MoelmPickle;

/* Unpickle `len` bytes; `name` (e.g. "model.pt: archive/data.pkl") is used in messages. The
 * bytes are not referenced after the call. */
MoelmPickle *moelm_pickle_load(const void *data, gsize len, const char *name, GError **error);
void moelm_pickle_free(MoelmPickle *p);
const MoelmPyObj *moelm_pickle_root(const MoelmPickle *p);
const char *moelm_pickle_name(const MoelmPickle *p);

/* ---- reading values (NULL-safe) -------------------------------------------------------- */
gboolean moelm_py_is_global(const MoelmPyObj *o, const char *module, const char *name);
/* An object made by calling module.name (REDUCE or NEWOBJ). */
gboolean moelm_py_is_call(const MoelmPyObj *o, const char *module, const char *name);
/* The key/value pairs of a dict-like value: a DICT, an object's SETITEM items (OrderedDict and
 * dict subclasses) or, when it has none, its BUILD state when that is a DICT (argparse.Namespace
 * and other plain objects); NULL otherwise. */
const GPtrArray *moelm_py_dict_items(const MoelmPyObj *o);
/* The value of a str key in a dict-like value (NULL when absent). */
const MoelmPyObj *moelm_py_get(const MoelmPyObj *o, const char *key);
/* "NoneType", "int", "tuple", "module.Class object", ... for messages (g_free). */
char *moelm_py_describe(const MoelmPyObj *o);

G_END_DECLS

#endif
