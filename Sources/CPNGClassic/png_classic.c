#include "png_classic.h"

#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const uint8_t *data;
    size_t size;
    size_t pos;
    char *message;
    size_t message_size;
} reader_state;

static void read_bytes(png_structp png, png_bytep out, size_t n) {
    reader_state *s = (reader_state *)png_get_io_ptr(png);
    if (n > s->size - s->pos) png_error(png, "unexpected end of file");
    memcpy(out, s->data + s->pos, n);
    s->pos += n;
}

static void on_error(png_structp png, png_const_charp msg) {
    reader_state *s = (reader_state *)png_get_error_ptr(png);
    if (s->message_size > 0) {
        strncpy(s->message, msg ? msg : "libpng error", s->message_size - 1);
        s->message[s->message_size - 1] = 0;
    }
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

negclip_png_status negclip_png_read_rgba8_high_byte(const uint8_t *data, size_t size, uint64_t max_pixels,
                                                    uint32_t *width, uint32_t *height, uint8_t **pixels,
                                                    char *message, size_t message_size) {
    reader_state s = {data, size, 0, message, message_size};
    if (message_size > 0) message[0] = 0;
    *pixels = NULL;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &s, on_error, on_warning);
    if (!png) return NEGCLIP_PNG_NO_MEMORY;
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return NEGCLIP_PNG_NO_MEMORY;
    }
    // volatile: modified between setjmp and a possible longjmp.
    uint8_t *volatile buffer = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(buffer);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return NEGCLIP_PNG_ERROR;
    }
    png_set_read_fn(png, &s, read_bytes);
    png_read_info(png, info);
    uint32_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    *width = w;
    *height = h;
    if ((uint64_t)w * (uint64_t)h > max_pixels) {
        png_destroy_read_struct(&png, &info, NULL);
        return NEGCLIP_PNG_TOO_LARGE;
    }
    int color_type = png_get_color_type(png, info);
    png_set_strip_16(png);                       // high byte, as PIL's ";16B" unpackers
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) {
        png_set_expand_gray_1_2_4_to_8(png);
        png_set_gray_to_rgb(png);
    }
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    png_set_filler(png, 0xFF, PNG_FILLER_AFTER); // opaque alpha where the file has none
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 4) png_error(png, "unexpected row size after transforms");
    buffer = malloc((size_t)w * h * 4);
    rows = malloc(sizeof(png_bytep) * (h ? h : 1));
    if (!buffer || !rows) {
        free(buffer);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return NEGCLIP_PNG_NO_MEMORY;
    }
    for (uint32_t y = 0; y < h; y++) rows[y] = buffer + (size_t)y * w * 4;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    *pixels = buffer;
    return NEGCLIP_PNG_OK;
}
