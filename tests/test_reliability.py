"""Nothing lost (issue 3): kills, signals, resume, locks, damaged files, full disks, hostile input.

The fault-injection tests really kill `python -m dlmine` subprocesses (SIGKILL at seeded random
moments and in the middle of a checkpoint write, SIGINT, SIGTERM, two SIGINTs) and resume them,
then compare the result with one uninterrupted run of the same config: with
`training.deterministic: true` on a CPU the history, the weights (within 1e-6) and the test
metrics must be the same. Training is kept tiny (960 samples of 8x8, batch 8, 6 epochs of
about 0.5 s) so that a kill lands inside an epoch. Resumes that need no process of their own run
in-process through click's runner, which is as exact and saves the backend start-up.

The corpus at the end holds hostile and broken inputs (YAML, configs, data files, model files,
run directories), each with its exact outcome: the message, the exit code, nothing executed (a
payload that would create a marker file) and nothing lost (the files it must not touch).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, write_config

EPOCHS = 6
TOL = 1e-6
ONE_PROBLEM = "Error: 1 problem in the config:\n"
TAG_REFUSED = ("is not allowed: dlmine reads plain YAML only (yaml.safe_load) and never builds "
               "Python objects; nothing was executed")
CARRIES_CODE = ("a mapping with 'module', 'registered_name' or 'fn' names code to import; dlmine "
                "only builds Keras' own objects by name")
PLAIN_NAME = ("expected a plain name of letters, digits, '.', '_' and '-' (no '/', no leading dot, "
              "at most 100 characters), because it names the run directory")
REFUSED_MODEL = ("was refused: it carries code (such as a Lambda layer) that Keras safe mode does "
                 "not load; dlmine never runs code from a model file")
LINK_REFUSED = "is a symbolic link; dlmine neither reads nor writes through links inside a run directory"
NOT_KERAS = "is damaged: not a .keras archive (truncated or overwritten)"

CONFIG = """\
name: rel
seed: 3
dataset:
  name: npz
  path: rel.npz
  validation_split: 0.2
model:
  layers:
    - Flatten
    - Dense: {units: 256, activation: relu}
    - Dropout: {rate: 0.2}
    - Dense: {units: 256, activation: relu}
    - Dense: {units: 4, activation: softmax}
training:
  epochs: 6
  batch_size: 8
  deterministic: true
  reduce_lr_on_plateau: {monitor: val_accuracy, patience: 1, factor: 0.5}
"""


# --- data, processes and run directories ---------------------------------------------------------

def make_npz(path: Path, n_train: int = 1200, n_test: int = 200) -> Path:
    """4 noisy classes of 8x8 samples: learnable, but slow enough to improve for 6 epochs."""
    rng = np.random.default_rng(7)

    def make(n):
        y = np.arange(n) % 4
        x = rng.normal(0.0, 1.0, size=(n, 8, 8)).astype("float32")
        x[np.arange(n), y * 2, :] += 0.6
        return x, y.astype("int64")

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder with `rel.npz` and `rel.yaml` (the config every fault test trains)."""
    folder = tmp_path_factory.mktemp("reliability")
    make_npz(folder / "rel.npz")
    write_config(folder, CONFIG, "rel.yaml")
    return folder


@pytest.fixture(scope="module", autouse=True)
def _op_determinism_off_afterwards():
    """In-process resumes turn TensorFlow's op determinism on; later test modules get it off."""
    yield
    if "tensorflow" in sys.modules:
        from tensorflow.python.framework import config as tf_config

        tf_config.disable_op_determinism()


class Proc:
    """`python -m dlmine ARGS` in the background, its output in temporary files (no pipe fills)."""

    def __init__(self, *args):
        self.args = [str(a) for a in args]
        self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.popen = subprocess.Popen([sys.executable, "-m", "dlmine", *self.args], cwd=ROOT,
                                      stdout=self._out, stderr=self._err, text=True)
        self.pid = self.popen.pid

    def poll(self):
        return self.popen.poll()

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    def wait(self, timeout: float = 120) -> int:
        return self.popen.wait(timeout=timeout)

    def kill(self) -> int:
        if self.popen.poll() is None:
            self.popen.kill()
        return self.popen.wait(timeout=60)

    @property
    def stdout(self) -> str:
        self._out.seek(0)
        return self._out.read()

    @property
    def stderr(self) -> str:
        self._err.seek(0)
        return self._err.read()


def dlmine(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlmine", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def wait_until(condition: Callable[[], bool], proc: Proc | None, what: str, timeout: float = 120,
               interval: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"dlmine exited ({proc.poll()}) before {what}:\n{proc.stderr[-3000:]}")
        if time.monotonic() > deadline:
            if proc is not None:
                proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(interval)


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def state_epoch(run: Path) -> int:
    state = read_json(run / "training_state.json")
    return state["epoch"] if state else 0


def resumes(run: Path) -> int:
    return len((read_json(run / "run.json") or {}).get("resumed", []))


def history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def history_epochs(run: Path) -> list[int]:
    return [int(row["epoch"]) for row in history(run)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(folder: Path, skip: tuple = ()) -> dict:
    """sha256 and mtime of every file under `folder` (links by their target's name)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if rel in skip:
            continue
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = (sha256(path), path.stat().st_mtime_ns)
    return out


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def load_weights(path: Path) -> list:
    import keras

    return keras.saving.load_model(path, safe_mode=True, compile=False).get_weights()


def max_weight_diff(a: list, b: list) -> float:
    assert [w.shape for w in a] == [w.shape for w in b]
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


@dataclass
class Baseline:
    run: Path
    weights: list
    best_weights: list
    history: list
    eval: dict
    info: dict


@pytest.fixture(scope="module")
def _started(workdir):
    """The baseline and the run to interrupt train side by side (two processes, two cores)."""
    base = Proc("train", workdir / "rel.yaml", "--run-dir", workdir / "baseline")
    run = workdir / "interrupted"
    stopped = Proc("train", workdir / "rel.yaml", "--run-dir", run)

    def stop_in_epoch_3():
        while stopped.poll() is None and state_epoch(run) < 2:
            time.sleep(0.005)
        if stopped.poll() is None:
            stopped.signal(signal.SIGTERM)

    thread = threading.Thread(target=stop_in_epoch_3, daemon=True)
    thread.start()
    yield base, stopped, thread
    base.kill()
    stopped.kill()


@pytest.fixture(scope="module")
def baseline(workdir, _started) -> Baseline:
    """One uninterrupted run of the config: what every interrupted-then-resumed run must equal."""
    run = workdir / "baseline"
    proc = _started[0]
    assert proc.wait(timeout=300) == 0, proc.stderr
    return Baseline(run, load_weights(run / "model.keras"),
                    load_weights(run / "checkpoints" / "best.keras"), history(run),
                    json.loads((run / "eval.json").read_text()),
                    json.loads((run / "run.json").read_text()))


@dataclass
class Interrupted:
    run: Path
    returncode: int
    stderr: str
    epochs: int


@pytest.fixture(scope="module")
def interrupted(workdir, _started) -> Interrupted:
    """A run stopped by SIGTERM in its third epoch (two complete ones); tests work on copies."""
    run = workdir / "interrupted"
    _, proc, thread = _started
    thread.join(timeout=300)
    code = proc.wait(timeout=300)
    return Interrupted(run, code, proc.stderr, state_epoch(run))


def assert_same_as_baseline(run: Path, base: Baseline, epochs: int = EPOCHS) -> None:
    """Completed, history 1..N once each and equal, same weights and test metrics, no lock."""
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed", info
    assert info["epochs_completed"] == epochs
    assert info["best"]["epoch"] == base.info["best"]["epoch"]
    assert info["best"]["value"] == pytest.approx(base.info["best"]["value"], abs=TOL)
    rows = history(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert set(rows[0]) == set(base.history[0])
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates == pytest.approx([float(r["learning_rate"]) for r in base.history], abs=1e-9), (
        "the learning rate of each epoch (ReduceLROnPlateau) differs from the uninterrupted run")
    for mine, theirs in zip(rows, base.history, strict=True):
        for key in theirs:
            assert float(mine[key]) == pytest.approx(float(theirs[key]), abs=TOL), (mine, theirs)
    assert max_weight_diff(load_weights(run / "model.keras"), base.weights) <= TOL
    assert max_weight_diff(load_weights(run / "checkpoints" / "best.keras"), base.best_weights) <= TOL
    report = json.loads((run / "eval.json").read_text())
    assert report["metrics"] == pytest.approx(base.eval["metrics"], abs=TOL)
    assert report["confusion_matrix"] == base.eval["confusion_matrix"]
    assert info["final_metrics"] == pytest.approx(base.eval["metrics"], abs=TOL)
    assert not (run / ".lock").exists()


def assert_committed_and_loadable(run: Path) -> dict:
    """After any kill: the files parse, a checkpoint matches the committed state and loads."""
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["epochs"] >= EPOCHS
    assert json.loads((run / "run.json").read_text())["status"] in ("running", "interrupted")
    state = json.loads((run / "training_state.json").read_text())
    epochs = history_epochs(run)
    assert epochs[:state["epoch"]] == list(range(1, state["epoch"] + 1)), epochs
    assert len(epochs) - state["epoch"] in (0, 1), (epochs, state)  # a row written before its state
    matching = [run / "checkpoints" / name for name in ("last.keras", "previous.keras")
                if (run / "checkpoints" / name).is_file()
                and sha256(run / "checkpoints" / name) == state["last_sha256"]]
    assert matching, f"no checkpoint matches training_state.json (epoch {state['epoch']})"
    assert load_weights(matching[0])
    return state


# --- 1. SIGKILL at random moments ------------------------------------------------------------------

def test_sigkill_at_random_moments_then_resume_ends_as_the_uninterrupted_run(workdir, baseline, tmp_path):
    """Three kills in a row at seeded random moments, each followed by --resume."""
    rng = random.Random(20261128)
    run = tmp_path / "run"
    moments = []
    proc, resumed = Proc("train", workdir / "rel.yaml", "--run-dir", run), 0
    for kill in range(3):
        if kill == 1:  # any moment after the resumed process took the lock: setup, epoch, save
            wait_until(lambda r=resumed: resumes(run) > r, proc, "the resume to start")
            delay = rng.uniform(0.1, 2.0)
        else:  # inside the epoch that follows a committed one
            committed = state_epoch(run)
            wait_until(lambda c=committed: state_epoch(run) > c, proc, "an epoch to be committed")
            delay = rng.uniform(0.0, 0.6)
        time.sleep(delay)
        assert proc.kill() == -signal.SIGKILL, f"finished before the kill at +{delay:.3f}s"
        moments.append((kill, round(delay, 3), state_epoch(run)))
        print(f"kill {kill}: +{delay:.3f}s, committed epoch {state_epoch(run)}")
        assert_committed_and_loadable(run)
        assert (run / ".lock").exists()  # left by the dead process; --resume takes it over
        if kill < 2:
            resumed = resumes(run)
            proc = Proc("train", "--resume", run)
    result = dlmine("train", "--resume", run)
    assert result.returncode == 0, (moments, result.stderr)
    assert result.stdout == f"{run}\n"
    assert "Traceback" not in result.stderr
    assert resumes(run) == 3
    assert_same_as_baseline(run, baseline)


# --- 2. SIGKILL while a checkpoint is written ------------------------------------------------------

def new_temp(folder: Path, proc: Proc, old: set, prefix: str = ".last.") -> str:
    """Poll `folder` until a temporary `{prefix}*.keras` that was not there before appears."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for name in os.listdir(folder) if folder.is_dir() else ():
            if name.startswith(prefix) and name.endswith(".keras") and name not in old:
                return name
        if proc.poll() is not None:
            pytest.fail(f"dlmine exited ({proc.poll()}) before writing a checkpoint:\n{proc.stderr}")
        time.sleep(0.001)
    proc.kill()
    pytest.fail("no checkpoint was written")


def test_sigkill_while_last_keras_is_written(workdir, baseline, tmp_path, cli):
    """Killed as the temporary file of last.keras appears (empty), then 15 ms into the write."""
    delays = (0.0, 0.015)
    run = tmp_path / "run"
    folder = run / "checkpoints"
    proc = Proc("train", workdir / "rel.yaml", "--run-dir", run)
    for kill, delay in enumerate(delays):
        if kill == 0:
            wait_until(lambda: state_epoch(run) >= 1, proc, "epoch 1 to be committed")
        else:
            wait_until(lambda: resumes(run) >= 1, proc, "the resume to start")
        committed = state_epoch(run)
        temp = new_temp(folder, proc, set(os.listdir(folder)))
        time.sleep(delay)
        assert proc.kill() == -signal.SIGKILL
        if delay == 0.0:
            assert (folder / temp).exists(), "the kill did not land inside the write"
        state = assert_committed_and_loadable(run)
        assert state["epoch"] == committed  # the half-written epoch was never committed
        result = cli("evaluate", run, "--checkpoint", "last", "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["checkpoint"] == "last"
        if kill + 1 < len(delays):
            proc = Proc("train", "--resume", run)
    result = cli("train", "--resume", run)
    assert result.exit_code == 0, result.output
    assert_same_as_baseline(run, baseline)


def test_sigkill_after_early_stopping_while_model_keras_is_written(workdir, tmp_path, cli):
    """Early stopping ended training; a kill while the run is finished must not add an epoch."""
    run = tmp_path / "run"
    proc = Proc("train", workdir / "rel.yaml", "--run-dir", run, "--set",
                "training.early_stopping={monitor: val_loss, patience: 1}")
    new_temp(run, proc, set(), prefix=".model.")
    assert proc.kill() == -signal.SIGKILL
    state = assert_committed_and_loadable(run)
    stopped = state["epoch"]
    assert 1 < stopped < EPOCHS, "early stopping did not stop the run early"
    assert state["last_sha256"] == sha256(run / "checkpoints" / "last.keras")
    final = load_weights(run / "checkpoints" / "last.keras")
    result = cli("train", "--resume", run)
    assert result.exit_code == 0, result.output
    info = json.loads((run / "run.json").read_text())
    assert (info["status"], info["epochs_completed"]) == ("completed", stopped)
    assert history_epochs(run) == list(range(1, stopped + 1))
    assert max_weight_diff(load_weights(run / "model.keras"), final) <= TOL


# --- 3. SIGINT, SIGTERM, two SIGINTs -------------------------------------------------------------

def test_sigterm_finishes_the_batch_marks_interrupted_and_resume_matches(interrupted, baseline,
                                                                         tmp_path, cli):
    src = interrupted
    assert src.returncode == 130, src.stderr
    assert src.epochs >= 2
    assert (f"Error: interrupted after {src.epochs} complete epoch(s); checkpoints/last.keras holds "
            f"the last complete epoch. Continue with: dlmine train --resume {src.run}\n") in src.stderr
    info = json.loads((src.run / "run.json").read_text())
    assert info["status"] == "interrupted" and info["epochs_completed"] == src.epochs
    assert history_epochs(src.run) == list(range(1, src.epochs + 1))  # the partial epoch is dropped
    state = json.loads((src.run / "training_state.json").read_text())
    assert state["last_sha256"] == sha256(src.run / "checkpoints" / "last.keras")
    assert load_weights(src.run / "checkpoints" / "last.keras")
    assert not (src.run / ".lock").exists() and not (src.run / "model.keras").exists()
    run = copy_run(src.run, tmp_path / "run")
    result = cli("train", "--resume", run)
    assert result.exit_code == 0, result.output
    assert f"epoch {src.epochs + 1}/{EPOCHS} - " in result.stderr
    assert f"epoch {src.epochs}/{EPOCHS} - " not in result.stderr
    assert_same_as_baseline(run, baseline)
    resumed = json.loads((run / "run.json").read_text())
    assert info["error"].startswith("interrupted after")
    assert resumed["status"] == "completed" and "error" not in resumed  # only an unfinished run has it


@pytest.mark.parametrize("gap", [None, 0.002], ids=["one-sigint", "two-sigints"])
def test_sigint_stops_with_130_and_resume_matches(workdir, baseline, tmp_path, cli, gap):
    run = tmp_path / "run"
    proc = Proc("train", workdir / "rel.yaml", "--run-dir", run)
    wait_until(lambda: state_epoch(run) >= 1, proc, "epoch 1 to be committed")
    time.sleep(0.2)  # inside epoch 2
    proc.signal(signal.SIGINT)
    if gap is not None:
        time.sleep(gap)
        proc.signal(signal.SIGINT)
    assert proc.wait() == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted", info
    state = json.loads((run / "training_state.json").read_text())
    assert info["epochs_completed"] == state["epoch"] >= 1
    assert history_epochs(run) == list(range(1, state["epoch"] + 1))
    assert state["last_sha256"] == sha256(run / "checkpoints" / "last.keras")
    assert load_weights(run / "checkpoints" / "last.keras")
    assert not (run / ".lock").exists()
    result = cli("train", "--resume", run)
    assert result.exit_code == 0, result.output
    assert_same_as_baseline(run, baseline)


# --- 4. resume of a completed run, and with a changed config -----------------------------------------

def test_resume_of_a_completed_run_does_nothing(baseline, tmp_path, cli):
    run = copy_run(baseline.run, tmp_path / "run")
    before = snapshot(run)
    result = cli("train", "--resume", run)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{run}\n"
    assert f"{run} is already completed ({EPOCHS} epochs); nothing to do" in (
        result.stderr)
    assert snapshot(run) == before


def test_resume_with_a_changed_config_is_refused_then_forced(interrupted, workdir, tmp_path, cli):
    run = copy_run(interrupted.run, tmp_path / "run")
    before = snapshot(run)
    result = cli("train", "--resume", run, "--set", "training.epochs=8")
    assert result.exit_code == 2
    assert result.stderr == ("Error: the config differs from the one this run was trained with; "
                             "resume with --force to accept:\n  training.epochs: 6 -> 8\n")
    other = write_config(workdir, CONFIG.replace("batch_size: 8", "batch_size: 16"), "other.yaml")
    result = cli("train", "--resume", run, other)
    assert result.exit_code == 2
    assert result.stderr.endswith(":\n  training.batch_size: 8 -> 16\n")
    assert snapshot(run) == before
    result = cli("train", "--resume", run, "--set", "training.epochs=8", "--force")
    assert result.exit_code == 0, result.output
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "completed" and info["epochs_completed"] == 8
    assert [(r["from_epoch"], r["config_changes"]) for r in info["resumed"]] == [
        (interrupted.epochs, ["training.epochs: 6 -> 8"])]
    assert history_epochs(run) == list(range(1, 9))
    assert yaml.safe_load((run / "config.yaml").read_text())["training"]["epochs"] == 8
    result = cli("train", "--resume", run)  # the recorded config is now the 8-epoch one
    assert result.exit_code == 0
    assert "is already completed (8 epochs); nothing to do" in result.stderr


# --- 5. two processes, one run directory ---------------------------------------------------------------

def test_second_process_is_refused_and_a_dead_owners_lock_is_taken_over(workdir, baseline, tmp_path,
                                                                          cli):
    run = tmp_path / "run"
    proc = Proc("train", workdir / "rel.yaml", "--run-dir", run)
    try:
        wait_until(lambda: state_epoch(run) >= 1, proc, "epoch 1 to be committed")
        proc.signal(signal.SIGSTOP)  # alive but frozen: the refusal cannot race its end
        assert (run / ".lock").read_text().strip() == f"{proc.pid} {socket.gethostname()}"
        before = snapshot(run)
        result = cli("train", "--resume", run)
        assert result.exit_code == 2, result.output
        assert result.stderr == (f"Error: {run} is in use by another dlmine process (pid {proc.pid} on "
                                 f"{socket.gethostname()}); "
                                 "wait for it, or stop it\n")
        assert snapshot(run) == before  # nothing written: no 'resumed', no status change
    finally:
        proc.kill()
    # the dead owner's lock stays
    assert (run / ".lock").read_text().strip() == f"{proc.pid} {socket.gethostname()}"
    result = cli("train", "--resume", run)
    assert result.exit_code == 0, result.output
    assert_same_as_baseline(run, baseline)


def test_resume_before_the_first_epoch_of_a_live_training_is_refused_as_in_use(workdir, tmp_path,
                                                                                cli):
    """A second process must hear 'in use', not 'nothing to resume; start a new run'."""
    run = tmp_path / "run"
    proc = Proc("train", workdir / "rel.yaml", "--run-dir", run)
    try:
        wait_until(lambda: (run / ".lock").exists(), proc, "the lock to be taken", interval=0.001)
        proc.signal(signal.SIGSTOP)
        assert not (run / "training_state.json").exists()
        before = snapshot(run)
        result = cli("train", "--resume", run)
        assert result.stderr == (f"Error: {run} is in use by another dlmine process (pid {proc.pid} on "
                                 f"{socket.gethostname()}); "
                                 "wait for it, or stop it\n")
        assert result.exit_code == 2
        assert snapshot(run) == before
    finally:
        proc.kill()


# --- 6. damaged files -----------------------------------------------------------------------------------

def test_truncated_last_keras_resumes_from_previous_keras(interrupted, baseline, tmp_path, cli):
    run = copy_run(interrupted.run, tmp_path / "run")
    last = run / "checkpoints" / "last.keras"
    last.write_bytes(last.read_bytes()[:4096])
    result = cli("train", "--resume", run)
    assert result.exit_code == 0, result.output
    k = interrupted.epochs
    assert (f"Warning: checkpoints/last.keras does not match training_state.json (epoch {k}): "
                  "damaged or written after it") in result.stderr
    assert f"resuming from previous.keras (epoch {k - 1}) instead" in result.stderr
    assert f"epoch {k}/{EPOCHS} - " in result.stderr  # the lost epoch is trained again
    assert_same_as_baseline(run, baseline)


def test_damaged_last_keras_without_a_previous_one_is_a_clear_error(interrupted, tmp_path, cli):
    run = copy_run(interrupted.run, tmp_path / "run")
    (run / "checkpoints" / "previous.keras").unlink()
    (run / "training_state.previous.json").unlink()
    (run / "checkpoints" / "last.keras").write_bytes(b"garbage" * 100)
    before = snapshot(run)
    result = cli("train", "--resume", run)
    assert result.exit_code == 1
    assert result.stderr == (f"Error: cannot resume {run}: no checkpoint matches a committed "
                             "training state (checkpoints/last.keras does not match "
                             f"training_state.json (epoch {interrupted.epochs}): damaged or written "
                             "after it)\n")
    assert snapshot(run) == before


def test_damaged_training_state_resumes_from_the_previous_state(interrupted, baseline, tmp_path, cli):
    run = copy_run(interrupted.run, tmp_path / "run")
    (run / "training_state.json").write_text('{"epoch": 2, "last_sha')
    result = cli("train", "--resume", run)
    assert result.exit_code == 0, result.output
    assert f"Warning: {run}/training_state.json is damaged" in result.stderr
    assert f"resuming from previous.keras (epoch {interrupted.epochs - 1}) instead" in (
        result.stderr)
    assert_same_as_baseline(run, baseline)


def test_evaluate_falls_back_to_last_when_best_keras_is_garbage(baseline, tmp_path, cli):
    run = copy_run(baseline.run, tmp_path / "run")
    (run / "checkpoints" / "best.keras").write_bytes(os.urandom(5000))
    before = snapshot(run, skip=("eval.json",))
    result = cli("evaluate", run, "--json")
    assert result.exit_code == 0, result.output
    assert (f"Warning: {run}/checkpoints/best.keras {NOT_KERAS}; evaluating the last "
                  "checkpoint instead") in result.stderr
    report = json.loads((run / "eval.json").read_text())
    assert (report["checkpoint"], report["fallback_from"]) == ("last", "best")
    assert json.loads(result.stdout) == report
    assert snapshot(run, skip=("eval.json",)) == before


# --- 7. full disk, unwritable places ---------------------------------------------------------------------

@pytest.mark.parametrize("where", ["runs-root", "run-dir"])
def test_run_directory_under_a_regular_file_is_a_clear_error(workdir, tmp_path, cli, where):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("precious\n")
    if where == "run-dir":
        result = cli("train", workdir / "rel.yaml", "--run-dir", blocker / "run")
    else:
        result = cli("train", workdir / "rel.yaml", "--runs-root", blocker / "runs")
    assert result.exit_code in (1, 2), result.output
    assert result.stderr.startswith("Error: ") and str(blocker) in result.stderr, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert blocker.read_text() == "precious\n"


class FullDisk:
    """Stands in for `os` in dlmine.rundir: the disk fills up at the `nth` write of `target`."""

    def __init__(self, target: str, nth: int):
        self.target, self.nth, self.seen, self.full = target, nth, 0, False
        self.failed: Path | None = None
        self.previous: bytes | None = None

    def __getattr__(self, name):
        return getattr(os, name)

    def replace(self, src, dst):
        dst = Path(dst)
        if not self.full and dst.name == self.target:
            self.seen += 1
            if self.seen == self.nth:
                self.full, self.failed = True, dst
                self.previous = dst.read_bytes() if dst.exists() else None
        if self.full:
            raise OSError(28, "No space left on device")
        return os.replace(src, dst)


@pytest.mark.parametrize("target", ["history.csv", "last.keras", "training_state.json"])
def test_disk_full_is_a_clear_error_and_nothing_is_lost(workdir, baseline, tmp_path, cli, monkeypatch,
                                                       target):
    import dlmine.rundir

    run = tmp_path / "run"
    disk = FullDisk(target, nth=2)  # in epoch 2, after epoch 1 was committed
    monkeypatch.setattr(dlmine.rundir, "os", disk)
    result = cli("train", workdir / "rel.yaml", "--run-dir", run)
    monkeypatch.undo()  # space is freed
    assert result.exit_code == 1, result.output
    assert disk.failed is not None and disk.failed.name == target
    assert (f"Error: cannot write {disk.failed}: No space left on device; the previous version of "
            "the file, if any, is intact\n") in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert disk.failed.read_bytes() == disk.previous
    assert not list(run.rglob(f".{target.split('.')[0]}.*")), "a temporary file was left behind"
    assert json.loads((run / "run.json").read_text())["status"] == "running"  # could not be marked
    assert not (run / ".lock").exists()
    state = assert_committed_and_loadable(run)
    assert state["epoch"] == 1
    result = cli("train", "--resume", run)
    assert result.exit_code == 0, result.output
    assert_same_as_baseline(run, baseline)


# --- 8. the hostile and broken corpus ----------------------------------------------------------------

@dataclass
class Ctx:
    """What a corpus case may use: its folder, the marker its payload would create, the runs."""

    folder: Path
    marker: Path
    baseline: Baseline
    interrupted: Interrupted
    guarded: list = field(default_factory=list)  # folders whose files must not change
    outside: Path | None = None  # a path that must not be created

    def config(self, text: str) -> Path:
        return write_config(self.folder, text.replace("MARKER", str(self.marker)), "cfg.yaml")

    def completed(self) -> Path:
        run = copy_run(self.baseline.run, self.folder / "run")
        self.guarded.append(run)
        return run

    def stopped(self) -> Path:
        run = copy_run(self.interrupted.run, self.folder / "run")
        self.guarded.append(run)
        return run


@dataclass
class Case:
    id: str
    build: Callable[[Ctx], list]  # -> the arguments of the dlmine command
    code: int
    expect: Callable[[Ctx], str]  # -> the exact stderr, or a part of it (see `match`)
    match: str = "exact"  # or "part"
    new_run: bool = False  # a `train` that must create no run directory
    evaluated: str | None = None  # `evaluate` succeeds: the checkpoint eval.json names


def problem(line: str) -> Callable[[Ctx], str]:
    return lambda ctx: f"{ONE_PROBLEM}  {line.replace('MARKER', str(ctx.marker))}\n"


def swap(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def cfg_case(id_: str, text: str, line: str, *extra: str, code: int = 2) -> Case:
    def build(ctx):
        args = [a.replace("MARKER", str(ctx.marker)) for a in extra]
        return ["train", ctx.config(text), *args, "--run-dir", ctx.folder / "new"]
    return Case(id_, build, code, problem(line), new_run=True)


def laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def tagged(tag: str, line: int = 1) -> str:
    return f"cfg.yaml:{line}: name: the tag '{tag}' {TAG_REFUSED}"


PY = "tag:yaml.org,2002:python/"
DENSE = "    - Dense: {units: 256, activation: relu}\n"


def lambda_activation(marker: Path) -> str:
    """An `activation` that is a marshalled Python lambda running `touch MARKER` when called."""
    from keras.src.utils import python_utils

    payload = eval(f'lambda x: (__import__("os").system("touch {marker}"), x)[1]')  # noqa: S307
    code, _, _ = python_utils.func_dump(payload)
    return "{class_name: __lambda__, config: {value: [" + json.dumps(code) + ", null, null]}}"


class Reducer:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickled_npz(ctx: Ctx, key: str) -> list:
    make_npz(ctx.folder / "rel.npz", 40, 10)
    with np.load(ctx.folder / "rel.npz") as npz:
        arrays = dict(npz)
    arrays[key] = np.array([Reducer(ctx.marker)] * len(arrays[key]), dtype=object)
    np.savez(ctx.folder / "rel.npz", **arrays)
    return ["train", ctx.config(CONFIG), "--run-dir", ctx.folder / "new"]


def truncated_npz(ctx: Ctx) -> list:
    path = make_npz(ctx.folder / "rel.npz", 40, 10)
    path.write_bytes(path.read_bytes()[:3000])
    return ["train", ctx.config(CONFIG), "--run-dir", ctx.folder / "new"]


def etc_passwd(ctx: Ctx) -> list:
    rel = os.path.relpath("/etc/passwd", ctx.folder)
    assert rel.startswith("../")
    return ["train", ctx.config(swap(CONFIG, "path: rel.npz", f"path: {rel}")), "--run-dir",
            ctx.folder / "new"]


def escaping_name(name: str) -> Callable[[Ctx], list]:
    def build(ctx):
        ctx.outside = Path(ctx.folder / "runs" / name).resolve()
        make_npz(ctx.folder / "rel.npz", 40, 10)
        return ["train", ctx.config(swap(CONFIG, "name: rel", f"name: {name}")), "--runs-root",
                ctx.folder / "runs"]
    return build


def existing_symlink_run_dir(ctx: Ctx) -> list:
    target = ctx.folder / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("keep\n")
    ctx.guarded.append(target)
    (ctx.folder / "link").symlink_to(target, target_is_directory=True)
    make_npz(ctx.folder / "rel.npz", 40, 10)
    return ["train", ctx.config(CONFIG), "--run-dir", ctx.folder / "link"]


def lambda_model(ctx: Ctx, path: Path) -> None:
    """A model of the run's shapes whose Lambda layer runs `touch MARKER` when called."""
    import keras

    function = eval(f'lambda t: (__import__("os").system("touch {ctx.marker}"), t)[1]')  # noqa: S307
    inputs = keras.Input(shape=(8, 8))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(function)(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(path)
    ctx.marker.unlink()  # building it called the function once; loading must not


def lambda_best(ctx: Ctx) -> list:
    run = ctx.completed()
    ctx.guarded.remove(run)
    lambda_model(ctx, run / "checkpoints" / "best.keras")
    ctx.guarded.append(run)
    return ["evaluate", run]


def lambda_last_with_matching_state(ctx: Ctx) -> list:
    run = ctx.stopped()
    ctx.guarded.remove(run)
    last = run / "checkpoints" / "last.keras"
    lambda_model(ctx, last)
    for name in ("training_state.json", "training_state.previous.json"):
        state = json.loads((run / name).read_text())
        state["last_sha256"] = sha256(last)
        (run / name).write_text(json.dumps(state))
    ctx.guarded.append(run)
    return ["train", "--resume", run]


def lambda_model_keras(ctx: Ctx) -> list:
    """model.keras is the final model for users; dlmine itself never loads it."""
    run = ctx.completed()
    ctx.guarded.remove(run)
    lambda_model(ctx, run / "model.keras")
    ctx.guarded.append(run)
    return ["evaluate", run]


def custom_module_best(ctx: Ctx) -> list:
    """best.keras whose config names `os.system` as a layer class (module: os)."""
    run = ctx.completed()
    best = run / "checkpoints" / "best.keras"
    with zipfile.ZipFile(best) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"][1].update(module="os", class_name="system",
                                         config={"command": f"touch {ctx.marker}"})
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(best, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    ctx.guarded.remove(run)
    ctx.guarded.append(run / "checkpoints")
    return ["evaluate", run, "--json"]


def h5_model(ctx: Ctx, *names: str) -> Path:
    import keras

    run = ctx.completed()
    model = keras.saving.load_model(run / "checkpoints" / "last.keras")
    model.save(ctx.folder / "model.h5")
    for name in names:
        shutil.copyfile(ctx.folder / "model.h5", run / "checkpoints" / name)
    ctx.guarded.remove(run)
    ctx.guarded.append(run / "checkpoints")
    return run


def symlinked_best(ctx: Ctx) -> list:
    run = ctx.completed()
    best = run / "checkpoints" / "best.keras"
    shutil.copyfile(best, ctx.folder / "outside.keras")
    best.unlink()
    best.symlink_to(ctx.folder / "outside.keras")
    return ["evaluate", run]


def symlinked_log(ctx: Ctx) -> list:
    run = ctx.stopped()
    victims = ctx.folder / "victims"
    victims.mkdir()
    (victims / "victim.txt").write_text("precious\n")
    ctx.guarded.append(victims)
    (run / "train.log").unlink()
    (run / "train.log").symlink_to(victims / "victim.txt")
    return ["train", "--resume", run]


def damaged(name: str, data: bytes, command: str) -> Callable[[Ctx], list]:
    def build(ctx):
        run = ctx.stopped() if command == "resume" else ctx.completed()
        if data:
            (run / name).write_bytes(data)
        else:
            (run / name).unlink()
        return ["train", "--resume", run] if command == "resume" else ["evaluate", run]
    return build


def tagged_run_config(ctx: Ctx) -> list:
    run = ctx.completed()
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(swap(text, "name: rel", f'name: !!python/object/apply:os.system '
                                                            f'["touch {ctx.marker}"]'))
    return ["evaluate", run]


def pickled_statistics(ctx: Ctx) -> list:
    run = ctx.completed()
    meta = json.loads((run / "preprocessing.json").read_text())
    meta["statistics"] = "preprocessing.npz"
    (run / "preprocessing.json").write_text(json.dumps(meta))
    payload = np.array([Reducer(ctx.marker)], dtype=object)
    np.savez(run / "preprocessing.npz", mean=payload, std=payload)
    return ["evaluate", run]


def changed_data(ctx: Ctx) -> list:
    """The run's data path now holds other data: a run trained on other.npz, whose file was
    then replaced (run.json records that config, so it is no edit of config.yaml)."""
    run = ctx.stopped()
    ctx.guarded.remove(run)
    make_npz(ctx.folder / "other.npz", 1000)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["dataset"]["path"] = str(ctx.folder / "other.npz")
    text = yaml.safe_dump(config, sort_keys=False)
    (run / "config.yaml").write_text(text)
    info = json.loads((run / "run.json").read_text())
    info.update(config=config, config_sha256=hashlib.sha256(text.encode()).hexdigest())
    (run / "run.json").write_text(json.dumps(info))
    ctx.guarded.append(run)
    return ["train", "--resume", run]


def run_path(ctx: Ctx) -> Path:
    return ctx.folder / "run"


CORPUS = [
    # YAML that would build Python objects: refused before anything is built
    cfg_case("tag-object-apply", swap(CONFIG, "name: rel", 'name: !!python/object/apply:os.system '
                                      '["touch MARKER"]'), tagged(PY + "object/apply:os.system")),
    cfg_case("tag-object-new", swap(CONFIG, "name: rel", 'name: !!python/object/new:os.system '
                                    '["touch MARKER"]'), tagged(PY + "object/new:os.system")),
    cfg_case("tag-name", swap(CONFIG, "name: rel", "name: !!python/name:os.system"),
             tagged(PY + "name:os.system")),
    cfg_case("tag-module", swap(CONFIG, "name: rel", "name: !!python/module:os"),
             tagged(PY + "module:os")),
    cfg_case("tag-subprocess-document", '!!python/object/apply:subprocess.check_call [["touch", '
             '"MARKER"]]\n', f"cfg.yaml:1: the tag '{PY}object/apply:subprocess.check_call' "
             f"{TAG_REFUSED}"),
    cfg_case("tag-verbatim", swap(CONFIG, "name: rel", f'name: !<{PY}object/apply:os.system> '
                                  '["touch MARKER"]'), tagged(PY + "object/apply:os.system")),
    cfg_case("tag-directive", "%TAG !p! " + PY + "\n---\n" + swap(
        CONFIG, "name: rel", 'name: !p!object/apply:os.system ["touch MARKER"]'),
        tagged(PY + "object/apply:os.system", line=3)),
    cfg_case("tag-in-layer-argument", swap(CONFIG, DENSE, "    - Dense: {units: !!python/object/apply:"
                                           'os.system ["touch MARKER"]}\n'),
             f"cfg.yaml:10: model.layers[1].Dense.units: the tag '{PY}object/apply:os.system' "
             f"{TAG_REFUSED}"),
    cfg_case("tag-on-a-mapping-key", swap(CONFIG, "seed: 3\n", "seed: 3\n!!python/object/apply:"
                                          "os.system key: 1\n"),
             f"cfg.yaml:3: the tag '{PY}object/apply:os.system' {TAG_REFUSED}"),
    cfg_case("tag-in-set", CONFIG, f"--set training.epochs=!!python/object/apply:os.system "  # cut
             f'["touch /...: training.epochs: the tag \'{PY}object/apply:os.system\' {TAG_REFUSED}',
             "--set", 'training.epochs=!!python/object/apply:os.system ["touch MARKER"]'),
    # documents too big to read
    cfg_case("alias-bomb", laughs(9) + CONFIG, "cfg.yaml:1: the YAML expands to more than 100000 nodes "
             "through anchors and aliases; refused (a billion-laughs document?)"),
    cfg_case("nesting-beyond-64", swap(CONFIG, "seed: 3", "seed: " + "[" * 80 + "]" * 80),
             "cfg.yaml:2: seed" + "[0]" * 64 + ": nested deeper than 64 levels; refused"),
    cfg_case("nesting-beyond-python", "[" * 5000 + "]" * 5000 + "\n", "cfg.yaml:1: the YAML nests "
             "deeper than Python can parse; a dlmine config nests a few levels"),
    cfg_case("huge-file", CONFIG + ("# " + "x" * 1000 + "\n") * 1100, "cfg.yaml:1: the file is larger "
             "than 1048576 bytes; a dlmine config is a few hundred lines"),
    # configs that name code
    cfg_case("lambda-layer", swap(CONFIG, DENSE, '    - Lambda: {function: "lambda x: x"}\n'),
             "cfg.yaml:10: model.layers[1].Lambda: 'Lambda' is not allowed: it runs code named in "
             "the config, which dlmine never does; use built-in layers"),
    cfg_case("lambda-inside-time-distributed", swap(CONFIG, DENSE, "    - TimeDistributed: {layer: "
                                                    "Lambda}\n"),
             "cfg.yaml:10: model.layers[1].TimeDistributed.layer.Lambda: 'Lambda' is not allowed: "
             "it runs code named in the config, which dlmine never does; use built-in layers"),
    cfg_case("tfsm-layer", swap(CONFIG, DENSE, "    - TFSMLayer: {filepath: /tmp/x}\n"),
             "cfg.yaml:10: model.layers[1].TFSMLayer: 'TFSMLayer' is not allowed: it runs code named "
             "in the config, which dlmine never does; use built-in layers"),
    cfg_case("regularizer-module-os-system", swap(CONFIG, DENSE, "    - Dense: {units: 256, "
                                                  "kernel_regularizer: {module: os, class_name: "
                                                  "system, config: {}}}\n"),
             f"cfg.yaml:10: model.layers[1].Dense.kernel_regularizer: {CARRIES_CODE}"),
    cfg_case("initializer-registered-name", swap(CONFIG, DENSE, "    - Dense: {units: 256, "
                                                 "kernel_initializer: {class_name: GlorotUniform, "
                                                 "registered_name: 'os>system', config: {}}}\n"),
             f"cfg.yaml:10: model.layers[1].Dense.kernel_initializer: {CARRIES_CODE}"),
    cfg_case("activation-python-path", swap(CONFIG, "activation: relu}\n    - Dropout",
                                            "activation: os.system}\n    - Dropout"),
             "cfg.yaml:10: model.layers[1].Dense.activation: unknown activation 'os.system'"),
    cfg_case("loss-python-path", swap(CONFIG, "  batch_size: 8\n", "  batch_size: 8\n  loss: "
                                      "os.system\n"),
             "cfg.yaml:17: training.loss: unknown loss 'os.system'"),
    cfg_case("name-dot-dot-escape", swap(CONFIG, "name: rel", "name: ../escape"),
             f"cfg.yaml:1: name: {PLAIN_NAME}, received '../escape' (string)"),
    cfg_case("name-absolute", swap(CONFIG, "name: rel", "name: /abs"),
             f"cfg.yaml:1: name: {PLAIN_NAME}, received '/abs' (string)"),
    cfg_case("name-escape-in-set", CONFIG, f"--set name=../../escape: name: {PLAIN_NAME}, received "
             "'../../escape' (string)", "--set", "name=../../escape"),
    Case("activation-marshalled-lambda",
         lambda ctx: ["train", ctx.config(swap(CONFIG, "activation: relu}\n    - Dropout",
                                               f"activation: {lambda_activation(ctx.marker)}}}\n"
                                               "    - Dropout")),
                      "--run-dir", ctx.folder / "new"],
         2, lambda ctx: "was refused by Keras: Requested the deserialization of a Python lambda",
         match="part", new_run=True),
    Case("optimizer-argument-module",
         lambda ctx: ["train", ctx.config(swap(CONFIG, "  batch_size: 8\n", "  batch_size: 8\n  "
                                               "optimizer: {name: adam, learning_rate: {module: os, "
                                               "class_name: system, config: {}}}\n")),
                      "--run-dir", ctx.folder / "new"],
         2, lambda ctx: "training.optimizer.learning_rate: ", match="part", new_run=True),
    Case("name-escape-writes-nothing-outside", escaping_name("../escape"), 2,
         lambda ctx: f"cfg.yaml:1: name: {PLAIN_NAME}, received '../escape' (string)", match="part"),
    # data files
    Case("dataset-path-etc-passwd", etc_passwd, 1,
         lambda ctx: "Error: /etc/passwd: not a readable .npz file (File is not a zip file)\n",
         new_run=True),
    Case("npz-pickled-inputs", lambda ctx: pickled_npz(ctx, "x_train"), 1,
         lambda ctx: f"Error: {ctx.folder / 'rel.npz'}: holds Python objects (pickled arrays), which "
                     "dlmine does not load; save plain numeric arrays", match="part", new_run=True),
    Case("npz-pickled-labels", lambda ctx: pickled_npz(ctx, "y_train"), 1,
         lambda ctx: f"Error: {ctx.folder / 'rel.npz'}: holds Python objects (pickled arrays), which "
                     "dlmine does not load; save plain numeric arrays", match="part", new_run=True),
    Case("npz-truncated", truncated_npz, 1,
         lambda ctx: f"Error: {ctx.folder / 'rel.npz'}: not a readable .npz file", match="part",
         new_run=True),
    # run directories and model files
    Case("run-dir-is-an-existing-symlink", existing_symlink_run_dir, 2,
         lambda ctx: f"Error: run directory {ctx.folder / 'link'} already exists; dlmine never "
                     "overwrites a run. Choose another --run-dir\n"),
    Case("best-keras-carries-a-lambda", lambda_best, 1,
         lambda ctx: f"Error: {run_path(ctx)}/checkpoints/best.keras {REFUSED_MODEL}\n"),
    Case("model-keras-carries-a-lambda", lambda_model_keras, 0, lambda ctx: "", evaluated="best"),
    Case("last-keras-carries-a-lambda-with-matching-state", lambda_last_with_matching_state, 1,
         lambda ctx: f"Error: {run_path(ctx)}/checkpoints/last.keras {REFUSED_MODEL}\n"),
    Case("best-keras-names-os-system", custom_module_best, 0,
         lambda ctx: (f"Warning: {run_path(ctx)}/checkpoints/best.keras is damaged and cannot "
                            "be loaded:"), match="part", evaluated="last"),
    Case("h5-in-place-of-best-keras", lambda ctx: ["evaluate", h5_model(ctx, "best.keras")], 0,
         lambda ctx: (f"Warning: {run_path(ctx)}/checkpoints/best.keras {NOT_KERAS}; "
                            "evaluating the last checkpoint instead"), match="part",
         evaluated="last"),
    Case("h5-in-place-of-both-checkpoints",
         lambda ctx: ["evaluate", h5_model(ctx, "best.keras", "last.keras")], 1,
         lambda ctx: f"Error: {run_path(ctx)}/checkpoints/best.keras {NOT_KERAS}\n"),
    Case("symlinked-checkpoint", symlinked_best, 2,
         lambda ctx: f"Error: {run_path(ctx)}/checkpoints/best.keras {LINK_REFUSED}\n"),
    Case("symlinked-train-log-on-resume", symlinked_log, 2,
         lambda ctx: f"Error: {run_path(ctx)}/train.log {LINK_REFUSED}\n"),
    Case("preprocessing-json-corrupted", damaged("preprocessing.json", b'{"config": {', "evaluate"), 1,
         lambda ctx: f"Error: {run_path(ctx)}/preprocessing.json: damaged preprocessing state (",
         match="part"),
    Case("preprocessing-statistics-pickled", pickled_statistics, 1,
         lambda ctx: f"Error: {run_path(ctx)}/preprocessing.json: damaged preprocessing state (",
         match="part"),
    Case("run-json-missing-on-resume", damaged("run.json", b"", "resume"), 1,
         lambda ctx: f"Error: {run_path(ctx)}/run.json is missing\n"),
    Case("run-json-missing-on-evaluate", damaged("run.json", b"", "evaluate"), 0,
         lambda ctx: f"Warning: {run_path(ctx)}/run.json is missing; config.yaml cannot be checked "
                     "against its config_sha256\n", evaluated="best"),
    Case("run-json-garbage-on-resume", damaged("run.json", b"\x00\xff{", "resume"), 1,
         lambda ctx: f"Error: {run_path(ctx)}/run.json is damaged: ", match="part"),
    Case("history-csv-garbage-on-resume", damaged("history.csv", b"garbage,,\n\x01\x02\n", "resume"), 1,
         lambda ctx: f"{run_path(ctx)}/history.csv", match="part"),
    Case("history-csv-missing-on-resume", damaged("history.csv", b"", "resume"), 1,
         lambda ctx: f"{run_path(ctx)}/history.csv", match="part"),
    Case("data-changed-since-training-on-resume", changed_data, 2,
         lambda ctx: "Error: the data differ from those this run was trained on (the fingerprint in "
                     "run.json does not match); resume with --force to accept\n"),
    Case("run-config-with-python-tag", tagged_run_config, 2,
         lambda ctx: f"the tag '{PY}object/apply:os.system' {TAG_REFUSED}", match="part"),
]


def test_corpus_is_large():
    assert len(CORPUS) >= 25
    assert len({case.id for case in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.id)
def test_hostile_input_has_its_exact_outcome(case, baseline, interrupted, tmp_path, cli, monkeypatch):
    ctx = Ctx(tmp_path, tmp_path / "PWNED", baseline, interrupted)
    monkeypatch.chdir(tmp_path)  # messages name `cfg.yaml`
    args = case.build(ctx)
    before = {folder: snapshot(folder, skip=("eval.json",)) for folder in ctx.guarded}
    outside_before = ctx.outside.exists() if ctx.outside else False
    result = cli(*args)
    expected = case.expect(ctx)
    if case.match == "exact":
        assert result.stderr == expected
    else:
        assert expected in result.stderr, result.stderr
    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.output and "internal error" not in result.stderr
    assert not ctx.marker.exists(), "the payload ran"
    for folder, files in before.items():
        assert snapshot(folder, skip=("eval.json",)) == files, f"{folder} changed"
    if case.new_run:
        assert not (tmp_path / "new").exists()
    if ctx.outside is not None:
        assert ctx.outside.exists() == outside_before
    if case.evaluated:
        report = json.loads((run_path(ctx) / "eval.json").read_text())
        assert report["checkpoint"] == case.evaluated
        assert report.get("fallback_from") == ("best" if case.evaluated == "last" else None)
        assert report["metrics"].keys() == ctx.baseline.eval["metrics"].keys()
        if case.evaluated == "best":
            assert report["metrics"] == pytest.approx(ctx.baseline.eval["metrics"], abs=TOL)


def test_an_interrupted_cross_validation_resumes_to_the_uninterrupted_result(tmp_path, cli):
    """Fold 1 done, fold 2 stopped in its fourth epoch, fold 3 never begun: `--resume PARENT`
    keeps fold 1, continues fold 2 on its own fold and trains fold 3, to the same histories
    and metrics as a cross-validation never stopped; the fold alone cannot be resumed (its
    config would rebuild the usual validation split, not its fold)."""
    make_npz(tmp_path / "rel.npz", n_train=240, n_test=60)
    config = write_config(tmp_path, CONFIG.replace("epochs: 6", "epochs: 8"), "cv.yaml")
    reference = dlmine("train", config, "--folds", 3, "--run-dir", tmp_path / "ref", "--quiet")
    assert reference.returncode == 0, reference.stderr
    run = tmp_path / "cv"
    proc = Proc("train", config, "--folds", 3, "--run-dir", run)
    wait_until(lambda: len(history(run / "fold-2")) >= 3 if (run / "fold-2" / "history.csv")
               .is_file() else False, proc, "fold 2's third epoch")
    proc.signal(signal.SIGINT)
    assert proc.wait() == 130, proc.stderr
    assert read_json(run / "run.json")["status"] == "interrupted"
    assert f"Continue with: dlmine train --resume {run}\n" in proc.stderr
    alone = cli("train", "--resume", run / "fold-2")
    assert (alone.exit_code, alone.stderr) == (2, (
        f"Error: {run / 'fold-2'} is fold-2 of the cross-validation in {run}; resume that (its "
        f"other folds too): dlmine train --resume {run}\n"))
    resumed = dlmine("train", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    assert read_json(run / "run.json")["status"] == "completed"
    assert read_json(run / "eval.json")["per_fold"] == read_json(tmp_path / "ref" / "eval.json")[
        "per_fold"]
    for k in (1, 2, 3):
        assert history(run / f"fold-{k}") == history(tmp_path / "ref" / f"fold-{k}")
