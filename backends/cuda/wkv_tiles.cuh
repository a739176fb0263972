/* wkv_tiles.cuh — the register-tile machinery shared by the WKV6 and WKV7 kernels
 * (ops_wkv6.cu, ops_wkv7.cu): compile-time helpers, per-thread ownership of tile elements,
 * transposing and butterfly reductions over the lanes of a row/column group, and the staging of
 * a chunk of inputs global → registers → shared memory. The layout rules are explained at the
 * top of ops_wkv6.cu. Everything is in an anonymous namespace: each kernel file gets its own
 * copy of these inline templates. */
#ifndef RP_WKV_TILES_CUH
#define RP_WKV_TILES_CUH

#include "common.cuh"

namespace {

__host__ __device__ constexpr int cmin(int a, int b) { return a < b ? a : b; }
__host__ __device__ constexpr int cmax(int a, int b) { return a > b ? a : b; }
__host__ __device__ constexpr int clog2(int x) { return x <= 1 ? 0 : 1 + clog2(x / 2); }
__host__ __device__ constexpr bool pow2(int x) { return x > 0 && (x & (x - 1)) == 0; }

RP_DEV float decay_of(float w) { return expf(-expf(w)); }

/* ---- register tiles ------------------------------------------------------------------ */

/* A thread owns E elements of an axis shared by G lanes, interleaved in vectors of
 * W = min(E, 4): its element e sits at W·(G·(e/W) + g) + e%W, so the G lanes read one
 * contiguous run of shared memory per vector (no bank conflicts). */
template <int E, int G> RP_DEV int own_pos(int e, int g) {
    constexpr int W = cmin(E, 4);
    return W * (G * (e / W) + g) + e % W;
}

template <int W> RP_DEV void lds_vec(float *d, const float *s) {
    if constexpr (W == 4) {
        const float4 t = *reinterpret_cast<const float4 *>(s);
        d[0] = t.x;
        d[1] = t.y;
        d[2] = t.z;
        d[3] = t.w;
    } else if constexpr (W == 2) {
        const float2 t = *reinterpret_cast<const float2 *>(s);
        d[0] = t.x;
        d[1] = t.y;
    } else {
        d[0] = s[0];
    }
}

/* The E owned elements of one shared-memory row. */
template <int E, int G> RP_DEV void lds_own(float (&d)[E], const float *row, int g) {
    constexpr int W = cmin(E, 4);
#pragma unroll
    for (int q = 0; q < E / W; q++) lds_vec<W>(d + q * W, row + W * (G * q + g));
}

/* Transposing sum of x over G lanes whose lane indices differ by multiples of S (partners at
 * xor m·S): V ≥ G values cost V − V/G shuffles and leave V/G whole sums per lane; afterwards
 * x[q], q < max(V/G, 1), is the sum of the value that had index reduce_base<V, G>(g) + q, g the
 * lane's index among the G. */
template <int V, int G, int S = 1> RP_DEV void group_reduce(float (&x)[V], int g) {
    constexpr int NH = clog2(cmin(V, G));
#pragma unroll
    for (int s = 0; s < NH; s++) {
        const int m = G >> (s + 1), hv = V >> (s + 1);
        const bool up = (g & m) != 0;
#pragma unroll
        for (int q = 0; q < hv; q++) {
            const float send = up ? x[q] : x[q + hv];
            const float keep = up ? x[q + hv] : x[q];
            x[q] = keep + rp_shfl_xor(send, m * S);
        }
    }
#pragma unroll
    for (int m = G / (2 * V); m >= 1; m >>= 1) x[0] += rp_shfl_xor(x[0], m * S);
}
template <int V, int G> RP_DEV int reduce_base(int g) {
    constexpr int NH = clog2(cmin(V, G));
    int base = 0;
#pragma unroll
    for (int s = 0; s < NH; s++)
        if (g & (G >> (s + 1))) base += V >> (s + 1);
    return base;
}
/* V < G: several lanes end with the same sum; the one with zero butterfly bits writes it. */
template <int V, int G> RP_DEV bool reduce_owner(int g) { return V >= G || (g & (G / V - 1)) == 0; }

/* ---- chunk staging: global → registers → shared ---------------------------------------- */

struct alignas(16) q16 {
    uint32_t w[4];
};

/* n elements of T that one staging thread moves per step row; loaded as 16-byte pieces when
 * n fills whole pieces (W = 16/sizeof(T) elements each), else one by one (W = 1). Piece q of
 * lane sg of the TPS lanes staging a row sits at W·(TPS·q + sg): the lanes read contiguous
 * memory together. */
template <typename T, int n> struct raw_seg {
    static constexpr int VE = 16 / (int)sizeof(T);
    static constexpr int W = n % VE == 0 ? VE : 1;
    union {
        q16 q[W == VE ? n / VE : 1];
        T e[n];
    };
};
template <typename T, int n, int TPS> RP_DEV int stage_pos(int e, int sg) {
    constexpr int W = raw_seg<T, n>::W;
    return W * (TPS * (e / W) + sg) + e % W;
}
template <int TPS, typename T, int n> RP_DEV void seg_load(raw_seg<T, n> &s, const T *row, int sg, bool vec) {
    constexpr int W = raw_seg<T, n>::W;
    if constexpr (W == raw_seg<T, n>::VE) {
        if (vec) {
#pragma unroll
            for (int q = 0; q < n / W; q++) s.q[q] = *reinterpret_cast<const q16 *>(row + W * (TPS * q + sg));
            return;
        }
    }
#pragma unroll
    for (int e = 0; e < n; e++) s.e[e] = row[stage_pos<T, n, TPS>(e, sg)];
}
/* n staged floats into a shared row at the positions of raw_seg<T, n> (float4 stores). */
template <typename T, int n, int TPS> RP_DEV void sts_seg(float *row, const float (&x)[n], int sg) {
    constexpr int W = raw_seg<T, n>::W;
    if constexpr (W % 4 == 0) {
#pragma unroll
        for (int e = 0; e < n; e += 4) {
            float4 f;
            f.x = x[e];
            f.y = x[e + 1];
            f.z = x[e + 2];
            f.w = x[e + 3];
            *reinterpret_cast<float4 *>(row + stage_pos<T, n, TPS>(e, sg)) = f;
        }
    } else {
#pragma unroll
        for (int e = 0; e < n; e++) row[stage_pos<T, n, TPS>(e, sg)] = x[e];
    }
}

/* Σ over the TPS staging lanes of one step (adjacent lanes). */
template <int TPS> RP_DEV float stage_sum(float x) {
#pragma unroll
    for (int m = TPS / 2; m >= 1; m >>= 1) x += rp_shfl_xor(x, m);
    return x;
}

/* Every lane of the G-lane group gets every sum (butterflies). */
template <int V, int G> RP_DEV void group_allreduce(float (&x)[V]) {
#pragma unroll
    for (int m = G / 2; m >= 1; m >>= 1)
#pragma unroll
        for (int q = 0; q < V; q++) x[q] += rp_shfl_xor(x[q], m);
}

/* ---- host side ------------------------------------------------------------------------------ */

/* dst[e] += Σ_b part[b·per_b + e] for e < per_b, the batch summed in a fixed order (gradients of
 * a state or bonus shared by the batch: deterministic, unlike atomics). */
__global__ void wkv_sum_over_batch_kernel(par_t *__restrict__ dst, const float *__restrict__ part, int B,
                                          int64_t per_b) {
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < per_b; e += (int64_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int b = 0; b < B; b++) s += part[(int64_t)b * per_b + e];
        dst[e] += s;
    }
}

/* Multiprocessors of the current device (read once per device; 108 if unknown). */
static int wkv_sm_count(void) {
    static int count[16];
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 16) return 108;
    if (count[dev] == 0) {
        cudaDeviceProp p;
        count[dev] = cudaGetDeviceProperties(&p, dev) == cudaSuccess && p.multiProcessorCount > 0
                         ? p.multiProcessorCount
                         : 108;
    }
    return count[dev];
}

/* NULL or 16-byte aligned: the kernels may stage inputs in 16-byte pieces. */
static int wkv_aligned(const void *p) { return p == NULL || ((uintptr_t)p & 15u) == 0; }

} // namespace

#endif
