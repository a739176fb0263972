/* cuda_emu.h — a CPU emulation of the small CUDA subset the module uses, so the kernels'
 * logic (indexing, barriers, shared memory, aliasing, warp-size independence) can be checked
 * on a machine without a GPU by the very same op harness (tests/test_backend_ops.c).
 * Development tool only: see run_emulated.sh, which rewrites every `k<<<g, b, s, st>>>(args)`
 * into `emu_launch(g, b, [&] { k(args); })` and builds an emulated librwkvpeft_cuda.so.
 *
 * Model: a launch runs its blocks one after another; each block's threads are real OS
 * threads (blockDim of them, reused across the blocks of the launch) meeting at a
 * std::barrier for __syncthreads. __shared__ is `static` (one object, used by one block at a
 * time). Warp shuffles exchange through a block-wide slot array, so every thread of a block
 * must call them together (true of block_sum). The warp size is RP_EMU_WARP (default 32;
 * build with -DRP_EMU_WARP=64 to mimic AMD's wavefront). */
#ifndef RP_CUDA_EMU_H
#define RP_CUDA_EMU_H

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <math.h>
#include <thread>
#include <vector>

#ifndef RP_EMU_WARP
#define RP_EMU_WARP 32
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __constant__
#define __launch_bounds__(x)

/* the vector types the kernels load and store through (16- and 8-byte accesses) */
struct alignas(8) uint2 {
    unsigned x, y;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

extern thread_local dim3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;

struct emu_block_ctx {
    std::barrier<> *bar;
    double *slots; /* one per thread of the block, for shuffles */
};
extern thread_local emu_block_ctx emu_ctx;

inline void __syncthreads() { emu_ctx.bar->arrive_and_wait(); }

template <typename T> inline T emu_shfl_xor(T v, int mask) {
    const unsigned t = threadIdx.x;
    __syncthreads();
    emu_ctx.slots[t] = (double)v;
    __syncthreads();
    T r = (T)emu_ctx.slots[t ^ (unsigned)mask];
    __syncthreads();
    return r;
}

inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
using std::isfinite;

/* ---- runtime ---- */
typedef int cudaError_t;
typedef int cudaStream_t;
enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorInvalidValue = 1 };
enum { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum { cudaStreamNonBlocking = 1 };
struct cudaDeviceProp {
    char name[256];
    int major, minor;
    size_t totalGlobalMem;
    int multiProcessorCount;
};
inline const char *cudaGetErrorString(cudaError_t e) { return e == 0 ? "no error" : e == 2 ? "out of memory" : "error"; }
inline const char *cudaGetErrorName(cudaError_t e) { return e == 0 ? "cudaSuccess" : e == 2 ? "cudaErrorMemoryAllocation" : "cudaError"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int *n) {
    *n = 1;
    return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int *d) {
    *d = 0;
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) {
    std::snprintf(p->name, sizeof p->name, "CPU emulation (warp %d)", RP_EMU_WARP);
    p->major = 0;
    p->minor = 0;
    p->totalGlobalMem = (size_t)8 << 30;
    p->multiProcessorCount = 8; /* few: small launches already take the big wkv6 tiles */
    return cudaSuccess;
}
inline cudaError_t cudaMalloc(void **p, size_t n) {
    *p = std::aligned_alloc(256, (n + 255) & ~(size_t)255);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
template <typename T> inline cudaError_t cudaMalloc(T **p, size_t n) { return cudaMalloc((void **)p, n); }
inline cudaError_t cudaFree(void *p) {
    std::free(p);
    return cudaSuccess;
}
inline cudaError_t cudaMemGetInfo(size_t *f, size_t *t) {
    *f = (size_t)4 << 30;
    *t = (size_t)8 << 30;
    return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, int, cudaStream_t) {
    std::memmove(d, s, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy2DAsync(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t h, int,
                                     cudaStream_t) {
    for (size_t r = 0; r < h; r++) std::memmove((char *)d + r * dp, (const char *)s + r * sp, w);
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t) {
    std::memset(d, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned) {
    *s = 1;
    return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

/* Runs fn for every (block, thread) of the launch. */
void emu_launch_impl(dim3 grid, dim3 block, const std::function<void()> &fn);
template <typename F> inline void emu_launch(dim3 grid, dim3 block, F fn) {
    emu_launch_impl(grid, block, std::function<void()>(fn));
}

#define RP_WARP_SIZE RP_EMU_WARP
#define rp_shfl_xor(v, mask) emu_shfl_xor((v), (mask))

#endif
