"""End to end: `dlmine train / evaluate` on real tiny data, in-process and as subprocesses."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from dlmine.config import load_config
from tests.conftest import CONFIGS, ROOT, TINY_CONFIG, mnist_dir, write_config

RUN_FILES = ["config.yaml", "run.json", "history.csv", "checkpoints/best.keras",
             "checkpoints/last.keras", "model.keras", "preprocessing.json", "train.log",
             "eval.json"]


def test_train_writes_a_complete_run_directory(cli, tiny_config, tmp_path):
    run = tmp_path / "run"
    result = cli("train", tiny_config, "--run-dir", run)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(run)
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert not list(run.glob(".*.tmp")) and not (run / ".lock").exists()
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed"
    assert info["epochs_completed"] == 2
    assert info["versions"]["backend"] == "tensorflow"
    assert info["device"].startswith("cpu")
    assert info["seed"] == 1
    assert info["samples"] == {"train": 45, "validation": 15, "test": 20}
    assert info["class_names"] == ["red", "green", "blue"]
    assert info["data_fingerprint"].startswith("sha256:")
    with open(run / "history.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(rows[0])
    report = json.loads((run / "eval.json").read_text())
    assert report["split"] == "test" and report["checkpoint"] == "best"
    assert set(report["per_class"]) == {"red", "green", "blue"}
    assert sum(map(sum, report["confusion_matrix"])) == 20
    assert report["metrics"] == info["final_metrics"]


def test_resolved_config_is_complete_and_loads_again(cli, tiny_config, tmp_path):
    run = tmp_path / "run"
    assert cli("train", tiny_config, "--run-dir", run, "--set", "training.epochs=1").exit_code == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["training"]["epochs"] == 1
    assert saved["training"]["loss"] == "sparse_categorical_crossentropy"
    assert saved["training"]["checkpoint"]["monitor"] == "val_loss"
    assert Path(saved["dataset"]["path"]).is_absolute()
    again = load_config(run / "config.yaml").config
    assert again.training.epochs == 1 and again.name == "tiny"


def test_evaluate_reproduces_the_test_metrics_of_train(cli, tiny_config, tmp_path):
    run = tmp_path / "run"
    assert cli("train", tiny_config, "--run-dir", run).exit_code == 0
    trained = json.loads((run / "eval.json").read_text())
    result = cli("evaluate", run, "--json")
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)
    assert evaluated["metrics"] == pytest.approx(trained["metrics"], abs=1e-6)
    assert evaluated["confusion_matrix"] == trained["confusion_matrix"]
    assert json.loads((run / "eval.json").read_text()) == evaluated


def test_evaluate_last_checkpoint_on_validation_split(cli, tiny_config, tmp_path):
    run = tmp_path / "run"
    assert cli("train", tiny_config, "--run-dir", run).exit_code == 0
    result = cli("evaluate", run, "--checkpoint", "last", "--split", "validation")
    assert result.exit_code == 0, result.output
    assert "validation metrics (run, last checkpoint)" in result.stdout
    report = json.loads((run / "eval.json").read_text())
    assert (report["split"], report["checkpoint"], report["samples"]) == ("validation", "last", 15)


def test_quiet_prints_only_the_run_directory(cli, tiny_config, tmp_path):
    run = tmp_path / "run"
    result = cli("train", tiny_config, "--run-dir", run, "--quiet")
    assert result.exit_code == 0
    assert result.stdout == f"{run}\n"
    assert result.stderr == ""


def test_plain_output_has_one_line_per_epoch(cli, tiny_config, tmp_path):
    result = cli("train", tiny_config, "--run-dir", tmp_path / "run", "--set", "training.epochs=3")
    epoch_lines = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(" - ")[0] for line in epoch_lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "val_accuracy" in epoch_lines[0]


def test_default_run_directory_goes_under_runs_root(cli, tiny_config, tmp_path):
    result = cli("train", tiny_config, "--runs-root", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0
    run = Path(result.stdout.strip())
    assert run.parent == tmp_path / "runs"
    assert run.name.startswith("tiny-") and len(run.name) == len("tiny-YYYYmmdd-HHMMSS")


def test_diverging_loss_fails_the_run_and_keeps_the_last_good_checkpoint(cli, tmp_path, tiny_npz):
    cfg = write_config(tmp_path, TINY_CONFIG.replace(
        "  batch_size: 16\n",
        "  batch_size: 16\n  optimizer: {name: sgd, learning_rate: 1.0e+30}\n"))
    run = tmp_path / "run"
    result = cli("train", cfg, "--run-dir", run, "--set", "training.epochs=5")
    assert result.exit_code == 1
    assert "Error: training diverged: " in result.stderr
    assert "Try a lower training.optimizer.learning_rate" in result.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed"
    assert info["error"].startswith("training diverged: ")
    assert not (run / "model.keras").exists()


def test_device_gpu_without_a_gpu_is_a_clear_error(cli, tiny_config, tmp_path):
    result = cli("train", tiny_config, "--run-dir", tmp_path / "run", "--device", "gpu")
    assert result.exit_code == 1
    assert result.stderr == ("Error: --device gpu, but the tensorflow backend sees no GPU on "
                             "this machine; use --device cpu or --device auto\n")
    assert not (tmp_path / "run").exists()


def test_missing_config_file_is_a_usage_error(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("train", "nope.yaml")
    assert result.exit_code == 2
    assert result.stderr == "Error: config file not found: nope.yaml\n"


def test_evaluate_of_a_folder_that_is_not_a_run(cli, tmp_path):
    result = cli("evaluate", tmp_path)
    assert result.exit_code == 2
    assert result.stderr == f"Error: {tmp_path} is not a dlmine run directory: it has no config.yaml\n"


def test_a_config_error_creates_no_run_directory(cli, tmp_path, tiny_npz):
    cfg = write_config(tmp_path, TINY_CONFIG.replace("units: 3,", "units: 4,"))
    result = cli("train", cfg, "--run-dir", tmp_path / "run")
    assert result.exit_code == 2
    assert "model.layers[2].Dense: the model's output has shape (None, 4)" in result.stderr
    assert not (tmp_path / "run").exists()


def test_readme_config_reference_matches_the_schema():
    from dlmine.config.reference import markdown

    assert markdown() in (ROOT / "README.md").read_text()


def test_shipped_configs_pass_check(cli):
    """Every shipped config but the MovieLens ones (their data needs `make movielens`; the
    benchmarks train them), each read from configs/ as a user runs it."""
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml") if not p.stem.startswith("movielens"))
    assert len(names) == 11, names
    for name in names:
        result = cli("check", CONFIGS / f"{name}.yaml")
        assert result.exit_code == 0, (name, result.output)
        assert "OK:" in result.stdout, name


# --- as a user runs it: subprocesses ------------------------------------------------------------

def run_dlmine(*args, env_extra=None, timeout=300):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "dlmine", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


def test_help_answers_without_importing_a_backend():
    """How fast that is, is a figure of benchmarks/startup.py."""
    code = ("import sys; from click.testing import CliRunner; "
            "from dlmine.cli import main; r = CliRunner().invoke(main, ['--help']); "
            "print(r.exit_code, 'keras' in sys.modules, 'tensorflow' in sys.modules, "
            "'jax' in sys.modules, 'train' in r.output and 'tune' in r.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["0", "False", "False", "False", "True"], out.stderr


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_smoke_training_on_each_backend(tmp_path, tiny_npz, backend):
    cfg = write_config(tmp_path, TINY_CONFIG)
    run = tmp_path / "run"
    result = run_dlmine("train", cfg, "--run-dir", run, env_extra={"KERAS_BACKEND": backend})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{run}\n"
    assert "Traceback" not in result.stderr and "I0000" not in result.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["versions"]["backend"] == backend
    again = run_dlmine("evaluate", run, "--json", env_extra={"KERAS_BACKEND": backend})
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["metrics"] == pytest.approx(info["final_metrics"], abs=1e-6)


def test_mnist_smoke_run_on_the_real_data(tmp_path):
    """The CI smoke run: 3000 MNIST samples, one epoch, then evaluate."""
    data = mnist_dir()
    assert data is not None, "DLMINE_DATA_DIR must point at a folder with mnist.npz (CI sets it)"
    run = tmp_path / "mnist"
    env = {"DLMINE_DATA_DIR": str(data)}
    result = run_dlmine("train", CONFIGS / "mnist_cnn.yaml", "--run-dir", run, "--set",
                        "dataset.limit=3000", "--set", "training.epochs=1", env_extra=env)
    assert result.returncode == 0, result.stderr
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["samples"] == {"train": 2700, "validation": 300, "test": 10000}
    assert info["final_metrics"]["accuracy"] >= 0.70  # measured 0.7655 (seed 42, 2 CPU cores)
    evaluated = run_dlmine("evaluate", run, "--json", env_extra=env)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["metrics"] == pytest.approx(info["final_metrics"], abs=1e-6)


def test_sigterm_marks_the_run_interrupted_and_exits_130(tmp_path, tiny_npz):
    cfg = write_config(tmp_path, TINY_CONFIG.replace("epochs: 2", "epochs: 100000"))
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "dlmine", "train", str(cfg), "--run-dir",
                             str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "last.keras").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Error: interrupted after " in err
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted"
    rows = (run / "history.csv").read_text().splitlines()[1:]
    assert len(rows) == info["epochs_completed"] >= 1
    assert not (run / ".lock").exists()


def test_tensorboard_logs_go_into_the_run_directory(cli, tiny_config, tmp_path):
    run = tmp_path / "run"
    assert cli("train", tiny_config, "--run-dir", run, "--set", "training.tensorboard=true").exit_code == 0
    assert list((run / "tensorboard" / "train").glob("events.out.tfevents.*"))
    assert list((run / "tensorboard" / "validation").glob("events.out.tfevents.*"))


def test_early_stopping_and_class_weights_take_effect(cli, tiny_config, tmp_path):
    run = tmp_path / "run"
    result = cli("train", tiny_config, "--run-dir", run, "--set", "training.epochs=30",
                 "--set", "training.early_stopping={patience: 0, min_delta: 100}",
                 "--set", "training.class_weight=balanced")
    assert result.exit_code == 0, result.output
    rows = (run / "history.csv").read_text().splitlines()[1:]
    assert len(rows) == 2  # nothing improves by 100: stopped after patience 0 + 1
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


def test_class_weights_from_the_training_labels():
    import numpy as np

    from dlmine.config import load_config
    from dlmine.train.session import class_weights

    cfg = load_config(CONFIGS / "digits_cnn.yaml", ["training.class_weight=balanced"]).config
    y = np.array([0, 0, 0, 1])
    assert class_weights(cfg, y) == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    cfg.training.class_weight = {1: 3.0}
    assert class_weights(cfg, y) == {0: 1.0, 1: 3.0}


def test_mixed_precision_computes_in_bfloat16_on_cpu_with_float32_outputs(cli, tiny_config, tmp_path):
    import keras

    run = tmp_path / "run"
    try:
        result = cli("train", tiny_config, "--run-dir", run, "--set", "training.mixed_precision=true")
    finally:
        keras.mixed_precision.set_global_policy("float32")  # the policy is global to the process
    assert result.exit_code == 0, result.output
    model = keras.saving.load_model(run / "model.keras")
    assert model.layers[1].dtype_policy.name == "mixed_bfloat16"
    assert model.layers[-1].name == "float32_output" and model.output.dtype == "float32"
    # export and explain take the same weights computing in float32: converters refuse the
    # 16-bit casts (ONNX: "MatMul bound to different types"), and gradients want full precision
    from dlmine.model.io import in_float32

    copy = in_float32(model)
    assert copy is not model and {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    for a, b in zip(copy.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).normal(size=(4, *model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(copy.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-2)
    assert in_float32(copy) is copy
    exported = cli("export", run, "--format", "tflite")  # TFLite: "MatMul is neither a custom op"
    assert exported.exit_code == 0, exported.output
