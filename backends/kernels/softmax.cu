// Softmax and sparse categorical cross-entropy over the last axis, for gpulayers (CupyOps).
//
// x is a C-contiguous (rows, cols) matrix, cols >= 1. The row kernels view a
// block as ny = blockDim.x / w rows of w = min(width, blockDim.x) lanes (the
// host picks width = the power of two >= cols, at most 32); lane l of a row
// reads columns l, l + w, ... and the lanes combine through a __shared__
// tree, so a row's result does not depend on the grid and every block size
// from 1 to 1024 works. Block b takes row groups b, b + gridDim.x, ...
//
// Formulas (gpulayers/ops/activations.py softmax, gpulayers/ops/crossentropy.py):
//   softmax:          y = exp(x - max(x)) / sum(exp(x - max(x)))
//   bias_softmax:     x += bias (in place), then softmax
//   sparse_xent_fwd:  from probabilities p and int64 labels k,
//                     value = -log(clip(p[k] / sum(p), lo, hi)); NaN for a k outside [0, cols)
//   sparse_xent_mean: the mean of those values, one launch (the last block adds the blocks' sums)
//   sparse_xent_bwd:  the fused gradient on the softmax's logits, dx = (p - onehot(k)) * (g[row] * scale)
//                     (elementwise, grid-stride)

#define SM_MAX_BLOCK 1024

__device__ inline float sm_exp(float v) { return expf(v); }
__device__ inline double sm_exp(double v) { return exp(v); }
__device__ inline float sm_log(float v) { return logf(v); }
__device__ inline double sm_log(double v) { return log(v); }
__device__ inline float sm_nan(float) { return __int_as_float(0x7fc00000); }
__device__ inline double sm_nan(double) { return __longlong_as_double(0x7ff8000000000000ll); }

// Combine s[row * w + lane] over the w lanes of each row into s[row * w]:
// the sum, or the max (NaN-propagating, as numpy's). Every thread of the block calls it.
template <typename T>
__device__ inline void sm_lane_tree(T* s, int row, int lane, int w, bool active, bool is_max)
{
    for (int n = w; n > 1;) {
        const int half = (n + 1) >> 1;
        if (active && lane < n - half) {
            const T a = s[row * w + lane], b = s[row * w + lane + half];
            s[row * w + lane] = is_max ? (b > a || b != b ? b : a) : a + b;
        }
        __syncthreads();
        n = half;
    }
}

// y = softmax(x) by rows. Every thread of the block calls it.
template <typename T>
__device__ inline void sm_softmax_rows(const T* __restrict__ x, T* __restrict__ y, long long rows, int cols, int width)
{
    __shared__ T s[SM_MAX_BLOCK];
    const int w = width < (int)blockDim.x ? width : (int)blockDim.x;
    const int ny = blockDim.x / w;
    const int lane = threadIdx.x % w;
    const int row = threadIdx.x / w;
    const bool active = row < ny;  // threads of a trailing partial row sit out
    const long long groups = (rows + ny - 1) / ny;
    for (long long u = blockIdx.x; u < groups; u += gridDim.x) {
        const long long r = u * ny + row;
        const bool live = active && r < rows;
        const T* xr = x + (live ? r : 0) * cols;
        T m = live ? xr[0] : T(0);
        if (live)
            for (int j = lane; j < cols; j += w) m = xr[j] > m || xr[j] != xr[j] ? xr[j] : m;
        s[threadIdx.x] = m;
        __syncthreads();
        sm_lane_tree(s, row, lane, w, active, true);
        m = active ? s[row * w] : T(0);
        __syncthreads();  // every lane has read the max before s is reused
        T sum = T(0);
        if (live)
            for (int j = lane; j < cols; j += w) sum += sm_exp(xr[j] - m);
        s[threadIdx.x] = sum;
        __syncthreads();
        sm_lane_tree(s, row, lane, w, active, false);
        sum = active ? s[row * w] : T(0);
        if (live)
            for (int j = lane; j < cols; j += w) y[r * cols + j] = sm_exp(xr[j] - m) / sum;
        __syncthreads();  // s is read above before the next row group overwrites it
    }
}

template <typename T>
__global__ void __launch_bounds__(SM_MAX_BLOCK) softmax_rows(const T* __restrict__ x, T* __restrict__ y, long long rows, int cols, int width)
{
    sm_softmax_rows(x, y, rows, cols, width);
}

// A Dense layer's bias and softmax in one launch: z += bias (in place: z is the layer's output, the logits) on
// the rows this block normalizes, then softmax_rows' pass over them (two phases, so each fits 64 registers).
template <typename T>
__global__ void __launch_bounds__(SM_MAX_BLOCK) bias_softmax_rows(T* __restrict__ z, const T* __restrict__ bias, T* __restrict__ y, long long rows, int cols, int width)
{
    const int w = width < (int)blockDim.x ? width : (int)blockDim.x;
    const int ny = blockDim.x / w;
    const int lane = threadIdx.x % w;
    const int row = threadIdx.x / w;
    const long long groups = (rows + ny - 1) / ny;
    for (long long u = blockIdx.x; u < groups; u += gridDim.x) {
        const long long r = u * ny + row;
        if (row < ny && r < rows)
            for (int j = lane; j < cols; j += w) z[r * cols + j] = z[r * cols + j] + bias[j];
    }
    __syncthreads();  // the block's rows are biased before any lane reads them
    sm_softmax_rows(z, y, rows, cols, width);
}

// The value of row r for lane 0 of its threads (0 for the other lanes and for rows past the end). Every
// thread of the block calls it; s is the block's scratch row.
template <typename T>
__device__ inline T sm_xent_value(const T* __restrict__ p, const long long* __restrict__ labels, T* s, long long r,
                                  int cols, int w, int lane, int row, bool active, bool live, T lo, T hi)
{
    T sum = T(0);
    if (live)
        for (int j = lane; j < cols; j += w) sum += p[r * cols + j];
    s[threadIdx.x] = sum;
    __syncthreads();
    sm_lane_tree(s, row, lane, w, active, false);
    T v = T(0);
    if (live && lane == 0) {
        const long long k = labels[r];
        if (k < 0 || k >= cols) {
            v = sm_nan(T(0));
        } else {
            const T q = p[r * cols + k] / s[row * w];
            const T qc = q < lo ? lo : (q > hi ? hi : q);  // a NaN q stays NaN, as numpy's clip
            v = -sm_log(qc);
        }
    }
    __syncthreads();  // s is read above before the next row group overwrites it
    return v;
}

template <typename T>
__global__ void sparse_xent_fwd(const T* __restrict__ p, const long long* __restrict__ labels,
                                T* __restrict__ values, long long rows, int cols, int width, T lo, T hi)
{
    __shared__ T s[SM_MAX_BLOCK];
    const int w = width < (int)blockDim.x ? width : (int)blockDim.x;
    const int ny = blockDim.x / w;
    const int lane = threadIdx.x % w;
    const int row = threadIdx.x / w;
    const bool active = row < ny;
    const long long groups = (rows + ny - 1) / ny;
    for (long long u = blockIdx.x; u < groups; u += gridDim.x) {
        const long long r = u * ny + row;
        const bool live = active && r < rows;
        const T v = sm_xent_value(p, labels, s, r, cols, w, lane, row, active, live, lo, hi);
        if (live && lane == 0)
            values[r] = v;
    }
}

// The sum of every thread's v over the block, in a fixed tree order (d: the block's scratch). Every thread calls
// it and gets the sum.
__device__ inline double sm_block_sum(double* d, double v)
{
    d[threadIdx.x] = v;
    __syncthreads();
    for (int n = blockDim.x; n > 1;) {
        const int half = (n + 1) >> 1;
        if ((int)threadIdx.x < n - half)
            d[threadIdx.x] += d[threadIdx.x + half];
        __syncthreads();
        n = half;
    }
    const double sum = d[0];
    __syncthreads();  // read before d is reused
    return sum;
}

// The mean of sparse_xent_fwd's values in one launch (Keras's sum / size): each block sums its rows' values
// in double into partial[blockIdx.x]; the last block to finish (counted in *done, which it resets to 0 for the
// next launch) adds the partials in a fixed order and writes mean[0]. Deterministic for a given grid and block.
template <typename T>
__global__ void sparse_xent_mean(const T* __restrict__ p, const long long* __restrict__ labels, T* __restrict__ mean,
                                 double* __restrict__ partial, unsigned int* __restrict__ done, long long rows, int cols,
                                 int width, T lo, T hi)
{
    __shared__ T s[SM_MAX_BLOCK];
    __shared__ double d[SM_MAX_BLOCK];
    __shared__ bool last;
    const int w = width < (int)blockDim.x ? width : (int)blockDim.x;
    const int ny = blockDim.x / w;
    const int lane = threadIdx.x % w;
    const int row = threadIdx.x / w;
    const bool active = row < ny;
    const long long groups = (rows + ny - 1) / ny;
    double acc = 0.0;
    for (long long u = blockIdx.x; u < groups; u += gridDim.x) {
        const long long r = u * ny + row;
        const bool live = active && r < rows;
        acc += (double)sm_xent_value(p, labels, s, r, cols, w, lane, row, active, live, lo, hi);
    }
    const double block_total = sm_block_sum(d, acc);
    if (threadIdx.x == 0) {
        partial[blockIdx.x] = block_total;
        __threadfence();  // the partial is visible before this block is counted
        last = atomicAdd(done, 1u) == gridDim.x - 1u;
    }
    __syncthreads();
    if (!last)
        return;
    __threadfence();
    double t = 0.0;
    for (int b = threadIdx.x; b < (int)gridDim.x; b += blockDim.x) t += partial[b];
    const double total = sm_block_sum(d, t);
    if (threadIdx.x == 0) {
        mean[0] = (T)(total / (double)rows);
        *done = 0u;
    }
}

// The row's gradient is g[r * g_stride] * scale (rounded to T first): g_stride 0 reads one value for every
// row, and scale is 1/rows for sparse_xent_mean's gradient (1 otherwise, exact).
template <typename T>
__global__ void sparse_xent_bwd(const T* __restrict__ p, const long long* __restrict__ labels,
                                const T* __restrict__ g, T* __restrict__ dx, long long rows, int cols,
                                long long g_stride, T scale)
{
    const long long n = rows * cols;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        int j;
        const long long r = index_divmod(i, cols, j);
        const T onehot = labels[r] == (long long)j ? T(1) : T(0);
        const T gr = g[r * g_stride] * scale;
        dx[i] = (p[i] - onehot) * gr;
    }
}

// Top-1 matches, one thread per row: out[r] = 1.0 where the index of the row's first largest score
// (a NaN counts as the largest, as numpy's argmax) equals labels[r], else 0.0.
template <typename T>
__global__ void top1_match(const T* __restrict__ scores, const long long* __restrict__ labels,
                           double* __restrict__ out, long long rows, int cols)
{
    for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += (long long)gridDim.x * blockDim.x) {
        const T* s = scores + r * cols;
        T best = s[0];
        int at = 0;
        for (int j = 1; j < cols && best == best; ++j) {
            if (s[j] > best || s[j] != s[j]) {
                best = s[j];
                at = j;
            }
        }
        out[r] = labels[r] == (long long)at ? 1.0 : 0.0;
    }
}
