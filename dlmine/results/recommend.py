"""`recommend` and `similar`: a recommender run's top K items for users, and its nearest items.

The run's saved vocabularies (`preprocessing.json`) map ids to the model's codes; the
interactions are read again (as `evaluate` does) for the items each user has seen,
which are left out unless asked, and for the popularity that `--cold-start popular`
falls back on. With `dataset.interactions.items`, the items table's columns (a title)
stand beside each item.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlmine.data import Preprocessor, source_for
from dlmine.data.interactions import encode_ids
from dlmine.data.tabular import read_table
from dlmine.errors import DlmineError, UsageError
from dlmine.model.io import load_checkpoint
from dlmine.model.recommenders import Scorer, item_vectors
from dlmine.results.recommend_metrics import top_indices
from dlmine.rundir import RunDir


class UnknownId(UsageError):
    """A user or item that the run never saw in training."""


class Recommender:
    """A finished recommender run, ready to answer `recommend` and `similar`.

    Args:
        run: the opened run directory.
        checkpoint: `best` or `last`.
    """

    def __init__(self, run: RunDir, checkpoint: str = "best"):
        self.run = run
        self.cfg = self.run.read_config()
        if self.cfg.dataset.name != "interactions":
            raise UsageError(f"{self.run.path} was trained on '{self.cfg.dataset.name}' data; "
                             "recommend and similar need a recommender run (interactions)")
        vocab = Preprocessor.load(self.run.path).vocabularies
        self.users, self.items = vocab["users"], vocab["items"]
        self.model = load_checkpoint(self.run, checkpoint)
        source = source_for(self.cfg.dataset)
        self.splits = source.load(self.cfg.seed)
        self.known = source.known  # every interaction of the file, as codes
        self.popularity = np.bincount(self.splits.x_train[:, 1], minlength=len(self.items))
        self.side = _items_table(self.cfg)

    def code(self, ids: list, kind: str) -> np.ndarray:
        vocabulary = self.users if kind == "user" else self.items
        try:
            return encode_ids(ids, vocabulary)
        except (ValueError, TypeError):  # a word where the ids are integers
            return np.full(len(ids), len(vocabulary))

    def recommend(self, users: list, k: int, include_seen: bool = False,
                  cold_start: str = "error") -> list[dict]:
        """The top `k` items of each user, best first.

        Raises:
            UnknownId: a user never seen in training, unless `cold_start` is `popular`.
        """
        codes = self.code(users, "user")
        unknown = [u for u, c in zip(users, codes, strict=True) if c >= len(self.users)]
        if unknown and cold_start != "popular":
            raise UnknownId(f"user {unknown[0]!r} is not in this run's training data "
                            f"({len(self.users)} users, e.g. {_examples(self.users)}); "
                            "--cold-start popular recommends the most popular items instead")
        rows, scorer = [], Scorer(self.model, len(self.items))
        for start in range(0, len(users), 256):  # one block's scores at a time: memory
            block = codes[start:start + 256]      # follows the block, not users x items
            known = np.unique(block[block < len(self.users)])
            scores = dict(zip(known.tolist(), scorer(known), strict=True)) if len(known) else {}
            for user, code in zip(users[start:start + 256], block, strict=True):
                cold = code >= len(self.users)
                score = self.popularity.astype("float64") if cold else scores[int(code)].copy()
                if not include_seen and not cold:
                    score[self.seen_codes(int(code))] = -np.inf
                top = top_indices(score, k)[0]
                for rank, item in enumerate(top[np.isfinite(score[top])]):
                    rows.append({"user": user, "rank": rank + 1, "item": self.items[item],
                                 "score": round(float(score[item]), 6), "cold_start": bool(cold),
                                 **self._side(self.items[item])})
        return rows

    def similar(self, item, k: int) -> list[dict]:
        """The `k` items nearest to `item` by the cosine of the learned item vectors."""
        code = int(self.code([item], "item")[0])
        if code >= len(self.items):
            raise UnknownId(f"item {item!r} is not in this run's training data "
                            f"({len(self.items)} items, e.g. {_examples(self.items)})")
        vectors = item_vectors(self.model)[:len(self.items)]
        norms = np.linalg.norm(vectors, axis=1)
        cosine = vectors @ vectors[code] / np.maximum(norms * norms[code], 1e-12)
        cosine[code] = -np.inf
        top = top_indices(cosine, k)[0]
        return [{"item": item, "rank": rank + 1, "similar": self.items[other],
                 "cosine": round(float(cosine[other]), 6), **self._side(self.items[other])}
                for rank, other in enumerate(top)]

    def item_vectors(self) -> np.ndarray:
        """The learned vector of each item of the vocabulary (`similar`'s)."""
        return item_vectors(self.model)[:len(self.items)]

    def item_labels(self) -> tuple[str, list[str]]:
        """(column, one label per item) to colour the items by: the first categorical or
        multi-valued item feature (a multi cell's first category), else the first column of
        the items table with 2 to 30 values, else the item's popularity (a third of the
        items each)."""
        inter = self.cfg.dataset.interactions
        features = inter.item_features or {}
        columns = [c for c, k in features.items() if k in ("categorical", "embedding", "multi")]
        if self.side and not columns:
            frame = {c: {str(row.get(c)) for row in self.side.values()}
                     for c in next(iter(self.side.values()))}
            columns = [c for c, values in frame.items() if 2 <= len(values) <= 30]
        if self.side and columns:
            column = columns[0]
            def label(item) -> str:
                value = self.side.get(item, {}).get(column)
                if value is None:
                    return "(none)"
                if features.get(column) == "multi":
                    return (str(value).split(inter.separator) or ["(none)"])[0].strip()
                return str(value)
            return column, [label(item) for item in self.items]
        order = np.argsort(np.argsort(self.popularity, kind="stable"), kind="stable")
        thirds = ["least popular third", "middle third", "most popular third"]
        return "popularity", [thirds[min(2, 3 * int(r) // max(len(order), 1))] for r in order]

    def seen_codes(self, user: int) -> np.ndarray:
        """The item codes user `user` (a code) interacted with, in any split."""
        n = len(self.items)
        lo, hi = np.searchsorted(self.known, [user * n, (user + 1) * n])
        return self.known[lo:hi] - user * n

    def _side(self, item) -> dict:
        return self.side.get(item, {}) if self.side else {}


def _examples(ids: list) -> str:
    return ", ".join(repr(v) for v in ids[:3])


def _items_table(cfg) -> dict:
    """{item id: {column: value}} of `dataset.interactions.items`, or {} without one."""
    path = cfg.dataset.interactions.items
    if not path:
        return {}
    path = Path(path)
    frame = read_table(path, "parquet" if path.suffix.lower() == ".parquet" else "csv")
    key = cfg.dataset.interactions.item
    if key not in frame.columns:
        raise DlmineError(f"{path}: the items table has no column '{key}' (the item column of "
                          "the interactions)")
    records = frame.set_index(key).to_dict("index")
    return {k: {c: (None if v != v else v) for c, v in row.items()} for k, row in records.items()}
