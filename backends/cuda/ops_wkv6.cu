/* ops_wkv6.cu — the RWKV-6 recurrence, forward and backward, with fp32 state.
 *
 * Per (b,h), with state S[j=value][i=key] and d = exp(−exp(w)):
 *   y_t[j] = Σ_i r_t[i]·(S[j][i] + u[i]·k_t[i]·v_t[j]);   S[j][i] ← d_t[i]·S[j][i] + k_t[i]·v_t[j]
 *
 * Both kernels are recurrent: one block per (b,h), N threads, each thread holding one row or
 * column of the N×N state in registers, stepping through T (any T: nothing is sized by a
 * compile-time context length). N is a template parameter (32, 64, 128 are built).
 *
 * Backward (three sweeps in one kernel; dS = ∂L/∂S after the current step):
 *  1. forward, thread i owns key column S[·][i]:
 *       gr_t[i] = Σ_j gy_t[j]·S_t[j][i] + u[i]·k_t[i]·(gy_t·v_t);   a_t[i] = r_t[i]·Σ_j gy_t[j]·S_t[j][i]
 *       gu[i] += r_t[i]·k_t[i]·(gy_t·v_t)
 *  2. reverse, thread i owns dS[·][i], starting from gs_out:
 *       gk_t[i] = Σ_j dS[j][i]·v_t[j] + u[i]·r_t[i]·(gy_t·v_t)
 *       the decay gradient G_t[i] = ∂L/∂log d_t[i] = Σ_j dS_{t+1}[j][i]·d_t[i]·S_t[j][i] comes
 *       from E_t = Σ_j dS_t[j][i]·S_t[j][i], which obeys E_{t+1} = G_t + k_t[i]·(Σ_j dS_{t+1}[j][i] v_t[j])
 *       and E_t = G_t + a_t[i]; so walking back from E_T = Σ_j gs_out[j][i]·S_T[j][i]:
 *       G_t = E_{t+1} − k_t[i]·gk'_t[i],  E_t = G_t + a_t[i],  gw_t = G_t·(−exp(w_t)).
 *       dS ← dS·d_t[i] + gy_t ⊗ r_t[i]; the final dS is ∂L/∂S_0 (gs0).
 *  3. reverse, thread j owns dS[j][·]:  gv_t[j] = Σ_i dS[j][i]·k_t[i] + (Σ_i r_t[i]u[i]k_t[i])·gy_t[j]
 * a_t lives in fp32 scratch [B,T,H,N]; gu and a shared gs0 are summed over B in a second,
 * fixed-order kernel (deterministic). */
#include "common.cuh"

RP_DEV float decay_of(float w) { return expf(-expf(w)); }

template <int N>
__global__ void __launch_bounds__(N) wkv6_forward_kernel(int T, int H, const act_t *__restrict__ r,
                                                          const act_t *__restrict__ k, const act_t *__restrict__ v,
                                                          const act_t *__restrict__ w, const par_t *__restrict__ u,
                                                          const par_t *s0, int s0_shared, act_t *__restrict__ y,
                                                          par_t *s_out) {
    /* s_out may be the per-sequence s0 (state advanced in place): thread j reads its row of s0
     * before the loop and writes the same row of s_out after it, so no restrict on either */
    const int bh = blockIdx.x, b = bh / H, h = bh % H, j = threadIdx.x;
    const int64_t C = (int64_t)H * N, NN = (int64_t)N * N;
    __shared__ float sr[N], sk[N], sd[N], su[N];
    float S[N]; /* row j: S[j][i] */
    const par_t *s0row = s0 ? s0 + (s0_shared ? (int64_t)h * NN : (int64_t)bh * NN) + (int64_t)j * N : NULL;
#pragma unroll
    for (int i = 0; i < N; i++) S[i] = s0row ? s0row[i] : 0.0f;
    su[j] = u[(int64_t)h * N + j];
    int64_t o = (int64_t)b * T * C + (int64_t)h * N + j;
    for (int t = 0; t < T; t++, o += C) {
        __syncthreads(); /* the previous step is done with the shared vectors */
        sr[j] = tof(r[o]);
        sk[j] = tof(k[o]);
        sd[j] = decay_of(tof(w[o]));
        const float vj = tof(v[o]);
        __syncthreads();
        float acc = 0.0f;
#pragma unroll
        for (int i = 0; i < N; i++) {
            acc += sr[i] * (S[i] + su[i] * sk[i] * vj);
            S[i] = sd[i] * S[i] + sk[i] * vj;
        }
        y[o] = fromf<act_t>(acc);
    }
    if (s_out) {
        par_t *dst = s_out + (int64_t)bh * NN + (int64_t)j * N;
#pragma unroll
        for (int i = 0; i < N; i++) dst[i] = S[i];
    }
}

template <int N>
__global__ void __launch_bounds__(N)
    wkv6_backward_kernel(int T, int H, const act_t *__restrict__ r, const act_t *__restrict__ k,
                         const act_t *__restrict__ v, const act_t *__restrict__ w, const par_t *__restrict__ u,
                         const par_t *__restrict__ s0, int s0_shared, const act_t *__restrict__ gy,
                         const par_t *__restrict__ gs_out, act_t *__restrict__ gr, act_t *__restrict__ gk,
                         act_t *__restrict__ gv, act_t *__restrict__ gw, float *__restrict__ a_scr,
                         float *__restrict__ gu_part, float *__restrict__ gs0_dst, int gs0_accumulate) {
    const int bh = blockIdx.x, b = bh / H, h = bh % H, tid = threadIdx.x;
    const int64_t C = (int64_t)H * N, NN = (int64_t)N * N;
    const int64_t base = (int64_t)b * T * C + (int64_t)h * N + tid;
    const float ui = u[(int64_t)h * N + tid];
    __shared__ float s1[N], s2[N], s3[N], s4[N];

    /* ---- sweep 1: forward, thread = key i, column S[·][i] ---- */
    float S[N];
    {
        const par_t *s0p = s0 ? s0 + (s0_shared ? (int64_t)h * NN : (int64_t)bh * NN) + tid : NULL;
#pragma unroll
        for (int j = 0; j < N; j++) S[j] = s0p ? s0p[(int64_t)j * N] : 0.0f;
    }
    float gu_acc = 0.0f;
    int64_t o = base;
    for (int t = 0; t < T; t++, o += C) {
        __syncthreads();
        s1[tid] = tof(v[o]);  /* v_t */
        s2[tid] = tof(gy[o]); /* gy_t */
        const float ri = tof(r[o]), ki = tof(k[o]), di = decay_of(tof(w[o]));
        __syncthreads();
        float gyv = 0.0f, grp = 0.0f;
#pragma unroll
        for (int j = 0; j < N; j++) {
            gyv += s2[j] * s1[j];
            grp += s2[j] * S[j];
            S[j] = di * S[j] + ki * s1[j];
        }
        gr[o] = fromf<act_t>(grp + ui * ki * gyv);
        a_scr[o] = ri * grp;
        gu_acc += ri * ki * gyv;
    }
    gu_part[(int64_t)bh * N + tid] = gu_acc;

    /* ---- sweep 2: reverse, thread = key i, column dS[·][i]; gk, gw, gs0 ---- */
    float dS[N];
    {
        const par_t *gp = gs_out ? gs_out + (int64_t)bh * NN + tid : NULL;
#pragma unroll
        for (int j = 0; j < N; j++) dS[j] = gp ? gp[(int64_t)j * N] : 0.0f;
    }
    float E = 0.0f; /* Σ_j dS_T[j][i]·S_T[j][i] */
#pragma unroll
    for (int j = 0; j < N; j++) E += dS[j] * S[j];
    o = base + (int64_t)(T - 1) * C;
    for (int t = T - 1; t >= 0; t--, o -= C) {
        __syncthreads();
        s1[tid] = tof(v[o]);
        s2[tid] = tof(gy[o]);
        const float ri = tof(r[o]), ki = tof(k[o]), wi = tof(w[o]);
        const float ew = expf(wi), di = expf(-ew);
        __syncthreads();
        float gyv = 0.0f, gkp = 0.0f;
#pragma unroll
        for (int j = 0; j < N; j++) {
            gyv += s2[j] * s1[j];
            gkp += dS[j] * s1[j];
            dS[j] = dS[j] * di + s2[j] * ri;
        }
        gk[o] = fromf<act_t>(gkp + ui * ri * gyv);
        const float G = E - ki * gkp;
        gw[o] = fromf<act_t>(G * -ew);
        E = G + a_scr[o];
    }
    if (gs0_dst) {
        par_t *dst = gs0_dst + (int64_t)bh * NN + tid;
        if (gs0_accumulate) {
#pragma unroll
            for (int j = 0; j < N; j++) dst[(int64_t)j * N] += dS[j];
        } else {
#pragma unroll
            for (int j = 0; j < N; j++) dst[(int64_t)j * N] = dS[j];
        }
    }

    /* ---- sweep 3: reverse, thread = value j, row dS[j][·]; gv ---- */
    {
        const par_t *gp = gs_out ? gs_out + (int64_t)bh * NN + (int64_t)tid * N : NULL;
#pragma unroll
        for (int i = 0; i < N; i++) dS[i] = gp ? gp[i] : 0.0f;
    }
    o = base + (int64_t)(T - 1) * C;
    for (int t = T - 1; t >= 0; t--, o -= C) {
        __syncthreads();
        const float rj = tof(r[o]), kj = tof(k[o]);
        s1[tid] = rj;
        s2[tid] = kj;
        s3[tid] = decay_of(tof(w[o]));
        s4[tid] = rj * ui * kj;
        const float gyj = tof(gy[o]);
        __syncthreads();
        float ruk = 0.0f, gvp = 0.0f;
#pragma unroll
        for (int i = 0; i < N; i++) {
            ruk += s4[i];
            gvp += dS[i] * s2[i];
            dS[i] = dS[i] * s3[i] + gyj * s1[i];
        }
        gv[o] = fromf<act_t>(gvp + ruk * gyj);
    }
}

/* gu[h,i] += Σ_b part[b,h,i]; gs0[h,q] += Σ_b part[b,h,q] (shared s0) — fixed order. */
__global__ void wkv6_sum_over_batch_kernel(par_t *__restrict__ dst, const float *__restrict__ part, int B,
                                           int64_t per_b) {
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < per_b; e += (int64_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int b = 0; b < B; b++) s += part[(int64_t)b * per_b + e];
        dst[e] += s;
    }
}

/* ---- launchers ---- */

template <int N>
static void launch_fwd(cudaStream_t s, int B, int T, int H, const void *r, const void *k, const void *v,
                       const void *w, const void *u, const void *s0, int s0_shared, void *y, void *s_out) {
    wkv6_forward_kernel<N><<<(unsigned)(B * H), N, 0, s>>>(T, H, (const act_t *)r, (const act_t *)k,
                                                           (const act_t *)v, (const act_t *)w, (const par_t *)u,
                                                           (const par_t *)s0, s0_shared, (act_t *)y, (par_t *)s_out);
}

template <int N>
static void launch_bwd(cudaStream_t s, int B, int T, int H, const void *r, const void *k, const void *v,
                       const void *w, const void *u, const void *s0, int s0_shared, const void *gy,
                       const void *gs_out, void *gr, void *gk, void *gv, void *gw, float *a_scr, float *gu_part,
                       float *gs0_dst, int gs0_acc) {
    wkv6_backward_kernel<N><<<(unsigned)(B * H), N, 0, s>>>(
        T, H, (const act_t *)r, (const act_t *)k, (const act_t *)v, (const act_t *)w, (const par_t *)u,
        (const par_t *)s0, s0_shared, (const act_t *)gy, (const par_t *)gs_out, (act_t *)gr, (act_t *)gk,
        (act_t *)gv, (act_t *)gw, a_scr, gu_part, gs0_dst, gs0_acc);
}

static int wkv_check(rp_backend *be, const char *op, int B, int T, int H, int N) {
    if (B < 0 || T < 0 || H < 0) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "%s: negative size", op);
    if (N != 32 && N != 64 && N != 128)
        return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "%s: head size %d is not built (32, 64, 128)", op, N);
    if ((int64_t)B * H > 0x7fffffffLL) return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "%s: B·H too large", op);
    return 0;
}

int cu_wkv6_fwd(rp_backend *be, void *y, void *s_out, const void *r, const void *k, const void *v, const void *w,
                const void *u, const void *s0, int s0_shared, int B, int T, int H, int N) {
    RP_TRY(wkv_check(be, "wkv6_fwd", B, T, H, N));
    if (B == 0 || H == 0) return 0;
    CU_ENTER(be);
    cudaStream_t s = cu_stream(be);
    switch (N) {
    case 32: launch_fwd<32>(s, B, T, H, r, k, v, w, u, s0, s0_shared, y, s_out); break;
    case 64: launch_fwd<64>(s, B, T, H, r, k, v, w, u, s0, s0_shared, y, s_out); break;
    default: launch_fwd<128>(s, B, T, H, r, k, v, w, u, s0, s0_shared, y, s_out); break;
    }
    CU_LAUNCHED(be);
    return 0;
}

int cu_wkv6_bwd(rp_backend *be, void *gr, void *gk, void *gv, void *gw, void *gu, void *gs0, const void *gy,
                const void *gs_out, const void *r, const void *k, const void *v, const void *w, const void *u,
                const void *s0, int s0_shared, int B, int T, int H, int N) {
    RP_TRY(wkv_check(be, "wkv6_bwd", B, T, H, N));
    if (B == 0 || H == 0) return 0;
    CU_ENTER(be);
    cudaStream_t s = cu_stream(be);
    const int64_t NN = (int64_t)N * N, BH = (int64_t)B * H;
    const size_t a_bytes = cu_round(sizeof(float) * (size_t)((int64_t)B * T * H * N));
    const size_t gu_bytes = cu_round(sizeof(float) * (size_t)(BH * N));
    const int shared_gs0 = gs0 && s0_shared;
    const size_t gs_bytes = shared_gs0 ? cu_round(sizeof(float) * (size_t)(BH * NN)) : 0;
    void *scr;
    RP_TRY(cu_scratch(be, a_bytes + gu_bytes + gs_bytes, &scr));
    char *cur = (char *)scr;
    float *a_scr = (float *)cu_carve(&cur, a_bytes);
    float *gu_part = (float *)cu_carve(&cur, gu_bytes);
    float *gs_part = shared_gs0 ? (float *)cu_carve(&cur, gs_bytes) : NULL;
    /* per-batch gs0 is one (b,h) block per slice: accumulate in place */
    float *gs0_dst = gs0 ? (shared_gs0 ? gs_part : (float *)gs0) : NULL;
    const int gs0_acc = gs0 && !shared_gs0;
    switch (N) {
    case 32:
        launch_bwd<32>(s, B, T, H, r, k, v, w, u, s0, s0_shared, gy, gs_out, gr, gk, gv, gw, a_scr, gu_part, gs0_dst,
                       gs0_acc);
        break;
    case 64:
        launch_bwd<64>(s, B, T, H, r, k, v, w, u, s0, s0_shared, gy, gs_out, gr, gk, gv, gw, a_scr, gu_part, gs0_dst,
                       gs0_acc);
        break;
    default:
        launch_bwd<128>(s, B, T, H, r, k, v, w, u, s0, s0_shared, gy, gs_out, gr, gk, gv, gw, a_scr, gu_part,
                        gs0_dst, gs0_acc);
        break;
    }
    CU_LAUNCHED(be);
    if (gu) { /* gu NULL: u is frozen, its gradient is not wanted */
        const int64_t per_gu = (int64_t)H * N;
        wkv6_sum_over_batch_kernel<<<cu_blocks(per_gu, 256), 256, 0, s>>>((par_t *)gu, gu_part, B, per_gu);
        CU_LAUNCHED(be);
    }
    if (shared_gs0) {
        const int64_t per_gs = (int64_t)H * NN;
        wkv6_sum_over_batch_kernel<<<cu_blocks(per_gs, 256), 256, 0, s>>>((par_t *)gs0, gs_part, B, per_gs);
        CU_LAUNCHED(be);
    }
    return 0;
}
