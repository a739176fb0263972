/* internal.h — shared by every translation unit of the core (never installed).
 *
 * Error convention: internal functions return 0 or a negative rwkvpeft_status and take
 * an `rp_err *` that receives a message; rp_fail() fills it (and the thread-local slot
 * read by rwkvpeft_last_error()) and returns the code, so call sites read
 *     if (bad) return rp_fail(err, RWKVPEFT_E_FORMAT, "%s: truncated header", path);
 */
#ifndef RP_INTERNAL_H
#define RP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "rwkvpeft.h"

#define RP_ERR_MSG_MAX 512

typedef struct rp_err {
    int code;
    char msg[RP_ERR_MSG_MAX];
} rp_err;

#if defined(__GNUC__)
#define RP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define RP_UNUSED __attribute__((unused))
#else
#define RP_PRINTF(a, b)
#define RP_UNUSED
#endif

/* Records `code` and the formatted message in *err (may be NULL) and in the calling
 * thread's last-error slot. Returns `code`. */
int rp_fail(rp_err *err, int code, const char *fmt, ...) RP_PRINTF(3, 4);

/* Prefixes the message already in *err with "context: " (for adding a file name). */
int rp_fail_prefix(rp_err *err, const char *fmt, ...) RP_PRINTF(2, 3);

/* Copies *src into *dst (and the thread slot). Returns src->code. */
int rp_err_copy(rp_err *dst, const rp_err *src);

void rp_err_clear(rp_err *err);

/* Milliseconds on the monotonic clock (for intervals: progress throttling, timing). */
double rp_monotonic_ms(void);

/* A whole file held read-only in memory: an mmap where the system allows one, otherwise a
 * malloc'd copy read with pread. An empty file opens as data NULL, size 0 (callers decide
 * whether that is valid). */
typedef struct rp_file_image {
    const unsigned char *data;
    size_t size;
    int mapped; /* data is an mmap (else malloc'd) */
} rp_file_image;

/* Opens `path` (a regular file) into *img. On failure *img is empty and the error names
 * the path: E_IO (cannot open/stat/read, not a regular file), E_UNSUPPORTED (larger than
 * the address space), E_OUT_OF_MEMORY. */
int rp_file_image_open(const char *path, rp_file_image *img, rp_err *err);

/* Releases the image (unmap or free); safe on an empty or closed one. */
void rp_file_image_close(rp_file_image *img);

/* Propagate a non-zero status. */
#define RP_TRY(expr)                 \
    do {                             \
        int rp_try_rc_ = (expr);     \
        if (rp_try_rc_ != 0)         \
            return rp_try_rc_;       \
    } while (0)

/* Element types known to the file readers and backends. The numbering is internal. */
typedef enum rp_dtype {
    RP_F32 = 0,
    RP_F16,
    RP_BF16,
    RP_F64,
    RP_I8,
    RP_U8,
    RP_I16,
    RP_I32,
    RP_I64,
    RP_BOOL,
    RP_F8_E4M3,
    RP_F8_E5M2,
    RP_DTYPE_COUNT
} rp_dtype;

size_t rp_dtype_size(rp_dtype t);
const char *rp_dtype_name(rp_dtype t);

/* Scalar conversions (round-to-nearest-even for the narrowing ones, NaN kept NaN). */
float rp_bf16_to_f32(uint16_t h);
uint16_t rp_f32_to_bf16(float f);
float rp_f16_to_f32(uint16_t h);
uint16_t rp_f32_to_f16(float f);

/* Converts n elements of type `st` at src into float32 at dst (src may be unaligned).
 * Integer and fp8 sources are converted by value. Returns 0, or -1 for an unknown type. */
int rp_convert_to_f32(float *dst, const void *src, rp_dtype st, size_t n);
/* Converts n float32 values into type `dt` (F32, F64, BF16, F16). Returns 0 or -1. */
int rp_convert_from_f32(void *dst, rp_dtype dt, const float *src, size_t n);

/* Allocation helpers that never abort: NULL on failure (and overflow-checked). */
void *rp_malloc(size_t n);
void *rp_calloc(size_t count, size_t size);
void *rp_realloc_array(void *p, size_t count, size_t size);
char *rp_strdup(const char *s);

/* Size-versioned structs (every public *_params / *_info / *_result starts with a uint32_t
 * struct_size): rp_take_params copies the bytes a caller's struct covers over `dst` (which
 * holds the defaults; src may be NULL); rp_give_result writes an output struct honouring the
 * caller's struct_size. `full` is sizeof the library's own struct. */
void rp_take_params(void *dst, size_t full, const void *src);
void rp_give_result(void *dst, const void *src, size_t full);

/* Logging through the context's sink (defined in api.c). */
struct rwkvpeft_context;
void rp_log(const struct rwkvpeft_context *ctx, int level, const char *fmt, ...) RP_PRINTF(3, 4);

#endif
