/* quant.h — quantizers of the frozen base weights in bitsandbytes' formats (spec §4).
 * Host-side, run once at load time; every backend dequantizes with its `dequant` op. */
#ifndef RP_QUANT_H
#define RP_QUANT_H

#include "backend.h"
#include "internal.h"

#define RP_QUANT_BLOCK_4BIT 64

/* A quantized tensor as it lives on the host after quantization. */
typedef struct rp_qtensor {
    int format;      /* rp_quant_format */
    int64_t n;       /* elements */
    int blocksize;   /* absmax block (4-bit: 64; int8: n, one absmax for the tensor; fp8: n) */
    uint8_t *q;      /* packed codes: (n+1)/2 bytes for 4-bit, n bytes for int8/fp8 */
    float *absmax;   /* ceil(n/blocksize) scales (fp8: NULL, unit scale) */
    size_t q_bytes;
    int64_t n_blocks;
} rp_qtensor;

/* The packed layout of n values in a format: absmax block size, code bytes, scale count.
 * Returns 0, or -1 for an unknown format. */
int rp_quant_layout(int format, int64_t n, int *blocksize, size_t *q_bytes, int64_t *n_blocks);

/* Quantizes n float32 values. NaN or Inf in the input is RWKVPEFT_E_NUMERIC (the message
 * names the element index). */
int rp_quantize(int format, const float *x, int64_t n, rp_qtensor *out, rp_err *err);
void rp_qtensor_free(rp_qtensor *q);

/* Host reference of the backends' dequant op (used by tests and merges). */
void rp_dequantize(const rp_qtensor *q, float *out);

/* The 256-entry signed dynamic map of bitsandbytes (create_dynamic_map(signed=True)), as
 * float32, ascending. */
const float *rp_int8_dynamic_code(void);

/* Single-value encoders (exact bitsandbytes semantics), exposed for tests. */
uint8_t rp_nf4_encode(float x_normalised);
uint8_t rp_fp4_encode(float x_normalised);
uint8_t rp_int8_encode(float x_normalised, const float *code);
uint8_t rp_fp8_e4m3_encode(float x);

/* Parses "none", "nf4", "fp4", "4bit" (= fp4, bitsandbytes' default), "int8", "fp8";
 * returns the rp_quant_format (0 for none) or -1. */
int rp_quant_parse(const char *name);
const char *rp_quant_name(int format);

#endif
