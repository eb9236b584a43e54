// Device kernels of the collective engine, compiled at run time by CuPy (NVRTC) through
// kernels/cuda.py, and by nvcc in the tests. Every kernel has a NumPy twin in
// kernels/reference.py that it must match bit for bit.
//
// float16 is carried as raw 16-bit words (struct f16) and converted with the PTX cvt
// instructions, so no CUDA header is needed: NVRTC cannot always find cuda_fp16.h.
// Arithmetic on float16 happens in float32 and is rounded back once per operation, which
// is what NumPy does. Integer sums and products wrap around, as in NumPy.
//
// Launch geometry is chosen by the caller (kernels/cuda.py): grid-stride loops, so any grid
// covers any size; 16-byte vector loads where both pointers are 16-byte aligned.

struct f16 { unsigned short bits; };

__device__ __forceinline__ float f16_to_float(f16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.bits));
    return f;
}

__device__ __forceinline__ f16 float_to_f16(float f) {
    f16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(f));
    return h;
}

// The type arithmetic happens in, and conversions to and from it.
template <typename T> struct Math { typedef T type; };
template <> struct Math<f16> { typedef float type; };

template <typename T> __device__ __forceinline__ typename Math<T>::type widen(T v) { return v; }
template <> __device__ __forceinline__ float widen<f16>(f16 v) { return f16_to_float(v); }

template <typename T> __device__ __forceinline__ T narrow(typename Math<T>::type v) { return (T)v; }
template <> __device__ __forceinline__ f16 narrow<f16>(float v) { return float_to_f16(v); }

// Wrap-around integer arithmetic is defined on unsigned types only.
template <typename T> struct Wrap { typedef T type; };
template <> struct Wrap<int> { typedef unsigned int type; };
template <> struct Wrap<long long> { typedef unsigned long long type; };

struct Sum {
    template <typename T> static __device__ __forceinline__ T apply(T a, T b) {
        typedef typename Wrap<T>::type W;
        return (T)((W)a + (W)b);
    }
};
struct Prod {
    template <typename T> static __device__ __forceinline__ T apply(T a, T b) {
        typedef typename Wrap<T>::type W;
        return (T)((W)a * (W)b);
    }
};
// NumPy's maximum/minimum: a NaN in a wins, otherwise b unless a is strictly larger/smaller.
struct Max {
    template <typename T> static __device__ __forceinline__ T apply(T a, T b) {
        return (a > b || a != a) ? a : b;
    }
};
struct Min {
    template <typename T> static __device__ __forceinline__ T apply(T a, T b) {
        return (a < b || a != a) ? a : b;
    }
};

template <typename T> struct alignas(16) Vec { T v[16 / sizeof(T)]; };

__device__ __forceinline__ bool aligned16(const void* a, const void* b) {
    return ((reinterpret_cast<unsigned long long>(a) | reinterpret_cast<unsigned long long>(b)) & 15) == 0;
}

template <typename T, typename Op>
__device__ __forceinline__ T combine(T dst, T src, int reverse) {
    typedef typename Math<T>::type M;
    M a = widen<T>(dst), b = widen<T>(src);
    return narrow<T>(reverse ? Op::apply(b, a) : Op::apply(a, b));
}

// dst[i] = dst[i] op src[i] (reverse: src[i] op dst[i]).
template <typename T, typename Op>
__global__ void reduce_into(T* __restrict__ dst, const T* __restrict__ src, long long n, int reverse) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long done = 0;
    if (aligned16(dst, src)) {
        const int width = 16 / sizeof(T);
        const long long vectors = n / width;
        Vec<T>* d = reinterpret_cast<Vec<T>*>(dst);
        const Vec<T>* s = reinterpret_cast<const Vec<T>*>(src);
        for (long long i = first; i < vectors; i += stride) {
            Vec<T> a = d[i], b = s[i];
            #pragma unroll
            for (int k = 0; k < width; ++k) a.v[k] = combine<T, Op>(a.v[k], b.v[k], reverse);
            d[i] = a;
        }
        done = vectors * width;
    }
    for (long long i = done + first; i < n; i += stride) dst[i] = combine<T, Op>(dst[i], src[i], reverse);
}

// dst[i] = D(src[i] * scale): the float32 -> float16 wire copy (and any plain cast).
template <typename S, typename D>
__global__ void convert_scaled(D* __restrict__ dst, const S* __restrict__ src, long long n, double scale) {
    const long long stride = (long long)blockDim.x * gridDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        typename Math<D>::type v = (typename Math<D>::type)(widen<S>(src[i]) * (typename Math<S>::type)scale);
        dst[i] = narrow<D>(v);
    }
}

// Copy one chunk of `length` elements from src to dst, times scale when `scaled`.
template <typename S, typename D>
__device__ __forceinline__ void copy_chunk(D* dst, const S* src, long long length, double scale, int scaled) {
    if (!scaled && sizeof(S) == sizeof(D) && aligned16(dst, src)) {
        const int width = 16 / sizeof(S);
        const long long vectors = length / width;
        uint4* d = reinterpret_cast<uint4*>(dst);
        const uint4* s = reinterpret_cast<const uint4*>(src);
        for (long long i = threadIdx.x; i < vectors; i += blockDim.x) d[i] = s[i];
        for (long long i = vectors * width + threadIdx.x; i < length; i += blockDim.x) dst[i] = *reinterpret_cast<const D*>(&src[i]);
        return;
    }
    for (long long i = threadIdx.x; i < length; i += blockDim.x) {
        if (scaled) {
            dst[i] = narrow<D>((typename Math<D>::type)(widen<S>(src[i]) * (typename Math<S>::type)scale));
        } else {
            dst[i] = narrow<D>((typename Math<D>::type)widen<S>(src[i]));
        }
    }
}

// Multi-array copy between many arrays and one flat bucket, in ONE launch.
// table (int64): pointers[n], bucket offsets[n], sizes[n], chunk_array[m], chunk_start[m].
// Each block takes chunks (grid-stride); a chunk lies inside one array, so its threads
// copy consecutive elements (coalesced, vectorised when aligned).
// to_bucket = 1: arrays -> bucket (pack); 0: bucket -> arrays, times scale (unpack).
template <typename S, typename D>
__global__ void copy_arrays(const long long* __restrict__ table, int n, int m, long long chunk,
                            void* bucket, int to_bucket, double scale, int scaled) {
    const long long* pointers = table;
    const long long* offsets = table + n;
    const long long* sizes = table + 2 * n;
    const long long* chunk_array = table + 3 * n;
    const long long* chunk_start = table + 3 * n + m;
    for (long long c = blockIdx.x; c < m; c += gridDim.x) {
        const long long a = chunk_array[c], start = chunk_start[c];
        const long long left = sizes[a] - start;
        const long long length = left < chunk ? left : chunk;
        if (to_bucket) {
            const S* src = reinterpret_cast<const S*>(pointers[a]) + start;
            D* dst = reinterpret_cast<D*>(bucket) + offsets[a] + start;
            copy_chunk<S, D>(dst, src, length, scale, scaled);
        } else {
            const S* src = reinterpret_cast<const S*>(bucket) + offsets[a] + start;
            D* dst = reinterpret_cast<D*>(pointers[a]) + start;
            copy_chunk<S, D>(dst, src, length, scale, scaled);
        }
    }
}

#ifdef COLLECTIVES_INSTANTIATE_ALL
// Explicit instantiations, so that a plain nvcc run (the tests) compiles every kernel.
#define REDUCE(T) \
    template __global__ void reduce_into<T, Sum>(T*, const T*, long long, int); \
    template __global__ void reduce_into<T, Prod>(T*, const T*, long long, int); \
    template __global__ void reduce_into<T, Max>(T*, const T*, long long, int); \
    template __global__ void reduce_into<T, Min>(T*, const T*, long long, int); \
    template __global__ void copy_arrays<T, T>(const long long*, int, int, long long, void*, int, double, int);
REDUCE(f16)
REDUCE(float)
REDUCE(double)
REDUCE(int)
REDUCE(long long)
template __global__ void convert_scaled<float, f16>(f16*, const float*, long long, double);
template __global__ void copy_arrays<f16, float>(const long long*, int, int, long long, void*, int, double, int);
#endif
