"""Side features of a recommender: a users or items table, encoded once per id code.

`dataset.interactions.users` / `items` name a table with one row per user / item,
keyed by the column named like the interactions' `user` / `item` column. The columns
of `user_features` / `item_features` are encoded with the table encoder
(`dlmine.data.tabular.TableEncoder`: numeric standardised, missing values imputed,
categorical one-hot, `embedding` as codes for a learned vector, `multi` multi-hot) into
a matrix with one row per code of the id vocabulary fitted on the training split. Ids
without a row in the table, and the slot of ids never seen in training, get the row
of an all-missing entry. The model holds the matrix as a frozen lookup
(`dlmine.model.recommenders`), so it still takes `(user, item)` codes only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlmine.config.loading import valid_list
from dlmine.data import tabular
from dlmine.errors import DataError


def feature_matrix(path: str | Path, key: str, features: dict, vocabulary: np.ndarray,
                   separator: str, side: str) -> tuple[np.ndarray, dict]:
    """`(len(vocabulary) + 1, width)` float32 rows, and what the model needs to know of them.

    Args:
        path: the users or items table.
        key: its id column (the interactions' `user` or `item` column name).
        features: `{column: kind}`, kinds of `dlmine.config.schema.SIDE_KINDS`.
        vocabulary: the training split's sorted ids; code `c` is row `c`.
        side: `user` or `item`, for the messages.

    Returns:
        The matrix and `{"columns": features, "layout": encoder layout, "matched": ids of
        the vocabulary found in the table}`.

    Raises:
        DataError: naming the file, the column and the row.
    """
    import pandas as pd

    path = Path(path)
    frame = tabular.read_table(path, "parquet" if path.suffix.lower() == ".parquet" else "csv",
                               (key,) if vocabulary.dtype == object else ())
    names = list(frame.columns)
    where = f"dataset.interactions.{side}_features"
    if key not in frame.columns:
        raise DataError(f"{path}: the {side}s table has no column '{key}', the {side} id "
                        f"column of the interactions" + valid_list(key, names, "Columns"))
    for column in features:
        if column not in frame.columns or column == key:
            why = "is the id column" if column == key else "is not in the file"
            raise DataError(f"{path}: column '{column}' named in {where} {why}"
                            + valid_list(column, [n for n in names if n != key], "Columns"))
    ids = frame[key]
    if ids.isna().any():
        row = int(np.argmax(ids.isna().to_numpy()))
        raise DataError(f"{path}: column '{key}', row {row + 2}: the {side} id is missing")
    written = ids.astype(str).str.strip()
    if vocabulary.dtype == object:
        keys, same = written.to_numpy(object), written
    else:  # typed as the interactions' integer ids: `07` is 7
        numbers = pd.to_numeric(written, errors="coerce")
        same = numbers.astype(object).where(numbers.notna(), written)
        keys = np.where(numbers.isna(), -(2 ** 62), numbers.fillna(0)).astype("int64")
    duplicated = same.duplicated().to_numpy()
    if duplicated.any():
        row = int(np.argmax(duplicated))
        raise DataError(f"{path}: column '{key}', row {row + 2}: {side} {_plain(same.iloc[row])!r} has "
                        f"more than one row; the {side}s table holds one row per {side}")
    at = np.searchsorted(vocabulary, keys)
    found = (at < len(vocabulary)) & (vocabulary[np.minimum(at, len(vocabulary) - 1)] == keys)
    if not found.any():
        article = "an" if side == "item" else "a"
        raise DataError(f"{path}: none of the {len(frame)} ids in column '{key}' (e.g. "
                        f"{ids.iloc[0]!r}) is {article} {side} of the training "
                        "interactions (e.g. "
                        f"{_plain(vocabulary[0])!r}); expected the same ids")
    table = tabular.check_values(frame[list(features)], path, features, "impute", key=where)
    encoder = tabular.TableEncoder(features, separator=separator).fit(table)
    encoded = encoder.transform(table)
    blank = encoder.transform(pd.DataFrame({c: [np.nan] for c in features}).astype(
        {c: "float64" if k == "numeric" else "object" for c, k in features.items()}))
    matrix = np.repeat(blank, len(vocabulary) + 1, axis=0)
    matrix[at[found]] = encoded[found]
    return matrix.astype("float32"), {"columns": dict(features), "layout": encoder.layout(),
                                      "matched": int(found.sum())}


def _plain(value):
    """A numpy scalar as the Python value it holds, for messages."""
    return value.item() if hasattr(value, "item") else value
