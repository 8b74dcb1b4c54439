// Batch normalization kernels for gpulayers (CupyOps).
//
// x is C-contiguous and seen as (outer, c, inner): the normalised axis has c
// channels, `outer` is the product of the axes before it and `inner` of those
// after it. channels-last (NHWC, axis = -1) is inner == 1, i.e. a (rows, c)
// matrix; NCHW with axis 1 is outer = N, inner = H*W.
//
// Per-channel reductions run in two stages, deterministically (no atomics):
//   1. bn_partial_last (inner == 1) or bn_partial_mid (any inner): the reduction
//      range of each channel is cut into `nchunks` chunks; each block reduces one
//      (chunk, channel group) unit with a __shared__ tree and writes
//      part1/part2[k * c + ch] for chunk k.
//   2. bn_params_welford / bn_fin_bwd combine the nchunks partials per channel
//      and derive the per-channel factors.
// mode 0 (statistics, one pass): part1 = mean, part2 = sum (x - mean)^2 of the
//        chunk: Welford per thread, Chan's pairwise merge across threads and
//        chunks (as safe as a two-pass form, reading x once);
// mode 1 (backward): part1 = sum d, part2 = sum d * (x - mean), with d = dy, or
//        dy * (relu_y > 0) when a ReLU followed the normalization (masked).
// Given statistics (inference) go straight to bn_params.
// Then bn_apply (y = x*scale + shift) and bn_bwd_apply are elementwise.
//
// Formulas (backends/ops.py): rstd = 1 / sqrt(var + eps); inv = rstd * gamma
// (or rstd); shift = -mean * inv (+ beta). Backward (training): g = inv,
// c1 = -g * rstd * sum(dy*xhat) / m, c0 = -g * sum(dy) / m,
// dx = dy*g + (x - mean)*c1 + c0, dgamma = sum(dy*xhat), dbeta = sum(dy), with
// sum(dy*xhat) = sum(dy*(x-mean)) * rstd.
//
// Any grid size and any block size up to 1024 threads (1-D) work.

#define BN_MAX_BLOCK 1024

__device__ inline float bn_sqrt(float v) { return sqrtf(v); }
__device__ inline double bn_sqrt(double v) { return sqrt(v); }

// Tree-reduce s1 and s2 over `count` rows of a block viewed as (rows, width)
// with this thread at (row, col); all threads of the block call it.
template <typename T>
__device__ inline void bn_tree(T* s1, T* s2, int row, int col, int width, int count, bool active)
{
    for (int s = count; s > 1;) {
        const int half = (s + 1) >> 1;
        if (active && row < s - half) {
            const int a = row * width + col, b = (row + half) * width + col;
            s1[a] += s1[b];
            s2[a] += s2[b];
        }
        __syncthreads();
        s = half;
    }
}

// The gradient reaching the normalization at element i: dy, or, when a ReLU
// followed it (masked), dy * (relu_y > 0) as backends/ops.py's relu_backward
// computes it (a NaN dy stays NaN where the ReLU was off).
template <typename T>
__device__ inline T bn_grad(const T* __restrict__ dy, const T* __restrict__ relu_y, int masked, long long i)
{
    return masked ? dy[i] * (relu_y[i] > T(0) ? T(1) : T(0)) : dy[i];
}

// One more value in a running (count, mean, M2) (Welford).
template <typename T>
__device__ inline void bn_welford_push(T& n, T& mean, T& m2, T v)
{
    n += T(1);
    const T d = v - mean;
    mean += d / n;
    m2 += d * (v - mean);
}

// Merge (nb, mb, qb) into (na, ma, qa): Chan et al.'s pairwise update of count, mean and M2.
template <typename T>
__device__ inline void bn_welford_merge(T& na, T& ma, T& qa, T nb, T mb, T qb)
{
    if (nb == T(0)) return;
    const T n = na + nb;
    const T d = mb - ma;
    ma += d * (nb / n);
    qa += qb + d * d * (na * nb / n);
    na = n;
}

// bn_tree's layout and order with bn_welford_merge as the combination (s1 mean, s2 M2, s3 count).
template <typename T>
__device__ inline void bn_tree_welford(T* s1, T* s2, T* s3, int row, int col, int width, int count, bool active)
{
    for (int s = count; s > 1;) {
        const int half = (s + 1) >> 1;
        if (active && row < s - half) {
            const int a = row * width + col, b = (row + half) * width + col;
            bn_welford_merge(s3[a], s1[a], s2[a], s3[b], s1[b], s2[b]);
        }
        __syncthreads();
        s = half;
    }
}

// Partial sums for channels-last x, a (rows, c) matrix. The block is viewed as
// ny = blockDim.x / W rows of W = min(32, blockDim.x) lanes; lane l handles
// channel g*W + l of channel group g. Unit u = k * groups + g covers rows
// [k*per, (k+1)*per) of group g. dy and mean are read in mode 1 only (pass
// any valid array otherwise).
template <typename T>
__global__ void bn_partial_last(const T* __restrict__ x, const T* __restrict__ dy, const T* __restrict__ mean,
                                const T* __restrict__ relu_y, T* __restrict__ part1, T* __restrict__ part2,
                                long long rows, int c, int nchunks, int mode, int masked)
{
    __shared__ T s1[BN_MAX_BLOCK];
    __shared__ T s2[BN_MAX_BLOCK];
    __shared__ T s3[BN_MAX_BLOCK];
    const int width = blockDim.x < 32 ? blockDim.x : 32;
    const int ny = blockDim.x / width;
    const int lane = threadIdx.x % width;
    const int row = threadIdx.x / width;
    const bool active = row < ny;  // threads of a trailing partial row sit out
    const int groups = (c + width - 1) / width;
    const long long units = (long long)groups * nchunks;
    const long long per = (rows + nchunks - 1) / nchunks;
    for (long long u = blockIdx.x; u < units; u += gridDim.x) {
        const int g = (int)(u % groups);
        const long long k = u / groups;
        const int ch = g * width + lane;
        const long long r0 = k * per;
        const long long r1 = r0 + per < rows ? r0 + per : rows;
        T a1 = T(0), a2 = T(0), a3 = T(0);
        if (active && ch < c) {
            const T m = mode == 1 ? mean[ch] : T(0);
            for (long long r = r0 + row; r < r1; r += ny) {
                const T v = x[r * c + ch];
                if (mode == 0) {
                    bn_welford_push(a3, a1, a2, v);
                } else {
                    const T d = bn_grad(dy, relu_y, masked, r * c + ch);
                    a1 += d;
                    a2 += d * (v - m);
                }
            }
        }
        s1[threadIdx.x] = a1;
        s2[threadIdx.x] = a2;
        s3[threadIdx.x] = a3;
        __syncthreads();
        if (mode == 0)
            bn_tree_welford(s1, s2, s3, row, lane, width, ny, active);
        else
            bn_tree(s1, s2, row, lane, width, ny, active);
        if (row == 0 && ch < c) {
            part1[k * c + ch] = s1[lane];
            part2[k * c + ch] = s2[lane];
        }
        __syncthreads();  // s1/s2 are read above before the next unit overwrites them
    }
}

// Partial sums for x seen as (outer, c, inner), any inner >= 1. The
// outer*inner positions of a channel are cut into nchunks chunks of `per`
// positions; unit u = k * c + ch is reduced by one block, its threads taking
// consecutive positions (coalesced when inner is large).
template <typename T>
__global__ void bn_partial_mid(const T* __restrict__ x, const T* __restrict__ dy, const T* __restrict__ mean,
                               const T* __restrict__ relu_y, T* __restrict__ part1, T* __restrict__ part2,
                               long long outer, int c, int inner, int nchunks, int mode, int masked)
{
    __shared__ T s1[BN_MAX_BLOCK];
    __shared__ T s2[BN_MAX_BLOCK];
    __shared__ T s3[BN_MAX_BLOCK];
    const long long len = outer * inner;
    const long long units = (long long)c * nchunks;
    const long long per = (len + nchunks - 1) / nchunks;
    int step_i;  // blockDim.x = step_o * inner + step_i
    const long long step_o = index_divmod((long long)blockDim.x, inner, step_i);
    for (long long u = blockIdx.x; u < units; u += gridDim.x) {
        int ch;
        const long long k = index_divmod(u, c, ch);
        const long long q0 = k * per;
        const long long q1 = q0 + per < len ? q0 + per : len;
        const T m = mode == 1 ? mean[ch] : T(0);
        T a1 = T(0), a2 = T(0), a3 = T(0);
        long long q = q0 + threadIdx.x;
        if (q < q1) {
            int i;
            long long o = index_divmod(q, inner, i);
            for (; q < q1; q += blockDim.x) {
                const long long at = (o * c + ch) * inner + i;
                const T v = x[at];
                if (mode == 0) {
                    bn_welford_push(a3, a1, a2, v);
                } else {
                    const T d = bn_grad(dy, relu_y, masked, at);
                    a1 += d;
                    a2 += d * (v - m);
                }
                o += step_o;
                i += step_i;
                if (i >= inner) {
                    i -= inner;
                    ++o;
                }
            }
        }
        s1[threadIdx.x] = a1;
        s2[threadIdx.x] = a2;
        s3[threadIdx.x] = a3;
        __syncthreads();
        if (mode == 0)
            bn_tree_welford(s1, s2, s3, (int)threadIdx.x, 0, 1, (int)blockDim.x, true);
        else
            bn_tree(s1, s2, (int)threadIdx.x, 0, 1, (int)blockDim.x, true);
        if (threadIdx.x == 0) {
            part1[u] = s1[0];
            part2[u] = s2[0];
        }
        __syncthreads();
    }
}

// Per-channel factors from given statistics (inference): rstd = 1/sqrt(var + eps),
// scale = rstd*gamma (or rstd) and shift = -mean*scale (+ beta). gamma/beta are
// read only when has_gamma/has_beta.
template <typename T>
__global__ void bn_params(const T* __restrict__ var, const T* __restrict__ mean, const T* __restrict__ gamma,
                          const T* __restrict__ beta, int has_gamma, int has_beta, T eps, int c,
                          T* __restrict__ rstd, T* __restrict__ scale, T* __restrict__ shift)
{
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c; ch += blockDim.x * gridDim.x) {
        const T r = T(1) / bn_sqrt(var[ch] + eps);
        const T inv = has_gamma ? r * gamma[ch] : r;
        T sh = -mean[ch] * inv;
        if (has_beta) sh = sh + beta[ch];
        rstd[ch] = r;
        scale[ch] = inv;
        shift[ch] = sh;
    }
}

// Per-channel statistics and factors from the mode-0 partials, one block per
// channel: its threads merge chunks k = tid, tid + blockDim.x, ... (chunk k
// holds min(per, total - k*per) values, per = ceil(total / nchunks)) and then
// each other in a __shared__ tree. Writes mean, var = M2 / total (biased),
// rstd, scale and shift as bn_params does.
// With update_moving, also the layer's new moving statistics, out of place (the
// layer swaps them in only when the whole step succeeds):
// new = moving * momentum + batch * one_minus_momentum, for the mean and the variance.
template <typename T>
__global__ void bn_params_welford(const T* __restrict__ part_mean, const T* __restrict__ part_m2, int nchunks,
                                  long long total, const T* __restrict__ gamma, const T* __restrict__ beta,
                                  int has_gamma, int has_beta, T eps, int c, T* __restrict__ mean,
                                  T* __restrict__ var, T* __restrict__ rstd, T* __restrict__ scale,
                                  T* __restrict__ shift, const T* __restrict__ moving_mean,
                                  const T* __restrict__ moving_var, T momentum, T one_minus_momentum,
                                  int update_moving, T* __restrict__ new_moving_mean, T* __restrict__ new_moving_var)
{
    __shared__ T s1[BN_MAX_BLOCK];
    __shared__ T s2[BN_MAX_BLOCK];
    __shared__ T s3[BN_MAX_BLOCK];
    const long long per = (total + nchunks - 1) / nchunks;
    for (int ch = blockIdx.x; ch < c; ch += gridDim.x) {
        T n = T(0), m = T(0), q = T(0);
        for (int k = threadIdx.x; k < nchunks; k += blockDim.x) {
            const long long left = total - (long long)k * per;
            const long long nk = left < per ? (left > 0 ? left : 0) : per;
            bn_welford_merge(n, m, q, (T)nk, part_mean[(long long)k * c + ch], part_m2[(long long)k * c + ch]);
        }
        s1[threadIdx.x] = m;
        s2[threadIdx.x] = q;
        s3[threadIdx.x] = n;
        __syncthreads();
        bn_tree_welford(s1, s2, s3, (int)threadIdx.x, 0, 1, (int)blockDim.x, true);
        if (threadIdx.x == 0) {
            const T mu = s1[0];
            const T v = s2[0] / (T)total;
            const T r = T(1) / bn_sqrt(v + eps);
            const T inv = has_gamma ? r * gamma[ch] : r;
            T sh = -mu * inv;
            if (has_beta) sh = sh + beta[ch];
            mean[ch] = mu;
            var[ch] = v;
            rstd[ch] = r;
            scale[ch] = inv;
            shift[ch] = sh;
            if (update_moving) {
                new_moving_mean[ch] = moving_mean[ch] * momentum + mu * one_minus_momentum;
                new_moving_var[ch] = moving_var[ch] * momentum + v * one_minus_momentum;
            }
        }
        __syncthreads();
    }
}

// From the mode-1 partials: dbeta = sum dy, dgamma = sum dy*(x-mean) * rstd. With
// training != 0 also g = rstd*gamma (or rstd), c1 = -g*rstd*dgamma/div and
// c0 = -g*dbeta/div for bn_bwd_apply (g, c1, c0 untouched otherwise).
template <typename T>
__global__ void bn_fin_bwd(const T* __restrict__ part1, const T* __restrict__ part2, int nchunks, int c, long long div,
                           const T* __restrict__ rstd, const T* __restrict__ gamma, int has_gamma, int training,
                           T* __restrict__ dgamma, T* __restrict__ dbeta,
                           T* __restrict__ g, T* __restrict__ c1, T* __restrict__ c0)
{
    for (int ch = blockIdx.x * blockDim.x + threadIdx.x; ch < c; ch += blockDim.x * gridDim.x) {
        T sdy = T(0), sdc = T(0);
        for (int k = 0; k < nchunks; ++k) {
            sdy += part1[(long long)k * c + ch];
            sdc += part2[(long long)k * c + ch];
        }
        const T r = rstd[ch];
        const T sdx = sdc * r;
        dgamma[ch] = sdx;
        dbeta[ch] = sdy;
        if (training) {
            const T gg = has_gamma ? r * gamma[ch] : r;
            g[ch] = gg;
            c1[ch] = -gg * r * sdx / (T)div;
            c0[ch] = -gg * sdy / (T)div;
        }
    }
}

// Walks a grid-stride loop over an (outer, c, inner) array keeping the channel
// of the current element without a division per element.
struct BnChannelWalk {
    int i, ch, step_i, step_c;
    __device__ BnChannelWalk(long long e, long long step, int c, int inner)
    {
        const long long q = index_divmod(e, inner, i);
        index_divmod(q, c, ch);
        const long long sq = index_divmod(step, inner, step_i);
        index_divmod(sq, c, step_c);
    }
    __device__ void next(int c, int inner)
    {
        i += step_i;
        int carry = 0;
        if (i >= inner) {
            i -= inner;
            carry = 1;
        }
        ch += step_c + carry;
        if (ch >= c) ch -= c;
    }
};

// y = x*scale[ch] + shift[ch] (just x*scale[ch] when has_shift == 0; shift unread), then, with
// relu, max(y, 0) as numpy's maximum (a NaN passes, -0 becomes +0).
template <typename T>
__global__ void bn_apply(const T* __restrict__ x, const T* __restrict__ scale, const T* __restrict__ shift,
                         T* __restrict__ y, long long outer, int c, int inner, int has_shift, int relu)
{
    const long long total = outer * c * inner;
    const long long step = (long long)blockDim.x * gridDim.x;
    long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= total) return;
    BnChannelWalk walk(e, step, c, inner);
    for (; e < total; e += step) {
        const int ch = walk.ch;
        const T v = has_shift ? x[e] * scale[ch] + shift[ch] : x[e] * scale[ch];
        y[e] = !relu || v > T(0) || v != v ? v : T(0);
        walk.next(c, inner);
    }
}

// dx = d*g[ch] + (x - mean[ch])*c1[ch] + c0[ch], d = bn_grad(dy, relu_y, masked).
template <typename T>
__global__ void bn_bwd_apply(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ mean,
                             const T* __restrict__ g, const T* __restrict__ c1, const T* __restrict__ c0,
                             const T* __restrict__ relu_y, T* __restrict__ dx, long long outer, int c, int inner,
                             int masked)
{
    const long long total = outer * c * inner;
    const long long step = (long long)blockDim.x * gridDim.x;
    long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= total) return;
    BnChannelWalk walk(e, step, c, inner);
    for (; e < total; e += step) {
        const int ch = walk.ch;
        dx[e] = bn_grad(dy, relu_y, masked, e) * g[ch] + (x[e] - mean[ch]) * c1[ch] + c0[ch];
        walk.next(c, inner);
    }
}
