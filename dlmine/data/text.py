"""Text (`text`): a CSV with a text column and a label, or one folder of `.txt` files per class.

The vocabulary (`dlmine.data.vocabulary.Vocabulary`, part of the preprocessing) is fitted
on the training split and saved in `preprocessing.json`; the model takes what it makes of
a text, token ids of shape (sequence_length,) or a bag of (max_tokens,) floats, so no string reaches
Keras and text trains, evaluates, predicts and exports on every backend.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections import Counter
from pathlib import Path

import numpy as np

from dlmine.config.loading import Sources, valid_list
from dlmine.config.schema import Config, DatasetConfig
from dlmine.data.base import DataInfo, Source, class_folders, json_type
from dlmine.data.files import check_regular_file
from dlmine.data.tabular import check_unique, extra_fields
from dlmine.errors import DataError, UsageError


class TextSource(Source):
    """Texts and their labels; the vocabulary fitted on the training texts makes the inputs."""

    kind = "text"
    shape_from_data = True

    def read(self) -> dict:
        return load_text(self.cfg)

    def labels(self, y: np.ndarray, key: str) -> np.ndarray:
        return y  # made by `encode_labels`: class indices, or 0/1 rows for multi_label

    def loaded_info(self, arrays: dict, x_train) -> DataInfo:
        return DataInfo((1,), None, list(arrays["class_names"]), "text")

    def hash_into(self, digest, array) -> None:
        if array.dtype == object:
            array = np.array([hashlib.sha256(str(v).encode()).digest() for v in array])
        super().hash_into(digest, array)

    def input_layers(self, cfg: Config, src: Sources, input_shape: tuple, info: DataInfo):
        """Token ids (`int32`, 0 = padding, which `Embedding: {mask_zero: true}` masks), or a
        float bag of words."""
        import keras

        if cfg.preprocessing.text.output_mode == "int":
            inputs = keras.Input(shape=tuple(input_shape), dtype="int32", name="token_ids")
        else:
            inputs = keras.Input(shape=tuple(input_shape), name="bag_of_words")
        return inputs, inputs

    def read_input(self, path: Path):
        """A `.txt` file (one text), a folder of `.txt` files (one text each) or a CSV (or
        gzipped `.csv.gz`) with the text column."""
        fix = predict_fix(self.cfg.encoding)
        if path.is_dir():
            texts = [read_text_file(p, self.cfg.encoding, fix) for p in self.input_files(path)]
        elif path.name.lower().endswith((".csv", ".csv.gz")):
            frame = read_csv(path, self.cfg.encoding, fix)
            texts = list(text_column(frame, path, self.cfg.text_column))
        elif path.suffix.lower() == ".txt" or not path.exists():
            texts = [read_text_file(path, self.cfg.encoding, fix)]
        else:
            check_regular_file(path, "a .txt file")
            raise UsageError(f"{path}: a text run predicts a .txt file, a folder of .txt files "
                             f"or a CSV (.csv, .csv.gz) with the column '{self.cfg.text_column}';"
                             f" received a '{path.suffix or 'no extension'}' file")
        if not texts:
            raise DataError(f"{path}: no texts (.txt files) to predict")
        return np.asarray(texts, dtype=object)

    def input_files(self, path: Path) -> list[Path] | None:
        return sorted(path.glob("*.txt")) if path.is_dir() else None

    def check_json(self, values: list, prep, field: str, warn=None):
        """One string per sample."""
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise DataError(f"{field}[{i}]: expected a text (a string); received "
                                f"{json_type(value)}")
        return self.check_input(np.asarray(values, dtype=object), prep, field, warn)

    def input_schema(self, prep) -> dict:
        return {"kind": "text", "send": "one string per sample"}


def load_text(cfg: DatasetConfig) -> dict:
    """Texts from a CSV (`text_column`, `target`) or from class folders of `.txt` files."""
    out: dict = {}
    class_names: list[str] | None = None
    for split, raw in (("train", cfg.path), ("test", cfg.test_path)):
        if raw is None:
            continue
        path = Path(raw)
        if path.is_dir():
            texts, labels, names = _text_folder(path, class_names, cfg.encoding)
        else:
            texts, labels, names = _text_csv(path, cfg, class_names)
        if class_names is None:
            check_classes(path, [v for row in labels for v in row], names,
                          None if path.is_dir() else cfg.target or "label")
        class_names = class_names or names
        out[f"x_{split}"], out[f"y_{split}"] = texts, encode_labels(labels, class_names,
                                                                    cfg.task)
    out["class_names"] = class_names
    return out


def encode_labels(labels: list, names: list, task: str) -> np.ndarray:
    """Class indices, or for `multi_label` one row of 0/1 per text (1 for each of its labels)."""
    index = {name: i for i, name in enumerate(names)}
    if task != "multi_label":
        return np.array([index[row[0]] for row in labels], dtype="int64")
    hot = np.zeros((len(labels), len(names)), dtype="float32")
    for i, row in enumerate(labels):
        hot[i, [index[v] for v in row]] = 1.0
    return hot


TRAINING_FIX = "set dataset.encoding to the file's encoding, e.g. latin-1 or cp1252"


def predict_fix(encoding: str) -> str:
    """What to do with a `predict` input the run's encoding cannot read."""
    return (f"this run reads {encoding} (its dataset.encoding when it trained); convert the "
            f"file to {encoding}")


def read_csv(path: Path, encoding: str, fix: str = TRAINING_FIX):
    """A CSV of text (gzipped when it ends `.gz`), every cell a string, decoded as
    `dataset.encoding` says (`fix` ends the message of a byte it cannot decode)."""
    import pandas as pd

    check_regular_file(path, "a CSV file")
    try:
        raw = path.read_bytes()
        content = decode(gzip.decompress(raw) if path.suffix == ".gz" else raw, path, encoding,
                         fix)
        check_unique(next(csv.reader(io.StringIO(content)), []), path)
        frame = pd.read_csv(io.StringIO(content), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; expected a header row and data rows") from None
    except (pd.errors.ParserError, gzip.BadGzipFile, EOFError) as exc:
        raise DataError(f"{path}: cannot read it as CSV: {str(exc).splitlines()[0]}") from None
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no data rows")
    if not frame.index.equals(pd.RangeIndex(len(frame))):  # a row of more fields than the header
        raise DataError(extra_fields(path, io.StringIO(content)))
    frame.columns = [str(c) for c in frame.columns]
    return frame


def decode(content: bytes, path: Path, encoding: str, fix: str = TRAINING_FIX) -> str:
    """`content` as text, or a `DataError` naming the byte offset and line of the first bad byte."""
    try:
        return content.decode(encoding)
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        start = content.rfind(b"\n", 0, exc.start) + 1
        column = len(content[start:exc.start].decode(encoding, errors="replace")) + 1
        raise DataError(f"{path}: cannot read it as {encoding.upper()} text (byte "
                        f"0x{content[exc.start]:02x} at line {line}, column {column}, byte offset "
                        f"{exc.start}); {fix}") from None


def read_text_file(path: Path, encoding: str, fix: str = TRAINING_FIX) -> str:
    check_regular_file(path, "a .txt file")
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    return decode(content, path, encoding, fix)


def text_column(frame, path: Path, column: str) -> np.ndarray:
    """The texts of `column`; a missing column, or one without any text, is named."""
    if column not in frame.columns:
        raise DataError(f"{path}: text column '{column}' not found (dataset.text_column)"
                        + valid_list(column, list(frame.columns), "Columns"))
    texts = frame[column].to_numpy(dtype=object)
    if not any(t.strip() for t in texts):
        raise DataError(f"{path}: text column '{column}' is empty in all {len(texts)} rows; "
                        "expected text (is dataset.text_column the right column?)")
    return texts


def _text_csv(path: Path, cfg: DatasetConfig, known: list | None):
    frame = read_csv(path, cfg.encoding)
    target = cfg.target or "label"
    texts = text_column(frame, path, cfg.text_column)
    if target not in frame.columns:
        raise DataError(f"{path}: label column '{target}' not found (dataset.target)"
                        + valid_list(target, list(frame.columns), "Columns"))
    several = cfg.task == "multi_label"
    labels = [[v.strip() for v in (cell.split(cfg.label_separator) if several else [cell])]
              for cell in frame[target]]
    for row, values in enumerate(labels):
        if "" in values:
            raise DataError(f"{path}: column '{target}', row {row + 2}: "
                            + ("a label is empty" if several and len(values) > 1 else
                               "the label is missing"))
    names = known or sorted({v for row in labels for v in row})
    for row, values in enumerate(labels):
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise DataError(f"{path}: column '{target}', row {row + 2}: label '{unknown[0]}' "
                            f"is not a class of the training data ({', '.join(names)})")
    return texts, labels, names


def check_classes(path: Path, labels: list, names: list, column: str | None = None) -> None:
    """At least two classes, and two samples of each, so that the splits can be stratified
    (`labels`: every label of every sample; `column`: the CSV's label column, none for class
    folders)."""
    counts = Counter(labels)
    if len(counts) < 2:
        where = (f"the label column '{column}' holds one class only ('{labels[0]}')" if column
                 else f"every label is '{labels[0]}'")
        raise DataError(f"{path}: {where}; classification needs at least 2 classes")
    single = sorted(name for name, count in counts.items() if count == 1)
    if single:
        raise DataError(f"{path}: class '{single[0]}' has a single sample; expected at least 2 "
                        "per class (one cannot be both trained on and tested); remove it or "
                        "collect more")


def _text_folder(path: Path, known: list | None, encoding: str):
    names = class_folders(path, known, ".txt files")
    texts, labels = [], []
    for name in names:
        for file in sorted((path / name).glob("*.txt")):
            texts.append(read_text_file(file, encoding))
            labels.append([name])
    if not texts:
        raise DataError(f"{path}: no .txt files in the class folders")
    return np.array(texts, dtype=object), labels, names
