"""Training batches whose shuffle order is a function of (seed, epoch) alone.

Keras shuffles arrays from its global random state, which a resumed process
cannot reproduce; this dataset draws each epoch's order from
`numpy.random.default_rng([seed, epoch])`, so epoch 7 is shuffled the same way
whether or not the run was interrupted before it.
"""

from __future__ import annotations

import math

import keras
import numpy as np


class EpochShuffled(keras.utils.PyDataset):
    """Batches of (x, y[, sample_weight]) in an order keyed to the seed and the epoch.

    Args:
        x, y: the preprocessed training arrays.
        batch_size: samples per batch; the last batch may be smaller.
        seed: the run's seed.
        shuffle: False keeps the order of the data.
        first_epoch: the epoch training starts at (non-zero when resuming).
        sample_weight: per-sample weights (from `class_weight`), or None.
    """

    def __init__(self, x, y, batch_size: int, seed: int, shuffle: bool = True,
                 first_epoch: int = 0, sample_weight=None):
        super().__init__()
        self.x, self.y, self.w = x, y, sample_weight
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.set_epoch(first_epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        n = len(self.x)
        if self.shuffle:
            self.order = np.random.default_rng([self.seed, epoch]).permutation(n)
        else:
            self.order = np.arange(n)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        if self.w is None:
            return self.x[rows], self.y[rows]
        return self.x[rows], self.y[rows], self.w[rows]

    def callback(self) -> keras.callbacks.Callback:
        """The callback that tells this dataset which epoch begins.

        Keras also calls `on_epoch_end` after peeking at the first batches, so counting
        epochs there would be off by one; and `fit(shuffle=False)` is required, or Keras
        reorders the batches from its global random state.
        """
        return _EpochSync(self)


class ShardBatches(keras.utils.PyDataset):
    """Batches of a folder of shards, one shard in memory at a time (`dlmine.data.shards`).

    With `shuffle`, each epoch visits the shards in an order drawn from
    `default_rng([seed, epoch])` and the rows of shard k in an order drawn from
    `default_rng([seed, epoch, k])`: keyed like `EpochShuffled`, so a resumed run
    feeds the same batches. A batch never spans two shards (a shard's last batch may be
    smaller). Without `y` it yields inputs only (for `predict`).
    """

    def __init__(self, x, y, batch_size: int, seed: int = 0, shuffle: bool = False,
                 first_epoch: int = 0, sample_weight=None):
        super().__init__()
        self.x, self.y, self.w = x, y, sample_weight
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        sizes = x.sizes()
        self.starts = np.cumsum([0, *sizes])[:-1]
        self.per_shard = [math.ceil(n / batch_size) for n in sizes]
        self._loaded: tuple | None = None
        self.set_epoch(first_epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        shards = range(len(self.per_shard))
        if self.shuffle:
            shards = np.random.default_rng([self.seed, epoch]).permutation(len(self.per_shard))
        self.order = [(int(k), b) for k in shards for b in range(self.per_shard[k])]
        self._loaded = None

    def __len__(self) -> int:
        return sum(self.per_shard)

    def __getitem__(self, index: int):
        shard, batch = self.order[index]
        if self._loaded is None or self._loaded[0] != shard:
            n = len(self.x.rows[shard])
            rows = (np.random.default_rng([self.seed, self.epoch, int(shard)]).permutation(n)
                    if self.shuffle else np.arange(n))
            self._loaded = (shard, self.x.read(shard), rows)
        _, x, rows = self._loaded
        rows = rows[batch * self.batch_size:(batch + 1) * self.batch_size]
        if self.y is None:
            return (x[rows],)
        at = self.starts[shard] + rows
        if self.w is None:
            return x[rows], self.y[at]
        return x[rows], self.y[at], self.w[at]

    def callback(self) -> keras.callbacks.Callback:
        return _EpochSync(self)


class _EpochSync(keras.callbacks.Callback):
    def __init__(self, dataset: EpochShuffled):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.set_epoch(epoch)
