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

from pathlib import Path

import numpy as np

from dlmine.config.loading import valid_list
from dlmine.config.schema import COLUMN_KINDS
from dlmine.errors import DataError

KINDS = COLUMN_KINDS


def read_table(path: Path, fmt: str):
    """Read a CSV or Parquet file into a DataFrame, with clear messages for bad files."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; expected a header row and data rows") from None
    except Exception as exc:  # pandas and pyarrow raise many kinds for unreadable files
        raise DataError(f"{path}: cannot read it as {fmt.upper()}: {str(exc).splitlines()[0]}") from None
    if frame.empty:
        raise DataError(f"{path}: the file has a header but no data rows")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def feature_columns(frame, path: Path, target: str | None, columns: dict | None,
                    encoding: str = "onehot") -> dict:
    """`{column: kind}` for the features: `columns` as given, or every column but the target.

    Kinds are `numeric`, `categorical` (one-hot) and `embedding`; `categorical` columns
    become `embedding` ones when `encoding` is `embedding`.

    Raises:
        DataError: the target or a named column is not in the file.
    """
    names = list(frame.columns)
    if target is not None and target not in names:
        raise DataError(f"{path}: target column '{target}' not found"
                        + valid_list(target, names, "Columns"))
    if columns:
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{path}: column '{missing[0]}' named in dataset.columns is not in the "
                            "file" + valid_list(missing[0], names, "Columns"))
        chosen = {c: k for c, k in columns.items() if k != "ignore" and c != target}
    else:
        chosen = {c: _infer_kind(frame[c]) for c in names if c != target}
    if encoding == "embedding":
        chosen = {c: "embedding" if k == "categorical" else k for c, k in chosen.items()}
    if not chosen:
        raise DataError(f"{path}: no feature columns left (every column is the target or ignored)")
    return chosen


def _infer_kind(series) -> str:
    import pandas as pd

    return "numeric" if pd.api.types.is_numeric_dtype(series) else "categorical"


def check_values(frame, path: Path, kinds: dict, missing: str):
    """Refuse non-numbers in numeric columns and, unless asked, missing values.

    Returns:
        The frame, with rows holding missing values dropped when `missing: drop`.
    """
    import pandas as pd

    for column, kind in kinds.items():
        if kind != "numeric":
            continue
        numbers = pd.to_numeric(frame[column], errors="coerce")
        bad = numbers.isna() & frame[column].notna()
        if bad.any():
            row = int(np.argmax(bad.to_numpy()))
            raise DataError(f"{path}: column '{column}', row {row + 2}: "
                            f"{frame[column].iloc[row]!r} is not a number (the column is numeric; "
                            "mark it `categorical` in dataset.columns if it holds categories)")
        frame[column] = numbers
    holes = frame[list(kinds)].isna().any(axis=1)
    if holes.any():
        if missing == "drop":
            return frame[~holes].reset_index(drop=True)
        if missing == "error":
            row = int(np.argmax(holes.to_numpy()))
            column = next(c for c in kinds if pd.isna(frame[c].iloc[row]))
            raise DataError(f"{path}: {int(holes.sum())} row(s) have missing values (first: row "
                            f"{row + 2}, column '{column}'); set dataset.missing: impute (numeric: "
                            "the training mean, categorical: its own category) or drop")
    return frame


class TableEncoder:
    """Raw columns -> one float vector per row, fitted on the training split only."""

    def __init__(self, kinds: dict, state: dict | None = None):
        self.kinds = dict(kinds)
        self.state = state or {}

    def fit(self, frame) -> TableEncoder:
        state = {}
        for column, kind in self.kinds.items():
            values = frame[column]
            if kind == "numeric":
                numbers = values.astype("float64")
                mean = float(numbers.mean()) if numbers.notna().any() else 0.0
                std = float(numbers.std(ddof=0)) if numbers.notna().sum() > 1 else 1.0
                state[column] = {"mean": mean, "std": std if std > 1e-12 else 1.0}
            else:
                vocab = sorted({category(v) for v in values}, key=str)
                state[column] = {"vocabulary": vocab}
        self.state = state
        return self

    def width(self) -> int:
        return sum(len(self.state[c]["vocabulary"]) + 1 if k == "categorical" else 1
                   for c, k in self.kinds.items())

    def layout(self) -> dict:
        """What the model's `ColumnEmbedding` layer needs: the width of the one-hot and numeric
        part, then for each embedded column its name and number of codes (the unseen slot too)."""
        embedded = [{"column": c, "codes": len(self.state[c]["vocabulary"]) + 1}
                    for c, k in self.kinds.items() if k == "embedding"]
        return {"dense": self.width() - len(embedded), "embedded": embedded}

    def transform(self, frame) -> np.ndarray:
        missing = [c for c in self.kinds if c not in frame.columns]
        if missing:
            raise DataError(f"the input lacks column '{missing[0]}'; this run was trained on the "
                            f"columns {', '.join(self.kinds)}")
        parts, codes = [], []
        for column, kind in self.kinds.items():
            info = self.state[column]
            if kind == "numeric":
                import pandas as pd

                numbers = pd.to_numeric(frame[column], errors="coerce").astype("float64")
                numbers = numbers.fillna(info["mean"]).to_numpy()
                parts.append(((numbers - info["mean"]) / info["std"])[:, None])
            else:
                index = {v: i for i, v in enumerate(info["vocabulary"])}
                unknown = len(index)  # the slot of values never seen in training
                code = np.array([index.get(category(v), unknown) for v in frame[column]],
                                dtype="int64")
                if kind == "embedding":
                    codes.append(code[:, None].astype("float64"))
                else:
                    parts.append(np.eye(unknown + 1, dtype="float64")[code])
        return np.concatenate(parts + codes, axis=1).astype("float32")


def category(value) -> str:
    """Categories compare as text: 1, 1.0 and '1' are one category; a missing value is ''."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)
