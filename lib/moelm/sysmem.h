/* moelm — how much memory this process can still get, for the estimates made before a run
 * allocates (a model that cannot fit is refused up front instead of being killed half-way). */
#ifndef MOELM_SYSMEM_H
#define MOELM_SYSMEM_H

#include <glib.h>

G_BEGIN_DECLS

/* The smallest of: MemAvailable + SwapFree (/proc/meminfo), the memory cgroup's limit (v2
 * memory.max or v1 memory.limit_in_bytes), and the address space left under `ulimit -v`
 * (RLIMIT_AS minus VmSize). G_MAXUINT64 when none is known. *source (may be NULL) names the
 * one that decided, for messages (static string). */
guint64 moelm_memory_available(const char **source);

/* "1.5 GiB", "312.0 MiB", ... (g_free). */
char *moelm_format_bytes(double bytes);

G_END_DECLS

#endif
