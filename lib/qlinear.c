/* qlinear.c — quantized target linears (spec §4; docs/quantization.md).
 *
 * With rwkvpeft_model_params.quant set, the 8 target linears of every block (§3.1) are
 * quantized once from their float32 values — at adapter attach (after PiSSA's SVD, so
 * W_res is what gets quantized) or at the first forward of a model without an adapter — and
 * their dense copy is freed. A quantized rp_param keeps on the device only the packed codes,
 * the float32 absmax scales and (int8, once per model) the 256-entry code table; its `data`
 * is NULL. The graph (rwkv.c, linear_fwd/linear_bwd) dequantizes one matrix at a time
 * into the workspace's scratch buffer through the backend's `dequant` op and runs the usual
 * gemm; quantized weights never train.
 *
 * Host paths (upload/download of a quantized parameter, merges) quantize and dequantize with
 * lib/quant.c, whose host dequantization equals every backend's op bit for bit in float32.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "quant.h"

static const char *const target_suffix[RP_LIN_COUNT] = {
    "att.receptance.weight", "att.key.weight", "att.value.weight",     "att.gate.weight",
    "att.output.weight",     "ffn.key.weight", "ffn.receptance.weight", "ffn.value.weight"};

int rp_is_target_linear_weight(const char *name) {
    if (strncmp(name, "blocks.", 7) != 0) return 0;
    const char *s = name + 7;
    if (*s < '0' || *s > '9') return 0;
    while (*s >= '0' && *s <= '9') s++;
    if (*s++ != '.') return 0;
    for (int i = 0; i < RP_LIN_COUNT; i++)
        if (strcmp(s, target_suffix[i]) == 0) return 1;
    return 0;
}

/* ---- quantization slabs ------------------------------------------------------------
 * Each quantized tensor needs two device blocks (codes, scales). Allocated one by one, the
 * device allocator rounds each up to its granularity (2 MiB pages on CUDA): most of the 0.1 /
 * 0.5 / 0.3 GiB that belonged to no tensor in the H200 nf4 runs at 1.6B / 3B / 7B (0.53 →
 * 0.07 GiB at 3B with the slabs; the workspace's own rounding was the rest, lib/rwkv.c).
 * They are carved instead, 256-byte aligned, from slabs of at most QSLAB_BYTES, each sized by
 * what the model's quantization still has to place (a small model gets one small slab, the
 * last slab of a large one is not mostly empty; a larger tensor gets a slab of its own size).
 * A slab is freed with the model; a tensor that leaves its slab (unquantized, or re-quantized
 * to another size) leaves a hole until then. */
#define QSLAB_BYTES ((size_t)64 << 20)
#define QSLAB_ALIGN ((size_t)256)

static size_t qslab_round(size_t b) { return (b + QSLAB_ALIGN - 1) & ~(QSLAB_ALIGN - 1); }

/* Carves codes (and scales, when scale_bytes > 0) of one tensor from a slab, allocating a new
 * slab when none has room. 0 on success; an allocation failure is E_OUT_OF_MEMORY. */
static int qslab_carve(rwkvpeft_model *m, size_t code_bytes, size_t scale_bytes, void **codes, void **scales) {
    const size_t need = qslab_round(code_bytes) + qslab_round(scale_bytes);
    struct rp_qslab *slab = NULL;
    for (int i = 0; i < m->n_qslabs && !slab; i++)
        if (m->qslabs[i].size - m->qslabs[i].used >= need) slab = &m->qslabs[i];
    if (!slab) {
        if (m->n_qslabs == m->cap_qslabs) {
            int nc = m->cap_qslabs ? 2 * m->cap_qslabs : 16;
            struct rp_qslab *ns = (struct rp_qslab *)rp_realloc_array(m->qslabs, (size_t)nc, sizeof *ns);
            if (!ns) return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory");
            m->qslabs = ns;
            m->cap_qslabs = nc;
        }
        size_t bytes = m->qslab_pending < QSLAB_BYTES ? m->qslab_pending : QSLAB_BYTES;
        if (bytes < need) bytes = need;
        void *base = NULL;
        if (m->be->ops->alloc(m->be, &base, bytes))
            return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "cannot allocate %zu bytes for quantized weights: %s",
                           bytes, m->be->err.msg);
        slab = &m->qslabs[m->n_qslabs++];
        *slab = (struct rp_qslab){(char *)base, bytes, 0};
    }
    *codes = slab->base + slab->used;
    *scales = scale_bytes ? slab->base + slab->used + qslab_round(code_bytes) : NULL;
    slab->used += need;
    m->qslab_pending = m->qslab_pending > need ? m->qslab_pending - need : 0;
    return 0;
}

void rp_model_free_qslabs(rwkvpeft_model *m) {
    for (int i = 0; i < m->n_qslabs; i++)
        if (m->be) m->be->ops->free(m->be, m->qslabs[i].base);
    free(m->qslabs);
    m->qslabs = NULL;
    m->n_qslabs = m->cap_qslabs = 0;
}

void rp_param_free_quant(rwkvpeft_model *m, rp_param *p) {
    if (m->be && !p->q_in_slab) {
        m->be->ops->free(m->be, p->qdata);
        m->be->ops->free(m->be, p->qabsmax);
    }
    p->q_in_slab = 0;
    p->qdata = p->qabsmax = NULL;
    p->qfmt = 0;
    p->qblock = 0;
    p->q_bytes = 0;
    p->q_nblocks = 0;
}

static int ensure_code_table(rwkvpeft_model *m) {
    if (m->qcode) return 0;
    rp_backend *be = m->be;
    if (be->ops->alloc(be, &m->qcode, 256 * sizeof(float)))
        return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "cannot allocate the int8 code table: %s", be->err.msg);
    if (be->ops->memcpy_h2d(be, m->qcode, rp_int8_dynamic_code(), 256 * sizeof(float)))
        return rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
    return 0;
}

int rp_param_quantize_host(rwkvpeft_model *m, rp_param *p, int fmt, const float *host) {
    rp_backend *be = m->be;
    if (p->trainable)
        return rp_fail(&m->err, RWKVPEFT_E_INTERNAL, "%s trains and cannot be quantized", p->name);
    rp_qtensor q;
    if (rp_quantize(fmt, host, p->numel, &q, &m->err)) return rp_fail_prefix(&m->err, "quantizing %s", p->name);
    int rc = 0;
    if (p->qfmt && (p->qfmt != fmt || p->q_bytes != q.q_bytes || p->q_nblocks != q.n_blocks)) rp_param_free_quant(m, p);
    if (fmt == RP_QUANT_INT8) rc = ensure_code_table(m);
    if (!rc && !p->qdata) {
        rc = qslab_carve(m, q.q_bytes, sizeof(float) * (size_t)q.n_blocks, &p->qdata, &p->qabsmax);
        if (rc) rp_fail_prefix(&m->err, "quantizing %s", p->name);
        else p->q_in_slab = 1;
    }
    if (!rc && (be->ops->memcpy_h2d(be, p->qdata, q.q, q.q_bytes) ||
                (q.n_blocks > 0 && be->ops->memcpy_h2d(be, p->qabsmax, q.absmax, sizeof(float) * (size_t)q.n_blocks))))
        rc = rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
    if (!rc) {
        p->qfmt = fmt;
        p->qblock = q.blocksize;
        p->q_bytes = q.q_bytes;
        p->q_nblocks = q.n_blocks;
        if (p->data && p->owns_data) be->ops->free(be, p->data);
        p->data = NULL;
        p->owns_data = 0;
    } else if (!p->qfmt) { /* a first quantization that failed: stay dense */
        rp_param_free_quant(m, p);
    }
    rp_qtensor_free(&q);
    return rc;
}

int rp_model_quantize(rwkvpeft_model *m) {
    if (!m->quant_pending) return 0;
    float *buf = NULL;
    int64_t cap = 0, dense = 0, packed = 0;
    int rc = 0, count = 0;
    /* what the slabs will have to hold */
    m->qslab_pending = 0;
    for (int l = 0; l < m->n_layer; l++)
        for (int i = 0; i < RP_LIN_COUNT; i++) {
            const rp_param *p = m->layers[l].lin[i].W;
            int bs;
            size_t qb;
            int64_t nb;
            if (p && !p->qfmt && !rp_quant_layout(m->quant, p->numel, &bs, &qb, &nb))
                m->qslab_pending += qslab_round(qb) + qslab_round(sizeof(float) * (size_t)nb);
        }
    for (int l = 0; l < m->n_layer && !rc; l++)
        for (int i = 0; i < RP_LIN_COUNT && !rc; i++) {
            rp_param *p = m->layers[l].lin[i].W;
            if (!p || p->qfmt) continue; /* absent in this version, or done */
            if (p->trainable) {
                rc = rp_fail(&m->err, RWKVPEFT_E_INVALID_ARGUMENT,
                             "%s is selected to train, but the model quantizes it (quant %s); quantized weights are "
                             "frozen",
                             p->name, rp_quant_name(m->quant));
                break;
            }
            if (p->numel > cap) {
                free(buf);
                cap = p->numel;
                buf = (float *)rp_malloc(sizeof(float) * (size_t)cap);
                if (!buf) {
                    rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of host memory quantizing %s", p->name);
                    break;
                }
            }
            dense += p->numel * (int64_t)rp_dtype_size(m->be->ops->act_dtype);
            rc = rp_param_download_f32(m, p, buf);
            if (!rc) rc = rp_param_quantize_host(m, p, m->quant, buf);
            if (!rc) packed += (int64_t)p->q_bytes + 4 * p->q_nblocks;
            count++;
        }
    free(buf);
    if (rc) return rc;
    m->quant_pending = 0;
    if (m->ctx)
        rp_log(m->ctx, RWKVPEFT_LOG_INFO, "quantized %d linears to %s: %.1f MiB -> %.1f MiB", count,
               rp_quant_name(m->quant), dense / 1048576.0, packed / 1048576.0);
    return 0;
}

int rp_param_dequant_host(rwkvpeft_model *m, rp_param *p, float *dst) {
    rp_backend *be = m->be;
    rp_qtensor q;
    memset(&q, 0, sizeof q);
    q.format = p->qfmt;
    q.n = p->numel;
    q.blocksize = p->qblock;
    q.q_bytes = p->q_bytes;
    q.n_blocks = p->q_nblocks;
    q.q = (uint8_t *)rp_malloc(p->q_bytes);
    q.absmax = p->q_nblocks ? (float *)rp_malloc(sizeof(float) * (size_t)p->q_nblocks) : NULL;
    int rc = 0;
    if (!q.q || (p->q_nblocks && !q.absmax))
        rc = rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "out of host memory reading %s", p->name);
    else if (be->ops->memcpy_d2h(be, q.q, p->qdata, p->q_bytes) ||
             (p->q_nblocks && be->ops->memcpy_d2h(be, q.absmax, p->qabsmax, sizeof(float) * (size_t)p->q_nblocks)))
        rc = rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
    else
        rp_dequantize(&q, dst);
    rp_qtensor_free(&q);
    return rc;
}

int rp_param_unquantize(rwkvpeft_model *m, rp_param *p) {
    if (!p->qfmt) return 0;
    rp_backend *be = m->be;
    rp_dtype t = p->cls == RP_CLS_MATRIX ? be->ops->act_dtype : be->ops->par_dtype;
    size_t bytes = (size_t)p->numel * rp_dtype_size(t);
    void *dense = NULL;
    if (be->ops->alloc(be, &dense, bytes))
        return rp_fail(&m->err, RWKVPEFT_E_OUT_OF_MEMORY, "cannot allocate %zu bytes for %s: %s", bytes, p->name, be->err.msg);
    if (be->ops->dequant(be, dense, p->qdata, p->qabsmax, m->qcode, p->qfmt, p->numel, p->qblock)) {
        be->ops->free(be, dense);
        return rp_be_fail(be, RWKVPEFT_E_BACKEND, &m->err);
    }
    rp_param_free_quant(m, p);
    p->data = dense;
    p->owns_data = 1;
    return 0;
}

int64_t rp_model_param_bytes(const rwkvpeft_model *m) {
    const rp_backend_ops *ops = m->be->ops;
    int64_t total = 0;
    for (int i = 0; i < m->n_params; i++) {
        const rp_param *p = &m->params[i];
        if (p->data && p->owns_data)
            total += p->numel * (int64_t)rp_dtype_size(p->cls == RP_CLS_MATRIX ? ops->act_dtype : ops->par_dtype);
        total += (int64_t)p->q_bytes + 4 * p->q_nblocks;
    }
    if (m->qcode) total += 256 * 4;
    if (m->flat) total += m->flat_numel * (int64_t)rp_dtype_size(ops->par_dtype);
    return total;
}

int rp_quant_roundtrip(int fmt, float *x, int64_t n, rp_err *err) {
    rp_qtensor q;
    RP_TRY(rp_quantize(fmt, x, n, &q, err));
    rp_dequantize(&q, x);
    rp_qtensor_free(&q);
    return 0;
}
