/* test_infctx.c — long-context (chunked) training: in full mode the chunked gradient equals
 * the un-chunked model's on the same sequence (several chunk sizes, including ones that do
 * not divide T; loss masks; LoRA + train_parts; state tuning); the truncated mode keeps the
 * reference's loss and detaches the states; a 64k-token sequence trains with finite loss. */
#include <math.h>

#include "testmodel.h"

/* state: 0 LoRA, 1 state tuning, or one of RWKVPEFT_PEFT_PISSA/BONE/BAT (+ 100) */
static rwkvpeft_model *tiny(rwkvpeft_context *ctx, int grad_cp, int state, uint64_t seed) {
    rwkvpeft_model *m = tm_tiny_model(ctx, grad_cp, seed);
    rwkvpeft_adapter_params ap;
    rwkvpeft_adapter_params_init(&ap);
    ap.method = state == 1 ? RWKVPEFT_PEFT_STATE : state >= 100 ? state - 100 : RWKVPEFT_PEFT_LORA;
    ap.r = ap.method == RWKVPEFT_PEFT_BONE || ap.method == RWKVPEFT_PEFT_BAT ? 8 : 3;
    ap.alpha = 6;
    ap.dropout = 0;
    ap.train_parts = state == 1 ? "" : "time,ln";
    ap.train_emb_head = 0;
    TU_OK(rwkvpeft_adapter_attach(m, &ap));
    tm_randomize(m, seed * 7 + 1, 0); /* every path carries signal */
    return m;
}

typedef struct batch {
    int B, T;
    int32_t *in, *tg;
    float *mask, *w;
} batch;

static batch make_batch(rwkvpeft_model *m, int B, int T, uint64_t seed, int with_mask) {
    batch b = {B, T, malloc(sizeof(int32_t) * (size_t)B * T), malloc(sizeof(int32_t) * (size_t)B * T),
               malloc(sizeof(float) * (size_t)B * T), malloc(sizeof(float) * (size_t)B * T)};
    uint64_t s = seed;
    for (int i = 0; i < B * T; i++) {
        b.in[i] = (int32_t)(tu_next(&s) % TM_VOCAB);
        b.tg[i] = (int32_t)(tu_next(&s) % TM_VOCAB);
        b.mask[i] = with_mask ? (float)(tu_next(&s) % 3) * 0.5f : 1.0f;
    }
    if (with_mask) b.tg[2] = RWKVPEFT_IGNORE_INDEX;
    rwkvpeft_batch rb = tu_batch(B, T, b.in, b.tg);
    rb.loss_mask = b.mask;
    double wsum;
    rp_err err;
    ck_assert_int_eq(rp_batch_weights(m, &rb, b.w, &wsum, &err), 0);
    return b;
}

static void free_batch(batch *b) {
    free(b->in);
    free(b->tg);
    free(b->mask);
    free(b->w);
}

static double *grads_of(rwkvpeft_model *m) {
    double *g = calloc((size_t)m->flat_numel, sizeof(double));
    return g;
}

/* un-chunked reference: gradient and loss of the whole batch */
static double plain(rwkvpeft_model *m, const batch *b, double *g) {
    rp_workspace *ws = NULL;
    ck_assert_int_eq(rp_workspace_create(m, b->B, b->T, 1, &ws), 0);
    ck_assert_int_eq(rp_workspace_set_batch(m, ws, b->B, b->T, b->in, b->tg, b->w), 0);
    memset(g, 0, sizeof(double) * (size_t)m->flat_numel);
    ck_assert_int_eq(rp_forward_backward(m, ws, g, 1.0f, (float)(1e-4 / (b->B * b->T)), 0, NULL), 0);
    double l = *(double *)rp_workspace_loss(ws);
    rp_workspace_free(m, ws);
    return l;
}

static double chunked(rwkvpeft_model *m, const batch *b, int chunk, int full, double *g) {
    rp_workspace *ws = NULL;
    ck_assert_int_eq(rp_workspace_create(m, b->B, chunk, 1, &ws), 0);
    memset(g, 0, sizeof(double) * (size_t)m->flat_numel);
    double loss = 0;
    ck_assert_int_eq(rp_train_chunked(m, ws, b->in, b->tg, b->w, b->B, b->T, chunk, full, g, 1.0f,
                                         (float)(1e-4 / (b->B * b->T)), 0, &loss),
                     0);
    rp_workspace_free(m, ws);
    return loss;
}

static double rel(const double *a, const double *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static void check_full_equals_plain(int grad_cp, int state) {
    rwkvpeft_context *ctx = tu_context("cpu64");
    rwkvpeft_model *m = tiny(ctx, grad_cp, state, 3 + (uint64_t)state);
    batch b = make_batch(m, 2, 13, 11, 1);
    double *g0 = grads_of(m), *g1 = grads_of(m);
    double l0 = plain(m, &b, g0);
    static const int chunks[] = {1, 4, 5, 6, 12};
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++) {
        double l1 = chunked(m, &b, chunks[k], 1, g1);
        ck_assert_msg(fabs(l1 - l0) <= 1e-12 * fabs(l0), "chunk %d: loss %.15g vs %.15g", chunks[k], l1, l0);
        double e = rel(g1, g0, m->flat_numel);
        ck_assert_msg(e < 1e-11, "chunk %d (grad_cp %d, state %d): relative gradient error %g", chunks[k], grad_cp, state, e);
    }
    free(g0);
    free(g1);
    free_batch(&b);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}

START_TEST(test_full_mode_equals_unchunked) { check_full_equals_plain(0, 0); }
END_TEST

START_TEST(test_full_mode_equals_unchunked_grad_cp) { check_full_equals_plain(1, 0); }
END_TEST

/* state tuning: the trained initial state is the first chunk's state */
START_TEST(test_full_mode_state_tuning) { check_full_equals_plain(0, 1); }
END_TEST

/* the other adapters go through the same chunked graph */
START_TEST(test_full_mode_pissa_bone_bat) {
    check_full_equals_plain(0, 100 + RWKVPEFT_PEFT_PISSA);
    check_full_equals_plain(0, 100 + RWKVPEFT_PEFT_BONE);
    check_full_equals_plain(1, 100 + RWKVPEFT_PEFT_BAT);
}
END_TEST

START_TEST(test_truncated_mode) {
    rwkvpeft_context *ctx = tu_context("cpu64");
    rwkvpeft_model *m = tiny(ctx, 0, 0, 9);
    batch b = make_batch(m, 2, 12, 5, 0);
    double *g0 = grads_of(m), *g1 = grads_of(m), *g2 = grads_of(m);
    double l0 = plain(m, &b, g0);
    /* one chunk: exactly the plain model */
    double l1 = chunked(m, &b, 12, 0, g1);
    ck_assert(fabs(l1 - l0) <= 1e-12 * fabs(l0));
    ck_assert(rel(g1, g0, m->flat_numel) < 1e-12);
    /* equal chunks, no mask: length-weighted chunk means equal the global mean, but no
     * gradient crosses a chunk boundary, so the gradient differs from the full one */
    double l2 = chunked(m, &b, 4, 0, g2);
    ck_assert_msg(fabs(l2 - l0) <= 1e-11 * fabs(l0), "%.15g vs %.15g", l2, l0);
    ck_assert(rel(g2, g0, m->flat_numel) > 1e-6);
    /* the first chunk alone: its gradient does not depend on the later chunks' tokens */
    batch c = make_batch(m, 2, 12, 5, 0);
    for (int bb = 0; bb < 2; bb++)
        for (int t = 8; t < 12; t++) c.in[bb * 12 + t] = (c.in[bb * 12 + t] + 1) % TM_VOCAB;
    double *g3 = grads_of(m);
    chunked(m, &c, 4, 0, g3);
    ck_assert(rel(g3, g2, m->flat_numel) > 0); /* the last chunk changed ... */
    free(g0);
    free(g1);
    free(g2);
    free(g3);
    free_batch(&b);
    free_batch(&c);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* A 64k-token sequence through the public trainer (float32, chunk 1024): finite loss; the
 * workspace is sized by the chunk, not by the sequence. */
START_TEST(test_64k_sequence) {
    rwkvpeft_context *ctx = tu_context("cpu");
    rwkvpeft_model *m = tiny(ctx, 1, 0, 21);
    enum { T = 65536 };
    int32_t *in = malloc(sizeof(int32_t) * T), *tg = malloc(sizeof(int32_t) * T);
    for (int i = 0; i < T; i++) {
        in[i] = (i * 7 + 3) % TM_VOCAB;
        tg[i] = (in[i] * 3 + 1) % TM_VOCAB;
    }
    rwkvpeft_train_params tp;
    rwkvpeft_train_params_init(&tp);
    tp.lr_init = tp.lr_final = 3e-3f;
    tp.chunk_ctx = 1024;
    rwkvpeft_trainer *t = NULL;
    TU_OK(rwkvpeft_trainer_create(m, &tp, &t));
    rwkvpeft_batch b = tu_batch(1, T, in, tg);
    double first = 0, last = 0;
    for (int s = 0; s < 3; s++) {
        rwkvpeft_step_result r;
        r.struct_size = sizeof r;
        TU_OK(rwkvpeft_train_step(t, &b, &r));
        ck_assert(isfinite(r.loss) && isfinite(r.grad_norm) && r.grad_norm > 0);
        if (s == 0) first = r.loss;
        last = r.loss;
    }
    ck_assert_msg(last < first, "loss %g -> %g", first, last);
    rwkvpeft_trainer_free(t);
    free(in);
    free(tg);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("infctx");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_full_mode_equals_unchunked);
    tcase_add_test(tc, test_full_mode_equals_unchunked_grad_cp);
    tcase_add_test(tc, test_full_mode_state_tuning);
    tcase_add_test(tc, test_full_mode_pissa_bone_bat);
    tcase_add_test(tc, test_truncated_mode);
    tcase_add_test(tc, test_64k_sequence);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
