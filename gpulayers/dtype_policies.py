"""Dtype policies (Keras 3's ``keras.dtype_policies``): a layer's variable dtype and compute dtype.

A policy named after a float type (``"float32"``) keeps variables and
computation in that type. ``"mixed_float16"`` keeps the variables in
float32 and computes in float16: a layer casts its float inputs and, while
it runs, its variables to float16 (the cast is on the tape, so a variable's
gradient comes back in float32), as Keras's autocast scope does.

``"mixed_bfloat16"`` is refused: neither CuPy nor gpulayers' kernels have a
bfloat16 type yet, and a policy that silently computed in float32 would
train to other numbers than Keras.
"""

import numpy as np

from gpulayers import config

__all__ = ["DTypePolicy", "FloatDTypePolicy", "dtype_policy", "set_dtype_policy", "get", "serialize", "deserialize"]

_FLOATS = ("float16", "float32", "float64")
_MIXED = {"mixed_float16": ("float16", "float32")}
_global_policy = None


def _float_name(value):
    """The name of the float dtype ``value`` stands for (``"float32"``, ``np.float16``...), or None."""
    try:
        name = np.dtype(value).name
    except TypeError:
        return None
    return name if name in _FLOATS else None


def _parse(name, argument="name"):
    """(compute dtype, variable dtype) of a policy name."""
    if not isinstance(name, str):
        raise TypeError(
            f"Invalid type for `{argument}`: expected a string such as 'mixed_float16'. Received: {argument}={name!r} "
            f"(of type {type(name).__name__})"
        )
    if name in _MIXED:
        return _MIXED[name]
    if name == "mixed_bfloat16" or name == "bfloat16":
        raise ValueError(
            f"Invalid value for `{argument}`: gpulayers has no bfloat16 computation yet (CuPy has no bfloat16 "
            f"type); use 'mixed_float16'. Received: {argument}={name!r}"
        )
    dtype = _float_name(name)
    if dtype is None:
        raise ValueError(
            f"Invalid value for `{argument}`: cannot convert {name!r} to a dtype policy. Valid policies: "
            f"'mixed_float16' and the float dtypes {_FLOATS}. Received: {argument}={name!r}"
        )
    return dtype, dtype


class DTypePolicy:
    """A layer's dtype policy: ``variable_dtype`` for its weights, ``compute_dtype`` for its computation.

    Args:
        name: ``"mixed_float16"`` (float16 compute, float32 variables) or a
            float dtype name (both that dtype); None takes the global policy's.
    """

    def __init__(self, name=None):
        if name is None:
            name = dtype_policy().name
        self._compute_dtype, self._variable_dtype = _parse(name)
        self._name = name

    @property
    def name(self):
        return self._name

    @property
    def compute_dtype(self):
        """The dtype of the layer's inputs, computation and outputs."""
        return self._compute_dtype

    @property
    def variable_dtype(self):
        """The dtype the layer creates its weights in."""
        return self._variable_dtype

    @property
    def quantization_mode(self):
        return None  # no quantized policies

    def get_config(self):
        return {"name": self._name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f'<DTypePolicy "{self._name}">'

    def __eq__(self, other):
        return isinstance(other, DTypePolicy) and self._name == other._name

    __hash__ = None  # as Keras's: equal by name, mutable in principle


class FloatDTypePolicy(DTypePolicy):
    """Keras's alias of :class:`DTypePolicy`."""


def dtype_policy():
    """The global default policy (``DTypePolicy(floatx())`` until one is set)."""
    global _global_policy
    if _global_policy is None:
        _global_policy = DTypePolicy(config.floatx())
    return _global_policy


def set_dtype_policy(policy):
    """Set the global default policy: a name (``"mixed_float16"``) or a :class:`DTypePolicy`."""
    global _global_policy
    if isinstance(policy, str):
        _parse(policy, "policy")
        policy = DTypePolicy(policy)
    elif not isinstance(policy, DTypePolicy):
        raise ValueError(
            "Invalid value for `policy`: expected the name of a policy (such as 'mixed_float16') or a "
            f"DTypePolicy. Received: policy={policy!r} (of type {type(policy).__name__})"
        )
    _global_policy = policy


def serialize(policy):
    """Keras 3's config form: ``{"module": "keras", "class_name": "DTypePolicy", ...}``."""
    return {"module": "keras", "class_name": "DTypePolicy", "config": policy.get_config(), "registered_name": None}


def deserialize(config, custom_objects=None, argument="config"):
    """A policy from :func:`serialize`'s dict (``class_name`` DTypePolicy or FloatDTypePolicy)."""
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise ValueError(
            f"Invalid value for `{argument}`: expected a serialized DTypePolicy. Received: {argument}={config!r}"
        )
    name = config.get("class_name")
    if name not in ("DTypePolicy", "FloatDTypePolicy"):
        raise ValueError(
            f"Invalid value for `{argument}`: unknown dtype policy class {name!r} (gpulayers has DTypePolicy "
            f"and FloatDTypePolicy; quantized policies are not supported). Received: {argument}={config!r}"
        )
    policy_name = config["config"].get("name")
    _parse(policy_name, argument)
    return DTypePolicy(policy_name)


def get(identifier, argument="dtype"):
    """A policy from None (the global one), a policy, its name, a dtype, or a serialized policy."""
    if identifier is None:
        return dtype_policy()
    if isinstance(identifier, DTypePolicy):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier, argument=argument)
    if isinstance(identifier, str):
        _parse(identifier, argument)  # the error names the caller's argument
        return DTypePolicy(identifier)
    name = _float_name(identifier)
    if name is None:
        raise ValueError(
            f"Invalid value for `{argument}`: expected a dtype policy, its name, or a float dtype "
            f"{_FLOATS}. Received: {argument}={identifier!r}"
        )
    return DTypePolicy(name)
