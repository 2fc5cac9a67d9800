"""One process's share of every training batch, for data-parallel training (`dlmine.backend.distributed`).

Process i of N takes rows [i*k, (i+1)*k) of each global batch of s rows, k = s // N. Keras
(JAX backend, `DataParallel`) joins the N shares in process order
(`jax.make_array_from_process_local_data`), which rebuilds the global batch exactly when N
divides s: the global batch size must be a multiple of N, so every batch but an epoch's last
one splits evenly. In that last one, the s mod N rows that do not split are left out for the
epoch (others each epoch, since the order is shuffled); if it has fewer rows than
processes, each process takes one of them, so some are counted twice.
"""

from __future__ import annotations

import keras
import numpy as np


def share_rows(size: int, index: int, count: int) -> np.ndarray:
    """The positions, in a batch of `size` rows, that process `index` of `count` takes."""
    per_process = max(1, size // count)
    return np.arange(index * per_process, (index + 1) * per_process) % size


class LocalShare(keras.utils.PyDataset):
    """The share of process `index` of `count` of each batch of `batches`.

    Args:
        batches: the global training batches (`dlmine.data.batches.training_batches`): the same,
            in the same order, on every process.
        index, count: this process and how many there are.
    """

    def __init__(self, batches, index: int, count: int):
        super().__init__()
        self.batches, self.index, self.count = batches, index, count

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, position: int):
        batch = self.batches[position]
        rows = share_rows(len(batch[0]), self.index, self.count)
        return tuple(part[rows] for part in batch)

    def callback(self) -> keras.callbacks.Callback:
        """The global batches' callback: their order follows the epoch."""
        return self.batches.callback()
