#pragma once
#include <stddef.h>
#include <stdint.h>
// libpng's classic API for the one decode the simplified API (png_image_*) cannot do like PIL:
// 16-bit samples with an alpha channel. PIL reads them with rawmode "RGBA;16B" / "LA;16B", keeping
// the most significant byte of each sample; png_image_finish_read either rounds (8-bit output,
// png_set_scale_16) or premultiplies by alpha (16-bit output). png_set_strip_16 keeps the high byte.
// The classic API reports errors with longjmp, so setjmp lives here in C, never across Swift frames.

typedef enum {
    NEGCLIP_PNG_OK = 0,
    NEGCLIP_PNG_ERROR = 1,       // libpng refused the stream; the message is in `message`
    NEGCLIP_PNG_TOO_LARGE = 2,   // width * height > max_pixels; width and height are set
    NEGCLIP_PNG_NO_MEMORY = 3,
} negclip_png_status;

/// Decodes a PNG stream to 8-bit RGBA, 16-bit samples reduced to their high byte (PIL's "RGBA;16B"),
/// greyscale replicated to RGB (PIL's "LA;16B" -> RGBA), palettes expanded, tRNS turned into alpha.
/// No gamma or colour transform is applied. On NEGCLIP_PNG_OK, `*pixels` is a malloc'd buffer of
/// width * height * 4 bytes that the caller frees. Warnings are discarded (the library never prints).
negclip_png_status negclip_png_read_rgba8_high_byte(const uint8_t *data, size_t size, uint64_t max_pixels,
                                                    uint32_t *width, uint32_t *height, uint8_t **pixels,
                                                    char *message, size_t message_size);
