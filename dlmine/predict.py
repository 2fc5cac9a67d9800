"""Predictions of a trained run on new inputs: the saved preprocessing, then a checkpoint.

`read_input` is the one place that turns an INPUT path into the raw array a run was
trained on; every dataset kind adds its reader there. The rest (checks, preprocessing,
the model, CSV / JSON Lines) does not depend on where the inputs came from.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from dlmine.data.preprocessing import STATE_JSON, Preprocessor
from dlmine.errors import DataError, DlmineError, UsageError
from dlmine.rundir import CONFIG, RUN_JSON, RunDir

INPUT_ARRAYS = ("x", "x_test", "x_train")  # the first one present in an .npz is predicted
FORMATS = {".csv": "csv", ".jsonl": "jsonl"}
PREDICT_BATCH = 256


def read_input(run: RunDir, path: Path) -> np.ndarray:
    """The raw inputs held in `path`, before preprocessing, as the run's dataset kind reads them.

    Args:
        run: the run directory (its config tells how its dataset is read).
        path: an `.npz` (the first of the arrays `x`, `x_test`, `x_train`) or an `.npy` file.

    Returns:
        The array of samples, first axis the samples, unchecked.

    Raises:
        UsageError: `path` is missing or of a kind this run cannot read.
        DataError: the file cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"input not found: {path}")
    kind = _dataset_of(run)
    if kind["name"] in ("csv", "parquet", "text", "images"):
        return _read_file_input(kind, path)
    readers = {".npz": _read_npz, ".npy": _read_npy}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise UsageError(f"{path}: cannot read '{path.suffix or path.name}' files; expected an .npz "
                         f"file (array {', '.join(INPUT_ARRAYS[:-1])} or {INPUT_ARRAYS[-1]}) or an .npy file")
    return reader(path)


def _dataset_of(run: RunDir) -> dict:
    import yaml

    try:
        return yaml.safe_load((run / CONFIG).read_text())["dataset"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise DataError(f"{run / CONFIG}: cannot read the run's dataset section ({exc})") from None


def _read_file_input(dataset: dict, path: Path):
    """Tables: a CSV or Parquet file of raw columns. Text: a `.txt` file (one text), a folder
    of `.txt` files (one text each) or a CSV with the text column. Images: one image file or a
    folder of images, resized as in training."""
    from dlmine.data import files, tabular

    name, suffix = dataset["name"], path.suffix.lower()
    if name in ("csv", "parquet"):
        if suffix not in (".csv", ".parquet"):
            raise UsageError(f"{path}: this run was trained on a table; expected a .csv or "
                             f".parquet file of its columns, received '{suffix or path.name}'")
        return tabular.read_table(path, "parquet" if suffix == ".parquet" else "csv")
    if name == "text":
        if path.is_dir():
            texts = [p.read_text(encoding="utf-8") for p in sorted(path.glob("*.txt"))]
        elif suffix == ".csv":
            frame = tabular.read_table(path, "csv")
            column = dataset.get("text_column") or "text"
            if column not in frame.columns:
                raise DataError(f"{path}: expected a column '{column}' holding the texts; "
                                f"received the columns {', '.join(frame.columns)}")
            texts = frame[column].fillna("").astype(str).tolist()
        else:
            texts = [path.read_text(encoding="utf-8")]
        if not texts:
            raise DataError(f"{path}: no texts (.txt files) to predict")
        return np.asarray(texts, dtype=str)
    paths = sorted(p for p in path.iterdir() if p.suffix.lower() in files.IMAGE_SUFFIXES) \
        if path.is_dir() else [path]
    if not paths:
        raise DataError(f"{path}: no images ({', '.join(sorted(files.IMAGE_SUFFIXES))})")
    return files.read_images(paths, dataset["image_size"], dataset.get("color_mode", "rgb"))


def _read_npz(path: Path) -> np.ndarray:
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a readable .npz file (File is not a zip file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            key = next((k for k in INPUT_ARRAYS if k in npz.files), None)
            if key is None:
                raise DataError(f"{path}: expected an array named {', '.join(INPUT_ARRAYS[:-1])} or "
                                f"{INPUT_ARRAYS[-1]}; found: {', '.join(npz.files) or 'none'}")
            return npz[key]
    except ValueError as exc:
        raise DataError(_unreadable(path, exc)) from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(_unreadable(path, exc)) from None


def _unreadable(path: Path, exc: Exception) -> str:
    if "allow_pickle" in str(exc):
        return (f"{path}: holds Python objects (pickled arrays), which dlmine does not load; "
                "expected plain numeric arrays")
    return f"{path}: not a readable numpy file ({exc})"


def check_inputs(x: np.ndarray, sample_shape: tuple, source: str) -> np.ndarray:
    """`x` as a batch of samples of `sample_shape`, or a `DataError` saying expected vs received.

    Args:
        x: the raw inputs; one sample of exactly `sample_shape` is taken as a batch of one.
        sample_shape: the raw sample shape the run was trained on (`preprocessing.json`).
        source: names the input in messages.

    Returns:
        `x` with a leading sample axis.
    """
    sample_shape = tuple(sample_shape)
    if x.dtype.kind not in "biuf":
        kind = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers"}
        raise DataError(f"{source} holds {kind.get(x.dtype.kind, 'non-numeric values')} (dtype "
                        f"{x.dtype}); expected numbers (integers or floats)")
    if tuple(x.shape) == sample_shape:
        x = x[np.newaxis]
    if x.ndim < 1 or tuple(x.shape[1:]) != sample_shape:
        expected = ", ".join(["N", *map(str, sample_shape)])
        raise DataError(f"{source}: expected samples of shape {sample_shape} (an array of shape "
                        f"({expected}), as {STATE_JSON} says); received an array of shape "
                        f"{tuple(x.shape)}, samples of shape {tuple(x.shape[1:])}")
    if len(x) == 0:
        raise DataError(f"{source} holds no samples; expected at least one of shape {sample_shape}")
    return x


def predict_file(run_dir: Path, input_path: Path, checkpoint: str) -> list[dict]:
    """Predict every sample of `input_path` with a run's preprocessing and checkpoint.

    Args:
        run_dir: a run directory.
        input_path: what `read_input` reads.
        checkpoint: `best` or `last`.

    Returns:
        One record per sample (see `records`).
    """
    from dlmine.evaluate import load_checkpoint

    run = RunDir.open(run_dir)
    prep = Preprocessor.load(run.path)
    x = read_input(run, input_path)
    if getattr(prep, "kind", "arrays") == "arrays":  # tables and texts are checked by their encoders
        x = check_inputs(x, prep.sample_shape, str(input_path))
    model = load_checkpoint(run, checkpoint)
    from dlmine.batches import as_input

    outputs = np.asarray(model.predict(as_input(prep.transform_x(x), batch_size=PREDICT_BATCH),
                                       batch_size=None if prep.kind == "text" else PREDICT_BATCH,
                                       verbose=0))
    return records(outputs, prep.task, class_names(run, outputs.shape[-1]))


def class_names(run: RunDir, count: int) -> list[str]:
    """The run's class names (`run.json`), padded with label numbers up to `count` (2 for sigmoid)."""
    try:
        info = run.read_json(RUN_JSON)
    except DlmineError:  # a damaged run.json must not stop predictions: numbers name the classes
        info = {}
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


def _short(value) -> float:
    """The shortest decimal that reads back as the same float32 (no 0.30000001192092896)."""
    return float(str(np.float32(value)))


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
    """Records as CSV (one `prob_<class>` column per class, or `value`) or JSON Lines."""
    if fmt == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows)
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
    from dlmine import data as datamod
    from dlmine.config import load_config

    cfg = load_config(run / CONFIG, check_model=False).config
    x, y = datamod.load(cfg.dataset, cfg.seed).split(split)
    return Preprocessor.load(run.path).transform_x(x), y
