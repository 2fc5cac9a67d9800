"""Arrays: the datasets built into Keras and scikit-learn, and the user's own `.npz` file.

`mnist`, `fashion_mnist`, `cifar10` and `cifar100` are read first from
`$DLMINE_DATA_DIR/<name>.npz` (Keras' own layout); only when that file is absent does Keras
download them. `digits` is scikit-learn's bundled 8x8 digits: no download.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from dlmine.config.loading import shorten
from dlmine.data.base import DataInfo, Source, check_classes, json_type, not_one_label
from dlmine.data.files import check_finite, check_regular_file
from dlmine.data.npzfile import PICKLED, npz_headers, read_input_array, read_npz
from dlmine.errors import DataError, UsageError

FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]
# name -> (sample shape, number of classes, class names)
BUILTIN = {
    "mnist": ((28, 28), 10, [str(i) for i in range(10)]),
    "fashion_mnist": ((28, 28), 10, FASHION_NAMES),
    "cifar10": ((32, 32, 3), 10, CIFAR10_NAMES),
    "cifar100": ((32, 32, 3), 100, [str(i) for i in range(100)]),
    "digits": ((8, 8), 10, [str(i) for i in range(10)]),
}
DATA_DIR_ENV = "DLMINE_DATA_DIR"


class ArraySource(Source):
    """Numbers of a fixed shape, checked and fed as numpy arrays."""

    def read_input(self, path: Path) -> np.ndarray:
        if path.suffix.lower() not in (".npz", ".npy"):
            raise UsageError(f"{path}: cannot read '{path.suffix or path.name}' files; expected an "
                             ".npz file (array x, x_test or x_train) or an .npy file")
        return read_input_array(path)

    def check_input(self, x: np.ndarray, prep, source: str, warn=None) -> np.ndarray:
        """`x` as a batch of finite samples of the run's sample shape (one sample alone is a
        batch of one)."""
        sample_shape = tuple(prep.sample_shape)
        if x.dtype.kind not in "biuf":
            kind = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers"}
            raise DataError(f"{source} holds {kind.get(x.dtype.kind, 'non-numeric values')} "
                            f"(dtype {x.dtype}); expected numbers (integers or floats)")
        if tuple(x.shape) == sample_shape:
            x = x[np.newaxis]
        if x.ndim < 1 or tuple(x.shape[1:]) != sample_shape:
            expected = ", ".join(["N", *map(str, sample_shape)])
            raise DataError(f"{source}: expected samples of shape {sample_shape} (an array of "
                            f"shape ({expected}), as preprocessing.json says); received an array "
                            f"of shape {tuple(x.shape)}, samples of shape {tuple(x.shape[1:])}")
        if len(x) == 0:
            raise DataError(f"{source} holds no samples; expected at least one of shape "
                            f"{sample_shape}")
        check_finite(x, "x", source)
        return x

    def check_json(self, values: list, prep, field: str, warn=None) -> np.ndarray:
        """One nested list of numbers per sample, checked by `check_input` as one array."""
        try:
            x = np.asarray(values)
        except ValueError:  # ragged: name the first sample of another shape
            raise DataError(_ragged(values, field)) from None
        if x.dtype.kind not in "iuf":  # a string, null, true or an integer beyond int64 inside
            cells = np.asarray(values, dtype=object)  # each as JSON gave it, not made text
            for index in np.ndindex(cells.shape):
                value, where = _plain(cells[index]), ", ".join(map(str, index))
                if isinstance(value, int) and not isinstance(value, bool) and \
                        not -2**63 <= value < 2**63:
                    raise DataError(f"{field}[{where}] is an integer beyond 64 bits; expected "
                                    "a number of the run's range")
                if isinstance(value, bool) or not isinstance(value, int | float):
                    shown = f" ({shorten(repr(value))})" if isinstance(value, str) else ""
                    raise DataError(f"{field}[{where}] is {json_type(value)}{shown}; expected a "
                                    "number")
        return self.check_input(x, prep, field, warn)

    def input_schema(self, prep) -> dict:
        shape = list(prep.sample_shape)
        return {"kind": "arrays", "sample_shape": shape,
                "send": f"one nested list of numbers of shape {tuple(shape)} per sample"}


def _plain(value):
    """A numpy scalar as the Python value JSON gave (for `json_type`)."""
    return value.item() if isinstance(value, np.generic) else value


def _ragged(values: list, field: str) -> str:
    shapes = []
    for i, sample in enumerate(values):
        try:
            shapes.append(np.asarray(sample).shape)
        except ValueError:
            return f"{field}[{i}]: a ragged nested list; expected one rectangular list of numbers"
        if shapes[i] != shapes[0]:
            return (f"{field}[{i}]: a nested list of shape {shapes[i]}, but {field}[0] has shape "
                    f"{shapes[0]}; expected every sample of one shape")
    return f"{field}: a ragged nested list; expected one rectangular list of numbers per sample"


class BuiltinSource(ArraySource):
    """`mnist`, `fashion_mnist`, `cifar10`, `cifar100` and `digits`."""

    def header_info(self) -> DataInfo:
        shape, classes, names = BUILTIN[self.cfg.name]
        return DataInfo(shape, classes, list(names))

    def read(self) -> dict:
        if self.cfg.name == "digits":
            return _load_digits()
        return _load_keras_dataset(self.cfg.name)


class NpzSource(ArraySource):
    """`dataset: {name: npz, path: FILE.npz}`: `x_train`, `y_train`, optionally `x_test`,
    `y_test` and `class_names`."""

    def header_info(self) -> DataInfo:
        return _describe_npz(Path(self.cfg.path), self.cfg.task)

    def read(self) -> dict:
        arrays = read_npz(Path(self.cfg.path))
        for key in ("x_train", "x_test"):
            if key in arrays:
                check_finite(arrays[key], key, self.cfg.path)
        return arrays


def _load_digits() -> dict:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return {"x_train": digits.images.astype("float32"), "y_train": digits.target}


def _load_keras_dataset(name: str) -> dict:
    local = _data_dir_file(name)
    if local is not None:
        return read_npz(local)
    import keras

    try:  # Keras prints its download progress on stdout, which belongs to the result
        with contextlib.redirect_stdout(sys.stderr):
            (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as exc:  # Keras wraps every network failure differently
        raise DataError(_download_failed(name, exc)) from exc
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def _data_dir_file(name: str) -> Path | None:
    folder = os.environ.get(DATA_DIR_ENV)
    if folder and (Path(folder) / f"{name}.npz").is_file():
        return Path(folder) / f"{name}.npz"
    return None


def _download_failed(name: str, exc: Exception) -> str:
    folder = os.environ.get(DATA_DIR_ENV)
    where = (f"{DATA_DIR_ENV}={folder} holds no {name}.npz" if folder
             else f"{DATA_DIR_ENV} is not set")
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (f"dataset '{name}' is not on this machine and could not be downloaded ({reason}). "
            f"dlmine looks first for {name}.npz (arrays x_train, y_train, x_test, y_test, as in "
            f"Keras' own mnist.npz) in ${DATA_DIR_ENV}, and {where}. Put the file there, or "
            "try configs/digits_cnn.yaml, which needs no network.")


def _describe_npz(path: Path, task: str) -> DataInfo:
    check_regular_file(path, "an .npz file")
    header = npz_headers(path)  # "not a readable .npz file" when it is not one
    if "x_train" not in header:
        raise DataError(f"{path}: missing array x_train; expected x_train, y_train and "
                        "optionally x_test, y_test")
    shape, dtype = header["x_train"]
    if dtype.hasobject:
        raise DataError(PICKLED.format(path=path))
    if not shape or shape[0] == 0:
        raise DataError(f"{path}: x_train is empty")
    names: list = []
    classes = None
    if task == "classification":
        try:
            with np.load(path, allow_pickle=False) as npz:
                labels = {k: npz[k] for k in ("y_train", "y_test") if k in npz.files}
                for key, y in labels.items():  # one-hot rows would read as classes 0 and 1
                    if y.ndim > 1 and int(np.prod(y.shape[1:])) != 1:
                        raise DataError(not_one_label(path, key, y.shape))
                labels = {k: y.reshape(-1) for k, y in labels.items()}
                if "class_names" in npz.files:
                    names = [str(n) for n in npz["class_names"]]
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise DataError(PICKLED.format(path=path)) from None
            raise DataError(f"{path}: not a readable .npz file ({exc})") from None
        labels = {k: y for k, y in labels.items() if len(y) and np.issubdtype(y.dtype, np.number)}
        if "y_train" in labels:
            check_classes(labels["y_train"], path, "y_train")
        classes = max(int(np.max(y)) + 1 for y in labels.values()) if labels else None
        names = names or [str(i) for i in range(classes or 0)]
    return DataInfo(tuple(shape[1:]), classes, names)
