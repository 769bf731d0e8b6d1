/* The checkpoint-metadata harness under its CUnit name (see fuzz.h). */
#define LLVMFuzzerTestOneInput moelm_fuzz_checkpoint
#include "fuzz-checkpoint.c"
