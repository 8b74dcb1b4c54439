// Small kernels of the harness's own, used by test_hostemu_selftest.py to
// check the emulator itself (barriers, races, divergence, warp collectives).

template <typename T>
__global__ void block_sum(const T* __restrict__ x, T* __restrict__ out, int n) {
    __shared__ T buf[256];
    const int t = threadIdx.x;
    T acc = 0;
    for (int i = blockIdx.x * blockDim.x + t; i < n; i += blockDim.x * gridDim.x) acc += x[i];
    buf[t] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) buf[t] += buf[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = buf[0];
}

// Same reduction over dynamic shared memory.
template <typename T>
__global__ void block_sum_dyn(const T* __restrict__ x, T* __restrict__ out, int n) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* buf = reinterpret_cast<T*>(smem_raw);
    const int t = threadIdx.x;
    T acc = 0;
    for (int i = blockIdx.x * blockDim.x + t; i < n; i += blockDim.x * gridDim.x) acc += x[i];
    buf[t] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) buf[t] += buf[t + s];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = buf[0];
}

// Rotates each block's slice by one through shared memory.
extern "C" __global__ void rotate_ok(const float* x, float* y) {
    __shared__ float s[256];
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    s[t] = x[i];
    __syncthreads();
    y[i] = s[(t + 1) % blockDim.x];
}

// Shifts each block's slice by one (thread 0 keeps its own value).
extern "C" __global__ void shift_ok(const float* x, float* y) {
    __shared__ float s[256];
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    s[t] = x[i];
    __syncthreads();
    y[i] = t > 0 ? s[t - 1] : x[i];
}

// Planted bug: the same without the barrier. Running the threads in index
// order happens to give the right answer; the reversed order exposes it.
extern "C" __global__ void shift_racy(const float* x, float* y) {
    __shared__ float s[256];
    const unsigned t = threadIdx.x, i = blockIdx.x * blockDim.x + t;
    s[t] = x[i];
    y[i] = t > 0 ? s[t - 1] : x[i];
}

// Planted bug: a barrier only half the block reaches.
extern "C" __global__ void barrier_half(float* y) {
    if (threadIdx.x < blockDim.x / 2) __syncthreads();
    y[threadIdx.x] = 1.0f;
}

// Planted bug: early return before a barrier.
extern "C" __global__ void early_return(const float* x, float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    __shared__ float s[256];
    s[threadIdx.x] = x[i];
    __syncthreads();
    y[i] = s[threadIdx.x];
}

// Planted bug: two different barriers (odd and even threads).
extern "C" __global__ void barrier_split(float* y) {
    if (threadIdx.x % 2) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    y[threadIdx.x] = 1.0f;
}

extern "C" __global__ void count_positive(const float* x, int* out) {
    const int c = __syncthreads_count(x[threadIdx.x] > 0.0f);
    const int any = __syncthreads_or(x[threadIdx.x] > 100.0f);
    const int all = __syncthreads_and(x[threadIdx.x] > -100.0f);
    if (threadIdx.x == 0) {
        out[0] = c;
        out[1] = any;
        out[2] = all;
    }
}

// Grid-stride loop over a 2-D launch: y = 2 x + 1.
template <typename T>
__global__ void axpb(const T* __restrict__ x, T* __restrict__ y, long long n) {
    const long long tid = (long long)(blockIdx.y * gridDim.x + blockIdx.x) * (blockDim.x * blockDim.y) +
                          threadIdx.y * blockDim.x + threadIdx.x;
    const long long stride = (long long)gridDim.x * gridDim.y * blockDim.x * blockDim.y;
    for (long long i = tid; i < n; i += stride) y[i] = T(2) * x[i] + T(1);
}

// Warp-shuffle reduction: out[w] = sum over warp w; lanes past the block
// end read the poison (NaN) unless guarded by the active lane count.
extern "C" __global__ void warp_sum(const float* x, float* out, int guarded) {
    const unsigned t = threadIdx.x, lane = t % 32;
    float v = x[blockIdx.x * blockDim.x + t];
    const unsigned lanes = min(32u, blockDim.x - t / 32 * 32);
    const unsigned mask = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
    for (int off = 16; off > 0; off >>= 1) {
        float o = __shfl_down_sync(mask, v, off);
        if (!guarded || lane + off < lanes) v += o;
    }
    const unsigned b = __ballot_sync(mask, v > 0.0f);
    const unsigned nwarps = (blockDim.x + 31) / 32;
    if (lane == 0) out[blockIdx.x * nwarps + t / 32] = v + 0.0f * (float)b;
}

extern "C" __global__ void shfl_xor_bcast(const int* x, int* y) {
    const unsigned t = threadIdx.x;
    int v = x[t];
    for (int m = 1; m < 32; m <<= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, m));
    y[t] = __shfl_sync(0xffffffffu, v, 3) + __shfl_up_sync(0xffffffffu, 0, 1, 8);
}

// Planted bug: writes one element past the end.
extern "C" __global__ void write_past_end(float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 1.0f;
}

// Planted bug: writes through a const pointer.
extern "C" __global__ void write_const(const float* x) {
    const_cast<float*>(x)[threadIdx.x] = 0.0f;
}

// Planted bug: writes past its dynamic shared memory.
extern "C" __global__ void smem_overrun(float* y) {
    extern __shared__ float dyn[];
    dyn[threadIdx.x] = 1.0f;
    __syncthreads();
    y[threadIdx.x] = dyn[threadIdx.x];
}

// Planted bug: reads one element past the end (caught under ASan).
extern "C" __global__ void read_past_end(const float* x, float* y, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i + 1];
}

// Planted bug: signed overflow (caught under UBSan).
extern "C" __global__ void int_overflow(const int* a, int* y) {
    y[threadIdx.x] = a[threadIdx.x] * a[threadIdx.x];
}

// Every C parameter type the harness maps.
extern "C" __global__ void all_types(double* out, const float* a, const double* b, const int* c, char ch,
                                     unsigned char uc, short sh, int i, unsigned int u, long l, long long ll,
                                     unsigned long long ull, float f, double d, bool flag, float4* v) {
    out[0] = a[0] + b[0] + c[0] + ch + uc + sh + i + u + (double)l + (double)ll + (double)ull + f + d + flag +
             v[0].x + v[0].w;
}

extern "C" __global__ void atomics(float* fsum, int* imax, unsigned long long* cnt, const float* x) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(fsum, x[i]);
    atomicMax(imax, (int)(x[i] * 1000.0f));
    atomicAdd(cnt, 1ull);
}

// Planted bug: never ends (the launch watchdog ends the process).
extern "C" __global__ void endless(int* flag) {
    while (*(volatile int*)flag == 0) {
    }
}
