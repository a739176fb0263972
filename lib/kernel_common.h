/* kernel_common.h — small pure functions shared by every backend's kernels and by the
 * core, so that all backends compute bit-identical masks and code tables. Includable from
 * C11 and from CUDA/HIP sources (functions are host+device there). */
#ifndef RP_KERNEL_COMMON_H
#define RP_KERNEL_COMMON_H

#include <stdint.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define RP_HD __host__ __device__ __forceinline__
#else
#define RP_HD static inline
#endif

/* splitmix64 finaliser: a good 64-bit mixing function. */
RP_HD uint64_t rp_mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0,1) with 24 random bits, from (seed, index): counter-based, so any
 * element's value can be recomputed anywhere (forward, recomputed forward, backward). */
RP_HD float rp_uniform01(uint64_t seed, uint64_t index) {
    uint64_t h = rp_mix64(seed ^ rp_mix64(index));
    return (float)(h >> 40) * (1.0f / 16777216.0f);
}

/* Dropout keeps element i when its uniform draw is >= p. */
RP_HD int rp_dropout_keep(uint64_t seed, uint64_t index, float p) {
    return rp_uniform01(seed, index) >= p;
}

/* NF4 code values (bitsandbytes), index 0..15. */
#define RP_NF4_CODES                                                                           \
    {-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,                 \
     -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,                 \
     0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,    \
     0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f}

/* FP4 code values (bitsandbytes), index 0..15: [0, .0625, 8, 12, 4, 6, 2, 3, -0, ...]/12. */
#define RP_FP4_CODES                                                                            \
    {0.0f, 0.0625f / 12.0f, 8.0f / 12.0f, 12.0f / 12.0f, 4.0f / 12.0f, 6.0f / 12.0f,              \
     2.0f / 12.0f, 3.0f / 12.0f, -0.0f, -0.0625f / 12.0f, -8.0f / 12.0f, -12.0f / 12.0f,        \
     -4.0f / 12.0f, -6.0f / 12.0f, -2.0f / 12.0f, -3.0f / 12.0f}

/* e4m3fn byte to float (no infinities; 0x7f/0xff are NaN). */
RP_HD float rp_fp8_e4m3_to_float(uint8_t b) {
    int sign = b >> 7, e = (b >> 3) & 15, m = b & 7;
    float v;
    if (e == 15 && m == 7) return 0.0f / 0.0f;
    if (e == 0)
        v = (float)m * (1.0f / 512.0f); /* 2^-6 * m/8 */
    else {
        /* (1 + m/8) * 2^(e-7) */
        int ex = e - 7;
        float p = 1.0f;
        if (ex > 0)
            for (int i = 0; i < ex; i++) p *= 2.0f;
        else
            for (int i = 0; i < -ex; i++) p *= 0.5f;
        v = (1.0f + (float)m * 0.125f) * p;
    }
    return sign ? -v : v;
}

#endif
