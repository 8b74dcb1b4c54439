// Pooling kernels for gpulayers (CupyOps): max, average, stochastic, global.
//
// Layout: every image array is C-contiguous, NHWC when channels_first == 0 and
// NCHW otherwise; x/dx have spatial size (h, w), y/dy/argmax/index/uniforms
// have (oh, ow), all with n images of c channels.
// Window cell (i, j) of output (oy, ox) reads input (oy*sh + i - pad_top,
// ox*sw + j - pad_left); cells outside the input are padding, never read,
// never chosen and not counted. Cells are numbered row-major, k = i*pw + j.
//
// Semantics follow backends/ops.py exactly:
//   max: first maximum in window order; a NaN wins (the first NaN). argmax int32.
//   avg: divide by the number of real cells (Keras), at least 1.
//   stochastic (training): a = max(x, 0); pick the first cell with a > 0 whose
//     running sum of a reaches u * sum(a); y = a there; index -1 (y = 0) when
//     the window sums to 0.
//   stochastic (inference): sum(a^2) / sum(a), 0 where sum(a) == 0.
// Backward passes are GATHERS: one thread per input element visits the windows
// containing it, in window-cell order; no atomics.
// Global pooling: one output per (image, channel) over its h*w pixels;
// "serial" kernels use a thread per output (coalesced on NHWC), "block"
// kernels a block per output with a __shared__ tree reduction (for NCHW or few
// outputs). Any grid size and any block size up to 1024 threads work.

#define POOL_MAX_BLOCK 1024

// -inf without the INFINITY macro (NVRTC rejects it).
template <typename T>
__device__ inline T pool_neg_inf()
{
    return (T)__int_as_float(0xff800000);
}

// Split a linear index of an (n, hh, ww, cc) / (n, cc, hh, ww) array into
// (image, row, column, channel); returns the image.
__device__ inline long long pool_split(long long e, int hh, int ww, int cc, int cf,
                                       int& y, int& x, int& ch)
{
    if (cf) {
        const long long t1 = index_divmod(e, ww, x);
        const long long t2 = index_divmod(t1, hh, y);
        return index_divmod(t2, cc, ch);
    }
    const long long t1 = index_divmod(e, cc, ch);
    const long long t2 = index_divmod(t1, ww, x);
    return index_divmod(t2, hh, y);
}

// Linear offset of (b, y, x, ch) in such an array.
__device__ inline long long pool_offset(long long b, int y, int x, int ch, int hh, int ww, int cc, int cf)
{
    if (cf) return ((b * cc + ch) * hh + y) * (long long)ww + x;
    return ((b * hh + y) * (long long)ww + x) * cc + ch;
}

// The window cells [lo, hi) along one axis that fall inside the input, for a
// window of k cells starting at `start` (negative in the padding) on an axis of
// `len`: forward loops visit only these, so their work is bounded by the input
// however large the window (cells outside are padding: never read).
__device__ inline void pool_clip(int start, int k, int len, int& lo, int& hi)
{
    const long long s = start;
    const long long a = s < 0 ? -s : 0;
    const long long b = (long long)len - s;
    lo = (int)(a < k ? a : k);
    hi = (int)(b < lo ? lo : (b < k ? b : k));
}

// The outputs along one axis whose window holds input position p: lo..hi
// (none when lo > hi), those o with 0 <= o < out and 0 <= p + pad - o*s < k.
// Gathers visit o from hi down to lo, which is ascending window cell
// i = p + pad - o*s, the order of the forward passes; so their work is bounded
// by the windows that hold p, however large the window.
__device__ inline void pool_cover(int p, int pad, int s, int out, int k, int& lo, int& hi)
{
    int rem;
    const long long t = (long long)p + pad;  // >= 0: o*s <= t
    const long long q = index_divmod(t, s, rem);
    hi = (int)(q < out - 1 ? q : out - 1);
    const long long u = t - k + 1;  // o*s >= u: o >= ceil(u / s)
    lo = u > 0 ? (int)(index_divmod(u - 1, s, rem) + 1) : 0;
}

// ---------------------------------------------------------------- max pooling
template <typename T>
__global__ void max_pool_fwd(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ argmax,
                             int n, int h, int w, int c, int channels_first,
                             int oh, int ow, int ph, int pw, int sh, int sw, int pad_top, int pad_left)
{
    const long long total = (long long)n * oh * ow * c;
    const long long step = (long long)blockDim.x * gridDim.x;
    const long long rs = channels_first ? (long long)w : (long long)w * c;  // row stride in x
    const long long cs = channels_first ? 1 : c;                           // column stride in x
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        int oy, ox, ch;
        const long long b = pool_split(e, oh, ow, c, channels_first, oy, ox, ch);
        const T* xb = x + pool_offset(b, 0, 0, ch, h, w, c, channels_first);
        const int y0 = oy * sh - pad_top, x0 = ox * sw - pad_left;
        int i0, i1, j0, j1;
        pool_clip(y0, ph, h, i0, i1);
        pool_clip(x0, pw, w, j0, j1);
        T best = pool_neg_inf<T>();
        int bi = ph * pw - 1;  // what backends/ops.py gives a window of padding only
        bool found = false;
        for (int i = i0; i < i1; ++i) {
            const int iy = y0 + i;
            for (int j = j0; j < j1; ++j) {
                const int ix = x0 + j;
                const T v = xb[iy * rs + ix * cs];
                if (!found || v > best || (v != v && best == best)) {
                    best = v;
                    bi = i * pw + j;
                    found = true;
                }
            }
        }
        y[e] = best;
        argmax[e] = bi;
    }
}

// Gradient of max pooling and of training-mode stochastic pooling: each dy goes
// to the window cell named by index (int32, -1 = none). Gather per dx element.
template <typename T>
__global__ void pool_route_bwd(const T* __restrict__ dy, const int* __restrict__ index, T* __restrict__ dx,
                               int n, int h, int w, int c, int channels_first,
                               int oh, int ow, int ph, int pw, int sh, int sw, int pad_top, int pad_left)
{
    const long long total = (long long)n * h * w * c;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        int iy, ix, ch;
        const long long b = pool_split(e, h, w, c, channels_first, iy, ix, ch);
        T sum = T(0);
        int oy0, oy1, ox0, ox1;
        pool_cover(iy, pad_top, sh, oh, ph, oy0, oy1);
        pool_cover(ix, pad_left, sw, ow, pw, ox0, ox1);
        for (int oy = oy1; oy >= oy0; --oy) {
            const long long i = (long long)iy + pad_top - (long long)oy * sh;  // cell row i of output row oy is iy
            for (int ox = ox1; ox >= ox0; --ox) {
                const long long j = (long long)ix + pad_left - (long long)ox * sw;
                const long long o = pool_offset(b, oy, ox, ch, oh, ow, c, channels_first);
                if (index[o] == (int)(i * pw + j)) sum += dy[o];
            }
        }
        dx[e] = sum;
    }
}

// ------------------------------------------------------------ average pooling
// Real cells of the window starting at `start` (may be negative) of length k on an axis of size len.
__device__ inline int pool_axis_count(int start, int k, int len)
{
    const int lo = start > 0 ? start : 0;
    const int hi = start + k < len ? start + k : len;
    return hi > lo ? hi - lo : 0;
}

template <typename T>
__global__ void avg_pool_fwd(const T* __restrict__ x, T* __restrict__ y,
                             int n, int h, int w, int c, int channels_first,
                             int oh, int ow, int ph, int pw, int sh, int sw, int pad_top, int pad_left)
{
    const long long total = (long long)n * oh * ow * c;
    const long long step = (long long)blockDim.x * gridDim.x;
    const long long rs = channels_first ? (long long)w : (long long)w * c;
    const long long cs = channels_first ? 1 : c;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        int oy, ox, ch;
        const long long b = pool_split(e, oh, ow, c, channels_first, oy, ox, ch);
        const T* xb = x + pool_offset(b, 0, 0, ch, h, w, c, channels_first);
        const int y0 = oy * sh - pad_top, x0 = ox * sw - pad_left;
        int i0, i1, j0, j1;
        pool_clip(y0, ph, h, i0, i1);
        pool_clip(x0, pw, w, j0, j1);
        T sum = T(0);
        for (int i = i0; i < i1; ++i) {
            const int iy = y0 + i;
            for (int j = j0; j < j1; ++j) {
                const int ix = x0 + j;
                sum += xb[iy * rs + ix * cs];
            }
        }
        int count = pool_axis_count(y0, ph, h) * pool_axis_count(x0, pw, w);
        if (count < 1) count = 1;
        y[e] = sum / (T)count;
    }
}

template <typename T>
__global__ void avg_pool_bwd(const T* __restrict__ dy, T* __restrict__ dx,
                             int n, int h, int w, int c, int channels_first,
                             int oh, int ow, int ph, int pw, int sh, int sw, int pad_top, int pad_left)
{
    const long long total = (long long)n * h * w * c;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        int iy, ix, ch;
        const long long b = pool_split(e, h, w, c, channels_first, iy, ix, ch);
        T sum = T(0);
        int oy0, oy1, ox0, ox1;
        pool_cover(iy, pad_top, sh, oh, ph, oy0, oy1);
        pool_cover(ix, pad_left, sw, ow, pw, ox0, ox1);
        for (int oy = oy1; oy >= oy0; --oy) {
            const int cy = pool_axis_count(oy * sh - pad_top, ph, h);
            for (int ox = ox1; ox >= ox0; --ox) {
                int count = cy * pool_axis_count(ox * sw - pad_left, pw, w);
                if (count < 1) count = 1;
                sum += dy[pool_offset(b, oy, ox, ch, oh, ow, c, channels_first)] / (T)count;
            }
        }
        dx[e] = sum;
    }
}

// --------------------------------------------------------- stochastic pooling
// Training forward. u: uniforms in [0, 1), laid out like y.
template <typename T>
__global__ void stoch_pool_fwd(const T* __restrict__ x, const T* __restrict__ u,
                               T* __restrict__ y, int* __restrict__ index,
                               int n, int h, int w, int c, int channels_first,
                               int oh, int ow, int ph, int pw, int sh, int sw, int pad_top, int pad_left)
{
    const long long total = (long long)n * oh * ow * c;
    const long long step = (long long)blockDim.x * gridDim.x;
    const long long rs = channels_first ? (long long)w : (long long)w * c;
    const long long cs = channels_first ? 1 : c;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        int oy, ox, ch;
        const long long b = pool_split(e, oh, ow, c, channels_first, oy, ox, ch);
        const T* xb = x + pool_offset(b, 0, 0, ch, h, w, c, channels_first);
        const int y0 = oy * sh - pad_top, x0 = ox * sw - pad_left;
        int i0, i1, j0, j1;
        pool_clip(y0, ph, h, i0, i1);
        pool_clip(x0, pw, w, j0, j1);
        T sum = T(0);
        for (int i = i0; i < i1; ++i) {
            const int iy = y0 + i;
            for (int j = j0; j < j1; ++j) {
                const int ix = x0 + j;
                const T v = xb[iy * rs + ix * cs];
                sum += v > T(0) ? v : T(0);
            }
        }
        const T target = u[e] * sum;
        T running = T(0);
        T out = T(0);
        int pick = -1;
        for (int i = i0; i < i1; ++i) {
            const int iy = y0 + i;
            for (int j = j0; j < j1; ++j) {
                const int ix = x0 + j;
                const T xv = xb[iy * rs + ix * cs];
                const T v = xv > T(0) ? xv : T(0);
                running += v;
                if (pick < 0 && v > T(0) && running >= target) {
                    pick = i * pw + j;
                    out = v;
                }
            }
        }
        y[e] = out;
        index[e] = pick;
    }
}

// sum(a) and sum(a^2) over the window's cells inside the input, a = relu(x),
// in window order; the window starts at (y0, x0) of image-channel base xb.
template <typename T>
__device__ inline void relu_window_sums(const T* xb, int y0, int x0, int ph, int pw, int h, int w,
                                        long long rs, long long cs, T& s, T& q)
{
    int i0, i1, j0, j1;
    pool_clip(y0, ph, h, i0, i1);
    pool_clip(x0, pw, w, j0, j1);
    s = T(0);
    q = T(0);
    for (int i = i0; i < i1; ++i) {
        const int iy = y0 + i;
        for (int j = j0; j < j1; ++j) {
            const int ix = x0 + j;
            const T xv = xb[iy * rs + ix * cs];
            const T v = xv > T(0) ? xv : T(0);
            s += v;
            q += v * v;
        }
    }
}

// Inference forward: sum(a^2) / sum(a) per window (0 when sum(a) == 0).
template <typename T>
__global__ void stoch_pool_inf_fwd(const T* __restrict__ x, T* __restrict__ y,
                                   int n, int h, int w, int c, int channels_first,
                                   int oh, int ow, int ph, int pw, int sh, int sw, int pad_top, int pad_left)
{
    const long long total = (long long)n * oh * ow * c;
    const long long step = (long long)blockDim.x * gridDim.x;
    const long long rs = channels_first ? (long long)w : (long long)w * c;
    const long long cs = channels_first ? 1 : c;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        int oy, ox, ch;
        const long long b = pool_split(e, oh, ow, c, channels_first, oy, ox, ch);
        T s, q;
        relu_window_sums(x + pool_offset(b, 0, 0, ch, h, w, c, channels_first),
                         oy * sh - pad_top, ox * sw - pad_left, ph, pw, h, w, rs, cs, s, q);
        y[e] = q / (s == T(0) ? T(1) : s);
    }
}

// Inference backward, step 1: per window yw = sum(a^2) / S and r = dy / S with
// S = sum(a) (1 where it is 0). yw and r are laid out like dy.
template <typename T>
__global__ void stoch_pool_inf_stats(const T* __restrict__ x, const T* __restrict__ dy,
                                     T* __restrict__ yw, T* __restrict__ r,
                                     int n, int h, int w, int c, int channels_first,
                                     int oh, int ow, int ph, int pw, int sh, int sw, int pad_top, int pad_left)
{
    const long long total = (long long)n * oh * ow * c;
    const long long step = (long long)blockDim.x * gridDim.x;
    const long long rs = channels_first ? (long long)w : (long long)w * c;
    const long long cs = channels_first ? 1 : c;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        int oy, ox, ch;
        const long long b = pool_split(e, oh, ow, c, channels_first, oy, ox, ch);
        T s, q;
        relu_window_sums(x + pool_offset(b, 0, 0, ch, h, w, c, channels_first),
                         oy * sh - pad_top, ox * sw - pad_left, ph, pw, h, w, rs, cs, s, q);
        if (s == T(0)) s = T(1);
        yw[e] = q / s;
        r[e] = dy[e] / s;
    }
}

// Inference backward, step 2 (gather): dx = sum over windows of (2a - yw) * r, for a = x > 0; else 0.
template <typename T>
__global__ void stoch_pool_inf_bwd(const T* __restrict__ x, const T* __restrict__ yw, const T* __restrict__ r,
                                   T* __restrict__ dx,
                                   int n, int h, int w, int c, int channels_first,
                                   int oh, int ow, int ph, int pw, int sh, int sw, int pad_top, int pad_left)
{
    const long long total = (long long)n * h * w * c;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        const T v = x[e];
        T sum = T(0);
        if (v > T(0)) {
            int iy, ix, ch;
            const long long b = pool_split(e, h, w, c, channels_first, iy, ix, ch);
            const T v2 = v + v;
            int oy0, oy1, ox0, ox1;
            pool_cover(iy, pad_top, sh, oh, ph, oy0, oy1);
            pool_cover(ix, pad_left, sw, ow, pw, ox0, ox1);
            for (int oy = oy1; oy >= oy0; --oy) {
                for (int ox = ox1; ox >= ox0; --ox) {
                    const long long o = pool_offset(b, oy, ox, ch, oh, ow, c, channels_first);
                    sum += (v2 - yw[o]) * r[o];
                }
            }
        }
        dx[e] = sum;
    }
}

// ------------------------------------------------------------- global pooling
// Is (v, i) a better maximum than (bv, bi)? bi < 0 means "none yet". NaN beats
// numbers; ties (and NaN against NaN) go to the smaller index: first maximum.
template <typename T>
__device__ inline bool pool_better(T v, int i, T bv, int bi)
{
    if (bi < 0) return true;
    if (i < 0) return false;
    const bool vnan = v != v, bnan = bv != bv;
    if (vnan || bnan) return vnan && (!bnan || i < bi);
    if (v != bv) return v > bv;
    return i < bi;
}

// Element p (0 <= p < hw) of output o = b*c + ch.
__device__ inline long long pool_global_offset(long long o, int p, int hw, int c, int cf)
{
    if (cf) return o * hw + p;
    int ch;
    const long long b = index_divmod(o, c, ch);
    return (b * hw + p) * (long long)c + ch;
}

// mode 0: y = mean over the hw pixels (argmax untouched); mode 1: y = max, argmax = flat
// pixel index of the first maximum. x: (n, hw, c) (channels_first == 0) or (n, c, hw).
// y, argmax: (n, c). hw >= 1. One thread per output.
template <typename T>
__global__ void global_pool_fwd_serial(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ argmax,
                                       int n, int hw, int c, int channels_first, int mode)
{
    const long long total = (long long)n * c;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long o = (long long)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += step) {
        const T* xo = x + pool_global_offset(o, 0, hw, c, channels_first);
        const long long ps = channels_first ? 1 : c;
        if (mode == 0) {
            T sum = T(0);
            for (int p = 0; p < hw; ++p) sum += xo[p * ps];
            y[o] = sum / (T)hw;
        } else {
            T best = pool_neg_inf<T>();
            int bi = -1;
            for (int p = 0; p < hw; ++p) {
                const T v = xo[p * ps];
                if (pool_better(v, p, best, bi)) {
                    best = v;
                    bi = p;
                }
            }
            y[o] = best;
            argmax[o] = bi < 0 ? 0 : bi;
        }
    }
}

// Same results with one block per output and a __shared__ tree reduction.
template <typename T>
__global__ void global_pool_fwd_block(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ argmax,
                                      int n, int hw, int c, int channels_first, int mode)
{
    __shared__ T sval[POOL_MAX_BLOCK];
    __shared__ int sidx[POOL_MAX_BLOCK];
    const long long total = (long long)n * c;
    const int t = threadIdx.x;
    const int nt = blockDim.x;
    const long long ps = channels_first ? 1 : c;
    for (long long o = blockIdx.x; o < total; o += gridDim.x) {
        const T* xo = x + pool_global_offset(o, 0, hw, c, channels_first);
        T acc = mode == 0 ? T(0) : pool_neg_inf<T>();
        int ai = -1;
        for (int p = t; p < hw; p += nt) {
            const T v = xo[p * ps];
            if (mode == 0) {
                acc += v;
            } else if (pool_better(v, p, acc, ai)) {
                acc = v;
                ai = p;
            }
        }
        sval[t] = acc;
        sidx[t] = ai;
        __syncthreads();
        for (int s = nt; s > 1;) {
            const int half = (s + 1) >> 1;
            if (t < s - half) {
                const T v = sval[t + half];
                const int vi = sidx[t + half];
                if (mode == 0) {
                    sval[t] += v;
                } else if (pool_better(v, vi, sval[t], sidx[t])) {
                    sval[t] = v;
                    sidx[t] = vi;
                }
            }
            __syncthreads();
            s = half;
        }
        if (t == 0) {
            if (mode == 0) {
                y[o] = sval[0] / (T)hw;
            } else {
                y[o] = sval[0];
                argmax[o] = sidx[0] < 0 ? 0 : sidx[0];
            }
        }
        __syncthreads();  // sval[0] is read above before the next output overwrites it
    }
}

// dx = dy / hw broadcast over the pixels. dy: (n, c); dx: (n, hw, c) or (n, c, hw).
template <typename T>
__global__ void global_avg_bwd(const T* __restrict__ dy, T* __restrict__ dx,
                               int n, int hw, int c, int channels_first)
{
    const long long total = (long long)n * hw * c;
    const long long step = (long long)blockDim.x * gridDim.x;
    const T div = (T)hw;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        long long o;
        if (channels_first) {
            int p;
            o = index_divmod(e, hw, p);
        } else {
            int ch, p;
            const long long t1 = index_divmod(e, c, ch);
            o = index_divmod(t1, hw, p) * c + ch;
        }
        dx[e] = dy[o] / div;
    }
}

// dx = dy at the argmax pixel of each (image, channel), 0 elsewhere.
template <typename T>
__global__ void global_max_bwd(const T* __restrict__ dy, const int* __restrict__ argmax, T* __restrict__ dx,
                               int n, int hw, int c, int channels_first)
{
    const long long total = (long long)n * hw * c;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        long long o;
        int p;
        if (channels_first) {
            o = index_divmod(e, hw, p);
        } else {
            int ch;
            const long long t1 = index_divmod(e, c, ch);
            o = index_divmod(t1, hw, p) * c + ch;
        }
        dx[e] = argmax[o] == p ? dy[o] : T(0);
    }
}
