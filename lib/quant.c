/* quant.c — bitsandbytes-compatible quantization of frozen weights (spec §4).
 *
 * NF4 / FP4: blocks of 64 consecutive elements of the row-major tensor; absmax per block
 * (fp32); each element is normalised by multiplying with the fp32 reciprocal of absmax and
 * encoded by the comparison trees of bitsandbytes' kernels (every test is `value >
 * threshold`, so a value exactly on a threshold takes the smaller code; NaN from an all-zero
 * block falls through to code 0, which dequantizes to 0·absmax = 0). Two codes per byte, the
 * first element in the high nibble.
 * INT8 (`bnb.functional.quantize`, not blockwise): one absmax for the whole tensor, x/absmax
 * (a division, as the Python side computes it) encoded by bitsandbytes' binary search over
 * the 256-entry signed dynamic map with its midpoint rule.
 * FP8: float8_e4m3fn by round-to-nearest-even of the value itself (no scale); values beyond
 * ±448 saturate to ±448 (see docs/differences.md).
 */
#include "quant.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernel_common.h"

static const float nf4_codes[16] = RP_NF4_CODES;

uint8_t rp_nf4_encode(float x) {
    /* thresholds: midpoints of adjacent NF4 codes, as bitsandbytes' dQuantizeNF4 */
    if (x > 0.03979014977812767f) {
        if (x > 0.3893125355243683f) {
            if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 15 : 14;
            return x > 0.5016634166240692f ? 13 : 12;
        }
        if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 11 : 10;
        return x > 0.1202552504837513f ? 9 : 8;
    }
    if (x > -0.33967943489551544f) {
        if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 7 : 6;
        return x > -0.23460740596055984f ? 5 : 4;
    }
    if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 3 : 2;
    return x > -0.8480964004993439f ? 1 : 0;
}

uint8_t rp_fp4_encode(float x) {
    uint8_t sign = x < 0 ? 8 : 0;
    x = fabsf(x);
    uint8_t c;
    if (x > 0.29166667f) {
        if (x > 0.583333f)
            c = x > 0.8333333f ? 3 : 2;
        else
            c = x > 0.4166667f ? 5 : 4;
    } else {
        if (x > 0.0859375f)
            c = x > 0.20833333f ? 7 : 6;
        else
            c = x > 0.00260417f ? 1 : 0;
    }
    return (uint8_t)(c + sign);
}

/* torch.linspace(start, end, steps) in float32, as PyTorch's CPU kernel computes it. */
static void linspace_f32(float start, float end, int steps, float *out) {
    float step = (end - start) / (float)(steps - 1);
    int half = steps / 2;
    for (int i = 0; i < steps; i++)
        out[i] = i < half ? start + step * (float)i : end - step * (float)(steps - i - 1);
}

static float int8_code[256];
static pthread_once_t int8_code_once = PTHREAD_ONCE_INIT;

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static void build_int8_code(void) {
    float data[256];
    int k = 0;
    for (int i = 0; i < 7; i++) {
        int items = (1 << i) + 1;
        float bounds[65];
        linspace_f32(0.1f, 1.0f, items, bounds);
        double scale = pow(10.0, (double)(i - 6));
        for (int j = 0; j + 1 < items; j++) {
            float mean = (bounds[j] + bounds[j + 1]) / 2.0f;
            /* python float * float32 tensor: torch casts the scalar to float32 first */
            data[k++] = (float)scale * mean;
            data[k++] = (float)(-scale) * mean;
        }
    }
    data[k++] = 0.0f;
    data[k++] = 1.0f;
    qsort(data, 256, sizeof(float), cmp_float);
    memcpy(int8_code, data, sizeof data);
}

const float *rp_int8_dynamic_code(void) {
    pthread_once(&int8_code_once, build_int8_code); /* thread-safe lazy build */
    return int8_code;
}

uint8_t rp_int8_encode(float x, const float *code) {
    /* bitsandbytes dQuantize<0>: binary search, then nearest of the two neighbours with
     * its midpoint rule */
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f, val = code[pivot];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = code[pivot];
    }
    if (upper_pivot == 255) upper = code[upper_pivot];
    if (lower_pivot == 0) lower = code[lower_pivot];
    if (x > val) {
        float mid = (upper + val) * 0.5f;
        return (uint8_t)(x > mid ? upper_pivot : pivot);
    }
    float mid = (lower + val) * 0.5f;
    return (uint8_t)(x < mid ? lower_pivot : pivot);
}

uint8_t rp_fp8_e4m3_encode(float x) {
    uint8_t sign = signbit(x) ? 0x80 : 0;
    float a = fabsf(x);
    if (!(a < 448.0f)) return (uint8_t)(sign | 0x7e); /* saturate to ±448 (torch does, also for inf) */
    if (a == 0.0f) return sign;
    int e;
    frexpf(a, &e); /* a = f * 2^e, f in [0.5, 1) */
    int exp_unbiased = e - 1;
    if (exp_unbiased < -6) { /* subnormal: units of 2^-9 */
        float units = a * 512.0f;
        float r = nearbyintf(units); /* round half to even under the default mode */
        int m = (int)r;
        if (m >= 8) return (uint8_t)(sign | (1 << 3)); /* rounds up to the smallest normal */
        return (uint8_t)(sign | m);
    }
    float units = ldexpf(a, 3 - exp_unbiased); /* in [8, 16) */
    int m = (int)nearbyintf(units);
    if (m == 16) {
        m = 8;
        exp_unbiased++;
    }
    int be = exp_unbiased + 7;
    if (be > 15 || (be == 15 && (m - 8) > 6)) return (uint8_t)(sign | 0x7e);
    return (uint8_t)(sign | (be << 3) | (m - 8));
}

int rp_quant_parse(const char *name) {
    if (!name || !strcmp(name, "none") || !name[0]) return 0;
    if (!strcmp(name, "nf4")) return RP_QUANT_NF4;
    if (!strcmp(name, "fp4") || !strcmp(name, "4bit")) return RP_QUANT_FP4;
    if (!strcmp(name, "int8")) return RP_QUANT_INT8;
    if (!strcmp(name, "fp8")) return RP_QUANT_FP8_E4M3;
    return -1;
}

const char *rp_quant_name(int f) {
    switch (f) {
    case 0: return "none";
    case RP_QUANT_NF4: return "nf4";
    case RP_QUANT_FP4: return "fp4";
    case RP_QUANT_INT8: return "int8";
    case RP_QUANT_FP8_E4M3: return "fp8";
    }
    return "unknown";
}

void rp_qtensor_free(rp_qtensor *q) {
    if (!q) return;
    free(q->q);
    free(q->absmax);
    q->q = NULL;
    q->absmax = NULL;
}

int rp_quant_layout(int format, int64_t n, int *blocksize, size_t *q_bytes, int64_t *n_blocks) {
    switch (format) {
    case RP_QUANT_NF4:
    case RP_QUANT_FP4:
        *blocksize = RP_QUANT_BLOCK_4BIT;
        *n_blocks = (n + RP_QUANT_BLOCK_4BIT - 1) / RP_QUANT_BLOCK_4BIT;
        *q_bytes = (size_t)((n + 1) / 2);
        return 0;
    case RP_QUANT_INT8: /* one absmax for the whole tensor (spec §4) */
        *blocksize = n > INT32_MAX ? INT32_MAX : (int)n;
        *n_blocks = n > 0 ? (n + *blocksize - 1) / *blocksize : 0;
        *q_bytes = (size_t)n;
        return 0;
    case RP_QUANT_FP8_E4M3: /* unit scale, no absmax */
        *blocksize = n > INT32_MAX ? INT32_MAX : (int)n;
        *n_blocks = 0;
        *q_bytes = (size_t)n;
        return 0;
    default: return -1;
    }
}

int rp_quantize(int format, const float *x, int64_t n, rp_qtensor *out, rp_err *err) {
    memset(out, 0, sizeof *out);
    if (n <= 0) return rp_fail(err, RWKVPEFT_E_INVALID_ARGUMENT, "quantize: empty tensor");
    int64_t bad = n;
#pragma omp parallel for reduction(min : bad) if (n > (1 << 16))
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]) && i < bad) bad = i;
    if (bad < n)
        return rp_fail(err, RWKVPEFT_E_NUMERIC, "quantize (%s): element %lld is %s", rp_quant_name(format), (long long)bad,
                       isnan(x[bad]) ? "NaN" : "infinite");
    out->format = format;
    out->n = n;
    if (rp_quant_layout(format, n, &out->blocksize, &out->q_bytes, &out->n_blocks))
        return rp_fail(err, RWKVPEFT_E_UNSUPPORTED, "unknown quantization format %d", format);
    switch (format) {
    case RP_QUANT_NF4:
    case RP_QUANT_FP4: {
        out->q = (uint8_t *)rp_calloc(out->q_bytes, 1);
        out->absmax = (float *)rp_malloc(sizeof(float) * (size_t)out->n_blocks);
        if (!out->q || !out->absmax) break;
        /* blocks are independent and a block owns whole bytes (64 is even) */
#pragma omp parallel for if (n > (1 << 16))
        for (int64_t b = 0; b < out->n_blocks; b++) {
            int64_t s = b * RP_QUANT_BLOCK_4BIT, e = s + RP_QUANT_BLOCK_4BIT < n ? s + RP_QUANT_BLOCK_4BIT : n;
            float am = 0;
            for (int64_t i = s; i < e; i++) am = fmaxf(am, fabsf(x[i]));
            out->absmax[b] = am;
            float inv = 1.0f / am; /* +inf for an all-zero block: 0*inf = NaN, as bitsandbytes */
            for (int64_t i = s; i < e; i++) {
                float v = x[i] * inv;
                uint8_t c = format == RP_QUANT_NF4 ? rp_nf4_encode(v) : rp_fp4_encode(v);
                if (i & 1)
                    out->q[i >> 1] |= c;
                else
                    out->q[i >> 1] |= (uint8_t)(c << 4);
            }
        }
        return 0;
    }
    case RP_QUANT_INT8: {
        const float *code = rp_int8_dynamic_code();
        out->q = (uint8_t *)rp_malloc(out->q_bytes);
        out->absmax = (float *)rp_malloc(sizeof(float) * (size_t)out->n_blocks);
        if (!out->q || !out->absmax) break;
        float am = 0;
#pragma omp parallel for reduction(max : am) if (n > (1 << 16))
        for (int64_t i = 0; i < n; i++) am = fmaxf(am, fabsf(x[i]));
        for (int64_t b = 0; b < out->n_blocks; b++) out->absmax[b] = am;
#pragma omp parallel for if (n > (1 << 16))
        for (int64_t i = 0; i < n; i++) out->q[i] = rp_int8_encode(am > 0 ? x[i] / am : 0.0f, code);
        return 0;
    }
    case RP_QUANT_FP8_E4M3: {
        out->q = (uint8_t *)rp_malloc(out->q_bytes);
        if (!out->q) break;
#pragma omp parallel for if (n > (1 << 16))
        for (int64_t i = 0; i < n; i++) out->q[i] = rp_fp8_e4m3_encode(x[i]);
        return 0;
    }
    default: return rp_fail(err, RWKVPEFT_E_UNSUPPORTED, "unknown quantization format %d", format);
    }
    rp_qtensor_free(out);
    return rp_fail(err, RWKVPEFT_E_OUT_OF_MEMORY, "out of memory quantizing %lld elements", (long long)n);
}

void rp_dequantize(const rp_qtensor *q, float *out) {
    static const float fp4[16] = RP_FP4_CODES;
    const float *i8 = rp_int8_dynamic_code();
#pragma omp parallel for if (q->n > (1 << 16))
    for (int64_t i = 0; i < q->n; i++) {
        switch (q->format) {
        case RP_QUANT_NF4:
        case RP_QUANT_FP4: {
            uint8_t byte = q->q[i >> 1];
            int c = (i & 1) ? (byte & 15) : (byte >> 4);
            out[i] = (q->format == RP_QUANT_NF4 ? nf4_codes[c] : fp4[c]) * q->absmax[i / q->blocksize];
            break;
        }
        case RP_QUANT_INT8: out[i] = i8[q->q[i]] * q->absmax[i / q->blocksize]; break;
        default: out[i] = rp_fp8_e4m3_to_float(q->q[i]); break;
        }
    }
}
