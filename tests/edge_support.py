"""Helpers shared by the edge-case tests (`test_edges.py`, `test_edges_data.py`): tiny data,
configs, and the CLI run in-process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

CLASSES = ["red", "green", "blue"]


TABLE = """\
name: table
seed: 1
dataset:
  name: csv
  path: table.csv
  target: y
  validation_split: 0.25
  missing: MISSING
  categorical_encoding: embedding
model:
  layers:
    - Dense: {units: 4, activation: relu}
    - Dense: {units: 2, activation: softmax}
training:
  epochs: 1
  batch_size: 8
  early_stopping: {patience: 2}
tune:
  metric: val_accuracy
"""


def invoke(*args):
    """`dlmine ARGS` in-process; `sys.argv` is set as the real command would set it (run.json
    and train.log record it)."""
    from click.testing import CliRunner

    from dlmine.cli import main

    args = [str(a) for a in args]
    saved = sys.argv
    sys.argv = ["dlmine", *args]
    try:
        return CliRunner().invoke(main, args, catch_exceptions=False)
    finally:
        sys.argv = saved


def squash(text: str) -> str:
    """Text without whitespace: rich wraps long warnings at 80 columns, even inside a path."""
    return "".join(text.split())


def clean(result) -> None:
    """No Python traceback and no 'internal error', whatever the outcome."""
    assert "Traceback" not in result.output, result.output
    assert "internal error" not in result.output, result.output


def strict_json(path: Path):
    """JSON as the standard defines it: `Infinity` and `NaN` are not JSON."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def make_npz(path: Path, n: int = 80, test: int = 0, seed: int = 0, **changes) -> Path:
    """n samples of 6x6 in 3 separable classes (and `test` more as x_test); `changes` replace
    arrays before saving."""
    rng = np.random.default_rng(seed)

    def make(count):
        y = np.arange(count) % 3
        x = rng.normal(0, 0.3, size=(count, 6, 6)).astype("float32")
        x[np.arange(count), y * 2, :] += 3.0
        return x, y.astype("int64")

    arrays = {}
    arrays["x_train"], arrays["y_train"] = make(n)
    if test:
        arrays["x_test"], arrays["y_test"] = make(test)
    arrays["class_names"] = np.array(CLASSES)
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def table_text(rows: int = 40, single_class: bool = False, bad: str | None = None,
               bad_line: int = 5) -> str:
    """A table x1 (numeric), x2 (numeric), c (categorical), y (yes/no); `bad` replaces x1 on
    line `bad_line` of the file (the header is line 1)."""
    rng = np.random.default_rng(1)
    lines = ["x1,x2,c,y"]
    for i in range(rows):
        label = 0 if single_class else i % 2
        x1 = f"{rng.normal() + 2 * label:.3f}"
        if bad is not None and len(lines) + 1 == bad_line:
            x1 = bad
        lines.append(f"{x1},{rng.normal():.3f},{'abc'[i % 3]},{'yes' if label else 'no'}")
    return "\n".join(lines) + "\n"
