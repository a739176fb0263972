/* ops_gemm.cu — the gemm op: validation, then cuBLAS (hipBLAS where present) or the own tiled
 * kernel (ops_gemm_tiled.cu; always on HIP without hipBLAS, on CUDA with RWKVPEFT_CUDA_GEMM=tiled).
 *
 * Row-major → column-major: a row-major m×n C with leading dimension ldc is the column-major
 * n×m matrix Cᵀ. So C = op(A)·op(B) is computed as Cᵀ = op(B)ᵀ·op(A)ᵀ: cuBLAS gets (B, A)
 * in that order with the sizes (n, m, k) and each operand's own transpose flag, and every
 * leading dimension passes through unchanged.
 *
 * Operand types: cuBLAS wants A and B of one type. In a mixed pair the f32 operand is a small
 * parameter (low-rank mixers, LoRA A/B: the backend's large operands are bf16 activations and
 * weights), so it is narrowed into bf16 scratch and the product runs on the tensor cores
 * with fp32 accumulation — what the reference does with its bf16 parameters. (Widening the
 * large bf16 operand instead would be exact but runs the product on the fp32 SIMT units
 * and moves 3x the bytes: it cost ~40% of a 1.6B training step.) f32·f32 → bf16 C goes
 * through an f32 copy of C in scratch (read only when beta ≠ 0) and is narrowed back into
 * C's own layout. Compute is always fp32 (CUBLAS_COMPUTE_32F: no TF32), so an all-f32
 * product is a true float32 GEMM. */
#include "common.cuh"

#if defined(RP_HAVE_BLAS)
static int blas_fail(rp_backend *be, cublasStatus_t st, int line) {
    return cu_fail_at(be, RWKVPEFT_E_BACKEND, __FILE__, line, "cuBLAS GEMM failed (status %d)", (int)st);
}

static cudaDataType blas_type(rp_dtype t) { return t == RP_BF16 ? CUDA_R_16BF : CUDA_R_32F; }

/* Narrows the stored f32 (rows × cols, ld, stride) operand into dense bf16 scratch at *cursor. */
static int narrow_operand(rp_backend *be, char **cursor, const void **x, rp_dtype *tx, int64_t *ld, int64_t *stride,
                          int64_t rows, int64_t cols, int batch) {
    const int nb = *stride == 0 ? 1 : batch;
    void *dst = cu_carve(cursor, 2 * (size_t)(rows * cols * nb));
    RP_TRY(cu_convert_2d(be, dst, RP_BF16, cols, rows * cols, *x, *tx, *ld, *stride, rows, cols, nb));
    *x = dst;
    *tx = RP_BF16;
    *ld = cols;
    *stride = *stride == 0 ? 0 : rows * cols;
    return 0;
}

static int gemm_blas(rp_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha, const void *a,
                     rp_dtype ta, int64_t lda, int64_t stride_a, const void *b, rp_dtype tb, int64_t ldb,
                     int64_t stride_b, float beta, void *c, rp_dtype tc, int64_t ldc, int64_t stride_c, int batch) {
    const int64_t a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
    const int64_t b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
    const int mixed = ta != tb;
    const int c_via_f32 = (mixed ? RP_BF16 : ta) == RP_F32 && tc == RP_BF16;
    size_t need = 0;
    if (mixed) {
        if (ta == RP_F32) need += cu_round(2 * (size_t)(a_rows * a_cols * (stride_a ? batch : 1)));
        else need += cu_round(2 * (size_t)(b_rows * b_cols * (stride_b ? batch : 1)));
    }
    if (c_via_f32) need += cu_round(sizeof(float) * (size_t)((int64_t)m * n * batch));
    char *cur = NULL;
    if (need) {
        void *scr;
        RP_TRY(cu_scratch(be, need, &scr));
        cur = (char *)scr;
    }
    if (mixed) {
        if (ta == RP_F32) RP_TRY(narrow_operand(be, &cur, &a, &ta, &lda, &stride_a, a_rows, a_cols, batch));
        else RP_TRY(narrow_operand(be, &cur, &b, &tb, &ldb, &stride_b, b_rows, b_cols, batch));
    }
    void *cw = c;
    int64_t ldcw = ldc, scw = stride_c;
    rp_dtype tcw = tc;
    if (c_via_f32) {
        cw = cu_carve(&cur, sizeof(float) * (size_t)((int64_t)m * n * batch));
        ldcw = n;
        scw = (int64_t)m * n;
        tcw = RP_F32;
        if (beta != 0.0f) RP_TRY(cu_convert_2d(be, cw, RP_F32, ldcw, scw, c, tc, ldc, stride_c, m, n, batch));
    }
    if (lda > 0x7fffffffLL || ldb > 0x7fffffffLL || ldcw > 0x7fffffffLL)
        return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "gemm: leading dimension beyond 32 bits");
    cu_backend *cb = cu_of(be);
    const cublasOperation_t opA = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opB = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t st;
    if (batch == 1)
        st = cublasGemmEx(cb->blas, opB, opA, n, m, k, &alpha, b, blas_type(tb), (int)ldb, a, blas_type(ta), (int)lda,
                          &beta, cw, blas_type(tcw), (int)ldcw, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    else
        st = cublasGemmStridedBatchedEx(cb->blas, opB, opA, n, m, k, &alpha, b, blas_type(tb), (int)ldb,
                                        (long long)stride_b, a, blas_type(ta), (int)lda, (long long)stride_a, &beta,
                                        cw, blas_type(tcw), (int)ldcw, (long long)scw, batch, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS) return blas_fail(be, st, __LINE__);
    CU_LAUNCHED(be);
    if (c_via_f32) RP_TRY(cu_convert_2d(be, c, tc, ldc, stride_c, cw, RP_F32, ldcw, scw, m, n, batch));
    return 0;
}
#endif

int cu_gemm(rp_backend *be, int trans_a, int trans_b, int m, int n, int k, float alpha, const void *a, rp_dtype ta,
            int64_t lda, int64_t stride_a, const void *b, rp_dtype tb, int64_t ldb, int64_t stride_b, float beta,
            void *c, rp_dtype tc, int64_t ldc, int64_t stride_c, int batch) {
    const int ok = (ta == RP_F32 || ta == RP_BF16) && (tb == RP_F32 || tb == RP_BF16) &&
                   (tc == RP_F32 || tc == RP_BF16);
    if (!ok) return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "gemm: operand types must be float32 or bfloat16");
    if (m <= 0 || n <= 0 || batch <= 0) return 0;
    if (stride_a < 0 || stride_b < 0 || stride_c < 0)
        return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "gemm: negative batch stride");
    const int64_t a_cols = trans_a ? m : k, b_cols = trans_b ? k : n;
    if (k > 0 && (lda < a_cols || ldb < b_cols || lda < 1 || ldb < 1))
        return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "gemm: leading dimension smaller than a row");
    if (ldc < n) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "gemm: ldc %lld < n %d", (long long)ldc, n);
    CU_ENTER(be);
    if (k <= 0) return cu_scale_matrix(be, c, tc, ldc, stride_c, m, n, batch, beta);
#if defined(RP_HAVE_BLAS)
    if (!cu_of(be)->use_tiled)
        return gemm_blas(be, trans_a, trans_b, m, n, k, alpha, a, ta, lda, stride_a, b, tb, ldb, stride_b, beta, c, tc,
                         ldc, stride_c, batch);
#endif
    return cu_gemm_tiled(be, trans_a, trans_b, m, n, k, alpha, a, ta, lda, stride_a, b, tb, ldb, stride_b, beta, c, tc,
                         ldc, stride_c, batch);
}
