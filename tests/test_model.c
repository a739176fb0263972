/* test_model.c — the RWKV-6 training core: whole-model gradients against finite
 * differences (float64 backend), gradient checkpointing, LoRA identity at B = 0, falling
 * loss, checkpoint and adapter round trips, exact resume, float32 vs float64. */
#include <math.h>

#include "testmodel.h"

/* Moves every parameter away from its (partly zero) init so that every gradient path is
 * exercised: matrices by ~1/sqrt(in), small tensors by 0.1, LoRA B by 0.1. */
static void randomize(rwkvpeft_model *m, uint64_t seed) { tm_randomize(m, seed, 0); }

START_TEST(test_fd_lora_all_parts) {
    rwkvpeft_context *ctx = tu_context("cpu64");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 7);
    TU_OK(tm_attach(m, RWKVPEFT_PEFT_LORA, "time,ln,emb,head", 0.25f, 0));
    randomize(m, 99);
    rp_workspace *ws = tm_batch_ws(m, 2, 7, 5);
    tm_check_fd(m, ws, 0x5eed, 4, 20, 0.5);
    rp_workspace_free(m, ws);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

START_TEST(test_fd_full_finetune_grad_cp) {
    rwkvpeft_context *ctx = tu_context("cpu64");
    rwkvpeft_model *m = tm_tiny_model(ctx, 1, 8);
    TU_OK(tm_attach(m, RWKVPEFT_PEFT_NONE, "", 0, 1));
    randomize(m, 77);
    rp_workspace *ws = tm_batch_ws(m, 3, 5, 6);
    tm_check_fd(m, ws, 0, 3, 20, 0.5);
    rp_workspace_free(m, ws);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* Gradient checkpointing recomputes blocks with the same masks: identical gradients. */
START_TEST(test_grad_cp_identical) {
    rwkvpeft_context *ctx = tu_context("cpu");
    float *g[2];
    int64_t nflat = 0;
    for (int cp = 0; cp < 2; cp++) {
        rwkvpeft_model *m = tm_tiny_model(ctx, cp, 11);
        TU_OK(tm_attach(m, RWKVPEFT_PEFT_LORA, "time,ln", 0.1f, 0));
        randomize(m, 5);
        rp_workspace *ws = tm_batch_ws(m, 2, 9, 3);
        nflat = m->flat_numel;
        g[cp] = (float *)malloc(sizeof(float) * (size_t)nflat);
        tm_loss_grad(m, ws, g[cp], 42);
        rp_workspace_free(m, ws);
        rwkvpeft_model_free(m);
    }
    ck_assert(memcmp(g[0], g[1], sizeof(float) * (size_t)nflat) == 0);
    free(g[0]);
    free(g[1]);
    rwkvpeft_context_free(ctx);
}
END_TEST

static void logits_of(rwkvpeft_model *m, float *out, int B, int T) {
    rp_workspace *ws = tm_batch_ws(m, B, T, 21);
    ck_assert_int_eq(rp_forward_backward(m, ws, NULL, 0, 0, 0, out), 0);
    rp_workspace_free(m, ws);
}

START_TEST(test_lora_zero_b_is_identity) {
    rwkvpeft_context *ctx = tu_context("cpu");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 3);
    randomize(m, 1);
    enum { B = 2, T = 6 };
    static float before[B * T * TM_VOCAB], after[B * T * TM_VOCAB];
    logits_of(m, before, B, T);
    TU_OK(tm_attach(m, RWKVPEFT_PEFT_LORA, "time,ln", 0.0f, 0));
    logits_of(m, after, B, T);
    ck_assert(memcmp(before, after, sizeof before) == 0);
    /* and the branch is live: a non-zero B changes the logits */
    rp_param *pb = rp_model_find_param(m, "blocks.1.att.value.lora_B", NULL);
    ck_assert_ptr_nonnull(pb);
    float *ones = (float *)malloc(sizeof(float) * (size_t)pb->numel);
    for (int64_t i = 0; i < pb->numel; i++) ones[i] = 0.5f;
    ck_assert_int_eq(rp_param_upload_f32(m, pb, -1, ones), 0);
    free(ones);
    logits_of(m, after, B, T);
    ck_assert(memcmp(before, after, sizeof before) != 0);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

static rwkvpeft_trainer *trainer(rwkvpeft_model *m, float lr) {
    rwkvpeft_train_params tp;
    rwkvpeft_train_params_init(&tp);
    tp.lr_init = lr;
    tp.lr_final = lr;
    rwkvpeft_trainer *t = NULL;
    TU_OK(rwkvpeft_trainer_create(m, &tp, &t));
    return t;
}

static double step(rwkvpeft_trainer *t, int B, int T, uint64_t seed) {
    int32_t in[256], tg[256];
    ck_assert_int_le(B * T, 256);
    uint64_t s = seed;
    for (int i = 0; i < B * T; i++) { /* a learnable pattern: next = (cur*7 + 3) mod V */
        in[i] = (int32_t)(tu_next(&s) % TM_VOCAB);
        tg[i] = (in[i] * 7 + 3) % TM_VOCAB;
    }
    rwkvpeft_batch b = tu_batch(B, T, in, tg);
    rwkvpeft_step_result r;
    r.struct_size = sizeof r;
    TU_OK(rwkvpeft_train_step(t, &b, &r));
    ck_assert(isfinite(r.loss));
    return r.loss;
}

START_TEST(test_loss_falls) {
    rwkvpeft_context *ctx = tu_context("cpu");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 4);
    rwkvpeft_adapter_params ap;
    rwkvpeft_adapter_params_init(&ap);
    ap.r = 8;
    ap.alpha = 16;
    TU_OK(rwkvpeft_adapter_attach(m, &ap)); /* fresh model: emb and head train too */
    rwkvpeft_trainer *t = trainer(m, 3e-3f);
    double first = 0, last = 0;
    for (int i = 0; i < 40; i++) {
        double l = step(t, 2, 16, 1000 + (uint64_t)(i % 4));
        if (i == 0) first = l;
        last = l;
    }
    ck_assert_msg(last < 0.6 * first, "loss %g -> %g did not fall enough", first, last);
    rwkvpeft_trainer_free(t);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

START_TEST(test_checkpoint_round_trip) {
    rwkvpeft_context *ctx = tu_context("cpu");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 9);
    randomize(m, 3);
    enum { B = 1, T = 5 };
    static float ref[B * T * TM_VOCAB], got[B * T * TM_VOCAB];
    logits_of(m, ref, B, T);
    const char *ext[2] = {".pth", ".safetensors"};
    for (int k = 0; k < 2; k++) {
        char path[512];
        tu_tmppath(path, sizeof path, "rt-model", ext[k]);
        TU_OK(rwkvpeft_model_save(m, path, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_F32));
        rwkvpeft_model *m2 = NULL;
        TU_OK(rwkvpeft_model_load(ctx, path, NULL, &m2));
        logits_of(m2, got, B, T);
        ck_assert(memcmp(ref, got, sizeof ref) == 0);
        rwkvpeft_model_info info;
        info.struct_size = sizeof info;
        TU_OK(rwkvpeft_model_get_info(m2, &info));
        ck_assert_int_eq(info.n_layer, 2);
        ck_assert_int_eq(info.n_embd, 64);
        ck_assert_int_eq(info.n_head, 2);
        ck_assert_int_eq(info.dim_ffn, 224);
        ck_assert_int_eq(info.vocab_size, TM_VOCAB);
        rwkvpeft_model_free(m2);
        /* bf16 storage: close, not equal */
        TU_OK(rwkvpeft_model_save(m, path, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_BF16));
        TU_OK(rwkvpeft_model_load(ctx, path, NULL, &m2));
        logits_of(m2, got, B, T);
        double md = 0;
        for (int i = 0; i < B * T * TM_VOCAB; i++) md = fmax(md, fabs(ref[i] - got[i]));
        ck_assert_msg(md < 0.05 && md > 0, "bf16 round trip max diff %g", md);
        rwkvpeft_model_free(m2);
        unlink(path);
    }
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

START_TEST(test_adapter_round_trip_and_resume) {
    rwkvpeft_context *ctx = tu_context("cpu");
    char base[512], ad[512], st[512];
    tu_tmppath(base, sizeof base, "rt-base", ".pth");
    tu_tmppath(ad, sizeof ad, "rt-adapter", ".pth");
    tu_tmppath(st, sizeof st, "rt-state", ".safetensors");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 12);
    TU_OK(rwkvpeft_model_save(m, base, RWKVPEFT_FORMAT_PTH, RWKVPEFT_DTYPE_F32));
    rwkvpeft_model_free(m);

    /* run A: 3 steps, save, 3 more */
    double la[3], lb[3];
    TU_OK(rwkvpeft_model_load(ctx, base, NULL, &m));
    TU_OK(tm_attach(m, RWKVPEFT_PEFT_LORA, "time,ln", 0.05f, 0));
    rwkvpeft_trainer *t = trainer(m, 1e-2f);
    for (int i = 0; i < 3; i++) step(t, 2, 8, 50 + (uint64_t)i);
    TU_OK(rwkvpeft_save_adapter(m, ad, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_F32));
    TU_OK(rwkvpeft_trainer_save_state(t, st));
    for (int i = 0; i < 3; i++) la[i] = step(t, 2, 8, 60 + (uint64_t)i);
    enum { B = 1, T = 5 };
    static float ref[B * T * TM_VOCAB], got[B * T * TM_VOCAB];
    rwkvpeft_trainer_free(t);
    rwkvpeft_model_free(m);

    /* run B: fresh model, load adapter + state, same 3 steps: identical losses */
    TU_OK(rwkvpeft_model_load(ctx, base, NULL, &m));
    TU_OK(tm_attach(m, RWKVPEFT_PEFT_LORA, "time,ln", 0.05f, 0));
    TU_OK(rwkvpeft_adapter_load(m, ad));
    t = trainer(m, 1e-2f);
    TU_OK(rwkvpeft_trainer_load_state(t, st));
    for (int i = 0; i < 3; i++) lb[i] = step(t, 2, 8, 60 + (uint64_t)i);
    for (int i = 0; i < 3; i++) ck_assert_msg(la[i] == lb[i], "step %d: %.9g vs %.9g", i, la[i], lb[i]);
    rwkvpeft_trainer_free(t);

    /* the adapter file alone reproduces the trained logits */
    logits_of(m, ref, B, T);
    TU_OK(rwkvpeft_save_adapter(m, ad, RWKVPEFT_FORMAT_SAFETENSORS, RWKVPEFT_DTYPE_F32));
    rwkvpeft_model *m2 = NULL;
    TU_OK(rwkvpeft_model_load(ctx, base, NULL, &m2));
    TU_OK(tm_attach(m2, RWKVPEFT_PEFT_LORA, "time,ln", 0.05f, 0));
    TU_OK(rwkvpeft_adapter_load(m2, ad));
    logits_of(m2, got, B, T);
    ck_assert(memcmp(ref, got, sizeof ref) == 0);
    rwkvpeft_model_free(m2);

    /* a state file does not fit a different adapter layout */
    TU_OK(rwkvpeft_model_load(ctx, base, NULL, &m2));
    TU_OK(tm_attach(m2, RWKVPEFT_PEFT_LORA, "ln", 0.05f, 0));
    t = trainer(m2, 1e-2f);
    ck_assert_int_eq(rwkvpeft_trainer_load_state(t, st), RWKVPEFT_E_SHAPE);
    rwkvpeft_trainer_free(t);
    rwkvpeft_model_free(m2);
    rwkvpeft_model_free(m);
    unlink(base);
    unlink(ad);
    unlink(st);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* float32 backend against the float64 reference on the same weights and batch. */
START_TEST(test_cpu32_matches_cpu64) {
    rwkvpeft_context *c32 = tu_context("cpu"), *c64 = tu_context("cpu64");
    char path[512];
    tu_tmppath(path, sizeof path, "x32-64", ".safetensors");
    rwkvpeft_model *m = tm_tiny_model(c64, 0, 14);
    randomize(m, 8);
    TU_OK(rwkvpeft_model_save(m, path, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_F32));
    rwkvpeft_model_free(m);
    double *g[2];
    int64_t nflat = 0;
    rwkvpeft_context *cs[2] = {c32, c64};
    for (int k = 0; k < 2; k++) {
        TU_OK(rwkvpeft_model_load(cs[k], path, NULL, &m));
        TU_OK(tm_attach(m, RWKVPEFT_PEFT_LORA, "time,ln", 0.0f, 0));
        rp_param *pb = rp_model_find_param(m, "blocks.0.ffn.key.lora_B", NULL);
        float *v = (float *)malloc(sizeof(float) * (size_t)pb->numel);
        for (int64_t i = 0; i < pb->numel; i++) v[i] = 0.01f * (float)(i % 7);
        rp_param_upload_f32(m, pb, -1, v);
        free(v);
        rp_workspace *ws = tm_batch_ws(m, 2, 9, 4);
        nflat = m->flat_numel;
        g[k] = (double *)malloc(sizeof(double) * (size_t)nflat);
        void *raw = malloc((size_t)nflat * 8);
        tm_loss_grad(m, ws, raw, 0);
        for (int64_t i = 0; i < nflat; i++) g[k][i] = k ? ((double *)raw)[i] : ((float *)raw)[i];
        free(raw);
        rp_workspace_free(m, ws);
        rwkvpeft_model_free(m);
    }
    double num = 0, den = 0;
    for (int64_t i = 0; i < nflat; i++) {
        num += (g[0][i] - g[1][i]) * (g[0][i] - g[1][i]);
        den += g[1][i] * g[1][i];
    }
    ck_assert_msg(den > 0 && sqrt(num / den) < 1e-4, "relative gradient error %g", sqrt(num / den));
    free(g[0]);
    free(g[1]);
    unlink(path);
    rwkvpeft_context_free(c32);
    rwkvpeft_context_free(c64);
}
END_TEST

START_TEST(test_misuse_is_reported) {
    rwkvpeft_context *ctx = tu_context("cpu");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 1);
    rwkvpeft_trainer *t = NULL;
    ck_assert_int_eq(rwkvpeft_trainer_create(m, NULL, &t), RWKVPEFT_E_STATE);
    ck_assert_ptr_null(t);
    ck_assert_int_eq(rwkvpeft_save_adapter(m, "/tmp/x.pth", 0, 0), RWKVPEFT_E_STATE);
    rwkvpeft_adapter_params ap;
    rwkvpeft_adapter_params_init(&ap);
    ap.r = 0;
    ck_assert_int_eq(rwkvpeft_adapter_attach(m, &ap), RWKVPEFT_E_INVALID_ARGUMENT);
    ap.r = 4;
    ap.dropout = 1.5f;
    ck_assert_int_eq(rwkvpeft_adapter_attach(m, &ap), RWKVPEFT_E_INVALID_ARGUMENT);
    ap.dropout = 0;
    ap.method = 77;
    ck_assert_int_eq(rwkvpeft_adapter_attach(m, &ap), RWKVPEFT_E_UNSUPPORTED);
    ap.method = RWKVPEFT_PEFT_LORA;
    ap.train_parts = "maa_k"; /* selects part of a pack */
    ck_assert_int_eq(rwkvpeft_adapter_attach(m, &ap), RWKVPEFT_E_UNSUPPORTED);
    ck_assert(strstr(rwkvpeft_last_error(), "time_maa") != NULL);
    ap.train_parts = "time,ln";
    TU_OK(rwkvpeft_adapter_attach(m, &ap));
    ck_assert_int_eq(rwkvpeft_adapter_attach(m, &ap), RWKVPEFT_E_STATE);
    t = trainer(m, 1e-3f);
    int32_t in[4] = {1, 2, 3, TM_VOCAB}, tg[4] = {1, 2, 3, 4};
    float mask[4] = {1, 1, NAN, 1};
    rwkvpeft_batch b = tu_batch(1, 4, in, tg);
    ck_assert_int_eq(rwkvpeft_train_step(t, &b, NULL), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert(strstr(rwkvpeft_trainer_last_error(t), "outside the vocabulary") != NULL);
    in[3] = 0;
    tg[2] = -5;
    ck_assert_int_eq(rwkvpeft_train_step(t, &b, NULL), RWKVPEFT_E_INVALID_ARGUMENT);
    tg[2] = 3;
    b.loss_mask = mask;
    ck_assert_int_eq(rwkvpeft_train_step(t, &b, NULL), RWKVPEFT_E_INVALID_ARGUMENT);
    mask[2] = 0;
    TU_OK(rwkvpeft_train_step(t, &b, NULL));
    b.seq_len = 0;
    ck_assert_int_eq(rwkvpeft_train_step(t, &b, NULL), RWKVPEFT_E_INVALID_ARGUMENT);
    /* a model with a trainer cannot be freed underneath it (nothing is freed, logged) */
    rwkvpeft_trainer_free(t);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* The recurrent form (chunks of any size carrying shift and WKV states) gives the same
 * logits as the parallel forward over the whole sequence; greedy generation follows. */
START_TEST(test_stateful_inference_matches_forward) {
    rwkvpeft_context *ctx = tu_context("cpu64");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 31);
    TU_OK(tm_attach(m, RWKVPEFT_PEFT_LORA, "time,ln", 0.0f, 0));
    randomize(m, 17);
    tm_check_stateful(m);
    enum { T = 11 };
    int32_t ids[T];
    uint64_t s = 3;
    for (int i = 0; i < T; i++) ids[i] = (int32_t)(tu_next(&s) % TM_VOCAB);
    /* greedy generation: each new id is the argmax of the full forward over prompt+output */
    rwkvpeft_generate_params gp;
    rwkvpeft_generate_params_init(&gp);
    gp.temperature = 0;
    gp.max_new_tokens = 5;
    gp.stop_token = -1;
    int32_t out[8], seq[T + 8];
    size_t n_out = 0;
    TU_OK(rwkvpeft_generate(m, ids, 4, &gp, out, 8, &n_out));
    ck_assert_int_eq((int)n_out, 5);
    memcpy(seq, ids, 4 * sizeof(int32_t));
    memcpy(seq + 4, out, n_out * sizeof(int32_t));
    static float all[(T + 8) * TM_VOCAB];
    TU_OK(rwkvpeft_model_logits(m, seq, 1, 4 + (int)n_out - 1, all));
    for (size_t k = 0; k < n_out; k++) {
        const float *row = all + (3 + k) * TM_VOCAB;
        int best = 0;
        for (int j = 1; j < TM_VOCAB; j++)
            if (row[j] > row[best]) best = j;
        ck_assert_int_eq(out[k], best);
    }
    /* sampling is deterministic for a seed and stays in the vocabulary */
    int32_t o1[8], o2[8];
    size_t n1, n2;
    gp.temperature = 1.0f;
    gp.top_p = 0.9f;
    gp.seed = 5;
    TU_OK(rwkvpeft_generate(m, ids, 3, &gp, o1, 8, &n1));
    TU_OK(rwkvpeft_generate(m, ids, 3, &gp, o2, 8, &n2));
    ck_assert_int_eq((int)n1, (int)n2);
    ck_assert(memcmp(o1, o2, n1 * sizeof(int32_t)) == 0);
    for (size_t k = 0; k < n1; k++) ck_assert(o1[k] >= 0 && o1[k] < TM_VOCAB);
    int32_t bad = TM_VOCAB;
    ck_assert_int_eq(rwkvpeft_generate(m, &bad, 1, &gp, o1, 8, &n1), RWKVPEFT_E_INVALID_ARGUMENT);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* a and b, given the same trainable values (tm_randomize with `seed`), have the same loss and
 * gradients, bit for bit, on the batch of `batch_seed`. */
static void check_same_loss_grads(rwkvpeft_model *a, rwkvpeft_model *b, uint64_t seed, uint64_t batch_seed, int B, int T) {
    tm_randomize(a, seed, 1);
    tm_randomize(b, seed, 1);
    rp_workspace *wa = tm_batch_ws(a, B, T, batch_seed), *wb = tm_batch_ws(b, B, T, batch_seed);
    size_t gbytes = (size_t)a->flat_numel * rp_dtype_size(a->be->ops->par_dtype);
    void *ga = malloc(gbytes), *gb = malloc(gbytes);
    double lossa = tm_loss_grad(a, wa, ga, 0), lossb = tm_loss_grad(b, wb, gb, 0);
    ck_assert_msg(lossa == lossb, "RWKV-%d: loss %.9g vs %.9g", a->version, lossa, lossb);
    ck_assert_msg(memcmp(ga, gb, gbytes) == 0, "RWKV-%d: gradients differ", a->version);
    free(ga);
    free(gb);
    rp_workspace_free(a, wa);
    rp_workspace_free(b, wb);
}

/* rwkvpeft_model_params.embedding_on_host: a frozen emb.weight lives in host memory and the
 * batch's rows are gathered there; logits, losses, gradients and recurrent inference equal
 * those of the same model with emb on the device, for every version. An adapter that trains
 * emb takes it back to the device; a merge (emb frozen again) returns it to the host. */
START_TEST(test_embedding_on_host) {
    enum { B = 2, T = 5, NL = B * T * TM_VOCAB };
    static float la[NL], lb[NL];
    rwkvpeft_context *ctx = tu_context("cpu");
    for (int version = 5; version <= 7; version++) {
        rwkvpeft_model *a = tm_tiny_model_p(ctx, version, 1, 7, 0), *b = tm_tiny_model_p(ctx, version, 1, 7, 1);
        ck_assert_ptr_null(a->emb->host);
        ck_assert_ptr_nonnull(b->emb->host);
        ck_assert_ptr_null(b->emb->data);
        tm_logits(a, la, B, T);
        tm_logits(b, lb, B, T);
        ck_assert_msg(memcmp(la, lb, sizeof la) == 0, "RWKV-%d: logits differ before any adapter", version);
        /* LoRA, emb frozen: stays on the host; the same loss and gradients */
        TU_OK(tm_attach(a, RWKVPEFT_PEFT_LORA, "time,ln", 0, 0));
        TU_OK(tm_attach(b, RWKVPEFT_PEFT_LORA, "time,ln", 0, 0));
        ck_assert_ptr_nonnull(b->emb->host);
        check_same_loss_grads(a, b, 11, 3, B, T);
        /* recurrent inference (rp_infer) */
        rp_workspace *ia = NULL, *ib = NULL;
        rp_infer_state *sa = NULL, *sb = NULL;
        ck_assert_int_eq(rp_workspace_create(a, 1, 3, 0, &ia), 0);
        ck_assert_int_eq(rp_workspace_create(b, 1, 3, 0, &ib), 0);
        ck_assert_int_eq(rp_infer_state_create(a, 1, &sa), 0);
        ck_assert_int_eq(rp_infer_state_create(b, 1, &sb), 0);
        const int32_t ids[3] = {5, TM_VOCAB - 1, 0};
        ck_assert_int_eq(rp_infer(a, ia, sa, ids, 3, la), 0);
        ck_assert_int_eq(rp_infer(b, ib, sb, ids, 3, lb), 0);
        ck_assert(memcmp(la, lb, sizeof(float) * TM_VOCAB) == 0);
        const int32_t bad = TM_VOCAB;
        ck_assert_int_eq(rp_infer(b, ib, sb, &bad, 1, lb), RWKVPEFT_E_INVALID_ARGUMENT);
        rp_infer_state_free(a, sa);
        rp_infer_state_free(b, sb);
        rp_workspace_free(a, ia);
        rp_workspace_free(b, ib);
        /* merge: emb stays frozen and on the host; the merged models agree */
        TU_OK(rwkvpeft_model_merge(a));
        TU_OK(rwkvpeft_model_merge(b));
        ck_assert_ptr_nonnull(b->emb->host);
        tm_logits(a, la, B, T);
        tm_logits(b, lb, B, T);
        ck_assert_msg(memcmp(la, lb, sizeof la) == 0, "RWKV-%d: merged logits differ", version);
        rwkvpeft_model_free(a);
        rwkvpeft_model_free(b);
    }
    /* an adapter that trains emb brings it back to the device: the same gradients */
    rwkvpeft_model *a = tm_tiny_model_p(ctx, 6, 0, 9, 0), *b = tm_tiny_model_p(ctx, 6, 0, 9, 1);
    TU_OK(tm_attach(a, RWKVPEFT_PEFT_LORA, "emb,ln", 0, 0));
    TU_OK(tm_attach(b, RWKVPEFT_PEFT_LORA, "emb,ln", 0, 0));
    ck_assert_ptr_null(b->emb->host);
    ck_assert_ptr_nonnull(b->emb->data);
    ck_assert(b->emb->trainable);
    check_same_loss_grads(a, b, 13, 4, B, T);
    /* merged (emb frozen again): back to the host */
    TU_OK(rwkvpeft_model_merge(b));
    ck_assert_ptr_nonnull(b->emb->host);
    rwkvpeft_model_free(a);
    rwkvpeft_model_free(b);
    /* only 0 and 1 */
    rwkvpeft_model_config c;
    tm_tiny_config(&c, 6);
    rwkvpeft_model_params mp;
    rwkvpeft_model_params_init(&mp);
    mp.embedding_on_host = 2;
    rwkvpeft_model *m = NULL;
    ck_assert_int_eq(rwkvpeft_model_init(ctx, &c, &mp, 1, &m), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_ptr_null(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

int main(void) {
    Suite *s = suite_create("model");
    /* "fd": the finite-difference checks (many forward passes in float64; skipped under
     * valgrind by CK_RUN_CASE=core); "core": everything else */
    TCase *fd = tcase_create("fd");
    tcase_set_timeout(fd, 600);
    tcase_add_test(fd, test_fd_lora_all_parts);
    tcase_add_test(fd, test_fd_full_finetune_grad_cp);
    suite_add_tcase(s, fd);
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_grad_cp_identical);
    tcase_add_test(tc, test_lora_zero_b_is_identity);
    tcase_add_test(tc, test_loss_falls);
    tcase_add_test(tc, test_checkpoint_round_trip);
    tcase_add_test(tc, test_adapter_round_trip_and_resume);
    tcase_add_test(tc, test_cpu32_matches_cpu64);
    tcase_add_test(tc, test_misuse_is_reported);
    tcase_add_test(tc, test_stateful_inference_matches_forward);
    tcase_add_test(tc, test_embedding_on_host);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
