"""Evaluation of recommenders: RMSE and MAE of ratings; ranking metrics, sampled and full.

Ranking: each held-out positive (user u, item i) is ranked

- against `eval_negatives` items u never interacted with (in any split), drawn once
  from the seed (the NCF paper's protocol: 99), so `train`'s final evaluation and
  `evaluate` rank the same candidates: `hr@K`, `ndcg@K`, `mrr`;
- against every item u never interacted with (full ranking): `full_hr@K`,
  `full_ndcg@K`, `full_mrr`, and over u's top K of those items plus its held-out ones,
  `recall@K` (held-out items in the top K / held-out items, averaged over users) and
  `coverage@K` (the share of the catalogue in some user's top K).

The rank of the held-out item is the number of candidates that score at least as high
(ties count against it, so a constant model scores no hit). Rows whose user or item was
never seen in training cannot be ranked: they are counted in `skipped`.
"""

from __future__ import annotations

import numpy as np

from dlmine.data.sampling import is_member, sample_unseen
from dlmine.model.recommenders import Scorer, score_batch

FULL_PAIRS = 1 << 21  # pairs scored at once in the full ranking


def ranks_metrics(ranks: np.ndarray, top_k: list[int], prefix: str = "") -> dict:
    """HR@K, NDCG@K for each K and MRR of 0-based ranks."""
    ranks = np.asarray(ranks, dtype="float64")
    out = {}
    for k in top_k:
        hit = ranks < k
        out[f"{prefix}hr@{k}"] = float(hit.mean())
        out[f"{prefix}ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2), 0.0).mean())
    out[f"{prefix}mrr"] = float((1.0 / (ranks + 1)).mean())
    return out


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """The columns of each row's `k` highest scores, best first, ties to the lower column
    (a stable sort's order); `argpartition` first, so that a catalogue of 200,000 items is
    not sorted whole."""
    scores = np.atleast_2d(scores)
    k = min(k, scores.shape[1])
    if scores.shape[1] <= 4 * k:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    chosen = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
    values = np.take_along_axis(scores, chosen, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    top = np.take_along_axis(chosen, order, axis=1)
    tied = (scores >= values.min(axis=1, keepdims=True)).sum(axis=1) > k  # ties at the K-th
    if tied.any():
        top[tied] = np.argsort(-scores[tied], axis=1, kind="stable")[:, :k]
    return top


def score_pairs(model, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The model's score of each (user, item) pair."""
    x = np.stack([users, items], axis=1).astype("int32")
    return np.asarray(model.predict(x, batch_size=score_batch(model), verbose=0)).reshape(-1)


def sampled_ranks(model, x: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Ranks of each row's item against its candidates (-1: none drawn, scores nothing)."""
    per = candidates.shape[1]
    positive = score_pairs(model, x[:, 0], x[:, 1])
    drawn = candidates >= 0
    scores = score_pairs(model, np.repeat(x[:, 0], per), np.maximum(candidates, 0).ravel())
    scores = np.where(drawn.ravel(), scores, -np.inf).reshape(len(x), per)
    return (scores >= positive[:, None]).sum(axis=1)


def candidates_for(x: np.ndarray, known: np.ndarray, num_items: int, per_user: int,
                   seed: int, salt: int) -> np.ndarray:
    """The sampled candidates of each held-out row, the same for the same data and seed."""
    return sample_unseen(x[:, 0], per_user, known, num_items, np.random.default_rng([seed, salt]))


def rankable(x: np.ndarray, num_users: int, num_items: int) -> np.ndarray:
    return (x[:, 0] < num_users) & (x[:, 1] < num_items)


def full_ranking(model, x: np.ndarray, known: np.ndarray, num_items: int,
                 top_k: list[int], extras: dict | None = None) -> dict:
    """Full-ranking metrics of the held-out rows `x` against every item not interacted with.

    Args:
        extras: filled, when given, with `ranks` (each row's full rank) and `shown` (how
            often each item is in a user's top `min(top_k)`).
    """
    users, inverse = np.unique(x[:, 0], return_inverse=True)
    ranks = np.zeros(len(x), "int64")
    recalls, shown = [], np.zeros(num_items, "int64")
    chunk = max(1, FULL_PAIRS // num_items)
    scorer = Scorer(model, num_items)
    for start in range(0, len(users), chunk):
        block = users[start:start + chunk]
        scores = scorer(block)
        lo = np.searchsorted(known, block.astype("int64") * num_items)
        hi = np.searchsorted(known, (block.astype("int64") + 1) * num_items)
        rows = np.flatnonzero((inverse >= start) & (inverse < start + len(block)))
        local = inverse[rows] - start
        positive = scores[local, x[rows, 1]]
        masked = scores.copy()
        for j in range(len(block)):
            masked[j, known[lo[j]:hi[j]] - int(block[j]) * num_items] = -np.inf
        ranks[rows] = (masked[local] >= positive[:, None]).sum(axis=1)
        masked[local, x[rows, 1]] = positive  # held-out items compete for the top K
        top = top_indices(masked, max(top_k))
        np.add.at(shown, top[:, :min(top_k)].ravel(), 1)
        recalls.append((block, top, rows, local))
    out = ranks_metrics(ranks, top_k, "full_")
    if extras is not None:
        extras.update(ranks=ranks, shown=shown)
    for k in top_k:
        hits, held = [], []
        for block, top, rows, local in recalls:
            in_top = (top[local, :k] == x[rows, 1][:, None]).any(axis=1)
            hits.append(np.bincount(local, in_top, minlength=len(block)))
            held.append(np.bincount(local, minlength=len(block)))
        hits, held = np.concatenate(hits), np.concatenate(held)
        out[f"recall@{k}"] = float((hits[held > 0] / held[held > 0]).mean())
        covered = np.zeros(num_items, bool)
        for _, top, _, _ in recalls:
            covered[top[:, :k].ravel()] = True
        out[f"coverage@{k}"] = float(covered.mean())
    return out


def evaluate_ranking(model, x: np.ndarray, known: np.ndarray, num_users: int, num_items: int,
                     cfg, batch_size: int) -> dict:
    """The ranking report of held-out positives `x` (codes): sampled and full metrics."""
    inter = cfg.dataset.interactions
    keep = rankable(x, num_users, num_items)
    x = x[keep]
    if len(x) == 0:
        return {"metrics": {}, "samples": 0, "skipped": int((~keep).sum())}
    candidates = candidates_for(x, known, num_items, inter.eval_negatives, cfg.seed, 2718)
    ranks = sampled_ranks(model, x, candidates)
    metrics = ranks_metrics(ranks, inter.top_k)
    extras: dict = {}
    metrics.update(full_ranking(model, x, known, num_items, inter.top_k, extras))
    return {"metrics": metrics, "samples": int(len(x)), "skipped": int((~keep).sum()),
            "protocol": {"eval_negatives": inter.eval_negatives, "split": inter.split,
                         "ties": "count against the held-out item"},
            "curves": curves(ranks, extras["ranks"], max(20, *inter.top_k)),
            "popularity": popularity_deciles(known, num_items, extras["shown"],
                                             min(inter.top_k))}


def curves(sampled: np.ndarray, full: np.ndarray, k_max: int) -> dict:
    """HR@K and NDCG@K for K = 1..k_max, sampled and full, for the report's plot."""
    ks = list(range(1, k_max + 1))
    out: dict = {"k": ks}
    for prefix, ranks in (("", sampled), ("full_", full)):
        ranks = np.asarray(ranks, "float64")
        out[f"{prefix}hr"] = [round(float((ranks < k).mean()), 6) for k in ks]
        gain = 1.0 / np.log2(ranks + 2)
        out[f"{prefix}ndcg"] = [round(float(np.where(ranks < k, gain, 0.0).mean()), 6)
                                for k in ks]
    return out


def popularity_deciles(known: np.ndarray, num_items: int, shown: np.ndarray, k: int) -> dict:
    """The items in ten groups of equal size by their number of interactions in the data
    (least popular first), and each group's share of the top-`k` recommendations of the
    full ranking: 0.1 each for a recommender blind to popularity."""
    counts = np.bincount(known % num_items, minlength=num_items)[:num_items]
    order = np.argsort(counts, kind="stable")
    groups = np.array_split(order, 10)
    total = max(int(shown.sum()), 1)
    return {"k": k, "recommended_share": [round(float(shown[g].sum() / total), 6)
                                          for g in groups],
            "interactions_share": [round(float(counts[g].sum() / max(counts.sum(), 1)), 6)
                                   for g in groups],
            "mean_interactions": [round(float(counts[g].mean()), 3) if len(g) else 0.0
                                  for g in groups]}


def evaluate_rating(model, x: np.ndarray, y: np.ndarray, rating_range: list) -> dict:
    """RMSE and MAE of predicted ratings, clipped to the training ratings' range."""
    predicted = score_pairs(model, x[:, 0], x[:, 1])
    predicted = np.clip(predicted, *rating_range)
    error = predicted - y
    return {"metrics": {"rmse": float(np.sqrt(np.mean(error ** 2))),
                        "mae": float(np.mean(np.abs(error)))},
            "samples": int(len(x)), "clipped_to": list(rating_range)}


class RankingValidation:
    """The sampled ranking metrics of the validation positives, for the epoch logs."""

    def __init__(self, x: np.ndarray, known: np.ndarray, num_users: int, num_items: int, inter,
                 seed: int):
        self.x = x[rankable(x, num_users, num_items)]
        self.top_k = inter.top_k
        self.candidates = candidates_for(self.x, known, num_items, inter.eval_negatives, seed,
                                         3141)

    def __call__(self, model) -> dict:
        if len(self.x) == 0:
            return {}
        metrics = ranks_metrics(sampled_ranks(model, self.x, self.candidates), self.top_k)
        return {f"val_{k}": v for k, v in metrics.items()}


__all__ = ["RankingValidation", "evaluate_ranking", "evaluate_rating", "is_member",
           "ranks_metrics", "top_indices"]
