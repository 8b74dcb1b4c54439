// Convolution data movement for gpulayers (CupyOps): im2col and col2im.
//
// The matrix products themselves go through cuBLAS (cupy.matmul):
//   forward          y2d  = col @ W2d               (M, K) @ (K, F)
//   backward-input   dcol = dy2d @ W2d.T, then col2im (gather, no atomics)
//   backward-kernel  dW2d = col.T @ dy2d
// with M = N*OH*OW rows (n, oy, ox) and K = KH*KW*C columns ordered (i, j, c):
// exactly a Keras kernel (KH, KW, C, F) reshaped to (K, F).
//
// Geometry (every kernel): output position o reads input position
//   r = o * stride + tap * dilation - pad_before
// and cells with r outside [0, size) are padding (zeros in col, nothing in col2im).
//
// Rules kept here (see backends/cuda_sources.py): grid-stride loops, correct for
// any grid and block size; 64-bit linear indices; no atomics, no barriers.
// Plain CUDA C++ that compiles with NVRTC and, through the project's host
// emulation header, with g++.

// im2col: col (N*OH*OW, KH*KW*C), C-contiguous, from x given by ELEMENT strides
// (xs_n, xs_h, xs_w, xs_c), so one kernel reads NHWC (contiguous) and NCHW (the
// strides of its NHWC-transposed view) without a copy.
// One thread per (row, channel) pair loops over the KH*KW taps: consecutive
// threads write consecutive channels, so writes are coalesced for each tap.
template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ col,
                       int n, int h, int w, int c,
                       long long xs_n, long long xs_h, long long xs_w, long long xs_c,
                       int kh, int kw, int sh, int sw, int dh, int dw,
                       int pad_top, int pad_left, int oh, int ow)
{
    const long long total = (long long)n * oh * ow * c;
    const long long kcols = (long long)kh * kw * c;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        int ch, ox, oy;
        const long long row = index_divmod(e, c, ch);
        const long long t = index_divmod(row, ow, ox);
        const long long b = index_divmod(t, oh, oy);
        const T* xb = x + b * xs_n + (long long)ch * xs_c;
        T* out = col + row * kcols + ch;
        const int y0 = oy * sh - pad_top;
        const int x0 = ox * sw - pad_left;
        for (int i = 0; i < kh; ++i) {
            const int iy = y0 + i * dh;
            const bool row_ok = iy >= 0 && iy < h;
            for (int j = 0; j < kw; ++j) {
                const int ix = x0 + j * dw;
                T v = T(0);
                if (row_ok && ix >= 0 && ix < w) {
                    v = xb[(long long)iy * xs_h + (long long)ix * xs_w];
                }
                out[(long long)(i * kw + j) * c] = v;
            }
        }
    }
}

// col2im as a GATHER: one thread per dx element sums, in tap order (i, j), the
// dcol entries that read it. dcol is (N*OH*OW, KH*KW*C) C-contiguous; dx is
// C-contiguous NHWC (channels_first == 0) or NCHW (channels_first != 0) and is
// fully written (elements no window reads get 0).
template <typename T>
__global__ void col2im(const T* __restrict__ dcol, T* __restrict__ dx,
                       int n, int h, int w, int c, int channels_first,
                       int kh, int kw, int sh, int sw, int dh, int dw,
                       int pad_top, int pad_left, int oh, int ow)
{
    const long long total = (long long)n * h * w * c;
    const long long kcols = (long long)kh * kw * c;
    const long long step = (long long)blockDim.x * gridDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        int ch, ix, iy;
        long long b;
        if (channels_first) {
            const long long t1 = index_divmod(e, w, ix);
            const long long t2 = index_divmod(t1, h, iy);
            b = index_divmod(t2, c, ch);
        } else {
            const long long t1 = index_divmod(e, c, ch);
            const long long t2 = index_divmod(t1, w, ix);
            b = index_divmod(t2, h, iy);
        }
        const T* base = dcol + b * oh * (long long)ow * kcols + ch;
        T sum = T(0);
        for (int i = 0; i < kh; ++i) {
            const int ty = iy + pad_top - i * dh;  // = oy * sh when tap i of output row oy reads iy
            if (ty < 0 || ty % sh != 0) continue;
            const int oy = ty / sh;
            if (oy >= oh) continue;
            for (int j = 0; j < kw; ++j) {
                const int tx = ix + pad_left - j * dw;
                if (tx < 0 || tx % sw != 0) continue;
                const int ox = tx / sw;
                if (ox >= ow) continue;
                sum += base[((long long)oy * ow + ox) * kcols + (long long)(i * kw + j) * c];
            }
        }
        dx[e] = sum;
    }
}
