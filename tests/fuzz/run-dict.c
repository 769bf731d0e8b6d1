/* The dict harness under its CUnit name (see fuzz.h). */
#define LLVMFuzzerTestOneInput moelm_fuzz_dict
#include "fuzz-dict.c"
