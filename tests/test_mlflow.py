"""MLflow tracking against real stores: a SQLite database, and an `mlflow server` on a free
loopback port (started once for the module); everything is read back with MLflow's own client
and compared with the run directory's files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import keras
import pytest
import yaml
from mlflow import MlflowClient

from dlmine.console import Reporter
from dlmine.errors import Interrupted
from dlmine.model.checks import load_checked_config
from dlmine.rundir import read_history
from dlmine.train import tracking
from dlmine.train.run import train
from tests.conftest import TINY_CONFIG, write_config

SERVER_START_S = 180  # `mlflow server` imports for tens of seconds on a busy 2-core machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    """`mlflow server` (SQLite store, proxied artifacts) starting in the background while the
    first tests run; killed at the end of the module."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(folder / "server.log", "w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port",
         str(port), "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=folder)
    yield proc, f"http://127.0.0.1:{port}", folder / "server.log"
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


@pytest.fixture(scope="module", autouse=True)
def start_server_early(server_process):
    """Every test of the module starts the server fixture first, so it boots during them."""


@pytest.fixture
def server(server_process):
    """The server's URI, once it answers /health (bounded wait)."""
    proc, uri, log = server_process
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return uri
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def tracked_config(tmp_path, uri: str, epochs: int = 2) -> Path:
    """TINY_CONFIG with `training.tracking.mlflow` set: experiment `tracked`."""
    text = TINY_CONFIG.replace("epochs: 2", f"epochs: {epochs}")
    text = text.replace("training:\n", "training:\n  tracking:\n    mlflow: {tracking_uri: "
                        f"'{uri}', experiment: tracked}}\n", 1)
    return write_config(tmp_path, text)


def the_run(client: MlflowClient, run_dir: Path):
    info = json.loads((run_dir / "run.json").read_text())
    return client.get_run(info["mlflow"]["run_id"]), info


def assert_mirrors(client: MlflowClient, run_dir: Path, tmp_path: Path, status: str = "FINISHED"):
    """The MLflow run of `run_dir` holds its config, history, test metrics and files."""
    run, info = the_run(client, run_dir)
    assert run.info.status == status
    assert run.info.run_name == run_dir.name
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert run.data.params == tracking.params_of(config)
    assert run.data.params["training.batch_size"] == "16"
    assert run.data.params["model.layers.1.Dense.units"] == "8"
    assert run.data.params["dataset.limit"] == "null"
    rows = read_history(run_dir / "history.csv")
    for column in [c for c in rows[0] if c != "epoch"]:
        logged = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, column)]
        assert sorted(logged) == [(row["epoch"], pytest.approx(row[column], rel=1e-6))
                                  for row in rows], column
    eval_json = json.loads((run_dir / "eval.json").read_text())
    test_metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}
    assert test_metrics == {f"test_{k}": pytest.approx(v, rel=1e-6)
                            for k, v in eval_json["metrics"].items()}
    down = tmp_path / f"artifacts-{run_dir.name}"
    down.mkdir()
    client.download_artifacts(run.info.run_id, "", str(down))
    for name in ("config.yaml", "history.csv", "eval.json", "checkpoints/best.keras"):
        assert (down / name).read_bytes() == (run_dir / name).read_bytes(), name
    assert run.data.tags["dlmine.version"] == "0.1.0"
    assert run.data.tags["dlmine.data_fingerprint"] == info["data_fingerprint"]
    assert run.data.tags["dlmine.status"] == info["status"]
    assert info["mlflow"]["not_logged"] == [] and info["mlflow"]["error"] is None
    return run


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory) -> tuple[str, Path]:
    """One SQLite store for the module (MLflow creates its tables in seconds, once) and the
    folder where it keeps artifacts (`./mlruns`, so the tests work in that folder)."""
    folder = tmp_path_factory.mktemp("mlflow-sqlite")
    return f"sqlite:///{folder / 'mlflow.db'}", folder


def test_a_run_is_mirrored_into_a_sqlite_store(cli, tmp_path, tiny_npz, monkeypatch, sqlite_store):
    uri, folder = sqlite_store
    monkeypatch.chdir(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the default of --mlflow
    cfg = write_config(tmp_path, TINY_CONFIG)
    result = cli("train", cfg, "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    run = assert_mirrors(client, tmp_path / "run", tmp_path)
    assert client.get_experiment(run.info.experiment_id).name == "tiny"  # the config's name
    assert json.loads((tmp_path / "run" / "run.json").read_text())["mlflow"]["tracking_uri"] == uri
    assert "report" not in {a.path for a in client.list_artifacts(run.info.run_id)}

    assert cli("report", tmp_path / "run").exit_code == 0  # report/ joins the run's artifacts
    down = tmp_path / "report-artifacts"
    down.mkdir()
    client.download_artifacts(run.info.run_id, "report", str(down))
    written = sorted(p.name for p in (tmp_path / "run" / "report").iterdir())
    assert sorted(p.name for p in (down / "report").iterdir()) == written
    assert "report.html" in written
    for name in written:
        assert (down / "report" / name).read_bytes() == (tmp_path / "run" / "report" / name).read_bytes()


def test_an_interrupted_run_ends_killed_and_resume_continues_the_same_mlflow_run(
        cli, tmp_path, tiny_npz, monkeypatch, sqlite_store):
    uri, folder = sqlite_store
    monkeypatch.chdir(folder)
    cfg = tracked_config(tmp_path, uri, epochs=3)
    loaded = load_checked_config(cfg)

    class SigintAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: finish the batch, then stop

    run_dir = tmp_path / "run"
    with pytest.raises(Interrupted):
        train(loaded, run_dir=run_dir, runs_root=tmp_path, device="cpu",
              reporter=Reporter(quiet=True), argv=[], extra_callbacks=[SigintAfterFirstEpoch()],
              track=tracking.target(loaded.config))
    client = MlflowClient(uri)
    killed, info = the_run(client, run_dir)
    assert info["status"] == "interrupted" and killed.info.status == "KILLED"
    assert killed.data.tags["dlmine.status"] == "interrupted"
    assert [m.step for m in client.get_metric_history(killed.info.run_id, "loss")] == [1]
    assert "test_loss" not in killed.data.metrics

    result = cli("train", "--resume", run_dir)  # no --mlflow: run.json and config.yaml say where
    assert result.exit_code == 0, result.output
    resumed = assert_mirrors(client, run_dir, tmp_path)
    assert resumed.info.run_id == killed.info.run_id
    assert client.get_experiment(resumed.info.experiment_id).name == "tracked"
    assert len(client.search_runs([resumed.info.experiment_id])) == 1


def test_folds_are_runs_nested_under_the_cross_validation(cli, tmp_path, tiny_npz, monkeypatch,
                                                          sqlite_store):
    uri, folder = sqlite_store
    monkeypatch.chdir(folder)
    cfg = write_config(tmp_path, TINY_CONFIG.replace("epochs: 2", "epochs: 1"))
    result = cli("train", cfg, "--run-dir", tmp_path / "cv", "--folds", "2", "--mlflow", uri)
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    parent, info = the_run(client, tmp_path / "cv")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics == {f"test_{k}": pytest.approx(v, rel=1e-6)
                                   for k, v in info["final_metrics"].items()}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"config.yaml", "eval.json"}
    folds = client.search_runs([parent.info.experiment_id],
                               f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.info.run_name for r in folds) == ["fold-1", "fold-2"]
    for fold in ("fold-1", "fold-2"):
        assert_mirrors(client, tmp_path / "cv" / fold, tmp_path)


def test_an_unreachable_server_warns_once_trains_and_says_what_was_not_logged(
        cli, tmp_path, tiny_npz):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = write_config(tmp_path, TINY_CONFIG)
    started = time.monotonic()
    result = cli("train", cfg, "--run-dir", tmp_path / "run", "--mlflow", uri)
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 60  # no minutes of HTTP retries
    assert result.stderr.count("Warning:") == 1
    port = uri.rsplit(":", 1)[1]
    assert (f"Warning: MLflow: cannot log to {uri}: ConnectionError: no tracking server answers "
            f"at 127.0.0.1:{port} (Connection refused); training goes on without MLflow, and "
            "run.json (mlflow.not_logged) says what was not logged") in result.stderr
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "completed" and info["final_metrics"]
    assert info["mlflow"] == {
        "tracking_uri": uri, "experiment": "tiny", "experiment_id": None, "run_id": None,
        "parent_run_id": None,
        "error": f"ConnectionError: no tracking server answers at 127.0.0.1:{port} "
                 "(Connection refused)",
        "not_logged": ["the MLflow run", "params", "test metrics", "artifact config.yaml",
                       "artifact history.csv", "artifact eval.json",
                       "artifact checkpoints/best.keras", "the status", "metrics of epochs 1-2"]}


def test_a_study_on_an_unreachable_server_warns_once(cli, tmp_path, tiny_npz):
    uri = f"http://127.0.0.1:{free_port()}"
    cfg = write_config(tmp_path, TINY_CONFIG.replace("epochs: 2", "epochs: 1") + TUNE)
    study = tmp_path / "study"
    result = cli("tune", cfg, "--study-dir", study, "--mlflow", uri, "--trials", "1")
    assert result.exit_code == 0, result.output
    assert result.stderr.count("Warning: MLflow: cannot log to") == 1
    recorded = json.loads((study / "study.json").read_text())["mlflow"]
    assert recorded["run_id"] is None
    assert recorded["not_logged"] == ["the MLflow run", "params", "the study's metrics",
                                      "artifact config.yaml", "artifact best.yaml",
                                      "artifact history.png", "the status"]
    trial = json.loads((study / "trial-0000" / "run.json").read_text())
    assert trial["status"] == "completed" and trial["mlflow"]["run_id"] is None
    assert trial["mlflow"]["error"] == recorded["error"]


def test_without_mlflow_installed_the_message_says_how_to_install_it(
        cli, tmp_path, tiny_npz, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails as if absent
    cfg = write_config(tmp_path, TINY_CONFIG)
    result = cli("train", cfg, "--run-dir", tmp_path / "run", "--mlflow", "sqlite:///x.db")
    assert result.exit_code == 1
    assert result.stderr == ("Error: MLflow tracking (training.tracking.mlflow, --mlflow or "
                             "MLFLOW_TRACKING_URI) needs MLflow: pip install 'dlmine[mlflow]'\n")
    assert not (tmp_path / "run").exists()


def test_a_misspelt_tracking_key_gets_a_suggestion(cli, tmp_path, tiny_npz):
    cfg = write_config(tmp_path, TINY_CONFIG.replace(
        "training:\n", "training:\n  tracking: {mlflow: {experimnt: e}}\n", 1))
    result = cli("check", cfg)
    assert result.exit_code == 2
    assert (f"{cfg}:13: training.tracking.mlflow.experimnt: unknown key; did you mean "
            "'experiment'? Valid keys: tracking_uri, experiment") in result.stderr


def test_a_run_on_a_tracking_server_and_a_failed_run(cli, server, tmp_path, tiny_npz):
    client = MlflowClient(server)
    cfg = tracked_config(tmp_path, server)
    result = cli("train", cfg, "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'run'}\n"  # MLflow's links to the run: not there
    assert_mirrors(client, tmp_path / "run", tmp_path)

    diverging = write_config(tmp_path, TINY_CONFIG.replace(
        "  batch_size: 16\n", "  batch_size: 16\n  optimizer: {name: sgd, learning_rate: 1.0e+30}\n"),
        "diverging.yaml")
    result = cli("train", diverging, "--run-dir", tmp_path / "failed", "--mlflow", server)
    assert result.exit_code == 1 and "training diverged" in result.stderr
    failed, info = the_run(client, tmp_path / "failed")
    assert info["status"] == "failed" and failed.info.status == "FAILED"
    assert failed.data.tags["dlmine.status"] == "failed"
    names = {a.path for a in client.list_artifacts(failed.info.run_id)}
    assert "config.yaml" in names and "eval.json" not in names


TUNE = """\
tune:
  trials: 2
  metric: val_accuracy
  pruner: none
  space:
    training.batch_size: {choice: [8, 16]}
"""


def test_a_tune_study_is_a_run_with_one_nested_run_per_trial(cli, server, tmp_path, tiny_npz):
    cfg = write_config(tmp_path, TINY_CONFIG.replace("epochs: 2", "epochs: 1") + TUNE)
    study = tmp_path / "study"
    result = cli("tune", cfg, "--study-dir", study, "--mlflow", server)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{study}\n"
    client = MlflowClient(server)
    parent_id = json.loads((study / "study.json").read_text())["mlflow"]["run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "study"
    assert parent.data.metrics["trials_complete"] == 2
    assert parent.data.params["tune.space.training.batch_size.choice"] == "[8, 16]"
    best = max(row["val_accuracy"] for trial in study.glob("trial-*")
               for row in read_history(trial / "history.csv"))
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best, rel=1e-6)
    down = tmp_path / "study-artifacts"
    down.mkdir()
    client.download_artifacts(parent_id, "best.yaml", str(down))
    assert (down / "best.yaml").read_bytes() == (study / "best.yaml").read_bytes()
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(r.info.run_name for r in children) == ["trial-0000", "trial-0001"]
    for child in children:
        trial = study / child.info.run_name
        assert child.data.params["training.batch_size"] == str(
            json.loads((trial / "run.json").read_text())["config"]["training"]["batch_size"])
        logged = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [(m.step, m.value) for m in logged] == [
            (row["epoch"], pytest.approx(row["val_accuracy"])) for row in read_history(trial / "history.csv")]


def test_a_password_in_the_tracking_uri_is_not_written_to_run_json():
    from dlmine.train.tracking import without_password

    assert without_password("http://bob:s3cret@mlflow.example:5000/") == \
        "http://bob:***@mlflow.example:5000/"
    assert without_password("postgresql://u:p@db/ml") == "postgresql://u:***@db/ml"
    assert without_password("sqlite:///m.db") == "sqlite:///m.db"
    assert without_password(None) is None
