/* test_backend_ops.c — every op of lib/backend.h on every available backend, checked against
 * the float64 CPU backend ("cpu64", the oracle), plus finite-difference checks of every
 * backward on cpu64 itself and direct-formula checks of the ops without a backward.
 *
 * Backends: "cpu" always; "cuda" and "hip" when rp_backend_find succeeds (the module next to
 * the test, in ../, or in $RWKVPEFT_MODULE_PATH), otherwise their cases print SKIP and pass.
 * $RWKVPEFT_OPS_BACKENDS (comma list, e.g. "cuda") restricts the set. GPU backends are also
 * run with their tiled GEMM (RWKVPEFT_CUDA_GEMM=tiled) inside the gemm test.
 *
 * Method (the ggml test-backend-ops idea):
 * - inputs are random, fresh per run from a seed printed at start and in every failure
 *   ($RWKVPEFT_TEST_SEED repeats a run); each is rounded to the element type the backend under
 *   test uses for that role (A or P), so backend and oracle see identical values;
 * - sizes are awkward on purpose: T not a multiple of 16, C not a multiple of 64, B > 1, odd
 *   row counts, a vocabulary that is not a power of two, ragged GEMM tiles;
 * - every written output is filled with NaN before the op, and every element must come back
 *   finite; "+=" outputs start from random values and must show the accumulation;
 * - results are compared by normalised error ‖a − b‖/‖b‖ with a limit set by the element
 *   type the result is stored in (float32 ~1e-5, bfloat16 ~1e-2);
 * - all buffers are allocated and filled through the backend's own alloc/memcpy ops.
 * Finite differences (cpu64, double, central, h = 1e-5): every backward against the forward,
 * with loss L = Σ gy·y (+ Σ gs_out·s_out); tolerance 1e-6 normalised.
 *
 * $RWKVPEFT_OPS_VERBOSE=1 prints every comparison with its error; $RWKVPEFT_OPS_ONLY=wkv6,gemm
 * runs only the named tests (the others pass without doing anything). */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <check.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "kernel_common.h"
#include "optim8.h"

/* ------------------------------------------------------------------------------------ */
/* seed, random numbers, host arena                                                     */
/* ------------------------------------------------------------------------------------ */

static unsigned long long g_seed;
static int g_verbose;
static char g_case[256]; /* what is being checked, for failure messages */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_u64(rng *g) {
    uint64_t z = (g->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double rng_unif(rng *g) { return (double)(rng_u64(g) >> 11) * (1.0 / 9007199254740992.0); }
static double rng_range(rng *g, double lo, double hi) { return lo + (hi - lo) * rng_unif(g); }
static double rng_normal(rng *g) {
    double u1 = rng_unif(g), u2 = rng_unif(g);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
static int rng_int(rng *g, int n) { return (int)(rng_u64(g) % (uint64_t)n); }

/* A test's generator: the run's seed mixed with the test's name. */
static rng rng_for(const char *name) {
    uint64_t h = 1469598103934665603ull;
    for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
    rng g = {g_seed ^ h};
    rng_u64(&g);
    return g;
}

#define ARENA_MAX 4096
static void *g_arena[ARENA_MAX];
static int g_arena_n;

static void *hmem(size_t bytes) {
    void *p = calloc(1, bytes ? bytes : 1);
    ck_assert_msg(p != NULL, "host allocation of %zu bytes failed", bytes);
    ck_assert_msg(g_arena_n < ARENA_MAX, "host arena full");
    g_arena[g_arena_n++] = p;
    return p;
}
static double *H(int64_t n) { return (double *)hmem(sizeof(double) * (size_t)(n > 0 ? n : 1)); }
static double *Hcopy(const double *src, int64_t n) {
    double *d = H(n);
    memcpy(d, src, sizeof(double) * (size_t)n);
    return d;
}
static void arena_free(void) {
    for (int i = 0; i < g_arena_n; i++) free(g_arena[i]);
    g_arena_n = 0;
}

static void set_case(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_case, sizeof g_case, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------------------ */
/* element types on the host                                                            */
/* ------------------------------------------------------------------------------------ */

static double round_to(rp_dtype t, double v) {
    switch (t) {
    case RP_F32: return (float)v;
    case RP_BF16: return rp_bf16_to_f32(rp_f32_to_bf16((float)v));
    case RP_F16: return rp_f16_to_f32(rp_f32_to_f16((float)v));
    default: return v;
    }
}

static void to_bytes(rp_dtype t, const double *h, int64_t n, void *out) {
    for (int64_t i = 0; i < n; i++) {
        switch (t) {
        case RP_F64: ((double *)out)[i] = h[i]; break;
        case RP_F32: ((float *)out)[i] = (float)h[i]; break;
        case RP_BF16: ((uint16_t *)out)[i] = rp_f32_to_bf16((float)h[i]); break;
        case RP_F16: ((uint16_t *)out)[i] = rp_f32_to_f16((float)h[i]); break;
        default: ck_abort_msg("to_bytes: type %d", (int)t);
        }
    }
}

static void from_bytes(rp_dtype t, const void *in, int64_t n, double *h) {
    for (int64_t i = 0; i < n; i++) {
        switch (t) {
        case RP_F64: h[i] = ((const double *)in)[i]; break;
        case RP_F32: h[i] = ((const float *)in)[i]; break;
        case RP_BF16: h[i] = rp_bf16_to_f32(((const uint16_t *)in)[i]); break;
        case RP_F16: h[i] = rp_f16_to_f32(((const uint16_t *)in)[i]); break;
        default: ck_abort_msg("from_bytes: type %d", (int)t);
        }
    }
}

/* random values rounded to t */
static double *gen_normal(rng *g, int64_t n, double mean, double sd, rp_dtype t) {
    double *h = H(n);
    for (int64_t i = 0; i < n; i++) h[i] = round_to(t, mean + sd * rng_normal(g));
    return h;
}
static double *gen_unif(rng *g, int64_t n, double lo, double hi, rp_dtype t) {
    double *h = H(n);
    for (int64_t i = 0; i < n; i++) h[i] = round_to(t, rng_range(g, lo, hi));
    return h;
}
static double *nan_array(int64_t n) {
    double *h = H(n);
    for (int64_t i = 0; i < n; i++) h[i] = NAN;
    return h;
}

/* ------------------------------------------------------------------------------------ */
/* backends                                                                             */
/* ------------------------------------------------------------------------------------ */

typedef struct bk {
    const rp_backend_ops *ops;
    rp_backend *be;
    rp_dtype A, P;
    int gpu;
    char label[48];
} bk;

static int exe_dir(char *out, size_t n) {
    ssize_t len = readlink("/proc/self/exe", out, n - 1);
    if (len <= 0) return -1;
    out[len] = 0;
    char *s = strrchr(out, '/');
    if (!s) return -1;
    *s = 0;
    return 0;
}

/* Opens backend `name`; 0 on success, else -1 with the reason in why. */
static int bk_open(bk *b, const char *name, const char *label, char *why, size_t why_n) {
    memset(b, 0, sizeof *b);
    rp_err err = {0, {0}};
    char desc[256] = {0};
    int count = 0;
    const rp_backend_ops *ops = rp_backend_find(name, NULL, &count, desc, sizeof desc, &err);
    if (!ops && (strcmp(name, "cuda") == 0 || strcmp(name, "hip") == 0)) {
        char dir[1024];
        if (exe_dir(dir, sizeof dir - 4) == 0) {
            ops = rp_backend_find(name, dir, &count, desc, sizeof desc, &err);
            if (!ops) {
                strcat(dir, "/..");
                ops = rp_backend_find(name, dir, &count, desc, sizeof desc, &err);
            }
        }
    }
    if (!ops) {
        snprintf(why, why_n, "%s", err.msg[0] ? err.msg : desc);
        return -1;
    }
    rp_backend *be = ops->create(0, 0, &err);
    if (!be) {
        snprintf(why, why_n, "create failed: %.400s", err.msg);
        return -1;
    }
    b->ops = ops;
    b->be = be;
    b->A = ops->act_dtype;
    b->P = ops->par_dtype;
    b->gpu = strcmp(name, "cpu") != 0 && strcmp(name, "cpu64") != 0;
    snprintf(b->label, sizeof b->label, "%s", label ? label : name);
    if (g_verbose && b->gpu) printf("  [%s] %s\n", b->label, desc);
    return 0;
}

static void bk_close(bk *b) {
    if (b->be) b->ops->destroy(b->be);
    b->be = NULL;
}

/* The backends under test, from $RWKVPEFT_OPS_BACKENDS or cpu,cuda,hip. */
static int backend_names(const char *names[8]) {
    static char buf[256];
    const char *env = getenv("RWKVPEFT_OPS_BACKENDS");
    snprintf(buf, sizeof buf, "%s", env && env[0] ? env : "cpu,cuda,hip");
    int n = 0;
    for (char *tok = strtok(buf, ","); tok && n < 8; tok = strtok(NULL, ",")) names[n++] = tok;
    return n;
}

#define CHECK_RC(b, call)                                                                           \
    do {                                                                                            \
        int rc_ = (call);                                                                           \
        ck_assert_msg(rc_ == 0, "[%s] %s: %s returned %d: %s (seed %llu)", (b)->label, g_case, #call,  \
                      rc_, (b)->be->err.msg, g_seed);                                               \
    } while (0)

/* Runs body(X, R, g) for every available backend X with the cpu64 oracle R. */
/* $RWKVPEFT_OPS_ONLY (comma list of test names) restricts which tests do anything. */
static int test_selected(const char *test) {
    const char *only = getenv("RWKVPEFT_OPS_ONLY");
    if (!only || !only[0]) return 1;
    size_t n = strlen(test);
    for (const char *p = only; (p = strstr(p, test)) != NULL; p += n)
        if ((p == only || p[-1] == ',') && (p[n] == 0 || p[n] == ',')) return 1;
    return 0;
}

typedef void (*op_body)(bk *X, bk *R, rng *g);
static void for_each_backend(const char *test, op_body body) {
    if (!test_selected(test)) return;
    const char *names[8];
    int nn = backend_names(names);
    bk R;
    char why[512];
    ck_assert_msg(bk_open(&R, "cpu64", NULL, why, sizeof why) == 0, "cpu64 oracle: %s", why);
    for (int i = 0; i < nn; i++) {
        bk X;
        if (bk_open(&X, names[i], NULL, why, sizeof why) != 0) {
            ck_assert_msg(strcmp(names[i], "cpu") != 0, "the cpu backend must exist: %s", why);
            printf("SKIP %-16s on %-5s: %s\n", test, names[i], why);
            continue;
        }
        rng g = rng_for(test);
        body(&X, &R, &g);
        bk_close(&X);
        arena_free();
    }
    bk_close(&R);
}

/* ------------------------------------------------------------------------------------ */
/* device buffers (through the backend's own ops)                                       */
/* ------------------------------------------------------------------------------------ */

/* Every buffer carries GUARD bytes of a known pattern past its end, checked when it is
 * read back (a write past the end fails), and inputs keep a snapshot of what was uploaded
 * (an op that modifies an input fails). */
#define GUARD 64
#define GUARD_BYTE 0xA5

typedef struct tb {
    bk *b;
    void *d;
    rp_dtype t;
    int64_t n;
    unsigned char *snap; /* read-only input: the uploaded bytes */
} tb;

static size_t tb_bytes(const tb *x) { return rp_dtype_size(x->t) * (size_t)x->n; }

static tb tb_alloc(bk *b, rp_dtype t, int64_t n) {
    tb x = {b, NULL, t, n > 0 ? n : 0, NULL};
    CHECK_RC(b, b->ops->alloc(b->be, &x.d, tb_bytes(&x) + GUARD));
    return x;
}
static void tb_upload(tb *x, const void *bytes) {
    size_t nb = tb_bytes(x);
    unsigned char *tmp = (unsigned char *)malloc(nb + GUARD);
    if (nb) memcpy(tmp, bytes, nb);
    memset(tmp + nb, GUARD_BYTE, GUARD);
    int rc = x->b->ops->memcpy_h2d(x->b->be, x->d, tmp, nb + GUARD);
    free(tmp);
    CHECK_RC(x->b, rc);
}
static void tb_put(tb *x, const double *h) {
    size_t nb = tb_bytes(x);
    void *tmp = malloc(nb ? nb : 1);
    to_bytes(x->t, h, x->n, tmp);
    tb_upload(x, tmp);
    free(tmp);
}
/* downloads; checks the guard (and an input's bytes); converts into h when given */
static void tb_check_get(const tb *x, double *h) {
    size_t nb = tb_bytes(x);
    unsigned char *tmp = (unsigned char *)malloc(nb + GUARD);
    int rc = x->b->ops->memcpy_d2h(x->b->be, tmp, x->d, nb + GUARD);
    if (rc) free(tmp);
    CHECK_RC(x->b, rc);
    for (size_t i = 0; i < GUARD; i++)
        if (tmp[nb + i] != GUARD_BYTE) {
            free(tmp);
            ck_abort_msg("[%s] %s: written past the end of a %lld-element %s buffer (guard byte %zu) (seed %llu)",
                         x->b->label, g_case, (long long)x->n, rp_dtype_name(x->t), i, g_seed);
        }
    if (x->snap && memcmp(x->snap, tmp, nb) != 0) {
        free(tmp);
        ck_abort_msg("[%s] %s: an input buffer (%lld x %s) was modified (seed %llu)", x->b->label, g_case,
                     (long long)x->n, rp_dtype_name(x->t), g_seed);
    }
    if (h) from_bytes(x->t, tmp, x->n, h);
    free(tmp);
}
/* read-only input: NULL host → NULL device pointer */
static tb tb_in(bk *b, rp_dtype t, const double *h, int64_t n) {
    if (!h) return (tb){b, NULL, t, n, NULL};
    tb x = tb_alloc(b, t, n);
    x.snap = (unsigned char *)malloc(tb_bytes(&x) + 1);
    to_bytes(t, h, x.n, x.snap);
    tb_upload(&x, x.snap);
    return x;
}
/* "+=" output: starts from h */
static tb tb_io(bk *b, rp_dtype t, const double *h, int64_t n) {
    if (!h) return (tb){b, NULL, t, n, NULL};
    tb x = tb_alloc(b, t, n);
    tb_put(&x, h);
    return x;
}
/* written output: NULL host → not wanted; else poisoned with NaN */
static tb tb_out(bk *b, rp_dtype t, const double *h, int64_t n) {
    if (!h) return (tb){b, NULL, t, n, NULL};
    tb x = tb_alloc(b, t, n);
    double *nan = (double *)malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++) nan[i] = NAN;
    tb_put(&x, nan);
    free(nan);
    return x;
}
/* an input whose buffer the op overwrites (in-place use) */
static tb tb_writable(tb x) {
    free(x.snap);
    x.snap = NULL;
    return x;
}
static tb tb_raw(bk *b, const void *host, size_t bytes) {
    tb x = tb_alloc(b, RP_U8, (int64_t)bytes);
    x.snap = (unsigned char *)malloc(bytes + 1);
    if (bytes) memcpy(x.snap, host, bytes);
    tb_upload(&x, x.snap);
    return x;
}
/* checks, downloads into h (when both exist) and frees */
static void tb_done(tb *x, double *h) {
    if (!x->d) return;
    tb_check_get(x, h);
    x->b->ops->free(x->b->be, x->d);
    x->d = NULL;
    free(x->snap);
    x->snap = NULL;
}

/* ------------------------------------------------------------------------------------ */
/* comparison                                                                           */
/* ------------------------------------------------------------------------------------ */

static double tol_of(rp_dtype t) {
    switch (t) {
    case RP_F64: return 1e-12;
    case RP_F32: return 1e-5;
    case RP_F16: return 3e-3;
    default: return 1e-2;
    }
}

/* ‖got − ref‖/‖ref‖ (absolute when ref is 0); every element of got must be finite where
 * ref is (an unwritten, NaN-poisoned element fails here). */
static void expect_close(const bk *X, const char *what, const double *got, const double *ref, int64_t n, double tol) {
    double d2 = 0, r2 = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isfinite(ref[i]))
            ck_assert_msg(isfinite(got[i]),
                          "[%s] %s: %s[%lld] = %g is not finite (not written?) while the oracle has %g (seed %llu)",
                          X->label, g_case, what, (long long)i, got[i], ref[i], g_seed);
        double d = got[i] - ref[i];
        d2 += d * d;
        r2 += ref[i] * ref[i];
    }
    double e = r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
    if (g_verbose) printf("  %-12s %-40.40s %-10s nerr %.2e (limit %.0e)\n", X->label, g_case, what, e, tol);
    if (!(e <= tol)) {
        int64_t worst = 0;
        double wd = -1;
        for (int64_t i = 0; i < n; i++)
            if (fabs(got[i] - ref[i]) > wd) {
                wd = fabs(got[i] - ref[i]);
                worst = i;
            }
        ck_abort_msg("[%s] %s: %s normalised error %.3e > %.1e (worst [%lld]: %.9g vs %.9g) (seed %llu)", X->label,
                     g_case, what, e, tol, (long long)worst, got[worst], ref[worst], g_seed);
    }
}

static void expect_same_bits(const bk *X, const char *what, const double *got, const double *ref, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        int ok = isnan(ref[i]) ? isnan(got[i]) : (got[i] == ref[i] && signbit(got[i]) == signbit(ref[i]));
        ck_assert_msg(ok, "[%s] %s: %s[%lld] = %.9g, expected %.9g exactly (seed %llu)", X->label, g_case, what,
                      (long long)i, got[i], ref[i], g_seed);
    }
    if (g_verbose) printf("  %-12s %-40.40s %-10s exact\n", X->label, g_case, what);
}

/* ------------------------------------------------------------------------------------ */
/* op wrappers: host doubles in, host doubles out, on any backend                       */
/* ------------------------------------------------------------------------------------ */

static int64_t extent(int batch, int64_t stride, int64_t rows, int64_t ld, int64_t cols) {
    if (rows <= 0 || cols <= 0) return 1;
    return (int64_t)(batch - 1) * stride + (rows - 1) * ld + cols;
}

static void run_gemm(bk *b, int ta, int tbt, int m, int n, int k, double alpha, const double *A, rp_dtype tya,
                     int64_t lda, int64_t sa, const double *B, rp_dtype tyb, int64_t ldb, int64_t sb, double beta,
                     double *C, rp_dtype tyc, int64_t ldc, int64_t sc, int batch) {
    int64_t ea = extent(batch, sa, ta ? k : m, lda, ta ? m : k), eb = extent(batch, sb, tbt ? n : k, ldb, tbt ? k : n);
    int64_t ec = extent(batch, sc, m, ldc, n);
    tb dA = tb_in(b, tya, A, ea), dB = tb_in(b, tyb, B, eb), dC = tb_io(b, tyc, C, ec);
    CHECK_RC(b, b->ops->gemm(b->be, ta, tbt, m, n, k, (float)alpha, dA.d, tya, lda, sa, dB.d, tyb, ldb, sb, (float)beta,
                             dC.d, tyc, ldc, sc, batch));
    tb_done(&dA, NULL);
    tb_done(&dB, NULL);
    tb_done(&dC, C);
}

static void run_embedding_fwd(bk *b, double *out, const double *table, const int32_t *ids, int64_t n, int C, int V) {
    tb dt = tb_in(b, b->A, table, (int64_t)V * C), di = tb_raw(b, ids, sizeof(int32_t) * (size_t)n);
    tb dout = tb_out(b, b->A, out, n * C);
    CHECK_RC(b, b->ops->embedding_fwd(b->be, dout.d, dt.d, (const int32_t *)di.d, n, C));
    tb_done(&dt, NULL);
    tb_done(&di, NULL);
    tb_done(&dout, out);
}

static void run_embedding_bwd(bk *b, double *dtable, const double *dout, const int32_t *ids, int64_t n, int C, int V) {
    tb dt = tb_io(b, b->P, dtable, (int64_t)V * C), di = tb_raw(b, ids, sizeof(int32_t) * (size_t)n);
    tb dd = tb_in(b, b->A, dout, n * C);
    CHECK_RC(b, b->ops->embedding_bwd(b->be, dt.d, dd.d, (const int32_t *)di.d, n, C));
    tb_done(&di, NULL);
    tb_done(&dd, NULL);
    tb_done(&dt, dtable);
}

static void run_norm_fwd(bk *b, double *y, double *mean, double *rstd, const double *x, const double *w,
                         const double *bias, int64_t n, int G, int S, double eps) {
    int64_t C = (int64_t)G * S;
    tb dx = tb_in(b, b->A, x, n * C), dw = tb_in(b, b->P, w, C), dbias = tb_in(b, b->P, bias, C);
    tb dy = tb_out(b, b->A, y, n * C), dm = tb_out(b, b->P, mean, n * G), dr = tb_out(b, b->P, rstd, n * G);
    CHECK_RC(b, b->ops->norm_fwd(b->be, dy.d, dm.d, dr.d, dx.d, dw.d, dbias.d, n, G, S, (float)eps));
    tb_done(&dx, NULL);
    tb_done(&dw, NULL);
    tb_done(&dbias, NULL);
    tb_done(&dy, y);
    tb_done(&dm, mean);
    tb_done(&dr, rstd);
}

static void run_norm_bwd(bk *b, double *dx, double *dw, double *db, const double *dy, const double *x, const double *w,
                         const double *mean, const double *rstd, int64_t n, int G, int S) {
    int64_t C = (int64_t)G * S;
    tb ddx = tb_io(b, b->A, dx, n * C), ddw = tb_io(b, b->P, dw, C), ddb = tb_io(b, b->P, db, C);
    tb ddy = tb_in(b, b->A, dy, n * C), dxx = tb_in(b, b->A, x, n * C), dww = tb_in(b, b->P, w, C);
    tb dm = tb_in(b, b->P, mean, n * G), dr = tb_in(b, b->P, rstd, n * G);
    CHECK_RC(b, b->ops->norm_bwd(b->be, ddx.d, ddw.d, ddb.d, ddy.d, dxx.d, dww.d, dm.d, dr.d, n, G, S));
    tb_done(&ddy, NULL);
    tb_done(&dxx, NULL);
    tb_done(&dww, NULL);
    tb_done(&dm, NULL);
    tb_done(&dr, NULL);
    tb_done(&ddx, dx);
    tb_done(&ddw, dw);
    tb_done(&ddb, db);
}

static void run_norm_gate_fwd(bk *b, double *out, double *mean, double *rstd, const double *x, const double *w,
                              const double *bias, const double *gate, int silu, int64_t n, int G, int S, double eps) {
    int64_t C = (int64_t)G * S;
    tb dx = tb_in(b, b->A, x, n * C), dw = tb_in(b, b->P, w, C), dbias = tb_in(b, b->P, bias, C);
    tb dg = tb_in(b, b->A, gate, n * C);
    tb dout = tb_out(b, b->A, out, n * C), dm = tb_out(b, b->P, mean, n * G), dr = tb_out(b, b->P, rstd, n * G);
    CHECK_RC(b, b->ops->norm_gate_fwd(b->be, dout.d, dm.d, dr.d, dx.d, dw.d, dbias.d, dg.d, silu, n, G, S, (float)eps));
    tb_done(&dx, NULL);
    tb_done(&dw, NULL);
    tb_done(&dbias, NULL);
    tb_done(&dg, NULL);
    tb_done(&dout, out);
    tb_done(&dm, mean);
    tb_done(&dr, rstd);
}

/* dx and dgate are written (poisoned before the call), dw and db accumulate */
static void run_norm_gate_bwd(bk *b, double *dx, double *dgate, double *dw, double *db, const double *dout,
                              const double *x, const double *w, const double *bias, const double *gate, int silu,
                              const double *mean, const double *rstd, int64_t n, int G, int S) {
    int64_t C = (int64_t)G * S;
    tb ddx = tb_out(b, b->A, dx, n * C), ddg = tb_out(b, b->A, dgate, n * C);
    tb ddw = tb_io(b, b->P, dw, C), ddb = tb_io(b, b->P, db, C);
    tb ddo = tb_in(b, b->A, dout, n * C), dxx = tb_in(b, b->A, x, n * C), dww = tb_in(b, b->P, w, C);
    tb dbb = tb_in(b, b->P, bias, C), dgg = tb_in(b, b->A, gate, n * C);
    tb dm = tb_in(b, b->P, mean, n * G), dr = tb_in(b, b->P, rstd, n * G);
    CHECK_RC(b, b->ops->norm_gate_bwd(b->be, ddx.d, ddg.d, ddw.d, ddb.d, ddo.d, dxx.d, dww.d, dbb.d, dgg.d, silu, dm.d,
                                      dr.d, n, G, S));
    tb_done(&ddo, NULL);
    tb_done(&dxx, NULL);
    tb_done(&dww, NULL);
    tb_done(&dbb, NULL);
    tb_done(&dgg, NULL);
    tb_done(&dm, NULL);
    tb_done(&dr, NULL);
    tb_done(&ddx, dx);
    tb_done(&ddg, dgate);
    tb_done(&ddw, dw);
    tb_done(&ddb, db);
}

static void run_shift_fwd(bk *b, double *out, const double *x, const double *xprev, const double *coef,
                          const double *m, int form, int S, int B, int T, int C) {
    int64_t slot = (int64_t)B * T * C;
    tb dx = tb_in(b, b->A, x, slot), dp = tb_in(b, b->A, xprev, (int64_t)B * C);
    tb dc = tb_in(b, b->P, coef, (int64_t)S * C), dm = tb_in(b, b->A, m, S * slot);
    tb dout = tb_out(b, b->A, out, S * slot);
    CHECK_RC(b, b->ops->shift_mix_fwd(b->be, dout.d, dx.d, dp.d, dc.d, dm.d, form, S, B, T, C));
    tb_done(&dx, NULL);
    tb_done(&dp, NULL);
    tb_done(&dc, NULL);
    tb_done(&dm, NULL);
    tb_done(&dout, out);
}

static void run_shift_bwd(bk *b, double *dx, double *dxprev, double *dcoef, double *dm, const double *dout,
                          const double *x, const double *xprev, const double *coef, const double *m, int form, int S,
                          int B, int T, int C) {
    int64_t slot = (int64_t)B * T * C;
    tb ddx = tb_io(b, b->A, dx, slot), ddp = tb_io(b, b->A, dxprev, (int64_t)B * C);
    tb ddc = tb_io(b, b->P, dcoef, (int64_t)S * C), ddm = tb_out(b, b->A, dm, S * slot);
    tb ddo = tb_in(b, b->A, dout, S * slot), dxx = tb_in(b, b->A, x, slot);
    tb dpp = tb_in(b, b->A, xprev, (int64_t)B * C), dcc = tb_in(b, b->P, coef, (int64_t)S * C);
    tb dmm = tb_in(b, b->A, m, S * slot);
    CHECK_RC(b, b->ops->shift_mix_bwd(b->be, ddx.d, ddp.d, ddc.d, ddm.d, ddo.d, dxx.d, dpp.d, dcc.d, dmm.d, form, S, B,
                                      T, C));
    tb_done(&ddo, NULL);
    tb_done(&dxx, NULL);
    tb_done(&dpp, NULL);
    tb_done(&dcc, NULL);
    tb_done(&dmm, NULL);
    tb_done(&ddx, dx);
    tb_done(&ddp, dxprev);
    tb_done(&ddc, dcoef);
    tb_done(&ddm, dm);
}

/* inplace: y computed into x's buffer */
static void run_act_fwd(bk *b, int kind, double *y, const double *x, int64_t n, int inplace) {
    tb dx = tb_in(b, b->A, x, n);
    tb dy = inplace ? tb_writable(dx) : tb_out(b, b->A, y, n);
    CHECK_RC(b, b->ops->act_fwd(b->be, kind, dy.d, dx.d, n));
    if (!inplace) tb_done(&dx, NULL);
    tb_done(&dy, y);
}

/* x NULL: the backward from y alone (relu²'s form for a graph that keeps only its output) */
static void run_act_bwd(bk *b, int kind, double *dx, const double *dy, const double *x, const double *y, int64_t n,
                        int inplace) {
    int uses_y = kind == RP_ACT_TANH || kind == RP_ACT_SIGMOID || !x;
    tb ddy = tb_in(b, b->A, dy, n), dxx = tb_in(b, b->A, uses_y ? NULL : x, n);
    tb dyy = tb_in(b, b->A, uses_y ? y : NULL, n);
    tb ddx = inplace ? tb_writable(ddy) : tb_out(b, b->A, dx, n);
    CHECK_RC(b, b->ops->act_bwd(b->be, kind, ddx.d, ddy.d, dxx.d, dyy.d, n));
    if (!inplace) tb_done(&ddy, NULL);
    tb_done(&dxx, NULL);
    tb_done(&dyy, NULL);
    tb_done(&ddx, dx);
}

static void run_mul_fwd(bk *b, double *y, const double *a, const double *bb, int64_t n, int inplace) {
    tb da = tb_in(b, b->A, a, n), db = tb_in(b, b->A, bb, n);
    tb dy = inplace ? tb_writable(da) : tb_out(b, b->A, y, n);
    CHECK_RC(b, b->ops->mul_fwd(b->be, dy.d, da.d, db.d, n));
    if (!inplace) tb_done(&da, NULL);
    tb_done(&db, NULL);
    tb_done(&dy, y);
}

static void run_mul_bwd(bk *b, double *da, double *db, const double *dy, const double *a, const double *bb, int64_t n) {
    tb dda = tb_io(b, b->A, da, n), ddb = tb_io(b, b->A, db, n), ddy = tb_in(b, b->A, dy, n);
    tb daa = tb_in(b, b->A, a, n), dbb = tb_in(b, b->A, bb, n);
    CHECK_RC(b, b->ops->mul_bwd(b->be, dda.d, ddb.d, ddy.d, daa.d, dbb.d, n));
    tb_done(&ddy, NULL);
    tb_done(&daa, NULL);
    tb_done(&dbb, NULL);
    tb_done(&dda, da);
    tb_done(&ddb, db);
}

/* y = f(a)·b (+ r); inplace: y is r's buffer (r given) or b's */
static void run_act_mul_fwd(bk *b, int kind, double *y, const double *a, const double *bb, const double *r, int64_t n,
                            int inplace) {
    tb da = tb_in(b, b->A, a, n), db = tb_in(b, b->A, bb, n), dr = tb_in(b, b->A, r, n);
    tb dy = inplace ? tb_writable(r ? dr : db) : tb_out(b, b->A, y, n);
    CHECK_RC(b, b->ops->act_mul_fwd(b->be, kind, dy.d, da.d, db.d, dr.d, n));
    tb_done(&da, NULL);
    if (!inplace || r) tb_done(&db, NULL);
    if (!inplace || !r) tb_done(&dr, NULL);
    tb_done(&dy, y);
}

/* da, db written (NULL: not wanted; poisoned before the call) */
static void run_act_mul_bwd(bk *b, int kind, double *da, double *db, const double *dy, const double *a,
                            const double *bb, int64_t n) {
    tb dda = tb_out(b, b->A, da, n), ddb = tb_out(b, b->A, db, n), ddy = tb_in(b, b->A, dy, n);
    tb daa = tb_in(b, b->A, a, n), dbb = tb_in(b, b->A, bb, n);
    CHECK_RC(b, b->ops->act_mul_bwd(b->be, kind, dda.d, ddb.d, ddy.d, daa.d, dbb.d, n));
    tb_done(&ddy, NULL);
    tb_done(&daa, NULL);
    tb_done(&dbb, NULL);
    tb_done(&dda, da);
    tb_done(&ddb, db);
}

static void run_add(bk *b, double *y, const double *x, double alpha, int64_t n) {
    tb dy = tb_io(b, b->A, y, n), dx = tb_in(b, b->A, x, n);
    CHECK_RC(b, b->ops->add(b->be, dy.d, dx.d, (float)alpha, n));
    tb_done(&dx, NULL);
    tb_done(&dy, y);
}

static void run_broadcast(bk *b, double *y, const double *v, int64_t n, int C, int acc) {
    tb dy = acc ? tb_io(b, b->A, y, n * C) : tb_out(b, b->A, y, n * C), dv = tb_in(b, b->P, v, C);
    CHECK_RC(b, b->ops->broadcast_rows(b->be, dy.d, dv.d, n, C, acc));
    tb_done(&dv, NULL);
    tb_done(&dy, y);
}

static void run_sum_rows(bk *b, double *dv, const double *dy, int64_t n, int C) {
    tb dv_ = tb_io(b, b->P, dv, C), dy_ = tb_in(b, b->A, dy, n * C);
    CHECK_RC(b, b->ops->sum_rows(b->be, dv_.d, dy_.d, n, C));
    tb_done(&dy_, NULL);
    tb_done(&dv_, dv);
}

static void run_dropout(bk *b, double *y, const double *x, int64_t n, double p, uint64_t seed, int inplace) {
    tb dx = tb_in(b, b->A, x, n);
    tb dy = inplace ? tb_writable(dx) : tb_out(b, b->A, y, n);
    CHECK_RC(b, b->ops->dropout(b->be, dy.d, dx.d, n, (float)p, seed));
    if (!inplace) tb_done(&dx, NULL);
    tb_done(&dy, y);
}

/* inplace: y computed into b's buffer (the one alias lerp_fwd allows) */
static void run_lerp_fwd(bk *b, double *y, const double *a, const double *bb, const double *t, int64_t n, int inplace) {
    tb da = tb_in(b, b->A, a, n), db = tb_in(b, b->A, bb, n), dt = tb_in(b, b->A, t, n);
    tb dy = inplace ? tb_writable(db) : tb_out(b, b->A, y, n);
    CHECK_RC(b, b->ops->lerp_fwd(b->be, dy.d, da.d, db.d, dt.d, n));
    tb_done(&da, NULL);
    if (!inplace) tb_done(&db, NULL);
    tb_done(&dt, NULL);
    tb_done(&dy, y);
}

static void run_lerp_bwd(bk *b, double *da, double *db, double *dt, const double *dy, const double *a,
                         const double *bb, const double *t, int64_t n) {
    tb dda = tb_io(b, b->A, da, n), ddb = tb_io(b, b->A, db, n), ddt = tb_out(b, b->A, dt, n);
    tb ddy = tb_in(b, b->A, dy, n), daa = tb_in(b, b->A, a, n), dbb = tb_in(b, b->A, bb, n), dtt = tb_in(b, b->A, t, n);
    CHECK_RC(b, b->ops->lerp_bwd(b->be, dda.d, ddb.d, ddt.d, ddy.d, daa.d, dbb.d, dtt.d, n));
    tb_done(&ddy, NULL);
    tb_done(&daa, NULL);
    tb_done(&dbb, NULL);
    tb_done(&dtt, NULL);
    tb_done(&dda, da);
    tb_done(&ddb, db);
    tb_done(&ddt, dt);
}

static void run_kprep_fwd(bk *b, double *kout, double *wa, double *wb, const double *k, const double *a,
                          const double *kk, const double *ka, int64_t n, int H, int N) {
    int64_t C = (int64_t)H * N;
    tb dk = tb_in(b, b->A, k, n * C), da = tb_in(b, b->A, a, n * C), dkk = tb_in(b, b->P, kk, C), dka = tb_in(b, b->P, ka, C);
    tb dko = tb_out(b, b->A, kout, n * C), dwa = tb_out(b, b->A, wa, n * C), dwb = tb_out(b, b->A, wb, n * C);
    CHECK_RC(b, b->ops->v7_kprep_fwd(b->be, dko.d, dwa.d, dwb.d, dk.d, da.d, dkk.d, dka.d, n, H, N));
    tb_done(&dk, NULL);
    tb_done(&da, NULL);
    tb_done(&dkk, NULL);
    tb_done(&dka, NULL);
    tb_done(&dko, kout);
    tb_done(&dwa, wa);
    tb_done(&dwb, wb);
}

static void run_kprep_bwd(bk *b, double *dk, double *da, double *dkk, double *dka, const double *dkout,
                          const double *dwa, const double *dwb, const double *k, const double *a, const double *kk,
                          const double *ka, int64_t n, int H, int N) {
    int64_t C = (int64_t)H * N;
    tb ddk = tb_out(b, b->A, dk, n * C), dda = tb_out(b, b->A, da, n * C);
    tb ddkk = tb_io(b, b->P, dkk, C), ddka = tb_io(b, b->P, dka, C);
    tb ddko = tb_in(b, b->A, dkout, n * C), ddwa = tb_in(b, b->A, dwa, n * C), ddwb = tb_in(b, b->A, dwb, n * C);
    tb dkx = tb_in(b, b->A, k, n * C), dax = tb_in(b, b->A, a, n * C), dkkx = tb_in(b, b->P, kk, C),
       dkax = tb_in(b, b->P, ka, C);
    CHECK_RC(b, b->ops->v7_kprep_bwd(b->be, ddk.d, dda.d, ddkk.d, ddka.d, ddko.d, ddwa.d, ddwb.d, dkx.d, dax.d, dkkx.d,
                                     dkax.d, n, H, N));
    tb_done(&ddko, NULL);
    tb_done(&ddwa, NULL);
    tb_done(&ddwb, NULL);
    tb_done(&dkx, NULL);
    tb_done(&dax, NULL);
    tb_done(&dkkx, NULL);
    tb_done(&dkax, NULL);
    tb_done(&ddk, dk);
    tb_done(&dda, da);
    tb_done(&ddkk, dkk);
    tb_done(&ddka, dka);
}

/* y += bonus: y is read and written */
static void run_bonus_fwd(bk *b, double *y, const double *r, const double *k, const double *v, const double *rk,
                          int64_t n, int H, int N) {
    int64_t C = (int64_t)H * N;
    tb dy = tb_io(b, b->A, y, n * C), dr = tb_in(b, b->A, r, n * C), dk = tb_in(b, b->A, k, n * C);
    tb dv = tb_in(b, b->A, v, n * C), drk = tb_in(b, b->P, rk, C);
    CHECK_RC(b, b->ops->v7_bonus_fwd(b->be, dy.d, dr.d, dk.d, dv.d, drk.d, n, H, N));
    tb_done(&dr, NULL);
    tb_done(&dk, NULL);
    tb_done(&dv, NULL);
    tb_done(&drk, NULL);
    tb_done(&dy, y);
}

static void run_bonus_bwd(bk *b, double *dr, double *dk, double *dv, double *drk, const double *dy, const double *r,
                          const double *k, const double *v, const double *rk, int64_t n, int H, int N) {
    int64_t C = (int64_t)H * N;
    tb ddr = tb_io(b, b->A, dr, n * C), ddk = tb_io(b, b->A, dk, n * C), ddv = tb_io(b, b->A, dv, n * C);
    tb ddrk = tb_io(b, b->P, drk, C), ddy = tb_in(b, b->A, dy, n * C);
    tb drx = tb_in(b, b->A, r, n * C), dkx = tb_in(b, b->A, k, n * C), dvx = tb_in(b, b->A, v, n * C),
       drkx = tb_in(b, b->P, rk, C);
    CHECK_RC(b, b->ops->v7_bonus_bwd(b->be, ddr.d, ddk.d, ddv.d, ddrk.d, ddy.d, drx.d, dkx.d, dvx.d, drkx.d, n, H, N));
    tb_done(&ddy, NULL);
    tb_done(&drx, NULL);
    tb_done(&dkx, NULL);
    tb_done(&dvx, NULL);
    tb_done(&drkx, NULL);
    tb_done(&ddr, dr);
    tb_done(&ddk, dk);
    tb_done(&ddv, dv);
    tb_done(&ddrk, drk);
}

typedef struct wkv_shape {
    int B, T, H, N;
} wkv_shape;

/* ---- wkv7 ---- */
typedef struct w7_in {
    double *r, *w, *k, *v, *a, *b, *s0, *gy, *gs_out;
} w7_in;

static void run_wkv7_fwd(bk *b, double *y, double *s_out, const w7_in *in, int shared, wkv_shape s) {
    int64_t n = (int64_t)s.B * s.T * s.H * s.N, NN = (int64_t)s.N * s.N;
    tb dr = tb_in(b, b->A, in->r, n), dw = tb_in(b, b->A, in->w, n), dk = tb_in(b, b->A, in->k, n);
    tb dv = tb_in(b, b->A, in->v, n), da = tb_in(b, b->A, in->a, n), db = tb_in(b, b->A, in->b, n);
    tb ds0 = tb_in(b, b->P, in->s0, (shared ? 1 : s.B) * s.H * NN);
    tb dy = tb_out(b, b->A, y, n), dso = tb_out(b, b->P, s_out, (int64_t)s.B * s.H * NN);
    CHECK_RC(b, b->ops->wkv7_fwd(b->be, dy.d, dso.d, dr.d, dw.d, dk.d, dv.d, da.d, db.d, ds0.d, shared, s.B, s.T, s.H,
                                 s.N));
    tb *ins[] = {&dr, &dw, &dk, &dv, &da, &db, &ds0};
    for (int i = 0; i < 7; i++) tb_done(ins[i], NULL);
    tb_done(&dy, y);
    tb_done(&dso, s_out);
}

/* the per-sequence state advanced in place: s0 and s_out are one buffer */
static void run_wkv7_fwd_inplace(bk *b, double *y, double *state, const w7_in *in, wkv_shape s) {
    int64_t n = (int64_t)s.B * s.T * s.H * s.N, NN = (int64_t)s.N * s.N;
    tb dr = tb_in(b, b->A, in->r, n), dw = tb_in(b, b->A, in->w, n), dk = tb_in(b, b->A, in->k, n);
    tb dv = tb_in(b, b->A, in->v, n), da = tb_in(b, b->A, in->a, n), db = tb_in(b, b->A, in->b, n);
    tb dst = tb_io(b, b->P, state, (int64_t)s.B * s.H * NN), dy = tb_out(b, b->A, y, n);
    CHECK_RC(b, b->ops->wkv7_fwd(b->be, dy.d, dst.d, dr.d, dw.d, dk.d, dv.d, da.d, db.d, dst.d, 0, s.B, s.T, s.H, s.N));
    tb *ins[] = {&dr, &dw, &dk, &dv, &da, &db};
    for (int i = 0; i < 6; i++) tb_done(ins[i], NULL);
    tb_done(&dy, y);
    tb_done(&dst, state);
}

typedef struct w7_grads {
    double *gr, *gw, *gk, *gv, *ga, *gb, *gs0;
} w7_grads;

static void run_wkv7_bwd(bk *b, w7_grads g, const w7_in *in, int shared, wkv_shape s) {
    int64_t n = (int64_t)s.B * s.T * s.H * s.N, NN = (int64_t)s.N * s.N;
    tb dr = tb_in(b, b->A, in->r, n), dw = tb_in(b, b->A, in->w, n), dk = tb_in(b, b->A, in->k, n);
    tb dv = tb_in(b, b->A, in->v, n), da = tb_in(b, b->A, in->a, n), db = tb_in(b, b->A, in->b, n);
    tb ds0 = tb_in(b, b->P, in->s0, (shared ? 1 : s.B) * s.H * NN);
    tb dgy = tb_in(b, b->A, in->gy, n), dgso = tb_in(b, b->P, in->gs_out, (int64_t)s.B * s.H * NN);
    tb dgr = tb_out(b, b->A, g.gr, n), dgw = tb_out(b, b->A, g.gw, n), dgk = tb_out(b, b->A, g.gk, n);
    tb dgv = tb_out(b, b->A, g.gv, n), dga = tb_out(b, b->A, g.ga, n), dgb = tb_out(b, b->A, g.gb, n);
    tb dgs0 = tb_io(b, b->P, g.gs0, (shared ? 1 : s.B) * s.H * NN);
    CHECK_RC(b, b->ops->wkv7_bwd(b->be, dgr.d, dgw.d, dgk.d, dgv.d, dga.d, dgb.d, dgs0.d, dgy.d, dgso.d, dr.d, dw.d, dk.d,
                                 dv.d, da.d, db.d, ds0.d, shared, s.B, s.T, s.H, s.N));
    tb *ins[] = {&dr, &dw, &dk, &dv, &da, &db, &ds0, &dgy, &dgso};
    for (int i = 0; i < 9; i++) tb_done(ins[i], NULL);
    tb_done(&dgr, g.gr);
    tb_done(&dgw, g.gw);
    tb_done(&dgk, g.gk);
    tb_done(&dgv, g.gv);
    tb_done(&dga, g.ga);
    tb_done(&dgb, g.gb);
    tb_done(&dgs0, g.gs0);
}


static void run_wkv_fwd(bk *b, double *y, double *s_out, const double *r, const double *k, const double *v,
                        const double *w, const double *u, const double *s0, int shared, wkv_shape s) {
    int64_t n = (int64_t)s.B * s.T * s.H * s.N, NN = (int64_t)s.N * s.N;
    tb dr = tb_in(b, b->A, r, n), dk = tb_in(b, b->A, k, n), dv = tb_in(b, b->A, v, n), dw = tb_in(b, b->A, w, n);
    tb du = tb_in(b, b->P, u, (int64_t)s.H * s.N);
    tb ds0 = tb_in(b, b->P, s0, (shared ? 1 : s.B) * s.H * NN);
    tb dy = tb_out(b, b->A, y, n), dso = tb_out(b, b->P, s_out, (int64_t)s.B * s.H * NN);
    CHECK_RC(b, b->ops->wkv6_fwd(b->be, dy.d, dso.d, dr.d, dk.d, dv.d, dw.d, du.d, ds0.d, shared, s.B, s.T, s.H, s.N));
    tb_done(&dr, NULL);
    tb_done(&dk, NULL);
    tb_done(&dv, NULL);
    tb_done(&dw, NULL);
    tb_done(&du, NULL);
    tb_done(&ds0, NULL);
    tb_done(&dy, y);
    tb_done(&dso, s_out);
}

/* the per-sequence state advanced in place: s0 and s_out are one buffer */
static void run_wkv_fwd_inplace(bk *b, double *y, double *state, const double *r, const double *k, const double *v,
                                const double *w, const double *u, wkv_shape s) {
    int64_t n = (int64_t)s.B * s.T * s.H * s.N, NN = (int64_t)s.N * s.N;
    tb dr = tb_in(b, b->A, r, n), dk = tb_in(b, b->A, k, n), dv = tb_in(b, b->A, v, n), dw = tb_in(b, b->A, w, n);
    tb du = tb_in(b, b->P, u, (int64_t)s.H * s.N), dst = tb_io(b, b->P, state, (int64_t)s.B * s.H * NN);
    tb dy = tb_out(b, b->A, y, n);
    CHECK_RC(b, b->ops->wkv6_fwd(b->be, dy.d, dst.d, dr.d, dk.d, dv.d, dw.d, du.d, dst.d, 0, s.B, s.T, s.H, s.N));
    tb_done(&dr, NULL);
    tb_done(&dk, NULL);
    tb_done(&dv, NULL);
    tb_done(&dw, NULL);
    tb_done(&du, NULL);
    tb_done(&dy, y);
    tb_done(&dst, state);
}

typedef struct wkv_grads {
    double *gr, *gk, *gv, *gw, *gu, *gs0;
} wkv_grads;

/* with_scratch: the op gets a NaN-poisoned scratch buffer of 2·B·T·H·N floats (the model
 * passes its dead buffers) instead of using its own */
static void run_wkv_bwd(bk *b, wkv_grads g, const double *gy, const double *gs_out, const double *r, const double *k,
                        const double *v, const double *w, const double *u, const double *s0, int shared,
                        wkv_shape s, int with_scratch) {
    int64_t n = (int64_t)s.B * s.T * s.H * s.N, NN = (int64_t)s.N * s.N;
    tb dr = tb_in(b, b->A, r, n), dk = tb_in(b, b->A, k, n), dv = tb_in(b, b->A, v, n), dw = tb_in(b, b->A, w, n);
    tb du = tb_in(b, b->P, u, (int64_t)s.H * s.N);
    tb ds0 = tb_in(b, b->P, s0, (shared ? 1 : s.B) * s.H * NN);
    tb dgy = tb_in(b, b->A, gy, n), dgso = tb_in(b, b->P, gs_out, (int64_t)s.B * s.H * NN);
    tb dgr = tb_out(b, b->A, g.gr, n), dgk = tb_out(b, b->A, g.gk, n), dgv = tb_out(b, b->A, g.gv, n);
    tb dgw = tb_out(b, b->A, g.gw, n), dgu = tb_io(b, b->P, g.gu, (int64_t)s.H * s.N);
    tb dgs0 = tb_io(b, b->P, g.gs0, (shared ? 1 : s.B) * s.H * NN);
    static const double any_host = 0; /* tb_out wants a host pointer; nothing is downloaded */
    tb dscr = with_scratch ? tb_out(b, RP_F32, &any_host, 2 * n + 64) : (tb){b, NULL, RP_F32, 0, NULL};
    CHECK_RC(b, b->ops->wkv6_bwd(b->be, dgr.d, dgk.d, dgv.d, dgw.d, dgu.d, dgs0.d, dgy.d, dgso.d, dr.d, dk.d, dv.d,
                                 dw.d, du.d, ds0.d, shared, s.B, s.T, s.H, s.N, dscr.d,
                                 dscr.d ? sizeof(float) * (size_t)(2 * n + 64) : 0));
    tb_done(&dscr, NULL);
    tb_done(&dr, NULL);
    tb_done(&dk, NULL);
    tb_done(&dv, NULL);
    tb_done(&dw, NULL);
    tb_done(&du, NULL);
    tb_done(&ds0, NULL);
    tb_done(&dgy, NULL);
    tb_done(&dgso, NULL);
    tb_done(&dgr, g.gr);
    tb_done(&dgk, g.gk);
    tb_done(&dgv, g.gv);
    tb_done(&dgw, g.gw);
    tb_done(&dgu, g.gu);
    tb_done(&dgs0, g.gs0);
}

/* alias: dlogits written over the logits buffer */
static void run_ce(bk *b, double *loss, double *dlogits, const double *logits, const int32_t *targets,
                   const double *weights, int64_t n, int V, double grad_scale, double l2wrap, int alias) {
    tb dl = tb_in(b, b->A, logits, n * V), dt = tb_raw(b, targets, sizeof(int32_t) * (size_t)n);
    tb dwt = tb_in(b, b->P, weights, n), dloss = tb_io(b, b->P, loss, 1);
    tb dd = alias ? tb_writable(dl) : tb_out(b, b->A, dlogits, n * V);
    CHECK_RC(b, b->ops->cross_entropy(b->be, dloss.d, dlogits ? dd.d : NULL, dl.d, (const int32_t *)dt.d, dwt.d, n, V,
                                      (float)grad_scale, (float)l2wrap));
    if (!alias) tb_done(&dl, NULL);
    tb_done(&dt, NULL);
    tb_done(&dwt, NULL);
    tb_done(&dloss, loss);
    tb_done(&dd, dlogits);
}

static void run_sumsq(bk *b, double *acc, const double *x, int64_t total, const rp_adam_segment *segs, int ns) {
    tb da = tb_io(b, b->P, acc, 1), dx = tb_in(b, b->P, x, total);
    CHECK_RC(b, b->ops->sumsq(b->be, da.d, dx.d, segs, ns));
    tb_done(&dx, NULL);
    tb_done(&da, acc);
}

typedef struct adam_cfg {
    double max_norm, lr, b1, b2, eps;
    int64_t step;
    const double *norm_sq; /* NULL: no clipping input */
} adam_cfg;

static void run_adam(bk *b, double *p, const double *g, double *m, double *v, int64_t total,
                     const rp_adam_segment *segs, int ns, adam_cfg c) {
    tb dp = tb_io(b, b->P, p, total), dg = tb_in(b, b->P, g, total), dm = tb_io(b, b->P, m, total);
    tb dv = tb_io(b, b->P, v, total), dn = tb_in(b, b->P, c.norm_sq, 1);
    CHECK_RC(b, b->ops->adam_update(b->be, dp.d, dg.d, dm.d, dv.d, segs, ns, dn.d, (float)c.max_norm, (float)c.lr,
                                    (float)c.b1, (float)c.b2, (float)c.eps, c.step));
    tb_done(&dg, NULL);
    tb_done(&dn, NULL);
    tb_done(&dp, p);
    tb_done(&dm, m);
    tb_done(&dv, v);
}

static void run_dequant(bk *b, double *out, const uint8_t *q, size_t q_bytes, const float *absmax, int64_t n_absmax,
                        const float *code, int format, int64_t n, int blocksize) {
    tb dq = tb_raw(b, q, q_bytes);
    tb da = absmax ? tb_raw(b, absmax, sizeof(float) * (size_t)n_absmax) : (tb){b, NULL, RP_U8, 0, NULL};
    tb dc = code ? tb_raw(b, code, sizeof(float) * 256) : (tb){b, NULL, RP_U8, 0, NULL};
    tb dout = tb_out(b, b->A, out, n);
    CHECK_RC(b, b->ops->dequant(b->be, dout.d, dq.d, da.d, dc.d, format, n, blocksize));
    tb_done(&dq, NULL);
    tb_done(&da, NULL);
    tb_done(&dc, NULL);
    tb_done(&dout, out);
}

/* ------------------------------------------------------------------------------------ */
/* memory and conversion                                                                */
/* ------------------------------------------------------------------------------------ */

static void body_memory(bk *X, bk *R, rng *g) {
    (void)R;
    set_case("memory");
    const rp_backend_ops *o = X->ops;
    enum { NB = 1001 };
    unsigned char src[NB], back[NB];
    for (int i = 0; i < NB; i++) src[i] = (unsigned char)rng_u64(g);
    void *a = NULL, *c = NULL;
    CHECK_RC(X, o->alloc(X->be, &a, NB));
    CHECK_RC(X, o->alloc(X->be, &c, NB + 64));
    ck_assert_msg(((uintptr_t)a & 63) == 0, "[%s] alloc not 64-byte aligned", X->label);
    CHECK_RC(X, o->memcpy_h2d(X->be, a, src, NB));
    CHECK_RC(X, o->memcpy_d2h(X->be, back, a, NB));
    ck_assert_msg(memcmp(src, back, NB) == 0, "[%s] h2d/d2h round trip differs", X->label);
    /* d2d into an odd offset */
    CHECK_RC(X, o->memcpy_d2d(X->be, (char *)c + 3, a, NB));
    CHECK_RC(X, o->memcpy_d2h(X->be, back, (char *)c + 3, NB));
    ck_assert_msg(memcmp(src, back, NB) == 0, "[%s] d2d differs", X->label);
    /* memset_zero of a middle range */
    CHECK_RC(X, o->memset_zero(X->be, (char *)a + 5, 100));
    CHECK_RC(X, o->memcpy_d2h(X->be, back, a, NB));
    for (int i = 0; i < NB; i++)
        ck_assert_msg(back[i] == (i >= 5 && i < 105 ? 0 : src[i]), "[%s] memset_zero byte %d", X->label, i);
    /* 2-D copy: 7 rows of 13 bytes, source pitch 20, destination pitch 32; gaps untouched */
    unsigned char pat[7 * 32], got2[7 * 32];
    for (int i = 0; i < 7 * 32; i++) pat[i] = (unsigned char)(0xA0 + (i & 15));
    CHECK_RC(X, o->memcpy_h2d(X->be, c, pat, sizeof pat));
    CHECK_RC(X, o->memcpy_h2d(X->be, a, src, NB));
    CHECK_RC(X, o->memcpy_2d(X->be, c, 32, a, 20, 13, 7));
    CHECK_RC(X, o->memcpy_d2h(X->be, got2, c, sizeof got2));
    for (int r = 0; r < 7; r++)
        for (int j = 0; j < 32; j++)
            ck_assert_msg(got2[r * 32 + j] == (j < 13 ? src[r * 20 + j] : pat[r * 32 + j]), "[%s] memcpy_2d r%d c%d",
                          X->label, r, j);
    CHECK_RC(X, o->synchronize(X->be));
    uint64_t fr = 0, tot = 0;
    CHECK_RC(X, o->memory_info(X->be, &fr, &tot));
    ck_assert_msg(tot > 0 && fr <= tot, "[%s] memory_info free %llu total %llu", X->label, (unsigned long long)fr,
                  (unsigned long long)tot);
    o->free(X->be, a);
    o->free(X->be, c);
    o->free(X->be, NULL);

    /* convert: every pair of F32, BF16, F16, F64, bit-exact against the host conversions */
    const rp_dtype types[4] = {RP_F32, RP_BF16, RP_F16, RP_F64};
    enum { NC = 517 };
    double vals[NC];
    for (int i = 0; i < NC; i++) vals[i] = rng_normal(g) * pow(10.0, rng_range(g, -8, 5));
    vals[0] = 0.0;
    vals[1] = -0.0;
    vals[2] = 70000.0;   /* f16 overflow */
    vals[3] = 1e-6;      /* f16 subnormal */
    vals[4] = NAN;
    vals[5] = -INFINITY;
    vals[6] = 65519.99;  /* f16 rounding edge */
    vals[7] = 1.00390625; /* bf16 tie */
    for (int si = 0; si < 4; si++)
        for (int di = 0; di < 4; di++) {
            rp_dtype st = types[si], dt = types[di];
            set_case("convert %s -> %s", rp_dtype_name(st), rp_dtype_name(dt));
            double srcv[NC], ref[NC], got[NC];
            for (int i = 0; i < NC; i++) srcv[i] = round_to(st, vals[i]);
            for (int i = 0; i < NC; i++) ref[i] = dt == RP_F64 ? srcv[i] : round_to(dt, (float)srcv[i]);
            tb s = tb_in(X, st, srcv, NC), d = tb_out(X, dt, got, NC);
            CHECK_RC(X, o->convert(X->be, d.d, dt, s.d, st, NC));
            tb_done(&s, NULL);
            tb_done(&d, got);
            expect_same_bits(X, "values", got, ref, NC);
        }
}

/* ------------------------------------------------------------------------------------ */
/* gemm                                                                                 */
/* ------------------------------------------------------------------------------------ */

/* One GEMM on X and on the oracle; the inputs are rounded to X's operand types. */
static void gemm_case_ld(bk *X, bk *R, rng *g, int ta, int tbt, int m, int n, int k, int batch, double alpha,
                         double beta, rp_dtype tya, rp_dtype tyb, rp_dtype tyc, int broadcast_b, int dense) {
    /* padded leading dimensions and strides (odd: every access path's scalar form), or dense
     * ones (dense: the 16-byte paths where the sizes allow) */
    int64_t ar = ta ? k : m, ac = ta ? m : k, br = tbt ? n : k, bc = tbt ? k : n;
    int64_t lda = dense ? ac : ac + 3, ldb = dense ? bc : bc + 1, ldc = dense ? n : n + 2;
    int64_t sa = ar * lda + (dense ? 0 : 5), sb = broadcast_b ? 0 : br * ldb + (dense ? 0 : 2),
            sc = (int64_t)m * ldc + (dense ? 0 : 7);
    int64_t ea = extent(batch, sa, ar, lda, ac), eb = extent(batch, sb, br, ldb, bc), ec = extent(batch, sc, m, ldc, n);
    double *A = gen_normal(g, ea, 0, 1, tya), *B = gen_normal(g, eb, 0, 1, tyb);
    double *C0 = beta == 0 ? nan_array(ec) : gen_normal(g, ec, 0, 1, tyc);
    /* the padding between rows and problems of C must stay untouched: make it NaN */
    for (int p = 0; p < batch; p++)
        for (int64_t r = 0; r < m; r++)
            for (int64_t j = n; j < ldc && p * sc + r * ldc + j < ec; j++) C0[p * sc + r * ldc + j] = NAN;
    double *Cx = Hcopy(C0, ec), *Cr = Hcopy(C0, ec);
    set_case("gemm ta%d tb%d %dx%dx%d b%d beta %g %s x %s -> %s%s", ta, tbt, m, n, k, batch, beta, rp_dtype_name(tya),
             rp_dtype_name(tyb), rp_dtype_name(tyc), broadcast_b ? " bcastB" : "");
    run_gemm(X, ta, tbt, m, n, k, alpha, A, tya, lda, sa, B, tyb, ldb, sb, beta, Cx, tyc, ldc, sc, batch);
    run_gemm(R, ta, tbt, m, n, k, alpha, A, RP_F64, lda, sa, B, RP_F64, ldb, sb, beta, Cr, RP_F64, ldc, sc, batch);
    /* compare the m×n blocks; padding must still be NaN */
    int64_t cnt = (int64_t)batch * m * n, q = 0;
    double *gx = H(cnt), *gr = H(cnt);
    for (int p = 0; p < batch; p++)
        for (int64_t r = 0; r < m; r++) {
            for (int64_t j = 0; j < n; j++, q++) {
                gx[q] = Cx[p * sc + r * ldc + j];
                gr[q] = Cr[p * sc + r * ldc + j];
            }
            for (int64_t j = n; j < ldc && p * sc + r * ldc + j < ec; j++)
                ck_assert_msg(isnan(Cx[p * sc + r * ldc + j]), "[%s] %s: C padding written at p%d r%lld c%lld",
                              X->label, g_case, p, (long long)r, (long long)j);
        }
    /* a mixed product may run at the precision of its narrower operand (backend.h) */
    double tol = fmax(tol_of(tyc), fmax(tol_of(tya), tol_of(tyb)));
    expect_close(X, "C", gx, gr, cnt, tol);
}

static void gemm_case(bk *X, bk *R, rng *g, int ta, int tbt, int m, int n, int k, int batch, double alpha, double beta,
                      rp_dtype tya, rp_dtype tyb, rp_dtype tyc, int broadcast_b) {
    gemm_case_ld(X, R, g, ta, tbt, m, n, k, batch, alpha, beta, tya, tyb, tyc, broadcast_b, 0);
}

static void gemm_all(bk *X, bk *R, rng *g) {
    rp_dtype ts[2] = {X->A, RP_BF16};
    int nts = X->A == RP_BF16 ? 2 : 1;
    if (nts == 2) ts[0] = RP_F32;
    for (int ta = 0; ta < 2; ta++)
        for (int tbt = 0; tbt < 2; tbt++)
            for (int bi = 0; bi < 2; bi++)
                for (int i = 0; i < nts; i++)
                    for (int j = 0; j < nts; j++)
                        for (int l = 0; l < nts; l++)
                            gemm_case(X, R, g, ta, tbt, 37, 45, 29, 3, 0.7, bi ? 0.5 : 0.0, ts[i], ts[j], ts[l], 0);
    /* several tiles in every direction, ragged edges */
    for (int ta = 0; ta < 2; ta++)
        for (int tbt = 0; tbt < 2; tbt++) gemm_case(X, R, g, ta, tbt, 130, 70, 200, 1, 1.0, 0.0, X->A, X->A, X->A, 0);
    gemm_case(X, R, g, 0, 1, 67, 33, 65, 2, -1.3, 1.0, X->A, X->A, X->P, 1);
    gemm_case(X, R, g, 1, 0, 5, 3, 0, 2, 1.0, 0.25, X->A, X->A, X->A, 0); /* k = 0: C = beta·C */
    gemm_case(X, R, g, 0, 0, 1, 1, 1, 1, 2.0, 0.0, X->A, X->A, X->A, 0);
    /* the low-rank up-projections (k ≤ 64, as LoRA and the mixers issue them): a float32 or bf16
     * factor in either layout, k a multiple of 16 or not, ragged tiles, accumulating or not */
    gemm_case_ld(X, R, g, 0, 1, 300, 264, 64, 2, 0.5, 1.0, X->A, X->P, X->A, 0, 1);
    gemm_case_ld(X, R, g, 0, 0, 200, 136, 48, 1, 1.3, 0.0, X->A, X->P, X->A, 0, 1);
    gemm_case_ld(X, R, g, 0, 1, 129, 256, 24, 1, 1.0, 1.0, X->A, X->A, X->A, 0, 1);
    gemm_case_ld(X, R, g, 0, 0, 70, 300, 64, 2, -0.7, 1.0, X->A, X->P, X->A, 1, 0);
    gemm_case_ld(X, R, g, 0, 1, 131, 77, 7, 1, 2.0, 0.5, X->A, X->P, X->A, 0, 0);
}

static void body_gemm(bk *X, bk *R, rng *g) {
    gemm_all(X, R, g);
    if (X->gpu) { /* the same on the module's own tiled kernel */
        bk T;
        char why[512];
        setenv("RWKVPEFT_CUDA_GEMM", "tiled", 1);
        int rc = bk_open(&T, X->ops->name, NULL, why, sizeof why);
        unsetenv("RWKVPEFT_CUDA_GEMM");
        ck_assert_msg(rc == 0, "[%s] tiled instance: %s", X->label, why);
        snprintf(T.label, sizeof T.label, "%s[tiled]", X->ops->name);
        gemm_all(&T, R, g);
        bk_close(&T);
    }
}

/* ------------------------------------------------------------------------------------ */
/* embedding, norm, shift_mix                                                           */
/* ------------------------------------------------------------------------------------ */

static void body_embedding(bk *X, bk *R, rng *g) {
    const int V = 97, C = 83;
    const int64_t n = 111;
    int32_t ids[111];
    for (int64_t i = 0; i < n; i++) ids[i] = rng_int(g, V / 4) * 3 + (i % 2); /* many repeats */
    ids[n - 1] = V - 1;
    double *table = gen_normal(g, (int64_t)V * C, 0, 1, X->A);
    double *ox = H(n * C), *orf = H(n * C);
    set_case("embedding_fwd n%lld C%d V%d", (long long)n, C, V);
    run_embedding_fwd(X, ox, table, ids, n, C, V);
    run_embedding_fwd(R, orf, table, ids, n, C, V);
    expect_same_bits(X, "out", ox, orf, n * C);
    set_case("embedding_bwd n%lld C%d V%d", (long long)n, C, V);
    double *dout = gen_normal(g, n * C, 0, 1, X->A), *dt0 = gen_normal(g, (int64_t)V * C, 0, 1, X->P);
    double *dtx = Hcopy(dt0, (int64_t)V * C), *dtr = Hcopy(dt0, (int64_t)V * C);
    run_embedding_bwd(X, dtx, dout, ids, n, C, V);
    run_embedding_bwd(R, dtr, dout, ids, n, C, V);
    expect_close(X, "dtable", dtx, dtr, (int64_t)V * C, tol_of(X->P));
}

static void norm_case(bk *X, bk *R, rng *g, int64_t n, int G, int S, int with_b, int want_dwdb, double eps) {
    int64_t C = (int64_t)G * S;
    double *x = gen_normal(g, n * C, 3.0, 1.5, X->A); /* offset mean: exercises the two-pass variance */
    double *w = gen_normal(g, C, 1.0, 0.3, X->P), *b = with_b ? gen_normal(g, C, 0, 0.5, X->P) : NULL;
    double *yx = H(n * C), *yr = H(n * C), *mx = H(n * G), *mr = H(n * G), *rx = H(n * G), *rr = H(n * G);
    set_case("norm_fwd n%lld G%d S%d b%d", (long long)n, G, S, with_b);
    run_norm_fwd(X, yx, mx, rx, x, w, b, n, G, S, eps);
    run_norm_fwd(R, yr, mr, rr, x, w, b, n, G, S, eps);
    expect_close(X, "y", yx, yr, n * C, tol_of(X->A));
    expect_close(X, "mean", mx, mr, n * G, tol_of(X->P));
    expect_close(X, "rstd", rx, rr, n * G, tol_of(X->P));
    set_case("norm_bwd n%lld G%d S%d dwdb%d", (long long)n, G, S, want_dwdb);
    double *dy = gen_normal(g, n * C, 0, 1, X->A), *dx0 = gen_normal(g, n * C, 0, 0.5, X->A);
    double *dw0 = want_dwdb ? gen_normal(g, C, 0, 1, X->P) : NULL, *db0 = want_dwdb ? gen_normal(g, C, 0, 1, X->P) : NULL;
    double *dxx = Hcopy(dx0, n * C), *dxr = Hcopy(dx0, n * C);
    double *dwx = dw0 ? Hcopy(dw0, C) : NULL, *dwr = dw0 ? Hcopy(dw0, C) : NULL;
    double *dbx = db0 ? Hcopy(db0, C) : NULL, *dbr = db0 ? Hcopy(db0, C) : NULL;
    run_norm_bwd(X, dxx, dwx, dbx, dy, x, w, mx, rx, n, G, S);
    run_norm_bwd(R, dxr, dwr, dbr, dy, x, w, mr, rr, n, G, S);
    expect_close(X, "dx", dxx, dxr, n * C, tol_of(X->A));
    if (dw0) {
        expect_close(X, "dw", dwx, dwr, C, tol_of(X->P));
        expect_close(X, "db", dbx, dbr, C, tol_of(X->P));
    }
}

/* norm_gate_fwd/bwd (RWKV-5/6's ln_x ⊙ SiLU(g) in one pass; silu 0: a plain gate) against the
 * reference backend */
static void norm_gate_case(bk *X, bk *R, rng *g, int64_t n, int G, int S, int with_b, int want_dwdb, double eps,
                           int silu) {
    int64_t C = (int64_t)G * S;
    double *x = gen_normal(g, n * C, 3.0, 1.5, X->A), *gate = gen_normal(g, n * C, 0.2, 1, X->A);
    double *w = gen_normal(g, C, 1.0, 0.3, X->P), *b = with_b ? gen_normal(g, C, 0, 0.5, X->P) : NULL;
    double *ox = H(n * C), *orf = H(n * C), *mx = H(n * G), *mr = H(n * G), *rx = H(n * G), *rr = H(n * G);
    set_case("norm_gate_fwd n%lld G%d S%d b%d silu%d", (long long)n, G, S, with_b, silu);
    run_norm_gate_fwd(X, ox, mx, rx, x, w, b, gate, silu, n, G, S, eps);
    run_norm_gate_fwd(R, orf, mr, rr, x, w, b, gate, silu, n, G, S, eps);
    expect_close(X, "out", ox, orf, n * C, tol_of(X->A));
    expect_close(X, "mean", mx, mr, n * G, tol_of(X->P));
    expect_close(X, "rstd", rx, rr, n * G, tol_of(X->P));
    set_case("norm_gate_bwd n%lld G%d S%d b%d dwdb%d silu%d", (long long)n, G, S, with_b, want_dwdb, silu);
    double *dout = gen_normal(g, n * C, 0, 1, X->A);
    double *dw0 = want_dwdb ? gen_normal(g, C, 0, 1, X->P) : NULL, *db0 = want_dwdb ? gen_normal(g, C, 0, 1, X->P) : NULL;
    double *dxx = H(n * C), *dxr = H(n * C), *dgx = H(n * C), *dgr = H(n * C);
    double *dwx = dw0 ? Hcopy(dw0, C) : NULL, *dwr = dw0 ? Hcopy(dw0, C) : NULL;
    double *dbx = db0 ? Hcopy(db0, C) : NULL, *dbr = db0 ? Hcopy(db0, C) : NULL;
    run_norm_gate_bwd(X, dxx, dgx, dwx, dbx, dout, x, w, b, gate, silu, mx, rx, n, G, S);
    run_norm_gate_bwd(R, dxr, dgr, dwr, dbr, dout, x, w, b, gate, silu, mr, rr, n, G, S);
    expect_close(X, "dx", dxx, dxr, n * C, tol_of(X->A));
    expect_close(X, "dgate", dgx, dgr, n * C, tol_of(X->A));
    if (dw0) {
        expect_close(X, "dw", dwx, dwr, C, tol_of(X->P));
        expect_close(X, "db", dbx, dbr, C, tol_of(X->P));
    }
}

static void body_norm(bk *X, bk *R, rng *g) {
    norm_case(X, R, g, 111, 1, 131, 1, 1, 1e-5);
    norm_case(X, R, g, 37, 4, 64, 1, 1, 6.4e-4);
    norm_case(X, R, g, 9, 3, 17, 0, 0, 1e-5);
    norm_case(X, R, g, 5, 1, 1000, 1, 1, 1e-5);
    norm_case(X, R, g, 301, 2, 24, 1, 1, 1e-5);
    /* the GPU's register variant: teams of 4 and 32 threads in a warp, whole-block teams */
    norm_case(X, R, g, 45, 8, 32, 1, 1, 6.4e-4);
    norm_case(X, R, g, 33, 1, 256, 0, 1, 1e-5);
    norm_case(X, R, g, 67, 1, 512, 1, 1, 1e-5);
    norm_case(X, R, g, 13, 1, 2560, 1, 1, 1e-5);
    /* gated: ln_x's shape (teams of 8), a 32-wide team, the scalar kernels (S 17, 131), a
     * whole-block team, no bias, frozen w/b; each with a plain and a SiLU gate */
    for (int silu = 0; silu < 2; silu++) {
        norm_gate_case(X, R, g, 37, 4, 64, 1, 1, 6.4e-4, silu);
        norm_gate_case(X, R, g, 45, 8, 32, 1, 1, 6.4e-4, silu);
        norm_gate_case(X, R, g, 9, 3, 17, 0, 1, 1e-5, silu);
        norm_gate_case(X, R, g, 21, 2, 131, 1, 0, 6.4e-4, silu);
        norm_gate_case(X, R, g, 7, 1, 512, 1, 1, 1e-5, silu);
        norm_gate_case(X, R, g, 19, 4, 64, 0, 0, 6.4e-4, silu);
    }
}

static void shift_case(bk *X, bk *R, rng *g, int form, int S, int B, int T, int C, int with_prev, int with_m,
                       int want_prev, int want_coef, int want_dm) {
    const char *fn = form == RP_MIX_CURRENT ? "current" : "delta";
    int64_t slot = (int64_t)B * T * C;
    double *x = gen_normal(g, slot, 0, 1, X->A), *xp = with_prev ? gen_normal(g, (int64_t)B * C, 0, 1, X->A) : NULL;
    double *coef = gen_unif(g, (int64_t)S * C, 0, 1, X->P), *m = with_m ? gen_normal(g, S * slot, 0, 0.3, X->A) : NULL;
    double *ox = H(S * slot), *orf = H(S * slot);
    set_case("shift_mix_fwd %s S%d B%d T%d C%d prev%d m%d", fn, S, B, T, C, with_prev, with_m);
    run_shift_fwd(X, ox, x, xp, coef, m, form, S, B, T, C);
    run_shift_fwd(R, orf, x, xp, coef, m, form, S, B, T, C);
    expect_close(X, "out", ox, orf, S * slot, tol_of(X->A));
    set_case("shift_mix_bwd %s S%d B%d T%d C%d prev%d m%d want%d%d%d", fn, S, B, T, C, with_prev, with_m, want_prev,
             want_coef, want_dm);
    double *dout = gen_normal(g, S * slot, 0, 1, X->A), *dx0 = gen_normal(g, slot, 0, 0.5, X->A);
    double *dp0 = want_prev ? gen_normal(g, (int64_t)B * C, 0, 0.5, X->A) : NULL;
    double *dc0 = want_coef ? gen_normal(g, (int64_t)S * C, 0, 0.5, X->P) : NULL;
    double *dxx = Hcopy(dx0, slot), *dxr = Hcopy(dx0, slot);
    double *dpx = dp0 ? Hcopy(dp0, (int64_t)B * C) : NULL, *dpr = dp0 ? Hcopy(dp0, (int64_t)B * C) : NULL;
    double *dcx = dc0 ? Hcopy(dc0, (int64_t)S * C) : NULL, *dcr = dc0 ? Hcopy(dc0, (int64_t)S * C) : NULL;
    double *dmx = want_dm ? H(S * slot) : NULL, *dmr = want_dm ? H(S * slot) : NULL;
    run_shift_bwd(X, dxx, dpx, dcx, dmx, dout, x, xp, coef, m, form, S, B, T, C);
    run_shift_bwd(R, dxr, dpr, dcr, dmr, dout, x, xp, coef, m, form, S, B, T, C);
    expect_close(X, "dx", dxx, dxr, slot, tol_of(X->A));
    if (dp0) expect_close(X, "dx_prev", dpx, dpr, (int64_t)B * C, tol_of(X->A));
    if (dc0) expect_close(X, "dcoef", dcx, dcr, (int64_t)S * C, tol_of(X->P));
    if (want_dm) expect_close(X, "dm", dmx, dmr, S * slot, tol_of(X->A));
}

static void body_shift_mix(bk *X, bk *R, rng *g) {
    shift_case(X, R, g, RP_MIX_DELTA, 5, 3, 37, 83, 1, 1, 1, 1, 1);
    shift_case(X, R, g, RP_MIX_DELTA, 2, 2, 1, 64, 0, 0, 0, 1, 0);
    shift_case(X, R, g, RP_MIX_DELTA, 1, 1, 19, 7, 1, 0, 1, 0, 1);
    shift_case(X, R, g, RP_MIX_DELTA, 3, 4, 5, 33, 0, 1, 1, 1, 1);
    /* RWKV-5's form: coef weighs the current token, no m */
    shift_case(X, R, g, RP_MIX_CURRENT, 4, 3, 37, 83, 1, 0, 1, 1, 1);
    shift_case(X, R, g, RP_MIX_CURRENT, 1, 2, 1, 64, 0, 0, 0, 1, 0);
    shift_case(X, R, g, RP_MIX_CURRENT, 2, 1, 19, 7, 1, 0, 1, 1, 0);
    /* C a multiple of 8: the GPU's vector kernels (runs of rows crossing sequence ends) */
    shift_case(X, R, g, RP_MIX_DELTA, 5, 3, 37, 128, 1, 1, 1, 1, 1);
    shift_case(X, R, g, RP_MIX_DELTA, 6, 2, 21, 96, 0, 0, 0, 1, 0);
    shift_case(X, R, g, RP_MIX_DELTA, 2, 2, 19, 64, 1, 0, 1, 0, 1);
    shift_case(X, R, g, RP_MIX_CURRENT, 4, 3, 37, 128, 1, 0, 1, 1, 1);
    shift_case(X, R, g, RP_MIX_DELTA, 7, 1, 9, 16, 1, 1, 1, 1, 1); /* more slots than the vector kernel takes */
}

/* ------------------------------------------------------------------------------------ */
/* element-wise                                                                         */
/* ------------------------------------------------------------------------------------ */

static void act_sized(bk *X, bk *R, rng *g, int64_t n) {
    static const char *names[5] = {"tanh", "sigmoid", "silu", "relu_sq", "softclamp"};
    for (int kind = 0; kind < 5; kind++)
        for (int inplace = 0; inplace < 2; inplace++) {
            double *x = gen_normal(g, n, 0, 2, X->A), *yx = H(n), *yr = H(n);
            if (kind == RP_ACT_SOFTCLAMP) { /* both tails: softplus must not overflow or cancel */
                x[0] = 95.0;
                x[1] = -95.0;
                x[2] = 30.0;
                x[3] = -30.0;
            }
            set_case("act_fwd %s n%lld inplace%d", names[kind], (long long)n, inplace);
            run_act_fwd(X, kind, yx, x, n, inplace);
            run_act_fwd(R, kind, yr, x, n, 0);
            expect_close(X, "y", yx, yr, n, tol_of(X->A));
            double *dy = gen_normal(g, n, 0, 1, X->A), *dxx = H(n), *dxr = H(n);
            double *yin = H(n);
            for (int64_t i = 0; i < n; i++) yin[i] = round_to(X->A, kind == 0 ? rng_range(g, -1, 1) : rng_range(g, 0, 1));
            set_case("act_bwd %s n%lld inplace%d", names[kind], (long long)n, inplace);
            run_act_bwd(X, kind, dxx, dy, x, yin, n, inplace);
            run_act_bwd(R, kind, dxr, dy, x, yin, n, 0);
            expect_close(X, "dx", dxx, dxr, n, tol_of(X->A));
            if (kind == RP_ACT_RELU_SQ) { /* from y = relu(x)² alone (x NULL), as the training graph calls it */
                set_case("act_bwd relu_sq from y n%lld inplace%d", (long long)n, inplace);
                double *dxy = H(n);
                run_act_bwd(X, kind, dxy, dy, NULL, yr, n, inplace);
                expect_close(X, "dx", dxy, dxr, n, tol_of(X->A));
            }
        }
}

/* n = 1001: the scalar kernels; 1024: the GPU's 16-byte vector kernels */
static void body_act(bk *X, bk *R, rng *g) {
    act_sized(X, R, g, 1001);
    act_sized(X, R, g, 1024);
}

static void mul_add_sized(bk *X, bk *R, rng *g, int64_t n) {
    double *a = gen_normal(g, n, 0, 1, X->A), *b = gen_normal(g, n, 0, 1, X->A);
    for (int inplace = 0; inplace < 2; inplace++) {
        double *yx = H(n), *yr = H(n);
        set_case("mul_fwd n%lld inplace%d", (long long)n, inplace);
        run_mul_fwd(X, yx, a, b, n, inplace);
        run_mul_fwd(R, yr, a, b, n, 0);
        expect_close(X, "y", yx, yr, n, tol_of(X->A));
    }
    double *dy = gen_normal(g, n, 0, 1, X->A), *da0 = gen_normal(g, n, 0, 1, X->A), *db0 = gen_normal(g, n, 0, 1, X->A);
    for (int which = 0; which < 3; which++) { /* both, da only, db only */
        double *dax = which != 2 ? Hcopy(da0, n) : NULL, *dar = which != 2 ? Hcopy(da0, n) : NULL;
        double *dbx = which != 1 ? Hcopy(db0, n) : NULL, *dbr = which != 1 ? Hcopy(db0, n) : NULL;
        set_case("mul_bwd n%lld want%d", (long long)n, which);
        run_mul_bwd(X, dax, dbx, dy, a, b, n);
        run_mul_bwd(R, dar, dbr, dy, a, b, n);
        if (dax) expect_close(X, "da", dax, dar, n, tol_of(X->A));
        if (dbx) expect_close(X, "db", dbx, dbr, n, tol_of(X->A));
    }
    double *yx = Hcopy(a, n), *yr = Hcopy(a, n);
    set_case("add n%lld alpha -0.37", (long long)n);
    run_add(X, yx, b, -0.37, n);
    run_add(R, yr, b, -0.37, n);
    expect_close(X, "y", yx, yr, n, tol_of(X->A));
}

/* act_mul_fwd/bwd for every activation kind, with and without the residual, in place */
static void act_mul_sized(bk *X, bk *R, rng *g, int64_t n) {
    for (int kind = 0; kind < 5; kind++) {
        double *a = gen_normal(g, n, 0, 1.5, X->A), *b = gen_normal(g, n, 0, 1, X->A), *r = gen_normal(g, n, 0, 1, X->A);
        for (int variant = 0; variant < 4; variant++) { /* residual no/yes × in place no/yes */
            const int with_r = variant & 1, inplace = variant >> 1;
            double *yx = H(n), *yr = H(n);
            set_case("act_mul_fwd kind%d n%lld r%d inplace%d", kind, (long long)n, with_r, inplace);
            run_act_mul_fwd(X, kind, yx, a, b, with_r ? r : NULL, n, inplace);
            run_act_mul_fwd(R, kind, yr, a, b, with_r ? r : NULL, n, 0);
            expect_close(X, "y", yx, yr, n, tol_of(X->A));
        }
        double *dy = gen_normal(g, n, 0, 1, X->A);
        for (int which = 0; which < 3; which++) { /* both, da only, db only */
            double *dax = which != 2 ? H(n) : NULL, *dar = which != 2 ? H(n) : NULL;
            double *dbx = which != 1 ? H(n) : NULL, *dbr = which != 1 ? H(n) : NULL;
            set_case("act_mul_bwd kind%d n%lld want%d", kind, (long long)n, which);
            run_act_mul_bwd(X, kind, dax, dbx, dy, a, b, n);
            run_act_mul_bwd(R, kind, dar, dbr, dy, a, b, n);
            if (dax) expect_close(X, "da", dax, dar, n, tol_of(X->A));
            if (dbx) expect_close(X, "db", dbx, dbr, n, tol_of(X->A));
        }
    }
}

/* n = 1001: the scalar kernels; 1024: the GPU's 16-byte vector kernels */
static void body_mul_add(bk *X, bk *R, rng *g) {
    mul_add_sized(X, R, g, 1001);
    mul_add_sized(X, R, g, 1024);
    act_mul_sized(X, R, g, 1001);
    act_mul_sized(X, R, g, 1024);
}

static void body_rows(bk *X, bk *R, rng *g) {
    const int64_t n = 37;
    for (int acc = 0; acc < 4; acc++) { /* C 83: scalar kernel; C 64: the GPU's vector kernel */
        const int C = acc < 2 ? 83 : 64;
        double *v = gen_normal(g, C, 0, 1, X->P);
        double *y0 = gen_normal(g, n * C, 0, 1, X->A);
        const int accumulate = acc % 2;
        double *yx = accumulate ? Hcopy(y0, n * C) : H(n * C), *yr = accumulate ? Hcopy(y0, n * C) : H(n * C);
        set_case("broadcast_rows n%lld C%d acc%d", (long long)n, C, accumulate);
        run_broadcast(X, yx, v, n, C, accumulate);
        run_broadcast(R, yr, v, n, C, accumulate);
        expect_close(X, "y", yx, yr, n * C, tol_of(X->A));
    }
    const int64_t ns[2] = {111, 3001};
    const int cs[2] = {83, 5};
    for (int c = 0; c < 2; c++) {
        double *dy = gen_normal(g, ns[c] * cs[c], 0, 1, X->A), *dv0 = gen_normal(g, cs[c], 0, 1, X->P);
        double *dvx = Hcopy(dv0, cs[c]), *dvr = Hcopy(dv0, cs[c]);
        set_case("sum_rows n%lld C%d", (long long)ns[c], cs[c]);
        run_sum_rows(X, dvx, dy, ns[c], cs[c]);
        run_sum_rows(R, dvr, dy, ns[c], cs[c]);
        expect_close(X, "dv", dvx, dvr, cs[c], tol_of(X->P));
    }
}

static void body_dropout(bk *X, bk *R, rng *g) {
    const int64_t n = 1001;
    const double p = 0.3;
    uint64_t seed = rng_u64(g);
    double *x = gen_unif(g, n, 0.5, 2.0, X->A); /* nonzero: a zero output means "dropped" */
    for (int inplace = 0; inplace < 2; inplace++) {
        double *yx = H(n), *yr = H(n);
        set_case("dropout p%.1f inplace%d", p, inplace);
        run_dropout(X, yx, x, n, p, seed, inplace);
        run_dropout(R, yr, x, n, p, seed, 0);
        int kept = 0;
        for (int64_t i = 0; i < n; i++) {
            int keep = rp_dropout_keep(seed, (uint64_t)i, (float)p);
            kept += keep;
            ck_assert_msg((yx[i] != 0) == keep && (yr[i] != 0) == keep,
                          "[%s] %s: mask differs from rp_dropout_keep at %lld (seed %llu)", X->label, g_case,
                          (long long)i, g_seed);
        }
        ck_assert_msg(kept > n / 2 && kept < n * 9 / 10, "[%s] dropout kept %d of %lld", X->label, kept, (long long)n);
        expect_close(X, "y", yx, yr, n, tol_of(X->A));
    }
}

/* ------------------------------------------------------------------------------------ */
/* wkv6                                                                                 */
/* ------------------------------------------------------------------------------------ */

typedef struct wkv_in {
    double *r, *k, *v, *w, *u, *s0, *gy, *gs_out;
} wkv_in;

static wkv_in wkv_inputs(rng *g, wkv_shape s, int s0_mode, int with_gs, rp_dtype A, rp_dtype P) {
    int64_t n = (int64_t)s.B * s.T * s.H * s.N, NN = (int64_t)s.N * s.N;
    wkv_in in;
    in.r = gen_normal(g, n, 0, 0.5, A);
    in.k = gen_normal(g, n, 0, 0.5, A);
    in.v = gen_normal(g, n, 0, 1.0, A);
    in.w = gen_unif(g, n, -5.0, 1.0, A); /* decays from 0.9933 to 0.066 */
    in.u = gen_normal(g, (int64_t)s.H * s.N, 0, 0.5, P);
    in.s0 = s0_mode == 0 ? NULL : gen_normal(g, (s0_mode == 1 ? 1 : s.B) * s.H * NN, 0, 0.3, P);
    in.gy = gen_normal(g, n, 0, 1, A);
    in.gs_out = with_gs ? gen_normal(g, (int64_t)s.B * s.H * NN, 0, 0.3, P) : NULL;
    return in;
}

/* set while a wkv_case runs with gu = NULL (u frozen: its gradient is not wanted) */
static int wkv_without_gu;

static void wkv_case(bk *X, bk *R, rng *g, wkv_shape s, int s0_mode, int want_sout, int with_gs, int want_gs0) {
    int64_t n = (int64_t)s.B * s.T * s.H * s.N, NN = (int64_t)s.N * s.N, ns = (int64_t)s.B * s.H * NN;
    int shared = s0_mode == 1;
    int64_t n0 = (shared ? 1 : s.B) * s.H * NN;
    wkv_in in = wkv_inputs(g, s, s0_mode, with_gs, X->A, X->P);
    double *yx = H(n), *yr = H(n), *sx = want_sout ? H(ns) : NULL, *sr = want_sout ? H(ns) : NULL;
    set_case("wkv6_fwd B%d T%d H%d N%d s0:%s sout%d", s.B, s.T, s.H, s.N, s0_mode == 0 ? "none" : shared ? "shared" : "per-batch",
             want_sout);
    run_wkv_fwd(X, yx, sx, in.r, in.k, in.v, in.w, in.u, in.s0, shared, s);
    run_wkv_fwd(R, yr, sr, in.r, in.k, in.v, in.w, in.u, in.s0, shared, s);
    expect_close(X, "y", yx, yr, n, tol_of(X->A));
    if (want_sout) expect_close(X, "s_out", sx, sr, ns, tol_of(X->P));
    if (s0_mode == 2 && want_sout) {
        double *st = Hcopy(in.s0, ns), *yi = H(n);
        set_case("wkv6_fwd B%d T%d H%d N%d state in place (s_out = s0)", s.B, s.T, s.H, s.N);
        run_wkv_fwd_inplace(X, yi, st, in.r, in.k, in.v, in.w, in.u, s);
        expect_close(X, "y", yi, yr, n, tol_of(X->A));
        expect_close(X, "state", st, sr, ns, tol_of(X->P));
    }
    const char *sched = getenv("RWKVPEFT_WKV6_BWD");
    set_case("wkv6_bwd B%d T%d H%d N%d s0:%s gs_out%d gs0%d schedule:%s", s.B, s.T, s.H, s.N,
             s0_mode == 0 ? "none" : shared ? "shared" : "per-batch", with_gs, want_gs0, sched ? sched : "auto");
    double *gu0 = gen_normal(g, (int64_t)s.H * s.N, 0, 1, X->P);
    double *gs00 = want_gs0 && s0_mode ? gen_normal(g, n0, 0, 1, X->P) : NULL;
    wkv_grads gx = {H(n), H(n), H(n), H(n), wkv_without_gu ? NULL : Hcopy(gu0, (int64_t)s.H * s.N),
                    gs00 ? Hcopy(gs00, n0) : NULL};
    wkv_grads gref = {H(n), H(n), H(n), H(n), wkv_without_gu ? NULL : Hcopy(gu0, (int64_t)s.H * s.N),
                      gs00 ? Hcopy(gs00, n0) : NULL};
    /* odd T: the op's temporaries in caller-provided scratch (as the model passes them) */
    run_wkv_bwd(X, gx, in.gy, in.gs_out, in.r, in.k, in.v, in.w, in.u, in.s0, shared, s, s.T % 2);
    run_wkv_bwd(R, gref, in.gy, in.gs_out, in.r, in.k, in.v, in.w, in.u, in.s0, shared, s, 0);
    expect_close(X, "gr", gx.gr, gref.gr, n, tol_of(X->A));
    expect_close(X, "gk", gx.gk, gref.gk, n, tol_of(X->A));
    expect_close(X, "gv", gx.gv, gref.gv, n, tol_of(X->A));
    expect_close(X, "gw", gx.gw, gref.gw, n, tol_of(X->A));
    if (!wkv_without_gu) expect_close(X, "gu", gx.gu, gref.gu, (int64_t)s.H * s.N, 10 * tol_of(X->P));
    if (gs00) expect_close(X, "gs0", gx.gs0, gref.gs0, n0, 10 * tol_of(X->P));
}

static void wkv6_cases(bk *X, bk *R, rng *g) {
    wkv_shape s = {3, 37, 2, 64};
    wkv_case(X, R, g, s, 0, 0, 0, 0);
    wkv_case(X, R, g, s, 1, 1, 1, 1);
    wkv_case(X, R, g, s, 2, 1, 1, 1);
    wkv_without_gu = 1; /* frozen u: gu = NULL must be accepted */
    wkv_case(X, R, g, s, 1, 0, 0, 1);
    wkv_without_gu = 0;
    wkv_case(X, R, g, s, 0, 1, 1, 0);
    wkv_shape s1 = {2, 1, 1, 64};
    wkv_case(X, R, g, s1, 2, 1, 1, 1);
    wkv_shape s2 = {1, 70, 1, 64};
    wkv_case(X, R, g, s2, 1, 1, 0, 1);
    if (!X->gpu) { /* the CPU backends take any head size */
        wkv_shape s3 = {2, 21, 3, 24}, s4 = {1, 21, 2, 5};
        wkv_case(X, R, g, s3, 1, 1, 1, 1);
        wkv_case(X, R, g, s4, 2, 1, 1, 1);
    } else {
        wkv_shape s3 = {2, 21, 3, 32};
        wkv_case(X, R, g, s3, 2, 1, 1, 1);
    }
}

/* The GPU backward has two schedules (fused column blocks, or split ones plus a gw pass; the
 * module picks by occupancy, which these small shapes would always answer "split"): every
 * case runs under each, forced through $RWKVPEFT_WKV6_BWD. */
static void body_wkv6(bk *X, bk *R, rng *g) {
    if (!X->gpu) {
        wkv6_cases(X, R, g);
        return;
    }
    const char *modes[2] = {"split", "fused"};
    for (int i = 0; i < 2; i++) {
        setenv("RWKVPEFT_WKV6_BWD", modes[i], 1);
        wkv6_cases(X, R, g);
    }
    unsetenv("RWKVPEFT_WKV6_BWD");
}

/* ------------------------------------------------------------------------------------ */
/* lerp, RWKV-7 key preparation and bonus                                               */
/* ------------------------------------------------------------------------------------ */

static void lerp_sized(bk *X, bk *R, rng *g, int64_t n) {
    double *a = gen_normal(g, n, 0, 1, X->A), *b = gen_normal(g, n, 0, 1, X->A), *t = gen_unif(g, n, -0.2, 1.2, X->A);
    for (int inplace = 0; inplace < 2; inplace++) {
        double *yx = H(n), *yr = H(n);
        set_case("lerp_fwd n%lld inplace%d (y = b)", (long long)n, inplace);
        run_lerp_fwd(X, yx, a, b, t, n, inplace);
        run_lerp_fwd(R, yr, a, b, t, n, 0);
        expect_close(X, "y", yx, yr, n, tol_of(X->A));
    }
    double *dy = gen_normal(g, n, 0, 1, X->A), *da0 = gen_normal(g, n, 0, 1, X->A), *db0 = gen_normal(g, n, 0, 1, X->A);
    for (int which = 0; which < 4; which++) { /* all; da + dt; db only; dt only */
        int wa = which == 0 || which == 1, wb = which == 0 || which == 2, wt = which != 2;
        double *dax = wa ? Hcopy(da0, n) : NULL, *dar = wa ? Hcopy(da0, n) : NULL;
        double *dbx = wb ? Hcopy(db0, n) : NULL, *dbr = wb ? Hcopy(db0, n) : NULL;
        double *dtx = wt ? H(n) : NULL, *dtr = wt ? H(n) : NULL;
        set_case("lerp_bwd n%lld da%d db%d dt%d", (long long)n, wa, wb, wt);
        run_lerp_bwd(X, dax, dbx, dtx, dy, a, b, t, n);
        run_lerp_bwd(R, dar, dbr, dtr, dy, a, b, t, n);
        if (wa) expect_close(X, "da", dax, dar, n, tol_of(X->A));
        if (wb) expect_close(X, "db", dbx, dbr, n, tol_of(X->A));
        if (wt) expect_close(X, "dt", dtx, dtr, n, tol_of(X->A));
    }
}

/* n = 1001: the scalar kernels; 1024: the GPU's 16-byte vector kernels */
static void body_lerp(bk *X, bk *R, rng *g) {
    lerp_sized(X, R, g, 1001);
    lerp_sized(X, R, g, 1024);
}

/* zero_head ≥ 0: that head's k_k is all zero, so u = 0 there and the norm takes the 1e-12 floor */
static void kprep_case(bk *X, bk *R, rng *g, int64_t n, int nh, int N, int zero_head, int want_params) {
    const int64_t C = (int64_t)nh * N, nc = n * C;
    double *k = gen_normal(g, nc, 0, 1, X->A), *a = gen_unif(g, nc, 0, 1, X->A);
    double *kk = gen_normal(g, C, 0.85, 0.3, X->P), *ka = gen_normal(g, C, 1, 0.3, X->P);
    if (zero_head >= 0)
        for (int i = 0; i < N; i++) kk[(int64_t)zero_head * N + i] = 0;
    double *kox = H(nc), *kor = H(nc), *wax = H(nc), *war = H(nc), *wbx = H(nc), *wbr = H(nc);
    set_case("v7_kprep_fwd n%lld H%d N%d zero head %d", (long long)n, nh, N, zero_head);
    run_kprep_fwd(X, kox, wax, wbx, k, a, kk, ka, n, nh, N);
    run_kprep_fwd(R, kor, war, wbr, k, a, kk, ka, n, nh, N);
    expect_close(X, "k_out", kox, kor, nc, tol_of(X->A));
    expect_close(X, "wa", wax, war, nc, tol_of(X->A));
    expect_close(X, "wb", wbx, wbr, nc, tol_of(X->A));
    if (zero_head >= 0)
        for (int64_t row = 0; row < n; row++)
            for (int i = 0; i < N; i++) {
                int64_t e = row * C + (int64_t)zero_head * N + i;
                ck_assert_msg(wax[e] == 0 && wbx[e] == 0, "[%s] %s: wa/wb of the zero head not 0 at %lld (seed %llu)",
                              X->label, g_case, (long long)e, g_seed);
            }
    double *dko = gen_normal(g, nc, 0, 1, X->A), *dwa = gen_normal(g, nc, 0, 1, X->A), *dwb = gen_normal(g, nc, 0, 1, X->A);
    double *dkk0 = want_params ? gen_normal(g, C, 0, 1, X->P) : NULL, *dka0 = want_params ? gen_normal(g, C, 0, 1, X->P) : NULL;
    double *dkx = H(nc), *dkr = H(nc), *dax = H(nc), *dar = H(nc);
    double *dkkx = dkk0 ? Hcopy(dkk0, C) : NULL, *dkkr = dkk0 ? Hcopy(dkk0, C) : NULL;
    double *dkax = dka0 ? Hcopy(dka0, C) : NULL, *dkar = dka0 ? Hcopy(dka0, C) : NULL;
    set_case("v7_kprep_bwd n%lld H%d N%d zero head %d params%d", (long long)n, nh, N, zero_head, want_params);
    run_kprep_bwd(X, dkx, dax, dkkx, dkax, dko, dwa, dwb, k, a, kk, ka, n, nh, N);
    run_kprep_bwd(R, dkr, dar, dkkr, dkar, dko, dwa, dwb, k, a, kk, ka, n, nh, N);
    expect_close(X, "dk", dkx, dkr, nc, tol_of(X->A));
    expect_close(X, "da", dax, dar, nc, tol_of(X->A));
    if (want_params) {
        /* per head: below the floor dk_k is ~1e12 times larger than elsewhere */
        for (int h = 0; h < nh; h++) {
            char what[32];
            snprintf(what, sizeof what, "dk_k head %d", h);
            expect_close(X, what, dkkx + (int64_t)h * N, dkkr + (int64_t)h * N, N, 10 * tol_of(X->P));
        }
        expect_close(X, "dk_a", dkax, dkar, C, 10 * tol_of(X->P));
    }
}

static void body_v7_kprep(bk *X, bk *R, rng *g) {
    if (!X->ops->v7_kprep_fwd || !X->ops->v7_kprep_bwd) {
        printf("SKIP %-16s on %-5s: not implemented by this backend\n", "v7_kprep", X->label);
        return;
    }
    kprep_case(X, R, g, 37, 3, 64, -1, 1);
    kprep_case(X, R, g, 37, 3, 64, 1, 1);
    kprep_case(X, R, g, 11, 2, 24, 0, 0);
    kprep_case(X, R, g, 19, 5, 16, 2, 1); /* the CUDA team kernels with a team of 2 (bf16) or 4 */
    kprep_case(X, R, g, 301, 4, 5, -1, 1);
}

static void bonus_case(bk *X, bk *R, rng *g, int64_t n, int nh, int N, int want_rk) {
    const int64_t C = (int64_t)nh * N, nc = n * C;
    double *r = gen_normal(g, nc, 0, 1, X->A), *k = gen_normal(g, nc, 0, 0.5, X->A), *v = gen_normal(g, nc, 0, 1, X->A);
    double *rk = gen_normal(g, C, 0, 0.5, X->P), *y0 = gen_normal(g, nc, 0, 1, X->A);
    double *yx = Hcopy(y0, nc), *yr = Hcopy(y0, nc);
    set_case("v7_bonus_fwd n%lld H%d N%d", (long long)n, nh, N);
    run_bonus_fwd(X, yx, r, k, v, rk, n, nh, N);
    run_bonus_fwd(R, yr, r, k, v, rk, n, nh, N);
    expect_close(X, "y", yx, yr, nc, tol_of(X->A));
    double *dy = gen_normal(g, nc, 0, 1, X->A), *dr0 = gen_normal(g, nc, 0, 1, X->A), *dk0 = gen_normal(g, nc, 0, 1, X->A);
    double *dv0 = gen_normal(g, nc, 0, 1, X->A), *drk0 = want_rk ? gen_normal(g, C, 0, 1, X->P) : NULL;
    double *drx = Hcopy(dr0, nc), *drr = Hcopy(dr0, nc), *dkx = Hcopy(dk0, nc), *dkr = Hcopy(dk0, nc);
    double *dvx = Hcopy(dv0, nc), *dvr = Hcopy(dv0, nc);
    double *drkx = drk0 ? Hcopy(drk0, C) : NULL, *drkr = drk0 ? Hcopy(drk0, C) : NULL;
    set_case("v7_bonus_bwd n%lld H%d N%d dr_k%d", (long long)n, nh, N, want_rk);
    run_bonus_bwd(X, drx, dkx, dvx, drkx, dy, r, k, v, rk, n, nh, N);
    run_bonus_bwd(R, drr, dkr, dvr, drkr, dy, r, k, v, rk, n, nh, N);
    expect_close(X, "dr", drx, drr, nc, tol_of(X->A));
    expect_close(X, "dk", dkx, dkr, nc, tol_of(X->A));
    expect_close(X, "dv", dvx, dvr, nc, tol_of(X->A));
    if (want_rk) expect_close(X, "dr_k", drkx, drkr, C, 10 * tol_of(X->P));
}

static void body_v7_bonus(bk *X, bk *R, rng *g) {
    if (!X->ops->v7_bonus_fwd || !X->ops->v7_bonus_bwd) {
        printf("SKIP %-16s on %-5s: not implemented by this backend\n", "v7_bonus", X->label);
        return;
    }
    bonus_case(X, R, g, 37, 3, 64, 1);
    bonus_case(X, R, g, 11, 2, 24, 0);
    bonus_case(X, R, g, 19, 5, 16, 1);
    bonus_case(X, R, g, 301, 4, 5, 1);
}

/* ------------------------------------------------------------------------------------ */
/* wkv7                                                                                 */
/* ------------------------------------------------------------------------------------ */

/* Inputs in the regime the model produces: per row and head kk a unit vector, a = −kk,
 * b = kk⊙gate (gate in (0,1)); w uniform in [−5, w_hi] (w_hi = 3: decays down to e^−20). */
static w7_in w7_inputs(rng *g, wkv_shape s, int s0_mode, int with_gs, double w_hi, rp_dtype A, rp_dtype P) {
    int64_t n = (int64_t)s.B * s.T * s.H * s.N, NN = (int64_t)s.N * s.N;
    w7_in in;
    in.r = gen_normal(g, n, 0, 0.5, A);
    in.w = gen_unif(g, n, -5.0, w_hi, A);
    in.k = gen_normal(g, n, 0, 0.5, A);
    in.v = gen_normal(g, n, 0, 1.0, A);
    in.a = H(n);
    in.b = H(n);
    for (int64_t row = 0; row < n / (s.N > 0 ? s.N : 1); row++) {
        double nrm = 0, *kk = in.a + row * s.N;
        for (int i = 0; i < s.N; i++) {
            kk[i] = rng_normal(g);
            nrm += kk[i] * kk[i];
        }
        nrm = sqrt(nrm) + 1e-30;
        for (int i = 0; i < s.N; i++) {
            double u = kk[i] / nrm;
            in.a[row * s.N + i] = round_to(A, -u);
            in.b[row * s.N + i] = round_to(A, u * rng_unif(g));
        }
    }
    in.s0 = s0_mode == 0 ? NULL : gen_normal(g, (s0_mode == 1 ? 1 : s.B) * s.H * NN, 0, 0.3, P);
    in.gy = gen_normal(g, n, 0, 1, A);
    in.gs_out = with_gs ? gen_normal(g, (int64_t)s.B * s.H * NN, 0, 0.3, P) : NULL;
    return in;
}

static void w7_case(bk *X, bk *R, rng *g, wkv_shape s, int s0_mode, int want_sout, int with_gs, int want_gs0, double w_hi) {
    int64_t n = (int64_t)s.B * s.T * s.H * s.N, NN = (int64_t)s.N * s.N, ns = (int64_t)s.B * s.H * NN;
    int shared = s0_mode == 1;
    int64_t n0 = (shared ? 1 : s.B) * s.H * NN;
    const char *mode = s0_mode == 0 ? "none" : shared ? "shared" : "per-batch";
    w7_in in = w7_inputs(g, s, s0_mode, with_gs, w_hi, X->A, X->P);
    double *yx = H(n), *yr = H(n), *sx = want_sout ? H(ns) : NULL, *sr = want_sout ? H(ns) : NULL;
    set_case("wkv7_fwd B%d T%d H%d N%d s0:%s sout%d w<=%g", s.B, s.T, s.H, s.N, mode, want_sout, w_hi);
    run_wkv7_fwd(X, yx, sx, &in, shared, s);
    run_wkv7_fwd(R, yr, sr, &in, shared, s);
    expect_close(X, "y", yx, yr, n, tol_of(X->A));
    if (want_sout) expect_close(X, "s_out", sx, sr, ns, tol_of(X->P));
    if (s0_mode == 2 && want_sout) {
        double *st = Hcopy(in.s0, ns), *yi = H(n);
        set_case("wkv7_fwd B%d T%d H%d N%d state in place (s_out = s0)", s.B, s.T, s.H, s.N);
        run_wkv7_fwd_inplace(X, yi, st, &in, s);
        expect_close(X, "y", yi, yr, n, tol_of(X->A));
        expect_close(X, "state", st, sr, ns, tol_of(X->P));
    }
    set_case("wkv7_bwd B%d T%d H%d N%d s0:%s gs_out%d gs0%d w<=%g", s.B, s.T, s.H, s.N, mode, with_gs, want_gs0, w_hi);
    double *gs00 = want_gs0 && s0_mode ? gen_normal(g, n0, 0, 1, X->P) : NULL;
    w7_grads gx = {H(n), H(n), H(n), H(n), H(n), H(n), gs00 ? Hcopy(gs00, n0) : NULL};
    w7_grads gref = {H(n), H(n), H(n), H(n), H(n), H(n), gs00 ? Hcopy(gs00, n0) : NULL};
    run_wkv7_bwd(X, gx, &in, shared, s);
    run_wkv7_bwd(R, gref, &in, shared, s);
    expect_close(X, "gr", gx.gr, gref.gr, n, tol_of(X->A));
    expect_close(X, "gw", gx.gw, gref.gw, n, tol_of(X->A));
    expect_close(X, "gk", gx.gk, gref.gk, n, tol_of(X->A));
    expect_close(X, "gv", gx.gv, gref.gv, n, tol_of(X->A));
    expect_close(X, "ga", gx.ga, gref.ga, n, tol_of(X->A));
    expect_close(X, "gb", gx.gb, gref.gb, n, tol_of(X->A));
    if (gs00) expect_close(X, "gs0", gx.gs0, gref.gs0, n0, 10 * tol_of(X->P));
}

static void body_wkv7(bk *X, bk *R, rng *g) {
    if (!X->ops->wkv7_fwd || !X->ops->wkv7_bwd) {
        printf("SKIP %-16s on %-5s: not implemented by this backend\n", "wkv7", X->label);
        return;
    }
    wkv_shape s = {3, 37, 2, 64};
    w7_case(X, R, g, s, 0, 0, 0, 0, 1.0);
    w7_case(X, R, g, s, 1, 1, 1, 1, 1.0);
    w7_case(X, R, g, s, 2, 1, 1, 1, 1.0);
    w7_case(X, R, g, s, 0, 1, 1, 0, 1.0);
    w7_case(X, R, g, s, 1, 0, 0, 1, 1.0);
    w7_case(X, R, g, s, 2, 0, 0, 1, 1.0);
    wkv_shape s1 = {2, 1, 1, 64}, s2 = {1, 70, 1, 64}, s3 = {2, 33, 2, 64}, s4 = {2, 19, 26, 64}, s5 = {2, 0, 2, 64};
    w7_case(X, R, g, s1, 2, 1, 1, 1, 1.0);
    w7_case(X, R, g, s2, 1, 1, 1, 1, 1.0);
    w7_case(X, R, g, s3, 2, 1, 1, 1, 3.0); /* decays down to e^−20: no backstepping anywhere */
    w7_case(X, R, g, s4, 0, 1, 1, 0, 1.0); /* B·H = 52: other tile tiers on small GPUs / the emulator */
    w7_case(X, R, g, s5, 2, 1, 1, 1, 1.0); /* T = 0: s_out = s0, gs0 += gs_out */
    /* other head sizes (GPU: the generic kernels) */
    wkv_shape s6 = {2, 21, 3, 24}, s7 = {1, 21, 2, 5}, s8 = {1, 17, 1, 32};
    w7_case(X, R, g, s6, 1, 1, 1, 1, 1.0);
    w7_case(X, R, g, s7, 2, 1, 1, 1, 1.0);
    w7_case(X, R, g, s8, 0, 1, 1, 0, 1.0);
}

/* ------------------------------------------------------------------------------------ */
/* cross-entropy                                                                        */
/* ------------------------------------------------------------------------------------ */

static void ce_inputs(rng *g, int64_t n, int V, rp_dtype A, rp_dtype P, double **logits, int32_t **targets,
                      double **weights) {
    *logits = gen_normal(g, n * V, 0, 2, A);
    *targets = (int32_t *)hmem(sizeof(int32_t) * (size_t)n);
    *weights = H(n);
    for (int64_t i = 0; i < n; i++) {
        int zero = i % 4 == 1;
        (*weights)[i] = zero ? 0.0 : round_to(P, rng_range(g, 0.2, 1.5));
        (*targets)[i] = zero ? -100 : rng_int(g, V);
    }
    if (n > 2 && V > 700) { /* a tie on the max: argmax must be the first */
        (*logits)[2 * V + 5] = 15.0;
        (*logits)[2 * V + 700] = 15.0;
    }
}

static void ce_case(bk *X, bk *R, rng *g, int64_t n, int V, double grad_scale, double l2wrap, int mode) {
    double *logits, *weights;
    int32_t *targets;
    ce_inputs(g, n, V, X->A, X->P, &logits, &targets, &weights);
    double l0 = round_to(X->P, 1.25), lx = l0, lr = l0;
    double *dx = mode == 2 ? NULL : H(n * V), *dr = mode == 2 ? NULL : H(n * V);
    set_case("cross_entropy n%lld V%d gs%g l2%g %s", (long long)n, V, grad_scale, l2wrap,
             mode == 0 ? "separate" : mode == 1 ? "in-place" : "loss only");
    run_ce(X, &lx, dx, logits, targets, weights, n, V, grad_scale, l2wrap, mode == 1);
    run_ce(R, &lr, dr, logits, targets, weights, n, V, grad_scale, l2wrap, 0);
    expect_close(X, "loss_sum", &lx, &lr, 1, tol_of(X->P));
    if (dx) expect_close(X, "dlogits", dx, dr, n * V, tol_of(X->A));
}

static void body_cross_entropy(bk *X, bk *R, rng *g) {
    ce_case(X, R, g, 37, 1000, 0.7, 0.05, 0);
    ce_case(X, R, g, 37, 1000, 1.0, 1e-4 / 37, 1);
    ce_case(X, R, g, 13, 37, 0.3, 0.2, 0);
    ce_case(X, R, g, 5, 5003, 1.0, 0.01, 2);
    ce_case(X, R, g, 3, 1, 1.0, 0.5, 0);
}

/* ------------------------------------------------------------------------------------ */
/* optimizer                                                                            */
/* ------------------------------------------------------------------------------------ */

static const rp_adam_segment k_segs[] = {
    {0, 1000, 1.0f, 0.0f}, {1500, 3000, 0.5f, 0.01f}, {4700, 0, 1.0f, 0.0f}, {5000, 1, 2.0f, 0.1f}, {5100, 1700, 1.0f, 0.0f}};
#define K_NSEGS 5
#define K_TOTAL 7000

static int in_segment(int64_t i, const rp_adam_segment *s, int ns, int *which) {
    for (int q = 0; q < ns; q++)
        if (i >= s[q].offset && i < s[q].offset + s[q].count) {
            if (which) *which = q;
            return 1;
        }
    return 0;
}

static void body_sumsq(bk *X, bk *R, rng *g) {
    double *x = gen_normal(g, K_TOTAL, 0, 1, X->P);
    double ax = round_to(X->P, 1.5), ar = ax, direct = ax;
    for (int64_t i = 0; i < K_TOTAL; i++)
        if (in_segment(i, k_segs, K_NSEGS, NULL)) direct += x[i] * x[i];
    set_case("sumsq");
    run_sumsq(X, &ax, x, K_TOTAL, k_segs, K_NSEGS);
    run_sumsq(R, &ar, x, K_TOTAL, k_segs, K_NSEGS);
    expect_close(X, "acc", &ax, &ar, 1, tol_of(X->P));
    expect_close(R, "acc (direct)", &ar, &direct, 1, 1e-12);
}

/* The direct updates' gradient scale: 0 when the squared norm is not finite (nothing changes). */
static int direct_clip(adam_cfg c, double *clip) {
    *clip = 1.0;
    if (!c.norm_sq) return 1;
    if (!isfinite(*c.norm_sq)) return 0;
    if (c.max_norm > 0) {
        double q = (double)(float)c.max_norm / (sqrt(*c.norm_sq) + 1e-6);
        if (q < 1) *clip = q;
    }
    return 1;
}

/* The update written out in double, from the same (rounded) inputs. */
static void adam_direct(double *p, const double *gr, double *m, double *v, const rp_adam_segment *segs, int ns,
                        adam_cfg c) {
    double clip, b1 = (float)c.b1, b2 = (float)c.b2, eps = (float)c.eps, lr = (float)c.lr;
    if (!direct_clip(c, &clip)) return;
    double bc1 = 1 - pow(b1, (double)c.step), bc2 = 1 - pow(b2, (double)c.step);
    for (int q = 0; q < ns; q++)
        for (int64_t i = segs[q].offset; i < segs[q].offset + segs[q].count; i++) {
            double gi = gr[i] * clip;
            m[i] = b1 * m[i] + (1 - b1) * gi;
            v[i] = b2 * v[i] + (1 - b2) * gi * gi;
            p[i] -= lr * segs[q].lr_scale * ((m[i] / bc1) / (sqrt(v[i] / bc2) + eps) + segs[q].weight_decay * p[i]);
        }
}

static void adam_case(bk *X, bk *R, rng *g, const char *label, adam_cfg c) {
    double *p0 = gen_normal(g, K_TOTAL, 0, 0.1, X->P), *gr = gen_normal(g, K_TOTAL, 0, 1, X->P);
    double *m0 = gen_normal(g, K_TOTAL, 0, 0.1, X->P), *v0 = gen_unif(g, K_TOTAL, 0, 0.05, X->P);
    double *px = Hcopy(p0, K_TOTAL), *mx = Hcopy(m0, K_TOTAL), *vx = Hcopy(v0, K_TOTAL);
    double *pr = Hcopy(p0, K_TOTAL), *mr = Hcopy(m0, K_TOTAL), *vr = Hcopy(v0, K_TOTAL);
    double *pd = Hcopy(p0, K_TOTAL), *md = Hcopy(m0, K_TOTAL), *vd = Hcopy(v0, K_TOTAL);
    set_case("adam_update %s step %lld", label, (long long)c.step);
    run_adam(X, px, gr, mx, vx, K_TOTAL, k_segs, K_NSEGS, c);
    run_adam(R, pr, gr, mr, vr, K_TOTAL, k_segs, K_NSEGS, c);
    adam_direct(pd, gr, md, vd, k_segs, K_NSEGS, c);
    int skipped = c.norm_sq && !isfinite(*c.norm_sq);
    /* outside the segments (and on a skipped step, everywhere) nothing may change */
    for (int64_t i = 0; i < K_TOTAL; i++)
        if (skipped || !in_segment(i, k_segs, K_NSEGS, NULL)) {
            ck_assert_msg(px[i] == p0[i] && mx[i] == m0[i] && vx[i] == v0[i],
                          "[%s] %s: element %lld changed although it %s (seed %llu)", X->label, g_case, (long long)i,
                          skipped ? "belongs to a skipped step" : "lies outside every segment", g_seed);
            ck_assert_msg(pr[i] == p0[i], "[cpu64] %s: element %lld changed", g_case, (long long)i);
        }
    if (skipped) return;
    double *dpx = H(K_TOTAL), *dpd = H(K_TOTAL);
    for (int64_t i = 0; i < K_TOTAL; i++) {
        dpx[i] = px[i] - p0[i];
        dpd[i] = pd[i] - p0[i];
    }
    expect_close(X, "p", px, pd, K_TOTAL, tol_of(X->P));
    expect_close(X, "m", mx, md, K_TOTAL, tol_of(X->P));
    expect_close(X, "v", vx, vd, K_TOTAL, tol_of(X->P));
    expect_close(X, "delta p", dpx, dpd, K_TOTAL, 10 * tol_of(X->P));
    expect_close(R, "p (oracle vs direct)", pr, pd, K_TOTAL, 1e-12);
}

static void body_adam(bk *X, bk *R, rng *g) {
    static const double ns_big = 100.0, ns_small = 0.01, ns_nan = NAN, ns_inf = INFINITY;
    adam_case(X, R, g, "no norm", (adam_cfg){1.0, 1e-2, 0.9, 0.999, 1e-8, 1, NULL});
    adam_case(X, R, g, "clipped", (adam_cfg){1.0, 1e-2, 0.9, 0.999, 1e-8, 7, &ns_big});
    adam_case(X, R, g, "under max_norm", (adam_cfg){1.0, 1e-2, 0.9, 0.99, 1e-6, 3, &ns_small});
    adam_case(X, R, g, "max_norm 0", (adam_cfg){0.0, 3e-3, 0.8, 0.999, 1e-8, 2, &ns_big});
    adam_case(X, R, g, "NaN norm", (adam_cfg){1.0, 1e-2, 0.9, 0.999, 1e-8, 4, &ns_nan});
    adam_case(X, R, g, "Inf norm", (adam_cfg){1.0, 1e-2, 0.9, 0.999, 1e-8, 4, &ns_inf});
}

/* ------------------------------------------------------------------------------------ */
/* 8-bit AdamW                                                                          */
/* ------------------------------------------------------------------------------------ */

/* One 8-bit optimizer state on the host: params (rounded to the backend's P type), codes and
 * per-block scales. */
typedef struct adam8_state {
    int64_t n, nb;
    double *p;
    uint8_t *mq, *vq;
    float *ma, *va;
} adam8_state;

static adam8_state a8_alloc(int64_t n) {
    adam8_state s = {n, (n + RP_ADAM8_BLOCK - 1) / RP_ADAM8_BLOCK, H(n), NULL, NULL, NULL, NULL};
    s.mq = (uint8_t *)hmem((size_t)n);
    s.vq = (uint8_t *)hmem((size_t)n);
    s.ma = (float *)hmem(sizeof(float) * (size_t)s.nb);
    s.va = (float *)hmem(sizeof(float) * (size_t)s.nb);
    return s;
}
static adam8_state a8_copy(const adam8_state *a) {
    adam8_state s = a8_alloc(a->n);
    memcpy(s.p, a->p, sizeof(double) * (size_t)a->n);
    memcpy(s.mq, a->mq, (size_t)a->n);
    memcpy(s.vq, a->vq, (size_t)a->n);
    memcpy(s.ma, a->ma, sizeof(float) * (size_t)a->nb);
    memcpy(s.va, a->va, sizeof(float) * (size_t)a->nb);
    return s;
}

/* downloads a raw buffer (guard checked) into host and frees it */
static void tb_done_raw(tb *x, void *host) {
    if (!x->d) return;
    tb_check_get(x, NULL);
    CHECK_RC(x->b, x->b->ops->memcpy_d2h(x->b->be, host, x->d, tb_bytes(x)));
    tb_done(x, NULL);
}

static void run_adam8(bk *b, adam8_state *st, const double *g, const float *codes, const rp_adam_segment *segs, int ns,
                      adam_cfg c) {
    tb dp = tb_io(b, b->P, st->p, st->n), dg = tb_in(b, b->P, g, st->n), dn = tb_in(b, b->P, c.norm_sq, 1);
    tb dmq = tb_writable(tb_raw(b, st->mq, (size_t)st->n)), dvq = tb_writable(tb_raw(b, st->vq, (size_t)st->n));
    tb dma = tb_writable(tb_raw(b, st->ma, sizeof(float) * (size_t)st->nb));
    tb dva = tb_writable(tb_raw(b, st->va, sizeof(float) * (size_t)st->nb));
    tb dc = tb_raw(b, codes, sizeof(float) * 2 * RP_ADAM8_CODES);
    CHECK_RC(b, b->ops->adam8_update(b->be, dp.d, dg.d, (uint8_t *)dmq.d, (uint8_t *)dvq.d, (float *)dma.d, (float *)dva.d,
                                     (const float *)dc.d, (const float *)dc.d + RP_ADAM8_CODES, st->n, segs, ns, dn.d,
                                     (float)c.max_norm, (float)c.lr, (float)c.b1, (float)c.b2, (float)c.eps, c.step));
    tb_done(&dg, NULL);
    tb_done(&dn, NULL);
    tb_done(&dc, NULL);
    tb_done(&dp, st->p);
    tb_done_raw(&dmq, st->mq);
    tb_done_raw(&dvq, st->vq);
    tb_done_raw(&dma, st->ma);
    tb_done_raw(&dva, st->va);
}

/* The op's definition (lib/backend.h) written out in double with the host quantizer. */
static void adam8_direct(adam8_state *st, const double *gr, const float *codes, const rp_adam_segment *segs, int ns,
                         adam_cfg c) {
    const float *cm = codes, *cv = codes + RP_ADAM8_CODES;
    double clip, b1 = (float)c.b1, b2 = (float)c.b2, eps = (float)c.eps, lr = (float)c.lr;
    if (!direct_clip(c, &clip)) return;
    double bc1 = 1 - pow(b1, (double)c.step), bc2 = 1 - pow(b2, (double)c.step);
    for (int64_t b = 0; b < st->nb; b++) {
        int64_t b0 = b * RP_ADAM8_BLOCK, len = st->n - b0 < RP_ADAM8_BLOCK ? st->n - b0 : RP_ADAM8_BLOCK;
        double mv[RP_ADAM8_BLOCK], vv[RP_ADAM8_BLOCK];
        int any = 0;
        for (int64_t k = 0; k < len; k++) {
            int64_t i = b0 + k;
            mv[k] = (double)cm[st->mq[i]] * st->ma[b];
            vv[k] = (double)cv[st->vq[i]] * st->va[b];
            int q;
            if (!in_segment(i, segs, ns, &q) || segs[q].count <= 0) continue;
            any = 1;
            double gi = gr[i] * clip;
            mv[k] = b1 * mv[k] + (1 - b1) * gi;
            vv[k] = b2 * vv[k] + (1 - b2) * gi * gi;
            st->p[i] -= lr * segs[q].lr_scale * ((mv[k] / bc1) / (sqrt(vv[k] / bc2) + eps) + segs[q].weight_decay * st->p[i]);
        }
        if (!any) continue;
        rp_adam8_quantize_block(cm, rp_adam8_nearest(cm, 0.0), mv, (int)len, st->mq + b0, &st->ma[b]);
        rp_adam8_quantize_block(cv, rp_adam8_nearest(cv, 0.0), vv, (int)len, st->vq + b0, &st->va[b]);
    }
}

/* Codes of got vs ref: at most one index apart, and apart at all on at most 1% of the
 * elements (a normalised moment within float rounding of a midpoint between two entries may
 * round either way on a float32 backend; the CPU backends agree exactly). */
static void expect_codes(const bk *X, const char *what, const uint8_t *got, const uint8_t *ref, int64_t n, int exact) {
    int64_t differ = 0;
    for (int64_t i = 0; i < n; i++) {
        int d = abs((int)got[i] - (int)ref[i]);
        ck_assert_msg(d <= (exact ? 0 : 1), "[%s] %s: %s[%lld] = %d, expected %d (seed %llu)", X->label, g_case, what,
                      (long long)i, got[i], ref[i], g_seed);
        differ += d != 0;
    }
    if (g_verbose) printf("  %-12s %-40.40s %-10s %lld of %lld codes differ by one\n", X->label, g_case, what, (long long)differ, (long long)n);
    ck_assert_msg(differ <= n / 100, "[%s] %s: %s: %lld of %lld codes differ (limit 1%%) (seed %llu)", X->label, g_case, what,
                  (long long)differ, (long long)n, g_seed);
}

static void expect_absmax(const bk *X, const char *what, const float *got, const float *ref, int64_t nb, double tol) {
    double *a = H(nb), *r = H(nb);
    for (int64_t b = 0; b < nb; b++) {
        a[b] = got[b];
        r[b] = ref[b];
    }
    expect_close(X, what, a, r, nb, tol);
}

/* `steps` consecutive steps from a fresh or a random state; each step starts X, the oracle
 * and the direct formula from the oracle's previous result (so they never drift apart). */
static void adam8_case(bk *X, bk *R, rng *g, const char *label, int64_t n, const rp_adam_segment *segs, int ns,
                       int fresh, adam_cfg c, int steps) {
    float codes[2 * RP_ADAM8_CODES];
    rp_adam8_codes(codes, codes + RP_ADAM8_CODES);
    const int zm = rp_adam8_nearest(codes, 0.0), zv = rp_adam8_nearest(codes + RP_ADAM8_CODES, 0.0);
    ck_assert_int_eq(zm, RP_ADAM8_ZERO_M);
    ck_assert_int_eq(zv, RP_ADAM8_ZERO_V);
    adam8_state st = a8_alloc(n);
    double *p0 = gen_normal(g, n, 0, 0.1, X->P);
    memcpy(st.p, p0, sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        st.mq[i] = (uint8_t)(fresh ? zm : rng_int(g, 256));
        st.vq[i] = (uint8_t)(fresh ? zv : rng_int(g, 256));
    }
    for (int64_t b = 0; b < st.nb; b++) {
        st.ma[b] = fresh ? 0.0f : (float)rng_range(g, 0.01, 0.2);
        st.va[b] = fresh ? 0.0f : (float)rng_range(g, 1e-4, 1e-2);
    }
    if (!fresh && st.nb > 1) st.ma[1] = st.va[1] = 0.0f; /* a block whose moments are all 0 */
    const int skipped = c.norm_sq && !isfinite(*c.norm_sq);
    const int64_t step0 = c.step;
    for (int k = 0; k < steps; k++) {
        c.step = step0 + k;
        double *gr = gen_normal(g, n, 0, 1, X->P);
        if (k == 0 && fresh)
            for (int64_t i = 0; i < n && i < RP_ADAM8_BLOCK; i++) gr[i] = 0; /* block 0: m = v = 0 -> absmax 0 */
        adam8_state sx = a8_copy(&st), sr = a8_copy(&st), sd = a8_copy(&st);
        set_case("adam8_update %s n%lld step %lld", label, (long long)n, (long long)c.step);
        run_adam8(X, &sx, gr, codes, segs, ns, c);
        run_adam8(R, &sr, gr, codes, segs, ns, c);
        adam8_direct(&sd, gr, codes, segs, ns, c);
        /* the oracle is the definition, exactly (same double arithmetic, same quantizer) */
        expect_codes(R, "m codes (oracle vs direct)", sr.mq, sd.mq, n, 1);
        expect_codes(R, "v codes (oracle vs direct)", sr.vq, sd.vq, n, 1);
        for (int64_t b = 0; b < st.nb; b++)
            ck_assert_msg(sr.ma[b] == sd.ma[b] && sr.va[b] == sd.va[b], "[cpu64] %s: absmax of block %lld differs from the direct formula",
                          g_case, (long long)b);
        expect_close(R, "p (oracle vs direct)", sr.p, sd.p, n, 1e-12);
        /* nothing may change on a skipped step, outside the segments (parameters) and in a
         * block without a segment element (state) */
        for (int64_t b = 0; b < st.nb; b++) {
            int64_t b0 = b * RP_ADAM8_BLOCK, b1 = b0 + RP_ADAM8_BLOCK < n ? b0 + RP_ADAM8_BLOCK : n;
            int any = 0;
            for (int64_t i = b0; i < b1; i++) {
                int q;
                int in = in_segment(i, segs, ns, &q) && segs[q].count > 0;
                any |= in;
                if (skipped || !in)
                    ck_assert_msg(sx.p[i] == st.p[i], "[%s] %s: parameter %lld changed although it %s (seed %llu)", X->label,
                                  g_case, (long long)i, skipped ? "belongs to a skipped step" : "lies outside every segment", g_seed);
            }
            if (skipped || !any) {
                ck_assert_msg(sx.ma[b] == st.ma[b] && sx.va[b] == st.va[b] && !memcmp(sx.mq + b0, st.mq + b0, (size_t)(b1 - b0)) &&
                                  !memcmp(sx.vq + b0, st.vq + b0, (size_t)(b1 - b0)),
                              "[%s] %s: the state of block %lld changed although %s (seed %llu)", X->label, g_case, (long long)b,
                              skipped ? "the step was skipped" : "it holds no segment element", g_seed);
                ck_assert(sr.ma[b] == st.ma[b] && !memcmp(sr.mq + b0, st.mq + b0, (size_t)(b1 - b0)));
            }
        }
        if (skipped) return;
        const int cpu = !X->gpu;
        expect_codes(X, "m codes", sx.mq, sr.mq, n, 0);
        expect_codes(X, "v codes", sx.vq, sr.vq, n, 0);
        expect_absmax(X, "m absmax", sx.ma, sr.ma, st.nb, cpu ? 0 : 1e-5);
        expect_absmax(X, "v absmax", sx.va, sr.va, st.nb, cpu ? 0 : 1e-5);
        double *dpx = H(n), *dpr = H(n);
        for (int64_t i = 0; i < n; i++) {
            dpx[i] = sx.p[i] - st.p[i];
            dpr[i] = sr.p[i] - st.p[i];
        }
        expect_close(X, "p", sx.p, sr.p, n, tol_of(X->P));
        expect_close(X, "delta p", dpx, dpr, n, 10 * tol_of(X->P));
        /* the step did something: parameters moved and some block scale is non-zero */
        double moved = 0, amax = 0;
        for (int64_t i = 0; i < n; i++) moved = fmax(moved, fabs(dpr[i]));
        for (int64_t b = 0; b < st.nb; b++) amax = fmax(amax, sr.ma[b]);
        ck_assert_msg(moved > 0 && amax > 0, "%s: the step changed nothing", g_case);
        if (fresh && k == 0) /* the all-zero-gradient block: absmax 0, every code the one of 0.0 */
            for (int64_t i = 0; i < RP_ADAM8_BLOCK && i < n; i++)
                ck_assert_msg(sx.ma[0] == 0 && sx.mq[i] == zm && sx.vq[i] == zv, "[%s] %s: zero block: element %lld has codes %d/%d",
                              X->label, g_case, (long long)i, sx.mq[i], sx.vq[i]);
        /* next step from the oracle's result (parameters rounded to X's P type) */
        for (int64_t i = 0; i < n; i++) sr.p[i] = round_to(X->P, sr.p[i]);
        st = sr;
    }
}

static void body_adam8(bk *X, bk *R, rng *g) {
    if (!X->ops->adam8_update) {
        printf("SKIP adam8 on %s: no adam8_update\n", X->label);
        return;
    }
    ck_assert_msg(R->ops->adam8_update != NULL, "cpu64 must implement adam8_update");
    static const double ns_big = 100.0, ns_small = 0.01, ns_nan = NAN, ns_inf = INFINITY;
    /* one segment over an awkward length (3 full blocks + 77) */
    static const rp_adam_segment whole[] = {{0, 256 * 3 + 77, 1.0f, 0.0f}};
    /* several groups, given out of order, with gaps: block 3 [768, 1024) holds no segment
     * element; blocks 4 and 5 are partly covered; an empty segment */
    static const rp_adam_segment parts[] = {{1300, 256 * 11 + 77 - 1300, 1.0f, 0.02f}, {0, 300, 1.0f, 0.0f},
                                            {1101, 0, 1.0f, 0.0f}, {300, 400, 0.5f, 0.01f}, {1100, 1, 2.0f, 0.1f}};
    adam8_case(X, R, g, "fresh clipped", 256 * 3 + 77, whole, 1, 1, (adam_cfg){1.0, 1e-2, 0.9, 0.999, 1e-8, 1, &ns_big}, 4);
    adam8_case(X, R, g, "groups clipped", 256 * 11 + 77, parts, 5, 0, (adam_cfg){1.0, 1e-2, 0.9, 0.99, 1e-8, 5, &ns_big}, 4);
    adam8_case(X, R, g, "groups under max_norm", 256 * 11 + 77, parts, 5, 0, (adam_cfg){1.0, 3e-3, 0.9, 0.999, 1e-6, 2, &ns_small}, 2);
    adam8_case(X, R, g, "no norm", 256 * 11 + 77, parts, 5, 1, (adam_cfg){0.0, 1e-3, 0.8, 0.999, 1e-8, 1, NULL}, 3);
    adam8_case(X, R, g, "NaN norm", 256 * 11 + 77, parts, 5, 0, (adam_cfg){1.0, 1e-2, 0.9, 0.999, 1e-8, 4, &ns_nan}, 1);
    adam8_case(X, R, g, "Inf norm", 256 * 3 + 77, whole, 1, 0, (adam_cfg){1.0, 1e-2, 0.9, 0.999, 1e-8, 4, &ns_inf}, 1);
}

/* ------------------------------------------------------------------------------------ */
/* dequant                                                                              */
/* ------------------------------------------------------------------------------------ */

static void body_dequant(bk *X, bk *R, rng *g) {
    (void)R;
    static const float nf4[16] = RP_NF4_CODES, fp4[16] = RP_FP4_CODES;
    const int64_t n = 1001;
    uint8_t q[1001];
    float absmax[64], code[256];
    for (int i = 0; i < 1001; i++) q[i] = (uint8_t)rng_u64(g);
    for (int i = 0; i < 64; i++) absmax[i] = (float)rng_range(g, 0.01, 3.0);
    for (int i = 0; i < 256; i++) code[i] = (float)rng_range(g, -1, 1);
    double *out = H(n), *ref = H(n);
    for (int f = 0; f < 2; f++) { /* NF4, FP4; blocksize 64, n odd: the last byte is half used */
        const float *tab = f == 0 ? nf4 : fp4;
        set_case("dequant %s n%lld bs64", f == 0 ? "nf4" : "fp4", (long long)n);
        run_dequant(X, out, q, (size_t)(n + 1) / 2, absmax, (n + 63) / 64, NULL, f == 0 ? RP_QUANT_NF4 : RP_QUANT_FP4, n,
                    64);
        for (int64_t i = 0; i < n; i++) {
            int c = (i & 1) ? (q[i >> 1] & 15) : (q[i >> 1] >> 4);
            ref[i] = round_to(X->A, (double)(tab[c] * absmax[i / 64]));
        }
        expect_same_bits(X, "out", out, ref, n);
    }
    set_case("dequant int8 whole-tensor absmax");
    run_dequant(X, out, q, (size_t)n, absmax, 1, code, RP_QUANT_INT8, n, (int)n);
    for (int64_t i = 0; i < n; i++) ref[i] = round_to(X->A, (double)(code[q[i]] * absmax[0]));
    expect_same_bits(X, "out", out, ref, n);
    for (int i = 0; i < 1001; i++)
        if ((q[i] & 0x7f) == 0x7f) q[i] ^= 1; /* no NaN codes */
    for (int scaled = 0; scaled < 2; scaled++) {
        set_case("dequant fp8_e4m3 %s", scaled ? "block scale 32" : "no scale");
        run_dequant(X, out, q, (size_t)n, scaled ? absmax : NULL, (n + 31) / 32, NULL, RP_QUANT_FP8_E4M3, n, 32);
        for (int64_t i = 0; i < n; i++)
            ref[i] = round_to(X->A, (double)(rp_fp8_e4m3_to_float(q[i]) * (scaled ? absmax[i / 32] : 1.0f)));
        expect_same_bits(X, "out", out, ref, n);
    }
}

/* ------------------------------------------------------------------------------------ */
/* error paths                                                                          */
/* ------------------------------------------------------------------------------------ */

static void expect_rc(bk *X, const char *what, int rc, int want) {
    ck_assert_msg(rc == want, "[%s] %s: returned %d, expected %d", X->label, what, rc, want);
    ck_assert_msg(X->be->err.msg[0] != 0, "[%s] %s: no error message", X->label, what);
    if (g_verbose) printf("  %-12s %-40s rc %d: %s\n", X->label, what, rc, X->be->err.msg);
    X->be->err.code = 0;
    X->be->err.msg[0] = 0;
}

static void body_errors(bk *X, bk *R, rng *g) {
    (void)R;
    (void)g;
    set_case("errors");
    void *buf = NULL;
    CHECK_RC(X, X->ops->alloc(X->be, &buf, 4096));
    rp_adam_segment seg = {0, 4, 1, 0};
    expect_rc(X, "gemm with a float16 operand",
              X->ops->gemm(X->be, 0, 0, 2, 2, 2, 1, buf, RP_F16, 2, 0, buf, X->A, 2, 0, 0, buf, X->A, 2, 0, 1),
              RWKVPEFT_E_UNSUPPORTED);
    expect_rc(X, "convert from int32", X->ops->convert(X->be, buf, X->A, buf, RP_I32, 4), RWKVPEFT_E_UNSUPPORTED);
    expect_rc(X, "dropout p = 1", X->ops->dropout(X->be, buf, buf, 4, 1.0f, 1), RWKVPEFT_E_INVALID_ARGUMENT);
    expect_rc(X, "act kind 9", X->ops->act_fwd(X->be, 9, buf, buf, 4), RWKVPEFT_E_INVALID_ARGUMENT);
    expect_rc(X, "shift_mix form 7", X->ops->shift_mix_fwd(X->be, buf, buf, NULL, buf, NULL, 7, 1, 1, 1, 4),
              RWKVPEFT_E_INVALID_ARGUMENT);
    expect_rc(X, "shift_mix RP_MIX_CURRENT with m",
              X->ops->shift_mix_bwd(X->be, buf, NULL, NULL, NULL, buf, buf, NULL, buf, buf, RP_MIX_CURRENT, 1, 1, 1, 4),
              RWKVPEFT_E_INVALID_ARGUMENT);
    expect_rc(X, "adam step 0",
              X->ops->adam_update(X->be, buf, buf, buf, buf, &seg, 1, NULL, 0, 1e-3f, 0.9f, 0.99f, 1e-8f, 0),
              RWKVPEFT_E_INVALID_ARGUMENT);
    expect_rc(X, "dequant blocksize 0", X->ops->dequant(X->be, buf, buf, buf, NULL, RP_QUANT_NF4, 4, 0),
              RWKVPEFT_E_INVALID_ARGUMENT);
    expect_rc(X, "dequant format 99", X->ops->dequant(X->be, buf, buf, buf, NULL, 99, 4, 64), RWKVPEFT_E_UNSUPPORTED);
    if (X->gpu)
        expect_rc(X, "wkv6 N = 48",
                  X->ops->wkv6_fwd(X->be, buf, NULL, buf, buf, buf, buf, buf, NULL, 0, 1, 1, 1, 48),
                  RWKVPEFT_E_UNSUPPORTED);
    CHECK_RC(X, X->ops->synchronize(X->be));
    X->ops->free(X->be, buf);
}

/* ------------------------------------------------------------------------------------ */
/* finite differences and direct formulas on the float64 oracle                         */
/* ------------------------------------------------------------------------------------ */

#define FD_SAMPLES 24
#define FD_H 1e-5
#define FD_TOL 1e-6

typedef double (*loss_fn)(void *ctx);

/* Central differences of f at up to FD_SAMPLES entries of x (perturbed in place) against
 * `analytic`; normalised error over the sampled entries. */
static void fd_check(bk *R, rng *g, const char *what, double *x, int64_t n, const double *analytic, loss_fn f,
                     void *ctx) {
    int64_t idx[FD_SAMPLES];
    int ns = 0;
    if (n <= FD_SAMPLES)
        for (int64_t i = 0; i < n; i++) idx[ns++] = i;
    else
        while (ns < FD_SAMPLES) idx[ns++] = (int64_t)(rng_u64(g) % (uint64_t)n);
    double fd[FD_SAMPLES], an[FD_SAMPLES];
    for (int s = 0; s < ns; s++) {
        double x0 = x[idx[s]], h = FD_H * (fabs(x0) > 1 ? fabs(x0) : 1);
        x[idx[s]] = x0 + h;
        double lp = f(ctx);
        x[idx[s]] = x0 - h;
        double lm = f(ctx);
        x[idx[s]] = x0;
        fd[s] = (lp - lm) / (2 * h);
        an[s] = analytic[idx[s]];
    }
    char label[96];
    snprintf(label, sizeof label, "d/d%s", what);
    expect_close(R, label, an, fd, ns, FD_TOL);
}

static double dot(const double *a, const double *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ---- activations ---- */
typedef struct act_ctx {
    bk *R;
    int kind;
    double *x, *gy, *y;
    int64_t n;
} act_ctx;
static double act_loss(void *p) {
    act_ctx *c = (act_ctx *)p;
    run_act_fwd(c->R, c->kind, c->y, c->x, c->n, 0);
    return dot(c->gy, c->y, c->n);
}

static void body_fd_act(bk *R, rng *g) {
    const int64_t n = 64;
    for (int kind = 0; kind < 5; kind++) {
        act_ctx c = {R, kind, gen_normal(g, n, 0, 1.5, RP_F64), gen_normal(g, n, 0, 1, RP_F64), H(n), n};
        for (int64_t i = 0; i < n; i++)
            if (fabs(c.x[i]) < 0.05) c.x[i] = 0.3; /* keep away from relu²'s kink */
        double *dx = H(n);
        set_case("fd act kind %d", kind);
        run_act_fwd(R, kind, c.y, c.x, n, 0);
        run_act_bwd(R, kind, dx, c.gy, c.x, c.y, n, 0);
        fd_check(R, g, "x", c.x, n, dx, act_loss, &c);
    }
}

/* ---- mul ---- */
typedef struct mul_ctx {
    bk *R;
    double *a, *b, *gy, *y;
    int64_t n;
} mul_ctx;
static double mul_loss(void *p) {
    mul_ctx *c = (mul_ctx *)p;
    run_mul_fwd(c->R, c->y, c->a, c->b, c->n, 0);
    return dot(c->gy, c->y, c->n);
}

static void body_fd_mul(bk *R, rng *g) {
    const int64_t n = 50;
    mul_ctx c = {R, gen_normal(g, n, 0, 1, RP_F64), gen_normal(g, n, 0, 1, RP_F64), gen_normal(g, n, 0, 1, RP_F64),
                 H(n), n};
    double *da = H(n), *db = H(n);
    set_case("fd mul");
    run_mul_bwd(R, da, db, c.gy, c.a, c.b, n);
    fd_check(R, g, "a", c.a, n, da, mul_loss, &c);
    fd_check(R, g, "b", c.b, n, db, mul_loss, &c);
}

/* ---- act_mul: L = Σ gy·(f(a)·b + r) ---- */
typedef struct act_mul_ctx {
    bk *R;
    int kind;
    double *a, *b, *r, *gy, *y;
    int64_t n;
} act_mul_ctx;
static double act_mul_loss(void *p) {
    act_mul_ctx *c = (act_mul_ctx *)p;
    run_act_mul_fwd(c->R, c->kind, c->y, c->a, c->b, c->r, c->n, 0);
    return dot(c->gy, c->y, c->n);
}

static void body_fd_act_mul(bk *R, rng *g) {
    const int64_t n = 48;
    for (int kind = 0; kind < 5; kind++) {
        act_mul_ctx c = {R, kind, gen_normal(g, n, 0, 1.5, RP_F64), gen_normal(g, n, 0, 1, RP_F64),
                         gen_normal(g, n, 0, 1, RP_F64), gen_normal(g, n, 0, 1, RP_F64), H(n), n};
        for (int64_t i = 0; i < n; i++)
            if (fabs(c.a[i]) < 0.05) c.a[i] = 0.3; /* keep away from relu²'s kink */
        double *da = H(n), *db = H(n);
        set_case("fd act_mul kind %d", kind);
        run_act_mul_bwd(R, kind, da, db, c.gy, c.a, c.b, n);
        fd_check(R, g, "a", c.a, n, da, act_mul_loss, &c);
        fd_check(R, g, "b", c.b, n, db, act_mul_loss, &c);
        /* ∂L/∂r = gy: the residual enters with weight one */
        fd_check(R, g, "r", c.r, n, c.gy, act_mul_loss, &c);
    }
}

/* ---- embedding ---- */
typedef struct emb_ctx {
    bk *R;
    double *table, *gy, *out;
    int32_t *ids;
    int64_t n;
    int C, V;
} emb_ctx;
static double emb_loss(void *p) {
    emb_ctx *c = (emb_ctx *)p;
    run_embedding_fwd(c->R, c->out, c->table, c->ids, c->n, c->C, c->V);
    return dot(c->gy, c->out, c->n * c->C);
}

static void body_fd_embedding(bk *R, rng *g) {
    emb_ctx c = {R, NULL, NULL, NULL, NULL, 15, 5, 7};
    c.table = gen_normal(g, (int64_t)c.V * c.C, 0, 1, RP_F64);
    c.gy = gen_normal(g, c.n * c.C, 0, 1, RP_F64);
    c.out = H(c.n * c.C);
    c.ids = (int32_t *)hmem(sizeof(int32_t) * 15);
    for (int i = 0; i < 15; i++) c.ids[i] = rng_int(g, 4); /* repeats; ids 4..6 unused */
    double *dt = H((int64_t)c.V * c.C);
    set_case("fd embedding");
    run_embedding_bwd(R, dt, c.gy, c.ids, c.n, c.C, c.V);
    fd_check(R, g, "table", c.table, (int64_t)c.V * c.C, dt, emb_loss, &c);
}

/* ---- norm ---- */
typedef struct norm_ctx {
    bk *R;
    double *x, *w, *b, *gy, *y, *mean, *rstd;
    int64_t n;
    int G, S;
} norm_ctx;
static double norm_loss(void *p) {
    norm_ctx *c = (norm_ctx *)p;
    run_norm_fwd(c->R, c->y, c->mean, c->rstd, c->x, c->w, c->b, c->n, c->G, c->S, 1e-5);
    return dot(c->gy, c->y, c->n * c->G * c->S);
}

static void body_fd_norm(bk *R, rng *g) {
    const int Gs[2] = {1, 3}, Ss[2] = {13, 8};
    for (int q = 0; q < 2; q++) {
        norm_ctx c = {R, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 5, Gs[q], Ss[q]};
        int64_t C = (int64_t)c.G * c.S;
        c.x = gen_normal(g, c.n * C, 0.5, 1, RP_F64);
        c.w = gen_normal(g, C, 1, 0.3, RP_F64);
        c.b = gen_normal(g, C, 0, 0.3, RP_F64);
        c.gy = gen_normal(g, c.n * C, 0, 1, RP_F64);
        c.y = H(c.n * C);
        c.mean = H(c.n * c.G);
        c.rstd = H(c.n * c.G);
        double *dx = H(c.n * C), *dw = H(C), *db = H(C);
        set_case("fd norm G%d S%d", c.G, c.S);
        norm_loss(&c);
        run_norm_bwd(R, dx, dw, db, c.gy, c.x, c.w, c.mean, c.rstd, c.n, c.G, c.S);
        fd_check(R, g, "x", c.x, c.n * C, dx, norm_loss, &c);
        fd_check(R, g, "w", c.w, C, dw, norm_loss, &c);
        fd_check(R, g, "b", c.b, C, db, norm_loss, &c);
    }
}

/* gated: L = Σ gy·(norm(x)·w + b) ⊙ γ, γ = gate or SiLU(gate) */
typedef struct norm_gate_ctx {
    bk *R;
    double *x, *w, *b, *gate, *gy, *out, *mean, *rstd;
    int64_t n;
    int G, S, silu;
} norm_gate_ctx;
static double norm_gate_loss(void *p) {
    norm_gate_ctx *c = (norm_gate_ctx *)p;
    run_norm_gate_fwd(c->R, c->out, c->mean, c->rstd, c->x, c->w, c->b, c->gate, c->silu, c->n, c->G, c->S, 1e-5);
    return dot(c->gy, c->out, c->n * c->G * c->S);
}

static void body_fd_norm_gate(bk *R, rng *g) {
    const int Gs[4] = {1, 3, 1, 3}, Ss[4] = {13, 8, 13, 8};
    for (int q = 0; q < 4; q++) {
        norm_gate_ctx c = {R, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 5, Gs[q], Ss[q], q >= 2};
        int64_t C = (int64_t)c.G * c.S;
        c.x = gen_normal(g, c.n * C, 0.5, 1, RP_F64);
        c.w = gen_normal(g, C, 1, 0.3, RP_F64);
        c.b = gen_normal(g, C, 0, 0.3, RP_F64);
        c.gate = gen_normal(g, c.n * C, 0.3, 1, RP_F64);
        c.gy = gen_normal(g, c.n * C, 0, 1, RP_F64);
        c.out = H(c.n * C);
        c.mean = H(c.n * c.G);
        c.rstd = H(c.n * c.G);
        double *dx = H(c.n * C), *dgate = H(c.n * C), *dw = H(C), *db = H(C);
        set_case("fd norm_gate G%d S%d silu%d", c.G, c.S, c.silu);
        norm_gate_loss(&c);
        run_norm_gate_bwd(R, dx, dgate, dw, db, c.gy, c.x, c.w, c.b, c.gate, c.silu, c.mean, c.rstd, c.n, c.G, c.S);
        fd_check(R, g, "x", c.x, c.n * C, dx, norm_gate_loss, &c);
        fd_check(R, g, "gate", c.gate, c.n * C, dgate, norm_gate_loss, &c);
        fd_check(R, g, "w", c.w, C, dw, norm_gate_loss, &c);
        fd_check(R, g, "b", c.b, C, db, norm_gate_loss, &c);
    }
}

/* ---- shift_mix ---- */
typedef struct shift_ctx {
    bk *R;
    double *x, *xp, *coef, *m, *gy, *out;
    int S, B, T, C, form;
} shift_ctx;
static double shift_loss(void *p) {
    shift_ctx *c = (shift_ctx *)p;
    run_shift_fwd(c->R, c->out, c->x, c->xp, c->coef, c->m, c->form, c->S, c->B, c->T, c->C);
    return dot(c->gy, c->out, (int64_t)c->S * c->B * c->T * c->C);
}

static void body_fd_shift_mix(bk *R, rng *g) {
    for (int variant = 0; variant < 3; variant++) { /* x_prev and m; neither; RP_MIX_CURRENT with x_prev */
        shift_ctx c = {R, NULL, NULL, NULL, NULL, NULL, NULL, 3, 2, 5, 7, variant == 2 ? RP_MIX_CURRENT : RP_MIX_DELTA};
        int64_t slot = (int64_t)c.B * c.T * c.C;
        c.x = gen_normal(g, slot, 0, 1, RP_F64);
        c.xp = variant != 1 ? gen_normal(g, (int64_t)c.B * c.C, 0, 1, RP_F64) : NULL;
        c.coef = gen_unif(g, (int64_t)c.S * c.C, 0, 1, RP_F64);
        c.m = variant == 0 ? gen_normal(g, c.S * slot, 0, 0.3, RP_F64) : NULL;
        c.gy = gen_normal(g, c.S * slot, 0, 1, RP_F64);
        c.out = H(c.S * slot);
        double *dx = H(slot), *dxp = H((int64_t)c.B * c.C), *dc = H((int64_t)c.S * c.C), *dm = H(c.S * slot);
        set_case("fd shift_mix %s x_prev%d m%d", variant == 2 ? "current" : "delta", c.xp != NULL, c.m != NULL);
        run_shift_bwd(R, dx, c.xp ? dxp : NULL, dc, c.m ? dm : NULL, c.gy, c.x, c.xp, c.coef, c.m, c.form, c.S, c.B, c.T,
                      c.C);
        fd_check(R, g, "x", c.x, slot, dx, shift_loss, &c);
        fd_check(R, g, "coef", c.coef, (int64_t)c.S * c.C, dc, shift_loss, &c);
        if (c.xp) fd_check(R, g, "x_prev", c.xp, (int64_t)c.B * c.C, dxp, shift_loss, &c);
        if (c.m) fd_check(R, g, "m", c.m, c.S * slot, dm, shift_loss, &c);
    }
}

/* ---- broadcast_rows / sum_rows (an adjoint pair) ---- */
typedef struct rows_ctx {
    bk *R;
    double *v, *gy, *y;
    int64_t n;
    int C;
} rows_ctx;
static double rows_loss(void *p) {
    rows_ctx *c = (rows_ctx *)p;
    run_broadcast(c->R, c->y, c->v, c->n, c->C, 0);
    return dot(c->gy, c->y, c->n * c->C);
}

static void body_fd_rows(bk *R, rng *g) {
    rows_ctx c = {R, gen_normal(g, 9, 0, 1, RP_F64), gen_normal(g, 11 * 9, 0, 1, RP_F64), H(11 * 9), 11, 9};
    double *dv = H(9);
    set_case("fd broadcast_rows / sum_rows");
    run_sum_rows(R, dv, c.gy, c.n, c.C);
    fd_check(R, g, "v", c.v, 9, dv, rows_loss, &c);
}

/* ---- wkv6 ---- */
typedef struct wkv_ctx {
    bk *R;
    wkv_in in;
    wkv_shape s;
    int shared;
    double *y, *s_out;
} wkv_ctx;
static double wkv_loss(void *p) {
    wkv_ctx *c = (wkv_ctx *)p;
    int64_t n = (int64_t)c->s.B * c->s.T * c->s.H * c->s.N, ns = (int64_t)c->s.B * c->s.H * c->s.N * c->s.N;
    run_wkv_fwd(c->R, c->y, c->in.gs_out ? c->s_out : NULL, c->in.r, c->in.k, c->in.v, c->in.w, c->in.u, c->in.s0,
                c->shared, c->s);
    return dot(c->in.gy, c->y, n) + (c->in.gs_out ? dot(c->in.gs_out, c->s_out, ns) : 0);
}

static void body_fd_wkv6(bk *R, rng *g) {
    const wkv_shape shapes[2] = {{2, 9, 2, 4}, {1, 17, 1, 8}};
    for (int q = 0; q < 2; q++)
        for (int s0_mode = 0; s0_mode < 3; s0_mode++)
            for (int with_gs = 0; with_gs < 2; with_gs++) {
                wkv_ctx c;
                c.R = R;
                c.s = shapes[q];
                c.shared = s0_mode == 1;
                c.in = wkv_inputs(g, c.s, s0_mode, with_gs, RP_F64, RP_F64);
                int64_t n = (int64_t)c.s.B * c.s.T * c.s.H * c.s.N, NN = (int64_t)c.s.N * c.s.N;
                int64_t n0 = (c.shared ? 1 : c.s.B) * c.s.H * NN;
                c.y = H(n);
                c.s_out = H((int64_t)c.s.B * c.s.H * NN);
                wkv_grads gr = {H(n), H(n), H(n), H(n), H((int64_t)c.s.H * c.s.N), s0_mode ? H(n0) : NULL};
                set_case("fd wkv6 B%d T%d H%d N%d s0:%s gs_out%d", c.s.B, c.s.T, c.s.H, c.s.N,
                         s0_mode == 0 ? "none" : c.shared ? "shared" : "per-batch", with_gs);
                run_wkv_bwd(R, gr, c.in.gy, c.in.gs_out, c.in.r, c.in.k, c.in.v, c.in.w, c.in.u, c.in.s0, c.shared, c.s, 0);
                fd_check(R, g, "r", c.in.r, n, gr.gr, wkv_loss, &c);
                fd_check(R, g, "k", c.in.k, n, gr.gk, wkv_loss, &c);
                fd_check(R, g, "v", c.in.v, n, gr.gv, wkv_loss, &c);
                fd_check(R, g, "w", c.in.w, n, gr.gw, wkv_loss, &c);
                fd_check(R, g, "u", c.in.u, (int64_t)c.s.H * c.s.N, gr.gu, wkv_loss, &c);
                if (s0_mode) fd_check(R, g, "s0", c.in.s0, n0, gr.gs0, wkv_loss, &c);
            }
}

/* ---- lerp ---- */
typedef struct lerp_ctx {
    bk *R;
    double *a, *b, *t, *gy, *y;
    int64_t n;
} lerp_ctx;
static double lerp_loss(void *p) {
    lerp_ctx *c = (lerp_ctx *)p;
    run_lerp_fwd(c->R, c->y, c->a, c->b, c->t, c->n, 0);
    return dot(c->gy, c->y, c->n);
}

static void body_fd_lerp(bk *R, rng *g) {
    const int64_t n = 50;
    lerp_ctx c = {R, gen_normal(g, n, 0, 1, RP_F64), gen_normal(g, n, 0, 1, RP_F64), gen_unif(g, n, -0.2, 1.2, RP_F64),
                  gen_normal(g, n, 0, 1, RP_F64), H(n), n};
    double *da = H(n), *db = H(n), *dt = H(n);
    set_case("fd lerp");
    run_lerp_bwd(R, da, db, dt, c.gy, c.a, c.b, c.t, n);
    fd_check(R, g, "a", c.a, n, da, lerp_loss, &c);
    fd_check(R, g, "b", c.b, n, db, lerp_loss, &c);
    fd_check(R, g, "t", c.t, n, dt, lerp_loss, &c);
}

/* ---- v7_kprep ---- */
typedef struct kprep_ctx {
    bk *R;
    double *k, *a, *kk, *ka, *g1, *g2, *g3, *kout, *wa, *wb;
    int64_t n;
    int H, N;
} kprep_ctx;
static double kprep_loss(void *p) {
    kprep_ctx *c = (kprep_ctx *)p;
    int64_t nc = c->n * c->H * c->N;
    run_kprep_fwd(c->R, c->kout, c->wa, c->wb, c->k, c->a, c->kk, c->ka, c->n, c->H, c->N);
    return dot(c->g1, c->kout, nc) + dot(c->g2, c->wa, nc) + dot(c->g3, c->wb, nc);
}

/* floored: head 1's k_k is zero, so u = 0 there (the 1e-12 floor; k_k itself is then not
 * differentiable, a perturbation leaves the floor, so only k, a, k_a are checked) */
static void body_fd_v7_kprep(bk *R, rng *g) {
    for (int floored = 0; floored < 2; floored++) {
        kprep_ctx c;
        c.R = R;
        c.n = 5;
        c.H = 2;
        c.N = 6;
        int64_t C = (int64_t)c.H * c.N, nc = c.n * C;
        c.k = gen_normal(g, nc, 0, 1, RP_F64);
        c.a = gen_unif(g, nc, 0, 1, RP_F64);
        c.kk = gen_normal(g, C, 0.85, 0.3, RP_F64);
        c.ka = gen_normal(g, C, 1, 0.3, RP_F64);
        if (floored)
            for (int i = 0; i < c.N; i++) c.kk[c.N + i] = 0;
        c.g1 = gen_normal(g, nc, 0, 1, RP_F64);
        c.g2 = gen_normal(g, nc, 0, 1, RP_F64);
        c.g3 = gen_normal(g, nc, 0, 1, RP_F64);
        c.kout = H(nc);
        c.wa = H(nc);
        c.wb = H(nc);
        double *dk = H(nc), *da = H(nc), *dkk = H(C), *dka = H(C);
        set_case("fd v7_kprep%s", floored ? " (a head below the norm floor)" : "");
        run_kprep_bwd(R, dk, da, dkk, dka, c.g1, c.g2, c.g3, c.k, c.a, c.kk, c.ka, c.n, c.H, c.N);
        fd_check(R, g, "k", c.k, nc, dk, kprep_loss, &c);
        fd_check(R, g, "a", c.a, nc, da, kprep_loss, &c);
        fd_check(R, g, "k_a", c.ka, C, dka, kprep_loss, &c);
        if (!floored) fd_check(R, g, "k_k", c.kk, C, dkk, kprep_loss, &c);
    }
}

/* ---- v7_bonus ---- */
typedef struct bonus_ctx {
    bk *R;
    double *r, *k, *v, *rk, *y0, *gy, *y;
    int64_t n;
    int H, N;
} bonus_ctx;
static double bonus_loss(void *p) {
    bonus_ctx *c = (bonus_ctx *)p;
    int64_t nc = c->n * c->H * c->N;
    memcpy(c->y, c->y0, sizeof(double) * (size_t)nc);
    run_bonus_fwd(c->R, c->y, c->r, c->k, c->v, c->rk, c->n, c->H, c->N);
    return dot(c->gy, c->y, nc);
}

static void body_fd_v7_bonus(bk *R, rng *g) {
    bonus_ctx c;
    c.R = R;
    c.n = 5;
    c.H = 2;
    c.N = 6;
    int64_t C = (int64_t)c.H * c.N, nc = c.n * C;
    c.r = gen_normal(g, nc, 0, 1, RP_F64);
    c.k = gen_normal(g, nc, 0, 1, RP_F64);
    c.v = gen_normal(g, nc, 0, 1, RP_F64);
    c.rk = gen_normal(g, C, 0, 1, RP_F64);
    c.y0 = gen_normal(g, nc, 0, 1, RP_F64);
    c.gy = gen_normal(g, nc, 0, 1, RP_F64);
    c.y = H(nc);
    double *dr = H(nc), *dk = H(nc), *dv = H(nc), *drk = H(C); /* "+=" from zero */
    set_case("fd v7_bonus");
    run_bonus_bwd(R, dr, dk, dv, drk, c.gy, c.r, c.k, c.v, c.rk, c.n, c.H, c.N);
    fd_check(R, g, "r", c.r, nc, dr, bonus_loss, &c);
    fd_check(R, g, "k", c.k, nc, dk, bonus_loss, &c);
    fd_check(R, g, "v", c.v, nc, dv, bonus_loss, &c);
    fd_check(R, g, "r_k", c.rk, C, drk, bonus_loss, &c);
}

/* ---- wkv7 ---- */
typedef struct w7_ctx {
    bk *R;
    w7_in in;
    wkv_shape s;
    int shared;
    double *y, *s_out;
} w7_ctx;
static double w7_loss(void *p) {
    w7_ctx *c = (w7_ctx *)p;
    int64_t n = (int64_t)c->s.B * c->s.T * c->s.H * c->s.N, ns = (int64_t)c->s.B * c->s.H * c->s.N * c->s.N;
    run_wkv7_fwd(c->R, c->y, c->in.gs_out ? c->s_out : NULL, &c->in, c->shared, c->s);
    return dot(c->in.gy, c->y, n) + (c->in.gs_out ? dot(c->in.gs_out, c->s_out, ns) : 0);
}

static void body_fd_wkv7(bk *R, rng *g) {
    const wkv_shape shapes[2] = {{2, 9, 2, 4}, {1, 19, 1, 8}};
    for (int q = 0; q < 2; q++)
        for (int s0_mode = 0; s0_mode < 3; s0_mode++)
            for (int with_gs = 0; with_gs < 2; with_gs++) {
                w7_ctx c;
                c.R = R;
                c.s = shapes[q];
                c.shared = s0_mode == 1;
                c.in = w7_inputs(g, c.s, s0_mode, with_gs, 1.0, RP_F64, RP_F64);
                int64_t n = (int64_t)c.s.B * c.s.T * c.s.H * c.s.N, NN = (int64_t)c.s.N * c.s.N;
                int64_t n0 = (c.shared ? 1 : c.s.B) * c.s.H * NN;
                c.y = H(n);
                c.s_out = H((int64_t)c.s.B * c.s.H * NN);
                w7_grads gr = {H(n), H(n), H(n), H(n), H(n), H(n), s0_mode ? H(n0) : NULL};
                set_case("fd wkv7 B%d T%d H%d N%d s0:%s gs_out%d", c.s.B, c.s.T, c.s.H, c.s.N,
                         s0_mode == 0 ? "none" : c.shared ? "shared" : "per-batch", with_gs);
                run_wkv7_bwd(R, gr, &c.in, c.shared, c.s);
                fd_check(R, g, "r", c.in.r, n, gr.gr, w7_loss, &c);
                fd_check(R, g, "w", c.in.w, n, gr.gw, w7_loss, &c);
                fd_check(R, g, "k", c.in.k, n, gr.gk, w7_loss, &c);
                fd_check(R, g, "v", c.in.v, n, gr.gv, w7_loss, &c);
                fd_check(R, g, "a", c.in.a, n, gr.ga, w7_loss, &c);
                fd_check(R, g, "b", c.in.b, n, gr.gb, w7_loss, &c);
                if (s0_mode) fd_check(R, g, "s0", c.in.s0, n0, gr.gs0, w7_loss, &c);
            }
}

/* ---- cross-entropy ---- */
typedef struct ce_ctx {
    bk *R;
    double *logits, *weights;
    int32_t *targets;
    int64_t n;
    int V;
} ce_ctx;
static double ce_loss(void *p) {
    ce_ctx *c = (ce_ctx *)p;
    double loss = 0;
    run_ce(c->R, &loss, NULL, c->logits, c->targets, c->weights, c->n, c->V, 1.0, 0.0, 0);
    return loss;
}

static void body_fd_ce(bk *R, rng *g) {
    ce_ctx c = {R, NULL, NULL, NULL, 7, 23};
    ce_inputs(g, c.n, c.V, RP_F64, RP_F64, &c.logits, &c.targets, &c.weights);
    int64_t nv = c.n * c.V;
    /* the value: Σ w_i·(logsumexp_i − logit_i[target]) written out */
    double direct = 0, loss = 0.25;
    for (int64_t i = 0; i < c.n; i++) {
        if (c.weights[i] == 0) continue;
        double mx = c.logits[i * c.V];
        for (int j = 1; j < c.V; j++) mx = fmax(mx, c.logits[i * c.V + j]);
        double se = exp(c.logits[i * c.V] - mx);
        for (int j = 1; j < c.V; j++) se += exp(c.logits[i * c.V + j] - mx);
        direct += c.weights[i] * (mx + log(se) - c.logits[i * c.V + c.targets[i]]);
    }
    double *d1 = H(nv), *d2 = H(nv), *d3 = H(nv);
    set_case("fd cross_entropy (weights with zeros)");
    run_ce(R, &loss, d1, c.logits, c.targets, c.weights, c.n, c.V, 1.0, 0.0, 0);
    double want = 0.25 + direct;
    expect_close(R, "loss (direct)", &loss, &want, 1, 1e-12);
    fd_check(R, g, "logits", c.logits, nv, d1, ce_loss, &c);
    /* grad_scale multiplies the CE part only; L2Wrap adds l2wrap·max at the (first) argmax
     * of every row, zero-weight rows included */
    const double gs = (float)0.37, l2 = (float)0.05; /* the op takes floats */
    loss = 0;
    run_ce(R, &loss, d2, c.logits, c.targets, c.weights, c.n, c.V, gs, 0.0, 0);
    loss = 0;
    run_ce(R, &loss, d3, c.logits, c.targets, c.weights, c.n, c.V, gs, l2, 0);
    double *want2 = H(nv), *want3 = H(nv);
    for (int64_t i = 0; i < c.n; i++) {
        int am = 0;
        for (int j = 1; j < c.V; j++)
            if (c.logits[i * c.V + j] > c.logits[i * c.V + am]) am = j;
        for (int j = 0; j < c.V; j++) {
            want2[i * c.V + j] = gs * d1[i * c.V + j];
            want3[i * c.V + j] = want2[i * c.V + j] + (j == am ? l2 * c.logits[i * c.V + am] : 0);
        }
    }
    set_case("cross_entropy grad_scale and L2Wrap against the formula");
    expect_close(R, "dlogits gs", d2, want2, nv, 1e-12);
    expect_close(R, "dlogits l2wrap", d3, want3, nv, 1e-12);
}

/* ---- gemm against a triple loop ---- */
static void body_ref_gemm(bk *R, rng *g) {
    for (int ta = 0; ta < 2; ta++)
        for (int tbt = 0; tbt < 2; tbt++) {
            const int m = 7, n = 5, k = 6, batch = 2;
            int64_t ar = ta ? k : m, ac = ta ? m : k, br = tbt ? n : k, bc = tbt ? k : n;
            int64_t lda = ac + 2, ldb = bc + 1, ldc = n + 3, sa = ar * lda + 1, sb = br * ldb, sc = m * ldc + 2;
            int64_t ea = extent(batch, sa, ar, lda, ac), eb = extent(batch, sb, br, ldb, bc),
                    ec = extent(batch, sc, m, ldc, n);
            double *A = gen_normal(g, ea, 0, 1, RP_F64), *B = gen_normal(g, eb, 0, 1, RP_F64);
            double *C = gen_normal(g, ec, 0, 1, RP_F64), *want = Hcopy(C, ec);
            const double alpha = 0.75, beta = -0.5;
            for (int p = 0; p < batch; p++)
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        double s = 0;
                        for (int l = 0; l < k; l++) {
                            double av = ta ? A[p * sa + l * lda + i] : A[p * sa + i * lda + l];
                            double bv = tbt ? B[p * sb + j * ldb + l] : B[p * sb + l * ldb + j];
                            s += av * bv;
                        }
                        want[p * sc + i * ldc + j] = alpha * s + beta * C[p * sc + i * ldc + j];
                    }
            set_case("gemm ta%d tb%d against a triple loop", ta, tbt);
            run_gemm(R, ta, tbt, m, n, k, alpha, A, RP_F64, lda, sa, B, RP_F64, ldb, sb, beta, C, RP_F64, ldc, sc, batch);
            expect_close(R, "C", C, want, ec, 1e-12);
        }
}

/* ---- dropout, sumsq: done against formulas in the backend tests ---- */

/* ------------------------------------------------------------------------------------ */
/* Check plumbing                                                                       */
/* ------------------------------------------------------------------------------------ */

#define OP_TEST(name)                                                                   \
    START_TEST(test_##name) { for_each_backend(#name, body_##name); }                  \
    END_TEST

OP_TEST(memory)
OP_TEST(gemm)
OP_TEST(embedding)
OP_TEST(norm)
OP_TEST(shift_mix)
OP_TEST(act)
OP_TEST(mul_add)
OP_TEST(rows)
OP_TEST(dropout)
OP_TEST(wkv6)
OP_TEST(lerp)
OP_TEST(v7_kprep)
OP_TEST(v7_bonus)
OP_TEST(wkv7)
OP_TEST(cross_entropy)
OP_TEST(sumsq)
OP_TEST(adam)
OP_TEST(adam8)
OP_TEST(dequant)
OP_TEST(errors)

static void on_oracle(const char *name, void (*body)(bk *, rng *)) {
    if (!test_selected(name)) return;
    bk R;
    char why[512];
    ck_assert_msg(bk_open(&R, "cpu64", NULL, why, sizeof why) == 0, "cpu64: %s", why);
    rng g = rng_for(name);
    body(&R, &g);
    bk_close(&R);
    arena_free();
}

#define FD_TEST(name)                                                                   \
    START_TEST(test_##name) { on_oracle(#name, body_##name); }                         \
    END_TEST

FD_TEST(fd_act)
FD_TEST(fd_mul)
FD_TEST(fd_act_mul)
FD_TEST(fd_embedding)
FD_TEST(fd_norm)
FD_TEST(fd_norm_gate)
FD_TEST(fd_shift_mix)
FD_TEST(fd_rows)
FD_TEST(fd_wkv6)
FD_TEST(fd_lerp)
FD_TEST(fd_v7_kprep)
FD_TEST(fd_v7_bonus)
FD_TEST(fd_wkv7)
FD_TEST(fd_ce)
FD_TEST(ref_gemm)

int main(void) {
    const char *s = getenv("RWKVPEFT_TEST_SEED");
    g_seed = s && s[0] ? strtoull(s, NULL, 0) : ((unsigned long long)time(NULL) * 2654435761ull) ^ (unsigned long long)getpid();
    const char *v = getenv("RWKVPEFT_OPS_VERBOSE");
    g_verbose = v && v[0] && v[0] != '0';
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("test_backend_ops: seed %llu (set RWKVPEFT_TEST_SEED to repeat)\n", g_seed);

    Suite *su = suite_create("backend_ops");
    TCase *ops = tcase_create("ops");
    tcase_set_timeout(ops, 600);
    tcase_add_test(ops, test_memory);
    tcase_add_test(ops, test_gemm);
    tcase_add_test(ops, test_embedding);
    tcase_add_test(ops, test_norm);
    tcase_add_test(ops, test_shift_mix);
    tcase_add_test(ops, test_act);
    tcase_add_test(ops, test_mul_add);
    tcase_add_test(ops, test_rows);
    tcase_add_test(ops, test_dropout);
    tcase_add_test(ops, test_wkv6);
    tcase_add_test(ops, test_lerp);
    tcase_add_test(ops, test_v7_kprep);
    tcase_add_test(ops, test_v7_bonus);
    tcase_add_test(ops, test_wkv7);
    tcase_add_test(ops, test_cross_entropy);
    tcase_add_test(ops, test_sumsq);
    tcase_add_test(ops, test_adam);
    tcase_add_test(ops, test_adam8);
    tcase_add_test(ops, test_dequant);
    tcase_add_test(ops, test_errors);
    suite_add_tcase(su, ops);

    TCase *fd = tcase_create("finite_differences");
    tcase_set_timeout(fd, 600);
    tcase_add_test(fd, test_fd_act);
    tcase_add_test(fd, test_fd_mul);
    tcase_add_test(fd, test_fd_act_mul);
    tcase_add_test(fd, test_fd_embedding);
    tcase_add_test(fd, test_fd_norm);
    tcase_add_test(fd, test_fd_norm_gate);
    tcase_add_test(fd, test_fd_shift_mix);
    tcase_add_test(fd, test_fd_rows);
    tcase_add_test(fd, test_fd_wkv6);
    tcase_add_test(fd, test_fd_lerp);
    tcase_add_test(fd, test_fd_v7_kprep);
    tcase_add_test(fd, test_fd_v7_bonus);
    tcase_add_test(fd, test_fd_wkv7);
    tcase_add_test(fd, test_fd_ce);
    tcase_add_test(fd, test_ref_gemm);
    suite_add_tcase(su, fd);

    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_ENV);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
