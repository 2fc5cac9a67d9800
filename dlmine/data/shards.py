"""A folder of `.npz` shards: data larger than memory, read one shard at a time.

`dataset: {name: npz, path: FOLDER}` reads every `*.npz` in FOLDER (in name order),
each with the layout of one `.npz` file (`x_train`, `y_train`, optionally `x_test`,
`y_test`). The labels of every shard are loaded (one number per sample); the inputs
stay on disk as a `ShardSet`: which rows of which shard, in order. Splits, `limit`
and the test hold-out select rows without reading inputs; training batches
(`dlmine.data.batches.ShardBatches`), evaluation and the preprocessing statistics read one
shard at a time, so peak memory follows the largest shard, not the dataset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from dlmine.data.arrays import ArraySource
from dlmine.data.base import DataInfo, check_classes
from dlmine.data.files import check_finite
from dlmine.data.npzfile import PICKLED, npz_headers
from dlmine.errors import DataError


class ShardSet:
    """Rows of the `key` array (`x_train` or `x_test`) of some shards, read lazily.

    Args:
        files: the shard files.
        key: the array to read in each.
        rows: per shard, the indices of the rows taken, in order.
        sample_shape, dtype: of one raw sample.
        transform: applied to each shard's rows as they are read (the preprocessing).
    """

    def __init__(self, files: list[Path], key: str, rows: list[np.ndarray], sample_shape: tuple,
                 dtype, transform: Callable | None = None):
        self.files, self.key, self.rows = list(files), key, [np.asarray(r) for r in rows]
        self.sample_shape, self.dtype, self.transform = tuple(sample_shape), np.dtype(dtype), transform

    def __len__(self) -> int:
        return int(sum(len(r) for r in self.rows))

    @property
    def shape(self) -> tuple:
        return (len(self), *self.sample_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.sample_shape)

    def sizes(self) -> list[int]:
        return [len(r) for r in self.rows]

    def read(self, shard: int) -> np.ndarray:
        """The (transformed) rows of one shard, the only ones in memory."""
        with np.load(self.files[shard], allow_pickle=False) as npz:
            x = npz[self.key][self.rows[shard]]
        return self.transform(x) if self.transform is not None else x

    def __iter__(self) -> Iterator[np.ndarray]:
        for shard, rows in enumerate(self.rows):
            if len(rows):
                yield self.read(shard)

    def take(self, positions: np.ndarray) -> ShardSet:
        """The rows at these positions (of this set's order), kept in shard order.

        The new order is `np.sort(positions)`: index the labels with that.
        """
        positions = np.sort(np.asarray(positions, dtype="int64"))
        bounds = np.cumsum([0, *self.sizes()])
        rows = [r[positions[(positions >= lo) & (positions < hi)] - lo]
                for r, lo, hi in zip(self.rows, bounds[:-1], bounds[1:], strict=True)]
        return self.with_rows(rows)

    def with_rows(self, rows: list[np.ndarray]) -> ShardSet:
        return ShardSet(self.files, self.key, rows, self.sample_shape, self.dtype, self.transform)

    def with_transform(self, transform: Callable, sample_shape: tuple) -> ShardSet:
        """These rows, as `transform` makes them (float32 samples of `sample_shape`)."""
        return ShardSet(self.files, self.key, self.rows, sample_shape, "float32", transform)

    def __getitem__(self, index):
        """`x[:n]` reads the first n rows (export and report check a few samples)."""
        if not isinstance(index, slice) or index.start not in (None, 0) or index.step not in (None, 1):
            raise TypeError("a ShardSet is read shard by shard; only x[:n] is supported")
        n = len(self) if index.stop is None else min(index.stop, len(self))
        parts, left = [], n
        for shard, rows in enumerate(self.rows):
            if left <= 0:
                break
            if len(rows):
                part = self.with_rows([r[:left] if i == shard else r[:0]
                                       for i, r in enumerate(self.rows)]).read(shard)
                parts.append(part)
                left -= len(part)
        return np.concatenate(parts) if parts else np.zeros((0, *self.sample_shape), self.dtype)


def shard_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix == ".npz" and p.is_file())
    if not files:
        raise DataError(f"{folder}: a folder of shards, but it holds no .npz files")
    return files


def read_shards(folder: Path) -> dict:
    """The arrays of a folder of shards, as `_read_npz` gives them for one file: labels in
    memory, inputs as `ShardSet`s."""
    files = shard_files(folder)
    out: dict = {"shards": files}
    headers, labels = [], {"y_train": [], "y_test": []}
    for path in files:
        header = npz_headers(path)
        missing = [k for k in ("x_train", "y_train") if k not in header]
        if ("x_test" in header) != ("y_test" in header):
            missing.append("y_test" if "x_test" in header else "x_test")
        if missing:
            raise DataError(f"{path}: missing array(s) {', '.join(missing)}; every shard holds "
                            "x_train, y_train and optionally x_test, y_test")
        if any(header[key][1].hasobject for key in header):
            raise DataError(PICKLED.format(path=path))
        with np.load(path, allow_pickle=False) as npz:
            for key in labels:
                if key in header:
                    labels[key].append((path, npz[key]))
        for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
            if x in header and header[x][0][0] != header[y][0][0]:
                raise DataError(f"{path}: {x} has {header[x][0][0]} samples but {y} has "
                                f"{header[y][0][0]}; expected one label per sample")
        headers.append(header)
    first = headers[0]
    for path, header in zip(files, headers, strict=True):
        if header["x_train"][0][1:] != first["x_train"][0][1:]:
            raise DataError(f"{path}: x_train has sample shape {header['x_train'][0][1:]}, but "
                            f"{files[0].name} has {first['x_train'][0][1:]}; every shard must "
                            "have the same layout")
        if ("x_test" in header) != ("x_test" in first):
            has, lacks = (path.name, files[0].name) if "x_test" in header else \
                (files[0].name, path.name)
            raise DataError(f"{path}: {has} has x_test and y_test, {lacks} has not; every "
                            "shard must have the same layout (test arrays in all or none)")
    for key in ("x_train", "x_test"):
        if key not in first:
            continue
        rows = [np.arange(h[key][0][0]) for h in headers]
        out[key] = ShardSet(files, key, rows, first[key][0][1:], first[key][1])
        out["y" + key[1:]] = _joined(labels["y" + key[1:]], "y" + key[1:])
    if "class_names" in first:
        with np.load(files[0], allow_pickle=False) as npz:
            out["class_names"] = [str(n) for n in npz["class_names"]]
    if len(out["x_train"]) == 0:
        raise DataError(f"{folder}: the shards hold no training samples")
    return out


def _joined(parts: list[tuple[Path, np.ndarray]], key: str) -> np.ndarray:
    """The labels of every shard as one array; shards must agree on their shape."""
    arrays = [(path, y.reshape(len(y), -1)) for path, y in parts]
    first_path, first = arrays[0]
    for path, y in arrays:
        if y.shape[1] != first.shape[1] or y.dtype.kind != first.dtype.kind:
            raise DataError(f"{path}: {key} holds {y.shape[1]} {y.dtype} value(s) per sample, "
                            f"but {first_path.name} holds {first.shape[1]} {first.dtype}; every "
                            "shard must have the same layout")
    joined = np.concatenate([y for _, y in arrays])
    return joined[:, 0] if joined.shape[1] == 1 else joined


def describe_shards(folder: Path) -> tuple:
    """(sample shape, dtype) from the first shard's header."""
    header = npz_headers(shard_files(folder)[0])
    if "x_train" not in header:
        raise DataError(f"{shard_files(folder)[0]}: missing array x_train")
    return header["x_train"][0][1:], header["x_train"][1]


def fingerprint(files: list[Path], digest) -> None:
    """Feed every shard's bytes to `digest`, a megabyte at a time, and check that its inputs
    are finite (the one pass that reads every shard before training, one shard at a time)."""
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        floats = [k for k, (_, dtype) in npz_headers(path).items()
                  if k in ("x_train", "x_test") and dtype.kind == "f"]
        with np.load(path, allow_pickle=False) as npz:
            for key in floats:  # integers are finite: not read
                check_finite(npz[key], key, path)


def statistics(x: ShardSet, scaled: Callable, per_feature: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of `scaled(rows)` over every shard (float64 sums)."""
    total = squares = None
    count = 0
    for part in x:
        part = scaled(part).astype("float64")
        s = part.sum(axis=0) if per_feature else part.sum()
        q = (part * part).sum(axis=0) if per_feature else (part * part).sum()
        total = s if total is None else total + s
        squares = q if squares is None else squares + q
        count += len(part) if per_feature else part.size
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return mean, std


class ShardsSource(ArraySource):
    """`dataset: {name: npz, path: FOLDER}`: every `*.npz` of FOLDER is a shard, read one at a
    time; the labels are in memory, the inputs a `ShardSet`."""

    in_memory = False

    def header_info(self) -> DataInfo:
        return _describe_shards(Path(self.cfg.path), self.cfg.task)

    def read(self) -> dict:
        return read_shards(Path(self.cfg.path))

    def head(self, x: ShardSet, n: int) -> ShardSet:
        return x.take(np.arange(min(n, len(x))))

    def split(self, x: ShardSet, y, fraction: float, seed: int):
        """Split by row positions; each side keeps its rows in shard order."""
        kept, held, _, _ = super().split(np.arange(len(x)), y, fraction, seed)
        return x.take(kept), x.take(held), y[np.sort(kept)], y[np.sort(held)]

    def fingerprint(self, *arrays) -> str:
        """The shards' bytes (each file once), and which rows each array takes."""
        digest, hashed = hashlib.sha256(), set()
        for array in arrays:
            if not isinstance(array, ShardSet):
                self.hash_into(digest, array)
                continue
            fingerprint([f for f in array.files if f not in hashed], digest)
            hashed.update(array.files)
            for rows in array.rows:
                digest.update(np.ascontiguousarray(rows, dtype="int64").tobytes())
        return "sha256:" + digest.hexdigest()

    def training_batches(self, x, y, batch_size: int, seed: int, shuffle: bool,
                         first_epoch: int, sample_weight=None, list_size: int = 1):
        from dlmine.data.batches import ShardBatches

        return ShardBatches(x, y, batch_size, seed, shuffle, first_epoch, sample_weight)

    def as_input(self, x, y=None, batch_size: int = 32):
        """A split's `ShardSet` as `ShardBatches`, read in order; `predict` input as arrays."""
        if not isinstance(x, ShardSet):
            return super().as_input(x, y, batch_size)
        from dlmine.data.batches import ShardBatches

        return ShardBatches(x, y, batch_size)

    def predict_batch_size(self, x, batch_size: int) -> int | None:
        return None if isinstance(x, ShardSet) else batch_size  # ShardBatches are batched


def _describe_shards(folder: Path, task: str) -> DataInfo:
    """A folder of shards: the sample shape from the first shard's header, the classes from
    every shard's labels (their inputs are not read)."""
    shape, _ = describe_shards(folder)
    if task != "classification":
        return DataInfo(tuple(shape), None, [])
    arrays = read_shards(folder)
    labels = [arrays[k].reshape(-1) for k in ("y_train", "y_test") if k in arrays]
    labels = [y for y in labels if len(y) and np.issubdtype(y.dtype, np.number)]
    if np.issubdtype(arrays["y_train"].dtype, np.number):
        check_classes(arrays["y_train"], folder, "y_train")
    classes = max(int(np.max(y)) + 1 for y in labels) if labels else None  # else load() says
    names = arrays.get("class_names") or [str(i) for i in range(classes or 0)]
    return DataInfo(tuple(shape), classes, names)


