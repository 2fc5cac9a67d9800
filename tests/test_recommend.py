"""Interactions and recommenders: real tiny trainings on planted data, metrics by hand, CLI."""

from __future__ import annotations

import dataclasses
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
from dlmine.errors import DataError
from dlmine.results.recommend_metrics import full_ranking, ranks_metrics, sampled_ranks

GROUP_ITEMS = 30


def planted(path, users=40, per_user=12, seed=0):
    """Two groups of users, each interacting only with its own group of items."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        group = u % 2
        items = rng.choice(np.arange(group * GROUP_ITEMS, (group + 1) * GROUP_ITEMS),
                           size=per_user, replace=False)
        rows += [(f"u{u}", f"i{i}", float(4 + (i % 2)), t) for t, i in enumerate(items)]
    pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).to_csv(path, index=False)


RANKING = """
name: planted
seed: 1
dataset:
  name: interactions
  path: inter.csv
  task: ranking
  interactions: {timestamp: timestamp, split: leave_last_out, negatives: 4,
                 eval_negatives: 20, top_k: [5, 10]}
model:
  recommender: {type: neumf, factors: 8, mlp: [{Dense: {units: 16, activation: relu}}]}
training:
  epochs: 6
  batch_size: 64
  optimizer: {name: adam, learning_rate: 0.01}
  checkpoint: {monitor: val_ndcg@10}
"""

RATING = """
name: rated
seed: 1
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
"""


@pytest.fixture(scope="module")
def ranked_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranking")
    planted(folder / "inter.csv")
    (folder / "cfg.yaml").write_text(RANKING)
    result = CliRunner().invoke(main, ["train", str(folder / "cfg.yaml"), "--run-dir",
                                       str(folder / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    return folder


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_planted_groups_are_found_where_popularity_is_near_chance(ranked_run):
    report = json.loads((ranked_run / "run" / "eval.json").read_text())
    m = report["metrics"]
    assert m["hr@10"] >= 0.9  # 20 candidates, 18 of the user's group: 10 of 21 by chance
    assert set(m) >= {"hr@5", "ndcg@10", "mrr", "full_hr@10", "full_ndcg@10", "recall@10",
                      "coverage@10"}
    assert report["samples"] == 40  # one held-out positive per user
    history = (ranked_run / "run" / "history.csv").read_text().splitlines()[0]
    assert "val_ndcg@10" in history and "val_hr@5" in history


def test_evaluate_ranks_the_same_candidates_as_train(ranked_run):
    trained = json.loads((ranked_run / "run" / "eval.json").read_text())["metrics"]
    result = run_cli("evaluate", ranked_run / "run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["metrics"] == trained


def test_recommend_excludes_seen_items_and_flags_cold_start(ranked_run):
    inter = pd.read_csv(ranked_run / "inter.csv")
    seen = set(inter.loc[inter.user == "u0", "item"])
    result = run_cli("recommend", ranked_run / "run", "--user", "u0", "--k", "5")
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(pd.io.common.StringIO(result.output))
    assert list(rows.columns) == ["user", "rank", "item", "score", "cold_start"]
    assert len(rows) == 5 and not set(rows["item"]) & seen
    included = run_cli("recommend", ranked_run / "run", "--user", "u0", "--k", "60",
                       "--include-seen")
    assert seen <= set(pd.read_csv(pd.io.common.StringIO(included.output))["item"])
    unknown = run_cli("recommend", ranked_run / "run", "--user", "nobody")
    assert unknown.exit_code == 2
    assert "user 'nobody' is not in this run's training data (40 users" in unknown.output
    cold = run_cli("recommend", ranked_run / "run", "--user", "nobody", "--cold-start",
                   "popular", "--k", "2", "-o", ranked_run / "cold.jsonl")
    assert cold.exit_code == 0, cold.output
    lines = [json.loads(x) for x in (ranked_run / "cold.jsonl").read_text().splitlines()]
    assert [x["cold_start"] for x in lines] == [True, True]


def test_similar_ranks_by_cosine_and_names_unknown_items(ranked_run):
    result = run_cli("similar", ranked_run / "run", "--item", "i3", "--k", "4")
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(pd.io.common.StringIO(result.output))
    assert list(rows["rank"]) == [1, 2, 3, 4] and "i3" not in set(rows["similar"])
    assert list(rows["cosine"]) == sorted(rows["cosine"], reverse=True)
    unknown = run_cli("similar", ranked_run / "run", "--item", "zzz")
    assert unknown.exit_code == 2 and "item 'zzz' is not in this run's training data" in \
        unknown.output


def test_a_config_edited_after_training_is_refused_by_recommend_similar_and_explain(ranked_run,
                                                                                   tmp_path):
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(ranked_run / "run", run)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("seed: 1\n", "seed: 7\n", 1))
    for args in (["recommend", run, "--user", "u0"], ["similar", run, "--item", "i3"],
                 ["explain", run]):
        result = run_cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert (f"Error: {config} was edited after the run was trained (its sha256 differs from "
                "config_sha256 in run.json):\n  seed: 1 -> 7\n") in result.output, args


def test_recommend_output_goes_where_predict_output_may(ranked_run):
    run = ranked_run / "run"
    history = (run / "history.csv").read_bytes()
    inside = run_cli("recommend", run, "--user", "u0", "--output", run / "history.csv")
    assert inside.exit_code == 2
    assert (f"Error: --output {run / 'history.csv'}: inside the run directory {run}; write "
            f"predictions elsewhere, or under {run}/predictions/") in inside.output
    assert (run / "history.csv").read_bytes() == history
    allowed = run / "predictions" / "top.csv"
    result = run_cli("similar", run, "--item", "i3", "--k", "3", "--output", allowed)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(allowed)) == 3


@pytest.mark.parametrize("fmt,name", [("keras", "model.keras"), ("onnx", "model.onnx")])
def test_export_of_a_recommender_scores_user_item_codes_as_the_run(ranked_run, fmt, name):
    import keras
    import numpy as np

    from dlmine.model.io import load_model_file

    result = run_cli("export", ranked_run / "run", "--format", fmt)
    assert result.exit_code == 0, result.output
    assert f"checked: predictions of the {fmt} export on 8 test samples match" in result.output
    codes = np.array([[0, 0], [0, 5], [3, 17], [39, 1]], "int32")
    want = load_model_file(ranked_run / "run" / "checkpoints" / "best.keras").predict(codes,
                                                                                  verbose=0)
    if fmt == "keras":
        got = keras.saving.load_model(ranked_run / "run" / "export" / name, safe_mode=True).predict(
            codes, verbose=0)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(ranked_run / "run" / "export" / name))
        got = session.run(None, {session.get_inputs()[0].name: codes})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_negatives_are_never_seen_and_repeat_for_the_same_epoch():
    rng = np.random.default_rng(0)
    x = np.stack([rng.integers(0, 20, 300), rng.integers(0, 15, 300)], axis=1)
    batches = NegativeSampled(x, 64, seed=3, negatives=4, num_items=15, first_epoch=2)
    negatives = batches.x[batches.y == 0]
    seen = np.unique(pair_keys(x[:, 0], x[:, 1], 15))
    assert not is_member(pair_keys(negatives[:, 0], negatives[:, 1], 15), seen).any()
    resumed = NegativeSampled(x, 64, seed=3, negatives=4, num_items=15, first_epoch=0)
    resumed.set_epoch(2)  # a resumed run reaches epoch 2 without drawing epochs 0 and 1
    assert np.array_equal(resumed.x, batches.x) and np.array_equal(resumed.y, batches.y)
    batches.set_epoch(3)
    assert not np.array_equal(resumed.x, batches.x)


class Fixed:
    """A 'model' whose score of (user, item) is a fixed table."""

    def __init__(self, table):
        self.table = np.asarray(table, dtype="float32")
        self.layers = []

    def predict(self, x, batch_size=None, verbose=0):
        return self.table[x[:, 0], x[:, 1]][:, None]


def test_metrics_equal_hand_computation():
    ranks = np.array([0, 2, 9, 15])
    m = ranks_metrics(ranks, [10])
    assert m["hr@10"] == 0.75
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 10 + 1 / 16) / 4)
    # user 0 held out item 2; candidates 0, 1, 3: item 3 scores higher, item 1 ties (counts
    # against), item 0 lower: rank 2
    model = Fixed([[0.1, 0.5, 0.5, 0.9], [0.0, 0.0, 0.0, 0.0]])
    assert sampled_ranks(model, np.array([[0, 2]]), np.array([[0, 1, 3]])).tolist() == [2]
    # full ranking of user 0's held-out item 2 among 5 items, item 4 seen in training
    model = Fixed([[0.1, 0.2, 0.5, 0.9, 0.95]])
    known = np.array([2, 4])  # keys user * 5 + item: the held-out item and the seen one
    full = full_ranking(model, np.array([[0, 2]]), known, 5, [1, 2])
    assert full["full_hr@1"] == 0.0 and full["full_hr@2"] == 1.0  # item 3 above it
    assert full["full_ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert full["recall@2"] == 1.0 and full["recall@1"] == 0.0
    assert full["coverage@1"] == pytest.approx(1 / 5)  # only item 3 is anyone's top 1


def test_rating_run_reports_rmse_and_mae(tmp_path):
    planted(tmp_path / "inter.csv")
    (tmp_path / "cfg.yaml").write_text(RATING)
    result = run_cli("train", tmp_path / "cfg.yaml", "--run-dir", tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert set(report["metrics"]) == {"rmse", "mae"} and report["clipped_to"] == [4.0, 5.0]
    assert report["metrics"]["rmse"] <= 1.0


def splits_of(tmp_path, frame, **inter):
    frame.to_csv(tmp_path / "inter.csv", index=False)
    text = RANKING.replace("{timestamp: timestamp, split: leave_last_out, negatives: 4,\n"
                           "                 eval_negatives: 20, top_k: [5, 10]}",
                           json.dumps({"timestamp": "timestamp", **inter}))
    (tmp_path / "cfg.yaml").write_text(text)
    cfg = load_config(tmp_path / "cfg.yaml").config
    return source_for(cfg.dataset).load(cfg.seed)


def test_leave_last_out_holds_each_users_latest_and_the_one_before(tmp_path):
    frame = pd.DataFrame({"user": [1, 1, 1, 2, 2, 2, 2, 3, 3],
                          "item": [10, 11, 12, 10, 13, 11, 12, 12, 10],
                          "timestamp": [3, 1, 2, 1, 2, 4, 3, 1, 2]})  # user 3: too few to hold out
    splits = splits_of(tmp_path, frame, split="leave_last_out")
    items = splits.info.columns["items"]
    test = {(splits.info.columns["users"][u], items[i]) for u, i in splits.x_test}
    val = {(splits.info.columns["users"][u], items[i]) for u, i in splits.x_val}
    assert test == {(1, 10), (2, 11)} and val == {(1, 12), (2, 12)}


@pytest.mark.parametrize(("frame", "message"), [
    (pd.DataFrame({"person": ["a", "b"], "item": [1, 2], "timestamp": [1, 2]}),
     "inter.csv: the user column 'user' (dataset.interactions.user) is not in the file"),
    (pd.DataFrame({"user": ["a", "b", "c"], "item": [1, 2, 3], "timestamp": [1, 2, 3],
                   "rating": [4, "good", 3]}),
     "inter.csv: column 'rating', row 3: 'good' is not a number"),
    (pd.DataFrame({"user": ["a", "a"], "item": [1, 2], "timestamp": [1, 2]}),
     "every interaction is of the single user 'a'"),
    (pd.DataFrame({"user": ["12", "u5", "7"], "item": [1, 2, 3], "timestamp": [1, 2, 3]}),
     "column 'user' mixes integer ids ('12', row 2) and string ids ('u5', row 3)"),
    (pd.DataFrame({"user": ["a", None, "c"], "item": [1, 2, 3], "timestamp": [1, 2, 3]}),
     "column 'user', row 3: the id is missing"),
    (pd.DataFrame({"user": ["a", "b", "c"], "item": [1, 2, 3], "timestamp": [1, 2, 3],
                   "rating": [4, "inf", 3]}),
     "inter.csv: column 'rating', row 3: inf is not a finite number "
     "(dataset.interactions.rating)"),
    (pd.DataFrame({"user": ["a", "b", "c"], "item": [1, 2, 3], "timestamp": [1, 2, 3],
                   "rating": [4, None, 3]}),
     "inter.csv: column 'rating', row 3: the rating is missing (dataset.interactions.rating)"),
    (pd.DataFrame({"user": ["a", "b", "c"], "item": [1, 2, 3],
                   "timestamp": ["1614957993", "1614957995", "yesterday"]}),
     "inter.csv: column 'timestamp', row 4: 'yesterday' is not a number like the column's "
     "other timestamps (dataset.interactions.timestamp)"),
    (pd.DataFrame({"user": ["a", "b", "c"], "item": [1, 2, 3],
                   "timestamp": ["2021-03-05", "someday", "2021-03-07"]}),
     "inter.csv: column 'timestamp', row 3: 'someday' is neither a number nor a date"),
])
def test_bad_interactions_are_named(tmp_path, frame, message):
    rating = {"rating": "rating", "threshold": 3} if "rating" in frame else {}
    with pytest.raises(DataError, match=".*") as err:
        splits_of(tmp_path, frame, split="random", **rating)
    assert message in str(err.value)


def test_config_mismatches_are_named(tmp_path):
    (tmp_path / "cfg.yaml").write_text(RANKING.replace("task: ranking", "task: rating"))
    result = run_cli("check", tmp_path / "cfg.yaml")
    assert result.exit_code == 2
    assert "cfg.yaml:8: dataset.interactions: task: rating needs `rating:`" in result.output


@pytest.mark.parametrize("cutoff", ['"2021-06-01"', "2021-06-01", '"2021-06-01T00:00:00Z"'])
@pytest.mark.parametrize("layout", ["iso", "iso_z", "parquet"])
def test_the_time_split_cuts_dates_at_the_cutoff(tmp_path, cutoff, layout):
    """Dates (strings with or without a zone, a Parquet datetime column) and a cutoff
    written as a quoted or an unquoted YAML date: the same rows are the test."""
    days = pd.date_range("2021-05-28", periods=8, freq="D")  # 4 before June 1st, 4 from it
    frame = pd.DataFrame({"user": ["a", "b"] * 4, "item": list(range(8)), "timestamp": days})
    if layout == "parquet":
        frame.to_parquet(tmp_path / "inter.parquet")
    else:
        text = days.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if layout == "iso_z" else "")
        frame.assign(timestamp=text).to_csv(tmp_path / "inter.csv", index=False)
    name = "inter.parquet" if layout == "parquet" else "inter.csv"
    (tmp_path / "cfg.yaml").write_text(RANKING.replace("path: inter.csv", f"path: {name}").replace(
        "{timestamp: timestamp, split: leave_last_out, negatives: 4,\n"
        "                 eval_negatives: 20, top_k: [5, 10]}",
        f"{{timestamp: timestamp, split: time, cutoff: {cutoff}, eval_negatives: 2}}"))
    cfg = load_config(tmp_path / "cfg.yaml").config
    splits = source_for(cfg.dataset).load(cfg.seed)
    assert len(splits.x_test) == 4  # items 4..7, from June 1st on
    assert set(splits.info.columns["items"]) <= {0, 1, 2, 3}  # training and validation before it


def test_ranking_folds_are_refused_before_the_data_loads(tmp_path):
    (tmp_path / "cfg.yaml").write_text(RANKING)  # inter.csv does not exist
    result = run_cli("train", tmp_path / "cfg.yaml", "--run-dir", tmp_path / "run", "--folds",
                     "2")
    assert result.exit_code == 2, result.output
    assert ("Error: --folds is for task: rating; a ranking run validates on held-out "
            "interactions of each user (dataset.validation_split) and is tested on those of "
            "its split") in result.output
    assert not (tmp_path / "run").exists()


def test_recommend_never_writes_onto_its_users_file_or_the_runs_data(ranked_run, tmp_path):
    run, users = ranked_run / "run", tmp_path / "users.csv"
    users.write_text("user\nu0\n")
    result = run_cli("recommend", run, "--users", users, "--output", users)
    assert result.exit_code == 2
    assert (f"Error: --output {users} is the --users file; the output never overwrites its "
            "input") in result.output
    data = ranked_run / "inter.csv"
    before = data.read_bytes()
    result = run_cli("similar", run, "--item", "i3", "--output", data)
    assert result.exit_code == 2
    assert (f"Error: --output {data} is the data file the run was trained on (dataset.path: "
            f"{data.resolve()}); write the output elsewhere") in result.output
    assert data.read_bytes() == before


def test_limit_keeps_the_first_training_interactions_and_test_path_is_refused(tmp_path):
    planted(tmp_path / "inter.csv")
    (tmp_path / "cfg.yaml").write_text(RANKING.replace("task: ranking", "task: ranking\n"
                                                       "  limit: 30"))
    cfg = load_config(tmp_path / "cfg.yaml").config
    full = source_for(dataclasses.replace(cfg.dataset, limit=None)).load(cfg.seed)
    limited = source_for(cfg.dataset).load(cfg.seed)
    assert len(limited.x_train) == 30 < len(full.x_train)
    assert len(limited.x_test) == len(full.x_test)
    (tmp_path / "cfg.yaml").write_text(RANKING.replace("task: ranking", "task: ranking\n"
                                                       "  test_path: inter.csv"))
    result = run_cli("check", tmp_path / "cfg.yaml")
    assert result.exit_code == 2
    assert (f"{tmp_path / 'cfg.yaml'}:8: dataset.test_path: interactions are split by "
            "dataset.interactions.split (random, leave_last_out or time), which holds the test "
            "out; remove `test_path`") in result.output


def test_ids_string_reads_every_id_as_written(tmp_path):
    from dlmine.data.interactions import read_events

    frame = pd.DataFrame({"user": ["007", "7", "8", "7"], "item": ["0594451647", "B00X",
                                                                   "B00Y", "0594451647"],
                          "timestamp": [1, 2, 3, 4]})
    with pytest.raises(DataError) as err:  # items mix digits and other ids
        splits_of(tmp_path, frame, split="random")
    assert ("column 'item' mixes integer ids ('0594451647', row 2) and string ids ('B00X', "
            "row 3); expected ids of one type, or set dataset.interactions.ids: string to read "
            "every id as written") in str(err.value)
    splits_of(tmp_path, frame, split="random", ids="string")
    events = read_events(load_config(tmp_path / "cfg.yaml").config.dataset)
    assert list(events.users) == ["007", "7", "8", "7"]  # three users, as written
    assert list(events.items) == ["0594451647", "B00X", "B00Y", "0594451647"]
    splits_of(tmp_path, frame.assign(item=[1, 2, 3, 4]), split="random")
    events = read_events(load_config(tmp_path / "cfg.yaml").config.dataset)
    assert list(events.users) == [7, 7, 8, 7]  # auto: the CSV's numbers, as README says
