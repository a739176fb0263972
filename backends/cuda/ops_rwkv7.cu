/* ops_rwkv7.cu — RWKV-7's per-head key preparation and bonus term (lib/backend.h, spec §1.6).
 * Per row and head h (channels c = h·N + i, C = H·N):
 *
 *   v7_kprep:  u = k ⊙ k_k;  ν = max(‖u_h‖₂, 1e-12);  kk = u/ν;  wa = −kk;  wb = kk ⊙ a;
 *              k_out = k ⊙ (1 + (a − 1) ⊙ k_a)
 *     backward: dkk = −dwa + dwb ⊙ a;  du = (dkk − kk·(kk·dkk))/ν  (or dkk/1e-12 below the floor,
 *              where ν is a constant); dk = du ⊙ k_k + dk_out ⊙ (1 + (a − 1) ⊙ k_a);
 *              da = dwb ⊙ kk + dk_out ⊙ k ⊙ k_a;  dk_k += Σ_rows du ⊙ k;  dk_a += Σ_rows dk_out ⊙ k ⊙ (a − 1)
 *   v7_bonus:  s_h = Σ_i r·k·r_k;  y_h += s_h·v_h
 *     backward: ds_h = Σ_j dy·v;  dr += ds_h·k·r_k;  dk += ds_h·r·r_k;  dv += s_h·dy;
 *              dr_k += Σ_rows ds_h·r·k
 *
 * Team kernels (the fast path: N a multiple of ACT_VEC with N/ACT_VEC a power of two ≤
 * TEAM_SHFL_MAX, 16-byte aligned rows; RWKV-7's N = 64 in bf16 is a team of 8): N/ACT_VEC
 * adjacent threads own a (row, head) item, each thread one 16-byte vector held in registers, the
 * item's sums a few shuffles inside the team — several items per warp and every access a 16-byte
 * one. (The warp-per-item kernels below did 2-byte accesses with one item per warp in flight and
 * ran at about a third of the memory rate: H200, 1.5B B8, ~120 µs a call where the traffic takes
 * ~40.) Otherwise, one warp per (row, head) item: its lanes stride over the N channels and meet
 * in warp_sum (any N; warp-size independent). The loops over items are uniform per block (every thread of
 * a block runs the same number of iterations, idle warps on zeros), so every shuffle is
 * reached by the whole block. The parameter gradients (P, +=) are deterministic column sums:
 * the per-item scalars go to fp32 scratch [n·H], a column kernel recomputes each element's
 * contribution and sums row chunks, and cu_colsum_finish adds the chunks in a fixed order. */
#include "common.cuh"

#define V7_THREADS 256
#define V7_FLOOR 1e-12f

namespace {

/* Block-uniform loop over items, one warp each: body(item, valid, lane). */
template <class F> RP_DEV void for_items(int64_t items, F body) {
    const int lane = threadIdx.x % RP_WARP_SIZE, wib = threadIdx.x / RP_WARP_SIZE;
    const int64_t wpb = blockDim.x / RP_WARP_SIZE;
    for (int64_t base = (int64_t)blockIdx.x * wpb; base < items; base += (int64_t)gridDim.x * wpb) {
        const int64_t it = base + wib;
        body(it, it < items, lane);
    }
}

/* ‖u‖ of item `it`, u = k ⊙ k_k (every lane gets it) */
RP_DEV float kprep_norm(const act_t *k, const par_t *kkw, int64_t o, int h, int N, bool valid, int lane) {
    float ss = 0.0f;
    if (valid)
        for (int i = lane; i < N; i += RP_WARP_SIZE) {
            const float u = tof(k[o + i]) * kkw[(int64_t)h * N + i];
            ss = fmaf(u, u, ss);
        }
    return sqrtf(warp_sum(ss));
}

__global__ void v7_kprep_forward_kernel(act_t *__restrict__ kout, act_t *__restrict__ wa, act_t *__restrict__ wb,
                                        const act_t *__restrict__ k, const act_t *__restrict__ a,
                                        const par_t *__restrict__ kkw, const par_t *__restrict__ ka, int64_t items,
                                        int H, int N) {
    for_items(items, [&](int64_t it, bool valid, int lane) {
        const int h = (int)(it % H);
        const int64_t o = it * N;
        const float nrm = kprep_norm(k, kkw, o, h, N, valid, lane);
        const float inv = 1.0f / (nrm > V7_FLOOR ? nrm : V7_FLOOR);
        if (!valid) return;
        for (int i = lane; i < N; i += RP_WARP_SIZE) {
            const int64_t c = (int64_t)h * N + i;
            const float kv = tof(k[o + i]), av = tof(a[o + i]);
            const float kk = kv * kkw[c] * inv;
            wa[o + i] = fromf<act_t>(-kk);
            wb[o + i] = fromf<act_t>(kk * av);
            kout[o + i] = fromf<act_t>(kv * fmaf(av - 1.0f, ka[c], 1.0f));
        }
    });
}

/* sc[it] = (1/ν, kk·dkk or 0 below the floor): then du = (dkk − kk·sc.y)·sc.x in both cases */
__global__ void v7_kprep_backward_kernel(act_t *__restrict__ dk, act_t *__restrict__ da, float2 *__restrict__ sc,
                                         const act_t *__restrict__ dkout, const act_t *__restrict__ dwa,
                                         const act_t *__restrict__ dwb, const act_t *__restrict__ k,
                                         const act_t *__restrict__ a, const par_t *__restrict__ kkw,
                                         const par_t *__restrict__ ka, int64_t items, int H, int N) {
    for_items(items, [&](int64_t it, bool valid, int lane) {
        const int h = (int)(it % H);
        const int64_t o = it * N;
        const float nrm = kprep_norm(k, kkw, o, h, N, valid, lane);
        const bool floored = !(nrm > V7_FLOOR);
        const float inv = 1.0f / (floored ? V7_FLOOR : nrm);
        float dot = 0.0f;
        if (valid)
            for (int i = lane; i < N; i += RP_WARP_SIZE) {
                const float kk = tof(k[o + i]) * kkw[(int64_t)h * N + i] * inv;
                dot = fmaf(kk, fmaf(tof(dwb[o + i]), tof(a[o + i]), -tof(dwa[o + i])), dot);
            }
        dot = warp_sum(dot);
        if (floored) dot = 0.0f;
        if (!valid) return;
        if (sc && lane == 0) {
            float2 q;
            q.x = inv;
            q.y = dot;
            sc[it] = q;
        }
        for (int i = lane; i < N; i += RP_WARP_SIZE) {
            const int64_t c = (int64_t)h * N + i;
            const float kv = tof(k[o + i]), av = tof(a[o + i]), g = tof(dkout[o + i]), bw = tof(dwb[o + i]);
            const float kk = kv * kkw[c] * inv;
            const float du = (fmaf(bw, av, -tof(dwa[o + i])) - kk * dot) * inv;
            dk[o + i] = fromf<act_t>(fmaf(du, kkw[c], g * fmaf(av - 1.0f, ka[c], 1.0f)));
            da[o + i] = fromf<act_t>(fmaf(bw, kk, g * kv * ka[c]));
        }
    });
}

/* ---- team kernels (see the header) ---- */

/* Block-uniform loop over the teams of `items` items: body(item, vector index in the item, valid).
 * blockDim.x is a multiple of the team, so a team is wholly valid or wholly not, and every thread
 * of a block runs the same iterations (the team shuffles are reached by all of its lanes). */
template <class F> RP_DEV void for_teams(int64_t items, int team, F body) {
    const int64_t total = items * team, stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t base = (int64_t)blockIdx.x * blockDim.x; base < total; base += stride) {
        const int64_t gt = base + threadIdx.x;
        body(gt / team, (int)(gt % team), gt < total);
    }
}

/* One thread's ACT_VEC parameter values of head h (parameters are not 16-byte aligned in the
 * flat buffer: scalar loads, cached) */
RP_DEV void par_load_vec(float (&d)[ACT_VEC], const par_t *p) {
#pragma unroll
    for (int e = 0; e < ACT_VEC; e++) d[e] = p[e];
}

__global__ void v7_kprep_forward_team_kernel(act_t *__restrict__ kout, act_t *__restrict__ wa,
                                             act_t *__restrict__ wb, const act_t *__restrict__ k,
                                             const act_t *__restrict__ a, const par_t *__restrict__ kkw,
                                             const par_t *__restrict__ ka, int64_t items, int H, int N, int team) {
    for_teams(items, team, [&](int64_t it, int t, bool valid) {
        const int64_t o = it * N + t * ACT_VEC, c = (int64_t)(valid ? it % H : 0) * N + t * ACT_VEC;
        float kv[ACT_VEC], av[ACT_VEC], u[ACT_VEC], x[ACT_VEC];
        float ss = 0.0f;
        if (valid) {
            act_load_vec(kv, k + o);
            act_load_vec(av, a + o);
            par_load_vec(u, kkw + c);
#pragma unroll
            for (int e = 0; e < ACT_VEC; e++) {
                u[e] *= kv[e];
                ss = fmaf(u[e], u[e], ss);
            }
        }
        const float nrm = sqrtf(team_sum(ss, team));
        if (!valid) return;
        const float inv = 1.0f / (nrm > V7_FLOOR ? nrm : V7_FLOOR);
#pragma unroll
        for (int e = 0; e < ACT_VEC; e++) x[e] = -(u[e] * inv);
        act_store_vec(wa + o, x);
#pragma unroll
        for (int e = 0; e < ACT_VEC; e++) x[e] = u[e] * inv * av[e];
        act_store_vec(wb + o, x);
        par_load_vec(x, ka + c);
#pragma unroll
        for (int e = 0; e < ACT_VEC; e++) x[e] = kv[e] * fmaf(av[e] - 1.0f, x[e], 1.0f);
        act_store_vec(kout + o, x);
    });
}

/* as v7_kprep_backward_kernel */
__global__ void v7_kprep_backward_team_kernel(act_t *__restrict__ dk, act_t *__restrict__ da, float2 *__restrict__ sc,
                                              const act_t *__restrict__ dkout, const act_t *__restrict__ dwa,
                                              const act_t *__restrict__ dwb, const act_t *__restrict__ k,
                                              const act_t *__restrict__ a, const par_t *__restrict__ kkw,
                                              const par_t *__restrict__ ka, int64_t items, int H, int N, int team) {
    for_teams(items, team, [&](int64_t it, int t, bool valid) {
        const int64_t o = it * N + t * ACT_VEC, c = (int64_t)(valid ? it % H : 0) * N + t * ACT_VEC;
        float kv[ACT_VEC], av[ACT_VEC], w[ACT_VEC], bw[ACT_VEC], dkk[ACT_VEC];
        float ss = 0.0f;
        if (valid) {
            act_load_vec(kv, k + o);
            act_load_vec(av, a + o);
            act_load_vec(bw, dwb + o);
            act_load_vec(dkk, dwa + o);
            par_load_vec(w, kkw + c);
#pragma unroll
            for (int e = 0; e < ACT_VEC; e++) {
                const float u = kv[e] * w[e];
                ss = fmaf(u, u, ss);
                dkk[e] = fmaf(bw[e], av[e], -dkk[e]); /* dkk = −dwa + dwb ⊙ a */
            }
        }
        const float nrm = sqrtf(team_sum(ss, team));
        const bool floored = !(nrm > V7_FLOOR);
        const float inv = 1.0f / (floored ? V7_FLOOR : nrm);
        float dot = 0.0f;
        if (valid)
#pragma unroll
            for (int e = 0; e < ACT_VEC; e++) dot = fmaf(kv[e] * w[e] * inv, dkk[e], dot);
        dot = team_sum(dot, team);
        if (floored) dot = 0.0f;
        if (!valid) return;
        if (sc && t == 0) {
            float2 q;
            q.x = inv;
            q.y = dot;
            sc[it] = q;
        }
        float g[ACT_VEC], kav[ACT_VEC], x[ACT_VEC];
        act_load_vec(g, dkout + o);
        par_load_vec(kav, ka + c);
#pragma unroll
        for (int e = 0; e < ACT_VEC; e++) {
            const float kk = kv[e] * w[e] * inv, du = (dkk[e] - kk * dot) * inv;
            x[e] = fmaf(du, w[e], g[e] * fmaf(av[e] - 1.0f, kav[e], 1.0f));
        }
        act_store_vec(dk + o, x);
#pragma unroll
        for (int e = 0; e < ACT_VEC; e++) x[e] = fmaf(bw[e], kv[e] * w[e] * inv, g[e] * kv[e] * kav[e]);
        act_store_vec(da + o, x);
    });
}

__global__ void v7_bonus_forward_team_kernel(act_t *__restrict__ y, const act_t *__restrict__ r,
                                             const act_t *__restrict__ k, const act_t *__restrict__ v,
                                             const par_t *__restrict__ rk, int64_t items, int H, int N, int team) {
    for_teams(items, team, [&](int64_t it, int t, bool valid) {
        const int64_t o = it * N + t * ACT_VEC, c = (int64_t)(valid ? it % H : 0) * N + t * ACT_VEC;
        float rv[ACT_VEC], kv[ACT_VEC], w[ACT_VEC];
        float s = 0.0f;
        if (valid) {
            act_load_vec(rv, r + o);
            act_load_vec(kv, k + o);
            par_load_vec(w, rk + c);
#pragma unroll
            for (int e = 0; e < ACT_VEC; e++) s = fmaf(rv[e] * kv[e], w[e], s);
        }
        s = team_sum(s, team);
        if (!valid) return;
        float vv[ACT_VEC], yv[ACT_VEC];
        act_load_vec(vv, v + o);
        act_load_vec(yv, y + o);
#pragma unroll
        for (int e = 0; e < ACT_VEC; e++) yv[e] = fmaf(s, vv[e], yv[e]);
        act_store_vec(y + o, yv);
    });
}

/* as v7_bonus_backward_kernel */
__global__ void v7_bonus_backward_team_kernel(act_t *__restrict__ dr, act_t *__restrict__ dk, act_t *__restrict__ dv,
                                              float *__restrict__ ds_out, const act_t *__restrict__ dy,
                                              const act_t *__restrict__ r, const act_t *__restrict__ k,
                                              const act_t *__restrict__ v, const par_t *__restrict__ rk, int64_t items,
                                              int H, int N, int team) {
    for_teams(items, team, [&](int64_t it, int t, bool valid) {
        const int64_t o = it * N + t * ACT_VEC, c = (int64_t)(valid ? it % H : 0) * N + t * ACT_VEC;
        float rv[ACT_VEC], kv[ACT_VEC], w[ACT_VEC], gy[ACT_VEC], x[ACT_VEC];
        float s = 0.0f, ds = 0.0f;
        if (valid) {
            act_load_vec(rv, r + o);
            act_load_vec(kv, k + o);
            act_load_vec(gy, dy + o);
            act_load_vec(x, v + o);
            par_load_vec(w, rk + c);
#pragma unroll
            for (int e = 0; e < ACT_VEC; e++) {
                s = fmaf(rv[e] * kv[e], w[e], s);
                ds = fmaf(gy[e], x[e], ds);
            }
        }
        s = team_sum(s, team);
        ds = team_sum(ds, team);
        if (!valid) return;
        if (ds_out && t == 0) ds_out[it] = ds;
        if (dr) {
            act_load_vec(x, dr + o);
#pragma unroll
            for (int e = 0; e < ACT_VEC; e++) x[e] = fmaf(ds * kv[e], w[e], x[e]);
            act_store_vec(dr + o, x);
        }
        if (dk) {
            act_load_vec(x, dk + o);
#pragma unroll
            for (int e = 0; e < ACT_VEC; e++) x[e] = fmaf(ds * rv[e], w[e], x[e]);
            act_store_vec(dk + o, x);
        }
        if (dv) {
            act_load_vec(x, dv + o);
#pragma unroll
            for (int e = 0; e < ACT_VEC; e++) x[e] = fmaf(s, gy[e], x[e]);
            act_store_vec(dv + o, x);
        }
    });
}

/* part_kk[chunk][c] = Σ du·k, part_ka[chunk][c] = Σ dk_out·k·(a − 1) over the chunk's rows */
__global__ void v7_kprep_param_kernel(float *__restrict__ part_kk, float *__restrict__ part_ka,
                                      const float2 *__restrict__ sc, const act_t *__restrict__ dkout,
                                      const act_t *__restrict__ dwa, const act_t *__restrict__ dwb,
                                      const act_t *__restrict__ k, const act_t *__restrict__ a,
                                      const par_t *__restrict__ kkw, int64_t n, int H, int N, int64_t rows_per_chunk) {
    const int64_t C = (int64_t)H * N;
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int h = (int)(c / N);
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_chunk, r1 = r0 + rows_per_chunk < n ? r0 + rows_per_chunk : n;
    const float w = kkw[c];
    float skk = 0.0f, ska = 0.0f;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t e = r * C + c;
        const float kv = tof(k[e]), av = tof(a[e]);
        if (part_kk) {
            const float2 q = sc[r * H + h];
            const float kk = kv * w * q.x;
            const float du = (fmaf(tof(dwb[e]), av, -tof(dwa[e])) - kk * q.y) * q.x;
            skk = fmaf(du, kv, skk);
        }
        if (part_ka) ska = fmaf(tof(dkout[e]) * kv, av - 1.0f, ska);
    }
    if (part_kk) part_kk[(int64_t)blockIdx.y * C + c] = skk;
    if (part_ka) part_ka[(int64_t)blockIdx.y * C + c] = ska;
}

__global__ void v7_bonus_forward_kernel(act_t *__restrict__ y, const act_t *__restrict__ r,
                                        const act_t *__restrict__ k, const act_t *__restrict__ v,
                                        const par_t *__restrict__ rk, int64_t items, int H, int N) {
    for_items(items, [&](int64_t it, bool valid, int lane) {
        const int h = (int)(it % H);
        const int64_t o = it * N;
        float s = 0.0f;
        if (valid)
            for (int i = lane; i < N; i += RP_WARP_SIZE)
                s = fmaf(tof(r[o + i]) * tof(k[o + i]), rk[(int64_t)h * N + i], s);
        s = warp_sum(s);
        if (!valid) return;
        for (int j = lane; j < N; j += RP_WARP_SIZE) y[o + j] = fromf<act_t>(fmaf(s, tof(v[o + j]), tof(y[o + j])));
    });
}

/* ds[it] = Σ_j dy·v (for dr_k) */
__global__ void v7_bonus_backward_kernel(act_t *__restrict__ dr, act_t *__restrict__ dk, act_t *__restrict__ dv,
                                         float *__restrict__ ds_out, const act_t *__restrict__ dy,
                                         const act_t *__restrict__ r, const act_t *__restrict__ k,
                                         const act_t *__restrict__ v, const par_t *__restrict__ rk, int64_t items,
                                         int H, int N) {
    for_items(items, [&](int64_t it, bool valid, int lane) {
        const int h = (int)(it % H);
        const int64_t o = it * N;
        float s = 0.0f, ds = 0.0f;
        if (valid)
            for (int i = lane; i < N; i += RP_WARP_SIZE) {
                s = fmaf(tof(r[o + i]) * tof(k[o + i]), rk[(int64_t)h * N + i], s);
                ds = fmaf(tof(dy[o + i]), tof(v[o + i]), ds);
            }
        s = warp_sum(s);
        ds = warp_sum(ds);
        if (!valid) return;
        if (ds_out && lane == 0) ds_out[it] = ds;
        for (int i = lane; i < N; i += RP_WARP_SIZE) {
            const float rkv = rk[(int64_t)h * N + i];
            if (dr) dr[o + i] = fromf<act_t>(fmaf(ds * tof(k[o + i]), rkv, tof(dr[o + i])));
            if (dk) dk[o + i] = fromf<act_t>(fmaf(ds * tof(r[o + i]), rkv, tof(dk[o + i])));
            if (dv) dv[o + i] = fromf<act_t>(fmaf(s, tof(dy[o + i]), tof(dv[o + i])));
        }
    });
}

/* part[chunk][c] = Σ ds·r·k over the chunk's rows */
__global__ void v7_bonus_param_kernel(float *__restrict__ part, const float *__restrict__ ds,
                                      const act_t *__restrict__ r, const act_t *__restrict__ k, int64_t n, int H, int N,
                                      int64_t rows_per_chunk) {
    const int64_t C = (int64_t)H * N;
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const int h = (int)(c / N);
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_chunk, r1 = r0 + rows_per_chunk < n ? r0 + rows_per_chunk : n;
    float acc = 0.0f;
    for (int64_t q = r0; q < r1; q++) acc = fmaf(ds[q * H + h] * tof(r[q * C + c]), tof(k[q * C + c]), acc);
    part[(int64_t)blockIdx.y * C + c] = acc;
}

} // namespace

/* ---- launchers ---- */

static int v7_check(rp_backend *be, const char *op, int64_t n, int H, int N) {
    if (n < 0 || H < 0 || N < 0) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "%s: negative size", op);
    return 0;
}

/* blocks for `items` warps of work: 4 items per 256-thread block at the largest warp (64) */
static unsigned v7_item_blocks(int64_t items) { return cu_blocks(items, V7_THREADS / 64); }

/* The team kernels' team size (N/ACT_VEC), or 0 when they do not apply (see the header). The
 * item offsets are multiples of N, so aligned base pointers give aligned vectors throughout. */
static int v7_team(int N, const void *p0, const void *p1, const void *p2, const void *p3, const void *p4 = NULL,
                   const void *p5 = NULL, const void *p6 = NULL) {
    const int team = N / ACT_VEC;
    if (N % ACT_VEC || team > TEAM_SHFL_MAX || (team & (team - 1))) return 0;
    return act_vec_ok(N, p0, p1, p2, p3, p4, p5, p6) ? team : 0;
}
static unsigned v7_team_blocks(int64_t items, int team) { return cu_blocks(items * team, V7_THREADS); }

int cu_v7_kprep_fwd(rp_backend *be, void *k_out, void *wa, void *wb, const void *k, const void *a, const void *k_k,
                    const void *k_a, int64_t n, int H, int N) {
    RP_TRY(v7_check(be, "v7_kprep_fwd", n, H, N));
    const int64_t items = n * H;
    if (items == 0 || N == 0) return 0;
    CU_ENTER(be);
    const int team = v7_team(N, k_out, wa, wb, k, a);
    if (team)
        v7_kprep_forward_team_kernel<<<v7_team_blocks(items, team), V7_THREADS, 0, cu_stream(be)>>>((act_t *)k_out, (act_t *)wa, (act_t *)wb, (const act_t *)k, (const act_t *)a, (const par_t *)k_k, (const par_t *)k_a, items, H, N, team);
    else
        v7_kprep_forward_kernel<<<v7_item_blocks(items), V7_THREADS, 0, cu_stream(be)>>>((act_t *)k_out, (act_t *)wa, (act_t *)wb, (const act_t *)k, (const act_t *)a, (const par_t *)k_k, (const par_t *)k_a, items, H, N);
    CU_LAUNCHED(be);
    return 0;
}

int cu_v7_kprep_bwd(rp_backend *be, void *dk, void *da, void *dk_k, void *dk_a, const void *dk_out, const void *dwa,
                    const void *dwb, const void *k, const void *a, const void *k_k, const void *k_a, int64_t n, int H,
                    int N) {
    RP_TRY(v7_check(be, "v7_kprep_bwd", n, H, N));
    const int64_t items = n * H, C = (int64_t)H * N;
    if (items == 0 || N == 0) return 0;
    CU_ENTER(be);
    cudaStream_t s = cu_stream(be);
    int64_t rpc = 1;
    const int chunks = (dk_k || dk_a) ? cu_colsum_chunks(n, C, &rpc) : 0;
    const size_t sc_bytes = dk_k ? cu_round(sizeof(float2) * (size_t)items) : 0;
    const size_t part_bytes = cu_round(sizeof(float) * (size_t)chunks * (size_t)C);
    char *cur = NULL;
    if (dk_k || dk_a) {
        void *scr;
        RP_TRY(cu_scratch(be, sc_bytes + 2 * part_bytes + 256, &scr));
        cur = (char *)scr;
    }
    float2 *sc = dk_k ? (float2 *)cu_carve(&cur, sc_bytes) : NULL;
    const int team = v7_team(N, dk, da, dk_out, dwa, dwb, k, a);
    if (team)
        v7_kprep_backward_team_kernel<<<v7_team_blocks(items, team), V7_THREADS, 0, s>>>((act_t *)dk, (act_t *)da, sc, (const act_t *)dk_out, (const act_t *)dwa, (const act_t *)dwb, (const act_t *)k, (const act_t *)a, (const par_t *)k_k, (const par_t *)k_a, items, H, N, team);
    else
        v7_kprep_backward_kernel<<<v7_item_blocks(items), V7_THREADS, 0, s>>>((act_t *)dk, (act_t *)da, sc, (const act_t *)dk_out, (const act_t *)dwa, (const act_t *)dwb, (const act_t *)k, (const act_t *)a, (const par_t *)k_k, (const par_t *)k_a, items, H, N);
    CU_LAUNCHED(be);
    if (!dk_k && !dk_a) return 0;
    float *pkk = dk_k ? (float *)cu_carve(&cur, part_bytes) : NULL;
    float *pka = dk_a ? (float *)cu_carve(&cur, part_bytes) : NULL;
    dim3 grid((unsigned)((C + V7_THREADS - 1) / V7_THREADS), (unsigned)chunks);
    v7_kprep_param_kernel<<<grid, V7_THREADS, 0, s>>>(pkk, pka, sc, (const act_t *)dk_out, (const act_t *)dwa,
                                                      (const act_t *)dwb, (const act_t *)k, (const act_t *)a,
                                                      (const par_t *)k_k, n, H, N, rpc);
    CU_LAUNCHED(be);
    if (dk_k) RP_TRY(cu_colsum_finish(be, (float *)dk_k, pkk, chunks, C));
    if (dk_a) RP_TRY(cu_colsum_finish(be, (float *)dk_a, pka, chunks, C));
    return 0;
}

int cu_v7_bonus_fwd(rp_backend *be, void *y, const void *r, const void *k, const void *v, const void *r_k, int64_t n,
                    int H, int N) {
    RP_TRY(v7_check(be, "v7_bonus_fwd", n, H, N));
    const int64_t items = n * H;
    if (items == 0 || N == 0) return 0;
    CU_ENTER(be);
    const int team = v7_team(N, y, r, k, v);
    if (team)
        v7_bonus_forward_team_kernel<<<v7_team_blocks(items, team), V7_THREADS, 0, cu_stream(be)>>>((act_t *)y, (const act_t *)r, (const act_t *)k, (const act_t *)v, (const par_t *)r_k, items, H, N, team);
    else
        v7_bonus_forward_kernel<<<v7_item_blocks(items), V7_THREADS, 0, cu_stream(be)>>>((act_t *)y, (const act_t *)r, (const act_t *)k, (const act_t *)v, (const par_t *)r_k, items, H, N);
    CU_LAUNCHED(be);
    return 0;
}

int cu_v7_bonus_bwd(rp_backend *be, void *dr, void *dk, void *dv, void *dr_k, const void *dy, const void *r,
                    const void *k, const void *v, const void *r_k, int64_t n, int H, int N) {
    RP_TRY(v7_check(be, "v7_bonus_bwd", n, H, N));
    const int64_t items = n * H, C = (int64_t)H * N;
    if (items == 0 || N == 0) return 0;
    CU_ENTER(be);
    cudaStream_t s = cu_stream(be);
    int64_t rpc = 1;
    const int chunks = dr_k ? cu_colsum_chunks(n, C, &rpc) : 0;
    const size_t ds_bytes = cu_round(sizeof(float) * (size_t)items);
    const size_t part_bytes = cu_round(sizeof(float) * (size_t)chunks * (size_t)C);
    float *ds = NULL, *part = NULL;
    if (dr_k) {
        void *scr;
        RP_TRY(cu_scratch(be, ds_bytes + part_bytes + 256, &scr));
        char *cur = (char *)scr;
        ds = (float *)cu_carve(&cur, ds_bytes);
        part = (float *)cu_carve(&cur, part_bytes);
    }
    if (dr || dk || dv || dr_k) {
        const int team = v7_team(N, dr, dk, dv, dy, r, k, v);
        if (team)
            v7_bonus_backward_team_kernel<<<v7_team_blocks(items, team), V7_THREADS, 0, s>>>((act_t *)dr, (act_t *)dk, (act_t *)dv, ds, (const act_t *)dy, (const act_t *)r, (const act_t *)k, (const act_t *)v, (const par_t *)r_k, items, H, N, team);
        else
            v7_bonus_backward_kernel<<<v7_item_blocks(items), V7_THREADS, 0, s>>>((act_t *)dr, (act_t *)dk, (act_t *)dv, ds, (const act_t *)dy, (const act_t *)r, (const act_t *)k, (const act_t *)v, (const par_t *)r_k, items, H, N);
        CU_LAUNCHED(be);
    }
    if (!dr_k) return 0;
    dim3 grid((unsigned)((C + V7_THREADS - 1) / V7_THREADS), (unsigned)chunks);
    v7_bonus_param_kernel<<<grid, V7_THREADS, 0, s>>>(part, ds, (const act_t *)r, (const act_t *)k, n, H, N, rpc);
    CU_LAUNCHED(be);
    return cu_colsum_finish(be, (float *)dr_k, part, chunks, C);
}
