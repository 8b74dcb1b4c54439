"""What scripts/bench.py (CPU) and scripts/bench_gpu.py (GPU) both measure.

The layer cases, the benchmark layers and the benchmark CNN, in gpulayers and in PyTorch (the
same shapes and output sizes), and the markdown table both reports print.
"""


# The layer cases: name, label, kind, input shape per sample (NHWC), parameters.
LAYER_CASES = [
    ("conv3x3s1", "Conv2D 3x3 s1 32->64 @32x32", "conv", (32, 32, 32), dict(filters=64, kernel=3, stride=1)),
    ("conv3x3s2", "Conv2D 3x3 s2 32->64 @32x32", "conv", (32, 32, 32), dict(filters=64, kernel=3, stride=2)),
    ("conv1x1", "Conv2D 1x1 32->64 @32x32", "conv", (32, 32, 32), dict(filters=64, kernel=1, stride=1)),
    ("maxpool", "MaxPooling2D 2x2 @32x32x64", "maxpool", (32, 32, 64), {}),
    ("avgpool", "AveragePooling2D 2x2 @32x32x64", "avgpool", (32, 32, 64), {}),
    ("bn", "BatchNormalization (training) @32x32x64", "bn", (32, 32, 64), {}),
    ("relu", "ReLU @32x32x64", "relu", (32, 32, 64), {}),
    ("dense", "Dense 4096->128", "dense", (4096,), {}),
]


def our_layer(kind, params):
    """One benchmark layer in gpulayers ('conv', 'maxpool', 'avgpool', 'bn', 'relu', 'dense')."""
    from gpulayers import layers

    if kind == "conv":
        return layers.Conv2D(params["filters"], params["kernel"], strides=params["stride"], padding="same")
    if kind == "maxpool":
        return layers.MaxPooling2D((2, 2))
    if kind == "avgpool":
        return layers.AveragePooling2D((2, 2))
    if kind == "bn":
        return layers.BatchNormalization()
    if kind == "relu":
        return layers.Activation("relu")
    if kind == "dense":
        return layers.Dense(128)
    raise ValueError(f"unknown benchmark layer: {kind!r}")


def torch_layer(torch, kind, params, in_channels):
    """The same layer in PyTorch."""
    nn = torch.nn
    if kind == "conv":
        k, s = params["kernel"], params["stride"]
        # The same output size as Keras 'same' (32, or 16 at stride 2).
        return nn.Conv2d(in_channels, params["filters"], k, stride=s, padding=k // 2)
    if kind == "maxpool":
        return nn.MaxPool2d(2)
    if kind == "avgpool":
        return nn.AvgPool2d(2)
    if kind == "bn":
        return nn.BatchNorm2d(in_channels)
    if kind == "relu":
        return nn.ReLU()
    if kind == "dense":
        return nn.Linear(4096, 128)
    raise ValueError(f"unknown benchmark layer: {kind!r}")


def torch_layer_fns(torch, kind, params, shape, batch, channels_last, device="cpu"):
    """(forward, forward_backward) closures for one benchmark layer in PyTorch, on ``device``.

    The data are drawn on the CPU (the same numbers on every device), then moved.
    """
    gen = torch.Generator(device="cpu").manual_seed(0)
    if kind == "dense":
        x = torch.randn((batch,) + shape, generator=gen)
    else:
        h, w, c = shape
        x = torch.randn((batch, c, h, w), generator=gen)
    module = torch_layer(torch, kind, params, shape[-1]).to(device)
    module.train()
    x = x.to(device)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
        module = module.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    with torch.no_grad():
        y = module(x)
    dy = torch.randn(y.shape, generator=gen).to(device)
    if channels_last and dy.dim() == 4:
        dy = dy.contiguous(memory_format=torch.channels_last)
    params_ = list(module.parameters())

    def forward():
        with torch.no_grad():
            module(x)

    def forward_backward():
        x.grad = None
        for p in params_:
            p.grad = None
        module(x).backward(dy)

    return forward, forward_backward


def our_layer_fns(kind, params, x, seed=0):
    """(forward, forward_backward) closures for one benchmark layer in gpulayers, on ``x`` (a backend array).

    Forward runs in training mode without recording (``no_backward``); forward+backward records the call on
    the tape and computes the gradients of the input and of every weight (as torch's, whose input requires
    a gradient), freeing the graph as it goes, as a training step does.
    """
    import numpy

    from gpulayers import autodiff, ops

    layer = our_layer(kind, params)
    inputs = ops.convert_to_tensor(x)
    inputs.watched = True
    y = layer(inputs, training=True)
    dy = ops.convert_to_tensor(numpy.random.default_rng(seed + 1).standard_normal(tuple(y.shape)).astype("float32")).data
    sources = [inputs] + layer.trainable_weights

    def forward():
        with autodiff.no_backward():
            layer(inputs, training=True)

    def forward_backward():
        autodiff.gradient(layer(inputs, training=True), sources, output_gradient=dy, free=True)

    return forward, forward_backward


def our_cnn():
    """The benchmark CNN (32x32x3 in, 10 classes), compiled with SGD, in gpulayers."""
    import gpulayers
    from gpulayers import layers, optimizers

    gpulayers.set_random_seed(0)
    model = gpulayers.Sequential(
        [
            layers.Input((32, 32, 3)),
            layers.Conv2D(32, 3, padding="same"),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same"),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dropout(0.5, seed=1),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer=optimizers.SGD(learning_rate=0.01), loss="sparse_categorical_crossentropy")
    return model


def torch_cnn(torch):
    """The same CNN in PyTorch."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4096, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 10),
    )


def markdown_table(headers, rows, cell=str):
    """A GitHub markdown table; the first column left-aligned, the others right-aligned.

    ``cell`` formats each value of ``rows``.
    """
    cells = [[str(h) for h in headers]] + [[cell(c) for c in row] for row in rows]
    width = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "| " + " | ".join(r[i].ljust(width[i]) if i == 0 else r[i].rjust(width[i]) for i in range(len(r))) + " |"

    sep = "|" + "|".join(":" + "-" * (width[i] + 1) if i == 0 else "-" * (width[i] + 1) + ":" for i in range(len(headers))) + "|"
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])
