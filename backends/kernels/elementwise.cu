// Elementwise kernels for gpulayers (CupyOps): what CuPy would run as two or
// three kernels, in one pass. Grid-stride loops over n elements of
// C-contiguous arrays; the expressions round as backends/ops.py's do.

// dx = dy * (x > 0): the gradient of relu (NaN and inf in dy kept where x > 0, and times 0 elsewhere).
template <typename T>
__global__ void relu_bwd(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx, long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dx[i] = dy[i] * (x[i] > T(0) ? T(1) : T(0));
}

// Dropout from uniforms u in [0, 1): kept = u < keep; y = kept ? x / keep : 0.
template <typename T>
__global__ void dropout_fwd(const T* __restrict__ x, const T* __restrict__ u, T keep, T* __restrict__ y,
                            bool* __restrict__ kept, long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const bool k = u[i] < keep;
        kept[i] = k;
        y[i] = k ? x[i] / keep : T(0);
    }
}

// Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11):
// a counter-based generator. A draw is a pure function of (key, counter), so every element computes its own
// and no generator state is stored but a call counter.
struct philox4 {
    unsigned int x, y, z, w;
};

__device__ inline philox4 philox4x32_10(philox4 c, unsigned int k0, unsigned int k1)
{
    for (int round = 0; round < 10; ++round) {
        const unsigned long long p0 = 0xD2511F53ull * c.x, p1 = 0xCD9E8D57ull * c.z;
        c = philox4{(unsigned int)(p1 >> 32) ^ c.y ^ k0, (unsigned int)p1, (unsigned int)(p0 >> 32) ^ c.w ^ k1,
                    (unsigned int)p0};
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c;
}

// Uniform in [0, 1) for element i of call `call` of the stream keyed `key`: float from the top 24 bits of the
// first word, double from the top 53 of the first two (so every value is exact and 1 is never reached).
__device__ inline void philox_uniform(unsigned long long key, unsigned long long call, long long i, float& u)
{
    const philox4 r = philox4x32_10(philox4{(unsigned int)i, (unsigned int)((unsigned long long)i >> 32),
                                            (unsigned int)call, (unsigned int)(call >> 32)},
                                    (unsigned int)key, (unsigned int)(key >> 32));
    u = (float)(r.x >> 8) * 5.9604644775390625e-08f;  // 2**-24
}

__device__ inline void philox_uniform(unsigned long long key, unsigned long long call, long long i, double& u)
{
    const philox4 r = philox4x32_10(philox4{(unsigned int)i, (unsigned int)((unsigned long long)i >> 32),
                                            (unsigned int)call, (unsigned int)(call >> 32)},
                                    (unsigned int)key, (unsigned int)(key >> 32));
    u = (double)((((unsigned long long)r.x << 32) | r.y) >> 11) * 1.1102230246251565e-16;  // 2**-53
}

// A stream's state is two words on the device: state[0] counts its launches, state[1] tallies the blocks of
// the running one. Every thread reads state[0] first; the last block to finish adds 1 to it, so the next
// launch draws fresh numbers with no host involvement (a captured CUDA graph advances it too). Must be
// reached by every thread of every block.
__device__ inline void philox_advance(unsigned long long* state)
{
    __syncthreads();  // every thread of this block has read state[0]
    if (threadIdx.x == 0) {
        __threadfence();
        if (atomicAdd(&state[1], 1ull) == (unsigned long long)gridDim.x - 1ull) {
            state[0] += 1ull;
            state[1] = 0ull;
            __threadfence();
        }
    }
}

// n uniforms in [0, 1) from the stream (key, state); advances the stream.
template <typename T>
__global__ void philox_fill(T* __restrict__ u, long long n, unsigned long long key, unsigned long long* state)
{
    const unsigned long long call = state[0];
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        philox_uniform(key, call, i, u[i]);
    philox_advance(state);
}

// Dropout drawing its own uniforms: dropout_fwd with u[i] the stream's philox_fill value for element i,
// never written to memory. Advances the stream.
template <typename T>
__global__ void dropout_philox(const T* __restrict__ x, T keep, T* __restrict__ y, bool* __restrict__ kept,
                               long long n, unsigned long long key, unsigned long long* state)
{
    const unsigned long long call = state[0];
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        T u;
        philox_uniform(key, call, i, u);
        const bool k = u < keep;
        kept[i] = k;
        y[i] = k ? x[i] / keep : T(0);
    }
    philox_advance(state);
}

// The gradient of dropout_fwd: dx = kept ? dy / keep : 0.
template <typename T>
__global__ void dropout_bwd(const T* __restrict__ dy, const bool* __restrict__ kept, T keep, T* __restrict__ dx,
                            long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        dx[i] = kept[i] ? dy[i] / keep : T(0);
}

// y = max(z + bias[ch], 0), numpy's maximum (a NaN passes, -0 becomes +0), for z seen as (outer, c, inner);
// has_bias == 0: y = max(z, 0) (bias unread).
template <typename T>
__global__ void bias_relu(const T* __restrict__ z, const T* __restrict__ bias, T* __restrict__ y, long long n,
                          int c, int inner, int has_bias)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        T v = z[i];
        if (has_bias) {
            int ch, rest;
            index_divmod(index_divmod(i, inner, rest), c, ch);
            v = v + bias[ch];
        }
        y[i] = v > T(0) || v != v ? v : T(0);
    }
}

// A mean metric's update and result in one launch: out = total + (double)value * weight, and
// mean = out / count (0 where count is 0: Keras's divide_no_nan). All 0-d; one thread does it.
template <typename T>
__global__ void accumulate(const double* __restrict__ total, const T* __restrict__ value, double weight,
                           double count, double* __restrict__ out, double* __restrict__ mean)
{
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        const double t = total[0] + (double)value[0] * weight;
        out[0] = t;
        mean[0] = count == 0.0 ? 0.0 : t / count;
    }
}
