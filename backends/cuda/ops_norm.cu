/* ops_norm.cu — group normalisation (LayerNorm is G = 1, RWKV's ln_x is G = heads).
 * One block per (row, group); fp32 statistics with a two-pass variance. The parameter
 * gradients are column sums done deterministically (partials per row chunk, then a fixed-order
 * finish).
 *
 * Register variant (the common shapes): when S is a multiple of ACT_VEC, every thread holds
 * one 16-byte vector of a row, so x and dy are read from memory once; a team of S/ACT_VEC
 * threads owns a (row, group) — several teams per warp for RWKV's ln_x (S = head size 64:
 * 8 threads), one block for a LayerNorm row (S = C). The scalar kernels (one block per
 * (row, group), strided loops) cover every other shape. The profile had the scalar kernels
 * at ~5× their memory time, mostly ln_x's 64-thread blocks.
 *
 * Gated form (norm_gate_fwd/bwd, the kernels' GATE = GATE_PLAIN or GATE_SILU): out = y ⊙ γ
 * with y the normalised row and γ = gate or SiLU(gate), in the same pass; the backward takes
 * dout, recomputes y from the statistics, writes dgate = dout ⊙ y (⊙ SiLU'(gate)) and uses
 * dout ⊙ γ as the norm's upstream gradient. It replaces a norm, a product, three zero fills,
 * the product's backward and, with GATE_SILU, the SiLU's forward and backward passes
 * (RWKV-5/6's ln_x ⊙ SiLU(g)). */
#include "common.cuh"

#define NORM_TEAM_BLOCK 256

/* The kernels' GATE parameter */
#define GATE_NONE 0
#define GATE_PLAIN 1
#define GATE_SILU 2

/* γ = the gate as applied (the gate itself, or SiLU of it) */
template <int GATE> RP_DEV float gate_value(float g) { return GATE == GATE_SILU ? g * sigmoidf_(g) : g; }
/* ∂γ/∂gate */
template <int GATE> RP_DEV float gate_slope(float g) {
    if (GATE != GATE_SILU) return 1.0f;
    const float sg = sigmoidf_(g);
    return sg * (1.0f + g * (1.0f - sg));
}

/* The register variant's launch shape, or 0 when it does not apply. */
static int norm_team(int S, const void *a, const void *b, const void *c, const void *d = NULL,
                     const void *e = NULL) {
    if (!act_vec_ok(S, a, b, c, d, e)) return 0;
    const int team = S / ACT_VEC;
    if (team <= TEAM_SHFL_MAX && (team & (team - 1)) == 0) return team;
    if (team % 64 == 0 && team <= 1024) return team; /* one team per block: whole warps of either size */
    return 0;
}

template <int GATE>
__global__ void norm_forward_team_kernel(act_t *__restrict__ y, par_t *__restrict__ mean, par_t *__restrict__ rstd,
                                         const act_t *__restrict__ x, const par_t *__restrict__ w,
                                         const par_t *__restrict__ b, const act_t *__restrict__ gate, int64_t rows,
                                         int G, int S, int team, float eps) {
    const int per_block = blockDim.x / team;
    const int64_t rg = (int64_t)blockIdx.x * per_block + threadIdx.x / team;
    const int c0 = (int)(threadIdx.x % team) * ACT_VEC;
    const bool live = rg < rows;
    float v[ACT_VEC];
    if (live) {
        act_load_vec(v, x + rg * S + c0);
    } else {
#pragma unroll
        for (int i = 0; i < ACT_VEC; i++) v[i] = 0.0f;
    }
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < ACT_VEC; i++) s += v[i];
    const float mu = team_sum(s, team) / (float)S;
    float q = 0.0f;
#pragma unroll
    for (int i = 0; i < ACT_VEC; i++) q += (v[i] - mu) * (v[i] - mu);
    const float rs = 1.0f / sqrtf(team_sum(q, team) / (float)S + eps);
    if (!live) return;
    if (c0 == 0) {
        mean[rg] = mu;
        rstd[rg] = rs;
    }
    const int64_t off = (int64_t)(rg % G) * S + c0;
#pragma unroll
    for (int i = 0; i < ACT_VEC; i++) v[i] = (v[i] - mu) * rs * w[off + i] + (b ? b[off + i] : 0.0f);
    if (GATE) {
        float gv[ACT_VEC];
        act_load_vec(gv, gate + rg * S + c0);
#pragma unroll
        for (int i = 0; i < ACT_VEC; i++) v[i] *= gate_value<GATE>(gv[i]);
    }
    act_store_vec(y + rg * S + c0, v);
}

/* GATE: dy is ∂L/∂out; dgate = dy ⊙ y ⊙ ∂γ/∂gate is written and dx is written, not added. */
template <int GATE>
__global__ void norm_backward_dx_team_kernel(act_t *__restrict__ dx, act_t *__restrict__ dgate,
                                             const act_t *__restrict__ dy, const act_t *__restrict__ x,
                                             const par_t *__restrict__ w, const par_t *__restrict__ b,
                                             const act_t *__restrict__ gate, const par_t *__restrict__ mean,
                                             const par_t *__restrict__ rstd, int64_t rows, int G, int S, int team) {
    const int per_block = blockDim.x / team;
    const int64_t rg = (int64_t)blockIdx.x * per_block + threadIdx.x / team;
    const int c0 = (int)(threadIdx.x % team) * ACT_VEC;
    const bool live = rg < rows;
    float xh[ACT_VEC], dxh[ACT_VEC];
    float mu = 0.0f, rs = 0.0f, s1 = 0.0f, s2 = 0.0f;
    if (live) {
        mu = mean[rg];
        rs = rstd[rg];
        act_load_vec(xh, x + rg * S + c0);
        act_load_vec(dxh, dy + rg * S + c0);
        const int64_t off = (int64_t)(rg % G) * S + c0;
        if (GATE) {
            float gv[ACT_VEC], dg[ACT_VEC];
            act_load_vec(gv, gate + rg * S + c0);
#pragma unroll
            for (int i = 0; i < ACT_VEC; i++) {
                const float yv = (xh[i] - mu) * rs * w[off + i] + (b ? b[off + i] : 0.0f);
                dg[i] = dxh[i] * yv * gate_slope<GATE>(gv[i]);
                dxh[i] *= gate_value<GATE>(gv[i]);
            }
            act_store_vec(dgate + rg * S + c0, dg);
        }
#pragma unroll
        for (int i = 0; i < ACT_VEC; i++) {
            xh[i] = (xh[i] - mu) * rs;
            dxh[i] *= w[off + i];
            s1 += dxh[i];
            s2 += dxh[i] * xh[i];
        }
    }
    s1 = team_sum(s1, team) / (float)S;
    s2 = team_sum(s2, team) / (float)S;
    if (!live) return;
    float o[ACT_VEC];
    if (GATE) {
#pragma unroll
        for (int i = 0; i < ACT_VEC; i++) o[i] = 0.0f;
    } else {
        act_load_vec(o, dx + rg * S + c0);
    }
#pragma unroll
    for (int i = 0; i < ACT_VEC; i++) o[i] += rs * (dxh[i] - s1 - xh[i] * s2);
    act_store_vec(dx + rg * S + c0, o);
}

static int norm_threads(int S) { return S <= 64 ? 64 : S <= 128 ? 128 : 256; }

template <int GATE>
__global__ void norm_forward_kernel(act_t *__restrict__ y, par_t *__restrict__ mean, par_t *__restrict__ rstd,
                                    const act_t *__restrict__ x, const par_t *__restrict__ w,
                                    const par_t *__restrict__ b, const act_t *__restrict__ gate, int G, int S,
                                    float eps) {
    const int64_t rg = blockIdx.x;
    const int g = (int)(rg % G);
    const act_t *xr = x + rg * S;
    act_t *yr = y + rg * S;
    float s = 0.0f;
    for (int c = threadIdx.x; c < S; c += blockDim.x) s += tof(xr[c]);
    const float mu = block_sum(s) / (float)S;
    float v = 0.0f;
    for (int c = threadIdx.x; c < S; c += blockDim.x) {
        float d = tof(xr[c]) - mu;
        v += d * d;
    }
    const float var = block_sum(v) / (float)S;
    const float rs = 1.0f / sqrtf(var + eps);
    if (threadIdx.x == 0) {
        mean[rg] = mu;
        rstd[rg] = rs;
    }
    const par_t *wg = w + (int64_t)g * S, *bg = b ? b + (int64_t)g * S : NULL;
    for (int c = threadIdx.x; c < S; c += blockDim.x) {
        const float o = (tof(xr[c]) - mu) * rs * wg[c] + (bg ? bg[c] : 0.0f);
        yr[c] = fromf<act_t>(GATE ? o * gate_value<GATE>(tof(gate[rg * S + c])) : o);
    }
}

/* dx += rstd·(dxhat − mean(dxhat) − xhat·mean(dxhat·xhat)), dxhat = dy·w; GATE as the team
 * kernel (dxhat = dy·gate·w, dgate = dy·y written, dx written). */
template <int GATE>
__global__ void norm_backward_dx_kernel(act_t *__restrict__ dx, act_t *__restrict__ dgate, const act_t *__restrict__ dy,
                                        const act_t *__restrict__ x, const par_t *__restrict__ w,
                                        const par_t *__restrict__ b, const act_t *__restrict__ gate,
                                        const par_t *__restrict__ mean, const par_t *__restrict__ rstd, int G, int S) {
    const int64_t rg = blockIdx.x;
    const int g = (int)(rg % G);
    const act_t *xr = x + rg * S, *dyr = dy + rg * S;
    act_t *dxr = dx + rg * S;
    const par_t *wg = w + (int64_t)g * S, *bg = b ? b + (int64_t)g * S : NULL;
    const float mu = mean[rg], rs = rstd[rg];
    float s1 = 0.0f, s2 = 0.0f;
    for (int c = threadIdx.x; c < S; c += blockDim.x) {
        const float xh = (tof(xr[c]) - mu) * rs;
        float d = tof(dyr[c]);
        if (GATE) {
            const float gv = tof(gate[rg * S + c]);
            dgate[rg * S + c] = fromf<act_t>(d * (xh * wg[c] + (bg ? bg[c] : 0.0f)) * gate_slope<GATE>(gv));
            d *= gate_value<GATE>(gv);
        }
        const float dxh = d * wg[c];
        s1 += dxh;
        s2 += dxh * xh;
    }
    s1 = block_sum(s1) / (float)S;
    s2 = block_sum(s2) / (float)S;
    for (int c = threadIdx.x; c < S; c += blockDim.x) {
        const float xh = (tof(xr[c]) - mu) * rs;
        const float dxh = tof(dyr[c]) * (GATE ? gate_value<GATE>(tof(gate[rg * S + c])) : 1.0f) * wg[c];
        const float v = rs * (dxh - s1 - xh * s2);
        dxr[c] = fromf<act_t>(GATE ? v : tof(dxr[c]) + v);
    }
}

/* partial dw/db over a chunk of rows: column c of [n, G·S] (the norm's upstream gradient is
 * dy, or dy ⊙ γ in the gated forms) */
template <int GATE>
__global__ void norm_backward_dwdb_partial_kernel(float *__restrict__ pw, float *__restrict__ pb,
                                                  const act_t *__restrict__ dy, const act_t *__restrict__ gate,
                                                  const act_t *__restrict__ x,
                                                  const par_t *__restrict__ mean, const par_t *__restrict__ rstd,
                                                  int64_t n, int G, int S, int64_t rows_per_chunk) {
    const int64_t C = (int64_t)G * S;
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int g = (int)(c / S);
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < n ? r0 + rows_per_chunk : n;
    float sw = 0.0f, sb = 0.0f;
    for (int64_t r = r0; r < r1; r++) {
        float d = tof(dy[r * C + c]) * (GATE ? gate_value<GATE>(tof(gate[r * C + c])) : 1.0f);
        float xh = (tof(x[r * C + c]) - mean[r * G + g]) * rstd[r * G + g];
        sw += d * xh;
        sb += d;
    }
    if (pw) pw[(int64_t)blockIdx.y * C + c] = sw;
    if (pb) pb[(int64_t)blockIdx.y * C + c] = sb;
}

/* ---- launchers ---- */

/* Calls LAUNCH(G) with G the kernels' GATE constant for (gate, silu). */
#define GATE_SWITCH(gate, silu, LAUNCH) \
    do {                                \
        if (!(gate)) LAUNCH(GATE_NONE);  \
        else if (silu) LAUNCH(GATE_SILU); \
        else LAUNCH(GATE_PLAIN);         \
    } while (0)

static int norm_fwd_impl(rp_backend *be, void *y, void *mean, void *rstd, const void *x, const void *w, const void *b,
                         const void *gate, int silu, int64_t n, int G, int S, float eps, const char *op) {
    if (n <= 0 || G <= 0 || S <= 0) return 0;
    if (n * G > 0x7fffffffLL) return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "%s: too many rows", op);
    CU_ENTER(be);
    cudaStream_t s = cu_stream(be);
    const act_t *gt = (const act_t *)gate;
    if (int team = norm_team(S, y, x, gate)) {
        const int threads = team > TEAM_SHFL_MAX ? team : NORM_TEAM_BLOCK, per_block = threads / team;
        const unsigned blocks = (unsigned)((n * G + per_block - 1) / per_block);
#define FWD_TEAM(GT) norm_forward_team_kernel<GT><<<blocks, threads, 0, s>>>((act_t *)y, (par_t *)mean, (par_t *)rstd, (const act_t *)x, (const par_t *)w, (const par_t *)b, gt, n * G, G, S, team, eps)
        GATE_SWITCH(gate, silu, FWD_TEAM);
#undef FWD_TEAM
    } else {
#define FWD_ROW(GT) norm_forward_kernel<GT><<<(unsigned)(n * G), norm_threads(S), 0, s>>>((act_t *)y, (par_t *)mean, (par_t *)rstd, (const act_t *)x, (const par_t *)w, (const par_t *)b, gt, G, S, eps)
        GATE_SWITCH(gate, silu, FWD_ROW);
#undef FWD_ROW
    }
    CU_LAUNCHED(be);
    return 0;
}

int cu_norm_fwd(rp_backend *be, void *y, void *mean, void *rstd, const void *x, const void *w, const void *b,
                int64_t n, int G, int S, float eps) {
    return norm_fwd_impl(be, y, mean, rstd, x, w, b, NULL, 0, n, G, S, eps, "norm_fwd");
}

int cu_norm_gate_fwd(rp_backend *be, void *out, void *mean, void *rstd, const void *x, const void *w, const void *b,
                     const void *gate, int silu_gate, int64_t n, int G, int S, float eps) {
    if (!gate) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "norm_gate_fwd: no gate");
    return norm_fwd_impl(be, out, mean, rstd, x, w, b, gate, silu_gate, n, G, S, eps, "norm_gate_fwd");
}

static int norm_bwd_impl(rp_backend *be, void *dx, void *dgate, void *dw, void *db, const void *dy, const void *x,
                         const void *w, const void *b, const void *gate, int silu, const void *mean, const void *rstd,
                         int64_t n, int G, int S, const char *op) {
    if (n <= 0 || G <= 0 || S <= 0) return 0;
    if (n * G > 0x7fffffffLL) return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "%s: too many rows", op);
    CU_ENTER(be);
    cudaStream_t s = cu_stream(be);
    const act_t *gt = (const act_t *)gate;
    const par_t *bp = (const par_t *)b, *mp = (const par_t *)mean, *rp = (const par_t *)rstd;
    if (int team = norm_team(S, dx, dy, x, gate, dgate)) {
        const int threads = team > TEAM_SHFL_MAX ? team : NORM_TEAM_BLOCK, per_block = threads / team;
        const unsigned blocks = (unsigned)((n * G + per_block - 1) / per_block);
#define BWD_TEAM(GT) norm_backward_dx_team_kernel<GT><<<blocks, threads, 0, s>>>((act_t *)dx, (act_t *)dgate, (const act_t *)dy, (const act_t *)x, (const par_t *)w, bp, gt, mp, rp, n * G, G, S, team)
        GATE_SWITCH(gate, silu, BWD_TEAM);
#undef BWD_TEAM
    } else {
#define BWD_ROW(GT) norm_backward_dx_kernel<GT><<<(unsigned)(n * G), norm_threads(S), 0, s>>>((act_t *)dx, (act_t *)dgate, (const act_t *)dy, (const act_t *)x, (const par_t *)w, bp, gt, mp, rp, G, S)
        GATE_SWITCH(gate, silu, BWD_ROW);
#undef BWD_ROW
    }
    CU_LAUNCHED(be);
    if (!dw && !db) return 0;
    const int64_t C = (int64_t)G * S;
    int64_t rpc;
    int chunks = cu_colsum_chunks(n, C, &rpc);
    void *scr;
    size_t part = cu_round(sizeof(float) * (size_t)chunks * (size_t)C);
    RP_TRY(cu_scratch(be, 2 * part, &scr));
    char *cur = (char *)scr;
    float *pw = dw ? (float *)cu_carve(&cur, part) : NULL;
    float *pb = db ? (float *)cu_carve(&cur, part) : NULL;
    dim3 grid((unsigned)((C + 255) / 256), (unsigned)chunks);
#define DWDB(GT) norm_backward_dwdb_partial_kernel<GT><<<grid, 256, 0, s>>>(pw, pb, (const act_t *)dy, gt, (const act_t *)x, mp, rp, n, G, S, rpc)
    GATE_SWITCH(gate, silu, DWDB);
#undef DWDB
    CU_LAUNCHED(be);
    if (dw) RP_TRY(cu_colsum_finish(be, (float *)dw, pw, chunks, C));
    if (db) RP_TRY(cu_colsum_finish(be, (float *)db, pb, chunks, C));
    return 0;
}

int cu_norm_bwd(rp_backend *be, void *dx, void *dw, void *db, const void *dy, const void *x, const void *w,
                const void *mean, const void *rstd, int64_t n, int G, int S) {
    return norm_bwd_impl(be, dx, NULL, dw, db, dy, x, w, NULL, NULL, 0, mean, rstd, n, G, S, "norm_bwd");
}

int cu_norm_gate_bwd(rp_backend *be, void *dx, void *dgate, void *dw, void *db, const void *dout, const void *x,
                     const void *w, const void *b, const void *gate, int silu_gate, const void *mean, const void *rstd,
                     int64_t n, int G, int S) {
    if (!gate || !dgate) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "norm_gate_bwd: no gate or dgate");
    return norm_bwd_impl(be, dx, dgate, dw, db, dout, x, w, b, gate, silu_gate, mean, rstd, n, G, S, "norm_gate_bwd");
}
