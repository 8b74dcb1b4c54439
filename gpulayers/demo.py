"""The main job: train a face / non-face CNN on the bundled LFW subset.

    python -m gpulayers.demo [--epochs N] [--backend auto|numpy|cupy] [--output-dir DIR]

Loads ``gpulayers.datasets.faces()`` (no network), trains a small CNN built
from the chapter's layers with Keras-style progress bars, saves the model as
``DIR/faces_cnn.keras`` and the training curves as ``DIR/training_curves.png``,
and ends with the line ``test accuracy: 0.XX``.
"""

import argparse
import os
import sys
import time

import numpy as np

import gpulayers
from gpulayers import datasets, optimizers
from gpulayers.layers import (
    Activation,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    GlobalAveragePooling2D,
    Input,
    MaxPooling2D,
)
from gpulayers.models import Sequential


def build_model(input_shape, data_format):
    """Three conv blocks (Conv2D, BatchNormalization, ReLU, MaxPooling2D), then a softmax head."""
    axis = -1 if data_format == "channels_last" else 1
    model = Sequential(name="faces_cnn")
    model.add(Input(shape=input_shape))
    for filters in (16, 32, 64):
        model.add(Conv2D(filters, 3, padding="same", use_bias=False, data_format=data_format))
        # momentum 0.9: with 20 steps an epoch, 0.99 would leave the moving
        # statistics far from the data's for most of the run.
        model.add(BatchNormalization(axis=axis, momentum=0.9))
        model.add(Activation("relu"))
        model.add(MaxPooling2D(data_format=data_format))
    model.add(GlobalAveragePooling2D(data_format=data_format))
    model.add(Dropout(0.3, seed=0))
    model.add(Dense(2, activation="softmax"))
    return model


def augment(x, y, data_format):
    """Light augmentation: add the mirror image of every training face (faces are symmetric)."""
    width_axis = 2 if data_format == "channels_last" else 3
    return np.concatenate([x, np.flip(x, axis=width_axis)]), np.concatenate([y, y])


def save_curves(history, path):
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        ax.plot(epochs, history[key], label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], label=f"test {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend()
    fig.suptitle("gpulayers: face / non-face CNN on the LFW subset")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m gpulayers.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    parser.add_argument("--backend", choices=("auto", "numpy", "cupy"), default=None, help="array backend (default: GPULAYERS_BACKEND or auto)")
    parser.add_argument("--output-dir", default="outputs", help="where the model and the curves go (default ./outputs)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.backend is not None:
        gpulayers.set_backend(args.backend)
    from backends import get_ops

    print(f"backend: {gpulayers.get_backend()}")
    print(f"device: {get_ops().device_name()}")
    gpulayers.set_random_seed(args.seed)
    data_format = gpulayers.config.image_data_format()
    (x_train, y_train), (x_test, y_test) = datasets.faces(data_format=data_format)
    x_train, y_train = augment(x_train, y_train, data_format)
    print(f"data: {len(x_train)} training images (with mirrors), {len(x_test)} test images of {x_train.shape[1:]}")

    model = build_model(x_train.shape[1:], data_format)
    model.compile(optimizer=optimizers.Adam(learning_rate=3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.summary()
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_test, y_test),
        verbose=1,
    )
    print(f"training took {time.perf_counter() - start:.1f} s")

    os.makedirs(args.output_dir, exist_ok=True)
    model_path = os.path.join(args.output_dir, "faces_cnn.keras")
    model.save(model_path)
    print(f"saved the model to {model_path}")
    try:
        curves = os.path.join(args.output_dir, "training_curves.png")
        save_curves(history.history, curves)
        print(f"saved the training curves to {curves}")
    except ImportError:
        print("matplotlib is not installed: no curves (pip install 'gpulayers[demo]')")
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"test accuracy: {accuracy:.2f}")
    return accuracy


if __name__ == "__main__":
    main()
