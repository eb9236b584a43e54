// compress_fp16: wire[i] = float16(bucket[i] * scale), the float32 -> float16 half of
// gradient compression (the other half, unpack_fp16, is in pack.cu). NumPy twin:
// kernels/reference.py compress_fp16, matched bit for bit (the product is taken in float32
// and rounded to float16 once, to nearest even).
#include "common.cuh"

// E is Scale<S, D> or, for scale 1, Convert<S, D>. Block b takes chunks b, b + gridDim.x,
// ... of `chunk` elements (a multiple of the vector width).
template <typename S, typename D, typename E>
__global__ void __launch_bounds__(THREADS)
convert(D* dst, const S* src, long long n, long long chunk, double scale) {
    const E e(scale);
    for (long long start = blockIdx.x * chunk; start < n; start += gridDim.x * chunk) {
        block_apply<S, D, E>(dst + start, src + start, min64(chunk, n - start), e);
    }
}

#ifdef KERNELS_INSTANTIATE_ALL
// For a plain nvcc compile (the tests); at run time NVRTC instantiates what cuda.py names.
template __global__ void convert<float, f16, Convert<float, f16> >(f16*, const float*, long long, long long, double);
template __global__ void convert<float, f16, Scale<float, f16> >(f16*, const float*, long long, long long, double);
#endif
