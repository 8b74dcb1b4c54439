"""CupyOps' batch-normalization wrappers on backends/kernels/batchnorm.cu: one-pass statistics, the
fused ReLU, the moving statistics."""


from backends.cuda_args import F32 as _F32, F64 as _F64, i32 as _i32, i64 as _i64, prod as _prod

__all__ = ["BatchNormKernels"]


class BatchNormKernels:
    """The batch-normalization methods of :class:`backends.cupy_ops.CupyOps` (mixed into it; they use its launchers)."""

    # ---------------------------------------------------- batch normalization
    _BN_CACHE_TAG = "cupy-batch-norm"

    def _bn_layout(self, shape, axis, op):
        ndim = len(shape)
        if not -ndim <= int(axis) < ndim:
            raise ValueError(f"CupyOps.{op}: axis {axis} is out of range for an input of rank {ndim}.")
        axis = int(axis) % ndim
        outer = _prod(shape[:axis])
        inner = _prod(shape[axis + 1 :])
        return axis, outer, int(shape[axis]), inner

    _BN_STATISTICS, _BN_BACKWARD = 0, 1  # batchnorm.cu's reduction modes

    def _bn_sums(self, mode, x, dy, mean, outer, c, inner, dt, relu_y=None):
        """Per-chunk channel reductions (see batchnorm.cu); ``relu_y``: the output of a ReLU that followed,
        masking ``dy``. Returns (part1, part2, nchunks)."""
        cupy = self.xp
        if outer * inner == 0:
            # Nothing to reduce, and bn_partial_mid divides by `inner`: zero partials.
            return cupy.zeros((1, c), dtype=dt), cupy.zeros((1, c), dtype=dt), 1
        target = self._sm_count() * 8  # work units: about one full wave of 256-thread blocks
        if inner == 1:
            groups = -(-c // 32)
            nchunks = max(1, min(-(-outer // 256), target // groups))
            units = groups * nchunks
        else:
            nchunks = max(1, min(-(-(outer * inner) // 2048), target // c))
            units = c * nchunks
        part1, part2 = cupy.empty((nchunks, c), dtype=dt), cupy.empty((nchunks, c), dtype=dt)
        dy = x if dy is None else dy  # dy and mean are read in the backward mode only
        mean = x if mean is None else mean
        arrays = (x, dy, mean, x if relu_y is None else relu_y, part1, part2)
        masked = _i32(relu_y is not None, "masked")
        if inner == 1:
            args = arrays + (_i64(outer), _i32(c, "channels"), _i32(nchunks, "chunks"), _i32(mode, "mode"), masked)
            self._launch_blocks("batchnorm", "bn_partial_last", dt, units, args)
        else:
            args = arrays + (
                _i64(outer), _i32(c, "channels"), _i32(inner, "inner size"), _i32(nchunks, "chunks"),
                _i32(mode, "mode"), masked,
            )
            self._launch_blocks("batchnorm", "bn_partial_mid", dt, units, args)
        return part1, part2, nchunks

    def _bn_vec(self, v, dtype):
        return None if v is None else self.xp.ascontiguousarray(self.asarray(v).reshape(-1), dtype=dtype)

    def _bn_flags(self, gamma, beta, mean, epsilon, c, dt):
        return (
            mean if gamma is None else gamma, mean if beta is None else beta,
            _i32(gamma is not None, "has_gamma"), _i32(beta is not None, "has_beta"), dt.type(epsilon),
            _i32(c, "channels"),
        )

    def _bn_params(self, var, mean, gamma, beta, epsilon, c, dt):
        """(rstd, scale, shift) from given statistics."""
        rstd, scale, shift = (self.xp.empty((c,), dtype=dt) for _ in range(3))
        args = (var, mean) + self._bn_flags(gamma, beta, mean, epsilon, c, dt) + (rstd, scale, shift)
        self._launch("batchnorm", "bn_params", dt, c, args)
        return rstd, scale, shift

    def _bn_statistics(self, x, gamma, beta, epsilon, outer, c, inner, dt, moving=None):
        """(mean, var, rstd, scale, shift, new moving mean, new moving var) of x's batch: one Welford pass and
        one merge per channel, which also folds the batch into ``moving`` = (mean, var, momentum) when given."""
        cupy = self.xp
        mean, var, rstd, scale, shift = (cupy.empty((c,), dtype=dt) for _ in range(5))
        part_mean, part_m2, k = self._bn_sums(self._BN_STATISTICS, x, None, None, outer, c, inner, dt)
        if moving is None:
            moving_args, new_mm, new_mv = (mean, mean, dt.type(0), dt.type(0), _i32(0, "update"), mean, mean), None, None
        else:
            mm, mv, momentum = moving
            new_mm, new_mv = cupy.empty((c,), dtype=dt), cupy.empty((c,), dtype=dt)
            moving_args = (mm, mv, dt.type(momentum), dt.type(1.0 - momentum), _i32(1, "update"), new_mm, new_mv)
        args = (part_mean, part_m2, _i32(k, "chunks"), _i64(outer * inner)) + \
            self._bn_flags(gamma, beta, part_mean, epsilon, c, dt) + (mean, var, rstd, scale, shift) + moving_args
        self._launch_blocks("batchnorm", "bn_params_welford", dt, c, args)
        return mean, var, rstd, scale, shift, new_mm, new_mv

    def _bn_apply(self, x, scale, shift, outer, c, inner, dt, relu=False):
        y = self.xp.empty(x.shape, dtype=dt)
        args = (
            x, scale, scale if shift is None else shift, y, _i64(outer), _i32(c, "channels"), _i32(inner, "inner size"),
            _i32(shift is not None, "has_shift"), _i32(relu, "relu"),
        )
        self._launch("batchnorm", "bn_apply", dt, x.size, args)
        return y

    def _bn_check_vec(self, op, name, v, c):
        if v is not None and v.size != c:
            raise ValueError(f"CupyOps.{op}: {name} has {v.size} values, expected {c} (one per channel).")

    def batch_norm_forward_training(self, x, gamma, beta, axis, epsilon):
        return self._bn_forward_training(x, gamma, beta, axis, epsilon)[:4]

    def batch_norm_training_step(self, x, gamma, beta, moving_mean, moving_var, axis, epsilon, momentum, relu=False):
        # One launch gives the statistics, the factors and the new moving statistics; the ReLU rides in
        # bn_apply, and its output, kept in the cache, masks the backward reductions.
        cupy = self.xp
        dt = getattr(x, "dtype", None)
        if dt not in (_F32, _F64) or any(
            not isinstance(v, cupy.ndarray) or v.dtype != dt or v.ndim != 1 for v in (moving_mean, moving_var)
        ):  # float16 (the moving statistics in float32), or host variables: the generic composition
            return super().batch_norm_training_step(x, gamma, beta, moving_mean, moving_var, axis, epsilon,
                                                    momentum, relu)
        moving = (cupy.ascontiguousarray(moving_mean), cupy.ascontiguousarray(moving_var), momentum)
        y, _, _, cache, new_mm, new_mv = self._bn_forward_training(x, gamma, beta, axis, epsilon, relu, moving)
        if new_mm is None:  # an empty batch (or no channels): nothing to fold in
            new_mm, new_mv = moving_mean, moving_var
        return y, new_mm, new_mv, (None, cache)

    def _bn_forward_training(self, x, gamma, beta, axis, epsilon, relu=False, moving=None):
        """(y, mean, var, cache, new moving mean, new moving var); the moving ones None unless folded in."""
        cupy = self.xp
        op = "batch_norm_forward_training"
        x = self.asarray(x)
        out_dtype = x.dtype
        dt = self._compute_dtype(out_dtype, op)  # float16 statistics run in float32, as in Keras
        x = self._prep(x, dt)
        axis, outer, c, inner = self._bn_layout(x.shape, axis, op)
        gamma, beta = self._bn_vec(gamma, dt), self._bn_vec(beta, dt)
        self._bn_check_vec(op, "gamma", gamma, c)
        self._bn_check_vec(op, "beta", beta, c)
        m = outer * inner
        div = max(m, 1)  # an empty batch gives mean 0 and var 0 instead of NaN
        if c == 0:
            empty = cupy.empty((0,), dtype=out_dtype)
            cache = (self._BN_CACHE_TAG, x, empty.astype(dt), empty.astype(dt), gamma, beta is not None, axis, div,
                     out_dtype, (outer, c, inner), None)
            return x.astype(out_dtype, copy=False), empty, empty, cache, None, None
        new_mm = new_mv = None
        if m == 0:  # an empty batch: statistics 0, as NumpyOps gives
            mean, var = cupy.zeros((c,), dtype=dt), cupy.zeros((c,), dtype=dt)
            rstd, scale, shift = self._bn_params(var, mean, gamma, beta, epsilon, c, dt)
        else:
            if moving is not None:
                for name, v in (("moving_mean", moving[0]), ("moving_var", moving[1])):
                    self._bn_check_vec(op, name, v, c)
            mean, var, rstd, scale, shift, new_mm, new_mv = self._bn_statistics(
                x, gamma, beta, epsilon, outer, c, inner, dt, moving
            )
        y = self._bn_apply(x, scale, shift, outer, c, inner, dt, relu=relu)
        cache = (self._BN_CACHE_TAG, x, mean, rstd, gamma, beta is not None, axis, div, out_dtype, (outer, c, inner),
                 y if relu else None)
        return (
            y.astype(out_dtype, copy=False),
            mean.astype(out_dtype, copy=False),
            var.astype(out_dtype, copy=False),
            cache,
            new_mm,
            new_mv,
        )

    def batch_norm_backward_training(self, dy, cache):
        cupy = self.xp
        op = "batch_norm_backward_training"
        if not (isinstance(cache, tuple) and cache and isinstance(cache[0], str) and cache[0] == self._BN_CACHE_TAG):
            return super().batch_norm_backward_training(dy, cache)  # a cache made by the generic code
        _, x, mean, rstd, gamma, has_beta, axis, div, out_dtype, (outer, c, inner), relu_y = cache
        dt = x.dtype
        dy = self.asarray(dy)
        self._check_shape(op, "dy", dy, x.shape)
        dy = cupy.ascontiguousarray(dy, dtype=dt)
        if c == 0:
            empty = cupy.empty((0,), dtype=out_dtype)
            return dy.astype(out_dtype, copy=False), (None if gamma is None else empty), (empty if has_beta else None)
        part1, part2, k = self._bn_sums(self._BN_BACKWARD, x, dy, mean, outer, c, inner, dt, relu_y)
        dgamma, dbeta, g, c1, c0 = (cupy.empty((c,), dtype=dt) for _ in range(5))
        args = (
            part1, part2, _i32(k, "chunks"), _i32(c, "channels"), _i64(div), rstd,
            rstd if gamma is None else gamma, _i32(gamma is not None, "has_gamma"), _i32(1, "training"),
            dgamma, dbeta, g, c1, c0,
        )
        self._launch("batchnorm", "bn_fin_bwd", dt, c, args)
        dx = cupy.empty(x.shape, dtype=dt)
        args = (
            dy, x, mean, g, c1, c0, x if relu_y is None else relu_y, dx, _i64(outer), _i32(c, "channels"),
            _i32(inner, "inner size"), _i32(relu_y is not None, "masked"),
        )
        self._launch("batchnorm", "bn_bwd_apply", dt, dx.size, args)
        return (
            dx.astype(out_dtype, copy=False),
            None if gamma is None else dgamma.astype(out_dtype, copy=False),
            dbeta.astype(out_dtype, copy=False) if has_beta else None,
        )

    def batch_norm_forward_inference(self, x, gamma, beta, mean, var, axis, epsilon):
        op = "batch_norm_forward_inference"
        x = self.asarray(x)
        out_dtype = x.dtype
        dt = self._compute_dtype(out_dtype, op)
        x = self._prep(x, dt)
        axis, outer, c, inner = self._bn_layout(x.shape, axis, op)
        gamma, beta = self._bn_vec(gamma, dt), self._bn_vec(beta, dt)
        mean, var = self._bn_vec(mean, dt), self._bn_vec(var, dt)
        for name, v in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var)):
            self._bn_check_vec(op, name, v, c)
        if c == 0:
            return x.astype(out_dtype, copy=False)
        _, scale, shift = self._bn_params(var, mean, gamma, beta, epsilon, c, dt)
        return self._bn_apply(x, scale, shift, outer, c, inner, dt).astype(out_dtype, copy=False)

    def batch_norm_backward_inference(self, dy, x, gamma, mean, var, axis, epsilon, has_beta=True):
        cupy = self.xp
        op = "batch_norm_backward_inference"
        dy = self.asarray(dy)
        out_dtype = dy.dtype
        dt = self._compute_dtype(out_dtype, op)
        dy = self._prep(dy, dt)
        x = self._prep(x, dt)
        self._check_shape(op, "dy", dy, x.shape)
        axis, outer, c, inner = self._bn_layout(x.shape, axis, op)
        gamma = self._bn_vec(gamma, dt)
        mean, var = self._bn_vec(mean, dt), self._bn_vec(var, dt)
        for name, v in (("gamma", gamma), ("mean", mean), ("var", var)):
            self._bn_check_vec(op, name, v, c)
        if c == 0:
            empty = cupy.empty((0,), dtype=out_dtype)
            return dy.astype(out_dtype, copy=False), (None if gamma is None else empty), (empty if has_beta else None)
        rstd, scale, _ = self._bn_params(var, mean, gamma, None, epsilon, c, dt)
        dx = self._bn_apply(dy, scale, None, outer, c, inner, dt)
        dgamma = dbeta = None
        if gamma is not None or has_beta:
            part1, part2, k = self._bn_sums(self._BN_BACKWARD, x, dy, mean, outer, c, inner, dt)
            dgamma, dbeta = cupy.empty((c,), dtype=dt), cupy.empty((c,), dtype=dt)
            args = (
                part1, part2, _i32(k, "chunks"), _i32(c, "channels"), _i64(max(outer * inner, 1)), rstd,
                rstd if gamma is None else gamma, _i32(gamma is not None, "has_gamma"), _i32(0, "training"),
                dgamma, dbeta, dgamma, dgamma, dgamma,  # g, c1, c0 are not written when training == 0
            )
            self._launch("batchnorm", "bn_fin_bwd", dt, c, args)
            dgamma = None if gamma is None else dgamma.astype(out_dtype, copy=False)
            dbeta = dbeta.astype(out_dtype, copy=False) if has_beta else None
        return dx.astype(out_dtype, copy=False), dgamma, dbeta
