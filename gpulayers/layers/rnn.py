"""Recurrent layers: LSTM (Keras 3's ``keras.layers.LSTM``) and its one-step ``LSTMCell``.

An ``LSTM`` holds an ``LSTMCell`` (``layer.cell``) with Keras's three weights:
``kernel`` ``(input_dim, 4 * units)``, ``recurrent_kernel`` ``(units, 4 *
units)`` and ``bias`` ``(4 * units,)``, the gates in Keras's order (input,
forget, cell, output). With the default activations (tanh and sigmoid) the
whole sequence runs as one recorded node, computed as Keras's non-cuDNN path
does it: the input projections of all steps in one matmul (plus the bias),
then per step ``z = x_proj[t] + h @ recurrent_kernel``; the backward pass is
hand-written (backpropagation through time, the weight gradients as one GEMM
each). Other activations, and ``recurrent_dropout``, run the cell step by
step on the ops (Keras's generic loop), differentiable as they stand.
"""

import numbers

import numpy as np

from backends import get_ops
from gpulayers import activations, autodiff, constraints, initializers, random as random_module, regularizers
from gpulayers.argument_validation import standardize_bool, standardize_int
from gpulayers.layers.arrays import compute_array
from gpulayers.layers.base import Layer
from gpulayers.layers.input_spec import InputSpec

__all__ = ["LSTM", "LSTMCell"]


def _rate(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid type for `{name}`: expected a float in [0, 1]. Received: {name}={value!r}")
    return min(1.0, max(0.0, float(value)))  # Keras clips the rates into [0, 1]


def _check_seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"Invalid value for `seed`: expected None or a non-negative int. Received: seed={seed!r}")
    return None if seed is None else int(seed)


class LSTMCell(Layer):
    """One step of an LSTM: ``(inputs, [h, c]) -> (h_new, [h_new, c_new])``, as Keras 3's ``LSTMCell``.

    Args:
        units: Positive int, the size of the state.
        activation: Of the cell input and the output (default ``'tanh'``).
        recurrent_activation: Of the gates (default ``'sigmoid'``).
        use_bias: Whether the gates have a bias.
        kernel_initializer, recurrent_initializer, bias_initializer:
            Defaults ``'glorot_uniform'``, ``'orthogonal'``, ``'zeros'``.
        unit_forget_bias: Start the forget gate's bias at 1 (Keras's default).
        kernel_regularizer, recurrent_regularizer, bias_regularizer,
        kernel_constraint, recurrent_constraint, bias_constraint: As in Dense.
        dropout: Fraction of the inputs dropped in training (one mask for
            every step of a sequence).
        recurrent_dropout: Fraction of the previous state dropped in training
            (one mask per gate, as Keras's implementation 1).
        seed: Int or None, for the dropout masks.
    """

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        units = standardize_int(units, "units")
        implementation = kwargs.pop("implementation", 2)
        if implementation not in (1, 2):
            raise ValueError(f"Invalid value for `implementation`: expected 1 or 2. Received: {implementation!r}")
        self.activation = activations.get(activation, argument="activation")
        self.recurrent_activation = activations.get(recurrent_activation, argument="recurrent_activation")
        self.use_bias = standardize_bool(use_bias, "use_bias")
        self.kernel_initializer = initializers.get(kernel_initializer, argument="kernel_initializer")
        self.recurrent_initializer = initializers.get(recurrent_initializer, argument="recurrent_initializer")
        self.bias_initializer = initializers.get(bias_initializer, argument="bias_initializer")
        self.unit_forget_bias = standardize_bool(unit_forget_bias, "unit_forget_bias")
        self.kernel_regularizer = regularizers.get(kernel_regularizer, argument="kernel_regularizer")
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer, argument="recurrent_regularizer")
        self.bias_regularizer = regularizers.get(bias_regularizer, argument="bias_regularizer")
        self.kernel_constraint = constraints.get(kernel_constraint, argument="kernel_constraint")
        self.recurrent_constraint = constraints.get(recurrent_constraint, argument="recurrent_constraint")
        self.bias_constraint = constraints.get(bias_constraint, argument="bias_constraint")
        self.dropout = _rate(dropout, "dropout")
        self.recurrent_dropout = _rate(recurrent_dropout, "recurrent_dropout")
        self.seed = _check_seed(seed)
        super().__init__(**kwargs)
        self.units = units
        self.implementation = 1 if self.recurrent_dropout else implementation
        self.state_size = [units, units]
        self.output_size = units
        self.seed_generator = random_module.SeedGenerator(seed)
        self.kernel = self.recurrent_kernel = self.bias = None

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                f"The last axis of the input of layer '{self.name}' must be known. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        units = self.units
        self.kernel = self.add_weight(
            shape=(input_dim, units * 4), name="kernel", initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer, constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(units, units * 4), name="recurrent_kernel", initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer, constraint=self.recurrent_constraint,
        )
        if self.use_bias:
            initializer = self.bias_initializer
            if self.unit_forget_bias:
                base = self.bias_initializer

                def initializer(shape, dtype=None):
                    # Keras's: the bias initializer for the input gate, ones for the forget gate, then the rest.
                    return np.concatenate([
                        np.asarray(base((units,), dtype=dtype)),
                        np.ones((units,), dtype=dtype),
                        np.asarray(base((units * 2,), dtype=dtype)),
                    ])

            self.bias = self.add_weight(
                shape=(units * 4,), name="bias", initializer=initializer,
                regularizer=self.bias_regularizer, constraint=self.bias_constraint,
            )
        self.built = True

    def get_dropout_mask(self, step_input):
        """The input dropout mask (0 or ``1 / (1 - rate)``) for a batch shaped like ``step_input``."""
        from gpulayers import ops

        return random_module.dropout(ops.ones_like(step_input), self.dropout, seed=self.seed_generator)

    def get_recurrent_dropout_masks(self, state):
        """Four recurrent dropout masks (one per gate), shaped like ``state``."""
        from gpulayers import ops

        ones = ops.ones_like(state)
        return [random_module.dropout(ones, self.recurrent_dropout, seed=self.seed_generator) for _ in range(4)]

    def get_initial_state(self, batch_size=None):
        from gpulayers import ops

        return [ops.zeros((batch_size, d), dtype=self.dtype) for d in self.state_size]

    def call(self, inputs, states, training=False, dropout_mask=None, recurrent_masks=None):
        from gpulayers import ops

        h_tm1, c_tm1 = states[0], states[1]
        if training and 0.0 < self.dropout < 1.0:
            if dropout_mask is None:
                dropout_mask = self.get_dropout_mask(inputs)
            inputs = inputs * dropout_mask
        z = ops.matmul(inputs, self.kernel)
        if self.use_bias:
            z = ops.add(z, self.bias)
        if training and 0.0 < self.recurrent_dropout < 1.0:
            if recurrent_masks is None:
                recurrent_masks = self.get_recurrent_dropout_masks(h_tm1)
            u = ops.split(self.recurrent_kernel, 4, axis=1)
            recurrent = ops.concatenate([ops.matmul(h_tm1 * m, k) for m, k in zip(recurrent_masks, u)], axis=1)
        else:
            recurrent = ops.matmul(h_tm1, self.recurrent_kernel)
        z = ops.add(z, recurrent)
        z0, z1, z2, z3 = ops.split(z, 4, axis=1)
        i = self.recurrent_activation(z0)
        f = self.recurrent_activation(z1)
        c = f * c_tm1 + i * self.activation(z2)
        o = self.recurrent_activation(z3)
        h = o * self.activation(c)
        return h, [h, c]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": activations.serialize(self.activation),
            "recurrent_activation": activations.serialize(self.recurrent_activation),
            "use_bias": self.use_bias,
            "unit_forget_bias": self.unit_forget_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }


# The activations the fused node knows: the array function and the derivative from its output.
def _fused_activation(fn):
    from gpulayers.ops.activations import _sigmoid_array

    if fn is activations.tanh:
        return (lambda a: get_ops().xp.tanh(a)), (lambda y: 1 - y * y)
    if fn is activations.sigmoid:
        return _sigmoid_array, (lambda y: y * (1 - y))
    return None


def _lstm_arrays(x, kernel, recurrent, bias, h0, c0, act, rec_act, go_backwards):
    """The fused forward pass on raw arrays: ``(outputs (N, T, U), h_T, c_T)`` and the backward closure."""
    ops = get_ops()
    xp = ops.xp
    (act_f, act_d), (rec_f, rec_d) = act, rec_act
    n, steps, dim = x.shape
    units = recurrent.shape[0]
    dtype = kernel.dtype
    xs = x[:, ::-1] if go_backwards else x
    xt = xp.ascontiguousarray(xs.transpose(1, 0, 2))  # (T, N, D), as Keras's loop reads it
    proj = ops.matmul(xt.reshape(steps * n, dim), kernel).reshape(steps, n, 4 * units)
    if bias is not None:
        proj = proj + bias
    h = xp.zeros((n, units), dtype=dtype) if h0 is None else h0
    c = xp.zeros((n, units), dtype=dtype) if c0 is None else c0
    gates = xp.empty((steps, n, 4 * units), dtype=dtype)  # i, f, g, o after their activations
    cells = xp.empty((steps, n, units), dtype=dtype)
    tanh_cells = xp.empty((steps, n, units), dtype=dtype)
    hs = xp.empty((steps + 1, n, units), dtype=dtype)  # hs[t] is the state before step t
    hs[0] = h
    c_init = c
    for t in range(steps):
        z = proj[t] + ops.matmul(h, recurrent)
        i = rec_f(z[:, :units])
        f = rec_f(z[:, units:2 * units])
        g = act_f(z[:, 2 * units:3 * units])
        o = rec_f(z[:, 3 * units:])
        c = f * c + i * g
        tc = act_f(c)
        h = o * tc
        gates[t, :, :units], gates[t, :, units:2 * units] = i, f
        gates[t, :, 2 * units:3 * units], gates[t, :, 3 * units:] = g, o
        cells[t], tanh_cells[t], hs[t + 1] = c, tc, h
    outputs = xp.ascontiguousarray(hs[1:].transpose(1, 0, 2))

    def backward(grads, needs):
        d_out, d_h, d_c = grads
        dh = xp.array(d_h, dtype=dtype, copy=True)
        dc = xp.array(d_c, dtype=dtype, copy=True)
        d_seq = d_out.transpose(1, 0, 2)  # (T, N, U)
        dz = xp.empty((steps, n, 4 * units), dtype=dtype)
        recurrent_t = recurrent.T
        for t in range(steps - 1, -1, -1):
            dh = dh + d_seq[t]
            i, f = gates[t, :, :units], gates[t, :, units:2 * units]
            g, o = gates[t, :, 2 * units:3 * units], gates[t, :, 3 * units:]
            tc = tanh_cells[t]
            c_prev = cells[t - 1] if t > 0 else c_init
            dc = dc + dh * o * act_d(tc)
            dz[t, :, :units] = dc * g * rec_d(i)
            dz[t, :, units:2 * units] = dc * c_prev * rec_d(f)
            dz[t, :, 2 * units:3 * units] = dc * i * act_d(g)
            dz[t, :, 3 * units:] = dh * tc * rec_d(o)
            dc = dc * f
            dh = ops.matmul(dz[t], recurrent_t)
        flat = dz.reshape(steps * n, 4 * units)
        dx = dk = dr = db = None
        if needs[0]:
            dxt = ops.matmul(flat, kernel.T).reshape(steps, n, dim).transpose(1, 0, 2)
            dx = xp.ascontiguousarray(dxt[:, ::-1] if go_backwards else dxt)
        if needs[1]:
            dk = ops.matmul(xt.reshape(steps * n, dim).T, flat)
        if needs[2]:
            dr = ops.matmul(hs[:-1].reshape(steps * n, units).T, flat)
        if needs[3]:
            db = flat.sum(axis=0)
        return dx, dk, dr, db, (dh if needs[4] else None), (dc if needs[5] else None)

    return (outputs, h, c), backward


class LSTM(Layer):
    """Long Short-Term Memory layer (Hochreiter 1997), as Keras 3's ``keras.layers.LSTM``.

    Args:
        units: Positive int, the size of the output and of the states.
        activation, recurrent_activation, use_bias, kernel_initializer,
        recurrent_initializer, bias_initializer, unit_forget_bias,
        kernel_regularizer, recurrent_regularizer, bias_regularizer,
        kernel_constraint, recurrent_constraint, bias_constraint, dropout,
        recurrent_dropout, seed: As in :class:`LSTMCell`.
        activity_regularizer: Regularizer of the output.
        return_sequences: Return the output of every step ``(batch, steps,
            units)`` rather than the last one ``(batch, units)``.
        return_state: Also return the last ``h`` and ``c``.
        go_backwards: Read the sequence from its end (the outputs come in the
            order they are computed, as Keras's).
        stateful: Must be False (stateful RNNs are not supported yet).
        unroll, use_cudnn: Accepted for Keras compatibility; the numbers are
            the same either way.

    Call arguments: ``sequences`` ``(batch, steps, features)``,
    ``initial_state`` (a list ``[h, c]``, optional), ``mask`` (must be None:
    masking is not supported yet), ``training``.

    Example:
        >>> LSTM(8)(np.zeros((2, 5, 3))).shape
        (2, 8)
    """

    single_input = True
    input_cast = "all"

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        use_cudnn="auto",
        **kwargs,
    ):
        if use_cudnn not in ("auto", True, False):
            raise ValueError(
                "Invalid valid received for argument `use_cudnn`. Expected one of {'auto', True, False}. "
                f"Received: use_cudnn={use_cudnn}"
            )
        if standardize_bool(stateful, "stateful"):
            raise NotImplementedError("LSTM(stateful=True) is not supported by gpulayers yet.")
        kwargs.pop("zero_output_for_mask", None)  # in Keras's config; only masking would use it
        implementation = kwargs.pop("implementation", 2)
        cell = LSTMCell(
            units, activation=activation, recurrent_activation=recurrent_activation, use_bias=use_bias,
            kernel_initializer=kernel_initializer, unit_forget_bias=unit_forget_bias,
            recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer, kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint, dropout=dropout,
            recurrent_dropout=recurrent_dropout, seed=seed, dtype=kwargs.get("dtype"),
            trainable=kwargs.get("trainable", True), name="lstm_cell", implementation=implementation,
        )
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.cell = cell
        self.return_sequences = standardize_bool(return_sequences, "return_sequences")
        self.return_state = standardize_bool(return_state, "return_state")
        self.go_backwards = standardize_bool(go_backwards, "go_backwards")
        self.stateful = False
        self.unroll = standardize_bool(unroll, "unroll")
        self.use_cudnn = use_cudnn
        self.zero_output_for_mask = False
        self.input_spec = InputSpec(ndim=3)

    # Keras's LSTM exposes its cell's settings.
    units = property(lambda self: self.cell.units)
    activation = property(lambda self: self.cell.activation)
    recurrent_activation = property(lambda self: self.cell.recurrent_activation)
    use_bias = property(lambda self: self.cell.use_bias)
    dropout = property(lambda self: self.cell.dropout)
    recurrent_dropout = property(lambda self: self.cell.recurrent_dropout)
    state_size = property(lambda self: self.cell.state_size)

    def build(self, sequences_shape, initial_state_shape=None):
        if len(sequences_shape) != 3:
            raise ValueError(
                f"Input of layer '{self.name}' is incompatible with the layer: expected ndim=3, "
                f"found ndim={len(sequences_shape)}. Full shape received: {tuple(sequences_shape)}"
            )
        if not self.cell.built:
            self.cell.build_from_shape((sequences_shape[0], sequences_shape[-1]))
        self.built = True

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch, steps, units = sequences_shape[0], sequences_shape[1], self.cell.units
        output = (batch, steps, units) if self.return_sequences else (batch, units)
        if self.return_state:
            return [output, (batch, units), (batch, units)]
        return output

    def compute_output_spec(self, sequences, initial_state=None, mask=None, **kwargs):
        from gpulayers.symbolic import KerasTensor

        shape = tuple(sequences.shape)
        if not self.built:
            self.build_from_shape(shape)
        out = self.compute_output_shape(shape)
        if self.return_state:
            return [KerasTensor(s, self.dtype) for s in out]
        return KerasTensor(out, self.dtype)

    def _initial_state(self, sequences, initial_state):
        if initial_state is None:
            return None, None
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        if len(states) != 2:
            raise ValueError(
                f"Layer '{self.name}' expects 2 initial states (h and c). Received: {len(states)} states"
            )
        from gpulayers import ops

        n, units = sequences.shape[0], self.cell.units
        out = []
        for s in states:
            s = autodiff.as_tensor(s)
            if tuple(s.shape) != (n, units):
                raise ValueError(
                    f"An initial state of layer '{self.name}' must have shape {(n, units)}. Received: {tuple(s.shape)}"
                )
            out.append(s if s.data.dtype == np.dtype(self.dtype) else ops.cast(s, self.dtype))
        return out[0], out[1]

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if mask is not None:
            raise NotImplementedError(f"Layer '{self.name}' was given a mask: masking is not supported by gpulayers yet.")
        cell = self.cell
        h0, c0 = self._initial_state(sequences, initial_state)
        act, rec_act = _fused_activation(cell.activation), _fused_activation(cell.recurrent_activation)
        if act is None or rec_act is None or (training and cell.recurrent_dropout > 0):
            output, h, c = self._loop(sequences, h0, c0, training)
        else:
            x = sequences
            if training and 0.0 < cell.dropout < 1.0:
                from gpulayers import ops

                mask_step = cell.get_dropout_mask(sequences[:, 0, :])
                x = ops.multiply(sequences, ops.expand_dims(mask_step, 1))
            inputs = (x, cell.kernel, cell.recurrent_kernel, cell.bias, h0, c0)
            tensors = tuple(None if t is None else autodiff.as_tensor(t) for t in inputs)
            arrays = tuple(None if t is None else compute_array(t.data, self.dtype) for t in tensors)
            outs, backward = _lstm_arrays(*arrays, act, rec_act, self.go_backwards)
            seq, h, c = autodiff.record("lstm", outs, tensors, _contiguous(backward), {"layer": self.name})
            output = seq if self.return_sequences else h  # the last step's output is the last h
        if self.return_state:
            return [output, h, c]
        return output

    def _loop(self, sequences, h0, c0, training):
        """Keras's generic loop: the cell step by step, on the ops."""
        from gpulayers import ops

        cell = self.cell
        n, steps = sequences.shape[0], sequences.shape[1]
        h = ops.zeros((n, cell.units), dtype=self.dtype) if h0 is None else h0
        c = ops.zeros((n, cell.units), dtype=self.dtype) if c0 is None else c0
        dp = rec = None
        if training and 0.0 < cell.dropout < 1.0:
            dp = cell.get_dropout_mask(sequences[:, 0, :])
        if training and 0.0 < cell.recurrent_dropout < 1.0:
            rec = cell.get_recurrent_dropout_masks(h)
        outputs = []
        order = range(steps - 1, -1, -1) if self.go_backwards else range(steps)
        for t in order:
            out, (h, c) = cell.call(sequences[:, t, :], [h, c], training=training, dropout_mask=dp,
                                    recurrent_masks=rec)
            outputs.append(out)
        if not outputs:
            seq = ops.zeros((n, 0, cell.units), dtype=self.dtype)
            return (seq if self.return_sequences else h), h, c
        return (ops.stack(outputs, axis=1) if self.return_sequences else outputs[-1]), h, c

    def get_config(self):
        cell = self.cell
        config = {
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "stateful": self.stateful,
            "unroll": self.unroll,
            "zero_output_for_mask": self.zero_output_for_mask,
            "units": cell.units,
            "activation": activations.serialize(cell.activation),
            "recurrent_activation": activations.serialize(cell.recurrent_activation),
            "use_bias": cell.use_bias,
            "kernel_initializer": initializers.serialize(cell.kernel_initializer),
            "recurrent_initializer": initializers.serialize(cell.recurrent_initializer),
            "bias_initializer": initializers.serialize(cell.bias_initializer),
            "unit_forget_bias": cell.unit_forget_bias,
            "kernel_regularizer": regularizers.serialize(cell.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(cell.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(cell.bias_regularizer),
            "activity_regularizer": regularizers.serialize(self.activity_regularizer),
            "kernel_constraint": constraints.serialize(cell.kernel_constraint),
            "recurrent_constraint": constraints.serialize(cell.recurrent_constraint),
            "bias_constraint": constraints.serialize(cell.bias_constraint),
            "dropout": cell.dropout,
            "recurrent_dropout": cell.recurrent_dropout,
            "seed": cell.seed,
        }
        base = super().get_config()
        base.pop("activity_regularizer", None)
        return {**base, **config}


def _contiguous(backward):
    def run(grads, needs):
        xp = get_ops().xp
        return backward(tuple(xp.ascontiguousarray(g) for g in grads), needs)

    return run
