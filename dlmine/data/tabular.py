"""Tables (CSV, Parquet) -> raw feature frames, and the encoder fitted on the training split.

The encoder turns raw columns into one float vector per row: numeric columns are
imputed (with the training mean, when `missing: impute`) and standardized,
categorical columns are one-hot encoded with one extra slot for values never seen
in training, and embedded columns become one integer code each (the last code is
that of unseen values), after all the others, for the model's `ColumnEmbedding`
layer. Its state (means, deviations, vocabularies) is plain JSON, saved in the run
directory, so `evaluate` and `predict` take raw columns.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Callable
from itertools import groupby
from pathlib import Path

import numpy as np

from dlmine.config.loading import valid_list
from dlmine.config.schema import COLUMN_KINDS
from dlmine.data.files import CHUNK, FLOAT32_MAX, check_regular_file, utf8_error
from dlmine.errors import DataError

KINDS = COLUMN_KINDS


# What pandas reads as missing in a CSV, besides an empty cell.
MISSING_CELLS = "an empty cell, or a word read as missing: NA, N/A, NaN, null, None, ..."
CSV_NAMES = (".csv", ".csv.gz")


def read_table(path: Path, fmt: str, strings: tuple[str, ...] = ()):
    """Read a CSV or Parquet file into a DataFrame, with clear messages for bad files; the
    CSV columns named in `strings` are read as text, as written (ids: `007` stays `007`)."""
    import pandas as pd

    check_regular_file(path, "a Parquet file" if fmt == "parquet" else "a CSV file")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if fmt != "parquet" and magic == b"PAR1":
        raise DataError(f"{path}: this is a Parquet file (it starts with PAR1), read here as "
                        "CSV; name it .parquet (predict) or set dataset.name: parquet")
    if fmt == "parquet" and magic not in (b"PAR1", b"PARE"):
        raise DataError(f"{path}: not a Parquet file (it does not start with PAR1); for a "
                        "CSV file name it .csv (predict) or set dataset.name: csv")
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, skipinitialspace=True, dtype=dict.fromkeys(strings, str))
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; expected a header row and data rows") from None
    except UnicodeDecodeError:  # pandas' offset counts from its chunk, not from the file
        raise DataError(_not_utf8(path)) from None
    except Exception as exc:  # pandas and pyarrow raise many kinds for unreadable files
        raise DataError(f"{path}: cannot read it as {fmt.upper()}: {str(exc).splitlines()[0]}") from None
    if fmt != "parquet" and not frame.index.equals(pd.RangeIndex(len(frame))):
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as handle:
            raise DataError(extra_fields(path, handle))
    frame = frame.copy()  # one block per dtype: pandas reads one per column, slow to slice
    frame.columns = [str(c) for c in frame.columns]
    for column in frame.columns if fmt == "parquet" else ():  # lists or mappings in a cell
        if frame[column].dtype == object:
            cell = next((v for v in frame[column] if isinstance(v, list | dict | np.ndarray)),
                        None)
            if cell is not None:
                raise DataError(f"{path}: column '{column}' holds {type(cell).__name__} cells "
                                "(several values in one cell); a table cell is one number or "
                                "one word: join its values into one, or leave the column out "
                                "of the file")
    check_unique(list(frame.columns) if fmt == "parquet" else _csv_header(path), path)
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no data rows")
    return frame


def extra_fields(path: Path, lines) -> str:
    """The message for a CSV whose data rows hold more fields than its header names (pandas
    would take the first field for an index and shift every cell): the first such row."""
    reader = csv.reader(lines, skipinitialspace=True)
    header = next(reader, [])
    for row in reader:
        if len(row) > len(header):
            return (f"{path}: row {reader.line_num} has {len(row)} fields, but the header names "
                    f"{len(header)} columns; a field that holds a comma must be quoted "
                    '("great, loved it")')
    return f"{path}: a row has more fields than the header names columns"


def _csv_header(path: Path) -> list[str]:
    """The column names as the file spells them (pandas renames a second `a` to `a.1`)."""
    with open(path, "rb") as handle:  # the first line only: the rest may not be UTF-8
        first = handle.readline().decode("utf-8-sig")
    return next(csv.reader([first], skipinitialspace=True), [])


def _not_utf8(path: Path) -> str:
    line, _, byte, before = utf8_error(path)
    index = len(next(csv.reader([before], skipinitialspace=True), [""]))  # fields begun
    problem = f"not valid UTF-8 text (byte 0x{byte:02x}); save the file as UTF-8"
    if line == 1:
        return f"{path}: the header, column {index}: {problem}"
    names = _csv_header(path)
    column = f"column '{names[index - 1]}'" if index <= len(names) else f"column {index}"
    return f"{path}: {column}, row {line}: {problem}"


def check_unique(names: list[str], path: Path) -> None:
    """Refuse a header that names a column twice: which one would the config mean?"""
    positions: dict[str, list[int]] = {}
    for position, name in enumerate(names, 1):
        positions.setdefault(name, []).append(position)
    for name, where in positions.items():
        if len(where) > 1:
            times = "twice" if len(where) == 2 else f"{len(where)} times"
            listed = ", ".join(map(str, where[:-1])) + f" and {where[-1]}"
            raise DataError(f"{path}: the header names column '{name}' {times} (columns "
                            f"{listed}); column names must be unique")


def feature_columns(frame, path: Path, target: str | None, columns: dict | None,
                    encoding: str = "onehot") -> dict:
    """`{column: kind}` for the features: `columns` as given, or every column but the target.

    Kinds are `numeric`, `categorical` (one-hot) and `embedding`; `categorical` columns
    become `embedding` ones when `encoding` is `embedding`.

    Raises:
        DataError: the target or a named column is not in the file.
    """
    import pandas as pd

    names = list(frame.columns)
    present = set(names)
    if target is not None and target not in present:
        raise DataError(f"{path}: target column '{target}' not found"
                        + valid_list(target, names, "Columns"))
    if columns:
        missing = [c for c in columns if c not in present]
        if missing:
            raise DataError(f"{path}: column '{missing[0]}' named in dataset.columns is not in the "
                            "file" + valid_list(missing[0], names, "Columns"))
        chosen = {c: k for c, k in columns.items() if k != "ignore" and c != target}
    else:
        numeric = map(pd.api.types.is_numeric_dtype, frame.dtypes)
        chosen = {c: "numeric" if n else "categorical"
                  for c, n in zip(names, numeric, strict=True) if c != target}
    if encoding == "embedding":
        chosen = {c: "embedding" if k == "categorical" else k for c, k in chosen.items()}
    if not chosen:
        raise DataError(f"{path}: no feature columns left (every column is the target or ignored)")
    return chosen


def check_values(frame, path: Path | str, kinds: dict, missing: str, predict: bool = False,
                 warn: Callable[[str], None] | None = None, key: str = "dataset.columns",
                 first_row: int = 2):
    """Refuse non-numbers, infinities and values beyond float32 range in numeric columns and,
    unless `missing` says otherwise, missing values.

    Args:
        key: the config key that gives the columns' kinds, for the messages.
        predict: the frame is `predict` input of a run trained with `missing`: missing values
            are refused (`error`, `drop`: no row is left out of the predictions) or imputed
            and said so by `warn` (`impute`).
        first_row: the number the messages give the frame's first row (2: a CSV's first
            data line; 0: the first sample of a JSON list).

    Returns:
        The frame, numeric columns as numbers; rows holding missing values dropped when
        training with `missing: drop`.
    """
    numeric = [c for c, k in kinds.items() if k == "numeric"]
    hint = "" if predict else (f"; mark it `categorical` in {key} if it holds "
                               "categories")
    frame = _as_numbers(frame, path, numeric, hint, first_row)
    for offset, block in _numeric_blocks(frame, numeric):
        _check_range(block, path, numeric[offset:], first_row)
    columns = list(kinds)
    holes = frame[columns].isna()
    rows = holes.any(axis=1).to_numpy()
    if not rows.any() or (missing == "drop" and not predict):
        return frame[~rows].reset_index(drop=True) if rows.any() else frame
    row = int(np.argmax(rows))
    column = columns[int(np.argmax(holes.iloc[row].to_numpy()))]
    where = f"{path}: column '{column}', row {row + first_row}"
    if not predict and missing == "error":
        raise DataError(f"{path}: {int(rows.sum())} row(s) have missing values (first: row "
                        f"{row + first_row}, column '{column}'"
                        f"{'; ' + MISSING_CELLS if str(path).lower().endswith(CSV_NAMES) else ''}); set "
                        "dataset.missing: impute (numeric: the training mean, categorical: its "
                        "own category) or drop")
    if predict and missing != "impute":
        raise DataError(f"{where}: the value is missing (this run was trained with "
                        f"dataset.missing: {missing})")
    if predict and warn is not None:
        how = ("imputed with the training mean" if kinds[column] == "numeric"
               else "read as the category of missing values")
        count = int(holes.to_numpy().sum())
        more = f"; {count - 1} more missing value(s) likewise" if count > 1 else ""
        warn(f"{where}: the value is missing; {how} (dataset.missing: impute){more}")
    return frame


def _as_numbers(frame, path, numeric: list[str], hint: str, first_row: int = 2):
    """The frame with its numeric columns of text (a word, an empty cell) read as numbers."""
    import pandas as pd

    types = dict(zip(frame.columns, frame.dtypes, strict=True))
    for column in [c for c in numeric if not pd.api.types.is_numeric_dtype(types[c])]:
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = numbers.isna() & frame[column].notna()
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise DataError(f"{path}: column '{column}', row {row + first_row}: "
                            f"{frame[column].iloc[row]!r} is not a number (the column is "
                            f"numeric{hint})")
        frame[column] = numbers
    return frame


def _numeric_blocks(frame, numeric: list[str]):
    """`(offset, float64 block)` of the numeric columns, a few columns at a time: one 2-D
    array per block, never a pandas loop per column, and never a copy of the whole frame."""
    step = max(1, CHUNK // max(len(frame), 1))
    for offset in range(0, len(numeric), step):
        yield offset, frame[numeric[offset:offset + step]].to_numpy(dtype="float64")


def _check_range(block: np.ndarray, path, names: list[str], first_row: int = 2) -> None:
    """Refuse an infinity or a number float32 cannot hold (missing values are NaN: checked
    elsewhere), naming the first in the file's order."""
    bad = np.abs(block) > FLOAT32_MAX
    if not bad.any():
        return
    row, column = np.argwhere(bad)[0]  # row-major: the first row, then its first column
    value = float(block[row, column])
    what = ("is not a finite number" if np.isinf(value)
            else "is beyond the range of 32-bit floats")
    raise DataError(f"{path}: column '{names[column]}', row {row + first_row}: {value!r} {what}")


def check_targets(numbers, path, target: str) -> None:
    """Regression targets: finite and within float32 range."""
    _check_range(numbers.to_numpy(dtype="float64")[:, None], path, [target])


class TableEncoder:
    """Raw columns -> one float vector per row, fitted on the training split only."""

    def __init__(self, kinds: dict, state: dict | None = None, separator: str = "|"):
        self.kinds = dict(kinds)
        self.state = state or {}
        self.separator = separator  # of `multi` columns: several categories in one cell

    def fit(self, frame) -> TableEncoder:
        numeric = [c for c, k in self.kinds.items() if k == "numeric"]
        state = {}
        for offset, block in _numeric_blocks(frame, numeric):
            counts = (~np.isnan(block)).sum(axis=0)
            means = np.where(counts > 0, np.nansum(block, axis=0) / np.maximum(counts, 1), 0.0)
            spread = np.nansum((block - means) ** 2, axis=0) / np.maximum(counts, 1)
            stds = np.where((counts > 1) & (np.sqrt(spread) > 1e-12), np.sqrt(spread), 1.0)
            for column, mean, std in zip(numeric[offset:], means, stds, strict=False):
                state[column] = {"mean": float(mean), "std": float(std)}
        for column, kind in self.kinds.items():
            if kind == "multi":
                tokens = {t for v in frame[column] for t in _tokens(v, self.separator)}
                state[column] = {"vocabulary": sorted(tokens), "separator": self.separator}
            elif kind != "numeric":
                state[column] = {"vocabulary": sorted({category(v) for v in frame[column]},
                                                      key=str)}
        self.state = {column: state[column] for column in self.kinds}
        return self

    def width(self) -> int:
        return sum(len(positions) for positions in self.slots().values())

    def slots(self) -> dict:
        """`{column: positions}` of each column in `transform`'s vector: consecutive values in
        the order of `kinds` (one each for numeric, the one-hot or multi-hot block), then one
        code per embedded column, last."""
        widths = {"categorical": lambda c: len(self.state[c]["vocabulary"]) + 1,
                  "multi": lambda c: len(self.state[c]["vocabulary"])}
        out, at = {}, 0
        embedded = [c for c, k in self.kinds.items() if k == "embedding"]
        for column, kind in self.kinds.items():
            if kind != "embedding":
                width = widths[kind](column) if kind in widths else 1
                out[column], at = np.arange(at, at + width), at + width
        for column in embedded:
            out[column], at = np.array([at]), at + 1
        return {column: out[column] for column in self.kinds}

    def layout(self) -> dict:
        """What the model's `ColumnEmbedding` layer needs: the width of the one-hot and numeric
        part, then for each embedded column its name and number of codes (the unseen slot too)."""
        embedded = [{"column": c, "codes": len(self.state[c]["vocabulary"]) + 1}
                    for c, k in self.kinds.items() if k == "embedding"]
        return {"dense": self.width() - len(embedded), "embedded": embedded}

    def transform(self, frame) -> np.ndarray:
        """Checked columns (`check_values`) -> the encoded rows, in the order of `kinds`
        (consecutive numeric columns as one block), embedded codes last."""
        numeric = [c for c, k in self.kinds.items() if k == "numeric"]
        block = np.zeros((len(frame), 0))
        if numeric:
            means = np.array([self.state[c]["mean"] for c in numeric])
            stds = np.array([self.state[c]["std"] for c in numeric])
            block = frame[numeric].to_numpy(dtype="float64")
            block = (np.where(np.isnan(block), means, block) - means) / stds
        parts, codes, done = [], [], 0
        for kind, group in groupby(self.kinds.items(), key=lambda item: item[1]):
            names = [column for column, _ in group]
            if kind == "numeric":
                parts.append(block[:, done:done + len(names)])
                done += len(names)
                continue
            for column in names:
                index = {v: i for i, v in enumerate(self.state[column]["vocabulary"])}
                if kind == "multi":  # multi-hot; categories never seen in fitting are dropped
                    hot = np.zeros((len(frame), len(index)), "float64")
                    separator = self.state[column]["separator"]
                    for row, value in enumerate(frame[column]):
                        hot[row, [index[t] for t in _tokens(value, separator) if t in index]] = 1
                    parts.append(hot)
                    continue
                unknown = len(index)  # the slot of values never seen in training
                code = np.array([index.get(category(v), unknown) for v in frame[column]],
                                dtype="int64")
                if kind == "embedding":
                    codes.append(code[:, None].astype("float64"))
                else:
                    parts.append(np.eye(unknown + 1, dtype="float64")[code])
        return np.concatenate(parts + codes, axis=1).astype("float32")


def _tokens(value, separator: str) -> list[str]:
    """The categories of a `multi` cell."""
    text = category(value)
    return [t.strip() for t in text.split(separator) if t.strip()] if text else []


def category(value) -> str:
    """Categories compare as text: 1, 1.0 and '1' are one category; a missing value is ''."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)
