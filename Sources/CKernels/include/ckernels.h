#pragma once
#include <stddef.h>
#include <stdint.h>
// Elementwise kernels for the CLIP forward pass. Each has a portable C body and an AVX2+FMA body
// selected at run time (no -march flags needed). Row-major float buffers throughout.

/// 1 if the AVX2+FMA paths are in use on this CPU.
int ck_has_avx2_fma(void);
