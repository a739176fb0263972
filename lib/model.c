/* model.c — an RWKV model's parameters: the list of named tensors, fresh initialisation
 * by the reference's rules, and checkpoint loading/saving with full shape validation. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_common.h"
#include "tensorfile.h"

/* ------------------------------------------------------------------------------------ */
/* parameter list                                                                       */
/* ------------------------------------------------------------------------------------ */

rp_param *rp_model_add_param(rwkvpeft_model *m, int cls, int nparts, const char **names, int ndim, int64_t d0,
                             int64_t d1, int64_t d2) {
    if (m->n_params >= m->cap_params) return NULL;
    rp_param *p = &m->params[m->n_params++];
    memset(p, 0, sizeof *p);
    p->cls = cls;
    p->nparts = nparts;
    for (int i = 0; i < nparts; i++) snprintf(p->part_names[i], RP_NAME_MAX, "%s", names[i]);
    snprintf(p->name, RP_NAME_MAX, "%s", names[0]);
    p->ndim = ndim;
    int64_t dims[3] = {d0, d1, d2};
    p->part_numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = dims[i];
        p->part_numel *= dims[i];
    }
    p->numel = p->part_numel * nparts;
    p->flat_off = -1;
    p->lr_scale = 1;
    return p;
}

static rp_param *add1(rwkvpeft_model *m, int cls, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    const char *names[1] = {name};
    return rp_model_add_param(m, cls, 1, names, ndim, d0, d1, d2);
}

rp_param *rp_model_find_param(rwkvpeft_model *m, const char *name, int *part) {
    for (int i = 0; i < m->n_params; i++)
        for (int j = 0; j < m->params[i].nparts; j++)
            if (strcmp(m->params[i].part_names[j], name) == 0) {
                if (part) *part = j;
                return &m->params[i];
            }
    return NULL;
}

static int round_to_32(double x) { /* Python round() (half to even) of x/32, times 32 */
    return (int)nearbyint(x / 32.0) * 32;
}

void rp_arch_default_widths(rp_arch *a) {
    int C = a->C;
    a->Dm = C == 4096 ? 64 : 32;
    a->Dd = C == 4096 ? 128 : 64;
    int dw = round_to_32(1.8 * sqrt((double)C)), dv = round_to_32(1.3 * sqrt((double)C)),
        dg = round_to_32(0.6 * pow((double)C, 0.8));
    a->Dw = a->Da = dw > 32 ? dw : 32;
    a->Dv = dv > 32 ? dv : 32;
    a->Dg = C == 1024 ? 128 : dg > 32 ? dg : 32;
}

int rp_model_create(rwkvpeft_model *m, const rp_arch *arch, int with_state) {
    int L = arch->n_layer, C = arch->C, A = arch->A, F = arch->F, H = arch->H, N = arch->N, V = arch->V;
    int ver = arch->version, Dm = arch->Dm, Dd = arch->Dd;
    if (ver != 5 && ver != 6 && ver != 7)
        return rp_fail(&m->err, RWKVPEFT_E_UNSUPPORTED, "RWKV version %d is not supported (5, 6, 7)", ver);
    if (ver == 7) {
        const rp_backend_ops *o = m->be->ops;
        if (!o->wkv7_fwd || !o->wkv7_bwd || !o->v7_kprep_fwd || !o->v7_kprep_bwd || !o->v7_bonus_fwd ||
            !o->v7_bonus_bwd || !o->lerp_fwd || !o->lerp_bwd)
            return rp_fail(&m->err, RWKVPEFT_E_UNSUPPORTED, "the %s backend cannot run RWKV-7 (its WKV7 ops are missing)",
                           o->name);
    }
    m->version = ver;
    m->n_layer = L;
    m->C = C;
    m->A = A;
    m->F = F;
    m->H = H;
    m->N = N;
    m->V = V;
    m->Dm = ver == 6 ? Dm : 0;
    m->Dd = ver == 6 ? Dd : 0;
    m->Dw = ver == 7 ? arch->Dw : 0;
    m->Da = ver == 7 ? arch->Da : 0;
    m->Dv = ver == 7 ? arch->Dv : 0;
    m->Dg = ver == 7 ? arch->Dg : 0;
    /* enough room for the base tensors plus one LoRA pair per linear: never reallocated,
     * so rp_param pointers stay valid */
    m->cap_params = 8 + L * (40 + 2 * RP_LIN_COUNT);
    m->params = (rp_param *)rp_calloc((size_t)m->cap_params, sizeof(rp_param));
    m->layers = (rp_layer *)rp_calloc((size_t)L, sizeof(rp_layer));
    if (!m->params || !m->layers) return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    char n[RP_MAX_PARTS][RP_NAME_MAX];
    const char *np[RP_MAX_PARTS];
    for (int i = 0; i < RP_MAX_PARTS; i++) np[i] = n[i];
#define NM(i, ...) snprintf(n[i], RP_NAME_MAX, __VA_ARGS__)
#define ADD_ATT(field, ...)                                    \
    do {                                                       \
        NM(0, "blocks.%d.att.%s", l, #field);                  \
        ly->field = add1(m, RP_CLS_SMALL, n[0], __VA_ARGS__);  \
    } while (0)
    m->emb = add1(m, RP_CLS_MATRIX, "emb.weight", 2, V, C, 0);
    for (int l = 0; l < L; l++) {
        rp_layer *ly = &m->layers[l];
        if (l == 0) {
            NM(0, "blocks.0.ln0.weight");
            ly->ln0_w = add1(m, RP_CLS_SMALL, n[0], 1, C, 0, 0);
            NM(0, "blocks.0.ln0.bias");
            ly->ln0_b = add1(m, RP_CLS_SMALL, n[0], 1, C, 0, 0);
        }
        NM(0, "blocks.%d.ln1.weight", l);
        ly->ln1_w = add1(m, RP_CLS_SMALL, n[0], 1, C, 0, 0);
        NM(0, "blocks.%d.ln1.bias", l);
        ly->ln1_b = add1(m, RP_CLS_SMALL, n[0], 1, C, 0, 0);
        NM(0, "blocks.%d.ln2.weight", l);
        ly->ln2_w = add1(m, RP_CLS_SMALL, n[0], 1, C, 0, 0);
        NM(0, "blocks.%d.ln2.bias", l);
        ly->ln2_b = add1(m, RP_CLS_SMALL, n[0], 1, C, 0, 0);
        if (ver == 6) {
            NM(0, "blocks.%d.att.time_maa_x", l);
            ly->maa_x = add1(m, RP_CLS_SMALL, n[0], 3, 1, 1, C);
            static const char slots[5] = {'w', 'k', 'v', 'r', 'g'};
            for (int s = 0; s < 5; s++) NM(s, "blocks.%d.att.time_maa_%c", l, slots[s]);
            ly->maa_wkvrg = rp_model_add_param(m, RP_CLS_SMALL, 5, np, 3, 1, 1, C);
            NM(0, "blocks.%d.att.time_maa_w1", l);
            ly->maa_w1 = add1(m, RP_CLS_SMALL, n[0], 2, C, 5 * Dm, 0);
            NM(0, "blocks.%d.att.time_maa_w2", l);
            ly->maa_w2 = add1(m, RP_CLS_SMALL, n[0], 3, 5, Dm, C);
            NM(0, "blocks.%d.att.time_decay", l);
            ly->decay = add1(m, RP_CLS_SMALL, n[0], 3, 1, 1, A);
            NM(0, "blocks.%d.att.time_decay_w1", l);
            ly->decay_w1 = add1(m, RP_CLS_SMALL, n[0], 2, C, Dd, 0);
            NM(0, "blocks.%d.att.time_decay_w2", l);
            ly->decay_w2 = add1(m, RP_CLS_SMALL, n[0], 2, Dd, A, 0);
        } else if (ver == 5) {
            static const char slots[4] = {'k', 'v', 'r', 'g'};
            for (int s = 0; s < 4; s++) NM(s, "blocks.%d.att.time_mix_%c", l, slots[s]);
            ly->mix_kvrg = rp_model_add_param(m, RP_CLS_SMALL, 4, np, 3, 1, 1, C);
            NM(0, "blocks.%d.att.time_decay", l);
            ly->decay = add1(m, RP_CLS_SMALL, n[0], 2, H, N, 0);
        } else {
            static const char slots[6] = {'r', 'w', 'k', 'v', 'a', 'g'};
            for (int s = 0; s < 6; s++) NM(s, "blocks.%d.att.x_%c", l, slots[s]);
            ly->x_rwkvag = rp_model_add_param(m, RP_CLS_SMALL, 6, np, 3, 1, 1, C);
            ADD_ATT(w0, 3, 1, 1, C);
            ADD_ATT(w1, 2, C, arch->Dw, 0);
            ADD_ATT(w2, 2, arch->Dw, C, 0);
            ADD_ATT(a0, 3, 1, 1, C);
            ADD_ATT(a1, 2, C, arch->Da, 0);
            ADD_ATT(a2, 2, arch->Da, C, 0);
            if (l > 0) {
                ADD_ATT(v0, 3, 1, 1, C);
                ADD_ATT(v1, 2, C, arch->Dv, 0);
                ADD_ATT(v2, 2, arch->Dv, C, 0);
            }
            ADD_ATT(g1, 2, C, arch->Dg, 0);
            ADD_ATT(g2, 2, arch->Dg, C, 0);
            ADD_ATT(k_k, 3, 1, 1, C);
            ADD_ATT(k_a, 3, 1, 1, C);
            ADD_ATT(r_k, 2, H, N, 0);
        }
        if (ver != 7) {
            NM(0, "blocks.%d.att.time_faaaa", l);
            ly->faaaa = add1(m, RP_CLS_SMALL, n[0], 2, H, N, 0);
        }
        /* v7 has no gate linear (its gate is g1/g2) */
        static const char *att_lin[5] = {"receptance", "key", "value", "gate", "output"};
        static const int att_id[5] = {RP_LIN_ATT_R, RP_LIN_ATT_K, RP_LIN_ATT_V, RP_LIN_ATT_G, RP_LIN_ATT_O};
        for (int i = 0; i < 5; i++) {
            if (ver == 7 && att_id[i] == RP_LIN_ATT_G) continue;
            NM(0, "blocks.%d.att.%s.weight", l, att_lin[i]);
            rp_linear *lin = &ly->lin[att_id[i]];
            int out = i == 4 ? C : A, in = i == 4 ? A : C;
            lin->W = add1(m, RP_CLS_MATRIX, n[0], 2, out, in, 0);
            lin->in = in;
            lin->out = out;
            lin->id = l * RP_LIN_COUNT + att_id[i];
        }
        NM(0, "blocks.%d.att.ln_x.weight", l);
        ly->lnx_w = add1(m, RP_CLS_SMALL, n[0], 1, A, 0, 0);
        NM(0, "blocks.%d.att.ln_x.bias", l);
        ly->lnx_b = add1(m, RP_CLS_SMALL, n[0], 1, A, 0, 0);
        if (with_state) {
            NM(0, "blocks.%d.att.time_state", l);
            ly->time_state = add1(m, RP_CLS_SMALL, n[0], 3, H, N, N);
        }
        if (ver == 7) {
            NM(0, "blocks.%d.ffn.x_k", l);
            ly->ffn_mix = add1(m, RP_CLS_SMALL, n[0], 3, 1, 1, C);
        } else {
            NM(0, ver == 6 ? "blocks.%d.ffn.time_maa_k" : "blocks.%d.ffn.time_mix_k", l);
            NM(1, ver == 6 ? "blocks.%d.ffn.time_maa_r" : "blocks.%d.ffn.time_mix_r", l);
            ly->ffn_mix = rp_model_add_param(m, RP_CLS_SMALL, 2, np, 3, 1, 1, C);
        }
        static const char *ffn_lin[3] = {"key", "receptance", "value"};
        static const int ffn_id[3] = {RP_LIN_FFN_K, RP_LIN_FFN_R, RP_LIN_FFN_V};
        for (int i = 0; i < 3; i++) {
            if (ver == 7 && ffn_id[i] == RP_LIN_FFN_R) continue;
            NM(0, "blocks.%d.ffn.%s.weight", l, ffn_lin[i]);
            rp_linear *lin = &ly->lin[ffn_id[i]];
            int out = i == 0 ? F : C, in = i == 2 ? F : C;
            lin->W = add1(m, RP_CLS_MATRIX, n[0], 2, out, in, 0);
            lin->in = in;
            lin->out = out;
            lin->id = l * RP_LIN_COUNT + ffn_id[i];
        }
    }
#undef ADD_ATT
#undef NM
    m->ln_out_w = add1(m, RP_CLS_SMALL, "ln_out.weight", 1, C, 0, 0);
    m->ln_out_b = add1(m, RP_CLS_SMALL, "ln_out.bias", 1, C, 0, 0);
    m->head = add1(m, RP_CLS_MATRIX, "head.weight", 2, V, C, 0);
    for (int i = 0; i < m->n_params; i++)
        if (!m->params[i].name[0]) return rp_fail(&m->err, RWKVPEFT_E_INTERNAL, "parameter table overflow");
    if (!m->head) return rp_fail(&m->err, RWKVPEFT_E_INTERNAL, "parameter table overflow");
    return 0;
}

static rp_dtype param_dtype(const rwkvpeft_model *m, const rp_param *p) {
    return p->cls == RP_CLS_MATRIX ? m->be->ops->act_dtype : m->be->ops->par_dtype;
}

int rp_model_alloc_params(rwkvpeft_model *m) {
    for (int i = 0; i < m->n_params; i++) {
        rp_param *p = &m->params[i];
        if (p->data || p->qfmt || p->host) continue;
        size_t bytes = (size_t)p->numel * rp_dtype_size(param_dtype(m, p));
        if (m->be->ops->alloc(m->be, &p->data, bytes))
            return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "cannot allocate %zu bytes for %s: %s", bytes, p->name,
                           m->be->err.msg);
        p->owns_data = 1;
    }
    return 0;
}

void rp_model_destroy(rwkvpeft_model *m) {
    if (!m) return;
    rp_adapter_release(m);
    if (m->params && m->be)
        for (int i = 0; i < m->n_params; i++) {
            if (m->params[i].owns_data) m->be->ops->free(m->be, m->params[i].data);
            free(m->params[i].host);
            m->params[i].host = NULL;
            if (m->params[i].qfmt) rp_param_free_quant(m, &m->params[i]);
        }
    rp_model_free_qslabs(m);
    if (m->qcode && m->be) m->be->ops->free(m->be, m->qcode);
    m->qcode = NULL;
    if (m->flat && m->be) m->be->ops->free(m->be, m->flat);
    free(m->params);
    free(m->layers);
    free(m->segs);
    m->params = NULL;
    m->layers = NULL;
}

int rp_param_layer(const rp_param *p) {
    int l = -1, used = 0;
    if (sscanf(p->name, "blocks.%d.%n", &l, &used) == 1 && used > 0 && l >= 0) return l;
    return -1;
}

void *rp_param_grad(const rwkvpeft_model *m, const rp_param *p, void *grad_flat) {
    if (!grad_flat || !p || !p->trainable || p->flat_off < 0) return NULL;
    return (char *)grad_flat + (size_t)p->flat_off * rp_dtype_size(m->be->ops->par_dtype);
}

/* ------------------------------------------------------------------------------------ */
/* host <-> device transfer with conversion                                             */
/* ------------------------------------------------------------------------------------ */

#define STAGE_ELEMS (1 << 22)

/* Copies n elements of type st (host) into dst (device, type dt), converting through f32
 * in chunks. */
static int upload_converted(rwkvpeft_model *m, void *dst, rp_dtype dt, const void *src, rp_dtype st, int64_t n) {
    rp_backend *be = m->be;
    size_t ds = rp_dtype_size(dt), ss = rp_dtype_size(st);
    if (dt == st) {
        if (be->ops->memcpy_h2d(be, dst, src, (size_t)n * ds)) return rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
        return 0;
    }
    int64_t chunk = n < STAGE_ELEMS ? n : STAGE_ELEMS;
    float *f = (float *)rp_malloc(sizeof(float) * (size_t)chunk);
    void *o = rp_malloc(ds * (size_t)chunk);
    int rc = 0;
    if (!f || !o) rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of host memory converting a tensor");
    for (int64_t i = 0; !rc && i < n; i += chunk) {
        int64_t c = n - i < chunk ? n - i : chunk;
        if (rp_convert_to_f32(f, (const char *)src + (size_t)i * ss, st, (size_t)c) ||
            rp_convert_from_f32(o, dt, f, (size_t)c))
            rc = rp_fail(&m->err, RWKVPEFT_E_UNSUPPORTED, "cannot convert %s to %s", rp_dtype_name(st), rp_dtype_name(dt));
        else if (be->ops->memcpy_h2d(be, (char *)dst + (size_t)i * ds, o, (size_t)c * ds))
            rc = rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
    }
    free(f);
    free(o);
    return rc;
}

int rp_model_place_embedding(rwkvpeft_model *m) {
    rp_param *p = m->emb;
    if (!p) return 0;
    rp_backend *be = m->be;
    const size_t bytes = (size_t)p->numel * rp_dtype_size(be->ops->act_dtype); /* a MATRIX: A-typed */
    const int want_host = m->emb_on_host && !p->trainable;
    if (want_host && !p->host && p->data && p->owns_data) {
        void *h = rp_malloc(bytes);
        if (!h) return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of host memory for emb.weight (%zu bytes)", bytes);
        if (be->ops->memcpy_d2h(be, h, p->data, bytes)) {
            free(h);
            return rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
        }
        be->ops->free(be, p->data);
        p->data = NULL;
        p->owns_data = 0;
        p->host = h;
    } else if (!want_host && p->host) {
        void *d = NULL;
        if (be->ops->alloc(be, &d, bytes))
            return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "cannot allocate emb.weight on the device: %s", be->err.msg);
        if (be->ops->memcpy_h2d(be, d, p->host, bytes)) {
            be->ops->free(be, d);
            return rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
        }
        free(p->host);
        p->host = NULL;
        p->data = d;
        p->owns_data = 1;
    }
    return 0;
}

int rp_param_upload_f32(rwkvpeft_model *m, rp_param *p, int part, const float *src) {
    if (p->host) { /* host-resident (emb.weight): convert in place */
        rp_dtype dt = m->be->ops->act_dtype;
        int64_t off = part >= 0 ? part * p->part_numel : 0, n = part >= 0 ? p->part_numel : p->numel;
        if (rp_convert_from_f32((char *)p->host + (size_t)off * rp_dtype_size(dt), dt, src, (size_t)n))
            return rp_fail(&m->err, RWKVPEFT_E_INTERNAL, "cannot convert to %s", rp_dtype_name(dt));
        return 0;
    }
    if (p->qfmt) { /* quantized storage: quantize the new values (linears are single-part) */
        if (part > 0 || p->nparts != 1) return rp_fail(&m->err, RWKVPEFT_E_INTERNAL, "partial upload into quantized %s", p->name);
        return rp_param_quantize_host(m, p, p->qfmt, src);
    }
    rp_dtype dt = param_dtype(m, p);
    int64_t off = part >= 0 ? part * p->part_numel : 0, n = part >= 0 ? p->part_numel : p->numel;
    return upload_converted(m, (char *)p->data + (size_t)off * rp_dtype_size(dt), dt, src, RP_F32, n);
}

int rp_param_download_f32(rwkvpeft_model *m, rp_param *p, float *dst) {
    if (p->qfmt) return rp_param_dequant_host(m, p, dst);
    if (p->host) {
        rp_dtype dt = m->be->ops->act_dtype;
        if (rp_convert_to_f32(dst, p->host, dt, (size_t)p->numel))
            return rp_fail(&m->err, RWKVPEFT_E_INTERNAL, "cannot convert %s", rp_dtype_name(dt));
        return 0;
    }
    rp_backend *be = m->be;
    rp_dtype dt = param_dtype(m, p);
    size_t ds = rp_dtype_size(dt);
    if (dt == RP_F32) {
        if (be->ops->memcpy_d2h(be, dst, p->data, (size_t)p->numel * 4)) return rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
        return 0;
    }
    void *tmp = rp_malloc(ds * (size_t)p->numel);
    if (!tmp) return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of host memory reading %s", p->name);
    int rc = 0;
    if (be->ops->memcpy_d2h(be, tmp, p->data, ds * (size_t)p->numel))
        rc = rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
    else if (rp_convert_to_f32(dst, tmp, dt, (size_t)p->numel))
        rc = rp_fail(&m->err, RWKVPEFT_E_INTERNAL, "cannot convert %s", rp_dtype_name(dt));
    free(tmp);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* fresh initialisation: rwkv-init.pth rules of the reference (docs/init-rules.md §2+§3) */
/* ------------------------------------------------------------------------------------ */

typedef struct host_rng {
    uint64_t seed, i;
} host_rng;

static double rng_uniform(host_rng *r) { /* (0,1) with 53 bits */
    uint64_t h = rp_mix64(r->seed ^ rp_mix64(r->i++));
    return ((double)(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double rng_normal(host_rng *r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/* LAPACK (inside OpenBLAS) for the QR factorisation of orthogonal init. */
extern void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work,
                    const int *lwork, int *info);
extern void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau,
                    double *work, const int *lwork, int *info);

/* torch.nn.init.orthogonal_ semantics: a (rows x cols) matrix with orthonormal rows or
 * columns (whichever is fewer), times gain. */
static int orthogonal_init(float *out, int64_t rows, int64_t cols, double gain, host_rng *rng, rp_err *err) {
    int64_t big = rows > cols ? rows : cols, small = rows > cols ? cols : rows;
    if (big > INT32_MAX / (small > 0 ? small : 1))
        return rp_fail(err, RWKVPEFT_E_UNSUPPORTED, "orthogonal init of %lldx%lld is too large", (long long)rows,
                       (long long)cols);
    /* column-major big x small matrix of normals */
    double *a = (double *)rp_malloc(sizeof(double) * (size_t)(big * small));
    double *tau = (double *)rp_malloc(sizeof(double) * (size_t)small);
    if (!a || !tau) {
        free(a);
        free(tau);
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory in orthogonal init");
    }
    for (int64_t i = 0; i < big * small; i++) a[i] = rng_normal(rng);
    int M = (int)big, N = (int)small, lda = M, info = 0, lwork = -1;
    double wq = 0;
    dgeqrf_(&M, &N, a, &lda, tau, &wq, &lwork, &info);
    lwork = (int)wq > 1 ? (int)wq : 1;
    double *work = (double *)rp_malloc(sizeof(double) * (size_t)lwork);
    if (!work) {
        free(a);
        free(tau);
        return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory in orthogonal init");
    }
    dgeqrf_(&M, &N, a, &lda, tau, work, &lwork, &info);
    /* sign correction by diag(R), as torch does, so the distribution is Haar */
    double *sgn = (double *)rp_malloc(sizeof(double) * (size_t)small);
    for (int64_t j = 0; sgn && j < small; j++) sgn[j] = a[j * big + j] < 0 ? -1.0 : 1.0;
    if (info == 0) dorgqr_(&M, &N, &N, a, &lda, tau, work, &lwork, &info);
    if (info != 0 || !sgn) {
        free(a);
        free(tau);
        free(work);
        free(sgn);
        return rp_fail(err, RWKVPEFT_E_INTERNAL, "LAPACK QR failed (info %d)", info);
    }
    /* Q is big x small (column-major): Q[i][j] = a[j*big + i] */
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            double q = rows >= cols ? a[j * big + i] * sgn[j] : a[i * big + j] * sgn[i];
            out[i * cols + j] = (float)(gain * q);
        }
    free(a);
    free(tau);
    free(work);
    free(sgn);
    return 0;
}

int rp_model_init_weights(rwkvpeft_model *m, uint64_t seed) {
    int L = m->n_layer, C = m->C, A = m->A;
    int64_t maxn = 0;
    for (int i = 0; i < m->n_params; i++)
        if (m->params[i].numel > maxn) maxn = m->params[i].numel;
    float *buf = (float *)rp_malloc(sizeof(float) * (size_t)maxn);
    if (!buf) return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of host memory during init");
    int rc = 0;
    for (int pi = 0; pi < m->n_params && !rc; pi++) {
        rp_param *p = &m->params[pi];
        host_rng rng = {seed ^ name_hash(p->name), 0};
        const char *nm = p->name;
        int layer = -1;
        if (strncmp(nm, "blocks.", 7) == 0) layer = atoi(nm + 7);
        /* ratio_0_to_1 = l/(L-1) (0 when L == 1); ratio_1_to_almost0 = 1 - l/L */
        double r01 = L > 1 ? (double)layer / (L - 1) : 0.0, r10 = 1.0 - (double)layer / L;
        rp_layer *ly = layer >= 0 && layer < L ? &m->layers[layer] : NULL;
        int v7 = m->version == 7;
        if (strstr(nm, "ln_x.weight")) {
            /* v7's ln_x keeps GroupNorm's default weight 1 */
            double v = v7 ? 1.0 : pow((1.0 + layer) / L, 0.7);
            for (int64_t i = 0; i < p->numel; i++) buf[i] = (float)v;
        } else if (strstr(nm, ".ln") || strstr(nm, "ln_out")) {
            int is_w = strstr(nm, ".weight") != NULL;
            for (int64_t i = 0; i < p->numel; i++) buf[i] = is_w ? 1.0f : 0.0f;
        } else if (ly && (p == ly->maa_x || p == ly->maa_wkvrg || p == ly->mix_kvrg || p == ly->x_rwkvag ||
                          p == ly->ffn_mix)) {
            /* ddd[i] = i/C; v6: maa = 1 − (ddd^e + add); v5: mix = ddd^e + add (the weight of the
             * current token); v7: x = 1 − (ddd^e + add) with its own exponents */
            for (int part = 0; part < p->nparts; part++) {
                const char *pn = p->part_names[part];
                char slot = pn[strlen(pn) - 1];
                int is_ffn = strstr(pn, ".ffn.") != NULL;
                double e = r10, add = 0;
                if (v7) {
                    if (is_ffn) e = r10 * r10 * r10 * r10;
                    else if (slot == 'r' || slot == 'g') e = 0.2 * r10;
                    else if (slot == 'w' || slot == 'a') e = 0.9 * r10;
                    else if (slot == 'k') e = 0.9 * r10, add = 0.4 * r01;
                    else e = 0.4 * r10, add = 0.6 * r01; /* v */
                } else {
                    if (!is_ffn && (slot == 'r' || slot == 'g')) e = 0.5 * r10;
                    if (!is_ffn && slot == 'v') add = 0.3 * r01;
                }
                for (int i = 0; i < C; i++) {
                    double ddd = (double)i / C, v = pow(ddd, e) + add;
                    buf[part * C + i] = (float)(m->version == 5 ? v : 1.0 - v);
                }
            }
        } else if (strstr(nm, "time_maa_w1") || strstr(nm, "time_decay_w1") || strstr(nm, "time_maa_w2") ||
                   strstr(nm, "time_decay_w2")) {
            /* the plain time-mix class: all four low-rank matrices U(-1e-4, 1e-4) */
            for (int64_t i = 0; i < p->numel; i++) buf[i] = (float)(-1e-4 + 2e-4 * rng_uniform(&rng));
        } else if (strstr(nm, "att.time_decay")) {
            for (int n = 0; n < A; n++)
                buf[n] = (float)(-6.0 + 5.0 * pow((double)n / (A > 1 ? A - 1 : 1), 0.7 + 1.3 * r01));
        } else if (strstr(nm, "time_faaaa")) {
            for (int n = 0; n < A; n++) {
                double zig = ((n + 1) % 3 - 1) * 0.1;
                buf[n] = (float)(r01 * (1.0 - (double)n / (A > 1 ? A - 1 : 1)) + zig);
            }
        } else if (strstr(nm, "time_state")) {
            memset(buf, 0, sizeof(float) * (size_t)p->numel);
        } else if (ly && v7 && p == ly->w0) {
            for (int n = 0; n < C; n++)
                buf[n] = (float)(-7.0 + 5.0 * pow((double)n / (C > 1 ? C - 1 : 1), 0.85 + sqrt(r01)) + 0.5);
        } else if (ly && v7 && (p == ly->w1 || p == ly->a1 || p == ly->v1 || p == ly->g1 || p == ly->a0 || p == ly->r_k)) {
            memset(buf, 0, sizeof(float) * (size_t)p->numel);
        } else if (ly && v7 && (p == ly->v0 || p == ly->k_k || p == ly->k_a)) {
            float v = p == ly->k_k ? 0.85f : 1.0f;
            for (int64_t i = 0; i < p->numel; i++) buf[i] = v;
        } else if (ly && v7 && (p == ly->w2 || p == ly->a2 || p == ly->v2 || p == ly->g2)) {
            /* ortho_init(x, 0.1): [D,C] with D < C has gain 1 */
            int64_t rows = p->shape[0], cols = p->shape[1];
            double gain = rows > cols ? sqrt((double)rows / cols) : 1.0;
            rc = orthogonal_init(buf, rows, cols, 0.1 * gain, &rng, &m->err);
        } else if (v7 && p->cls == RP_CLS_MATRIX && p != m->emb && p != m->head) {
            /* the x070 module's suggested init: uniform for r, k, v and ffn.key; zero outputs */
            double bound = 0;
            if (strstr(nm, ".att.receptance.") || strstr(nm, ".att.value.") || strstr(nm, ".ffn.key.")) bound = 0.5;
            if (strstr(nm, ".att.key.")) bound = 0.05;
            bound /= sqrt((double)C);
            for (int64_t i = 0; i < p->numel; i++) buf[i] = (float)(bound ? -bound + 2 * bound * rng_uniform(&rng) : 0);
        } else if (p == m->emb) {
            /* U(-lr_init, lr_init) with the reference's default lr_init 6e-4 */
            for (int64_t i = 0; i < p->numel; i++) buf[i] = (float)(-6e-4 + 1.2e-3 * rng_uniform(&rng));
        } else if (p->cls == RP_CLS_MATRIX) {
            int64_t rows = p->shape[0], cols = p->shape[1];
            double gain = rows > cols ? sqrt((double)rows / cols) : 1.0, scale = 1.0;
            if (strstr(nm, ".att.output.") || strstr(nm, ".ffn.value.") || strstr(nm, ".ffn.receptance.")) scale = 0;
            if (p == m->head) scale = 0.5;
            if (scale == 0)
                memset(buf, 0, sizeof(float) * (size_t)p->numel);
            else
                rc = orthogonal_init(buf, rows, cols, gain * scale, &rng, &m->err);
        } else {
            rc = rp_fail(&m->err, RWKVPEFT_E_INTERNAL, "no init rule for %s", nm);
        }
        if (!rc) rc = rp_param_upload_f32(m, p, -1, buf);
    }
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* checkpoint loading                                                                   */
/* ------------------------------------------------------------------------------------ */

static const rp_named_tensor *need(rwkvpeft_model *m, rp_tensorfile *f, const char *path, const char *name) {
    const rp_named_tensor *t = rp_tensorfile_find(f, name);
    if (!t) rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: missing tensor %s", path, name);
    return t;
}

static void shape_str(char *out, size_t n, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(out, n, "[");
    for (int i = 0; i < ndim && o < n; i++) o += (size_t)snprintf(out + o, n - o, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (o < n) snprintf(out + o, n - o, "]");
}

/* A 2-D tensor's shape, or an E_SHAPE error naming what it should be. */
static const rp_named_tensor *need2(rwkvpeft_model *m, rp_tensorfile *f, const char *path, const char *name,
                                    const char *what) {
    const rp_named_tensor *t = need(m, f, path, name);
    if (t && t->ndim != 2) {
        rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: %s must be 2-D %s", path, name, what);
        return NULL;
    }
    return t;
}

/* Infers version and sizes of a checkpoint from its tensors (spec §1.3): v7 if it has
 * blocks.0.att.r_k, v6 if blocks.0.att.time_maa_x, v5 if blocks.0.att.time_mix_k. */
static int infer_arch(rwkvpeft_model *m, rp_tensorfile *f, const char *path, rp_arch *a, int *with_state) {
    const rp_named_tensor *t;
    memset(a, 0, sizeof *a);
    if (rp_tensorfile_find(f, "blocks.0.att.r_k"))
        a->version = 7;
    else if (rp_tensorfile_find(f, "blocks.0.att.time_maa_x"))
        a->version = 6;
    else if (rp_tensorfile_find(f, "blocks.0.att.time_mix_k"))
        a->version = 5;
    else {
        for (int i = 0; i < f->count; i++)
            if (strstr(f->tensors[i].name, "lora_") || strstr(f->tensors[i].name, ".bone") ||
                strstr(f->tensors[i].name, ".disha") || strstr(f->tensors[i].name, "time_state"))
                return rp_fail(&m->err, RWKVPEFT_E_SHAPE,
                               "%s: this is an adapter file (it holds %s), not a base model; load the base model "
                               "and pass this file as the adapter",
                               path, f->tensors[i].name);
        return rp_fail(&m->err, RWKVPEFT_E_SHAPE,
                       "%s: not an RWKV checkpoint of a known version (no blocks.0.att.r_k (x070), time_maa_x (x060) "
                       "or time_mix_k (x052) tensor)",
                       path);
    }
    if (!(t = need2(m, f, path, "emb.weight", "[vocab, n_embd]"))) return m->err.code;
    a->V = (int)t->shape[0];
    a->C = (int)t->shape[1];
    int maxl = -1;
    for (int i = 0; i < f->count; i++) {
        const char *nm = f->tensors[i].name;
        if (strncmp(nm, "blocks.", 7) == 0) {
            char *end;
            long l = strtol(nm + 7, &end, 10);
            if (end == nm + 7 || *end != '.' || l < 0 || l > 100000)
                return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: malformed block index in tensor name %s", path, nm);
            if (l > maxl) maxl = (int)l;
        }
    }
    if (maxl < 0) return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: no blocks.N.* tensors", path);
    a->n_layer = maxl + 1;
    if (!(t = need2(m, f, path, "blocks.0.att.key.weight", "[dim_att, n_embd]"))) return m->err.code;
    a->A = (int)t->shape[0];
    if (!(t = need2(m, f, path, "blocks.0.ffn.key.weight", "[dim_ffn, n_embd]"))) return m->err.code;
    a->F = (int)t->shape[0];
    const char *hn = a->version == 7 ? "blocks.0.att.r_k" : "blocks.0.att.time_faaaa";
    if (!(t = need2(m, f, path, hn, "[n_head, head_size]"))) return m->err.code;
    a->H = (int)t->shape[0];
    a->N = (int)t->shape[1];
    if (a->version == 6) {
        if (!(t = need2(m, f, path, "blocks.0.att.time_maa_w1", "[n_embd, 5*D_mix]"))) return m->err.code;
        if (t->shape[1] % 5)
            return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: blocks.0.att.time_maa_w1 must be [n_embd, 5*D_mix]", path);
        a->Dm = (int)(t->shape[1] / 5);
        if (!(t = need2(m, f, path, "blocks.0.att.time_decay_w1", "[n_embd, D_decay]"))) return m->err.code;
        a->Dd = (int)t->shape[1];
        if (a->Dm <= 0 || a->Dd <= 0) return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: empty low-rank mixers", path);
    }
    if (a->version == 7) {
        static const char *lr[4] = {"blocks.0.att.w1", "blocks.0.att.a1", "blocks.1.att.v1", "blocks.0.att.g1"};
        int *dst[4] = {&a->Dw, &a->Da, &a->Dv, &a->Dg};
        for (int i = 0; i < 4; i++) {
            if (i == 2 && a->n_layer == 1) { /* v1 exists from layer 1 on */
                a->Dv = 32;
                continue;
            }
            if (!(t = need2(m, f, path, lr[i], "[n_embd, D]"))) return m->err.code;
            *dst[i] = (int)t->shape[1];
            if (*dst[i] <= 0) return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: %s has no columns", path, lr[i]);
        }
        if (a->A != a->C)
            return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: RWKV-7 needs dim_att = n_embd (att.key.weight is [%d,%d])", path,
                           a->A, a->C);
    }
    *with_state = rp_tensorfile_find(f, "blocks.0.att.time_state") != NULL;
    if (a->V <= 0 || a->C <= 0 || a->A <= 0 || a->F <= 0 || a->H <= 0 || a->N <= 0 || (int64_t)a->H * a->N != a->A)
        return rp_fail(&m->err, RWKVPEFT_E_SHAPE,
                       "%s: inconsistent sizes (vocab %d, n_embd %d, dim_att %d, n_head %d x head_size %d)", path, a->V,
                       a->C, a->A, a->H, a->N);
    return 0;
}

int rp_model_load_file(rwkvpeft_model *m, const char *path) {
    rp_tensorfile *f = NULL;
    int rc = rp_tensorfile_open(path, &f, &m->err);
    if (rc) return rc;
    rp_arch arch;
    int ws = 0;
    if ((rc = infer_arch(m, f, path, &arch, &ws))) goto done;
    if ((rc = rp_model_create(m, &arch, ws))) {
        rp_fail_prefix(&m->err, "%s", path);
        goto done;
    }
    /* every file tensor must be a model parameter part with the same shape, and every
     * non-optional part must be present */
    char *seen = (char *)rp_calloc((size_t)m->n_params * RP_MAX_PARTS, 1);
    if (!seen) {
        rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
        goto done;
    }
    for (int i = 0; i < f->count && !rc; i++) {
        const rp_named_tensor *t = &f->tensors[i];
        int part;
        rp_param *p = rp_model_find_param(m, t->name, &part);
        if (!p) {
            rc = rp_fail(&m->err, RWKVPEFT_E_SHAPE,
                         "%s: unexpected tensor %s for an RWKV-%d model with %d layers (an adapter key, or a "
                         "layer beyond the inferred n_layer?)",
                         path, t->name, arch.version, arch.n_layer);
            break;
        }
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
        if (!same) {
            char want[64], got[64];
            shape_str(want, sizeof want, p->ndim, p->shape);
            shape_str(got, sizeof got, t->ndim, t->shape);
            rc = rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: tensor %s has shape %s, expected %s", path, t->name, got, want);
            break;
        }
        if (t->dtype != RP_F32 && t->dtype != RP_BF16 && t->dtype != RP_F16 && t->dtype != RP_F64) {
            rc = rp_fail(&m->err, RWKVPEFT_E_UNSUPPORTED, "%s: tensor %s has element type %s (expected bf16, fp16 or fp32)",
                         path, t->name, rp_dtype_name(t->dtype));
            break;
        }
        seen[(p - m->params) * RP_MAX_PARTS + part] = 1;
    }
    for (int i = 0; i < m->n_params && !rc; i++)
        for (int j = 0; j < m->params[i].nparts && !rc; j++)
            if (!seen[i * RP_MAX_PARTS + j]) {
                char want[64];
                shape_str(want, sizeof want, m->params[i].ndim, m->params[i].shape);
                rc = rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: missing tensor %s (expected shape %s)", path,
                             m->params[i].part_names[j], want);
            }
    free(seen);
    if (rc) goto done;
    if ((rc = rp_model_alloc_params(m))) goto done;
    for (int i = 0; i < f->count && !rc; i++) {
        const rp_named_tensor *t = &f->tensors[i];
        int part;
        rp_param *p = rp_model_find_param(m, t->name, &part);
        rp_dtype dt = param_dtype(m, p);
        char *dst = (char *)p->data + (size_t)(part * p->part_numel) * rp_dtype_size(dt);
        rc = upload_converted(m, dst, dt, t->data, t->dtype, p->part_numel);
        if (rc) rp_fail_prefix(&m->err, "%s: loading %s", path, t->name);
    }
    m->from_file = 1;
done:
    rp_tensorfile_close(f);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* saving                                                                               */
/* ------------------------------------------------------------------------------------ */

int rp_model_save_file(rwkvpeft_model *m, const char *path, int kind, rp_dtype dtype, int adapter_only) {
    int count = 0;
    for (int i = 0; i < m->n_params; i++) {
        rp_param *p = &m->params[i];
        if (adapter_only ? p->trainable : !p->is_adapter) count += p->nparts;
    }
    if (count == 0)
        return rp_fail(&m->err, RWKVPEFT_E_STATE, "nothing to save: the model has no trainable tensors (attach an adapter first)");
    rp_named_tensor *ts = (rp_named_tensor *)rp_calloc((size_t)count, sizeof *ts);
    void **bufs = (void **)rp_calloc((size_t)count, sizeof(void *));
    float *f32 = NULL;
    int rc = 0, k = 0;
    if (!ts || !bufs) {
        rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory while saving");
        goto out;
    }
    for (int i = 0; i < m->n_params && !rc; i++) {
        rp_param *p = &m->params[i];
        if (!(adapter_only ? p->trainable : !p->is_adapter)) continue;
        free(f32);
        f32 = (float *)rp_malloc(sizeof(float) * (size_t)p->numel);
        if (!f32) {
            rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory while saving %s", p->name);
            break;
        }
        /* trainable tensors are read from the float master copy in the flat buffer */
        if (p->trainable && p->flat_off >= 0 && p->cls == RP_CLS_MATRIX && m->be->ops->act_dtype != m->be->ops->par_dtype) {
            size_t ps = rp_dtype_size(m->be->ops->par_dtype);
            void *tmp = rp_malloc(ps * (size_t)p->numel);
            if (!tmp) {
                rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory while saving %s", p->name);
                break;
            }
            if (m->be->ops->memcpy_d2h(m->be, tmp, (char *)m->flat + (size_t)p->flat_off * ps, ps * (size_t)p->numel))
                rc = rp_be_fail(m->be, RWKVPEFT_E_BACKEND, &m->err);
            else
                rp_convert_to_f32(f32, tmp, m->be->ops->par_dtype, (size_t)p->numel);
            free(tmp);
        } else {
            rc = rp_param_download_f32(m, p, f32);
        }
        for (int part = 0; part < p->nparts && !rc; part++) {
            rp_named_tensor *t = &ts[k];
            t->name = p->part_names[part];
            t->dtype = dtype;
            t->ndim = p->ndim;
            for (int d = 0; d < p->ndim; d++) t->shape[d] = p->shape[d];
            t->nbytes = (size_t)p->part_numel * rp_dtype_size(dtype);
            bufs[k] = rp_malloc(t->nbytes);
            if (!bufs[k]) {
                rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory while saving %s", p->name);
                break;
            }
            rp_convert_from_f32(bufs[k], dtype, f32 + part * p->part_numel, (size_t)p->part_numel);
            t->data = bufs[k];
            k++;
        }
    }
    if (!rc) rc = rp_tensorfile_write(path, (rp_file_kind)kind, ts, k, &m->err);
out:
    free(f32);
    for (int i = 0; bufs && i < count; i++) free(bufs[i]);
    free(bufs);
    free(ts);
    return rc;
}
