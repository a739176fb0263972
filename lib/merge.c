/* merge.c — folding an adapter into the base weights (spec §3.8): in place on a model
 * (rp_model_merge, then the adapter is detached) and file to file (rp_merge_files, the
 * counterpart of RWKV-PEFT's merge scripts). Both use the same float64 host kernels:
 *
 *   LoRA   W += (alpha/r)·B·A               PiSSA  W ← (W − B₀·A₀) + B·A
 *   Bone   W[o, i] += P[i mod r, o]         Bat    W_ab ← W_ab + W_ab·D_b + D_b
 *   state  time_state copied (it is an ordinary model tensor afterwards)
 *
 * Merging is host work at merge time (weights travel through the backend's memcpy ops),
 * never part of a training step. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "tensorfile.h"

/* ---- kernels (row-major, float64 weight, float32 adapter tensors) ---------------------- */

/* W [out,in] += scale·B [out,r]·A [r,in] */
static int fold_lowrank(double *W, int out, int in, int r, double scale, const float *B, const float *A, rp_err *err) {
    double *a = (double *)rp_malloc(sizeof(double) * (size_t)r * in), *b = (double *)rp_malloc(sizeof(double) * (size_t)out * r);
    if (!a || !b) {
        free(a);
        free(b);
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory while merging");
    }
    for (size_t i = 0; i < (size_t)r * in; i++) a[i] = A[i];
    for (size_t i = 0; i < (size_t)out * r; i++) b[i] = B[i];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, r, scale, b, r, a, in, 1.0, W, in);
    free(a);
    free(b);
    return 0;
}

/* W [out,in] += ΔW with ΔW[o,i] = P[i mod r, o], P [r,out] (Bone; a partial last group of
 * columns takes the first in mod r rows of P, as merge_disha.py does). */
static void fold_bone(double *W, int out, int in, int r, const float *P) {
    for (int o = 0; o < out; o++)
        for (int i = 0; i < in; i++) W[(size_t)o * in + i] += P[(size_t)(i % r) * out + o];
}

/* Bat: every r×r block W_ab ← W_ab + W_ab·D_b + D_b, D [in/r, r, r]. */
static int fold_bat(double *W, int out, int in, int r, const float *D, rp_err *err) {
    double *panel = (double *)rp_malloc(sizeof(double) * (size_t)out * r), *d = (double *)rp_malloc(sizeof(double) * (size_t)r * r);
    if (!panel || !d) {
        free(panel);
        free(d);
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory while merging");
    }
    for (int b = 0; b < in / r; b++) {
        for (size_t i = 0; i < (size_t)r * r; i++) d[i] = D[(size_t)b * r * r + i];
        double *Wb = W + (size_t)b * r; /* column panel [out, r], ld = in */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, r, r, 1.0, Wb, in, d, r, 0.0, panel, r);
        for (int o = 0; o < out; o++)
            for (int q = 0; q < r; q++) Wb[(size_t)o * in + q] += panel[(size_t)o * r + q] + d[(size_t)(o % r) * r + q];
    }
    free(panel);
    free(d);
    return 0;
}

/* ---- in place, on a model --------------------------------------------------------------- */

/* A parameter's values in host float32, from the float master when it is trainable and the
 * working copy has another type. */
static int read_param(rwkvpeft_model *m, rp_param *p, float *dst) {
    rp_backend *be = m->be;
    rp_dtype P_ = be->ops->par_dtype;
    if (p->trainable && p->flat_off >= 0 && p->cls == RP_CLS_MATRIX && be->ops->act_dtype != P_) {
        size_t ps = rp_dtype_size(P_);
        void *tmp = rp_malloc(ps * (size_t)p->numel);
        if (!tmp) return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory reading %s", p->name);
        int rc = be->ops->memcpy_d2h(be, tmp, (char *)m->flat + (size_t)p->flat_off * ps, ps * (size_t)p->numel);
        if (!rc) rp_convert_to_f32(dst, tmp, P_, (size_t)p->numel);
        free(tmp);
        return rc ? rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err) : 0;
    }
    return rp_param_download_f32(m, p, dst);
}

static int merge_linear(rwkvpeft_model *m, rp_linear *lin) {
    int out = lin->out, in = lin->in, r = lin->r;
    size_t nw = (size_t)out * in;
    float *w = (float *)rp_malloc(sizeof(float) * nw);
    double *wd = (double *)rp_malloc(sizeof(double) * nw);
    float *a = NULL, *b = NULL;
    int rc = 0;
    if (!w || !wd) rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of host memory merging %s", lin->W->name);
    if (!rc) rc = read_param(m, lin->W, w);
    for (size_t i = 0; !rc && i < nw; i++) wd[i] = w[i];
    if (!rc && lin->A) {
        a = (float *)rp_malloc(sizeof(float) * (size_t)lin->A->numel);
        b = (float *)rp_malloc(sizeof(float) * (size_t)lin->B->numel);
        if (!a || !b) rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
        if (!rc) rc = rp_param_download_f32(m, lin->A, a);
        if (!rc) rc = rp_param_download_f32(m, lin->B, b);
        if (!rc) rc = fold_lowrank(wd, out, in, r, lin->scale, b, a, &m->err);
    } else if (!rc && lin->D) {
        a = (float *)rp_malloc(sizeof(float) * (size_t)lin->D->numel);
        if (!a) rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
        if (!rc) rc = rp_param_download_f32(m, lin->D, a);
        if (!rc && lin->d_mode == RP_DMODE_BONE) fold_bone(wd, out, in, r, a);
        if (!rc && lin->d_mode == RP_DMODE_BAT) rc = fold_bat(wd, out, in, r, a, &m->err);
    }
    for (size_t i = 0; !rc && i < nw; i++) w[i] = (float)wd[i];
    /* a quantized W (read above as dequant(q)) holds the merged weight densely from now on */
    if (!rc) rc = rp_param_unquantize(m, lin->W);
    if (!rc) rc = rp_param_upload_f32(m, lin->W, -1, w);
    free(w);
    free(wd);
    free(a);
    free(b);
    return rc;
}

int rp_model_merge(rwkvpeft_model *m) {
    rp_adapter_cfg *cfg = &m->adapter;
    if (!cfg->attached) return rp_fail(&m->err, RWKVPEFT_E_STATE, "no adapter is attached: nothing to merge");
    if (m->n_trainers) return rp_fail(&m->err, RWKVPEFT_E_STATE, "free the model's trainers before merging");
    rp_backend *be = m->be;
    /* 1. fold every adapted linear */
    for (int l = 0; l < m->n_layer; l++)
        for (int i = 0; i < RP_LIN_COUNT; i++) {
            rp_linear *lin = &m->layers[l].lin[i];
            if (!lin->W) continue; /* linear absent in this version */
            if (lin->A || lin->D) RP_TRY(merge_linear(m, lin));
        }
    /* 2. detach: drop adapter-only tensors, give the trained base tensors (and a state
     * tuning time_state) storage of their own again, free the flat buffer */
    for (int l = 0; l < m->n_layer; l++) {
        for (int i = 0; i < RP_LIN_COUNT; i++) {
            rp_linear *lin = &m->layers[l].lin[i];
            if (!lin->W) continue; /* linear absent in this version */
            lin->A = lin->B = lin->D = NULL;
            lin->d_mode = RP_DMODE_NONE;
            lin->r = 0;
            lin->scale = 0;
            lin->dropout = 0;
        }
    }
    for (int i = cfg->n_base_params; i < m->n_params; i++) m->params[i].is_adapter = 0; /* time_state */
    if (cfg->method != RWKVPEFT_PEFT_STATE) m->n_params = cfg->n_base_params;
    for (int i = 0; i < m->n_params; i++) {
        rp_param *p = &m->params[i];
        if (!p->owns_data && p->data) {
            rp_dtype t = p->cls == RP_CLS_MATRIX ? be->ops->act_dtype : be->ops->par_dtype;
            size_t bytes = (size_t)p->numel * rp_dtype_size(t);
            void *own = NULL;
            if (be->ops->alloc(be, &own, bytes))
                return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "cannot allocate %s while detaching the adapter: %s", p->name,
                               be->err.msg);
            if (be->ops->memcpy_d2d(be, own, p->data, bytes)) {
                be->ops->free(be, own);
                return rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
            }
            p->data = own;
            p->owns_data = 1;
        }
        p->trainable = 0;
        p->flat_off = -1;
    }
    be->ops->free(be, m->flat);
    m->flat = NULL;
    for (int l = 0; l < m->n_layer; l++) m->layers[l].flat_lo = m->layers[l].flat_hi = 0;
    m->flat_numel = 0;
    m->n_trainable = 0;
    rp_adapter_release(m);
    rp_workspace_free(m, m->eval_ws);
    m->eval_ws = NULL;
    memset(cfg, 0, sizeof *cfg);
    m->quant_pending = 0; /* the merged weights are final: never quantized again */
    return rp_model_place_embedding(m); /* frozen now: back to the host if asked */
}

/* ---- file to file ---------------------------------------------------------------------------- */

typedef struct out_entry {
    const char *name;
    const rp_named_tensor *src; /* where the values come from (base or adapter tensor) */
    float *merged;              /* owned float32 values of a merged weight, or NULL */
} out_entry;

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* adapter-only tensors: never copied into the merged checkpoint */
static int adapter_only(const char *name) {
    return ends_with(name, ".lora_A") || ends_with(name, ".lora_B") || ends_with(name, ".bone") ||
           ends_with(name, ".disha") || strstr(name, "init_lora_") != NULL;
}

static int to_f32(const rp_named_tensor *t, float **out, const char *path, rp_err *err) {
    int64_t n = rp_tensor_numel(t);
    *out = (float *)rp_malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!*out) return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory reading %s", t->name);
    if (rp_convert_to_f32(*out, t->data, t->dtype, (size_t)n)) {
        free(*out);
        *out = NULL;
        return rp_fail(err, RWKVPEFT_E_UNSUPPORTED, "%s: tensor %s has unsupported type %s", path, t->name, rp_dtype_name(t->dtype));
    }
    return 0;
}

static const char *method_word(int method) {
    switch (method) {
    case RWKVPEFT_PEFT_LORA: return "lora";
    case RWKVPEFT_PEFT_PISSA: return "pissa";
    case RWKVPEFT_PEFT_BONE: return "bone";
    case RWKVPEFT_PEFT_BAT: return "bat";
    case RWKVPEFT_PEFT_STATE: return "state";
    default: return "none";
    }
}

int rp_merge_files(const rwkvpeft_merge_params *p, rp_err *err) {
    if (!p->base_path || !p->adapter_path || !p->output_path)
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "base_path, adapter_path and output_path are required");
    rp_dtype odt;
    switch (p->dtype) {
    case RWKVPEFT_DTYPE_F32: odt = RP_F32; break;
    case RWKVPEFT_DTYPE_BF16: odt = RP_BF16; break;
    case RWKVPEFT_DTYPE_F16: odt = RP_F16; break;
    default: return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "unknown output dtype %d", p->dtype);
    }
    if (p->format < RWKVPEFT_FORMAT_AUTO || p->format > RWKVPEFT_FORMAT_SAFETENSORS)
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "unknown file format %d", p->format);
    if (p->method < -1 || p->method > RWKVPEFT_PEFT_STATE)
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "unknown merge method %d", p->method);
    if (p->quant < RWKVPEFT_QUANT_NONE || p->quant > RWKVPEFT_QUANT_FP8)
        return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "unknown quantization type %d (none 0, nf4 1, fp4 2, int8 3, fp8 4)",
                       p->quant);
    rp_tensorfile *base = NULL, *ad = NULL, *init = NULL;
    out_entry *ents = NULL;
    rp_named_tensor *ts = NULL;
    void **bufs = NULL;
    int n_ent = 0, rc = 0;
    float *fa = NULL, *fb = NULL, *fa0 = NULL, *fb0 = NULL, *fw = NULL;
    double *wd = NULL;
    if ((rc = rp_tensorfile_open(p->base_path, &base, err))) goto out;
    if ((rc = rp_tensorfile_open(p->adapter_path, &ad, err))) goto out;

    /* the method: given, or from the adapter's tensors */
    int has_lora = 0, has_d2 = 0, has_d3 = 0;
    for (int i = 0; i < ad->count; i++) {
        const rp_named_tensor *t = &ad->tensors[i];
        if (ends_with(t->name, ".lora_A") || ends_with(t->name, ".lora_B")) has_lora = 1;
        if (ends_with(t->name, ".bone") || ends_with(t->name, ".disha")) {
            if (t->ndim == 3)
                has_d3 = 1;
            else
                has_d2 = 1;
        }
    }
    int method = p->method;
    if (method < 0)
        method = has_lora ? (p->pissa_init ? RWKVPEFT_PEFT_PISSA : RWKVPEFT_PEFT_LORA)
                 : has_d3 ? RWKVPEFT_PEFT_BAT
                 : has_d2 ? RWKVPEFT_PEFT_BONE
                          : RWKVPEFT_PEFT_NONE;
    int lowrank = method == RWKVPEFT_PEFT_LORA || method == RWKVPEFT_PEFT_PISSA;
    if ((has_lora && !lowrank) || ((has_d2 || has_d3) && method != RWKVPEFT_PEFT_BONE && method != RWKVPEFT_PEFT_BAT) ||
        (has_d3 && method == RWKVPEFT_PEFT_BONE) || (has_d2 && method == RWKVPEFT_PEFT_BAT)) {
        rc = rp_fail(err, RWKVPEFT_E_SHAPE, "%s holds %s tensors, which a %s merge does not fold (use type %s)", p->adapter_path,
                     has_lora ? "lora_A/lora_B" : has_d3 ? "3-D bone/disha (Bat)" : "2-D bone/disha (Bone)",
                     method_word(method), has_lora ? "lora or pissa" : has_d3 ? "bat" : "bone");
        goto out;
    }
    if (method == RWKVPEFT_PEFT_LORA && !isfinite(p->lora_alpha)) {
        rc = rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT,
                     "a LoRA merge needs lora_alpha, the alpha the adapter was trained with (scaling = alpha / r); "
                     "there is no safe default");
        goto out;
    }
    if (method == RWKVPEFT_PEFT_PISSA) {
        if (!p->pissa_init) {
            rc = rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "a PiSSA merge needs the init file (init_pissa.pth) written at training start");
            goto out;
        }
        if ((rc = rp_tensorfile_open(p->pissa_init, &init, err))) goto out;
    }

    /* 1. the base tensors, then every adapter tensor that is not adapter-only overwrites or
     * adds the tensor of its name */
    ents = (out_entry *)rp_calloc((size_t)(base->count + ad->count), sizeof *ents);
    if (!ents) {
        rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
        goto out;
    }
    for (int i = 0; i < base->count; i++) {
        ents[n_ent].name = base->tensors[i].name;
        ents[n_ent].src = &base->tensors[i];
        n_ent++;
    }
    for (int i = 0; i < ad->count; i++) {
        const rp_named_tensor *t = &ad->tensors[i];
        if (adapter_only(t->name)) continue;
        int k = 0;
        while (k < n_ent && strcmp(ents[k].name, t->name)) k++;
        if (k < n_ent) {
            const rp_named_tensor *b = ents[k].src;
            int same = b->ndim == t->ndim;
            for (int d = 0; same && d < t->ndim; d++) same = b->shape[d] == t->shape[d];
            if (!same) {
                rc = rp_fail(err, RWKVPEFT_E_SHAPE, "%s: tensor %s does not have the shape of the base model's", p->adapter_path,
                             t->name);
                goto out;
            }
        } else {
            ents[n_ent++].name = t->name;
        }
        ents[k].src = t;
    }

    /* 2. fold the adapter tensors into their weights */
    for (int i = 0; i < ad->count && method != RWKVPEFT_PEFT_NONE && method != RWKVPEFT_PEFT_STATE; i++) {
        const rp_named_tensor *t = &ad->tensors[i];
        const char *suffix = lowrank ? ".lora_A" : ends_with(t->name, ".bone") ? ".bone" : ".disha";
        if (!ends_with(t->name, suffix)) continue;
        char mod[512], wname[600];
        size_t ml = strlen(t->name) - strlen(suffix);
        if (ml >= sizeof mod) continue;
        memcpy(mod, t->name, ml);
        mod[ml] = 0;
        snprintf(wname, sizeof wname, "%s.weight", mod);
        int k = 0;
        while (k < n_ent && strcmp(ents[k].name, wname)) k++;
        if (k == n_ent) {
            rc = rp_fail(err, RWKVPEFT_E_SHAPE, "%s: %s has no %s in the base model %s", p->adapter_path, t->name, wname, p->base_path);
            goto out;
        }
        const rp_named_tensor *w = ents[k].src;
        if (w->ndim != 2) {
            rc = rp_fail(err, RWKVPEFT_E_SHAPE, "%s is not a matrix", wname);
            goto out;
        }
        int out = (int)w->shape[0], in = (int)w->shape[1];
        size_t nw = (size_t)out * in;
        free(fw);
        free(wd);
        fw = NULL;
        wd = (double *)rp_malloc(sizeof(double) * nw);
        if (!wd || (rc = to_f32(w, &fw, p->base_path, err))) {
            if (!rc) rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory merging %s", wname);
            goto out;
        }
        /* --quant: the base the adapter was trained on is dequant(quant(W)), from float32
         * (PiSSA: of the residual, below) */
        if (p->quant && method != RWKVPEFT_PEFT_PISSA && (rc = rp_quant_roundtrip(p->quant, fw, (int64_t)nw, err))) {
            rp_fail_prefix(err, "%s: %s", p->base_path, wname);
            goto out;
        }
        for (size_t e = 0; e < nw; e++) wd[e] = fw[e];
        free(fa);
        free(fb);
        fa = fb = NULL;
        if (lowrank) {
            char bname[600];
            snprintf(bname, sizeof bname, "%s.lora_B", mod);
            const rp_named_tensor *tb = rp_tensorfile_find(ad, bname);
            if (!tb) {
                rc = rp_fail(err, RWKVPEFT_E_SHAPE, "%s: %s has no matching %s", p->adapter_path, t->name, bname);
                goto out;
            }
            int r = t->ndim == 2 ? (int)t->shape[0] : -1;
            if (t->ndim != 2 || t->shape[1] != in || tb->ndim != 2 || tb->shape[0] != out || tb->shape[1] != r) {
                rc = rp_fail(err, RWKVPEFT_E_SHAPE, "%s: %s/%s do not fit %s [%d,%d] (A must be [r,%d], B [%d,r])", p->adapter_path,
                             t->name, bname, wname, out, in, in, out);
                goto out;
            }
            if ((rc = to_f32(t, &fa, p->adapter_path, err)) || (rc = to_f32(tb, &fb, p->adapter_path, err))) goto out;
            if (method == RWKVPEFT_PEFT_PISSA) {
                const rp_named_tensor *ta0 = NULL, *tb0 = NULL;
                char nm[700];
                for (int pre = 0; pre < 2 && !(ta0 && tb0); pre++) {
                    snprintf(nm, sizeof nm, "%s%s.init_lora_A", pre ? "model." : "", mod);
                    ta0 = rp_tensorfile_find(init, nm);
                    snprintf(nm, sizeof nm, "%s%s.init_lora_B", pre ? "model." : "", mod);
                    tb0 = rp_tensorfile_find(init, nm);
                }
                if (!ta0 || !tb0) {
                    rc = rp_fail(err, RWKVPEFT_E_SHAPE, "%s: no init_lora_A/B for %s", p->pissa_init, mod);
                    goto out;
                }
                if (ta0->ndim != 2 || tb0->ndim != 2 || ta0->shape[0] != r || ta0->shape[1] != in || tb0->shape[0] != out ||
                    tb0->shape[1] != r) {
                    rc = rp_fail(err, RWKVPEFT_E_SHAPE, "%s: the init tensors of %s do not have the adapter's shapes", p->pissa_init, mod);
                    goto out;
                }
                free(fa0);
                free(fb0);
                fa0 = fb0 = NULL;
                if ((rc = to_f32(ta0, &fa0, p->pissa_init, err)) || (rc = to_f32(tb0, &fb0, p->pissa_init, err))) goto out;
                if ((rc = fold_lowrank(wd, out, in, r, -1.0, fb0, fa0, err))) goto out;
                if (p->quant) { /* W_res rounded to float32 (as training holds it), then quantized */
                    for (size_t e = 0; e < nw; e++) fw[e] = (float)wd[e];
                    if ((rc = rp_quant_roundtrip(p->quant, fw, (int64_t)nw, err))) {
                        rp_fail_prefix(err, "%s: residual of %s", p->base_path, wname);
                        goto out;
                    }
                    for (size_t e = 0; e < nw; e++) wd[e] = fw[e];
                }
                if ((rc = fold_lowrank(wd, out, in, r, 1.0, fb, fa, err))) goto out;
            } else {
                if ((rc = fold_lowrank(wd, out, in, r, (double)p->lora_alpha / r, fb, fa, err))) goto out;
            }
        } else if (t->ndim == 2) { /* Bone [r, out] */
            if (t->shape[1] != out || t->shape[0] < 1) {
                rc = rp_fail(err, RWKVPEFT_E_SHAPE, "%s: %s has %lld columns; Bone needs [r, out = %d] for %s", p->adapter_path, t->name,
                             (long long)t->shape[1], out, wname);
                goto out;
            }
            if ((rc = to_f32(t, &fa, p->adapter_path, err))) goto out;
            fold_bone(wd, out, in, (int)t->shape[0], fa);
        } else { /* Bat [in/r, r, r] */
            int r = t->ndim == 3 ? (int)t->shape[1] : 0;
            if (t->ndim != 3 || r < 1 || t->shape[2] != r || in % r || out % r || t->shape[0] != in / r) {
                rc = rp_fail(err, RWKVPEFT_E_SHAPE, "%s: %s does not fit %s [%d,%d] (Bat needs [in/r, r, r] with r dividing both)",
                             p->adapter_path, t->name, wname, out, in);
                goto out;
            }
            if ((rc = to_f32(t, &fa, p->adapter_path, err))) goto out;
            if ((rc = fold_bat(wd, out, in, r, fa, err))) goto out;
        }
        for (size_t e = 0; e < nw; e++) fw[e] = (float)wd[e];
        free(ents[k].merged);
        ents[k].merged = fw;
        fw = NULL;
    }

    /* 2b. --quant: target linears without an adapter tensor (state tuning, train_parts
     * only) were trained on dequant(quant(W)) too */
    for (int k = 0; k < n_ent && p->quant; k++) {
        if (ents[k].merged || !rp_is_target_linear_weight(ents[k].name)) continue;
        if ((rc = to_f32(ents[k].src, &ents[k].merged, p->base_path, err))) goto out;
        if ((rc = rp_quant_roundtrip(p->quant, ents[k].merged, rp_tensor_numel(ents[k].src), err))) {
            rp_fail_prefix(err, "%s: %s", p->base_path, ents[k].name);
            goto out;
        }
    }

    /* 3. convert to the output type and write */
    ts = (rp_named_tensor *)rp_calloc((size_t)n_ent, sizeof *ts);
    bufs = (void **)rp_calloc((size_t)n_ent, sizeof(void *));
    if (!ts || !bufs) {
        rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
        goto out;
    }
    for (int k = 0; k < n_ent; k++) {
        const rp_named_tensor *s = ents[k].src;
        rp_named_tensor *t = &ts[k];
        *t = *s;
        t->name = ents[k].name;
        int64_t n = rp_tensor_numel(s);
        if (!ents[k].merged && s->dtype == odt) continue; /* unchanged: written from the mapping */
        float *f = ents[k].merged;
        float *tmp = NULL;
        if (!f) {
            if (s->dtype != RP_F32 && s->dtype != RP_BF16 && s->dtype != RP_F16 && s->dtype != RP_F64) continue; /* keep ints */
            if ((rc = to_f32(s, &tmp, p->base_path, err))) goto out;
            f = tmp;
        }
        bufs[k] = rp_malloc(rp_dtype_size(odt) * (size_t)(n > 0 ? n : 1));
        if (!bufs[k]) {
            free(tmp);
            rc = rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory writing %s", t->name);
            goto out;
        }
        rp_convert_from_f32(bufs[k], odt, f, (size_t)n);
        free(tmp);
        t->dtype = odt;
        t->data = bufs[k];
        t->nbytes = (size_t)n * rp_dtype_size(odt);
    }
    rc = rp_tensorfile_write(p->output_path,
                             p->format == RWKVPEFT_FORMAT_PTH           ? RP_FILE_PTH
                             : p->format == RWKVPEFT_FORMAT_SAFETENSORS ? RP_FILE_SAFETENSORS
                                                                        : RP_FILE_AUTO,
                             ts, n_ent, err);
out:
    for (int k = 0; ents && k < n_ent; k++) free(ents[k].merged);
    for (int k = 0; bufs && k < n_ent; k++) free(bufs[k]);
    free(ents);
    free(bufs);
    free(ts);
    free(fa);
    free(fb);
    free(fa0);
    free(fb0);
    free(fw);
    free(wd);
    rp_tensorfile_close(base);
    rp_tensorfile_close(ad);
    rp_tensorfile_close(init);
    return rc;
}
