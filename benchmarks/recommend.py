"""dlmine's recommenders against Surprise and implicit on MovieLens-100K, on the same splits.

The splits and the ranking candidates are dlmine's own (`InteractionsSource.load`,
`candidates_for`): every model trains on the same training split (dlmine's validation
split only picks its best epoch) and is scored on the same held-out rows and the same 99
sampled negatives. Prints a Markdown table and writes it into docs/benchmarks.md
(between the recommender markers). `make movielens` first; `python benchmarks/recommend.py
[SEEDS] [--rating-only | --ranking-only]` (default 5) sets how many seeded random splits the
rating comparison averages; `--rating-only` runs that comparison alone and rewrites only its
rows, `--ranking-only` the ranking one (the other rows of docs/benchmarks.md are kept from
the last run). Each dlmine ranking config trains with `RANKING_SEEDS` seeds (its own, 42, then
1 to 4: five, as the rating comparison has): the seed draws the model's initialisation, its
negatives and its 99 evaluation candidates, so the row is their mean ± standard deviation;
the peers score the candidates of seed 42, as the first dlmine run does.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from docblock import DOC, write_block  # noqa: E402

from dlmine.config import load_config  # noqa: E402
from dlmine.data import source_for  # noqa: E402
from dlmine.results.recommend_metrics import candidates_for, full_ranking, ranks_metrics, sampled_ranks  # noqa: E402

BEGIN, END = "<!-- recommend-benchmark -->", "<!-- end of recommend-benchmark -->"
RANKING_SEEDS = (42, 1, 2, 3, 4)
RANKING_CONFIGS = ("movielens_neumf", "movielens_two_tower", "movielens_dae")


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


def dlmine_run(config: Path, seed: int | None = None) -> tuple:
    started = time.time()
    extra = [] if seed is None else ["--set", f"seed={seed}"]
    run = subprocess.run([sys.executable, "-m", "dlmine", "train", str(config), "--quiet",
                          "--runs-root", str(ROOT / "runs" / "bench"), *extra], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout.strip()
    import json

    metrics = json.loads((Path(run) / "eval.json").read_text())["metrics"]
    return (f"dlmine {config.stem}", metrics, time.time() - started)


def rating_peer(config: Path, seed: int | None = None) -> tuple:
    from surprise import SVD, Dataset, Reader, accuracy

    cfg = load_config(config).config
    seed = cfg.seed if seed is None else seed
    source = source_for(cfg.dataset)
    splits = source.load(seed)
    train, y = splits.x_train, splits.y_train  # what dlmine trains on
    import pandas as pd

    started = time.time()
    frame = pd.DataFrame({"u": train[:, 0], "i": train[:, 1], "r": y})
    data = Dataset.load_from_df(frame, Reader(rating_scale=tuple(source.rating_range)))
    model = SVD(random_state=seed)
    model.fit(data.build_full_trainset())
    predictions = model.test(list(zip(splits.x_test[:, 0], splits.x_test[:, 1],
                                      splits.y_test, strict=True)))
    rmse = accuracy.rmse(predictions, verbose=False)
    mae = accuracy.mae(predictions, verbose=False)
    return ("Surprise SVD (defaults)", {"rmse": rmse, "mae": mae}, time.time() - started)


def rating_splits(configs: list[Path], seeds: int) -> list[tuple]:
    """Surprise SVD and each dlmine config on `seeds` random splits (the first config's
    split, which the others share: random with the same test_split; seeds 0..N-1, the
    closest that dlmine's seeded `split: random` comes to k-fold cross-validation), one row
    each with the mean and the standard deviation of RMSE and MAE over the splits."""
    runs = {"Surprise SVD (defaults)": [], **{f"dlmine {c.stem}": [] for c in configs}}
    for seed in range(seeds):
        for name, result in (("Surprise SVD (defaults)", rating_peer(configs[0], seed)),
                             *((f"dlmine {c.stem}", dlmine_run(c, seed)) for c in configs)):
            runs[name].append(result)
            print(f"seed {seed}: {name}: RMSE {result[1]['rmse']:.4f}", flush=True)
    rows = []
    for name, results in runs.items():
        rmse = np.array([m["rmse"] for _, m, _ in results])
        mae = np.array([m["mae"] for _, m, _ in results])
        rows.append((name, rmse, mae, float(np.mean([s for _, _, s in results]))))
    return rows


def rating_table(rating: list) -> str:
    seeds = len(rating[0][1])
    lines = [f"Rating (the rating configs' split, random with 20 % test, over {seeds} "
             f"seeds 0..{seeds - 1}: mean ± standard deviation; dlmine's validation split, "
             "10 % of the rest, only picks its epoch, and Surprise trains on the same rows):",
             "", "| model | RMSE | MAE | seconds per split |", "|---|---|---|---|"]
    lines += [f"| {n} | {r.mean():.4f} ± {r.std():.4f} | {a.mean():.4f} ± {a.std():.4f} | "
              f"{s:.0f} |" for n, r, a, s in rating]
    return "\n".join(lines) + "\n\n"


def ranking_seeds(config: Path) -> tuple:
    """One dlmine ranking config over `RANKING_SEEDS`: (name, {metric: values}, seconds)."""
    runs = []
    for seed in RANKING_SEEDS:
        runs.append(dlmine_run(config, seed))
        print(f"seed {seed}: {runs[-1][0]}: HR@10 {runs[-1][1]['hr@10']:.4f} NDCG@10 "
              f"{runs[-1][1]['ndcg@10']:.4f}", flush=True)
    values = {k: np.array([m[k] for _, m, _ in runs]) for k in runs[0][1]}
    return runs[0][0], values, float(np.mean([s for _, _, s in runs]))


def ranking_table(ranking: list) -> str:
    seeds = ", ".join(map(str, RANKING_SEEDS))
    lines = ["Ranking (leave-last-out; sampled: 99 negatives; full: every unseen item; dlmine "
             f"rows: mean ± standard deviation over seeds {seeds}, each drawing its own 99 "
             "candidates; the peers score seed 42's):", "",
             "| model | HR@10 | NDCG@10 | full HR@10 | full NDCG@10 | seconds |",
             "|---|---|---|---|---|---|"]

    def cell(value) -> str:
        value = np.asarray(value, dtype=float)
        return f"{value.mean():.3f}" if value.size == 1 else f"{value.mean():.3f} ± {value.std():.3f}"

    lines += [f"| {n} | {cell(m['hr@10'])} | {cell(m['ndcg@10'])} | {cell(m['full_hr@10'])} | "
              f"{cell(m['full_ndcg@10'])} | {s:.0f} |" for n, m, s in ranking]
    return "\n".join(lines) + "\n"


def main() -> None:
    configs = ROOT / "configs"
    numbers = [a for a in sys.argv[1:] if not a.startswith("--")]
    seeds = int(numbers[0]) if numbers else 5
    kept = DOC.read_text().split(BEGIN, 1)[1].split(END, 1)[0]
    if "--ranking-only" in sys.argv:  # the rating rows of docs/benchmarks.md stay as they are
        rating = kept[kept.index("Rating ("):kept.index("Ranking (")]
    else:
        rating = rating_table(rating_splits([configs / "movielens_mf.yaml",
                                             configs / "movielens_autorec.yaml"], seeds))
    if "--rating-only" in sys.argv:  # the ranking rows of docs/benchmarks.md stay as they are
        ranking = kept[kept.index("Ranking ("):]
    else:
        results = ranking_peers(configs / "movielens_neumf.yaml")
        results += [ranking_seeds(configs / f"{name}.yaml") for name in RANKING_CONFIGS]
        ranking = ranking_table(results)
    text = rating + ranking
    print(text)
    write_block(f"{BEGIN}\n## Recommenders on MovieLens-100K\n\n{text}{END}", BEGIN, END)


if __name__ == "__main__":
    main()
