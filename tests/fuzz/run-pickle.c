/* The pickle harness under its CUnit name (see fuzz.h). */
#define LLVMFuzzerTestOneInput moelm_fuzz_pickle
#include "fuzz-pickle.c"
