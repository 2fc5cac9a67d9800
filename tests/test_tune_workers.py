"""Several `dlmine tune` workers on one study in a real PostgreSQL server: a worker killed
mid-trial is failed by the others after its heartbeat stops, no trial is counted twice or
lost, one worker writes best.yaml, and a second wave continues the study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dlmine.config import load_config
from tests.conftest import ROOT, TINY_CONFIG, write_config
from tests.postgres_server import throwaway_server

CONFIG = TINY_CONFIG + """\
tune:
  metric: val_loss
  trials: 4
  pruner: none
  space:
    model.layers[1].Dense.units: {choice: [4, 8]}
    training.optimizer.learning_rate: {loguniform: [1.0e-3, 1.0e-1]}
"""
HEARTBEAT_S = 4


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of its own (not skipped when missing: `make postgres` installs it)."""
    with throwaway_server() as url:
        yield url


def _tune(*args, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "dlmine", "tune", *map(str, args)], cwd=cwd,
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _read_until(proc: subprocess.Popen, text: str) -> str:
    """Read `proc`'s stderr up to the first line containing `text`; what was read."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} never came:\n" + "".join(seen))


def _run_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_three_workers_one_killed_mid_trial_then_a_second_wave(tmp_path, tiny_npz, postgres):
    cfg = write_config(tmp_path, CONFIG)
    shared = ("--storage", postgres, "--heartbeat-timeout", HEARTBEAT_S)
    # a's trials train 1000 epochs: it is surely in its first one when b and c have begun
    doomed = _tune(cfg, "--study-dir", "a", "--set", "training.epochs=1000", *shared, cwd=tmp_path)
    _read_until(doomed, ": epoch 1/1000")
    others = [_tune(cfg, "--study-dir", name, *shared, cwd=tmp_path) for name in ("b", "c")]
    early = _read_until(others[0], "trial ")  # b's first trial has begun: three workers at work
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    [killed] = list((tmp_path / "a").glob("trial-*"))
    assert _run_json(killed)["status"] == "running"  # it died in the middle of the trial
    ends = [proc.communicate(timeout=300) for proc in others]
    for proc, (_, err) in zip(others, ends, strict=True):
        assert proc.returncode == 0, err
    ends[0] = (ends[0][0], early + ends[0][1])

    study = optuna.load_study(study_name="tiny", storage=postgres)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4  # tune.trials: the study's, every worker's together
    number = int(killed.name.split("-")[1])
    assert study.trials[number].state == TrialState.FAIL
    assert all(t.user_attrs.get("surplus") for t in study.trials
               if t.state == TrialState.FAIL and t.number != number)
    # each complete trial is one completed run, in the directory of the worker that ran it
    runs = sorted(p.name for p in tmp_path.glob("[bc]/trial-*"))
    assert runs == sorted(f"trial-{t.number:04d}" for t in complete)
    for trial in complete:
        run = Path(trial.user_attrs["run_dir"])
        assert _run_json(run)["status"] == "completed"
        assert _run_json(run)["tune"] == {"trial": trial.number, "state": "complete",
                                          "value": pytest.approx(trial.value),
                                          "metric": "val_loss", "pruned_after_epoch": None}
    # the dead worker's run, failed by a living one once its heartbeat stopped
    dead = _run_json(killed)
    assert dead["status"] == "interrupted" and dead["tune"] == {"trial": number, "state": "fail"}
    notices = "".join(err for _, err in ends)
    assert notices.count(f"Warning: trial {number} failed: its worker sent no heartbeat for "
                         f"{HEARTBEAT_S} s\n") == 1
    # best.yaml once, by the worker whose trial finished the study
    finisher = [name for name in "bc" if (tmp_path / name / "best.yaml").is_file()]
    assert len(finisher) == 1
    assert load_config(tmp_path / finisher[0] / "best.yaml").config.tune is None
    other = "c" if finisher == ["b"] else "b"
    assert (f"the study is finished; best.yaml is in {tmp_path / finisher[0]}, written by the "
            "worker that finished it\n") in ends["bc".index(other)][1]

    # a second wave, to 5 trials: a new worker; then the dead worker's directory resumed (its
    # 1000-epoch trials would be slow: it comes when the study is done)
    wave = _tune(cfg, "--study-dir", "d", "--trials", 5, *shared, cwd=tmp_path)
    out, err = wave.communicate(timeout=300)
    assert wave.returncode == 0, err
    assert out == "d\n" and (tmp_path / "d" / "best.yaml").is_file()  # it finished the study
    assert len(list((tmp_path / "d").glob("trial-*"))) == 1
    again = _tune("--resume", "a", "--trials", 5, *shared, cwd=tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert out == "a\n" and "resuming a: 0 trial(s) to run" in err
    assert f"the study is finished; best.yaml is in {tmp_path / 'd'}, written by the " in err
    assert not (tmp_path / "a" / "best.yaml").exists()
    study = optuna.load_study(study_name="tiny", storage=postgres)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 5

def test_a_storage_without_its_driver_says_what_to_install():
    from dlmine.errors import DlmineError
    from dlmine.tune.storage import open_storage

    with pytest.raises(DlmineError) as caught:
        open_storage("mysql+pymysql://dlmine:secret@127.0.0.1/studies", HEARTBEAT_S, None)
    assert str(caught.value) == (
        "--storage mysql+pymysql://dlmine:***@127.0.0.1/studies needs the mysql driver 'pymysql', "
        "which is not installed: install the Python package of SQLAlchemy's 'pymysql' driver")
