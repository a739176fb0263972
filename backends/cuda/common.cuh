/* common.cuh — what every file of the CUDA/HIP module shares: the backend instance, error
 * reporting, the scratch arena, element types and small device helpers, and the op
 * launchers' declarations (one ops_*.cu file per op; backend_cuda.cu builds the table).
 *
 * Element types: A (activations, large weights) = bf16, P (parameters, gradients, moments,
 * statistics, WKV states) = float32. bf16 and f16 are handled as raw 16-bit patterns with the
 * same rounding code as the CPU library (lib/common.c), so conversions are bit-identical on
 * every backend and no vendor bf16 header is needed (HIP 5.2 has none usable from C++).
 */
#ifndef RP_CUDA_COMMON_CUH
#define RP_CUDA_COMMON_CUH

#include <stddef.h>
#include <stdint.h>

#include "vendor.h"

extern "C" {
#include "backend.h"
}
#include "kernel_common.h"

#define RP_DEV __device__ __forceinline__

/* ------------------------------------------------------------------------------------ */
/* the backend instance                                                                 */
/* ------------------------------------------------------------------------------------ */

/* Freed device blocks kept for reuse by alloc (see backend_cuda.cu). */
#define CU_CACHE_SLOTS 64

typedef struct cu_live {
    void *p;
    size_t size;
} cu_live;

typedef struct cu_backend {
    rp_backend base;
    cudaStream_t stream;
#if defined(RP_HAVE_BLAS)
    cublasHandle_t blas;
    void *blas_ws; /* cuBLAS workspace, fixed at create so cuBLAS never allocates */
    size_t blas_ws_size;
#endif
    int use_tiled; /* gemm through the own tiled kernel (always without a vendor BLAS) */
    void *scratch; /* grow-only arena; one op uses it at a time (stream order) */
    size_t scratch_size;
    void *table; /* small grow-only device buffer for per-call host tables (adam segments) */
    size_t table_size;
    void *cache_ptr[CU_CACHE_SLOTS];
    size_t cache_size[CU_CACHE_SLOTS];
    size_t cached_bytes;
    cu_live *live; /* pointer → size of every block alloc handed out */
    size_t live_cap, live_n;
    char name[256];
} cu_backend;

static inline cu_backend *cu_of(rp_backend *be) { return (cu_backend *)be; }
static inline cudaStream_t cu_stream(rp_backend *be) { return ((cu_backend *)be)->stream; }

/* Records code + "file:line: message" in be->err; returns code. */
int cu_fail_at(rp_backend *be, int code, const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;
#define CU_FAIL(be, code, ...) cu_fail_at((be), (code), __FILE__, __LINE__, __VA_ARGS__)

/* A runtime call's error as a status (OOM → E_OUT_OF_MEMORY, else E_BACKEND). */
int cu_fail_rt(rp_backend *be, cudaError_t e, const char *what, const char *file, int line);
#define CU_TRY(be, call)                                                        \
    do {                                                                        \
        cudaError_t cu_try_e_ = (call);                                         \
        if (cu_try_e_ != cudaSuccess)                                           \
            return cu_fail_rt((be), cu_try_e_, #call, __FILE__, __LINE__);      \
    } while (0)
/* After every kernel launch. */
#define CU_LAUNCHED(be) CU_TRY(be, cudaGetLastError())

/* Makes the instance's device current for the calling thread. */
int cu_enter(rp_backend *be);
#define CU_ENTER(be) RP_TRY(cu_enter(be))

/* Scratch: a pointer to at least `bytes` of device memory owned by the backend, valid until
 * the next call of cu_scratch (later ops on the stream reuse it; stream order keeps that
 * safe). Grows (after a stream sync) only when a request exceeds every earlier one, so a
 * training step's sizes are all reserved by the first step. */
int cu_scratch(rp_backend *be, size_t bytes, void **out);
/* Bump-carves `bytes` (256-aligned) from *cursor. */
static inline void *cu_carve(char **cursor, size_t bytes) {
    void *p = *cursor;
    *cursor += (bytes + 255) & ~(size_t)255;
    return p;
}
static inline size_t cu_round(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

/* Small device table (uploaded from the host per call). */
int cu_upload_table(rp_backend *be, const void *host, size_t bytes, void **dev);

/* __launch_bounds__ with a minimum of resident blocks per SM on CUDA. The emulator's macro takes
 * one argument, and HIP reads the second as waves per execution unit (a different budget,
 * never tuned on AMD hardware), so both get the thread count only. */
#if defined(RWKVPEFT_CUDA_EMULATION) || defined(RWKVPEFT_USE_HIP)
#define RP_BOUNDS(nt, minb) __launch_bounds__(nt)
#else
#define RP_BOUNDS(nt, minb) __launch_bounds__(nt, minb)
#endif

/* Grid size for a grid-stride loop over n items. */
static inline unsigned cu_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535 * 8) b = 65535 * 8;
    return (unsigned)b;
}

/* ------------------------------------------------------------------------------------ */
/* element types                                                                        */
/* ------------------------------------------------------------------------------------ */

struct bf16_t {
    uint16_t bits;
};
struct f16_t {
    uint16_t bits;
};
/* A: bf16 as the reference. -DRWKVPEFT_CUDA_ACT_F32 builds a float32 variant of the module,
 * used to check the whole CUDA training step against the CPU at float32 tolerance. */
#ifdef RWKVPEFT_CUDA_ACT_F32
typedef float act_t;
#define RP_ACT_DTYPE RP_F32
#else
typedef bf16_t act_t;
#define RP_ACT_DTYPE RP_BF16
#endif
typedef float par_t;  /* P */

RP_DEV float bf16_bits_to_f32(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }
RP_DEV uint16_t f32_to_bf16_bits(float f) {
    uint32_t u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
RP_DEV float f16_bits_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
    if (e == 0) {
        if (mant == 0) {
            u = sign;
        } else {
            int s = -1;
            do {
                s++;
                mant <<= 1;
            } while (!(mant & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - s) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (e == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((e + 127 - 15) << 23) | (mant << 13);
    }
    return __uint_as_float(u);
}
RP_DEV uint16_t f32_to_f16_bits(float f) {
    uint32_t u = __float_as_uint(f);
    uint32_t sign = (u >> 16) & 0x8000u, absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (absu < 0x38800000u) {
        float scaled = __uint_as_float(absu) * 16777216.0f;
        return (uint16_t)(sign | (uint32_t)rintf(scaled));
    }
    uint32_t e = (absu >> 23) - 127 + 15, mant = absu & 0x7fffffu;
    uint32_t h = (e << 10) | (mant >> 13), rest = mant & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
    return (uint16_t)(sign | h);
}

RP_DEV float tof(float x) { return x; }
RP_DEV float tof(double x) { return (float)x; }
RP_DEV float tof(bf16_t x) { return bf16_bits_to_f32(x.bits); }
RP_DEV float tof(f16_t x) { return f16_bits_to_f32(x.bits); }

template <typename T> RP_DEV T fromf(float x);
template <> RP_DEV float fromf<float>(float x) { return x; }
template <> RP_DEV double fromf<double>(float x) { return (double)x; }
template <> RP_DEV bf16_t fromf<bf16_t>(float x) {
    bf16_t r;
    r.bits = f32_to_bf16_bits(x);
    return r;
}
template <> RP_DEV f16_t fromf<f16_t>(float x) {
    f16_t r;
    r.bits = f32_to_f16_bits(x);
    return r;
}

/* 16-byte accesses of A elements, for memory-bound element-wise kernels: ACT_VEC elements
 * (8 bf16, or 4 in the float32 build) per load/store. The pointer must be 16-byte aligned
 * (act_aligned16 tells; callers fall back to scalar kernels otherwise). */
#ifdef RWKVPEFT_CUDA_ACT_F32
#define ACT_VEC_LITERAL 4
#else
#define ACT_VEC_LITERAL 8
#endif
#define ACT_VEC ACT_VEC_LITERAL /* == 16 / sizeof(act_t) (checked below) */
static_assert(ACT_VEC * sizeof(act_t) == 16, "ACT_VEC must fill 16 bytes");
static inline bool act_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }
/* The 16-byte variant of a kernel applies: n (elements per row, or in all) a multiple of
 * ACT_VEC and every given (non-NULL) pointer 16-byte aligned. */
static inline bool act_vec_ok(int64_t n, const void *p0, const void *p1 = NULL, const void *p2 = NULL,
                              const void *p3 = NULL, const void *p4 = NULL, const void *p5 = NULL,
                              const void *p6 = NULL) {
    if (n % ACT_VEC) return false;
    const void *p[7] = {p0, p1, p2, p3, p4, p5, p6};
    for (int i = 0; i < 7; i++)
        if (p[i] && !act_aligned16(p[i])) return false;
    return true;
}
/* σ(x) in fp32: one definition for the activations and the SiLU-gated norm */
RP_DEV float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }
RP_DEV void act_load_vec(float (&d)[ACT_VEC], const act_t *p) {
    const uint4 raw = *reinterpret_cast<const uint4 *>(p);
    const act_t *e = reinterpret_cast<const act_t *>(&raw);
#pragma unroll
    for (int i = 0; i < ACT_VEC; i++) d[i] = tof(e[i]);
}
RP_DEV void act_store_vec(act_t *p, const float (&v)[ACT_VEC]) {
    uint4 raw;
    act_t *e = reinterpret_cast<act_t *>(&raw);
#pragma unroll
    for (int i = 0; i < ACT_VEC; i++) e[i] = fromf<act_t>(v[i]);
    *reinterpret_cast<uint4 *>(p) = raw;
}

/* ------------------------------------------------------------------------------------ */
/* reductions                                                                           */
/* ------------------------------------------------------------------------------------ */

template <typename T> RP_DEV T warp_sum(T v) {
#pragma unroll
    for (int off = RP_WARP_SIZE / 2; off > 0; off >>= 1) v += rp_shfl_xor(v, off);
    return v;
}

/* Teams up to this size reduce by shuffles inside a warp: a power of two no larger than any
 * warp/wavefront (32 or 64), so the host can choose the launch without knowing which. */
#define TEAM_SHFL_MAX 32

/* Sum over the block (blockDim.x a multiple of the warp size); every thread gets the
 * result. The order is fixed for a given launch shape, so results are deterministic. */
template <typename T> RP_DEV T block_sum(T v) {
    __shared__ T sh[RP_MAX_WARPS];
    const int lane = threadIdx.x % RP_WARP_SIZE, wid = threadIdx.x / RP_WARP_SIZE;
    const int nw = blockDim.x / RP_WARP_SIZE;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    T r = 0;
    for (int w = 0; w < nw; w++) r += sh[w];
    return r;
}

/* Sum over a team of `team` consecutive threads: a power of two ≤ TEAM_SHFL_MAX (several
 * teams per block), or else the whole block (team == blockDim.x). Every thread of the block
 * must call it (shuffles and barriers). */
RP_DEV float team_sum(float v, int team) {
    if (team > TEAM_SHFL_MAX) return block_sum(v);
    for (int off = team / 2; off > 0; off >>= 1) v += rp_shfl_xor(v, off);
    return v;
}

template <typename T> RP_DEV T warp_max(T v) {
#pragma unroll
    for (int off = RP_WARP_SIZE / 2; off > 0; off >>= 1) {
        const T o = rp_shfl_xor(v, off);
        v = o > v ? o : v;
    }
    return v;
}

/* Maximum over the block (same shape rules as block_sum); every thread gets the result. */
template <typename T> RP_DEV T block_max(T v) {
    __shared__ T sh[RP_MAX_WARPS];
    const int lane = threadIdx.x % RP_WARP_SIZE, wid = threadIdx.x / RP_WARP_SIZE;
    const int nw = blockDim.x / RP_WARP_SIZE;
    v = warp_max(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    T r = sh[0];
    for (int w = 1; w < nw; w++) r = sh[w] > r ? sh[w] : r;
    return r;
}

/* ------------------------------------------------------------------------------------ */
/* launchers (one file per op)                                                          */
/* ------------------------------------------------------------------------------------ */

/* backend_cuda.cu */
int cu_convert(rp_backend *be, void *dst, rp_dtype dt, const void *src, rp_dtype st, int64_t n);
/* Batched strided 2-D conversion: dst[p][r][c] = src[p][r][c] for rows×cols (pitches and
 * batch strides in elements). */
int cu_convert_2d(rp_backend *be, void *dst, rp_dtype dt, int64_t ldd, int64_t sd, const void *src,
                  rp_dtype st, int64_t lds, int64_t ss, int64_t rows, int64_t cols, int batch);

/* ops_gemm.cu / ops_gemm_tiled.cu */
int cu_gemm(rp_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha, const void *a,
            rp_dtype ta, int64_t lda, int64_t stride_a, const void *b, rp_dtype tb, int64_t ldb,
            int64_t stride_b, float beta, void *c, rp_dtype tc, int64_t ldc, int64_t stride_c, int batch);
int cu_gemm_tiled(rp_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha, const void *a,
                  rp_dtype ta, int64_t lda, int64_t stride_a, const void *b, rp_dtype tb, int64_t ldb,
                  int64_t stride_b, float beta, void *c, rp_dtype tc, int64_t ldc, int64_t stride_c,
                  int batch);
/* C = beta·C (beta 0: zero, C not read) for the m×n blocks of `batch` problems. */
int cu_scale_matrix(rp_backend *be, void *c, rp_dtype tc, int64_t ldc, int64_t stride_c, int m, int n,
                    int batch, float beta);

/* ops_embedding.cu */
int cu_embedding_fwd(rp_backend *be, void *out, const void *table, const int32_t *ids, int64_t n, int C);
int cu_embedding_bwd(rp_backend *be, void *dtable, const void *dout, const int32_t *ids, int64_t n, int C);

/* ops_norm.cu */
int cu_norm_fwd(rp_backend *be, void *y, void *mean, void *rstd, const void *x, const void *w, const void *b,
                int64_t n, int G, int S, float eps);
int cu_norm_bwd(rp_backend *be, void *dx, void *dw, void *db, const void *dy, const void *x, const void *w,
                const void *mean, const void *rstd, int64_t n, int G, int S);
int cu_norm_gate_fwd(rp_backend *be, void *out, void *mean, void *rstd, const void *x, const void *w, const void *b,
                     const void *gate, int silu_gate, int64_t n, int G, int S, float eps);
int cu_norm_gate_bwd(rp_backend *be, void *dx, void *dgate, void *dw, void *db, const void *dout, const void *x,
                     const void *w, const void *b, const void *gate, int silu_gate, const void *mean, const void *rstd,
                     int64_t n, int G, int S);

/* ops_shift_mix.cu */
int cu_shift_mix_fwd(rp_backend *be, void *out, const void *x, const void *x_prev, const void *coef,
                     const void *m, int form, int n_slots, int B, int T, int C);
int cu_shift_mix_bwd(rp_backend *be, void *dx, void *dx_prev, void *dcoef, void *dm, const void *dout,
                     const void *x, const void *x_prev, const void *coef, const void *m, int form, int n_slots,
                     int B, int T, int C);

/* ops_elementwise.cu */
int cu_act_fwd(rp_backend *be, int kind, void *y, const void *x, int64_t n);
int cu_act_bwd(rp_backend *be, int kind, void *dx, const void *dy, const void *x, const void *y, int64_t n);
int cu_act_mul_fwd(rp_backend *be, int kind, void *y, const void *a, const void *b, const void *r, int64_t n);
int cu_act_mul_bwd(rp_backend *be, int kind, void *da, void *db, const void *dy, const void *a, const void *b,
                   int64_t n);
int cu_mul_fwd(rp_backend *be, void *y, const void *a, const void *b, int64_t n);
int cu_mul_bwd(rp_backend *be, void *da, void *db, const void *dy, const void *a, const void *b, int64_t n);
int cu_add(rp_backend *be, void *y, const void *x, float alpha, int64_t n);
int cu_broadcast_rows(rp_backend *be, void *y, const void *v, int64_t n, int C, int accumulate);
int cu_sum_rows(rp_backend *be, void *dv, const void *dy, int64_t n, int C);
int cu_lerp_fwd(rp_backend *be, void *y, const void *a, const void *b, const void *t, int64_t n);
int cu_lerp_bwd(rp_backend *be, void *da, void *db, void *dt, const void *dy, const void *a, const void *b,
                const void *t, int64_t n);
int cu_dropout(rp_backend *be, void *y, const void *x, int64_t n, float p, uint64_t seed);
/* Column sums in two deterministic passes: the caller's kernel writes partial sums
 * part[chunk][col] over row chunks of cu_colsum_chunk_rows() rows; this adds Σ_chunk to dst. */
int cu_colsum_chunks(int64_t n_rows, int64_t n_cols, int64_t *rows_per_chunk);
int cu_colsum_finish(rp_backend *be, float *dst, const float *part, int n_chunks, int64_t n_cols);

/* ops_wkv6.cu */
int cu_wkv6_fwd(rp_backend *be, void *y, void *s_out, const void *r, const void *k, const void *v,
                const void *w, const void *u, const void *s0, int s0_shared, int B, int T, int H, int N);
int cu_wkv6_bwd(rp_backend *be, void *gr, void *gk, void *gv, void *gw, void *gu, void *gs0, const void *gy,
                const void *gs_out, const void *r, const void *k, const void *v, const void *w,
                const void *u, const void *s0, int s0_shared, int B, int T, int H, int N, void *scratch,
                size_t scratch_bytes);

/* ops_wkv7.cu */
int cu_wkv7_fwd(rp_backend *be, void *y, void *s_out, const void *r, const void *w, const void *k, const void *v,
                const void *a, const void *b, const void *s0, int s0_shared, int B, int T, int H, int N);
int cu_wkv7_bwd(rp_backend *be, void *gr, void *gw, void *gk, void *gv, void *ga, void *gb, void *gs0,
                const void *gy, const void *gs_out, const void *r, const void *w, const void *k, const void *v,
                const void *a, const void *b, const void *s0, int s0_shared, int B, int T, int H, int N);

/* ops_rwkv7.cu */
int cu_v7_kprep_fwd(rp_backend *be, void *k_out, void *wa, void *wb, const void *k, const void *a, const void *k_k,
                    const void *k_a, int64_t n, int H, int N);
int cu_v7_kprep_bwd(rp_backend *be, void *dk, void *da, void *dk_k, void *dk_a, const void *dk_out, const void *dwa,
                    const void *dwb, const void *k, const void *a, const void *k_k, const void *k_a, int64_t n, int H,
                    int N);
int cu_v7_bonus_fwd(rp_backend *be, void *y, const void *r, const void *k, const void *v, const void *r_k, int64_t n,
                    int H, int N);
int cu_v7_bonus_bwd(rp_backend *be, void *dr, void *dk, void *dv, void *dr_k, const void *dy, const void *r,
                    const void *k, const void *v, const void *r_k, int64_t n, int H, int N);

/* ops_loss.cu */
int cu_cross_entropy(rp_backend *be, void *loss_sum, void *dlogits, const void *logits, const int32_t *targets,
                     const void *weights, int64_t n, int V, float grad_scale, float l2wrap);

/* ops_optim.cu */
int cu_sumsq(rp_backend *be, void *acc, const void *x, const rp_adam_segment *segs, int n_segs);
int cu_adam_update(rp_backend *be, void *params, const void *grads, void *m, void *v,
                   const rp_adam_segment *segs, int n_segs, const void *norm_sq, float max_norm, float lr,
                   float beta1, float beta2, float eps, int64_t step);
int cu_adam8_update(rp_backend *be, void *params, const void *grads, uint8_t *m_q, uint8_t *v_q, float *m_absmax,
                    float *v_absmax, const float *code_m, const float *code_v, int64_t numel,
                    const rp_adam_segment *segs, int n_segs, const void *norm_sq, float max_norm, float lr,
                    float beta1, float beta2, float eps, int64_t step);

/* ops_quant.cu */
int cu_dequant(rp_backend *be, void *out, const void *q, const void *absmax, const void *code, int format,
               int64_t n, int blocksize);

#endif
