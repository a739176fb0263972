/* test_wkv7.c — the RWKV-7 recurrence op (wkv7_fwd / wkv7_bwd of lib/backend.h):
 * backward against central finite differences of the forward on the float64 backend (every
 * input, with shared and per-sequence initial states and a final-state gradient), float32 vs
 * float64, in-place state, and every other available backend (GPU modules) against float64. */
#include <math.h>

#include "backend.h"
#include "testutil.h"

typedef struct w7 {
    int B, T, H, N;
    int64_t n, nn;
    double *r, *w, *k, *v, *a, *b, *s0, *gy, *gso;
} w7;

/* Inputs in the regime the model produces: kk unit vectors per head, a = −kk, b = kk·gate. */
static w7 make(int B, int T, int H, int N, uint64_t seed, int shared) {
    w7 x = {B, T, H, N, (int64_t)B * T * H * N, (int64_t)N * N, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    uint64_t s = seed;
    double **f[] = {&x.r, &x.w, &x.k, &x.v, &x.a, &x.b, &x.gy};
    for (int i = 0; i < 7; i++) *f[i] = malloc(sizeof(double) * (size_t)x.n);
    int64_t ns = (int64_t)(shared ? 1 : B) * H * x.nn;
    x.s0 = malloc(sizeof(double) * (size_t)ns);
    x.gso = malloc(sizeof(double) * (size_t)((int64_t)B * H * x.nn));
    for (int64_t row = 0; row < x.n / N; row++) {
        double nrm = 0, kk[512];
        for (int i = 0; i < N; i++) {
            kk[i] = tu_uniform(&s) * 2 - 1;
            nrm += kk[i] * kk[i];
        }
        nrm = sqrt(nrm);
        for (int i = 0; i < N; i++) {
            int64_t e = row * N + i;
            double gate = tu_uniform(&s);
            x.r[e] = tu_uniform(&s) * 2 - 1;
            x.w[e] = -2.5 + 2 * tu_uniform(&s);
            x.k[e] = (tu_uniform(&s) * 2 - 1) * 0.5;
            x.v[e] = tu_uniform(&s) * 2 - 1;
            x.a[e] = -kk[i] / nrm;
            x.b[e] = kk[i] / nrm * gate;
            x.gy[e] = tu_uniform(&s) * 2 - 1;
        }
    }
    for (int64_t e = 0; e < ns; e++) x.s0[e] = (tu_uniform(&s) * 2 - 1) * 0.3;
    for (int64_t e = 0; e < (int64_t)B * H * x.nn; e++) x.gso[e] = tu_uniform(&s) * 2 - 1;
    return x;
}

static void drop(w7 *x) {
    double *f[] = {x->r, x->w, x->k, x->v, x->a, x->b, x->gy, x->s0, x->gso};
    for (int i = 0; i < 9; i++) free(f[i]);
}

typedef struct dev {
    const rp_backend_ops *ops;
    rp_backend *be;
} dev;

static dev open_backend(const char *name) {
    rp_err err;
    int cnt = 0;
    dev d = {rp_backend_find(name, NULL, &cnt, NULL, 0, &err), NULL};
    if (d.ops) d.be = d.ops->create(0, 0, &err);
    return d;
}

/* host double <-> device buffer of type t */
static void *up(dev *d, const double *h, int64_t n, rp_dtype t) {
    void *p;
    size_t es = rp_dtype_size(t);
    ck_assert_int_eq(d->ops->alloc(d->be, &p, (size_t)n * es + 64), 0);
    if (!h) {
        d->ops->memset_zero(d->be, p, (size_t)n * es);
        return p;
    }
    float *f = malloc(sizeof(float) * (size_t)n);
    void *tmp = malloc((size_t)n * es);
    if (t == RP_F64) {
        memcpy(tmp, h, (size_t)n * 8);
    } else {
        for (int64_t i = 0; i < n; i++) f[i] = (float)h[i];
        rp_convert_from_f32(tmp, t, f, (size_t)n);
    }
    d->ops->memcpy_h2d(d->be, p, tmp, (size_t)n * es);
    free(f);
    free(tmp);
    return p;
}
static void down(dev *d, double *h, const void *p, int64_t n, rp_dtype t) {
    size_t es = rp_dtype_size(t);
    void *tmp = malloc((size_t)n * es);
    d->ops->memcpy_d2h(d->be, tmp, p, (size_t)n * es);
    if (t == RP_F64) {
        memcpy(h, tmp, (size_t)n * 8);
    } else {
        float *f = malloc(sizeof(float) * (size_t)n);
        rp_convert_to_f32(f, tmp, t, (size_t)n);
        for (int64_t i = 0; i < n; i++) h[i] = f[i];
        free(f);
    }
    free(tmp);
}

typedef struct outs {
    double *y, *so, *g[6], *gs0;
} outs;

/* runs fwd + bwd on backend d; s0_mode 0 none, 1 shared, 2 per-sequence */
static outs run(dev *d, const w7 *x, int s0_mode) {
    rp_dtype A = d->ops->act_dtype, P = d->ops->par_dtype;
    int shared = s0_mode == 1;
    int64_t ns0 = (int64_t)(shared ? 1 : x->B) * x->H * x->nn, nso = (int64_t)x->B * x->H * x->nn;
    const double *in[6] = {x->r, x->w, x->k, x->v, x->a, x->b};
    void *din[6];
    for (int i = 0; i < 6; i++) din[i] = up(d, in[i], x->n, A);
    void *ds0 = s0_mode ? up(d, x->s0, ns0, P) : NULL, *dgy = up(d, x->gy, x->n, A), *dgso = up(d, x->gso, nso, P);
    void *dy = up(d, NULL, x->n, A), *dso = up(d, NULL, nso, P), *dgs0 = s0_mode ? up(d, NULL, ns0, P) : NULL;
    void *dg[6];
    for (int i = 0; i < 6; i++) dg[i] = up(d, NULL, x->n, A);
    ck_assert_int_eq(d->ops->wkv7_fwd(d->be, dy, dso, din[0], din[1], din[2], din[3], din[4], din[5], ds0, shared, x->B,
                                      x->T, x->H, x->N),
                     0);
    ck_assert_int_eq(d->ops->wkv7_bwd(d->be, dg[0], dg[1], dg[2], dg[3], dg[4], dg[5], dgs0, dgy, dgso, din[0], din[1],
                                      din[2], din[3], din[4], din[5], ds0, shared, x->B, x->T, x->H, x->N),
                     0);
    outs o;
    o.y = malloc(sizeof(double) * (size_t)x->n);
    o.so = malloc(sizeof(double) * (size_t)nso);
    down(d, o.y, dy, x->n, A);
    down(d, o.so, dso, nso, P);
    for (int i = 0; i < 6; i++) {
        o.g[i] = malloc(sizeof(double) * (size_t)x->n);
        down(d, o.g[i], dg[i], x->n, A);
        d->ops->free(d->be, din[i]);
        d->ops->free(d->be, dg[i]);
    }
    o.gs0 = NULL;
    if (s0_mode) {
        o.gs0 = malloc(sizeof(double) * (size_t)ns0);
        down(d, o.gs0, dgs0, ns0, P);
    }
    d->ops->free(d->be, ds0);
    d->ops->free(d->be, dgy);
    d->ops->free(d->be, dgso);
    d->ops->free(d->be, dy);
    d->ops->free(d->be, dso);
    d->ops->free(d->be, dgs0);
    return o;
}

static void free_outs(outs *o) {
    free(o->y);
    free(o->so);
    for (int i = 0; i < 6; i++) free(o->g[i]);
    free(o->gs0);
}

/* the objective whose gradient wkv7_bwd returns: Σ gy·y + Σ gs_out·s_out */
static double objective(dev *d, const w7 *x, int s0_mode) {
    outs o = run(d, x, s0_mode);
    double L = 0;
    for (int64_t e = 0; e < x->n; e++) L += x->gy[e] * o.y[e];
    for (int64_t e = 0; e < (int64_t)x->B * x->H * x->nn; e++) L += x->gso[e] * o.so[e];
    free_outs(&o);
    return L;
}

START_TEST(test_wkv7_finite_differences) {
    dev d = open_backend("cpu64");
    ck_assert_ptr_nonnull(d.be);
    for (int s0_mode = 0; s0_mode < 3; s0_mode++) {
        w7 x = make(2, 21, 2, 8, 100 + (uint64_t)s0_mode, s0_mode == 1);
        outs o = run(&d, &x, s0_mode);
        double *in[6] = {x.r, x.w, x.k, x.v, x.a, x.b};
        const char *names[6] = {"r", "w", "k", "v", "a", "b"};
        uint64_t s = 5;
        for (int i = 0; i < 6; i++)
            for (int rep = 0; rep < 12; rep++) {
                int64_t e = (int64_t)(tu_next(&s) % (uint64_t)x.n);
                double keep = in[i][e], h = 1e-6;
                in[i][e] = keep + h;
                double lp = objective(&d, &x, s0_mode);
                in[i][e] = keep - h;
                double lm = objective(&d, &x, s0_mode);
                in[i][e] = keep;
                double fd = (lp - lm) / (2 * h);
                ck_assert_msg(fabs(fd - o.g[i][e]) <= 1e-7 + 1e-6 * fabs(fd), "s0 mode %d: g%s[%lld] %.12g vs fd %.12g",
                              s0_mode, names[i], (long long)e, o.g[i][e], fd);
            }
        if (s0_mode) {
            int64_t ns0 = (int64_t)(s0_mode == 1 ? 1 : x.B) * x.H * x.nn;
            for (int rep = 0; rep < 12; rep++) {
                int64_t e = (int64_t)(tu_next(&s) % (uint64_t)ns0);
                double keep = x.s0[e], h = 1e-6;
                x.s0[e] = keep + h;
                double lp = objective(&d, &x, s0_mode);
                x.s0[e] = keep - h;
                double lm = objective(&d, &x, s0_mode);
                x.s0[e] = keep;
                double fd = (lp - lm) / (2 * h);
                ck_assert_msg(fabs(fd - o.gs0[e]) <= 1e-7 + 1e-6 * fabs(fd), "gs0[%lld] %.12g vs fd %.12g", (long long)e,
                              o.gs0[e], fd);
            }
        }
        free_outs(&o);
        drop(&x);
    }
    d.ops->destroy(d.be);
}
END_TEST

static double rel_err(const double *a, const double *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* every available backend against cpu64 (GPU modules without WKV7 are reported, not failed) */
START_TEST(test_wkv7_backends_agree) {
    dev ref = open_backend("cpu64");
    const char *names[3] = {"cpu", "cuda", "hip"};
    for (int b = 0; b < 3; b++) {
        dev d = open_backend(names[b]);
        if (!d.be) {
            fprintf(stderr, "SKIP wkv7 on %s: backend unavailable\n", names[b]);
            continue;
        }
        if (!d.ops->wkv7_fwd || !d.ops->wkv7_bwd) {
            fprintf(stderr, "SKIP wkv7 on %s: not implemented by this backend yet\n", names[b]);
            d.ops->destroy(d.be);
            continue;
        }
        double tol = d.ops->act_dtype == RP_F32 ? 1e-5 : 3e-2;
        for (int s0_mode = 0; s0_mode < 3; s0_mode++) {
            w7 x = make(3, 37, 2, 64, 7 + (uint64_t)s0_mode, s0_mode == 1);
            outs o = run(&d, &x, s0_mode), r = run(&ref, &x, s0_mode);
            ck_assert_msg(rel_err(o.y, r.y, x.n) < tol, "%s y %g", names[b], rel_err(o.y, r.y, x.n));
            ck_assert(rel_err(o.so, r.so, (int64_t)x.B * x.H * x.nn) < tol);
            for (int i = 0; i < 6; i++)
                ck_assert_msg(rel_err(o.g[i], r.g[i], x.n) < 2 * tol, "%s grad %d (s0 mode %d): %g", names[b], i, s0_mode,
                              rel_err(o.g[i], r.g[i], x.n));
            if (s0_mode) {
                int64_t ns0 = (int64_t)(s0_mode == 1 ? 1 : x.B) * x.H * x.nn;
                ck_assert(rel_err(o.gs0, r.gs0, ns0) < 2 * tol);
            }
            free_outs(&o);
            free_outs(&r);
            drop(&x);
        }
        d.ops->destroy(d.be);
    }
    ref.ops->destroy(ref.be);
}
END_TEST

/* s_out may be the per-sequence s0: the state advances in place */
START_TEST(test_wkv7_state_in_place) {
    dev d = open_backend("cpu");
    w7 x = make(2, 9, 1, 32, 3, 0);
    outs o = run(&d, &x, 2);
    int64_t ns = (int64_t)x.B * x.H * x.nn;
    void *din[6];
    const double *in[6] = {x.r, x.w, x.k, x.v, x.a, x.b};
    for (int i = 0; i < 6; i++) din[i] = up(&d, in[i], x.n, RP_F32);
    void *st = up(&d, x.s0, ns, RP_F32), *dy = up(&d, NULL, x.n, RP_F32);
    ck_assert_int_eq(d.ops->wkv7_fwd(d.be, dy, st, din[0], din[1], din[2], din[3], din[4], din[5], st, 0, x.B, x.T, x.H, x.N), 0);
    double *got = malloc(sizeof(double) * (size_t)ns);
    down(&d, got, st, ns, RP_F32);
    ck_assert(rel_err(got, o.so, ns) < 1e-6);
    free(got);
    for (int i = 0; i < 6; i++) d.ops->free(d.be, din[i]);
    d.ops->free(d.be, st);
    d.ops->free(d.be, dy);
    free_outs(&o);
    drop(&x);
    d.ops->destroy(d.be);
}
END_TEST

int main(void) {
    Suite *s = suite_create("wkv7");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_wkv7_finite_differences);
    tcase_add_test(tc, test_wkv7_backends_agree);
    tcase_add_test(tc, test_wkv7_state_in_place);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
