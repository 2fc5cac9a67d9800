"""Data edges (issue 12): what each kind of data refuses, at the command line and in the sources.

Tables, `.npz` files, shards, texts and image folders: values that are not finite numbers, one
class only, files that are not regular files or not UTF-8, duplicate headers, messages that name
the file, and a wide table read in seconds. The CLI tests drive `dlmine.cli.main` in-process
(click's runner) on tiny data and assert the exit code and the message; the checks of each data
kind are also called directly, on the siblings of each CLI case.

Messages follow those dlmine already prints for tables: `FILE: column 'NAME', row N: what was
received and what was expected`, N being the line of the file (the header is line 1).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_config
from tests.edge_support import TABLE, clean, invoke, make_npz, squash, strict_json, table_text

TINY = """\
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
  epochs: 1
  batch_size: 16
"""


TEXT = """\
name: text
seed: 1
dataset: {name: text, path: texts.csv, validation_split: 0.25}
preprocessing:
  text: {max_tokens: 50, sequence_length: 8}
model:
  layers:
    - Embedding: {input_dim: 50, output_dim: 4}
    - GlobalAveragePooling1D
    - Dense: {units: 2, activation: softmax}
training: {epochs: 1, batch_size: 8}
"""


# --- helpers -------------------------------------------------------------------------------------


# --- module fixtures: data and runs --------------------------------------------------------------

@pytest.fixture(scope="module")
def work():
    """A folder of the module's data and runs."""
    folder = Path(tempfile.mkdtemp(prefix="dlmine-edges-data-"))
    make_npz(folder / "tiny.npz")
    write_config(folder, TINY, "tiny.yaml")
    with np.load(make_npz(folder / "three.npz", 3, seed=5)) as three:
        np.savez(folder / "input.npz", x=three["x_train"])  # 3 samples to predict
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_run(work) -> Path:
    """A completed 1-epoch run on tiny.npz (no x_test: the test split is held out by seed)."""
    run = work / "tiny-run"
    result = invoke("train", work / "tiny.yaml", "--run-dir", run)
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def table_run(work) -> Path:
    """A completed run on a table (dataset.missing: error)."""
    (work / "table.csv").write_text(table_text())
    write_config(work, TABLE.replace("MISSING", "error"), "table.yaml")
    run = work / "table-run"
    result = invoke("train", work / "table.yaml", "--run-dir", run)
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def impute_run(work) -> Path:
    """The same table with dataset.missing: impute."""
    (work / "table.csv").write_text(table_text())
    write_config(work, TABLE.replace("MISSING", "impute"), "impute.yaml")
    run = work / "impute-run"
    result = invoke("train", work / "impute.yaml", "--run-dir", run)
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def text_run(work) -> Path:
    rng = np.random.default_rng(2)
    words = {"pos": "good great fine nice happy".split(), "neg": "bad awful poor sad ugly".split()}
    lines = ["text,label"]
    for i in range(40):
        label = "pos" if i % 2 else "neg"
        lines.append(" ".join(rng.choice(words[label], 4)) + f",{label}")
    (work / "texts.csv").write_text("\n".join(lines) + "\n")
    write_config(work, TEXT, "text.yaml")
    run = work / "text-run"
    result = invoke("train", work / "text.yaml", "--run-dir", run)
    assert result.exit_code == 0, result.output
    return run


# --- predict on tables and arrays: values that are not finite numbers (items 1, 2) -------------

PREDICT_CELLS = [
    ("abc", "'abc' is not a number (the column is numeric)"),
    ("", "the value is missing (this run was trained with dataset.missing: error)"),
    ("nan", "the value is missing (this run was trained with dataset.missing: error)"),
    ("inf", "inf is not a finite number"),
    ("-inf", "-inf is not a finite number"),
    ("1e308", "1e+308 is beyond the range of 32-bit floats"),
]


@pytest.mark.parametrize("cell, message", PREDICT_CELLS,
                         ids=["word", "empty", "nan", "inf", "minus-inf", "1e308"])
def test_predict_refuses_a_table_cell_that_is_not_a_finite_number(table_run, work, cell, message):
    """Today: the training mean fills `abc`, an empty cell and `nan`; `inf` and `1e308` give NaN
    probabilities; every row gets a class and the exit code is 0."""
    source = work / f"predict-{cell or 'empty'}.csv"
    source.write_text(f"x1,x2,c\n0.1,0.2,a\n{cell},0.3,b\n")
    result = invoke("predict", table_run, source)
    clean(result)
    assert result.exit_code == 1, result.output
    assert f"Error: {source}: column 'x1', row 3: {message}" in result.stderr
    assert "class" not in result.stdout  # no prediction at all, least of all a class


def test_predict_with_missing_impute_imputes_an_empty_cell_and_says_so(impute_run, work):
    source = work / "predict-impute.csv"
    source.write_text("x1,x2,c\n0.1,0.2,a\n,0.3,b\n")
    result = invoke("predict", impute_run, source)
    clean(result)
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(result.stdout.splitlines()))) == 2
    assert squash(f"{source}: column 'x1', row 3: the value is missing; imputed with the "
                  "training mean (dataset.missing: impute)") in squash(result.stderr)


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_predict_refuses_non_finite_npz_inputs(tiny_run, work, value):
    """Today: a NaN sample gets a class (exit 0)."""
    x = np.load(work / "input.npz")["x"].copy()
    x[1, 2, 3] = value
    source = work / f"input-{value}.npz"
    np.savez(source, x=x)
    result = invoke("predict", tiny_run, source)
    clean(result)
    assert result.exit_code == 1, result.output
    assert f"Error: {source}: x[1, 2, 3] is {value}; expected finite numbers" in result.stderr
    assert "class" not in result.stdout


# --- training on values that are not finite numbers (items 3, 4) ----------------------------------

@pytest.mark.parametrize("cell, message", [
    ("inf", "inf is not a finite number"),
    ("1e308", "1e+308 is beyond the range of 32-bit floats"),
], ids=["inf", "1e308"])
def test_training_refuses_a_non_finite_table_cell_before_the_run_directory(work, cell, message):
    """Today: `inf` ends as 'training diverged' (a failed run directory), `1e308` completes with
    `"std": Infinity` in preprocessing.json (not JSON) and the column zeroed."""
    data = work / f"train-{cell}.csv"
    data.write_text(table_text(bad=cell, bad_line=5))
    config = write_config(work, TABLE.replace("MISSING", "error").replace("table.csv", data.name),
                          f"train-{cell}.yaml")
    run = work / f"train-{cell}-run"
    result = invoke("train", config, "--run-dir", run)
    clean(result)
    for name in ("preprocessing.json", "run.json", "eval.json"):
        if (run / name).exists():
            try:  # whatever happens, never a file that is not JSON
                strict_json(run / name)
            except ValueError as exc:
                pytest.fail(str(exc))
    assert result.exit_code == 1, result.output
    assert f"Error: {data}: column 'x1', row 5: {message}" in result.stderr
    assert not run.exists()


def test_training_refuses_nan_in_npz_inputs(work):
    """Today: the NaN sample is trained on (exit 0)."""
    x = np.load(work / "tiny.npz")["x_train"].copy()
    x[3, 2, 1] = np.nan
    data = make_npz(work / "train-nan.npz", x_train=x)
    config = write_config(work, TINY.replace("tiny.npz", data.name), "train-nan-npz.yaml")
    run = work / "train-nan-npz-run"
    result = invoke("train", config, "--run-dir", run)
    clean(result)
    assert result.exit_code == 1, result.output
    assert f"Error: {data}: x_train[3, 2, 1] is nan; expected finite numbers" in result.stderr
    assert not run.exists()


def test_training_refuses_nan_in_a_shard(work):
    shards = work / "nan-shards"
    shards.mkdir()
    first = np.load(work / "tiny.npz")
    x = first["x_train"].copy()
    make_npz(shards / "part-000.npz", x_train=x[:40], y_train=first["y_train"][:40])
    x[45, 0, 0] = np.nan
    make_npz(shards / "part-001.npz", x_train=x[40:], y_train=first["y_train"][40:])
    config = write_config(work, TINY.replace("tiny.npz", "nan-shards"), "nan-shards.yaml")
    run = work / "nan-shards-run"
    result = invoke("train", config, "--run-dir", run)
    clean(result)
    assert result.exit_code == 1, result.output
    assert (f"Error: {shards / 'part-001.npz'}: x_train[5, 0, 0] is nan; expected finite numbers"
            in result.stderr)
    assert not run.exists()


# --- one class (item 5) ---------------------------------------------------------------------------

def _one_class_case(work: Path, kind: str, units: int) -> tuple[Path, Path, str]:
    """(config, data path, the message's start) of a dataset of one class."""
    if kind == "csv":
        data = work / "one-class.csv"
        data.write_text(table_text(single_class=True))
        text = TABLE.replace("MISSING", "error").replace("table.csv", data.name)
        expected = f"Error: {data}: the target column 'y' holds one class only ('no'); "
    elif kind == "npz":
        data = make_npz(work / "one-class.npz", y_train=np.zeros(80, dtype="int64"),
                        class_names=np.array(["red"]))
        text = TINY.replace("tiny.npz", data.name)
        expected = f"Error: {data}: y_train holds one class only (0); "
    elif kind == "text":
        data = work / "one-class-texts.csv"
        data.write_text("text,label\n" + "".join(f"good day {i},pos\n" for i in range(30)))
        text = TEXT.replace("texts.csv", data.name)
        expected = f"Error: {data}: the label column 'label' holds one class only ('pos'); "
    else:
        from PIL import Image

        data = work / "one-class-images"
        (data / "cat").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(data / "cat" / f"{i}.png")
        text = ("name: images\ndataset: {name: images, path: one-class-images, image_size: [8, 8]}\n"
                "model:\n  layers:\n    - Flatten\n    - Dense: {units: 2, activation: softmax}\n"
                "training: {epochs: 1}\n")
        expected = (f"Error: {data}: expected one sub-folder of images per class (at least 2), "
                    "found 1")
    text = text.replace("units: 2, activation: softmax", f"units: {units}, activation: softmax")
    text = text.replace("units: 3, activation: softmax", f"units: {units}, activation: softmax")
    return write_config(work, text, f"one-class-{kind}-{units}.yaml"), data, expected


@pytest.mark.parametrize("kind, units", [("csv", 2), ("csv", 1), ("npz", 3), ("npz", 1),
                                         ("text", 1), ("images", 2)],
                         ids=["csv", "csv-units-1", "npz", "npz-units-1", "text-units-1", "images"])
def test_one_class_is_refused_before_the_run_directory(work, kind, units):
    """Today (csv): a config error that says `set units: 1`; with units: 1 (and for npz and text)
    a 'completed' run with accuracy 0 and a phantom second class."""
    config, _, expected = _one_class_case(work, kind, units)
    run = work / f"one-class-{kind}-{units}-run"
    result = invoke("train", config, "--run-dir", run)
    clean(result)
    assert result.exit_code == 1, result.output
    if kind == "text":
        expected += "classification needs at least 2 classes"
    elif kind != "images":
        expected += "classification needs at least 2 classes (or set dataset.task: regression)"
    assert expected in result.stderr
    assert not run.exists()


# --- text to predict that is not UTF-8 (item 6) ----------------------------------------------------

def test_predict_names_a_txt_file_that_is_not_utf8(text_run, work):
    bad = work / "latin1.txt"
    bad.write_bytes(b"good \xff\xfe great\n")
    result = invoke("predict", text_run, bad)
    clean(result)
    assert result.exit_code == 1, result.output
    assert (f"Error: {bad}: cannot read it as UTF-8 text (byte 0xff at line 1, column 6, byte "
            "offset 5); this run reads utf-8 (its dataset.encoding when it trained); convert "
            "the file to utf-8") in result.stderr


def test_predict_names_the_file_of_a_text_folder_that_is_not_utf8(text_run, work):
    folder = work / "texts-to-predict"
    folder.mkdir()
    (folder / "a.txt").write_text("good day")
    (folder / "b.txt").write_bytes(b"fine\nbad \xff day\n")
    result = invoke("predict", text_run, folder)
    clean(result)
    assert result.exit_code == 1, result.output
    assert (f"Error: {folder / 'b.txt'}: cannot read it as UTF-8 text (byte 0xff at line 2, "
            "column 5, byte offset 9)") in result.stderr


# --- files that are not regular, not UTF-8, duplicate headers, messages, wide tables (7-11) ---------

TABLE_CHECK = """\
name: checked
dataset: {name: DATASET, path: PATH, target: y}
model:
  layers:
    - Flatten
    - Dense: {units: 2, activation: softmax}
"""


@contextlib.contextmanager
def fifo_unblocked(path: Path):
    """A FIFO that a reader cannot hang on: a writer opens it (then closes: EOF) once one reads."""
    os.mkfifo(path)
    done = threading.Event()

    def writer():
        while not done.is_set():
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: no reader yet
                time.sleep(0.01)
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        done.set()
        thread.join(5)


@pytest.mark.parametrize("dataset, what", [("csv", "directory"), ("csv", "fifo"),
                                           ("csv", "device"), ("npz", "fifo"), ("npz", "device")])
def test_a_data_path_that_is_not_a_regular_file_is_named_so(work, dataset, what):
    """Today: `data file not found: PATH` for a path that exists."""
    with contextlib.ExitStack() as stack:
        if what == "directory":
            path = work / "a-folder.csv"
            path.mkdir(exist_ok=True)
            kind = "a directory"
        elif what == "fifo":
            path = stack.enter_context(fifo_unblocked(work / f"a-fifo-{dataset}"))
            kind = "a FIFO"
        else:
            path, kind = Path("/dev/null"), "a character device"
        text = (TINY.replace("tiny.npz", str(path)) if dataset == "npz" else
                TABLE_CHECK.replace("DATASET", "csv").replace("PATH", str(path)))
        config = write_config(work, text, f"not-regular-{dataset}-{what}.yaml")
        result = invoke("check", config)
    clean(result)
    assert result.exit_code == 1, result.output
    assert f"Error: {path}: not a regular file ({kind}); expected a" in result.stderr
    assert "not found" not in result.stderr


def test_a_utf8_error_in_a_csv_names_the_row_and_column(work):
    """Today: `cannot read it as CSV: 'utf-8' codec can't decode byte 0xff in position 0`."""
    data = work / "latin1.csv"
    data.write_bytes(b"a,c,y\n1,x,0\n2,y,1\n3,\xffz,0\n4,w,1\n")
    config = write_config(work, TABLE_CHECK.replace("DATASET", "csv").replace("PATH", data.name),
                          "latin1.yaml")
    result = invoke("check", config)
    clean(result)
    assert result.exit_code == 1, result.output
    assert (f"Error: {data}: column 'c', row 4: not valid UTF-8 text (byte 0xff); save the file "
            "as UTF-8") in result.stderr
    assert "position" not in result.stderr


def test_duplicate_column_headers_are_refused(work):
    """Today: pandas renames the second `a` to `a.1` and both are trained on."""
    data = work / "duplicated.csv"
    data.write_text("a,a,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    config = write_config(work, TABLE_CHECK.replace("DATASET", "csv").replace("PATH", data.name),
                          "duplicated.yaml")
    result = invoke("check", config)
    clean(result)
    assert result.exit_code == 1, result.output
    assert (f"Error: {data}: the header names column 'a' twice (columns 1 and 2); column names "
            "must be unique") in result.stderr
    assert "a.1" not in result.output


_LABELS = np.arange(80) % 3
NAMED_DATA = {  # each keeps 3 classes in the labels' range, so the model fits them
    "predict-lacks-a-column": "predict",
    "y-train-two-columns": dict(y_train=np.stack([_LABELS, _LABELS], axis=1)),
    "y-train-fractions": dict(y_train=_LABELS + 0.5),
    "y-train-negative": dict(y_train=np.arange(80) % 4 - 1),
    "too-few-samples": dict(x_train=np.zeros((2, 6, 6), "float32"), y_train=np.array([0, 2])),
}


@pytest.mark.parametrize("case", list(NAMED_DATA))
def test_every_data_message_names_the_file(table_run, work, case):
    if NAMED_DATA[case] == "predict":
        path = work / "lacks-x2.csv"
        path.write_text("x1,c\n0.1,a\n")
        result = invoke("predict", table_run, path)
    else:
        path = make_npz(work / f"{case}.npz", **NAMED_DATA[case])
        config = write_config(work, TINY.replace("tiny.npz", path.name), f"{case}.yaml")
        result = invoke("train", config, "--run-dir", work / f"{case}-run")
        assert not (work / f"{case}-run").exists()
    clean(result)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"Error: {path}: "), result.stderr


class TookTooLong(BaseException):
    """Raised by the CPU-time alarm (SIGPROF: pytest-timeout owns SIGALRM)."""


def test_a_csv_of_50000_columns_and_12_rows_takes_seconds(work):
    """Today: about 110 s (220 s on 2 busy cores), in column-by-column pandas loops, for a file
    pandas reads in 0.65 s. The limit is CPU time (SIGPROF), so the machine's load does not
    count: 10 times what pandas takes to read the file here, and at least 10 s."""
    import pandas as pd

    rng = np.random.default_rng(3)
    columns = [f"c{i}" for i in range(50_000)]
    rows = rng.normal(size=(12, len(columns))).round(3)
    data = work / "wide.csv"
    data.write_text(",".join([*columns, "y"]) + "\n" + "".join(
        ",".join(map(str, row)) + f",{i % 2}\n" for i, row in enumerate(rows)))
    config = write_config(work, TABLE_CHECK.replace("DATASET", "csv").replace("PATH", data.name)
                          .replace("target: y}", "target: y, validation_split: null}"), "wide.yaml")
    started = time.process_time()
    pd.read_csv(data)
    limit = max(10.0, 10 * (time.process_time() - started))

    def alarm(signum, frame):
        raise TookTooLong

    previous = signal.signal(signal.SIGPROF, alarm)
    signal.setitimer(signal.ITIMER_PROF, limit)
    started = time.perf_counter()
    try:
        result = invoke("check", config)
    except TookTooLong:
        pytest.fail(f"`dlmine check` on 50,000 columns still ran after {limit:.0f} s of CPU time "
                    f"({time.perf_counter() - started:.0f} s of wall time)")
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    clean(result)
    assert result.exit_code == 0, result.output
    assert "input shape (50000,)" in result.stdout


# --- the siblings: each check in the other kinds of data, called on the sources -----------------

def data_error(call) -> str:
    from dlmine.errors import DataError

    with pytest.raises(DataError) as caught:
        call()
    return str(caught.value)


def dataset(name: str, path: Path, **fields):
    from dlmine.config.schema import DatasetConfig

    return DatasetConfig(name=name, path=str(path), **fields)


def load(cfg):
    from dlmine.data import source_for

    return source_for(cfg).load(0)


def describe(cfg):
    from dlmine.data import source_for

    return source_for(cfg).describe()


def predict_check(name: str, x, prep, path: Path, warn=None, **fields):
    """`check_input` of a run's source on `predict` input `x`."""
    from dlmine.data import source_for

    return source_for(dataset(name, path, **fields)).check_input(x, prep, str(path), warn)


class Prep:
    """What `check_input` reads of a run's preprocessor."""

    def __init__(self, sample_shape=(6, 6), kinds=None):
        from dlmine.data.tabular import TableEncoder

        self.sample_shape = sample_shape
        self.encoder = TableEncoder(kinds or {})


def test_npz_refuses_non_finite_inputs_and_float64_beyond_float32_in_every_array(tmp_path):
    x = np.zeros((6, 2, 3))
    x[4, 1, 2] = 1e300
    path = make_npz(tmp_path / "big.npz", x_train=x, y_train=np.arange(6) % 3)
    assert data_error(lambda: load(dataset("npz", path))) == (
        f"{path}: x_train[4, 1, 2] is 1e+300, beyond the range of 32-bit floats; expected "
        "finite numbers")
    x_test = np.zeros((3, 2, 3), "float32")
    x_test[2, 0, 1] = -np.inf
    path = make_npz(tmp_path / "test.npz", x_train=np.zeros((6, 2, 3), "float32"),
                    y_train=np.arange(6) % 3, x_test=x_test, y_test=np.arange(3))
    assert data_error(lambda: load(dataset("npz", path))) == (
        f"{path}: x_test[2, 0, 1] is -inf; expected finite numbers")


def test_npz_regression_targets_must_be_finite(tmp_path):
    y = np.arange(8, dtype="float64")
    y[5] = np.nan
    path = make_npz(tmp_path / "targets.npz", x_train=np.zeros((8, 2), "float32"), y_train=y)
    assert data_error(lambda: load(dataset("npz", path, task="regression"))) == (
        f"{path}: y_train[5] is nan; expected finite numbers")


def test_a_shards_x_test_with_nan_is_named_with_its_index(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    x_test = np.zeros((4, 6, 6), "float32")
    x_test[3, 1, 0] = np.nan
    for i in range(2):
        make_npz(folder / f"part-{i}.npz", 12, test=4, **({"x_test": x_test} if i else {}))
    assert data_error(lambda: load(dataset("npz", folder))) == (
        f"{folder / 'part-1.npz'}: x_test[3, 1, 0] is nan; expected finite numbers")


def test_predict_refuses_float64_npz_input_beyond_float32(tmp_path):
    x = np.zeros((2, 6, 6))
    x[0, 5, 5] = -1e39
    path = tmp_path / "wide-range.npz"
    assert data_error(lambda: predict_check("npz", x, Prep(), path)) == (
        f"{path}: x[0, 5, 5] is -1e+39, beyond the range of 32-bit floats; expected finite numbers")


@pytest.mark.parametrize("cell, message", [("inf", "inf is not a finite number"),
                                           ("-3e39", "-3e+39 is beyond the range of 32-bit floats")])
def test_table_regression_targets_must_be_finite(tmp_path, cell, message):
    path = tmp_path / "targets.csv"
    path.write_text(f"x,y\n1,2.5\n2,{cell}\n3,1.0\n4,0.5\n")
    cfg = dataset("csv", path, target="y", task="regression", validation_split=None)
    assert data_error(lambda: load(cfg)) == f"{path}: column 'y', row 3: {message}"


def test_predict_on_a_table_refuses_missing_values_of_a_run_trained_with_drop(tmp_path):
    import pandas as pd

    path = tmp_path / "holes.csv"
    frame = pd.DataFrame({"x1": [0.1, 0.2], "c": ["a", None]})
    kinds = {"x1": "numeric", "c": "categorical"}
    assert data_error(lambda: predict_check("csv", frame, Prep(kinds=kinds), path,
                                            target="y", missing="drop")) == (
        f"{path}: column 'c', row 3: the value is missing (this run was trained with "
        "dataset.missing: drop)")


def test_predict_on_a_table_imputes_a_missing_category_and_counts_the_others(tmp_path):
    import pandas as pd

    path = tmp_path / "holes.csv"
    frame = pd.DataFrame({"x1": [np.nan, 0.2, np.nan], "c": ["a", None, "b"]})
    said = []
    checked = predict_check("csv", frame, Prep(kinds={"x1": "numeric", "c": "categorical"}),
                            path, said.append, target="y", missing="impute")
    assert len(checked) == 3
    assert said == [f"{path}: column 'x1', row 2: the value is missing; imputed with the "
                    "training mean (dataset.missing: impute); 2 more missing value(s) likewise"]


def test_one_class_in_shards_is_refused_when_they_are_described(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    for i in range(2):
        make_npz(folder / f"part-{i}.npz", 6, y_train=np.full(6, 2))
    assert data_error(lambda: describe(dataset("npz", folder))) == (
        f"{folder}: y_train holds one class only (2); classification needs at least 2 classes "
        "(or set dataset.task: regression)")


def test_one_class_in_a_folder_of_texts_is_refused(tmp_path):
    for name in ("neg", "pos"):
        (tmp_path / "texts" / name).mkdir(parents=True)
    for i in range(3):
        (tmp_path / "texts" / "pos" / f"{i}.txt").write_text("good day")
    path = tmp_path / "texts"
    assert data_error(lambda: load(dataset("text", path, validation_split=None))) == (
        f"{path}: every label is 'pos'; classification needs at least 2 classes")


def test_a_one_class_table_is_fine_for_regression(tmp_path):
    path = tmp_path / "flat.csv"
    path.write_text("x,y\n1,2\n2,2\n3,2\n4,2\n")
    splits = load(dataset("csv", path, target="y", task="regression", validation_split=None))
    assert set(splits.y_train) == {2.0}


@pytest.mark.parametrize("reader", ["parquet", "npz-predict", "image-predict", "text-predict"])
def test_every_reader_names_a_path_that_is_not_a_regular_file(tmp_path, reader):
    from dlmine.data.images import ImageSource
    from dlmine.data.npzfile import read_input_array
    from dlmine.data.tabular import read_table
    from dlmine.data.text import TextSource

    path = tmp_path / "folder.parquet"
    path.mkdir()
    calls = {
        "parquet": (lambda: read_table(path, "parquet"), "a directory", "a Parquet file"),
        "npz-predict": (lambda: read_input_array(Path("/dev/null")), "a character device",
                        "an .npz or .npy file"),
        "image-predict": (lambda: ImageSource(dataset("images", tmp_path)).read_input(
            Path("/dev/null")), "a character device", "an image file or a folder of images"),
        "text-predict": (lambda: TextSource(dataset("text", tmp_path)).read_input(
            Path("/dev/null")), "a character device", "a .txt file"),
    }
    call, kind, expected = calls[reader]
    where = path if reader == "parquet" else Path("/dev/null")
    assert data_error(call) == f"{where}: not a regular file ({kind}); expected {expected}"


def test_a_utf8_error_in_a_csv_header_names_its_column(tmp_path):
    from dlmine.data.tabular import read_table

    path = tmp_path / "header.csv"
    path.write_bytes(b"a,\xe9t\xe9,y\n1,2,0\n")
    assert data_error(lambda: read_table(path, "csv")) == (
        f"{path}: the header, column 2: not valid UTF-8 text (byte 0xe9); save the file as UTF-8")


def test_a_text_csv_to_predict_that_is_not_utf8_names_row_and_column(tmp_path):
    from dlmine.data.text import TextSource

    path = tmp_path / "texts.csv"
    path.write_bytes(b"text\ngood\nb\xc3\xa9 \xff bad\n")
    assert data_error(lambda: TextSource(dataset("text", tmp_path)).read_input(path)) == (
        f"{path}: cannot read it as UTF-8 text (byte 0xff at line 3, column 4, byte offset 14); "
        "this run reads utf-8 (its dataset.encoding when it trained); convert the file to utf-8")


def test_a_text_csv_that_names_a_column_twice_is_refused(tmp_path):
    from dlmine.data.text import TextSource

    path = tmp_path / "texts.csv"
    path.write_text("text,text,label\ngood,fine,pos\nbad,poor,neg\n")
    message = (f"{path}: the header names column 'text' twice (columns 1 and 2); column names "
               "must be unique")
    assert data_error(lambda: TextSource(dataset("text", tmp_path)).read_input(path)) == message
    assert data_error(lambda: load(dataset("text", path, validation_split=None))) == message


def test_predict_reads_a_gzipped_csv_of_texts(tmp_path):
    import gzip

    from dlmine.data.text import TextSource

    path = tmp_path / "texts.csv.gz"
    path.write_bytes(gzip.compress(b"label,text\nx,good day\nx,\"bad, bad day\"\n"))
    texts = TextSource(dataset("text", tmp_path)).read_input(path)
    assert list(texts) == ["good day", "bad, bad day"]


def test_a_text_file_error_counts_columns_in_characters(tmp_path):
    from dlmine.data.text import read_text_file

    path = tmp_path / "accents.txt"
    path.write_bytes("été\n".encode() + b"d\xc3\xa9j\xe0 vu\n")
    assert data_error(lambda: read_text_file(path, "utf-8")) == (
        f"{path}: cannot read it as UTF-8 text (byte 0xe0 at line 2, column 4, byte offset 10); "
        "set dataset.encoding to the file's encoding, e.g. latin-1 or cp1252")


def test_a_header_naming_a_column_three_times_lists_every_position(tmp_path):
    from dlmine.data.tabular import read_table

    path = tmp_path / "thrice.csv"
    path.write_text("a,b,a,y,a\n1,2,3,4,5\n")
    assert data_error(lambda: read_table(path, "csv")) == (
        f"{path}: the header names column 'a' 3 times (columns 1, 3 and 5); column names must "
        "be unique")


def test_a_table_fingerprint_is_pandas_row_hash_computed_by_blocks():
    """The same numbers as `pd.util.hash_pandas_object`: runs trained before keep their
    fingerprint."""
    import pandas as pd

    from dlmine.data.table import row_hashes

    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, np.nan, -0.0], "c": ["x", None, "z"],
                          "d": [True, False, True], "e": np.array([7, 8, 9], "int32"),
                          "f": [4.0, 5.0, 6.0]})
    assert (row_hashes(frame) == pd.util.hash_pandas_object(frame, index=False).to_numpy()).all()


def test_the_encoder_standardizes_numeric_blocks_as_pandas_did():
    import pandas as pd

    from dlmine.data.tabular import TableEncoder

    frame = pd.DataFrame({"a": [1.0, 2.0, np.nan, 5.0], "c": ["x", "y", "x", "x"],
                          "b": [3.0, 3.0, 3.0, 3.0], "e": [np.nan] * 4})
    encoder = TableEncoder({"a": "numeric", "c": "categorical", "b": "numeric",
                            "e": "numeric"}).fit(frame)
    a = frame["a"]
    assert encoder.state["a"] == pytest.approx({"mean": a.mean(), "std": a.std(ddof=0)})
    assert encoder.state["b"] == {"mean": 3.0, "std": 1.0}  # constant: not divided by zero
    assert encoder.state["e"] == {"mean": 0.0, "std": 1.0}  # empty
    out = encoder.transform(frame)
    assert out.shape == (4, 6)  # a, c (x, y, unseen), b, e: in the columns' order
    assert out[:, 1:4].tolist()[1] == [0.0, 1.0, 0.0]
    assert out[2, 0] == 0.0  # imputed with the mean


def test_json_files_never_hold_nan_or_infinity(tmp_path):
    from dlmine.config.schema import PreprocessingConfig
    from dlmine.data.preprocessing import Preprocessor
    from dlmine.errors import DlmineError
    from dlmine.rundir import RunDir

    run = RunDir(tmp_path)  # an undefined metric is null in a run's JSON files
    run.write_json("eval.json", {"metrics": {"loss": 0.5, "auc": [0.1, float("nan")],
                                             "r2": np.float32("inf")}})
    assert json.loads((tmp_path / "eval.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"{c} in eval.json")) == {
        "metrics": {"loss": 0.5, "auc": [0.1, None], "r2": None}}
    prep = Preprocessor(PreprocessingConfig(), "classification", 2, (1,), "table", {"x": "numeric"})
    prep.encoder.state = {"x": {"mean": 0.0, "std": float("inf")}}
    with pytest.raises(DlmineError) as caught:
        prep.state_files()
    assert str(caught.value) == ("cannot write preprocessing.json: encoder.x.std is inf, which "
                                 "JSON cannot hold")


# --- what user-testing from README found (2026-12-04) -------------------------------------------

def test_class_names_must_name_every_class(tmp_path):
    path = make_npz(tmp_path / "d.npz", test=9)
    for names in (["a", "b", "c", "d"], ["a", "b"]):
        assert data_error(lambda n=names: load(dataset("npz", path, class_names=n))) == (
            f"dataset.class_names gives {len(names)} names ({', '.join(names)}), but the data "
            "have 3 classes (red, green, blue); give one name per class, in label order, or "
            "null for the data's own names")


def test_a_limit_that_keeps_one_class_and_a_class_without_training_samples_are_named(tmp_path):
    y = np.sort(np.arange(60) % 3)  # sorted labels: the first 20 samples are all class 0
    path = make_npz(tmp_path / "sorted.npz", n=60, test=9, y_train=y)
    assert data_error(lambda: load(dataset("npz", path, limit=20))) == (
        f"{path}: the first 20 training samples (dataset.limit) hold one class only (0, "
        "'red'); classification needs at least 2 classes (or set dataset.task: regression)")
    assert data_error(lambda: load(dataset("npz", path, limit=40))) == (
        f"{path}: class 2 ('blue') has no sample in the training split (after the test and "
        "validation splits and dataset.limit); give each class training samples, or leave it "
        "out of the data")


def test_an_x_test_of_another_shape_is_named_when_the_data_load(tmp_path):
    path = make_npz(tmp_path / "d.npz", test=9)
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["x_test"] = arrays["x_test"][:, :5, :]
    np.savez(path, **arrays)
    assert data_error(lambda: load(dataset("npz", path))) == (
        f"{path}: x_test has sample shape (5, 6), but x_train has (6, 6); the test inputs must "
        "have the training inputs' shape")


def test_one_hot_npz_labels_are_named_before_any_load(tmp_path):
    y = np.eye(3, dtype="int64")[np.arange(80) % 3]
    path = make_npz(tmp_path / "onehot.npz", y_train=y)
    assert data_error(lambda: describe(dataset("npz", path))) == (
        f"{path}: y_train has shape (80, 3): expected one integer class label per sample "
        "(one-hot labels are made by preprocessing.labels: onehot)")


def test_a_file_without_a_numpy_header_is_not_called_pickled(tmp_path):
    from dlmine.data.npzfile import read_input_array

    (tmp_path / "fake.npy").write_bytes(b"garbage")
    assert data_error(lambda: read_input_array(tmp_path / "fake.npy")) == (
        f"{tmp_path / 'fake.npy'}: not a readable .npy file (no NumPy header: it does not start "
        "with the bytes \\x93NUMPY of np.save)")


def test_parquet_and_csv_mixed_up_and_list_cells_are_named(tmp_path):
    import pandas as pd

    from dlmine.data.tabular import read_table

    frame = pd.DataFrame({"a": [1.0, 2.0], "tags": [["x", "y"], ["z"]]})
    frame.to_parquet(tmp_path / "t.parquet")
    shutil.copy(tmp_path / "t.parquet", tmp_path / "t.csv")
    assert data_error(lambda: read_table(tmp_path / "t.csv", "csv")) == (
        f"{tmp_path / 't.csv'}: this is a Parquet file (it starts with PAR1), read here as CSV; "
        "name it .parquet (predict) or set dataset.name: parquet")
    assert data_error(lambda: read_table(tmp_path / "t.parquet", "parquet")) == (
        f"{tmp_path / 't.parquet'}: column 'tags' holds ndarray cells (several values in one "
        "cell); a table cell is one number or one word: join its values into one, or leave the "
        "column out of the file")
    (tmp_path / "p.parquet").write_text("a,b\n1,2\n")
    assert data_error(lambda: read_table(tmp_path / "p.parquet", "parquet")) == (
        f"{tmp_path / 'p.parquet'}: not a Parquet file (it does not start with PAR1); for a CSV "
        "file name it .csv (predict) or set dataset.name: csv")


def test_an_image_folder_of_class_folders_given_to_predict_says_so(tmp_path):
    from dlmine.data.images import ImageSource

    for name in ("cat", "dog"):
        (tmp_path / "test" / name).mkdir(parents=True)
    source = ImageSource(dataset("images", tmp_path, image_size=[8, 8]))
    assert data_error(lambda: source.read_input(tmp_path / "test")) == (
        f"{tmp_path / 'test'}: no images (.bmp, .gif, .jpeg, .jpg, .png); it holds only the "
        "sub-folders cat, dog, and predict reads the images directly in the folder given: give "
        "one of them")


def test_a_set_key_can_quote_a_column_name_that_is_not_an_identifier():
    from dlmine.config.keys import dotted, parse

    assert parse('dataset.columns["od280/od315"]') == ("dataset", "columns", "od280/od315")
    assert parse("dataset.columns.índice") == ("dataset", "columns", "índice")
    assert dotted(("dataset", "columns", "monthly-charges")) == 'dataset.columns["monthly-charges"]'
    assert parse("training..epochs") is None and parse("9lives") is None


def test_a_csv_row_of_more_fields_than_the_header_is_named(tmp_path):
    """pandas would take the first field for an index and shift every cell: an unquoted comma
    in a review would be predicted as the words after it."""
    from dlmine.data.tabular import read_table
    from dlmine.data.text import read_csv

    (tmp_path / "t.csv").write_text("a,b\n9,1,2\n3,4\n")
    assert data_error(lambda: read_table(tmp_path / "t.csv", "csv")) == (
        f"{tmp_path / 't.csv'}: row 2 has 3 fields, but the header names 2 columns; a field "
        'that holds a comma must be quoted ("great, loved it")')
    (tmp_path / "r.csv").write_text("review\nThis was great, loved it\n")
    assert data_error(lambda: read_csv(tmp_path / "r.csv", "utf-8")) == (
        f"{tmp_path / 'r.csv'}: row 2 has 2 fields, but the header names 1 columns; a field "
        'that holds a comma must be quoted ("great, loved it")')
