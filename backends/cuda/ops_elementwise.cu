/* ops_elementwise.cu — activations (incl. RWKV-7's soft clamp), mul, add, lerp, broadcast_rows /
 * sum_rows, dropout, and the deterministic column-sum helper other ops share. All arithmetic in
 * fp32; A = bf16, P = f32. */
#include "common.cuh"

#define EW_THREADS 256
#define GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ------------------------------------------------------------------------------------ */
/* activations                                                                          */
/* ------------------------------------------------------------------------------------ */

RP_DEV float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

/* softplus(z) = log(1 + e^z) without overflow: max(z, 0) + log1p(e^−|z|) */
RP_DEV float softplusf_(float z) { return fmaxf(z, 0.0f) + log1pf(expf(-fabsf(z))); }

template <int KIND> RP_DEV float act_f(float x) {
    if (KIND == RP_ACT_TANH) return tanhf(x);
    if (KIND == RP_ACT_SIGMOID) return sigmoidf_(x);
    if (KIND == RP_ACT_SILU) return x * sigmoidf_(x);
    if (KIND == RP_ACT_SOFTCLAMP) return -softplusf_(-x) - 0.5f;
    return x > 0.0f ? x * x : 0.0f; /* relu² */
}

/* dy·f'(·), from y (tanh, sigmoid) or x (silu, relu², soft clamp) */
template <int KIND> RP_DEV float act_df(float dy, float x, float y) {
    if (KIND == RP_ACT_TANH) return dy * (1.0f - y * y);
    if (KIND == RP_ACT_SIGMOID) return dy * y * (1.0f - y);
    if (KIND == RP_ACT_SILU) {
        float s = sigmoidf_(x);
        return dy * s * (1.0f + x * (1.0f - s));
    }
    if (KIND == RP_ACT_SOFTCLAMP) return dy * sigmoidf_(-x); /* d/dx −softplus(−x) = σ(−x) */
    return x > 0.0f ? dy * 2.0f * x : 0.0f;
}

template <int KIND> __global__ void act_forward_kernel(act_t *y, const act_t *x, int64_t n) {
    GRID_STRIDE(i, n) y[i] = fromf<act_t>(act_f<KIND>(tof(x[i])));
}

template <int KIND>
__global__ void act_backward_kernel(act_t *dx, const act_t *dy, const act_t *x, const act_t *y, int64_t n) {
    GRID_STRIDE(i, n) {
        float xv = x ? tof(x[i]) : 0.0f, yv = y ? tof(y[i]) : 0.0f;
        dx[i] = fromf<act_t>(act_df<KIND>(tof(dy[i]), xv, yv));
    }
}

/* ------------------------------------------------------------------------------------ */
/* mul, add, broadcast, dropout                                                         */
/* ------------------------------------------------------------------------------------ */

__global__ void mul_forward_kernel(act_t *y, const act_t *a, const act_t *b, int64_t n) {
    GRID_STRIDE(i, n) y[i] = fromf<act_t>(tof(a[i]) * tof(b[i]));
}

__global__ void mul_backward_kernel(act_t *da, act_t *db, const act_t *dy, const act_t *a, const act_t *b,
                                    int64_t n) {
    GRID_STRIDE(i, n) {
        float g = tof(dy[i]);
        float av = tof(a[i]), bv = tof(b[i]);
        if (da) da[i] = fromf<act_t>(tof(da[i]) + g * bv);
        if (db) db[i] = fromf<act_t>(tof(db[i]) + g * av);
    }
}

/* y = a + (b − a)·t; y may alias b (each element read before it is written) */
__global__ void lerp_forward_kernel(act_t *y, const act_t *a, const act_t *b, const act_t *t, int64_t n) {
    GRID_STRIDE(i, n) {
        const float av = tof(a[i]);
        y[i] = fromf<act_t>(fmaf(tof(b[i]) - av, tof(t[i]), av));
    }
}

__global__ void lerp_backward_kernel(act_t *da, act_t *db, act_t *dt, const act_t *dy, const act_t *a,
                                     const act_t *b, const act_t *t, int64_t n) {
    GRID_STRIDE(i, n) {
        const float g = tof(dy[i]), tv = tof(t[i]);
        if (dt) dt[i] = fromf<act_t>(g * (tof(b[i]) - tof(a[i])));
        if (da) da[i] = fromf<act_t>(fmaf(g, 1.0f - tv, tof(da[i])));
        if (db) db[i] = fromf<act_t>(fmaf(g, tv, tof(db[i])));
    }
}

__global__ void add_kernel(act_t *y, const act_t *x, float alpha, int64_t n) {
    GRID_STRIDE(i, n) y[i] = fromf<act_t>(tof(y[i]) + alpha * tof(x[i]));
}

__global__ void broadcast_rows_kernel(act_t *y, const par_t *v, int64_t n, int C, int accumulate) {
    GRID_STRIDE(i, n * C) {
        float val = v[i % C];
        y[i] = fromf<act_t>(accumulate ? tof(y[i]) + val : val);
    }
}

__global__ void dropout_kernel(act_t *y, const act_t *x, int64_t n, float p, float scale, uint64_t seed) {
    GRID_STRIDE(i, n) y[i] = fromf<act_t>(rp_dropout_keep(seed, (uint64_t)i, p) ? tof(x[i]) * scale : 0.0f);
}

/* ------------------------------------------------------------------------------------ */
/* column sums (deterministic two-pass)                                                 */
/* ------------------------------------------------------------------------------------ */

/* part[chunk][c] = Σ_{r in chunk} dy[r][c] */
__global__ void sum_rows_partial_kernel(float *part, const act_t *dy, int64_t n, int C, int64_t rows_per_chunk) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    const int chunk = blockIdx.y;
    if (c >= C) return;
    int64_t r0 = (int64_t)chunk * rows_per_chunk, r1 = r0 + rows_per_chunk < n ? r0 + rows_per_chunk : n;
    float s = 0.0f;
    for (int64_t r = r0; r < r1; r++) s += tof(dy[r * C + c]);
    part[(int64_t)chunk * C + c] = s;
}

__global__ void colsum_finish_kernel(float *dst, const float *part, int n_chunks, int64_t n_cols) {
    GRID_STRIDE(c, n_cols) {
        float s = 0.0f;
        for (int k = 0; k < n_chunks; k++) s += part[(int64_t)k * n_cols + c];
        dst[c] += s;
    }
}

/* ------------------------------------------------------------------------------------ */
/* launchers                                                                            */
/* ------------------------------------------------------------------------------------ */

int cu_colsum_chunks(int64_t n_rows, int64_t n_cols, int64_t *rows_per_chunk) {
    /* enough (column, chunk) threads to fill a large GPU, chunks of at least 16 rows */
    int64_t target = (int64_t)1 << 18;
    int64_t chunks = n_cols > 0 ? target / n_cols : 1;
    if (chunks < 1) chunks = 1;
    if (chunks > 4096) chunks = 4096;
    int64_t max_by_rows = (n_rows + 15) / 16;
    if (chunks > max_by_rows) chunks = max_by_rows;
    if (chunks < 1) chunks = 1;
    int64_t rpc = (n_rows + chunks - 1) / chunks;
    if (rpc < 1) rpc = 1;
    *rows_per_chunk = rpc;
    return (int)((n_rows + rpc - 1) / rpc > 0 ? (n_rows + rpc - 1) / rpc : 1);
}

int cu_colsum_finish(rp_backend *be, float *dst, const float *part, int n_chunks, int64_t n_cols) {
    colsum_finish_kernel<<<cu_blocks(n_cols, EW_THREADS), EW_THREADS, 0, cu_stream(be)>>>(dst, part, n_chunks,
                                                                                          n_cols);
    CU_LAUNCHED(be);
    return 0;
}

int cu_act_fwd(rp_backend *be, int kind, void *y, const void *x, int64_t n) {
    if (kind < RP_ACT_TANH || kind > RP_ACT_SOFTCLAMP) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "act_fwd: kind %d", kind);
    if (n <= 0) return 0;
    CU_ENTER(be);
    unsigned g = cu_blocks(n, EW_THREADS);
    cudaStream_t s = cu_stream(be);
    act_t *Y = (act_t *)y;
    const act_t *X = (const act_t *)x;
    switch (kind) {
    case RP_ACT_TANH: act_forward_kernel<RP_ACT_TANH><<<g, EW_THREADS, 0, s>>>(Y, X, n); break;
    case RP_ACT_SIGMOID: act_forward_kernel<RP_ACT_SIGMOID><<<g, EW_THREADS, 0, s>>>(Y, X, n); break;
    case RP_ACT_SILU: act_forward_kernel<RP_ACT_SILU><<<g, EW_THREADS, 0, s>>>(Y, X, n); break;
    case RP_ACT_SOFTCLAMP: act_forward_kernel<RP_ACT_SOFTCLAMP><<<g, EW_THREADS, 0, s>>>(Y, X, n); break;
    default: act_forward_kernel<RP_ACT_RELU_SQ><<<g, EW_THREADS, 0, s>>>(Y, X, n); break;
    }
    CU_LAUNCHED(be);
    return 0;
}

int cu_act_bwd(rp_backend *be, int kind, void *dx, const void *dy, const void *x, const void *y, int64_t n) {
    if (kind < RP_ACT_TANH || kind > RP_ACT_SOFTCLAMP) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "act_bwd: kind %d", kind);
    if ((kind == RP_ACT_TANH || kind == RP_ACT_SIGMOID) ? !y : !x)
        return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "act_bwd: missing x or y");
    if (n <= 0) return 0;
    CU_ENTER(be);
    unsigned g = cu_blocks(n, EW_THREADS);
    cudaStream_t s = cu_stream(be);
    act_t *DX = (act_t *)dx;
    const act_t *DY = (const act_t *)dy, *X = (const act_t *)x, *Y = (const act_t *)y;
    switch (kind) {
    case RP_ACT_TANH: act_backward_kernel<RP_ACT_TANH><<<g, EW_THREADS, 0, s>>>(DX, DY, NULL, Y, n); break;
    case RP_ACT_SIGMOID: act_backward_kernel<RP_ACT_SIGMOID><<<g, EW_THREADS, 0, s>>>(DX, DY, NULL, Y, n); break;
    case RP_ACT_SILU: act_backward_kernel<RP_ACT_SILU><<<g, EW_THREADS, 0, s>>>(DX, DY, X, NULL, n); break;
    case RP_ACT_SOFTCLAMP:
        act_backward_kernel<RP_ACT_SOFTCLAMP><<<g, EW_THREADS, 0, s>>>(DX, DY, X, NULL, n);
        break;
    default: act_backward_kernel<RP_ACT_RELU_SQ><<<g, EW_THREADS, 0, s>>>(DX, DY, X, NULL, n); break;
    }
    CU_LAUNCHED(be);
    return 0;
}

int cu_mul_fwd(rp_backend *be, void *y, const void *a, const void *b, int64_t n) {
    if (n <= 0) return 0;
    CU_ENTER(be);
    mul_forward_kernel<<<cu_blocks(n, EW_THREADS), EW_THREADS, 0, cu_stream(be)>>>(
        (act_t *)y, (const act_t *)a, (const act_t *)b, n);
    CU_LAUNCHED(be);
    return 0;
}

int cu_mul_bwd(rp_backend *be, void *da, void *db, const void *dy, const void *a, const void *b, int64_t n) {
    if (n <= 0 || (!da && !db)) return 0;
    CU_ENTER(be);
    mul_backward_kernel<<<cu_blocks(n, EW_THREADS), EW_THREADS, 0, cu_stream(be)>>>(
        (act_t *)da, (act_t *)db, (const act_t *)dy, (const act_t *)a, (const act_t *)b, n);
    CU_LAUNCHED(be);
    return 0;
}

int cu_lerp_fwd(rp_backend *be, void *y, const void *a, const void *b, const void *t, int64_t n) {
    if (n <= 0) return 0;
    CU_ENTER(be);
    lerp_forward_kernel<<<cu_blocks(n, EW_THREADS), EW_THREADS, 0, cu_stream(be)>>>(
        (act_t *)y, (const act_t *)a, (const act_t *)b, (const act_t *)t, n);
    CU_LAUNCHED(be);
    return 0;
}

int cu_lerp_bwd(rp_backend *be, void *da, void *db, void *dt, const void *dy, const void *a, const void *b,
                const void *t, int64_t n) {
    if (n <= 0 || (!da && !db && !dt)) return 0;
    CU_ENTER(be);
    lerp_backward_kernel<<<cu_blocks(n, EW_THREADS), EW_THREADS, 0, cu_stream(be)>>>(
        (act_t *)da, (act_t *)db, (act_t *)dt, (const act_t *)dy, (const act_t *)a, (const act_t *)b,
        (const act_t *)t, n);
    CU_LAUNCHED(be);
    return 0;
}

int cu_add(rp_backend *be, void *y, const void *x, float alpha, int64_t n) {
    if (n <= 0) return 0;
    CU_ENTER(be);
    add_kernel<<<cu_blocks(n, EW_THREADS), EW_THREADS, 0, cu_stream(be)>>>((act_t *)y, (const act_t *)x, alpha,
                                                                          n);
    CU_LAUNCHED(be);
    return 0;
}

int cu_broadcast_rows(rp_backend *be, void *y, const void *v, int64_t n, int C, int accumulate) {
    if (n <= 0 || C <= 0) return 0;
    CU_ENTER(be);
    broadcast_rows_kernel<<<cu_blocks(n * C, EW_THREADS), EW_THREADS, 0, cu_stream(be)>>>(
        (act_t *)y, (const par_t *)v, n, C, accumulate);
    CU_LAUNCHED(be);
    return 0;
}

int cu_sum_rows(rp_backend *be, void *dv, const void *dy, int64_t n, int C) {
    if (n <= 0 || C <= 0) return 0;
    CU_ENTER(be);
    int64_t rpc;
    int chunks = cu_colsum_chunks(n, C, &rpc);
    void *scr;
    RP_TRY(cu_scratch(be, sizeof(float) * (size_t)chunks * (size_t)C, &scr));
    dim3 grid((unsigned)((C + EW_THREADS - 1) / EW_THREADS), (unsigned)chunks);
    sum_rows_partial_kernel<<<grid, EW_THREADS, 0, cu_stream(be)>>>((float *)scr, (const act_t *)dy, n, C, rpc);
    CU_LAUNCHED(be);
    return cu_colsum_finish(be, (float *)dv, (const float *)scr, chunks, C);
}

int cu_dropout(rp_backend *be, void *y, const void *x, int64_t n, float p, uint64_t seed) {
    if (!(p >= 0 && p < 1)) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "dropout: p must be in [0,1)");
    if (n <= 0) return 0;
    CU_ENTER(be);
    float scale = (float)(1.0 / (1.0 - (double)p));
    dropout_kernel<<<cu_blocks(n, EW_THREADS), EW_THREADS, 0, cu_stream(be)>>>((act_t *)y, (const act_t *)x, n,
                                                                              p, scale, seed);
    CU_LAUNCHED(be);
    return 0;
}
