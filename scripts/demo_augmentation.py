"""Does augmentation by layers raise the demo's held-out accuracy? One line per (variant, seed), then the means.

    .venv/bin/python scripts/demo_augmentation.py [--seeds 0-19] [--epochs 30]

Variants of the demo's face model (gpulayers/demo.py, same compile and fit):
- ``mirror``: what the demo does, every training face and its mirror image;
- ``layers``: the original faces through ``RandomFlip("horizontal")`` and
  ``RandomTranslation(0.1, 0.1)`` layers in front of the model (half the steps
  per epoch: pass ``--epochs 60`` to match the demo's step count).
Accuracy is on the 40 held-out images of the bundled LFW subset.
"""

import argparse
import time

import gpulayers
from gpulayers import datasets, demo, optimizers
from gpulayers.layers import RandomFlip, RandomTranslation


def accuracy_of(variant, seed, epochs):
    gpulayers.utils.clear_session()
    gpulayers.set_random_seed(seed)
    data_format = gpulayers.config.image_data_format()
    (x, y), (x_test, y_test) = datasets.faces(data_format=data_format)
    model = demo.build_model(x.shape[1:], data_format)
    if variant == "mirror":
        x, y = demo.augment(x, y, data_format)
    else:
        model = gpulayers.Sequential(
            [gpulayers.Input(shape=x.shape[1:]),
             RandomFlip("horizontal", data_format=data_format, seed=seed),
             RandomTranslation(0.1, 0.1, fill_mode="nearest", data_format=data_format, seed=seed),
             *model.layers],
            name="faces_cnn",
        )
    model.compile(optimizer=optimizers.Adam(learning_rate=3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    return float(accuracy), time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0-19", help="first-last seed (default 0-19)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--variants", default="mirror,layers")
    args = parser.parse_args()
    first, last = (int(s) for s in args.seeds.split("-"))
    for variant in args.variants.split(","):
        results = [accuracy_of(variant, seed, args.epochs) for seed in range(first, last + 1)]
        for seed, (accuracy, seconds) in zip(range(first, last + 1), results):
            print(f"{variant} seed {seed}: test accuracy {accuracy:.3f} ({seconds:.1f} s)", flush=True)
        mean = sum(a for a, _ in results) / len(results)
        print(f"{variant}: mean test accuracy {mean:.4f} over {len(results)} seeds, {args.epochs} epochs")


if __name__ == "__main__":
    main()
