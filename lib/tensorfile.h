/* tensorfile.h — reading and writing named-tensor files: PyTorch .pth (the zip + pickle
 * layout of torch.save) and .safetensors. The model and adapter code see only this. */
#ifndef RP_TENSORFILE_H
#define RP_TENSORFILE_H

#include "internal.h"

#define RP_MAX_DIMS 8

typedef struct rp_named_tensor {
    const char *name;       /* key in the state dict, NUL-terminated */
    rp_dtype dtype;
    int ndim;               /* 0..RP_MAX_DIMS (0 = scalar) */
    int64_t shape[RP_MAX_DIMS];
    const void *data;       /* contiguous row-major elements; may be unaligned */
    size_t nbytes;          /* = numel * rp_dtype_size(dtype) */
} rp_named_tensor;

typedef enum rp_file_kind { RP_FILE_AUTO = 0, RP_FILE_PTH = 1, RP_FILE_SAFETENSORS = 2 } rp_file_kind;

/* A file opened for reading. Tensor data points into a read-only mapping of the file
 * where the layout allows (stored zip entries, safetensors) or into buffers the reader
 * owns (non-contiguous torch views are made contiguous). Everything is released by
 * rp_tensorfile_close. */
typedef struct rp_tensorfile {
    rp_named_tensor *tensors;
    int count;
    rp_file_kind kind;
    void *impl; /* reader-private */
} rp_tensorfile;

/* Opens `path`, recognising the format by content (zip magic "PK\3\4" = .pth, otherwise a
 * safetensors header is expected). Every structural problem is an error with code
 * RWKVPEFT_E_FORMAT (or E_IO when the file cannot be opened/read, E_UNSUPPORTED for a valid
 * but unsupported feature such as the legacy pre-1.6 torch format or an unknown storage
 * type) and a message naming the file and what is wrong. Never crashes on any input. */
int rp_tensorfile_open(const char *path, rp_tensorfile **out, rp_err *err);

/* Finds a tensor by exact name; NULL if absent. */
const rp_named_tensor *rp_tensorfile_find(const rp_tensorfile *f, const char *name);

void rp_tensorfile_close(rp_tensorfile *f);

/* Writes `n` tensors to `path` in the given format (AUTO: ".safetensors" suffix selects
 * safetensors, anything else .pth). .pth files are what torch.save(dict) writes: a zip
 * (stored entries, 64-byte aligned data) holding <stem>/data.pkl (pickle protocol 2 of a
 * dict name -> torch._utils._rebuild_tensor_v2(...)), <stem>/data/<i>, <stem>/version,
 * <stem>/byteorder; torch.load() reads them back. Supported element types for writing:
 * F32, F16, BF16, F64, I8, U8, I16, I32, I64, BOOL. The write goes to a temporary file
 * that is renamed over `path` on success, so a failure never leaves a half-written file
 * under the final name. */
int rp_tensorfile_write(const char *path, rp_file_kind kind, const rp_named_tensor *tensors, int n,
                        rp_err *err);

/* numel of a tensor (product of shape; 1 for ndim 0); -1 on overflow. */
int64_t rp_tensor_numel(const rp_named_tensor *t);

#endif
