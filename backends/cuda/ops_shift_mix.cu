/* ops_shift_mix.cu — token shift + mixing (RWKV ddlerp / lerp), δ_t = x_{t−1} − x_t
 * (x_{−1} = x_prev row or 0):
 *   RP_MIX_DELTA:    out[s] = x + δ ⊙ (coef[s] + m[s])      (RWKV-6/7)
 *   RP_MIX_CURRENT:  out[s] = x + δ ⊙ (1 − coef[s])         (RWKV-5; m = NULL)
 * x, x_prev, m, out, dx, dx_prev, dm are A (bf16); coef, dcoef are P (f32).
 * The backward recomputes δ and dδ per element (no scratch) and gets dcoef as a
 * deterministic column sum (negated for RP_MIX_CURRENT).
 *
 * Two variants of each direction: the scalar kernels (one element per thread, any C) and,
 * when C is a multiple of ACT_VEC and every A pointer is 16-byte aligned (the training
 * step's buffers always are), vector kernels with 16-byte accesses. The vector backward
 * walks a run of rows per thread from the last to the first, so each row's dδ is computed
 * once and carried to the row before it, and accumulates dcoef for its run in registers
 * (one pass over dout instead of two); the profile showed the scalar backward at ~10× its
 * memory-bandwidth time, about 9% of an RWKV-6 step at B = 8. */
#include "common.cuh"

#define SM_THREADS 256

RP_DEV float shift_prev(const act_t *x, const act_t *x_prev, int64_t row, int c, int T, int C) {
    const int t = (int)(row % T);
    if (t > 0) return tof(x[(row - 1) * C + c]);
    return x_prev ? tof(x_prev[(row / T) * C + c]) : 0.0f;
}

/* the factor δ is multiplied by in slot s at element e (column c) */
RP_DEV float mix_factor(const par_t *coef, const act_t *m, int form, int s, int64_t slot, int64_t e, int c, int C) {
    const float cf = coef[(int64_t)s * C + c];
    if (form == RP_MIX_CURRENT) return 1.0f - cf;
    return cf + (m ? tof(m[s * slot + e]) : 0.0f);
}

__global__ void shift_mix_forward_kernel(act_t *__restrict__ out, const act_t *__restrict__ x,
                                         const act_t *__restrict__ x_prev, const par_t *__restrict__ coef,
                                         const act_t *__restrict__ m, int form, int n_slots, int64_t n, int T, int C) {
    const int64_t slot = n * C;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < slot; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = e / C;
        const int c = (int)(e % C);
        const float xv = tof(x[e]);
        const float d = shift_prev(x, x_prev, row, c, T, C) - xv;
        for (int s = 0; s < n_slots; s++)
            out[s * slot + e] = fromf<act_t>(xv + d * mix_factor(coef, m, form, s, slot, e, c, C));
    }
}

/* dδ at element e (row, c) = Σ_s dout[s]·factor[s] */
RP_DEV float shift_ddelta(const act_t *dout, const par_t *coef, const act_t *m, int form, int n_slots, int64_t slot,
                          int64_t e, int c, int C) {
    float g = 0.0f;
    for (int s = 0; s < n_slots; s++) g += tof(dout[s * slot + e]) * mix_factor(coef, m, form, s, slot, e, c, C);
    return g;
}

__global__ void shift_mix_backward_kernel(act_t *__restrict__ dx, act_t *__restrict__ dx_prev,
                                          act_t *__restrict__ dm, const act_t *__restrict__ dout,
                                          const act_t *__restrict__ x, const act_t *__restrict__ x_prev,
                                          const par_t *__restrict__ coef, const act_t *__restrict__ m, int form,
                                          int n_slots, int64_t n, int T, int C) {
    const int64_t slot = n * C;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < slot; e += (int64_t)gridDim.x * blockDim.x) {
        const int64_t row = e / C;
        const int c = (int)(e % C);
        const int t = (int)(row % T);
        const float dd = shift_ddelta(dout, coef, m, form, n_slots, slot, e, c, C);
        float direct = 0.0f;
        for (int s = 0; s < n_slots; s++) direct += tof(dout[s * slot + e]);
        float g = direct - dd;
        if (t + 1 < T) g += shift_ddelta(dout, coef, m, form, n_slots, slot, e + C, c, C);
        dx[e] = fromf<act_t>(tof(dx[e]) + g);
        if (dm) {
            const float d = shift_prev(x, x_prev, row, c, T, C) - tof(x[e]);
            for (int s = 0; s < n_slots; s++) dm[s * slot + e] = fromf<act_t>(tof(dout[s * slot + e]) * d);
        }
        if (t == 0 && dx_prev) {
            act_t *p = dx_prev + (row / T) * C + c;
            *p = fromf<act_t>(tof(*p) + dd);
        }
    }
}

/* part[chunk][s·C + c] = sign·Σ_{rows in chunk} dout[s,row,c]·δ[row,c] (sign −1: RP_MIX_CURRENT) */
__global__ void shift_mix_dcoef_partial_kernel(float *__restrict__ part, const act_t *__restrict__ dout,
                                               const act_t *__restrict__ x, const act_t *__restrict__ x_prev,
                                               float sign, int n_slots, int64_t n, int T, int C,
                                               int64_t rows_per_chunk) {
    const int64_t q = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t cols = (int64_t)n_slots * C;
    if (q >= cols) return;
    const int s = (int)(q / C), c = (int)(q % C);
    const int64_t slot = n * C;
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < n ? r0 + rows_per_chunk : n;
    float acc = 0.0f;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t e = r * C + c;
        const float d = shift_prev(x, x_prev, r, c, T, C) - tof(x[e]);
        acc += tof(dout[s * slot + e]) * d;
    }
    part[(int64_t)blockIdx.y * cols + q] = sign * acc;
}

/* ---- vector kernels (C % ACT_VEC == 0, 16-byte aligned A pointers) ---- */

#define SMV_MAX_SLOTS 6

/* row r's previous-token values for columns c0..c0+ACT_VEC−1 (t = r mod T) */
RP_DEV void shift_prev_vec(float (&p)[ACT_VEC], const act_t *x, const act_t *x_prev, int64_t r, int t, int c0, int T,
                           int C) {
    if (t > 0) {
        act_load_vec(p, x + (r - 1) * C + c0);
    } else if (x_prev) {
        act_load_vec(p, x_prev + (r / T) * C + c0);
    } else {
#pragma unroll
        for (int i = 0; i < ACT_VEC; i++) p[i] = 0.0f;
    }
}

/* factor of slot s (columns c0..) at row r: coef + m (RP_MIX_DELTA) or 1 − coef */
RP_DEV void mix_factor_vec(float (&f)[ACT_VEC], const par_t *coef, const act_t *m, int form, int s, int64_t slot,
                           int64_t r, int c0, int C) {
    if (form == RP_MIX_DELTA && m) act_load_vec(f, m + s * slot + r * C + c0);
#pragma unroll
    for (int i = 0; i < ACT_VEC; i++) {
        const float cf = coef[(int64_t)s * C + c0 + i];
        f[i] = form == RP_MIX_CURRENT ? 1.0f - cf : cf + (m ? f[i] : 0.0f);
    }
}

__global__ void shift_mix_forward_vec_kernel(act_t *__restrict__ out, const act_t *__restrict__ x,
                                             const act_t *__restrict__ x_prev, const par_t *__restrict__ coef,
                                             const act_t *__restrict__ m, int form, int n_slots, int64_t n, int T,
                                             int C) {
    const int G = C / ACT_VEC;
    const int64_t slot = n * C;
    for (int64_t q = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; q < n * G; q += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = q / G;
        const int c0 = (int)(q - r * G) * ACT_VEC;
        float xv[ACT_VEC], d[ACT_VEC], f[ACT_VEC], o[ACT_VEC];
        act_load_vec(xv, x + r * C + c0);
        shift_prev_vec(d, x, x_prev, r, (int)(r % T), c0, T, C);
#pragma unroll
        for (int i = 0; i < ACT_VEC; i++) d[i] -= xv[i];
        for (int s = 0; s < n_slots; s++) {
            mix_factor_vec(f, coef, m, form, s, slot, r, c0, C);
#pragma unroll
            for (int i = 0; i < ACT_VEC; i++) o[i] = xv[i] + d[i] * f[i];
            act_store_vec(out + s * slot + r * C + c0, o);
        }
    }
}

/* dδ of row r (columns c0..): Σ_s dout[s]·factor[s]; also Σ_s dout[s] when direct != NULL */
RP_DEV void shift_ddelta_vec(float (&dd)[ACT_VEC], float *direct, const act_t *dout, const par_t *coef,
                             const act_t *m, int form, int n_slots, int64_t slot, int64_t r, int c0, int C) {
    float g[ACT_VEC], f[ACT_VEC];
#pragma unroll
    for (int i = 0; i < ACT_VEC; i++) {
        dd[i] = 0.0f;
        if (direct) direct[i] = 0.0f;
    }
    for (int s = 0; s < n_slots; s++) {
        act_load_vec(g, dout + s * slot + r * C + c0);
        mix_factor_vec(f, coef, m, form, s, slot, r, c0, C);
#pragma unroll
        for (int i = 0; i < ACT_VEC; i++) {
            dd[i] += g[i] * f[i];
            if (direct) direct[i] += g[i];
        }
    }
}

/* One thread: columns c0..c0+ACT_VEC−1 of rows [r0, r1), last row first. part (when dcoef is
 * wanted): [chunk][s·C + c] = sign·Σ_{rows} dout[s]·δ. */
__global__ void __launch_bounds__(SM_THREADS) shift_mix_backward_vec_kernel(
    act_t *__restrict__ dx, act_t *__restrict__ dx_prev, act_t *__restrict__ dm, float *__restrict__ part,
    const act_t *__restrict__ dout, const act_t *__restrict__ x, const act_t *__restrict__ x_prev,
    const par_t *__restrict__ coef, const act_t *__restrict__ m, float sign, int form, int n_slots, int64_t n, int T,
    int C, int64_t rows_per_chunk, int n_chunks) {
    const int G = C / ACT_VEC;
    const int64_t q = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= (int64_t)G * n_chunks) return;
    const int chunk = (int)(q / G);
    const int c0 = (int)(q - (int64_t)chunk * G) * ACT_VEC;
    const int64_t slot = n * C;
    const int64_t r0 = (int64_t)chunk * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < n ? r0 + rows_per_chunk : n;
    float acc[SMV_MAX_SLOTS][ACT_VEC];
#pragma unroll
    for (int s = 0; s < SMV_MAX_SLOTS; s++)
#pragma unroll
        for (int i = 0; i < ACT_VEC; i++) acc[s][i] = 0.0f;
    float dd_next[ACT_VEC];
    int t = (int)((r1 - 1) % T);
    if (t + 1 < T && r1 < n) {
        shift_ddelta_vec(dd_next, NULL, dout, coef, m, form, n_slots, slot, r1, c0, C);
    } else {
#pragma unroll
        for (int i = 0; i < ACT_VEC; i++) dd_next[i] = 0.0f;
    }
    for (int64_t r = r1 - 1; r >= r0; r--) {
        float dd[ACT_VEC], direct[ACT_VEC], d[ACT_VEC], xv[ACT_VEC], gx[ACT_VEC];
        shift_ddelta_vec(dd, direct, dout, coef, m, form, n_slots, slot, r, c0, C);
        act_t *px = dx + r * C + c0;
        act_load_vec(gx, px);
#pragma unroll
        for (int i = 0; i < ACT_VEC; i++) gx[i] += direct[i] - dd[i] + dd_next[i];
        act_store_vec(px, gx);
        if (dm || part) {
            act_load_vec(xv, x + r * C + c0);
            shift_prev_vec(d, x, x_prev, r, t, c0, T, C);
#pragma unroll
            for (int i = 0; i < ACT_VEC; i++) d[i] -= xv[i];
            for (int s = 0; s < n_slots && s < SMV_MAX_SLOTS; s++) {
                float g[ACT_VEC];
                act_load_vec(g, dout + s * slot + r * C + c0);
#pragma unroll
                for (int i = 0; i < ACT_VEC; i++) g[i] *= d[i];
                if (dm) act_store_vec(dm + s * slot + r * C + c0, g);
                /* the slot index must stay a compile-time constant for acc to live in registers */
#pragma unroll
                for (int u = 0; u < SMV_MAX_SLOTS; u++)
                    if (u == s)
#pragma unroll
                        for (int i = 0; i < ACT_VEC; i++) acc[u][i] += g[i];
            }
        }
        if (t == 0 && dx_prev) {
            act_t *pp = dx_prev + (r / T) * C + c0;
            act_load_vec(gx, pp);
#pragma unroll
            for (int i = 0; i < ACT_VEC; i++) gx[i] += dd[i];
            act_store_vec(pp, gx);
        }
#pragma unroll
        for (int i = 0; i < ACT_VEC; i++) dd_next[i] = t == 0 ? 0.0f : dd[i];
        t = t == 0 ? T - 1 : t - 1;
    }
    if (part) {
        float *row = part + (int64_t)chunk * n_slots * C;
#pragma unroll
        for (int u = 0; u < SMV_MAX_SLOTS; u++)
            if (u < n_slots)
#pragma unroll
                for (int i = 0; i < ACT_VEC; i++) row[(int64_t)u * C + c0 + i] = sign * acc[u][i];
    }
}

/* ---- launchers ---- */

static int shift_form_ok(rp_backend *be, const char *op, int form, const void *m) {
    if (form == RP_MIX_DELTA || (form == RP_MIX_CURRENT && !m)) return 0;
    return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "%s: form %d%s", op, form,
                   form == RP_MIX_CURRENT ? " takes no m" : " is not a mix form");
}


int cu_shift_mix_fwd(rp_backend *be, void *out, const void *x, const void *x_prev, const void *coef, const void *m,
                     int form, int n_slots, int B, int T, int C) {
    RP_TRY(shift_form_ok(be, "shift_mix_fwd", form, m));
    if (n_slots <= 0 || B <= 0 || T <= 0 || C <= 0) return 0;
    CU_ENTER(be);
    const int64_t n = (int64_t)B * T;
    if (n_slots <= SMV_MAX_SLOTS && act_vec_ok(C, out, x, x_prev, m)) {
        shift_mix_forward_vec_kernel<<<cu_blocks(n * (C / ACT_VEC), SM_THREADS), SM_THREADS, 0, cu_stream(be)>>>(
            (act_t *)out, (const act_t *)x, (const act_t *)x_prev, (const par_t *)coef, (const act_t *)m, form,
            n_slots, n, T, C);
        CU_LAUNCHED(be);
        return 0;
    }
    shift_mix_forward_kernel<<<cu_blocks(n * C, SM_THREADS), SM_THREADS, 0, cu_stream(be)>>>(
        (act_t *)out, (const act_t *)x, (const act_t *)x_prev, (const par_t *)coef, (const act_t *)m, form, n_slots,
        n, T, C);
    CU_LAUNCHED(be);
    return 0;
}

int cu_shift_mix_bwd(rp_backend *be, void *dx, void *dx_prev, void *dcoef, void *dm, const void *dout,
                     const void *x, const void *x_prev, const void *coef, const void *m, int form, int n_slots, int B,
                     int T, int C) {
    RP_TRY(shift_form_ok(be, "shift_mix_bwd", form, m));
    if (n_slots <= 0 || B <= 0 || T <= 0 || C <= 0) return 0;
    CU_ENTER(be);
    cudaStream_t s = cu_stream(be);
    const int64_t n = (int64_t)B * T;
    if (n_slots <= SMV_MAX_SLOTS && act_vec_ok(C, dout, x, x_prev, m, dx, dx_prev, dm)) {
        /* runs of rows: enough threads to fill the GPU (~128k), at least 8 rows a run */
        const int G = C / ACT_VEC;
        int64_t chunks = ((int64_t)1 << 17) / G;
        if (chunks < 1) chunks = 1;
        if (chunks > (n + 7) / 8) chunks = (n + 7) / 8;
        const int64_t rpc = (n + chunks - 1) / chunks;
        const int n_chunks = (int)((n + rpc - 1) / rpc);
        void *part = NULL;
        if (dcoef) RP_TRY(cu_scratch(be, sizeof(float) * (size_t)n_chunks * (size_t)n_slots * (size_t)C, &part));
        shift_mix_backward_vec_kernel<<<cu_blocks((int64_t)G * n_chunks, SM_THREADS), SM_THREADS, 0, s>>>(
            (act_t *)dx, (act_t *)dx_prev, (act_t *)dm, (float *)part, (const act_t *)dout, (const act_t *)x,
            (const act_t *)x_prev, (const par_t *)coef, (const act_t *)m, form == RP_MIX_CURRENT ? -1.0f : 1.0f, form,
            n_slots, n, T, C, rpc, n_chunks);
        CU_LAUNCHED(be);
        return dcoef ? cu_colsum_finish(be, (float *)dcoef, (const float *)part, n_chunks, (int64_t)n_slots * C) : 0;
    }
    shift_mix_backward_kernel<<<cu_blocks(n * C, SM_THREADS), SM_THREADS, 0, s>>>(
        (act_t *)dx, (act_t *)dx_prev, (act_t *)dm, (const act_t *)dout, (const act_t *)x, (const act_t *)x_prev,
        (const par_t *)coef, (const act_t *)m, form, n_slots, n, T, C);
    CU_LAUNCHED(be);
    if (!dcoef) return 0;
    const int64_t cols = (int64_t)n_slots * C;
    int64_t rpc;
    int chunks = cu_colsum_chunks(n, cols, &rpc);
    void *scr;
    RP_TRY(cu_scratch(be, sizeof(float) * (size_t)chunks * (size_t)cols, &scr));
    dim3 grid((unsigned)((cols + SM_THREADS - 1) / SM_THREADS), (unsigned)chunks);
    shift_mix_dcoef_partial_kernel<<<grid, SM_THREADS, 0, s>>>((float *)scr, (const act_t *)dout, (const act_t *)x,
                                                              (const act_t *)x_prev, form == RP_MIX_CURRENT ? -1.0f : 1.0f,
                                                              n_slots, n, T, C, rpc);
    CU_LAUNCHED(be);
    return cu_colsum_finish(be, (float *)dcoef, (const float *)scr, chunks, cols);
}
