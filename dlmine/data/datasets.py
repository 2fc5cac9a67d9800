"""Named datasets and `.npz` files -> train / validation / test splits.

`describe` tells the sample shape and classes without loading the data, so that
`dlmine check` can build the model first; `load` reads the arrays, applies
`limit` and the seeded splits, and fingerprints what it read.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlmine.config.schema import DatasetConfig
from dlmine.errors import DataError

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


@dataclass
class DataInfo:
    """What the model needs to know before any data loads.

    `kind` is `arrays` (numbers of a fixed shape), `table` (raw columns, encoded by the
    preprocessing) or `text` (one string per sample); `columns` holds a table's feature
    columns and their kinds, `table_layout` its encoder's `layout()` (fitted on the
    training split).
    """

    sample_shape: tuple
    num_classes: int | None
    class_names: list = field(default_factory=list)
    kind: str = "arrays"
    columns: dict = field(default_factory=dict)
    table_layout: dict | None = None


NEEDS_DATA = ("csv", "parquet", "text")  # their input shape is known only from the data


@dataclass
class Splits:
    """The arrays of one run, before preprocessing; `x_val` is None without validation."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    info: DataInfo
    fingerprint: str

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name == "validation" and self.x_val is None:
            raise DataError("this run has no validation split (dataset.validation_split is null)")
        return {"train": (self.x_train, self.y_train), "validation": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test)}[name]


def describe(cfg: DatasetConfig) -> DataInfo:
    """The sample shape and classes of a dataset, reading no more than array headers."""
    if cfg.name in NEEDS_DATA:
        raise ValueError(f"describe() cannot tell the shape of '{cfg.name}' data; load() it")
    if cfg.name in BUILTIN:
        shape, classes, names = BUILTIN[cfg.name]
        info = DataInfo(shape, classes, list(names))
    elif cfg.name == "images":
        from dlmine.data.files import image_info

        shape, names = image_info(cfg)
        info = DataInfo(shape, len(names), names)
    elif Path(cfg.path).is_dir():
        info = _describe_shards(Path(cfg.path), cfg.task)
    else:
        info = _describe_npz(Path(cfg.path), cfg.task)
    if cfg.task == "regression":
        info.num_classes, info.class_names = None, []
    if cfg.class_names:
        info.class_names = list(cfg.class_names)
    return info


def load(cfg: DatasetConfig, seed: int) -> Splits:
    """Load a dataset and split it: test (when the source has none), limit, validation.

    Raises:
        DataError: the file is missing, unreadable, or its arrays do not fit together.
    """
    arrays = _read_source(cfg)
    x_train, y_train = arrays["x_train"], _labels(arrays["y_train"], cfg, "y_train")
    if "x_test" in arrays:
        x_test, y_test = arrays["x_test"], _labels(arrays["y_test"], cfg, "y_test")
    else:
        x_train, x_test, y_train, y_test = _split(x_train, y_train, cfg.test_split, seed, cfg)
    if cfg.limit is not None:
        x_train, y_train = _head(x_train, cfg.limit), y_train[: cfg.limit]
    fingerprint = _fingerprint(x_train, y_train, x_test, y_test)
    x_val = y_val = None
    if cfg.validation_split is not None:
        x_train, x_val, y_train, y_val = _split(x_train, y_train, cfg.validation_split, seed, cfg)
    info = _info_from(arrays, cfg, x_train)
    if cfg.task == "classification":
        seen = int(max(y_train.max(), y_test.max())) + 1
        info.num_classes = max(info.num_classes or 0, seen)
        if len(info.class_names) < info.num_classes:
            info.class_names = [str(i) for i in range(info.num_classes)]
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, info, fingerprint)


def _read_source(cfg: DatasetConfig) -> dict:
    from dlmine.data import files

    if cfg.name == "npz" and Path(cfg.path).is_dir():
        from dlmine.data.shards import read_shards

        return read_shards(Path(cfg.path))
    if cfg.name == "npz":
        return _read_npz(Path(cfg.path))
    if cfg.name == "digits":
        return _load_digits()
    if cfg.name in ("csv", "parquet"):
        return files.load_table(cfg)
    if cfg.name == "text":
        return files.load_text(cfg)
    if cfg.name == "images":
        return files.load_images(cfg)
    return _load_keras_dataset(cfg.name)


def _info_from(arrays: dict, cfg: DatasetConfig, x_train) -> DataInfo:
    """The DataInfo of loaded data; a table's width is that of its encoder on `x_train`."""
    if cfg.name in ("csv", "parquet"):
        info = DataInfo((0,), None, list(arrays.get("class_names") or []), "table",
                        arrays["columns"])
        fit_table_info(info, x_train)
    elif cfg.name == "text":
        info = DataInfo((1,), None, list(arrays["class_names"]), "text")
    else:
        info = describe(cfg)
    if cfg.task == "regression":
        info.num_classes, info.class_names = None, []
    elif info.num_classes is None:
        info.num_classes = len(info.class_names)
    if cfg.class_names:
        info.class_names = list(cfg.class_names)
    return info


def fit_table_info(info: DataInfo, x_train) -> DataInfo:
    """Set a table's encoded width and layout from an encoder fitted on `x_train`."""
    from dlmine.data.tabular import TableEncoder

    encoder = TableEncoder(info.columns).fit(x_train)
    info.sample_shape, info.table_layout = (encoder.width(),), encoder.layout()
    return info


def _head(x, n: int):
    from dlmine.data.shards import is_stream

    return x.take(np.arange(min(n, len(x)))) if is_stream(x) else x[:n]


def _split(x, y, fraction, seed, cfg):
    """(x_kept, x_held, y_kept, y_held), stratified for classification; shards are split by
    row positions, and keep their rows in shard order."""
    from dlmine.data.shards import is_stream

    if is_stream(x):
        kept, held, _, _ = _split(np.arange(len(x)), y, fraction, seed, cfg)
        return x.take(kept), x.take(held), y[np.sort(kept)], y[np.sort(held)]
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y) if cfg.task == "classification" else None
    stratify = y if counts is not None and counts[counts > 0].min() >= 2 else None
    held = max(1, int(round(len(x) * fraction)))
    classes = np.count_nonzero(counts) if counts is not None else 0
    if stratify is not None and min(held, len(x) - held) < classes:
        stratify = None  # a side with fewer samples than classes cannot be stratified
    if len(x) - held < 1:
        raise DataError(f"dataset '{cfg.name}' has {len(x)} samples, too few to hold out "
                        f"{fraction} of them")
    return train_test_split(x, y, test_size=held, random_state=seed, stratify=stratify)


def _labels(y: np.ndarray, cfg: DatasetConfig, key: str) -> np.ndarray:
    if cfg.task == "regression":
        return y.astype("float32")
    y = y.reshape(len(y), -1)
    if y.shape[1] != 1:
        raise DataError(f"{key} has shape {y.shape}: expected one integer class label per "
                        "sample (one-hot labels are made by preprocessing.labels: onehot)")
    y = y[:, 0]
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{key} holds {y.dtype} values that are not whole numbers: "
                            "expected integer class labels 0..N-1 (or dataset.task: regression)")
    if len(y) and y.min() < 0:
        raise DataError(f"{key} holds the label {y.min()}: expected class labels 0..N-1")
    return y.astype("int64")


def _fingerprint(*arrays) -> str:
    from dlmine.data import shards

    digest = hashlib.sha256()
    hashed: set = set()
    for array in arrays:
        if shards.is_stream(array):  # the shards' bytes (once), and which rows are taken
            shards.fingerprint([f for f in array.files if f not in hashed], digest)
            hashed.update(array.files)
            for rows in array.rows:
                digest.update(np.ascontiguousarray(rows, dtype="int64").tobytes())
            continue
        if hasattr(array, "columns"):  # a table: hash its columns' names and every value
            import pandas as pd

            digest.update(",".join(array.columns).encode())
            array = pd.util.hash_pandas_object(array, index=False).to_numpy()
        elif array.dtype == object:  # texts
            array = np.array([hashlib.sha256(str(v).encode()).digest() for v in array])
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return "sha256:" + digest.hexdigest()


# --- sources -----------------------------------------------------------------------------------

def _load_digits() -> dict:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return {"x_train": digits.images.astype("float32"), "y_train": digits.target}


def _load_keras_dataset(name: str) -> dict:
    local = _data_dir_file(name)
    if local is not None:
        return _read_npz(local)
    import contextlib
    import sys

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


_PICKLED = ("{path}: holds Python objects (pickled arrays), which dlmine does not load; save "
            "plain numeric arrays")


def _read_npz(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a readable .npz file (File is not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(_PICKLED.format(path=path) + f" ({exc})") from None
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    _check_npz_keys(path, arrays)
    return arrays


def _check_npz_keys(path: Path, arrays: dict) -> None:
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if ("x_test" in arrays) != ("y_test" in arrays):
        missing.append("y_test" if "x_test" in arrays else "x_test")
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}; expected x_train, "
                        f"y_train and optionally x_test, y_test; found {', '.join(arrays) or 'none'}")
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        if x in arrays and len(arrays[x]) != len(arrays[y]):
            raise DataError(f"{path}: {x} has {len(arrays[x])} samples but {y} has "
                            f"{len(arrays[y])}; expected one label per sample")
        if x in arrays and not np.issubdtype(arrays[x].dtype, np.number):
            raise DataError(f"{path}: {x} has dtype {arrays[x].dtype}; expected numbers")
    for key in ("x_train", "x_test"):
        if key in arrays and len(arrays[key]) == 0:
            raise DataError(f"{path}: {key} is empty")


def _describe_shards(folder: Path, task: str) -> DataInfo:
    """A folder of shards: the sample shape from the first shard's header, the classes from
    every shard's labels (their inputs are not read)."""
    from dlmine.data.shards import describe_shards, read_shards

    shape, _ = describe_shards(folder)
    if task != "classification":
        return DataInfo(tuple(shape), None, [])
    arrays = read_shards(folder)
    labels = [arrays[k].reshape(-1) for k in ("y_train", "y_test") if k in arrays]
    labels = [y for y in labels if len(y) and np.issubdtype(y.dtype, np.number)]
    classes = max(int(np.max(y)) + 1 for y in labels) if labels else None  # else load() says
    names = arrays.get("class_names") or [str(i) for i in range(classes or 0)]
    return DataInfo(tuple(shape), classes, names)


def _describe_npz(path: Path, task: str) -> DataInfo:
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    from dlmine.data.shards import npz_headers

    header = npz_headers(path)  # "not a readable .npz file" when it is not one
    if "x_train" not in header:
        raise DataError(f"{path}: missing array x_train; expected x_train, y_train and "
                        "optionally x_test, y_test")
    shape, dtype = header["x_train"]
    if dtype.hasobject:
        raise DataError(_PICKLED.format(path=path))
    if not shape or shape[0] == 0:
        raise DataError(f"{path}: x_train is empty")
    names: list = []
    classes = None
    if task == "classification":
        try:
            with np.load(path, allow_pickle=False) as npz:
                labels = [npz[k].reshape(-1) for k in ("y_train", "y_test") if k in npz.files]
                if "class_names" in npz.files:
                    names = [str(n) for n in npz["class_names"]]
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise DataError(_PICKLED.format(path=path)) from None
            raise DataError(f"{path}: not a readable .npz file ({exc})") from None
        labels = [y for y in labels if len(y) and np.issubdtype(y.dtype, np.number)]
        classes = max(int(np.max(y)) + 1 for y in labels) if labels else None
        names = names or [str(i) for i in range(classes or 0)]
    return DataInfo(tuple(shape[1:]), classes, names)
