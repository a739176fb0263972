/* bench_gemm.c — micro-benchmark of the gemm op for the shapes one LoRA linear issues in a
 * training step (lib/rwkv.c linear_fwd / linear_bwd), through the backend table.
 *
 *   bench_gemm [--backend cuda] [--n 8192] [--r 64] [--shapes 4096:4096,4096:14336,14336:4096]
 *              [--samples 9] [--inner 10]
 *
 * For each in:out shape it times, as the model calls them (LoRA A [r,in] and B [out,r] are
 * parameters: the backend's par_dtype, narrowed by the backend when it differs from the
 * activations):
 *   dense    y  = x·Wᵀ                 (the frozen base product: the rate to compare with)
 *   xA       t  = x·Aᵀ                 (forward, and again in the grad_cp recompute)
 *   xA bf16  the same with A already in the activation type (what narrowing costs)
 *   tB       y += s·t·Bᵀ
 *   dyB      dt = dy·B                 (backward)
 *   dB       dB += s·dyᵀ·t             (parameter gradient: a reduction over the n rows)
 *   dA       dA += s·dtᵀ·x
 *   dA sK    dA by S row slices (one batched gemm into f32 scratch) + sum_rows (split-K by hand)
 *   dtA      dx += s·dt·A
 *   xA x4    four same-shape xA products as one strided batched gemm (the att r,k,v,g linears)
 *   dense+=  the base product accumulating onto y (beta 1: after the low-rank term)
 *   tB =, dtA =  the low-rank up-products writing their output (beta 0: before the base product)
 * Each: `samples` times synchronize, `inner` calls, synchronize; the median per call in µs,
 * the TFLOP/s (2·m·n·k) and the GB/s of the bytes the call must move at least (inputs read
 * once, the output written once, and read too when accumulated). Numbers, not checks: the
 * op harness (tests/test_backend_ops.c) checks the gemm's results.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bench_util.h"
#include "kernel_common.h"

const char *const bench_prog = "bench_gemm";

/* a device buffer of n elements of type t holding small uniform values */
static void *dev_random(rp_backend *be, rp_dtype t, int64_t n, uint64_t seed) {
    void *d = NULL;
    OK(be, be->ops->alloc(be, &d, rp_dtype_size(t) * (size_t)n));
    float *h = malloc(sizeof(float) * (size_t)n);
    void *tmp = malloc(rp_dtype_size(t) * (size_t)n);
    if (!h || !tmp) die("host memory", NULL);
    for (int64_t i = 0; i < n; i++) h[i] = (float)(rp_uniform01(seed, (uint64_t)i) - 0.5) * 0.1f;
    if (rp_convert_from_f32(tmp, t, h, (size_t)n)) die("convert", NULL);
    OK(be, be->ops->memcpy_h2d(be, d, tmp, rp_dtype_size(t) * (size_t)n));
    free(h);
    free(tmp);
    return d;
}

typedef struct gemm_call {
    int ta, tb, m, n, k;
    float alpha, beta;
    const void *a, *b;
    void *c;
    rp_dtype tya, tyb, tyc;
    int64_t lda, sa, ldb, sb, ldc, sc;
    int batch;
    void *red;         /* split-K: reduce `batch` slices of red [batch, m·n] into c (sum_rows) */
    int red_slices;
} gemm_call;

static void issue(rp_backend *be, const gemm_call *g) {
    OK(be, be->ops->gemm(be, g->ta, g->tb, g->m, g->n, g->k, g->alpha, g->a, g->tya, g->lda, g->sa, g->b, g->tyb,
                         g->ldb, g->sb, g->beta, g->red ? g->red : g->c, g->red ? be->ops->act_dtype : g->tyc, g->ldc, g->sc,
                         g->batch));
    if (g->red) OK(be, be->ops->sum_rows(be, g->c, g->red, g->red_slices, g->m * g->n));
}

static int samples = 9, inner = 10;

static void time_call(rp_backend *be, const char *label, const gemm_call *g, double bytes) {
    double t[64];
    issue(be, g); /* warm-up (and any lazy set-up) */
    OK(be, be->ops->synchronize(be));
    for (int s = 0; s < samples; s++) {
        double t0 = rp_monotonic_ms();
        for (int i = 0; i < inner; i++) issue(be, g);
        OK(be, be->ops->synchronize(be));
        t[s] = (rp_monotonic_ms() - t0) * 1e3 / inner;
    }
    qsort(t, (size_t)samples, sizeof(double), cmp_d);
    double us = t[samples / 2];
    double flop = 2.0 * g->m * g->n * (double)g->k * (g->red ? 1 : g->batch);
    printf("  %-10s m %6d n %6d k %6d x%-2d %9.1f us %7.1f TFLOP/s %7.0f GB/s\n", label, g->m, g->n, g->k,
           g->red ? g->red_slices : g->batch, us, flop / (us * 1e6), bytes / (us * 1e3));
}

int main(int argc, char **argv) {
    const char *backend = "cuda", *shapes = "4096:4096,4096:14336,14336:4096";
    int n = 8192, r = 64;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--backend")) backend = v;
        else if (!strcmp(a, "--n")) n = atoi(v);
        else if (!strcmp(a, "--r")) r = atoi(v);
        else if (!strcmp(a, "--shapes")) shapes = v;
        else if (!strcmp(a, "--samples")) samples = atoi(v);
        else if (!strcmp(a, "--inner")) inner = atoi(v);
        else {
            fprintf(stderr, "bench_gemm: unknown option %s\n", a);
            return 2;
        }
    }
    if (samples < 1 || samples > 64 || inner < 1 || n < 16 || r < 1) {
        fprintf(stderr, "bench_gemm: bad --samples/--inner/--n/--r\n");
        return 2;
    }
    char desc[256] = {0};
    rp_backend *be = bench_open_backend(backend, desc, sizeof desc);
    const rp_backend_ops *ops = be->ops;
    const rp_dtype A = ops->act_dtype, P = ops->par_dtype;
    const double ea = (double)rp_dtype_size(A), ep = (double)rp_dtype_size(P);
    printf("bench_gemm: %s (%s), n %d, r %d, act %s, par %s\n", backend, desc, n, r, A == RP_BF16 ? "bf16" : "f32",
           P == RP_BF16 ? "bf16" : P == RP_F32 ? "f32" : "f64");
    const char *p = shapes;
    while (*p) {
        int in = 0, out = 0, used = 0;
        if (sscanf(p, "%d:%d%n", &in, &out, &used) != 2 || in < 1 || out < 1) {
            fprintf(stderr, "bench_gemm: bad --shapes near '%s'\n", p);
            return 2;
        }
        p += used;
        if (*p == ',') p++;
        const int S = 16, mx = in > out ? in : out;
        printf("in %d out %d\n", in, out);
        void *x = dev_random(be, A, 4 * (int64_t)n * in, 1), *y = dev_random(be, A, (int64_t)n * out, 2);
        void *dy = dev_random(be, A, (int64_t)n * out, 3), *W = dev_random(be, A, (int64_t)out * in, 4);
        void *Ap = dev_random(be, P, 4 * (int64_t)r * in, 5), *Ab = dev_random(be, A, 4 * (int64_t)r * in, 6);
        void *Bp = dev_random(be, P, (int64_t)out * r, 7), *t = dev_random(be, A, 4 * (int64_t)n * r, 8);
        void *dA = dev_random(be, P, (int64_t)r * in, 9), *dB = dev_random(be, P, (int64_t)out * r, 10);
        void *red = dev_random(be, A, (int64_t)S * r * mx, 11), *dx = dev_random(be, A, (int64_t)n * in, 12);
        const int64_t ns = n / S; /* rows per split-K slice (the remainder is left out: timing only) */
        gemm_call calls[] = {
            {0, 1, n, out, in, 1, 0, x, W, y, A, A, A, in, 0, in, 0, out, 0, 1, NULL, 0},
            {0, 1, n, r, in, 1, 0, x, Ap, t, A, P, A, in, 0, in, 0, r, 0, 1, NULL, 0},
            {0, 1, n, r, in, 1, 0, x, Ab, t, A, A, A, in, 0, in, 0, r, 0, 1, NULL, 0},
            {0, 1, n, out, r, 2, 1, t, Bp, y, A, P, A, r, 0, r, 0, out, 0, 1, NULL, 0},
            {0, 0, n, r, out, 1, 0, dy, Bp, t, A, P, A, out, 0, r, 0, r, 0, 1, NULL, 0},
            {1, 0, out, r, n, 2, 1, dy, t, dB, A, A, P, out, 0, r, 0, r, 0, 1, NULL, 0},
            {1, 0, r, in, n, 2, 1, t, x, dA, A, A, P, r, 0, in, 0, in, 0, 1, NULL, 0},
            {1, 0, r, in, (int)ns, 2, 0, t, x, dA, A, A, P, r, ns * r, in, ns * in, in, (int64_t)r * in, S, red, S},
            {0, 0, n, in, r, 2, 1, t, Ap, dx, A, P, A, r, 0, in, 0, in, 0, 1, NULL, 0},
            {0, 1, n, r, in, 1, 0, x, Ab, t, A, A, A, in, (int64_t)n * in, in, (int64_t)r * in, r, (int64_t)n * r, 4,
             NULL, 0},
            {0, 1, n, out, in, 1, 1, x, W, y, A, A, A, in, 0, in, 0, out, 0, 1, NULL, 0},
            {0, 1, n, out, r, 2, 0, t, Bp, y, A, P, A, r, 0, r, 0, out, 0, 1, NULL, 0},
            {0, 0, n, in, r, 2, 0, t, Ap, dx, A, P, A, r, 0, in, 0, in, 0, 1, NULL, 0},
        };
        const char *labels[] = {"dense", "xA", "xA bf16", "tB", "dyB", "dB", "dA", "dA sK16", "dtA", "xA x4", "dense+=", "tB =", "dtA ="};
        const double bytes[] = {
            ea * ((double)n * in + (double)out * in + (double)n * out),
            ea * ((double)n * in + (double)n * r) + ep * r * in,
            ea * ((double)n * in + (double)n * r + (double)r * in),
            ea * ((double)n * r + 2.0 * n * out) + ep * out * r,
            ea * ((double)n * out + (double)n * r) + ep * out * r,
            ea * ((double)n * out + (double)n * r) + 2 * ep * out * r,
            ea * ((double)n * in + (double)n * r) + 2 * ep * r * in,
            ea * ((double)n * in + (double)n * r) + 2 * ep * r * in + 2 * ea * S * r * in,
            ea * ((double)n * r + 2.0 * n * in) + ep * r * in,
            4 * (ea * ((double)n * in + (double)n * r + (double)r * in)),
            ea * ((double)n * in + (double)out * in + 2.0 * n * out),
            ea * ((double)n * r + (double)n * out) + ep * out * r,
            ea * ((double)n * r + (double)n * in) + ep * r * in,
        };
        for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) time_call(be, labels[i], &calls[i], bytes[i]);
        void *bufs[] = {x, y, dy, W, Ap, Ab, Bp, t, dA, dB, red, dx};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) ops->free(be, bufs[i]);
    }
    ops->destroy(be);
    return 0;
}
