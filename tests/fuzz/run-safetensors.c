/* The safetensors harness under its CUnit name (see fuzz.h). */
#define LLVMFuzzerTestOneInput moelm_fuzz_safetensors
#include "fuzz-safetensors.c"
