// cuda_host.h -- the CUDA built-ins for compiling .cu kernels with g++ -std=c++20.
//
// Part of gpulayers' host-emulation harness (tests/kernels/hostemu.py). A .cu
// file meant for NVRTC compiles unchanged against this header; the launcher
// (hostemu_launcher.cpp, included after the kernel source) runs the kernels
// over a grid on the CPU:
//
//   * kernels without barriers run as plain loops over blocks and threads;
//   * kernels with __syncthreads / warp collectives run with one fiber per
//     CUDA thread, all fibers of a block on one OS thread (see the launcher).
//
// Mapping of the CUDA storage classes:
//   __shared__           -> thread_local. At block scope thread_local implies
//                           static, so every fiber of a block (same OS thread)
//                           sees the same array, and each OS worker has its own.
//   extern __shared__ T s[];  (dynamic shared memory) is rewritten by hostemu.py
//                           into `T* s = (T*)hostemu::dyn_smem();`, a per-worker
//                           buffer the launcher poisons before every block.
//
// Not emulated: inline PTX, mma/wgmma, cp.async, cooperative groups, textures.
#pragma once

#include <atomic>
#include <cmath>
#include <math.h>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <source_location>
#include <type_traits>
// Everything hostemu_launcher.cpp needs, included before the CUDA macros below
// (libstdc++ spells __attribute__((__noinline__)) itself).
#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(HOSTEMU_UCONTEXT) || !defined(__x86_64__)
#include <ucontext.h>
#endif

#define HOSTEMU 1
#ifndef __CUDACC__
#define __CUDACC__ 1
#endif
#ifndef __CUDACC_RTC__
#define __CUDACC_RTC__ 1
#endif

// ----------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ __attribute__((always_inline)) inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __maxnreg__(...)
#define __grid_constant__
#define __constant__
#define __managed__
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ thread_local
// g++ spells __restrict__ itself.

// ------------------------------------------------------------- vector types
struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

#define HOSTEMU_VEC2(T, N, A) \
    struct __attribute__((aligned(A))) N { T x, y; }; \
    inline N make_##N(T a, T b) { return N{a, b}; }
#define HOSTEMU_VEC3(T, N) \
    struct N { T x, y, z; }; \
    inline N make_##N(T a, T b, T c) { return N{a, b, c}; }
#define HOSTEMU_VEC4(T, N, A) \
    struct __attribute__((aligned(A))) N { T x, y, z, w; }; \
    inline N make_##N(T a, T b, T c, T d) { return N{a, b, c, d}; }
HOSTEMU_VEC2(float, float2, 8)
HOSTEMU_VEC3(float, float3)
HOSTEMU_VEC4(float, float4, 16)
HOSTEMU_VEC2(double, double2, 16)
HOSTEMU_VEC3(double, double3)
HOSTEMU_VEC4(double, double4, 16)
HOSTEMU_VEC2(int, int2, 8)
HOSTEMU_VEC3(int, int3)
HOSTEMU_VEC4(int, int4, 16)
HOSTEMU_VEC2(unsigned int, uint2, 8)
HOSTEMU_VEC4(unsigned int, uint4, 16)
HOSTEMU_VEC2(long long, longlong2, 16)
inline uint3 make_uint3(unsigned a, unsigned b, unsigned c) { return uint3{a, b, c}; }
#undef HOSTEMU_VEC2
#undef HOSTEMU_VEC3
#undef HOSTEMU_VEC4

// ------------------------------------------------ thread geometry (per fiber)
// thread_local per OS worker; the launcher sets threadIdx before it runs (or
// resumes) each emulated CUDA thread.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};
constexpr int warpSize = 32;

// ------------------------------------------ runtime hooks (hostemu_launcher.cpp)
namespace hostemu {
enum WarpOp : int { kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll, kSyncWarp };
enum BlockOp : int { kSync, kSyncCount, kSyncAnd, kSyncOr };
// All collectives go through these; in loop mode they fail the launch.
int block_sync(int op, int pred, const std::source_location& loc);
std::uint64_t warp_op(unsigned mask, int op, std::uint64_t bits, int param, int width, const std::source_location& loc);
unsigned active_mask(const std::source_location& loc);
void* dyn_smem();
[[noreturn]] void trap(const char* what, const std::source_location& loc);

template <class T>
inline std::uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp shuffle of a type over 8 bytes");
    std::uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T from_bits(std::uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}
}  // namespace hostemu

// ------------------------------------------------------------------ barriers
inline void __syncthreads(const std::source_location& loc = std::source_location::current()) {
    hostemu::block_sync(hostemu::kSync, 1, loc);
}
inline int __syncthreads_count(int pred, const std::source_location& loc = std::source_location::current()) {
    return hostemu::block_sync(hostemu::kSyncCount, pred, loc);
}
inline int __syncthreads_and(int pred, const std::source_location& loc = std::source_location::current()) {
    return hostemu::block_sync(hostemu::kSyncAnd, pred, loc);
}
inline int __syncthreads_or(int pred, const std::source_location& loc = std::source_location::current()) {
    return hostemu::block_sync(hostemu::kSyncOr, pred, loc);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const std::source_location& loc = std::source_location::current()) {
    hostemu::warp_op(mask, hostemu::kSyncWarp, 0, 0, 32, loc);
}
inline unsigned __activemask(const std::source_location& loc = std::source_location::current()) {
    return hostemu::active_mask(loc);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }
[[noreturn]] inline void __trap(const std::source_location& loc = std::source_location::current()) {
    hostemu::trap("__trap()", loc);
}

// ----------------------------------------------------------- warp collectives
template <class T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = warpSize,
                     const std::source_location& loc = std::source_location::current()) {
    return hostemu::from_bits<T>(hostemu::warp_op(mask, hostemu::kShflIdx, hostemu::to_bits(v), src, width, loc));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                        const std::source_location& loc = std::source_location::current()) {
    return hostemu::from_bits<T>(
        hostemu::warp_op(mask, hostemu::kShflUp, hostemu::to_bits(v), (int)delta, width, loc));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize,
                          const std::source_location& loc = std::source_location::current()) {
    return hostemu::from_bits<T>(
        hostemu::warp_op(mask, hostemu::kShflDown, hostemu::to_bits(v), (int)delta, width, loc));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize,
                         const std::source_location& loc = std::source_location::current()) {
    return hostemu::from_bits<T>(
        hostemu::warp_op(mask, hostemu::kShflXor, hostemu::to_bits(v), lane_mask, width, loc));
}
inline unsigned __ballot_sync(unsigned mask, int pred, const std::source_location& loc = std::source_location::current()) {
    return (unsigned)hostemu::warp_op(mask, hostemu::kBallot, pred != 0, 0, 32, loc);
}
inline int __any_sync(unsigned mask, int pred, const std::source_location& loc = std::source_location::current()) {
    return (int)hostemu::warp_op(mask, hostemu::kAny, pred != 0, 0, 32, loc);
}
inline int __all_sync(unsigned mask, int pred, const std::source_location& loc = std::source_location::current()) {
    return (int)hostemu::warp_op(mask, hostemu::kAll, pred != 0, 0, 32, loc);
}

// ------------------------------------------------------------------- atomics
// std::atomic_ref: correct when blocks run on several OS workers.
#define HOSTEMU_ATOMIC_RMW(NAME, T, EXPR)                        \
    inline T NAME(T* p, T v) {                                   \
        std::atomic_ref<T> r(*p);                                \
        T old = r.load();                                        \
        while (!r.compare_exchange_weak(old, (T)(EXPR))) {       \
        }                                                        \
        return old;                                              \
    }
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline unsigned atomicAdd(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_add(v); }
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    return std::atomic_ref<unsigned long long>(*p).fetch_add(v);
}
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v); }
inline double atomicAdd(double* p, double v) { return std::atomic_ref<double>(*p).fetch_add(v); }
inline int atomicSub(int* p, int v) { return std::atomic_ref<int>(*p).fetch_sub(v); }
inline unsigned atomicSub(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).fetch_sub(v); }
inline int atomicExch(int* p, int v) { return std::atomic_ref<int>(*p).exchange(v); }
inline unsigned atomicExch(unsigned* p, unsigned v) { return std::atomic_ref<unsigned>(*p).exchange(v); }
inline unsigned long long atomicExch(unsigned long long* p, unsigned long long v) {
    return std::atomic_ref<unsigned long long>(*p).exchange(v);
}
inline float atomicExch(float* p, float v) { return std::atomic_ref<float>(*p).exchange(v); }
HOSTEMU_ATOMIC_RMW(atomicMax, int, old > v ? old : v)
HOSTEMU_ATOMIC_RMW(atomicMax, unsigned, old > v ? old : v)
HOSTEMU_ATOMIC_RMW(atomicMax, long long, old > v ? old : v)
HOSTEMU_ATOMIC_RMW(atomicMax, unsigned long long, old > v ? old : v)
HOSTEMU_ATOMIC_RMW(atomicMin, int, old < v ? old : v)
HOSTEMU_ATOMIC_RMW(atomicMin, unsigned, old < v ? old : v)
HOSTEMU_ATOMIC_RMW(atomicMin, long long, old < v ? old : v)
HOSTEMU_ATOMIC_RMW(atomicMin, unsigned long long, old < v ? old : v)
HOSTEMU_ATOMIC_RMW(atomicAnd, int, old & v)
HOSTEMU_ATOMIC_RMW(atomicAnd, unsigned, old & v)
HOSTEMU_ATOMIC_RMW(atomicAnd, unsigned long long, old & v)
HOSTEMU_ATOMIC_RMW(atomicOr, int, old | v)
HOSTEMU_ATOMIC_RMW(atomicOr, unsigned, old | v)
HOSTEMU_ATOMIC_RMW(atomicOr, unsigned long long, old | v)
HOSTEMU_ATOMIC_RMW(atomicXor, int, old ^ v)
HOSTEMU_ATOMIC_RMW(atomicXor, unsigned, old ^ v)
HOSTEMU_ATOMIC_RMW(atomicXor, unsigned long long, old ^ v)
HOSTEMU_ATOMIC_RMW(atomicInc, unsigned, old >= v ? 0u : old + 1u)
HOSTEMU_ATOMIC_RMW(atomicDec, unsigned, (old == 0u || old > v) ? v : old - 1u)
#undef HOSTEMU_ATOMIC_RMW
template <class T>
inline T hostemu_cas(T* p, T compare, T val) {
    std::atomic_ref<T>(*p).compare_exchange_strong(compare, val);
    return compare;  // the old value either way
}
inline int atomicCAS(int* p, int c, int v) { return hostemu_cas(p, c, v); }
inline unsigned atomicCAS(unsigned* p, unsigned c, unsigned v) { return hostemu_cas(p, c, v); }
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long c, unsigned long long v) {
    return hostemu_cas(p, c, v);
}
inline unsigned short atomicCAS(unsigned short* p, unsigned short c, unsigned short v) { return hostemu_cas(p, c, v); }

// -------------------------------------------------------- min / max (CUDA's)
// CUDA declares min/max overloads for every arithmetic pair; the result type
// follows the usual conversions, and the floating versions are fminf/fmaxf
// (a NaN operand loses).
template <class A, class B, std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>, int> = 0>
inline std::common_type_t<A, B> min(A a, B b) {
    using T = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point_v<T>) return std::fmin((T)a, (T)b);
    else return (T)b < (T)a ? (T)b : (T)a;
}
template <class A, class B, std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>, int> = 0>
inline std::common_type_t<A, B> max(A a, B b) {
    using T = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point_v<T>) return std::fmax((T)a, (T)b);
    else return (T)a < (T)b ? (T)b : (T)a;
}

// ------------------------------------------------------------- math intrinsics
// The host does not flush denormals and does not contract FMAs (compiled
// with -ffp-contract=off): compare arithmetic with a tolerance.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / std::cbrt(x); }
inline double rcbrt(double x) { return 1.0 / std::cbrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline void __sincosf(float x, float* s, float* c) { *s = std::sin(x); *c = std::cos(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x != x ? 0.0f : x)); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __frsqrt_rn(float a) { return 1.0f / std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __drcp_rn(double a) { return 1.0 / a; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }

// ------------------------------------------------------ bit casts, conversions
inline float __int_as_float(int v) { float f; std::memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float v) { int i; std::memcpy(&i, &v, 4); return i; }
inline float __uint_as_float(unsigned v) { float f; std::memcpy(&f, &v, 4); return f; }
inline unsigned __float_as_uint(float v) { unsigned i; std::memcpy(&i, &v, 4); return i; }
inline double __longlong_as_double(long long v) { double d; std::memcpy(&d, &v, 8); return d; }
inline long long __double_as_longlong(double v) { long long i; std::memcpy(&i, &v, 8); return i; }
inline int __double2hiint(double v) { return (int)(__double_as_longlong(v) >> 32); }
inline int __double2loint(double v) { return (int)(__double_as_longlong(v) & 0xffffffffLL); }
inline double __hiloint2double(int hi, int lo) {
    return __longlong_as_double((long long)(((unsigned long long)(unsigned)hi << 32) | (unsigned)lo));
}
inline int __float2int_rn(float x) { return (int)std::nearbyint(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)std::floor(x); }
inline int __float2int_ru(float x) { return (int)std::ceil(x); }
inline unsigned __float2uint_rn(float x) { return (unsigned)std::nearbyint(x); }
inline unsigned __float2uint_rz(float x) { return (unsigned)x; }
inline long long __float2ll_rn(float x) { return (long long)std::nearbyint(x); }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline float __ll2float_rn(long long x) { return (float)x; }
inline double __int2double_rn(int x) { return (double)x; }
inline int __double2int_rn(double x) { return (int)std::nearbyint(x); }
inline int __double2int_rz(double x) { return (int)x; }
inline float __double2float_rn(double x) { return (float)x; }
inline long long __double2ll_rn(double x) { return (long long)std::nearbyint(x); }

// ---------------------------------------------------------- integer intrinsics
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline int __mul24(int a, int b) { return (int)((long long)((a << 8) >> 8) * ((b << 8) >> 8)); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline int __sad(int a, int b, unsigned c) { return (int)((a > b ? a - b : b - a) + c); }

// ------------------------------------------------------------- cached loads
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline T __ldcv(const T* p) { return *p; }
template <class T> inline void __stwb(T* p, T v) { *p = v; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }

// ---------------------------------------------------------------- timers
#if defined(__x86_64__)
inline long long clock64() { return (long long)__builtin_ia32_rdtsc(); }
#else
inline long long clock64() { return (long long)std::clock(); }
#endif
