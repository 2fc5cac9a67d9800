"""Sampling items a user never interacted with: one sampler for training negatives and for
the candidates of the sampled ranking evaluation (numpy only)."""

from __future__ import annotations

import numpy as np

MAX_ROUNDS = 100  # redraws of a seen item; a user who has seen (almost) every item loses it


def pair_keys(users: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    return users.astype("int64") * num_items + items.astype("int64")


def is_member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Whether each key is in `sorted_keys` (sorted, unique)."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def sample_unseen(users: np.ndarray, per_user: int, seen: np.ndarray, num_items: int,
                  rng: np.random.Generator) -> np.ndarray:
    """`(len(users), per_user)` items, each outside the user's `seen` pairs, or -1 where a
    user has seen (almost) every item and no unseen item turned up.

    Args:
        users: user codes, one per row.
        seen: sorted unique keys `user * num_items + item` (`pair_keys`).
    """
    items = rng.integers(0, num_items, size=(len(users), per_user))
    flat_users = np.repeat(users, per_user)
    bad = np.flatnonzero(is_member(pair_keys(flat_users, items.ravel(), num_items), seen))
    flat = items.ravel()
    for _ in range(MAX_ROUNDS):
        if len(bad) == 0:
            break
        flat[bad] = rng.integers(0, num_items, size=len(bad))
        bad = bad[is_member(pair_keys(flat_users[bad], flat[bad], num_items), seen)]
    flat[bad] = -1
    return flat.reshape(len(users), per_user)


def lists_of(pairs: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each (user, item) positive followed by its sampled items (`sample_unseen`'s output):
    `(rows, 1 + per_user, 2)` int32 pairs and `(rows, 1 + per_user)` float32 labels, 1 for
    the positive, 0 for a negative, -1 where none was drawn (its item then reads 0)."""
    negatives = np.stack([np.repeat(pairs[:, :1], items.shape[1], axis=1),
                          np.maximum(items, 0)], axis=2)
    rows = np.concatenate([pairs[:, None, :], negatives], axis=1).astype("int32")
    labels = np.concatenate([np.ones((len(pairs), 1)), np.where(items >= 0, 0.0, -1.0)],
                            axis=1).astype("float32")
    return rows, labels
