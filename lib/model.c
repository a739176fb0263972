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

int rp_model_create_v6(rwkvpeft_model *m, int L, int C, int A, int F, int H, int N, int V, int Dm, int Dd,
                       int with_state) {
    m->version = 6;
    m->n_layer = L;
    m->C = C;
    m->A = A;
    m->F = F;
    m->H = H;
    m->N = N;
    m->V = V;
    m->Dm = Dm;
    m->Dd = Dd;
    /* enough room for the base tensors plus one LoRA pair per linear: never reallocated,
     * so rp_param pointers stay valid */
    m->cap_params = 8 + L * (32 + 2 * RP_LIN_COUNT);
    m->params = (rp_param *)rp_calloc((size_t)m->cap_params, sizeof(rp_param));
    m->layers = (rp_v6_layer *)rp_calloc((size_t)L, sizeof(rp_v6_layer));
    if (!m->params || !m->layers) return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
    char n[RP_MAX_PARTS][RP_NAME_MAX];
    const char *np[RP_MAX_PARTS];
    for (int i = 0; i < RP_MAX_PARTS; i++) np[i] = n[i];
#define NM(i, ...) snprintf(n[i], RP_NAME_MAX, __VA_ARGS__)
    m->emb = add1(m, RP_CLS_MATRIX, "emb.weight", 2, V, C, 0);
    for (int l = 0; l < L; l++) {
        rp_v6_layer *ly = &m->layers[l];
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
        NM(0, "blocks.%d.att.time_faaaa", l);
        ly->faaaa = add1(m, RP_CLS_SMALL, n[0], 2, H, N, 0);
        static const char *att_lin[5] = {"receptance", "key", "value", "gate", "output"};
        static const int att_id[5] = {RP_LIN_ATT_R, RP_LIN_ATT_K, RP_LIN_ATT_V, RP_LIN_ATT_G, RP_LIN_ATT_O};
        for (int i = 0; i < 5; i++) {
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
        NM(0, "blocks.%d.ffn.time_maa_k", l);
        NM(1, "blocks.%d.ffn.time_maa_r", l);
        ly->ffn_maa_kr = rp_model_add_param(m, RP_CLS_SMALL, 2, np, 3, 1, 1, C);
        static const char *ffn_lin[3] = {"key", "receptance", "value"};
        static const int ffn_id[3] = {RP_LIN_FFN_K, RP_LIN_FFN_R, RP_LIN_FFN_V};
        for (int i = 0; i < 3; i++) {
            NM(0, "blocks.%d.ffn.%s.weight", l, ffn_lin[i]);
            rp_linear *lin = &ly->lin[ffn_id[i]];
            int out = i == 0 ? F : C, in = i == 2 ? F : C;
            lin->W = add1(m, RP_CLS_MATRIX, n[0], 2, out, in, 0);
            lin->in = in;
            lin->out = out;
            lin->id = l * RP_LIN_COUNT + ffn_id[i];
        }
    }
#undef NM
    m->ln_out_w = add1(m, RP_CLS_SMALL, "ln_out.weight", 1, C, 0, 0);
    m->ln_out_b = add1(m, RP_CLS_SMALL, "ln_out.bias", 1, C, 0, 0);
    m->head = add1(m, RP_CLS_MATRIX, "head.weight", 2, V, C, 0);
    for (int i = 0; i < m->n_params; i++)
        if (!m->params[i].name[0]) return rp_fail(&m->err, RWKVPEFT_E_INTERNAL, "parameter table overflow");
    return 0;
}

static rp_dtype param_dtype(const rwkvpeft_model *m, const rp_param *p) {
    return p->cls == RP_CLS_MATRIX ? m->be->ops->act_dtype : m->be->ops->par_dtype;
}

int rp_model_alloc_params(rwkvpeft_model *m) {
    for (int i = 0; i < m->n_params; i++) {
        rp_param *p = &m->params[i];
        if (p->data || p->qfmt) continue;
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
            if (m->params[i].qfmt) rp_param_free_quant(m, &m->params[i]);
        }
    if (m->qcode && m->be) m->be->ops->free(m->be, m->qcode);
    m->qcode = NULL;
    if (m->flat && m->be) m->be->ops->free(m->be, m->flat);
    free(m->params);
    free(m->layers);
    free(m->segs);
    m->params = NULL;
    m->layers = NULL;
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

int rp_param_upload_f32(rwkvpeft_model *m, rp_param *p, int part, const float *src) {
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
    int L = m->n_layer, C = m->C, A = m->A, H = m->H, N = m->N;
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
        if (strstr(nm, "ln_x.weight")) {
            double v = pow((1.0 + layer) / L, 0.7);
            for (int64_t i = 0; i < p->numel; i++) buf[i] = (float)v;
        } else if (strstr(nm, ".ln") || strstr(nm, "ln_out")) {
            int is_w = strstr(nm, ".weight") != NULL;
            for (int64_t i = 0; i < p->numel; i++) buf[i] = is_w ? 1.0f : 0.0f;
        } else if (strstr(nm, "att.time_maa_x") || p == m->layers[layer > 0 ? layer : 0].maa_wkvrg ||
                   strstr(nm, "ffn.time_maa_k")) {
            /* ddd[i] = i/C; maa = 1 - ddd^e with per-slot exponents (see docs/init-rules.md) */
            for (int part = 0; part < p->nparts; part++) {
                const char *pn = p->part_names[part];
                char slot = pn[strlen(pn) - 1];
                int is_ffn = strstr(pn, ".ffn.") != NULL;
                double e = r10, add = 0;
                if (!is_ffn && (slot == 'r' || slot == 'g')) e = 0.5 * r10;
                if (!is_ffn && slot == 'v') add = 0.3 * r01;
                for (int i = 0; i < C; i++) {
                    double ddd = (double)i / C;
                    buf[part * C + i] = (float)(1.0 - (pow(ddd, e) + add));
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
        (void)H;
        (void)N;
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

/* Infers the architecture of an RWKV-6 checkpoint from its tensors (spec §1.3). */
static int infer_v6(rwkvpeft_model *m, rp_tensorfile *f, const char *path, int *L, int *C, int *A, int *F, int *H,
                    int *N, int *V, int *Dm, int *Dd, int *with_state) {
    const rp_named_tensor *t;
    if (!(t = need(m, f, path, "emb.weight"))) return m->err.code;
    if (t->ndim != 2) return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: emb.weight must be 2-D [vocab, n_embd]", path);
    *V = (int)t->shape[0];
    *C = (int)t->shape[1];
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
    *L = maxl + 1;
    if (!(t = need(m, f, path, "blocks.0.att.key.weight"))) return m->err.code;
    if (t->ndim != 2) return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: blocks.0.att.key.weight must be 2-D", path);
    *A = (int)t->shape[0];
    if (!(t = need(m, f, path, "blocks.0.ffn.key.weight"))) return m->err.code;
    if (t->ndim != 2) return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: blocks.0.ffn.key.weight must be 2-D", path);
    *F = (int)t->shape[0];
    if (!(t = need(m, f, path, "blocks.0.att.time_faaaa"))) return m->err.code;
    if (t->ndim != 2) return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: blocks.0.att.time_faaaa must be [n_head, head_size]", path);
    *H = (int)t->shape[0];
    *N = (int)t->shape[1];
    if (!(t = need(m, f, path, "blocks.0.att.time_maa_w1"))) return m->err.code;
    if (t->ndim != 2 || t->shape[1] % 5)
        return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: blocks.0.att.time_maa_w1 must be [n_embd, 5*D_mix]", path);
    *Dm = (int)(t->shape[1] / 5);
    if (!(t = need(m, f, path, "blocks.0.att.time_decay_w1"))) return m->err.code;
    if (t->ndim != 2) return rp_fail(&m->err, RWKVPEFT_E_SHAPE, "%s: blocks.0.att.time_decay_w1 must be 2-D", path);
    *Dd = (int)t->shape[1];
    *with_state = rp_tensorfile_find(f, "blocks.0.att.time_state") != NULL;
    if (*V <= 0 || *C <= 0 || *A <= 0 || *F <= 0 || *H <= 0 || *N <= 0 || *Dm <= 0 || *Dd <= 0 || (int64_t)*H * *N != *A)
        return rp_fail(&m->err, RWKVPEFT_E_SHAPE,
                       "%s: inconsistent sizes (vocab %d, n_embd %d, dim_att %d, n_head %d x head_size %d)", path, *V,
                       *C, *A, *H, *N);
    return 0;
}

int rp_model_load_file(rwkvpeft_model *m, const char *path) {
    rp_tensorfile *f = NULL;
    int rc = rp_tensorfile_open(path, &f, &m->err);
    if (rc) return rc;
    if (rp_tensorfile_find(f, "blocks.0.att.r_k")) {
        rc = rp_fail(&m->err, RWKVPEFT_E_UNSUPPORTED, "%s: RWKV-7 (x070) checkpoints are not supported yet", path);
        goto done;
    }
    if (rp_tensorfile_find(f, "blocks.0.att.time_mix_k")) {
        rc = rp_fail(&m->err, RWKVPEFT_E_UNSUPPORTED, "%s: RWKV-5 (x052) checkpoints are not supported yet", path);
        goto done;
    }
    if (!rp_tensorfile_find(f, "blocks.0.att.time_maa_x")) {
        for (int i = 0; i < f->count; i++)
            if (strstr(f->tensors[i].name, "lora_") || strstr(f->tensors[i].name, ".bone") ||
                strstr(f->tensors[i].name, ".disha") || strstr(f->tensors[i].name, "time_state")) {
                rc = rp_fail(&m->err, RWKVPEFT_E_SHAPE,
                             "%s: this is an adapter file (it holds %s), not a base model; load the base model "
                             "and pass this file as the adapter",
                             path, f->tensors[i].name);
                goto done;
            }
        rc = rp_fail(&m->err, RWKVPEFT_E_SHAPE,
                     "%s: not an RWKV checkpoint of a known version (no blocks.0.att.time_maa_x, "
                     "time_mix_k or r_k tensor)",
                     path);
        goto done;
    }
    int L = 0, C = 0, A = 0, F = 0, H = 0, N = 0, V = 0, Dm = 0, Dd = 0, ws = 0;
    if ((rc = infer_v6(m, f, path, &L, &C, &A, &F, &H, &N, &V, &Dm, &Dd, &ws))) goto done;
    if ((rc = rp_model_create_v6(m, L, C, A, F, H, N, V, Dm, Dd, ws))) goto done;
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
                         "%s: unexpected tensor %s for an RWKV-6 model with %d layers (an adapter key, or a "
                         "layer beyond the inferred n_layer?)",
                         path, t->name, L);
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
