/* ops_loss.cu — fused softmax cross-entropy + L2Wrap, one block per row, fp32 accumulation.
 *
 * Pass 1 reads the row once and keeps, per thread, an online (max, argmax, Σexp) triple; a
 * shared-memory tree merges them (ties on the max go to the smaller index, as on the CPU).
 * Pass 2 writes dlogits (which may alias logits: each element is read and then written by
 * the same thread, and the target's logit is read before any write).
 * Per-row losses go to an [n] scratch and are summed in a fixed order by a second kernel,
 * so the loss is deterministic. No [n,V] buffer other than dlogits exists.
 * A row with non-zero weight whose target lies outside [0,V) cannot be reported
 * synchronously; it makes the loss NaN (the core's finiteness check then fails the step). */
#include "common.cuh"

#define CE_THREADS 512

__global__ void __launch_bounds__(CE_THREADS)
    cross_entropy_kernel(float *__restrict__ row_loss, act_t *dlogits, const act_t *logits,
                         const int32_t *__restrict__ targets, const par_t *__restrict__ weights, int V,
                         float grad_scale, float l2wrap) {
    __shared__ float sm[CE_THREADS], ss[CE_THREADS];
    __shared__ int si[CE_THREADS];
    __shared__ float s_target_logit;
    const int64_t row = blockIdx.x;
    const int tid = threadIdx.x;
    const act_t *x = logits + row * V;
    const float wt = weights[row];
    const int tg = targets[row];
    const int valid = wt == 0.0f || (tg >= 0 && tg < V);

    /* pass 1: max, first argmax, Σ exp(x − max), online */
    float m = -INFINITY, s = 0.0f;
    int idx = 0x7fffffff;
    for (int j = tid; j < V; j += CE_THREADS) {
        const float xv = tof(x[j]);
        if (xv > m) {
            s = s * expf(m - xv) + 1.0f;
            m = xv;
            idx = j;
        } else {
            s += expf(xv - m);
        }
    }
    sm[tid] = m;
    ss[tid] = s;
    si[tid] = idx;
    if (tid == 0) s_target_logit = (wt != 0.0f && valid) ? tof(x[tg]) : 0.0f;
    __syncthreads();
    for (int stride = CE_THREADS / 2; stride > 0; stride >>= 1) {
        if (tid < stride) {
            const float m1 = sm[tid], m2 = sm[tid + stride];
            const float s1 = ss[tid], s2 = ss[tid + stride];
            const int i1 = si[tid], i2 = si[tid + stride];
            const float mm = m1 > m2 ? m1 : m2;
            float sum = 0.0f;
            if (s1 > 0.0f) sum += s1 * expf(m1 - mm);
            if (s2 > 0.0f) sum += s2 * expf(m2 - mm);
            sm[tid] = mm;
            ss[tid] = sum;
            si[tid] = m1 > m2 ? i1 : m2 > m1 ? i2 : (i1 < i2 ? i1 : i2);
        }
        __syncthreads();
    }
    const float mx = sm[0], lse = mx + logf(ss[0]);
    const int am = si[0];
    if (tid == 0) row_loss[row] = wt == 0.0f ? 0.0f : valid ? wt * (lse - s_target_logit) : NAN;
    if (!dlogits) return;

    /* pass 2: gradient */
    const float sc = grad_scale * wt;
    const float l2 = l2wrap * mx;
    act_t *dx = dlogits + row * V;
    for (int j = tid; j < V; j += CE_THREADS) {
        const float p = expf(tof(x[j]) - lse);
        float g = sc * p;
        if (j == tg && wt != 0.0f) g -= sc;
        if (j == am) g += l2;
        dx[j] = fromf<act_t>(g);
    }
}

/* loss_sum[0] += Σ_i row_loss[i], summed in double in a fixed order (one block). */
__global__ void loss_reduce_kernel(par_t *loss_sum, const float *__restrict__ row_loss, int64_t n) {
    __shared__ double sh[256];
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += 256) s += (double)row_loss[i];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int stride = 128; stride > 0; stride >>= 1) {
        if ((int)threadIdx.x < stride) sh[threadIdx.x] += sh[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) loss_sum[0] += (float)sh[0];
}

/* ---- launcher ---- */

int cu_cross_entropy(rp_backend *be, void *loss_sum, void *dlogits, const void *logits, const int32_t *targets,
                     const void *weights, int64_t n, int V, float grad_scale, float l2wrap) {
    if (n <= 0) return 0;
    if (V <= 0) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "cross_entropy: vocabulary size %d", V);
    if (n > 0x7fffffffLL) return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "cross_entropy: too many rows");
    CU_ENTER(be);
    cudaStream_t s = cu_stream(be);
    void *scr;
    RP_TRY(cu_scratch(be, sizeof(float) * (size_t)n, &scr));
    cross_entropy_kernel<<<(unsigned)n, CE_THREADS, 0, s>>>((float *)scr, (act_t *)dlogits, (const act_t *)logits,
                                                           targets, (const par_t *)weights, V, grad_scale, l2wrap);
    CU_LAUNCHED(be);
    loss_reduce_kernel<<<1, 256, 0, s>>>((par_t *)loss_sum, (const float *)scr, n);
    CU_LAUNCHED(be);
    return 0;
}
