/* ops_quant.cu — dequantization of NF4 / FP4 / INT8 / FP8-e4m3 weights into A (bf16).
 * Code tables and the fp8 decoder come from lib/kernel_common.h, shared with every backend. */
#include "common.cuh"

#define DQ_THREADS 256

__constant__ float c_nf4[16] = RP_NF4_CODES;
__constant__ float c_fp4[16] = RP_FP4_CODES;

/* 4-bit: two codes per byte, the first element in the high nibble. */
__global__ void dequant_4bit_kernel(act_t *__restrict__ out, const uint8_t *__restrict__ q,
                                    const float *__restrict__ absmax, int nf4, int64_t n, int blocksize) {
    const float *tab = nf4 ? c_nf4 : c_fp4;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const uint8_t byte = q[i >> 1];
        const int c = (i & 1) ? (byte & 15) : (byte >> 4);
        out[i] = fromf<act_t>(tab[c] * absmax[i / blocksize]);
    }
}

__global__ void dequant_int8_kernel(act_t *__restrict__ out, const uint8_t *__restrict__ q,
                                    const float *__restrict__ absmax, const float *__restrict__ code, int64_t n,
                                    int blocksize) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = fromf<act_t>(code[q[i]] * absmax[i / blocksize]);
}

__global__ void dequant_fp8_kernel(act_t *__restrict__ out, const uint8_t *__restrict__ q,
                                   const float *__restrict__ absmax, int64_t n, int blocksize) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = fromf<act_t>(rp_fp8_e4m3_to_float(q[i]) * (absmax ? absmax[i / blocksize] : 1.0f));
}

/* ---- launcher ---- */

int cu_dequant(rp_backend *be, void *out, const void *q, const void *absmax, const void *code, int format, int64_t n,
               int blocksize) {
    if (blocksize <= 0) return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "dequant: blocksize %d", blocksize);
    if (format == RP_QUANT_INT8 && !code)
        return CU_FAIL(be, RWKVPEFT_E_INVALID_ARGUMENT, "dequant: int8 needs a code table");
    if (format < RP_QUANT_NF4 || format > RP_QUANT_FP8_E4M3)
        return CU_FAIL(be, RWKVPEFT_E_UNSUPPORTED, "dequant: unknown format %d", format);
    if (n <= 0) return 0;
    CU_ENTER(be);
    const unsigned g = cu_blocks(n, DQ_THREADS);
    cudaStream_t s = cu_stream(be);
    act_t *o = (act_t *)out;
    const uint8_t *qb = (const uint8_t *)q;
    const float *am = (const float *)absmax;
    switch (format) {
    case RP_QUANT_NF4:
    case RP_QUANT_FP4:
        dequant_4bit_kernel<<<g, DQ_THREADS, 0, s>>>(o, qb, am, format == RP_QUANT_NF4, n, blocksize);
        break;
    case RP_QUANT_INT8: dequant_int8_kernel<<<g, DQ_THREADS, 0, s>>>(o, qb, am, (const float *)code, n, blocksize); break;
    default: dequant_fp8_kernel<<<g, DQ_THREADS, 0, s>>>(o, qb, am, n, blocksize); break;
    }
    CU_LAUNCHED(be);
    return 0;
}
