"""Nested structures of tensors (lists, tuples, namedtuples, dicts) as layers take and return them."""

__all__ = ["flatten", "is_structure", "map_shapes", "map_structure", "shape_structure"]


def is_structure(x):
    """A list, tuple or dict holding tensors or arrays (not a nested list of numbers, which is one array)."""
    if isinstance(x, dict):
        return True
    if not isinstance(x, (list, tuple)):
        return False
    return any(is_structure(v) or hasattr(v, "shape") for v in x)


def map_structure(fn, x):
    """``fn`` applied to every leaf of a list/tuple/dict structure (the structure kept)."""
    if isinstance(x, dict):
        return {k: map_structure(fn, v) for k, v in x.items()}
    if is_structure(x):
        return type(x)(map_structure(fn, v) for v in x) if not hasattr(x, "_fields") else type(x)(*(map_structure(fn, v) for v in x))
    return fn(x)


def flatten(x):
    """The leaves of a structure, in order."""
    if isinstance(x, dict):
        return [leaf for v in x.values() for leaf in flatten(v)]
    if is_structure(x):
        return [leaf for v in x for leaf in flatten(v)]
    return [x]


def shape_structure(x):
    """The shapes of a structure's tensors, in the structure (a tuple for one tensor)."""
    return map_structure(lambda t: tuple(t.shape), x)


def map_shapes(fn, shapes):
    """``fn`` on every shape tuple of a structure of shapes."""
    if isinstance(shapes, dict):
        return {k: map_shapes(fn, v) for k, v in shapes.items()}
    if isinstance(shapes, (list, tuple)) and shapes and isinstance(shapes[0], (list, tuple, dict)):
        return type(shapes)(map_shapes(fn, s) for s in shapes)
    return fn(shapes)
