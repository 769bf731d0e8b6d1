/* moelm — checkpoint internals shared by checkpoint.c and checkpoint_shards.c (not installed). */
#ifndef MOELM_IO_CHECKPOINT_INTERNAL_H
#define MOELM_IO_CHECKPOINT_INTERNAL_H

#include "moelm/checkpoint.h"

/* After the shared (or only) file is open: when its metadata says it is part of an
 * expert-parallel checkpoint, open every rank file and check they belong together. `sharded`:
 * the path named the checkpoint, not one of its files. */
gboolean moelm_checkpoint_open_shards(MoelmCheckpoint *ckpt, gboolean sharded, GError **error);

#endif
