// What every kernel in this folder shares: the float16 storage type, the element-wise
// operations, and the one block-level loop that moves a segment of elements fast.
//
// No #include anywhere: kernels/cuda.py pastes this file in place of its #include line and
// hands the result to NVRTC, which then needs no include path (NVRTC cannot always find
// cuda_fp16.h), and CuPy's compile cache, keyed by the source text, sees header changes.
#pragma once

// Kernels are templates over types and operations; each file ends with a macro,
// <KERNEL>_ENTRY(name, template arguments...), that defines the kernel of one instance as
// an extern "C" __global__ function of a plain name. kernels/cuda.py appends one such line
// per instance it launches to the text it compiles, and asks for kernels by those names:
// CuPy caches a module on disk (per source hash and GPU architecture) only when it is
// compiled without name_expressions, so no rank recompiles the kernels on every run.

// Every kernel is launched with THREADS threads per block (kernels/cuda.py reads it here).
constexpr int THREADS = 256;
// Bytes each thread has in flight per loop trip: four 16-byte vectors, or as many scalars.
// A memory-bound copy is limited by the loads in flight, so the scalar fallback keeps the
// same number of bytes in flight as the vector path.
constexpr int BYTES_IN_FLIGHT = 64;

// ---- float16, carried as its 16 raw bits ----------------------------------------------
// Converted with the PTX cvt instructions (round to nearest even, like NumPy), so no header
// is needed. Arithmetic on float16 happens in float32 and is rounded back once per
// operation, which is what NumPy does.
struct f16 { unsigned short bits; };

// ---- float32 operations that never flush to zero ----------------------------------------
// CuPy compiles every RawModule with -ftz=true appended after our options (NVRTC keeps the
// last), which turns plain float operators, __fadd_rn and friends into .ftz instructions
// that flush subnormal inputs and results to zero; NumPy never flushes. Inline PTX is
// emitted as written, so every float32 add, multiply, comparison and conversion goes
// through these (tests/test_kernels_build.py checks the PTX holds no .ftz at all).
// The #else branch is the same arithmetic in C++ for host builds (the CPU stand-in of
// tests/cupy_standin.py), which never flush either.
#if defined(__CUDA_ARCH__)
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
__device__ __forceinline__ float add_f32(float a, float b) {
    float r;
    asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float mul_f32(float a, float b) {
    float r;
    asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float double_to_f32(double d) {
    float r;
    asm("cvt.rn.f32.f64 %0, %1;" : "=f"(r) : "d"(d));
    return r;
}
// One comparison per macro: setp with the named IEEE comparison (lt, gt, eq: false when
// either is NaN; nan: true when either is), as 0/1.
#define KERNELS_SETP_F32(NAME, CMP)                                                      \
    __device__ __forceinline__ bool NAME(float a, float b) {                               \
        unsigned r;                                                                        \
        asm("{ .reg .pred p; setp." CMP ".f32 p, %1, %2; selp.u32 %0, 1, 0, p; }"         \
            : "=r"(r) : "f"(a), "f"(b));                                                   \
        return r != 0;                                                                     \
    }
KERNELS_SETP_F32(less_f32, "lt")
KERNELS_SETP_F32(greater_f32, "gt")
KERNELS_SETP_F32(equal_f32, "eq")
KERNELS_SETP_F32(unordered_f32, "nan")
#undef KERNELS_SETP_F32
#else
inline float f16_to_float(f16 h) { _Float16 v; __builtin_memcpy(&v, &h.bits, 2); return (float)v; }
inline f16 float_to_f16(float f) { _Float16 v = (_Float16)f; f16 h; __builtin_memcpy(&h.bits, &v, 2); return h; }
inline float add_f32(float a, float b) { return a + b; }
inline float mul_f32(float a, float b) { return a * b; }
inline float double_to_f32(double d) { return (float)d; }
inline bool less_f32(float a, float b) { return a < b; }
inline bool greater_f32(float a, float b) { return a > b; }
inline bool equal_f32(float a, float b) { return a == b; }
inline bool unordered_f32(float a, float b) { return a != a || b != b; }
#endif

// The same operations for every arithmetic type: float32 through the functions above,
// the others with the plain operators (ftz concerns float32 only).
template <typename T> __device__ __forceinline__ T add(T a, T b) { return a + b; }
template <> __device__ __forceinline__ float add<float>(float a, float b) { return add_f32(a, b); }
template <typename T> __device__ __forceinline__ T mul(T a, T b) { return a * b; }
template <> __device__ __forceinline__ float mul<float>(float a, float b) { return mul_f32(a, b); }
template <typename T> __device__ __forceinline__ bool less(T a, T b) { return a < b; }
template <> __device__ __forceinline__ bool less<float>(float a, float b) { return less_f32(a, b); }
template <typename T> __device__ __forceinline__ bool greater(T a, T b) { return a > b; }
template <> __device__ __forceinline__ bool greater<float>(float a, float b) { return greater_f32(a, b); }
template <typename T> __device__ __forceinline__ bool equal(T a, T b) { return a == b; }
template <> __device__ __forceinline__ bool equal<float>(float a, float b) { return equal_f32(a, b); }
template <typename T> __device__ __forceinline__ bool is_nan(T a) { return a != a; }
template <> __device__ __forceinline__ bool is_nan<float>(float a) { return unordered_f32(a, a); }
// double -> T for the scale factor (rounded to nearest, never flushed)
template <typename T> __device__ __forceinline__ T from_double(double d) { return (T)d; }
template <> __device__ __forceinline__ float from_double<float>(double d) { return double_to_f32(d); }

// Math<T>::type is the type arithmetic on T happens in; widen/narrow convert to and from it.
template <typename T> struct Math { typedef T type; };
template <> struct Math<f16> { typedef float type; };

template <typename T> __device__ __forceinline__ typename Math<T>::type widen(T v) { return v; }
template <> __device__ __forceinline__ float widen<f16>(f16 v) { return f16_to_float(v); }

template <typename T> __device__ __forceinline__ T narrow(typename Math<T>::type v) { return (T)v; }
template <> __device__ __forceinline__ f16 narrow<f16>(float v) { return float_to_f16(v); }

__device__ __forceinline__ long long min64(long long a, long long b) { return a < b ? a : b; }
__device__ __forceinline__ long long max64(long long a, long long b) { return a > b ? a : b; }

// ---- element-wise operations: out = op(old value of the destination, source value) ----
// reads_dst says whether the loop must load the destination first.

template <typename T> struct Copy {                     // bit-exact copy
    static constexpr bool reads_dst = false;
    __device__ explicit Copy(double) {}
    __device__ T operator()(T, T x) const { return x; }
};

template <typename S, typename D> struct Convert {      // plain cast, e.g. float16 -> float32
    static constexpr bool reads_dst = false;
    __device__ explicit Convert(double) {}
    __device__ D operator()(D, S x) const {
        return narrow<D>((typename Math<D>::type)widen<S>(x));
    }
};

// D(x * scale), the product taken in the source's arithmetic type (float32 for float16).
// The caller rounds `scale` to the type NumPy multiplies in, so the results match bitwise.
template <typename S, typename D> struct Scale {
    static constexpr bool reads_dst = false;
    typename Math<S>::type scale;
    __device__ explicit Scale(double s) : scale(from_double<typename Math<S>::type>(s)) {}
    __device__ D operator()(D, S x) const {
        return narrow<D>((typename Math<D>::type)mul(widen<S>(x), scale));
    }
};

// ---- 16-byte vectors ----------------------------------------------------------------------
template <typename T, int W> struct alignas(sizeof(T) * W) Vec { T v[W]; };

// Elements per vector for a source S and destination D: 16 bytes of the wider type.
template <typename S, typename D> struct Width {
    static constexpr int value = 16 / (sizeof(S) > sizeof(D) ? sizeof(S) : sizeof(D));
};

// How many elements from p to the next address aligned for a W-element vector of T
// (p itself is aligned to sizeof(T), as every CuPy array is).
template <typename T, int W> __device__ __forceinline__ int elements_to_boundary(const T* p) {
    const unsigned long long element = reinterpret_cast<unsigned long long>(p) / sizeof(T);
    return (int)((W - element % W) % W);
}

// ---- the block-level loops ------------------------------------------------------------------
// The calling block's threads apply e to elements [from, to): d[i] = e(d[i], s[i]).
// Each trip loads U elements per thread (coalesced: neighbouring threads, neighbouring
// elements) before storing any, so U loads are in flight per thread.
template <typename S, typename D, typename E>
__device__ __forceinline__ void block_scalars(D* __restrict__ d, const S* __restrict__ s,
                                              long long from, long long to, const E& e) {
    constexpr int bytes = sizeof(S) + (E::reads_dst ? sizeof(D) : 0);    // loaded per element
    constexpr int U = BYTES_IN_FLIGHT / bytes < 16 ? BYTES_IN_FLIGHT / bytes : 16;
    for (long long base = from + threadIdx.x; base < to; base += (long long)U * THREADS) {
        S x[U];
        D y[U];
        #pragma unroll
        for (int u = 0; u < U; ++u) {
            const long long i = base + (long long)u * THREADS;
            if (i < to) {
                x[u] = s[i];
                if (E::reads_dst) y[u] = d[i];
            }
        }
        #pragma unroll
        for (int u = 0; u < U; ++u) {
            const long long i = base + (long long)u * THREADS;
            if (i < to) d[i] = e(y[u], x[u]);
        }
    }
}

// The same over `count` W-element vectors; d and s must be vector-aligned.
template <typename S, typename D, typename E>
__device__ __forceinline__ void block_vectors(D* __restrict__ d, const S* __restrict__ s,
                                              long long count, const E& e) {
    constexpr int W = Width<S, D>::value;
    constexpr int U = BYTES_IN_FLIGHT / (E::reads_dst ? 32 : 16);      // vectors per trip
    typedef Vec<S, W> VS;
    typedef Vec<D, W> VD;
    const VS* vs = reinterpret_cast<const VS*>(s);
    VD* vd = reinterpret_cast<VD*>(d);
    for (long long base = threadIdx.x; base < count; base += (long long)U * THREADS) {
        VS x[U];
        VD y[U];
        #pragma unroll
        for (int u = 0; u < U; ++u) {
            const long long i = base + (long long)u * THREADS;
            if (i < count) {
                x[u] = vs[i];
                if (E::reads_dst) y[u] = vd[i];
            }
        }
        #pragma unroll
        for (int u = 0; u < U; ++u) {
            const long long i = base + (long long)u * THREADS;
            if (i < count) {
                VD out;
                #pragma unroll
                for (int k = 0; k < W; ++k) out.v[k] = e(y[u].v[k], x[u].v[k]);
                vd[i] = out;
            }
        }
    }
}

// Destination vector-aligned, source only element-aligned (their heads differ): each thread
// loads W consecutive source elements one by one and stores them as one 16-byte vector.
// The loads of a warp still cover whole cache lines, which the next loads of the same
// trip hit in L1, so this keeps most of the vector path's speed.
template <typename S, typename D, typename E>
__device__ __forceinline__ void block_vector_stores(D* __restrict__ d, const S* __restrict__ s,
                                                    long long count, const E& e) {
    constexpr int W = Width<S, D>::value;
    constexpr int U = BYTES_IN_FLIGHT / (E::reads_dst ? 32 : 16);      // vectors per trip
    typedef Vec<D, W> VD;
    VD* vd = reinterpret_cast<VD*>(d);
    for (long long base = threadIdx.x; base < count; base += (long long)U * THREADS) {
        S x[U][W];
        VD y[U];
        #pragma unroll
        for (int u = 0; u < U; ++u) {
            const long long i = base + (long long)u * THREADS;
            if (i < count) {
                #pragma unroll
                for (int k = 0; k < W; ++k) x[u][k] = s[i * W + k];
                if (E::reads_dst) y[u] = vd[i];
            }
        }
        #pragma unroll
        for (int u = 0; u < U; ++u) {
            const long long i = base + (long long)u * THREADS;
            if (i < count) {
                VD out;
                #pragma unroll
                for (int k = 0; k < W; ++k) out.v[k] = e(y[u].v[k], x[u][k]);
                vd[i] = out;
            }
        }
    }
}

// The host build (tests/cupy_standin.py) defines this to count the elements each path
// moves; on the GPU it is nothing.
#ifndef KERNELS_COUNT_PATH
#define KERNELS_COUNT_PATH(path, elements)
#endif

// One segment of n elements by the whole block: the h head elements before the
// destination's first vector boundary one by one, then whole vectors, then the tail.
// When the source reaches a boundary after the same h elements (any two CuPy allocations
// at equal element offsets modulo the vector width) both sides move as vectors;
// otherwise the destination is still written in vectors (block_vector_stores), so every
// array of a multi-array pack or unpack takes a vector path, whatever its offset.
template <typename S, typename D, typename E>
__device__ __forceinline__ void block_apply(D* __restrict__ d, const S* __restrict__ s,
                                            long long n, const E& e) {
    constexpr int W = Width<S, D>::value;
    const long long head = min64(elements_to_boundary<D, W>(d), n);
    const long long vectors = (n - head) / W;
    const bool both = head == elements_to_boundary<S, W>(s);
    if (vectors > 0 && both) block_vectors<S, D, E>(d + head, s + head, vectors, e);
    if (vectors > 0 && !both) block_vector_stores<S, D, E>(d + head, s + head, vectors, e);
    block_scalars<S, D, E>(d, s, 0, head, e);                   // before the first boundary
    block_scalars<S, D, E>(d, s, head + vectors * W, n, e);     // the tail
    KERNELS_COUNT_PATH(both ? 0 : 1, vectors * W);
    KERNELS_COUNT_PATH(2, n - vectors * W);
}
