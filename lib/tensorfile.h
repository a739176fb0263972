/* tensorfile.h — reading and writing named-tensor files: PyTorch .pth (the zip + pickle
 * layout of torch.save) and .safetensors. The model and adapter code see only this. */
#ifndef RP_TENSORFILE_H
#define RP_TENSORFILE_H

#include <stdio.h>

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
 * <stem>/byteorder (the writer uses the stem "archive", as torch < 2.1 did; torch.load
 * accepts any); torch.load() reads them back. Supported element types for writing:
 * F32, F16, BF16, F64, I8, U8, I16, I32, I64, BOOL (and the two fp8 types, which are
 * written as torch 2.x does, through _rebuild_tensor_v3). The write goes to a temporary
 * file that is renamed over `path` on success, so a failure never leaves a half-written
 * file under the final name. Names must be distinct, valid UTF-8. */
int rp_tensorfile_write(const char *path, rp_file_kind kind, const rp_named_tensor *tensors, int n,
                        rp_err *err);

/* numel of a tensor (product of shape; 1 for ndim 0); -1 on overflow. */
int64_t rp_tensor_numel(const rp_named_tensor *t);

/* Number of non-tensor leaf values (ints, strings, None, lists, ...) that the .pth reader
 * met in the state dict and skipped as metadata; 0 for safetensors (whose __metadata__
 * is ignored). */
int64_t rp_tensorfile_skipped_count(const rp_tensorfile *f);

/* ------------------------------------------------------------------------------------ */
/* Shared by the readers/writers (io_zip.c, io_pickle.c, io_pth.c, io_safetensors.c,     */
/* tensorfile.c); not for the model code.                                               */
/* ------------------------------------------------------------------------------------ */

/* Checked unsigned arithmetic: return 1 and store the result, or 0 on overflow. */
static inline int rp_u64_add(uint64_t a, uint64_t b, uint64_t *r) {
    if (a > UINT64_MAX - b) return 0;
    *r = a + b;
    return 1;
}
static inline int rp_u64_mul(uint64_t a, uint64_t b, uint64_t *r) {
    if (b != 0 && a > UINT64_MAX / b) return 0;
    *r = a * b;
    return 1;
}

/* Element count of shape[0..ndim) with every dim >= 0; -1 when a dim is negative or the
 * product overflows int64. 1 for ndim == 0. */
int64_t rp_shape_numel(const int64_t *shape, int ndim);

/* Reader-private state behind rp_tensorfile.impl. */
typedef struct rp_tensorfile_impl {
    rp_file_image image; /* the file's bytes */
    void **owned;       /* buffers tensors point into (inflated records, contiguous copies) */
    size_t owned_count, owned_cap;
    int *sorted;        /* tensor indices ordered by name (for rp_tensorfile_find) */
    int64_t skipped;    /* see rp_tensorfile_skipped_count */
} rp_tensorfile_impl;

/* Takes ownership of buffer p (freed by rp_tensorfile_close). On failure frees p and
 * returns E_OUT_OF_MEMORY. */
int rp_tensorfile_own(rp_tensorfile *f, void *p, rp_err *err);

/* Format readers: fill f->tensors/f->count (names malloc'd, data inside the image or owned
 * buffers) from the image already in f->impl. On failure the caller closes f. */
int rp_pth_read(rp_tensorfile *f, const char *label, rp_err *err);
int rp_safetensors_read(rp_tensorfile *f, const char *label, rp_err *err);

/* Sorts the names, rejects duplicates (E_FORMAT) and builds the lookup index. */
int rp_tensorfile_index(rp_tensorfile *f, const char *label, rp_err *err);

/* An output file written through "<path>.tmp.<pid>.<n>" and renamed over path by
 * rp_outfile_commit; rp_outfile_abort (or a failed commit) removes the temporary file.
 * Every write is checked (E_IO with the file name and errno text). */
typedef struct rp_outfile {
    FILE *fp;
    char *tmp_path;
    char *path;
    uint64_t written;
} rp_outfile;
int rp_outfile_open(rp_outfile *o, const char *path, rp_err *err);
int rp_outfile_write(rp_outfile *o, const void *data, size_t n, rp_err *err);
int rp_outfile_commit(rp_outfile *o, rp_err *err);
void rp_outfile_abort(rp_outfile *o);

/* Validates the tensors handed to rp_tensorfile_write (names distinct and UTF-8, dtype,
 * ndim, shape, nbytes, data). E_INVALID_ARGUMENT naming the offending tensor. */
int rp_tensors_validate_for_write(const rp_named_tensor *tensors, int n, int allow_fp8,
                                  rp_err *err);
int rp_utf8_valid(const char *s, size_t n);

int rp_pth_write(const char *path, const rp_named_tensor *tensors, int n, rp_err *err);
int rp_safetensors_write(const char *path, const rp_named_tensor *tensors, int n, rp_err *err);

#endif
