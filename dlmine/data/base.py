"""What every kind of data offers the rest of dlmine: one `Source` per kind, and its splits.

A source owns everything that depends on the kind of data: `describe` (shape and classes
without loading), `read` (the raw arrays), `load` (seeded splits and the fingerprint),
the model's input layers, training batches and inputs for `evaluate` / `predict`, and
reading `predict` input. Nothing outside `dlmine.data` asks what kind of data it holds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlmine.config.loading import Sources
from dlmine.config.schema import Config, DatasetConfig
from dlmine.data.files import check_finite
from dlmine.errors import DataError

NEEDS_TWO = "classification needs at least 2 classes (or set dataset.task: regression)"


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
    # arrays the model holds as frozen lookups, not saved with the preprocessing: a
    # recommender's side features, `{"user": matrix, "item": matrix}` by id code
    tables: dict = field(default_factory=dict)


@dataclass
class Splits:
    """The arrays of one run, before preprocessing; `x_val` is None without validation."""

    x_train: object
    y_train: np.ndarray
    x_val: object | None
    y_val: np.ndarray | None
    x_test: object
    y_test: np.ndarray
    info: DataInfo
    fingerprint: str

    def split(self, name: str) -> tuple:
        if name == "validation" and self.x_val is None:
            raise DataError("this run has no validation split (dataset.validation_split is null)")
        return {"train": (self.x_train, self.y_train), "validation": (self.x_val, self.y_val),
                "test": (self.x_test, self.y_test)}[name]

    def samples(self) -> dict:
        return {"train": len(self.x_train),
                "validation": 0 if self.x_val is None else len(self.x_val),
                "test": len(self.x_test)}


class Source:
    """One kind of data: the arrays built into Keras and scikit-learn, an `.npz` file, ...

    Subclasses set the class attributes and override what differs; `load` is the same
    for every kind: test split (when the data have none), `limit`, validation split.

    Attributes:
        kind: the `DataInfo.kind` of these data.
        shape_from_data: the input shape or the classes are known only from the data (a
            table's encoded width, a text CSV's labels), so `describe` cannot answer and
            `check` loads the data.
        in_memory: the inputs are held in memory (k-fold cuts them).
    """

    kind = "arrays"
    shape_from_data = False
    in_memory = True

    def __init__(self, cfg: DatasetConfig):
        self.cfg = cfg

    # --- before any data loads -----------------------------------------------------------------

    def describe(self) -> DataInfo:
        """The sample shape and classes, reading no more than file headers."""
        if self.cfg.test_path and not Path(self.cfg.test_path).exists():
            raise DataError(f"data file not found: {self.cfg.test_path} (dataset.test_path)")
        info = self.header_info()
        if self.cfg.task == "regression":
            info.num_classes, info.class_names = None, []
        if self.cfg.class_names:
            info.class_names = list(self.cfg.class_names)
        return info

    def header_info(self) -> DataInfo:
        """What `describe` tells, before the config's task and class names are applied."""
        raise NotImplementedError

    def check_config(self, cfg: Config, src: Sources) -> list:
        """Problems of the config that these data cannot train (beyond the schema's)."""
        return []

    # --- loading --------------------------------------------------------------------------------

    def read(self) -> dict:
        """The raw arrays: `x_train`, `y_train`, optionally `x_test`, `y_test`, `class_names`."""
        raise NotImplementedError

    def load(self, seed: int) -> Splits:
        """Read the data and split them: test (when the source has none), limit, validation.

        Raises:
            DataError: the file is missing, unreadable, or its arrays do not fit together.
        """
        cfg = self.cfg
        arrays = self.read()
        x_train, y_train = arrays["x_train"], self.labels(arrays["y_train"], "y_train")
        if cfg.task == "classification":
            check_classes(y_train, self.origin(), "y_train")
        if "x_test" in arrays:
            x_test, y_test = arrays["x_test"], self.labels(arrays["y_test"], "y_test")
            check_test_shape(x_train, x_test, self.origin())
        else:
            x_train, x_test, y_train, y_test = self.split(x_train, y_train, cfg.test_split, seed)
        if cfg.limit is not None:
            x_train, y_train = self.head(x_train, cfg.limit), y_train[: cfg.limit]
            if cfg.task == "classification":
                check_classes(y_train, self.origin(), f"the first {cfg.limit} training samples "
                              "(dataset.limit)", verb="hold",
                              names=_names(arrays))
        fingerprint = self.fingerprint(x_train, y_train, x_test, y_test)
        x_val = y_val = None
        if cfg.validation_split is not None:
            x_train, x_val, y_train, y_val = self.split(x_train, y_train, cfg.validation_split,
                                                        seed)
        info = self.loaded_info(arrays, x_train)
        if cfg.task == "regression":
            info.num_classes, info.class_names = None, []
        elif info.num_classes is None:
            info.num_classes = len(info.class_names)
        own = [str(n) for n in _names(arrays)]
        if cfg.class_names:
            info.class_names = list(cfg.class_names)
        if cfg.task == "classification":
            seen = int(max(y_train.max(), y_test.max())) + 1
            info.num_classes = max(info.num_classes or 0, seen)
            check_class_names(cfg.class_names, info.num_classes, own)
            if len(info.class_names) < info.num_classes:
                info.class_names = [str(i) for i in range(info.num_classes)]
            check_trained_classes(y_train, info, self.origin())
        return Splits(x_train, y_train, x_val, y_val, x_test, y_test, info, fingerprint)

    def loaded_info(self, arrays: dict, x_train) -> DataInfo:
        """The DataInfo of loaded data; most kinds know it before loading."""
        return self.describe()

    def fit_info(self, info: DataInfo, x_train) -> DataInfo:
        """The DataInfo of a training split cut from these data (a k-fold part)."""
        return info

    def origin(self) -> str:
        """Where the data come from, as messages name it: the file, or the built-in dataset."""
        return str(self.cfg.path) if self.cfg.path else f"dataset '{self.cfg.name}'"

    def labels(self, y: np.ndarray, key: str) -> np.ndarray:
        """Integer class labels 0..N-1 (or finite float targets for regression), checked."""
        where = self.origin()
        if self.cfg.task == "regression":
            if np.issubdtype(y.dtype, np.floating):
                check_finite(y, key, where)
            return y.astype("float32")
        y = y.reshape(len(y), -1)
        if y.shape[1] != 1:
            raise DataError(not_one_label(where, key, y.shape))
        y = y[:, 0]
        if not np.issubdtype(y.dtype, np.integer):
            if not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0):
                raise DataError(f"{where}: {key} holds {y.dtype} values that are not whole numbers: "
                                "expected integer class labels 0..N-1 (or dataset.task: "
                                "regression)")
        if len(y) and y.min() < 0:
            raise DataError(f"{where}: {key} holds the label {y.min()}: expected class labels 0..N-1")
        return y.astype("int64")

    def head(self, x, n: int):
        return x[:n]

    def take(self, x, rows: np.ndarray):
        """The samples at `rows` (a k-fold part)."""
        return x[rows]

    def concat(self, a, b):
        return a if b is None else np.concatenate([a, b])

    def split(self, x, y, fraction: float, seed: int):
        """(x_kept, x_held, y_kept, y_held), stratified for classification."""
        from sklearn.model_selection import train_test_split

        counts = np.bincount(y) if self.cfg.task == "classification" else None
        stratify = y if counts is not None and counts[counts > 0].min() >= 2 else None
        held = max(1, int(round(len(x) * fraction)))
        classes = np.count_nonzero(counts) if counts is not None else 0
        if stratify is not None and min(held, len(x) - held) < classes:
            stratify = None  # a side with fewer samples than classes cannot be stratified
        if len(x) - held < 1:
            raise DataError(f"{self.origin()}: {len(x)} samples, too few to hold out {fraction} "
                            "of them")
        return train_test_split(x, y, test_size=held, random_state=seed, stratify=stratify)

    def fingerprint(self, *arrays) -> str:
        """sha256 of what was read: every array's dtype, shape and bytes."""
        digest = hashlib.sha256()
        for array in arrays:
            self.hash_into(digest, array)
        return "sha256:" + digest.hexdigest()

    def hash_into(self, digest, array) -> None:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))

    # --- the model and its inputs ----------------------------------------------------------------

    def input_layers(self, cfg: Config, src: Sources, input_shape: tuple, info: DataInfo):
        """`(inputs, x)`: the model's Keras input and what the config's layers start from."""
        import keras

        inputs = keras.Input(shape=tuple(input_shape), name="inputs")
        return inputs, inputs

    def training_batches(self, x, y, batch_size: int, seed: int, shuffle: bool,
                         first_epoch: int, sample_weight=None, list_size: int = 1):
        """The training batches, in an order keyed to (seed, epoch) (`dlmine.data.batches`);
        `list_size` > 1: a recommender's list loss (`dlmine.config.checks.list_size`)."""
        from dlmine.data.batches import EpochShuffled

        return EpochShuffled(x, y, batch_size, seed, shuffle, first_epoch, sample_weight)

    def validation_data(self, x, y, batch_size: int, list_size: int = 1):
        """`(validation_data, validation_batch_size)` for `fit` (None: Keras' default)."""
        return self.as_input(x, y, batch_size=batch_size), None

    def feed(self, batches):
        """What `fit` takes of `training_batches`."""
        return batches

    def as_input(self, x, y=None, batch_size: int = 32):
        """`x` (and `y`) as `evaluate` and `predict` take them."""
        return x if y is None else (x, y)

    def predict_batch_size(self, x, batch_size: int) -> int | None:
        """The `batch_size` that `evaluate` and `predict` take with `as_input(x)`."""
        return batch_size

    def evaluate(self, model, x, y, cfg: Config, batch_size: int) -> dict | None:
        """The report of data that are evaluated in their own way (a recommender's ranking
        metrics), or None for `evaluate_model`'s metrics."""
        return None

    # --- predict ---------------------------------------------------------------------------------

    def read_input(self, path: Path):
        """The raw inputs in a `predict` INPUT, before preprocessing."""
        raise NotImplementedError

    def input_files(self, path: Path) -> list[Path] | None:
        """The files of a `predict` INPUT folder, in the order `read_input` reads them (their
        names go beside the predictions); None for an input that is one file."""
        return None

    def check_input(self, x, prep, source: str, warn=None):
        """`predict` input as a batch of samples the run's preprocessor `prep` takes, or a
        `DataError` naming `source` (expected vs received); `warn(message)` says what was
        changed (a table's imputed cells)."""
        return x

    # --- serve -----------------------------------------------------------------------------------

    def check_json(self, values: list, prep, field: str, warn=None):
        """`serve` input, a JSON list of raw samples (`field[0]`, `field[1]`, ...), as the
        batch `check_input` gives for the same samples read from a file, or a `DataError`
        naming the field (not for interactions: `serve` answers them with `Recommender`)."""
        raise NotImplementedError

    def input_schema(self, prep) -> dict:
        """What a client of `serve` sends for one sample: `kind`, the shape or the columns,
        and `send`, in words."""
        raise NotImplementedError


def json_type(value) -> str:
    """The JSON name of a decoded value's type, for messages: 'a string', 'an object', ..."""
    if value is None:
        return "null"
    names = {bool: "a boolean", str: "a string", list: "a list", dict: "an object",
             int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def class_folders(path: Path, known: list | None, kind: str) -> list[str]:
    """The class names of a folder of class sub-folders (text and image folders)."""
    names = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(names) < 2 and known is None:
        raise DataError(f"{path}: expected one sub-folder of {kind} per class (at least 2), "
                        f"found {len(names)}")
    if known is not None and set(names) - set(known):
        extra = sorted(set(names) - set(known))[0]
        raise DataError(f"{path}: class folder '{extra}' is not a class of the training data "
                        f"({', '.join(known)})")
    return known or names


def not_one_label(where, key: str, shape: tuple) -> str:
    """The message for labels of more than one value per sample (one-hot rows)."""
    return (f"{where}: {key} has shape {shape}: expected one integer class label per sample "
            "(one-hot labels are made by preprocessing.labels: onehot)")


def check_classes(y: np.ndarray, origin, key: str, verb: str = "holds",
                  names: list | None = None) -> None:
    """Refuse training labels of one class only: nothing to tell apart."""
    present = np.unique(y)
    if len(present) == 1:
        label = present[0]
        if names and 0 <= int(label) < len(names):
            label = f"{label}, '{names[int(label)]}'"
        raise DataError(f"{origin}: {key} {verb} one class only ({label}); {NEEDS_TWO}")


def _names(arrays: dict) -> list:
    """The class names the data carry (an array of an .npz, a list of folders), or []."""
    names = arrays.get("class_names")
    return [] if names is None else list(names)


def check_class_names(given: list | None, num_classes: int, own: list) -> None:
    """`dataset.class_names` must name every class, no more and no fewer."""
    if given and len(given) != num_classes:
        data = f" ({', '.join(map(str, own))})" if len(own) == num_classes else ""
        raise DataError(f"dataset.class_names gives {len(given)} names ({', '.join(given)}), "
                        f"but the data have {num_classes} classes{data}; give one name per "
                        "class, in label order, or null for the data's own names")


def check_trained_classes(y_train: np.ndarray, info, origin) -> None:
    """Every class needs training samples: one without any is never predicted (an empty
    class folder, labels numbered from 1, or its only samples held out for testing)."""
    missing = sorted(set(range(info.num_classes)) - set(np.unique(y_train).tolist()))
    if missing:
        names = ", ".join(f"{i} ('{info.class_names[i]}')" for i in missing[:5])
        raise DataError(f"{origin}: class {names} has no sample in the training split (after "
                        "the test and validation splits and dataset.limit); give each class "
                        "training samples, or leave it out of the data")


def check_test_shape(x_train, x_test, origin) -> None:
    """The test inputs must have the training inputs' sample shape."""
    train, test = getattr(x_train, "shape", None), getattr(x_test, "shape", None)
    if train is not None and test is not None and train[1:] != test[1:]:
        raise DataError(f"{origin}: x_test has sample shape {tuple(test[1:])}, but x_train has "
                        f"{tuple(train[1:])}; the test inputs must have the training inputs' "
                        "shape")
