#pragma once
#include <cblas.h>
// openblas_set_num_threads / openblas_get_num_threads are declared in cblas.h of OpenBLAS.
