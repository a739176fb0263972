/* ops_gemm_tiled.cu — the project's own GEMM: the HIP module's only GEMM (Debian ships no
 * hipBLAS) and, in the CUDA module, a switchable alternative (RWKVPEFT_CUDA_GEMM=tiled) so its
 * math is checked against cuBLAS on real hardware.
 *
 * Row-major C_p = alpha·op(A_p)·op(B_p) + beta·C_p for each problem p of the batch, any mix of
 * bf16/f32 operand types (templated), fp32 accumulation, both transposes, arbitrary leading
 * dimensions and batch strides (0 = broadcast), ragged edges (guarded loads, zero padding).
 * Tiles: 64×64 outputs per 256-thread block, K in slices of 16 staged in shared memory; each
 * thread owns a 4×4 sub-tile spread 16 apart (coalesced stores, conflict-free shared reads).
 * beta == 0 never reads C. */
#include "common.cuh"

#define TG_BM 64
#define TG_BN 64
#define TG_BK 16
#define TG_THREADS 256

template <typename TA, typename TB, typename TC>
__global__ void __launch_bounds__(TG_THREADS)
    gemm_tiled_kernel(int trans_a, int trans_b, int m, int n, int k, float alpha, const TA *__restrict__ A,
                      int64_t lda, int64_t sa, const TB *__restrict__ B, int64_t ldb, int64_t sb, float beta,
                      TC *__restrict__ C, int64_t ldc, int64_t sc, int batch0) {
    __shared__ float As[TG_BK][TG_BM];
    __shared__ float Bs[TG_BK][TG_BN];
    const int p = batch0 + (int)blockIdx.z;
    A += (int64_t)p * sa;
    B += (int64_t)p * sb;
    C += (int64_t)p * sc;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = blockIdx.y * TG_BM, n0 = blockIdx.x * TG_BN;
    float acc[4][4];
#pragma unroll
    for (int a = 0; a < 4; a++)
#pragma unroll
        for (int b = 0; b < 4; b++) acc[a][b] = 0.0f;

    for (int k0 = 0; k0 < k; k0 += TG_BK) {
        /* stage op(A)[m0:m0+64, k0:k0+16] as As[kk][i] and op(B)[k0:k0+16, n0:n0+64] as Bs[kk][j];
         * the element order follows the stored layout so global reads are coalesced */
#pragma unroll
        for (int q = 0; q < (TG_BM * TG_BK) / TG_THREADS; q++) {
            const int e = tid + q * TG_THREADS;
            int i, kk;
            if (!trans_a) {
                i = e / TG_BK;
                kk = e % TG_BK;
            } else {
                i = e % TG_BM;
                kk = e / TG_BM;
            }
            const int gi = m0 + i, gk = k0 + kk;
            float val = 0.0f;
            if (gi < m && gk < k) val = tof(trans_a ? A[(int64_t)gk * lda + gi] : A[(int64_t)gi * lda + gk]);
            As[kk][i] = val;
        }
#pragma unroll
        for (int q = 0; q < (TG_BN * TG_BK) / TG_THREADS; q++) {
            const int e = tid + q * TG_THREADS;
            int j, kk;
            if (!trans_b) {
                j = e % TG_BN;
                kk = e / TG_BN;
            } else {
                j = e / TG_BK;
                kk = e % TG_BK;
            }
            const int gj = n0 + j, gk = k0 + kk;
            float val = 0.0f;
            if (gj < n && gk < k) val = tof(trans_b ? B[(int64_t)gj * ldb + gk] : B[(int64_t)gk * ldb + gj]);
            Bs[kk][j] = val;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TG_BK; kk++) {
            float av[4], bv[4];
#pragma unroll
            for (int a = 0; a < 4; a++) av[a] = As[kk][ty + 16 * a];
#pragma unroll
            for (int b = 0; b < 4; b++) bv[b] = Bs[kk][tx + 16 * b];
#pragma unroll
            for (int a = 0; a < 4; a++)
#pragma unroll
                for (int b = 0; b < 4; b++) acc[a][b] = fmaf(av[a], bv[b], acc[a][b]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int a = 0; a < 4; a++) {
        const int gi = m0 + ty + 16 * a;
        if (gi >= m) continue;
#pragma unroll
        for (int b = 0; b < 4; b++) {
            const int gj = n0 + tx + 16 * b;
            if (gj >= n) continue;
            TC *cp = C + (int64_t)gi * ldc + gj;
            float val = alpha * acc[a][b];
            if (beta != 0.0f) val += beta * tof(*cp);
            *cp = fromf<TC>(val);
        }
    }
}

/* C = beta·C over m×n blocks (beta == 0 writes zeros without reading). */
template <typename TC>
__global__ void scale_matrix_kernel(TC *C, int64_t ldc, int64_t sc, int m, int n, float beta, int batch0) {
    const int p = batch0 + (int)blockIdx.y;
    TC *Cp = C + (int64_t)p * sc;
    const int64_t total = (int64_t)m * n;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        TC *cp = Cp + (e / n) * ldc + (e % n);
        *cp = fromf<TC>(beta == 0.0f ? 0.0f : beta * tof(*cp));
    }
}

/* ---- launchers ---- */

template <typename TA, typename TB, typename TC>
static void launch_tiled(cudaStream_t s, int ta, int tb, int m, int n, int k, float alpha, const void *a,
                         int64_t lda, int64_t sa, const void *b, int64_t ldb, int64_t sb, float beta, void *c,
                         int64_t ldc, int64_t sc, int batch0, int nb) {
    dim3 grid((unsigned)((n + TG_BN - 1) / TG_BN), (unsigned)((m + TG_BM - 1) / TG_BM), (unsigned)nb);
    gemm_tiled_kernel<TA, TB, TC><<<grid, TG_THREADS, 0, s>>>(ta, tb, m, n, k, alpha, (const TA *)a, lda, sa,
                                                              (const TB *)b, ldb, sb, beta, (TC *)c, ldc, sc, batch0);
}

typedef void (*tiled_fn)(cudaStream_t, int, int, int, int, int, float, const void *, int64_t, int64_t,
                         const void *, int64_t, int64_t, float, void *, int64_t, int64_t, int, int);

/* [a is bf16][b is bf16][c is bf16] */
static const tiled_fn tiled_table[2][2][2] = {
    {{launch_tiled<float, float, float>, launch_tiled<float, float, bf16_t>},
     {launch_tiled<float, bf16_t, float>, launch_tiled<float, bf16_t, bf16_t>}},
    {{launch_tiled<bf16_t, float, float>, launch_tiled<bf16_t, float, bf16_t>},
     {launch_tiled<bf16_t, bf16_t, float>, launch_tiled<bf16_t, bf16_t, bf16_t>}}};

int cu_scale_matrix(rp_backend *be, void *c, rp_dtype tc, int64_t ldc, int64_t stride_c, int m, int n, int batch,
                    float beta) {
    if (m <= 0 || n <= 0 || batch <= 0) return 0;
    for (int p0 = 0; p0 < batch; p0 += 65535) {
        int nb = batch - p0 < 65535 ? batch - p0 : 65535;
        dim3 grid(cu_blocks((int64_t)m * n, 256), (unsigned)nb);
        if (tc == RP_BF16)
            scale_matrix_kernel<bf16_t><<<grid, 256, 0, cu_stream(be)>>>((bf16_t *)c, ldc, stride_c, m, n, beta, p0);
        else
            scale_matrix_kernel<float><<<grid, 256, 0, cu_stream(be)>>>((float *)c, ldc, stride_c, m, n, beta, p0);
        CU_LAUNCHED(be);
    }
    return 0;
}

int cu_gemm_tiled(rp_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha, const void *a,
                  rp_dtype ta, int64_t lda, int64_t stride_a, const void *b, rp_dtype tb, int64_t ldb,
                  int64_t stride_b, float beta, void *c, rp_dtype tc, int64_t ldc, int64_t stride_c, int batch) {
    if ((m + TG_BM - 1) / TG_BM > 65535)
        return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "gemm (tiled): m = %d too large", m);
    const tiled_fn fn = tiled_table[ta == RP_BF16][tb == RP_BF16][tc == RP_BF16];
    for (int p0 = 0; p0 < batch; p0 += 65535) {
        int nb = batch - p0 < 65535 ? batch - p0 : 65535;
        fn(cu_stream(be), trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc, stride_c,
           p0, nb);
        CU_LAUNCHED(be);
    }
    return 0;
}
