"""dlmine's recommenders against Surprise and implicit on MovieLens-100K, on the same splits.

The splits and the ranking candidates are dlmine's own (`InteractionsSource.load`,
`candidates_for`): every model trains on the same training split (dlmine's validation
split only picks its best epoch) and is scored on the same held-out rows and the same 99
sampled negatives. Prints a Markdown table and writes it into docs/benchmarks.md
(between the recommender markers). `make movielens` first.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlmine.config import load_config  # noqa: E402
from dlmine.data import source_for  # noqa: E402
from dlmine.results.recommend_metrics import candidates_for, full_ranking, ranks_metrics, sampled_ranks  # noqa: E402

BEGIN, END = "<!-- recommend-benchmark -->", "<!-- end of recommend-benchmark -->"


class Table:
    """A peer's scores as the `model.predict` that dlmine's metrics call."""

    def __init__(self, scores: np.ndarray):
        self.scores, self.layers = scores, []

    def predict(self, x, batch_size=None, verbose=0):
        return self.scores[x[:, 0], x[:, 1]][:, None]


def ranking_peers(config: Path) -> list[tuple]:
    import implicit
    from scipy.sparse import csr_matrix

    cfg = load_config(config).config
    source = source_for(cfg.dataset)
    splits = source.load(cfg.seed)
    users, items = source.users_count, source.items_count
    train = splits.x_train  # what dlmine trains on (validation only picks its epoch)
    matrix = csr_matrix((np.ones(len(train), "float32"), (train[:, 0], train[:, 1])),
                        shape=(users, items))
    test = splits.x_test[(splits.x_test[:, 0] < users) & (splits.x_test[:, 1] < items)]
    candidates = candidates_for(test, source.known, items, 99, cfg.seed, 2718)
    rows = []
    popularity = np.asarray(matrix.sum(axis=0)).ravel()
    peers = {"popularity": lambda: np.tile(popularity, (users, 1)).astype("float32")}
    for name, make in (
            ("implicit ALS (64 factors)", lambda: implicit.cpu.als.AlternatingLeastSquares(
                factors=64, random_state=cfg.seed)),
            ("implicit ALS (32 factors, reg 0.1, alpha 10)",
             lambda: implicit.cpu.als.AlternatingLeastSquares(factors=32, regularization=0.1,
                                                              alpha=10, random_state=cfg.seed)),
            ("implicit BPR", lambda: implicit.cpu.bpr.BayesianPersonalizedRanking(
                random_state=cfg.seed))):
        def fitted(make=make):
            model = make()
            model.fit(matrix, show_progress=False)
            return np.asarray(model.user_factors) @ np.asarray(model.item_factors).T
        peers[name] = fitted
    for name, fit in peers.items():
        started = time.time()
        table = Table(fit())
        m = ranks_metrics(sampled_ranks(table, test, candidates), [10])
        m.update(full_ranking(table, test, source.known, items, [10]))
        rows.append((name, m, time.time() - started))
    return rows


def dlmine_run(config: Path) -> tuple:
    started = time.time()
    run = subprocess.run([sys.executable, "-m", "dlmine", "train", str(config), "--quiet",
                          "--runs-root", str(ROOT / "runs" / "bench")], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout.strip()
    import json

    metrics = json.loads((Path(run) / "eval.json").read_text())["metrics"]
    return (f"dlmine {config.stem}", metrics, time.time() - started)


def rating_peer(config: Path) -> tuple:
    from surprise import SVD, Dataset, Reader, accuracy

    cfg = load_config(config).config
    source = source_for(cfg.dataset)
    splits = source.load(cfg.seed)
    train, y = splits.x_train, splits.y_train  # what dlmine trains on
    import pandas as pd

    started = time.time()
    frame = pd.DataFrame({"u": train[:, 0], "i": train[:, 1], "r": y})
    data = Dataset.load_from_df(frame, Reader(rating_scale=tuple(source.rating_range)))
    model = SVD(random_state=cfg.seed)
    model.fit(data.build_full_trainset())
    predictions = model.test(list(zip(splits.x_test[:, 0], splits.x_test[:, 1],
                                      splits.y_test, strict=True)))
    rmse = accuracy.rmse(predictions, verbose=False)
    mae = accuracy.mae(predictions, verbose=False)
    return ("Surprise SVD (defaults)", {"rmse": rmse, "mae": mae}, time.time() - started)


def table(rating: list, ranking: list) -> str:
    lines = ["Rating (the split of configs/movielens_mf.yaml: random, 20 % test):", "",
             "| model | RMSE | MAE | seconds |", "|---|---|---|---|"]
    lines += [f"| {n} | {m['rmse']:.4f} | {m['mae']:.4f} | {s:.0f} |" for n, m, s in rating]
    lines += ["", "Ranking (leave-last-out; sampled: 99 negatives; full: every unseen item):", "",
              "| model | HR@10 | NDCG@10 | full HR@10 | full NDCG@10 | seconds |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {m['hr@10']:.3f} | {m['ndcg@10']:.3f} | {m['full_hr@10']:.3f} | "
              f"{m['full_ndcg@10']:.3f} | {s:.0f} |" for n, m, s in ranking]
    return "\n".join(lines) + "\n"


def main() -> None:
    configs = ROOT / "configs"
    rating = [rating_peer(configs / "movielens_mf.yaml"), dlmine_run(configs / "movielens_mf.yaml")]
    ranking = ranking_peers(configs / "movielens_neumf.yaml")
    ranking.append(dlmine_run(configs / "movielens_neumf.yaml"))
    ranking.append(dlmine_run(configs / "movielens_two_tower.yaml"))
    text = table(rating, ranking)
    print(text)
    doc = ROOT / "docs" / "benchmarks.md"
    current = doc.read_text()
    block = f"{BEGIN}\n## Recommenders on MovieLens-100K\n\n{text}{END}\n"
    if BEGIN in current:
        current = current[:current.index(BEGIN)] + block + current[current.index(END) + len(END) + 1:]
    else:
        current += "\n" + block
    doc.write_text(current)


if __name__ == "__main__":
    main()
