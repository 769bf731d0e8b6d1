/* moelm — internal: the bounds of every numeric model config field, shared by the JSON
 * reader (a checkpoint's field out of bounds names the field) and the validation (a flag out
 * of bounds names the flag). The bounds keep every size computation inside int/size_t; what
 * fits in memory is checked separately (moelm_model_config_footprint). */
#ifndef MOELM_MODEL_CONFIG_LIMITS_H
#define MOELM_MODEL_CONFIG_LIMITS_H

#include <stddef.h>

#include "moelm/model_config.h"

typedef struct {
  const char *key;  /* the checkpoint's JSON member */
  const char *flag; /* the command-line flag */
  size_t offset;    /* of the int in MoelmModelConfig */
  int min, max;
} MoelmIntLimit;

typedef struct {
  const char *key, *flag;
  size_t offset; /* of the double */
  double min, max;
  gboolean max_open; /* [min, max) instead of [min, max] */
} MoelmRealLimit;

extern const MoelmIntLimit moelm_model_int_limits[];
extern const size_t moelm_model_n_int_limits;
extern const MoelmRealLimit moelm_model_real_limits[];
extern const size_t moelm_model_n_real_limits;

#define MOELM_CFG_INT(cfg, lim) ((int *)((char *)(cfg) + (lim)->offset))
#define MOELM_CFG_REAL(cfg, lim) ((double *)((char *)(cfg) + (lim)->offset))

#endif
