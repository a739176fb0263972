/* ops_quant.cu — dequantization of NF4 / FP4 / INT8 / FP8-e4m3 weights into A (bf16).
 * Code tables and the fp8 decoder come from lib/kernel_common.h, shared with every backend. */
#include "common.cuh"

#define DQ_THREADS 256

__constant__ float c_nf4[16] = RP_NF4_CODES;
__constant__ float c_fp4[16] = RP_FP4_CODES;

/* Scalar kernels: elements [start, n), one per thread; they serve sizes and alignments the
 * vector kernel cannot take (its tail, odd n, unaligned pointers). */

/* 4-bit: two codes per byte, the first element in the high nibble. */
__global__ void dequant_4bit_kernel(act_t *__restrict__ out, const uint8_t *__restrict__ q,
                                    const float *__restrict__ absmax, int nf4, int64_t start, int64_t n, int blocksize) {
    const float *tab = nf4 ? c_nf4 : c_fp4;
    for (int64_t i = start + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const uint8_t byte = q[i >> 1];
        const int c = (i & 1) ? (byte & 15) : (byte >> 4);
        out[i] = fromf<act_t>(tab[c] * absmax[i / blocksize]);
    }
}

__global__ void dequant_int8_kernel(act_t *__restrict__ out, const uint8_t *__restrict__ q,
                                    const float *__restrict__ absmax, const float *__restrict__ code, int64_t start,
                                    int64_t n, int blocksize) {
    for (int64_t i = start + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = fromf<act_t>(code[q[i]] * absmax[i / blocksize]);
}

__global__ void dequant_fp8_kernel(act_t *__restrict__ out, const uint8_t *__restrict__ q,
                                   const float *__restrict__ absmax, int64_t start, int64_t n, int blocksize) {
    for (int64_t i = start + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = fromf<act_t>(rp_fp8_e4m3_to_float(q[i]) * (absmax ? absmax[i / blocksize] : 1.0f));
}

/* Vector kernel: 8 consecutive elements per thread — one 32-bit load of packed 4-bit codes
 * (or 64-bit of 8-bit codes), one scale lookup when the 8 share a block, and one 16-byte
 * store of bf16. The scalar kernels did a byte load, a 64-bit division and a 2-byte store per
 * element: the dequantization of every quantized linear, three times per step under
 * grad_cp, ran at a tenth of the memory bandwidth. Code tables sit in shared memory
 * (divergent indices into __constant__ memory serialise). */
struct alignas(16) act8 {
    act_t v[8];
};

/* bshift = log2(blocksize) when the block size is a power of two ≥ 8 (every real layout: 64 for
 * the 4-bit formats, 256 for int8): the 8 elements then share one scale, found by a shift. The
 * general path's two 64-bit divisions per thread had made the kernel instruction-bound at about
 * a third of the memory rate (H200: ~1.4 TB/s, 38 ms of a 7B nf4 step). */
__global__ void dequant8_kernel(act8 *__restrict__ out, const uint8_t *__restrict__ q, const float *__restrict__ absmax,
                                const float *__restrict__ code, int format, int64_t n8, int blocksize, int bshift) {
    __shared__ float s_tab[256];
    const int ncode = format == RP_QUANT_INT8 ? 256 : 16;
    for (int i = threadIdx.x; i < ncode; i += blockDim.x)
        s_tab[i] = format == RP_QUANT_INT8 ? code[i] : format == RP_QUANT_NF4 ? c_nf4[i] : c_fp4[i];
    __syncthreads();
    for (int64_t g = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; g < n8; g += (int64_t)gridDim.x * blockDim.x) {
        float v[8];
        if (format == RP_QUANT_NF4 || format == RP_QUANT_FP4) {
            const uint32_t w = reinterpret_cast<const uint32_t *>(q)[g]; /* byte k = elements 2k (high), 2k+1 */
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const uint32_t byte = (w >> (8 * k)) & 0xffu;
                v[2 * k] = s_tab[byte >> 4];
                v[2 * k + 1] = s_tab[byte & 15u];
            }
        } else {
            const uint2 w = reinterpret_cast<const uint2 *>(q)[g];
#pragma unroll
            for (int k = 0; k < 8; k++) {
                const uint32_t byte = ((k < 4 ? w.x : w.y) >> (8 * (k & 3))) & 0xffu;
                v[k] = format == RP_QUANT_INT8 ? s_tab[byte] : rp_fp8_e4m3_to_float((uint8_t)byte);
            }
        }
        if (absmax && bshift >= 3) {
            const float sc = absmax[(g * 8) >> bshift];
#pragma unroll
            for (int k = 0; k < 8; k++) v[k] *= sc;
        } else if (absmax) {
            const int64_t e0 = g * 8, b0 = e0 / blocksize;
            if ((e0 + 7) / blocksize == b0) {
                const float sc = absmax[b0];
#pragma unroll
                for (int k = 0; k < 8; k++) v[k] *= sc;
            } else {
#pragma unroll
                for (int k = 0; k < 8; k++) v[k] *= absmax[(e0 + k) / blocksize];
            }
        }
        act8 o;
#pragma unroll
        for (int k = 0; k < 8; k++) o.v[k] = fromf<act_t>(v[k]);
        out[g] = o;
    }
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
    cudaStream_t s = cu_stream(be);
    act_t *o = (act_t *)out;
    const uint8_t *qb = (const uint8_t *)q;
    const float *am = (const float *)absmax;
    /* the vector kernel takes the 8-element groups when the pointers allow its wide accesses;
     * the scalar kernels take the rest */
    const int four_bit = format == RP_QUANT_NF4 || format == RP_QUANT_FP4;
    const int aligned = (uintptr_t)out % 16 == 0 && (uintptr_t)q % (four_bit ? 4 : 8) == 0;
    const int64_t n8 = aligned ? n / 8 : 0, start = n8 * 8;
    int bshift = -1;
    if (blocksize >= 8 && (blocksize & (blocksize - 1)) == 0)
        for (bshift = 0; (1 << bshift) < blocksize; bshift++) {
        }
    if (n8 > 0)
        dequant8_kernel<<<cu_blocks(n8, DQ_THREADS), DQ_THREADS, 0, s>>>((act8 *)out, qb, am, (const float *)code, format, n8, blocksize, bshift);
    if (start < n) {
        const unsigned g = cu_blocks(n - start, DQ_THREADS);
        switch (format) {
        case RP_QUANT_NF4:
        case RP_QUANT_FP4:
            dequant_4bit_kernel<<<g, DQ_THREADS, 0, s>>>(o, qb, am, format == RP_QUANT_NF4, start, n, blocksize);
            break;
        case RP_QUANT_INT8:
            dequant_int8_kernel<<<g, DQ_THREADS, 0, s>>>(o, qb, am, (const float *)code, start, n, blocksize);
            break;
        default: dequant_fp8_kernel<<<g, DQ_THREADS, 0, s>>>(o, qb, am, start, n, blocksize); break;
        }
    }
    CU_LAUNCHED(be);
    return 0;
}
