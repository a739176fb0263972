/* optim8.c — the 8-bit AdamW code tables (lib/optim8.h).
 *
 * Both tables come from one "dynamic exponent" construction: a code's payload bits are read
 * as  [e leading zero bits][a 1 marker bit][nf fraction bits f]  and stand for the magnitude
 *
 *     10^-e · (1 + 9·(f + 1)/2^nf) / 10,
 *
 * i.e. decade e covers (10^-(e+1), 10^-e] with 2^nf evenly spaced levels, the top one exactly
 * 10^-e. Each extra leading zero trades one fraction bit for a decade further down, so the
 * levels are dense near zero (where most of a block's moments sit relative to its absmax)
 * while the range spans six or seven decades; an all-zero payload is 0.
 *
 * - v (second moment, never negative): 8 payload bits, e = 0..7 — 255 magnitudes from 10^-7
 *   to 1, plus 0: 256 entries.
 * - m (first moment, signed): a sign bit and 7 payload bits, e = 0..6 — ±127 magnitudes from
 *   10^-6 to 1, plus 0. Sign and magnitude give +0 and −0 the same value, so the pattern of −0
 *   is spent on one more level, +10^-7 (the next decade's top), keeping 256 distinct entries
 *   with 0, −1 and 1 all exact; index 127 is 0.
 *
 * The values are computed in double (divisions by exact powers of ten, so every entry is the
 * correctly rounded float of its formula) and sorted ascending. */
#include <math.h>
#include <stdlib.h>

#include "optim8.h"

/* Magnitude of the non-zero payload p of `bits` bits (formula above). */
static double dynamic_magnitude(unsigned p, int bits) {
    int e = 0;
    while (!(p & (1u << (bits - 1 - e)))) e++;
    int nf = bits - 1 - e;
    unsigned f = p & ((1u << nf) - 1u);
    double pow10 = 1;
    for (int k = 0; k <= e; k++) pow10 *= 10; /* 10^(e+1), exact in double */
    return (1.0 + 9.0 * (double)(f + 1) / (double)(1u << nf)) / pow10;
}

static int cmp_float_asc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

void rp_adam8_codes(float code_m[RP_ADAM8_CODES], float code_v[RP_ADAM8_CODES]) {
    int k = 0;
    code_v[k++] = 0.0f;
    for (unsigned p = 1; p < 256; p++) code_v[k++] = (float)dynamic_magnitude(p, 8);
    qsort(code_v, RP_ADAM8_CODES, sizeof(float), cmp_float_asc);

    k = 0;
    code_m[k++] = 0.0f;
    code_m[k++] = 1e-7f; /* the −0 pattern, see above */
    for (unsigned p = 1; p < 128; p++) {
        float mag = (float)dynamic_magnitude(p, 7);
        code_m[k++] = mag;
        code_m[k++] = -mag;
    }
    qsort(code_m, RP_ADAM8_CODES, sizeof(float), cmp_float_asc);
}

void rp_adam8_quantize_block(const float *code, int zero_index, const double *x, int n, uint8_t *q, float *absmax) {
    double amax = 0;
    for (int i = 0; i < n; i++)
        if (fabs(x[i]) > amax) amax = fabs(x[i]);
    float a = (float)amax;
    *absmax = a;
    for (int i = 0; i < n; i++) q[i] = (uint8_t)(a > 0 ? rp_adam8_nearest(code, x[i] / (double)a) : zero_index);
}
