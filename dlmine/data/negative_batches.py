"""Negative sampling for ranking: items a user never interacted with, drawn from (seed, epoch).

`NegativeSampled` feeds each epoch the training positives (label 1) and, per positive,
`negatives` items outside the user's training positives (label 0), shuffled together.
Everything an epoch holds comes from `numpy.random.default_rng([seed, epoch])`, so a
resumed run feeds the same batches. The sampler (`dlmine.data.sampling.sample_unseen`)
also draws the candidates of the sampled ranking evaluation.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from dlmine.data.sampling import lists_of, pair_keys, sample_unseen


class NegativeSampled(keras.utils.PyDataset):
    """Batches of ((user, item) codes, 1 or 0): the positives and their sampled negatives.

    Args:
        x: the training positives, `(rows, 2)` codes.
        batch_size: rows per batch (positives and negatives together).
        seed: the run's seed.
        negatives: sampled items per positive.
        num_items: the item vocabulary's size.
        first_epoch: the epoch training starts at (non-zero when resuming).
    """

    def __init__(self, x: np.ndarray, batch_size: int, seed: int, negatives: int,
                 num_items: int, first_epoch: int = 0, lists: bool = False):
        super().__init__()
        self.positives = np.asarray(x, dtype="int32")
        self.seen = np.unique(pair_keys(self.positives[:, 0], self.positives[:, 1], num_items))
        self.batch_size, self.seed, self.negatives = batch_size, seed, negatives
        self.num_items, self.lists = num_items, lists
        if lists:  # whole lists per batch: batch_size rounded down to lists of 1 + negatives
            self.batch_size = max(1, batch_size // (1 + negatives)) * (1 + negatives)
        self.validation = None  # a RankingValidation, run at the end of every epoch
        self.set_epoch(first_epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch])
        users = self.positives[:, 0]
        items = sample_unseen(users, self.negatives, self.seen, self.num_items, rng)
        if self.lists:  # rows of (positive, its negatives); an undrawn negative: label -1
            x, y = lists_of(self.positives, items)
            order = rng.permutation(len(x))
            self.x, self.y = x[order].reshape(-1, 2), y[order].reshape(-1)
            return
        items = items.ravel()
        drawn = items >= 0
        negatives = np.stack([np.repeat(users, self.negatives)[drawn], items[drawn]], axis=1)
        x = np.concatenate([self.positives, negatives.astype("int32")])
        y = np.concatenate([np.ones(len(self.positives), "float32"),
                            np.zeros(len(negatives), "float32")])
        order = rng.permutation(len(x))
        self.x, self.y = x[order], y[order]

    def __len__(self) -> int:
        return math.ceil(len(self.positives) * (1 + self.negatives) / self.batch_size)

    def __getitem__(self, index: int):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.y[rows]

    def callback(self) -> keras.callbacks.Callback:
        return _SampledEpochs(self)


class _SampledEpochs(keras.callbacks.Callback):
    """Draws each epoch's negatives; at its end, adds the validation ranking metrics to the
    logs (`val_hr@10`, ...) before the callbacks after it see them."""

    def __init__(self, dataset: NegativeSampled):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        self.dataset.set_epoch(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self.dataset.validation is not None and logs is not None:
            logs.update(self.dataset.validation(self.model))
