/* libFuzzer harness: the restricted unpickler (moelm_pickle_load). */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "fuzz.h"
#include "moelm/pickle.h"

static volatile gsize sink;

/* Every value reachable from the root keeps the shape its type promises (a memo can make
 * cycles: each value is visited once). */
static void walk(const MoelmPyObj *root)
{
  GHashTable *seen = g_hash_table_new(g_direct_hash, g_direct_equal);
  GPtrArray *todo = g_ptr_array_new();
  g_ptr_array_add(todo, (gpointer)root);
  gsize n = 0;
  while (todo->len > 0) {
    const MoelmPyObj *o = g_ptr_array_steal_index(todo, todo->len - 1);
    if (o == NULL)
      abort();
    if (!g_hash_table_add(seen, (gpointer)o))
      continue;
    char *d = moelm_py_describe(o);
    n += strlen(d);
    g_free(d);
    switch (o->type) {
    case MOELM_PY_STR:
    case MOELM_PY_BYTES:
      if (o->s == NULL || o->s[o->len] != '\0' || (o->type == MOELM_PY_STR && !g_utf8_validate_len(o->s, o->len, NULL)))
        abort();
      break;
    case MOELM_PY_DICT:
      if (o->items->len % 2 != 0)
        abort();
      /* fall through */
    case MOELM_PY_TUPLE:
    case MOELM_PY_LIST:
      for (guint i = 0; i < o->items->len; i++)
        g_ptr_array_add(todo, o->items->pdata[i]);
      break;
    case MOELM_PY_GLOBAL:
      if (o->module == NULL || o->name == NULL)
        abort();
      break;
    case MOELM_PY_OBJECT:
      if (o->cls == NULL || o->cls->type != MOELM_PY_GLOBAL || o->args == NULL || o->args->type != MOELM_PY_TUPLE)
        abort();
      g_ptr_array_add(todo, o->args);
      if (o->state)
        g_ptr_array_add(todo, o->state);
      for (guint i = 0; i < o->items->len; i++)
        g_ptr_array_add(todo, o->items->pdata[i]);
      if (o->dict_items) {
        if (o->dict_items->len % 2 != 0)
          abort();
        for (guint i = 0; i < o->dict_items->len; i++)
          g_ptr_array_add(todo, o->dict_items->pdata[i]);
      }
      break;
    case MOELM_PY_PERSID:
      if (o->args == NULL)
        abort();
      g_ptr_array_add(todo, o->args);
      break;
    default:
      break;
    }
    const GPtrArray *kv = moelm_py_dict_items(o);
    if (kv && kv->len >= 2 && ((const MoelmPyObj *)kv->pdata[0])->type == MOELM_PY_STR)
      if (moelm_py_get(o, ((const MoelmPyObj *)kv->pdata[0])->s) == NULL)
        abort();
  }
  sink = n;
  g_ptr_array_unref(todo);
  g_hash_table_destroy(seen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  GError *error = NULL;
  MoelmPickle *p = moelm_pickle_load(data, size, "fuzz.pkl", &error);
  if (p == NULL) {
    MOELM_FUZZ_CHECK_ERROR(error);
    g_error_free(error);
    return 0;
  }
  walk(moelm_pickle_root(p));
  moelm_pickle_free(p);
  return 0;
}
