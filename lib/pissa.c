/* pissa.c — the randomized truncated SVD behind PiSSA's init (spec §3.3): Halko, Martinsson
 * and Tropp's range finder with a Gaussian test matrix, `niter` power iterations with QR
 * re-orthonormalisation, and an exact SVD of the small projection. Host code in float64
 * through LAPACK/BLAS (OpenBLAS), run once at attach time.
 *
 * The test matrix comes from the library's counter-based generator, so the init is a pure
 * function of (W, r, niter, seed): the same on every machine and every run (the
 * reference's torch.randn stream is unseeded by default). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_common.h"
#include "model.h"

/* LAPACK (Fortran symbols inside OpenBLAS). Character arguments carry a hidden length in
 * the gfortran ABI; passing it is harmless for f2c-built libraries. */
extern void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work,
                    const int *lwork, int *info);
extern void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau,
                    double *work, const int *lwork, int *info);
extern void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
                    const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork, int *info,
                    size_t jobz_len);

/* Standard normal number `index` of stream `seed` (Box-Muller on two 24-bit uniforms). */
static double normal_at(uint64_t seed, uint64_t index) {
    double u1 = (double)rp_uniform01(seed, 2 * index) + 0.5 / 16777216.0; /* (0,1) */
    double u2 = (double)rp_uniform01(seed, 2 * index + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Replaces the m×n column-major matrix a (m >= n) by the Q of its QR factorisation. */
static int orthonormalise(double *a, int m, int n, rp_err *err) {
    int lda = m, info = 0, lwork = -1;
    double wq = 0;
    double *tau = (double *)rp_malloc(sizeof(double) * (size_t)n);
    if (!tau) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory in the PiSSA SVD");
    dgeqrf_(&m, &n, a, &lda, tau, &wq, &lwork, &info);
    double wq2 = 0;
    dorgqr_(&m, &n, &n, a, &lda, tau, &wq2, &lwork, &info);
    lwork = (int)(wq > wq2 ? wq : wq2);
    if (lwork < n) lwork = n;
    double *work = (double *)rp_malloc(sizeof(double) * (size_t)lwork);
    if (!work) {
        free(tau);
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory in the PiSSA SVD");
    }
    dgeqrf_(&m, &n, a, &lda, tau, work, &lwork, &info);
    if (info == 0) dorgqr_(&m, &n, &n, a, &lda, tau, work, &lwork, &info);
    free(tau);
    free(work);
    if (info != 0) return rp_fail(err, RWKVPEFT_E_INTERNAL, "LAPACK QR failed (info %d)", info);
    return 0;
}

/* Thin SVD of the m×n column-major matrix a (overwritten): s [min], u [m×min], vt [min×n].
 * u and vt may be NULL for singular values only. */
static int thin_svd(double *a, int m, int n, double *s, double *u, double *vt, rp_err *err) {
    int k = m < n ? m : n, lda = m, ldu = m, ldvt = k, info = 0, lwork = -1;
    const char *jobz = u ? "S" : "N";
    double wq = 0, dummy = 0;
    int *iwork = (int *)rp_malloc(sizeof(int) * (size_t)(8 * k));
    if (!iwork) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory in an SVD");
    if (!u) ldu = ldvt = 1;
    dgesdd_(jobz, &m, &n, a, &lda, s, u ? u : &dummy, &ldu, vt ? vt : &dummy, &ldvt, &wq, &lwork, iwork, &info, 1);
    lwork = (int)wq > 1 ? (int)wq : 1;
    double *work = (double *)rp_malloc(sizeof(double) * (size_t)lwork);
    if (!work) {
        free(iwork);
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory in an SVD");
    }
    dgesdd_(jobz, &m, &n, a, &lda, s, u ? u : &dummy, &ldu, vt ? vt : &dummy, &ldvt, work, &lwork, iwork, &info, 1);
    free(work);
    free(iwork);
    if (info != 0) return rp_fail(err, RWKVPEFT_E_INTERNAL, "LAPACK SVD (dgesdd) failed (info %d)", info);
    return 0;
}

int rp_pissa_svd(const float *W, int out, int in, int r, int niter, uint64_t seed, float *A0, float *B0, rp_err *err) {
    if (r < 1 || r > out || r > in)
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "PiSSA rank %d must lie in [1, min(out %d, in %d)]", r, out, in);
    if (niter < 0 || niter > 1000) return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "svd_niter %d must lie in [0, 1000]", niter);
    size_t nw = (size_t)out * (size_t)in;
    /* Wt: W's row-major storage read as the column-major [in × out] matrix Wᵀ */
    double *Wt = (double *)rp_malloc(sizeof(double) * nw);
    double *Q = (double *)rp_malloc(sizeof(double) * (size_t)out * r);  /* out × r */
    double *Z = (double *)rp_malloc(sizeof(double) * (size_t)in * r);   /* in × r */
    double *Bs = (double *)rp_malloc(sizeof(double) * (size_t)r * in);  /* r × in */
    double *Us = (double *)rp_malloc(sizeof(double) * (size_t)r * r);
    double *S = (double *)rp_malloc(sizeof(double) * (size_t)r);
    double *U = (double *)rp_malloc(sizeof(double) * (size_t)out * r);
    int rc = 0;
    if (!Wt || !Q || !Z || !Bs || !Us || !S || !U) {
        rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory in the PiSSA SVD of a %dx%d matrix", out, in);
        goto done;
    }
    for (size_t i = 0; i < nw; i++) Wt[i] = W[i];
    /* Ω [in × r] Gaussian, then Y = W·Ω */
    for (size_t i = 0; i < (size_t)in * r; i++) Z[i] = normal_at(seed, i);
    cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, out, r, in, 1.0, Wt, in, Z, in, 0.0, Q, out);
    if ((rc = orthonormalise(Q, out, r, err))) goto done;
    for (int it = 0; it < niter; it++) {
        cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, in, r, out, 1.0, Wt, in, Q, out, 0.0, Z, in); /* Wᵀ·Q */
        if ((rc = orthonormalise(Z, in, r, err))) goto done;
        cblas_dgemm(CblasColMajor, CblasTrans, CblasNoTrans, out, r, in, 1.0, Wt, in, Z, in, 0.0, Q, out); /* W·Z */
        if ((rc = orthonormalise(Q, out, r, err))) goto done;
    }
    /* Bs = Qᵀ·W (r × in); Bs = Us·S·Vᵀ exactly; U = Q·Us */
    cblas_dgemm(CblasColMajor, CblasTrans, CblasTrans, r, in, out, 1.0, Q, out, Wt, in, 0.0, Bs, r);
    double *VT = Z; /* r × in (ld r) reuses Z's storage (in·r elements) */
    if ((rc = thin_svd(Bs, r, in, S, Us, VT, err))) goto done;
    cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, out, r, r, 1.0, Q, out, Us, r, 0.0, U, out);
    for (int k = 0; k < r; k++) {
        double sq = sqrt(S[k] > 0 ? S[k] : 0);
        for (int i = 0; i < in; i++) A0[(size_t)k * in + i] = (float)(sq * VT[k + (size_t)i * r]);
        for (int o = 0; o < out; o++) B0[(size_t)o * r + k] = (float)(U[o + (size_t)k * out] * sq);
    }
done:
    free(Wt);
    free(Q);
    free(Z);
    free(Bs);
    free(Us);
    free(S);
    free(U);
    return rc;
}

int rp_svd_best_rank_error(const float *W, int out, int in, int r, double *err_fro, rp_err *err) {
    size_t nw = (size_t)out * (size_t)in;
    int k = out < in ? out : in;
    double *a = (double *)rp_malloc(sizeof(double) * nw), *s = (double *)rp_malloc(sizeof(double) * (size_t)k);
    if (!a || !s) {
        free(a);
        free(s);
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory in an SVD");
    }
    for (size_t i = 0; i < nw; i++) a[i] = W[i]; /* Wᵀ column-major: same singular values */
    int rc = thin_svd(a, in, out, s, NULL, NULL, err);
    if (!rc) {
        double e = 0;
        for (int i = r; i < k; i++) e += s[i] * s[i];
        *err_fro = sqrt(e);
    }
    free(a);
    free(s);
    return rc;
}
