/* train.c — the trainer: optimizer groups (spec §6), learning-rate schedules, gradient
 * accumulation and clipping, one training step, and optimizer state files. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_common.h"
#include "model.h"
#include "optim8.h"
#include "tensorfile.h"

struct rwkvpeft_trainer {
    rwkvpeft_model *m;
    rp_err err;
    rwkvpeft_train_params tp;
    void *grads, *adam_m, *adam_v, *norm_sq; /* par dtype; adam_m/v NULL with the 8-bit optimizer */
    /* RWKVPEFT_OPTIM_ADAMW_8BIT: the moments as uint8 codes [flat_numel] with one float32
     * scale per RP_ADAM8_BLOCK elements, and the two code tables (code_m then code_v) */
    uint8_t *m_q, *v_q;
    float *m_absmax, *v_absmax, *codes;
    int64_t n_qblocks;
    rp_adam_segment *segs;
    int n_segs;
    rp_workspace *ws;
    int64_t step;       /* optimizer steps taken */
    int64_t micro;      /* micro-batches in the current accumulation window */
    int64_t micro_total;
    int64_t tokens;
    uint64_t layout_hash;
};

int64_t rp_trainer_workspace_bytes(const rwkvpeft_trainer *t) { return t ? rp_workspace_bytes(t->ws) : 0; }

int64_t rp_trainer_optimizer_bytes(const rwkvpeft_trainer *t) {
    if (!t) return 0;
    if (t->tp.optimizer == RWKVPEFT_OPTIM_ADAMW_8BIT)
        return 2 * t->m->flat_numel + 2 * 4 * t->n_qblocks + 2 * RP_ADAM8_CODES * 4;
    return 2 * t->m->flat_numel * (int64_t)rp_dtype_size(t->m->be->ops->par_dtype);
}

static const char *optimizer_name(int32_t o) {
    return o == RWKVPEFT_OPTIM_ADAMW_8BIT ? "8-bit AdamW (RWKVPEFT_OPTIM_ADAMW_8BIT)" : "AdamW with float32 moments (RWKVPEFT_OPTIM_ADAMW)";
}

static void free_optimizer_state(rwkvpeft_trainer *t) {
    rp_backend *be = t->m->be;
    be->ops->free(be, t->grads);
    be->ops->free(be, t->adam_m);
    be->ops->free(be, t->adam_v);
    be->ops->free(be, t->norm_sq);
    be->ops->free(be, t->m_q);
    be->ops->free(be, t->v_q);
    be->ops->free(be, t->m_absmax);
    be->ops->free(be, t->v_absmax);
    be->ops->free(be, t->codes);
}

/* Fills n bytes of device memory with `value` (the index of 0.0 in the m table), through a
 * bounded host buffer. */
static int fill_bytes(rp_backend *be, uint8_t *dst, int64_t n, uint8_t value) {
    enum { CHUNK = 1 << 20 };
    uint8_t *tmp = (uint8_t *)rp_malloc(CHUNK);
    if (!tmp) return RWKVPEFT_E_OUT_OF_MEMORY;
    memset(tmp, value, CHUNK);
    int rc = 0;
    for (int64_t off = 0; !rc && off < n; off += CHUNK)
        rc = be->ops->memcpy_h2d(be, dst + off, tmp, (size_t)(n - off < CHUNK ? n - off : CHUNK));
    if (!rc) rc = be->ops->synchronize(be); /* the host buffer is freed next */
    free(tmp);
    return rc;
}

/* The 8-bit optimizer's state: codes of 0.0, absmax 0, tables uploaded. */
static int alloc_adam8(rwkvpeft_trainer *t) {
    rwkvpeft_model *m = t->m;
    rp_backend *be = m->be;
    if (!be->ops->adam8_update)
        return rp_fail(&m->err, RWKVPEFT_E_UNSUPPORTED, "the %s backend has no 8-bit AdamW (adam8_update)", be->ops->name);
    int64_t n = m->flat_numel;
    t->n_qblocks = (n + RP_ADAM8_BLOCK - 1) / RP_ADAM8_BLOCK;
    size_t qbytes = (size_t)n, abytes = sizeof(float) * (size_t)t->n_qblocks;
    void *mq = NULL, *vq = NULL, *ma = NULL, *va = NULL, *cd = NULL;
    int rc = be->ops->alloc(be, &mq, qbytes) || be->ops->alloc(be, &vq, qbytes) || be->ops->alloc(be, &ma, abytes) ||
             be->ops->alloc(be, &va, abytes) || be->ops->alloc(be, &cd, sizeof(float) * 2 * RP_ADAM8_CODES);
    t->m_q = (uint8_t *)mq;
    t->v_q = (uint8_t *)vq;
    t->m_absmax = (float *)ma;
    t->v_absmax = (float *)va;
    t->codes = (float *)cd;
    if (rc)
        return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "cannot allocate the 8-bit optimizer state (2 x %zu bytes): %s", qbytes,
                       be->err.msg);
    float codes[2 * RP_ADAM8_CODES];
    rp_adam8_codes(codes, codes + RP_ADAM8_CODES);
    if (be->ops->memcpy_h2d(be, t->codes, codes, sizeof codes) || fill_bytes(be, t->m_q, n, RP_ADAM8_ZERO_M) ||
        be->ops->memset_zero(be, t->v_q, qbytes) || be->ops->memset_zero(be, t->m_absmax, abytes) ||
        be->ops->memset_zero(be, t->v_absmax, abytes))
        return rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
    return 0;
}

/* Copies the model's last error (set by graph/workspace code) into the trainer's. */
static int tfail(rwkvpeft_trainer *t, int code) {
    rp_err_copy(&t->err, &t->m->err);
    return code;
}

/* ---- optimizer groups ----------------------------------------------------------------- */

/* Dimensions of one checkpoint tensor after squeeze() (packs count per part). */
static int squeezed_ndim(const rp_param *p) {
    int d = 0;
    for (int i = 0; i < p->ndim; i++)
        if (p->shape[i] != 1) d++;
    return d;
}

/* lr scale and weight decay of a trainable tensor (spec §6 table, normal stage). */
static void group_of(const rp_param *p, const rwkvpeft_train_params *tp, float *lr_scale, float *wd) {
    const char *n = p->name;
    *wd = 0;
    *lr_scale = 1;
    if (tp->layerwise_lr) {
        if (strstr(n, "_w1") || strstr(n, "_w2")) return;
        if (strstr(n, "time_mix") || strstr(n, "time_maa")) return;
        if (strstr(n, "time_decay") || strstr(n, "time_daaaa")) {
            *lr_scale = 2;
            return;
        }
        if (strstr(n, "time_faaaa")) return;
        if (strstr(n, "time_first")) {
            *lr_scale = 3;
            return;
        }
    }
    if (tp->weight_decay > 0 && squeezed_ndim(p) >= 2) *wd = tp->weight_decay;
}

typedef struct flat_order {
    int64_t off;
    int idx;
} flat_order;
static int cmp_flat_order(const void *a, const void *b) {
    int64_t x = ((const flat_order *)a)->off, y = ((const flat_order *)b)->off;
    return x < y ? -1 : x > y;
}

/* Adam segments: runs of the flat buffer with one learning-rate scale and weight decay, in
 * buffer order (lib/peft.c places it block by block, not in parameter order). */
static int build_segments(rwkvpeft_trainer *t) {
    rwkvpeft_model *m = t->m;
    t->segs = (rp_adam_segment *)rp_calloc((size_t)m->n_params, sizeof(rp_adam_segment));
    flat_order *ord = (flat_order *)rp_calloc((size_t)m->n_params, sizeof(flat_order));
    if (!t->segs || !ord) {
        free(ord);
        return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    }
    uint64_t h = 1469598103934665603ull;
    int n_ord = 0;
    for (int i = 0; i < m->n_params; i++) {
        const rp_param *p = &m->params[i];
        if (!p->trainable) continue;
        ord[n_ord++] = (flat_order){p->flat_off, i};
        for (const char *c = p->name; *c; c++) h = (h ^ (uint8_t)*c) * 1099511628211ull;
        h = rp_mix64(h ^ (uint64_t)p->numel ^ ((uint64_t)p->flat_off << 20));
    }
    qsort(ord, (size_t)n_ord, sizeof *ord, cmp_flat_order);
    for (int k = 0; k < n_ord; k++) {
        const rp_param *p = &m->params[ord[k].idx];
        float lr, wd;
        group_of(p, &t->tp, &lr, &wd);
        rp_adam_segment *last = t->n_segs ? &t->segs[t->n_segs - 1] : NULL;
        if (last && last->offset + last->count == p->flat_off && last->lr_scale == lr && last->weight_decay == wd)
            last->count += p->numel;
        else
            t->segs[t->n_segs++] = (rp_adam_segment){p->flat_off, p->numel, lr, wd};
    }
    free(ord);
    t->layout_hash = h;
    return 0;
}

/* ---- learning rate ------------------------------------------------------------------- */

static double schedule_lr(const rwkvpeft_train_params *tp, int64_t step) {
    double lr0 = tp->lr_init, lr1 = tp->lr_final, lr;
    int64_t total = tp->total_steps;
    int W = tp->warmup_steps;
    const double pi = 3.14159265358979323846;
    if (tp->lr_schedule == RWKVPEFT_LR_WSD) {
        /* linear warmup to lr_init, then cosine to lr_final over the rest (HEAD decays to 0
         * and forces 100 warmup steps; see docs/differences.md) */
        if (total <= 0) return lr0;
        if (W > 0 && step < W) return lr0 * (double)step / W;
        int64_t w = W > 0 ? W : 0;
        if (step >= total) return lr1;
        double p = (double)(step - w) / (double)(total - w > 0 ? total - w : 1);
        return lr1 + 0.5 * (lr0 - lr1) * (1.0 + cos(pi * p));
    }
    if (lr0 == lr1 || total <= 0) {
        lr = lr0;
    } else if (tp->lr_schedule == RWKVPEFT_LR_EXP) {
        /* NOV: progress in optimizer steps, W entering unclamped as the reference does */
        double denom = (double)total - W;
        double prog = denom != 0 ? ((double)step - W + 1) / denom : 1.0;
        if (prog < 0) prog = 0;
        if (prog > 1) prog = 1;
        if (lr0 == 0 || lr1 == 0)
            lr = lr0 + (lr1 - lr0) * prog;
        else
            lr = lr0 * pow(lr1 / lr0, prog);
    } else { /* COS (HEAD) */
        double p = step >= total ? 1.0 : (double)step / (double)total;
        lr = lr1 + 0.5 * (lr0 - lr1) * (1.0 + cos(pi * p));
    }
    if (W > 0 && step < W) lr *= 0.01 + 0.99 * (double)step / W;
    return lr;
}

/* ---- lifetime ------------------------------------------------------------------------- */

int rp_trainer_create(rwkvpeft_model *m, const rwkvpeft_train_params *tp, rwkvpeft_trainer **out) {
    *out = NULL;
    if (!m->adapter.attached)
        return rp_fail(&m->err, RWKVPEFT_E_STATE, "attach an adapter (rwkvpeft_adapter_attach) before creating a trainer");
    if (!(tp->lr_init >= 0) || !isfinite(tp->lr_init) || !(tp->lr_final >= 0) || !isfinite(tp->lr_final))
        return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "lr_init and lr_final must be finite and >= 0");
    if (!(tp->beta1 >= 0 && tp->beta1 < 1) || !(tp->beta2 >= 0 && tp->beta2 < 1))
        return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "Adam betas must lie in [0, 1)");
    if (!(tp->adam_eps > 0)) return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "adam_eps must be > 0");
    if (!(tp->weight_decay >= 0)) return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "weight_decay must be >= 0");
    if (tp->accumulate_grad_batches < 1)
        return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "accumulate_grad_batches must be >= 1");
    if (tp->lr_schedule < RWKVPEFT_LR_COS || tp->lr_schedule > RWKVPEFT_LR_WSD)
        return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "unknown lr_schedule %d", tp->lr_schedule);
    if (tp->total_steps < 0) return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "total_steps must be >= 0");
    if (tp->chunk_ctx < 0) return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "chunk_ctx must be >= 0 (0 = off)");
    if (tp->optimizer != RWKVPEFT_OPTIM_ADAMW && tp->optimizer != RWKVPEFT_OPTIM_ADAMW_8BIT)
        return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT,
                       "unknown optimizer %d (RWKVPEFT_OPTIM_ADAMW = 0, RWKVPEFT_OPTIM_ADAMW_8BIT = 1)", (int)tp->optimizer);
    rwkvpeft_trainer *t = (rwkvpeft_trainer *)rp_calloc(1, sizeof *t);
    if (!t) return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    t->m = m;
    t->tp = *tp;
    rp_backend *be = m->be;
    size_t bytes = (size_t)m->flat_numel * rp_dtype_size(be->ops->par_dtype);
    int rc = build_segments(t);
    if (tp->optimizer == RWKVPEFT_OPTIM_ADAMW_8BIT) {
        if (!rc && (be->ops->alloc(be, &t->grads, bytes) || be->ops->alloc(be, &t->norm_sq, 16)))
            rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "cannot allocate the gradients (%zu bytes): %s", bytes, be->err.msg);
        if (!rc) rc = alloc_adam8(t);
        if (!rc && be->ops->memset_zero(be, t->grads, bytes)) rc = rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
    } else {
        if (!rc && (be->ops->alloc(be, &t->grads, bytes) || be->ops->alloc(be, &t->adam_m, bytes) ||
                    be->ops->alloc(be, &t->adam_v, bytes) || be->ops->alloc(be, &t->norm_sq, 16)))
            rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "cannot allocate optimizer state (%zu bytes each): %s", bytes,
                         be->err.msg);
        if (!rc && (be->ops->memset_zero(be, t->adam_m, bytes) || be->ops->memset_zero(be, t->adam_v, bytes) ||
                    be->ops->memset_zero(be, t->grads, bytes)))
            rc = rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
    }
    if (rc) {
        free_optimizer_state(t);
        free(t->segs);
        free(t);
        return rc;
    }
    m->n_trainers++;
    *out = t;
    return 0;
}

void rp_trainer_destroy(rwkvpeft_trainer *t) {
    if (!t) return;
    rp_workspace_free(t->m, t->ws);
    free_optimizer_state(t);
    free(t->segs);
    t->m->n_trainers--;
    free(t);
}

const char *rp_trainer_error(const rwkvpeft_trainer *t) { return t->err.msg; }

/* ---- batches ------------------------------------------------------------------------------ */

/* Validates a batch and computes the per-position loss weights (sum 1 over counted
 * positions). Returns the sum of raw weights in *wsum. */
int rp_batch_weights(rwkvpeft_model *m, const rwkvpeft_batch *b, float *weights, double *wsum, rp_err *err) {
    if (!b || !b->inputs || !b->targets) return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "batch inputs and targets are required");
    if (b->batch_size <= 0 || b->seq_len <= 0)
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "batch_size and seq_len must be positive (got %d x %d)", b->batch_size,
                       b->seq_len);
    if ((int64_t)b->batch_size * b->seq_len > (int64_t)1 << 30)
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "batch of %d x %d tokens is too large", b->batch_size, b->seq_len);
    int64_t n = (int64_t)b->batch_size * b->seq_len;
    const float *mask = b->loss_mask;
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        int32_t id = b->inputs[i], tg = b->targets[i];
        if (id < 0 || id >= m->V)
            return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "input token %d at position %lld is outside the vocabulary [0, %d)", id,
                           (long long)i, m->V);
        if (tg != RWKVPEFT_IGNORE_INDEX && (tg < 0 || tg >= m->V))
            return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT,
                           "target %d at position %lld is outside the vocabulary [0, %d) and is not %d (ignore)", tg,
                           (long long)i, m->V, RWKVPEFT_IGNORE_INDEX);
        float w = 1.0f;
        if (mask) {
            w = mask[i];
            if (!isfinite(w) || w < 0)
                return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "loss_mask[%lld] = %g is not a finite value >= 0", (long long)i,
                               (double)w);
        }
        if (tg == RWKVPEFT_IGNORE_INDEX) w = 0;
        weights[i] = w;
        s += w;
    }
    if (s > 0)
        for (int64_t i = 0; i < n; i++) weights[i] = (float)(weights[i] / s);
    *wsum = s;
    return 0;
}

static int ensure_ws(rwkvpeft_model *m, rp_workspace **ws, int B, int T, int training) {
    if (*ws && rp_workspace_fits(*ws, B, T)) return 0;
    rp_workspace_free(m, *ws);
    *ws = NULL;
    return rp_workspace_create(m, B, T, training, ws);
}


int rp_evaluate(rwkvpeft_model *m, const rwkvpeft_batch *b, double *loss, double *n_tokens) {
    int64_t n = (int64_t)(b ? b->batch_size : 0) * (b ? b->seq_len : 0);
    float *w = (float *)rp_malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!w) return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    double s = 0;
    int rc = rp_batch_weights(m, b, w, &s, &m->err);
    if (!rc) rc = ensure_ws(m, &m->eval_ws, b->batch_size, b->seq_len, 0);
    if (!rc) rc = rp_workspace_set_batch(m, m->eval_ws, b->batch_size, b->seq_len, b->inputs, b->targets, w);
    if (!rc) rc = rp_forward_backward(m, m->eval_ws, NULL, 0.0f, 0.0f, 0, NULL);
    free(w);
    if (rc) return rc;
    double l = rp_read_par_scalar(m, rp_workspace_loss(m->eval_ws), &rc);
    if (rc) return rp_be_fail(m->be, rc, &m->err);
    *loss = s > 0 ? l : 0.0;
    *n_tokens = s;
    if (!isfinite(l)) return rp_fail(&m->err, RWKVPEFT_E_NUMERIC, "evaluation loss is not finite (%g)", l);
    return 0;
}

/* ---- one step ---------------------------------------------------------------------------- */

int rp_trainer_step(rwkvpeft_trainer *t, const rwkvpeft_batch *b, rwkvpeft_step_result *res) {
    rwkvpeft_model *m = t->m;
    rp_backend *be = m->be;
    int64_t n = (int64_t)(b ? b->batch_size : 0) * (b ? b->seq_len : 0);
    float *w = (float *)rp_malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!w) return rp_fail(&t->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    double wsum = 0;
    /* long sequences go through chunked (infctx) training */
    int chunked = t->tp.chunk_ctx > 0 && b && b->seq_len > t->tp.chunk_ctx;
    int rc = rp_batch_weights(m, b, w, &wsum, &t->err);
    if (!rc && (rc = ensure_ws(m, &t->ws, b->batch_size, chunked ? t->tp.chunk_ctx : b->seq_len, 1))) tfail(t, rc);
    if (!rc && !chunked &&
        (rc = rp_workspace_set_batch(m, t->ws, b->batch_size, b->seq_len, b->inputs, b->targets, w)))
        tfail(t, rc);
    if (rc) {
        free(w);
        return rc;
    }
    size_t ps = rp_dtype_size(be->ops->par_dtype);
    if (t->micro == 0 && (rc = be->ops->memset_zero(be, t->grads, (size_t)m->flat_numel * ps))) {
        free(w);
        return rp_be_fail(be, rc, &t->err);
    }
    int accum = t->tp.accumulate_grad_batches;
    /* L2Wrap is scaled by 1/accum like the loss, so N accumulated micro-batches equal one
     * batch N times larger (the reference leaves it unscaled; docs/differences.md) */
    float grad_scale = 1.0f / (float)accum;
    float l2wrap = (float)(1e-4 / ((double)b->batch_size * b->seq_len) / accum);
    uint64_t seed = rp_mix64(m->adapter.seed ^ rp_mix64((uint64_t)t->micro_total + 1));
    if (seed == 0) seed = 1;
    double chunked_loss = 0;
    if (chunked)
        rc = rp_train_chunked(m, t->ws, b->inputs, b->targets, w, b->batch_size, b->seq_len, t->tp.chunk_ctx,
                                 t->tp.infctx_full != 0, t->grads, grad_scale, l2wrap, seed, &chunked_loss);
    else
        rc = rp_forward_backward(m, t->ws, t->grads, grad_scale, l2wrap, seed, NULL);
    free(w);
    if (rc) return tfail(t, rc);
    t->micro++;
    t->micro_total++;
    t->tokens += n;
    double lr = schedule_lr(&t->tp, t->step);
    int stepped = 0;
    double norm = 0;
    if (t->micro >= accum) {
        if ((rc = be->ops->memset_zero(be, t->norm_sq, ps)) ||
            (rc = be->ops->sumsq(be, t->norm_sq, t->grads, t->segs, t->n_segs)) ||
            (rc = t->tp.optimizer == RWKVPEFT_OPTIM_ADAMW_8BIT
                      ? be->ops->adam8_update(be, m->flat, t->grads, t->m_q, t->v_q, t->m_absmax, t->v_absmax, t->codes,
                                              t->codes + RP_ADAM8_CODES, m->flat_numel, t->segs, t->n_segs, t->norm_sq,
                                              t->tp.grad_clip, (float)lr, t->tp.beta1, t->tp.beta2, t->tp.adam_eps,
                                              t->step + 1)
                      : be->ops->adam_update(be, m->flat, t->grads, t->adam_m, t->adam_v, t->segs, t->n_segs,
                                             t->norm_sq, t->tp.grad_clip, (float)lr, t->tp.beta1, t->tp.beta2,
                                             t->tp.adam_eps, t->step + 1)))
            return rp_be_fail(be, rc, &t->err);
        /* refresh working copies of trainable matrices whose storage type differs */
        for (int i = 0; i < m->n_params; i++) {
            rp_param *p = &m->params[i];
            if (p->trainable && p->cls == RP_CLS_MATRIX && be->ops->act_dtype != be->ops->par_dtype &&
                (rc = be->ops->convert(be, p->data, be->ops->act_dtype, (char *)m->flat + (size_t)p->flat_off * ps,
                                       be->ops->par_dtype, p->numel)))
                return rp_be_fail(be, rc, &t->err);
        }
        stepped = 1;
        t->micro = 0;
        norm = sqrt(rp_read_par_scalar(m, t->norm_sq, &rc));
        if (rc) return rp_be_fail(be, rc, &t->err);
        if (!isfinite(norm))
            return rp_fail(&t->err, RWKVPEFT_E_NUMERIC,
                           "gradient norm is not finite at step %lld; the update was skipped and the weights are unchanged",
                           (long long)t->step + 1);
        t->step++;
    }
    double loss = chunked ? chunked_loss : rp_read_par_scalar(m, rp_workspace_loss(t->ws), &rc);
    if (rc) return rp_be_fail(be, rc, &t->err);
    if (wsum <= 0) loss = 0;
    if (res) {
        rwkvpeft_step_result r;
        memset(&r, 0, sizeof r);
        r.loss = loss;
        r.grad_norm = norm;
        r.lr = lr;
        r.optimizer_step_taken = stepped;
        r.step = t->step;
        r.tokens = t->tokens;
        rp_give_result(res, &r, sizeof r);
    }
    if (!isfinite(loss)) return rp_fail(&t->err, RWKVPEFT_E_NUMERIC, "loss is not finite (%g)", loss);
    return 0;
}

/* ---- optimizer state files ------------------------------------------------------------ */

/* fp32 AdamW: adam.m, adam.v (P). 8-bit AdamW: adam8.m, adam8.v (u8 codes), adam8.m_absmax,
 * adam8.v_absmax (f32 per block) and trainer.optimizer (i32 [1] = 1); an fp32 file has no
 * trainer.optimizer (the files written before the 8-bit optimizer existed). Both carry
 * grad.accumulated, params and trainer.counters. */
int rp_trainer_save_state(rwkvpeft_trainer *t, const char *path) {
    rwkvpeft_model *m = t->m;
    rp_backend *be = m->be;
    rp_dtype P_ = be->ops->par_dtype;
    size_t ps = rp_dtype_size(P_), bytes = (size_t)m->flat_numel * ps;
    const int q8 = t->tp.optimizer == RWKVPEFT_OPTIM_ADAMW_8BIT;
    /* moments: fp32 m, v of `bytes` each, or codes of flat_numel bytes each + the scales */
    size_t mom_bytes = q8 ? (size_t)m->flat_numel : bytes, abytes = sizeof(float) * (size_t)t->n_qblocks;
    /* the trainable weights themselves are saved too (in full precision), so a resume is
     * exact even when the adapter file was written in bf16 */
    void *mh = rp_malloc(mom_bytes), *vh = rp_malloc(mom_bytes), *gh = rp_malloc(bytes), *ph = rp_malloc(bytes);
    float *mah = q8 ? (float *)rp_malloc(abytes) : NULL, *vah = q8 ? (float *)rp_malloc(abytes) : NULL;
    int rc = 0;
    if (!mh || !vh || !gh || !ph || (q8 && (!mah || !vah))) rc = rp_fail(&t->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    if (!rc && !q8 &&
        (be->ops->memcpy_d2h(be, mh, t->adam_m, bytes) || be->ops->memcpy_d2h(be, vh, t->adam_v, bytes)))
        rc = rp_be_fail(be, RWKVPEFT_E_BACKEND, &t->err);
    if (!rc && q8 &&
        (be->ops->memcpy_d2h(be, mh, t->m_q, mom_bytes) || be->ops->memcpy_d2h(be, vh, t->v_q, mom_bytes) ||
         be->ops->memcpy_d2h(be, mah, t->m_absmax, abytes) || be->ops->memcpy_d2h(be, vah, t->v_absmax, abytes)))
        rc = rp_be_fail(be, RWKVPEFT_E_BACKEND, &t->err);
    if (!rc && (be->ops->memcpy_d2h(be, gh, t->grads, bytes) || be->ops->memcpy_d2h(be, ph, m->flat, bytes)))
        rc = rp_be_fail(be, RWKVPEFT_E_BACKEND, &t->err);
    if (!rc) { /* fp32: adam.m, adam.v; 8-bit: adam8.m, adam8.v and their scales; then the rest */
        int64_t counters[5] = {t->step, t->micro, t->micro_total, t->tokens, (int64_t)t->layout_hash};
        int32_t optimizer = t->tp.optimizer;
        rp_dtype mt = q8 ? RP_U8 : P_;
        rp_named_tensor ts[8] = {
            {q8 ? "adam8.m" : "adam.m", mt, 1, {m->flat_numel}, mh, mom_bytes},
            {q8 ? "adam8.v" : "adam.v", mt, 1, {m->flat_numel}, vh, mom_bytes},
        };
        int nt = 2;
        if (q8) {
            ts[nt++] = (rp_named_tensor){"adam8.m_absmax", RP_F32, 1, {t->n_qblocks}, mah, abytes};
            ts[nt++] = (rp_named_tensor){"adam8.v_absmax", RP_F32, 1, {t->n_qblocks}, vah, abytes};
        }
        ts[nt++] = (rp_named_tensor){"grad.accumulated", P_, 1, {m->flat_numel}, gh, bytes};
        ts[nt++] = (rp_named_tensor){"params", P_, 1, {m->flat_numel}, ph, bytes};
        ts[nt++] = (rp_named_tensor){"trainer.counters", RP_I64, 1, {5}, counters, sizeof counters};
        if (q8) ts[nt++] = (rp_named_tensor){"trainer.optimizer", RP_I32, 1, {1}, &optimizer, sizeof optimizer};
        rc = rp_tensorfile_write(path, RP_FILE_SAFETENSORS, ts, nt, &t->err);
    }
    free(mh);
    free(vh);
    free(gh);
    free(ph);
    free(mah);
    free(vah);
    return rc;
}

/* Checks that tensor `x` (present) has `nbytes` bytes of `dt`. */
static int expect_tensor(rwkvpeft_trainer *t, const char *path, const rp_named_tensor *x, rp_dtype dt, size_t nbytes) {
    if (x->dtype != dt || x->nbytes != nbytes)
        return rp_fail(&t->err, RWKVPEFT_E_SHAPE, "%s: %s has %zu bytes of %s, expected %zu bytes of %s", path, x->name, x->nbytes,
                       rp_dtype_name(x->dtype), nbytes, rp_dtype_name(dt));
    return 0;
}

int rp_trainer_load_state(rwkvpeft_trainer *t, const char *path) {
    rwkvpeft_model *m = t->m;
    rp_backend *be = m->be;
    rp_dtype P_ = be->ops->par_dtype;
    size_t bytes = (size_t)m->flat_numel * rp_dtype_size(P_);
    rp_tensorfile *f = NULL;
    RP_TRY(rp_tensorfile_open(path, &f, &t->err));
    int rc = 0;
    const rp_named_tensor *tg = rp_tensorfile_find(f, "grad.accumulated"), *tc = rp_tensorfile_find(f, "trainer.counters"),
                          *tp = rp_tensorfile_find(f, "params"), *to = rp_tensorfile_find(f, "trainer.optimizer");
    const int q8 = t->tp.optimizer == RWKVPEFT_OPTIM_ADAMW_8BIT;
    /* the file's optimizer: trainer.optimizer when present, else fp32 AdamW */
    int32_t file_opt = RWKVPEFT_OPTIM_ADAMW;
    if (to && (to->dtype != RP_I32 || to->nbytes != sizeof(int32_t)))
        rc = rp_fail(&t->err, RWKVPEFT_E_FORMAT, "%s: trainer.optimizer is not one int32", path);
    if (!rc && to) memcpy(&file_opt, to->data, sizeof file_opt);
    const char *mn = file_opt == RWKVPEFT_OPTIM_ADAMW_8BIT ? "adam8.m" : "adam.m",
               *vn = file_opt == RWKVPEFT_OPTIM_ADAMW_8BIT ? "adam8.v" : "adam.v";
    const rp_named_tensor *tm = rp_tensorfile_find(f, mn), *tv = rp_tensorfile_find(f, vn);
    const rp_named_tensor *tma = rp_tensorfile_find(f, "adam8.m_absmax"), *tva = rp_tensorfile_find(f, "adam8.v_absmax");
    int64_t cnt[5];
    if (!rc && (file_opt != RWKVPEFT_OPTIM_ADAMW && file_opt != RWKVPEFT_OPTIM_ADAMW_8BIT))
        rc = rp_fail(&t->err, RWKVPEFT_E_FORMAT, "%s: unknown optimizer %d in trainer.optimizer", path, (int)file_opt);
    if (!rc && (!tm || !tv || !tg || !tp || !tc || tc->dtype != RP_I64 || tc->nbytes != sizeof cnt ||
                (file_opt == RWKVPEFT_OPTIM_ADAMW_8BIT && (!tma || !tva))))
        rc = rp_fail(&t->err, RWKVPEFT_E_FORMAT, "%s: not a librwkvpeft optimizer state file", path);
    if (!rc && file_opt != t->tp.optimizer)
        rc = rp_fail(&t->err, RWKVPEFT_E_INVALID_ARGUMENT,
                     "%s: the optimizer state was saved by %s, but this trainer uses %s; resume with the optimizer it was "
                     "saved with (rwkvpeft-train --optim)", path, optimizer_name(file_opt), optimizer_name(t->tp.optimizer));
    if (!rc) memcpy(cnt, tc->data, sizeof cnt);
    if (!rc && (uint64_t)cnt[4] != t->layout_hash)
        rc = rp_fail(&t->err, RWKVPEFT_E_SHAPE,
                     "%s: the optimizer state belongs to a different set of trainable tensors (other adapter, rank or "
                     "train_parts, or a state saved by an earlier build with another buffer layout)", path);
    size_t abytes = sizeof(float) * (size_t)t->n_qblocks;
    const rp_named_tensor *arr[6] = {tm, tv, tg, tp, tma, tva};
    void *dst[6] = {q8 ? (void *)t->m_q : t->adam_m, q8 ? (void *)t->v_q : t->adam_v, t->grads, m->flat, t->m_absmax,
                    t->v_absmax};
    rp_dtype want[6] = {q8 ? RP_U8 : P_, q8 ? RP_U8 : P_, P_, P_, RP_F32, RP_F32};
    size_t nb[6] = {q8 ? (size_t)m->flat_numel : bytes, q8 ? (size_t)m->flat_numel : bytes, bytes, bytes, abytes, abytes};
    for (int i = 0; !rc && i < (q8 ? 6 : 4); i++) {
        if ((rc = expect_tensor(t, path, arr[i], want[i], nb[i]))) break;
        if (be->ops->memcpy_h2d(be, dst[i], arr[i]->data, nb[i])) rc = rp_be_fail(be, RWKVPEFT_E_BACKEND, &t->err);
    }
    for (int i = 0; !rc && i < m->n_params; i++) { /* working copies of trainable matrices */
        rp_param *p = &m->params[i];
        if (p->trainable && p->cls == RP_CLS_MATRIX && be->ops->act_dtype != P_ &&
            be->ops->convert(be, p->data, be->ops->act_dtype, (char *)m->flat + (size_t)p->flat_off * rp_dtype_size(P_), P_,
                             p->numel))
            rc = rp_be_fail(be, RWKVPEFT_E_BACKEND, &t->err);
    }
    if (!rc) {
        t->step = cnt[0];
        t->micro = cnt[1];
        t->micro_total = cnt[2];
        t->tokens = cnt[3];
    }
    rp_tensorfile_close(f);
    return rc;
}
