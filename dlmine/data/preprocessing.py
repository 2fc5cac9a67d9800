"""Preprocessing fitted on the training split only, saved with the run, applied everywhere.

The state (`preprocessing.json`, plus `preprocessing.npz` for fitted statistics)
is what `evaluate` and any later prediction apply: they never refit.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from dlmine.config.schema import PreprocessingConfig, TextConfig
from dlmine.data.shards import ShardSet, statistics
from dlmine.data.tabular import TableEncoder
from dlmine.data.vocabulary import Vocabulary
from dlmine.errors import DataError
from dlmine.rundir import json_text

STATE_JSON = "preprocessing.json"
STATE_NPZ = "preprocessing.npz"


class Preprocessor:
    """Turns raw arrays into model inputs and targets.

    Args:
        cfg: the `preprocessing` section.
        task: `classification` or `regression`.
        num_classes: for one-hot labels.
        sample_shape: the raw shape of one sample, checked again at transform time.

    Example:
        >>> prep = Preprocessor(cfg, "classification", 10, (28, 28)).fit(x_train)
        >>> x, y = prep.transform(x_test, y_test)
    """

    def __init__(self, cfg: PreprocessingConfig, task: str, num_classes: int | None,
                 sample_shape: tuple, kind: str = "arrays", columns: dict | None = None):
        self.cfg = cfg
        self.task = task
        self.num_classes = num_classes
        self.sample_shape = tuple(sample_shape)
        self.kind = kind
        self.encoder = None
        # interactions: the id vocabularies fitted on the training split (`dlmine.data.interactions`)
        self.vocabularies = columns if kind == "interactions" else None
        if kind == "table":
            self.encoder = TableEncoder(columns or {})
        self.vocabulary = Vocabulary(cfg.text) if kind == "text" else None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    @classmethod
    def for_data(cls, cfg: PreprocessingConfig, task: str, info) -> Preprocessor:
        """The preprocessor of data described by a `DataInfo`."""
        return cls(cfg, task, info.num_classes, info.sample_shape, info.kind, info.columns)

    def output_shape(self) -> tuple:
        """The shape of one preprocessed sample: what the model's input is built on."""
        if self.vocabulary is not None:
            return self.vocabulary.output_shape()
        if self.kind in ("table", "interactions"):
            return self.sample_shape
        shape = self.sample_shape
        if self.cfg.reshape is not None:
            shape = _reshaped(shape, self.cfg.reshape)
        if self.cfg.add_channel_axis:
            shape = (*shape, 1)
        return tuple(shape)

    def fit(self, x_train: np.ndarray) -> Preprocessor:
        """Fit the table encoder, the text vocabulary or the statistics of `standardize`, on the
        training inputs only."""
        if self.encoder is not None:
            self.encoder.fit(x_train)
            self.sample_shape = (self.encoder.width(),)
            return self
        if self.vocabulary is not None:
            self.vocabulary.fit(x_train)
            return self
        if self.kind == "interactions":
            return self
        if self.cfg.standardize and isinstance(x_train, ShardSet):  # one shard at a time
            mean, std = statistics(x_train, self._scaled, self.cfg.standardize == "feature")
            self.mean = np.asarray(mean, dtype="float32")
            self.std = np.where(std > 1e-7, std, 1.0).astype("float32")
        elif self.cfg.standardize:
            x = self._scaled(x_train)
            axis = None if self.cfg.standardize == "global" else 0
            self.mean = np.asarray(x.mean(axis=axis, dtype="float64"), dtype="float32")
            std = np.asarray(x.std(axis=axis, dtype="float64"), dtype="float32")
            self.std = np.where(std > 1e-7, std, 1.0).astype("float32")  # constant pixels
        return self

    def transform_x(self, x) -> np.ndarray:
        if self.encoder is not None:
            return self.encoder.transform(x)
        if self.vocabulary is not None:
            return self.vocabulary.transform(x)
        if self.kind == "interactions":  # (user, item) codes of the vocabularies
            return np.asarray(x, dtype="int32")
        if isinstance(x, ShardSet):  # transformed as each shard is read
            self._check_shape(x)
            return x.with_transform(self._transform_array, self.output_shape())
        return self._transform_array(x)

    def _check_shape(self, x) -> None:
        if tuple(x.shape[1:]) != self.sample_shape:
            raise DataError(f"inputs have sample shape {tuple(x.shape[1:])}, but this run was "
                            f"trained on {self.sample_shape}")

    def _transform_array(self, x: np.ndarray) -> np.ndarray:
        self._check_shape(x)
        x = self._scaled(x)
        if self.cfg.standardize:
            x = (x - self.mean) / self.std
        shape = self.output_shape()
        return np.ascontiguousarray(x.reshape((len(x), *shape)), dtype="float32")

    def transform_y(self, y: np.ndarray) -> np.ndarray:
        if self.task in ("regression", "multi_label", "rating", "ranking"):
            return y.astype("float32")
        if self.cfg.labels == "onehot":
            return np.eye(self.num_classes, dtype="float32")[y]
        return y

    def transform(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.transform_x(x), self.transform_y(y)

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        x = x.astype("float32", copy=True)
        if self.cfg.rescale is not None:
            x *= np.float32(self.cfg.rescale)
        return x

    # --- state in the run directory ------------------------------------------------------------

    def state_files(self) -> dict[str, bytes]:
        """The files that hold this preprocessor, by name, for an atomic write."""
        meta = {"config": asdict(self.cfg), "task": self.task, "num_classes": self.num_classes,
                "kind": self.kind, "sample_shape": list(self.sample_shape),
                "output_shape": list(self.output_shape()),
                "statistics": STATE_NPZ if self.mean is not None else None}
        if self.vocabularies is not None:
            meta["columns"] = self.vocabularies
        if self.encoder is not None:
            meta["columns"] = self.encoder.kinds
            meta["encoder"] = self.encoder.state
        if self.vocabulary is not None:
            meta["vocabulary"] = self.vocabulary.state()
        files = {STATE_JSON: json_text(meta, Path(STATE_JSON)).encode()}
        if self.mean is not None:
            buffer = io.BytesIO()
            np.savez(buffer, mean=self.mean, std=self.std)
            files[STATE_NPZ] = buffer.getvalue()
        return files

    @classmethod
    def load(cls, run_dir: Path) -> Preprocessor:
        """The preprocessor saved in a run directory, exactly as it was fitted."""
        path = Path(run_dir) / STATE_JSON
        try:
            meta = json.loads(path.read_text())
            prep = cls(_config(meta["config"]), meta["task"], meta["num_classes"],
                       tuple(meta["sample_shape"]), meta.get("kind", "arrays"),
                       meta.get("columns"))
            if prep.encoder is not None:
                prep.encoder.state = meta["encoder"]
            if prep.vocabulary is not None:
                prep.vocabulary = Vocabulary(prep.cfg.text, meta["vocabulary"])
            if meta.get("statistics"):
                with np.load(Path(run_dir) / meta["statistics"], allow_pickle=False) as npz:
                    prep.mean, prep.std = npz["mean"], npz["std"]
        except FileNotFoundError as exc:
            raise DataError(f"{exc.filename}: missing; the run directory's preprocessing state "
                            "is needed to apply the same transforms") from None
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise DataError(f"{path}: damaged preprocessing state ({exc})") from None
        return prep


def _config(saved: dict) -> PreprocessingConfig:
    saved = dict(saved)
    saved["text"] = TextConfig(**saved.get("text", {}))
    return PreprocessingConfig(**saved)


def _reshaped(shape: tuple, target: list) -> tuple:
    size = int(np.prod(shape))
    known = int(np.prod([d for d in target if d != -1]))
    if -1 in target:
        if known == 0 or size % known:
            raise DataError(f"preprocessing.reshape {target} does not fit samples of shape "
                            f"{shape} ({size} values)")
        return tuple(size // known if d == -1 else d for d in target)
    if known != size:
        raise DataError(f"preprocessing.reshape {target} holds {known} values, but samples of "
                        f"shape {shape} hold {size}")
    return tuple(target)
