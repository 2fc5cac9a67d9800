"""Data-parallel training in several processes (JAX): the same result as one process, one run
directory, and a job that ends, with a clear message, when a process fails."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dlmine.backend.distributed import Cluster, check_batch_size, check_job
from dlmine.backend.launch import free_port, supervise
from dlmine.backend.shares import share_rows
from dlmine.errors import UsageError
from tests.conftest import write_config

# 48 training samples (60 minus the validation fifth): 3 batches of 16, 8 per process. The
# Dropout checks that both processes draw the same masks.
CONFIG = """\
name: tiny
seed: 1
dataset:
  name: npz
  path: tiny.npz
  validation_split: 0.2
model:
  layers:
    - Flatten
    - Dense: {units: 8, activation: relu}
    - Dropout: {rate: 0.25}
    - Dense: {units: 3, activation: softmax}
training:
  epochs: 2
  batch_size: 16
  mixed_precision: false  # in bfloat16 the sums' order shows at 1e-3
"""
# Measured on CPU, in float32: the histories and test metrics of two processes are those of one to the
# last bit; the weights differ by at most 1.5e-8 (the order of the gradient sums differs).
TOLERANCE = 1e-6


def _dlmine(*args, tmp_path, **env) -> subprocess.Popen:
    """`dlmine ARGS` on the JAX backend, in tmp_path, with its temporary files under tmp/."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TMPDIR": str(tmp_path / "tmp"), **env}
    return subprocess.Popen([sys.executable, "-m", "dlmine", *map(str, args)], cwd=tmp_path,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _history(run) -> list[dict]:
    with open(run / "history.csv") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _weights(path) -> list[np.ndarray]:
    import keras

    return keras.saving.load_model(path).get_weights()


def same_training(a, b) -> None:
    """Run directories `a` and `b` trained alike: each epoch's history and the best and last
    checkpoints' weights within TOLERANCE."""
    for row_a, row_b in zip(_history(a), _history(b), strict=True):
        assert row_b == pytest.approx(row_a, abs=TOLERANCE)
    for name in ("best.keras", "last.keras"):
        for x, y in zip(_weights(a / "checkpoints" / name), _weights(b / "checkpoints" / name),
                        strict=True):
            np.testing.assert_allclose(y, x, atol=TOLERANCE, rtol=0)


def test_two_processes_train_like_one_with_the_same_global_batch(cli, tmp_path, tiny_npz):
    cfg = write_config(tmp_path, CONFIG)
    single = _dlmine("train", cfg, "--run-dir", "one", tmp_path=tmp_path)
    job = _dlmine("launch", "--local", "2", cfg, "--run-dir", "two", tmp_path=tmp_path)
    out, err = job.communicate(timeout=240)
    assert job.returncode == 0, err
    assert single.communicate(timeout=240)[0] == "one\n"
    assert single.returncode == 0
    assert out == "two\n"
    one, two = tmp_path / "one", tmp_path / "two"
    # one run directory, and nothing left of the private one of process 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["one", "tmp", "two"]
    assert list((tmp_path / "tmp").iterdir()) == []
    assert json.loads((two / "run.json").read_text())["replicas"] == 2
    assert json.loads((one / "run.json").read_text())["replicas"] == 1
    same_training(one, two)
    tested = json.loads((two / "eval.json").read_text())["metrics"]
    assert tested == pytest.approx(json.loads((one / "eval.json").read_text())["metrics"],
                                   abs=TOLERANCE)
    again = cli("evaluate", two, "--json")  # a normal run directory, here on TensorFlow
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["metrics"] == pytest.approx(tested, abs=1e-5)


def test_a_process_that_never_joins_fails_the_job(tmp_path, tiny_npz):
    cfg = write_config(tmp_path, CONFIG)
    port = free_port()
    started = time.monotonic()
    alone = _dlmine("train", cfg, "--run-dir", "run", "--processes", "2", "--process-id", "0",
                    "--coordinator", f"127.0.0.1:{port}", "--peer-timeout", "1", tmp_path=tmp_path)
    out, err = alone.communicate(timeout=90)
    assert alone.returncode == 1
    assert time.monotonic() - started < 60
    assert err.strip().splitlines()[-1] == (
        f"Error: process 0 of 2: not every process joined at 127.0.0.1:{port} within 1 s "
        "(--peer-timeout); start one `dlmine train` for each --process-id 0..1, all with "
        "--processes 2 and the same --coordinator")
    assert out == "" and not (tmp_path / "run").exists()


def test_a_killed_process_ends_the_others_at_once(tmp_path, tiny_npz):
    cfg = write_config(tmp_path, CONFIG)
    job = {"DLMINE_PROCESSES": "2", "DLMINE_COORDINATOR": f"127.0.0.1:{free_port()}"}
    args = ("train", cfg, "--run-dir", "run", "--set", "training.epochs=500", "--peer-timeout", "20")
    leader = _dlmine(*args, tmp_path=tmp_path, DLMINE_PROCESS_ID="0", **job)
    other = _dlmine(*args, tmp_path=tmp_path, DLMINE_PROCESS_ID="1", **job)
    for line in leader.stderr:
        if line.startswith("epoch 1/"):
            break
    other.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    err = leader.stderr.read()
    assert leader.wait(timeout=60) == 1
    assert time.monotonic() - killed < 30
    assert other.wait() == -signal.SIGKILL
    assert err.strip().splitlines()[-1].startswith(
        "Error: process 0 of 2: another process of the job stopped, so this one stops too "
        "(UNKNOWN: Gloo ")
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and "Gloo" in info["error"]
    assert _history(tmp_path / "run")[0]["epoch"] == 1  # the epochs done are kept


def test_launch_stops_the_others_when_one_fails_and_returns_its_code():
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    failing = [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"]
    started = time.monotonic()
    code, printed = supervise([sleeper, failing], [dict(os.environ)] * 2)
    assert (code, printed) == (3, "")
    assert time.monotonic() - started < 15


def test_share_rows_split_each_batch_in_process_order():
    assert share_rows(16, 0, 2).tolist() == list(range(8))
    assert share_rows(16, 1, 2).tolist() == list(range(8, 16))
    assert share_rows(13, 1, 2).tolist() == list(range(6, 12))  # row 12 left out this epoch
    assert [share_rows(2, i, 4).tolist() for i in range(4)] == [[0], [1], [0], [1]]


def test_options_that_do_not_describe_a_job_are_usage_errors(cli, tmp_path, tiny_npz):
    cfg = write_config(tmp_path, CONFIG)
    result = cli("train", cfg, "--processes", "2")
    assert result.exit_code == 2
    assert result.stderr == ("Error: --processes 2 needs --coordinator HOST:PORT (or "
                             "DLMINE_COORDINATOR), the address where process 0 listens; "
                             "received None\n")
    result = cli("train", cfg, "--processes", "2", "--process-id", "2", "--coordinator", "h:1")
    assert result.stderr == "Error: --process-id must be in 0..1 for --processes 2, received 2\n"
    result = cli("train", cfg, "--process-id", "1")
    assert result.stderr == "Error: --process-id 1 needs --processes above 1\n"
    result = cli("launch", "--local", "2", cfg, "--process-id", "1")
    assert result.exit_code == 2
    assert result.stderr == ("Error: launch sets --processes, --process-id, --coordinator "
                             "itself; remove --process-id\n")
    with pytest.raises(UsageError, match=r"^training.batch_size must be a multiple of "
                       r"--processes 2 \(each process takes an equal share of every batch\), "
                       r"received 15$"):
        check_batch_size(Cluster(2, 0, "h:1"), 15)


def test_what_a_job_cannot_train_is_refused_before_training():
    from types import SimpleNamespace

    def cfg(name):
        return SimpleNamespace(dataset=SimpleNamespace(name=name, path=None),
                               training=SimpleNamespace(batch_size=16))

    job = Cluster(2, 0, "h:1")
    check_job(job, cfg("text"), None)  # token ids, not strings: text shards like any array
    with pytest.raises(UsageError, match=r"^--folds runs in one process; train the folds "
                       r"without --processes$"):
        check_job(job, cfg("npz"), 3)
    check_job(job, cfg("npz"), None)
    check_job(Cluster(), cfg("text"), 3)  # one process: anything goes


def test_several_processes_need_the_jax_backend(cli, tmp_path, tiny_npz, monkeypatch):
    cfg = write_config(tmp_path, CONFIG)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    result = cli("launch", "--local", "2", cfg)
    assert result.exit_code == 2
    assert result.stderr == ("Error: training on several processes needs the JAX backend, but "
                             "KERAS_BACKEND=tensorflow; set KERAS_BACKEND=jax\n")
    result = cli("train", cfg, "--processes", "2", "--coordinator", "h:1")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: training on several processes (--processes 2) needs the JAX backend, but Keras "
        "uses 'tensorflow'; set KERAS_BACKEND=jax (TensorFlow's MultiWorkerMirroredStrategy "
        "fails inside Keras 3's fit)\n")
