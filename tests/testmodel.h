/* testmodel.h — helpers shared by the tests that build tiny models and drive the graph
 * directly (test_model, test_peft, test_qtrain, test_infctx; they use internal headers). */
#ifndef RP_TESTMODEL_H
#define RP_TESTMODEL_H

#include <math.h>

#include "model.h"
#include "testutil.h"

enum { TM_VOCAB = 50 }; /* vocabulary of the tiny models */

/* A freshly initialised tiny model of RWKV version `version` (5, 6, 7): 2 layers, C 64,
 * head size 32, vocabulary TM_VOCAB; grad_cp turns gradient checkpointing on. */
/* The tiny model's architecture (tests that want a variant, or a refused one, start here). */
static inline void tm_tiny_config(rwkvpeft_model_config *c, int version) {
    rwkvpeft_model_config_init(c);
    c->version = version;
    c->n_layer = 2;
    c->n_embd = 64;
    c->head_size = 32;
    c->vocab_size = TM_VOCAB;
}

/* The tiny model of a version with model params (grad_cp, embedding_on_host). */
static inline rwkvpeft_model *tm_tiny_model_p(rwkvpeft_context *ctx, int version, int grad_cp, uint64_t seed,
                                              int emb_on_host) {
    rwkvpeft_model_config c;
    tm_tiny_config(&c, version);
    rwkvpeft_model_params mp;
    rwkvpeft_model_params_init(&mp);
    mp.grad_cp = grad_cp;
    mp.embedding_on_host = emb_on_host;
    rwkvpeft_model *m = NULL;
    TU_OK(rwkvpeft_model_init(ctx, &c, &mp, seed, &m));
    return m;
}

static inline rwkvpeft_model *tm_tiny_model_v(rwkvpeft_context *ctx, int version, int grad_cp, uint64_t seed) {
    return tm_tiny_model_p(ctx, version, grad_cp, seed, 0);
}

/* The tiny RWKV-6 model. */
static inline rwkvpeft_model *tm_tiny_model(rwkvpeft_context *ctx, int grad_cp, uint64_t seed) {
    return tm_tiny_model_v(ctx, 6, grad_cp, seed);
}

/* Shifts every value of p by a uniform amount scaled like the tensor, so that every
 * gradient path carries signal: matrices ~1/sqrt(in), the decay base and WKV states 0.5,
 * everything else 0.1. */
static inline void tm_perturb(rwkvpeft_model *m, rp_param *p, uint64_t *s) {
    float *buf = (float *)malloc(sizeof(float) * (size_t)p->numel);
    ck_assert_int_eq(rp_param_download_f32(m, p, buf), 0);
    double scale = p->cls == RP_CLS_MATRIX ? 1.0 / sqrt((double)p->shape[1]) : 0.1;
    if (strstr(p->name, "time_decay") && !strstr(p->name, "_w")) scale = 0.5;
    if (strstr(p->name, "time_state")) scale = 0.5;
    for (int64_t e = 0; e < p->numel; e++) buf[e] += (float)(scale * (2 * tu_uniform(s) - 1));
    ck_assert_int_eq(rp_param_upload_f32(m, p, -1, buf), 0);
    free(buf);
}

/* tm_perturb on every parameter (only_trainable: on the trainable ones only). */
static inline void tm_randomize(rwkvpeft_model *m, uint64_t seed, int only_trainable) {
    uint64_t s = seed;
    for (int i = 0; i < m->n_params; i++)
        if (!only_trainable || m->params[i].trainable) tm_perturb(m, &m->params[i], &s);
}

/* Loss of the batch in ws (no L2Wrap) and, when grads is non-NULL, its gradients (the
 * buffer is zeroed first). dropout_seed 0 = no dropout. */
static inline double tm_loss_grad(rwkvpeft_model *m, rp_workspace *ws, void *grads, uint64_t dropout_seed) {
    if (grads) memset(grads, 0, (size_t)m->flat_numel * rp_dtype_size(m->be->ops->par_dtype));
    ck_assert_int_eq(rp_forward_backward(m, ws, grads, 1.0f, 0.0f, dropout_seed, NULL), 0);
    void *ls = rp_workspace_loss(ws);
    return m->be->ops->par_dtype == RP_F64 ? *(double *)ls : *(float *)ls;
}

/* A training workspace holding ids/targets (host, [B*T]) with mean-loss weights. */
static inline rp_workspace *tm_workspace(rwkvpeft_model *m, int B, int T, const int32_t *in, const int32_t *tg) {
    float *w = (float *)malloc(sizeof(float) * (size_t)B * T);
    rwkvpeft_batch b = tu_batch(B, T, in, tg);
    double s;
    rp_err err;
    ck_assert_int_eq(rp_batch_weights(m, &b, w, &s, &err), 0);
    rp_workspace *ws = NULL;
    ck_assert_int_eq(rp_workspace_create(m, B, T, 1, &ws), 0);
    ck_assert_int_eq(rp_workspace_set_batch(m, ws, B, T, in, tg, w), 0);
    free(w);
    return ws;
}

/* Logits of the public API for B*T fixed pseudo-random token ids (B*T <= 64) into out. */
static inline void tm_logits(rwkvpeft_model *m, float *out, int B, int T) {
    int32_t ids[64];
    ck_assert_int_le(B * T, 64);
    uint64_t s = 21;
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)(tu_next(&s) % TM_VOCAB);
    TU_OK(rwkvpeft_model_logits(m, ids, B, T, out));
}

/* max|a - b| / max|b| (max|b| taken as 1 when b is all zero). */
static inline double tm_rel_diff(const float *a, const float *b, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return num / (den > 0 ? den : 1);
}

/* Central differences against the analytic gradient (float64 backend; dropout masks from
 * `seed`): `per_tensor` sampled elements of every trainable tensor, all elements of tensors
 * with at most `per_tensor` of them. At least `min_checked` elements are checked and more than
 * `min_nonzero` of them (a fraction) have a non-zero gradient, so the check is not vacuous. */
static inline void tm_check_fd(rwkvpeft_model *m, rp_workspace *ws, uint64_t seed, int per_tensor, int min_checked,
                               double min_nonzero) {
    double *g = (double *)malloc(sizeof(double) * (size_t)m->flat_numel);
    tm_loss_grad(m, ws, g, seed);
    double *theta = (double *)m->flat;
    uint64_t s = 4321;
    int checked = 0, nonzero = 0;
    for (int i = 0; i < m->n_params; i++) {
        rp_param *p = &m->params[i];
        if (!p->trainable) continue;
        int all = p->numel <= per_tensor, count = all ? (int)p->numel : per_tensor;
        for (int k = 0; k < count; k++) {
            int64_t e = p->flat_off + (all ? k : (int64_t)(tu_next(&s) % (uint64_t)p->numel));
            double keep = theta[e], h = 1e-6 * (1 + fabs(keep));
            theta[e] = keep + h;
            double lp = tm_loss_grad(m, ws, NULL, seed);
            theta[e] = keep - h;
            double lm = tm_loss_grad(m, ws, NULL, seed);
            theta[e] = keep;
            double fd = (lp - lm) / (2 * h), an = g[e];
            double tol = 1e-7 + 2e-5 * fmax(fabs(fd), fabs(an));
            ck_assert_msg(fabs(fd - an) <= tol, "RWKV-%d %s[%lld]: analytic %.10g vs finite difference %.10g", m->version,
                          p->name, (long long)(e - p->flat_off), an, fd);
            checked++;
            if (fabs(an) > 1e-9) nonzero++;
        }
    }
    ck_assert_int_gt(checked, min_checked);
    ck_assert_msg(nonzero > checked * min_nonzero, "only %d of %d checked gradients are non-zero", nonzero, checked);
    free(g);
}

/* Random ids and targets (host, [B*T]) from `seed`; target 1 is ignored (−100). */
static inline void tm_make_batch(int B, int T, uint64_t seed, int32_t *in, int32_t *tg) {
    uint64_t s = seed;
    for (int i = 0; i < B * T; i++) {
        in[i] = (int32_t)(tu_next(&s) % TM_VOCAB);
        tg[i] = (int32_t)(tu_next(&s) % TM_VOCAB);
    }
    tg[1] = RWKVPEFT_IGNORE_INDEX;
}

/* A training workspace holding tm_make_batch(B, T, seed) (B*T <= 64). */
static inline rp_workspace *tm_batch_ws(rwkvpeft_model *m, int B, int T, uint64_t seed) {
    int32_t in[64], tg[64];
    ck_assert_int_le(B * T, 64);
    tm_make_batch(B, T, seed, in, tg);
    return tm_workspace(m, B, T, in, tg);
}

/* Attaches `method` with r 3, alpha 6, the given dropout and train_parts (emb/head frozen);
 * full: full fine-tuning. Returns the status. */
static inline rwkvpeft_status tm_attach(rwkvpeft_model *m, int method, const char *parts, float dropout, int full) {
    rwkvpeft_adapter_params ap;
    rwkvpeft_adapter_params_init(&ap);
    ap.method = method;
    ap.r = 3;
    ap.alpha = 6;
    ap.dropout = dropout;
    ap.train_parts = parts;
    ap.full_finetune = full;
    ap.train_emb_head = 0;
    return rwkvpeft_adapter_attach(m, &ap);
}

/* Feeding 11 tokens chunk by chunk (3,1,4,2,1) through the recurrent state gives the logits of
 * the parallel forward over the whole sequence, to 1e-9 (float64 backend). */
static inline void tm_check_stateful(rwkvpeft_model *m) {
    enum { T = 11 };
    int32_t ids[T];
    uint64_t s = 3;
    for (int i = 0; i < T; i++) ids[i] = (int32_t)(tu_next(&s) % TM_VOCAB);
    static float full[T * TM_VOCAB], step[TM_VOCAB];
    TU_OK(rwkvpeft_model_logits(m, ids, 1, T, full));
    rp_workspace *ws = NULL;
    rp_infer_state *st = NULL;
    ck_assert_int_eq(rp_workspace_create(m, 1, 4, 0, &ws), 0);
    ck_assert_int_eq(rp_infer_state_create(m, 1, &st), 0);
    static const int chunks[] = {3, 1, 4, 2, 1};
    int pos = 0;
    for (int c = 0; c < 5; c++) {
        ck_assert_int_eq(rp_infer(m, ws, st, ids + pos, chunks[c], step), 0);
        pos += chunks[c];
        double md = 0;
        for (int j = 0; j < TM_VOCAB; j++) md = fmax(md, fabs(step[j] - full[(pos - 1) * TM_VOCAB + j]));
        ck_assert_msg(md < 1e-9, "RWKV-%d after %d tokens: max diff %g", m->version, pos, md);
    }
    ck_assert_int_eq(pos, T);
    rp_infer_state_free(m, st);
    rp_workspace_free(m, ws);
}

#endif
