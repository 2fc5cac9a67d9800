"""A folder of .npz shards: data larger than memory, read one shard at a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_config

SHARDS_CONFIG = """\
name: shards
seed: 5
dataset:
  name: npz
  path: {path}
  validation_split: 0.2
preprocessing:
  standardize: feature
model:
  layers:
    - Flatten
    - Dense: {{units: 16, activation: relu}}
    - Dense: {{units: 3, activation: softmax}}
training:
  epochs: 6
  batch_size: 8
  optimizer: {{name: adam, learning_rate: 0.02}}
  deterministic: true
"""


def write_shards(folder: Path, sizes=(30, 20, 25), test: int = 6) -> Path:
    """Shards of 6x6 samples in 3 classes, each lighting its own rows; x[:, 5, 5] holds the
    sample's global index (after the class rows), so tests can follow rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    start = 0
    for k, n in enumerate(sizes):
        y = rng.integers(0, 3, n)
        x = rng.normal(0, 0.3, size=(n, 6, 6)).astype("float32")
        x[np.arange(n), y * 2, :] += 3.0
        x[:, 5, 5] = np.arange(start, start + n)
        start += n
        ty = np.arange(test) % 3
        tx = rng.normal(0, 0.3, size=(test, 6, 6)).astype("float32")
        tx[np.arange(test), ty * 2, :] += 3.0
        np.savez(folder / f"part-{k}.npz", x_train=x, y_train=y, x_test=tx, y_test=ty,
                 class_names=np.array(["red", "green", "blue"]))
    return folder


def test_shard_batches_cover_every_row_once_per_epoch_keyed_to_seed_and_epoch(tmp_path):
    from dlmine.data.batches import ShardBatches
    from dlmine.data.shards import read_shards

    arrays = read_shards(write_shards(tmp_path / "shards", sizes=(30, 20, 25)))
    x = arrays["x_train"].take(np.arange(3, 70))  # rows 3..69: parts of every shard
    y = arrays["y_train"][3:70]
    batches = ShardBatches(x, y, 8, seed=5, shuffle=True)
    assert len(batches) == 4 + 3 + 3  # 27, 20 and 20 rows: batches never span two shards

    def epoch(dataset, number):
        dataset.set_epoch(number)
        parts = [dataset[i] for i in range(len(dataset))]
        ids = np.concatenate([xb[:, 5, 5] for xb, _ in parts]).astype(int)
        labels = np.concatenate([yb for _, yb in parts])
        return ids, labels

    ids, labels = epoch(batches, 0)
    assert sorted(ids) == list(range(3, 70))  # every row once
    np.testing.assert_array_equal(labels, arrays["y_train"][ids])  # labels follow their rows
    again, _ = epoch(ShardBatches(x, y, 8, seed=5, shuffle=True, first_epoch=1), 0)
    np.testing.assert_array_equal(again, ids)  # a new process (a resumed run) feeds the same
    other, _ = epoch(batches, 1)
    assert sorted(other) == sorted(ids) and list(other) != list(ids)  # a new order each epoch
    plain = ShardBatches(x, None, 8)
    assert np.concatenate([b[0][:, 5, 5] for b in plain]).astype(int).tolist() == list(range(3, 70))


def test_a_folder_of_shards_trains_evaluates_and_predicts(cli, tmp_path):
    write_shards(tmp_path / "shards")
    cfg = write_config(tmp_path, SHARDS_CONFIG.format(path="shards"))
    checked = cli("check", cfg)
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.endswith("OK: 3 layers, input shape (6, 6), 643 parameters\n")
    run = tmp_path / "run"
    result = cli("train", cfg, "--run-dir", run, "--quiet")
    assert result.exit_code == 0, result.output
    info = json.loads((run / "run.json").read_text())
    assert info["samples"] == {"train": 60, "validation": 15, "test": 18}
    assert info["class_names"] == ["red", "green", "blue"]
    report = json.loads((run / "eval.json").read_text())
    assert report["metrics"]["accuracy"] >= 0.9
    again = cli("evaluate", run, "--json")
    assert json.loads(again.stdout)["metrics"] == pytest.approx(report["metrics"], abs=1e-6)
    # the standardization statistics were summed shard by shard: equal to the whole data's
    from dlmine.config import load_config
    from dlmine.data import source_for
    from dlmine.data.preprocessing import Preprocessor

    loaded = load_config(run / "config.yaml").config
    splits = source_for(loaded.dataset).load(loaded.seed)
    whole = np.concatenate(list(splits.x_train))
    prep = Preprocessor.load(run)
    np.testing.assert_allclose(prep.mean, whole.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(prep.std, whole.std(axis=0), rtol=1e-5, atol=1e-6)
    np.savez(tmp_path / "new.npz", x=whole[:4])
    predicted = cli("predict", run, tmp_path / "new.npz")
    assert predicted.exit_code == 0, predicted.output
    assert len(predicted.stdout.splitlines()) == 5


def test_the_same_shards_train_to_the_same_weights_twice(cli, tmp_path):
    write_shards(tmp_path / "shards")
    cfg = write_config(tmp_path, SHARDS_CONFIG.format(path="shards"))
    for name in ("a", "b"):
        assert cli("train", cfg, "--run-dir", tmp_path / name, "--quiet").exit_code == 0
    assert (tmp_path / "a" / "history.csv").read_text() == (tmp_path / "b" / "history.csv").read_text()


@pytest.mark.parametrize("damage, message", [
    ("empty", "shards: a folder of shards, but it holds no .npz files"),
    ("layout", "part-1.npz: x_train has sample shape (7, 6), but part-0.npz has (6, 6); every "
               "shard must have the same layout"),
    ("labels", "part-0.npz: missing array(s) y_train; every shard holds x_train, y_train and "
               "optionally x_test, y_test"),
    ("label-shape", "part-1.npz: y_train holds 2 int64 value(s) per sample, but part-0.npz holds "
                    "1 int64; every shard must have the same layout"),
    ("pickled", "part-0.npz: holds Python objects (pickled arrays), which dlmine does not load; "
                "save plain numeric arrays"),
])
def test_broken_shards_are_named(cli, tmp_path, damage, message):
    folder = tmp_path / "shards"
    folder.mkdir()
    if damage == "layout":
        np.savez(folder / "part-0.npz", x_train=np.zeros((4, 6, 6)), y_train=np.zeros(4, int))
        np.savez(folder / "part-1.npz", x_train=np.zeros((4, 7, 6)), y_train=np.zeros(4, int))
    elif damage == "labels":
        np.savez(folder / "part-0.npz", x_train=np.zeros((4, 6, 6)))
    elif damage == "label-shape":
        np.savez(folder / "part-0.npz", x_train=np.zeros((4, 6, 6)), y_train=np.zeros(4, "int64"))
        np.savez(folder / "part-1.npz", x_train=np.zeros((4, 6, 6)),
                 y_train=np.zeros((4, 2), "int64"))
    elif damage == "pickled":
        np.savez(folder / "part-0.npz", x_train=np.zeros((4, 6, 6)),
                 y_train=np.array([0, 1, 0, 1], dtype=object), allow_pickle=True)
    cfg = write_config(tmp_path, SHARDS_CONFIG.format(path="shards"))
    result = cli("train", cfg, "--run-dir", tmp_path / "run", "--quiet")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.rstrip().endswith(message)
    assert not (tmp_path / "run").exists()


def test_folds_need_data_in_memory(cli, tmp_path):
    write_shards(tmp_path / "shards")
    cfg = write_config(tmp_path, SHARDS_CONFIG.format(path="shards"))
    result = cli("train", cfg, "--run-dir", tmp_path / "run", "--folds", "3", "--quiet")
    assert result.exit_code == 2
    assert result.stderr == ("Error: --folds needs the data in memory; a folder of shards is read "
                             "one shard at a time (train without --folds, with a "
                             "validation_split)\n")
    assert not (tmp_path / "run").exists()
