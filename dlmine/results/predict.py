"""Predictions of a trained run on new inputs: the saved preprocessing, then a checkpoint.

The run's data source (`Source.read_input`, `Source.check_input`) turns an INPUT path into
the raw samples the run was trained on; the rest (preprocessing, the model, CSV / JSON
Lines) does not depend on the kind of data.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from pathlib import Path

import numpy as np

from dlmine.console import Reporter
from dlmine.data import Preprocessor, Source, source_for
from dlmine.errors import DlmineError, UsageError
from dlmine.model.io import load_checkpoint
from dlmine.rundir import (
    CONFIG,
    RUN_JSON,
    ConfigEdited,
    RunDir,
    atomic_write,
    finite_or_null,
    read_config_mapping,
)

FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
PREDICT_BATCH = 256


def source_of(run: RunDir) -> Source:
    return source_for(run.read_config().dataset)


def predict_outputs(model, x, cfg) -> np.ndarray:
    """The model's outputs on preprocessed inputs `x`, batched as the data source feeds them."""
    source = source_for(cfg.dataset)
    return np.asarray(model.predict(source.as_input(x, batch_size=PREDICT_BATCH),
                                    batch_size=source.predict_batch_size(x, PREDICT_BATCH),
                                    verbose=0))


class Predictor:
    """A run ready to predict: its config, its saved preprocessing and its data source, the
    checkpoint loaded when first needed (`dlmine predict` and `dlmine serve` share it).

    Args:
        run_dir: a run directory.
        checkpoint: `best` or `last`.
        warn: told what a damaged `run.json` costs (no class names, no config check).

    Raises:
        UsageError: the parent folder of `--folds`.
        ConfigEdited: `config.yaml` was edited after training.
    """

    def __init__(self, run_dir: Path, checkpoint: str = "best", warn=None,
                 verb: str = "predict with"):
        self.run = RunDir.open(run_dir)
        self.run.refuse_folds(verb)
        info = run_info(self.run, warn)
        if info is not None and (edits := self.run.config_edits(info)) is not None:
            raise ConfigEdited(self.run.path, edits)
        self.info, self.checkpoint = info or {}, checkpoint
        self.prep = Preprocessor.load(self.run.path)
        self.cfg = self.run.read_config()
        self.source = source_for(self.cfg.dataset)

    @functools.cached_property
    def model(self):
        return load_checkpoint(self.run, self.checkpoint)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs on preprocessed inputs `x` (`predict_arrays`)."""
        return predict_arrays(self.model, x)

    def rows(self, outputs: np.ndarray) -> list[dict]:
        """One record per sample (`records`, or `label_records` for multi-label)."""
        names = class_names(self.info, outputs.shape[-1])
        if self.prep.task == "multi_label":
            return label_records(outputs, names, self.cfg.dataset.threshold,
                                 self.cfg.dataset.label_separator)
        return records(outputs, self.prep.task, names)

    def classes(self) -> list[str]:
        """The class names the rows use; none for a regression."""
        if self.prep.task == "regression":
            return []
        return class_names(self.info, int(self.model.output_shape[-1]))


def predict_arrays(model, x: np.ndarray) -> np.ndarray:
    """The model's outputs on in-memory inputs, `PREDICT_BATCH` samples per `predict_on_batch`:
    the numbers of `model.predict(x, batch_size=PREDICT_BATCH)`, without the data pipeline
    that `predict` sets up on every call (hundreds of ms for one sample)."""
    return np.concatenate([np.asarray(model.predict_on_batch(x[i:i + PREDICT_BATCH]))
                           for i in range(0, len(x), PREDICT_BATCH)])


def predict_file(run_dir: Path, input_path: Path, checkpoint: str, warn=None) -> list[dict]:
    """Predict every sample of `input_path` with a run's preprocessing and checkpoint.

    Args:
        run_dir: a run directory.
        input_path: what the run's data source reads (`Source.read_input`).
        checkpoint: `best` or `last`.
        warn: told what a damaged `run.json` costs (no class names, no config check).

    Returns:
        One record per sample (see `records`).
    """
    predictor = Predictor(run_dir, checkpoint, warn)
    source, path = predictor.source, Path(input_path)
    if not path.exists():
        raise UsageError(f"input not found: {path}")
    x = source.check_input(source.read_input(path), predictor.prep, str(input_path),
                           Reporter().warn)
    rows = predictor.rows(predictor.outputs(predictor.prep.transform_x(x)))
    files = source.input_files(path)
    if files is not None and len(files) == len(rows):  # a folder: each row names its file
        rows = [{"sample": row["sample"], "file": file.name,
                 **{k: v for k, v in row.items() if k != "sample"}}
                for row, file in zip(rows, files, strict=True)]
    return rows


def run_info(run: RunDir, warn=None) -> dict | None:
    """`run.json`, or None when it cannot be read: predictions go on, `warn` says at what cost."""
    try:
        info = run.read_json(RUN_JSON)
    except DlmineError as exc:
        if warn is not None:
            warn(f"{exc}; the classes are named by their numbers, and {CONFIG} is not checked "
                 "against its config_sha256")
        return None
    return info if isinstance(info, dict) else None


def class_names(info: dict, count: int) -> list[str]:
    """The run's class names (`run.json`), padded with label numbers up to `count` (2 for sigmoid)."""
    found = info.get("class_names") if isinstance(info, dict) else None
    names = [str(n) for n in found] if isinstance(found, list) else []
    count = max(count, 2)
    return names[:count] + [str(i) for i in range(len(names), count)]


def records(outputs: np.ndarray, task: str, names: list[str]) -> list[dict]:
    """Model outputs as one dict per sample.

    Returns:
        Classification: `{"sample", "class", "class_index", "probabilities": {name: p}}`
        (one sigmoid output p becomes `[1 - p, p]`); regression: `{"sample", "value"}`
        (a list when the model has several outputs).
    """
    outputs = outputs.reshape(len(outputs), -1)
    if task == "regression":
        values = [[_short(v) for v in row] for row in outputs]
        return [{"sample": i, "value": v[0] if len(v) == 1 else v} for i, v in enumerate(values)]
    if outputs.shape[1] == 1:
        outputs = np.concatenate([1 - outputs, outputs], axis=1)
    out = []
    for i, row in enumerate(outputs):
        best = int(np.argmax(row))
        out.append({"sample": i, "class": names[best], "class_index": best,
                    "probabilities": {n: _short(p) for n, p in zip(names, row, strict=False)}})
    return out


def label_records(outputs: np.ndarray, names: list[str], threshold: float,
                  separator: str) -> list[dict]:
    """Multi-label outputs as one dict per sample: `{"sample", "labels", "probabilities"}`,
    `labels` being every label whose output is at least `threshold`, joined by `separator`."""
    return [{"sample": i, "labels": separator.join(n for n, p in zip(names, row, strict=True)
                                                   if p >= threshold),
             "probabilities": {n: _short(p) for n, p in zip(names, row, strict=True)}}
            for i, row in enumerate(outputs)]


def _short(value) -> float:
    """The shortest decimal that reads back as the same float32 (no 0.30000001192092896)."""
    return float(str(np.float32(value)))


def check_output(output: Path | None, run_dir: Path, input_path: Path | None = None,
                 input_name: str = "the input file") -> None:
    """Refuse, before any work, an `--output` that would overwrite a file of the run (only
    `predictions/` is for predictions, made when first written to), the input itself, a data
    file the run was trained on (or a file in its data folder), or whose folder does not exist.

    Raises:
        UsageError: it would, or its folder is missing.
    """
    if output is None:
        return
    target, run = Path(output).resolve(), Path(run_dir).resolve()
    if input_path is not None and target == Path(input_path).resolve():
        raise UsageError(f"--output {output} is {input_name}; the output never overwrites its "
                         "input")
    inside = _in_predictions(output, run_dir)
    for data, key in ({} if inside else _data_files(run_dir)).items():
        if target == data or target.is_relative_to(data):
            what = "is the data file" if target == data else "is inside the data folder"
            raise UsageError(f"--output {output} {what} the run was trained on ({key}: {data}); "
                             "write the output elsewhere")
    if target.is_relative_to(run) and not inside:
        raise UsageError(f"--output {output}: inside the run directory {run_dir}; write "
                         f"predictions elsewhere, or under {run_dir}/predictions/")
    if not inside and not target.parent.is_dir():
        raise UsageError(f"--output {output}: the folder {Path(output).parent} does not exist")


def _data_files(run_dir: Path) -> dict[Path, str]:
    """The files and folders the run's `config.yaml` reads, resolved, with their keys."""
    dataset = (read_config_mapping(Path(run_dir) / CONFIG) or {}).get("dataset")
    dataset = dataset if isinstance(dataset, dict) else {}
    inter = dataset.get("interactions") if isinstance(dataset.get("interactions"), dict) else {}
    named = {"dataset.path": dataset.get("path"), "dataset.test_path": dataset.get("test_path"),
             "dataset.interactions.users": inter.get("users"),
             "dataset.interactions.items": inter.get("items")}
    return {Path(value).resolve(): key for key, value in named.items()
            if isinstance(value, str) and value}


def write_output(output: Path, text: str, run_dir: Path) -> None:
    """`text` into `output` atomically, making `RUN_DIR/predictions/...` when it is there."""
    if _in_predictions(output, run_dir):
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(Path(output), text)


def _in_predictions(output: Path, run_dir: Path) -> bool:
    return Path(output).resolve().is_relative_to(Path(run_dir).resolve() / "predictions")


def output_format(path: Path | None) -> str:
    """`csv` or `jsonl` from `--output`'s suffix (`csv` without one), checked before any work."""
    if path is None:
        return "csv"
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UsageError(f"--output {path}: expected a file ending .csv (CSV) or .jsonl (JSON "
                         f"Lines); received '{Path(path).suffix or 'no extension'}'")
    return fmt


def render(rows: list[dict], fmt: str) -> str:
    """Records as CSV (one `prob_<class>` column per class, or `value`) or JSON Lines (a NaN,
    which JSON cannot hold, as null)."""
    if fmt == "jsonl":
        return "".join(json.dumps(finite_or_null(row)) + "\n" for row in rows)
    flat = [_flat(row) for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(flat[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def _flat(row: dict) -> dict:
    out = {k: v for k, v in row.items() if k not in ("probabilities", "value")}
    for name, p in row.get("probabilities", {}).items():
        out[f"prob_{name}"] = p
    value = row.get("value")
    if isinstance(value, list):
        out.update({f"value_{i}": v for i, v in enumerate(value)})
    elif value is not None:
        out["value"] = value
    return out


def split_inputs(run: RunDir, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """A split of the run's data, rebuilt from its config and seed, through the saved preprocessing.

    Returns:
        `(x, y)`: the model's inputs and the raw labels (integers, or targets for regression).
    """
    cfg = run.read_config()
    x, y = source_for(cfg.dataset).load(cfg.seed).split(split)
    return Preprocessor.load(run.path).transform_x(x), y
