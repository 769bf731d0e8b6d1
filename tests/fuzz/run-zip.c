/* The zip / PyTorch harness under its CUnit name (see fuzz.h). */
#define LLVMFuzzerTestOneInput moelm_fuzz_zip
#include "fuzz-zip.c"
