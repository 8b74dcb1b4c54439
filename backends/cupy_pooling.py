"""CupyOps' pooling wrappers: max, average, stochastic and global pooling on
backends/kernels/pool.cu."""


import collections

from backends.window_plans import out_size
from backends.cuda_args import I32 as _I32, i32 as _i32

__all__ = ["PoolingKernels"]

_PoolGeom = collections.namedtuple("_PoolGeom", "n h w c oh ow ph pw sh sw top left cf")


class PoolingKernels:
    """The pooling methods of :class:`backends.cupy_ops.CupyOps` (mixed into it; they use its launchers)."""

    # ---------------------------------------------------------------- pooling
    def _pool_geom(self, x_shape, pool_size, strides, pads, data_format):
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        ph, pw = (int(v) for v in pool_size)
        sh, sw = (int(v) for v in strides)
        top, bottom, left, right = (int(v) for v in pads)
        oh = out_size(h, ph, sh, 1, top + bottom)
        ow = out_size(w, pw, sw, 1, left + right)
        return _PoolGeom(n, h, w, c, oh, ow, ph, pw, sh, sw, top, left, data_format == "channels_first")

    @staticmethod
    def _pool_out_shape(g):
        return (g.n, g.c, g.oh, g.ow) if g.cf else (g.n, g.oh, g.ow, g.c)

    @staticmethod
    def _pool_in_shape(g):
        return (g.n, g.c, g.h, g.w) if g.cf else (g.n, g.h, g.w, g.c)

    @staticmethod
    def _pool_args(g):
        _i32(g.ph * g.pw, "pool cells")  # the kernels number window cells i * pw + j in an int
        return (
            _i32(g.n, "batch"), _i32(g.h, "height"), _i32(g.w, "width"), _i32(g.c, "channels"),
            _i32(1 if g.cf else 0, "channels_first"), _i32(g.oh, "output height"), _i32(g.ow, "output width"),
            _i32(g.ph, "pool height"), _i32(g.pw, "pool width"), _i32(g.sh, "stride"), _i32(g.sw, "stride"),
            _i32(g.top, "padding"), _i32(g.left, "padding"),
        )

    def _pool_input(self, x, op):
        x = self.asarray(x)
        dt = self._compute_dtype(x.dtype, op)
        return self._prep(x, dt), x.dtype, dt

    def _pool_grad(self, dy, x_shape, pool_size, strides, pads, data_format, op):
        """(dy C-contiguous in the compute dtype, its original dtype, compute dtype, geometry)."""
        dy, out_dtype, dt = self._pool_input(dy, op)
        g = self._pool_geom(tuple(int(v) for v in x_shape), pool_size, strides, pads, data_format)
        self._check_shape(op, "dy", dy, self._pool_out_shape(g))
        return dy, out_dtype, dt, g

    def _index(self, index, g, op, what):
        index = self.xp.ascontiguousarray(self.asarray(index), dtype=_I32)
        self._check_shape(op, what, index, self._pool_out_shape(g))
        return index

    def max_pool2d_forward(self, x, pool_size, strides, pads, data_format):
        op = "max_pool2d_forward"
        reduced = self._reduced_max_pool2d_forward(self.asarray(x), pool_size, strides, pads, data_format)
        if reduced is not None:  # huge window, strides or padding (see ops._axis_plan)
            return reduced
        x, out_dtype, dt = self._pool_input(x, op)
        g = self._pool_geom(x.shape, pool_size, strides, pads, data_format)
        y = self.xp.empty(self._pool_out_shape(g), dtype=dt)
        arg = self.xp.empty(y.shape, dtype=_I32)
        self._launch("pool", "max_pool_fwd", dt, y.size, (x, y, arg, *self._pool_args(g)))
        return y.astype(out_dtype, copy=False), arg

    def _route(self, dy, index, x_shape, pool_size, strides, pads, data_format, op="max_pool2d_backward"):
        dy, out_dtype, dt, g = self._pool_grad(dy, x_shape, pool_size, strides, pads, data_format, op)
        index = self._index(index, g, op, "index")
        dx = self.xp.empty(self._pool_in_shape(g), dtype=dt)
        self._launch("pool", "pool_route_bwd", dt, dx.size, (dy, index, dx, *self._pool_args(g)))
        return dx.astype(out_dtype, copy=False)

    def max_pool2d_backward(self, dy, argmax, x_shape, pool_size, strides, pads, data_format):
        reduced = self._reduced_route(
            self.max_pool2d_backward, dy, argmax, x_shape, pool_size, strides, pads, data_format
        )
        if reduced is not None:
            return reduced
        return self._route(dy, argmax, x_shape, pool_size, strides, pads, data_format, "max_pool2d_backward")

    def avg_pool2d_forward(self, x, pool_size, strides, pads, data_format):
        op = "avg_pool2d_forward"
        reduced = self._reduced_avg_pool2d_forward(self.asarray(x), pool_size, strides, pads, data_format)
        if reduced is not None:
            return reduced
        x, out_dtype, dt = self._pool_input(x, op)
        g = self._pool_geom(x.shape, pool_size, strides, pads, data_format)
        y = self.xp.empty(self._pool_out_shape(g), dtype=dt)
        self._launch("pool", "avg_pool_fwd", dt, y.size, (x, y, *self._pool_args(g)))
        return y.astype(out_dtype, copy=False)

    def avg_pool2d_backward(self, dy, x_shape, pool_size, strides, pads, data_format):
        op = "avg_pool2d_backward"
        reduced = self._reduced_avg_pool2d_backward(dy, x_shape, pool_size, strides, pads, data_format)
        if reduced is not None:
            return reduced
        dy, out_dtype, dt, g = self._pool_grad(dy, x_shape, pool_size, strides, pads, data_format, op)
        dx = self.xp.empty(self._pool_in_shape(g), dtype=dt)
        self._launch("pool", "avg_pool_bwd", dt, dx.size, (dy, dx, *self._pool_args(g)))
        return dx.astype(out_dtype, copy=False)

    def stochastic_pool2d_forward(self, x, uniforms, pool_size, strides, pads, data_format):
        op = "stochastic_pool2d_forward"
        reduced = self._reduced_stochastic_pool2d_forward(
            self.asarray(x), uniforms, pool_size, strides, pads, data_format
        )
        if reduced is not None:
            return reduced
        x, out_dtype, dt = self._pool_input(x, op)
        g = self._pool_geom(x.shape, pool_size, strides, pads, data_format)
        u = self.asarray(uniforms)
        self._check_shape(op, "uniforms", u, self._pool_out_shape(g))
        # Like the generic code, u is taken in x's dtype (then in the compute dtype).
        u = self.xp.ascontiguousarray(u.astype(out_dtype, copy=False), dtype=dt)
        y = self.xp.empty(self._pool_out_shape(g), dtype=dt)
        index = self.xp.empty(y.shape, dtype=_I32)
        self._launch("pool", "stoch_pool_fwd", dt, y.size, (x, u, y, index, *self._pool_args(g)))
        return y.astype(out_dtype, copy=False), index

    def stochastic_pool2d_backward(self, dy, index, x_shape, pool_size, strides, pads, data_format):
        reduced = self._reduced_route(
            self.stochastic_pool2d_backward, dy, index, x_shape, pool_size, strides, pads, data_format
        )
        if reduced is not None:
            return reduced
        return self._route(dy, index, x_shape, pool_size, strides, pads, data_format, "stochastic_pool2d_backward")

    def stochastic_pool2d_inference_forward(self, x, pool_size, strides, pads, data_format):
        op = "stochastic_pool2d_inference_forward"
        reduced = self._reduced_stochastic_pool2d_inference_forward(
            self.asarray(x), pool_size, strides, pads, data_format
        )
        if reduced is not None:
            return reduced
        x, out_dtype, dt = self._pool_input(x, op)
        g = self._pool_geom(x.shape, pool_size, strides, pads, data_format)
        y = self.xp.empty(self._pool_out_shape(g), dtype=dt)
        self._launch("pool", "stoch_pool_inf_fwd", dt, y.size, (x, y, *self._pool_args(g)))
        return y.astype(out_dtype, copy=False)

    def stochastic_pool2d_inference_backward(self, dy, x, pool_size, strides, pads, data_format):
        op = "stochastic_pool2d_inference_backward"
        reduced = self._reduced_stochastic_pool2d_inference_backward(
            dy, self.asarray(x), pool_size, strides, pads, data_format
        )
        if reduced is not None:
            return reduced
        x, out_dtype, dt = self._pool_input(x, op)
        dy, _, _, g = self._pool_grad(dy, x.shape, pool_size, strides, pads, data_format, op)
        dy = dy.astype(dt, copy=False)
        yw = self.xp.empty(dy.shape, dtype=dt)
        r = self.xp.empty(dy.shape, dtype=dt)
        args = self._pool_args(g)
        self._launch("pool", "stoch_pool_inf_stats", dt, dy.size, (x, dy, yw, r, *args))
        dx = self.xp.empty(x.shape, dtype=dt)
        self._launch("pool", "stoch_pool_inf_bwd", dt, dx.size, (x, yw, r, dx, *args))
        return dx.astype(out_dtype, copy=False)

    # --------------------------------------------------------- global pooling
    def _global_launch(self, x, y, arg, n, hw, c, cf, mode, dt):
        """Run the serial (thread per output) or block (block per output) global-pool kernel."""
        outputs = n * c
        args = (x, y, arg, _i32(n, "batch"), _i32(hw, "height*width"), _i32(c, "channels"), _i32(cf, "channels_first"), _i32(mode, "mode"))
        # A thread per output reads coalesced along channels (NHWC) and is the
        # better choice when there are enough outputs to fill the GPU.
        if not cf and outputs >= self._sm_count() * 512:
            self._launch("pool", "global_pool_fwd_serial", dt, outputs, args)
        else:
            block = 32
            while block < 256 and block < hw:
                block *= 2
            self._launch_blocks("pool", "global_pool_fwd_block", dt, outputs, args, block=block)

    def global_avg_pool2d_forward(self, x, data_format, keepdims):
        op = "global_avg_pool2d_forward"
        x, out_dtype, dt = self._pool_input(x, op)
        n, h, w, c = self._shape_nhwc(x.shape, data_format)
        if h * w == 0 or n * c == 0:
            return super().global_avg_pool2d_forward(x.astype(out_dtype, copy=False), data_format, keepdims)
        y = self.xp.empty((n, c), dtype=dt)
        cf = 1 if data_format == "channels_first" else 0
        unused = self.xp.empty((1,), dtype=_I32)  # argmax is not written in mode 0
        self._global_launch(x, y, unused, n, h * w, c, cf, 0, dt)
        return self._global_keep(y.astype(out_dtype, copy=False), data_format, keepdims)

    def global_avg_pool2d_backward(self, dy, x_shape, data_format, keepdims):
        op = "global_avg_pool2d_backward"
        dy, out_dtype, dt = self._pool_input(dy, op)
        x_shape = tuple(int(v) for v in x_shape)
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        if dy.size != n * c:
            raise ValueError(f"CupyOps.{op}: dy has shape {tuple(dy.shape)}, expected {n * c} values for x {x_shape}.")
        dx = self.xp.empty(x_shape, dtype=dt)
        cf = 1 if data_format == "channels_first" else 0
        args = (dy.reshape(n, c), dx, _i32(n, "batch"), _i32(h * w, "height*width"), _i32(c, "channels"), _i32(cf, "channels_first"))
        self._launch("pool", "global_avg_bwd", dt, dx.size, args)
        return dx.astype(out_dtype, copy=False)

    def global_max_pool2d_forward(self, x, data_format, keepdims):
        op = "global_max_pool2d_forward"
        x, out_dtype, dt = self._pool_input(x, op)
        n, h, w, c = self._shape_nhwc(x.shape, data_format)
        if h * w == 0 or n * c == 0:
            return super().global_max_pool2d_forward(x.astype(out_dtype, copy=False), data_format, keepdims)
        y = self.xp.empty((n, c), dtype=dt)
        arg = self.xp.empty((n, c), dtype=_I32)
        cf = 1 if data_format == "channels_first" else 0
        self._global_launch(x, y, arg, n, h * w, c, cf, 1, dt)
        return (
            self._global_keep(y.astype(out_dtype, copy=False), data_format, keepdims),
            self._global_keep(arg, data_format, keepdims),
        )

    def global_max_pool2d_backward(self, dy, argmax, x_shape, data_format, keepdims):
        op = "global_max_pool2d_backward"
        dy, out_dtype, dt = self._pool_input(dy, op)
        x_shape = tuple(int(v) for v in x_shape)
        n, h, w, c = self._shape_nhwc(x_shape, data_format)
        argmax = self.xp.ascontiguousarray(self.asarray(argmax), dtype=_I32)
        if dy.size != n * c or argmax.size != n * c:
            raise ValueError(
                f"CupyOps.{op}: dy {tuple(dy.shape)} and argmax {tuple(argmax.shape)} must hold {n * c} values for x {x_shape}."
            )
        dx = self.xp.empty(x_shape, dtype=dt)
        cf = 1 if data_format == "channels_first" else 0
        args = (
            dy.reshape(n, c), argmax.reshape(n, c), dx,
            _i32(n, "batch"), _i32(h * w, "height*width"), _i32(c, "channels"), _i32(cf, "channels_first"),
        )
        self._launch("pool", "global_max_bwd", dt, dx.size, args)
        return dx.astype(out_dtype, copy=False)
