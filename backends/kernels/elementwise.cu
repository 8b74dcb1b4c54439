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
