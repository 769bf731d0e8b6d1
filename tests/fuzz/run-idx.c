/* The idx harness under its CUnit name (see fuzz.h). */
#define LLVMFuzzerTestOneInput moelm_fuzz_idx
#include "fuzz-idx.c"
