#pragma once
#include <hdf5.h>
#include <hdf5_hl.h>
#include <string.h>
// H5T_NATIVE_*, H5P_* and H5F_ACC_* are macros (often over global ids) that Swift cannot import;
// they are exposed as static inline functions below.
static inline hid_t negclip_H5T_NATIVE_FLOAT(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t negclip_H5T_NATIVE_INT8(void) { return H5T_NATIVE_INT8; }
static inline hid_t negclip_H5T_NATIVE_INT32(void) { return H5T_NATIVE_INT32; }
static inline hid_t negclip_H5T_NATIVE_INT64(void) { return H5T_NATIVE_INT64; }
static inline hid_t negclip_H5T_NATIVE_DOUBLE(void) { return H5T_NATIVE_DOUBLE; }
static inline hid_t negclip_H5T_C_S1(void) { return H5T_C_S1; }
static inline hid_t negclip_H5P_DATASET_CREATE(void) { return H5P_DATASET_CREATE; }
static inline hid_t negclip_H5P_DATASET_ACCESS(void) { return H5P_DATASET_ACCESS; }
static inline hid_t negclip_H5P_FILE_ACCESS(void) { return H5P_FILE_ACCESS; }
static inline hid_t negclip_H5P_FILE_CREATE(void) { return H5P_FILE_CREATE; }
static inline hid_t negclip_H5P_LINK_CREATE(void) { return H5P_LINK_CREATE; }
static inline hid_t negclip_H5P_DEFAULT(void) { return H5P_DEFAULT; }
static inline unsigned negclip_H5F_ACC_TRUNC(void) { return H5F_ACC_TRUNC; }
static inline unsigned negclip_H5F_ACC_RDONLY(void) { return H5F_ACC_RDONLY; }
static inline unsigned negclip_H5F_ACC_RDWR(void) { return H5F_ACC_RDWR; }
static inline hid_t negclip_H5S_ALL(void) { return H5S_ALL; }
static inline hsize_t negclip_H5S_UNLIMITED(void) { return H5S_UNLIMITED; }
static inline hid_t negclip_H5E_DEFAULT(void) { return H5E_DEFAULT; }
static inline size_t negclip_H5T_VARIABLE(void) { return H5T_VARIABLE; }

/// Library code never prints: switch off HDF5's automatic error-stack printing (process-wide).
static inline void negclip_silence_errors(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

typedef struct { char text[512]; int depth; } negclip_error_text;

static inline herr_t negclip_error_walker(unsigned n, const H5E_error2_t *err, void *data) {
    negclip_error_text *out = (negclip_error_text *)data;
    // The innermost frame (n == 0) names the real cause ("file signature not found",
    // "truncated file: eof = ..."); the outer frames only repeat "unable to open file".
    if (n == 0 && err != NULL) {
        const char *fn = err->func_name ? err->func_name : "?";
        const char *desc = err->desc ? err->desc : "";
        snprintf(out->text, sizeof out->text, "%s: %s", fn, desc);
    }
    out->depth = (int)n + 1;
    return 0;
}

/// The innermost message of the current HDF5 error stack ("" when the stack is empty), then clear it.
static inline void negclip_last_error(char *buffer, size_t size) {
    negclip_error_text t;
    t.text[0] = 0;
    t.depth = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, negclip_error_walker, &t);
    H5Eclear2(H5E_DEFAULT);
    if (size > 0) {
        strncpy(buffer, t.text, size - 1);
        buffer[size - 1] = 0;
    }
}

/// A variable-length UTF-8 string type (what h5py writes for `str`).
static inline hid_t negclip_vlen_utf8(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return t;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) { H5Tclose(t); return -1; }
    return t;
}

/// A fixed-length UTF-8 string type of `size` bytes (NUL padded), for scalar string attributes.
static inline hid_t negclip_fixed_utf8(size_t size) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return t;
    if (H5Tset_size(t, size == 0 ? 1 : size) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0 ||
        H5Tset_strpad(t, H5T_STR_NULLPAD) < 0) { H5Tclose(t); return -1; }
    return t;
}

static inline int negclip_type_is_vlen_string(hid_t type) {
    return H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) > 0;
}
static inline int negclip_type_is_string(hid_t type) { return H5Tget_class(type) == H5T_STRING; }
static inline int negclip_type_is_float(hid_t type) { return H5Tget_class(type) == H5T_FLOAT; }
static inline int negclip_type_is_integer(hid_t type) { return H5Tget_class(type) == H5T_INTEGER; }

/// File access for crash consistency: the metadata cache never evicts (so metadata reaches the
/// disk only in H5Fflush, all at once), and its size is fixed (no adaptive resizing, which is a
/// precondition for disabling evictions). Our metadata is small (a few B-tree nodes per dataset).
static inline herr_t negclip_fapl_no_metadata_evictions(hid_t fapl) {
    H5AC_cache_config_t c;
    memset(&c, 0, sizeof c);
    c.version = H5AC__CURR_CACHE_CONFIG_VERSION;
    if (H5Pget_mdc_config(fapl, &c) < 0) return -1;
    c.incr_mode = H5C_incr__off;
    c.flash_incr_mode = H5C_flash_incr__off;
    c.decr_mode = H5C_decr__off;
    c.set_initial_size = 1;
    c.initial_size = 16 * 1024 * 1024;
    c.max_size = 64 * 1024 * 1024;
    c.min_size = 1024 * 1024;
    c.evictions_enabled = 0;
    return H5Pset_mdc_config(fapl, &c);
}

/// File creation: allocate every new block at the end of the file and never reuse freed space,
/// so data written after the last flush can never overwrite blocks the flushed metadata refers to.
static inline herr_t negclip_fcpl_append_only(hid_t fcpl) {
    return H5Pset_file_space_strategy(fcpl, H5F_FSPACE_STRATEGY_NONE, 0, (hsize_t)1);
}

/// HDF5's own Fletcher-32 (H5checksum.c), exported by libhdf5 but declared only in its private
/// headers: the reference `negclip_fletcher32` is tested against.
uint32_t H5_checksum_fletcher32(const void *data, size_t len);

/// Bit-identical to H5_checksum_fletcher32 (the value the fletcher32 filter appends to a chunk),
/// about twice as fast: the writer checksums whole uncompressed chunks itself for H5Dwrite_chunk.
/// HDF5 sums big-endian 16-bit words w_j in blocks of 360 (sum1 += w_j; sum2 += sum1) and folds
/// both sums after each block; per block that is sum1 += S, sum2 += tlen*sum1 + tlen*S - sum_j j*w_j
/// with S = sum_j w_j, which has no serial dependency and vectorises. Everything is uint32 modulo
/// 2^32, as in HDF5, so the folds see the same values.
static inline uint32_t negclip_fletcher32(const void *data_, size_t len_) {
    const uint8_t *data = (const uint8_t *)data_;
    size_t len = len_ / 2;
    uint32_t sum1 = 0, sum2 = 0;
    while (len) {
        size_t tlen = len > 360 ? 360 : len;
        len -= tlen;
        uint32_t s = 0, sj = 0;
        for (size_t j = 0; j < tlen; j++) {
            uint16_t v;
            memcpy(&v, data + 2 * j, 2);
            uint32_t w = (uint32_t)(uint16_t)((v << 8) | (v >> 8));  // big-endian word
            s += w;
            sj += (uint32_t)j * w;
        }
        sum2 += (uint32_t)tlen * sum1 + (uint32_t)tlen * s - sj;
        sum1 += s;
        data += 2 * tlen;
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    if (len_ % 2) {  // odd length: the last byte is the high byte of a word
        sum1 += (uint32_t)(((uint16_t)*data) << 8);
        sum2 += sum1;
        sum1 = (sum1 & 0xffff) + (sum1 >> 16);
        sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    }
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
    return (sum2 << 16) | sum1;
}

#include <fcntl.h>
/// Asks the kernel to start writing back the file's dirty pages and to drop the clean ones
/// (posix_fadvise DONTNEED on the sec2 driver's descriptor). The writer calls it after every
/// commit: a dump writes far more than it reads back, and without it a 12 GB file fills the page
/// cache until the writing thread pays for reclaim inside write(). No effect on what is on disk
/// or when a commit is durable; returns nonzero where the driver has no descriptor (ignored).
static inline int negclip_drop_cached_pages(hid_t file) {
    void *handle = NULL;
    if (H5Fget_vfd_handle(file, H5P_DEFAULT, &handle) < 0 || handle == NULL) return -1;
    return posix_fadvise(*(int *)handle, 0, 0, POSIX_FADV_DONTNEED);
}

/// Marks the sec2 driver's descriptor close-on-exec. HDF5 opens files without O_CLOEXEC and
/// flock()s them, so a child process started while the file is open (a test spawning the CLI, a
/// user's tool) would otherwise inherit the descriptor and its lock for its whole life, and this
/// process's next H5Fopen of the file (reopen after a commit) would fail with EAGAIN.
static inline int negclip_set_cloexec(hid_t file) {
    void *handle = NULL;
    if (H5Fget_vfd_handle(file, H5P_DEFAULT, &handle) < 0 || handle == NULL) return -1;
    int fd = *(int *)handle;
    int flags = fcntl(fd, F_GETFD);
    return flags < 0 ? -1 : fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}
