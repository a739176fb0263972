/* ops_embedding.cu — token embedding gather (forward) and scatter-add (backward).
 * The backward is deterministic: one thread per channel walks the rows in order, so repeated
 * ids never race and the sum order is fixed. */
#include "common.cuh"

#define EMB_THREADS 256

/* out[i,:] = table[ids[i],:] */
__global__ void embedding_forward_kernel(act_t *__restrict__ out, const act_t *__restrict__ table,
                                         const int32_t *__restrict__ ids, int64_t n, int C) {
    const int64_t total = n * C;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = e / C;
        int c = (int)(e % C);
        out[e] = table[(int64_t)ids[i] * C + c];
    }
}

/* dtable[ids[i],c] += Σ dout[i,c]: thread c walks every row in order, accumulating runs of
 * equal ids in a register before touching dtable. */
__global__ void embedding_backward_kernel(par_t *__restrict__ dtable, const act_t *__restrict__ dout,
                                          const int32_t *__restrict__ ids, int64_t n, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    int64_t run_id = -1;
    float run = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        int64_t id = ids[i];
        if (id != run_id) {
            if (run_id >= 0) dtable[run_id * C + c] += run;
            run_id = id;
            run = 0.0f;
        }
        run += tof(dout[i * C + c]);
    }
    if (run_id >= 0) dtable[run_id * C + c] += run;
}

/* ---- launchers ---- */

int cu_embedding_fwd(rp_backend *be, void *out, const void *table, const int32_t *ids, int64_t n, int C) {
    if (n <= 0 || C <= 0) return 0;
    CU_ENTER(be);
    embedding_forward_kernel<<<cu_blocks(n * C, EMB_THREADS), EMB_THREADS, 0, cu_stream(be)>>>(
        (act_t *)out, (const act_t *)table, ids, n, C);
    CU_LAUNCHED(be);
    return 0;
}

int cu_embedding_bwd(rp_backend *be, void *dtable, const void *dout, const int32_t *ids, int64_t n, int C) {
    if (n <= 0 || C <= 0) return 0;
    CU_ENTER(be);
    embedding_backward_kernel<<<(unsigned)((C + EMB_THREADS - 1) / EMB_THREADS), EMB_THREADS, 0, cu_stream(be)>>>(
        (par_t *)dtable, (const act_t *)dout, ids, n, C);
    CU_LAUNCHED(be);
    return 0;
}
