/* ops_elementwise.cu — activations (incl. RWKV-7's soft clamp), mul, add, lerp, broadcast_rows /
 * sum_rows, dropout, and the deterministic column-sum helper other ops share. All arithmetic in
 * fp32; A = bf16, P = f32. The element-wise kernels move 16 bytes per access where the
 * shapes and pointers allow (docs/benchmarks.md, session 4: part of a 313.7 → 237.4 ms step). */
#include "common.cuh"

#define EW_THREADS 256
#define GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ------------------------------------------------------------------------------------ */
/* activations                                                                          */
/* ------------------------------------------------------------------------------------ */

/* softplus(z) = log(1 + e^z) without overflow: max(z, 0) + log1p(e^−|z|) */
RP_DEV float softplusf_(float z) { return fmaxf(z, 0.0f) + log1pf(expf(-fabsf(z))); }

template <int KIND> RP_DEV float act_f(float x) {
    if (KIND == RP_ACT_TANH) return tanhf(x);
    if (KIND == RP_ACT_SIGMOID) return sigmoidf_(x);
    if (KIND == RP_ACT_SILU) return x * sigmoidf_(x);
    if (KIND == RP_ACT_SOFTCLAMP) return -softplusf_(-x) - 0.5f;
    return x > 0.0f ? x * x : 0.0f; /* relu² */
}

/* relu²'s backward from y = relu(x)²: f' = 2·√y (a kernel variant, not a kind of the table) */
constexpr int ACT_RELU_SQ_FROM_Y = 100;

/* dy·f'(·), from y (tanh, sigmoid, relu² from y) or x (silu, relu², soft clamp) */
template <int KIND> RP_DEV float act_df(float dy, float x, float y) {
    if (KIND == ACT_RELU_SQ_FROM_Y) return dy * 2.0f * sqrtf(fmaxf(y, 0.0f));
    if (KIND == RP_ACT_TANH) return dy * (1.0f - y * y);
    if (KIND == RP_ACT_SIGMOID) return dy * y * (1.0f - y);
    if (KIND == RP_ACT_SILU) {
        float s = sigmoidf_(x);
        return dy * s * (1.0f + x * (1.0f - s));
    }
    if (KIND == RP_ACT_SOFTCLAMP) return dy * sigmoidf_(-x); /* d/dx −softplus(−x) = σ(−x) */
    return x > 0.0f ? dy * 2.0f * x : 0.0f;
}

/* Every element-wise kernel runs in units of U elements: U = 1 (any n, any alignment) or
 * U = ACT_VEC (16-byte loads and stores; the launcher picks it when n is a multiple and
 * every A pointer is 16-byte aligned, as the training step's buffers are). */
template <int U> RP_DEV void ew_load(float (&d)[U], const act_t *p);
template <> RP_DEV void ew_load<1>(float (&d)[1], const act_t *p) { d[0] = tof(*p); }
template <> RP_DEV void ew_load<ACT_VEC_LITERAL>(float (&d)[ACT_VEC_LITERAL], const act_t *p) { act_load_vec(d, p); }
template <int U> RP_DEV void ew_store(act_t *p, const float (&v)[U]);
template <> RP_DEV void ew_store<1>(act_t *p, const float (&v)[1]) { *p = fromf<act_t>(v[0]); }
template <> RP_DEV void ew_store<ACT_VEC_LITERAL>(act_t *p, const float (&v)[ACT_VEC_LITERAL]) { act_store_vec(p, v); }
#define EW_UNROLL _Pragma("unroll") for (int j = 0; j < U; j++)
/* an optional operand: its U elements, or zeros when the pointer is NULL */
template <int U> RP_DEV void ew_load_or_zero(float (&d)[U], const act_t *p) {
    if (p) {
        ew_load<U>(d, p);
    } else {
        EW_UNROLL d[j] = 0.0f;
    }
}

template <int KIND, int U> __global__ void act_forward_kernel(act_t *y, const act_t *x, int64_t n) {
    GRID_STRIDE(q, n / U) {
        float v[U];
        ew_load<U>(v, x + q * U);
        EW_UNROLL v[j] = act_f<KIND>(v[j]);
        ew_store<U>(y + q * U, v);
    }
}

template <int KIND, int U>
__global__ void act_backward_kernel(act_t *dx, const act_t *dy, const act_t *x, const act_t *y, int64_t n) {
    GRID_STRIDE(q, n / U) {
        float g[U], xv[U], yv[U];
        ew_load<U>(g, dy + q * U);
        ew_load_or_zero<U>(xv, x ? x + q * U : NULL);
        ew_load_or_zero<U>(yv, y ? y + q * U : NULL);
        EW_UNROLL g[j] = act_df<KIND>(g[j], xv[j], yv[j]);
        ew_store<U>(dx + q * U, g);
    }
}

/* ------------------------------------------------------------------------------------ */
/* mul, add, broadcast, dropout                                                         */
/* ------------------------------------------------------------------------------------ */

template <int U> __global__ void mul_forward_kernel(act_t *y, const act_t *a, const act_t *b, int64_t n) {
    GRID_STRIDE(q, n / U) {
        float av[U], bv[U];
        ew_load<U>(av, a + q * U);
        ew_load<U>(bv, b + q * U);
        EW_UNROLL av[j] *= bv[j];
        ew_store<U>(y + q * U, av);
    }
}

/* da += dy·b, db += dy·a (either may be NULL) */
template <int U>
__global__ void mul_backward_kernel(act_t *da, act_t *db, const act_t *dy, const act_t *a, const act_t *b, int64_t n) {
    GRID_STRIDE(q, n / U) {
        float g[U], v[U], acc[U];
        ew_load<U>(g, dy + q * U);
        if (da) {
            ew_load<U>(v, b + q * U);
            ew_load<U>(acc, da + q * U);
            EW_UNROLL acc[j] += g[j] * v[j];
            ew_store<U>(da + q * U, acc);
        }
        if (db) {
            ew_load<U>(v, a + q * U);
            ew_load<U>(acc, db + q * U);
            EW_UNROLL acc[j] += g[j] * v[j];
            ew_store<U>(db + q * U, acc);
        }
    }
}

/* y = f(a)·b (+ r): the activation, the product and the residual in one pass */
template <int KIND, int U>
__global__ void act_mul_forward_kernel(act_t *y, const act_t *a, const act_t *b, const act_t *r, int64_t n) {
    GRID_STRIDE(q, n / U) {
        float av[U], bv[U], rv[U];
        ew_load<U>(av, a + q * U);
        ew_load<U>(bv, b + q * U);
        ew_load_or_zero<U>(rv, r ? r + q * U : NULL);
        EW_UNROLL av[j] = fmaf(act_f<KIND>(av[j]), bv[j], rv[j]);
        ew_store<U>(y + q * U, av);
    }
}

/* da = dy·b·f'(a), db = dy·f(a), written (either may be NULL); f' from a for every kind (the
 * y-based derivatives get y = f(a) recomputed) */
template <int KIND, int U>
__global__ void act_mul_backward_kernel(act_t *da, act_t *db, const act_t *dy, const act_t *a, const act_t *b,
                                        int64_t n) {
    GRID_STRIDE(q, n / U) {
        float g[U], av[U], bv[U], fa[U];
        ew_load<U>(g, dy + q * U);
        ew_load<U>(av, a + q * U);
        ew_load_or_zero<U>(bv, da ? b + q * U : NULL);
        EW_UNROLL fa[j] = act_f<KIND>(av[j]);
        if (da) {
            float o[U];
            EW_UNROLL o[j] = act_df<KIND>(g[j] * bv[j], av[j], fa[j]);
            ew_store<U>(da + q * U, o);
        }
        if (db) {
            EW_UNROLL fa[j] *= g[j];
            ew_store<U>(db + q * U, fa);
        }
    }
}

/* y = a + (b − a)·t; y may alias b (each element read before it is written) */
template <int U>
__global__ void lerp_forward_kernel(act_t *y, const act_t *a, const act_t *b, const act_t *t, int64_t n) {
    GRID_STRIDE(q, n / U) {
        float av[U], bv[U], tv[U];
        ew_load<U>(av, a + q * U);
        ew_load<U>(bv, b + q * U);
        ew_load<U>(tv, t + q * U);
        EW_UNROLL bv[j] = fmaf(bv[j] - av[j], tv[j], av[j]);
        ew_store<U>(y + q * U, bv);
    }
}

template <int U>
__global__ void lerp_backward_kernel(act_t *da, act_t *db, act_t *dt, const act_t *dy, const act_t *a,
                                     const act_t *b, const act_t *t, int64_t n) {
    GRID_STRIDE(q, n / U) {
        float g[U], tv[U], v[U], w[U];
        ew_load<U>(g, dy + q * U);
        ew_load<U>(tv, t + q * U);
        if (dt) {
            ew_load<U>(v, b + q * U);
            ew_load<U>(w, a + q * U);
            EW_UNROLL v[j] = g[j] * (v[j] - w[j]);
            ew_store<U>(dt + q * U, v);
        }
        if (da) {
            ew_load<U>(v, da + q * U);
            EW_UNROLL v[j] = fmaf(g[j], 1.0f - tv[j], v[j]);
            ew_store<U>(da + q * U, v);
        }
        if (db) {
            ew_load<U>(v, db + q * U);
            EW_UNROLL v[j] = fmaf(g[j], tv[j], v[j]);
            ew_store<U>(db + q * U, v);
        }
    }
}

template <int U> __global__ void add_kernel(act_t *y, const act_t *x, float alpha, int64_t n) {
    GRID_STRIDE(q, n / U) {
        float yv[U], xv[U];
        ew_load<U>(yv, y + q * U);
        ew_load<U>(xv, x + q * U);
        EW_UNROLL yv[j] += alpha * xv[j];
        ew_store<U>(y + q * U, yv);
    }
}

/* U > 1 needs C a multiple of U (a unit never crosses a row) */
template <int U> __global__ void broadcast_rows_kernel(act_t *y, const par_t *v, int64_t n, int C, int accumulate) {
    GRID_STRIDE(q, n * C / U) {
        const int c0 = (int)((q * U) % C);
        float yv[U];
        if (accumulate) {
            ew_load<U>(yv, y + q * U);
            EW_UNROLL yv[j] += v[c0 + j];
        } else {
            EW_UNROLL yv[j] = v[c0 + j];
        }
        ew_store<U>(y + q * U, yv);
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

/* launches KERNEL<ACT_VEC> over n/ACT_VEC units, or KERNEL<1> over n elements */
#define EW_LAUNCH(vec, KERNEL, n, ...) \
    do { \
        if (vec) \
            KERNEL<ACT_VEC_LITERAL><<<cu_blocks((n) / ACT_VEC, EW_THREADS), EW_THREADS, 0, cu_stream(be)>>>(__VA_ARGS__); \
        else \
            KERNEL<1><<<cu_blocks((n), EW_THREADS), EW_THREADS, 0, cu_stream(be)>>>(__VA_ARGS__); \
    } while (0)

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

/* Instantiates CALL(K) for the activation kind `kind` (validated by the caller). */
#define ACT_KIND_SWITCH(kind, CALL)                             \
    switch (kind) {                                             \
    case RP_ACT_TANH: CALL(RP_ACT_TANH); break;                 \
    case RP_ACT_SIGMOID: CALL(RP_ACT_SIGMOID); break;           \
    case RP_ACT_SILU: CALL(RP_ACT_SILU); break;                 \
    case RP_ACT_SOFTCLAMP: CALL(RP_ACT_SOFTCLAMP); break;       \
    default: CALL(RP_ACT_RELU_SQ); break;                       \
    }

int cu_act_fwd(rp_backend *be, int kind, void *y, const void *x, int64_t n) {
    if (kind < RP_ACT_TANH || kind > RP_ACT_SOFTCLAMP) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "act_fwd: kind %d", kind);
    if (n <= 0) return 0;
    CU_ENTER(be);
    const bool vec = act_vec_ok(n, y, x);
    unsigned g = cu_blocks(vec ? n / ACT_VEC : n, EW_THREADS);
    cudaStream_t s = cu_stream(be);
    act_t *Y = (act_t *)y;
    const act_t *X = (const act_t *)x;
#define ACT_FWD(K) \
    (vec ? act_forward_kernel<K, ACT_VEC_LITERAL><<<g, EW_THREADS, 0, s>>>(Y, X, n) \
         : act_forward_kernel<K, 1><<<g, EW_THREADS, 0, s>>>(Y, X, n))
    ACT_KIND_SWITCH(kind, ACT_FWD)
#undef ACT_FWD
    CU_LAUNCHED(be);
    return 0;
}

int cu_act_bwd(rp_backend *be, int kind, void *dx, const void *dy, const void *x, const void *y, int64_t n) {
    if (kind < RP_ACT_TANH || kind > RP_ACT_SOFTCLAMP) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "act_bwd: kind %d", kind);
    if ((kind == RP_ACT_TANH || kind == RP_ACT_SIGMOID) ? !y : kind == RP_ACT_RELU_SQ ? !x && !y : !x)
        return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "act_bwd: missing x or y");
    if (n <= 0) return 0;
    CU_ENTER(be);
    const bool from_y = kind == RP_ACT_TANH || kind == RP_ACT_SIGMOID || (kind == RP_ACT_RELU_SQ && !x);
    act_t *DX = (act_t *)dx;
    const act_t *DY = (const act_t *)dy, *X = from_y ? NULL : (const act_t *)x, *Y = from_y ? (const act_t *)y : NULL;
    const bool vec = act_vec_ok(n, dx, dy, X, Y);
    unsigned g = cu_blocks(vec ? n / ACT_VEC : n, EW_THREADS);
    cudaStream_t s = cu_stream(be);
#define ACT_BWD(K) \
    (vec ? act_backward_kernel<K, ACT_VEC_LITERAL><<<g, EW_THREADS, 0, s>>>(DX, DY, X, Y, n) \
         : act_backward_kernel<K, 1><<<g, EW_THREADS, 0, s>>>(DX, DY, X, Y, n))
    switch (kind) {
    case RP_ACT_TANH: ACT_BWD(RP_ACT_TANH); break;
    case RP_ACT_SIGMOID: ACT_BWD(RP_ACT_SIGMOID); break;
    case RP_ACT_SILU: ACT_BWD(RP_ACT_SILU); break;
    case RP_ACT_SOFTCLAMP: ACT_BWD(RP_ACT_SOFTCLAMP); break;
    default:
        if (from_y) ACT_BWD(ACT_RELU_SQ_FROM_Y);
        else ACT_BWD(RP_ACT_RELU_SQ);
        break;
    }
#undef ACT_BWD
    CU_LAUNCHED(be);
    return 0;
}

int cu_act_mul_fwd(rp_backend *be, int kind, void *y, const void *a, const void *b, const void *r, int64_t n) {
    if (kind < RP_ACT_TANH || kind > RP_ACT_SOFTCLAMP) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "act_mul_fwd: kind %d", kind);
    if (n <= 0) return 0;
    CU_ENTER(be);
    const bool vec = act_vec_ok(n, y, a, b, r);
    unsigned g = cu_blocks(vec ? n / ACT_VEC : n, EW_THREADS);
    cudaStream_t s = cu_stream(be);
    act_t *Y = (act_t *)y;
    const act_t *A = (const act_t *)a, *Bv = (const act_t *)b, *R = (const act_t *)r;
#define ACT_MUL_FWD(K) \
    (vec ? act_mul_forward_kernel<K, ACT_VEC_LITERAL><<<g, EW_THREADS, 0, s>>>(Y, A, Bv, R, n) \
         : act_mul_forward_kernel<K, 1><<<g, EW_THREADS, 0, s>>>(Y, A, Bv, R, n))
    ACT_KIND_SWITCH(kind, ACT_MUL_FWD)
#undef ACT_MUL_FWD
    CU_LAUNCHED(be);
    return 0;
}

int cu_act_mul_bwd(rp_backend *be, int kind, void *da, void *db, const void *dy, const void *a, const void *b,
                   int64_t n) {
    if (kind < RP_ACT_TANH || kind > RP_ACT_SOFTCLAMP) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "act_mul_bwd: kind %d", kind);
    if (n <= 0 || (!da && !db)) return 0;
    CU_ENTER(be);
    const bool vec = act_vec_ok(n, da, db, dy, a, b);
    unsigned g = cu_blocks(vec ? n / ACT_VEC : n, EW_THREADS);
    cudaStream_t s = cu_stream(be);
    act_t *DA = (act_t *)da, *DB = (act_t *)db;
    const act_t *DY = (const act_t *)dy, *A = (const act_t *)a, *Bv = (const act_t *)b;
#define ACT_MUL_BWD(K) \
    (vec ? act_mul_backward_kernel<K, ACT_VEC_LITERAL><<<g, EW_THREADS, 0, s>>>(DA, DB, DY, A, Bv, n) \
         : act_mul_backward_kernel<K, 1><<<g, EW_THREADS, 0, s>>>(DA, DB, DY, A, Bv, n))
    ACT_KIND_SWITCH(kind, ACT_MUL_BWD)
#undef ACT_MUL_BWD
    CU_LAUNCHED(be);
    return 0;
}

int cu_mul_fwd(rp_backend *be, void *y, const void *a, const void *b, int64_t n) {
    if (n <= 0) return 0;
    CU_ENTER(be);
    EW_LAUNCH(act_vec_ok(n, y, a, b), mul_forward_kernel, n, (act_t *)y, (const act_t *)a, (const act_t *)b, n);
    CU_LAUNCHED(be);
    return 0;
}

int cu_mul_bwd(rp_backend *be, void *da, void *db, const void *dy, const void *a, const void *b, int64_t n) {
    if (n <= 0 || (!da && !db)) return 0;
    CU_ENTER(be);
    EW_LAUNCH(act_vec_ok(n, da, db, dy, a, b), mul_backward_kernel, n, (act_t *)da, (act_t *)db, (const act_t *)dy,
              (const act_t *)a, (const act_t *)b, n);
    CU_LAUNCHED(be);
    return 0;
}

int cu_lerp_fwd(rp_backend *be, void *y, const void *a, const void *b, const void *t, int64_t n) {
    if (n <= 0) return 0;
    CU_ENTER(be);
    EW_LAUNCH(act_vec_ok(n, y, a, b, t), lerp_forward_kernel, n, (act_t *)y, (const act_t *)a, (const act_t *)b,
              (const act_t *)t, n);
    CU_LAUNCHED(be);
    return 0;
}

int cu_lerp_bwd(rp_backend *be, void *da, void *db, void *dt, const void *dy, const void *a, const void *b,
                const void *t, int64_t n) {
    if (n <= 0 || (!da && !db && !dt)) return 0;
    CU_ENTER(be);
    EW_LAUNCH(act_vec_ok(n, da, db, dt, dy, a, b, t), lerp_backward_kernel, n, (act_t *)da, (act_t *)db, (act_t *)dt,
              (const act_t *)dy, (const act_t *)a, (const act_t *)b, (const act_t *)t, n);
    CU_LAUNCHED(be);
    return 0;
}

int cu_add(rp_backend *be, void *y, const void *x, float alpha, int64_t n) {
    if (n <= 0) return 0;
    CU_ENTER(be);
    EW_LAUNCH(act_vec_ok(n, y, x), add_kernel, n, (act_t *)y, (const act_t *)x, alpha, n);
    CU_LAUNCHED(be);
    return 0;
}

int cu_broadcast_rows(rp_backend *be, void *y, const void *v, int64_t n, int C, int accumulate) {
    if (n <= 0 || C <= 0) return 0;
    CU_ENTER(be);
    EW_LAUNCH(C % ACT_VEC == 0 && act_vec_ok(n * C, y), broadcast_rows_kernel, n * C, (act_t *)y, (const par_t *)v, n,
              C, accumulate);
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
