"""Tables (`csv`, `parquet`): one row per sample, a target column, the features encoded.

The encoder (`dlmine.data.tabular.TableEncoder`) is fitted on the training split; its
width and layout are known only then, so a table's input shape comes from the data.
Embedded columns get dlmine's `ColumnEmbedding` layer first in the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlmine.config.loading import Sources, shorten, suggest
from dlmine.config.schema import Config, DatasetConfig
from dlmine.data import tabular
from dlmine.data.base import NEEDS_TWO, DataInfo, Source, json_type
from dlmine.errors import DataError, UsageError


class TableSource(Source):
    """A CSV or Parquet file (and an optional test file) of raw columns."""

    kind = "table"
    shape_from_data = True

    def read(self) -> dict:
        return load_table(self.cfg)

    def loaded_info(self, arrays: dict, x_train) -> DataInfo:
        info = DataInfo((0,), None, list(arrays.get("class_names") or []), "table",
                        arrays["columns"])
        return self.fit_info(info, x_train)

    def fit_info(self, info: DataInfo, x_train) -> DataInfo:
        """The encoded width and layout of an encoder fitted on `x_train`."""
        encoder = tabular.TableEncoder(info.columns).fit(x_train)
        info.sample_shape, info.table_layout = (encoder.width(),), encoder.layout()
        return info

    def take(self, x, rows: np.ndarray):
        return x.iloc[rows].reset_index(drop=True)

    def concat(self, a, b):
        import pandas as pd

        return a if b is None else pd.concat([a, b], ignore_index=True)

    def hash_into(self, digest, array) -> None:
        if not hasattr(array, "columns"):
            return super().hash_into(digest, array)
        digest.update(",".join(array.columns).encode())  # the names and every value
        super().hash_into(digest, row_hashes(array))

    def input_layers(self, cfg: Config, src: Sources, input_shape: tuple, info: DataInfo):
        inputs, x = super().input_layers(cfg, src, input_shape, info)
        if info.table_layout and info.table_layout.get("embedded"):
            x = column_embedding(cfg, info.table_layout)(x)
        return inputs, x

    def read_input(self, path: Path):
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet"):
            got = f"'{suffix}'" if suffix else "a file without an extension"
            raise UsageError(f"{path}: this run was trained on a table; expected a .csv or "
                             f".parquet file of its columns, received {got}")
        return tabular.read_table(path, "parquet" if suffix == ".parquet" else "csv")

    def check_input(self, x, prep, source: str, warn=None, first_row: int = 2):
        """The run's feature columns, checked as in training (`tabular.check_values`): a
        missing value is refused, or imputed and said so, as `dataset.missing` says; rows are
        named from `first_row` (2: a CSV's first data line)."""
        kinds = prep.encoder.kinds
        lacking = [c for c in kinds if c not in x.columns]
        if lacking:
            raise DataError(_lacks(source, lacking[0], kinds, list(x.columns)))
        return tabular.check_values(x, source, kinds, self.cfg.missing, predict=True, warn=warn,
                                    first_row=first_row)

    def check_json(self, values: list, prep, field: str, warn=None):
        """One object `{column: value}` per sample (other keys are ignored); its rows are named
        by their index in `field`."""
        import pandas as pd

        kinds = prep.encoder.kinds
        for i, row in enumerate(values):
            if not isinstance(row, dict):
                raise DataError(f"{field}[{i}]: expected an object of the columns "
                                f"{', '.join(kinds)}; received {json_type(row)}")
            lacking = [c for c in kinds if c not in row]
            if lacking:
                raise DataError(_lacks(f"{field}[{i}]", lacking[0], kinds, list(row)))
            for column in kinds:
                if isinstance(row[column], (list, dict)):
                    raise DataError(f"{field}[{i}]: column '{column}': expected a number, a "
                                    f"string or null; received {json_type(row[column])}")
        frame = pd.DataFrame.from_records([{c: row[c] for c in kinds} for row in values],
                                          columns=list(kinds))
        return self.check_input(frame, prep, field, warn, first_row=0)

    def input_schema(self, prep) -> dict:
        return {"kind": "table", "columns": dict(prep.encoder.kinds),
                "send": "one object {column: value} per sample: a number for a numeric column, a "
                        "string or a number for the others, null for a missing value"}


def _lacks(source: str, column: str, kinds: dict, received: list) -> str:
    got = ", ".join(shorten(str(c)) for c in received[:20]) + (", ..." if len(received) > 20
                                                              else "")
    return (f"{source}: the input lacks column '{column}'{suggest(column, received)}; this run "
            f"was trained on the columns {', '.join(kinds)}; received the columns "
            f"{got or 'none'}")


def row_hashes(frame) -> np.ndarray:
    """`pd.util.hash_pandas_object(frame, index=False)`, the same numbers, with the columns of
    one numpy dtype hashed as one block: pandas hashes one column at a time (seconds for a
    table of 50,000 columns)."""
    import pandas as pd

    hashes = np.zeros((frame.shape[1], len(frame)), dtype="uint64")
    groups: dict = {}
    for position, dtype in enumerate(frame.dtypes):
        numeric = isinstance(dtype, np.dtype) and dtype.kind in "biuf"
        groups.setdefault(dtype if numeric else None, []).append(position)
    for dtype, positions in groups.items():
        if dtype is None:
            for position in positions:
                column = frame.iloc[:, position]
                hashes[position] = pd.util.hash_pandas_object(column, index=False).to_numpy()
        else:
            block = frame.iloc[:, positions].to_numpy(dtype=dtype)
            hashes[positions] = pd.util.hash_array(block.T.ravel()).reshape(len(positions), -1)
    out = np.full(len(frame), 0x345678, dtype="uint64")  # pandas' combine_hash_arrays
    mult = np.uint64(1000003)
    with np.errstate(over="ignore"):  # the arithmetic is modulo 2**64, as in pandas
        for i, column in enumerate(hashes):
            out ^= column
            out *= mult
            mult += np.uint64(82520 + 2 * (len(hashes) - i))
        out += np.uint64(97531)
    return out


def load_table(cfg: DatasetConfig) -> dict:
    """A table and its optional test table -> frames of the feature columns and the targets."""
    train = tabular.read_table(Path(cfg.path), cfg.name)
    kinds = tabular.feature_columns(train, Path(cfg.path), cfg.target, cfg.columns,
                                    cfg.categorical_encoding)
    frames = {"train": (Path(cfg.path), train)}
    if cfg.test_path:
        test = tabular.read_table(Path(cfg.test_path), cfg.name)
        tabular.feature_columns(test, Path(cfg.test_path), cfg.target, kinds)
        frames["test"] = (Path(cfg.test_path), test)
    out: dict = {"columns": kinds}
    targets = []
    for split, (path, frame) in frames.items():
        frame = tabular.check_values(frame, path, {**kinds, cfg.target: "target"}, cfg.missing)
        if frame[cfg.target].isna().any():
            row = int(np.argmax(frame[cfg.target].isna().to_numpy()))
            raise DataError(f"{path}: column '{cfg.target}', row {row + 2}: the target is missing")
        out[f"x_{split}"] = frame[list(kinds)].reset_index(drop=True)
        targets.append((split, path, frame[cfg.target]))
    out.update(_targets(targets, cfg))
    return out


def _targets(targets: list, cfg: DatasetConfig) -> dict:
    import pandas as pd

    out: dict = {}
    if cfg.task == "regression":
        for split, path, series in targets:
            numbers = pd.to_numeric(series, errors="coerce")
            if numbers.isna().any():
                row = int(np.argmax(numbers.isna().to_numpy()))
                raise DataError(f"{path}: column '{cfg.target}', row {row + 2}: "
                                f"{series.iloc[row]!r} is not a number (dataset.task is regression)")
            tabular.check_targets(numbers, path, cfg.target)
            out[f"y_{split}"] = numbers.to_numpy("float32")
        return out
    _, path, train = targets[0]
    present = sorted({tabular.category(v) for v in train})
    if len(present) == 1:
        raise DataError(f"{path}: the target column '{cfg.target}' holds one class only "
                        f"({present[0]!r}); {NEEDS_TWO}")
    names = sorted({tabular.category(v) for _, _, s in targets for v in s},
                   key=lambda v: (not _is_number(v), float(v) if _is_number(v) else 0.0, v))
    index = {name: i for i, name in enumerate(names)}
    for split, _, series in targets:
        out[f"y_{split}"] = np.array([index[tabular.category(v)] for v in series], dtype="int64")
    out["class_names"] = names
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def column_embedding(cfg: Config, layout: dict):
    """The layer that embeds a table's `embedding` columns (sizes from `dataset.embedding_dim`)."""
    from dlmine.model.layers import ColumnEmbedding, default_embedding_dim  # imports Keras

    embedded = layout["embedded"]
    dims = [cfg.dataset.embedding_dim or default_embedding_dim(e["codes"]) for e in embedded]
    # float32 even under mixed precision: bfloat16 holds integers exactly only up to 256
    return ColumnEmbedding(layout["dense"], [e["codes"] for e in embedded], dims,
                           [e["column"] for e in embedded], name="column_embedding",
                           dtype="float32")


