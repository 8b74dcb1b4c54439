"""Keras 3's ``keras.mixed_precision`` namespace: dtype policies and dynamic loss scaling.

    >>> gpulayers.mixed_precision.set_global_policy("mixed_float16")
    >>> gpulayers.layers.Dense(10).compute_dtype
    'float16'
"""

from gpulayers.dtype_policies import DTypePolicy, dtype_policy, set_dtype_policy
from gpulayers.optimizers.loss_scale import LossScaleOptimizer

Policy = DTypePolicy  # Keras's legacy names
global_policy = dtype_policy
set_global_policy = set_dtype_policy

__all__ = ["DTypePolicy", "LossScaleOptimizer", "Policy", "dtype_policy", "global_policy", "set_dtype_policy",
           "set_global_policy"]
