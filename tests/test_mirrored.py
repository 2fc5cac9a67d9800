"""`training.distribution: mirrored` on two logical CPU devices, against one device.

Logical devices exist only if they are made before TensorFlow starts, so the mirrored runs
are in a subprocess with `DLMINE_CPU_DEVICES=2`; the one-device run is in-process.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY_CONFIG, write_config

# 48 training samples (validation_split 0.2 of 60): three batches of 16, each split 8 + 8.
# Keras averages the replicas' mean losses, which is the batch's mean loss only when the
# replicas get as many samples each; an uneven last batch differs by about 1e-4.
CONFIG = (TINY_CONFIG.replace("validation_split: 0.25", "validation_split: 0.2")
          + "  mixed_precision: false  # in bfloat16 the sums' order shows at 1e-3\n")
MIRRORED = CONFIG + "  distribution: mirrored\n"
# Measured: the losses of the two runs differ by 1.2e-7 relative (float32 sums in another
# order); 1e-5 leaves room for other CPUs and TensorFlow versions.
TOLERANCE = 1e-5


# Several commands in one process, as `python -m dlmine` runs each: TensorFlow starts once.
COMMANDS = """
import sys
from dlmine.cli import main
for args in sys.argv[1:]:
    sys.argv = ["dlmine", *args.split()]
    code = main(sys.argv[1:], standalone_mode=False)
    if code:
        sys.exit(code)
"""


def run_dlmine(*commands: str, env_extra=None) -> subprocess.CompletedProcess:
    """Run each command line (words split on spaces) in one subprocess."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", COMMANDS, *commands], capture_output=True,
                          text=True, env=env, timeout=300, cwd=ROOT)


def history(run) -> list[dict]:
    with open(run / "history.csv") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def test_mirrored_on_two_cpus_trains_and_resumes_like_one_device(cli, tmp_path, tiny_npz):
    single, mirrored = tmp_path / "single", tmp_path / "mirrored"
    assert cli("train", write_config(tmp_path, CONFIG), "--run-dir", single).exit_code == 0
    cfg = write_config(tmp_path, MIRRORED, "mirrored.yaml")
    result = run_dlmine(f"train {cfg} --run-dir {mirrored} --set training.epochs=1",
                        f"train --resume {mirrored} --force --set training.epochs=2",
                        env_extra={"DLMINE_CPU_DEVICES": "2"})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "I0000" not in result.stderr
    expected, got = history(single), history(mirrored)
    assert [row["epoch"] for row in got] == [1.0, 2.0]
    for want, row in zip(expected, got, strict=True):
        assert row == pytest.approx(want, rel=TOLERANCE), row["epoch"]
    info = json.loads((mirrored / "run.json").read_text())
    assert info["status"] == "completed" and info["replicas"] == 2
    assert [r["replicas"] for r in info["resumed"]] == [2]
    assert json.loads((single / "run.json").read_text())["replicas"] == 1
    log = (mirrored / "train.log").read_text()
    assert "dlmine train on 2 replicas (mirrored): train" in log
    assert "dlmine resume from epoch 1 on 2 replicas (mirrored): train --resume" in log
    assert json.loads((mirrored / "eval.json").read_text())["metrics"]["loss"] == pytest.approx(
        json.loads((single / "eval.json").read_text())["metrics"]["loss"], rel=TOLERANCE)
    # the checkpoints are ordinary: a finished mirrored run evaluates on one device, any backend
    elsewhere = run_dlmine(f"evaluate {mirrored} --quiet", env_extra={"KERAS_BACKEND": "jax"})
    assert elsewhere.returncode == 0, elsewhere.stderr


def test_mirrored_needs_the_tensorflow_backend(tmp_path, tiny_npz):
    cfg = write_config(tmp_path, MIRRORED)
    result = run_dlmine(f"check {cfg}", env_extra={"KERAS_BACKEND": "jax"})
    assert result.returncode == 2
    assert result.stderr == (
        "Error: 1 problem in the config:\n"
        f"  {cfg}:16: training.distribution: mirrored needs the TensorFlow backend "
        "(tf.distribute.MirroredStrategy), but KERAS_BACKEND is jax; run with "
        "KERAS_BACKEND=tensorflow, or set distribution: none\n")


def test_cpu_devices_must_be_a_positive_integer(cli, tmp_path, tiny_npz, monkeypatch):
    monkeypatch.setenv("DLMINE_CPU_DEVICES", "two")
    result = cli("check", write_config(tmp_path, MIRRORED))
    assert result.exit_code == 2
    assert result.stderr == "Error: DLMINE_CPU_DEVICES must be an integer >= 1, received 'two'\n"
