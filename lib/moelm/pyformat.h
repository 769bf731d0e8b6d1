/* moelm — Python's number and string formatting, for the lines that must read exactly as
 * fairseq's (preprocess.log's "{:.3}%", argparse's Namespace dump, eval-lm's and generate's
 * float scores printed with Python's repr). */
#ifndef MOELM_PYFORMAT_H
#define MOELM_PYFORMAT_H

#include <glib.h>

G_BEGIN_DECLS

/* Python's format(x, ".3"): 3 significant digits, general format, at least one digit after
 * the point in fixed notation ("0.0", "12.3", "0.0123", "1.23e-05", "1e+02"). g_free. */
char *moelm_py_format_g3(double x);

/* Python's repr() of a str (quotes chosen as Python does, escapes for control characters).
 * `s` may be NULL: "None". g_free. */
char *moelm_py_repr_str(const char *s);

/* Python's repr() of a float (shortest round trip: "0.0001", "1e-05", "100000.0"). g_free. */
char *moelm_py_repr_float(double x);

/* Build a "Namespace(key=value, ...)" line: `items` holds "key=value" strings (any order);
 * they are sorted by key as argparse prints them. g_free. */
char *moelm_py_namespace_line(GPtrArray *items);

G_END_DECLS

#endif
