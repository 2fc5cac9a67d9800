"""`dlmine explain` on planted data: the explanations must point at what decides the label."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from dlmine.cli import main
from tests.conftest import ROOT

TABLE = """
seed: 3
dataset: {name: csv, path: planted.csv, target: label}
model:
  layers:
    - Dense: {units: 16, activation: relu}
    - Dense: {units: 2, activation: softmax}
training: {epochs: 25, batch_size: 32, optimizer: {name: adam, learning_rate: 0.01}}
"""


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def planted_table(folder, signal: int, n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10))
    frame = pd.DataFrame(x, columns=[f"c{i}" for i in range(10)])
    frame["label"] = np.where(x[:, signal] > 0, "yes", "no")
    frame.to_csv(folder / "planted.csv", index=False)


def trained(folder, config: str, name: str = "run"):
    (folder / "cfg.yaml").write_text(config)
    result = run_cli("train", folder / "cfg.yaml", "--run-dir", folder / name, "--quiet")
    assert result.exit_code == 0, result.output
    return folder / name


def explained(run, *options):
    result = run_cli("explain", run, "--json", *options)
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{"):])


@pytest.fixture(scope="module")
def table_runs(tmp_path_factory):
    out = {}
    for signal in (3, 7):
        folder = tmp_path_factory.mktemp(f"table{signal}")
        planted_table(folder, signal)
        out[signal] = trained(folder, TABLE)
    return out


def test_the_planted_column_ranks_first_in_importance_and_attribution(table_runs):
    report = explained(table_runs[3], "--samples", "20")
    assert report["importance"]["inputs"][0]["input"] == "c3"
    assert next(iter(report["attributions"]["mean_abs"])) == "c3"
    assert report["completeness"]["max_relative_gap"] < 0.05
    files = set(os.listdir(table_runs[3] / "explain"))
    assert {"explain.json", "importance.png"} <= files
    sample = report["attributions"]["samples"][0]
    assert set(sample) >= {"index", "true", "predicted", "attributions"}
    assert sample["true"] in ("no", "yes") and len(sample["attributions"]) == 10


def test_two_models_on_different_columns_get_different_explanations(table_runs):
    first = explained(table_runs[3], "--samples", "20")
    second = explained(table_runs[7], "--samples", "20")
    assert second["importance"]["inputs"][0]["input"] == "c7"
    assert next(iter(second["attributions"]["mean_abs"])) == "c7"
    assert [r["input"] for r in first["importance"]["inputs"]] != \
        [r["input"] for r in second["importance"]["inputs"]]
    assert second["completeness"]["max_relative_gap"] < 0.05


def test_permutation_importance_agrees_with_scikit_learn(table_runs):
    """scikit-learn's permutation_importance on the same fitted model and the same rows."""
    from sklearn.inspection import permutation_importance

    from dlmine.data import Preprocessor, source_for
    from dlmine.model.io import load_checkpoint
    from dlmine.rundir import RunDir

    run = RunDir.open(table_runs[3])
    cfg = run.read_config()
    raw, y = source_for(cfg.dataset).load(cfg.seed).split("test")
    frame = raw.reset_index(drop=True)
    prep = Preprocessor.load(run.path)
    model = load_checkpoint(run, "best")

    class Fitted:  # scikit-learn's estimator protocol around the Keras model
        def fit(self, *_):
            return self

        def score(self, x, labels):
            outputs = model.predict(prep.transform_x(x), verbose=0)
            return float((outputs.argmax(axis=1) == labels).mean())

    theirs = permutation_importance(Fitted(), frame, y, n_repeats=10, random_state=0)
    ours = {r["input"]: r["mean"] for r in explained(table_runs[3], "--repeats", "10")[
        "importance"]["inputs"]}
    theirs = dict(zip(frame.columns, theirs.importances_mean, strict=True))
    assert max(theirs, key=theirs.get) == max(ours, key=ours.get) == "c3"
    assert ours["c3"] == pytest.approx(theirs["c3"], abs=0.05)
    noise = [c for c in ours if c != "c3"]
    assert max(abs(ours[c] - theirs[c]) for c in noise) < 0.05


def test_both_backends_rank_the_table_inputs_alike(table_runs):
    tf_report = explained(table_runs[3], "--samples", "10")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    jax = subprocess.run([sys.executable, "-m", "dlmine", "explain", str(table_runs[3]),
                          "--json", "--samples", "10"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=600)
    assert jax.returncode == 0, jax.stderr
    jax_report = json.loads(jax.stdout[jax.stdout.index("{"):])
    assert [r["input"] for r in jax_report["importance"]["inputs"]][:3] == \
        [r["input"] for r in tf_report["importance"]["inputs"]][:3]
    assert list(jax_report["attributions"]["mean_abs"])[0] == "c3"
    assert jax_report["completeness"]["max_relative_gap"] < 0.05


IMAGES = """
seed: 1
dataset: {name: npz, path: corner.npz}
model:
  layers:
    - Conv2D: {filters: 8, kernel_size: 3, activation: relu}
    - MaxPooling2D
    - Flatten
    - Dense: {units: 2, activation: softmax}
training: {epochs: 8, batch_size: 32, optimizer: {name: adam, learning_rate: 0.005}}
"""


def test_images_attributions_lie_in_the_planted_corner(tmp_path):
    rng = np.random.default_rng(0)
    n, size = 500, 16
    x = rng.uniform(0, 0.3, size=(n, size, size, 1)).astype("float32")
    y = rng.integers(0, 2, n)
    x[y == 1, :5, :5, 0] += 0.7  # class 1: a bright patch in the top-left corner
    np.savez(tmp_path / "corner.npz", x_train=x[:400], y_train=y[:400], x_test=x[400:],
             y_test=y[400:])
    run = trained(tmp_path, IMAGES)
    report = explained(run, "--samples", "40")
    assert report["importance"]["inputs"][0]["input"] == "patch row 1 col 1"
    stored = np.load(run / "explain" / "attributions.npz")
    mass = np.abs(stored["attributions"])
    share = mass[:, :5, :5].sum(axis=(1, 2, 3)) / mass.sum(axis=(1, 2, 3))
    correct = [s for s, r in zip(share, report["attributions"]["samples"], strict=True)
               if r["true"] == r["predicted"] and r["true"] in (1, "1")]
    assert len(correct) >= 10
    assert np.mean(np.array(correct) >= 0.6) >= 0.9
    assert report["completeness"]["max_relative_gap"] < 0.05
    assert "attributions.png" in report["files"]


TEXT = """
seed: 4
dataset: {name: text, path: texts.csv, text_column: text, target: label}
preprocessing:
  text: {output_mode: int, max_tokens: 200, sequence_length: 12}
model:
  layers:
    - Embedding: {input_dim: 200, output_dim: 16, mask_zero: true}
    - GlobalAveragePooling1D
    - Dense: {units: 2, activation: softmax}
training: {epochs: 20, batch_size: 32, optimizer: {name: adam, learning_rate: 0.02}}
"""


def test_text_attributions_point_at_the_keyword(tmp_path):
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(60)]
    rows = []
    for _ in range(600):
        text = list(rng.choice(words, size=8))
        label = int(rng.integers(0, 2))
        if label:
            text[int(rng.integers(0, 8))] = "excellent"
        rows.append((" ".join(text), "good" if label else "plain"))
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "texts.csv", index=False)
    run = trained(tmp_path, TEXT)
    report = explained(run, "--samples", "40", "--steps", "32")
    assert report["importance"]["inputs"][0]["input"] == "excellent"
    hits = [max(r["tokens"], key=lambda t: t[1])[0] == "excellent"
            for r in report["attributions"]["samples"]
            if r["true"] == r["predicted"] == "good"]
    assert len(hits) >= 10 and np.mean(hits) >= 0.9
    assert report["completeness"]["max_relative_gap"] < 0.05
    assert "excellent" in (run / "explain" / "tokens.html").read_text()


def test_report_shows_the_explanations(table_runs):
    explained(table_runs[7])
    result = run_cli("report", table_runs[7])
    assert result.exit_code == 0, result.output
    page = (table_runs[7] / "report" / "report.html").read_text()
    assert "Explain: global importance" in page
    assert "integrated gradients&#x27; largest completeness gap" in page or \
        "integrated gradients' largest completeness gap" in page


def test_explain_refuses_what_it_cannot_explain(table_runs, tmp_path):
    result = run_cli("explain", table_runs[3], "--split", "everything")
    assert result.exit_code == 2 and "'everything' is not one of" in result.output
    missing = run_cli("explain", tmp_path / "nowhere")
    assert missing.exit_code == 2


def test_a_table_with_an_embedding_column_is_explained_with_the_default_samples(tmp_path):
    """The baseline of embedded codes (kept as they are) has the shape of the samples explained,
    not of the split: the default 8 samples of a split of 60 rows once failed to broadcast."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 2))
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1],
                          "city": rng.choice([f"c{i}" for i in range(12)], 300)})
    frame["label"] = np.where(x[:, 0] > 0, "yes", "no")
    frame.to_csv(tmp_path / "planted.csv", index=False)
    config = TABLE.replace("target: label}", "target: label, columns: {a: numeric, b: numeric, "
                           "city: embedding}}").replace("epochs: 25", "epochs: 5")
    report = explained(trained(tmp_path, config))
    assert len(report["attributions"]["samples"]) == 8
    ranked = [row["input"] for row in report["importance"]["inputs"]]
    assert ranked[0] == "a" and set(ranked) == {"a", "b", "city"}
