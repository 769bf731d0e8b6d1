/* moelm — the memory this process can still allocate (Linux: /proc and /sys). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "moelm/sysmem.h"

/* The number after "KEY:" in a /proc file of "Key: value kB" lines, in bytes; -1 if absent. */
static double proc_kb(const char *path, const char *key)
{
  char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return -1;
  double v = -1;
  const size_t klen = strlen(key);
  for (char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
    if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
      v = g_ascii_strtod(line + klen + 1, NULL) * 1024.0;
      break;
    }
  g_free(text);
  return v;
}

/* A cgroup limit file: bytes, or -1 for "max"/absent/unlimited. */
static double cgroup_limit(const char *path)
{
  char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return -1;
  double v = g_ascii_isdigit(text[0]) ? g_ascii_strtod(text, NULL) : -1;
  g_free(text);
  return v >= 4.6e18 ? -1 : v; /* v1 writes "no limit" as about 2^63 */
}

/* Keep the smallest known bound. */
static void consider(double v, const char *what, double *best, const char **why)
{
  if (v >= 0 && (*best < 0 || v < *best)) {
    *best = v;
    *why = what;
  }
}

guint64 moelm_memory_available(const char **source)
{
  double best = -1;
  const char *why = "unknown";
  const double avail = proc_kb("/proc/meminfo", "MemAvailable"), swap = proc_kb("/proc/meminfo", "SwapFree");
  if (avail >= 0)
    consider(avail + MAX(swap, 0), "MemAvailable + SwapFree in /proc/meminfo", &best, &why);
  /* the limit itself, not the limit minus usage: usage counts page cache the kernel reclaims */
  consider(cgroup_limit("/sys/fs/cgroup/memory.max"), "the cgroup's memory.max", &best, &why);
  consider(cgroup_limit("/sys/fs/cgroup/memory/memory.limit_in_bytes"), "the cgroup's memory.limit_in_bytes", &best,
           &why);
  struct rlimit rl;
  if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    const double used = proc_kb("/proc/self/status", "VmSize");
    consider(MAX((double)rl.rlim_cur - MAX(used, 0), 0), "the address space left under ulimit -v", &best, &why);
  }
  if (source)
    *source = why;
  return best < 0 ? G_MAXUINT64 : (guint64)best;
}

char *moelm_format_bytes(double bytes)
{
  static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && u + 1 < (int)G_N_ELEMENTS(units)) {
    bytes /= 1024;
    u++;
  }
  return u == 0 ? g_strdup_printf("%.0f bytes", bytes) : g_strdup_printf("%.1f %s", bytes, units[u]);
}
