/* test_peft.c — every PEFT method of the reference (spec §3): whole-model gradients against
 * finite differences on the float64 backend (PiSSA, Bone with in % r != 0, Bat, state
 * tuning with B > 1), adapter key names and shapes, PiSSA's init (W_res + B₀A₀ = W, the
 * randomized SVD against an exact one, init files), merging (in place and file to file)
 * against the attached adapter's logits, and adapters written by an independent PyTorch
 * implementation of the spec (tests/parity/make_peft_adapters.py → tests/data/peft/). */
#include <math.h>

#include "model.h"
#include "tensorfile.h"
#include "testmodel.h"

/* Moves parameters away from their (partly zero) values: matrices by ~1/sqrt(in), small
 * tensors by 0.1 (adapter tensors included when only_adapter is 0 or they are adapters). */
static void randomize(rwkvpeft_model *m, uint64_t seed, int only_adapter) { tm_randomize(m, seed, only_adapter); }

static rwkvpeft_adapter_params aparams(int method, int r, const char *parts) {
    rwkvpeft_adapter_params ap;
    rwkvpeft_adapter_params_init(&ap);
    ap.method = method;
    ap.r = r;
    ap.alpha = 6;
    ap.dropout = 0;
    ap.train_parts = parts;
    ap.train_emb_head = 0;
    return ap;
}

static void attach(rwkvpeft_model *m, int method, int r, const char *parts) {
    rwkvpeft_adapter_params ap = aparams(method, r, parts);
    TU_OK(rwkvpeft_adapter_attach(m, &ap));
}

/* ------------------------------------------------------------------------------------ */
/* finite differences (cpu64)                                                           */
/* ------------------------------------------------------------------------------------ */

START_TEST(test_fd_pissa) {
    rwkvpeft_context *ctx = tu_context("cpu64");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 7);
    randomize(m, 99, 0); /* a non-trivial W to decompose */
    attach(m, RWKVPEFT_PEFT_PISSA, 3, "ln");
    ck_assert_float_eq(m->layers[0].lin[RP_LIN_ATT_K].scale, 1.0f);
    randomize(m, 5, 1);
    rp_workspace *ws = tm_batch_ws(m, 2, 7, 5);
    tm_check_fd(m, ws, 0, 3, 10, 2.0 / 3);
    rp_workspace_free(m, ws);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* Bone with r = 5: n_embd 64 and dim_ffn 224 are not multiples, so the zero-padded last
 * group is exercised; W of the receptance linears trains too (dW through the branch). */
START_TEST(test_fd_bone) {
    rwkvpeft_context *ctx = tu_context("cpu64");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 8);
    attach(m, RWKVPEFT_PEFT_BONE, 5, "ln,receptance.weight");
    ck_assert_int_eq((int)m->layers[1].lin[RP_LIN_FFN_V].D->shape[0], 5);
    ck_assert_int_eq((int)m->layers[1].lin[RP_LIN_FFN_V].D->shape[1], 64);
    randomize(m, 77, 0);
    rp_workspace *ws = tm_batch_ws(m, 2, 6, 6);
    tm_check_fd(m, ws, 0, 3, 10, 2.0 / 3);
    rp_workspace_free(m, ws);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* Bat with r = 8 (divides 64 and 224) under gradient checkpointing; the key linears' W
 * trains too (dW = dyᵀ·x̃). */
START_TEST(test_fd_bat) {
    rwkvpeft_context *ctx = tu_context("cpu64");
    rwkvpeft_model *m = tm_tiny_model(ctx, 1, 9);
    attach(m, RWKVPEFT_PEFT_BAT, 8, "ln,key.weight");
    rp_param *d = m->layers[0].lin[RP_LIN_FFN_V].D;
    ck_assert_int_eq(d->ndim, 3);
    ck_assert_int_eq((int)d->shape[0], 224 / 8);
    randomize(m, 78, 0);
    rp_workspace *ws = tm_batch_ws(m, 2, 6, 7);
    tm_check_fd(m, ws, 0, 3, 10, 2.0 / 3);
    rp_workspace_free(m, ws);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* State tuning with B = 3: the shared initial state's gradient is the sum over sequences. */
START_TEST(test_fd_state) {
    rwkvpeft_context *ctx = tu_context("cpu64");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 10);
    randomize(m, 79, 0);
    attach(m, RWKVPEFT_PEFT_STATE, 0, "time,ln,emb");
    int n_tr = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].trainable) {
            ck_assert(strstr(m->params[i].name, "att.time_state") != NULL);
            n_tr++;
        }
    ck_assert_int_eq(n_tr, 2); /* train_parts and emb/head are ignored (spec §3.5) */
    randomize(m, 80, 1);
    rp_workspace *ws = tm_batch_ws(m, 3, 5, 8);
    tm_check_fd(m, ws, 0, 24, 10, 2.0 / 3);
    rp_workspace_free(m, ws);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* attach rules, key names and shapes                                                   */
/* ------------------------------------------------------------------------------------ */

START_TEST(test_attach_errors) {
    rwkvpeft_context *ctx = tu_context("cpu");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 1);
    rwkvpeft_adapter_params ap = aparams(RWKVPEFT_PEFT_BAT, 6, "");
    ck_assert_int_eq(rwkvpeft_adapter_attach(m, &ap), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert_msg(strstr(rwkvpeft_last_error(), "divide") != NULL, "%s", rwkvpeft_last_error());
    ap = aparams(RWKVPEFT_PEFT_BONE, 4, "");
    ap.key_name = "lora";
    ck_assert_int_eq(rwkvpeft_adapter_attach(m, &ap), RWKVPEFT_E_INVALID_ARGUMENT);
    ap = aparams(RWKVPEFT_PEFT_PISSA, 65, ""); /* > n_embd */
    ck_assert_int_eq(rwkvpeft_adapter_attach(m, &ap), RWKVPEFT_E_INVALID_ARGUMENT);
    ap = aparams(RWKVPEFT_PEFT_STATE, 0, "");
    ap.full_finetune = 1;
    ck_assert_int_eq(rwkvpeft_adapter_attach(m, &ap), RWKVPEFT_E_INVALID_ARGUMENT);
    ap = aparams(6, 4, "");
    ck_assert_int_eq(rwkvpeft_adapter_attach(m, &ap), RWKVPEFT_E_UNSUPPORTED);
    ck_assert_int_eq(rwkvpeft_pissa_save_init(m, "/tmp/never.pth", RWKVPEFT_FORMAT_AUTO), RWKVPEFT_E_STATE);
    ck_assert_int_eq(rwkvpeft_model_merge(m), RWKVPEFT_E_STATE);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

typedef struct key_case {
    int method, r;
    const char *key_name;
} key_case;

/* Saved adapter = exactly the reference's keys and shapes (spec §3.2-§3.5, §3.7). */
START_TEST(test_adapter_keys_and_shapes) {
    static const key_case cases[] = {{RWKVPEFT_PEFT_LORA, 4, NULL},  {RWKVPEFT_PEFT_PISSA, 4, NULL},
                                     {RWKVPEFT_PEFT_BONE, 16, NULL}, {RWKVPEFT_PEFT_BONE, 16, "bone"},
                                     {RWKVPEFT_PEFT_BAT, 16, NULL},  {RWKVPEFT_PEFT_STATE, 0, NULL}};
    static const char *mods[8] = {"att.receptance", "att.key", "att.value", "att.gate", "att.output",
                                  "ffn.key",        "ffn.receptance", "ffn.value"};
    static const int in_of[8] = {64, 64, 64, 64, 64, 64, 64, 224}, out_of[8] = {64, 64, 64, 64, 64, 224, 64, 64};
    rwkvpeft_context *ctx = tu_context("cpu");
    char path[512];
    tu_tmppath(path, sizeof path, "peft-keys", ".safetensors");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const key_case *kc = &cases[c];
        rwkvpeft_model *m = tm_tiny_model(ctx, 0, 2);
        rwkvpeft_adapter_params ap = aparams(kc->method, kc->r, "");
        ap.key_name = kc->key_name;
        TU_OK(rwkvpeft_adapter_attach(m, &ap));
        TU_OK(rwkvpeft_save_adapter(m, path, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_BF16));
        rp_tensorfile *f = NULL;
        rp_err err;
        ck_assert_int_eq(rp_tensorfile_open(path, &f, &err), 0);
        int expect = kc->method == RWKVPEFT_PEFT_STATE ? 2 : kc->method <= RWKVPEFT_PEFT_PISSA ? 32 : 16;
        ck_assert_int_eq(f->count, expect);
        for (int l = 0; l < 2; l++) {
            char name[128];
            if (kc->method == RWKVPEFT_PEFT_STATE) {
                snprintf(name, sizeof name, "blocks.%d.att.time_state", l);
                const rp_named_tensor *t = rp_tensorfile_find(f, name);
                ck_assert_ptr_nonnull(t);
                ck_assert_int_eq(t->ndim, 3);
                ck_assert(t->shape[0] == 2 && t->shape[1] == 32 && t->shape[2] == 32);
                continue;
            }
            for (int i = 0; i < 8; i++) {
                const rp_named_tensor *t;
                if (kc->method <= RWKVPEFT_PEFT_PISSA) {
                    snprintf(name, sizeof name, "blocks.%d.%s.lora_A", l, mods[i]);
                    ck_assert_ptr_nonnull(t = rp_tensorfile_find(f, name));
                    ck_assert(t->ndim == 2 && t->shape[0] == kc->r && t->shape[1] == in_of[i]);
                    snprintf(name, sizeof name, "blocks.%d.%s.lora_B", l, mods[i]);
                    ck_assert_ptr_nonnull(t = rp_tensorfile_find(f, name));
                    ck_assert(t->ndim == 2 && t->shape[0] == out_of[i] && t->shape[1] == kc->r);
                } else {
                    snprintf(name, sizeof name, "blocks.%d.%s.%s", l, mods[i], kc->key_name ? kc->key_name : "disha");
                    ck_assert_msg((t = rp_tensorfile_find(f, name)) != NULL, "missing %s", name);
                    if (kc->method == RWKVPEFT_PEFT_BONE)
                        ck_assert(t->ndim == 2 && t->shape[0] == kc->r && t->shape[1] == out_of[i]);
                    else
                        ck_assert(t->ndim == 3 && t->shape[0] == in_of[i] / kc->r && t->shape[1] == kc->r &&
                                  t->shape[2] == kc->r);
                }
            }
        }
        rp_tensorfile_close(f);
        if (kc->method == RWKVPEFT_PEFT_PISSA) {
            TU_OK(rwkvpeft_pissa_save_init(m, path, RWKVPEFT_FORMAT_AUTO));
            ck_assert_int_eq(rp_tensorfile_open(path, &f, &err), 0);
            ck_assert_int_eq(f->count, 32);
            const rp_named_tensor *t = rp_tensorfile_find(f, "blocks.1.ffn.key.init_lora_A");
            ck_assert(t && t->dtype == RP_F32 && t->shape[0] == 4 && t->shape[1] == 64);
            t = rp_tensorfile_find(f, "blocks.1.ffn.key.init_lora_B");
            ck_assert(t && t->dtype == RP_F32 && t->shape[0] == 224 && t->shape[1] == 4);
            rp_tensorfile_close(f);
        }
        rwkvpeft_model_free(m);
    }
    unlink(path);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* PiSSA init                                                                           */
/* ------------------------------------------------------------------------------------ */

START_TEST(test_pissa_residual_and_init_file) {
    rwkvpeft_context *ctx = tu_context("cpu");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 3);
    randomize(m, 11, 0);
    char base[512], init[512];
    tu_tmppath(base, sizeof base, "pissa-base", ".safetensors");
    tu_tmppath(init, sizeof init, "pissa-init", ".pth");
    TU_OK(rwkvpeft_model_save(m, base, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_F32));
    rp_linear *lin = &m->layers[1].lin[RP_LIN_FFN_K]; /* [224, 64] */
    int out = lin->out, in = lin->in, r = 6;
    float *w0 = malloc(sizeof(float) * (size_t)out * in), *w1 = malloc(sizeof(float) * (size_t)out * in);
    float *a = malloc(sizeof(float) * (size_t)r * in), *b = malloc(sizeof(float) * (size_t)out * r);
    ck_assert_int_eq(rp_param_download_f32(m, lin->W, w0), 0);
    attach(m, RWKVPEFT_PEFT_PISSA, r, "time,ln");
    ck_assert_int_eq(rp_param_download_f32(m, lin->W, w1), 0);
    ck_assert_int_eq(rp_param_download_f32(m, lin->A, a), 0);
    ck_assert_int_eq(rp_param_download_f32(m, lin->B, b), 0);
    double maxw = 0, maxd = 0, fro_w = 0, fro_res = 0;
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) {
            double ba = 0;
            for (int k = 0; k < r; k++) ba += (double)b[o * r + k] * a[k * in + i];
            maxd = fmax(maxd, fabs(w1[o * in + i] + ba - w0[o * in + i]));
            maxw = fmax(maxw, fabs(w0[o * in + i]));
            fro_w += (double)w0[o * in + i] * w0[o * in + i];
            fro_res += (double)w1[o * in + i] * w1[o * in + i];
        }
    ck_assert_msg(maxd <= 1e-6 * maxw, "W_res + B0 A0 differs from W by %g (|W| %g)", maxd, maxw);
    ck_assert(fro_res < 0.95 * fro_w); /* the principal part was removed */
    /* the same init from the same seed; the init file reproduces it on a fresh model */
    TU_OK(rwkvpeft_pissa_save_init(m, init, RWKVPEFT_FORMAT_AUTO));
    TU_OK(rwkvpeft_pissa_check_init(m, init));
    rwkvpeft_model *m2 = NULL;
    TU_OK(rwkvpeft_model_load(ctx, base, NULL, &m2)); /* another seed: another test matrix, same subspace */
    rwkvpeft_adapter_params ap0 = aparams(RWKVPEFT_PEFT_PISSA, r, "time,ln");
    ap0.seed = 99;
    TU_OK(rwkvpeft_adapter_attach(m2, &ap0));
    ck_assert_int_eq(rwkvpeft_pissa_check_init(m2, init), RWKVPEFT_E_SHAPE);
    rwkvpeft_model_free(m2);
    TU_OK(rwkvpeft_model_load(ctx, base, NULL, &m2));
    rwkvpeft_adapter_params ap = aparams(RWKVPEFT_PEFT_PISSA, r, "time,ln");
    ap.pissa_init = init;
    ap.seed = 1234; /* ignored with an init file */
    TU_OK(rwkvpeft_adapter_attach(m2, &ap));
    float *w2 = malloc(sizeof(float) * (size_t)out * in);
    ck_assert_int_eq(rp_param_download_f32(m2, m2->layers[1].lin[RP_LIN_FFN_K].W, w2), 0);
    ck_assert(memcmp(w1, w2, sizeof(float) * (size_t)out * in) == 0);
    ck_assert_int_eq(rp_param_download_f32(m2, m2->layers[1].lin[RP_LIN_FFN_K].A, w2), 0);
    ck_assert(memcmp(a, w2, sizeof(float) * (size_t)r * in) == 0);
    rwkvpeft_model_free(m2);
    /* HEAD writes the keys with a "model." prefix: accepted too */
    rp_tensorfile *f = NULL;
    rp_err err;
    ck_assert_int_eq(rp_tensorfile_open(init, &f, &err), 0);
    rp_named_tensor *ts = calloc((size_t)f->count, sizeof *ts);
    char(*names)[160] = calloc((size_t)f->count, 160);
    for (int i = 0; i < f->count; i++) {
        ts[i] = f->tensors[i];
        snprintf(names[i], 160, "model.%s", f->tensors[i].name);
        ts[i].name = names[i];
    }
    char init2[512];
    tu_tmppath(init2, sizeof init2, "pissa-init-model", ".pth");
    ck_assert_int_eq(rp_tensorfile_write(init2, RP_FILE_PTH, ts, f->count, &err), 0);
    rp_tensorfile_close(f);
    free(ts);
    free(names);
    TU_OK(rwkvpeft_model_load(ctx, base, NULL, &m2));
    ap.pissa_init = init2;
    TU_OK(rwkvpeft_adapter_attach(m2, &ap));
    ck_assert_int_eq(rp_param_download_f32(m2, m2->layers[1].lin[RP_LIN_FFN_K].W, w2), 0);
    ck_assert(memcmp(w1, w2, sizeof(float) * (size_t)out * in) == 0);
    rwkvpeft_model_free(m2);
    /* a rank that does not match the init file is a shape error */
    TU_OK(rwkvpeft_model_load(ctx, base, NULL, &m2));
    ap.r = r + 1;
    ck_assert_int_eq(rwkvpeft_adapter_attach(m2, &ap), RWKVPEFT_E_SHAPE);
    rwkvpeft_model_free(m2);
    free(w0);
    free(w1);
    free(w2);
    free(a);
    free(b);
    unlink(base);
    unlink(init);
    unlink(init2);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* The randomized SVD against the exact best rank-r approximation (Eckart-Young). */
START_TEST(test_pissa_svd_quality) {
    enum { O = 48, I = 36 };
    static float W[O * I], A[8 * I], B[O * 8], A2[8 * I];
    uint64_t s = 9;
    rp_err err;
    for (int kind = 0; kind < 2; kind++) {
        /* kind 0: decaying spectrum (like trained weights); kind 1: plain Gaussian */
        for (int i = 0; i < O * I; i++) W[i] = (float)(2 * tu_uniform(&s) - 1);
        if (kind == 0) {
            for (int o = 0; o < O; o++)
                for (int i = 0; i < I; i++) {
                    double v = 0;
                    for (int k = 0; k < 12; k++) v += pow(0.6, k) * sin(0.7 * (k + 1) * o + 0.3 * k) * cos(0.45 * (k + 2) * i + k);
                    W[o * I + i] = (float)(v + 0.01 * W[o * I + i]);
                }
        }
        for (int r = 1; r <= 8; r += 7) {
            ck_assert_int_eq(rp_pissa_svd(W, O, I, r, 4, 77, A, B, &err), 0);
            ck_assert_int_eq(rp_pissa_svd(W, O, I, r, 4, 77, A2, B, &err), 0);
            ck_assert(memcmp(A, A2, sizeof(float) * (size_t)r * I) == 0); /* deterministic */
            double e = 0;
            for (int o = 0; o < O; o++)
                for (int i = 0; i < I; i++) {
                    double v = W[o * I + i];
                    for (int k = 0; k < r; k++) v -= (double)B[o * r + k] * A[k * I + i];
                    e += v * v;
                }
            double best = 0;
            ck_assert_int_eq(rp_svd_best_rank_error(W, O, I, r, &best, &err), 0);
            double limit = kind == 0 ? 1.001 : 1.05;
            ck_assert_msg(sqrt(e) <= limit * best + 1e-6, "kind %d r %d: randomized error %g vs best %g", kind, r, sqrt(e), best);
            ck_assert(sqrt(e) >= best * (1 - 1e-9));
            /* √S split: the rows of A and columns of B have equal norms */
            for (int k = 0; k < r; k++) {
                double na = 0, nb = 0;
                for (int i = 0; i < I; i++) na += (double)A[k * I + i] * A[k * I + i];
                for (int o = 0; o < O; o++) nb += (double)B[o * r + k] * B[o * r + k];
                ck_assert_msg(fabs(na - nb) <= 1e-4 * (na + nb), "row %d: %g vs %g", k, na, nb);
            }
        }
    }
    ck_assert_int_eq(rp_pissa_svd(W, O, I, 0, 4, 1, A, B, &err), RWKVPEFT_E_INVALID_ARGUMENT);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* merging                                                                              */
/* ------------------------------------------------------------------------------------ */

typedef struct merge_case {
    int method, r;
    const char *parts;
} merge_case;

/* The trainable buffer is laid out block by block: each block's trainable tensors lie in its
 * [flat_lo, flat_hi), the ranges follow each other without overlap after the tensors outside
 * the blocks, they cover the whole buffer, and merging (which drops the buffer) clears them.
 * (The GPU graph narrows one such range per block pass: lib/rwkv.c, narrow_layer.) */
START_TEST(test_flat_layout_by_block) {
    rwkvpeft_context *ctx = tu_context("cpu");
    for (int ver = 5; ver <= 7; ver++) {
        rwkvpeft_model *m = tm_tiny_model_v(ctx, ver, 1, 3);
        attach(m, RWKVPEFT_PEFT_LORA, 4, "time,ln");
        int64_t prev_hi = -1, covered = 0, outside_hi = 0;
        for (int i = 0; i < m->n_params; i++) {
            const rp_param *p = &m->params[i];
            if (!p->trainable || rp_param_layer(p) >= 0) continue;
            if (p->flat_off + p->numel > outside_hi) outside_hi = p->flat_off + p->numel;
            covered += p->numel;
        }
        for (int l = 0; l < m->n_layer; l++) {
            const rp_layer *ly = &m->layers[l];
            ck_assert_int_ge(ly->flat_lo, outside_hi);
            ck_assert_int_gt(ly->flat_hi, ly->flat_lo);
            if (prev_hi >= 0) ck_assert_int_eq(ly->flat_lo, prev_hi);
            prev_hi = ly->flat_hi;
            int64_t in_block = 0;
            for (int i = 0; i < m->n_params; i++) {
                const rp_param *p = &m->params[i];
                if (!p->trainable || rp_param_layer(p) != l) continue;
                ck_assert_msg(p->flat_off >= ly->flat_lo && p->flat_off + p->numel <= ly->flat_hi,
                              "RWKV-%d %s outside block %d's range", ver, p->name, l);
                in_block += p->numel;
            }
            ck_assert_int_eq(in_block, ly->flat_hi - ly->flat_lo);
            covered += in_block;
        }
        ck_assert_int_eq(covered, m->flat_numel);
        ck_assert_int_eq(prev_hi, m->flat_numel);
        TU_OK(rwkvpeft_model_merge(m));
        for (int l = 0; l < m->n_layer; l++) ck_assert_int_eq(m->layers[l].flat_hi - m->layers[l].flat_lo, 0);
        rwkvpeft_model_free(m);
    }
    rwkvpeft_context_free(ctx);
}
END_TEST

/* For every method and RWKV version: logits of base + attached adapter == logits of the
 * merged model, for rwkvpeft_model_merge (in place) and rwkvpeft_merge_files (file to file),
 * in float32. */
START_TEST(test_merge_equivalence) {
    static const merge_case cases[] = {{RWKVPEFT_PEFT_LORA, 3, "time,ln"}, {RWKVPEFT_PEFT_PISSA, 4, "ln"},
                                       {RWKVPEFT_PEFT_BONE, 5, "time"},    {RWKVPEFT_PEFT_BAT, 8, ""},
                                       {RWKVPEFT_PEFT_STATE, 0, ""},       {RWKVPEFT_PEFT_NONE, 0, "time,ln"}};
    enum { B = 2, T = 7, N = B * T * TM_VOCAB };
    static float ref[N], got[N];
    rwkvpeft_context *ctx = tu_context("cpu");
    char base[512], ad[512], init[512], merged[512], saved[512];
    tu_tmppath(base, sizeof base, "merge-base", ".pth");
    tu_tmppath(ad, sizeof ad, "merge-adapter", ".safetensors");
    tu_tmppath(init, sizeof init, "merge-init", ".pth");
    tu_tmppath(merged, sizeof merged, "merge-out", ".pth");
    tu_tmppath(saved, sizeof saved, "merge-saved", ".safetensors");
    rwkvpeft_model *m = NULL;
    for (int ver = 5; ver <= 7; ver++) {
        m = tm_tiny_model_v(ctx, ver, 0, 4);
        randomize(m, 12, 0);
        TU_OK(rwkvpeft_model_save(m, base, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_F32));
        rwkvpeft_model_free(m);
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            const merge_case *mc = &cases[c];
            if (ver == 5 && mc->method == RWKVPEFT_PEFT_STATE) continue; /* refused: test_versions */
            TU_OK(rwkvpeft_model_load(ctx, base, NULL, &m));
            attach(m, mc->method, mc->r, mc->parts);
            randomize(m, 100 + c, 1); /* adapter and trained base tensors away from their init */
            tm_logits(m, ref, B, T);
            TU_OK(rwkvpeft_save_adapter(m, ad, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_F32));
            if (mc->method == RWKVPEFT_PEFT_PISSA) TU_OK(rwkvpeft_pissa_save_init(m, init, RWKVPEFT_FORMAT_AUTO));
            /* file to file */
            rwkvpeft_merge_params mp;
            rwkvpeft_merge_params_init(&mp);
            mp.base_path = base;
            mp.adapter_path = ad;
            mp.output_path = merged;
            mp.method = mc->method;
            mp.lora_alpha = 6;
            mp.pissa_init = mc->method == RWKVPEFT_PEFT_PISSA ? init : NULL;
            mp.dtype = RWKVPEFT_DTYPE_F32;
            TU_OK(rwkvpeft_merge_files(&mp));
            rwkvpeft_model *mm = NULL;
            TU_OK(rwkvpeft_model_load(ctx, merged, NULL, &mm));
            tm_logits(mm, got, B, T);
            double d = tm_rel_diff(got, ref, N);
            ck_assert_msg(d < 2e-5, "RWKV-%d method %d: merged file logits differ by %g", ver, mc->method, d);
            rwkvpeft_model_free(mm);
            /* auto-detected method gives the same file for Bone/Bat/state */
            if (mc->method >= RWKVPEFT_PEFT_BONE) {
                mp.method = -1;
                TU_OK(rwkvpeft_merge_files(&mp));
                TU_OK(rwkvpeft_model_load(ctx, merged, NULL, &mm));
                tm_logits(mm, got, B, T);
                ck_assert(tm_rel_diff(got, ref, N) < 2e-5);
                rwkvpeft_model_free(mm);
            }
            /* in place */
            TU_OK(rwkvpeft_model_merge(m));
            ck_assert_int_eq(m->adapter.attached, 0);
            tm_logits(m, got, B, T);
            d = tm_rel_diff(got, ref, N);
            ck_assert_msg(d < 2e-5, "RWKV-%d method %d: in-place merged logits differ by %g", ver, mc->method, d);
            TU_OK(rwkvpeft_model_save(m, saved, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_F32));
            TU_OK(rwkvpeft_model_load(ctx, saved, NULL, &mm));
            tm_logits(mm, ref, B, T);
            ck_assert(memcmp(ref, got, sizeof ref) == 0);
            rwkvpeft_model_free(mm);
            /* a merged model takes a new adapter */
            attach(m, RWKVPEFT_PEFT_LORA, 2, "");
            tm_logits(m, ref, B, T);
            ck_assert(memcmp(ref, got, sizeof ref) == 0); /* B = 0: unchanged */
            rwkvpeft_model_free(m);
        }
    }
    m = tm_tiny_model(ctx, 0, 4);
    randomize(m, 12, 0);
    TU_OK(rwkvpeft_model_save(m, base, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_F32));
    rwkvpeft_model_free(m);
    /* LoRA without an alpha is refused (merge.py's default of 16 is a trap, spec §9.11) */
    TU_OK(rwkvpeft_model_load(ctx, base, NULL, &m));
    attach(m, RWKVPEFT_PEFT_LORA, 3, "");
    TU_OK(rwkvpeft_save_adapter(m, ad, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_F32));
    rwkvpeft_model_free(m);
    rwkvpeft_merge_params mp;
    rwkvpeft_merge_params_init(&mp);
    mp.base_path = base;
    mp.adapter_path = ad;
    mp.output_path = merged;
    ck_assert_int_eq(rwkvpeft_merge_files(&mp), RWKVPEFT_E_INVALID_ARGUMENT);
    ck_assert(strstr(rwkvpeft_last_error(), "lora_alpha") != NULL);
    mp.method = RWKVPEFT_PEFT_BONE;
    ck_assert_int_eq(rwkvpeft_merge_files(&mp), RWKVPEFT_E_SHAPE);
    mp.method = RWKVPEFT_PEFT_PISSA;
    ck_assert_int_eq(rwkvpeft_merge_files(&mp), RWKVPEFT_E_INVALID_ARGUMENT);
    /* the default output is bf16 */
    mp.method = RWKVPEFT_PEFT_LORA;
    mp.lora_alpha = 8;
    TU_OK(rwkvpeft_merge_files(&mp));
    rp_tensorfile *f = NULL;
    rp_err err;
    ck_assert_int_eq(rp_tensorfile_open(merged, &f, &err), 0);
    ck_assert_int_eq(rp_tensorfile_find(f, "blocks.0.att.key.weight")->dtype, RP_BF16);
    ck_assert_ptr_null(rp_tensorfile_find(f, "blocks.0.att.key.lora_A"));
    rp_tensorfile_close(f);
    unlink(base);
    unlink(ad);
    unlink(init);
    unlink(merged);
    unlink(saved);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* A Bone adapter saved under one key name loads into an attach that uses the other. */
START_TEST(test_bone_key_alias) {
    enum { B = 1, T = 6, N = B * T * TM_VOCAB };
    static float ref[N], got[N];
    rwkvpeft_context *ctx = tu_context("cpu");
    char ad[512];
    tu_tmppath(ad, sizeof ad, "bone-alias", ".pth");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 5);
    rwkvpeft_adapter_params ap = aparams(RWKVPEFT_PEFT_BONE, 16, "ln");
    ap.key_name = "bone";
    TU_OK(rwkvpeft_adapter_attach(m, &ap));
    randomize(m, 3, 1);
    tm_logits(m, ref, B, T);
    TU_OK(rwkvpeft_save_adapter(m, ad, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_F32));
    rwkvpeft_model_free(m);
    m = tm_tiny_model(ctx, 0, 5);
    ap.key_name = NULL; /* "disha" */
    TU_OK(rwkvpeft_adapter_attach(m, &ap));
    TU_OK(rwkvpeft_adapter_load(m, ad));
    tm_logits(m, got, B, T);
    ck_assert(memcmp(ref, got, sizeof ref) == 0);
    rwkvpeft_model_free(m);
    /* Bat with the same r cannot take a Bone file (shape error) */
    m = tm_tiny_model(ctx, 0, 5);
    attach(m, RWKVPEFT_PEFT_BAT, 16, "ln");
    ck_assert_int_eq(rwkvpeft_adapter_load(m, ad), RWKVPEFT_E_SHAPE);
    rwkvpeft_model_free(m);
    unlink(ad);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* State tuning trains only time_state and lowers the loss (lr 1 as the reference's
 * scripts use); the model's other tensors stay bit-identical. */
START_TEST(test_state_tuning_trains) {
    rwkvpeft_context *ctx = tu_context("cpu");
    rwkvpeft_model *m = tm_tiny_model(ctx, 0, 6);
    randomize(m, 13, 0);
    rp_param *k = m->layers[0].lin[RP_LIN_ATT_K].W;
    float *before = malloc(sizeof(float) * (size_t)k->numel), *after = malloc(sizeof(float) * (size_t)k->numel);
    ck_assert_int_eq(rp_param_download_f32(m, k, before), 0);
    attach(m, RWKVPEFT_PEFT_STATE, 0, "");
    rwkvpeft_train_params tp;
    rwkvpeft_train_params_init(&tp);
    tp.lr_init = tp.lr_final = 0.05f;
    rwkvpeft_trainer *t = NULL;
    TU_OK(rwkvpeft_trainer_create(m, &tp, &t));
    enum { B = 2, T = 12 };
    int32_t in[B * T], tg[B * T];
    uint64_t s = 77;
    for (int i = 0; i < B * T; i++) {
        in[i] = (int32_t)(tu_next(&s) % TM_VOCAB);
        tg[i] = (int32_t)(tu_next(&s) % TM_VOCAB);
    }
    rwkvpeft_batch b = tu_batch(B, T, in, tg);
    rwkvpeft_step_result r;
    r.struct_size = sizeof r;
    double first = 0;
    for (int i = 0; i < 30; i++) {
        TU_OK(rwkvpeft_train_step(t, &b, &r));
        if (i == 0) first = r.loss;
    }
    ck_assert_msg(r.loss < first - 0.05, "state tuning loss %g -> %g", first, r.loss);
    ck_assert_int_eq(rp_param_download_f32(m, k, after), 0);
    ck_assert(memcmp(before, after, sizeof(float) * (size_t)k->numel) == 0);
    rwkvpeft_trainer_free(t);
    free(before);
    free(after);
    rwkvpeft_model_free(m);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* adapters written by the independent PyTorch implementation                             */
/* ------------------------------------------------------------------------------------ */

/* tests/data/peft/<name> */
static void data_path(char *out, size_t cap, const char *name) {
    char rel[512];
    snprintf(rel, sizeof rel, "peft/%s", name);
    tu_data_path(out, cap, rel);
}

typedef struct fixture_case {
    const char *name; /* adapter file stem; expected logits "logits.<name>" */
    int method, r;
    float alpha;
    const char *key_name, *init;
} fixture_case;

START_TEST(test_reference_adapters) {
    static const fixture_case cases[] = {
        {"lora", RWKVPEFT_PEFT_LORA, 4, 8.0f, NULL, NULL},
        {"pissa", RWKVPEFT_PEFT_PISSA, 4, 0, NULL, "init_pissa.pth"},
        {"bone", RWKVPEFT_PEFT_BONE, 24, 0, "bone", NULL},  /* 64 % 24 != 0: padded groups */
        {"bat", RWKVPEFT_PEFT_BAT, 16, 0, "disha", NULL},
        {"state", RWKVPEFT_PEFT_STATE, 0, 0, NULL, NULL},
    };
    rwkvpeft_context *ctx = tu_context("cpu");
    char base[512], batch[512], expect[512];
    data_path(base, sizeof base, "base.pth");
    data_path(batch, sizeof batch, "batch.safetensors");
    data_path(expect, sizeof expect, "expected.safetensors");
    rp_tensorfile *bf = NULL, *ef = NULL;
    rp_err err;
    ck_assert_msg(rp_tensorfile_open(batch, &bf, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(rp_tensorfile_open(expect, &ef, &err), 0);
    const rp_named_tensor *ids_t = rp_tensorfile_find(bf, "inputs");
    ck_assert(ids_t && ids_t->dtype == RP_I32 && ids_t->ndim == 2);
    int B = (int)ids_t->shape[0], T = (int)ids_t->shape[1];
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(B * T));
    memcpy(ids, ids_t->data, sizeof(int32_t) * (size_t)(B * T));
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const fixture_case *fc = &cases[c];
        rwkvpeft_model *m = NULL;
        TU_OK(rwkvpeft_model_load(ctx, base, NULL, &m));
        int V = m->V;
        rwkvpeft_adapter_params ap = aparams(fc->method, fc->r, "time,ln");
        ap.alpha = fc->alpha;
        ap.key_name = fc->key_name;
        char adp[512], initp[512], key[64];
        if (fc->init) {
            data_path(initp, sizeof initp, fc->init);
            ap.pissa_init = initp;
        }
        TU_OK(rwkvpeft_adapter_attach(m, &ap));
        snprintf(key, sizeof key, "%s.pth", fc->name);
        data_path(adp, sizeof adp, key);
        TU_OK(rwkvpeft_adapter_load(m, adp));
        float *got = malloc(sizeof(float) * (size_t)(B * T * V)), *want = malloc(sizeof(float) * (size_t)(B * T * V));
        TU_OK(rwkvpeft_model_logits(m, ids, B, T, got));
        snprintf(key, sizeof key, "logits.%s", fc->name);
        const rp_named_tensor *e = rp_tensorfile_find(ef, key);
        ck_assert_ptr_nonnull(e);
        ck_assert_int_eq((int)rp_tensor_numel(e), B * T * V);
        rp_convert_to_f32(want, e->data, e->dtype, (size_t)(B * T * V));
        double d = tm_rel_diff(got, want, B * T * V);
        ck_assert_msg(d < 5e-5, "%s: logits differ from the PyTorch reference by %g (relative to max |logit|)", fc->name, d);
        /* and the base logits differ (the adapter is not a no-op) */
        snprintf(key, sizeof key, "logits.base");
        const rp_named_tensor *b0 = rp_tensorfile_find(ef, key);
        ck_assert_ptr_nonnull(b0);
        rp_convert_to_f32(want, b0->data, b0->dtype, (size_t)(B * T * V));
        ck_assert(tm_rel_diff(got, want, B * T * V) > 1e-3);
        free(got);
        free(want);
        rwkvpeft_model_free(m);
    }
    free(ids);
    rp_tensorfile_close(bf);
    rp_tensorfile_close(ef);
    rwkvpeft_context_free(ctx);
}
END_TEST

/* ------------------------------------------------------------------------------------ */
/* GPU backends (skipped where none is available)                                        */
/* ------------------------------------------------------------------------------------ */

static const char *gpu_backend(void) {
    for (int i = 0; i < rwkvpeft_backend_count(); i++) {
        rwkvpeft_backend_info bi;
        bi.struct_size = sizeof bi;
        if (rwkvpeft_backend_get_info(i, &bi) == RWKVPEFT_OK && bi.available &&
            (!strcmp(bi.name, "cuda") || !strcmp(bi.name, "hip")))
            return !strcmp(bi.name, "cuda") ? "cuda" : "hip";
    }
    return NULL;
}

/* Logits and gradients of every trainable tensor (host float64) on any backend. */
static void logits_grads(rwkvpeft_model *m, int B, int T, float *logits, double *grads) {
    rp_backend *be = m->be;
    rp_dtype P_ = be->ops->par_dtype;
    size_t ps = rp_dtype_size(P_), bytes = (size_t)m->flat_numel * ps;
    rp_workspace *ws = tm_batch_ws(m, B, T, 31);
    void *g = NULL, *h = malloc(bytes);
    ck_assert_int_eq(be->ops->alloc(be, &g, bytes), 0);
    ck_assert_int_eq(be->ops->memset_zero(be, g, bytes), 0);
    ck_assert_int_eq(rp_forward_backward(m, ws, g, 1.0f, 0.0f, 0, logits), 0);
    ck_assert_int_eq(be->ops->memcpy_d2h(be, h, g, bytes), 0);
    for (int64_t i = 0; i < m->flat_numel; i++) grads[i] = P_ == RP_F64 ? ((double *)h)[i] : ((float *)h)[i];
    be->ops->free(be, g);
    free(h);
    rp_workspace_free(m, ws);
}

/* Every method's forward and backward on the GPU backend against cpu64, at the tolerance of
 * bf16 activations. */
START_TEST(test_gpu_matches_cpu64) {
    const char *gpu = gpu_backend();
    if (!gpu) return; /* no GPU backend here: nothing to compare */
    static const merge_case cases[] = {{RWKVPEFT_PEFT_LORA, 4, "time,ln"}, {RWKVPEFT_PEFT_PISSA, 4, "ln"},
                                       {RWKVPEFT_PEFT_BONE, 5, "ln"},      {RWKVPEFT_PEFT_BAT, 8, "ln"},
                                       {RWKVPEFT_PEFT_STATE, 0, ""}};
    enum { B = 3, T = 9, N = B * T * TM_VOCAB };
    static float l64[N], lg[N];
    rwkvpeft_context *c64 = tu_context("cpu64"), *cg = tu_context(gpu);
    char base[512], ad[512];
    tu_tmppath(base, sizeof base, "gpu-base", ".safetensors");
    tu_tmppath(ad, sizeof ad, "gpu-adapter", ".safetensors");
    rwkvpeft_model *m = tm_tiny_model(c64, 0, 21);
    randomize(m, 22, 0);
    TU_OK(rwkvpeft_model_save(m, base, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_BF16)); /* exact on both */
    rwkvpeft_model_free(m);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const merge_case *mc = &cases[c];
        rwkvpeft_model *mr = NULL, *mgpu = NULL;
        TU_OK(rwkvpeft_model_load(c64, base, NULL, &mr));
        attach(mr, mc->method, mc->r, mc->parts);
        randomize(mr, 300 + c, 1);
        TU_OK(rwkvpeft_save_adapter(mr, ad, RWKVPEFT_FORMAT_AUTO, RWKVPEFT_DTYPE_BF16));
        TU_OK(rwkvpeft_adapter_load(mr, ad)); /* both sides see the same bf16 values */
        TU_OK(rwkvpeft_model_load(cg, base, NULL, &mgpu));
        attach(mgpu, mc->method, mc->r, mc->parts);
        TU_OK(rwkvpeft_adapter_load(mgpu, ad));
        ck_assert_int_eq((int)mr->flat_numel, (int)mgpu->flat_numel);
        double *g64 = malloc(sizeof(double) * (size_t)mr->flat_numel), *gg = malloc(sizeof(double) * (size_t)mr->flat_numel);
        logits_grads(mr, B, T, l64, g64);
        logits_grads(mgpu, B, T, lg, gg);
        double dl = tm_rel_diff(lg, l64, N);
        ck_assert_msg(dl < 3e-2, "%s method %d: logits differ by %g", gpu, mc->method, dl);
        double num = 0, den = 0;
        for (int i = 0; i < mr->n_params; i++) {
            const rp_param *p = &mr->params[i];
            if (!p->trainable) continue;
            double pn = 0, pd = 0;
            for (int64_t e = p->flat_off; e < p->flat_off + p->numel; e++) {
                pn += (gg[e] - g64[e]) * (gg[e] - g64[e]);
                pd += g64[e] * g64[e];
            }
            num += pn;
            den += pd;
            ck_assert_msg(pd == 0 || sqrt(pn / pd) < 0.15, "%s method %d: gradient of %s off by %g (relative L2)", gpu,
                          mc->method, p->name, sqrt(pn / pd));
        }
        ck_assert_msg(den > 0 && sqrt(num / den) < 0.08, "%s method %d: gradients off by %g", gpu, mc->method, sqrt(num / den));
        fprintf(stderr, "%s method %d: logits rel %.3g, gradients rel L2 %.3g\n", gpu, mc->method, dl, sqrt(num / den));
        free(g64);
        free(gg);
        rwkvpeft_model_free(mr);
        rwkvpeft_model_free(mgpu);
    }
    unlink(base);
    unlink(ad);
    rwkvpeft_context_free(c64);
    rwkvpeft_context_free(cg);
}
END_TEST

int main(void) {
    Suite *s = suite_create("peft");
    TCase *fd = tcase_create("fd");
    tcase_set_timeout(fd, 600);
    tcase_add_test(fd, test_fd_pissa);
    tcase_add_test(fd, test_fd_bone);
    tcase_add_test(fd, test_fd_bat);
    tcase_add_test(fd, test_fd_state);
    suite_add_tcase(s, fd);
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_attach_errors);
    tcase_add_test(tc, test_adapter_keys_and_shapes);
    tcase_add_test(tc, test_pissa_residual_and_init_file);
    tcase_add_test(tc, test_pissa_svd_quality);
    tcase_add_test(tc, test_merge_equivalence);
    tcase_add_test(tc, test_flat_layout_by_block);
    tcase_add_test(tc, test_bone_key_alias);
    tcase_add_test(tc, test_state_tuning_trains);
    tcase_add_test(tc, test_reference_adapters);
    suite_add_tcase(s, tc);
    TCase *gpu = tcase_create("gpu");
    tcase_set_timeout(gpu, 600);
    tcase_add_test(gpu, test_gpu_matches_cpu64);
    suite_add_tcase(s, gpu);
    return tu_run(s);
}
