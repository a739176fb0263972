/* backend_cuda.cu — the CUDA (and, through vendor.h, HIP) backend module: discovery, lifetime,
 * memory, element conversion, and the ops table exported by rwkvpeft_backend_module().
 *
 * Memory model
 * - alloc/free: cudaMalloc-backed, with a small cache of freed blocks that alloc reuses
 *   (a block freed and reallocated is only ever touched in stream order, so reuse is safe).
 *   A failed cudaMalloc empties the cache and tries once more.
 * - Ops never call cudaMalloc except to grow the scratch arena (cu_scratch) or the segment
 *   table the first time a larger request arrives; with a fixed step shape that happens in
 *   the first step only. cuBLAS gets a fixed workspace at create.
 * - One non-blocking stream per instance; every op is enqueued on it. memcpy_h2d and
 *   memcpy_d2h return when the copy is done (the host buffer may be reused at once);
 *   synchronize waits for everything enqueued.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.cuh"

#define CU_INITIAL_SCRATCH (16u << 20)
#define CU_BLAS_WORKSPACE (32u << 20)
#define CU_CACHE_MAX_BYTES ((size_t)1 << 30)

#if defined(RWKVPEFT_USE_HIP)
#define CU_NAME "hip"
#define CU_VENDOR "HIP"
#else
#define CU_NAME "cuda"
#define CU_VENDOR "CUDA"
#endif

/* ------------------------------------------------------------------------------------ */
/* errors                                                                               */
/* ------------------------------------------------------------------------------------ */

static const char *base_name(const char *path) {
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int cu_fail_at(rp_backend *be, int code, const char *file, int line, const char *fmt, ...) {
    char msg[RP_ERR_MSG_MAX - 96]; /* room for "file:line: " */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    be->err.code = code;
    snprintf(be->err.msg, sizeof be->err.msg, "%.64s:%d: %s", base_name(file), line, msg);
    return code;
}

int cu_fail_rt(rp_backend *be, cudaError_t e, const char *what, const char *file, int line) {
    int code = e == cudaErrorMemoryAllocation ? RWKVPEFT_E_OUT_OF_MEMORY : RWKVPEFT_E_BACKEND;
    if (e == cudaErrorMemoryAllocation) (void)cudaGetLastError(); /* not sticky: clear it */
    return cu_fail_at(be, code, file, line, "%s failed: %s (%s)", what, cudaGetErrorString(e),
                      cudaGetErrorName(e));
}

#if defined(RP_HAVE_BLAS)
#define CUBLAS_TRY_INIT(err, call, what)                                                         \
    do {                                                                                         \
        cublasStatus_t st_ = (call);                                                             \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                      \
            set_err(err, RWKVPEFT_E_BACKEND, "%s:%d: %s failed (cuBLAS status %d)", __FILE__,   \
                    __LINE__, what, (int)st_);                                                   \
            goto fail;                                                                           \
        }                                                                                        \
    } while (0)
#endif

static void set_err(rp_err *err, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static void set_err(rp_err *err, int code, const char *fmt, ...) {
    if (!err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
}

int cu_enter(rp_backend *be) {
    int cur = -1;
    cudaError_t e = cudaGetDevice(&cur);
    if (e != cudaSuccess) return cu_fail_rt(be, e, "cudaGetDevice", __FILE__, __LINE__);
    if (cur != be->device) CU_TRY(be, cudaSetDevice(be->device));
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* scratch and tables                                                                   */
/* ------------------------------------------------------------------------------------ */

static int grow_buffer(rp_backend *be, void **buf, size_t *size, size_t bytes) {
    if (bytes <= *size && *buf) return 0;
    size_t want = *size ? *size : 4096;
    while (want < bytes) want += want / 2 + 4096;
    want = cu_round(want);
    if (*buf) {
        /* in-flight ops may still read the old buffer */
        CU_TRY(be, cudaStreamSynchronize(cu_stream(be)));
        CU_TRY(be, cudaFree(*buf));
        *buf = NULL;
        *size = 0;
    }
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, want);
    if (e != cudaSuccess) return cu_fail_rt(be, e, "cudaMalloc (scratch)", __FILE__, __LINE__);
    *buf = p;
    *size = want;
    return 0;
}

int cu_scratch(rp_backend *be, size_t bytes, void **out) {
    cu_backend *cb = cu_of(be);
    RP_TRY(grow_buffer(be, &cb->scratch, &cb->scratch_size, bytes < 256 ? 256 : bytes));
    *out = cb->scratch;
    return 0;
}

int cu_upload_table(rp_backend *be, const void *host, size_t bytes, void **dev) {
    cu_backend *cb = cu_of(be);
    RP_TRY(grow_buffer(be, &cb->table, &cb->table_size, bytes < 256 ? 256 : bytes));
    /* A pageable source is staged by the runtime before this returns, so the caller's array
     * may go away; the copy runs in stream order after the previous user of the table. */
    if (bytes) CU_TRY(be, cudaMemcpyAsync(cb->table, host, bytes, cudaMemcpyHostToDevice, cb->stream));
    *dev = cb->table;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* discovery and lifetime                                                               */
/* ------------------------------------------------------------------------------------ */

static int cu_probe(char *desc, size_t desc_size) {
    char local[8];
    if (!desc || desc_size == 0) {
        desc = local;
        desc_size = sizeof local;
    }
    int count = -1;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        /* without a driver the count is left unwritten: only the status is trustworthy */
        snprintf(desc, desc_size, "%s unavailable: %s (%s)", CU_VENDOR, cudaGetErrorString(e),
                 cudaGetErrorName(e));
        (void)cudaGetLastError();
        return 0;
    }
    if (count <= 0) {
        snprintf(desc, desc_size, "no %s device", CU_VENDOR);
        return 0;
    }
    cudaDeviceProp prop;
    e = cudaGetDeviceProperties(&prop, 0);
    if (e != cudaSuccess) {
        snprintf(desc, desc_size, "%d %s device(s) (properties unavailable: %s)", count, CU_VENDOR,
                 cudaGetErrorString(e));
        return count;
    }
    snprintf(desc, desc_size, "%d %s device(s); device 0: %s (cc %d.%d, %.1f GiB)", count, CU_VENDOR,
             prop.name, prop.major, prop.minor, (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return count;
}

__global__ void cu_selftest_kernel(int *out) { out[threadIdx.x] = (int)threadIdx.x * 3; }

static void cu_release(cu_backend *cb);

static rp_backend *cu_create(int device, int n_threads, rp_err *err) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || device < 0 || device >= count) {
        set_err(err, RWKVPEFT_E_BACKEND, "%s backend: device %d does not exist (%s)", CU_NAME, device,
                e != cudaSuccess ? cudaGetErrorString(e) : "out of range");
        return NULL;
    }
    cu_backend *cb = (cu_backend *)calloc(1, sizeof *cb);
    if (!cb) {
        set_err(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory creating the %s backend", CU_NAME);
        return NULL;
    }
    extern const rp_backend_ops *cu_ops_table(void);
    cb->base.ops = cu_ops_table();
    cb->base.device = device;
    cb->base.n_threads = n_threads;
#define INIT_TRY(call)                                                                              \
    do {                                                                                            \
        cudaError_t e_ = (call);                                                                    \
        if (e_ != cudaSuccess) {                                                                    \
            set_err(err, e_ == cudaErrorMemoryAllocation ? RWKVPEFT_E_OUT_OF_MEMORY : RWKVPEFT_E_BACKEND, \
                    "%s:%d: %s failed: %s", base_name(__FILE__), __LINE__, #call, cudaGetErrorString(e_)); \
            goto fail;                                                                              \
        }                                                                                           \
    } while (0)
    INIT_TRY(cudaSetDevice(device));
    {
        cudaDeviceProp prop;
        INIT_TRY(cudaGetDeviceProperties(&prop, device));
        snprintf(cb->name, sizeof cb->name, "%s", prop.name);
    }
    INIT_TRY(cudaStreamCreateWithFlags(&cb->stream, cudaStreamNonBlocking));
    INIT_TRY(cudaMalloc(&cb->scratch, CU_INITIAL_SCRATCH));
    cb->scratch_size = CU_INITIAL_SCRATCH;
    {
        /* a kernel launch proves the module carries code for this device */
        int *d = (int *)cb->scratch, h[4] = {0, 0, 0, 0};
        cu_selftest_kernel<<<1, 4, 0, cb->stream>>>(d);
        INIT_TRY(cudaGetLastError());
        INIT_TRY(cudaMemcpyAsync(h, d, sizeof h, cudaMemcpyDeviceToHost, cb->stream));
        INIT_TRY(cudaStreamSynchronize(cb->stream));
        if (h[3] != 9) {
            set_err(err, RWKVPEFT_E_BACKEND, "%s backend: self-test kernel gave wrong results", CU_NAME);
            goto fail;
        }
    }
    {
        const char *g = getenv("RWKVPEFT_CUDA_GEMM");
        cb->use_tiled = g && strcmp(g, "tiled") == 0;
    }
#if defined(RP_HAVE_BLAS)
    CUBLAS_TRY_INIT(err, cublasCreate(&cb->blas), "cublasCreate");
    CUBLAS_TRY_INIT(err, cublasSetStream(cb->blas, cb->stream), "cublasSetStream");
#if !defined(RWKVPEFT_USE_HIP)
    /* float32 GEMMs stay float32 (no TF32); bf16 inputs still use tensor cores, fp32 accumulate */
    CUBLAS_TRY_INIT(err, cublasSetMathMode(cb->blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
#endif
#if !defined(RP_BLAS_NO_WORKSPACE)
    INIT_TRY(cudaMalloc(&cb->blas_ws, CU_BLAS_WORKSPACE));
    cb->blas_ws_size = CU_BLAS_WORKSPACE;
    CUBLAS_TRY_INIT(err, cublasSetWorkspace(cb->blas, cb->blas_ws, cb->blas_ws_size), "cublasSetWorkspace");
#endif
#else
    cb->use_tiled = 1;
#endif
#undef INIT_TRY
    return &cb->base;
fail:
    cu_release(cb);
    return NULL;
}

static void cu_release(cu_backend *cb) {
    if (cb->stream) (void)cudaStreamSynchronize(cb->stream);
#if defined(RP_HAVE_BLAS)
    if (cb->blas) (void)cublasDestroy(cb->blas);
    if (cb->blas_ws) (void)cudaFree(cb->blas_ws);
#endif
    for (int i = 0; i < CU_CACHE_SLOTS; i++)
        if (cb->cache_ptr[i]) (void)cudaFree(cb->cache_ptr[i]);
    free(cb->live); /* blocks still allocated belong to the caller, who frees them first */
    if (cb->scratch) (void)cudaFree(cb->scratch);
    if (cb->table) (void)cudaFree(cb->table);
    if (cb->stream) (void)cudaStreamDestroy(cb->stream);
    (void)cudaGetLastError();
    free(cb);
}

static void cu_destroy(rp_backend *be) {
    if (!be) return;
    (void)cu_enter(be);
    cu_release(cu_of(be));
}

/* ------------------------------------------------------------------------------------ */
/* memory                                                                               */
/* ------------------------------------------------------------------------------------ */

/* Live allocations (pointer → size), so free can park a block in the cache. Open addressing
 * with linear probing and backward-shift deletion. */
static size_t live_slot(const void *p, size_t cap) {
    uint64_t h = (uint64_t)(uintptr_t)p;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return (size_t)(h & (cap - 1));
}

static int live_insert(rp_backend *be, void *p, size_t size) {
    cu_backend *cb = cu_of(be);
    if ((cb->live_n + 1) * 2 > cb->live_cap) {
        size_t ncap = cb->live_cap ? cb->live_cap * 2 : 256;
        cu_live *nt = (cu_live *)calloc(ncap, sizeof *nt);
        if (!nt) return CU_FAIL(be, RWKVPEFT_E_OUT_OF_MEMORY, "alloc: host memory for the allocation table");
        for (size_t i = 0; i < cb->live_cap; i++)
            if (cb->live[i].p) {
                size_t j = live_slot(cb->live[i].p, ncap);
                while (nt[j].p) j = (j + 1) & (ncap - 1);
                nt[j] = cb->live[i];
            }
        free(cb->live);
        cb->live = nt;
        cb->live_cap = ncap;
    }
    size_t j = live_slot(p, cb->live_cap);
    while (cb->live[j].p) j = (j + 1) & (cb->live_cap - 1);
    cb->live[j].p = p;
    cb->live[j].size = size;
    cb->live_n++;
    return 0;
}

/* Removes p; returns its size (0 when p is not a live allocation of this instance). */
static size_t live_remove(cu_backend *cb, const void *p) {
    if (!cb->live_cap) return 0;
    size_t mask = cb->live_cap - 1, j = live_slot(p, cb->live_cap);
    while (cb->live[j].p && cb->live[j].p != p) j = (j + 1) & mask;
    if (!cb->live[j].p) return 0;
    size_t size = cb->live[j].size;
    cb->live[j].p = NULL;
    cb->live_n--;
    /* backward-shift the entries that follow so probes stay unbroken */
    size_t hole = j, k = (j + 1) & mask;
    while (cb->live[k].p) {
        size_t home = live_slot(cb->live[k].p, cb->live_cap);
        /* move k into the hole when its home lies cyclically outside (hole, k] */
        int outside = hole <= k ? (home <= hole || home > k) : (home <= hole && home > k);
        if (outside) {
            cb->live[hole] = cb->live[k];
            cb->live[k].p = NULL;
            hole = k;
        }
        k = (k + 1) & mask;
    }
    return size;
}

static int cache_flush(rp_backend *be) {
    cu_backend *cb = cu_of(be);
    CU_TRY(be, cudaStreamSynchronize(cb->stream));
    for (int i = 0; i < CU_CACHE_SLOTS; i++)
        if (cb->cache_ptr[i]) {
            CU_TRY(be, cudaFree(cb->cache_ptr[i]));
            cb->cache_ptr[i] = NULL;
            cb->cache_size[i] = 0;
        }
    cb->cached_bytes = 0;
    return 0;
}

static int cu_alloc(rp_backend *be, void **ptr, size_t bytes) {
    cu_backend *cb = cu_of(be);
    *ptr = NULL;
    CU_ENTER(be);
    size_t sz = cu_round(bytes ? bytes : 1);
    if (sz < bytes) return CU_FAIL(be, RWKVPEFT_E_OUT_OF_MEMORY, "alloc: size overflow");
    /* reuse the smallest cached block that is at most a quarter larger than asked */
    int best = -1;
    for (int i = 0; i < CU_CACHE_SLOTS; i++)
        if (cb->cache_ptr[i] && cb->cache_size[i] >= sz && cb->cache_size[i] - sz <= sz / 4 &&
            (best < 0 || cb->cache_size[i] < cb->cache_size[best]))
            best = i;
    void *p = NULL;
    size_t got = sz;
    if (best >= 0) {
        p = cb->cache_ptr[best];
        got = cb->cache_size[best];
        cb->cached_bytes -= got;
        cb->cache_ptr[best] = NULL;
        cb->cache_size[best] = 0;
    } else {
        cudaError_t e = cudaMalloc(&p, sz);
        if (e == cudaErrorMemoryAllocation && cb->cached_bytes) {
            (void)cudaGetLastError();
            RP_TRY(cache_flush(be));
            e = cudaMalloc(&p, sz);
        }
        if (e != cudaSuccess) {
            cu_fail_rt(be, e, "cudaMalloc", __FILE__, __LINE__);
            size_t len = strlen(be->err.msg);
            snprintf(be->err.msg + len, sizeof be->err.msg - len, " (%zu bytes)", bytes);
            return be->err.code;
        }
    }
    int rc = live_insert(be, p, got);
    if (rc) {
        (void)cudaFree(p);
        return rc;
    }
    *ptr = p;
    return 0;
}

static void cu_free(rp_backend *be, void *p) {
    cu_backend *cb = cu_of(be);
    if (!p || cu_enter(be) != 0) return;
    size_t size = live_remove(cb, p);
    if (size && size <= CU_CACHE_MAX_BYTES - cb->cached_bytes) {
        /* park it: a later alloc of about this size reuses it (stream order keeps in-flight
         * readers safe, since every user of the block is on this instance's stream) */
        int slot = -1;
        for (int i = 0; i < CU_CACHE_SLOTS; i++)
            if (!cb->cache_ptr[i]) {
                slot = i;
                break;
            }
        if (slot < 0) { /* full: evict the largest */
            slot = 0;
            for (int i = 1; i < CU_CACHE_SLOTS; i++)
                if (cb->cache_size[i] > cb->cache_size[slot]) slot = i;
            if (cb->cache_size[slot] > size) {
                (void)cudaStreamSynchronize(cb->stream);
                cudaError_t e = cudaFree(cb->cache_ptr[slot]);
                if (e != cudaSuccess) cu_fail_rt(be, e, "cudaFree", __FILE__, __LINE__);
                cb->cached_bytes -= cb->cache_size[slot];
            } else {
                slot = -1;
            }
        }
        if (slot >= 0) {
            cb->cache_ptr[slot] = p;
            cb->cache_size[slot] = size;
            cb->cached_bytes += size;
            return;
        }
    }
    (void)cudaStreamSynchronize(cb->stream); /* in-flight ops may still use it */
    cudaError_t e = cudaFree(p);
    if (e != cudaSuccess) cu_fail_rt(be, e, "cudaFree", __FILE__, __LINE__);
}

static int cu_memcpy_h2d(rp_backend *be, void *dst, const void *src, size_t bytes) {
    if (!bytes) return 0;
    CU_ENTER(be);
    CU_TRY(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cu_stream(be)));
    CU_TRY(be, cudaStreamSynchronize(cu_stream(be)));
    return 0;
}

static int cu_memcpy_d2h(rp_backend *be, void *dst, const void *src, size_t bytes) {
    CU_ENTER(be);
    if (bytes) CU_TRY(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cu_stream(be)));
    CU_TRY(be, cudaStreamSynchronize(cu_stream(be)));
    return 0;
}

static int cu_memcpy_d2d(rp_backend *be, void *dst, const void *src, size_t bytes) {
    if (!bytes || dst == src) return 0;
    CU_ENTER(be);
    CU_TRY(be, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cu_stream(be)));
    return 0;
}

static int cu_memcpy_2d(rp_backend *be, void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                        size_t row_bytes, size_t rows) {
    if (!rows || !row_bytes) return 0;
    CU_ENTER(be);
    if (dst_pitch < row_bytes || src_pitch < row_bytes)
        return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "memcpy_2d: pitch smaller than the row");
    CU_TRY(be, cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, row_bytes, rows, cudaMemcpyDeviceToDevice,
                                 cu_stream(be)));
    return 0;
}

static int cu_memset_zero(rp_backend *be, void *dst, size_t bytes) {
    if (!bytes) return 0;
    CU_ENTER(be);
    CU_TRY(be, cudaMemsetAsync(dst, 0, bytes, cu_stream(be)));
    return 0;
}

static int cu_synchronize(rp_backend *be) {
    CU_ENTER(be);
    CU_TRY(be, cudaStreamSynchronize(cu_stream(be)));
    return 0;
}

static int cu_memory_info(rp_backend *be, uint64_t *free_b, uint64_t *total_b) {
    CU_ENTER(be);
    size_t f = 0, t = 0;
    CU_TRY(be, cudaMemGetInfo(&f, &t));
    if (free_b) *free_b = (uint64_t)f + cu_of(be)->cached_bytes;
    if (total_b) *total_b = (uint64_t)t;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* conversion                                                                           */
/* ------------------------------------------------------------------------------------ */

template <typename D, typename S> RP_DEV D cvt(S x) { return fromf<D>(tof(x)); }
/* float64 ↔ float64 and float64 → float32 must not pass through a narrower type */
template <> RP_DEV double cvt<double, double>(double x) { return x; }
template <> RP_DEV float cvt<float, double>(double x) { return (float)x; }

template <typename D, typename S>
__global__ void convert_kernel(D *__restrict__ dst, const S *__restrict__ src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = cvt<D, S>(src[i]);
}

template <typename D, typename S>
__global__ void convert_2d_kernel(D *__restrict__ dst, int64_t ldd, int64_t sd, const S *__restrict__ src,
                                  int64_t lds, int64_t ss, int64_t rows, int64_t cols) {
    const int p = blockIdx.y;
    const int64_t total = rows * cols;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = e / cols, c = e % cols;
        dst[p * sd + r * ldd + c] = cvt<D, S>(src[p * ss + r * lds + c]);
    }
}

static const char *dtype_name(rp_dtype t) {
    static const char *names[RP_DTYPE_COUNT] = {"float32", "float16", "bfloat16", "float64",
                                                 "int8",    "uint8",   "int16",    "int32",
                                                 "int64",   "bool",    "float8_e4m3fn", "float8_e5m2"};
    return (unsigned)t < RP_DTYPE_COUNT ? names[t] : "unknown";
}

static int dtype_index(rp_dtype t) {
    switch (t) {
    case RP_F32: return 0;
    case RP_BF16: return 1;
    case RP_F16: return 2;
    case RP_F64: return 3;
    default: return -1;
    }
}

template <typename D, typename S>
static void launch_convert(void *dst, const void *src, int64_t n, cudaStream_t s) {
    convert_kernel<D, S><<<cu_blocks(n, 256), 256, 0, s>>>((D *)dst, (const S *)src, n);
}
template <typename D, typename S>
static void launch_convert_2d(void *dst, int64_t ldd, int64_t sd, const void *src, int64_t lds, int64_t ss,
                              int64_t rows, int64_t cols, int batch, cudaStream_t s) {
    dim3 grid(cu_blocks(rows * cols, 256), (unsigned)batch);
    convert_2d_kernel<D, S><<<grid, 256, 0, s>>>((D *)dst, ldd, sd, (const S *)src, lds, ss, rows, cols);
}

typedef void (*convert_fn)(void *, const void *, int64_t, cudaStream_t);
typedef void (*convert_2d_fn)(void *, int64_t, int64_t, const void *, int64_t, int64_t, int64_t, int64_t, int,
                              cudaStream_t);

#define CONVERT_ROW(D)                                                                             \
    {launch_convert<D, float>, launch_convert<D, bf16_t>, launch_convert<D, f16_t>, launch_convert<D, double>}
static const convert_fn convert_table[4][4] = {CONVERT_ROW(float), CONVERT_ROW(bf16_t), CONVERT_ROW(f16_t),
                                               CONVERT_ROW(double)};
#define CONVERT_2D_ROW(D)                                                                          \
    {launch_convert_2d<D, float>, launch_convert_2d<D, bf16_t>, launch_convert_2d<D, f16_t>,       \
     launch_convert_2d<D, double>}
static const convert_2d_fn convert_2d_table[4][4] = {CONVERT_2D_ROW(float), CONVERT_2D_ROW(bf16_t),
                                                     CONVERT_2D_ROW(f16_t), CONVERT_2D_ROW(double)};

int cu_convert(rp_backend *be, void *dst, rp_dtype dt, const void *src, rp_dtype st, int64_t n) {
    int di = dtype_index(dt), si = dtype_index(st);
    if (di < 0 || si < 0)
        return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "convert: unsupported element type (%s -> %s)",
                       dtype_name(st), dtype_name(dt));
    if (n <= 0) return 0;
    CU_ENTER(be);
    if (dt == st) {
        if (dst != src)
            CU_TRY(be, cudaMemcpyAsync(dst, src, (size_t)n * (dt == RP_F64 ? 8 : dt == RP_F32 ? 4 : 2),
                                       cudaMemcpyDeviceToDevice, cu_stream(be)));
        return 0;
    }
    convert_table[di][si](dst, src, n, cu_stream(be));
    CU_LAUNCHED(be);
    return 0;
}

int cu_convert_2d(rp_backend *be, void *dst, rp_dtype dt, int64_t ldd, int64_t sd, const void *src, rp_dtype st,
                  int64_t lds, int64_t ss, int64_t rows, int64_t cols, int batch) {
    int di = dtype_index(dt), si = dtype_index(st);
    if (di < 0 || si < 0) return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "convert_2d: unsupported element type");
    if (rows <= 0 || cols <= 0 || batch <= 0) return 0;
    for (int p0 = 0; p0 < batch; p0 += 65535) {
        int nb = batch - p0 < 65535 ? batch - p0 : 65535;
        size_t des = dt == RP_F64 ? 8 : dt == RP_F32 ? 4 : 2, ses = st == RP_F64 ? 8 : st == RP_F32 ? 4 : 2;
        convert_2d_table[di][si]((char *)dst + (size_t)(p0 * sd) * des, ldd, sd,
                                 (const char *)src + (size_t)(p0 * ss) * ses, lds, ss, rows, cols, nb,
                                 cu_stream(be));
        CU_LAUNCHED(be);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* the table                                                                            */
/* ------------------------------------------------------------------------------------ */

static rp_backend_ops make_table(void) {
    rp_backend_ops t;
    memset(&t, 0, sizeof t);
    t.api_version = RP_BACKEND_API_VERSION;
    t.struct_size = sizeof(rp_backend_ops);
    t.name = CU_NAME;
    t.act_dtype = RP_ACT_DTYPE;
    t.par_dtype = RP_F32;
    t.probe = cu_probe;
    t.create = cu_create;
    t.destroy = cu_destroy;
    t.alloc = cu_alloc;
    t.free = cu_free;
    t.memcpy_h2d = cu_memcpy_h2d;
    t.memcpy_d2h = cu_memcpy_d2h;
    t.memcpy_d2d = cu_memcpy_d2d;
    t.memcpy_2d = cu_memcpy_2d;
    t.memset_zero = cu_memset_zero;
    t.convert = cu_convert;
    t.synchronize = cu_synchronize;
    t.memory_info = cu_memory_info;
    t.gemm = cu_gemm;
    t.embedding_fwd = cu_embedding_fwd;
    t.embedding_bwd = cu_embedding_bwd;
    t.norm_fwd = cu_norm_fwd;
    t.norm_bwd = cu_norm_bwd;
    t.norm_gate_fwd = cu_norm_gate_fwd;
    t.norm_gate_bwd = cu_norm_gate_bwd;
    t.shift_mix_fwd = cu_shift_mix_fwd;
    t.shift_mix_bwd = cu_shift_mix_bwd;
    t.act_fwd = cu_act_fwd;
    t.act_bwd = cu_act_bwd;
    t.act_mul_fwd = cu_act_mul_fwd;
    t.act_mul_bwd = cu_act_mul_bwd;
    t.mul_fwd = cu_mul_fwd;
    t.mul_bwd = cu_mul_bwd;
    t.add = cu_add;
    t.broadcast_rows = cu_broadcast_rows;
    t.sum_rows = cu_sum_rows;
    t.lerp_fwd = cu_lerp_fwd;
    t.lerp_bwd = cu_lerp_bwd;
    t.dropout = cu_dropout;
    t.wkv6_fwd = cu_wkv6_fwd;
    t.wkv6_bwd = cu_wkv6_bwd;
    t.cross_entropy = cu_cross_entropy;
    t.sumsq = cu_sumsq;
    t.adam_update = cu_adam_update;
    t.adam8_update = cu_adam8_update;
    t.dequant = cu_dequant;
    t.wkv7_fwd = cu_wkv7_fwd;
    t.wkv7_bwd = cu_wkv7_bwd;
    t.v7_kprep_fwd = cu_v7_kprep_fwd;
    t.v7_kprep_bwd = cu_v7_kprep_bwd;
    t.v7_bonus_fwd = cu_v7_bonus_fwd;
    t.v7_bonus_bwd = cu_v7_bonus_bwd;
    return t;
}

const rp_backend_ops *cu_ops_table(void) {
    static const rp_backend_ops table = make_table(); /* thread-safe static initialisation */
    return &table;
}

extern "C" __attribute__((visibility("default"))) const rp_backend_ops *rwkvpeft_backend_module(
    uint32_t api_version) {
    if (api_version != RP_BACKEND_API_VERSION) return NULL;
    return cu_ops_table();
}
