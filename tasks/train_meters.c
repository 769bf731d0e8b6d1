/* moelm — log meters and fairseq's number formatting. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "train_meters.h"

void moelm_meters_reset(MoelmTrainMeters *m) { memset(m, 0, sizeof *m); }

void moelm_meters_add(MoelmTrainMeters *dst, const MoelmTrainMeters *src)
{
  dst->loss_sum += src->loss_sum;
  dst->sample_size += src->sample_size;
  dst->ntokens += src->ntokens;
  dst->nsentences += src->nsentences;
  dst->gnorm_sum += src->gnorm_sum;
  dst->clipped += src->clipped;
  dst->updates += src->updates;
  dst->seconds += src->seconds;
}

char *moelm_format_rounded(double value, int digits)
{
  if (!isfinite(value))
    return g_strdup(isnan(value) ? "nan" : (value > 0 ? "inf" : "-inf"));
  if (digits >= 0) {
    double p = pow(10.0, digits);
    value = round(value * p) / p;
  }
  /* fairseq rounds each meter, then prints it with Python's "{:g}" */
  char buf[64];
  g_snprintf(buf, sizeof buf, "%g", value);
  return g_strdup(buf);
}

void moelm_log_field(GString *line, const MoelmLogStyle *style, const char *key, double value, int round_digits)
{
  char *v = round_digits == 0 && fabs(value) < 1e15 ? g_strdup_printf("%.0f", value)
                                                     : moelm_format_rounded(value, round_digits);
  moelm_log_field_text(line, style, key, v);
  g_free(v);
  /* a write error shows at the caller's moelm_tb_flush */
  if (style->tb && isfinite(value) && strcmp(key, "num_updates") != 0)
    moelm_tb_add_scalar(style->tb, key, value, style->tb_step, NULL);
}

void moelm_log_field_text(GString *line, const MoelmLogStyle *style, const char *key, const char *value)
{
  if (line->len > 0)
    g_string_append(line, style->field_sep);
  if (style->json_prefix)
    g_string_append_printf(line, "\"%s%s\": \"%s\"", style->json_prefix, key, value);
  else
    g_string_append_printf(line, "%s%s%s", key, style->kv_sep, value);
}
