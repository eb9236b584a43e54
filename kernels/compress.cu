// compress_fp16: wire[i] = float16(bucket[i] * scale), the float32 -> float16 half of
// gradient compression (the other half, unpack_fp16, is in pack.cu). NumPy twin:
// kernels/reference.py compress_fp16, matched bit for bit (the product is taken in float32
// and rounded to float16 once, to nearest even).
#include "common.cuh"

// E is Scale<S, D> or, for scale 1, Convert<S, D>. Block b takes chunks b, b + gridDim.x,
// ... of `chunk` elements (a multiple of the vector width).
template <typename S, typename D, typename E>
__device__ __forceinline__ void convert(D* dst, const S* src, long long n, long long chunk, double scale) {
    const E e(scale);
    for (long long start = blockIdx.x * chunk; start < n; start += gridDim.x * chunk) {
        block_apply<S, D, E>(dst + start, src + start, min64(chunk, n - start), e);
    }
}

// The kernel of one instance, under the plain name kernels/cuda.py gives it (see ENTRY in
// common.cuh): CONVERT_ENTRY(name, S, D, E).
#define CONVERT_ENTRY(NAME, S, D, ...)                                                     \
    extern "C" __global__ void __launch_bounds__(THREADS)                                  \
    NAME(D* dst, const S* src, long long n, long long chunk, double scale) {               \
        convert<S, D, __VA_ARGS__>(dst, src, n, chunk, scale);                             \
    }
