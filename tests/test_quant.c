/* test_quant.c — quantizers against bitsandbytes/PyTorch fixtures (tests/data/quant), their
 * definitions (nearest code, tie rules), adversarial blocks, and the backends' dequant op. */
#include <math.h>

#include "kernel_common.h"
#include "quant.h"
#include "testutil.h"

/* tests/data/quant/<name> */
static void *read_fixture(const char *name, size_t *size) {
    char rel[512], path[1024];
    snprintf(rel, sizeof rel, "quant/%s", name);
    tu_data_path(path, sizeof path, rel);
    return tu_read_all(path, size);
}

START_TEST(test_int8_code_matches_bitsandbytes) {
    size_t sz;
    float *ref = read_fixture("int8_code.f32", &sz);
    ck_assert_int_eq((int)sz, 256 * 4);
    const float *code = rp_int8_dynamic_code();
    /* bitsandbytes builds the map with torch.linspace on the CPU, whose float32 rounding
     * depends on the machine's vector width: entries may differ by a few ulps between
     * machines (docs/differences.md) */
    int exact = 0;
    for (int i = 0; i < 256; i++) {
        float ulp = nextafterf(fabsf(ref[i]), INFINITY) - fabsf(ref[i]);
        ck_assert_msg(fabsf(code[i] - ref[i]) <= 4 * ulp, "code[%d] %.9g vs %.9g", i, code[i], ref[i]);
        exact += code[i] == ref[i];
    }
    ck_assert_int_ge(exact, 200);
    free(ref);
}
END_TEST

START_TEST(test_fp8_matches_torch) {
    size_t si, so;
    float *in = read_fixture("fp8_in.f32", &si);
    uint8_t *out = read_fixture("fp8_out.u8", &so);
    ck_assert_int_eq((int)(si / 4), (int)so);
    for (size_t i = 0; i < so; i++)
        ck_assert_msg(rp_fp8_e4m3_encode(in[i]) == out[i], "x=%.9g: 0x%02x vs torch 0x%02x", in[i],
                      rp_fp8_e4m3_encode(in[i]), out[i]);
    free(in);
    free(out);
}
END_TEST

START_TEST(test_4bit_matches_bitsandbytes) {
    size_t sx;
    float *x = read_fixture("q4_in.f32", &sx);
    int64_t n = (int64_t)(sx / 4);
    const char *kinds[2] = {"nf4", "fp4"};
    int fmts[2] = {RP_QUANT_NF4, RP_QUANT_FP4};
    for (int k = 0; k < 2; k++) {
        char qn[32], an[32];
        snprintf(qn, sizeof qn, "%s_q.u8", kinds[k]);
        snprintf(an, sizeof an, "%s_absmax.f32", kinds[k]);
        size_t sq, sa;
        uint8_t *rq = read_fixture(qn, &sq);
        float *ra = read_fixture(an, &sa);
        rp_qtensor q;
        rp_err err;
        ck_assert_int_eq(rp_quantize(fmts[k], x, n, &q, &err), 0);
        ck_assert_int_eq((int)q.q_bytes, (int)sq);
        ck_assert_int_eq((int)q.n_blocks, (int)(sa / 4));
        for (int64_t b = 0; b < q.n_blocks; b++) ck_assert(q.absmax[b] == ra[b]);
        /* every code equals bitsandbytes', except in an all-zero block: there its CUDA
         * kernel (the reference's) sends the NaN quotients to code 0 while its CPU version
         * (the fixture) writes the code of 0.0 — both dequantize to 0 */
        int mismatch = 0, zero_blocks = 0;
        for (int64_t i = 0; i < n; i++) {
            int mine = (i & 1) ? (q.q[i >> 1] & 15) : (q.q[i >> 1] >> 4);
            int theirs = (i & 1) ? (rq[i >> 1] & 15) : (rq[i >> 1] >> 4);
            if (q.absmax[i / 64] == 0) {
                zero_blocks += i % 64 == 0;
                ck_assert_int_eq(mine, 0);
                continue;
            }
            if (mine != theirs) {
                /* the CPU build of bitsandbytes breaks near-ties differently from the CUDA
                 * comparison tree we follow: allowed only for a value on a midpoint */
                static const float nf4t[16] = RP_NF4_CODES, fp4t[16] = RP_FP4_CODES;
                const float *tab = k ? fp4t : nf4t;
                float v = x[i] * (1.0f / q.absmax[i / 64]), mid = (tab[mine] + tab[theirs]) / 2;
                if (fabsf(v - mid) < 1e-6f) continue;
                if (tab[mine] == tab[theirs]) continue; /* FP4 +0 and -0: the same value */
                fprintf(stderr, "%s elem %lld: x %.9g absmax %.9g mine %d bnb %d\n", kinds[k], (long long)i, x[i],
                        q.absmax[i / 64], mine, theirs);
                mismatch++;
            }
        }
        ck_assert_int_eq(zero_blocks, 1);
        ck_assert_msg(mismatch == 0, "%s: %d of %lld codes differ from bitsandbytes", kinds[k], mismatch, (long long)n);
        rp_qtensor_free(&q);
        free(rq);
        free(ra);
    }
    free(x);
}
END_TEST

/* Each 4-bit code is the nearest code value (ties to the smaller one), and dequant
 * reproduces code·absmax; an all-zero block dequantizes to zeros; an outlier keeps its
 * value exactly. */
START_TEST(test_4bit_definition) {
    static const float nf4[16] = RP_NF4_CODES, fp4[16] = RP_FP4_CODES;
    uint64_t s = 9;
    enum { N = 64 * 40 + 7 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) x[i] = (float)((tu_uniform(&s) * 2 - 1) * 3);
    for (int i = 64; i < 128; i++) x[i] = 0; /* all-zero block */
    x[200] = 1e6f;                           /* an outlier dominating its block */
    for (int f = 0; f < 2; f++) {
        const float *tab = f ? fp4 : nf4;
        rp_qtensor q;
        rp_err err;
        ck_assert_int_eq(rp_quantize(f ? RP_QUANT_FP4 : RP_QUANT_NF4, x, N, &q, &err), 0);
        rp_dequantize(&q, y);
        for (int i = 0; i < N; i++) {
            float am = q.absmax[i / 64];
            if (am == 0) {
                ck_assert(y[i] == 0);
                continue;
            }
            float v = x[i] * (1.0f / am);
            /* distance of the chosen code is minimal */
            float got = y[i] / am, best = INFINITY;
            for (int c = 0; c < 16; c++) best = fminf(best, fabsf(tab[c] - v));
            ck_assert_msg(fabsf(got - v) <= best + 1e-6f, "fmt %d elem %d: v %.7g -> %.7g (best distance %.7g)", f, i, v,
                          got, best);
        }
        ck_assert(y[200] == 1e6f);
        rp_qtensor_free(&q);
    }
    /* ties go to the smaller code */
    ck_assert_int_eq(rp_nf4_encode(0.03979014977812767f), 7);
    ck_assert_int_eq(rp_nf4_encode(0.0398f), 8);
    ck_assert_int_eq(rp_fp4_encode(0.29166667f) & 7, 7); /* between 0.25 (7) and 1/3 (4): smaller magnitude */
    ck_assert_int_eq(rp_fp4_encode(-0.5f), 8 + 5); /* 0.5 = 6/12 is code 5 */
    free(x);
    free(y);
}
END_TEST

START_TEST(test_int8_definition) {
    const float *code = rp_int8_dynamic_code();
    uint64_t s = 3;
    for (int t = 0; t < 200000; t++) {
        float v = (float)(tu_uniform(&s) * 2 - 1);
        if (t % 7 == 0) v = code[t % 256]; /* exactly on a code */
        uint8_t c = rp_int8_encode(v, code);
        float best = INFINITY;
        for (int i = 0; i < 256; i++) best = fminf(best, fabsf(code[i] - v));
        ck_assert_msg(fabsf(code[c] - v) <= best, "v %.9g -> code %d (%.9g), nearest distance %.9g", v, c, code[c], best);
    }
    /* whole tensor: one absmax, |x| = absmax maps to ±1 exactly */
    float x[5] = {-3, 1.5f, 0, 3, 0.001f}, y[5];
    rp_qtensor q;
    rp_err err;
    ck_assert_int_eq(rp_quantize(RP_QUANT_INT8, x, 5, &q, &err), 0);
    ck_assert_int_eq((int)q.n_blocks, 1);
    ck_assert(q.absmax[0] == 3);
    rp_dequantize(&q, y);
    ck_assert(y[3] == 3 && y[2] == 0);
    ck_assert(fabsf(y[1] - 1.5f) < 0.02f);
    rp_qtensor_free(&q);
}
END_TEST

START_TEST(test_bad_input_rejected) {
    float x[4] = {1, NAN, 2, 3};
    rp_qtensor q;
    rp_err err;
    ck_assert_int_eq(rp_quantize(RP_QUANT_NF4, x, 4, &q, &err), RWKVPEFT_E_NUMERIC);
    ck_assert(strstr(err.msg, "element 1") != NULL);
    x[1] = INFINITY;
    ck_assert_int_eq(rp_quantize(RP_QUANT_INT8, x, 4, &q, &err), RWKVPEFT_E_NUMERIC);
    x[1] = 0;
    ck_assert_int_eq(rp_quantize(99, x, 4, &q, &err), RWKVPEFT_E_UNSUPPORTED);
    ck_assert_int_eq(rp_quantize(RP_QUANT_FP4, x, 0, &q, &err), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_int_eq(rp_quant_parse("4bit"), RP_QUANT_FP4);
    ck_assert_int_eq(rp_quant_parse("nf4"), RP_QUANT_NF4);
    ck_assert_int_eq(rp_quant_parse("q3"), -1);
}
END_TEST

/* The CPU backends' dequant op equals the host reference for every format. */
START_TEST(test_backend_dequant) {
    const char *names[2] = {"cpu", "cpu64"};
    enum { N = 64 * 9 + 3 };
    float x[N], ref[N];
    uint64_t s = 77;
    for (int i = 0; i < N; i++) x[i] = (float)((tu_uniform(&s) * 2 - 1) * 5);
    int fmts[4] = {RP_QUANT_NF4, RP_QUANT_FP4, RP_QUANT_INT8, RP_QUANT_FP8_E4M3};
    for (int b = 0; b < 2; b++) {
        rp_err err;
        int cnt;
        const rp_backend_ops *ops = rp_backend_find(names[b], NULL, &cnt, NULL, 0, &err);
        ck_assert_ptr_nonnull(ops);
        rp_backend *be = ops->create(0, 1, &err);
        for (int f = 0; f < 4; f++) {
            rp_qtensor q;
            ck_assert_int_eq(rp_quantize(fmts[f], x, N, &q, &err), 0);
            rp_dequantize(&q, ref);
            double out[N];
            ck_assert_int_eq(ops->dequant(be, out, q.q, q.absmax, rp_int8_dynamic_code(), fmts[f], N, q.blocksize), 0);
            for (int i = 0; i < N; i++) {
                double got = ops->act_dtype == RP_F64 ? out[i] : ((float *)out)[i];
                ck_assert_msg(got == ref[i], "%s fmt %d elem %d: %.9g vs %.9g", names[b], fmts[f], i, got, ref[i]);
            }
            rp_qtensor_free(&q);
        }
        ops->destroy(be);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_int8_code_matches_bitsandbytes);
    tcase_add_test(tc, test_fp8_matches_torch);
    tcase_add_test(tc, test_4bit_matches_bitsandbytes);
    tcase_add_test(tc, test_4bit_definition);
    tcase_add_test(tc, test_int8_definition);
    tcase_add_test(tc, test_bad_input_rejected);
    tcase_add_test(tc, test_backend_dequant);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
