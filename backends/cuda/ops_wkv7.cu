/* ops_wkv7.cu — the RWKV-7 recurrence, forward and backward, with fp32 state.
 *
 * Per (b,h), with state S[j=value][i=key] (S_0 = s0), d = exp(−exp(w)) from the raw w:
 *   sa_t[j] = Σ_i a_t[i]·S_{t−1}[j][i]
 *   S_t[j][i] = S_{t−1}[j][i]·d_t[i] + sa_t[j]·b_t[i] + v_t[j]·k_t[i]
 *   y_t[j]  = Σ_i r_t[i]·S_t[j][i] = Σ_i (r⊙d)_t[i]·S_{t−1}[j][i] + sa_t[j]·(r·b)_t + v_t[j]·(r·k)_t
 * Rows j of S never meet: only the sums over i (sa, y) couple the N keys of a row. So the
 * forward is a "row sweep" like WKV6's: a thread holds a TJ×TI tile of S in registers, the G
 * lanes sharing a row are adjacent lanes of one warp (sa: butterfly all-reduce, every lane needs
 * it for the update; y: transposing reduction, the owner writes), a block owns JB rows so a head
 * splits over N/JB blocks at small B. The second form of y above lets both sums read the state
 * before the step, so there is one pass over the tile per step. Inputs come in chunks of L = 16
 * steps staged in shared memory (d = exp(−exp(w)) and r⊙d computed once per element there, plus
 * the per-step scalars r·b and r·k), the next chunk's raw inputs already loading into registers.
 *
 * Backward (dS = ∂L/∂S_t, from gs_out; for t = T−1 … 0, with dS including gy_t ⊗ r_t):
 *   gr_t[i] = Σ_j S_t[j][i]·gy_t[j]  = d[i]·Σ_j gy[j]·S_{t−1}[j][i] + b[i]·(gy·sa) + k[i]·(gy·v)
 *   dS += gy_t ⊗ r_t
 *   gw_t[i] = −exp(w[i])·d[i]·Σ_j dS[j][i]·S_{t−1}[j][i];   gk_t[i] = Σ_j dS[j][i]·v[j]
 *   gb_t[i] = Σ_j dS[j][i]·sa[j];   gv_t[j] = Σ_i dS[j][i]·k[i];   dsa[j] = Σ_i dS[j][i]·b[i]
 *   ga_t[i] = Σ_j S_{t−1}[j][i]·dsa[j];   dS ← dS·diag(d) + dsa ⊗ a;   gs0 = dS at the end.
 * The rows of dS evolve independently too (dsa is a row sum); the five column sums (over j) are
 * outputs only, never fed back. The backward therefore keeps a whole head in one block: rows over
 * lanes as in the forward (dsa: all-reduce within G lanes), columns summed per thread over its
 * rows, then over the row groups of a warp (transposing shuffles), then over the warps through
 * shared memory once every KS steps (no barrier per step).
 * It needs S_{t−1} at every step. No backstepping S_{t−1} = (S_t − v kᵀ − sa bᵀ)/d (which loses
 * everything once d underflows): the states are recomputed forward, exact for any w:
 *   pass A  the forward kernel (any tile tier) stores S at every L = 16 steps to fp32 scratch
 *           [B,H,⌈T/16⌉,N,N] (no y);
 *   pass B  one block per head walks the 16-step segments backwards: from the segment's
 *           checkpoint it runs the segment forward once, keeping the states at every KQ = 4
 *           steps in shared memory ("slots", per thread, no barrier); then for each KS = 2-step
 *           piece, last first, it re-runs forward from the piece's slot, keeping S_{t−1} and sa
 *           of the KS steps in registers, and runs the KS backward steps on them. About 2.25
 *           forward steps recomputed per backward step (pass A included: 3.25).
 * gs0 of a shared s0 is summed over B in a fixed order (deterministic, like WKV6's).
 *
 * Fast path: N = 64 (the RWKV-7 head size) where the device grants pass B's 106 KB of shared
 * memory per block (A100, H100/H200), or 90 KB with one slot fewer (GA10x, Ada). Any other N,
 * and AMD (64 KB of LDS), take the generic kernels at the end: one block per head, the state in
 * global scratch, barriers between phases, the CPU backend's algorithm (checkpoints every 16
 * steps, a segment's states rebuilt into scratch) — correct, not fast.
 * Design notes and measurements (H200: B8 T1024 H32 forward 0.49 ms, backward 2.28 ms):
 * docs/backends.md, "WKV7 kernels". */
#include <stdlib.h>
#include <string.h>

#include "common.cuh"
#include "wkv_tiles.cuh"

namespace {

struct w7_args {
    int B, T, H;
    int vec; /* the activation pointers are 16-byte aligned: staging loads 16-byte pieces */
    const act_t *r, *w, *k, *v, *a, *b, *gy;
    const par_t *s0, *gs_out;
    int s0_shared;
    act_t *y, *gr, *gw, *gk, *gv, *ga, *gb;
    par_t *s_out;
    float *ck;      /* checkpoints [B,H,nseg,N,N]: S before step 16·seg */
    float *gs0_dst; /* dS_0: gs0 itself (+=, per sequence) or the per-(b,h) partials (shared s0) */
    int gs0_acc;
};

/* ---- the forward: row sweep ------------------------------------------------------------------ */

/* JB value rows of a head per block, TJ×TI tiles, G = N/TI lanes per row group, L steps per chunk. */
template <int N_, int TJ_, int TI_, int JB_, int L_> struct f7_cfg {
    static constexpr int N = N_, TJ = TJ_, TI = TI_, JB = JB_, L = L_;
    static constexpr int G = N / TI, P = JB / TJ, NT = G * P, TPS = NT / L;
    static constexpr int SX = N / TPS, SY = JB / TPS;
    static constexpr int SMEM = L * (5 * N + JB) + 2 * L; /* floats: a, r⊙d, d, b, k [L][N]; v [L][JB]; r·b, r·k */
    static_assert(pow2(TJ) && pow2(TI) && pow2(G) && pow2(TPS) && G <= 8 && TPS <= 8, "f7_cfg");
    static_assert(N % JB == 0 && NT % 64 == 0 && NT % L == 0 && N % TPS == 0 && JB % TPS == 0, "f7_cfg");
};

/* Tiers for N = 64, as WKV6's row tiers: 0 wide (1 block per head), 1 mid (2), 2 narrow (4). */
template <int TIER> struct f7_tier;
template <> struct f7_tier<0> { using cfg = f7_cfg<64, 4, 16, 64, 16>; };
template <> struct f7_tier<1> { using cfg = f7_cfg<64, 4, 8, 32, 16>; };
template <> struct f7_tier<2> { using cfg = f7_cfg<64, 2, 8, 16, 16>; };

/* Y: write y (the forward op); CK: write a checkpoint at the start of every chunk (pass A). */
template <class K, bool Y, bool CK> __global__ void __launch_bounds__(K::NT) wkv7_forward_kernel(w7_args A) {
    constexpr int N = K::N, TJ = K::TJ, TI = K::TI, JB = K::JB, L = K::L, G = K::G, P = K::P, TPS = K::TPS;
    constexpr int SX = K::SX, SY = K::SY, KO = cmax(TJ / G, 1), SPLIT = N / JB;
    __shared__ float4 sm4[(K::SMEM + 3) / 4];
    float *sA = reinterpret_cast<float *>(sm4), *sRD = sA + L * N, *sD = sRD + L * N, *sB = sD + L * N,
          *sK = sB + L * N, *sV = sK + L * N, *sRB = sV + L * JB, *sRK = sRB + L;
    const int bh = (int)(blockIdx.x / SPLIT), js = (int)(blockIdx.x % SPLIT), b = bh / A.H, h = bh % A.H;
    const int T = A.T;
    const int tid = threadIdx.x, g = tid % G, p = tid / G, st = tid / TPS, sg = tid % TPS;
    const int64_t C = (int64_t)A.H * N, NN = (int64_t)N * N;
    const int j0 = js * JB;
    const bool vec = A.vec != 0;

    float M[TJ][TI];
    {
        const par_t *m0 = A.s0 ? A.s0 + (A.s0_shared ? (int64_t)h : (int64_t)bh) * NN : NULL;
#pragma unroll
        for (int a = 0; a < TJ; a++)
#pragma unroll
            for (int c = 0; c < TI; c++)
                M[a][c] = m0 ? m0[(int64_t)(j0 + own_pos<TJ, P>(a, p)) * N + own_pos<TI, G>(c, g)] : 0.0f;
    }

    raw_seg<act_t, SX> pR, pW, pK, pA, pB;
    raw_seg<act_t, SY> pV;
    bool pv = false;
    auto fetch = [&](int ch) {
        const int t = ch * L + st;
        pv = t < T;
        if (pv) {
            const int64_t o = ((int64_t)b * T + t) * C + (int64_t)h * N;
            if (Y) seg_load<TPS>(pR, A.r + o, sg, vec);
            seg_load<TPS>(pW, A.w + o, sg, vec);
            seg_load<TPS>(pK, A.k + o, sg, vec);
            seg_load<TPS>(pA, A.a + o, sg, vec);
            seg_load<TPS>(pB, A.b + o, sg, vec);
            seg_load<TPS>(pV, A.v + o + j0, sg, vec);
        }
    };
    auto stage = [&]() { /* steps past T: a = b = k = v = r = 0, d = 1 (the state is left alone) */
        float xa[SX], xrd[SX], xd[SX], xb[SX], xk[SX], xv[SY], rb = 0.0f, rk = 0.0f;
#pragma unroll
        for (int e = 0; e < SX; e++) {
            const float rr = (Y && pv) ? tof(pR.e[e]) : 0.0f;
            xa[e] = pv ? tof(pA.e[e]) : 0.0f;
            xd[e] = pv ? decay_of(tof(pW.e[e])) : 1.0f;
            xb[e] = pv ? tof(pB.e[e]) : 0.0f;
            xk[e] = pv ? tof(pK.e[e]) : 0.0f;
            xrd[e] = rr * xd[e];
            rb = fmaf(rr, xb[e], rb);
            rk = fmaf(rr, xk[e], rk);
        }
#pragma unroll
        for (int e = 0; e < SY; e++) xv[e] = pv ? tof(pV.e[e]) : 0.0f;
        sts_seg<act_t, SX, TPS>(sA + st * N, xa, sg);
        if (Y) sts_seg<act_t, SX, TPS>(sRD + st * N, xrd, sg);
        sts_seg<act_t, SX, TPS>(sD + st * N, xd, sg);
        sts_seg<act_t, SX, TPS>(sB + st * N, xb, sg);
        sts_seg<act_t, SX, TPS>(sK + st * N, xk, sg);
        sts_seg<act_t, SY, TPS>(sV + st * JB, xv, sg);
        if (Y) {
            rb = stage_sum<TPS>(rb);
            rk = stage_sum<TPS>(rk);
            if (sg == 0) {
                sRB[st] = rb;
                sRK[st] = rk;
            }
        }
    };

    const int nch = (T + L - 1) / L;
    if (nch > 0) fetch(0);
    for (int ch = 0; ch < nch; ch++) {
        if (CK) { /* S before step ch·L */
            float *dst = A.ck + ((int64_t)bh * nch + ch) * NN;
#pragma unroll
            for (int a = 0; a < TJ; a++)
#pragma unroll
                for (int c = 0; c < TI; c++)
                    dst[(int64_t)(j0 + own_pos<TJ, P>(a, p)) * N + own_pos<TI, G>(c, g)] = M[a][c];
        }
        __syncthreads(); /* the previous chunk is done with shared memory */
        stage();
        if (ch + 1 < nch) fetch(ch + 1);
        __syncthreads();
#pragma unroll 2
        for (int s = 0; s < L; s++) {
            const int t = ch * L + s;
            float ai[TI], di[TI], bi[TI], ki[TI], vj[TJ], sa[TJ], yp[TJ];
            lds_own<TI, G>(ai, sA + s * N, g);
            lds_own<TI, G>(di, sD + s * N, g);
            lds_own<TI, G>(bi, sB + s * N, g);
            lds_own<TI, G>(ki, sK + s * N, g);
            lds_own<TJ, P>(vj, sV + s * JB, p);
            if (Y) {
                float ri[TI];
                lds_own<TI, G>(ri, sRD + s * N, g);
#pragma unroll
                for (int a = 0; a < TJ; a++) {
                    sa[a] = 0.0f;
                    yp[a] = 0.0f;
#pragma unroll
                    for (int c = 0; c < TI; c++) {
                        sa[a] = fmaf(ai[c], M[a][c], sa[a]);
                        yp[a] = fmaf(ri[c], M[a][c], yp[a]);
                    }
                }
            } else {
#pragma unroll
                for (int a = 0; a < TJ; a++) {
                    sa[a] = 0.0f;
#pragma unroll
                    for (int c = 0; c < TI; c++) sa[a] = fmaf(ai[c], M[a][c], sa[a]);
                }
            }
            group_allreduce<TJ, G>(sa);
            if (Y) {
                group_reduce<TJ, G>(yp, g);
                if (t < T && reduce_owner<TJ, G>(g)) {
                    const int64_t o = ((int64_t)b * T + t) * C + (int64_t)h * N + j0;
                    const int base = reduce_base<TJ, G>(g);
                    const float rb = sRB[s], rk = sRK[s];
#pragma unroll
                    for (int q = 0; q < KO; q++) {
                        const int j = own_pos<TJ, P>(base + q, p);
                        A.y[o + j] = fromf<act_t>(fmaf(sa[base + q], rb, fmaf(vj[base + q], rk, yp[q])));
                    }
                }
            }
#pragma unroll
            for (int a = 0; a < TJ; a++)
#pragma unroll
                for (int c = 0; c < TI; c++) M[a][c] = fmaf(M[a][c], di[c], fmaf(sa[a], bi[c], vj[a] * ki[c]));
        }
    }
    if (A.s_out) { /* may be s0 itself (state advanced in place): this thread read exactly these */
        par_t *dst = A.s_out + (int64_t)bh * NN;
#pragma unroll
        for (int a = 0; a < TJ; a++)
#pragma unroll
            for (int c = 0; c < TI; c++) dst[(int64_t)(j0 + own_pos<TJ, P>(a, p)) * N + own_pos<TI, G>(c, g)] = M[a][c];
    }
}

/* ---- the backward's reverse pass (pass B) ----------------------------------------------------- */

/* One block per head, TJ×TI tiles of S and dS (rows over P row groups, columns over G lanes),
 * segments of L steps (= the checkpoint interval of pass A), slots every KQ steps, KS steps of
 * history in registers. */
template <int N_, int TJ_, int TI_, int L_, int KQ_, int KS_, bool SLOT0_> struct b7_cfg {
    static constexpr int N = N_, TJ = TJ_, TI = TI_, L = L_, KQ = KQ_, KS = KS_;
    static constexpr bool SLOT0 = SLOT0_; /* false: slot 0 is the checkpoint itself, re-read from scratch */
    static constexpr int G = N / TI, P = N / TJ, NT = G * P, TPS = NT / L, SV = N / TPS;
    static constexpr int E = TJ * TI, NSLOT = L / KQ, NWMAX = NT / 32; /* warps at the smallest warp size */
    static constexpr int NVEC = 8;                                       /* a, b, k, d, ew, r, v, gy */
    static constexpr int SMEM_STAGE = NVEC * L * N, SMEM_SLOTS = (SLOT0 ? NSLOT : NSLOT - 1) * E * NT;
    static constexpr int SMEM_PART = KS * NWMAX * 5 * N;
    static constexpr int SMEM = SMEM_STAGE + SMEM_SLOTS + SMEM_PART; /* floats */
    static constexpr int MINB = KS == 1 ? 3 : 2; /* blocks per SM the registers must allow */
    static_assert(pow2(TJ) && pow2(TI) && pow2(G) && pow2(TPS) && G <= 8, "b7_cfg");
    static_assert(NT % 64 == 0 && NT % L == 0 && N % TPS == 0 && L % KQ == 0 && KQ % KS == 0, "b7_cfg");
};
/* N = 64: 4×8 tiles, 128 threads, two heads per SM (~230 registers, 106 KB of shared memory);
 * b7_64s keeps one slot fewer (90 KB: GPUs with 99 KB per block, GA10x and Ada), re-reading the
 * segment's first states from the checkpoint. */
using b7_64 = b7_cfg<64, 4, 8, 16, 4, 2, true>;
using b7_64s = b7_cfg<64, 4, 8, 16, 4, 2, false>;
/* b7_64t: three heads per SM (≤ 168 registers, 69 KB) — slots every 8 steps and one-step
 * pieces, so ~1.5× the recomputation of b7_64, but 396 heads in one wave on 132 SMs where
 * b7_64 takes two for 265–528 heads (2.9B B8 = 320). w7_fast_bwd takes it where that saves a
 * wave (docs/backends.md, "WKV7 kernels"). */
using b7_64t = b7_cfg<64, 4, 8, 16, 8, 1, true>;

/* One forward step on the tile M from the staged step s; sa (all-reduced over the row group). */
template <class K>
RP_DEV void b7_fwd_step(float (&M)[K::TJ][K::TI], float (&sa)[K::TJ], const float *sm, int s, int g, int p) {
    constexpr int N = K::N, TJ = K::TJ, TI = K::TI, L = K::L, G = K::G, P = K::P;
    const float *sA = sm, *sB = sA + L * N, *sK = sB + L * N, *sD = sK + L * N, *sV = sD + 2 * L * N;
    float ai[TI], bi[TI], ki[TI], di[TI], vj[TJ];
    lds_own<TI, G>(ai, sA + s * N, g);
    lds_own<TI, G>(bi, sB + s * N, g);
    lds_own<TI, G>(ki, sK + s * N, g);
    lds_own<TI, G>(di, sD + s * N, g);
    lds_own<TJ, P>(vj, sV + s * N, p);
#pragma unroll
    for (int a = 0; a < TJ; a++) {
        sa[a] = 0.0f;
#pragma unroll
        for (int c = 0; c < TI; c++) sa[a] = fmaf(ai[c], M[a][c], sa[a]);
    }
    group_allreduce<TJ, G>(sa);
#pragma unroll
    for (int a = 0; a < TJ; a++)
#pragma unroll
        for (int c = 0; c < TI; c++) M[a][c] = fmaf(M[a][c], di[c], fmaf(sa[a], bi[c], vj[a] * ki[c]));
}

/* Sum of x (TI column partials over this thread's rows) over the row groups of the warp, then
 * stored to the warp's row of the partial buffer. */
template <class K> RP_DEV void b7_col_store(float (&x)[K::TI], float *prow, int g, int pl) {
    constexpr int TI = K::TI, G = K::G, R = RP_WARP_SIZE / K::G;
    group_reduce<TI, R, G>(x, pl);
    if (reduce_owner<TI, R>(pl)) {
        const int base = reduce_base<TI, R>(pl);
#pragma unroll
        for (int q = 0; q < cmax(TI / R, 1); q++) prow[own_pos<TI, G>(base + q, g)] = x[q];
    }
}

/* Column partials over a thread's TJ rows of a TJ×TI tile: x[c] = Σ_a M[a][c]·M2[a][c]
 * (col_sum_prod) or Σ_a M[a][c]·v[a] (col_sum_scaled). */
template <int TJ, int TI>
RP_DEV void col_sum_prod(float (&x)[TI], const float (&M)[TJ][TI], const float (&M2)[TJ][TI]) {
#pragma unroll
    for (int c = 0; c < TI; c++) {
        x[c] = 0.0f;
#pragma unroll
        for (int a = 0; a < TJ; a++) x[c] = fmaf(M[a][c], M2[a][c], x[c]);
    }
}
template <int TJ, int TI> RP_DEV void col_sum_scaled(float (&x)[TI], const float (&M)[TJ][TI], const float (&v)[TJ]) {
#pragma unroll
    for (int c = 0; c < TI; c++) {
        x[c] = 0.0f;
#pragma unroll
        for (int a = 0; a < TJ; a++) x[c] = fmaf(M[a][c], v[a], x[c]);
    }
}

/* One backward step (staged step s, history Sp = S_{t−1}, sa) on the tile D = dS; column partials
 * to part (this step's [warp][5][N] block: gdd, gk, gb, ga, gr); gv written by its owners. */
template <class K>
RP_DEV void b7_bwd_step(float (&D)[K::TJ][K::TI], const float (&Sp)[K::TJ][K::TI], const float (&sa)[K::TJ],
                        const float *sm, float *part, int s, int t, int g, int p, const w7_args &A, int64_t orow) {
    constexpr int N = K::N, TJ = K::TJ, TI = K::TI, L = K::L, G = K::G, P = K::P, KO = cmax(TJ / G, 1);
    constexpr int R = RP_WARP_SIZE / G;
    static_assert(R >= 1 && G * R == RP_WARP_SIZE, "row groups per warp");
    const float *sA = sm, *sB = sA + L * N, *sK = sB + L * N, *sD = sK + L * N, *sV = sD + 2 * L * N,
                *sR = sV + L * N, *sG = sR + L * N;
    const int warp = threadIdx.x / RP_WARP_SIZE, pl = p % R;
    float *pw = part + warp * 5 * N;
    float ri[TI], bi[TI], ki[TI], di[TI], gj[TJ], vj[TJ];
    lds_own<TI, G>(ri, sR + s * N, g);
    lds_own<TI, G>(bi, sB + s * N, g);
    lds_own<TI, G>(ki, sK + s * N, g);
    lds_own<TI, G>(di, sD + s * N, g);
    lds_own<TJ, P>(gj, sG + s * N, p);
    lds_own<TJ, P>(vj, sV + s * N, p);
    /* dS += gy ⊗ r; row sums gv = dS·k, dsa = dS·b */
    float gvp[TJ], dsa[TJ];
#pragma unroll
    for (int a = 0; a < TJ; a++) {
        gvp[a] = 0.0f;
        dsa[a] = 0.0f;
#pragma unroll
        for (int c = 0; c < TI; c++) {
            D[a][c] = fmaf(gj[a], ri[c], D[a][c]);
            gvp[a] = fmaf(D[a][c], ki[c], gvp[a]);
            dsa[a] = fmaf(D[a][c], bi[c], dsa[a]);
        }
    }
    group_allreduce<TJ, G>(dsa);
    group_reduce<TJ, G>(gvp, g);
    if (t < A.T && reduce_owner<TJ, G>(g)) {
        const int base = reduce_base<TJ, G>(g);
#pragma unroll
        for (int q = 0; q < KO; q++) A.gv[orow + own_pos<TJ, P>(base + q, p)] = fromf<act_t>(gvp[q]);
    }
    /* column partials over this thread's rows */
    {
        float x[TI];
        col_sum_prod<TJ, TI>(x, D, Sp);
        b7_col_store<K>(x, pw + 0 * N, g, pl);
        col_sum_scaled<TJ, TI>(x, D, vj);
        b7_col_store<K>(x, pw + 1 * N, g, pl);
        col_sum_scaled<TJ, TI>(x, D, sa);
        b7_col_store<K>(x, pw + 2 * N, g, pl);
        col_sum_scaled<TJ, TI>(x, Sp, dsa);
        b7_col_store<K>(x, pw + 3 * N, g, pl);
    }
    {
        /* gr over this thread's rows: d·(Σ gy·S_{t−1}) + b·(gy·sa) + k·(gy·v) */
        float gs = 0.0f, gvv = 0.0f, x[TI];
#pragma unroll
        for (int a = 0; a < TJ; a++) {
            gs = fmaf(gj[a], sa[a], gs);
            gvv = fmaf(gj[a], vj[a], gvv);
        }
#pragma unroll
        for (int c = 0; c < TI; c++) {
            float q = 0.0f;
#pragma unroll
            for (int a = 0; a < TJ; a++) q = fmaf(gj[a], Sp[a][c], q);
            x[c] = fmaf(di[c], q, fmaf(bi[c], gs, ki[c] * gvv));
        }
        b7_col_store<K>(x, pw + 4 * N, g, pl);
    }
    /* dS ← dS·diag(d) + dsa ⊗ a */
    {
        float ai[TI];
        lds_own<TI, G>(ai, sA + s * N, g);
#pragma unroll
        for (int a = 0; a < TJ; a++)
#pragma unroll
            for (int c = 0; c < TI; c++) D[a][c] = fmaf(dsa[a], ai[c], D[a][c] * di[c]);
    }
}

/* K::MINB blocks per SM: at most 65536 / (NT · MINB) registers per thread (RP_BOUNDS) */
template <class K> __global__ void RP_BOUNDS(K::NT, K::MINB) wkv7_backward_kernel(w7_args A) {
    constexpr int N = K::N, TJ = K::TJ, TI = K::TI, L = K::L, KQ = K::KQ, KS = K::KS, G = K::G, P = K::P;
    constexpr int TPS = K::TPS, SV = K::SV, E = K::E, NT = K::NT, NSLOT = K::NSLOT;
#if defined(RWKVPEFT_CUDA_EMULATION)
    __shared__ float4 sm4[(K::SMEM + 3) / 4];
#else
    extern __shared__ float4 sm4[];
#endif
    float *sm = reinterpret_cast<float *>(sm4);
    float *sA = sm, *sB = sA + L * N, *sK = sB + L * N, *sD = sK + L * N, *sE = sD + L * N, *sV = sE + L * N,
          *sR = sV + L * N, *sG = sR + L * N;
    float *slots = sm + K::SMEM_STAGE, *part = slots + K::SMEM_SLOTS;
    const int bh = blockIdx.x, b = bh / A.H, h = bh % A.H, T = A.T;
    const int tid = threadIdx.x, g = tid % G, p = tid / G, st = tid / TPS, sg = tid % TPS;
    const int64_t C = (int64_t)A.H * N, NN = (int64_t)N * N;
    const int nw = NT / RP_WARP_SIZE;
    const bool vec = A.vec != 0;
    const int nseg = (T + L - 1) / L;

    auto tile_index = [&](int a, int c) { return (int64_t)own_pos<TJ, P>(a, p) * N + own_pos<TI, G>(c, g); };
    auto slot_ptr = [&](int q, int e) { return slots + ((int64_t)(K::SLOT0 ? q : q - 1) * E + e) * NT + tid; };

    float D[TJ][TI];
    {
        const par_t *gso = A.gs_out ? A.gs_out + (int64_t)bh * NN : NULL;
#pragma unroll
        for (int a = 0; a < TJ; a++)
#pragma unroll
            for (int c = 0; c < TI; c++) D[a][c] = gso ? gso[tile_index(a, c)] : 0.0f;
    }

    for (int seg = nseg - 1; seg >= 0; seg--) {
        const int t0 = seg * L, tn = T - t0 < L ? T - t0 : L;
        __syncthreads(); /* the previous segment is done with the staged inputs */
        { /* stage the segment: steps past T get a = b = k = v = r = gy = 0, d = 1, exp(w) = 0 */
            const int t = t0 + st;
            const bool pv = st < tn;
            raw_seg<act_t, SV> x[7];
            if (pv) {
                const int64_t o = ((int64_t)b * T + t) * C + (int64_t)h * N;
                seg_load<TPS>(x[0], A.a + o, sg, vec);
                seg_load<TPS>(x[1], A.b + o, sg, vec);
                seg_load<TPS>(x[2], A.k + o, sg, vec);
                seg_load<TPS>(x[3], A.w + o, sg, vec);
                seg_load<TPS>(x[4], A.v + o, sg, vec);
                seg_load<TPS>(x[5], A.r + o, sg, vec);
                seg_load<TPS>(x[6], A.gy + o, sg, vec);
            }
            float f[SV];
            float *dst[7] = {sA, sB, sK, sD, sV, sR, sG};
#pragma unroll
            for (int q = 0; q < 7; q++) {
                if (q == 3) {
                    float ew[SV];
#pragma unroll
                    for (int e = 0; e < SV; e++) {
                        ew[e] = pv ? expf(tof(x[3].e[e])) : 0.0f;
                        f[e] = expf(-ew[e]);
                    }
                    sts_seg<act_t, SV, TPS>(sE + st * N, ew, sg);
                } else {
#pragma unroll
                    for (int e = 0; e < SV; e++) f[e] = pv ? tof(x[q].e[e]) : 0.0f;
                }
                sts_seg<act_t, SV, TPS>(dst[q] + st * N, f, sg);
            }
        }
        __syncthreads();

        /* from the checkpoint, the segment forward once: slots at every KQ steps */
        {
            const float *ck = A.ck + ((int64_t)bh * nseg + seg) * NN;
            float M[TJ][TI], sa[TJ];
#pragma unroll
            for (int a = 0; a < TJ; a++)
#pragma unroll
                for (int c = 0; c < TI; c++) M[a][c] = ck[tile_index(a, c)];
            for (int q = 0; q < NSLOT; q++) {
                if (K::SLOT0 || q > 0) {
#pragma unroll
                    for (int a = 0; a < TJ; a++)
#pragma unroll
                        for (int c = 0; c < TI; c++) *slot_ptr(q, a * TI + c) = M[a][c];
                }
                if (q + 1 == NSLOT || (q + 1) * KQ >= tn) break;
#pragma unroll 1 /* as fast as unrolled (measured), a quarter of the code */
                for (int s = 0; s < KQ; s++) b7_fwd_step<K>(M, sa, sm, q * KQ + s, g, p);
            }
        }

        /* pieces of KS steps, last first */
        for (int q = NSLOT - 1; q >= 0; q--) {
            for (int hp = KQ / KS - 1; hp >= 0; hp--) {
                const int s0 = q * KQ + hp * KS; /* first step of the piece, in the segment */
                if (s0 >= tn) continue;          /* past T (uniform over the block) */
                float Sp[KS][TJ][TI], sah[KS][TJ];
                {
                    float M[TJ][TI];
                    const float *ck = A.ck + ((int64_t)bh * nseg + seg) * NN;
#pragma unroll
                    for (int a = 0; a < TJ; a++)
#pragma unroll
                        for (int c = 0; c < TI; c++)
                            M[a][c] = (K::SLOT0 || q > 0) ? *slot_ptr(q, a * TI + c) : ck[tile_index(a, c)];
                    for (int s = q * KQ; s < s0; s++) {
                        float sa[TJ];
                        b7_fwd_step<K>(M, sa, sm, s, g, p);
                    }
#pragma unroll
                    for (int u = 0; u < KS; u++) {
#pragma unroll
                        for (int a = 0; a < TJ; a++)
#pragma unroll
                            for (int c = 0; c < TI; c++) Sp[u][a][c] = M[a][c];
                        b7_fwd_step<K>(M, sah[u], sm, s0 + u, g, p);
                    }
                }
#pragma unroll
                for (int u = KS - 1; u >= 0; u--) {
                    const int s = s0 + u, t = t0 + s;
                    const int64_t orow = ((int64_t)b * T + t) * C + (int64_t)h * N;
                    b7_bwd_step<K>(D, Sp[u], sah[u], sm, part + u * K::NWMAX * 5 * N, s, t, g, p, A, orow);
                }
                __syncthreads(); /* the pieces' column partials are complete */
#pragma unroll
                for (int ko = 0; ko < (KS * 5 * N + NT - 1) / NT; ko++) {
                    const int o = tid + ko * NT;
                    const int u = o / (5 * N), qn = (o / N) % 5, i = o % N, s = s0 + u, t = t0 + s;
                    if (o >= KS * 5 * N || t >= T) continue;
                    const float *src = part + u * K::NWMAX * 5 * N + qn * N + i;
                    float acc = 0.0f;
                    for (int w = 0; w < nw; w++) acc += src[w * 5 * N];
                    const int64_t e = ((int64_t)b * T + t) * C + (int64_t)h * N + i;
                    switch (qn) {
                    case 0: A.gw[e] = fromf<act_t>(-sE[s * N + i] * sD[s * N + i] * acc); break;
                    case 1: A.gk[e] = fromf<act_t>(acc); break;
                    case 2: A.gb[e] = fromf<act_t>(acc); break;
                    case 3: A.ga[e] = fromf<act_t>(acc); break;
                    default: A.gr[e] = fromf<act_t>(acc); break;
                    }
                }
                __syncthreads(); /* the partial buffer is free again */
            }
        }
    }

    if (A.gs0_dst) { /* D = dS_0 */
        float *dst = A.gs0_dst + (int64_t)bh * NN;
#pragma unroll
        for (int a = 0; a < TJ; a++)
#pragma unroll
            for (int c = 0; c < TI; c++) {
                float *q = dst + tile_index(a, c);
                *q = A.gs0_acc ? *q + D[a][c] : D[a][c];
            }
    }
}

/* ---- generic kernels: any N, state in global scratch ------------------------------------------ */

#define W7G_THREADS 256
#define W7G_SEG 16

/* S ← one step t of (b,h) on the global state S (N×N); sav receives sa. Two barriers. */
RP_DEV void w7g_step(float *S, float *sav, const w7_args &A, int64_t o, int N) {
    const int tid = threadIdx.x, nt = blockDim.x;
    for (int j = tid; j < N; j += nt) {
        float acc = 0.0f;
        for (int i = 0; i < N; i++) acc = fmaf(tof(A.a[o + i]), S[(int64_t)j * N + i], acc);
        sav[j] = acc;
    }
    __syncthreads();
    for (int64_t e = tid; e < (int64_t)N * N; e += nt) {
        const int j = (int)(e / N), i = (int)(e % N);
        S[e] = fmaf(S[e], decay_of(tof(A.w[o + i])), fmaf(sav[j], tof(A.b[o + i]), tof(A.v[o + j]) * tof(A.k[o + i])));
    }
    __syncthreads();
}

/* scratch per (b,h): S N², sa N */
__global__ void wkv7_generic_forward_kernel(w7_args A, float *scr, int N) {
    const int bh = blockIdx.x, b = bh / A.H, h = bh % A.H, tid = threadIdx.x, nt = blockDim.x;
    const int64_t NN = (int64_t)N * N, C = (int64_t)A.H * N;
    float *S = scr + (int64_t)bh * (NN + N), *sav = S + NN;
    const par_t *m0 = A.s0 ? A.s0 + (A.s0_shared ? (int64_t)h : (int64_t)bh) * NN : NULL;
    for (int64_t e = tid; e < NN; e += nt) S[e] = m0 ? m0[e] : 0.0f;
    __syncthreads();
    for (int t = 0; t < A.T; t++) {
        const int64_t o = ((int64_t)b * A.T + t) * C + (int64_t)h * N;
        w7g_step(S, sav, A, o, N);
        for (int j = tid; j < N; j += nt) {
            float acc = 0.0f;
            for (int i = 0; i < N; i++) acc = fmaf(S[(int64_t)j * N + i], tof(A.r[o + i]), acc);
            A.y[o + j] = fromf<act_t>(acc);
        }
        /* the next step's first barrier orders these reads before its state update */
    }
    __syncthreads();
    if (A.s_out)
        for (int64_t e = tid; e < NN; e += nt) A.s_out[(int64_t)bh * NN + e] = S[e];
}

/* scratch per (b,h): checkpoints nseg·N², segment states (SEG+1)·N², dS N², sa SEG·N, dsa N */
__global__ void wkv7_generic_backward_kernel(w7_args A, float *scr, int N) {
    const int bh = blockIdx.x, b = bh / A.H, h = bh % A.H, tid = threadIdx.x, nt = blockDim.x, T = A.T;
    const int64_t NN = (int64_t)N * N, C = (int64_t)A.H * N;
    const int nseg = (T + W7G_SEG - 1) / W7G_SEG;
    float *ck = scr + (int64_t)bh * ((int64_t)(nseg + W7G_SEG + 2) * NN + (W7G_SEG + 1) * N);
    float *segS = ck + (int64_t)nseg * NN, *dS = segS + (int64_t)(W7G_SEG + 1) * NN, *sah = dS + NN,
          *dsa = sah + (int64_t)W7G_SEG * N, *tmp = segS; /* tmp: the running state of the first sweep */
    const par_t *m0 = A.s0 ? A.s0 + (A.s0_shared ? (int64_t)h : (int64_t)bh) * NN : NULL;
    for (int64_t e = tid; e < NN; e += nt) tmp[e] = m0 ? m0[e] : 0.0f;
    __syncthreads();
    for (int t = 0; t < T; t++) {
        if (t % W7G_SEG == 0) {
            for (int64_t e = tid; e < NN; e += nt) ck[(int64_t)(t / W7G_SEG) * NN + e] = tmp[e];
            __syncthreads();
        }
        w7g_step(tmp, dsa, A, ((int64_t)b * T + t) * C + (int64_t)h * N, N);
    }
    for (int64_t e = tid; e < NN; e += nt) dS[e] = A.gs_out ? A.gs_out[(int64_t)bh * NN + e] : 0.0f;
    __syncthreads();
    for (int sg = nseg - 1; sg >= 0; sg--) {
        const int t0 = sg * W7G_SEG, t1 = t0 + W7G_SEG < T ? t0 + W7G_SEG : T;
        for (int64_t e = tid; e < NN; e += nt) segS[e] = ck[(int64_t)sg * NN + e];
        __syncthreads();
        for (int t = t0; t < t1; t++) {
            float *Sn = segS + (int64_t)(t - t0 + 1) * NN;
            for (int64_t e = tid; e < NN; e += nt) Sn[e] = Sn[e - NN];
            __syncthreads();
            w7g_step(Sn, sah + (int64_t)(t - t0) * N, A, ((int64_t)b * T + t) * C + (int64_t)h * N, N);
        }
        for (int t = t1 - 1; t >= t0; t--) {
            const int64_t o = ((int64_t)b * T + t) * C + (int64_t)h * N;
            const float *Sp = segS + (int64_t)(t - t0) * NN, *Sc = Sp + NN, *sa = sah + (int64_t)(t - t0) * N;
            for (int64_t e = tid; e < NN; e += nt) {
                const int j = (int)(e / N), i = (int)(e % N);
                dS[e] = fmaf(tof(A.gy[o + j]), tof(A.r[o + i]), dS[e]);
            }
            __syncthreads();
            for (int i = tid; i < N; i += nt) {
                float rr = 0.0f, dd = 0.0f, kk = 0.0f, bb = 0.0f;
                for (int j = 0; j < N; j++) {
                    const float ds = dS[(int64_t)j * N + i];
                    rr = fmaf(Sc[(int64_t)j * N + i], tof(A.gy[o + j]), rr);
                    dd = fmaf(ds, Sp[(int64_t)j * N + i], dd);
                    kk = fmaf(ds, tof(A.v[o + j]), kk);
                    bb = fmaf(ds, sa[j], bb);
                }
                const float ew = expf(tof(A.w[o + i]));
                A.gr[o + i] = fromf<act_t>(rr);
                A.gw[o + i] = fromf<act_t>(-ew * expf(-ew) * dd);
                A.gk[o + i] = fromf<act_t>(kk);
                A.gb[o + i] = fromf<act_t>(bb);
            }
            for (int j = tid; j < N; j += nt) {
                float vv = 0.0f, ss = 0.0f;
                for (int i = 0; i < N; i++) {
                    const float ds = dS[(int64_t)j * N + i];
                    vv = fmaf(ds, tof(A.k[o + i]), vv);
                    ss = fmaf(ds, tof(A.b[o + i]), ss);
                }
                A.gv[o + j] = fromf<act_t>(vv);
                dsa[j] = ss;
            }
            __syncthreads();
            for (int i = tid; i < N; i += nt) {
                float acc = 0.0f;
                for (int j = 0; j < N; j++) acc = fmaf(Sp[(int64_t)j * N + i], dsa[j], acc);
                A.ga[o + i] = fromf<act_t>(acc);
            }
            for (int64_t e = tid; e < NN; e += nt) {
                const int j = (int)(e / N), i = (int)(e % N);
                dS[e] = fmaf(dsa[j], tof(A.a[o + i]), dS[e] * decay_of(tof(A.w[o + i])));
            }
            __syncthreads();
        }
    }
    if (A.gs0_dst)
        for (int64_t e = tid; e < NN; e += nt) {
            float *q = A.gs0_dst + (int64_t)bh * NN + e;
            *q = A.gs0_acc ? *q + dS[e] : dS[e];
        }
}

} // namespace

/* ---- launchers ---- */

/* -1 = automatic; RWKVPEFT_WKV7_PATH=generic forces the generic kernels (testing),
 * RWKVPEFT_WKV7_TILES=wide|mid|narrow the forward's tile tier (benchmarking). Read once. */
static int w7_env_generic(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("RWKVPEFT_WKV7_PATH");
        v = e && !strcmp(e, "generic") ? 1 : 0;
    }
    return v;
}
static int w7_env_tier(void) {
    static int mode = -2;
    if (mode == -2) {
        const char *e = getenv("RWKVPEFT_WKV7_TILES");
        static const char *const names[] = {"wide", "mid", "narrow"};
        mode = -1;
        for (int i = 0; e && i < 3; i++)
            if (!strcmp(e, names[i])) mode = i;
    }
    return mode;
}

/* The forward's tier: wide from 1.5 heads per SM, then mid, else narrow (measured on an H200,
 * docs/backends.md "WKV7 kernels": B·H = 256 runs best with the wide tiles, 32 with the narrow
 * ones). */
static int w7_pick_tier(int64_t BH) {
    const int mode = w7_env_tier();
    if (mode >= 0) return mode;
    const int64_t want = 3 * (int64_t)wkv_sm_count() / 2;
    return BH >= want ? 0 : 2 * BH >= want ? 1 : 2;
}

template <bool Y, bool CK> static void w7_launch_fwd(cudaStream_t s, const w7_args &a, int tier) {
    const int64_t BH = (int64_t)a.B * a.H;
    switch (tier) {
    case 0: wkv7_forward_kernel<f7_tier<0>::cfg, Y, CK><<<(unsigned)BH, 64, 0, s>>>(a); break;
    case 1: wkv7_forward_kernel<f7_tier<1>::cfg, Y, CK><<<(unsigned)(BH * 2), 64, 0, s>>>(a); break;
    default: wkv7_forward_kernel<f7_tier<2>::cfg, Y, CK><<<(unsigned)(BH * 4), 64, 0, s>>>(a); break;
    }
}

#if !defined(RWKVPEFT_CUDA_EMULATION) && !defined(RWKVPEFT_USE_HIP)
/* Whether the device grants pass-B kernel K its dynamic shared memory (set once per device). */
template <class K> static bool w7_grant(const cudaDeviceProp &p) {
    const size_t need = sizeof(float) * (size_t)K::SMEM;
    return p.sharedMemPerBlockOptin >= need &&
           cudaFuncSetAttribute(wkv7_backward_kernel<K>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need) ==
               cudaSuccess;
}
#endif

/* Which of pass B's fast kernels runs B·H heads on this device (their dynamic shared memory
 * granted once per device): 1 = b7_64, 2 = b7_64s, 3 = b7_64t, 0 = none (the generic kernels).
 * b7_64t, at ~1.35× b7_64's time per head, wins only where it saves a wave: more than two and
 * at most three heads per SM (H200, B8 T1024: H40, 320 heads, 4.09 against 4.24 ms; H32, 256
 * heads, 3.08 against 2.29 ms — docs/backends.md "WKV7 kernels"). $RWKVPEFT_WKV7_PATH=lowsmem
 * forces b7_64s (testing), =three b7_64t; a forced kernel the device cannot run falls back as
 * the automatic choice does. */
static int w7_fast_bwd(rp_backend *be, int64_t BH) {
    static int forced = -1; /* the kernel number forced, 0 = automatic */
    if (forced < 0) {
        const char *e = getenv("RWKVPEFT_WKV7_PATH");
        forced = e && !strcmp(e, "lowsmem") ? 2 : e && !strcmp(e, "three") ? 3 : 0;
    }
#if defined(RWKVPEFT_CUDA_EMULATION)
    (void)be;
    (void)BH;
    return forced ? forced : 1;
#elif defined(RWKVPEFT_USE_HIP)
    (void)be;
    (void)BH;
    return 0; /* 64 KB of LDS per workgroup on AMD: the generic kernels (not tuned for AMD yet) */
#else
    static int which[16]; /* per device: 0 = not decided yet, else (the two-per-SM kernel + 1) | 4 if b7_64t runs */
    const int dev = be->device;
    if (dev < 0 || dev >= 16) return 0;
    if (which[dev] == 0) {
        cudaDeviceProp p;
        int w = 0, three = 0; /* none */
        if (cudaGetDeviceProperties(&p, dev) == cudaSuccess) {
            three = w7_grant<b7_64t>(p);
            if (forced != 2 && w7_grant<b7_64>(p)) w = 1;
            else if (w7_grant<b7_64s>(p)) w = 2;
        }
        (void)cudaGetLastError(); /* a refused attribute is not sticky */
        which[dev] = (w + 1) | (three ? 4 : 0);
    }
    const int two = (which[dev] & 3) - 1, three = which[dev] & 4;
    if (three && forced == 3) return 3;
    const int64_t sms = wkv_sm_count();
    if (three && !forced && two == 1 && BH > 2 * sms && BH <= 3 * sms) return 3;
    return two;
#endif
}

static int w7_check(rp_backend *be, const char *op, int B, int T, int H, int N) {
    if (B < 0 || T < 0 || H < 0 || N < 0) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "%s: negative size", op);
    if ((int64_t)B * H > 0x7fffffffLL / 4) return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "%s: B·H too large", op);
    return 0;
}


int cu_wkv7_fwd(rp_backend *be, void *y, void *s_out, const void *r, const void *w, const void *k, const void *v,
                const void *a, const void *b, const void *s0, int s0_shared, int B, int T, int H, int N) {
    RP_TRY(w7_check(be, "wkv7_fwd", B, T, H, N));
    if (B == 0 || H == 0 || N == 0) return 0;
    CU_ENTER(be);
    cudaStream_t s = cu_stream(be);
    w7_args A;
    memset(&A, 0, sizeof A);
    A.B = B;
    A.T = T;
    A.H = H;
    A.vec = wkv_aligned(r) && wkv_aligned(w) && wkv_aligned(k) && wkv_aligned(v) && wkv_aligned(a) && wkv_aligned(b);
    A.r = (const act_t *)r;
    A.w = (const act_t *)w;
    A.k = (const act_t *)k;
    A.v = (const act_t *)v;
    A.a = (const act_t *)a;
    A.b = (const act_t *)b;
    A.s0 = (const par_t *)s0;
    A.s0_shared = s0_shared;
    A.y = (act_t *)y;
    A.s_out = (par_t *)s_out;
    if (N == 64 && !w7_env_generic()) {
        w7_launch_fwd<true, false>(s, A, w7_pick_tier((int64_t)B * H));
    } else {
        void *scr;
        RP_TRY(cu_scratch(be, sizeof(float) * (size_t)((int64_t)B * H * ((int64_t)N * N + N)), &scr));
        wkv7_generic_forward_kernel<<<(unsigned)((int64_t)B * H), W7G_THREADS, 0, s>>>(A, (float *)scr, N);
    }
    CU_LAUNCHED(be);
    return 0;
}

int cu_wkv7_bwd(rp_backend *be, void *gr, void *gw, void *gk, void *gv, void *ga, void *gb, void *gs0,
                const void *gy, const void *gs_out, const void *r, const void *w, const void *k, const void *v,
                const void *a, const void *b, const void *s0, int s0_shared, int B, int T, int H, int N) {
    RP_TRY(w7_check(be, "wkv7_bwd", B, T, H, N));
    if (B == 0 || H == 0 || N == 0) return 0;
    CU_ENTER(be);
    cudaStream_t s = cu_stream(be);
    const int64_t NN = (int64_t)N * N, BH = (int64_t)B * H;
    const int fast = N == 64 && !w7_env_generic() ? w7_fast_bwd(be, BH) : 0;
    const int shared_gs0 = gs0 && s0_shared;
    const int64_t nseg = (T + 15) / 16;
    const size_t work_bytes = fast ? cu_round(sizeof(float) * (size_t)(BH * nseg * NN))
                                   : cu_round(sizeof(float) * (size_t)(BH * ((nseg + W7G_SEG + 2) * NN +
                                                                             (W7G_SEG + 1) * (int64_t)N)));
    const size_t gs_bytes = shared_gs0 ? cu_round(sizeof(float) * (size_t)(BH * NN)) : 0;
    void *scr;
    RP_TRY(cu_scratch(be, work_bytes + gs_bytes + 256, &scr));
    char *cur = (char *)scr;
    float *work = (float *)cu_carve(&cur, work_bytes);
    float *gs_part = shared_gs0 ? (float *)cu_carve(&cur, gs_bytes) : NULL;
    w7_args A;
    memset(&A, 0, sizeof A);
    A.B = B;
    A.T = T;
    A.H = H;
    A.vec = wkv_aligned(r) && wkv_aligned(w) && wkv_aligned(k) && wkv_aligned(v) && wkv_aligned(a) && wkv_aligned(b) &&
            wkv_aligned(gy);
    A.r = (const act_t *)r;
    A.w = (const act_t *)w;
    A.k = (const act_t *)k;
    A.v = (const act_t *)v;
    A.a = (const act_t *)a;
    A.b = (const act_t *)b;
    A.gy = (const act_t *)gy;
    A.s0 = (const par_t *)s0;
    A.s0_shared = s0_shared;
    A.gs_out = (const par_t *)gs_out;
    A.gr = (act_t *)gr;
    A.gw = (act_t *)gw;
    A.gk = (act_t *)gk;
    A.gv = (act_t *)gv;
    A.ga = (act_t *)ga;
    A.gb = (act_t *)gb;
    /* per-sequence gs0: each (b,h) slice belongs to one block: accumulate in place */
    A.gs0_dst = gs0 ? (shared_gs0 ? gs_part : (float *)gs0) : NULL;
    A.gs0_acc = gs0 && !shared_gs0;
    if (fast) {
        A.ck = work;
        w7_launch_fwd<false, true>(s, A, w7_pick_tier(BH)); /* pass A: checkpoints */
        CU_LAUNCHED(be);
        if (fast == 1)
            wkv7_backward_kernel<b7_64><<<(unsigned)BH, b7_64::NT, sizeof(float) * (size_t)b7_64::SMEM, s>>>(A);
        else if (fast == 3)
            wkv7_backward_kernel<b7_64t><<<(unsigned)BH, b7_64t::NT, sizeof(float) * (size_t)b7_64t::SMEM, s>>>(A);
        else
            wkv7_backward_kernel<b7_64s><<<(unsigned)BH, b7_64s::NT, sizeof(float) * (size_t)b7_64s::SMEM, s>>>(A);
    } else {
        wkv7_generic_backward_kernel<<<(unsigned)BH, W7G_THREADS, 0, s>>>(A, work, N);
    }
    CU_LAUNCHED(be);
    if (shared_gs0) {
        const int64_t per = (int64_t)H * NN;
        wkv_sum_over_batch_kernel<<<cu_blocks(per, 256), 256, 0, s>>>((par_t *)gs0, gs_part, B, per);
        CU_LAUNCHED(be);
    }
    return 0;
}
