#pragma once
// Only libpng's simplified API (png_image_*) is used: the classic API reports errors with
// setjmp/longjmp, which Swift cannot survive.
#include <png.h>
