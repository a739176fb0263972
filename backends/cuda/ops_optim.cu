/* ops_optim.cu — squared norm over segments and the Adam(W) update.
 *
 * Segments arrive as a host array; each call uploads one small table ({offset, count, start
 * in the concatenated index space, lr_scale, weight_decay}) into a device buffer owned by the
 * backend and launches ONE kernel over the concatenated index space; a thread finds its
 * segment by binary search in that table. norm_sq is read on the device (no host round
 * trip): a non-finite value makes every thread return before writing. */
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

__global__ void adam_kernel(par_t *__restrict__ p, const par_t *__restrict__ g, par_t *__restrict__ m,
                            par_t *__restrict__ v, const seg_dev *__restrict__ segs, int n_segs, int64_t total,
                            const par_t *__restrict__ norm_sq, float max_norm, float lr, float b1, float b2,
                            float eps, float bc1, float bc2) {
    float clip = 1.0f;
    if (norm_sq) {
        const float ns = norm_sq[0];
        if (!isfinite(ns)) return; /* skipped step: nothing changes */
        if (max_norm > 0.0f) {
            const float c = max_norm / (sqrtf(ns) + 1e-6f);
            if (c < 1.0f) clip = c;
        }
    }
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
