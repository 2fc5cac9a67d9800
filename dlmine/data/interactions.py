"""Interactions (`name: interactions`): one row per user-item event, for a recommender.

The file (CSV or Parquet) has a user and an item column (integer or string ids, not
both), optionally a rating and a timestamp. Duplicated (user, item) pairs follow
`interactions.duplicates`; for `ranking`, rows whose rating is under `threshold` are
not positives (they still count as seen). The id vocabularies are fitted on the
training split (sorted ids; code `len(vocabulary)` is the slot of ids never seen in
training), so the splits hold codes: `x` is `(rows, 2)` int32 (user, item), `y` the
rating (or 1 for a positive).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlmine.config.loading import valid_list
from dlmine.config.schema import DatasetConfig
from dlmine.data import tabular
from dlmine.data.base import DataInfo, Source, Splits
from dlmine.data.sampling import lists_of, sample_unseen
from dlmine.data.side_tables import feature_matrix
from dlmine.errors import DataError, UsageError
from dlmine.results.recommend_metrics import RankingValidation, evaluate_ranking, evaluate_rating


@dataclass
class Events:
    """The events of the file after the duplicates rule, in file order."""

    users: np.ndarray  # ids: int64, or object (str)
    items: np.ndarray
    ratings: np.ndarray  # float32; 1 without a rating column
    times: np.ndarray  # float64; the file order without a timestamp column
    positive: np.ndarray  # bool: what ranking learns from (every row for rating)


class InteractionsSource(Source):
    """A CSV or Parquet file of interactions, split by `interactions.split`."""

    kind = "interactions"
    shape_from_data = True

    def __init__(self, cfg: DatasetConfig):
        super().__init__(cfg)
        self.known: np.ndarray | None = None  # every (user, item) code pair of the file
        self.users_count = self.items_count = 0  # the vocabularies' sizes
        self.rating_range = [0.0, 0.0]
        self.validation: np.ndarray | None = None  # its codes, for the ranking callback
        self.seed = 0  # of `load`, for the validation negatives

    def header_info(self) -> DataInfo:
        return DataInfo((2,), None, [], "interactions")

    def read(self) -> dict:
        return {"events": read_events(self.cfg)}

    def load(self, seed: int) -> Splits:
        """Read, split, fit the vocabularies on the training split, encode every split."""
        events = read_events(self.cfg)
        held = split_rows(events, self.cfg, seed)
        if self.cfg.limit is not None:
            held["train"] = held["train"][: self.cfg.limit]  # sorted rows: file order
        train = held["train"]
        users = _vocabulary(events.users[train])
        items = _vocabulary(events.items[train])
        user_codes = _encode(events.users, users)
        item_codes = _encode(events.items, items)
        codes = np.stack([user_codes, item_codes], axis=1).astype("int32")
        inside = (user_codes < len(users)) & (item_codes < len(items))
        self.known = _pair_keys(codes[inside], len(items))
        self.users_count, self.items_count = len(users), len(items)
        rated = events.ratings[train]
        self.rating_range = [float(rated.min()), float(rated.max())]
        info = DataInfo((2,), None, [], "interactions", {
            "users": _plain(users), "items": _plain(items),
            "rating_mean": float(rated.mean()),
            "rating_range": [float(rated.min()), float(rated.max())]})
        self._side_features(info, users, items)
        parts = {}
        for name, rows in held.items():
            rows = rows[events.positive[rows]] if self.cfg.task == "ranking" else rows
            y = np.ones(len(rows), "float32") if self.cfg.task == "ranking" else events.ratings[rows]
            parts[name] = (codes[rows], y)
        if len(parts["train"][0]) == 0:
            raise DataError(f"{self.cfg.path}: the training split holds no positive interaction "
                            "(dataset.interactions.threshold is above every training rating?)")
        if self.cfg.task == "ranking":
            rows = train[events.positive[train]]
            info.tables["newer"] = newer_counts(codes[rows, 0], events.times[rows], rows)
        fingerprint = self.fingerprint(codes, events.ratings, events.times)
        val = parts.get("validation", (None, None))
        self.validation, self.seed = val[0], seed
        return Splits(*parts["train"], *val, *parts["test"], info, fingerprint)

    def _side_features(self, info: DataInfo, users: np.ndarray, items: np.ndarray) -> None:
        """The users' and items' feature matrices (`info.tables`) and their layouts."""
        inter = self.cfg.interactions
        for side, table, features, vocabulary in (
                ("user", inter.users, inter.user_features, users),
                ("item", inter.items, inter.item_features, items)):
            if features:
                key = inter.user if side == "user" else inter.item
                matrix, meta = feature_matrix(table, key, features, vocabulary,
                                              inter.separator, side)
                info.tables[side] = matrix
                info.columns[f"{side}_features"] = meta

    def training_batches(self, x, y, batch_size: int, seed: int, shuffle: bool,
                         first_epoch: int, sample_weight=None, list_size: int = 1):
        if self.cfg.task != "ranking":
            return super().training_batches(x, y, batch_size, seed, shuffle, first_epoch)
        from dlmine.data.negative_batches import NegativeSampled
        batches = NegativeSampled(x, batch_size, seed, self.cfg.interactions.negatives,
                                  self.items_count, first_epoch, lists=list_size > 1)
        if self.validation is not None:
            batches.validation = RankingValidation(self.validation, self.known,
                                                   self.users_count, self.items_count,
                                                   self.cfg.interactions, seed)
        return batches

    def validation_data(self, x, y, batch_size: int, list_size: int = 1):
        """Ranking: each validation positive followed by `negatives` unseen items drawn once
        from the seed, so that `val_loss` is the training loss on held-out lists (a list
        loss: one list per positive; an undrawn negative: label -1, ignored)."""
        if self.cfg.task != "ranking":
            return super().validation_data(x, y, batch_size, list_size)
        per = self.cfg.interactions.negatives
        rng = np.random.default_rng([self.seed, 1618])
        rows, labels = lists_of(x, sample_unseen(x[:, 0], per, self.known, self.items_count,
                                                 rng))
        rows, labels = rows.reshape(-1, 2), labels.reshape(-1)
        if list_size > 1:
            return (rows, labels), max(1, batch_size // list_size) * list_size
        drawn = labels >= 0
        return (rows[drawn], labels[drawn]), batch_size

    def evaluate(self, model, x, y, cfg, batch_size: int) -> dict | None:

        if cfg.dataset.task == "rating":
            return evaluate_rating(model, x, y, self.rating_range)
        return evaluate_ranking(model, x, self.known, self.users_count, self.items_count, cfg,
                                batch_size)

    def read_input(self, path: Path):
        raise UsageError("`predict` takes no input for an interactions run: use `dlmine "
                         "recommend RUN_DIR --user U` or `dlmine similar RUN_DIR --item I`")

    def input_schema(self, prep) -> dict:
        return {"kind": "interactions", "users": len(prep.vocabularies["users"]),
                "items": len(prep.vocabularies["items"]),
                "send": 'POST /recommend {"users": [user id, ...], "k": 10} or POST /similar '
                        '{"item": item id, "k": 10}'}


def read_events(cfg: DatasetConfig) -> Events:
    """The file's events, checked: columns present, ids of one type, numbers where numbers go.

    Raises:
        DataError: naming the file, the row and the column.
    """
    import pandas as pd

    path, inter = Path(cfg.path), cfg.interactions
    fmt = "parquet" if path.suffix.lower() == ".parquet" else "csv"
    as_written = (inter.user, inter.item) if inter.ids == "string" else ()  # 3 s per 2M rows
    frame = tabular.read_table(path, fmt, as_written)
    for key in ("user", "item", "rating", "timestamp"):
        column = getattr(inter, key)
        if column is not None and column not in frame.columns:
            raise DataError(f"{path}: the {key} column '{column}' (dataset.interactions.{key}) "
                            "is not in the file" + valid_list(column, list(frame.columns),
                                                              "Columns"))
    users = _ids(frame[inter.user], path, inter.user, inter.ids)
    items = _ids(frame[inter.item], path, inter.item, inter.ids)
    ratings = (_numbers(frame[inter.rating], path, inter.rating) if inter.rating
               else np.ones(len(frame), "float64"))
    times = (_times(frame[inter.timestamp], path, inter.timestamp) if inter.timestamp
             else np.arange(len(frame), dtype="float64"))
    keep = _deduplicated(users, items, times, path, cfg)
    if inter.duplicates == "mean":
        pairs = pd.DataFrame({"u": users, "i": items, "r": ratings})
        ratings = pairs.groupby(["u", "i"], sort=False)["r"].transform("mean").to_numpy()
    users, items, ratings, times = users[keep], items[keep], ratings[keep], times[keep]
    if len(np.unique(users)) < 2:
        raise DataError(f"{path}: every interaction is of the single user {users[0]!r}; a "
                        "recommender learns from at least 2 users")
    positive = (ratings >= inter.threshold if inter.threshold is not None and
                cfg.task == "ranking" else np.ones(len(users), bool))
    return Events(users, items, ratings.astype("float32"), times, positive)


def _ids(series, path: Path, column: str, mode: str = "auto") -> np.ndarray:
    """Integer ids (int64) or string ids (object): with `mode` `auto`, integers when the
    column holds numbers (a CSV's `007` is 7) or digits without a leading zero, and a column
    that mixes them with other ids is refused; with `string`, the text as written."""
    import pandas as pd

    if series.isna().any():
        row = int(np.argmax(series.isna().to_numpy()))
        raise DataError(f"{path}: column '{column}', row {row + 2}: the id is missing; every "
                        "interaction needs a user and an item")
    if mode == "auto" and pd.api.types.is_integer_dtype(series):
        return series.to_numpy("int64")
    if mode == "auto" and pd.api.types.is_float_dtype(series):
        values = series.to_numpy("float64")
        if np.all(np.mod(values, 1) == 0):
            return values.astype("int64")
        row = int(np.argmax(np.mod(values, 1) != 0))
        raise DataError(f"{path}: column '{column}', row {row + 2}: {values[row]!r} is not an "
                        "id (expected integers or strings)")
    text = series.astype(str).str.strip()  # vectorised: 2 million ids in well under 1 s
    if mode == "string":
        return text.to_numpy(object)
    numeric = text.str.fullmatch(r"-?\d+").to_numpy()
    if numeric.all() and not text.str.fullmatch(r"-?0\d+").any():
        return text.astype("int64").to_numpy()
    if numeric.any() and not numeric.all():
        first_int, first_str = int(np.argmax(numeric)), int(np.argmax(~numeric))
        raise DataError(f"{path}: column '{column}' mixes integer ids ({text.iloc[first_int]!r}, "
                        f"row {first_int + 2}) and string ids ({text.iloc[first_str]!r}, row "
                        f"{first_str + 2}); expected ids of one type, or set "
                        "dataset.interactions.ids: string to read every id as written")
    return text.to_numpy(object)  # strings, or digits with a leading zero: as written


def _numbers(series, path: Path, column: str) -> np.ndarray:
    import pandas as pd

    _refuse_missing(series, path, column, "rating")
    numbers = pd.to_numeric(series, errors="coerce").to_numpy("float64")
    bad = ~np.isfinite(numbers)
    if bad.any():
        row = int(np.argmax(bad))
        what = (f"{_cell(series, row)} is not a number" if np.isnan(numbers[row]) else
                f"{numbers[row]} is not a finite number")
        raise DataError(f"{path}: column '{column}', row {row + 2}: {what} "
                        "(dataset.interactions.rating)")
    return numbers


def _times(series, path: Path, column: str) -> np.ndarray:
    """Seconds: numbers as they are, dates (naive ones taken as UTC) since 1970."""
    import pandas as pd

    _refuse_missing(series, path, column, "timestamp")
    if pd.api.types.is_datetime64_any_dtype(series):  # a Parquet datetime column
        return _seconds(pd.to_datetime(series, utc=True))
    numbers = pd.to_numeric(series, errors="coerce")
    if numbers.notna().all():
        return numbers.to_numpy("float64")
    if numbers.notna().any():  # a column of numbers with a word among them
        row = int(np.argmax(numbers.isna().to_numpy()))
        raise DataError(f"{path}: column '{column}', row {row + 2}: {_cell(series, row)} is not "
                        "a number like the column's other timestamps (dataset.interactions."
                        "timestamp)")
    dates = pd.to_datetime(series, errors="coerce", utc=True, format="mixed")
    bad = dates.isna().to_numpy()
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{path}: column '{column}', row {row + 2}: {_cell(series, row)} is "
                        "neither a number nor a date (dataset.interactions.timestamp)")
    return _seconds(dates)


def _seconds(dates) -> np.ndarray:
    """UTC dates (a Series or a Timestamp) as seconds since 1970, whatever their unit."""
    import pandas as pd

    since = dates - pd.Timestamp(0, tz="UTC")
    return np.asarray(since / pd.Timedelta(seconds=1), dtype="float64")


def _refuse_missing(series, path: Path, column: str, key: str) -> None:
    missing = series.isna().to_numpy()
    if missing.any():
        row = int(np.argmax(missing))
        raise DataError(f"{path}: column '{column}', row {row + 2}: the {key} is missing "
                        f"(dataset.interactions.{key}); every interaction needs one")


def _cell(series, row: int) -> str:
    value = series.iloc[row]
    return repr(value.item() if hasattr(value, "item") else value)


def _deduplicated(users, items, times, path: Path, cfg: DatasetConfig) -> np.ndarray:
    """The rows kept: the last of each (user, item) pair by time, then file order."""
    import pandas as pd

    order = np.lexsort((np.arange(len(users)), times))
    pairs = pd.DataFrame({"u": users[order], "i": items[order]})
    last = ~pairs.duplicated(["u", "i"], keep="last").to_numpy()
    if cfg.interactions.duplicates == "error" and not last.all():
        row = int(order[np.argmax(~last)])
        raise DataError(f"{path}: row {row + 2}: user {users[row]!r} and item {items[row]!r} "
                        "appear more than once (dataset.interactions.duplicates: error; last "
                        "or mean keep one)")
    return np.sort(order[last])


def split_rows(events: Events, cfg: DatasetConfig, seed: int) -> dict:
    """Row indices of `train`, `validation` (with `validation_split`) and `test`."""
    inter, n = cfg.interactions, len(events.users)
    if inter.split == "random":
        rows = np.random.default_rng([seed, 7]).permutation(n)
        test = max(1, int(round(n * cfg.test_split)))
        out = {"test": rows[:test]}
        rest = rows[test:]
        if cfg.validation_split is not None:
            val = max(1, int(round(len(rest) * cfg.validation_split)))
            out["validation"], rest = rest[:val], rest[val:]
        out["train"] = rest
    elif inter.split == "leave_last_out":
        out = _leave_last_out(events, cfg.validation_split is not None)
    else:
        out = _time_split(events, cfg)
    for name in ("train", "test"):
        if len(out[name]) == 0:
            raise DataError(f"{cfg.path}: the {inter.split} split leaves no interaction in "
                            f"{name}; {len(events.users)} interactions")
    return {name: np.sort(rows) for name, rows in out.items()}


def _leave_last_out(events: Events, validation: bool) -> dict:
    # Per user, newest first: rank 0 is the test, rank 1 validation; a user keeps at least
    # one interaction (two with validation) in training, else all of them stay there.
    held_events = events.positive  # ranking holds out positives only
    candidates = np.flatnonzero(held_events)
    order = candidates[np.lexsort((-candidates, -events.times[candidates],
                                   _group(events.users[candidates])))]
    rank, total = _ranks(_group(events.users[order]))  # total: the user's positives
    needed = 3 if validation else 2
    test = order[(rank == 0) & (total >= needed)]
    val = order[(rank == 1) & (total >= needed)] if validation else order[:0]
    train = np.setdiff1d(np.arange(len(events.users)), np.r_[test, val])
    out = {"train": train, "test": test}
    if validation:
        out["validation"] = val
    return out


def _time_split(events: Events, cfg: DatasetConfig) -> dict:
    import pandas as pd

    cutoff = cfg.interactions.cutoff
    if isinstance(cutoff, str):
        number = pd.to_numeric(cutoff, errors="coerce")
        parsed = pd.to_datetime(cutoff, errors="coerce", utc=True) if pd.isna(number) else None
        if parsed is not None and pd.isna(parsed):
            raise DataError(f"dataset.interactions.cutoff {cutoff!r} is neither a number nor a "
                            "date")
        cutoff = float(number) if parsed is None else float(_seconds(parsed))
    test = np.flatnonzero(events.times >= cutoff)
    rest = np.flatnonzero(events.times < cutoff)
    out = {"test": test, "train": rest}
    if cfg.validation_split is not None:
        rest = rest[np.lexsort((rest, events.times[rest]))]
        val = max(1, int(round(len(rest) * cfg.validation_split)))
        out["train"], out["validation"] = rest[:-val], rest[-val:]
    return out


def newer_counts(users: np.ndarray, times: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For each interaction, how many of its user's others are newer (by time, then row):
    0 for each user's newest."""
    order = np.lexsort((-rows, -times, users))
    out = np.empty(len(order), "int64")
    out[order] = _ranks(users[order])[0]
    return out


def _ranks(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups laid out in runs (sorted), each element's place in its run and the run's
    length."""
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    counts = np.diff(np.r_[starts, len(groups)])
    return np.arange(len(groups)) - np.repeat(starts, counts), np.repeat(counts, counts)


def _group(ids: np.ndarray) -> np.ndarray:
    """Integer group numbers of ids (int or str), in sorted id order."""
    return np.unique(ids, return_inverse=True)[1].reshape(-1)


def _vocabulary(ids: np.ndarray) -> np.ndarray:
    return np.unique(ids)


def _encode(ids: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """Codes 0..len-1 of the vocabulary; ids not in it get the unseen slot, len(vocabulary)."""
    at = np.searchsorted(vocabulary, ids)
    at = np.minimum(at, len(vocabulary) - 1)
    return np.where(vocabulary[at] == ids, at, len(vocabulary)).astype("int64")


def _plain(ids: np.ndarray) -> list:
    """JSON-able ids: ints as ints, strings as strings."""
    return [int(v) for v in ids] if ids.dtype != object else [str(v) for v in ids]


def _pair_keys(codes: np.ndarray, num_items: int) -> np.ndarray:
    """Sorted unique keys user * num_items + item, for `np.searchsorted` membership."""
    return np.unique(codes[:, 0].astype("int64") * num_items + codes[:, 1])


def encode_ids(ids, vocabulary: list) -> np.ndarray:
    """Raw ids -> codes with a saved vocabulary (`recommend`, `similar`)."""
    vocab = np.array(vocabulary, dtype=object if vocabulary and isinstance(vocabulary[0], str)
                     else "int64")
    return _encode(np.asarray(ids, dtype=vocab.dtype), vocab)
