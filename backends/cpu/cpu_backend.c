/* cpu_backend.c — the CPU backend: every op of lib/backend.h over OpenBLAS and OpenMP.
 *
 * This one source is compiled twice (see CMakeLists.txt): with RP_CPU_REAL=float it is the
 * "cpu" backend users train on; with RP_CPU_REAL=double it is "cpu64", the float64
 * reference that the finite-difference gradient tests run the whole model on. Reductions
 * accumulate in double in both builds. Each op's forward and backward stand side by side.
 */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "kernel_common.h"
#include "optim8.h"

#ifndef RP_CPU_REAL
#define RP_CPU_REAL float
#define RP_CPU_IS_DOUBLE 0
#endif
typedef RP_CPU_REAL real;

#define RP_IS_F64 (sizeof(real) == 8)
#define REAL_DTYPE (RP_IS_F64 ? RP_F64 : RP_F32)


/* Work below this many elements runs on one thread (thread start-up dominates). */
#define PAR_MIN 16384

typedef struct cpu_backend {
    rp_backend base;
    void *scratch;
    size_t scratch_size;
} cpu_backend;

static int cpu_fail(rp_backend *be, int code, const char *msg) {
    be->err.code = code;
    strncpy(be->err.msg, msg, sizeof be->err.msg - 1);
    be->err.msg[sizeof be->err.msg - 1] = 0;
    return code;
}

/* Backend-owned scratch memory (grow only). */
static void *cpu_scratch(rp_backend *be, size_t bytes) {
    cpu_backend *cb = (cpu_backend *)be;
    if (bytes > cb->scratch_size) {
        void *p = NULL;
        if (posix_memalign(&p, 64, bytes) != 0) return NULL;
        free(cb->scratch);
        cb->scratch = p;
        cb->scratch_size = bytes;
    }
    return cb->scratch;
}

static int nthreads(rp_backend *be, int64_t work) {
    if (work < PAR_MIN) return 1;
    return be->n_threads > 0 ? be->n_threads : 1;
}

/* ------------------------------------------------------------------------------------ */
/* discovery, lifetime, memory                                                          */
/* ------------------------------------------------------------------------------------ */

static int cpu_probe(char *desc, size_t n) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    snprintf(desc, n, "%s, %ld cores, OpenBLAS", RP_IS_F64 ? "float64 reference" : "float32", cores);
    return 1;
}

static rp_backend *cpu_create(int device, int n_threads, rp_err *err);
static void cpu_destroy(rp_backend *be) {
    if (!be) return;
    free(((cpu_backend *)be)->scratch);
    free(be);
}

static int cpu_alloc(rp_backend *be, void **ptr, size_t bytes) {
    void *p = NULL;
    size_t sz = (bytes + 63) & ~(size_t)63;
    if (sz < bytes || posix_memalign(&p, 64, sz ? sz : 64) != 0) {
        *ptr = NULL;
        char msg[128];
        snprintf(msg, sizeof msg, "cannot allocate %zu bytes of host memory", bytes);
        return cpu_fail(be, RWKVPEFT_E_OUT_OF_MEMORY, msg);
    }
    *ptr = p;
    return 0;
}
static void cpu_free(rp_backend *be, void *p) {
    (void)be;
    free(p);
}
static int cpu_memcpy(rp_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes) memmove(dst, src, bytes);
    return 0;
}
static int cpu_memcpy_2d(rp_backend *be, void *dst, size_t dp, const void *src, size_t sp, size_t rb,
                         size_t rows) {
    (void)be;
    for (size_t r = 0; r < rows; r++) memmove((char *)dst + r * dp, (const char *)src + r * sp, rb);
    return 0;
}
static int cpu_memset_zero(rp_backend *be, void *dst, size_t bytes) {
    (void)be;
    if (bytes) memset(dst, 0, bytes);
    return 0;
}

static int load_f64(double *out, const void *src, rp_dtype t, int64_t i) {
    switch (t) {
    case RP_F32: *out = ((const float *)src)[i]; return 0;
    case RP_F64: *out = ((const double *)src)[i]; return 0;
    case RP_BF16: *out = rp_bf16_to_f32(((const uint16_t *)src)[i]); return 0;
    case RP_F16: *out = rp_f16_to_f32(((const uint16_t *)src)[i]); return 0;
    default: return -1;
    }
}
static int store_f64(void *dst, rp_dtype t, int64_t i, double v) {
    switch (t) {
    case RP_F32: ((float *)dst)[i] = (float)v; return 0;
    case RP_F64: ((double *)dst)[i] = v; return 0;
    case RP_BF16: ((uint16_t *)dst)[i] = rp_f32_to_bf16((float)v); return 0;
    case RP_F16: ((uint16_t *)dst)[i] = rp_f32_to_f16((float)v); return 0;
    default: return -1;
    }
}
static int cpu_convert(rp_backend *be, void *dst, rp_dtype dt, const void *src, rp_dtype st, int64_t n) {
    int ok_types = (dt == RP_F32 || dt == RP_F64 || dt == RP_BF16 || dt == RP_F16) &&
                   (st == RP_F32 || st == RP_F64 || st == RP_BF16 || st == RP_F16);
    if (!ok_types)
        return cpu_fail(be, RWKVPEFT_E_UNSUPPORTED, "convert: unsupported element type");
    if (dt == st) return cpu_memcpy(be, dst, src, (size_t)n * rp_dtype_size(dt));
    for (int64_t i = 0; i < n; i++) {
        double v = 0;
        load_f64(&v, src, st, i);
        store_f64(dst, dt, i, v);
    }
    return 0;
}
static int cpu_synchronize(rp_backend *be) {
    (void)be;
    return 0;
}
static int cpu_memory_info(rp_backend *be, uint64_t *free_b, uint64_t *total_b) {
    (void)be;
    long page = sysconf(_SC_PAGESIZE);
    long avail = sysconf(_SC_AVPHYS_PAGES), total = sysconf(_SC_PHYS_PAGES);
    if (free_b) *free_b = (uint64_t)avail * (uint64_t)page;
    if (total_b) *total_b = (uint64_t)total * (uint64_t)page;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* gemm                                                                                 */
/* ------------------------------------------------------------------------------------ */

static int cpu_gemm(rp_backend *be, int ta, int tb, int m, int n, int k, float alpha, const void *a,
                    rp_dtype tya, int64_t lda, int64_t sa, const void *b, rp_dtype tyb, int64_t ldb,
                    int64_t sb, float beta, void *c, rp_dtype tyc, int64_t ldc, int64_t sc, int batch) {
    if (tya != REAL_DTYPE || tyb != REAL_DTYPE || tyc != REAL_DTYPE)
        return cpu_fail(be, RWKVPEFT_E_UNSUPPORTED, "gemm: operands must be the backend's element type");
    if (m <= 0 || n <= 0) return 0;
    for (int p = 0; p < batch; p++) {
        const real *A = (const real *)a + p * sa;
        const real *B = (const real *)b + p * sb;
        real *C = (real *)c + p * sc;
        if (k <= 0) { /* empty product: C = beta*C */
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) C[i * ldc + j] = beta == 0 ? 0 : beta * C[i * ldc + j];
            continue;
        }
        if (beta == 0) /* BLAS may propagate NaN from C even with beta 0 in some builds */
            for (int i = 0; i < m; i++) memset(C + i * ldc, 0, sizeof(real) * (size_t)n);
#if RP_CPU_IS_DOUBLE
        cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
                    alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
#else
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k,
                    alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
#endif
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* embedding                                                                            */
/* ------------------------------------------------------------------------------------ */

static int cpu_embedding_fwd(rp_backend *be, void *out, const void *table, const int32_t *ids, int64_t n,
                             int C) {
    real *o = (real *)out;
    const real *t = (const real *)table;
#pragma omp parallel for num_threads(nthreads(be, n * C))
    for (int64_t i = 0; i < n; i++) memcpy(o + i * C, t + (int64_t)ids[i] * C, sizeof(real) * (size_t)C);
    return 0;
}

static int cpu_embedding_bwd(rp_backend *be, void *dtable, const void *dout, const int32_t *ids, int64_t n,
                             int C) {
    real *dt = (real *)dtable;
    const real *d = (const real *)dout;
    /* Parallel over channel blocks so repeated ids never race. */
    int nt = nthreads(be, n * C);
#pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num(), T = omp_get_num_threads();
        int c0 = (int)((int64_t)C * tid / T), c1 = (int)((int64_t)C * (tid + 1) / T);
        for (int64_t i = 0; i < n; i++) {
            real *row = dt + (int64_t)ids[i] * C;
            const real *src = d + i * C;
            for (int c = c0; c < c1; c++) row[c] += src[c];
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* normalisation                                                                        */
/* ------------------------------------------------------------------------------------ */

/* σ(x), computed in double */
static inline double sigm_d(double x) { return 1.0 / (1.0 + exp(-x)); }
/* the gate as norm_gate applies it (g, or SiLU(g)) and its slope ∂γ/∂g */
static inline double gate_value(double g, int silu) { return silu ? g * sigm_d(g) : g; }
static inline double gate_slope(double g, int silu) {
    if (!silu) return 1.0;
    double sg = sigm_d(g);
    return sg * (1 + g * (1 - sg));
}

/* y = (x − mean)·rstd·w + b per (row, group), times γ = gate (or SiLU(gate) when silu) when
 * gate is non-NULL. */
static int norm_fwd_any(rp_backend *be, void *y_, void *mean_, void *rstd_, const void *x_, const void *w_,
                        const void *b_, const void *gate_, int silu, int64_t n, int G, int S, float eps) {
    real *y = (real *)y_, *mean = (real *)mean_, *rstd = (real *)rstd_;
    const real *x = (const real *)x_, *w = (const real *)w_, *b = (const real *)b_, *gate = (const real *)gate_;
    int64_t rows = n * G;
#pragma omp parallel for num_threads(nthreads(be, rows * S))
    for (int64_t rg = 0; rg < rows; rg++) {
        int g = (int)(rg % G);
        const real *xr = x + rg * S, *gr = gate ? gate + rg * S : NULL;
        real *yr = y + rg * S;
        double s = 0;
        for (int c = 0; c < S; c++) s += xr[c];
        double mu = s / S, v = 0;
        for (int c = 0; c < S; c++) {
            double d = xr[c] - mu;
            v += d * d;
        }
        double rs = 1.0 / sqrt(v / S + (double)eps);
        mean[rg] = (real)mu;
        rstd[rg] = (real)rs;
        const real *wg = w + (int64_t)g * S, *bg = b ? b + (int64_t)g * S : NULL;
        for (int c = 0; c < S; c++) {
            double o = (xr[c] - mu) * rs * wg[c] + (bg ? bg[c] : 0);
            yr[c] = (real)(gr ? o * gate_value(gr[c], silu) : o);
        }
    }
    return 0;
}

static int cpu_norm_fwd(rp_backend *be, void *y, void *mean, void *rstd, const void *x, const void *w, const void *b,
                        int64_t n, int G, int S, float eps) {
    return norm_fwd_any(be, y, mean, rstd, x, w, b, NULL, 0, n, G, S, eps);
}

static int cpu_norm_gate_fwd(rp_backend *be, void *out, void *mean, void *rstd, const void *x, const void *w,
                             const void *b, const void *gate, int silu_gate, int64_t n, int G, int S, float eps) {
    if (!gate) return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "norm_gate_fwd: no gate");
    return norm_fwd_any(be, out, mean, rstd, x, w, b, gate, silu_gate, n, G, S, eps);
}

/* The backward of norm_fwd_any. Ungated: dx += ∂L/∂x from dy. Gated (gate non-NULL, dy is
 * ∂L/∂out): the norm's own upstream gradient is dy ⊙ γ, dgate = dy ⊙ y ⊙ ∂γ/∂gate (y
 * recomputed), and dx is written. dw, db += in both. */
static int norm_bwd_any(rp_backend *be, void *dx_, void *dgate_, void *dw_, void *db_, const void *dy_, const void *x_,
                        const void *w_, const void *b_, const void *gate_, int silu, const void *mean_,
                        const void *rstd_, int64_t n, int G, int S) {
    real *dx = (real *)dx_, *dgate = (real *)dgate_, *dw = (real *)dw_, *db = (real *)db_;
    const real *dy = (const real *)dy_, *x = (const real *)x_, *w = (const real *)w_, *b = (const real *)b_;
    const real *gate = (const real *)gate_, *mean = (const real *)mean_, *rstd = (const real *)rstd_;
    int64_t rows = n * G, C = (int64_t)G * S;
    int nt = nthreads(be, rows * S);
    double *part = NULL;
    if (dw || db) {
        part = (double *)cpu_scratch(be, sizeof(double) * (size_t)(2 * C * nt));
        if (!part) return cpu_fail(be, RWKVPEFT_E_OUT_OF_MEMORY, "norm_bwd: scratch");
        memset(part, 0, sizeof(double) * (size_t)(2 * C * nt));
    }
#pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num();
        double *pw = part ? part + 2 * C * tid : NULL, *pb = part ? pw + C : NULL;
#pragma omp for
        for (int64_t rg = 0; rg < rows; rg++) {
            int g = (int)(rg % G);
            const real *xr = x + rg * S, *dyr = dy + rg * S, *wg = w + (int64_t)g * S;
            const real *gr = gate ? gate + rg * S : NULL, *bg = b ? b + (int64_t)g * S : NULL;
            real *dxr = dx + rg * S;
            double mu = mean[rg], rs = rstd[rg];
            double s1 = 0, s2 = 0; /* Σ dxhat, Σ dxhat·xhat */
            for (int c = 0; c < S; c++) {
                double xh = (xr[c] - mu) * rs, d = gr ? (double)dyr[c] * gate_value(gr[c], silu) : (double)dyr[c],
                       dxh = d * wg[c];
                if (gr)
                    dgate[rg * S + c] =
                        (real)((double)dyr[c] * (xh * wg[c] + (bg ? bg[c] : 0)) * gate_slope(gr[c], silu));
                s1 += dxh;
                s2 += dxh * xh;
                if (pw) {
                    pw[(int64_t)g * S + c] += d * xh;
                    pb[(int64_t)g * S + c] += d;
                }
            }
            s1 /= S;
            s2 /= S;
            for (int c = 0; c < S; c++) {
                double xh = (xr[c] - mu) * rs, d = gr ? (double)dyr[c] * gate_value(gr[c], silu) : (double)dyr[c],
                       dxh = d * wg[c];
                double v = rs * (dxh - s1 - xh * s2);
                dxr[c] = (real)(gr ? v : dxr[c] + v);
            }
        }
    }
    if (part)
        for (int t = 0; t < nt; t++)
            for (int64_t c = 0; c < C; c++) {
                if (dw) dw[c] += (real)part[2 * C * t + c];
                if (db) db[c] += (real)part[2 * C * t + C + c];
            }
    return 0;
}

static int cpu_norm_bwd(rp_backend *be, void *dx, void *dw, void *db, const void *dy, const void *x, const void *w,
                        const void *mean, const void *rstd, int64_t n, int G, int S) {
    return norm_bwd_any(be, dx, NULL, dw, db, dy, x, w, NULL, NULL, 0, mean, rstd, n, G, S);
}

static int cpu_norm_gate_bwd(rp_backend *be, void *dx, void *dgate, void *dw, void *db, const void *dout, const void *x,
                             const void *w, const void *b, const void *gate, int silu_gate, const void *mean,
                             const void *rstd, int64_t n, int G, int S) {
    if (!gate || !dgate) return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "norm_gate_bwd: no gate or dgate");
    return norm_bwd_any(be, dx, dgate, dw, db, dout, x, w, b, gate, silu_gate, mean, rstd, n, G, S);
}

/* ------------------------------------------------------------------------------------ */
/* token shift + mix                                                                    */
/* ------------------------------------------------------------------------------------ */

/* The coefficient of slot s at (row, c): coef (+ m) for RP_MIX_DELTA, 1 − coef for RP_MIX_CURRENT. */
static inline real mix_coef(const real *coef, const real *m, int form, int64_t ci, int64_t mi) {
    return form == RP_MIX_CURRENT ? 1 - coef[ci] : coef[ci] + (m ? m[mi] : 0);
}

static int cpu_shift_mix_fwd(rp_backend *be, void *out_, const void *x_, const void *xprev_, const void *coef_,
                             const void *m_, int form, int S, int B, int T, int C) {
    real *out = (real *)out_;
    const real *x = (const real *)x_, *xp = (const real *)xprev_, *coef = (const real *)coef_,
               *m = (const real *)m_;
    int64_t n = (int64_t)B * T, slot = n * C;
    if (form != RP_MIX_DELTA && (form != RP_MIX_CURRENT || m))
        return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "shift_mix_fwd: form");
#pragma omp parallel for num_threads(nthreads(be, slot * S))
    for (int64_t row = 0; row < n; row++) {
        int t = (int)(row % T);
        const real *xr = x + row * C;
        const real *pr = t > 0 ? xr - C : (xp ? xp + (row / T) * C : NULL);
        for (int c = 0; c < C; c++) {
            real d = (pr ? pr[c] : 0) - xr[c];
            for (int s = 0; s < S; s++)
                out[s * slot + row * C + c] = xr[c] + d * mix_coef(coef, m, form, (int64_t)s * C + c, s * slot + row * C + c);
        }
    }
    return 0;
}

static int cpu_shift_mix_bwd(rp_backend *be, void *dx_, void *dxprev_, void *dcoef_, void *dm_, const void *dout_,
                             const void *x_, const void *xprev_, const void *coef_, const void *m_, int form, int S,
                             int B, int T, int C) {
    real *dx = (real *)dx_, *dxp = (real *)dxprev_, *dcoef = (real *)dcoef_, *dm = (real *)dm_;
    const real *dout = (const real *)dout_, *x = (const real *)x_, *xp = (const real *)xprev_,
               *coef = (const real *)coef_, *m = (const real *)m_;
    int64_t n = (int64_t)B * T, slot = n * C;
    if (form != RP_MIX_DELTA && (form != RP_MIX_CURRENT || m))
        return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "shift_mix_bwd: form");
    int nt = nthreads(be, slot * S);
    /* scratch: dδ [n,C], then per-thread dcoef partials [nt,S,C] */
    size_t dd_bytes = (sizeof(real) * (size_t)slot + 63) & ~(size_t)63; /* keeps the doubles aligned */
    size_t need = dd_bytes + (dcoef ? sizeof(double) * (size_t)(nt * S * C) : 0);
    char *scr = (char *)cpu_scratch(be, need);
    if (!scr) return cpu_fail(be, RWKVPEFT_E_OUT_OF_MEMORY, "shift_mix_bwd: scratch");
    real *dd = (real *)scr;
    double *part = dcoef ? (double *)(scr + dd_bytes) : NULL;
    if (part) memset(part, 0, sizeof(double) * (size_t)(nt * S * C));
#pragma omp parallel num_threads(nt)
    {
        double *pc = part ? part + (int64_t)omp_get_thread_num() * S * C : NULL;
#pragma omp for
        for (int64_t row = 0; row < n; row++) {
            int t = (int)(row % T);
            const real *xr = x + row * C;
            const real *pr = t > 0 ? xr - C : (xp ? xp + (row / T) * C : NULL);
            for (int c = 0; c < C; c++) {
                real d = (pr ? pr[c] : 0) - xr[c];
                double gd = 0;
                for (int s = 0; s < S; s++) {
                    int64_t idx = s * slot + row * C + c;
                    real g = dout[idx];
                    real cm = mix_coef(coef, m, form, (int64_t)s * C + c, idx);
                    gd += (double)g * cm;
                    if (pc) pc[(int64_t)s * C + c] += form == RP_MIX_CURRENT ? -(double)g * d : (double)g * d;
                    if (dm) dm[idx] = g * d;
                }
                dd[row * C + c] = (real)gd;
            }
        }
        /* x_t gets Σ_s dout (direct term) − dδ_t, and + dδ_{t+1} through the shift. */
#pragma omp for
        for (int64_t row = 0; row < n; row++) {
            int t = (int)(row % T);
            for (int c = 0; c < C; c++) {
                double g = -(double)dd[row * C + c];
                for (int s = 0; s < S; s++) g += dout[s * slot + row * C + c];
                if (t + 1 < T) g += dd[(row + 1) * C + c];
                dx[row * C + c] += (real)g;
            }
        }
    }
    if (dxp)
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++) dxp[(int64_t)b * C + c] += dd[(int64_t)b * T * C + c];
    if (dcoef)
        for (int t = 0; t < nt; t++)
            for (int64_t i = 0; i < (int64_t)S * C; i++) dcoef[i] += (real)part[(int64_t)t * S * C + i];
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* element-wise                                                                         */
/* ------------------------------------------------------------------------------------ */

/* exp in the backend's own precision (expf for float32: vectorisable and exact enough) */
#if RP_CPU_IS_DOUBLE
#define EXPR(x) exp(x)
#else
#define EXPR(x) expf(x)
#endif

static inline real sigm(real x) { return (real)sigm_d(x); }
/* log(1 + e^x) without overflow */
static inline double softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

static int cpu_act_fwd(rp_backend *be, int kind, void *y_, const void *x_, int64_t n) {
    real *y = (real *)y_;
    const real *x = (const real *)x_;
    if (kind < RP_ACT_TANH || kind > RP_ACT_SOFTCLAMP) return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "act_fwd: kind");
#pragma omp parallel for num_threads(nthreads(be, n))
    for (int64_t i = 0; i < n; i++) {
        real v = x[i];
        switch (kind) {
        case RP_ACT_TANH: y[i] = (real)tanh((double)v); break;
        case RP_ACT_SIGMOID: y[i] = sigm(v); break;
        case RP_ACT_SILU: y[i] = v * sigm(v); break;
        case RP_ACT_SOFTCLAMP: y[i] = (real)(-softplus(-(double)v) - 0.5); break;
        default: y[i] = v > 0 ? v * v : 0; break;
        }
    }
    return 0;
}

static int cpu_act_bwd(rp_backend *be, int kind, void *dx_, const void *dy_, const void *x_, const void *y_,
                       int64_t n) {
    real *dx = (real *)dx_;
    const real *dy = (const real *)dy_, *x = (const real *)x_, *y = (const real *)y_;
    if (kind < RP_ACT_TANH || kind > RP_ACT_SOFTCLAMP) return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "act_bwd: kind");
    if ((kind == RP_ACT_TANH || kind == RP_ACT_SIGMOID) ? !y : kind == RP_ACT_RELU_SQ ? !x && !y : !x)
        return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "act_bwd: missing x or y");
#pragma omp parallel for num_threads(nthreads(be, n))
    for (int64_t i = 0; i < n; i++) {
        switch (kind) {
        case RP_ACT_TANH: dx[i] = dy[i] * (1 - y[i] * y[i]); break;
        case RP_ACT_SIGMOID: dx[i] = dy[i] * y[i] * (1 - y[i]); break;
        case RP_ACT_SILU: {
            real s = sigm(x[i]);
            dx[i] = dy[i] * s * (1 + x[i] * (1 - s));
            break;
        }
        case RP_ACT_SOFTCLAMP: dx[i] = dy[i] * sigm(-x[i]); break;
        default: /* relu²: from x, or from y = relu(x)² (the training graph keeps only y) */
            dx[i] = x ? (x[i] > 0 ? dy[i] * 2 * x[i] : 0) : dy[i] * 2 * (real)sqrt((double)(y[i] > 0 ? y[i] : 0));
            break;
        }
    }
    return 0;
}

/* f(v) and f'(v) of an activation kind, from its input */
static inline double act_value(int kind, double v) {
    switch (kind) {
    case RP_ACT_TANH: return tanh(v);
    case RP_ACT_SIGMOID: return sigm_d(v);
    case RP_ACT_SILU: return v * sigm_d(v);
    case RP_ACT_SOFTCLAMP: return -softplus(-v) - 0.5;
    default: return v > 0 ? v * v : 0;
    }
}
static inline double act_slope(int kind, double v) {
    switch (kind) {
    case RP_ACT_TANH: {
        double t = tanh(v);
        return 1 - t * t;
    }
    case RP_ACT_SIGMOID: {
        double s = sigm_d(v);
        return s * (1 - s);
    }
    case RP_ACT_SILU: return gate_slope(v, 1);
    case RP_ACT_SOFTCLAMP: return sigm_d(-v);
    default: return v > 0 ? 2 * v : 0;
    }
}

static int cpu_act_mul_fwd(rp_backend *be, int kind, void *y_, const void *a_, const void *b_, const void *r_,
                           int64_t n) {
    real *y = (real *)y_;
    const real *a = (const real *)a_, *b = (const real *)b_, *r = (const real *)r_;
    if (kind < RP_ACT_TANH || kind > RP_ACT_SOFTCLAMP)
        return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "act_mul_fwd: kind");
#pragma omp parallel for num_threads(nthreads(be, n))
    for (int64_t i = 0; i < n; i++) y[i] = (real)(act_value(kind, a[i]) * b[i] + (r ? (double)r[i] : 0.0));
    return 0;
}

static int cpu_act_mul_bwd(rp_backend *be, int kind, void *da_, void *db_, const void *dy_, const void *a_,
                           const void *b_, int64_t n) {
    real *da = (real *)da_, *db = (real *)db_;
    const real *dy = (const real *)dy_, *a = (const real *)a_, *b = (const real *)b_;
    if (kind < RP_ACT_TANH || kind > RP_ACT_SOFTCLAMP)
        return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "act_mul_bwd: kind");
#pragma omp parallel for num_threads(nthreads(be, n))
    for (int64_t i = 0; i < n; i++) {
        double g = dy[i], v = a[i];
        double dav = da ? g * b[i] * act_slope(kind, v) : 0, dbv = db ? g * act_value(kind, v) : 0;
        if (da) da[i] = (real)dav;
        if (db) db[i] = (real)dbv;
    }
    return 0;
}

static int cpu_mul_fwd(rp_backend *be, void *y_, const void *a_, const void *b_, int64_t n) {
    real *y = (real *)y_;
    const real *a = (const real *)a_, *b = (const real *)b_;
#pragma omp parallel for num_threads(nthreads(be, n))
    for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i];
    return 0;
}

static int cpu_mul_bwd(rp_backend *be, void *da_, void *db_, const void *dy_, const void *a_, const void *b_,
                       int64_t n) {
    real *da = (real *)da_, *db = (real *)db_;
    const real *dy = (const real *)dy_, *a = (const real *)a_, *b = (const real *)b_;
#pragma omp parallel for num_threads(nthreads(be, n))
    for (int64_t i = 0; i < n; i++) {
        if (da) da[i] += dy[i] * b[i];
        if (db) db[i] += dy[i] * a[i];
    }
    return 0;
}

static int cpu_lerp_fwd(rp_backend *be, void *y_, const void *a_, const void *b_, const void *t_, int64_t n) {
    real *y = (real *)y_;
    const real *a = (const real *)a_, *b = (const real *)b_, *t = (const real *)t_;
#pragma omp parallel for num_threads(nthreads(be, n))
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + (b[i] - a[i]) * t[i];
    return 0;
}

static int cpu_lerp_bwd(rp_backend *be, void *da_, void *db_, void *dt_, const void *dy_, const void *a_,
                        const void *b_, const void *t_, int64_t n) {
    real *da = (real *)da_, *db = (real *)db_, *dt = (real *)dt_;
    const real *dy = (const real *)dy_, *a = (const real *)a_, *b = (const real *)b_, *t = (const real *)t_;
#pragma omp parallel for num_threads(nthreads(be, n))
    for (int64_t i = 0; i < n; i++) {
        if (da) da[i] += dy[i] * (1 - t[i]);
        if (db) db[i] += dy[i] * t[i];
        if (dt) dt[i] = dy[i] * (b[i] - a[i]);
    }
    return 0;
}

static int cpu_add(rp_backend *be, void *y_, const void *x_, float alpha, int64_t n) {
    real *y = (real *)y_;
    const real *x = (const real *)x_;
#pragma omp parallel for num_threads(nthreads(be, n))
    for (int64_t i = 0; i < n; i++) y[i] += (real)alpha * x[i];
    return 0;
}

static int cpu_broadcast_rows(rp_backend *be, void *y_, const void *v_, int64_t n, int C, int accumulate) {
    real *y = (real *)y_;
    const real *v = (const real *)v_;
#pragma omp parallel for num_threads(nthreads(be, n * C))
    for (int64_t r = 0; r < n; r++)
        for (int c = 0; c < C; c++) y[r * C + c] = (accumulate ? y[r * C + c] : 0) + v[c];
    return 0;
}

static int cpu_sum_rows(rp_backend *be, void *dv_, const void *dy_, int64_t n, int C) {
    real *dv = (real *)dv_;
    const real *dy = (const real *)dy_;
    int nt = nthreads(be, n * C);
#pragma omp parallel num_threads(nt)
    {
        int tid = omp_get_thread_num(), TT = omp_get_num_threads();
        int c0 = (int)((int64_t)C * tid / TT), c1 = (int)((int64_t)C * (tid + 1) / TT);
        for (int c = c0; c < c1; c++) {
            double s = 0;
            for (int64_t r = 0; r < n; r++) s += dy[r * C + c];
            dv[c] += (real)s;
        }
    }
    return 0;
}

static int cpu_dropout(rp_backend *be, void *y_, const void *x_, int64_t n, float p, uint64_t seed) {
    real *y = (real *)y_;
    const real *x = (const real *)x_;
    if (!(p >= 0 && p < 1)) return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "dropout: p must be in [0,1)");
    real scale = (real)(1.0 / (1.0 - (double)p));
#pragma omp parallel for num_threads(nthreads(be, n))
    for (int64_t i = 0; i < n; i++) y[i] = rp_dropout_keep(seed, (uint64_t)i, p) ? x[i] * scale : 0;
    return 0;
}

/* The initial WKV state of sequence-head bh (b·H + h) in s0 or gs0: [H,N,N] shared by the
 * batch, or [B,H,N,N]. */
static inline int64_t state_off(int shared, int bh, int H, int64_t NN) { return (int64_t)(shared ? bh % H : bh) * NN; }

/* S = that initial state, or zero when there is none (s0 NULL). */
static void load_state(real *S, const real *s0, int shared, int bh, int H, int64_t NN) {
    if (s0)
        memcpy(S, s0 + state_off(shared, bh, H, NN), sizeof(real) * (size_t)NN);
    else
        memset(S, 0, sizeof(real) * (size_t)NN);
}

/* ------------------------------------------------------------------------------------ */
/* WKV6                                                                                 */
/* ------------------------------------------------------------------------------------ */

static int cpu_wkv6_fwd(rp_backend *be, void *y_, void *sout_, const void *r_, const void *k_, const void *v_,
                        const void *w_, const void *u_, const void *s0_, int s0_shared, int B, int T, int H,
                        int N) {
    real *y = (real *)y_, *sout = (real *)sout_;
    const real *r = (const real *)r_, *k = (const real *)k_, *v = (const real *)v_, *w = (const real *)w_,
               *u = (const real *)u_, *s0 = (const real *)s0_;
    int64_t C = (int64_t)H * N, NN = (int64_t)N * N;
    int nt = be->n_threads > 0 ? be->n_threads : 1;
    real *scr = (real *)cpu_scratch(be, sizeof(real) * (size_t)(nt * (NN + N)));
    if (!scr) return cpu_fail(be, RWKVPEFT_E_OUT_OF_MEMORY, "wkv6_fwd: scratch");
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        real *S = scr + (int64_t)omp_get_thread_num() * (NN + N), *d = S + NN;
        load_state(S, s0, s0_shared, bh, H, NN);
        const real *uh = u + (int64_t)h * N;
        for (int t = 0; t < T; t++) {
            int64_t o = ((int64_t)b * T + t) * C + (int64_t)h * N;
            const real *rt = r + o, *kt = k + o, *vt = v + o, *wt = w + o;
            double ruk = 0;
            for (int i = 0; i < N; i++) {
                ruk += (double)rt[i] * uh[i] * kt[i];
                d[i] = (real)exp(-exp((double)wt[i]));
            }
            for (int j = 0; j < N; j++) {
                real *Sj = S + (int64_t)j * N;
                double acc = ruk * vt[j];
                for (int i = 0; i < N; i++) acc += (double)rt[i] * Sj[i];
                y[o + j] = (real)acc;
                real vj = vt[j];
                for (int i = 0; i < N; i++) Sj[i] = d[i] * Sj[i] + kt[i] * vj;
            }
        }
        if (sout) memcpy(sout + (int64_t)bh * NN, S, sizeof(real) * (size_t)NN);
    }
    return 0;
}

/* Backward by reverse sweep over time with dS = ∂L/∂S (state after the current step):
 *   gr_t[i] = Σ_j gy[j]·S_t[j][i] + u[i]·k[i]·(gy·v)
 *   gk_t[i] = Σ_j dS[j][i]·v[j] + u[i]·r[i]·(gy·v)
 *   gv_t[j] = Σ_i dS[j][i]·k[i] + (Σ_i r[i]u[i]k[i])·gy[j]
 *   ∂L/∂d_t[i] = Σ_j dS[j][i]·S_t[j][i];   gw = that·d·(−exp(w))
 *   dS ← dS·diag(d) + gy ⊗ r
 * S_t (state before step t) is rebuilt per segment of WKV_SEG steps from checkpoints saved
 * by a forward re-run, so memory is (T/WKV_SEG + WKV_SEG)·N² per thread. */
#define WKV_SEG 16
static int cpu_wkv6_bwd(rp_backend *be, void *gr_, void *gk_, void *gv_, void *gw_, void *gu_, void *gs0_,
                        const void *gy_, const void *gsout_, const void *r_, const void *k_, const void *v_,
                        const void *w_, const void *u_, const void *s0_, int s0_shared, int B, int T, int H,
                        int N, void *scratch, size_t scratch_bytes) {
    (void)scratch; /* the CPU algorithm's temporaries are per thread (cpu_scratch) */
    (void)scratch_bytes;
    real *gr = (real *)gr_, *gk = (real *)gk_, *gv = (real *)gv_, *gw = (real *)gw_, *gu = (real *)gu_,
         *gs0 = (real *)gs0_;
    const real *gy = (const real *)gy_, *gsout = (const real *)gsout_, *r = (const real *)r_,
               *k = (const real *)k_, *v = (const real *)v_, *w = (const real *)w_, *u = (const real *)u_,
               *s0 = (const real *)s0_;
    int64_t C = (int64_t)H * N, NN = (int64_t)N * N;
    int ncp = (T + WKV_SEG - 1) / WKV_SEG;
    int nt = be->n_threads > 0 ? be->n_threads : 1;
    /* per thread: checkpoints ncp·NN, segment states WKV_SEG·NN, dS NN, d N, gu partial N, gs0 partial NN */
    int64_t per = (int64_t)(ncp + WKV_SEG + 1) * NN + 2 * N;
    int64_t per_acc = (int64_t)N + NN; /* double accumulators: gu, gs0 per (b,h) work item */
    size_t state_bytes = (sizeof(real) * (size_t)(nt * per) + 63) & ~(size_t)63; /* keeps the doubles aligned */
    size_t bytes = state_bytes + sizeof(double) * (size_t)(B * H * per_acc);
    char *scr = (char *)cpu_scratch(be, bytes);
    if (!scr) return cpu_fail(be, RWKVPEFT_E_OUT_OF_MEMORY, "wkv6_bwd: scratch");
    double *acc_all = (double *)(scr + state_bytes);
    memset(acc_all, 0, sizeof(double) * (size_t)(B * H * per_acc));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        real *base = (real *)scr + (int64_t)omp_get_thread_num() * per;
        real *cps = base, *seg = cps + (int64_t)ncp * NN, *dS = seg + (int64_t)WKV_SEG * NN;
        real *d = dS + NN, *tmp = d + N;
        double *gu_acc = acc_all + (int64_t)bh * per_acc, *gs_acc = gu_acc + N;
        (void)tmp;
        const real *uh = u + (int64_t)h * N;
        /* forward re-run saving the state at the start of each segment */
        real *S = seg; /* use seg[0] as running state */
        load_state(S, s0, s0_shared, bh, H, NN);
        for (int t = 0; t < T; t++) {
            if (t % WKV_SEG == 0) memcpy(cps + (int64_t)(t / WKV_SEG) * NN, S, sizeof(real) * (size_t)NN);
            int64_t o = ((int64_t)b * T + t) * C + (int64_t)h * N;
            for (int i = 0; i < N; i++) d[i] = (real)exp(-exp((double)w[o + i]));
            for (int j = 0; j < N; j++) {
                real *Sj = S + (int64_t)j * N, vj = v[o + j];
                for (int i = 0; i < N; i++) Sj[i] = d[i] * Sj[i] + k[o + i] * vj;
            }
        }
        load_state(dS, gsout, 0, bh, H, NN); /* ∂L/∂(final state), or zero */
        for (int sg = ncp - 1; sg >= 0; sg--) {
            int t0 = sg * WKV_SEG, t1 = t0 + WKV_SEG < T ? t0 + WKV_SEG : T;
            memcpy(seg, cps + (int64_t)sg * NN, sizeof(real) * (size_t)NN);
            for (int t = t0; t + 1 < t1; t++) { /* seg[t-t0] = S_t; build S_{t+1} */
                int64_t o = ((int64_t)b * T + t) * C + (int64_t)h * N;
                real *Sa = seg + (int64_t)(t - t0) * NN, *Sb = Sa + NN;
                for (int i = 0; i < N; i++) d[i] = (real)exp(-exp((double)w[o + i]));
                for (int j = 0; j < N; j++)
                    for (int i = 0; i < N; i++)
                        Sb[(int64_t)j * N + i] = d[i] * Sa[(int64_t)j * N + i] + k[o + i] * v[o + j];
            }
            for (int t = t1 - 1; t >= t0; t--) {
                int64_t o = ((int64_t)b * T + t) * C + (int64_t)h * N;
                const real *St = seg + (int64_t)(t - t0) * NN;
                const real *rt = r + o, *kt = k + o, *vt = v + o, *gyt = gy + o;
                double gyv = 0, ruk = 0;
                for (int j = 0; j < N; j++) gyv += (double)gyt[j] * vt[j];
                for (int i = 0; i < N; i++) {
                    ruk += (double)rt[i] * uh[i] * kt[i];
                    d[i] = (real)exp(-exp((double)w[o + i]));
                }
                /* gr, gk, gd over i (loop j inside, reading rows of S and dS) */
                for (int i = 0; i < N; i++) {
                    double a_r = 0, a_k = 0, a_d = 0;
                    for (int j = 0; j < N; j++) {
                        a_r += (double)gyt[j] * St[(int64_t)j * N + i];
                        a_k += (double)dS[(int64_t)j * N + i] * vt[j];
                        a_d += (double)dS[(int64_t)j * N + i] * St[(int64_t)j * N + i];
                    }
                    gr[o + i] = (real)(a_r + uh[i] * kt[i] * gyv);
                    gk[o + i] = (real)(a_k + uh[i] * rt[i] * gyv);
                    gw[o + i] = (real)(a_d * d[i] * -exp((double)w[o + i]));
                    gu_acc[i] += (double)rt[i] * kt[i] * gyv;
                }
                for (int j = 0; j < N; j++) {
                    const real *dSj = dS + (int64_t)j * N;
                    double a_v = 0;
                    for (int i = 0; i < N; i++) a_v += (double)dSj[i] * kt[i];
                    gv[o + j] = (real)(a_v + ruk * gyt[j]);
                }
                for (int j = 0; j < N; j++) {
                    real *dSj = dS + (int64_t)j * N, g = gyt[j];
                    for (int i = 0; i < N; i++) dSj[i] = dSj[i] * d[i] + g * rt[i];
                }
            }
        }
        if (gs0)
            for (int64_t q = 0; q < NN; q++) gs_acc[q] = dS[q];
    }
    /* reduce per-(b,h) accumulators in a fixed order (deterministic) */
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        double *gu_acc = acc_all + (int64_t)bh * per_acc, *gs_acc = gu_acc + N;
        (void)b;
        if (gu)
            for (int i = 0; i < N; i++) gu[(int64_t)h * N + i] += (real)gu_acc[i];
        if (gs0) {
            real *dst = gs0 + state_off(s0_shared, bh, H, NN);
            for (int64_t q = 0; q < NN; q++) dst[q] += (real)gs_acc[q];
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* WKV7                                                                                 */
/* ------------------------------------------------------------------------------------ */

static void wkv7_step(real *S, const real *w, const real *k, const real *v, const real *a, const real *b, real *d,
                      real *sa, int N) {
    for (int i = 0; i < N; i++) d[i] = (real)exp(-exp((double)w[i]));
    for (int j = 0; j < N; j++) {
        real *Sj = S + (int64_t)j * N;
        double acc = 0;
        for (int i = 0; i < N; i++) acc += (double)a[i] * Sj[i];
        sa[j] = (real)acc;
        for (int i = 0; i < N; i++) Sj[i] = Sj[i] * d[i] + sa[j] * b[i] + v[j] * k[i];
    }
}

static int cpu_wkv7_fwd(rp_backend *be, void *y_, void *sout_, const void *r_, const void *w_, const void *k_,
                        const void *v_, const void *a_, const void *b_, const void *s0_, int s0_shared, int B, int T,
                        int H, int N) {
    real *y = (real *)y_, *sout = (real *)sout_;
    const real *r = (const real *)r_, *w = (const real *)w_, *k = (const real *)k_, *v = (const real *)v_,
               *a = (const real *)a_, *b = (const real *)b_, *s0 = (const real *)s0_;
    int64_t C = (int64_t)H * N, NN = (int64_t)N * N;
    int nt = be->n_threads > 0 ? be->n_threads : 1;
    real *scr = (real *)cpu_scratch(be, sizeof(real) * (size_t)(nt * (NN + 2 * N)));
    if (!scr) return cpu_fail(be, RWKVPEFT_E_OUT_OF_MEMORY, "wkv7_fwd: scratch");
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        int bb = bh / H, h = bh % H;
        real *S = scr + (int64_t)omp_get_thread_num() * (NN + 2 * N), *d = S + NN, *sa = d + N;
        load_state(S, s0, s0_shared, bh, H, NN);
        for (int t = 0; t < T; t++) {
            int64_t o = ((int64_t)bb * T + t) * C + (int64_t)h * N;
            wkv7_step(S, w + o, k + o, v + o, a + o, b + o, d, sa, N);
            for (int j = 0; j < N; j++) {
                double acc = 0;
                for (int i = 0; i < N; i++) acc += (double)S[(int64_t)j * N + i] * r[o + i];
                y[o + j] = (real)acc;
            }
        }
        if (sout) memcpy(sout + (int64_t)bh * NN, S, sizeof(real) * (size_t)NN);
    }
    return 0;
}

/* Reverse sweep with dS = ∂L/∂(state after step t); states are rebuilt per segment of
 * WKV_SEG steps from checkpoints of a forward re-run (no backstepping division by d):
 *   gr_t[i] = Σ_j S_t[j][i]·gy_t[j];  dS += gy_t ⊗ r_t
 *   gw: Σ_j dS[j][i]·S_{t−1}[j][i]·d_t[i]·(−exp(w_t[i]));  gk_t[i] = Σ_j dS[j][i]·v_t[j]
 *   gv_t[j] = Σ_i dS[j][i]·k_t[i];  dsa[j] = Σ_i dS[j][i]·b_t[i];  gb_t[i] = Σ_j dS[j][i]·sa_t[j]
 *   ga_t[i] = Σ_j S_{t−1}[j][i]·dsa[j];  dS ← dS·diag(d_t) + dsa ⊗ a_t */
static int cpu_wkv7_bwd(rp_backend *be, void *gr_, void *gw_, void *gk_, void *gv_, void *ga_, void *gb_, void *gs0_,
                        const void *gy_, const void *gsout_, const void *r_, const void *w_, const void *k_,
                        const void *v_, const void *a_, const void *b_, const void *s0_, int s0_shared, int B, int T,
                        int H, int N) {
    real *gr = (real *)gr_, *gw = (real *)gw_, *gk = (real *)gk_, *gv = (real *)gv_, *ga = (real *)ga_,
         *gb = (real *)gb_, *gs0 = (real *)gs0_;
    const real *gy = (const real *)gy_, *gsout = (const real *)gsout_, *r = (const real *)r_, *w = (const real *)w_,
               *k = (const real *)k_, *v = (const real *)v_, *a = (const real *)a_, *b = (const real *)b_,
               *s0 = (const real *)s0_;
    int64_t C = (int64_t)H * N, NN = (int64_t)N * N;
    int ncp = (T + WKV_SEG - 1) / WKV_SEG;
    int nt = be->n_threads > 0 ? be->n_threads : 1;
    /* per thread: checkpoints ncp·NN, segment states (WKV_SEG+1)·NN, dS NN, d, sa, dsa */
    int64_t per = (int64_t)(ncp + WKV_SEG + 2) * NN + 3 * N;
    int64_t per_round = (per + 7) & ~(int64_t)7;
    size_t gs_bytes = (size_t)(gs0 ? B * H : 0) * (size_t)NN * sizeof(double);
    char *scr = (char *)cpu_scratch(be, sizeof(real) * (size_t)(nt * per_round) + gs_bytes + 64);
    if (!scr) return cpu_fail(be, RWKVPEFT_E_OUT_OF_MEMORY, "wkv7_bwd: scratch");
    double *gs_all = (double *)(scr + ((sizeof(real) * (size_t)(nt * per_round) + 63) & ~(size_t)63));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        int bb = bh / H, h = bh % H;
        real *cps = (real *)scr + (int64_t)omp_get_thread_num() * per_round;
        real *seg = cps + (int64_t)ncp * NN, *dS = seg + (int64_t)(WKV_SEG + 1) * NN;
        real *d = dS + NN, *sa = d + N, *dsa = sa + N;
        real *S = seg;
        load_state(S, s0, s0_shared, bh, H, NN);
        for (int t = 0; t < T; t++) {
            if (t % WKV_SEG == 0) memcpy(cps + (int64_t)(t / WKV_SEG) * NN, S, sizeof(real) * (size_t)NN);
            int64_t o = ((int64_t)bb * T + t) * C + (int64_t)h * N;
            wkv7_step(S, w + o, k + o, v + o, a + o, b + o, d, sa, N);
        }
        load_state(dS, gsout, 0, bh, H, NN); /* ∂L/∂(final state), or zero */
        for (int sg = ncp - 1; sg >= 0; sg--) {
            int t0 = sg * WKV_SEG, t1 = t0 + WKV_SEG < T ? t0 + WKV_SEG : T;
            memcpy(seg, cps + (int64_t)sg * NN, sizeof(real) * (size_t)NN);
            for (int t = t0; t < t1; t++) { /* seg[t-t0] = state before step t; seg[t1-t0] = after t1-1 */
                int64_t o = ((int64_t)bb * T + t) * C + (int64_t)h * N;
                real *Sn = seg + (int64_t)(t - t0 + 1) * NN;
                memcpy(Sn, Sn - NN, sizeof(real) * (size_t)NN);
                wkv7_step(Sn, w + o, k + o, v + o, a + o, b + o, d, sa, N);
            }
            for (int t = t1 - 1; t >= t0; t--) {
                int64_t o = ((int64_t)bb * T + t) * C + (int64_t)h * N;
                const real *Sp = seg + (int64_t)(t - t0) * NN, *Sc = Sp + NN;
                const real *rt = r + o, *kt = k + o, *vt = v + o, *at = a + o, *bt = b + o, *gyt = gy + o;
                for (int i = 0; i < N; i++) {
                    double acc = 0;
                    for (int j = 0; j < N; j++) acc += (double)Sc[(int64_t)j * N + i] * gyt[j];
                    gr[o + i] = (real)acc;
                    d[i] = (real)exp(-exp((double)w[o + i]));
                }
                for (int j = 0; j < N; j++) {
                    real *dSj = dS + (int64_t)j * N;
                    double acc = 0;
                    for (int i = 0; i < N; i++) {
                        dSj[i] += gyt[j] * rt[i];
                        acc += (double)at[i] * Sp[(int64_t)j * N + i];
                    }
                    sa[j] = (real)acc;
                }
                for (int i = 0; i < N; i++) {
                    double ad = 0, ak = 0, ab = 0;
                    for (int j = 0; j < N; j++) {
                        double ds = dS[(int64_t)j * N + i];
                        ad += ds * Sp[(int64_t)j * N + i];
                        ak += ds * vt[j];
                        ab += ds * sa[j];
                    }
                    gw[o + i] = (real)(ad * d[i] * -exp((double)w[o + i]));
                    gk[o + i] = (real)ak;
                    gb[o + i] = (real)ab;
                }
                for (int j = 0; j < N; j++) {
                    const real *dSj = dS + (int64_t)j * N;
                    double av = 0, as = 0;
                    for (int i = 0; i < N; i++) {
                        av += (double)dSj[i] * kt[i];
                        as += (double)dSj[i] * bt[i];
                    }
                    gv[o + j] = (real)av;
                    dsa[j] = (real)as;
                }
                for (int i = 0; i < N; i++) {
                    double acc = 0;
                    for (int j = 0; j < N; j++) acc += (double)Sp[(int64_t)j * N + i] * dsa[j];
                    ga[o + i] = (real)acc;
                }
                for (int j = 0; j < N; j++) {
                    real *dSj = dS + (int64_t)j * N;
                    for (int i = 0; i < N; i++) dSj[i] = dSj[i] * d[i] + dsa[j] * at[i];
                }
            }
        }
        if (gs0)
            for (int64_t q = 0; q < NN; q++) gs_all[(int64_t)bh * NN + q] = dS[q];
    }
    if (gs0) /* fixed-order reduction over the batch */
        for (int bh = 0; bh < B * H; bh++) {
            real *dst = gs0 + state_off(s0_shared, bh, H, NN);
            for (int64_t q = 0; q < NN; q++) dst[q] += (real)gs_all[(int64_t)bh * NN + q];
        }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* RWKV-7 key preparation and bonus                                                     */
/* ------------------------------------------------------------------------------------ */

#define V7_NORM_FLOOR 1e-12

/* Per-thread double partials [nt, nvec·C] for parameter gradients; NULL when none is wanted. */
static double *param_partials(rp_backend *be, int nt, int64_t len) {
    double *part = (double *)cpu_scratch(be, sizeof(double) * (size_t)(nt * len));
    if (part) memset(part, 0, sizeof(double) * (size_t)(nt * len));
    return part;
}

static void add_partials(real *dst, const double *part, int nt, int64_t len) {
    for (int t = 0; t < nt; t++)
        for (int64_t i = 0; i < len; i++) dst[i] += (real)part[(int64_t)t * len + i];
}

static int cpu_v7_kprep_fwd(rp_backend *be, void *kout_, void *wa_, void *wb_, const void *k_, const void *a_,
                            const void *kk_, const void *ka_, int64_t n, int H, int N) {
    real *kout = (real *)kout_, *wa = (real *)wa_, *wb = (real *)wb_;
    const real *k = (const real *)k_, *a = (const real *)a_, *k_k = (const real *)kk_, *k_a = (const real *)ka_;
    int64_t C = (int64_t)H * N;
#pragma omp parallel for num_threads(nthreads(be, n * C))
    for (int64_t row = 0; row < n; row++)
        for (int h = 0; h < H; h++) {
            int64_t o = row * C + (int64_t)h * N, c0 = (int64_t)h * N;
            double ss = 0;
            for (int i = 0; i < N; i++) {
                double u = (double)k[o + i] * k_k[c0 + i];
                ss += u * u;
            }
            double nrm = sqrt(ss), inv = 1.0 / (nrm > V7_NORM_FLOOR ? nrm : V7_NORM_FLOOR);
            for (int i = 0; i < N; i++) {
                double kk = (double)k[o + i] * k_k[c0 + i] * inv;
                wa[o + i] = (real)-kk;
                wb[o + i] = (real)(kk * a[o + i]);
                kout[o + i] = (real)((double)k[o + i] * (1.0 + ((double)a[o + i] - 1.0) * k_a[c0 + i]));
            }
        }
    return 0;
}

/* With u = k⊙k_k, ν = max(‖u‖, floor), kk = u/ν:
 *   dkk = −dwa + dwb⊙a;  du = (dkk − kk·(kk·dkk))/ν  (ν = ‖u‖), or dkk/floor (below the floor)
 *   dk = du⊙k_k + dk_out⊙(1 + (a−1)⊙k_a);  da = dwb⊙kk + dk_out⊙k⊙k_a
 *   dk_k += Σ du⊙k;  dk_a += Σ dk_out⊙k⊙(a−1) */
static int cpu_v7_kprep_bwd(rp_backend *be, void *dk_, void *da_, void *dkk_, void *dka_, const void *dkout_,
                            const void *dwa_, const void *dwb_, const void *k_, const void *a_, const void *kk_,
                            const void *ka_, int64_t n, int H, int N) {
    real *dk = (real *)dk_, *da = (real *)da_, *dk_k = (real *)dkk_, *dk_a = (real *)dka_;
    const real *dkout = (const real *)dkout_, *dwa = (const real *)dwa_, *dwb = (const real *)dwb_,
               *k = (const real *)k_, *a = (const real *)a_, *k_k = (const real *)kk_, *k_a = (const real *)ka_;
    int64_t C = (int64_t)H * N;
    int nt = nthreads(be, n * C);
    double *part = (dk_k || dk_a) ? param_partials(be, nt, 2 * C) : NULL;
    if ((dk_k || dk_a) && !part) return cpu_fail(be, RWKVPEFT_E_OUT_OF_MEMORY, "v7_kprep_bwd: scratch");
#pragma omp parallel num_threads(nt)
    {
        double *pkk = part ? part + (int64_t)omp_get_thread_num() * 2 * C : NULL, *pka = pkk ? pkk + C : NULL;
#pragma omp for
        for (int64_t row = 0; row < n; row++)
            for (int h = 0; h < H; h++) {
                int64_t o = row * C + (int64_t)h * N, c0 = (int64_t)h * N;
                double ss = 0;
                for (int i = 0; i < N; i++) {
                    double u = (double)k[o + i] * k_k[c0 + i];
                    ss += u * u;
                }
                double nrm = sqrt(ss);
                int floored = !(nrm > V7_NORM_FLOOR);
                double nu = floored ? V7_NORM_FLOOR : nrm, dot = 0;
                for (int i = 0; i < N; i++) {
                    double kk = (double)k[o + i] * k_k[c0 + i] / nu;
                    dot += kk * (-(double)dwa[o + i] + (double)dwb[o + i] * a[o + i]);
                }
                for (int i = 0; i < N; i++) {
                    int64_t c = c0 + i;
                    double kk = (double)k[o + i] * k_k[c] / nu;
                    double dkk = -(double)dwa[o + i] + (double)dwb[o + i] * a[o + i];
                    double du = floored ? dkk / nu : (dkk - kk * dot) / nu;
                    double g = dkout[o + i];
                    dk[o + i] = (real)(du * k_k[c] + g * (1.0 + ((double)a[o + i] - 1.0) * k_a[c]));
                    da[o + i] = (real)((double)dwb[o + i] * kk + g * k[o + i] * k_a[c]);
                    if (pkk) {
                        pkk[c] += du * k[o + i];
                        pka[c] += g * k[o + i] * ((double)a[o + i] - 1.0);
                    }
                }
            }
    }
    if (part)
        for (int t = 0; t < nt; t++)
            for (int64_t c = 0; c < C; c++) {
                if (dk_k) dk_k[c] += (real)part[(int64_t)t * 2 * C + c];
                if (dk_a) dk_a[c] += (real)part[(int64_t)t * 2 * C + C + c];
            }
    return 0;
}

static int cpu_v7_bonus_fwd(rp_backend *be, void *y_, const void *r_, const void *k_, const void *v_, const void *rk_,
                            int64_t n, int H, int N) {
    real *y = (real *)y_;
    const real *r = (const real *)r_, *k = (const real *)k_, *v = (const real *)v_, *r_k = (const real *)rk_;
    int64_t C = (int64_t)H * N;
#pragma omp parallel for num_threads(nthreads(be, n * C))
    for (int64_t row = 0; row < n; row++)
        for (int h = 0; h < H; h++) {
            int64_t o = row * C + (int64_t)h * N, c0 = (int64_t)h * N;
            double s = 0;
            for (int i = 0; i < N; i++) s += (double)r[o + i] * k[o + i] * r_k[c0 + i];
            for (int j = 0; j < N; j++) y[o + j] += (real)(s * v[o + j]);
        }
    return 0;
}

/* s_h = Σ r·k·r_k, y += s_h·v:  ds_h = Σ_j dy·v;  dr += ds_h·k·r_k;  dk += ds_h·r·r_k;
 * dv += s_h·dy;  dr_k += Σ_rows ds_h·r·k. */
static int cpu_v7_bonus_bwd(rp_backend *be, void *dr_, void *dk_, void *dv_, void *drk_, const void *dy_,
                            const void *r_, const void *k_, const void *v_, const void *rk_, int64_t n, int H, int N) {
    real *dr = (real *)dr_, *dk = (real *)dk_, *dv = (real *)dv_, *dr_k = (real *)drk_;
    const real *dy = (const real *)dy_, *r = (const real *)r_, *k = (const real *)k_, *v = (const real *)v_,
               *r_k = (const real *)rk_;
    int64_t C = (int64_t)H * N;
    int nt = nthreads(be, n * C);
    double *part = dr_k ? param_partials(be, nt, C) : NULL;
    if (dr_k && !part) return cpu_fail(be, RWKVPEFT_E_OUT_OF_MEMORY, "v7_bonus_bwd: scratch");
#pragma omp parallel num_threads(nt)
    {
        double *prk = part ? part + (int64_t)omp_get_thread_num() * C : NULL;
#pragma omp for
        for (int64_t row = 0; row < n; row++)
            for (int h = 0; h < H; h++) {
                int64_t o = row * C + (int64_t)h * N, c0 = (int64_t)h * N;
                double s = 0, ds = 0;
                for (int i = 0; i < N; i++) {
                    s += (double)r[o + i] * k[o + i] * r_k[c0 + i];
                    ds += (double)dy[o + i] * v[o + i];
                }
                for (int i = 0; i < N; i++) {
                    dr[o + i] += (real)(ds * k[o + i] * r_k[c0 + i]);
                    dk[o + i] += (real)(ds * r[o + i] * r_k[c0 + i]);
                    dv[o + i] += (real)(s * dy[o + i]);
                    if (prk) prk[c0 + i] += ds * r[o + i] * k[o + i];
                }
            }
    }
    if (part) add_partials(dr_k, part, nt, C);
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* loss                                                                                 */
/* ------------------------------------------------------------------------------------ */

static int cpu_cross_entropy(rp_backend *be, void *loss_sum_, void *dlogits_, const void *logits_,
                             const int32_t *targets, const void *weights_, int64_t n, int V, float grad_scale,
                             float l2wrap) {
    real *loss_sum = (real *)loss_sum_, *dl = (real *)dlogits_;
    const real *lg = (const real *)logits_, *wt = (const real *)weights_;
    /* per-row losses summed in row order afterwards: the result does not depend on the
     * thread count or schedule (bit-identical reruns) */
    double *row_loss = (double *)cpu_scratch(be, sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (!row_loss) return cpu_fail(be, RWKVPEFT_E_OUT_OF_MEMORY, "cross_entropy: scratch");
    int bad = 0;
#pragma omp parallel for num_threads(nthreads(be, n * V)) reduction(| : bad)
    for (int64_t i = 0; i < n; i++) {
        const real *row = lg + i * V;
        row_loss[i] = 0;
        real mx = row[0];
        int am = 0;
        for (int j = 1; j < V; j++)
            if (row[j] > mx) {
                mx = row[j];
                am = j;
            }
        double wi = wt[i];
        int tg = targets[i];
        if (wi != 0 && (tg < 0 || tg >= V)) {
            bad = 1;
            continue;
        }
        real lt = wi != 0 ? row[tg] : 0; /* read before dlogits may overwrite the row */
        /* one exp per element: e_j is kept in dlogits (when wanted) and scaled afterwards */
        real *drow = dl ? dl + i * V : NULL;
        double se = 0;
        if (drow) {
            for (int j = 0; j < V; j++) {
                real e = EXPR(row[j] - mx);
                drow[j] = e;
                se += e;
            }
        } else {
            for (int j = 0; j < V; j++) se += EXPR(row[j] - mx);
        }
        double lse = (double)mx + log(se);
        if (wi != 0) row_loss[i] = wi * (lse - (double)lt);
        if (drow) {
            real sc = (real)((double)grad_scale * wi / se);
            for (int j = 0; j < V; j++) drow[j] *= sc;
            if (wi != 0) drow[tg] -= (real)((double)grad_scale * wi);
            drow[am] += (real)((double)l2wrap * mx);
        }
    }
    if (bad) return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "cross_entropy: target outside [0, vocab)");
    double total = 0;
    for (int64_t i = 0; i < n; i++) total += row_loss[i];
    loss_sum[0] += (real)total;
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* optimizer                                                                            */
/* ------------------------------------------------------------------------------------ */

static int cpu_sumsq(rp_backend *be, void *acc_, const void *x_, const rp_adam_segment *segs, int n_segs) {
    real *acc = (real *)acc_;
    const real *x = (const real *)x_;
    /* fixed blocks summed in order: deterministic whatever the thread count */
    enum { BLK = 4096 };
    double total = 0;
    for (int s = 0; s < n_segs; s++) {
        const real *p = x + segs[s].offset;
        int64_t cnt = segs[s].count, nb = (cnt + BLK - 1) / BLK;
        double *part = (double *)cpu_scratch(be, sizeof(double) * (size_t)(nb > 0 ? nb : 1));
        if (!part) return cpu_fail(be, RWKVPEFT_E_OUT_OF_MEMORY, "sumsq: scratch");
#pragma omp parallel for num_threads(nthreads(be, cnt))
        for (int64_t b = 0; b < nb; b++) {
            double q = 0;
            int64_t e = (b + 1) * BLK < cnt ? (b + 1) * BLK : cnt;
            for (int64_t i = b * BLK; i < e; i++) q += (double)p[i] * p[i];
            part[b] = q;
        }
        for (int64_t b = 0; b < nb; b++) total += part[b];
    }
    acc[0] += (real)total;
    return 0;
}

/* The gradient scale of an Adam step from the squared norm (NULL: no clipping): 0 when the
 * norm is not finite (the step is skipped and nothing changes), else 1 with *clip set. */
static int adam_clip(const real *nsq, float max_norm, double *clip) {
    *clip = 1.0;
    if (!nsq) return 1;
    double ns = nsq[0];
    if (!isfinite(ns)) return 0;
    if (max_norm > 0) {
        double c = (double)max_norm / (sqrt(ns) + 1e-6);
        if (c < 1) *clip = c;
    }
    return 1;
}

static int cpu_adam_update(rp_backend *be, void *params_, const void *grads_, void *m_, void *v_,
                           const rp_adam_segment *segs, int n_segs, const void *norm_sq_, float max_norm, float lr,
                           float beta1, float beta2, float eps, int64_t step) {
    real *p = (real *)params_, *m = (real *)m_, *v = (real *)v_;
    const real *g = (const real *)grads_, *nsq = (const real *)norm_sq_;
    if (step < 1) return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "adam_update: step must be >= 1");
    double clip;
    if (!adam_clip(nsq, max_norm, &clip)) return 0; /* skipped: the core reports the non-finite norm */
    double bc1 = 1.0 - pow((double)beta1, (double)step), bc2 = 1.0 - pow((double)beta2, (double)step);
    for (int s = 0; s < n_segs; s++) {
        int64_t off = segs[s].offset, cnt = segs[s].count;
        double lr_s = (double)lr * segs[s].lr_scale, wd = segs[s].weight_decay;
#pragma omp parallel for num_threads(nthreads(be, cnt))
        for (int64_t i = off; i < off + cnt; i++) {
            double gi = (double)g[i] * clip;
            double mi = beta1 * (double)m[i] + (1.0 - beta1) * gi;
            double vi = beta2 * (double)v[i] + (1.0 - beta2) * gi * gi;
            m[i] = (real)mi;
            v[i] = (real)vi;
            double upd = (mi / bc1) / (sqrt(vi / bc2) + eps) + wd * (double)p[i];
            p[i] = (real)((double)p[i] - lr_s * upd);
        }
    }
    return 0;
}

/* 8-bit AdamW: one quantization block per iteration (blocks are independent, so the result
 * does not depend on the thread count). The arithmetic is adam_update's, in double; m and v
 * are held in double between the update and the re-quantization. */
static int cpu_adam8_update(rp_backend *be, void *params_, const void *grads_, uint8_t *m_q, uint8_t *v_q,
                            float *m_absmax, float *v_absmax, const float *code_m, const float *code_v, int64_t numel,
                            const rp_adam_segment *segs_in, int n_segs, const void *norm_sq_, float max_norm, float lr,
                            float beta1, float beta2, float eps, int64_t step) {
    real *p = (real *)params_;
    const real *g = (const real *)grads_, *nsq = (const real *)norm_sq_;
    if (step < 1) return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "adam8_update: step must be >= 1");
    if (numel < 0 || n_segs < 0) return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "adam8_update: negative size");
    double clip;
    if (!adam_clip(nsq, max_norm, &clip)) return 0; /* skipped: the core reports the non-finite norm */
    /* non-empty segments sorted by offset (host copy), clamped to [0, numel) */
    rp_adam_segment *segs = (rp_adam_segment *)cpu_scratch(be, sizeof(rp_adam_segment) * (size_t)(n_segs > 0 ? n_segs : 1));
    if (!segs) return cpu_fail(be, RWKVPEFT_E_OUT_OF_MEMORY, "adam8_update: scratch");
    const int ns = rp_adam_segments_by_offset(segs_in, n_segs, numel, segs);
    double bc1 = 1.0 - pow((double)beta1, (double)step), bc2 = 1.0 - pow((double)beta2, (double)step);
    const int zero_m = rp_adam8_nearest(code_m, 0.0), zero_v = rp_adam8_nearest(code_v, 0.0);
    int64_t n_blocks = (numel + RP_ADAM8_BLOCK - 1) / RP_ADAM8_BLOCK;
#pragma omp parallel for schedule(static) num_threads(nthreads(be, numel))
    for (int64_t b = 0; b < n_blocks; b++) {
        int64_t b0 = b * RP_ADAM8_BLOCK, b1 = b0 + RP_ADAM8_BLOCK < numel ? b0 + RP_ADAM8_BLOCK : numel;
        /* first segment that ends after the block's start */
        int lo = 0, hi = ns;
        while (lo < hi) {
            int mid = (lo + hi) / 2;
            if (segs[mid].offset + segs[mid].count <= b0) lo = mid + 1;
            else hi = mid;
        }
        if (lo >= ns || segs[lo].offset >= b1) continue; /* no trainable element: untouched */
        double mv[RP_ADAM8_BLOCK], vv[RP_ADAM8_BLOCK];
        const double am = m_absmax[b], av = v_absmax[b];
        for (int64_t i = b0; i < b1; i++) {
            mv[i - b0] = (double)code_m[m_q[i]] * am;
            vv[i - b0] = (double)code_v[v_q[i]] * av;
        }
        for (int s = lo; s < ns && segs[s].offset < b1; s++) {
            int64_t e0 = segs[s].offset > b0 ? segs[s].offset : b0;
            int64_t e1 = segs[s].offset + segs[s].count < b1 ? segs[s].offset + segs[s].count : b1;
            double lr_s = (double)lr * segs[s].lr_scale, wd = segs[s].weight_decay;
            for (int64_t i = e0; i < e1; i++) {
                double gi = (double)g[i] * clip;
                double mi = beta1 * mv[i - b0] + (1.0 - beta1) * gi;
                double vi = beta2 * vv[i - b0] + (1.0 - beta2) * gi * gi;
                mv[i - b0] = mi;
                vv[i - b0] = vi;
                double upd = (mi / bc1) / (sqrt(vi / bc2) + eps) + wd * (double)p[i];
                p[i] = (real)((double)p[i] - lr_s * upd);
            }
        }
        double mmax = 0, vmax = 0;
        for (int64_t k = 0; k < b1 - b0; k++) {
            if (fabs(mv[k]) > mmax) mmax = fabs(mv[k]);
            if (vv[k] > vmax) vmax = vv[k];
        }
        const float mA = (float)mmax, vA = (float)vmax;
        m_absmax[b] = mA;
        v_absmax[b] = vA;
        for (int64_t i = b0; i < b1; i++) {
            m_q[i] = (uint8_t)(mA > 0 ? rp_adam8_nearest(code_m, mv[i - b0] / (double)mA) : zero_m);
            v_q[i] = (uint8_t)(vA > 0 ? rp_adam8_nearest(code_v, vv[i - b0] / (double)vA) : zero_v);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* quantized weights                                                                    */
/* ------------------------------------------------------------------------------------ */

static int cpu_dequant(rp_backend *be, void *out_, const void *q_, const void *absmax_, const void *code_,
                       int format, int64_t n, int blocksize) {
    real *out = (real *)out_;
    const uint8_t *q = (const uint8_t *)q_;
    const float *absmax = (const float *)absmax_, *code = (const float *)code_;
    static const float nf4[16] = RP_NF4_CODES, fp4[16] = RP_FP4_CODES;
    if (blocksize <= 0) return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "dequant: blocksize");
    switch (format) {
    case RP_QUANT_NF4:
    case RP_QUANT_FP4: {
        const float *tab = format == RP_QUANT_NF4 ? nf4 : fp4;
#pragma omp parallel for num_threads(nthreads(be, n))
        for (int64_t i = 0; i < n; i++) {
            uint8_t byte = q[i >> 1];
            int c = (i & 1) ? (byte & 15) : (byte >> 4);
            out[i] = (real)(tab[c] * absmax[i / blocksize]);
        }
        return 0;
    }
    case RP_QUANT_INT8:
        if (!code) return cpu_fail(be, RWKVPEFT_E_INVALID_ARGUMENT, "dequant: int8 needs a code table");
#pragma omp parallel for num_threads(nthreads(be, n))
        for (int64_t i = 0; i < n; i++) out[i] = (real)(code[q[i]] * absmax[i / blocksize]);
        return 0;
    case RP_QUANT_FP8_E4M3:
#pragma omp parallel for num_threads(nthreads(be, n))
        for (int64_t i = 0; i < n; i++)
            out[i] = (real)(rp_fp8_e4m3_to_float(q[i]) * (absmax ? absmax[i / blocksize] : 1.0f));
        return 0;
    default: return cpu_fail(be, RWKVPEFT_E_UNSUPPORTED, "dequant: unknown format");
    }
}

/* ------------------------------------------------------------------------------------ */
/* the table                                                                            */
/* ------------------------------------------------------------------------------------ */

#if RP_CPU_IS_DOUBLE
#define THIS_OPS rp_cpu64_ops
#define THIS_NAME "cpu64"
#else
#define THIS_OPS rp_cpu32_ops
#define THIS_NAME "cpu"
#endif

const rp_backend_ops THIS_OPS = {
    .api_version = RP_BACKEND_API_VERSION,
    .struct_size = sizeof(rp_backend_ops),
    .name = THIS_NAME,
    .act_dtype = RP_CPU_IS_DOUBLE ? RP_F64 : RP_F32,
    .par_dtype = RP_CPU_IS_DOUBLE ? RP_F64 : RP_F32,
    .probe = cpu_probe,
    .create = cpu_create,
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .memcpy_h2d = cpu_memcpy,
    .memcpy_d2h = cpu_memcpy,
    .memcpy_d2d = cpu_memcpy,
    .memcpy_2d = cpu_memcpy_2d,
    .memset_zero = cpu_memset_zero,
    .convert = cpu_convert,
    .synchronize = cpu_synchronize,
    .memory_info = cpu_memory_info,
    .gemm = cpu_gemm,
    .embedding_fwd = cpu_embedding_fwd,
    .embedding_bwd = cpu_embedding_bwd,
    .norm_fwd = cpu_norm_fwd,
    .norm_bwd = cpu_norm_bwd,
    .norm_gate_fwd = cpu_norm_gate_fwd,
    .norm_gate_bwd = cpu_norm_gate_bwd,
    .shift_mix_fwd = cpu_shift_mix_fwd,
    .shift_mix_bwd = cpu_shift_mix_bwd,
    .act_fwd = cpu_act_fwd,
    .act_bwd = cpu_act_bwd,
    .act_mul_fwd = cpu_act_mul_fwd,
    .act_mul_bwd = cpu_act_mul_bwd,
    .mul_fwd = cpu_mul_fwd,
    .mul_bwd = cpu_mul_bwd,
    .add = cpu_add,
    .broadcast_rows = cpu_broadcast_rows,
    .sum_rows = cpu_sum_rows,
    .dropout = cpu_dropout,
    .wkv6_fwd = cpu_wkv6_fwd,
    .wkv6_bwd = cpu_wkv6_bwd,
    .cross_entropy = cpu_cross_entropy,
    .sumsq = cpu_sumsq,
    .adam_update = cpu_adam_update,
    .dequant = cpu_dequant,
    .lerp_fwd = cpu_lerp_fwd,
    .lerp_bwd = cpu_lerp_bwd,
    .wkv7_fwd = cpu_wkv7_fwd,
    .wkv7_bwd = cpu_wkv7_bwd,
    .v7_kprep_fwd = cpu_v7_kprep_fwd,
    .v7_kprep_bwd = cpu_v7_kprep_bwd,
    .v7_bonus_fwd = cpu_v7_bonus_fwd,
    .v7_bonus_bwd = cpu_v7_bonus_bwd,
    .adam8_update = cpu_adam8_update,
};

static rp_backend *cpu_create(int device, int n_threads, rp_err *err) {
    if (device != 0) {
        rp_fail(err, RWKVPEFT_E_BACKEND, "%s backend: device %d does not exist (only 0)", THIS_NAME, device);
        return NULL;
    }
    cpu_backend *cb = (cpu_backend *)calloc(1, sizeof *cb);
    if (!cb) {
        rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory creating the CPU backend");
        return NULL;
    }
    cb->base.ops = &THIS_OPS;
    cb->base.device = 0;
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    cb->base.n_threads = n_threads;
    openblas_set_num_threads(n_threads);
    return &cb->base;
}
