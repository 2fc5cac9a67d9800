"""Side features, two-tower models and keras-rs list losses: real tiny trainings, hand checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from dlmine.cli import main
from dlmine.config import load_config
from dlmine.data import source_for
from dlmine.data.negative_batches import NegativeSampled
from dlmine.data.sampling import is_member, pair_keys
from dlmine.data.tabular import TableEncoder
from dlmine.errors import DataError

ITEMS = 40


def planted_side(folder, users=40, per_user=10, seed=0):
    """Users of two groups, each interacting with its own half of the items; the group is a
    users-table column, the half an items-table `multi` column."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        group = u % 2
        items = rng.choice(np.arange(group * ITEMS // 2, (group + 1) * ITEMS // 2),
                           size=per_user, replace=False)
        rows += [(u, int(i), t) for t, i in enumerate(items)]
    pd.DataFrame(rows, columns=["user", "item", "timestamp"]).to_csv(folder / "inter.csv",
                                                                   index=False)
    pd.DataFrame({"user": range(users), "age": rng.integers(18, 70, users),
                  "group": [f"g{u % 2}" for u in range(users)]}).to_csv(folder / "users.csv",
                                                                     index=False)
    pd.DataFrame({"item": range(ITEMS), "title": [f"film {i}" for i in range(ITEMS)],
                  "genres": [f"{'A' if i < ITEMS // 2 else 'B'}|all" for i in range(ITEMS)]}
                 ).to_csv(folder / "items.csv", index=False)


TWO_TOWER = """
name: towers
seed: 2
dataset:
  name: interactions
  path: inter.csv
  task: ranking
  interactions:
    timestamp: timestamp
    split: leave_last_out
    negatives: 4
    eval_negatives: 20
    users: users.csv
    items: items.csv
    user_features: {age: numeric, group: categorical}
    item_features: {genres: multi}
model:
  recommender:
    type: two_tower
    factors: 8
    loss: pairwise
    user_tower: [{Dense: {units: 16, activation: relu}}, {Dense: {units: 8}}]
    item_tower: [{Dense: {units: 16, activation: relu}}, {Dense: {units: 8}}]
training:
  epochs: 8
  batch_size: 50
  optimizer: {name: adam, learning_rate: 0.01}
  checkpoint: {monitor: val_ndcg@10}
"""


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def tower_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("towers")
    planted_side(folder)
    (folder / "cfg.yaml").write_text(TWO_TOWER)
    result = run_cli("train", folder / "cfg.yaml", "--run-dir", folder / "run", "--quiet")
    assert result.exit_code == 0, result.output
    return folder


def test_two_tower_with_side_features_finds_the_planted_groups(tower_run):
    report = json.loads((tower_run / "run" / "eval.json").read_text())
    assert report["metrics"]["hr@10"] >= 0.9  # 20 candidates, 10 of them the user's group
    meta = json.loads((tower_run / "run" / "preprocessing.json").read_text())["columns"]
    assert meta["user_features"]["columns"] == {"age": "numeric", "group": "categorical"}
    assert meta["item_features"]["layout"] == {"dense": 3, "embedded": []}  # A, B, all
    assert "val_loss" in (tower_run / "run" / "history.csv").read_text().splitlines()[0]


def test_two_tower_scores_are_the_towers_dot_product(tower_run):
    """Top K over the catalogue is one matrix product of the towers' outputs, and it equals
    the model's own score of each pair; the saved model loads in safe mode."""
    from dlmine.model.io import load_model_file
    from dlmine.model.recommenders import Scorer, item_vectors

    model = load_model_file(tower_run / "run" / "checkpoints" / "best.keras")
    scorer = Scorer(model, 20)
    assert scorer.vectors is not None
    users = np.array([0, 3, 7])
    pairs = np.stack([np.repeat(users, 20), np.tile(np.arange(20), 3)], axis=1).astype("int32")
    direct = model.predict(pairs, verbose=0).reshape(3, 20)
    np.testing.assert_allclose(scorer(users), direct, rtol=1e-4, atol=1e-5)
    assert item_vectors(model).shape[1] == 8


def test_evaluate_recommend_and_similar_work_on_a_two_tower_run(tower_run):
    trained = json.loads((tower_run / "run" / "eval.json").read_text())["metrics"]
    evaluated = run_cli("evaluate", tower_run / "run", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output[evaluated.output.index("{"):])["metrics"] == trained
    result = run_cli("recommend", tower_run / "run", "--user", "0", "--k", "5")
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(pd.io.common.StringIO(result.output))
    assert list(rows.columns) == ["user", "rank", "item", "score", "cold_start", "title",
                                  "genres"]
    assert (rows["item"] < ITEMS // 2).mean() >= 0.8  # user 0 is of the first group
    similar = run_cli("similar", tower_run / "run", "--item", "3", "--k", "5")
    assert similar.exit_code == 0, similar.output
    near = pd.read_csv(pd.io.common.StringIO(similar.output))
    assert (near["similar"] < ITEMS // 2).all()  # item 3 is of the first half


def test_list_batches_keep_each_positive_with_its_unseen_negatives():
    rng = np.random.default_rng(0)
    x = np.stack([rng.integers(0, 10, 200), rng.integers(0, 30, 200)], axis=1)
    x = np.unique(x, axis=0)
    batches = NegativeSampled(x, 22, seed=3, negatives=4, num_items=30, lists=True)
    assert batches.batch_size == 20  # whole lists of 1 + 4 rows
    rows = np.concatenate([batches[i][0] for i in range(len(batches))])
    labels = np.concatenate([batches[i][1] for i in range(len(batches))])
    lists, marks = rows.reshape(-1, 5, 2), labels.reshape(-1, 5)
    assert len(lists) == len(x) and (marks[:, 0] == 1).all() and (marks[:, 1:] == 0).all()
    assert (lists[:, :, 0] == lists[:, :1, 0]).all()  # one user per list
    seen = np.unique(pair_keys(x[:, 0], x[:, 1], 30))
    negatives = lists[:, 1:].reshape(-1, 2)
    assert not is_member(pair_keys(negatives[:, 0], negatives[:, 1], 30), seen).any()
    again = NegativeSampled(x, 22, seed=3, negatives=4, num_items=30, lists=True)
    np.testing.assert_array_equal(again[2][0], batches[2][0])  # same (seed, epoch), same lists


def test_pairwise_loss_equals_a_hand_computation():
    from dlmine.model.layers import ListRankingLoss

    labels = np.array([1, 0, 0, 1, 0, -1], "float32")  # the -1 negative is ignored
    scores = np.array([[2.0], [0.0], [1.0], [0.0], [3.0], [9.0]], "float32")
    pairs = [2 - 0, 2 - 1, 0 - 3]  # positive minus negative, per valid pair
    # keras-rs sums log(1 + exp(-d)) over the pairs and averages over the list's items
    expected = sum(math.log1p(math.exp(-d)) for d in pairs) / 6
    assert float(ListRankingLoss("pairwise", 3)(labels, scores)) == pytest.approx(expected,
                                                                               rel=1e-5)


def test_multi_valued_categories_are_multi_hot():
    frame = pd.DataFrame({"genres": ["Action|Comedy", "Comedy", None, " Drama | Action "]})
    encoder = TableEncoder({"genres": "multi"}).fit(frame)
    assert encoder.state["genres"]["vocabulary"] == ["Action", "Comedy", "Drama"]
    np.testing.assert_array_equal(encoder.transform(frame), [[1, 1, 0], [0, 1, 0], [0, 0, 0],
                                                             [1, 0, 1]])
    unseen = encoder.transform(pd.DataFrame({"genres": ["Horror|Comedy"]}))
    np.testing.assert_array_equal(unseen, [[0, 1, 0]])


def test_side_features_follow_the_id_codes(tmp_path):
    planted_side(tmp_path)
    (tmp_path / "cfg.yaml").write_text(TWO_TOWER)
    cfg = load_config(tmp_path / "cfg.yaml").config
    splits = source_for(cfg.dataset).load(cfg.seed)
    users, matrix = splits.info.columns["users"], splits.info.tables["user"]
    assert matrix.shape == (len(users) + 1, 1 + 3)  # age, then group one-hot with unseen slot
    group = {u: u % 2 for u in users}
    assert all(matrix[code, 1 + group[u]] == 1 for code, u in enumerate(users))
    assert matrix[len(users)].tolist() == [0, 0, 0, 1]  # unseen users: mean age, unseen group


@pytest.mark.parametrize(("edit", "message"), [
    (lambda f: f["users"].rename(columns={"user": "usr"}),
     "users.csv: the users table has no column 'user', the user id column of the interactions;"
     " did you mean 'usr'?"),
    (lambda f: pd.concat([f["users"], f["users"].iloc[:1]]),
     "users.csv: column 'user', row 42: user 0 has more than one row; the users table holds "
     "one row per user"),
    (lambda f: f["users"].drop(columns=["group"]).assign(grup=1),
     "users.csv: column 'group' named in dataset.interactions.user_features is not in the "
     "file; did you mean 'grup'?"),
    (lambda f: f["users"].assign(age=["old"] + list(f["users"].age[1:])),
     "users.csv: column 'age', row 2: 'old' is not a number (the column is numeric; mark it "
     "`categorical` in dataset.interactions.user_features if it holds categories)"),
    (lambda f: f["users"].assign(user=[f"x{u}" for u in f["users"].user]),
     "users.csv: none of the 40 ids in column 'user' (e.g. 'x0') is a user of the training "
     "interactions (e.g. 0); expected the same ids"),
])
def test_bad_side_tables_are_named(tmp_path, edit, message):
    planted_side(tmp_path)
    (tmp_path / "cfg.yaml").write_text(TWO_TOWER)
    edit({"users": pd.read_csv(tmp_path / "users.csv")}).to_csv(tmp_path / "users.csv",
                                                                 index=False)
    cfg = load_config(tmp_path / "cfg.yaml").config
    with pytest.raises(DataError) as err:
        source_for(cfg.dataset).load(cfg.seed)
    assert message in str(err.value)


@pytest.mark.parametrize(("old", "new", "message"), [
    ("    users: users.csv\n", "",
     "cfg.yaml:14: dataset.interactions.user_features: user_features are read from the users "
     "table: set `users:` to its file"),
    ("{genres: multi}", "{genres: mult}",
     "cfg.yaml:16: dataset.interactions.item_features.genres: expected one of: numeric, "
     "categorical, embedding, multi, received 'mult'; did you mean 'multi'?"),
    ("type: two_tower", "type: mf",
     "cfg.yaml:15: dataset.interactions.user_features: type: mf reads no side features"),
    ("    item_tower: [{Dense: {units: 16, activation: relu}}, {Dense: {units: 8}}]\n", "",
     "cfg.yaml:18: model.recommender: type: two_tower needs `item_tower:`"),
    ("task: ranking", "task: rating",
     "cfg.yaml:21: model.recommender.loss: loss: pairwise ranks lists of items: it needs "
     "task: ranking"),
    ("{Dense: {units: 8}}]\ntraining:", "{Dense: {units: 6}}]\ntraining:",
     "cfg.yaml:23: model.recommender.item_tower[1]: the item tower ends with 6 values but the "
     "user tower with 8"),
])
def test_side_and_tower_config_mistakes_are_named(tmp_path, old, new, message):
    planted_side(tmp_path)
    assert old in TWO_TOWER
    (tmp_path / "cfg.yaml").write_text(TWO_TOWER.replace(old, new, 1))
    result = run_cli("check", tmp_path / "cfg.yaml")
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n  ", " ")


def test_top_indices_equal_a_stable_sort_on_a_large_catalogue():
    from dlmine.results.recommend_metrics import top_indices

    scores = np.random.default_rng(1).normal(size=(6, 5000))
    scores[0] = 0.0  # all tied: the lowest columns
    scores[1, :4000] = -np.inf
    scores[2, [7, 90, 4000]] = 9.0  # tied at the top
    np.testing.assert_array_equal(top_indices(scores, 10),
                                  np.argsort(-scores, axis=1, kind="stable")[:, :10])


def test_a_resumed_list_loss_run_equals_the_uninterrupted_one(tmp_path):
    """Negatives drawn from (seed, epoch), in lists: one epoch, then a resume for the second,
    gives the two-epoch run's history."""
    planted_side(tmp_path)
    assert_resume_reproduces(tmp_path, TWO_TOWER.replace("epochs: 8", "epochs: 2"))


def assert_resume_reproduces(folder, config: str) -> None:
    """`config` (two epochs) trained whole, and trained one epoch then resumed for the second
    (`training.deterministic`), in `folder`: the two histories are the same."""
    (folder / "cfg.yaml").write_text(config + "  deterministic: true\n")
    whole = run_cli("train", folder / "cfg.yaml", "--run-dir", folder / "whole", "--quiet")
    assert whole.exit_code == 0, whole.output
    first = run_cli("train", folder / "cfg.yaml", "--run-dir", folder / "parts", "--quiet",
                    "--set", "training.epochs=1")
    assert first.exit_code == 0, first.output
    rest = run_cli("train", "--resume", folder / "parts", "--force", "--quiet",
                   "--set", "training.epochs=2")
    assert rest.exit_code == 0, rest.output
    expected = pd.read_csv(folder / "whole" / "history.csv").drop(columns=["seconds"],
                                                                    errors="ignore")
    got = pd.read_csv(folder / "parts" / "history.csv")[expected.columns]
    assert len(got) == 2
    pd.testing.assert_frame_equal(got, expected, rtol=1e-5)


def test_rating_folds_report_the_mean_and_spread_of_rmse(tmp_path):
    planted_side(tmp_path)
    frame = pd.read_csv(tmp_path / "inter.csv")
    frame["rating"] = np.where(frame["item"] < ITEMS // 2, 4.0, 2.0) + frame["user"] % 2
    frame.to_csv(tmp_path / "inter.csv", index=False)
    (tmp_path / "cfg.yaml").write_text("""
dataset:
  name: interactions
  path: inter.csv
  task: rating
  interactions: {rating: rating}
model:
  recommender: {type: mf, factors: 4}
training:
  epochs: 2
  batch_size: 64
""")
    result = run_cli("train", tmp_path / "cfg.yaml", "--run-dir", tmp_path / "run", "--quiet",
                     "--folds", "3")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert set(report["metrics"]) >= {"rmse", "mae"}
    assert report["folds"] == 3 and len(report["per_fold"]) == 3 and "rmse" in report["std"]
    for k in (1, 2, 3):  # each fold's figures are those `evaluate` finds for it
        fold = tmp_path / "run" / f"fold-{k}"
        trained = json.loads((fold / "eval.json").read_text())
        assert trained["clipped_to"] == [3.0, 4.0], trained  # not [0, 0]: nothing clipped to 0
        result = run_cli("evaluate", fold)
        assert result.exit_code == 0, result.output
        again = json.loads((fold / "eval.json").read_text())
        assert again["metrics"]["rmse"] == pytest.approx(trained["metrics"]["rmse"], abs=1e-5)


def test_ranking_report_shows_metrics_over_k_popularity_and_the_item_map(tower_run):
    from dlmine.results.plots import png_size

    report = json.loads((tower_run / "run" / "eval.json").read_text())
    curves, metrics = report["curves"], report["metrics"]
    assert curves["k"] == list(range(1, 21))
    assert curves["hr"][9] == pytest.approx(metrics["hr@10"], abs=1e-6)
    assert curves["full_ndcg"][9] == pytest.approx(metrics["full_ndcg@10"], abs=1e-6)
    assert curves["hr"] == sorted(curves["hr"])  # more candidates taken, never fewer hits
    shares = report["popularity"]["recommended_share"]
    assert len(shares) == 10 and sum(shares) == pytest.approx(1.0, abs=1e-5)
    result = run_cli("report", tower_run / "run")
    assert result.exit_code == 0, result.output
    folder = tower_run / "run" / "report"
    for name in ("ranking_at_k.png", "popularity.png", "item_map.png"):
        width, height = png_size((folder / name).read_bytes())
        assert width > 300 and height > 200
    page = (folder / "report.html").read_text()
    assert "Item vectors, coloured by genres" in page and "HR@K and NDCG@K" in page


def test_explain_a_recommendation_by_the_history_that_weighs_most(tower_run):
    result = run_cli("explain", tower_run / "run", "--json", "--samples", "4")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["kind"] == "interactions" and len(report["users"]) == 4
    inter = pd.read_csv(tower_run / "inter.csv")
    for row in report["users"]:
        seen = set(inter.loc[inter.user == row["user"], "item"])
        assert row["top_item"] not in seen
        assert {h["item"] for h in row["history_weights"]} <= seen
        cosines = [h["cosine"] for h in row["history_weights"]]
        assert cosines == sorted(cosines, reverse=True) and len(row["nearest_items"]) == 5
    assert (tower_run / "run" / "explain" / "explain.json").exists()


def test_tune_searches_a_recommender_on_a_ranking_metric(tmp_path):
    planted_side(tmp_path)
    config = TWO_TOWER.replace("epochs: 8", "epochs: 2") + """tune:
  metric: val_ndcg@10
  trials: 2
  pruner: none
  space:
    model.recommender.factors: {choice: [4, 8]}
    training.optimizer.learning_rate: {loguniform: [0.003, 0.03]}
"""
    (tmp_path / "cfg.yaml").write_text(config)
    result = run_cli("tune", tmp_path / "cfg.yaml", "--study-dir", tmp_path / "study")
    assert result.exit_code == 0, result.output
    trials = sorted((tmp_path / "study").glob("trial-*"))
    assert len(trials) == 2
    for trial in trials:
        assert "val_ndcg@10" in (trial / "history.csv").read_text().splitlines()[0]
    best = (tmp_path / "study" / "best.yaml").read_text()
    assert "type: two_tower" in best and "tune: null" in best  # runnable with train
