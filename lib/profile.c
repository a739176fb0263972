/* profile.c — per-op timing for any backend (RWKVPEFT_PROFILE=1).
 *
 * The context wraps its backend's table in a copy whose entries synchronise the device,
 * time the real op on the host clock, and add the time to a per-op total; freeing the
 * context logs the table (WARN level, so it shows with default settings). Synchronising
 * after every op removes overlap between launches, so the totals are an upper bound of
 * each op's device time and the sum is slower than an unprofiled step; use it to see where
 * time goes, not for headline figures. One profiled context at a time per process.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <string.h>

#include "model.h"

enum {
    P_GEMM, P_GEMM_LR, P_GEMM_BIG, P_EMB_F, P_EMB_B, P_NORM_F, P_NORM_B, P_MIX_F, P_MIX_B, P_ACT_F, P_ACT_B, P_MUL_F, P_MUL_B, P_ADD, P_BCAST,
    P_SUMROWS, P_DROP, P_WKV_F, P_WKV_B, P_LERP_F, P_LERP_B, P_WKV7_F, P_WKV7_B, P_V7_F, P_V7_B, P_CE, P_SUMSQ, P_ADAM, P_ADAM8, P_DEQ, P_COPY, P_COUNT
};
static const char *const prof_names[P_COUNT] = {
    "gemm dense", "gemm low-rank", "gemm vocab", "embedding_fwd", "embedding_bwd", "norm_fwd", "norm_bwd", "shift_mix_fwd", "shift_mix_bwd", "act_fwd",
    "act_bwd", "(act_)mul_fwd", "(act_)mul_bwd", "add", "broadcast_rows", "sum_rows", "dropout", "wkv6_fwd", "wkv6_bwd",
    "lerp_fwd", "lerp_bwd", "wkv7_fwd", "wkv7_bwd", "v7_kprep/bonus_fwd", "v7_kprep/bonus_bwd",
    "cross_entropy", "sumsq", "adam_update", "adam8_update", "dequant", "memcpy/convert"};

static const rp_backend_ops *real_ops;
static rp_backend_ops wrapped;
static double prof_ms[P_COUNT];
static double prof_flop[P_COUNT]; /* 2·m·n·k·batch for the GEMM classes */
static long prof_calls[P_COUNT];

/* One wrapper per entry: sync, time the call, sync again. */
#define PROF(idx, name, params, args)                           \
    static int prof_##name params {                             \
        real_ops->synchronize(be);                              \
        double t0 = rp_monotonic_ms();                                   \
        int rc = real_ops->name args;                           \
        real_ops->synchronize(be);                              \
        prof_ms[idx] += rp_monotonic_ms() - t0;                          \
        prof_calls[idx]++;                                      \
        return rc;                                              \
    }

/* GEMMs are split into three classes because they behave differently: the dense block
 * linears (compute-bound), the low-rank LoRA/mixer products (one side ≤ 256: bandwidth- and
 * launch-bound) and the products with a side ≥ 32768 (the vocabulary head). */
static int prof_gemm(rp_backend *be, int ta, int tb, int m, int n, int k, float alpha, const void *a, rp_dtype tya,
                     int64_t lda, int64_t sa, const void *b, rp_dtype tyb, int64_t ldb, int64_t sb, float beta, void *c,
                     rp_dtype tyc, int64_t ldc, int64_t sc, int batch) {
    int lo = m < n ? m : n, hi = m > n ? m : n;
    if (k < lo) lo = k;
    if (k > hi) hi = k;
    int idx = hi >= 32768 ? P_GEMM_BIG : lo <= 256 ? P_GEMM_LR : P_GEMM; /* the head's row chunks are ≤ 256 rows too */
    real_ops->synchronize(be);
    double t0 = rp_monotonic_ms();
    int rc = real_ops->gemm(be, ta, tb, m, n, k, alpha, a, tya, lda, sa, b, tyb, ldb, sb, beta, c, tyc, ldc, sc, batch);
    real_ops->synchronize(be);
    prof_ms[idx] += rp_monotonic_ms() - t0;
    prof_calls[idx]++;
    prof_flop[idx] += 2.0 * m * n * (double)k * (batch > 0 ? batch : 1);
    return rc;
}
PROF(P_EMB_F, embedding_fwd, (rp_backend * be, void *o, const void *t, const int32_t *ids, int64_t n, int C),
     (be, o, t, ids, n, C))
PROF(P_EMB_B, embedding_bwd, (rp_backend * be, void *d, const void *g, const int32_t *ids, int64_t n, int C),
     (be, d, g, ids, n, C))
PROF(P_NORM_F, norm_fwd,
     (rp_backend * be, void *y, void *mu, void *rs, const void *x, const void *w, const void *b, int64_t n, int G, int S,
      float eps),
     (be, y, mu, rs, x, w, b, n, G, S, eps))
PROF(P_NORM_B, norm_bwd,
     (rp_backend * be, void *dx, void *dw, void *db, const void *dy, const void *x, const void *w, const void *mu,
      const void *rs, int64_t n, int G, int S),
     (be, dx, dw, db, dy, x, w, mu, rs, n, G, S))
PROF(P_NORM_F, norm_gate_fwd,
     (rp_backend * be, void *o, void *mu, void *rs, const void *x, const void *w, const void *b, const void *gt,
      int silu, int64_t n, int G, int S, float eps),
     (be, o, mu, rs, x, w, b, gt, silu, n, G, S, eps))
PROF(P_NORM_B, norm_gate_bwd,
     (rp_backend * be, void *dx, void *dgt, void *dw, void *db, const void *dy, const void *x, const void *w,
      const void *b, const void *gt, int silu, const void *mu, const void *rs, int64_t n, int G, int S),
     (be, dx, dgt, dw, db, dy, x, w, b, gt, silu, mu, rs, n, G, S))
PROF(P_MIX_F, shift_mix_fwd,
     (rp_backend * be, void *o, const void *x, const void *xp, const void *c, const void *m, int fm, int ns, int B, int T,
      int C),
     (be, o, x, xp, c, m, fm, ns, B, T, C))
PROF(P_MIX_B, shift_mix_bwd,
     (rp_backend * be, void *dx, void *dxp, void *dc, void *dm, const void *g, const void *x, const void *xp,
      const void *c, const void *m, int fm, int ns, int B, int T, int C),
     (be, dx, dxp, dc, dm, g, x, xp, c, m, fm, ns, B, T, C))
PROF(P_ACT_F, act_fwd, (rp_backend * be, int kind, void *y, const void *x, int64_t n), (be, kind, y, x, n))
PROF(P_ACT_B, act_bwd, (rp_backend * be, int kind, void *dx, const void *dy, const void *x, const void *y, int64_t n),
     (be, kind, dx, dy, x, y, n))
PROF(P_MUL_F, act_mul_fwd,
     (rp_backend * be, int kind, void *y, const void *a, const void *b, const void *r, int64_t n),
     (be, kind, y, a, b, r, n))
PROF(P_MUL_B, act_mul_bwd,
     (rp_backend * be, int kind, void *da, void *db, const void *dy, const void *a, const void *b, int64_t n),
     (be, kind, da, db, dy, a, b, n))
PROF(P_MUL_F, mul_fwd, (rp_backend * be, void *y, const void *a, const void *b, int64_t n), (be, y, a, b, n))
PROF(P_MUL_B, mul_bwd, (rp_backend * be, void *da, void *db, const void *dy, const void *a, const void *b, int64_t n),
     (be, da, db, dy, a, b, n))
PROF(P_ADD, add, (rp_backend * be, void *y, const void *x, float alpha, int64_t n), (be, y, x, alpha, n))
PROF(P_BCAST, broadcast_rows, (rp_backend * be, void *y, const void *v, int64_t n, int C, int acc), (be, y, v, n, C, acc))
PROF(P_SUMROWS, sum_rows, (rp_backend * be, void *dv, const void *dy, int64_t n, int C), (be, dv, dy, n, C))
PROF(P_DROP, dropout, (rp_backend * be, void *y, const void *x, int64_t n, float p, uint64_t seed), (be, y, x, n, p, seed))
PROF(P_WKV_F, wkv6_fwd,
     (rp_backend * be, void *y, void *so, const void *r, const void *k, const void *v, const void *w, const void *u,
      const void *s0, int sh, int B, int T, int H, int N),
     (be, y, so, r, k, v, w, u, s0, sh, B, T, H, N))
PROF(P_WKV_B, wkv6_bwd,
     (rp_backend * be, void *gr, void *gk, void *gv, void *gw, void *gu, void *gs0, const void *gy, const void *gso,
      const void *r, const void *k, const void *v, const void *w, const void *u, const void *s0, int sh, int B, int T,
      int H, int N, void *scr, size_t scr_bytes),
     (be, gr, gk, gv, gw, gu, gs0, gy, gso, r, k, v, w, u, s0, sh, B, T, H, N, scr, scr_bytes))
PROF(P_LERP_F, lerp_fwd, (rp_backend * be, void *y, const void *a, const void *b, const void *t, int64_t n),
     (be, y, a, b, t, n))
PROF(P_LERP_B, lerp_bwd,
     (rp_backend * be, void *da, void *db, void *dt, const void *dy, const void *a, const void *b, const void *t, int64_t n),
     (be, da, db, dt, dy, a, b, t, n))
PROF(P_WKV7_F, wkv7_fwd,
     (rp_backend * be, void *y, void *so, const void *r, const void *w, const void *k, const void *v, const void *a,
      const void *b, const void *s0, int sh, int B, int T, int H, int N),
     (be, y, so, r, w, k, v, a, b, s0, sh, B, T, H, N))
PROF(P_WKV7_B, wkv7_bwd,
     (rp_backend * be, void *gr, void *gw, void *gk, void *gv, void *ga, void *gb, void *gs0, const void *gy,
      const void *gso, const void *r, const void *w, const void *k, const void *v, const void *a, const void *b,
      const void *s0, int sh, int B, int T, int H, int N),
     (be, gr, gw, gk, gv, ga, gb, gs0, gy, gso, r, w, k, v, a, b, s0, sh, B, T, H, N))
PROF(P_V7_F, v7_kprep_fwd,
     (rp_backend * be, void *ko, void *wa, void *wb, const void *k, const void *a, const void *kk, const void *ka,
      int64_t n, int H, int N),
     (be, ko, wa, wb, k, a, kk, ka, n, H, N))
PROF(P_V7_B, v7_kprep_bwd,
     (rp_backend * be, void *dk, void *da, void *dkk, void *dka, const void *dko, const void *dwa, const void *dwb,
      const void *k, const void *a, const void *kk, const void *ka, int64_t n, int H, int N),
     (be, dk, da, dkk, dka, dko, dwa, dwb, k, a, kk, ka, n, H, N))
PROF(P_V7_F, v7_bonus_fwd,
     (rp_backend * be, void *y, const void *r, const void *k, const void *v, const void *rk, int64_t n, int H, int N),
     (be, y, r, k, v, rk, n, H, N))
PROF(P_V7_B, v7_bonus_bwd,
     (rp_backend * be, void *dr, void *dk, void *dv, void *drk, const void *dy, const void *r, const void *k,
      const void *v, const void *rk, int64_t n, int H, int N),
     (be, dr, dk, dv, drk, dy, r, k, v, rk, n, H, N))
PROF(P_CE, cross_entropy,
     (rp_backend * be, void *ls, void *dl, const void *lg, const int32_t *tg, const void *wt, int64_t n, int V, float gs,
      float l2),
     (be, ls, dl, lg, tg, wt, n, V, gs, l2))
PROF(P_SUMSQ, sumsq, (rp_backend * be, void *acc, const void *x, const rp_adam_segment *s, int ns), (be, acc, x, s, ns))
PROF(P_ADAM, adam_update,
     (rp_backend * be, void *p, const void *g, void *m, void *v, const rp_adam_segment *s, int ns, const void *nsq,
      float mx, float lr, float b1, float b2, float eps, int64_t step),
     (be, p, g, m, v, s, ns, nsq, mx, lr, b1, b2, eps, step))
PROF(P_ADAM8, adam8_update,
     (rp_backend * be, void *p, const void *g, uint8_t *mq, uint8_t *vq, float *ma, float *va, const float *cm,
      const float *cv, int64_t n, const rp_adam_segment *s, int ns, const void *nsq, float mx, float lr, float b1,
      float b2, float eps, int64_t step),
     (be, p, g, mq, vq, ma, va, cm, cv, n, s, ns, nsq, mx, lr, b1, b2, eps, step))
PROF(P_DEQ, dequant,
     (rp_backend * be, void *o, const void *q, const void *am, const void *code, int fmt, int64_t n, int bs),
     (be, o, q, am, code, fmt, n, bs))
PROF(P_COPY, memcpy_d2d, (rp_backend * be, void *d, const void *s, size_t n), (be, d, s, n))
PROF(P_COPY, convert, (rp_backend * be, void *d, rp_dtype dt, const void *s, rp_dtype st, int64_t n), (be, d, dt, s, st, n))
PROF(P_COPY, memset_zero, (rp_backend * be, void *d, size_t n), (be, d, n))

/* Returns the profiling table wrapping `ops` (the same one for every call). */
const rp_backend_ops *rp_profile_wrap(const rp_backend_ops *ops) {
    real_ops = ops;
    wrapped = *ops;
    memset(prof_ms, 0, sizeof prof_ms);
    memset(prof_calls, 0, sizeof prof_calls);
    memset(prof_flop, 0, sizeof prof_flop);
    wrapped.gemm = prof_gemm;
    wrapped.embedding_fwd = prof_embedding_fwd;
    wrapped.embedding_bwd = prof_embedding_bwd;
    wrapped.norm_fwd = prof_norm_fwd;
    wrapped.norm_bwd = prof_norm_bwd;
    wrapped.norm_gate_fwd = prof_norm_gate_fwd;
    wrapped.norm_gate_bwd = prof_norm_gate_bwd;
    wrapped.shift_mix_fwd = prof_shift_mix_fwd;
    wrapped.shift_mix_bwd = prof_shift_mix_bwd;
    wrapped.act_fwd = prof_act_fwd;
    wrapped.act_bwd = prof_act_bwd;
    wrapped.act_mul_fwd = prof_act_mul_fwd;
    wrapped.act_mul_bwd = prof_act_mul_bwd;
    wrapped.mul_fwd = prof_mul_fwd;
    wrapped.mul_bwd = prof_mul_bwd;
    wrapped.add = prof_add;
    wrapped.broadcast_rows = prof_broadcast_rows;
    wrapped.sum_rows = prof_sum_rows;
    wrapped.dropout = prof_dropout;
    wrapped.wkv6_fwd = prof_wkv6_fwd;
    wrapped.wkv6_bwd = prof_wkv6_bwd;
    /* optional entries stay NULL when the backend lacks them */
#define WRAP_OPT(name) wrapped.name = ops->name ? prof_##name : NULL
    WRAP_OPT(lerp_fwd);
    WRAP_OPT(lerp_bwd);
    WRAP_OPT(wkv7_fwd);
    WRAP_OPT(wkv7_bwd);
    WRAP_OPT(v7_kprep_fwd);
    WRAP_OPT(v7_kprep_bwd);
    WRAP_OPT(v7_bonus_fwd);
    WRAP_OPT(v7_bonus_bwd);
    WRAP_OPT(adam8_update);
#undef WRAP_OPT
    wrapped.cross_entropy = prof_cross_entropy;
    wrapped.sumsq = prof_sumsq;
    wrapped.adam_update = prof_adam_update;
    wrapped.dequant = prof_dequant;
    wrapped.memcpy_d2d = prof_memcpy_d2d;
    wrapped.convert = prof_convert;
    wrapped.memset_zero = prof_memset_zero;
    return &wrapped;
}

void rp_profile_report(const rwkvpeft_context *ctx) {
    double total = 0;
    for (int i = 0; i < P_COUNT; i++) total += prof_ms[i];
    rp_log(ctx, RWKVPEFT_LOG_WARN, "profile (%s, synchronised per op): %.1f ms in %s ops", real_ops ? real_ops->name : "?",
           total, "backend");
    for (int i = 0; i < P_COUNT; i++) {
        if (!prof_calls[i]) continue;
        char rate[32] = "";
        if (prof_flop[i] > 0 && prof_ms[i] > 0) snprintf(rate, sizeof rate, "  %.1f TFLOP/s", prof_flop[i] / (prof_ms[i] * 1e9));
        rp_log(ctx, RWKVPEFT_LOG_WARN, "  %-16s %9.1f ms %5.1f%% %8ld calls%s", prof_names[i], prof_ms[i],
               total > 0 ? 100 * prof_ms[i] / total : 0, prof_calls[i], rate);
    }
}
