/* bench_wkv.c — micro-benchmark of the WKV ops (wkv6_fwd/bwd, or wkv7_fwd/bwd with --op wkv7)
 * through the backend table.
 *
 *   bench_wkv [--op wkv6|wkv7] [--backend cuda] [--samples 15] [--inner 10] [--check 1] [--time 1]
 *             [--B 1,8] [--H 32,64] [--T 1024] [--N 64]
 *
 * --op wkv7 does the same for RWKV-7's recurrence: the check covers N = 64 (the fast kernels,
 * each forward tile tier by B·H) and other N (the generic kernels), every s0 mode, the state in
 * place, w up to 8, T = 0, unaligned buffers; the timing uses w in [−6, −0.5] (the soft clamp's
 * range) and a = −kk, b = kk·gate with kk a unit vector per head, as the model passes them.
 *
 * 1. Check: on small shapes (every built head size, T not a multiple of the chunk, shared /
 *    per-batch / no s0, the state advanced in place, gu = NULL, large w, a batch wide enough
 *    for the wide tiles, buffers not 16-byte aligned) every output is compared with the float64 CPU backend (cpu64) on
 *    identical inputs (rounded to the backend's activation type): normalised L2 error
 *    ‖got − ref‖/‖ref‖ against 1e-2 for activations (bf16) and 1e-4 for fp32 states.
 * 2. Time: for each B × H (T, N fixed) with and without state (s0 per sequence + s_out; in the
 *    backward gs_out + gs0), `samples` times: synchronize, `inner` calls, synchronize; prints
 *    the median per call, the minimum, and the bandwidth of the bytes an op must move at least
 *    (inputs read once, outputs written once) over the median time.
 * Exit status 1 when a check fails. The module comes from $RWKVPEFT_MODULE_PATH (or the
 * loader's search path), like every GPU backend.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bench_util.h"
#include "kernel_common.h"

const char *const bench_prog = "bench_wkv";

/* ---- a tensor on one backend, from and to host float ---------------------------------- */

typedef struct dev_t_ {
    rp_backend *be;
    void *d, *base;
    rp_dtype t;
    int64_t n;
} dev_t_;

/* n elements at `off` elements past an allocation's start (off = 1: not 16-byte aligned) */
static dev_t_ dev_alloc_at(rp_backend *be, rp_dtype t, int64_t n, int off) {
    dev_t_ x = {be, NULL, NULL, t, n};
    size_t bytes = rp_dtype_size(t) * (size_t)((n > 0 ? n : 1) + off);
    OK(be, be->ops->alloc(be, &x.base, bytes));
    x.d = (char *)x.base + rp_dtype_size(t) * (size_t)off;
    return x;
}
static dev_t_ dev_alloc(rp_backend *be, rp_dtype t, int64_t n) { return dev_alloc_at(be, t, n, 0); }
static void dev_put(dev_t_ *x, const float *h) {
    size_t es = rp_dtype_size(x->t);
    void *tmp = malloc(es * (size_t)(x->n > 0 ? x->n : 1));
    if (x->t == RP_F64) {
        for (int64_t i = 0; i < x->n; i++) ((double *)tmp)[i] = h[i];
    } else if (rp_convert_from_f32(tmp, x->t, h, (size_t)x->n)) {
        die("convert", NULL);
    }
    OK(x->be, x->be->ops->memcpy_h2d(x->be, x->d, tmp, es * (size_t)x->n));
    free(tmp);
}
/* NaN everywhere: an element the op fails to write shows up in the comparison */
static void dev_poison(dev_t_ *x) {
    float *h = malloc(sizeof(float) * (size_t)(x->n > 0 ? x->n : 1));
    for (int64_t i = 0; i < x->n; i++) h[i] = NAN;
    dev_put(x, h);
    free(h);
}
static void dev_get(dev_t_ *x, double *h) {
    size_t es = rp_dtype_size(x->t);
    void *tmp = malloc(es * (size_t)(x->n > 0 ? x->n : 1));
    OK(x->be, x->be->ops->memcpy_d2h(x->be, tmp, x->d, es * (size_t)x->n));
    if (x->t == RP_F64) {
        for (int64_t i = 0; i < x->n; i++) h[i] = ((double *)tmp)[i];
    } else {
        float *f = malloc(sizeof(float) * (size_t)(x->n > 0 ? x->n : 1));
        if (rp_convert_to_f32(f, tmp, x->t, (size_t)x->n)) die("convert", NULL);
        for (int64_t i = 0; i < x->n; i++) h[i] = f[i];
        free(f);
    }
    free(tmp);
}
static void dev_free(dev_t_ *x) {
    if (x->base) x->be->ops->free(x->be, x->base);
    x->d = x->base = NULL;
}

/* values rounded to type t (what the backend will see) */
static float *gen(uint64_t seed, int64_t n, double lo, double hi, rp_dtype t) {
    float *h = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        float x = (float)(lo + (hi - lo) * rp_uniform01(seed, (uint64_t)i));
        if (t == RP_BF16) x = rp_bf16_to_f32(rp_f32_to_bf16(x));
        h[i] = x;
    }
    return h;
}

/* ---- check against cpu64 ------------------------------------------------------------- */

typedef struct wkv_case {
    int B, T, H, N;
    int s0_mode; /* 0 none, 1 shared, 2 per sequence */
    int inplace; /* per-sequence state advanced in place (s_out = s0) */
    int with_gs, want_gu;
    double w_hi;  /* w uniform in [-6, w_hi] */
    int misalign; /* activation buffers one element past 16-byte alignment */
} wkv_case;

static int n_fail;

static void expect(const char *label, const char *what, const double *got, const double *ref, int64_t n, double tol) {
    double d2 = 0, r2 = 0;
    int64_t bad = -1;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) && isfinite(ref[i]) && bad < 0) bad = i;
        double d = got[i] - ref[i];
        d2 += d * d;
        r2 += ref[i] * ref[i];
    }
    double e = r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
    int ok = bad < 0 && e <= tol;
    printf("  %-44s %-6s nerr %.2e (limit %.0e)%s\n", label, what, e, tol, ok ? "" : "  FAIL");
    if (bad >= 0) printf("    %s[%lld] = %g is not finite\n", what, (long long)bad, got[bad]);
    if (!ok) n_fail++;
}

/* Runs the forward and backward of one case on backend `be` with host inputs; outputs to host. */
typedef struct wkv_host {
    float *r, *k, *v, *w, *u, *s0, *gy, *gs_out, *gu0, *gs00;
} wkv_host;
typedef struct wkv_out {
    double *y, *s_out, *gr, *gk, *gv, *gw, *gu, *gs0;
} wkv_out;

static wkv_out run_case(rp_backend *be, const wkv_case *c, const wkv_host *in) {
    const rp_backend_ops *o = be->ops;
    const rp_dtype A = o->act_dtype, P = o->par_dtype;
    const int64_t n = (int64_t)c->B * c->T * c->H * c->N, NN = (int64_t)c->N * c->N;
    const int64_t ns = (int64_t)c->B * c->H * NN, n0 = (c->s0_mode == 1 ? 1 : c->B) * c->H * NN;
    const int shared = c->s0_mode == 1;
    wkv_out out;
    memset(&out, 0, sizeof out);
    const int mo = c->misalign ? 1 : 0;
    dev_t_ r = dev_alloc_at(be, A, n, mo), k = dev_alloc_at(be, A, n, mo), v = dev_alloc_at(be, A, n, mo),
           w = dev_alloc_at(be, A, n, mo);
    dev_t_ u = dev_alloc(be, P, (int64_t)c->H * c->N), y = dev_alloc_at(be, A, n, mo);
    dev_put(&r, in->r);
    dev_put(&k, in->k);
    dev_put(&v, in->v);
    dev_put(&w, in->w);
    dev_put(&u, in->u);
    dev_poison(&y);
    dev_t_ s0 = {be, NULL, NULL, P, 0}, so = {be, NULL, NULL, P, 0};
    if (c->s0_mode) {
        s0 = dev_alloc(be, P, n0);
        dev_put(&s0, in->s0);
    }
    if (c->inplace) {
        so = s0;
    } else {
        so = dev_alloc(be, P, ns);
        dev_poison(&so);
    }
    OK(be, o->wkv6_fwd(be, y.d, so.d, r.d, k.d, v.d, w.d, u.d, s0.d, shared, c->B, c->T, c->H, c->N));
    out.y = malloc(sizeof(double) * (size_t)n);
    out.s_out = malloc(sizeof(double) * (size_t)ns);
    dev_get(&y, out.y);
    dev_get(&so, out.s_out);
    if (c->inplace) { /* the backward needs the original s0 */
        dev_put(&s0, in->s0);
    } else {
        dev_free(&so);
    }
    /* backward */
    dev_t_ gy = dev_alloc_at(be, A, n, mo), gr = dev_alloc_at(be, A, n, mo), gk = dev_alloc_at(be, A, n, mo),
           gv = dev_alloc_at(be, A, n, mo), gw = dev_alloc_at(be, A, n, mo);
    dev_put(&gy, in->gy);
    dev_poison(&gr);
    dev_poison(&gk);
    dev_poison(&gv);
    dev_poison(&gw);
    dev_t_ gso = {be, NULL, NULL, P, 0}, gu = {be, NULL, NULL, P, 0}, gs0 = {be, NULL, NULL, P, 0};
    if (c->with_gs) {
        gso = dev_alloc(be, P, ns);
        dev_put(&gso, in->gs_out);
    }
    if (c->want_gu) {
        gu = dev_alloc(be, P, (int64_t)c->H * c->N);
        dev_put(&gu, in->gu0);
    }
    if (c->s0_mode) {
        gs0 = dev_alloc(be, P, n0);
        dev_put(&gs0, in->gs00);
    }
    OK(be, o->wkv6_bwd(be, gr.d, gk.d, gv.d, gw.d, gu.d, gs0.d, gy.d, gso.d, r.d, k.d, v.d, w.d, u.d, s0.d, shared,
                       c->B, c->T, c->H, c->N, NULL, 0));
    out.gr = malloc(sizeof(double) * (size_t)n);
    out.gk = malloc(sizeof(double) * (size_t)n);
    out.gv = malloc(sizeof(double) * (size_t)n);
    out.gw = malloc(sizeof(double) * (size_t)n);
    dev_get(&gr, out.gr);
    dev_get(&gk, out.gk);
    dev_get(&gv, out.gv);
    dev_get(&gw, out.gw);
    if (c->want_gu) {
        out.gu = malloc(sizeof(double) * (size_t)(c->H * c->N));
        dev_get(&gu, out.gu);
    }
    if (c->s0_mode) {
        out.gs0 = malloc(sizeof(double) * (size_t)n0);
        dev_get(&gs0, out.gs0);
    }
    dev_t_ all[] = {r, k, v, w, u, y, s0, gy, gr, gk, gv, gw, gso, gu, gs0};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) dev_free(&all[i]);
    return out;
}

static void free_out(wkv_out *o) {
    free(o->y);
    free(o->s_out);
    free(o->gr);
    free(o->gk);
    free(o->gv);
    free(o->gw);
    free(o->gu);
    free(o->gs0);
}

static void check_case(rp_backend *be, rp_backend *ref, const wkv_case *c, uint64_t seed) {
    const rp_dtype A = be->ops->act_dtype, P = be->ops->par_dtype;
    const int64_t n = (int64_t)c->B * c->T * c->H * c->N, NN = (int64_t)c->N * c->N;
    const int64_t ns = (int64_t)c->B * c->H * NN, n0 = (c->s0_mode == 1 ? 1 : c->B) * c->H * NN;
    wkv_host in;
    memset(&in, 0, sizeof in);
    in.r = gen(seed + 1, n, -1, 1, A);
    in.k = gen(seed + 2, n, -1, 1, A);
    in.v = gen(seed + 3, n, -2, 2, A);
    in.w = gen(seed + 4, n, -6, c->w_hi, A);
    in.u = gen(seed + 5, (int64_t)c->H * c->N, -1, 1, P);
    in.s0 = c->s0_mode ? gen(seed + 6, n0, -0.5, 0.5, P) : NULL;
    in.gy = gen(seed + 7, n, -1, 1, A);
    in.gs_out = c->with_gs ? gen(seed + 8, ns, -0.5, 0.5, P) : NULL;
    in.gu0 = gen(seed + 9, (int64_t)c->H * c->N, -1, 1, P);
    in.gs00 = c->s0_mode ? gen(seed + 10, n0, -1, 1, P) : NULL;
    wkv_out got = run_case(be, c, &in), want = run_case(ref, c, &in);
    char label[160];
    snprintf(label, sizeof label, "B%d T%d H%d N%d s0:%s%s%s%s%s w<=%g", c->B, c->T, c->H, c->N,
             c->s0_mode == 0 ? "none" : c->s0_mode == 1 ? "shared" : "per-seq", c->inplace ? " in-place" : "",
             c->with_gs ? " gs_out" : "", c->want_gu ? "" : " gu=NULL", c->misalign ? " unaligned" : "", c->w_hi);
    const double ta = A == RP_F32 ? 1e-4 : 1e-2, tp = 1e-4;
    expect(label, "y", got.y, want.y, n, ta);
    expect(label, "s_out", got.s_out, want.s_out, ns, tp);
    expect(label, "gr", got.gr, want.gr, n, ta);
    expect(label, "gk", got.gk, want.gk, n, ta);
    expect(label, "gv", got.gv, want.gv, n, ta);
    expect(label, "gw", got.gw, want.gw, n, ta);
    if (c->want_gu) expect(label, "gu", got.gu, want.gu, (int64_t)c->H * c->N, tp);
    if (c->s0_mode) expect(label, "gs0", got.gs0, want.gs0, n0, tp);
    free_out(&got);
    free_out(&want);
    float *hs[] = {in.r, in.k, in.v, in.w, in.u, in.s0, in.gy, in.gs_out, in.gu0, in.gs00};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) free(hs[i]);
}

/* ---- WKV7 (--op wkv7) -------------------------------------------------------------------- */

/* r k v U(-1,1); w U(-6, w_hi); per row and head kk a unit vector, a = −kk, b = kk·U(0,1) (the
 * model's regime), all rounded to the activation type */
typedef struct w7_host {
    float *r, *w, *k, *v, *a, *b, *s0, *gy, *gs_out, *gs00;
} w7_host;
typedef struct w7_out {
    double *y, *s_out, *gr, *gw, *gk, *gv, *ga, *gb, *gs0;
} w7_out;

static void w7_ab(uint64_t seed, int64_t n, int N, rp_dtype t, float **a, float **b) {
    *a = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    *b = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t row = 0; row < n / N; row++) {
        double nrm = 0;
        for (int i = 0; i < N; i++) {
            double u = 2 * rp_uniform01(seed, (uint64_t)(row * N + i)) - 1;
            (*a)[row * N + i] = (float)u;
            nrm += u * u;
        }
        nrm = sqrt(nrm) + 1e-30;
        for (int i = 0; i < N; i++) {
            float kk = (float)((*a)[row * N + i] / nrm), gate = (float)rp_uniform01(seed + 99, (uint64_t)(row * N + i));
            float av = -kk, bv = kk * gate;
            if (t == RP_BF16) {
                av = rp_bf16_to_f32(rp_f32_to_bf16(av));
                bv = rp_bf16_to_f32(rp_f32_to_bf16(bv));
            }
            (*a)[row * N + i] = av;
            (*b)[row * N + i] = bv;
        }
    }
}

static w7_out w7_run(rp_backend *be, const wkv_case *c, const w7_host *in) {
    const rp_backend_ops *o = be->ops;
    const rp_dtype A = o->act_dtype, P = o->par_dtype;
    const int64_t n = (int64_t)c->B * c->T * c->H * c->N, NN = (int64_t)c->N * c->N;
    const int64_t ns = (int64_t)c->B * c->H * NN, n0 = (c->s0_mode == 1 ? 1 : c->B) * c->H * NN;
    const int shared = c->s0_mode == 1, mo = c->misalign ? 1 : 0;
    w7_out out;
    memset(&out, 0, sizeof out);
    dev_t_ x[7];
    const float *src[7] = {in->r, in->w, in->k, in->v, in->a, in->b, in->gy};
    for (int i = 0; i < 7; i++) {
        x[i] = dev_alloc_at(be, A, n, mo);
        dev_put(&x[i], src[i]);
    }
    dev_t_ y = dev_alloc_at(be, A, n, mo);
    dev_poison(&y);
    dev_t_ s0 = {be, NULL, NULL, P, 0}, so;
    if (c->s0_mode) {
        s0 = dev_alloc(be, P, n0);
        dev_put(&s0, in->s0);
    }
    if (c->inplace) {
        so = s0;
    } else {
        so = dev_alloc(be, P, ns);
        dev_poison(&so);
    }
    OK(be, o->wkv7_fwd(be, y.d, so.d, x[0].d, x[1].d, x[2].d, x[3].d, x[4].d, x[5].d, s0.d, shared, c->B, c->T, c->H,
                       c->N));
    out.y = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    out.s_out = malloc(sizeof(double) * (size_t)ns);
    dev_get(&y, out.y);
    dev_get(&so, out.s_out);
    if (c->inplace)
        dev_put(&s0, in->s0);
    else
        dev_free(&so);
    dev_t_ g[6];
    double **gh[6] = {&out.gr, &out.gw, &out.gk, &out.gv, &out.ga, &out.gb};
    for (int i = 0; i < 6; i++) {
        g[i] = dev_alloc_at(be, A, n, mo);
        dev_poison(&g[i]);
    }
    dev_t_ gso = {be, NULL, NULL, P, 0}, gs0 = {be, NULL, NULL, P, 0};
    if (c->with_gs) {
        gso = dev_alloc(be, P, ns);
        dev_put(&gso, in->gs_out);
    }
    if (c->s0_mode) {
        gs0 = dev_alloc(be, P, n0);
        dev_put(&gs0, in->gs00);
    }
    OK(be, o->wkv7_bwd(be, g[0].d, g[1].d, g[2].d, g[3].d, g[4].d, g[5].d, gs0.d, x[6].d, gso.d, x[0].d, x[1].d,
                       x[2].d, x[3].d, x[4].d, x[5].d, s0.d, shared, c->B, c->T, c->H, c->N));
    for (int i = 0; i < 6; i++) {
        *gh[i] = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
        dev_get(&g[i], *gh[i]);
        dev_free(&g[i]);
    }
    if (c->s0_mode) {
        out.gs0 = malloc(sizeof(double) * (size_t)n0);
        dev_get(&gs0, out.gs0);
    }
    for (int i = 0; i < 7; i++) dev_free(&x[i]);
    dev_t_ rest[] = {y, s0, gso, gs0};
    for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++) dev_free(&rest[i]);
    return out;
}

static void w7_free_out(w7_out *o) {
    double *p[] = {o->y, o->s_out, o->gr, o->gw, o->gk, o->gv, o->ga, o->gb, o->gs0};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) free(p[i]);
}

static void w7_check_case(rp_backend *be, rp_backend *ref, const wkv_case *c, uint64_t seed) {
    const rp_dtype A = be->ops->act_dtype, P = be->ops->par_dtype;
    const int64_t n = (int64_t)c->B * c->T * c->H * c->N, NN = (int64_t)c->N * c->N;
    const int64_t ns = (int64_t)c->B * c->H * NN, n0 = (c->s0_mode == 1 ? 1 : c->B) * c->H * NN;
    w7_host in;
    memset(&in, 0, sizeof in);
    in.r = gen(seed + 1, n, -1, 1, A);
    in.w = gen(seed + 2, n, -6, c->w_hi, A);
    in.k = gen(seed + 3, n, -1, 1, A);
    in.v = gen(seed + 4, n, -2, 2, A);
    w7_ab(seed + 5, n, c->N, A, &in.a, &in.b);
    in.s0 = c->s0_mode ? gen(seed + 6, n0, -0.5, 0.5, P) : NULL;
    in.gy = gen(seed + 7, n, -1, 1, A);
    in.gs_out = c->with_gs ? gen(seed + 8, ns, -0.5, 0.5, P) : NULL;
    in.gs00 = c->s0_mode ? gen(seed + 10, n0, -1, 1, P) : NULL;
    w7_out got = w7_run(be, c, &in), want = w7_run(ref, c, &in);
    char label[160];
    snprintf(label, sizeof label, "wkv7 B%d T%d H%d N%d s0:%s%s%s%s w<=%g", c->B, c->T, c->H, c->N,
             c->s0_mode == 0 ? "none" : c->s0_mode == 1 ? "shared" : "per-seq", c->inplace ? " in-place" : "",
             c->with_gs ? " gs_out" : "", c->misalign ? " unaligned" : "", c->w_hi);
    const double ta = A == RP_F32 ? 1e-4 : 1e-2, tp = 1e-4;
    expect(label, "y", got.y, want.y, n, ta);
    expect(label, "s_out", got.s_out, want.s_out, ns, tp);
    expect(label, "gr", got.gr, want.gr, n, ta);
    expect(label, "gw", got.gw, want.gw, n, ta);
    expect(label, "gk", got.gk, want.gk, n, ta);
    expect(label, "gv", got.gv, want.gv, n, ta);
    expect(label, "ga", got.ga, want.ga, n, ta);
    expect(label, "gb", got.gb, want.gb, n, ta);
    if (c->s0_mode) expect(label, "gs0", got.gs0, want.gs0, n0, tp);
    w7_free_out(&got);
    w7_free_out(&want);
    float *hs[] = {in.r, in.w, in.k, in.v, in.a, in.b, in.s0, in.gy, in.gs_out, in.gs00};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) free(hs[i]);
}

/* One call of WKV6 or WKV7 (op 6 or 7), forward (which 0) or backward (1), on the buffers p:
 *   wkv6: r k v w u y s0 s_out gy gs_out gr gk gv gw gu gs0
 *   wkv7: r w k v a b y s0 s_out gy gs_out gr gw gk gv ga gb gs0
 * state: with the initial state in and the final state out (and their gradients). */
static void call_op(rp_backend *be, int op, int which, void **p, int state, int B, int T, int H, int N) {
    const rp_backend_ops *o = be->ops;
    if (op == 6 && which == 0)
        OK(be, o->wkv6_fwd(be, p[5], state ? p[7] : NULL, p[0], p[1], p[2], p[3], p[4], state ? p[6] : NULL, 0, B, T, H,
                           N));
    else if (op == 6)
        OK(be, o->wkv6_bwd(be, p[10], p[11], p[12], p[13], p[14], state ? p[15] : NULL, p[8], state ? p[9] : NULL, p[0],
                           p[1], p[2], p[3], p[4], state ? p[6] : NULL, 0, B, T, H, N, NULL, 0));
    else if (which == 0)
        OK(be, o->wkv7_fwd(be, p[6], state ? p[8] : NULL, p[0], p[1], p[2], p[3], p[4], p[5], state ? p[7] : NULL, 0, B,
                           T, H, N));
    else
        OK(be, o->wkv7_bwd(be, p[11], p[12], p[13], p[14], p[15], p[16], state ? p[17] : NULL, p[9], state ? p[10] : NULL,
                           p[0], p[1], p[2], p[3], p[4], p[5], state ? p[7] : NULL, 0, B, T, H, N));
}

/* median and minimum of per-call ms of call_op */
static void time_op(rp_backend *be, int op, int which, int samples, int inner, double *med, double *mn, void **p,
                    int state, int B, int T, int H, int N) {
    double *t = malloc(sizeof(double) * (size_t)samples);
    for (int s = -2; s < samples; s++) { /* two warm-up samples */
        OK(be, be->ops->synchronize(be));
        double t0 = rp_monotonic_ms();
        for (int i = 0; i < inner; i++) call_op(be, op, which, p, state, B, T, H, N);
        OK(be, be->ops->synchronize(be));
        if (s >= 0) t[s] = (rp_monotonic_ms() - t0) / inner;
    }
    qsort(t, (size_t)samples, sizeof(double), cmp_d);
    *med = t[samples / 2];
    *mn = t[0];
    free(t);
}

static void w7_bench_shape(rp_backend *be, int B, int T, int H, int N, int samples, int inner) {
    const rp_backend_ops *o = be->ops;
    const rp_dtype A = o->act_dtype, P = o->par_dtype;
    const int64_t n = (int64_t)B * T * H * N, ns = (int64_t)B * H * N * N;
    const double as = (double)rp_dtype_size(A), ps = (double)rp_dtype_size(P);
    /* r w k v a b y s0 s_out gy gs_out gr gw gk gv ga gb gs0 */
    enum { NP = 18 };
    const int is_par[NP] = {0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1};
    void *p[NP];
    /* activations U(-1,1); w U(-6,-0.5) (the soft clamp's range); a, b as w7_ab; states U(-0.1,0.1) */
    float *h = malloc(sizeof(float) * (size_t)(n > ns ? n : ns)), *ha, *hb;
    w7_ab(0x7b1, n, N, A, &ha, &hb);
    for (int i = 0; i < NP; i++) {
        const rp_dtype t = is_par[i] ? P : A;
        const int64_t cnt = is_par[i] ? ns : n;
        const float *src = h;
        if (i == 4) src = ha;
        else if (i == 5) src = hb;
        else {
            const double lo = is_par[i] ? -0.1 : i == 1 ? -6 : -1, hi = is_par[i] ? 0.1 : i == 1 ? -0.5 : 1;
            for (int64_t e = 0; e < cnt; e++) h[e] = (float)(lo + (hi - lo) * rp_uniform01(0x3c1 + i, (uint64_t)e));
        }
        dev_t_ x = dev_alloc(be, t, cnt);
        dev_put(&x, src);
        p[i] = x.d;
    }
    free(h);
    free(ha);
    free(hb);
    for (int state = 0; state < 2; state++) {
        double fm, fmin, bm, bmin;
        time_op(be, 7, 0, samples, inner, &fm, &fmin, p, state, B, T, H, N);
        time_op(be, 7, 1, samples, inner, &bm, &bmin, p, state, B, T, H, N);
        /* least traffic: fwd reads r w k v a b (+s0), writes y (+s_out); bwd reads r w k v a b gy
         * (+s0, gs_out), writes 6 gradients, gs0 += (read + write) */
        double fb = 7.0 * n * as + (state ? 2.0 * ns * ps : 0);
        double bb = 13.0 * n * as + (state ? 4.0 * ns * ps : 0);
        printf("wkv7 B%-2d T%d H%-3d N%-3d %-6s  fwd %8.4f ms (min %8.4f) %7.1f GB/s   bwd %8.4f ms (min %8.4f) %7.1f "
               "GB/s   fwd+bwd %8.4f ms\n",
               B, T, H, N, state ? "state" : "plain", fm, fmin, fb / (fm * 1e6), bm, bmin, bb / (bm * 1e6), fm + bm);
        fflush(stdout);
    }
    for (int i = 0; i < NP; i++) o->free(be, p[i]);
}

/* ---- timing -------------------------------------------------------------------------- */

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    while (*s && n < max) {
        out[n++] = atoi(s);
        const char *c = strchr(s, ',');
        if (!c) break;
        s = c + 1;
    }
    return n;
}

static void bench_shape(rp_backend *be, int B, int T, int H, int N, int samples, int inner) {
    const rp_backend_ops *o = be->ops;
    const rp_dtype A = o->act_dtype, P = o->par_dtype;
    const int64_t n = (int64_t)B * T * H * N, ns = (int64_t)B * H * N * N, nu = (int64_t)H * N;
    const double as = (double)rp_dtype_size(A), ps = (double)rp_dtype_size(P);
    /* r k v w u y s0 s_out gy gs_out gr gk gv gw gu gs0 */
    const int64_t cnt[16] = {n, n, n, n, nu, n, ns, ns, n, ns, n, n, n, n, nu, ns};
    const int is_par[16] = {0, 0, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 0, 0, 1, 1};
    void *p[16];
    /* four host patterns, converted once: activations U(-1,1), w U(-6,0) (decays 0.9975 … 0.37),
     * parameters U(-1,1), states U(-0.1,0.1) */
    int64_t maxn = n > ns ? n : ns;
    float *h = malloc(sizeof(float) * (size_t)maxn);
    void *pat[4];
    const double lo[4] = {-1, -6, -1, -0.1}, hi[4] = {1, 0, 1, 0.1};
    for (int q = 0; q < 4; q++) {
        const rp_dtype t = q < 2 ? A : P;
        for (int64_t e = 0; e < maxn; e++)
            h[e] = (float)(lo[q] + (hi[q] - lo[q]) * rp_uniform01(0x3c1 + q, (uint64_t)e));
        pat[q] = malloc(rp_dtype_size(t) * (size_t)maxn);
        if (rp_convert_from_f32(pat[q], t, h, (size_t)maxn)) die("convert", NULL);
    }
    free(h);
    for (int i = 0; i < 16; i++) {
        const rp_dtype t = is_par[i] ? P : A;
        const int q = is_par[i] ? (i == 4 || i == 14 ? 2 : 3) : (i == 3 ? 1 : 0);
        dev_t_ x = dev_alloc(be, t, cnt[i]);
        OK(be, o->memcpy_h2d(be, x.d, pat[q], rp_dtype_size(t) * (size_t)cnt[i]));
        p[i] = x.d;
    }
    for (int q = 0; q < 4; q++) free(pat[q]);
    for (int state = 0; state < 2; state++) {
        double fm, fmin, bm, bmin;
        time_op(be, 6, 0, samples, inner, &fm, &fmin, p, state, B, T, H, N);
        time_op(be, 6, 1, samples, inner, &bm, &bmin, p, state, B, T, H, N);
        /* least traffic: fwd reads r k v w (+u, s0), writes y (+s_out); bwd reads r k v w gy (+u, s0,
         * gs_out), writes gr gk gv gw, gu += (read + write), gs0 += (read + write) */
        double fb = 5.0 * n * as + nu * ps + (state ? 2.0 * ns * ps : 0);
        double bb = 9.0 * n * as + 3.0 * nu * ps + (state ? 4.0 * ns * ps : 0);
        printf("B%-2d T%d H%-3d N%-3d %-6s  fwd %8.4f ms (min %8.4f) %7.1f GB/s   bwd %8.4f ms (min %8.4f) %7.1f GB/s"
               "   fwd+bwd %8.4f ms\n",
               B, T, H, N, state ? "state" : "plain", fm, fmin, fb / (fm * 1e6), bm, bmin, bb / (bm * 1e6), fm + bm);
        fflush(stdout);
    }
    for (int i = 0; i < 16; i++) o->free(be, p[i]);
}

int main(int argc, char **argv) {
    const char *backend = "cuda", *op = "wkv6";
    int samples = 15, inner = 10, do_check = 1, do_time = 1, T = 1024, N = 64;
    int Bs[8] = {1, 8}, nB = 2, Hs[8] = {32, 64}, nH = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--op")) op = v;
        else if (!strcmp(a, "--samples")) samples = atoi(v);
        else if (!strcmp(a, "--inner")) inner = atoi(v);
        else if (!strcmp(a, "--check")) do_check = atoi(v);
        else if (!strcmp(a, "--time")) do_time = atoi(v);
        else if (!strcmp(a, "--T")) T = atoi(v);
        else if (!strcmp(a, "--N")) N = atoi(v);
        else if (!strcmp(a, "--B")) nB = parse_list(v, Bs, 8);
        else if (!strcmp(a, "--H")) nH = parse_list(v, Hs, 8);
        else {
            fprintf(stderr, "bench_wkv: unknown option %s\n", a);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines survive a timeout */
    const int w7 = !strcmp(op, "wkv7");
    if (!w7 && strcmp(op, "wkv6")) {
        fprintf(stderr, "bench_wkv: --op wkv6 or wkv7\n");
        return 2;
    }
    if (samples < 1) samples = 1;
    if (inner < 1) inner = 1;
    char desc[256] = {0};
    rp_backend *be = bench_open_backend(backend, desc, sizeof desc);
    const rp_backend_ops *ops = be->ops;
    rp_err err;
    memset(&err, 0, sizeof err);
    const char *tiles_env = w7 ? "RWKVPEFT_WKV7_TILES" : "RWKVPEFT_WKV6_TILES";
    printf("bench_wkv: %s %s (%s); tiles %s\n", op, backend, desc, getenv(tiles_env) ? getenv(tiles_env) : "auto");
    if (w7 && (!ops->wkv7_fwd || !ops->wkv7_bwd)) {
        fprintf(stderr, "bench_wkv: backend %s has no wkv7\n", backend);
        return 2;
    }
    if (do_check) {
        rp_backend *ref = rp_cpu64_ops.create(0, 0, &err);
        if (!ref) {
            fprintf(stderr, "bench_wkv: cpu64: %s\n", err.msg);
            return 2;
        }
        const wkv_case cases[] = {
            /* B  T   H  N   s0 inpl gs gu  w_hi misalign */
            {2, 75, 2, 64, 2, 0, 1, 1, 1.0, 0},   {2, 75, 2, 64, 2, 1, 1, 0, 1.0, 0},
            {1, 33, 3, 32, 1, 0, 1, 1, 1.0, 0},   {2, 40, 1, 128, 0, 0, 0, 1, 1.0, 0},
            {1, 1, 1, 128, 1, 0, 1, 1, 1.0, 0},   {2, 50, 2, 64, 2, 0, 1, 1, 8.0, 0},
            {3, 17, 2, 32, 0, 0, 1, 0, 6.0, 0},   {1, 0, 2, 64, 2, 0, 1, 1, 1.0, 0},
            {8, 40, 32, 64, 1, 0, 1, 1, 1.0, 0},  {4, 24, 40, 128, 2, 0, 1, 1, 1.0, 0},
            {2, 45, 3, 64, 2, 0, 1, 1, 1.0, 1},
        };
        const wkv_case cases7[] = {
            /* B  T   H  N   s0 inpl gs gu  w_hi misalign */
            {2, 75, 2, 64, 2, 0, 1, 1, 1.0, 0},   {2, 75, 2, 64, 2, 1, 1, 1, 1.0, 0},
            {1, 33, 3, 32, 1, 0, 1, 1, 1.0, 0},   {2, 40, 1, 64, 0, 0, 0, 1, 1.0, 0},
            {1, 1, 1, 64, 1, 0, 1, 1, 1.0, 0},    {2, 50, 2, 64, 2, 0, 1, 1, 8.0, 0},
            {3, 17, 2, 64, 0, 0, 1, 1, 6.0, 0},   {1, 0, 2, 64, 2, 0, 1, 1, 1.0, 0},
            {8, 40, 32, 64, 1, 0, 1, 1, 1.0, 0},  {8, 24, 64, 64, 2, 0, 1, 1, 1.0, 0},
            {2, 45, 3, 64, 2, 0, 1, 1, 1.0, 1},   {2, 30, 2, 128, 2, 0, 1, 1, 1.0, 0},
        };
        printf("check against cpu64:\n");
        if (w7)
            for (size_t i = 0; i < sizeof cases7 / sizeof cases7[0]; i++) w7_check_case(be, ref, &cases7[i], 1000 * (i + 1));
        else
            for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(be, ref, &cases[i], 1000 * (i + 1));
        rp_cpu64_ops.destroy(ref);
        printf("check: %s\n", n_fail ? "FAILED" : "passed");
    }
    if (do_time) {
        printf("timing: median of %d samples of %d calls (min in parentheses); GB/s = least bytes / median\n",
               samples, inner);
        for (int bi = 0; bi < nB; bi++)
            for (int hi = 0; hi < nH; hi++) {
                if (w7)
                    w7_bench_shape(be, Bs[bi], T, Hs[hi], N, samples, inner);
                else
                    bench_shape(be, Bs[bi], T, Hs[hi], N, samples, inner);
            }
    }
    ops->destroy(be);
    return n_fail ? 1 : 0;
}
