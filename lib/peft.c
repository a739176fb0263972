/* peft.c — attaching adapters: which tensors train (spec §3.6), LoRA tensors (§3.2), the
 * flat trainable buffer, and loading adapter files. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_common.h"
#include "model.h"
#include "tensorfile.h"

/* Splits "time,ln emb" into substrings; returns how many (at most max). */
static int split_parts(const char *s, char out[][32], int max) {
    int n = 0;
    while (*s && n < max) {
        while (*s == ',' || isspace((unsigned char)*s)) s++;
        int len = 0;
        while (s[len] && s[len] != ',' && !isspace((unsigned char)s[len])) len++;
        if (len > 0) {
            int c = len < 31 ? len : 31;
            memcpy(out[n], s, (size_t)c);
            out[n][c] = 0;
            n++;
        }
        s += len;
    }
    return n;
}

static int matches_any(const char *name, char parts[][32], int np) {
    for (int i = 0; i < np; i++)
        if (strstr(name, parts[i])) return 1;
    return 0;
}

/* Places a parameter inside the flat buffer at element offset `off`, moving its data. */
static int move_into_flat(rwkvpeft_model *m, rp_param *p, int64_t off) {
    rp_backend *be = m->be;
    rp_dtype P_ = be->ops->par_dtype, A_ = be->ops->act_dtype;
    size_t ps = rp_dtype_size(P_);
    void *dst = (char *)m->flat + (size_t)off * ps;
    p->flat_off = off;
    if (!p->data) { /* new adapter tensor: lives in the flat buffer */
        p->data = dst;
        p->owns_data = 0;
        return 0;
    }
    rp_dtype cur = p->cls == RP_CLS_MATRIX ? A_ : P_;
    int rc = cur == P_ ? be->ops->memcpy_d2d(be, dst, p->data, (size_t)p->numel * ps)
                       : be->ops->convert(be, dst, P_, p->data, cur, p->numel);
    if (rc) return rp_be_fail(be, rc, &m->err);
    if (cur == P_) { /* the flat copy becomes the only copy */
        if (p->owns_data) be->ops->free(be, p->data);
        p->data = dst;
        p->owns_data = 0;
    } /* else: MATRIX on a backend whose act dtype differs keeps its working copy */
    return 0;
}

int rp_adapter_attach(rwkvpeft_model *m, const rwkvpeft_adapter_params *ap) {
    rp_adapter_cfg *cfg = &m->adapter;
    if (cfg->attached) return rp_fail(&m->err, RWKVPEFT_E_STATE, "an adapter is already attached to this model");
    if (m->n_trainers) return rp_fail(&m->err, RWKVPEFT_E_STATE, "free the model's trainers before attaching");
    if (ap->method != RWKVPEFT_PEFT_NONE && ap->method != RWKVPEFT_PEFT_LORA)
        return rp_fail(&m->err, RWKVPEFT_E_UNSUPPORTED, "PEFT method %d is not supported by this build (LoRA = 1, none = 0)",
                       ap->method);
    if (ap->method == RWKVPEFT_PEFT_LORA) {
        if (ap->r <= 0 || ap->r > 65536) return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "LoRA rank r must be in [1, 65536], got %d", ap->r);
        if (!isfinite(ap->alpha)) return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "LoRA alpha must be finite");
        if (!(ap->dropout >= 0 && ap->dropout < 1))
            return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "LoRA dropout must be in [0, 1), got %g", (double)ap->dropout);
        if (ap->full_finetune)
            return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "full_finetune needs method NONE, not LoRA");
    }
    const char *tp = ap->train_parts ? ap->train_parts : "time,ln";
    if (strlen(tp) >= sizeof cfg->train_parts) return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "train_parts is too long");
    char parts[16][32];
    int np = split_parts(tp, parts, 16);
    int emb_head = ap->train_emb_head < 0 ? !m->from_file : ap->train_emb_head != 0;

    /* 1. trainability of base tensors */
    for (int i = 0; i < m->n_params; i++) {
        rp_param *p = &m->params[i];
        int hit = 0, miss = 0;
        for (int j = 0; j < p->nparts; j++) {
            if (ap->full_finetune || matches_any(p->part_names[j], parts, np))
                hit++;
            else
                miss++;
        }
        if (hit && miss)
            return rp_fail(&m->err, RWKVPEFT_E_UNSUPPORTED,
                           "train_parts \"%s\" selects only some of %s..%s, which train together; select all of them",
                           tp, p->part_names[0], p->part_names[p->nparts - 1]);
        p->trainable = hit > 0;
        if (emb_head && (p == m->emb || p == m->head)) p->trainable = 1;
    }

    /* 2. LoRA tensors */
    int64_t lora_elems = 0;
    if (ap->method == RWKVPEFT_PEFT_LORA) {
        for (int l = 0; l < m->n_layer; l++)
            for (int i = 0; i < RP_LIN_COUNT; i++) {
                rp_linear *lin = &m->layers[l].lin[i];
                if (m->n_params + 2 > m->cap_params) return rp_fail(&m->err, RWKVPEFT_E_INTERNAL, "parameter table full");
                char base[RP_NAME_MAX - 8]; /* room for ".lora_A"; names are far shorter */
                size_t bl = strlen(lin->W->name);
                if (bl >= sizeof base) bl = sizeof base - 1;
                memcpy(base, lin->W->name, bl);
                base[bl] = 0;
                char *dot = strrchr(base, '.');
                if (dot) *dot = 0; /* drop ".weight" */
                rp_param *pa = &m->params[m->n_params++], *pb = &m->params[m->n_params++];
                memset(pa, 0, sizeof *pa);
                memset(pb, 0, sizeof *pb);
                snprintf(pa->name, RP_NAME_MAX, "%s.lora_A", base);
                snprintf(pb->name, RP_NAME_MAX, "%s.lora_B", base);
                rp_param *ab[2] = {pa, pb};
                for (int k = 0; k < 2; k++) {
                    rp_param *p = ab[k];
                    snprintf(p->part_names[0], RP_NAME_MAX, "%s", p->name);
                    p->nparts = 1;
                    p->ndim = 2;
                    p->shape[0] = k == 0 ? ap->r : lin->out;
                    p->shape[1] = k == 0 ? lin->in : ap->r;
                    p->part_numel = p->numel = p->shape[0] * p->shape[1];
                    p->cls = RP_CLS_SMALL;
                    p->trainable = 1;
                    p->is_adapter = 1;
                    p->flat_off = -1;
                    p->lr_scale = 1;
                    lora_elems += p->numel;
                }
                lin->A = pa;
                lin->B = pb;
                lin->r = ap->r;
                lin->scale = ap->alpha / (float)ap->r;
                lin->dropout = ap->dropout;
            }
    }
    (void)lora_elems;

    /* 3. the flat trainable buffer, in parameter order */
    int64_t total = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].trainable) total += m->params[i].numel;
    if (total == 0)
        return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT,
                       "nothing would train: no adapter and train_parts \"%s\" matches no tensor", tp);
    size_t ps = rp_dtype_size(m->be->ops->par_dtype);
    if (m->be->ops->alloc(m->be, &m->flat, (size_t)total * ps))
        return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "cannot allocate %lld trainable parameters: %s", (long long)total,
                       m->be->err.msg);
    m->flat_numel = total;
    m->n_trainable = total;
    int64_t off = 0;
    for (int i = 0; i < m->n_params; i++) {
        rp_param *p = &m->params[i];
        if (!p->trainable) continue;
        RP_TRY(move_into_flat(m, p, off));
        off += p->numel;
    }

    /* 4. LoRA init: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform a=sqrt(5)), B = 0 */
    for (int l = 0; l < m->n_layer && ap->method == RWKVPEFT_PEFT_LORA; l++)
        for (int i = 0; i < RP_LIN_COUNT; i++) {
            rp_linear *lin = &m->layers[l].lin[i];
            float *buf = (float *)rp_malloc(sizeof(float) * (size_t)lin->A->numel);
            if (!buf) return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
            double bound = 1.0 / sqrt((double)lin->in);
            uint64_t s = rp_mix64(ap->seed ^ rp_mix64((uint64_t)lin->id + 0x4c6f5241ull));
            for (int64_t e = 0; e < lin->A->numel; e++)
                buf[e] = (float)(-bound + 2.0 * bound * (double)rp_uniform01(s, (uint64_t)e));
            int rc = rp_param_upload_f32(m, lin->A, -1, buf);
            free(buf);
            RP_TRY(rc);
            RP_TRY(m->be->ops->memset_zero(m->be, lin->B->data, (size_t)lin->B->numel * ps) ? rp_be_fail(m->be, RWKVPEFT_E_BACKEND, &m->err) : 0);
        }

    cfg->attached = 1;
    cfg->method = ap->method;
    cfg->r = ap->r;
    cfg->alpha = ap->alpha;
    cfg->dropout = ap->dropout;
    snprintf(cfg->train_parts, sizeof cfg->train_parts, "%s", tp);
    cfg->full_finetune = ap->full_finetune;
    cfg->train_emb_head = emb_head;
    cfg->seed = ap->seed;
    return 0;
}

int rp_adapter_load(rwkvpeft_model *m, const char *path) {
    if (!m->adapter.attached) return rp_fail(&m->err, RWKVPEFT_E_STATE, "attach an adapter before loading one");
    if (m->n_trainers)
        return rp_fail(&m->err, RWKVPEFT_E_STATE, "load the adapter before creating a trainer (optimizer state would not match)");
    rp_tensorfile *f = NULL;
    RP_TRY(rp_tensorfile_open(path, &f, &m->err));
    int rc = 0, loaded_trainable = 0;
    float *buf = NULL;
    for (int i = 0; i < f->count && !rc; i++) {
        const rp_named_tensor *t = &f->tensors[i];
        int part;
        rp_param *p = rp_model_find_param(m, t->name, &part);
        if (!p) {
            rc = rp_fail(&m->err, RWKVPEFT_E_SHAPE,
                         strstr(t->name, "lora_") ? "%s: tensor %s does not match the attached adapter (attach LoRA first)"
                                                  : "%s: tensor %s is not a parameter of this model",
                         path, t->name);
            break;
        }
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        if (!same) {
            rc = rp_fail(&m->err, RWKVPEFT_E_SHAPE,
                         "%s: tensor %s has shape [%lld,...] (%d-D), the attached model expects [%lld,...] (%d-D)%s", path,
                         t->name, (long long)(t->ndim ? t->shape[0] : 0), t->ndim, (long long)p->shape[0], p->ndim,
                         strstr(t->name, "lora_") ? " (different LoRA rank?)" : "");
            break;
        }
        free(buf);
        buf = (float *)rp_malloc(sizeof(float) * (size_t)p->part_numel);
        if (!buf) {
            rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
            break;
        }
        if (rp_convert_to_f32(buf, t->data, t->dtype, (size_t)p->part_numel)) {
            rc = rp_fail(&m->err, RWKVPEFT_E_UNSUPPORTED, "%s: tensor %s has unsupported type %s", path, t->name,
                         rp_dtype_name(t->dtype));
            break;
        }
        for (int64_t e = 0; e < p->part_numel; e++)
            if (!isfinite(buf[e])) {
                rc = rp_fail(&m->err, RWKVPEFT_E_NUMERIC, "%s: tensor %s contains NaN or Inf", path, t->name);
                break;
            }
        if (rc) break;
        rc = rp_param_upload_f32(m, p, part, buf);
        /* a trainable MATRIX keeps a float master in the flat buffer too */
        if (!rc && p->trainable && p->cls == RP_CLS_MATRIX && m->be->ops->act_dtype != m->be->ops->par_dtype) {
            rp_dtype P_ = m->be->ops->par_dtype;
            size_t ps = rp_dtype_size(P_);
            void *tmp = rp_malloc(ps * (size_t)p->part_numel);
            if (!tmp) {
                rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
                break;
            }
            rp_convert_from_f32(tmp, P_, buf, (size_t)p->part_numel);
            if (m->be->ops->memcpy_h2d(m->be, (char *)m->flat + (size_t)(p->flat_off + part * p->part_numel) * ps, tmp,
                                       ps * (size_t)p->part_numel))
                rc = rp_be_fail(m->be, RWKVPEFT_E_BACKEND, &m->err);
            free(tmp);
        }
        if (p->trainable) loaded_trainable++;
    }
    free(buf);
    rp_tensorfile_close(f);
    if (!rc && m->ctx) {
        int total = 0;
        for (int i = 0; i < m->n_params; i++)
            if (m->params[i].trainable) total += m->params[i].nparts;
        if (loaded_trainable < total)
            rp_log(m->ctx, RWKVPEFT_LOG_INFO, "%s: %d of %d trainable tensors loaded; the others keep their values", path,
                   loaded_trainable, total);
    }
    return rc;
}
