/* vendor.h — the portability header: one CUDA source tree, compiled for NVIDIA (nvcc) or
 * for AMD (HIP, clang) when RWKVPEFT_USE_HIP is defined.
 *
 * The kernels and launchers are written against the CUDA runtime and cuBLAS names; under
 * RWKVPEFT_USE_HIP this header maps each name the module uses to its HIP equivalent (and
 * cuBLAS to hipBLAS when RWKVPEFT_HAVE_HIPBLAS says hipBLAS exists; Debian has none, so the
 * HIP module normally runs every GEMM through the project's own tiled kernel).
 *
 * It also defines the few device-side constants that differ between vendors:
 *   RP_WARP_SIZE      threads per warp/wavefront of the target being compiled (a compile-time
 *                     constant: 32 on NVIDIA and RDNA, 64 on CDNA/GCN). Kernels never write 32.
 *                     Host code must not depend on it (the HIP host pass cannot know the
 *                     device's value); launch shapes are multiples of 64 so they suit both.
 *   RP_MAX_WARPS      upper bound of warps per 1024-thread block, for shared-memory arrays.
 *   rp_shfl_xor(v,m)  butterfly shuffle within a warp.
 *   RP_HAVE_BLAS      defined when a vendor BLAS (cuBLAS/hipBLAS) is compiled in.
 */
#ifndef RP_CUDA_VENDOR_H
#define RP_CUDA_VENDOR_H

#if defined(RWKVPEFT_CUDA_EMULATION)

/* development only: the kernels on CPU threads (emu/cuda_emu.h; no BLAS, tiled GEMM) */
#include "emu/cuda_emu.h"

#elif defined(RWKVPEFT_USE_HIP)

#include <hip/hip_runtime.h>

/* ---- runtime ---- */
#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaErrorMemoryAllocation hipErrorOutOfMemory
#define cudaGetErrorString hipGetErrorString
#define cudaGetErrorName hipGetErrorName
#define cudaGetLastError hipGetLastError
#define cudaPeekAtLastError hipPeekAtLastError
#define cudaGetDeviceCount hipGetDeviceCount
#define cudaGetDevice hipGetDevice
#define cudaSetDevice hipSetDevice
#define cudaDeviceProp hipDeviceProp_t
#define cudaGetDeviceProperties hipGetDeviceProperties
#define cudaRuntimeGetVersion hipRuntimeGetVersion
#define cudaDriverGetVersion hipDriverGetVersion
#define cudaMalloc hipMalloc
#define cudaFree hipFree
#define cudaMemGetInfo hipMemGetInfo
#define cudaMemcpyAsync hipMemcpyAsync
#define cudaMemcpy2DAsync hipMemcpy2DAsync
#define cudaMemsetAsync hipMemsetAsync
#define cudaMemcpyHostToDevice hipMemcpyHostToDevice
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define cudaMemcpyDeviceToDevice hipMemcpyDeviceToDevice
#define cudaMemcpyDefault hipMemcpyDefault
#define cudaStream_t hipStream_t
#define cudaStreamCreateWithFlags hipStreamCreateWithFlags
#define cudaStreamNonBlocking hipStreamNonBlocking
#define cudaStreamDestroy hipStreamDestroy
#define cudaStreamSynchronize hipStreamSynchronize

/* ---- BLAS (only where hipBLAS exists; not verified on this project's machines) ---- */
#if defined(RWKVPEFT_HAVE_HIPBLAS)
#include <hipblas/hipblas.h>
#define RP_HAVE_BLAS 1
#define cublasHandle_t hipblasHandle_t
#define cublasStatus_t hipblasStatus_t
#define CUBLAS_STATUS_SUCCESS HIPBLAS_STATUS_SUCCESS
#define cublasCreate hipblasCreate
#define cublasDestroy hipblasDestroy
#define cublasSetStream hipblasSetStream
#define cublasOperation_t hipblasOperation_t
#define CUBLAS_OP_N HIPBLAS_OP_N
#define CUBLAS_OP_T HIPBLAS_OP_T
#define cublasGemmEx hipblasGemmEx
#define cublasGemmStridedBatchedEx hipblasGemmStridedBatchedEx
#define CUBLAS_GEMM_DEFAULT HIPBLAS_GEMM_DEFAULT
/* hipBLAS before 6.0 names element and compute types with hipblasDatatype_t. */
#define cudaDataType hipblasDatatype_t
#define CUDA_R_32F HIPBLAS_R_32F
#define CUDA_R_16BF HIPBLAS_R_16B
#define cublasComputeType_t hipblasDatatype_t
#define CUBLAS_COMPUTE_32F HIPBLAS_R_32F
#define RP_BLAS_NO_WORKSPACE 1 /* hipBLAS has no cublasSetWorkspace */
#endif

/* ---- device constants ---- */
#if defined(__AMDGCN_WAVEFRONT_SIZE)
#define RP_WARP_SIZE __AMDGCN_WAVEFRONT_SIZE
#elif defined(__GFX9__) || defined(__GFX8__)
#define RP_WARP_SIZE 64
#else
#define RP_WARP_SIZE 64 /* host pass: never used for sizing (see above) */
#endif
#define rp_shfl_xor(v, mask) __shfl_xor((v), (mask))

#else /* NVIDIA */

#include <cublas_v2.h>
#include <cuda_runtime.h>

#define RP_HAVE_BLAS 1
#define RP_WARP_SIZE 32
#define rp_shfl_xor(v, mask) __shfl_xor_sync(0xffffffffu, (v), (mask))

#endif

#define RP_MAX_WARPS 32 /* 1024 threads / the smallest warp (32) */

#endif
