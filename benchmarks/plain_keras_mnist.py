"""The MNIST CNN of configs/mnist_cnn.yaml, written as a plain Keras 3 script.

It is what a user would write by hand, and what `vs_plain_keras.py` times dlmine against: the
same data (the first `--limit` training samples of `$DLMINE_DATA_DIR/mnist.npz`, 10% of them
held out, stratified and seeded, as dlmine does), the same preprocessing, layers, optimizer,
loss, batch size, epochs and seed. It prints one JSON line on stdout.

`--order keras` (the default) is the idiomatic script: `model.fit(x, y, shuffle=True)`, Keras
shuffling from its own random state. `--order epoch-keyed` feeds the batches in dlmine's order
(`numpy.random.default_rng([seed, epoch]).permutation(n)`, one `fit` call per epoch on the
permuted arrays with `shuffle=False`), for a like-for-like comparison of the accuracy.

Example:
    DLMINE_DATA_DIR=../shared/data python benchmarks/plain_keras_mnist.py --limit 20000 --epochs 2
"""

import time

STARTED = time.perf_counter()  # before the heavy imports: they are part of the cost

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=20000, help="training samples used")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--order", choices=["keras", "epoch-keyed"], default="keras",
                        help="keras: fit(shuffle=True); epoch-keyed: dlmine's per-epoch order")
    return parser.parse_args(argv)


def load_data(limit: int, seed: int):
    """(x_train, y_train), (x_val, y_val), (x_test, y_test), preprocessed as dlmine does."""
    from sklearn.model_selection import train_test_split

    path = Path(os.environ.get("DLMINE_DATA_DIR", "../shared/data")) / "mnist.npz"
    with np.load(path) as data:
        x, y = data["x_train"][:limit], data["y_train"][:limit]
        x_test, y_test = data["x_test"], data["y_test"]
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=round(len(x) * 0.1), random_state=seed, stratify=y)

    def prepare(images, labels):
        images = images.astype("float32") * np.float32(1 / 255)  # dlmine's `rescale: 1/255`
        return images[..., np.newaxis], np.eye(10, dtype="float32")[labels]

    return prepare(x_train, y_train), prepare(x_val, y_val), prepare(x_test, y_test)


def build_model(jit_compile="auto", steps_per_execution: int = 1):
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Conv2D(32, kernel_size=3, activation="relu"),
        keras.layers.MaxPooling2D(pool_size=2),
        keras.layers.Conv2D(64, kernel_size=3, activation="relu"),
        keras.layers.MaxPooling2D(pool_size=2),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    return model


class EpochTimes(keras.callbacks.Callback):
    """Seconds from each epoch's begin to its end, validation included (as dlmine logs them)."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


def main(argv=None) -> None:
    args = parse_args(argv)
    (x_train, y_train), validation, (x_test, y_test) = load_data(args.limit, args.seed)
    keras.utils.set_random_seed(args.seed)
    model = build_model()
    epoch_times = EpochTimes()

    fit_started = time.perf_counter()
    if args.order == "keras":
        model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                  validation_data=validation, shuffle=True, verbose=0, callbacks=[epoch_times])
    else:
        for epoch in range(args.epochs):
            order = np.random.default_rng([args.seed, epoch]).permutation(len(x_train))
            model.fit(x_train[order], y_train[order], batch_size=args.batch_size,
                      epochs=epoch + 1, initial_epoch=epoch, validation_data=validation,
                      shuffle=False, verbose=0, callbacks=[epoch_times])
    fit_s = time.perf_counter() - fit_started

    loss, accuracy = model.evaluate(x_test, y_test, batch_size=args.batch_size, verbose=0)
    print(json.dumps({
        "order": args.order,
        "wall_s": round(time.perf_counter() - STARTED, 3),
        "fit_s": round(fit_s, 3),
        "epoch_s": [round(s, 3) for s in epoch_times.seconds],
        "train_samples": len(x_train),
        "epochs": args.epochs,
        "samples_per_s": round(len(x_train) * args.epochs / fit_s, 1),
        "test_accuracy": float(accuracy),
        "test_loss": float(loss),
        "backend": keras.backend.backend(),
    }), flush=True)


if __name__ == "__main__":
    main()
