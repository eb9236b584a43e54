// reduce_into: dst = dst <op> src element-wise (reverse: src <op> dst), the one reduction
// of the collective engine. NumPy twin: kernels/reference.py reduce_into, matched bit for
// bit (integer sums and products wrap around; float16 is computed in float32 and rounded
// once; max/min follow NumPy's rules for NaN and for ties of +0.0 and -0.0).
#include "common.cuh"

// Wrap-around integer arithmetic is defined on unsigned types only.
template <typename T> struct Wrap { typedef T type; };
template <> struct Wrap<int> { typedef unsigned int type; };
template <> struct Wrap<long long> { typedef unsigned long long type; };

struct Sum {
    template <typename T> static __device__ __forceinline__ T apply(T a, T b) {
        typedef typename Math<T>::type M;
        typedef typename Wrap<M>::type W;
        return narrow<T>((M)add<W>((W)widen<T>(a), (W)widen<T>(b)));
    }
};

struct Prod {
    template <typename T> static __device__ __forceinline__ T apply(T a, T b) {
        typedef typename Math<T>::type M;
        typedef typename Wrap<M>::type W;
        return narrow<T>((M)mul<W>((W)widen<T>(a), (W)widen<T>(b)));
    }
};

// NumPy's maximum and minimum return one operand unchanged (NaN payloads included): a NaN
// first operand wins, then the strictly larger (smaller) one; on a tie (+0.0 and -0.0)
// NumPy 2 returns the second operand for float32/float64 and the first for float16.
template <typename T> struct TieKeepsFirst { static constexpr bool value = false; };
template <> struct TieKeepsFirst<f16> { static constexpr bool value = true; };

struct Max {
    template <typename T> static __device__ __forceinline__ T apply(T a, T b) {
        const typename Math<T>::type x = widen<T>(a), y = widen<T>(b);
        const bool first = is_nan(x) || greater(x, y) || (TieKeepsFirst<T>::value && equal(x, y));
        return first ? a : b;
    }
};

struct Min {
    template <typename T> static __device__ __forceinline__ T apply(T a, T b) {
        const typename Math<T>::type x = widen<T>(a), y = widen<T>(b);
        const bool first = is_nan(x) || less(x, y) || (TieKeepsFirst<T>::value && equal(x, y));
        return first ? a : b;
    }
};

template <typename T, typename Op> struct Combine {
    static constexpr bool reads_dst = true;
    int reverse;
    __device__ explicit Combine(int r) : reverse(r) {}
    __device__ T operator()(T old, T x) const { return reverse ? Op::apply(x, old) : Op::apply(old, x); }
};

// Block b takes chunks b, b + gridDim.x, ... of `chunk` elements (a multiple of the vector
// width, so every chunk starts with the alignment of the first).
template <typename T, typename Op>
__device__ __forceinline__ void reduce_into(T* dst, const T* src, long long n, long long chunk, int reverse) {
    const Combine<T, Op> e(reverse);
    for (long long start = blockIdx.x * chunk; start < n; start += gridDim.x * chunk) {
        block_apply<T, T, Combine<T, Op> >(dst + start, src + start, min64(chunk, n - start), e);
    }
}

// The kernel of one instance, under the plain name kernels/cuda.py gives it (see ENTRY in
// common.cuh): REDUCE_INTO_ENTRY(name, T, Op).
#define REDUCE_INTO_ENTRY(NAME, T, ...)                                                    \
    extern "C" __global__ void __launch_bounds__(THREADS)                                  \
    NAME(T* dst, const T* src, long long n, long long chunk, int reverse) {                \
        reduce_into<T, __VA_ARGS__>(dst, src, n, chunk, reverse);                          \
    }
