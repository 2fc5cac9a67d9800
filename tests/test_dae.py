"""The history autoencoder (`model.recommender.type: dae`): a real tiny training on planted
groups, the history the model holds, its scores as one matrix product, a safe-mode load and
export, and the named config and size errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from dlmine.cli import main
from dlmine.config import load_config
from dlmine.data import source_for
from dlmine.errors import DataError
from dlmine.model import dae
from dlmine.model.io import load_model_file
from dlmine.model.recommenders import ROW_VALUES, SCORE_BATCH, Scorer, factors, item_vectors, score_batch
from tests.test_recommend import GROUP_ITEMS, planted
from tests.test_recommend_side import assert_resume_reproduces

CONFIG = """
name: dae
seed: 1
dataset:
  name: interactions
  path: inter.csv
  task: ranking
  interactions: {timestamp: timestamp, split: leave_last_out, negatives: 4,
                 eval_negatives: 20, top_k: [5, 10]}
model:
  recommender:
    type: dae
    encoder:
      - Dropout: {rate: 0.2}
      - Dense: {units: 8, activation: tanh}
training:
  epochs: 8
  batch_size: 64
  optimizer: {name: adam, learning_rate: 0.01}
  checkpoint: {monitor: val_ndcg@10}
"""


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dae")
    planted(folder / "inter.csv")
    (folder / "cfg.yaml").write_text(CONFIG)
    result = run_cli("train", folder / "cfg.yaml", "--run-dir", folder / "run", "--quiet")
    assert result.exit_code == 0, result.output
    return folder


def test_planted_groups_are_found_from_the_histories(trained):
    metrics = json.loads((trained / "run" / "eval.json").read_text())["metrics"]
    assert metrics["hr@10"] >= 0.9  # 20 candidates, 18 of the user's group: 10 of 21 by chance
    # every unseen item: about 50, 20 of them the group's; chance is about 0.2, and finding
    # the group but nothing inside it about 0.5 (measured: 0.575)
    assert metrics["full_hr@10"] >= 0.4


def test_the_model_holds_the_training_positives_and_nothing_else(trained):
    cfg = load_config(trained / "cfg.yaml").config
    splits = source_for(cfg.dataset).load(cfg.seed)
    model = load_model_file(trained / "run" / "checkpoints" / "best.keras")
    table = model.get_layer("user_history").get_weights()[0]
    users, items = len(splits.info.columns["users"]), len(splits.info.columns["items"])
    assert table.shape == (users + 1, items + 1)
    want = np.zeros_like(table)
    want[splits.x_train[:, 0], splits.x_train[:, 1]] = 1.0
    np.testing.assert_array_equal(table, want)  # no validation or test interaction in it
    assert not model.get_layer("user_history").trainable


def test_a_positive_does_not_read_itself_and_unseen_scores_are_one_product(trained):
    cfg = load_config(trained / "cfg.yaml").config
    splits = source_for(cfg.dataset).load(cfg.seed)
    model = load_model_file(trained / "run" / "checkpoints" / "best.keras")
    table = model.get_layer("user_history").get_weights()[0]
    users, items = table.shape
    # a training positive is scored with its own cell left out: the same as with it cleared
    user, item = splits.x_train[0]
    pair = np.array([[user, item]], "int32")
    before = model.predict(pair, verbose=0)
    cleared = table.copy()
    cleared[user, item] = 0.0
    model.get_layer("user_history").set_weights([cleared])
    np.testing.assert_allclose(model.predict(pair, verbose=0), before, atol=1e-6)
    model.get_layer("user_history").set_weights([table])
    # every item the user never interacted with: the logit is the product of the vectors
    vectors = factors(model)
    assert vectors is not None and vectors[1].shape == (items, 9)  # 8 units and the bias
    scorer = Scorer(model, items - 1)
    some = np.arange(min(users - 1, 6))
    logits = scorer(some)
    for u in some:
        unseen = np.flatnonzero(table[u, :-1] == 0)
        ids = np.stack([np.full(len(unseen), u), unseen], axis=1).astype("int32")
        p = np.asarray(model.predict(ids, verbose=0))[:, 0]
        np.testing.assert_allclose(1 / (1 + np.exp(-logits[u, unseen])), p, atol=1e-5)
    np.testing.assert_array_equal(item_vectors(model), model.get_layer(
        "item_embedding").get_weights()[0])
    # a predict batch holds at most ROW_VALUES history values (a wide catalogue: fewer pairs)
    assert score_batch(model) == min(SCORE_BATCH, ROW_VALUES // items)
    assert score_batch(type("Peer", (), {"layers": []})()) == SCORE_BATCH


def test_recommend_similar_and_export_work_on_a_dae_run(trained):
    run = trained / "run"
    inter = pd.read_csv(trained / "inter.csv")
    seen = set(inter.loc[inter.user == "u0", "item"])
    result = run_cli("recommend", run, "--user", "u0", "--k", "5")
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(pd.io.common.StringIO(result.output))
    assert len(rows) == 5 and not set(rows["item"]) & seen
    # u0 is in group 0: its recommendations are group 0's items
    assert all(int(i[1:]) < GROUP_ITEMS for i in rows["item"])
    similar = run_cli("similar", run, "--item", "i3", "--k", "3")
    assert similar.exit_code == 0, similar.output
    exported = run_cli("export", run, "--format", "keras")
    assert exported.exit_code == 0, exported.output


def test_dae_config_mistakes_are_named_at_once(tmp_path):
    text = (CONFIG.replace("task: ranking", "task: rating")
            .replace("    type: dae\n", "    type: dae\n    factors: 8\n")
            .replace("    encoder:\n      - Dropout: {rate: 0.2}\n"
                     "      - Dense: {units: 8, activation: tanh}\n", ""))
    text = text.replace("timestamp: timestamp, split: leave_last_out, negatives: 4,\n"
                        "                 eval_negatives: 20, top_k: [5, 10]",
                        "rating: rating").replace("  checkpoint: {monitor: val_ndcg@10}\n", "")
    (tmp_path / "cfg.yaml").write_text(text)
    result = run_cli("check", tmp_path / "cfg.yaml")
    assert result.exit_code == 2, result.output
    assert ("cfg.yaml:10: model.recommender: type: dae needs `encoder:`, its layers, e.g. "
            "`- Dropout: {rate: 0.5}` then `- Dense: {units: 64, activation: tanh}`"
            ) in result.output
    assert ("cfg.yaml:11: model.recommender.type: type: dae learns which items a user "
            "interacts with (task: ranking), received task: rating; for ratings use mf, gmf, "
            "ncf, neumf, two_tower or autorec") in result.output
    assert ("cfg.yaml:12: model.recommender.factors: type: dae has no embeddings of size "
            "`factors`: a user's vector is as wide as the encoder's last layer; remove "
            "`factors`") in result.output


def test_an_encoder_that_does_not_end_with_a_vector_is_named(tmp_path):
    planted(tmp_path / "inter.csv")
    (tmp_path / "cfg.yaml").write_text(CONFIG.replace(
        "      - Dense: {units: 8, activation: tanh}\n",
        "      - Dense: {units: 8, activation: tanh}\n      - Reshape: {target_shape: [4, 2]}\n"))
    result = run_cli("check", tmp_path / "cfg.yaml")
    assert result.exit_code == 2, result.output
    assert ("cfg.yaml:13: model.recommender.encoder: the encoder must end with one vector per "
            "user, received shape (None, 4, 2)") in result.output


def test_a_history_over_the_limit_is_refused_before_training(tmp_path, monkeypatch):
    planted(tmp_path / "inter.csv")
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    monkeypatch.setattr(dae, "MAX_VALUES", 100)
    result = run_cli("train", tmp_path / "cfg.yaml", "--run-dir", tmp_path / "run")
    assert result.exit_code != 0
    assert ("type: dae holds every user's history in the model, 40 users x 60 items = 2,400 "
            "values (4 bytes each), over its limit of 100; use type: mf, neumf or two_tower"
            ) in result.output
    assert not (tmp_path / "run").exists()
    with pytest.raises(DataError):
        dae.history_table(load_config(tmp_path / "cfg.yaml").config, 41, 61, None)


def test_a_resumed_dae_run_equals_the_uninterrupted_one(tmp_path):
    """The encoder's Dropout and the negatives, drawn from (seed, epoch): one epoch, then a
    resume for the second, gives the two-epoch run's history."""
    planted(tmp_path / "inter.csv")
    assert_resume_reproduces(tmp_path, CONFIG.replace("epochs: 8", "epochs: 2"))


def test_newer_counts_rank_each_users_interactions_newest_first():
    from dlmine.data.interactions import newer_counts

    users = np.array([0, 0, 1, 0, 1, 0])
    times = np.array([5.0, 9.0, 1.0, 9.0, 2.0, 1.0])
    rows = np.arange(6)  # a tie in time (rows 1 and 3): the later row is the newer
    np.testing.assert_array_equal(newer_counts(users, times, rows), [2, 1, 1, 0, 0, 3])


def test_recency_weighs_a_users_history_by_how_many_interactions_are_newer(tmp_path):
    # user a: x (t=1), y (t=2), z (t=3), w (t=4, the test); user b: x (t=1), y (t=5), z (t=6)
    (tmp_path / "inter.csv").write_text("user,item,timestamp\na,x,1\na,y,2\na,z,3\na,w,4\n"
                                        "b,x,1\nb,y,5\nb,z,6\n")
    text = CONFIG.replace("    type: dae\n", "    type: dae\n    recency: 2\n").replace(
        "  checkpoint: {monitor: val_ndcg@10}\n", "").replace("epochs: 8", "epochs: 1")
    (tmp_path / "cfg.yaml").write_text(text)
    result = run_cli("train", tmp_path / "cfg.yaml", "--run-dir", tmp_path / "run", "--quiet",
                     "--set", "dataset.validation_split=null")
    assert result.exit_code == 0, result.output
    model = load_model_file(tmp_path / "run" / "checkpoints" / "best.keras")
    table = model.get_layer("user_history").get_weights()[0]
    # codes: users a=0, b=1; items of the training split x=0, y=1, z=2 (w and b's z are the
    # test items, each user's last): a's x has 2 newer, y 1, z none; b's x 1, y none
    np.testing.assert_allclose(table[:2, :3], [[0.5, 2 ** -0.5, 1.0],
                                               [2 ** -0.5, 1.0, 0.0]], rtol=1e-6)
    assert not table[2:].any() and not table[:, 3:].any()


def test_recency_is_refused_where_there_is_no_history(tmp_path):
    text = CONFIG.replace("""    type: dae
    encoder:
      - Dropout: {rate: 0.2}
      - Dense: {units: 8, activation: tanh}
""", "    type: mf\n    recency: 20\n")
    (tmp_path / "cfg.yaml").write_text(text)
    result = run_cli("check", tmp_path / "cfg.yaml")
    assert result.exit_code == 2, result.output
    assert ("cfg.yaml:13: model.recommender.recency: type: mf reads no history to weigh; "
            "remove `recency`, or use type: dae") in result.output
