#pragma once
#include <hdf5.h>
// H5T_NATIVE_*, H5P_* and H5F_ACC_* are macros (often over global ids) that Swift cannot import;
// they are exposed as static inline functions below.
static inline hid_t negclip_H5T_NATIVE_FLOAT(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t negclip_H5T_NATIVE_INT32(void) { return H5T_NATIVE_INT32; }
static inline hid_t negclip_H5T_NATIVE_INT64(void) { return H5T_NATIVE_INT64; }
static inline hid_t negclip_H5T_C_S1(void) { return H5T_C_S1; }
static inline hid_t negclip_H5P_DATASET_CREATE(void) { return H5P_DATASET_CREATE; }
static inline hid_t negclip_H5P_FILE_ACCESS(void) { return H5P_FILE_ACCESS; }
static inline hid_t negclip_H5P_DEFAULT(void) { return H5P_DEFAULT; }
static inline unsigned negclip_H5F_ACC_TRUNC(void) { return H5F_ACC_TRUNC; }
static inline unsigned negclip_H5F_ACC_RDONLY(void) { return H5F_ACC_RDONLY; }
static inline unsigned negclip_H5F_ACC_RDWR(void) { return H5F_ACC_RDWR; }
static inline hid_t negclip_H5S_ALL(void) { return H5S_ALL; }
