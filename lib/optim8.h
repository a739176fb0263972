/* optim8.h — the code tables of the blockwise 8-bit AdamW (rwkvpeft_train_params.optimizer =
 * RWKVPEFT_OPTIM_ADAMW_8BIT; Dettmers et al. 2021, "8-bit Optimizers via Block-wise
 * Quantization").
 *
 * Each Adam moment is stored as one byte per element: an index into a 256-entry table of
 * values in [-1, 1] (first moment m, signed) or [0, 1] (second moment v, unsigned), times one
 * float32 scale (absmax) per block of RP_ADAM8_BLOCK consecutive elements of the flat
 * trainable buffer. The backends' adam8_update op (lib/backend.h) dequantizes, updates in
 * float32 and re-quantizes each block; the tables are built here, on the host, and uploaded
 * once per trainer. */
#ifndef RP_OPTIM8_H
#define RP_OPTIM8_H

#include <stdint.h>

#include "backend.h"

#define RP_ADAM8_CODES 256
/* Index of 0.0 in each table: the state of a fresh optimizer (with absmax 0). */
#define RP_ADAM8_ZERO_M 127
#define RP_ADAM8_ZERO_V 0

/* Fills the two ascending tables (see optim8.c for the construction). */
void rp_adam8_codes(float code_m[RP_ADAM8_CODES], float code_v[RP_ADAM8_CODES]);

/* Index of the entry of the ascending table `code` nearest to x (x outside the table's range
 * takes the end entry); an exact tie between two neighbours goes to the lower index. Eight
 * halving steps find the last entry <= x, then the upper neighbour wins only when strictly
 * closer. The CPU backend runs exactly this; the CUDA/HIP kernel does the same in float. */
static inline int rp_adam8_nearest(const float *code, double x) {
    int lo = 0;
    for (int step = RP_ADAM8_CODES / 2; step > 0; step >>= 1)
        if ((double)code[lo + step] <= x) lo += step;
    if (lo < RP_ADAM8_CODES - 1 && (double)code[lo + 1] - x < x - (double)code[lo]) lo++;
    return lo;
}

/* Host reference of one block's quantization (tests): absmax = max |x[i]| (as float32), and
 * q[i] = nearest(code, x[i] / absmax), or zero_index for every element when absmax is 0. */
void rp_adam8_quantize_block(const float *code, int zero_index, const double *x, int n, uint8_t *q, float *absmax);

#endif
