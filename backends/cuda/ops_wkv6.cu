/* ops_wkv6.cu — the RWKV-6 recurrence, forward and backward, with fp32 state.
 *
 * Per (b,h), with state S[j=value][i=key] (S_0 = s0) and d = exp(−exp(w)):
 *   y_t[j] = Σ_i r_t[i]·S_t[j][i] + v_t[j]·(Σ_i r_t[i]·u[i]·k_t[i])      (S_t: before step t)
 *   S_{t+1}[j][i] = d_t[i]·S_t[j][i] + k_t[i]·v_t[j]
 * Every element S[j][i] evolves on its own; rows j meet only in the sum over i (y), columns i
 * only in sums over j (the backward below). So the kernels are recurrent — exact step by step,
 * any T, no exp(±cumsum log d) anywhere, so any w is safe — and the parallelism comes from
 * tiling the N×N state over threads and blocks:
 *
 *   a thread holds a TJ×TI tile of S in registers; the G lanes that share a row (or a column)
 *   are adjacent lanes of one warp and finish the sum over their tiles with shuffles (a
 *   "transposing" reduction: TJ values over G lanes cost TJ − TJ/G shuffles for TJ ≥ G, each
 *   lane ends with whole sums); a block owns JB rows (or IB columns) of one head, so a head can be
 *   split over N/JB blocks when B·H alone cannot fill the GPU (B = 1).
 *   Time runs in chunks of L steps: the block stages r, k, w→d, v of a chunk into shared memory
 *   (decay and the per-step scalar Σ r·u·k computed once there) while the next chunk's raw
 *   bf16 is already loading into registers; the L steps then read only shared memory, so there
 *   are two barriers per chunk and none per step.
 *
 * Forward — the "row sweep" (reduce over i), one kernel; blocks = B·H·(N/JB).
 *
 * Backward (dS_t = ∂L/∂S_t; dS_T = gs_out; gy·v and Σ r·u·k are per-step scalars):
 *   dS_t[j][i] = d_t[i]·dS_{t+1}[j][i] + gy_t[j]·r_t[i]
 *   gr_t[i] = Σ_j gy_t[j]·S_t[j][i] + u[i]·k_t[i]·(gy_t·v_t)
 *   gk_t[i] = Σ_j dS_{t+1}[j][i]·v_t[j] + u[i]·r_t[i]·(gy_t·v_t)
 *   gv_t[j] = Σ_i dS_{t+1}[j][i]·k_t[i] + gy_t[j]·(Σ_i r_t[i]·u[i]·k_t[i])
 *   gu[i]  += Σ_t r_t[i]·k_t[i]·(gy_t·v_t);   gs0 = dS_0
 *   gw_t[i] = −exp(w_t[i])·G_t[i],  G_t[i] = ∂L/∂log d_t[i] = Σ_j dS_{t+1}[j][i]·d_t[i]·S_t[j][i].
 *   G comes without storing S: E_t = Σ_j dS_t[j][i]·S_t[j][i] obeys E_t = G_t + a_t[i] with
 *   a_t[i] = r_t[i]·Σ_j gy_t[j]·S_t[j][i], and E_{t+1} = G_t + q_t[i] with
 *   q_t[i] = k_t[i]·gk'_t[i], gk'_t[i] = Σ_j dS_{t+1}[j][i]·v_t[j]; walking back from
 *   E_T = Σ_j gs_out[j][i]·S_T[j][i]: G_t = E_{t+1} − q_t[i], E_t = G_t + a_t[i].
 *   a needs S (forward in time), q needs dS (backward in time), and nothing else couples them.
 * One launch of column blocks (IB key columns, all N rows; reduce over j) and row blocks (JB
 * value rows; reduce over i: the forward's row sweep run backwards in time on dS with
 * (r,k,v) → (k,r,gy) gives gv), in one of two schedules (bwd_plan):
 *   fused: each column block runs a forward sweep carrying S (gr, a_t to fp32 scratch
 *     [B,T,H,N], gu's partials, E_T) and then a reverse sweep carrying dS (gk, gs0, and gw
 *     through the E walk inline) — a critical path of two sweeps;
 *   split: those two sweeps are different blocks (CF, CR) running in parallel, CR writing q_t
 *     to a second fp32 scratch, and wkv6_gw_kernel walks E per (b,h,i) afterwards — one sweep
 *     plus the walk, taken when the whole launch is resident at once.
 * The caller may lend the a/q scratch (its dead buffers). gu, and gs0 of a shared s0, are
 * summed over B by a second, fixed-order kernel (deterministic).
 *
 * Tiles come in three tiers (wkv_tier below): wide (1–2 blocks per head, 64-element tiles),
 * mid (2–4 blocks, 32) and narrow (4–8 blocks, 16–32); a launch takes the biggest tiles that
 * still give it 3 blocks per SM, else the narrow ones (B = 1). RWKVPEFT_WKV6_TILES=wide|mid|
 * narrow forces a tier (benchmarking). Threads per block are 64 or 128 (warp-size
 * independent: every shuffle stays within a group of ≤ 8 adjacent lanes). Design notes and
 * measurements: docs/backends.md, "WKV6 kernels". */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "wkv_tiles.cuh"

namespace {

/* ---- tile configurations ------------------------------------------------------------------ */

/* Row sweep (forward; backward gv): JB value rows of a head, each thread a TJ×TI tile; the
 * G = N/TI lanes of a row group reduce over i. */
template <int N_, int TJ_, int TI_, int JB_, int L_> struct row_cfg {
    static constexpr int N = N_, TJ = TJ_, TI = TI_, JB = JB_, L = L_;
    static constexpr int G = N / TI, P = JB / TJ, NT = G * P, TPS = NT / L;
    static constexpr int SX = N / TPS, SY = JB / TPS; /* staged per thread: along i, along j */
    static constexpr int SMEM = L * (3 * N + JB) + L;  /* floats */
    static_assert(pow2(TJ) && pow2(TI) && pow2(G) && pow2(TPS) && G <= 8 && TPS <= 8, "row_cfg");
    static_assert(N % JB == 0 && NT % 64 == 0 && NT % L == 0 && N % TPS == 0 && JB % TPS == 0, "row_cfg");
};

/* Column blocks of the backward: IB key columns × all N rows, each thread a TJ×TI tile; the
 * G = N/TJ lanes of a column group reduce over j. */
template <int N_, int TJ_, int TI_, int IB_, int L_> struct col_cfg {
    static constexpr int N = N_, TJ = TJ_, TI = TI_, IB = IB_, L = L_;
    static constexpr int G = N / TJ, P = IB / TI, NT = G * P, TPS = NT / L;
    static constexpr int SJ = N / TPS, SI = IB / TPS;
    static constexpr int SMEM_SPLIT = L * (2 * N + 3 * IB) + L, SMEM = SMEM_SPLIT + 2 * L * IB; /* floats */
    static_assert(pow2(TJ) && pow2(TI) && pow2(G) && pow2(TPS) && G <= 8 && TPS <= 8, "col_cfg");
    static_assert(N % IB == 0 && NT % 64 == 0 && NT % L == 0 && N % TPS == 0 && IB % TPS == 0, "col_cfg");
};

/* Tile tiers per head size, from big tiles (few blocks per head) to small ones (many):
 *   0 wide, 1 mid, 2 narrow.  TIER(N, t, row: TJ TI JB, col: TJ TI IB); L = 16.
 * The backward's row blocks use the forward's configuration; both kinds of block of one
 * launch have the same thread count. */
template <int N, int TIER> struct wkv_tier;
#define RP_WKV_TIER(N_, T_, RTJ, RTI, JB, CTJ, CTI, IB)   \
    template <> struct wkv_tier<N_, T_> {                  \
        using row = row_cfg<N_, RTJ, RTI, JB, 16>;         \
        using col = col_cfg<N_, CTJ, CTI, IB, 16>;         \
    };
RP_WKV_TIER(32, 0, 2, 8, 32, 8, 2, 32)
RP_WKV_TIER(32, 1, 2, 8, 32, 8, 2, 32)
RP_WKV_TIER(32, 2, 1, 4, 8, 4, 1, 8)
RP_WKV_TIER(64, 0, 4, 16, 64, 16, 4, 64)
RP_WKV_TIER(64, 1, 4, 8, 32, 8, 4, 32)
RP_WKV_TIER(64, 2, 2, 8, 16, 8, 2, 16)
RP_WKV_TIER(128, 0, 4, 16, 64, 16, 4, 64)
RP_WKV_TIER(128, 1, 2, 16, 32, 16, 2, 32)
RP_WKV_TIER(128, 2, 2, 16, 16, 16, 2, 16)
#undef RP_WKV_TIER

struct wkv_args {
    int B, T, H;
    int vec; /* r, k, v, w, gy 16-byte aligned: staging loads 16-byte pieces */
    const act_t *r, *k, *v, *w, *gy;
    const par_t *u, *s0, *gs_out;
    int s0_shared;
    act_t *y, *gr, *gk, *gv, *gw;
    par_t *s_out;
    float *a_scr, *q_scr, *e_scr, *gu_part, *gs0_dst;
    int gs0_acc;
};

/* ---- the row sweep: forward, and the backward's gv ------------------------------------------ *
 * Over the JB rows j0.. of head (b,h), with X, Y along i and Z along j:
 *   out_t[j] = Σ_i X_t[i]·M[j][i] + Z_t[j]·Σ_i X_t[i]·u[i]·Y_t[i];   M[j][i] ← d_t[i]·M[j][i] + Y_t[i]·Z_t[j]
 * forward: (X,Y,Z) = (r,k,v), M = S from s0, t = 0..T−1, final M to m_out;
 * backward: (X,Y,Z) = (k,r,gy), M = dS from gs_out, t = T−1..0 (REV). */
template <class K, bool REV>
RP_DEV void row_sweep(float *sm, int b, int h, int js, int T, int H, bool vec, const act_t *X, const act_t *Y,
                      const act_t *w, const act_t *Z, const par_t *u, const par_t *m0, act_t *out, par_t *m_out) {
    constexpr int N = K::N, TJ = K::TJ, TI = K::TI, JB = K::JB, L = K::L, G = K::G, P = K::P, TPS = K::TPS;
    constexpr int SX = K::SX, SY = K::SY, KO = cmax(TJ / G, 1);
    float *sX = sm, *sY = sX + L * N, *sD = sY + L * N, *sZ = sD + L * N, *sS = sZ + L * JB;
    const int tid = threadIdx.x, g = tid % G, p = tid / G, st = tid / TPS, sg = tid % TPS;
    const int64_t C = (int64_t)H * N;
    const int j0 = js * JB;

    float M[TJ][TI];
#pragma unroll
    for (int a = 0; a < TJ; a++)
#pragma unroll
        for (int c = 0; c < TI; c++)
            M[a][c] = m0 ? m0[(int64_t)(j0 + own_pos<TJ, P>(a, p)) * N + own_pos<TI, G>(c, g)] : 0.0f;
    float uS[SX];
#pragma unroll
    for (int e = 0; e < SX; e++) uS[e] = u[(int64_t)h * N + stage_pos<act_t, SX, TPS>(e, sg)];

    raw_seg<act_t, SX> pX, pY, pW;
    raw_seg<act_t, SY> pZ;
    bool pv = false;
    auto fetch = [&](int ch) { /* raw inputs of step ch·L + st into registers */
        const int t = ch * L + st;
        pv = t < T;
        if (pv) {
            const int64_t o = ((int64_t)b * T + t) * C + (int64_t)h * N;
            seg_load<TPS>(pX, X + o, sg, vec);
            seg_load<TPS>(pY, Y + o, sg, vec);
            seg_load<TPS>(pW, w + o, sg, vec);
            seg_load<TPS>(pZ, Z + o + j0, sg, vec);
        }
    };
    auto stage = [&]() { /* steps past T: X = Y = Z = 0, d = 1 (the state is left alone) */
        float x[SX], y[SX], d[SX], z[SY], part = 0.0f;
#pragma unroll
        for (int e = 0; e < SX; e++) {
            x[e] = pv ? tof(pX.e[e]) : 0.0f;
            y[e] = pv ? tof(pY.e[e]) : 0.0f;
            d[e] = pv ? decay_of(tof(pW.e[e])) : 1.0f;
            part = fmaf(x[e] * uS[e], y[e], part);
        }
#pragma unroll
        for (int e = 0; e < SY; e++) z[e] = pv ? tof(pZ.e[e]) : 0.0f;
        sts_seg<act_t, SX, TPS>(sX + st * N, x, sg);
        sts_seg<act_t, SX, TPS>(sY + st * N, y, sg);
        sts_seg<act_t, SX, TPS>(sD + st * N, d, sg);
        sts_seg<act_t, SY, TPS>(sZ + st * JB, z, sg);
        part = stage_sum<TPS>(part);
        if (sg == 0) sS[st] = part;
    };

    const int nch = (T + L - 1) / L;
    if (nch > 0) fetch(REV ? nch - 1 : 0);
    for (int n = 0; n < nch; n++) {
        const int ch = REV ? nch - 1 - n : n;
        __syncthreads(); /* the previous chunk is done with shared memory */
        stage();
        if (n + 1 < nch) fetch(REV ? ch - 1 : ch + 1);
        __syncthreads();
#pragma unroll 2
        for (int ss = 0; ss < L; ss++) {
            const int s = REV ? L - 1 - ss : ss, t = ch * L + s;
            float xi[TI], yi[TI], di[TI], zj[TJ], acc[TJ];
            lds_own<TI, G>(xi, sX + s * N, g);
            lds_own<TI, G>(yi, sY + s * N, g);
            lds_own<TI, G>(di, sD + s * N, g);
            lds_own<TJ, P>(zj, sZ + s * JB, p);
#pragma unroll
            for (int a = 0; a < TJ; a++) acc[a] = 0.0f;
#pragma unroll
            for (int c = 0; c < TI; c++)
#pragma unroll
                for (int a = 0; a < TJ; a++) {
                    acc[a] = fmaf(xi[c], M[a][c], acc[a]);
                    M[a][c] = fmaf(di[c], M[a][c], yi[c] * zj[a]);
                }
            group_reduce<TJ, G>(acc, g);
            if (t < T && reduce_owner<TJ, G>(g)) {
                const int64_t o = ((int64_t)b * T + t) * C + (int64_t)h * N + j0;
                const int base = reduce_base<TJ, G>(g);
#pragma unroll
                for (int q = 0; q < KO; q++) {
                    const int j = own_pos<TJ, P>(base + q, p);
                    out[o + j] = fromf<act_t>(fmaf(sS[s], sZ[s * JB + j], acc[q]));
                }
            }
        }
    }
    if (m_out) { /* may be m0 itself (state advanced in place): this thread read exactly these */
#pragma unroll
        for (int a = 0; a < TJ; a++)
#pragma unroll
            for (int c = 0; c < TI; c++)
                m_out[(int64_t)(j0 + own_pos<TJ, P>(a, p)) * N + own_pos<TI, G>(c, g)] = M[a][c];
    }
}

/* ---- the backward's column blocks: gr, a, gu (forward sweep); gk, gw, gs0 (reverse) ------- */
/* One step of the column role's state recurrence, the same in both of its sweeps: reads
 * acc[c] = Σ_a x[a]·M[a][c] from the state before the step, then advances it in place,
 * M[a][c] = d[c]·M[a][c] + y[c]·z[a]. The forward sweep passes (gy, d, k, v) on S, the
 * reverse sweep (v, d, r, gy) on dS. */
template <int TJ, int TI>
RP_DEV void read_then_advance(float (&M)[TJ][TI], const float (&x)[TJ], const float (&d)[TI], const float (&y)[TI],
                              const float (&z)[TJ], float (&acc)[TI]) {
#pragma unroll
    for (int c = 0; c < TI; c++) {
        acc[c] = 0.0f;
#pragma unroll
        for (int a = 0; a < TJ; a++) {
            acc[c] = fmaf(x[a], M[a][c], acc[c]);
            M[a][c] = fmaf(d[c], M[a][c], y[c] * z[a]);
        }
    }
}

/* The column blocks' roles. Two schedules (bwd_plan chooses per launch):
 *   fused: one block per column slice runs both sweeps — CF's, then CR's with the E walk
 *     inline (G_t = E_{t+1} − q_t, gw_t = −exp(w_t)·G_t, E_t = G_t + a_t, a_t read back from
 *     the scratch this block wrote);
 *   split: CF and CR are different blocks running in parallel, each one sweep, and
 *     wkv6_gw_kernel walks E afterwards from both scratches. The critical path is one sweep
 *     instead of two, at the cost of q's scratch and the walk's memory traffic, so it wins
 *     only when the whole launch is resident at once (B·H small).
 *   CF (forward in time, carrying S from s0): gr_t = Σ_j gy·S + u·k·(gy·v), a_t = r·Σ_j gy·S
 *      (fp32 scratch), gu's partial sum; E_T = Σ_j gs_out·S_T (split: to fp32 scratch);
 *   CR (backward in time, carrying dS from gs_out): gk_t = gk'_t + u·r·(gy·v) with
 *      gk'_t = Σ_j dS_{t+1}·v, q_t = k_t·gk'_t (split: to fp32 scratch; fused: the E walk),
 *      and gs0 = dS_0. */
enum { ROLE_FUSED = 0, ROLE_CF = 1, ROLE_CR = 2 };
template <class K, int ROLE> RP_DEV void col_role(float *sm, const wkv_args &A, int b, int h, int is) {
    constexpr int N = K::N, TJ = K::TJ, TI = K::TI, IB = K::IB, L = K::L, G = K::G, P = K::P, TPS = K::TPS;
    constexpr int SJ = K::SJ, SI = K::SI, KO = cmax(TI / G, 1);
    constexpr bool FWD = ROLE != ROLE_CR, REV = ROLE != ROLE_CF, FUSED = ROLE == ROLE_FUSED;
    /* the fused role's exp(w) and a last: the split roles' shared memory ends before them */
    float *sV = sm, *sG = sV + L * N, *sR = sG + L * N, *sK = sR + L * IB, *sD = sK + L * IB, *sS = sD + L * IB,
          *sE = sS + L, *sA = sE + L * IB;
    const int tid = threadIdx.x, g = tid % G, p = tid / G, st = tid / TPS, sg = tid % TPS;
    const int T = A.T, H = A.H, bh = b * H + h;
    const int64_t C = (int64_t)H * N, NN = (int64_t)N * N;
    const int i0 = is * IB;
    const bool own = reduce_owner<TI, G>(g);
    const int obase = reduce_base<TI, G>(g);

    float uO[KO], guO[KO], EO[KO];
#pragma unroll
    for (int q = 0; q < KO; q++) {
        uO[q] = A.u[(int64_t)h * N + i0 + own_pos<TI, P>(obase + q, p)];
        guO[q] = 0.0f;
        EO[q] = 0.0f;
    }
    float M[TJ][TI]; /* S in the forward sweep, dS in the reverse one */
    {
        const par_t *m0 = ROLE == ROLE_CR ? (A.gs_out ? A.gs_out + (int64_t)bh * NN : NULL)
                                          : (A.s0 ? A.s0 + (A.s0_shared ? (int64_t)h : (int64_t)bh) * NN : NULL);
#pragma unroll
        for (int a = 0; a < TJ; a++)
#pragma unroll
            for (int c = 0; c < TI; c++)
                M[a][c] = m0 ? m0[(int64_t)own_pos<TJ, G>(a, g) * N + i0 + own_pos<TI, P>(c, p)] : 0.0f;
    }

    raw_seg<act_t, SJ> pV, pG;
    raw_seg<act_t, SI> pR, pK, pW;
    raw_seg<float, SI> pA;
    bool pv = false;
    auto fetch = [&](int ch, bool with_a) {
        const int t = ch * L + st;
        pv = t < T;
        if (pv) {
            const int64_t o = ((int64_t)b * T + t) * C + (int64_t)h * N;
            seg_load<TPS>(pV, A.v + o, sg, A.vec);
            seg_load<TPS>(pG, A.gy + o, sg, A.vec);
            seg_load<TPS>(pR, A.r + o + i0, sg, A.vec);
            seg_load<TPS>(pK, A.k + o + i0, sg, A.vec);
            seg_load<TPS>(pW, A.w + o + i0, sg, A.vec);
            if (with_a) seg_load<TPS>(pA, A.a_scr + o + i0, sg, true);
        }
    };
    auto stage = [&](bool with_a) { /* steps past T: r = k = v = gy = a = 0, d = 1 */
        float v[SJ], gy[SJ], r[SI], k[SI], d[SI], ew[SI], part = 0.0f;
#pragma unroll
        for (int e = 0; e < SJ; e++) {
            v[e] = pv ? tof(pV.e[e]) : 0.0f;
            gy[e] = pv ? tof(pG.e[e]) : 0.0f;
            part = fmaf(v[e], gy[e], part);
        }
#pragma unroll
        for (int e = 0; e < SI; e++) {
            r[e] = pv ? tof(pR.e[e]) : 0.0f;
            k[e] = pv ? tof(pK.e[e]) : 0.0f;
            ew[e] = pv ? expf(tof(pW.e[e])) : 0.0f;
            d[e] = expf(-ew[e]);
        }
        sts_seg<act_t, SJ, TPS>(sV + st * N, v, sg);
        sts_seg<act_t, SJ, TPS>(sG + st * N, gy, sg);
        sts_seg<act_t, SI, TPS>(sR + st * IB, r, sg);
        sts_seg<act_t, SI, TPS>(sK + st * IB, k, sg);
        sts_seg<act_t, SI, TPS>(sD + st * IB, d, sg);
        if (FUSED) sts_seg<act_t, SI, TPS>(sE + st * IB, ew, sg);
        if (with_a) {
            float av[SI];
#pragma unroll
            for (int e = 0; e < SI; e++) av[e] = pv ? pA.e[e] : 0.0f;
            sts_seg<float, SI, TPS>(sA + st * IB, av, sg);
        }
        part = stage_sum<TPS>(part);
        if (sg == 0) sS[st] = part;
    };
    const int nch = (T + L - 1) / L;

    if (FWD) { /* gr_t[i] = Σ_j gy[j]·S[j][i] + u·k·(gy·v);  a_t[i] = r·Σ_j gy[j]·S[j][i] */
        if (nch > 0) fetch(0, false);
        for (int ch = 0; ch < nch; ch++) {
            __syncthreads();
            stage(false);
            if (ch + 1 < nch) fetch(ch + 1, false);
            __syncthreads();
#pragma unroll 2
            for (int s = 0; s < L; s++) {
                const int t = ch * L + s;
                float vj[TJ], gj[TJ], ki[TI], di[TI], acc[TI];
                lds_own<TJ, G>(vj, sV + s * N, g);
                lds_own<TJ, G>(gj, sG + s * N, g);
                lds_own<TI, P>(ki, sK + s * IB, p);
                lds_own<TI, P>(di, sD + s * IB, p);
                read_then_advance(M, gj, di, ki, vj, acc);
                group_reduce<TI, G>(acc, g);
                const float gyv = sS[s];
                const int64_t o = ((int64_t)b * T + t) * C + (int64_t)h * N + i0;
#pragma unroll
                for (int q = 0; q < KO; q++) {
                    const int i = own_pos<TI, P>(obase + q, p);
                    const float ri = sR[s * IB + i], kv = sK[s * IB + i];
                    guO[q] = fmaf(ri * kv, gyv, guO[q]);
                    if (own && t < T) {
                        A.gr[o + i] = fromf<act_t>(fmaf(uO[q] * kv, gyv, acc[q]));
                        A.a_scr[o + i] = ri * acc[q];
                    }
                }
            }
        }
        /* E_T = Σ_j gs_out[j][i]·S_T[j][i] */
        const par_t *gso = A.gs_out ? A.gs_out + (int64_t)bh * NN : NULL;
        if (gso) {
            float e[TI];
#pragma unroll
            for (int c = 0; c < TI; c++) {
                e[c] = 0.0f;
#pragma unroll
                for (int a = 0; a < TJ; a++)
                    e[c] = fmaf(gso[(int64_t)own_pos<TJ, G>(a, g) * N + i0 + own_pos<TI, P>(c, p)], M[a][c], e[c]);
            }
            group_reduce<TI, G>(e, g);
#pragma unroll
            for (int q = 0; q < KO; q++) EO[q] = e[q];
            if (!FUSED && own) {
#pragma unroll
                for (int q = 0; q < KO; q++) A.e_scr[(int64_t)bh * N + i0 + own_pos<TI, P>(obase + q, p)] = e[q];
            }
        }
        if (FUSED) { /* M becomes dS_T; a_t written above is read back by other threads below */
#pragma unroll
            for (int a = 0; a < TJ; a++)
#pragma unroll
                for (int c = 0; c < TI; c++)
                    M[a][c] = gso ? gso[(int64_t)own_pos<TJ, G>(a, g) * N + i0 + own_pos<TI, P>(c, p)] : 0.0f;
            __syncthreads();
        }
        if (A.gu_part && own) {
#pragma unroll
            for (int q = 0; q < KO; q++) A.gu_part[(int64_t)bh * N + i0 + own_pos<TI, P>(obase + q, p)] = guO[q];
        }
    }

    if (!REV) return;
    /* gk_t[i] = Σ_j dS[j][i]·v[j] + u·r·(gy·v); fused: G = E − k·gk', gw = −exp(w)·G, E = G + a */
    if (nch > 0) fetch(nch - 1, FUSED);
    for (int ch = nch - 1; ch >= 0; ch--) {
        __syncthreads();
        stage(FUSED);
        if (ch > 0) fetch(ch - 1, FUSED);
        __syncthreads();
#pragma unroll 2
        for (int ss = 0; ss < L; ss++) {
            const int s = L - 1 - ss, t = ch * L + s;
            float vj[TJ], gj[TJ], ri[TI], di[TI], acc[TI];
            lds_own<TJ, G>(vj, sV + s * N, g);
            lds_own<TJ, G>(gj, sG + s * N, g);
            lds_own<TI, P>(ri, sR + s * IB, p);
            lds_own<TI, P>(di, sD + s * IB, p);
            read_then_advance(M, vj, di, ri, gj, acc);
            group_reduce<TI, G>(acc, g);
            const float gyv = sS[s];
            const int64_t o = ((int64_t)b * T + t) * C + (int64_t)h * N + i0;
#pragma unroll
            for (int q = 0; q < KO; q++) {
                const int i = own_pos<TI, P>(obase + q, p);
                const float rv = sR[s * IB + i], kv = sK[s * IB + i];
                if (own && t < T) {
                    A.gk[o + i] = fromf<act_t>(fmaf(uO[q] * rv, gyv, acc[q]));
                    if (!FUSED) A.q_scr[o + i] = kv * acc[q];
                }
                if (FUSED) {
                    const float Gt = fmaf(-kv, acc[q], EO[q]);
                    if (own && t < T) A.gw[o + i] = fromf<act_t>(-sE[s * IB + i] * Gt);
                    EO[q] = Gt + sA[s * IB + i];
                }
            }
        }
    }
    if (A.gs0_dst) { /* M = dS_0 */
        float *dst = A.gs0_dst + (int64_t)bh * NN;
#pragma unroll
        for (int a = 0; a < TJ; a++)
#pragma unroll
            for (int c = 0; c < TI; c++) {
                float *q = dst + (int64_t)own_pos<TJ, G>(a, g) * N + i0 + own_pos<TI, P>(c, p);
                *q = A.gs0_acc ? *q + M[a][c] : M[a][c];
            }
    }
}

/* gw from the column roles' scratch. Per (b, h, i), backwards in time:
 *   G_t = E_{t+1} − q_t;  gw_t = −exp(w_t)·G_t;  E_t = G_t + a_t   (E_T from e_scr, or 0),
 * i.e. E is a suffix sum of a − q. A block takes GW_COLS columns × GW_SEGS segments of T:
 * each thread sums its segment's a − q, the block adds up the later segments' sums for each
 * thread's starting E, and each thread walks its own segment — so B = 1 (2,048 columns at
 * H32) still has 16 K threads, and the loads of a step never wait on E (they are issued
 * GW_UNROLL steps ahead). Consecutive threads own consecutive columns: contiguous accesses. */
#define GW_COLS 32
#define GW_SEGS 8
#define GW_UNROLL 8 /* also the literal of the "#pragma unroll 8" below */
__global__ void __launch_bounds__(GW_COLS *GW_SEGS)
    wkv6_gw_kernel(act_t *__restrict__ gw, const act_t *__restrict__ w, const float *__restrict__ a,
                   const float *__restrict__ q, const float *__restrict__ e_scr, int B, int T, int64_t C) {
    __shared__ float seg_sum[GW_SEGS][GW_COLS];
    const int cx = (int)threadIdx.x % GW_COLS, sy = (int)threadIdx.x / GW_COLS;
    const int64_t idx = (int64_t)blockIdx.x * GW_COLS + cx;
    const bool live = idx < (int64_t)B * C;
    const int64_t b = live ? idx / C : 0, c = live ? idx % C : 0, base = b * T * C + c;
    const int seg = (T + GW_SEGS - 1) / GW_SEGS, t0 = sy * seg, t1 = t0 + seg < T ? t0 + seg : T;
    float sum = 0.0f;
    if (live) {
#pragma unroll 8
        for (int t = t0; t < t1; t++) sum += a[base + (int64_t)t * C] - q[base + (int64_t)t * C];
    }
    seg_sum[sy][cx] = sum;
    __syncthreads();
    if (!live) return;
    float E = e_scr ? e_scr[idx] : 0.0f;
    for (int s2 = GW_SEGS - 1; s2 > sy; s2--) E += seg_sum[s2][cx];
    int t = t1 - 1;
    for (; t - (GW_UNROLL - 1) >= t0; t -= GW_UNROLL) {
        float qv[GW_UNROLL], av[GW_UNROLL], wv[GW_UNROLL];
#pragma unroll
        for (int u = 0; u < GW_UNROLL; u++) {
            const int64_t o = base + (int64_t)(t - u) * C;
            qv[u] = q[o];
            av[u] = a[o];
            wv[u] = tof(w[o]);
        }
#pragma unroll
        for (int u = 0; u < GW_UNROLL; u++) {
            const float Gt = E - qv[u];
            gw[base + (int64_t)(t - u) * C] = fromf<act_t>(-expf(wv[u]) * Gt);
            E = Gt + av[u];
        }
    }
    for (; t >= t0; t--) {
        const int64_t o = base + (int64_t)t * C;
        const float Gt = E - q[o];
        gw[o] = fromf<act_t>(-expf(tof(w[o])) * Gt);
        E = Gt + a[o];
    }
}

/* ---- kernels ------------------------------------------------------------------------------- */

template <class K> __global__ void __launch_bounds__(K::NT) wkv6_forward_kernel(wkv_args A) {
    __shared__ float4 sm4[(K::SMEM + 3) / 4];
    constexpr int SPLIT = K::N / K::JB;
    const int bh = (int)(blockIdx.x / SPLIT), js = (int)(blockIdx.x % SPLIT), b = bh / A.H, h = bh % A.H;
    const int64_t NN = (int64_t)K::N * K::N;
    const par_t *m0 = A.s0 ? A.s0 + (A.s0_shared ? (int64_t)h : (int64_t)bh) * NN : NULL;
    row_sweep<K, false>(reinterpret_cast<float *>(sm4), b, h, js, A.T, A.H, A.vec != 0, A.r, A.k, A.w, A.v, A.u,
                        m0, A.y, A.s_out ? A.s_out + (int64_t)bh * NN : NULL);
}

/* Blocks per SM the split schedule's kernel is built for (its __launch_bounds__ minimum) and
 * bwd_plan counts on: on CUDA six for N ≤ 64 (≤ 170 registers: the wide tiles spill nothing at
 * 168), so B8 H32's 768 wide blocks are resident at once on 132 SMs; one on HIP, where
 * RP_BOUNDS sets no minimum. */
constexpr int split_blocks_per_sm(int N) {
#if defined(RWKVPEFT_USE_HIP)
    return (void)N, 1;
#else
    return N <= 64 ? 6 : 1;
#endif
}

/* The split schedule's launch (SPLIT): blocks [0, B·H·N/IB) CF, the next B·H·N/IB CR, the
 * rest row blocks (gv) — all one sweep, independent. The fused schedule: [0, B·H·N/IB) fused
 * column blocks, then row blocks. */
template <class KC, class KR, bool SPLIT>
__global__ void RP_BOUNDS(KC::NT, SPLIT ? split_blocks_per_sm(KC::N) : 1) wkv6_backward_kernel(wkv_args A) {
    static_assert(KC::NT == KR::NT && KC::N == KR::N, "one block size per launch");
    __shared__ float4 sm4[(cmax(SPLIT ? KC::SMEM_SPLIT : KC::SMEM, KR::SMEM) + 3) / 4];
    float *sm = reinterpret_cast<float *>(sm4);
    constexpr int CSPLIT = KC::N / KC::IB, RSPLIT = KR::N / KR::JB, KINDS = SPLIT ? 2 : 1;
    const unsigned ncol = (unsigned)A.B * (unsigned)A.H * CSPLIT;
    if (blockIdx.x < KINDS * ncol) {
        const unsigned x = blockIdx.x < ncol ? blockIdx.x : blockIdx.x - ncol;
        const int bh = (int)(x / CSPLIT), is = (int)(x % CSPLIT);
        if (!SPLIT) col_role<KC, ROLE_FUSED>(sm, A, bh / A.H, bh % A.H, is);
        else if (blockIdx.x < ncol) col_role<KC, ROLE_CF>(sm, A, bh / A.H, bh % A.H, is);
        else col_role<KC, ROLE_CR>(sm, A, bh / A.H, bh % A.H, is);
    } else {
        const unsigned x = blockIdx.x - KINDS * ncol;
        const int bh = (int)(x / RSPLIT), js = (int)(x % RSPLIT);
        const int64_t NN = (int64_t)KR::N * KR::N;
        row_sweep<KR, true>(sm, bh / A.H, bh % A.H, js, A.T, A.H, A.vec != 0, A.k, A.r, A.w, A.gy, A.u,
                            A.gs_out ? A.gs_out + (int64_t)bh * NN : NULL, A.gv, NULL);
    }
}

} // namespace

/* ---- launchers ---- */

/* -1 = by size, else the tier forced by RWKVPEFT_WKV6_TILES=wide|mid|narrow (read once) */
static int wkv_tiles_mode(void) {
    static int mode = -2;
    if (mode == -2) {
        const char *e = getenv("RWKVPEFT_WKV6_TILES");
        static const char *const names[] = {"wide", "mid", "narrow"};
        mode = -1;
        for (int i = 0; e && i < 3; i++)
            if (!strcmp(e, names[i])) mode = i;
    }
    return mode;
}

/* The biggest tiles that still give the launch at least 3 blocks per SM, else the narrow ones
 * (measured on an H200, docs/backends.md "WKV6 kernels": B·H = 256 runs the forward best with
 * mid tiles and the backward with wide ones, 512 both with wide ones, B = 1 both with narrow
 * ones; smaller tiles than narrow lose to their per-step overhead). */
static int wkv_pick(const int64_t blocks[3]) {
    const int mode = wkv_tiles_mode();
    if (mode >= 0) return mode;
    const int64_t want = 3 * (int64_t)wkv_sm_count();
    return blocks[0] >= want ? 0 : blocks[1] >= want ? 1 : 2;
}

template <int N, int TIER> static void launch_fwd_tier(cudaStream_t s, const wkv_args &a) {
    using K = typename wkv_tier<N, TIER>::row;
    wkv6_forward_kernel<K><<<(unsigned)((int64_t)a.B * a.H * (N / K::JB)), K::NT, 0, s>>>(a);
}
template <int N, int TIER> static int64_t fwd_blocks(int64_t BH) { return BH * (N / wkv_tier<N, TIER>::row::JB); }

template <int N> static void launch_fwd(cudaStream_t s, const wkv_args &a) {
    const int64_t BH = (int64_t)a.B * a.H;
    const int64_t blocks[3] = {fwd_blocks<N, 0>(BH), fwd_blocks<N, 1>(BH), fwd_blocks<N, 2>(BH)};
    switch (wkv_pick(blocks)) {
    case 0: launch_fwd_tier<N, 0>(s, a); break;
    case 1: launch_fwd_tier<N, 1>(s, a); break;
    default: launch_fwd_tier<N, 2>(s, a); break;
    }
}

template <int N, int TIER> static int64_t bwd_blocks(int64_t BH, bool split) {
    return BH * ((split ? 2 : 1) * (N / wkv_tier<N, TIER>::col::IB) + N / wkv_tier<N, TIER>::row::JB);
}

/* -1 = by the rule below, else the schedule forced by RWKVPEFT_WKV6_BWD=fused|split (read at
 * every call, so the op harness can check both schedules in one process) */
static int wkv_bwd_mode(void) {
    const char *e = getenv("RWKVPEFT_WKV6_BWD");
    return e && !strcmp(e, "fused") ? 0 : e && !strcmp(e, "split") ? 1 : -1;
}

/* The backward's tile tier (by the fused schedule's block count, as measured) and schedule:
 * split when its whole launch is resident at once (split_blocks_per_sm per SM) — since then
 * its one-sweep critical path is what the time is;
 * with more blocks than slots the GPU is busy either way and split only adds q's traffic and
 * the gw walk (H200, docs/backends.md "WKV6 kernels": B8 H32 0.90 → 0.83 ms, B1 H32 0.36 →
 * 0.35; B8 H64, 1,536 split blocks on 792 slots, 1.34 → 1.49). */
template <int N> static void bwd_plan(int64_t BH, int *tier, bool *split) {
    const int64_t blocks[3] = {bwd_blocks<N, 0>(BH, false), bwd_blocks<N, 1>(BH, false), bwd_blocks<N, 2>(BH, false)};
    *tier = wkv_pick(blocks);
    const int64_t split_blocks = *tier == 0   ? bwd_blocks<N, 0>(BH, true)
                                 : *tier == 1 ? bwd_blocks<N, 1>(BH, true)
                                              : bwd_blocks<N, 2>(BH, true);
    const int64_t per_sm = split_blocks_per_sm(N);
    const int mode = wkv_bwd_mode();
    *split = mode >= 0 ? mode == 1 : split_blocks <= per_sm * wkv_sm_count();
}

template <int N, int TIER, bool SPLIT> static void launch_bwd_tier(cudaStream_t s, const wkv_args &a) {
    using KC = typename wkv_tier<N, TIER>::col;
    using KR = typename wkv_tier<N, TIER>::row;
    const unsigned grid = (unsigned)bwd_blocks<N, TIER>((int64_t)a.B * a.H, SPLIT);
    wkv6_backward_kernel<KC, KR, SPLIT><<<grid, KC::NT, 0, s>>>(a);
}
template <int N, bool SPLIT> static void launch_bwd_schedule(cudaStream_t s, const wkv_args &a, int tier) {
    switch (tier) {
    case 0: launch_bwd_tier<N, 0, SPLIT>(s, a); break;
    case 1: launch_bwd_tier<N, 1, SPLIT>(s, a); break;
    default: launch_bwd_tier<N, 2, SPLIT>(s, a); break;
    }
}
template <int N> static void launch_bwd(cudaStream_t s, const wkv_args &a, int tier, bool split) {
    if (split) launch_bwd_schedule<N, true>(s, a, tier);
    else launch_bwd_schedule<N, false>(s, a, tier);
}

static int wkv_check(rp_backend *be, const char *op, int B, int T, int H, int N) {
    if (B < 0 || T < 0 || H < 0) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "%s: negative size", op);
    if (N != 32 && N != 64 && N != 128)
        return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "%s: head size %d is not built (32, 64, 128)", op, N);
    /* blocks: up to 24 per head (narrow tiles, the three kinds of backward block) */
    if ((int64_t)B * H > 0x7fffffffLL / 24) return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "%s: B·H too large", op);
    return 0;
}


int cu_wkv6_fwd(rp_backend *be, void *y, void *s_out, const void *r, const void *k, const void *v, const void *w,
                const void *u, const void *s0, int s0_shared, int B, int T, int H, int N) {
    RP_TRY(wkv_check(be, "wkv6_fwd", B, T, H, N));
    if (B == 0 || H == 0) return 0;
    CU_ENTER(be);
    wkv_args a;
    memset(&a, 0, sizeof a);
    a.B = B;
    a.T = T;
    a.H = H;
    a.vec = wkv_aligned(r) && wkv_aligned(k) && wkv_aligned(v) && wkv_aligned(w);
    a.r = (const act_t *)r;
    a.k = (const act_t *)k;
    a.v = (const act_t *)v;
    a.w = (const act_t *)w;
    a.u = (const par_t *)u;
    a.s0 = (const par_t *)s0;
    a.s0_shared = s0_shared;
    a.y = (act_t *)y;
    a.s_out = (par_t *)s_out;
    cudaStream_t s = cu_stream(be);
    switch (N) {
    case 32: launch_fwd<32>(s, a); break;
    case 64: launch_fwd<64>(s, a); break;
    default: launch_fwd<128>(s, a); break;
    }
    CU_LAUNCHED(be);
    return 0;
}

int cu_wkv6_bwd(rp_backend *be, void *gr, void *gk, void *gv, void *gw, void *gu, void *gs0, const void *gy,
                const void *gs_out, const void *r, const void *k, const void *v, const void *w, const void *u,
                const void *s0, int s0_shared, int B, int T, int H, int N, void *scratch, size_t scratch_bytes) {
    RP_TRY(wkv_check(be, "wkv6_bwd", B, T, H, N));
    if (B == 0 || H == 0) return 0;
    CU_ENTER(be);
    cudaStream_t s = cu_stream(be);
    const int64_t NN = (int64_t)N * N, BH = (int64_t)B * H;
    const size_t a_bytes = cu_round(sizeof(float) * (size_t)((int64_t)B * T * H * N));
    const size_t gu_bytes = gu ? cu_round(sizeof(float) * (size_t)(BH * N)) : 0;
    const size_t e_bytes = gs_out ? cu_round(sizeof(float) * (size_t)(BH * N)) : 0;
    const int shared_gs0 = gs0 && s0_shared;
    const size_t gs_bytes = shared_gs0 ? cu_round(sizeof(float) * (size_t)(BH * NN)) : 0;
    int tier = 0;
    bool split = false;
    switch (N) {
    case 32: bwd_plan<32>(BH, &tier, &split); break;
    case 64: bwd_plan<64>(BH, &tier, &split); break;
    default: bwd_plan<128>(BH, &tier, &split); break;
    }
    /* a (and q, split) — B·T·H·N floats each — in the caller's dead buffers when they fit,
     * else with the small temporaries in the backend's scratch */
    const size_t aq_bytes = (split ? 2 : 1) * a_bytes, eT_bytes = split ? e_bytes : 0;
    const int own_aq = !(scratch && scratch_bytes >= aq_bytes && ((uintptr_t)scratch & 255u) == 0);
    void *scr;
    RP_TRY(cu_scratch(be, (own_aq ? aq_bytes : 0) + eT_bytes + gu_bytes + gs_bytes + 256, &scr));
    char *cur = (char *)scr, *aq = own_aq ? cur : (char *)scratch;
    wkv_args a;
    memset(&a, 0, sizeof a);
    a.a_scr = (float *)cu_carve(&aq, a_bytes);
    a.q_scr = split ? (float *)cu_carve(&aq, a_bytes) : NULL;
    if (own_aq) cur = aq;
    a.e_scr = split && gs_out ? (float *)cu_carve(&cur, e_bytes) : NULL;
    a.gu_part = gu ? (float *)cu_carve(&cur, gu_bytes) : NULL; /* gu NULL: u frozen */
    float *gs_part = shared_gs0 ? (float *)cu_carve(&cur, gs_bytes) : NULL;
    /* per-batch gs0: each (b,h) slice belongs to one block: accumulate in place */
    a.gs0_dst = gs0 ? (shared_gs0 ? gs_part : (float *)gs0) : NULL;
    a.gs0_acc = gs0 && !shared_gs0;
    a.B = B;
    a.T = T;
    a.H = H;
    a.vec = wkv_aligned(r) && wkv_aligned(k) && wkv_aligned(v) && wkv_aligned(w) && wkv_aligned(gy);
    a.r = (const act_t *)r;
    a.k = (const act_t *)k;
    a.v = (const act_t *)v;
    a.w = (const act_t *)w;
    a.gy = (const act_t *)gy;
    a.u = (const par_t *)u;
    a.s0 = (const par_t *)s0;
    a.s0_shared = s0_shared;
    a.gs_out = (const par_t *)gs_out;
    a.gr = (act_t *)gr;
    a.gk = (act_t *)gk;
    a.gv = (act_t *)gv;
    a.gw = (act_t *)gw;
    switch (N) {
    case 32: launch_bwd<32>(s, a, tier, split); break;
    case 64: launch_bwd<64>(s, a, tier, split); break;
    default: launch_bwd<128>(s, a, tier, split); break;
    }
    CU_LAUNCHED(be);
    if (split) {
        const int64_t cols = (int64_t)B * H * N;
        wkv6_gw_kernel<<<(unsigned)((cols + GW_COLS - 1) / GW_COLS), GW_COLS * GW_SEGS, 0, s>>>((act_t *)gw, (const act_t *)w, a.a_scr, a.q_scr, a.e_scr, B, T, (int64_t)H * N);
        CU_LAUNCHED(be);
    }
    if (gu) {
        const int64_t per_gu = (int64_t)H * N;
        wkv_sum_over_batch_kernel<<<cu_blocks(per_gu, 256), 256, 0, s>>>((par_t *)gu, a.gu_part, B, per_gu);
        CU_LAUNCHED(be);
    }
    if (shared_gs0) {
        const int64_t per_gs = (int64_t)H * NN;
        wkv_sum_over_batch_kernel<<<cu_blocks(per_gs, 256), 256, 0, s>>>((par_t *)gs0, gs_part, B, per_gs);
        CU_LAUNCHED(be);
    }
    return 0;
}
