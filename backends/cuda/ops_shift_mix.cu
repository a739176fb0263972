/* ops_shift_mix.cu — token shift + mixing (RWKV ddlerp / lerp), δ_t = x_{t−1} − x_t
 * (x_{−1} = x_prev row or 0):
 *   RP_MIX_DELTA:    out[s] = x + δ ⊙ (coef[s] + m[s])      (RWKV-6/7)
 *   RP_MIX_CURRENT:  out[s] = x + δ ⊙ (1 − coef[s])         (RWKV-5; m = NULL)
 * x, x_prev, m, out, dx, dx_prev, dm are A (bf16); coef, dcoef are P (f32).
 * The backward recomputes δ and dδ per element (no scratch) and gets dcoef as a
 * deterministic column sum (negated for RP_MIX_CURRENT). */
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
