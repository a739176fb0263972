/* ops_optim.cu — squared norm over segments and the Adam(W) update.
 *
 * Segments arrive as a host array; each call uploads one small table ({offset, count, start
 * in the concatenated index space, lr_scale, weight_decay}) into a device buffer owned by the
 * backend and launches ONE kernel over the concatenated index space; a thread finds its
 * segment by binary search in that table. norm_sq is read on the device (no host round
 * trip): a non-finite value makes every thread return before writing.
 *
 * adam8_update (8-bit AdamW, lib/optim8.h) runs one thread block per quantization block of
 * RP_ADAM8_BLOCK elements, one element per thread: the two 256-entry code tables sit in
 * shared memory, the block's new absmax is a block_max, and each element's code is an
 * eight-step binary search of its normalised moment. Its segment table is sorted by flat
 * offset and searched by offset (a thread knows its flat index, not a concatenated one). */
#include <math.h>
#include <stdlib.h>

#include "common.cuh"

typedef struct seg_dev {
    int64_t offset, count, start;
    float lr_scale, weight_decay;
} seg_dev;

#define OPT_THREADS 256
#define SUMSQ_BLOCKS 1024

RP_DEV int find_segment(const seg_dev *segs, int n_segs, int64_t g) {
    int lo = 0, hi = n_segs - 1;
    while (lo < hi) { /* last segment with start <= g */
        int mid = (lo + hi + 1) >> 1;
        if (segs[mid].start <= g) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* Each block sums x² over a contiguous range of the concatenated space, in double. */
__global__ void sumsq_partial_kernel(double *__restrict__ part, const par_t *__restrict__ x,
                                     const seg_dev *__restrict__ segs, int n_segs, int64_t total) {
    const int64_t per = (total + gridDim.x - 1) / gridDim.x;
    const int64_t g0 = (int64_t)blockIdx.x * per, g1 = g0 + per < total ? g0 + per : total;
    double acc = 0.0;
    if (g0 < g1) {
        int s = find_segment(segs, n_segs, g0 + threadIdx.x < g1 ? g0 + threadIdx.x : g0);
        for (int64_t g = g0 + threadIdx.x; g < g1; g += blockDim.x) {
            while (g >= segs[s].start + segs[s].count) s++;
            const double v = (double)x[segs[s].offset + (g - segs[s].start)];
            acc += v * v;
        }
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) part[blockIdx.x] = acc;
}

__global__ void sumsq_finish_kernel(par_t *acc, const double *__restrict__ part, int n_part) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        double s = 0.0;
        for (int i = 0; i < n_part; i++) s += part[i];
        acc[0] += (float)s;
    }
}

/* The gradient scale of an Adam step, read on the device (no host round trip): false when the
 * squared norm is not finite (the step is skipped), else true with *clip set. */
RP_DEV bool adam_clip(const par_t *norm_sq, float max_norm, float *clip) {
    *clip = 1.0f;
    if (!norm_sq) return true;
    const float ns = norm_sq[0];
    if (!isfinite(ns)) return false;
    if (max_norm > 0.0f) {
        const float c = max_norm / (sqrtf(ns) + 1e-6f);
        if (c < 1.0f) *clip = c;
    }
    return true;
}

__global__ void adam_kernel(par_t *__restrict__ p, const par_t *__restrict__ g, par_t *__restrict__ m,
                            par_t *__restrict__ v, const seg_dev *__restrict__ segs, int n_segs, int64_t total,
                            const par_t *__restrict__ norm_sq, float max_norm, float lr, float b1, float b2,
                            float eps, float bc1, float bc2) {
    float clip;
    if (!adam_clip(norm_sq, max_norm, &clip)) return; /* skipped step: nothing changes */
    for (int64_t gi = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; gi < total;
         gi += (int64_t)gridDim.x * blockDim.x) {
        const seg_dev sg = segs[find_segment(segs, n_segs, gi)];
        const int64_t i = sg.offset + (gi - sg.start);
        const float gv = g[i] * clip;
        const float mi = b1 * m[i] + (1.0f - b1) * gv;
        const float vi = b2 * v[i] + (1.0f - b2) * gv * gv;
        m[i] = mi;
        v[i] = vi;
        const float upd = (mi / bc1) / (sqrtf(vi / bc2) + eps) + sg.weight_decay * p[i];
        p[i] = p[i] - lr * sg.lr_scale * upd;
    }
}

/* Segment (sorted by offset) holding flat index i, or -1. */
RP_DEV int find_segment_by_offset(const seg_dev *segs, int n_segs, int64_t i) {
    if (n_segs <= 0 || segs[0].offset > i) return -1;
    int lo = 0, hi = n_segs - 1;
    while (lo < hi) { /* last segment with offset <= i */
        int mid = (lo + hi + 1) >> 1;
        if (segs[mid].offset <= i) lo = mid;
        else hi = mid - 1;
    }
    return i < segs[lo].offset + segs[lo].count ? lo : -1;
}

/* lib/optim8.h's rp_adam8_nearest in float: the last entry <= x in eight halving steps, then
 * the upper neighbour only when strictly closer (ties to the lower index). */
RP_DEV int adam8_nearest(const float *code, float x) {
    int lo = 0;
#pragma unroll
    for (int step = 128; step > 0; step >>= 1)
        if (code[lo + step] <= x) lo += step;
    if (lo < 255 && code[lo + 1] - x < x - code[lo]) lo++;
    return lo;
}

static_assert(RP_ADAM8_BLOCK == 256, "adam8_kernel loads one code entry per thread");

/* blockDim.x == RP_ADAM8_BLOCK; block b covers flat elements [b·256, b·256 + 256) ∩ [0, numel). */
__global__ void adam8_kernel(par_t *__restrict__ p, const par_t *__restrict__ g, uint8_t *__restrict__ m_q,
                             uint8_t *__restrict__ v_q, float *__restrict__ m_absmax, float *__restrict__ v_absmax,
                             const float *__restrict__ code_m, const float *__restrict__ code_v, int64_t numel,
                             const seg_dev *__restrict__ segs, int n_segs, const par_t *__restrict__ norm_sq,
                             float max_norm, float lr, float b1, float b2, float eps, float bc1, float bc2) {
    __shared__ float cm[RP_ADAM8_BLOCK], cv[RP_ADAM8_BLOCK];
    float clip;
    if (!adam_clip(norm_sq, max_norm, &clip)) return; /* skipped step: nothing changes (uniform over the grid) */
    const int t = threadIdx.x;
    cm[t] = code_m[t];
    cv[t] = code_v[t];
    __syncthreads();
    const int64_t b = blockIdx.x, i = b * RP_ADAM8_BLOCK + t;
    const bool inside = i < numel;
    float mi = 0.0f, vi = 0.0f;
    const float am = m_absmax[b], av = v_absmax[b];
    if (inside) {
        mi = cm[m_q[i]] * am;
        vi = cv[v_q[i]] * av;
    }
    const int s = inside ? find_segment_by_offset(segs, n_segs, i) : -1;
    if (s >= 0) {
        const float gv = g[i] * clip;
        mi = b1 * mi + (1.0f - b1) * gv;
        vi = b2 * vi + (1.0f - b2) * gv * gv;
        const float upd = (mi / bc1) / (sqrtf(vi / bc2) + eps) + segs[s].weight_decay * p[i];
        p[i] = p[i] - lr * segs[s].lr_scale * upd;
    }
    /* every thread reaches the reductions; the early exit below is uniform over the block */
    const float any = block_max(s >= 0 ? 1.0f : 0.0f);
    if (any == 0.0f) return; /* no trainable element: the block is not written */
    const float mA = block_max(fabsf(mi)), vA = block_max(vi);
    if (t == 0) {
        m_absmax[b] = mA;
        v_absmax[b] = vA;
    }
    if (inside) {
        m_q[i] = (uint8_t)adam8_nearest(cm, mA > 0.0f ? mi / mA : 0.0f);
        v_q[i] = (uint8_t)adam8_nearest(cv, vA > 0.0f ? vi / vA : 0.0f);
    }
}

/* ---- launchers ---- */

/* Uploads the table (segments with count <= 0 dropped); *total = Σ count. */
static int upload_segments(rp_backend *be, const rp_adam_segment *segs, int n_segs, const seg_dev **dev,
                           int *n_dev, int64_t *total) {
    seg_dev *h = (seg_dev *)malloc(sizeof(seg_dev) * (size_t)(n_segs > 0 ? n_segs : 1));
    if (!h) return CU_FAIL(be, RWKVPEFT_E_OUT_OF_MEMORY, "segment table: host memory");
    int k = 0;
    int64_t start = 0;
    for (int s = 0; s < n_segs; s++) {
        if (segs[s].count <= 0) continue;
        h[k].offset = segs[s].offset;
        h[k].count = segs[s].count;
        h[k].start = start;
        h[k].lr_scale = segs[s].lr_scale;
        h[k].weight_decay = segs[s].weight_decay;
        start += segs[s].count;
        k++;
    }
    void *d = NULL;
    int rc = k ? cu_upload_table(be, h, sizeof(seg_dev) * (size_t)k, &d) : 0;
    free(h);
    RP_TRY(rc);
    *dev = (const seg_dev *)d;
    *n_dev = k;
    *total = start;
    return 0;
}

int cu_sumsq(rp_backend *be, void *acc, const void *x, const rp_adam_segment *segs, int n_segs) {
    CU_ENTER(be);
    const seg_dev *dsegs;
    int nd;
    int64_t total;
    RP_TRY(upload_segments(be, segs, n_segs, &dsegs, &nd, &total));
    if (total == 0) return 0;
    int64_t blocks = (total + OPT_THREADS * 8 - 1) / (OPT_THREADS * 8);
    if (blocks > SUMSQ_BLOCKS) blocks = SUMSQ_BLOCKS;
    void *scr;
    RP_TRY(cu_scratch(be, sizeof(double) * (size_t)blocks, &scr));
    cudaStream_t s = cu_stream(be);
    sumsq_partial_kernel<<<(unsigned)blocks, OPT_THREADS, 0, s>>>((double *)scr, (const par_t *)x, dsegs, nd, total);
    CU_LAUNCHED(be);
    sumsq_finish_kernel<<<1, 64, 0, s>>>((par_t *)acc, (const double *)scr, (int)blocks);
    CU_LAUNCHED(be);
    return 0;
}

int cu_adam_update(rp_backend *be, void *params, const void *grads, void *m, void *v, const rp_adam_segment *segs,
                   int n_segs, const void *norm_sq, float max_norm, float lr, float beta1, float beta2, float eps,
                   int64_t step) {
    if (step < 1) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "adam_update: step must be >= 1");
    CU_ENTER(be);
    const seg_dev *dsegs;
    int nd;
    int64_t total;
    RP_TRY(upload_segments(be, segs, n_segs, &dsegs, &nd, &total));
    if (total == 0) return 0;
    const float bc1 = (float)(1.0 - pow((double)beta1, (double)step));
    const float bc2 = (float)(1.0 - pow((double)beta2, (double)step));
    adam_kernel<<<cu_blocks(total, OPT_THREADS), OPT_THREADS, 0, cu_stream(be)>>>(
        (par_t *)params, (const par_t *)grads, (par_t *)m, (par_t *)v, dsegs, nd, total, (const par_t *)norm_sq,
        max_norm, lr, beta1, beta2, eps, bc1, bc2);
    CU_LAUNCHED(be);
    return 0;
}

int cu_adam8_update(rp_backend *be, void *params, const void *grads, uint8_t *m_q, uint8_t *v_q, float *m_absmax,
                    float *v_absmax, const float *code_m, const float *code_v, int64_t numel,
                    const rp_adam_segment *segs, int n_segs, const void *norm_sq, float max_norm, float lr,
                    float beta1, float beta2, float eps, int64_t step) {
    if (step < 1) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "adam8_update: step must be >= 1");
    if (numel < 0 || n_segs < 0) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "adam8_update: negative size");
    CU_ENTER(be);
    if (numel == 0) return 0;
    /* the kernel searches by flat offset: a host copy sorted by offset, clamped to [0, numel) */
    rp_adam_segment *sorted = (rp_adam_segment *)malloc(sizeof(rp_adam_segment) * (size_t)(n_segs > 0 ? n_segs : 1));
    if (!sorted) return CU_FAIL(be, RWKVPEFT_E_OUT_OF_MEMORY, "adam8_update: host memory");
    const int k = rp_adam_segments_by_offset(segs, n_segs, numel, sorted);
    const seg_dev *dsegs = NULL;
    int nd = 0;
    int64_t total = 0;
    const int rc = upload_segments(be, sorted, k, &dsegs, &nd, &total);
    free(sorted);
    RP_TRY(rc);
    if (total == 0) return 0;
    const float bc1 = (float)(1.0 - pow((double)beta1, (double)step));
    const float bc2 = (float)(1.0 - pow((double)beta2, (double)step));
    const int64_t blocks = (numel + RP_ADAM8_BLOCK - 1) / RP_ADAM8_BLOCK;
    if (blocks > 0x7fffffff) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "adam8_update: buffer too large");
    adam8_kernel<<<(unsigned)blocks, RP_ADAM8_BLOCK, 0, cu_stream(be)>>>(
        (par_t *)params, (const par_t *)grads, m_q, v_q, m_absmax, v_absmax, code_m, code_v, numel, dsegs, nd,
        (const par_t *)norm_sq, max_norm, lr, beta1, beta2, eps, bc1, bc2);
    CU_LAUNCHED(be);
    return 0;
}
