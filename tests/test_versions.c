/* test_versions.c — RWKV-5 (x052) and RWKV-7 (x070) on the CPU backends: whole-model
 * gradients against finite differences (float64) for LoRA, full fine-tuning, gradient
 * checkpointing and RWKV-7 state tuning; stateful inference equals the full forward;
 * chunked (infctx, full mode) gradients equal the un-chunked ones; checkpoints round-trip
 * with the version detected from the keys; RWKV-5 state tuning is refused; float32 tracks
 * float64. */
#include <math.h>

#include "testmodel.h"

static void fd_case(int version, int method, const char *parts, float dropout, int full, int grad_cp, int B, int T) {
    rwkvpeft_context *ctx = tu_context("cpu64");
    rwkvpeft_model *m = tm_tiny_model_v(ctx, version, grad_cp, 7 + version);
    TU_OK(tm_attach(m, method, parts, dropout, full));
    tm_randomize(m, 99 + version, 0);
    rp_workspace *ws = tm_batch_ws(m, B, T, 5);
    tm_check_fd(m, ws, dropout > 0 ? 0x5eed : 0, method == RWKVPEFT_PEFT_STATE ? 12 : 3, 20, 0.5);
    rp_workspace_free(m, ws);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}

START_TEST(test_fd_v5_lora) { fd_case(5, RWKVPEFT_PEFT_LORA, "time,ln,emb,head", 0.25f, 0, 0, 2, 7); }
END_TEST
START_TEST(test_fd_v5_full_grad_cp) { fd_case(5, RWKVPEFT_PEFT_NONE, "", 0, 1, 1, 3, 5); }
END_TEST
START_TEST(test_fd_v7_lora) { fd_case(7, RWKVPEFT_PEFT_LORA, "ln,emb,head,att.x_,ffn.x_k", 0.25f, 0, 0, 2, 7); }
END_TEST
START_TEST(test_fd_v7_full_grad_cp) { fd_case(7, RWKVPEFT_PEFT_NONE, "", 0, 1, 1, 3, 5); }
END_TEST
START_TEST(test_fd_v7_state) { fd_case(7, RWKVPEFT_PEFT_STATE, "", 0, 0, 0, 2, 6); }
END_TEST
START_TEST(test_fd_v7_bone_bat) {
    fd_case(7, RWKVPEFT_PEFT_BONE, "ln", 0, 0, 0, 2, 5);
    fd_case(7, RWKVPEFT_PEFT_PISSA, "", 0, 0, 1, 2, 5);
}
END_TEST

/* Channel-mix widths off the usual 3.5C (RWKV-5/6): narrower than 3·dim_att, the time mix's
 * gradient buffers cannot live in its dead record (lib/rwkv.c time_mix_grads) and come from
 * the workspace; wider than 4C, ∂L/∂kk cannot live in the dxs slots (ffn_grad_home) and comes
 * from ws->dF — the tiny models above (F = 3.5C, and 4C for RWKV-7) take the aliased paths. */
static void fd_ffn_width(int version, int ffn_mult) {
    rwkvpeft_context *ctx = tu_context("cpu64");
    rwkvpeft_model_config c;
    tm_tiny_config(&c, version);
    c.dim_ffn = ffn_mult * c.n_embd;
    rwkvpeft_model_params mp;
    rwkvpeft_model_params_init(&mp);
    mp.grad_cp = 1;
    rwkvpeft_model *m = NULL;
    TU_OK(rwkvpeft_model_init(ctx, &c, &mp, 3 + version, &m));
    TU_OK(tm_attach(m, RWKVPEFT_PEFT_LORA, "ln,time", 0, 0));
    tm_randomize(m, 71 + version, 0);
    rp_workspace *ws = tm_batch_ws(m, 2, 6, 5);
    tm_check_fd(m, ws, 0, 3, 20, 0.5);
    rp_workspace_free(m, ws);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}

START_TEST(test_fd_narrow_ffn) {
    fd_ffn_width(5, 2);
    fd_ffn_width(6, 2);
    /* F > 4C: RWKV-5/6's ∂L/∂kk no longer fits the dxs slots (ffn_grad_home): ws->dF */
    fd_ffn_width(6, 5);
}
END_TEST

/* Feeding tokens chunk by chunk through the recurrent state gives the full forward's logits. */
static void stateful_case(int version) {
    rwkvpeft_context *ctx = tu_context("cpu64");
    rwkvpeft_model *m = tm_tiny_model_v(ctx, version, 0, 31);
    tm_randomize(m, 17, 0);
    tm_check_stateful(m);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}

START_TEST(test_stateful_v5_v7) {
    stateful_case(5);
    stateful_case(7);
}
END_TEST

/* infctx full mode: chunked gradients equal the un-chunked model's. */
static void chunk_case(int version, int method, int chunk) {
    rwkvpeft_context *ctx = tu_context("cpu64");
    rwkvpeft_model *m = tm_tiny_model_v(ctx, version, 0, 41);
    TU_OK(tm_attach(m, method, method == RWKVPEFT_PEFT_STATE ? "" : "ln", 0, 0));
    tm_randomize(m, 5, 0);
    enum { B = 2, T = 13 };
    int32_t in[B * T], tg[B * T];
    float w[B * T];
    tm_make_batch(B, T, 77, in, tg);
    rwkvpeft_batch rb = tu_batch(B, T, in, tg);
    double wsum;
    rp_err err;
    ck_assert_int_eq(rp_batch_weights(m, &rb, w, &wsum, &err), 0);
    double *g1 = calloc((size_t)m->flat_numel, sizeof(double)), *g2 = calloc((size_t)m->flat_numel, sizeof(double));
    rp_workspace *ws = NULL;
    ck_assert_int_eq(rp_workspace_create(m, B, T, 1, &ws), 0);
    ck_assert_int_eq(rp_workspace_set_batch(m, ws, B, T, in, tg, w), 0);
    ck_assert_int_eq(rp_forward_backward(m, ws, g1, 1.0f, 1e-4f / (B * T), 0, NULL), 0);
    double l1 = *(double *)rp_workspace_loss(ws);
    rp_workspace_free(m, ws);
    ck_assert_int_eq(rp_workspace_create(m, B, chunk, 1, &ws), 0);
    double l2 = 0;
    ck_assert_int_eq(rp_train_chunked(m, ws, in, tg, w, B, T, chunk, 1, g2, 1.0f, 1e-4f / (B * T), 0, &l2), 0);
    rp_workspace_free(m, ws);
    ck_assert_msg(fabs(l1 - l2) < 1e-10 * fmax(1, fabs(l1)), "RWKV-%d loss %.15g vs chunked %.15g", version, l1, l2);
    double num = 0, den = 0;
    for (int64_t i = 0; i < m->flat_numel; i++) {
        num = fmax(num, fabs(g1[i] - g2[i]));
        den = fmax(den, fabs(g1[i]));
    }
    ck_assert_msg(den > 0 && num <= 1e-9 * den, "RWKV-%d chunk %d: gradient diff %g of %g", version, chunk, num, den);
    free(g1);
    free(g2);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}

START_TEST(test_chunked_equals_unchunked) {
    chunk_case(5, RWKVPEFT_PEFT_LORA, 4);
    chunk_case(7, RWKVPEFT_PEFT_LORA, 5);
    chunk_case(7, RWKVPEFT_PEFT_STATE, 3);
}
END_TEST

/* Save → load: the version comes back from the keys and the logits are identical. */
static void round_trip_case(int version) {
    rwkvpeft_context *ctx = tu_context("cpu");
    rwkvpeft_model *m = tm_tiny_model_v(ctx, version, 0, 3);
    tm_randomize(m, 8, 0);
    char path[512];
    tu_tmppath(path, sizeof path, version == 7 ? "versions_v7" : "versions_v5", version == 7 ? ".pth" : ".safetensors");
    TU_OK(rwkvpeft_model_save(m, path, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_F32));
    rwkvpeft_model *m2 = NULL;
    TU_OK(rwkvpeft_model_load(ctx, path, NULL, &m2));
    rwkvpeft_model_info a, b;
    a.struct_size = b.struct_size = sizeof a;
    TU_OK(rwkvpeft_model_get_info(m, &a));
    TU_OK(rwkvpeft_model_get_info(m2, &b));
    ck_assert_int_eq(b.version, version);
    ck_assert_int_eq(b.n_layer, a.n_layer);
    ck_assert_int_eq(b.dim_ffn, a.dim_ffn);
    ck_assert_int_eq(b.dim_decay, a.dim_decay);
    ck_assert_int_eq(b.dim_w, a.dim_w);
    ck_assert_int_eq(b.dim_g, a.dim_g);
    if (version == 7) { /* C = 64: every width is the formula's floor of 32 */
        ck_assert_int_eq(b.dim_w, 32);
        ck_assert_int_eq(b.dim_a, 32);
        ck_assert_int_eq(b.dim_v, 32);
        ck_assert_int_eq(b.dim_g, 32);
    } else {
        ck_assert_int_eq(b.dim_w + b.dim_a + b.dim_v + b.dim_g, 0);
    }
    ck_assert(a.n_params == b.n_params);
    static float l1[2 * 5 * TM_VOCAB], l2[2 * 5 * TM_VOCAB];
    tm_logits(m, l1, 2, 5);
    tm_logits(m2, l2, 2, 5);
    ck_assert(memcmp(l1, l2, sizeof l1) == 0);
    rwkvpeft_model_free(m2);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}

START_TEST(test_checkpoint_round_trip) {
    round_trip_case(5);
    round_trip_case(7);
}
END_TEST

START_TEST(test_v5_state_refused_and_bad_config) { /* and over-long train_parts */
    rwkvpeft_context *ctx = tu_context("cpu");
    rwkvpeft_model *m = tm_tiny_model_v(ctx, 5, 0, 3);
    ck_assert_int_eq(tm_attach(m, RWKVPEFT_PEFT_STATE, "", 0, 0), RWKVPEFT_E_UNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(rwkvpeft_last_error(), "RWKV-5"));
    /* a train_parts list is never silently cut short */
    char many[400] = "";
    for (int i = 0; i < 33; i++) strcat(many, i ? ",p" : "p");
    ck_assert_int_eq(tm_attach(m, RWKVPEFT_PEFT_LORA, many, 0, 0), RWKVPEFT_E_INVALID_ARGUMENT);
    rwkvpeft_model_free(m);
    rwkvpeft_model_config c;
    tm_tiny_config(&c, 7);
    c.dim_ffn = 96; /* v7's channel mix is 4C */
    rwkvpeft_model *bad = NULL;
    ck_assert_int_eq(rwkvpeft_model_init(ctx, &c, NULL, 1, &bad), RWKVPEFT_E_INVALID_ARGUMENT);
    c.version = 4;
    c.dim_ffn = 0;
    ck_assert_int_eq(rwkvpeft_model_init(ctx, &c, NULL, 1, &bad), RWKVPEFT_E_UNSUPPORTED);
    ck_assert_ptr_null(bad);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* float32 backend tracks the float64 one (same model, LoRA, one step's gradient). */
START_TEST(test_cpu32_matches_cpu64) {
    for (int version = 5; version <= 7; version += 2) {
        float lg[2][2 * 5 * TM_VOCAB];
        for (int k = 0; k < 2; k++) {
            rwkvpeft_context *ctx = tu_context(k ? "cpu" : "cpu64");
            rwkvpeft_model *m = tm_tiny_model_v(ctx, version, 0, 11);
            tm_randomize(m, 12, 0);
            tm_logits(m, lg[k], 2, 5);
            rwkvpeft_model_free(m);
            rwkvpeft_context_free(ctx);
        }
        double d = tm_rel_diff(lg[1], lg[0], 2 * 5 * TM_VOCAB);
        ck_assert_msg(d < 1e-4, "RWKV-%d float32 vs float64 logits: %g", version, d);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("versions");
    TCase *fd = tcase_create("fd");
    tcase_set_timeout(fd, 600);
    tcase_add_test(fd, test_fd_v5_lora);
    tcase_add_test(fd, test_fd_v5_full_grad_cp);
    tcase_add_test(fd, test_fd_v7_lora);
    tcase_add_test(fd, test_fd_v7_full_grad_cp);
    tcase_add_test(fd, test_fd_v7_state);
    tcase_add_test(fd, test_fd_v7_bone_bat);
    tcase_add_test(fd, test_fd_narrow_ffn);
    suite_add_tcase(s, fd);
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_stateful_v5_v7);
    tcase_add_test(tc, test_chunked_equals_unchunked);
    tcase_add_test(tc, test_checkpoint_round_trip);
    tcase_add_test(tc, test_v5_state_refused_and_bad_config);
    tcase_add_test(tc, test_cpu32_matches_cpu64);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
