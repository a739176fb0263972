/* test_optim8.c — the blockwise 8-bit AdamW (rwkvpeft_train_params.optimizer =
 * RWKVPEFT_OPTIM_ADAMW_8BIT): its code tables and host quantizer (lib/optim8.c), and training
 * with it on the CPU backend against fp32 AdamW — first step, loss curve, exact resume from a
 * state file, and the errors for a state of the other optimizer and for bad parameters. The
 * op itself is checked on every backend in test_backend_ops.c (test "adam8"). */
#include <stddef.h>

#include "optim8.h"
#include "testmodel.h"

/* ---- code tables ------------------------------------------------------------------------ */

static void tables(float *cm, float *cv) { rp_adam8_codes(cm, cv); }

START_TEST(test_code_tables) {
    float cm[RP_ADAM8_CODES], cv[RP_ADAM8_CODES];
    tables(cm, cv);
    for (int i = 1; i < RP_ADAM8_CODES; i++) {
        ck_assert_msg(cm[i] > cm[i - 1], "m table not strictly increasing at %d: %g <= %g", i, cm[i], cm[i - 1]);
        ck_assert_msg(cv[i] > cv[i - 1], "v table not strictly increasing at %d: %g <= %g", i, cv[i], cv[i - 1]);
    }
    ck_assert(cm[0] == -1.0f && cm[255] == 1.0f && cm[RP_ADAM8_ZERO_M] == 0.0f);
    ck_assert(cv[0] == 0.0f && cv[255] == 1.0f && cv[RP_ADAM8_ZERO_V] == 0.0f);
    /* m is symmetric apart from the one extra level next to 0 */
    for (int i = 0; i < RP_ADAM8_ZERO_M; i++)
        ck_assert_msg(cm[i] == -cm[255 - i], "m table: %g vs %g at %d", cm[i], cm[255 - i], i);
    ck_assert(cm[RP_ADAM8_ZERO_M + 1] == 1e-7f);
    /* dynamic: resolution is finer near 0 than near the ends, and six/seven decades covered */
    ck_assert(cv[2] - cv[1] < 1e-3f * (cv[255] - cv[254]));
    ck_assert(cm[RP_ADAM8_ZERO_M + 2] <= 1.0001e-6f && cv[1] <= 1.0001e-7f);
    /* every decade below the top holds levels */
    for (double d = 1e-6; d < 1; d *= 10) {
        int n = 0;
        for (int i = 0; i < 256; i++) n += cv[i] > d && cv[i] <= 10 * d;
        ck_assert_msg(n >= 1, "no v level in (%g, %g]", d, 10 * d);
    }
    /* rp_adam8_nearest: exact entries map to themselves, midpoints to the lower index, the
     * ends clamp */
    for (int i = 0; i < 256; i++) {
        ck_assert_int_eq(rp_adam8_nearest(cm, cm[i]), i);
        ck_assert_int_eq(rp_adam8_nearest(cv, cv[i]), i);
        if (i < 255) {
            double mid = 0.5 * ((double)cm[i] + cm[i + 1]);
            ck_assert_int_eq(rp_adam8_nearest(cm, mid), i);
            ck_assert_int_eq(rp_adam8_nearest(cm, nextafter(mid, 2.0)), i + 1);
        }
    }
    ck_assert_int_eq(rp_adam8_nearest(cm, -3.0), 0);
    ck_assert_int_eq(rp_adam8_nearest(cm, 3.0), 255);
    ck_assert_int_eq(rp_adam8_nearest(cv, -1e-3), 0);
}
END_TEST

/* Quantizes one block and checks every element: its code is the nearest entry (brute force,
 * ties to the lower index), and |dequantized − x| <= half the gap of the two entries around
 * x/absmax, times absmax (plus float32 rounding of absmax). */
static void check_block(const float *code, int zero, const double *x, int n, const char *what) {
    uint8_t q[RP_ADAM8_BLOCK];
    float a;
    rp_adam8_quantize_block(code, zero, x, n, q, &a);
    double amax = 0;
    for (int i = 0; i < n; i++) amax = fmax(amax, fabs(x[i]));
    ck_assert_msg(a == (float)amax, "%s: absmax %g, expected %g", what, a, amax);
    for (int i = 0; i < n; i++) {
        if (a == 0) {
            ck_assert_msg(q[i] == zero, "%s: zero block, element %d has code %d", what, i, q[i]);
            continue;
        }
        double y = x[i] / a;
        int best = 0;
        for (int k = 1; k < 256; k++)
            if (fabs(code[k] - y) < fabs(code[best] - y)) best = k;
        ck_assert_msg(q[i] == best, "%s: element %d (x/absmax %.9g) has code %d, nearest is %d", what, i, y, q[i], best);
        int j = 0;
        while (j < 254 && code[j + 1] <= y) j++;
        double gap = (double)code[j + 1] - code[j];
        if (y < code[0] || y > code[255]) gap = 0; /* beyond the ends only by absmax's rounding */
        double err = fabs((double)code[q[i]] * a - x[i]);
        double bound = 0.5 * gap * a + 1e-7 * fabs(x[i]) + 1e-300;
        ck_assert_msg(err <= bound, "%s: element %d: error %.3g > half gap %.3g", what, i, err, bound);
    }
}

START_TEST(test_quantize_error) {
    float cm[RP_ADAM8_CODES], cv[RP_ADAM8_CODES];
    tables(cm, cv);
    double x[RP_ADAM8_BLOCK];
    uint64_t s = 12345;
    for (int rep = 0; rep < 50; rep++) { /* random normal-ish blocks, m signed and v = m² */
        double scale = pow(10.0, -8.0 + 8.0 * tu_uniform(&s));
        for (int i = 0; i < RP_ADAM8_BLOCK; i++) x[i] = scale * (tu_uniform(&s) + tu_uniform(&s) + tu_uniform(&s) - 1.5);
        int n = rep % 5 == 0 ? 77 : RP_ADAM8_BLOCK; /* a short last block */
        check_block(cm, RP_ADAM8_ZERO_M, x, n, "random m");
        for (int i = 0; i < n; i++) x[i] *= x[i];
        check_block(cv, RP_ADAM8_ZERO_V, x, n, "random v");
    }
    /* adversarial: all zero; one huge outlier among tiny values; only tiny values; exact
     * code values; values just beyond the smallest level */
    for (int i = 0; i < RP_ADAM8_BLOCK; i++) x[i] = 0;
    check_block(cm, RP_ADAM8_ZERO_M, x, RP_ADAM8_BLOCK, "all zero m");
    check_block(cv, RP_ADAM8_ZERO_V, x, RP_ADAM8_BLOCK, "all zero v");
    for (int i = 0; i < RP_ADAM8_BLOCK; i++) x[i] = 1e-9 * (tu_uniform(&s) - 0.5);
    x[17] = -1e3;
    check_block(cm, RP_ADAM8_ZERO_M, x, RP_ADAM8_BLOCK, "outlier m");
    for (int i = 0; i < RP_ADAM8_BLOCK; i++) x[i] = fabs(x[i]);
    check_block(cv, RP_ADAM8_ZERO_V, x, RP_ADAM8_BLOCK, "outlier v");
    for (int i = 0; i < RP_ADAM8_BLOCK; i++) x[i] = 1e-30 * (1 + tu_uniform(&s));
    check_block(cm, RP_ADAM8_ZERO_M, x, RP_ADAM8_BLOCK, "tiny m");
    check_block(cv, RP_ADAM8_ZERO_V, x, RP_ADAM8_BLOCK, "tiny v");
    for (int i = 0; i < RP_ADAM8_BLOCK; i++) x[i] = cm[i] * 0.5;
    check_block(cm, RP_ADAM8_ZERO_M, x, RP_ADAM8_BLOCK, "exact m codes");
    for (int i = 0; i < RP_ADAM8_BLOCK; i++) x[i] = cv[1] * (i + 1) * 0.01;
    x[0] = 1;
    check_block(cv, RP_ADAM8_ZERO_V, x, RP_ADAM8_BLOCK, "below the smallest v level");
}
END_TEST

/* ---- training ------------------------------------------------------------------------------ */

typedef struct sess {
    rwkvpeft_context *ctx;
    rwkvpeft_model *m;
    rwkvpeft_trainer *t;
} sess;

/* The tiny RWKV-6 model (random weights, seed 6) with LoRA r 3 + time,ln; AdamW with lr 3e-3,
 * weight decay 0.01, clipping at 1, the reference's LR groups. */
static sess sess_open(int optimizer) {
    sess s;
    s.ctx = tu_context("cpu");
    s.m = tm_tiny_model(s.ctx, 0, 6);
    tm_randomize(s.m, 13, 0);
    TU_OK(tm_attach(s.m, RWKVPEFT_PEFT_LORA, "time,ln", 0.0f, 0));
    rwkvpeft_train_params tp;
    rwkvpeft_train_params_init(&tp);
    tp.lr_init = tp.lr_final = 3e-3f;
    tp.weight_decay = 0.01f;
    tp.optimizer = optimizer;
    s.t = NULL;
    TU_OK(rwkvpeft_trainer_create(s.m, &tp, &s.t));
    return s;
}

static void sess_close(sess *s) {
    rwkvpeft_trainer_free(s->t);
    rwkvpeft_model_free(s->m);
    rwkvpeft_context_free(s->ctx);
}

/* One optimizer step on batch `k` (four fixed batches, cycled); returns the loss. */
static double sess_step(sess *s, int k) {
    enum { B = 2, T = 16 };
    int32_t in[B * T], tg[B * T];
    tm_make_batch(B, T, 1000 + (uint64_t)(k % 4), in, tg);
    rwkvpeft_batch b = tu_batch(B, T, in, tg);
    rwkvpeft_step_result r;
    r.struct_size = sizeof r;
    TU_OK(rwkvpeft_train_step(s->t, &b, &r));
    ck_assert(r.optimizer_step_taken);
    return r.loss;
}

/* The flat trainable buffer (float32 on the cpu backend). */
static float *sess_params(sess *s) {
    size_t n = (size_t)s->m->flat_numel;
    float *p = (float *)malloc(sizeof(float) * n);
    memcpy(p, s->m->flat, sizeof(float) * n);
    return p;
}

static double mean(const double *x, int a, int b) {
    double s = 0;
    for (int i = a; i < b; i++) s += x[i];
    return s / (b - a);
}

/* 40 steps of each optimizer from the same start.
 * - Step 1 from a fresh state is the same computation (the dequantized moments are exactly 0,
 *   and the parameter update uses the float32 moments before they are quantized), so the
 *   parameters after it are bit-identical to fp32 AdamW's.
 * - After step 2 they differ (the 8-bit moments entered), by a small fraction of the total
 *   parameter change: measured 1.5% (RMS); limit 10%. Most of it is v's code: within a
 *   decade its levels are linear, so low in a decade one step is up to ~56% of the value
 *   (9/16 at 10^-4..10^-3 of the block's absmax) — what the dynamic code trades for range.
 * - The loss curve tracks fp32 AdamW. At lr 3e-3 the fp32 loss goes 4.24 -> 1.51 in 40 steps
 *   and the 8-bit run stays within 0.002 nats of it at every step (x86-64, OpenBLAS), the
 *   means of the last 5 steps 0.06% apart; fp32 AdamW with the learning rate changed by 0.1%
 *   moves as much (0.003 nats), so this is the regime where the curve is smooth in its inputs.
 *   (At lr 1e-2 it is not: the same 0.1% change moved the curve by 0.08 nats, and a
 *   rounding-level change in the graph moved the 8-bit run's gap from 0.035 to 0.12 nats, so
 *   a comparison there measures chaos, not the quantizer.) Limits: 0.02 nats at every step
 *   and 1% on the last-5 mean, 10x the measurement for platform rounding; a broken quantizer
 *   (stale scales, codes off by one) moves the curve by far more. Both losses must fall. */
START_TEST(test_tracks_fp32_adam) {
    enum { S = 40 };
    double l32[S], l8[S];
    sess a = sess_open(RWKVPEFT_OPTIM_ADAMW), q = sess_open(RWKVPEFT_OPTIM_ADAMW_8BIT);
    int64_t n = a.m->flat_numel;
    ck_assert_int_eq(n, q.m->flat_numel);
    float *p0 = sess_params(&a);
    double worst = 0, rel2 = 0;
    for (int k = 0; k < S; k++) {
        l32[k] = sess_step(&a, k);
        l8[k] = sess_step(&q, k);
        worst = fmax(worst, fabs(l8[k] - l32[k]));
        if (k == 0 || k == 1) {
            float *pa = sess_params(&a), *pq = sess_params(&q);
            if (k == 0) {
                ck_assert_msg(memcmp(pa, pq, sizeof(float) * (size_t)n) == 0, "after step 1 the 8-bit parameters differ from fp32 AdamW's");
                ck_assert_msg(memcmp(pa, p0, sizeof(float) * (size_t)n) != 0, "step 1 changed nothing");
            } else {
                double d2 = 0, c2 = 0;
                for (int64_t i = 0; i < n; i++) {
                    d2 += ((double)pq[i] - pa[i]) * ((double)pq[i] - pa[i]);
                    c2 += ((double)pa[i] - p0[i]) * ((double)pa[i] - p0[i]);
                }
                rel2 = sqrt(d2 / c2);
                ck_assert_msg(rel2 > 0, "after step 2 the 8-bit run equals fp32 AdamW exactly: the 8-bit state is not used");
                ck_assert_msg(rel2 < 0.1, "after step 2 the parameters differ by %.3g of the total change (limit 0.1)", rel2);
            }
            free(pa);
            free(pq);
        }
    }
    double end32 = mean(l32, S - 5, S), end8 = mean(l8, S - 5, S);
    fprintf(stderr, "optim8: fp32 loss %.4f -> %.4f, 8-bit %.4f -> %.4f; max |diff| %.4f; last-5 means %.4f vs %.4f (%.2f%%); "
                    "step-2 parameter difference %.3g of the change\n",
            l32[0], l32[S - 1], l8[0], l8[S - 1], worst, end32, end8, 100 * fabs(end8 - end32) / end32, rel2);
    ck_assert_msg(end32 < 0.6 * mean(l32, 0, 5), "fp32 AdamW did not learn: %g -> %g", l32[0], l32[S - 1]);
    ck_assert_msg(end8 < 0.6 * mean(l8, 0, 5), "8-bit AdamW did not learn: %g -> %g", l8[0], l8[S - 1]);
    ck_assert_msg(worst <= 0.02, "8-bit AdamW's loss differs from fp32 AdamW's by %g nats (limit 0.02)", worst);
    ck_assert_msg(fabs(end8 - end32) <= 0.01 * end32, "final losses %g (8-bit) vs %g (fp32): more than 1%% apart", end8, end32);
    free(p0);
    sess_close(&a);
    sess_close(&q);
}
END_TEST

/* Save after 7 steps, load into a new trainer, 6 more steps: losses and parameters equal the
 * uninterrupted run's exactly. */
START_TEST(test_resume_exact) {
    enum { S1 = 7, S2 = 6 };
    char path[512];
    tu_tmppath(path, sizeof path, "optim8-state", ".safetensors");
    sess full = sess_open(RWKVPEFT_OPTIM_ADAMW_8BIT);
    double ref[S1 + S2];
    for (int k = 0; k < S1 + S2; k++) ref[k] = sess_step(&full, k);
    float *pref = sess_params(&full);

    sess a = sess_open(RWKVPEFT_OPTIM_ADAMW_8BIT);
    for (int k = 0; k < S1; k++) ck_assert(sess_step(&a, k) == ref[k]);
    TU_OK(rwkvpeft_trainer_save_state(a.t, path));
    sess_close(&a);

    sess b = sess_open(RWKVPEFT_OPTIM_ADAMW_8BIT);
    TU_OK(rwkvpeft_trainer_load_state(b.t, path));
    for (int k = S1; k < S1 + S2; k++) {
        double l = sess_step(&b, k);
        ck_assert_msg(l == ref[k], "step %d after the resume: loss %.17g, uninterrupted %.17g", k + 1, l, ref[k]);
    }
    float *pb = sess_params(&b);
    ck_assert_msg(memcmp(pb, pref, sizeof(float) * (size_t)b.m->flat_numel) == 0, "resumed parameters differ");
    free(pb);
    free(pref);
    sess_close(&b);
    sess_close(&full);
    unlink(path);
}
END_TEST

/* A state of one optimizer does not load into a trainer of the other (either way round):
 * RWKVPEFT_E_INVALID_ARGUMENT naming both. The trainer is left usable. */
START_TEST(test_state_of_other_optimizer) {
    char p32[512], p8[512];
    tu_tmppath(p32, sizeof p32, "optim8-fp32", ".safetensors");
    tu_tmppath(p8, sizeof p8, "optim8-8bit", ".safetensors");
    sess a = sess_open(RWKVPEFT_OPTIM_ADAMW), q = sess_open(RWKVPEFT_OPTIM_ADAMW_8BIT);
    sess_step(&a, 0);
    sess_step(&q, 0);
    TU_OK(rwkvpeft_trainer_save_state(a.t, p32));
    TU_OK(rwkvpeft_trainer_save_state(q.t, p8));
    ck_assert_int_eq(rwkvpeft_trainer_load_state(q.t, p32), RWKVPEFT_E_INVALID_ARGUMENT);
    const char *e = rwkvpeft_trainer_last_error(q.t);
    ck_assert_msg(strstr(e, "RWKVPEFT_OPTIM_ADAMW)") && strstr(e, "RWKVPEFT_OPTIM_ADAMW_8BIT"), "message: %s", e);
    ck_assert_int_eq(rwkvpeft_trainer_load_state(a.t, p8), RWKVPEFT_E_INVALID_ARGUMENT);
    e = rwkvpeft_trainer_last_error(a.t);
    ck_assert_msg(strstr(e, "RWKVPEFT_OPTIM_ADAMW)") && strstr(e, "RWKVPEFT_OPTIM_ADAMW_8BIT"), "message: %s", e);
    /* each loads its own */
    TU_OK(rwkvpeft_trainer_load_state(a.t, p32));
    TU_OK(rwkvpeft_trainer_load_state(q.t, p8));
    sess_step(&a, 1);
    sess_step(&q, 1);
    sess_close(&a);
    sess_close(&q);
    unlink(p32);
    unlink(p8);
}
END_TEST

/* The parameter: default fp32 AdamW; a caller built against the header before the field
 * (smaller struct_size) gets it whatever lies beyond; unknown values are refused. The
 * 8-bit state is ~2 bytes per trainable value instead of 8. */
START_TEST(test_params) {
    rwkvpeft_train_params tp;
    rwkvpeft_train_params_init(&tp);
    ck_assert_int_eq(tp.optimizer, RWKVPEFT_OPTIM_ADAMW);
    rwkvpeft_context *ctx = tu_context("cpu");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 6);
    TU_OK(tm_attach(m, RWKVPEFT_PEFT_LORA, "time,ln", 0.0f, 0));
    rwkvpeft_trainer *t = NULL;
    static const int32_t bad[] = {2, -1, 1000};
    for (int i = 0; i < 3; i++) {
        tp.optimizer = bad[i];
        ck_assert_int_eq(rwkvpeft_trainer_create(m, &tp, &t), RWKVPEFT_E_INVALID_ARGUMENT);
        ck_assert_ptr_null(t);
        ck_assert_msg(strstr(rwkvpeft_last_error(), "optimizer"), "message: %s", rwkvpeft_last_error());
    }
    tp.optimizer = 7; /* beyond an old caller's struct: not read */
    tp.struct_size = (uint32_t)offsetof(rwkvpeft_train_params, optimizer);
    TU_OK(rwkvpeft_trainer_create(m, &tp, &t));
    int64_t n = m->flat_numel;
    ck_assert_int_eq(rp_trainer_optimizer_bytes(t), 8 * n);
    rwkvpeft_trainer_free(t);
    rwkvpeft_train_params_init(&tp);
    tp.optimizer = RWKVPEFT_OPTIM_ADAMW_8BIT;
    TU_OK(rwkvpeft_trainer_create(m, &tp, &t));
    int64_t nb = (n + RP_ADAM8_BLOCK - 1) / RP_ADAM8_BLOCK;
    ck_assert_int_eq(rp_trainer_optimizer_bytes(t), 2 * n + 8 * nb + 2048);
    rwkvpeft_trainer_free(t);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("optim8");
    TCase *c = tcase_create("codes");
    tcase_add_test(c, test_code_tables);
    tcase_add_test(c, test_quantize_error);
    suite_add_tcase(s, c);
    TCase *t = tcase_create("train");
    tcase_set_timeout(t, 600);
    tcase_add_test(t, test_tracks_fp32_adam);
    tcase_add_test(t, test_resume_exact);
    tcase_add_test(t, test_state_of_other_optimizer);
    tcase_add_test(t, test_params);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
