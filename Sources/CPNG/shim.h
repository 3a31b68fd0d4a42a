#pragma once
// Swift uses only libpng's simplified API (png_image_*): the classic API reports errors with
// setjmp/longjmp, which Swift cannot survive. The one classic-API decode (16-bit with alpha) lives in
// C, in Sources/CPNGClassic.
#include <png.h>
