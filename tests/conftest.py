"""Shared fixtures: a CLI runner, tiny datasets written to real files, the MNIST location."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def mnist_dir() -> Path | None:
    """Where the real mnist.npz is: $DLMINE_DATA_DIR, or ../shared/data beside the repo."""
    for folder in (os.environ.get("DLMINE_DATA_DIR"), ROOT.parent / "shared" / "data"):
        if folder and (Path(folder) / "mnist.npz").is_file():
            return Path(folder).resolve()
    return None


@pytest.fixture
def cli():
    """Run `dlmine ARGS...` in-process; returns click's Result (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from dlmine.cli import main

    def run(*args: str):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return run


def write_tiny_npz(path: Path) -> Path:
    """60 train / 20 test samples of 6x6 'images' in 3 well-separated classes, saved at `path`."""
    rng = np.random.default_rng(0)

    def make(n):
        y = np.arange(n) % 3
        x = rng.normal(0, 0.3, size=(n, 6, 6)).astype("float32")
        x[np.arange(n), y * 2, :] += 3.0  # each class lights up its own rows
        return x, y.astype("int64")

    x_train, y_train = make(60)
    x_test, y_test = make(20)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             class_names=np.array(["red", "green", "blue"]))
    return path


@pytest.fixture
def tiny_npz(tmp_path) -> Path:
    """`write_tiny_npz` in the test's own folder."""
    return write_tiny_npz(tmp_path / "tiny.npz")


def write_config(folder: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


TINY_CONFIG = """\
name: tiny
seed: 1
dataset:
  name: npz
  path: tiny.npz
  validation_split: 0.25
model:
  layers:
    - Flatten
    - Dense: {units: 8, activation: relu}
    - Dense: {units: 3, activation: softmax}
training:
  epochs: 2
  batch_size: 16
"""


@pytest.fixture
def tiny_config(tmp_path, tiny_npz) -> Path:
    """A config that trains on `tiny_npz` in about a second."""
    return write_config(tmp_path, TINY_CONFIG)


def python() -> str:
    return sys.executable
