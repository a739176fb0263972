/* peft.c — attaching adapters: which tensors train (spec §3.6), the adapter tensors of
 * LoRA (§3.2), PiSSA (§3.3), Bone/Bat (§3.4) and state tuning (§3.5), the flat trainable
 * buffer, loading adapter files and writing PiSSA's init file. Methods: docs/peft.md. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_common.h"
#include "model.h"
#include "quant.h"
#include "tensorfile.h"

/* Splits "time,ln emb" into substrings; returns how many (at most max). */
#define MAX_TRAIN_PARTS 32
#define TRAIN_PART_LEN 64

/* Splits a comma/space separated list; -1 when it has more than `max` entries or one is
 * longer than TRAIN_PART_LEN − 1 (never silently truncated). */
static int split_parts(const char *s, char out[][TRAIN_PART_LEN], int max) {
    int n = 0;
    while (*s) {
        while (*s == ',' || isspace((unsigned char)*s)) s++;
        int len = 0;
        while (s[len] && s[len] != ',' && !isspace((unsigned char)s[len])) len++;
        if (len > 0) {
            if (n == max || len >= TRAIN_PART_LEN) return -1;
            memcpy(out[n], s, (size_t)len);
            out[n][len] = 0;
            n++;
        }
        s += len;
    }
    return n;
}

static int matches_any(const char *name, char parts[][TRAIN_PART_LEN], int np) {
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

/* "blocks.0.att.key.weight" -> "blocks.0.att.key" */
static void module_of(const rp_linear *lin, char *out, size_t n) {
    size_t len = strlen(lin->W->name);
    if (len >= n) len = n - 1; /* names are far shorter than RP_NAME_MAX */
    memcpy(out, lin->W->name, len);
    out[len] = 0;
    char *dot = strrchr(out, '.');
    if (dot && strcmp(dot, ".weight") == 0) *dot = 0;
}

/* Appends an adapter tensor (small, trainable, data placed in the flat buffer later). */
static rp_param *add_adapter_param(rwkvpeft_model *m, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    const char *names[1] = {name};
    rp_param *p = rp_model_add_param(m, RP_CLS_SMALL, 1, names, ndim, d0, d1, d2);
    if (!p) {
        rp_fail(&m->err, RWKVPEFT_E_INTERNAL, "parameter table full");
        return NULL;
    }
    p->trainable = 1;
    p->is_adapter = 1;
    return p;
}

static const char *method_name(int method) {
    switch (method) {
    case RWKVPEFT_PEFT_NONE: return "none";
    case RWKVPEFT_PEFT_LORA: return "LoRA";
    case RWKVPEFT_PEFT_PISSA: return "PiSSA";
    case RWKVPEFT_PEFT_BONE: return "Bone";
    case RWKVPEFT_PEFT_BAT: return "Bat";
    case RWKVPEFT_PEFT_STATE: return "state tuning";
    }
    return "?";
}

/* Finds "<module>.<suffix>" or "model.<module>.<suffix>" (HEAD's init_pissa.pth prefix). */
static const rp_named_tensor *find_init(const rp_tensorfile *f, const char *module, const char *suffix) {
    char name[RP_NAME_MAX + 32];
    snprintf(name, sizeof name, "%s.%s", module, suffix);
    const rp_named_tensor *t = rp_tensorfile_find(f, name);
    if (t) return t;
    snprintf(name, sizeof name, "model.%s.%s", module, suffix);
    return rp_tensorfile_find(f, name);
}

/* Reads one init tensor into host f32 with a shape check. */
static int read_init(rwkvpeft_model *m, const rp_tensorfile *f, const char *path, const char *module, const char *suffix,
                     int64_t d0, int64_t d1, float *dst) {
    const rp_named_tensor *t = find_init(f, module, suffix);
    if (!t) return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: PiSSA init file lacks %s.%s", path, module, suffix);
    if (t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != d1)
        return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: %s.%s has shape [%lld,%lld] (%d-D), expected [%lld,%lld] (PiSSA rank r = %lld?)",
                       path, module, suffix, (long long)(t->ndim > 0 ? t->shape[0] : 0),
                       (long long)(t->ndim > 1 ? t->shape[1] : 0), t->ndim, (long long)d0, (long long)d1,
                       (long long)(strstr(suffix, "_A") ? t->shape[0] : t->ndim > 1 ? t->shape[1] : 0));
    if (rp_convert_to_f32(dst, t->data, t->dtype, (size_t)(d0 * d1)))
        return rp_fail(&m->err, RWKVPEFT_E_UNSUPPORTED, "%s: %s.%s has unsupported type %s", path, module, suffix,
                       rp_dtype_name(t->dtype));
    for (int64_t e = 0; e < d0 * d1; e++)
        if (!isfinite(dst[e])) return rp_fail(&m->err, RWKVPEFT_E_NUMERIC, "%s: %s.%s contains NaN or Inf", path, module, suffix);
    return 0;
}

/* PiSSA step before the flat buffer exists: A₀, B₀ of every linear (SVD or init file) into
 * host arrays. W is changed later (pissa_apply_residual). */
static int pissa_prepare(rwkvpeft_model *m, const rwkvpeft_adapter_params *ap) {
    rp_tensorfile *f = NULL;
    if (ap->pissa_init) RP_TRY(rp_tensorfile_open(ap->pissa_init, &f, &m->err));
    int rc = 0;
    float *w = NULL;
    for (int l = 0; l < m->n_layer && !rc; l++)
        for (int i = 0; i < RP_LIN_COUNT && !rc; i++) {
            rp_linear *lin = &m->layers[l].lin[i];
            if (!lin->W) continue; /* linear absent in this version */
            int r = ap->r;
            lin->pissa_A0 = (float *)rp_malloc(sizeof(float) * (size_t)r * lin->in);
            lin->pissa_B0 = (float *)rp_malloc(sizeof(float) * (size_t)lin->out * r);
            if (!lin->pissa_A0 || !lin->pissa_B0) {
                rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory for the PiSSA init");
                break;
            }
            char mod[RP_NAME_MAX];
            module_of(lin, mod, sizeof mod);
            if (f) {
                rc = read_init(m, f, ap->pissa_init, mod, "init_lora_A", r, lin->in, lin->pissa_A0);
                if (!rc) rc = read_init(m, f, ap->pissa_init, mod, "init_lora_B", lin->out, r, lin->pissa_B0);
                continue;
            }
            free(w);
            w = (float *)rp_malloc(sizeof(float) * (size_t)lin->W->numel);
            if (!w) {
                rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of host memory for the PiSSA SVD of %s", lin->W->name);
                break;
            }
            rc = rp_param_download_f32(m, lin->W, w);
            for (int64_t e = 0; !rc && e < lin->W->numel; e++)
                if (!isfinite(w[e]))
                    rc = rp_fail(&m->err, RWKVPEFT_E_NUMERIC, "%s: element %lld is %s", lin->W->name, (long long)e,
                                 isnan(w[e]) ? "NaN" : "infinite");
            uint64_t seed = rp_mix64(ap->seed ^ rp_mix64((uint64_t)lin->id + 0x5069535341ull));
            if (!rc) rc = rp_pissa_svd(w, lin->out, lin->in, r, ap->svd_niter, seed, lin->pissa_A0, lin->pissa_B0, &m->err);
            if (rc) rp_fail_prefix(&m->err, "PiSSA init of %s", lin->W->name);
        }
    free(w);
    rp_tensorfile_close(f);
    return rc;
}

/* W ← W − B₀·A₀ (float64 accumulation, one rounding). */
static int pissa_apply_residual(rwkvpeft_model *m) {
    int rc = 0;
    for (int l = 0; l < m->n_layer && !rc; l++)
        for (int i = 0; i < RP_LIN_COUNT && !rc; i++) {
            rp_linear *lin = &m->layers[l].lin[i];
            if (!lin->W) continue; /* linear absent in this version */
            int64_t n = lin->W->numel;
            float *w = (float *)rp_malloc(sizeof(float) * (size_t)n);
            if (!w) return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of host memory for %s", lin->W->name);
            rc = rp_param_download_f32(m, lin->W, w);
            for (int o = 0; !rc && o < lin->out; o++) {
                const float *b = lin->pissa_B0 + (size_t)o * lin->r;
                float *row = w + (size_t)o * lin->in;
                for (int c = 0; c < lin->in; c++) {
                    double acc = row[c];
                    for (int k = 0; k < lin->r; k++) acc -= (double)b[k] * lin->pissa_A0[(size_t)k * lin->in + c];
                    row[c] = (float)acc;
                }
            }
            if (!rc)
                rc = m->quant_pending && !lin->W->qfmt ? rp_param_quantize_host(m, lin->W, m->quant, w)
                                                       : rp_param_upload_f32(m, lin->W, -1, w);
            free(w);
        }
    return rc;
}

void rp_adapter_release(rwkvpeft_model *m) {
    for (int l = 0; m->layers && l < m->n_layer; l++)
        for (int i = 0; i < RP_LIN_COUNT; i++) {
            rp_linear *lin = &m->layers[l].lin[i];
            if (!lin->W) continue; /* linear absent in this version */
            free(lin->pissa_A0);
            free(lin->pissa_B0);
            lin->pissa_A0 = lin->pissa_B0 = NULL;
        }
    if (m->fold && m->be) m->be->ops->free(m->be, m->fold);
    m->fold = NULL;
    m->fold_rows = 0;
}

/* The constant fold matrix F [rows, r], F[i][c] = (i mod r == c): x·F sums the r-wide
 * groups of x's columns, z·Fᵀ repeats z across groups. */
static int make_fold(rwkvpeft_model *m, int r) {
    int64_t rows = 1;
    for (int l = 0; l < m->n_layer; l++)
        for (int i = 0; i < RP_LIN_COUNT; i++) {
            const rp_linear *lin = &m->layers[l].lin[i];
            if (!lin->W) continue; /* linear absent in this version */
            if (lin->in > rows) rows = lin->in;
            if (lin->out > rows) rows = lin->out;
        }
    rp_dtype P_ = m->be->ops->par_dtype;
    size_t ps = rp_dtype_size(P_), n = (size_t)rows * r;
    float *h = (float *)rp_calloc(n, sizeof(float));
    void *conv = rp_malloc(ps * n);
    int rc = 0;
    if (!h || !conv) rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    if (!rc) {
        for (int64_t i = 0; i < rows; i++) h[(size_t)i * r + (size_t)(i % r)] = 1.0f;
        rp_convert_from_f32(conv, P_, h, n);
        if (m->be->ops->alloc(m->be, &m->fold, ps * n))
            rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "cannot allocate the fold matrix: %s", m->be->err.msg);
        else if (m->be->ops->memcpy_h2d(m->be, m->fold, conv, ps * n))
            rc = rp_be_fail(m->be, RWKVPEFT_E_BACKEND, &m->err);
        else
            m->fold_rows = rows;
    }
    free(h);
    free(conv);
    return rc;
}

int rp_adapter_attach(rwkvpeft_model *m, const rwkvpeft_adapter_params *ap) {
    rp_adapter_cfg *cfg = &m->adapter;
    if (cfg->attached) return rp_fail(&m->err, RWKVPEFT_E_STATE, "an adapter is already attached to this model");
    if (m->n_trainers) return rp_fail(&m->err, RWKVPEFT_E_STATE, "free the model's trainers before attaching");
    /* a cached evaluation workspace is sized for the previous adapter ranks */
    rp_workspace_free(m, m->eval_ws);
    m->eval_ws = NULL;
    int method = ap->method;
    if (method < RWKVPEFT_PEFT_NONE || method > RWKVPEFT_PEFT_STATE)
        return rp_fail(&m->err, RWKVPEFT_E_UNSUPPORTED,
                       "PEFT method %d is not supported by this build (none 0, LoRA 1, PiSSA 2, Bone 3, Bat 4, state 5)", method);
    if (method == RWKVPEFT_PEFT_STATE && m->version == 5)
        return rp_fail(&m->err, RWKVPEFT_E_UNSUPPORTED,
                       "state tuning is not defined for RWKV-5: the reference has no state-tuning variant of its "
                       "time mix (spec §1.8); use LoRA, PiSSA, Bone or Bat");
    int lowrank = method == RWKVPEFT_PEFT_LORA || method == RWKVPEFT_PEFT_PISSA;
    int dmode = method == RWKVPEFT_PEFT_BONE ? RP_DMODE_BONE : method == RWKVPEFT_PEFT_BAT ? RP_DMODE_BAT : RP_DMODE_NONE;
    const char *key = ap->key_name ? ap->key_name : "disha";
    if (method != RWKVPEFT_PEFT_NONE && ap->full_finetune)
        return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "full_finetune needs method NONE, not %s", method_name(method));
    if (lowrank || dmode) {
        if (ap->r <= 0 || ap->r > 65536)
            return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "%s rank r must be in [1, 65536], got %d", method_name(method), ap->r);
    }
    if (method == RWKVPEFT_PEFT_LORA) {
        if (!isfinite(ap->alpha)) return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "LoRA alpha must be finite");
        if (!(ap->dropout >= 0 && ap->dropout < 1))
            return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "LoRA dropout must be in [0, 1), got %g", (double)ap->dropout);
    }
    if (method == RWKVPEFT_PEFT_PISSA && (ap->svd_niter < 0 || ap->svd_niter > 1000))
        return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "svd_niter must be in [0, 1000], got %d", ap->svd_niter);
    if (dmode && strcmp(key, "bone") && strcmp(key, "disha"))
        return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "key_name must be \"bone\" or \"disha\", got \"%s\"", key);
    for (int l = 0; l < m->n_layer && (dmode == RP_DMODE_BAT || method == RWKVPEFT_PEFT_PISSA); l++)
        for (int i = 0; i < RP_LIN_COUNT; i++) {
            const rp_linear *lin = &m->layers[l].lin[i];
            if (!lin->W) continue; /* linear absent in this version */
            if (dmode == RP_DMODE_BAT && (lin->in % ap->r || lin->out % ap->r))
                return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT,
                               "Bat rank r = %d must divide both sizes of every adapted linear; %s is [%d,%d] "
                               "(in %% r = %d, out %% r = %d); use Bone or a divisor of %d",
                               ap->r, lin->W->name, lin->out, lin->in, lin->in % ap->r, lin->out % ap->r, lin->in);
            if (method == RWKVPEFT_PEFT_PISSA && (ap->r > lin->in || ap->r > lin->out))
                return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "PiSSA rank r = %d exceeds the size of %s [%d,%d]", ap->r,
                               lin->W->name, lin->out, lin->in);
        }
    const char *tp = ap->train_parts ? ap->train_parts : "time,ln";
    if (method == RWKVPEFT_PEFT_STATE) tp = ""; /* spec §3.5: only the state trains */
    if (strlen(tp) >= sizeof cfg->train_parts) return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT, "train_parts is too long");
    char parts[MAX_TRAIN_PARTS][TRAIN_PART_LEN];
    int np = split_parts(tp, parts, MAX_TRAIN_PARTS);
    if (np < 0)
        return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT,
                       "train_parts \"%s\": at most %d entries of at most %d characters each", tp, MAX_TRAIN_PARTS,
                       TRAIN_PART_LEN - 1);
    int emb_head = method == RWKVPEFT_PEFT_STATE ? 0 : ap->train_emb_head < 0 ? !m->from_file : ap->train_emb_head != 0;
    int n_base = m->n_params;

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
        if (p->trainable && (p->qfmt || (m->quant_pending && rp_is_target_linear_weight(p->name)))) {
            p->trainable = 0;
            return rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT,
                           "%s %s %s, which is quantized (quant %s) and cannot train; choose train_parts that leave "
                           "the block linears' weights frozen",
                           ap->full_finetune ? "full_finetune" : "train_parts", ap->full_finetune ? "trains" : "selects",
                           p->name, rp_quant_name(p->qfmt ? p->qfmt : m->quant));
        }
    }
    /* a trained emb.weight must be on the device, a frozen one may go to the host */
    RP_TRY(rp_model_place_embedding(m));
    /* quantization (spec §4) from the float32 weights, after all loading; PiSSA quantizes its
     * residual W − B₀A₀ below instead */
    if (method != RWKVPEFT_PEFT_PISSA) RP_TRY(rp_model_quantize(m));

    /* 2. adapter tensors */
    int rc = 0;
    for (int l = 0; l < m->n_layer && (lowrank || dmode) && !rc; l++)
        for (int i = 0; i < RP_LIN_COUNT && !rc; i++) {
            rp_linear *lin = &m->layers[l].lin[i];
            if (!lin->W) continue; /* linear absent in this version */
            char mod[RP_NAME_MAX - 8], name[RP_NAME_MAX];
            module_of(lin, mod, sizeof mod);
            lin->r = ap->r;
            if (lowrank) {
                snprintf(name, sizeof name, "%s.lora_A", mod);
                rp_param *pa = add_adapter_param(m, name, 2, ap->r, lin->in, 0);
                snprintf(name, sizeof name, "%s.lora_B", mod);
                rp_param *pb = pa ? add_adapter_param(m, name, 2, lin->out, ap->r, 0) : NULL;
                if (!pb) return m->err.code;
                lin->A = pa;
                lin->B = pb;
                lin->scale = method == RWKVPEFT_PEFT_LORA ? ap->alpha / (float)ap->r : 1.0f;
                lin->dropout = method == RWKVPEFT_PEFT_LORA ? ap->dropout : 0.0f;
            } else {
                snprintf(name, sizeof name, "%s.%s", mod, key);
                rp_param *pd = dmode == RP_DMODE_BONE ? add_adapter_param(m, name, 2, ap->r, lin->out, 0)
                                                      : add_adapter_param(m, name, 3, lin->in / ap->r, ap->r, ap->r);
                if (!pd) return m->err.code;
                lin->D = pd;
                lin->d_mode = dmode;
                lin->scale = 1.0f;
                lin->dropout = 0.0f;
            }
        }
    int added_state = 0;
    if (method == RWKVPEFT_PEFT_STATE) {
        for (int l = 0; l < m->n_layer; l++) {
            rp_layer *ly = &m->layers[l];
            if (!ly->time_state) {
                char name[RP_NAME_MAX];
                snprintf(name, sizeof name, "blocks.%d.att.time_state", l);
                ly->time_state = add_adapter_param(m, name, 3, m->H, m->N, m->N);
                if (!ly->time_state) return m->err.code;
                added_state = 1;
            }
            ly->time_state->trainable = 1;
        }
    }
    if (method == RWKVPEFT_PEFT_PISSA) RP_TRY(pissa_prepare(m, ap));

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
    if (dmode) RP_TRY(make_fold(m, ap->r));
    /* PiSSA: W ← W − B₀A₀ before W's storage may move (train_parts selecting it); with
     * quantization W_res is quantized from its float32 values (QPiSSA) */
    if (method == RWKVPEFT_PEFT_PISSA) {
        RP_TRY(pissa_apply_residual(m));
        RP_TRY(rp_model_quantize(m));
    }
    /* block by block (the tensors outside the blocks first), so that one block's trainable
     * tensors are one contiguous range: the graph narrows that range to the activation type
     * once per block pass (lib/rwkv.c, narrow_layer) instead of once per product */
    int64_t off = 0;
    for (int l = -1; l < m->n_layer; l++) {
        if (l >= 0) m->layers[l].flat_lo = off;
        for (int i = 0; i < m->n_params; i++) {
            rp_param *p = &m->params[i];
            if (!p->trainable || rp_param_layer(p) != l) continue;
            RP_TRY(move_into_flat(m, p, off));
            off += p->numel;
        }
        if (l >= 0) m->layers[l].flat_hi = off;
    }

    /* 4. init. LoRA: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform a=sqrt(5)), B = 0;
     * PiSSA: A = A₀, B = B₀; Bone/Bat: D = 0; state: 0 (a loaded time_state keeps its value) */
    for (int l = 0; l < m->n_layer && (lowrank || dmode); l++)
        for (int i = 0; i < RP_LIN_COUNT; i++) {
            rp_linear *lin = &m->layers[l].lin[i];
            if (!lin->W) continue; /* linear absent in this version */
            if (dmode) {
                if (m->be->ops->memset_zero(m->be, lin->D->data, (size_t)lin->D->numel * ps))
                    return rp_be_fail(m->be, RWKVPEFT_E_BACKEND, &m->err);
                continue;
            }
            if (method == RWKVPEFT_PEFT_PISSA) {
                RP_TRY(rp_param_upload_f32(m, lin->A, -1, lin->pissa_A0));
                RP_TRY(rp_param_upload_f32(m, lin->B, -1, lin->pissa_B0));
                continue;
            }
            float *buf = (float *)rp_malloc(sizeof(float) * (size_t)lin->A->numel);
            if (!buf) return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
            double bound = 1.0 / sqrt((double)lin->in);
            uint64_t s = rp_mix64(ap->seed ^ rp_mix64((uint64_t)lin->id + 0x4c6f5241ull));
            for (int64_t e = 0; e < lin->A->numel; e++)
                buf[e] = (float)(-bound + 2.0 * bound * (double)rp_uniform01(s, (uint64_t)e));
            rc = rp_param_upload_f32(m, lin->A, -1, buf);
            free(buf);
            RP_TRY(rc);
            RP_TRY(m->be->ops->memset_zero(m->be, lin->B->data, (size_t)lin->B->numel * ps) ? rp_be_fail(m->be, RWKVPEFT_E_BACKEND, &m->err) : 0);
        }
    for (int l = 0; l < m->n_layer && added_state; l++) {
        rp_param *p = m->layers[l].time_state;
        if (p->is_adapter && m->be->ops->memset_zero(m->be, p->data, (size_t)p->numel * ps))
            return rp_be_fail(m->be, RWKVPEFT_E_BACKEND, &m->err);
    }

    cfg->attached = 1;
    cfg->method = method;
    cfg->r = ap->r;
    cfg->alpha = ap->alpha;
    cfg->dropout = ap->dropout;
    snprintf(cfg->train_parts, sizeof cfg->train_parts, "%s", tp);
    cfg->full_finetune = ap->full_finetune;
    cfg->train_emb_head = emb_head;
    cfg->seed = ap->seed;
    cfg->svd_niter = ap->svd_niter;
    snprintf(cfg->key_name, sizeof cfg->key_name, "%s", dmode ? key : "");
    cfg->n_base_params = n_base;
    cfg->added_state = added_state;
    return 0;
}

int rp_pissa_save_init(rwkvpeft_model *m, const char *path, int kind) {
    if (!m->adapter.attached || m->adapter.method != RWKVPEFT_PEFT_PISSA)
        return rp_fail(&m->err, RWKVPEFT_E_STATE, "no PiSSA adapter is attached");
    int n = m->n_layer * RP_LIN_COUNT * 2, k = 0;
    rp_named_tensor *ts = (rp_named_tensor *)rp_calloc((size_t)n, sizeof *ts);
    char(*names)[RP_NAME_MAX + 16] = (char(*)[RP_NAME_MAX + 16])rp_calloc((size_t)n, RP_NAME_MAX + 16);
    if (!ts || !names) {
        free(ts);
        free(names);
        return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    }
    for (int l = 0; l < m->n_layer; l++)
        for (int i = 0; i < RP_LIN_COUNT; i++) {
            const rp_linear *lin = &m->layers[l].lin[i];
            if (!lin->W) continue; /* linear absent in this version */
            char mod[RP_NAME_MAX];
            module_of(lin, mod, sizeof mod);
            for (int ab = 0; ab < 2; ab++) {
                rp_named_tensor *t = &ts[k];
                snprintf(names[k], RP_NAME_MAX + 16, "%s.%s", mod, ab ? "init_lora_B" : "init_lora_A");
                t->name = names[k];
                t->dtype = RP_F32;
                t->ndim = 2;
                t->shape[0] = ab ? lin->out : lin->r;
                t->shape[1] = ab ? lin->r : lin->in;
                t->nbytes = sizeof(float) * (size_t)(t->shape[0] * t->shape[1]);
                t->data = ab ? lin->pissa_B0 : lin->pissa_A0;
                k++;
            }
        }
    int rc = rp_tensorfile_write(path, (rp_file_kind)kind, ts, k, &m->err);
    free(ts);
    free(names);
    return rc;
}

int rp_pissa_check_init(rwkvpeft_model *m, const char *path) {
    if (!m->adapter.attached || m->adapter.method != RWKVPEFT_PEFT_PISSA)
        return rp_fail(&m->err, RWKVPEFT_E_STATE, "no PiSSA adapter is attached");
    rp_tensorfile *f = NULL;
    RP_TRY(rp_tensorfile_open(path, &f, &m->err));
    int rc = 0;
    float *buf = NULL;
    for (int l = 0; l < m->n_layer && !rc; l++)
        for (int i = 0; i < RP_LIN_COUNT && !rc; i++) {
            const rp_linear *lin = &m->layers[l].lin[i];
            if (!lin->W) continue; /* linear absent in this version */
            char mod[RP_NAME_MAX];
            module_of(lin, mod, sizeof mod);
            for (int ab = 0; ab < 2 && !rc; ab++) {
                int64_t d0 = ab ? lin->out : lin->r, d1 = ab ? lin->r : lin->in;
                const float *own = ab ? lin->pissa_B0 : lin->pissa_A0;
                free(buf);
                buf = (float *)rp_malloc(sizeof(float) * (size_t)(d0 * d1));
                if (!buf) {
                    rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
                    break;
                }
                rc = read_init(m, f, path, mod, ab ? "init_lora_B" : "init_lora_A", d0, d1, buf);
                /* equal up to the float64 rounding noise of another BLAS thread count or CPU */
                double big = 0, diff = 0;
                for (int64_t e = 0; !rc && e < d0 * d1; e++) {
                    big = fmax(big, fabs((double)own[e]));
                    diff = fmax(diff, fabs((double)own[e] - buf[e]));
                }
                if (!rc && diff > 1e-4 * big)
                    rc = rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: %s.%s differs from the attached adapter's init (max |diff| %g)",
                                 path, mod, ab ? "init_lora_B" : "init_lora_A", diff);
            }
        }
    free(buf);
    rp_tensorfile_close(f);
    return rc;
}

/* Adapter files name the Bone/Bat tensor "bone" (Nov 2024) or "disha" (2025): either is
 * accepted for the attached one. */
static rp_param *find_param_alias(rwkvpeft_model *m, const char *name, int *part) {
    rp_param *p = rp_model_find_param(m, name, part);
    if (p) return p;
    size_t n = strlen(name);
    const char *alt = NULL;
    size_t cut = 0;
    if (n > 5 && strcmp(name + n - 5, ".bone") == 0) alt = ".disha", cut = n - 5;
    else if (n > 6 && strcmp(name + n - 6, ".disha") == 0) alt = ".bone", cut = n - 6;
    if (!alt || cut + 8 >= RP_NAME_MAX) return NULL;
    char buf[RP_NAME_MAX];
    memcpy(buf, name, cut);
    snprintf(buf + cut, sizeof buf - cut, "%s", alt);
    return rp_model_find_param(m, buf, part);
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
        rp_param *p = find_param_alias(m, t->name, &part);
        if (!p) {
            const char *hint = strstr(t->name, "lora_")                               ? " (attach LoRA or PiSSA first)"
                               : strstr(t->name, ".bone") || strstr(t->name, ".disha") ? " (attach Bone or Bat first)"
                               : strstr(t->name, "time_state")                         ? " (attach state tuning first)"
                               : strstr(t->name, "init_lora")                          ? " (a PiSSA init file: pass it as pissa_init)"
                                                                                       : "";
            rc = rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: tensor %s is not a parameter of the model with the attached adapter%s",
                         path, t->name, hint);
            break;
        }
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        if (!same) {
            rc = rp_fail(&m->err, RWKVPEFT_E_SHAPE,
                         "%s: tensor %s has shape [%lld,...] (%d-D), the attached model expects [%lld,...] (%d-D)%s", path,
                         t->name, (long long)(t->ndim ? t->shape[0] : 0), t->ndim, (long long)p->shape[0], p->ndim,
                         strstr(t->name, "lora_") || strstr(t->name, ".bone") || strstr(t->name, ".disha") ? " (different rank r, or Bone vs Bat?)" : "");
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
