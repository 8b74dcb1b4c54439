"""Window geometry of the convolution and pooling layers: Keras's output lengths and 'same' padding."""

__all__ = ["conv_output_length", "same_pads", "window_pads"]


def conv_output_length(n, kernel, stride, dilation, padding):
    """Keras's output length: 'same' -> ceil(n / stride), 'valid' -> floor((n - span) / stride) + 1.

    ``None`` (an unknown size) gives ``None``; a result below 1 gives 0 and the
    caller refuses it.
    """
    if n is None:
        return None
    span = (kernel - 1) * dilation + 1
    if padding == "same":
        return (n - 1) // stride + 1
    return max((n - span) // stride + 1, 0) if n >= span else 0


def same_pads(n, kernel, stride, dilation):
    """(before, after) zero padding for 'same': the extra pixel goes after (bottom/right)."""
    out = (n - 1) // stride + 1
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - n, 0)
    return total // 2, total - total // 2


def window_pads(spatial, kernel, strides, dilation, padding):
    """(top, bottom, left, right) for a 2-D window op on a (H, W) input."""
    if padding == "valid":
        return (0, 0, 0, 0)
    top, bottom = same_pads(spatial[0], kernel[0], strides[0], dilation[0])
    left, right = same_pads(spatial[1], kernel[1], strides[1], dilation[1])
    return (top, bottom, left, right)
