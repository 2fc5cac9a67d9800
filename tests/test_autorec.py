"""AutoRec (`model.recommender.type: autorec`): a real tiny training on planted ratings, the
ratings the model holds, its factorised scores, its penalty after a safe-mode load, folds, and
the named config and size errors."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from dlmine.cli import main
from dlmine.config import load_config
from dlmine.data import source_for
from dlmine.errors import DataError
from dlmine.model import autorec
from dlmine.model.io import load_model_file
from dlmine.model.recommenders import Scorer, item_vectors

CONFIG = """
name: autorec
seed: 3
dataset:
  name: interactions
  path: inter.csv
  task: rating
  interactions: {rating: rating}
model:
  recommender:
    type: autorec
    l2: 1
    encoder:
      - Dense: {units: 16, activation: sigmoid}
training:
  epochs: 40
  batch_size: 32
  optimizer: {name: adam, learning_rate: 0.01}
  early_stopping: {patience: 5, restore_best_weights: true}
"""


def planted(path, users=60, items=40, per_user=20, seed=0):
    """Users and items of two kinds: a user rates items of its own kind 5, the others 1."""
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{i}", 5.0 if u % 2 == i % 2 else 1.0)
            for u in range(users) for i in rng.choice(items, per_user, replace=False)]
    pd.DataFrame(rows, columns=["user", "item", "rating"]).to_csv(path, index=False)


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("autorec")
    planted(folder / "inter.csv")
    (folder / "cfg.yaml").write_text(CONFIG)
    result = run_cli("train", folder / "cfg.yaml", "--run-dir", folder / "run", "--quiet")
    assert result.exit_code == 0, result.output
    return folder


def test_planted_ratings_are_learned_far_below_the_mean_predictor(trained):
    metrics = json.loads((trained / "run" / "eval.json").read_text())["metrics"]
    assert metrics["rmse"] < 0.6  # predicting the mean (3) is off by about 2


def test_the_model_holds_the_training_ratings_and_nothing_else(trained):
    cfg = load_config(trained / "cfg.yaml").config
    splits = source_for(cfg.dataset).load(cfg.seed)
    model = load_model_file(trained / "run" / "checkpoints" / "best.keras")
    table = model.get_layer("item_ratings").get_weights()[0]
    users, items = len(splits.info.columns["users"]), len(splits.info.columns["items"])
    assert table.shape == (items + 1, users + 1)
    want = np.zeros_like(table)
    want[splits.x_train[:, 1], splits.x_train[:, 0]] = splits.y_train
    np.testing.assert_array_equal(table, want)  # no validation or test rating in it


def test_penalty_survives_a_safe_mode_load(trained):
    model = load_model_file(trained / "run" / "checkpoints" / "last.keras")
    ratings = len(source_for(load_config(trained / "cfg.yaml").config.dataset).load(3).y_train)
    dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    assert dense.kernel_regularizer.l2 == pytest.approx(1 / (2 * ratings))
    assert model.get_layer("user_embedding").embeddings_regularizer.l2 == pytest.approx(
        1 / (2 * ratings))
    assert len(model.losses) == 2  # the encoder kernel and the users' vectors, as in training


def test_factorised_scores_equal_the_model_and_the_unseen_user_gets_the_mean(trained):
    model = load_model_file(trained / "run" / "checkpoints" / "best.keras")
    users = model.get_layer("user_embedding").input_dim
    items = model.get_layer("item_ratings").input_dim
    pairs = np.array([[u, i] for u in range(users) for i in range(items)], "int32")
    direct = model.predict(pairs, verbose=0).reshape(users, items)
    np.testing.assert_allclose(Scorer(model, items)(np.arange(users)), direct, atol=1e-4)
    mean = float(model.get_layer("global_mean").get_weights()[0][0])
    np.testing.assert_allclose(direct[users - 1], mean, atol=1e-6)  # the unseen-user slot
    assert item_vectors(model).shape == (items, 16)


def test_recommend_and_similar_work_on_an_autorec_run(trained):
    inter = pd.read_csv(trained / "inter.csv")
    seen = set(inter.loc[inter.user == "u0", "item"])
    result = run_cli("recommend", trained / "run", "--user", "u0", "--k", "5")
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(pd.io.common.StringIO(result.output))
    assert len(rows) == 5 and not set(rows["item"]) & seen
    # u0 is of kind 0: its top unseen items are of kind 0 (rated 5 by its kind)
    assert all(int(item[1:]) % 2 == 0 for item in rows["item"])
    similar = run_cli("similar", trained / "run", "--item", "i2", "--k", "3")
    assert similar.exit_code == 0, similar.output
    assert "i2" not in set(pd.read_csv(pd.io.common.StringIO(similar.output))["similar"])


def test_each_fold_holds_its_own_training_ratings(tmp_path):
    planted(tmp_path / "inter.csv", users=20, items=12, per_user=6)
    (tmp_path / "cfg.yaml").write_text(CONFIG.replace("epochs: 40", "epochs: 1"))
    result = run_cli("train", tmp_path / "cfg.yaml", "--folds", "2", "--run-dir",
                     tmp_path / "run", "--quiet")
    assert result.exit_code == 0, result.output
    counts = []
    for k in (1, 2):
        model = load_model_file(tmp_path / "run" / f"fold-{k}" / "model.keras")
        counts.append(int((model.get_layer("item_ratings").get_weights()[0] != 0).sum()))
    cfg = load_config(tmp_path / "cfg.yaml").config
    splits = source_for(cfg.dataset).load(cfg.seed)
    both = len(splits.y_train) + len(splits.y_val)
    assert sorted(counts) == sorted([both - both // 2, both // 2])  # not the whole training


def test_autorec_config_mistakes_are_named_at_once(tmp_path):
    text = (CONFIG.replace("task: rating", "task: ranking")
            .replace("    l2: 1\n", "    l2: 1\n    factors: 8\n")
            .replace("    encoder:\n      - Dense: {units: 16, activation: sigmoid}\n", ""))
    (tmp_path / "cfg.yaml").write_text(text)
    result = run_cli("check", tmp_path / "cfg.yaml")
    assert result.exit_code == 2
    assert ("cfg.yaml:10: model.recommender: type: autorec needs `encoder:`, its layers, e.g. "
            "`- Dense: {units: 500, activation: sigmoid}`") in result.output
    assert ("cfg.yaml:11: model.recommender.type: type: autorec learns ratings (task: rating), "
            "received task: ranking; for ranking use mf, gmf, ncf, neumf, two_tower or dae"
            ) in result.output
    assert ("cfg.yaml:13: model.recommender.factors: type: autorec has no embeddings of size "
            "`factors`: an item's code is as wide as the encoder's last layer; remove "
            "`factors`") in result.output
    (tmp_path / "mf.yaml").write_text(CONFIG.replace("type: autorec", "type: mf"))
    result = run_cli("check", tmp_path / "mf.yaml")
    assert result.exit_code == 2
    assert ("mf.yaml:13: model.recommender.encoder: type: mf has no encoder; remove `encoder`, "
            "or use type: autorec or dae") in result.output


def test_a_table_over_the_limit_is_refused_before_training(tmp_path, monkeypatch):
    planted(tmp_path / "inter.csv")
    (tmp_path / "cfg.yaml").write_text(CONFIG)
    monkeypatch.setattr(autorec, "MAX_VALUES", 100)
    result = run_cli("train", tmp_path / "cfg.yaml", "--run-dir", tmp_path / "run")
    assert result.exit_code != 0
    assert "type: autorec holds every item's ratings by every user in the model, 40 items x " \
           "60 users = 2,400 values (4 bytes each), over its limit of 100; use type: mf " \
           "or two_tower" in result.output
    assert not (tmp_path / "run").exists()
    with pytest.raises(DataError):
        autorec.rating_table(load_config(tmp_path / "cfg.yaml").config, 61, 41, None)
