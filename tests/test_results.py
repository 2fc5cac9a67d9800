"""`predict`, `report`, `runs`, `compare`, `export` on real tiny runs trained once for the module."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import ROOT, TINY_CONFIG

CHROMIUM = "/usr/bin/chromium"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONFIGS = {
    "tiny": TINY_CONFIG,
    "binary": TINY_CONFIG.replace("name: tiny", "name: binary").replace("tiny.npz", "binary.npz")
    .replace("{units: 3, activation: softmax}", "{units: 1, activation: sigmoid}"),
    "regression": TINY_CONFIG.replace("name: tiny", "name: regression")
    .replace("tiny.npz", "regression.npz").replace("validation_split: 0.25", "task: regression")
    .replace("{units: 3, activation: softmax}", "{units: 1}"),
    "digits": TINY_CONFIG.replace("name: tiny", "name: digits")
    .replace("name: npz\n  path: tiny.npz\n  validation_split: 0.25", "name: digits\n  limit: 200")
    .replace("{units: 3,", "{units: 10,").replace("dataset:", "preprocessing: {rescale: 1/16}\ndataset:"),
    "mnist": TINY_CONFIG.replace("name: tiny", "name: mnist")
    .replace("name: npz\n  path: tiny.npz", "name: mnist").replace("{units: 3,", "{units: 10,"),
}


def invoke(*args):
    from dlmine.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _arrays(rng, n: int, classes: int, shape=(6, 6)):
    y = np.arange(n) % classes
    x = rng.normal(0, 0.3, size=(n, *shape)).astype("float32")
    x[np.arange(n), y * 2 % shape[0], :] += 3.0
    return x, y.astype("int64")


def _write_data(folder: Path) -> None:
    rng = np.random.default_rng(0)
    (x, y), (xt, yt) = _arrays(rng, 60, 3), _arrays(rng, 20, 3)
    np.savez(folder / "tiny.npz", x_train=x, y_train=y, x_test=xt, y_test=yt,
             class_names=np.array(["red", "green", "blue"]))
    (x, y), (xt, yt) = _arrays(rng, 60, 2), _arrays(rng, 20, 2)
    np.savez(folder / "binary.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    np.savez(folder / "regression.npz", x_train=x, y_train=x.sum(axis=(1, 2)) / 10, x_test=xt,
             y_test=xt.sum(axis=(1, 2)) / 10)
    (x, y), (xt, yt) = _arrays(rng, 60, 10, (28, 28)), _arrays(rng, 20, 10, (28, 28))
    to_uint8 = lambda a: np.clip(a * 60 + 20, 0, 255).astype("uint8")  # noqa: E731
    (folder / "data").mkdir()
    np.savez(folder / "data" / "mnist.npz", x_train=to_uint8(x), y_train=y, x_test=to_uint8(xt),
             y_test=yt)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Five runs (npz 3 classes, npz binary, npz regression, digits, mnist from DLMINE_DATA_DIR)
    under one root, plus a run directory whose run.json is damaged."""
    folder = tmp_path_factory.mktemp("results")
    _write_data(folder)
    root = folder / "runs"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DLMINE_DATA_DIR", str(folder / "data"))
        for name, text in CONFIGS.items():
            (folder / f"{name}.yaml").write_text(text)
            result = invoke("train", folder / f"{name}.yaml", "--run-dir", root / name, "--quiet")
            assert result.exit_code == 0, result.output
        damaged = root / "zz_damaged"
        damaged.mkdir()
        shutil.copy(root / "tiny" / "config.yaml", damaged / "config.yaml")
        (damaged / "run.json").write_text('{"status": "compl')
        yield SimpleNamespace(folder=folder, root=root, **{n: root / n for n in CONFIGS})


def model_outputs(run: Path, x: np.ndarray) -> np.ndarray:
    """What the best checkpoint predicts for raw inputs, through the saved preprocessing."""
    from dlmine.data import Preprocessor
    from dlmine.model.io import load_model_file
    from dlmine.results.predict import PREDICT_BATCH

    model = load_model_file(run / "checkpoints" / "best.keras")
    return model.predict(Preprocessor.load(run).transform_x(x), batch_size=PREDICT_BATCH, verbose=0)


# --- predict -----------------------------------------------------------------------------------

def test_predict_csv_on_stdout_equals_model_predict(runs):
    result = invoke("predict", runs.tiny, runs.folder / "tiny.npz")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["sample", "class", "class_index", "prob_red", "prob_green", "prob_blue"]
    with np.load(runs.folder / "tiny.npz") as npz:
        expected = model_outputs(runs.tiny, npz["x_test"])  # the .npz has no x: x_test is used
    got = np.array([[float(r[f"prob_{c}"]) for c in ("red", "green", "blue")] for r in rows])
    np.testing.assert_array_equal(got.astype("float32"), expected)
    assert [int(r["class_index"]) for r in rows] == expected.argmax(axis=1).tolist()
    assert [r["class"] for r in rows] == [["red", "green", "blue"][i] for i in expected.argmax(1)]


def test_predict_jsonl_file_for_a_sigmoid_output(runs, tmp_path):
    out = tmp_path / "predictions.jsonl"
    result = invoke("predict", runs.binary, runs.folder / "binary.npz", "--output", out,
                    "--checkpoint", "last")
    assert result.exit_code == 0, result.output
    assert (result.stdout, result.stderr) == ("", f"wrote 20 predictions to {out}\n")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    with np.load(runs.folder / "binary.npz") as npz:
        from dlmine.data import Preprocessor
        from dlmine.model.io import load_model_file

        x = Preprocessor.load(runs.binary).transform_x(npz["x_test"])
        p = load_model_file(runs.binary / "checkpoints" / "last.keras").predict(x, verbose=0)[:, 0]
    assert set(lines[0]) == {"sample", "class", "class_index", "probabilities"}
    np.testing.assert_array_equal([np.float32(r["probabilities"]["1"]) for r in lines], p)
    assert [r["class"] for r in lines] == [str(int(v > 0.5)) for v in p]


def test_predict_regression_writes_the_value(runs, tmp_path):
    x = np.random.default_rng(3).normal(size=(5, 6, 6)).astype("float32")
    np.save(tmp_path / "new.npy", x)
    result = invoke("predict", runs.regression, tmp_path / "new.npy")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == ["sample", "value"]
    expected = model_outputs(runs.regression, x)[:, 0]
    np.testing.assert_array_equal(np.float32([r["value"] for r in rows]), expected)


@pytest.mark.parametrize("kind", ["digits", "mnist"])
def test_predict_builtin_datasets(runs, tmp_path, kind):
    shape, dtype = ((8, 8), "float64") if kind == "digits" else ((28, 28), "uint8")
    x = np.random.default_rng(4).integers(0, 16, size=(3, *shape)).astype(dtype)
    np.savez(tmp_path / "new.npz", x=x)
    result = invoke("predict", getattr(runs, kind), tmp_path / "new.npz", "-o", tmp_path / "p.csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert [c for c in rows[0] if c.startswith("prob_")] == [f"prob_{i}" for i in range(10)]
    got = np.float32([[r[f"prob_{i}"] for i in range(10)] for r in rows])
    np.testing.assert_array_equal(got, model_outputs(getattr(runs, kind), x))


def test_predict_refuses_input_that_does_not_match(runs, tmp_path, monkeypatch):
    np.save(tmp_path / "wide.npy", np.zeros((4, 7), "float32"))
    np.save(tmp_path / "words.npy", np.array([["a"] * 6] * 6))
    np.savez(tmp_path / "nox.npz", y=np.zeros(3))
    (tmp_path / "cfg.yaml").write_text("name: x\n")
    cases = {
        "wide.npy": (1, "wide.npy: expected samples of shape (6, 6) (an array of shape (N, 6, 6), as "
                        "preprocessing.json says); received an array of shape (4, 7), samples of shape (7,)"),
        "words.npy": (1, "words.npy holds strings (dtype <U1); expected numbers (integers or floats)"),
        "nox.npz": (1, "nox.npz: expected an array named x, x_test or x_train; found: y"),
        "absent.npz": (2, "input not found: absent.npz"),
        "cfg.yaml": (2, "cfg.yaml: cannot read '.yaml' files; expected an .npz file (array x, x_test or "
                        "x_train) or an .npy file"),
    }
    monkeypatch.chdir(tmp_path)
    for name, (code, message) in cases.items():
        result = invoke("predict", runs.tiny, name)
        assert (result.exit_code, result.stderr) == (code, f"Error: {message}\n"), name
    result = invoke("predict", runs.tiny, runs.folder / "tiny.npz", "--output", tmp_path / "p.txt")
    assert (result.exit_code, result.stderr) == (2, f"Error: --output {tmp_path / 'p.txt'}: expected "
                                                 "a file ending .csv (CSV) or .jsonl (JSON Lines); "
                                                 "received '.txt'\n")


# --- report ------------------------------------------------------------------------------------

def _png_checked(data: bytes, name: str) -> tuple[int, int]:
    """Width and height of a real, non-blank PNG (signature, IHDR, decodes with Pillow)."""
    from PIL import Image

    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", name
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 300 <= width <= 2000 and 200 <= height <= 2000, (name, width, height)
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.size == (width, height)
    assert len(np.unique(np.asarray(image.convert("L")))) > 8, f"{name} is blank"
    return width, height


def _check_report(run: Path, expected_pngs: set[str]) -> str:
    result = invoke("report", run)
    assert result.exit_code == 0, result.output
    page = run / "report" / "report.html"
    assert result.stdout == f"{page}\n"
    assert {p.name for p in (run / "report").glob("*.png")} == expected_pngs
    html = page.read_text()
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(uris) == len(expected_pngs) == html.count("data:image/png")
    files = {(run / "report" / n).read_bytes() for n in expected_pngs}
    assert {base64.b64decode(u) for u in uris} == files  # the page inlines exactly the PNG files
    for name in expected_pngs:
        _png_checked((run / "report" / name).read_bytes(), name)
    assert not re.search(r"https?://", html) and "<script" not in html and "<link" not in html
    _check_in_chromium(page)
    return html


def _check_in_chromium(page: Path) -> None:
    """Every image of the page loads in headless Chromium (naturalWidth > 0)."""
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: make test installs it (Debian chromium)"
    probe = page.with_name(".probe.html")
    script = ('<script>addEventListener("load", () => document.body.setAttribute("data-widths", '
              '[...document.images].map(i => i.complete ? i.naturalWidth : -1).join(",")));</script>')
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    try:
        out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                              "--disable-background-networking", "--virtual-time-budget=5000",
                              "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=60)
    finally:
        probe.unlink()
    found = re.search(r'data-widths="([^"]*)"', out.stdout)
    assert found, out.stderr[-2000:]
    widths = [int(w) for w in found.group(1).split(",")]
    assert len(widths) == page.read_text().count("<img") and all(w > 0 for w in widths), widths


def test_report_of_a_multiclass_run(runs):
    html = _check_report(runs.tiny, {"curve_loss.png", "curve_accuracy.png", "confusion_matrix.png",
                                     "f1_per_class.png"})
    for text in ("<h1>tiny</h1>", "Per class", "<td>green</td>", "Configuration", "Environment",
                 "keras", "sparse_categorical_crossentropy", "best val_loss"):
        assert text in html, text


def test_report_of_a_binary_run_has_roc_and_pr_curves(runs):
    html = _check_report(runs.binary, {"curve_loss.png", "curve_accuracy.png", "confusion_matrix.png",
                                       "f1_per_class.png", "roc.png", "precision_recall.png"})
    assert "ROC AUC" in html and "average precision" in html


def test_report_of_a_regression_run_and_a_missing_run(runs, tmp_path):
    html = _check_report(runs.regression, {"curve_loss.png", "curve_mean_absolute_error.png"})
    assert "r2" in html and "Per class" not in html
    result = invoke("report", tmp_path / "nope")
    assert (result.exit_code, result.stderr) == (2, f"Error: run directory not found: {tmp_path / 'nope'}\n")


# --- runs and compare --------------------------------------------------------------------------

def test_runs_lists_every_run_and_a_damaged_one(runs):
    result = invoke("runs", runs.root, "--json", "--sort", "name")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [r["run"] for r in listed] == ["binary", "digits", "mnist", "regression", "tiny", "zz_damaged"]
    tiny = listed[4]
    info = json.loads((runs.tiny / "run.json").read_text())
    assert (tiny["status"], tiny["dataset"], tiny["epochs_completed"], tiny["epochs"]) == (
        "completed", "npz: tiny.npz", 2, 2)
    assert tiny["test_accuracy"] == info["final_metrics"]["accuracy"] and tiny["best"] == info["best"]
    assert listed[5]["status"] == "damaged" and listed[5]["test_loss"] is None
    table = invoke("runs", runs.root).stdout
    assert re.search(r"│ zz_damaged\s+│ damaged\s+│ npz: tiny.npz", table)
    assert re.search(r"│ digits\s+│ completed │ digits\s+│ 2/2\s+│ val_loss \d\.\d{4} \(epoch \d\)", table)


def test_runs_filters_and_sorts(runs, tmp_path):
    only = json.loads(invoke("runs", runs.root, "--json", "--status", "damaged").stdout)
    assert [r["run"] for r in only] == ["zz_damaged"]
    by_loss = json.loads(invoke("runs", runs.root, "--json", "--sort", "loss").stdout)
    losses = [r["test_loss"] for r in by_loss]
    assert losses[-1] is None and losses[:-1] == sorted(losses[:-1])
    by_started = json.loads(invoke("runs", runs.root, "--json").stdout)
    started = [r["started"] for r in by_started]
    assert started[-1] is None and started[:-1] == sorted(started[:-1])  # unknown last
    empty = invoke("runs", runs.root, "--status", "failed")
    assert (empty.exit_code, empty.stdout) == (0, "")
    assert empty.stderr == f"no runs with status failed under {runs.root}\n"
    missing = invoke("runs", tmp_path / "none")
    assert (missing.exit_code, missing.stderr) == (2, f"Error: runs folder not found: {tmp_path / 'none'} "
                                                   "(expected a folder of run directories, such as runs/)\n")


def test_compare_shows_only_differing_config_keys_and_all_metrics(runs):
    result = invoke("compare", runs.tiny, runs.binary, "--json")
    assert result.exit_code == 0, result.output
    diff = json.loads(result.stdout)
    assert set(diff["config"]) == {"name", "dataset.path", "model.layers[2].Dense.units",
                                   "model.layers[2].Dense.activation", "training.loss"}
    assert diff["config"]["model.layers[2].Dense.units"] == [3, 1]
    tiny, binary = (json.loads((r / "run.json").read_text()) for r in (runs.tiny, runs.binary))
    assert diff["metrics"]["test accuracy"] == [tiny["final_metrics"]["accuracy"],
                                                binary["final_metrics"]["accuracy"]]
    assert diff["metrics"]["best.monitor"] == ["val_loss", "val_loss"]
    table = invoke("compare", runs.tiny, runs.binary).stdout
    assert re.search(r"│ training.loss\s+│ sparse_categorical_crossentropy\s+│ binary_crossentropy\s+│",
                     table)
    delta = binary["final_metrics"]["loss"] - tiny["final_metrics"]["loss"]
    assert re.search(rf"│ test loss\s+│ [\d.]+\s+│ [\d.]+\s+│ {delta:+.4f} │", table)
    one = invoke("compare", runs.tiny)
    assert (one.exit_code, one.stderr) == (2, "Error: compare needs at least two run directories; "
                                              "received 1\n")


def test_run_files_of_the_wrong_shape_are_damaged_not_internal_errors(runs, tmp_path):
    """Valid JSON that is not what dlmine writes: `runs` lists the run as damaged, `report`
    warns and writes the page without test metrics, the other commands name the file."""
    root = tmp_path / "root"
    for name in ("typed", "nulled", "shaped"):
        shutil.copytree(runs.tiny, root / name)
    info = json.loads((root / "typed" / "run.json").read_text())
    (root / "typed" / "run.json").write_text(json.dumps({**info, "final_metrics": [1]}))
    (root / "nulled" / "run.json").write_text("null")
    (root / "shaped" / "eval.json").write_text(json.dumps({"metrics": "oops"}))
    listed = {r["run"]: r["status"] for r in json.loads(invoke("runs", root, "--json").stdout)}
    assert listed == {"typed": "damaged", "nulled": "damaged", "shaped": "completed"}
    nulled = invoke("evaluate", root / "nulled")  # warned about, and evaluated all the same
    assert nulled.exit_code == 0 and "internal error" not in nulled.stderr
    assert nulled.stderr.startswith(f"Warning: {root / 'nulled' / 'run.json'} is damaged: it "
                                    "holds null, not an object")
    report = invoke("report", root / "shaped")
    assert report.exit_code == 0, report.output
    assert report.stderr.startswith(f"Warning: {root / 'shaped' / 'eval.json'} is damaged: "
                                    "'metrics' is not a mapping of names to numbers; the report "
                                    "has no test metrics")


def test_compare_shows_small_numbers_by_their_significant_digits(runs, tmp_path):
    from dlmine.results.runs import difference, value_text

    assert (value_text(1e-5), value_text(3e-5), difference([1e-5, 3e-5])) == (
        "1e-05", "3e-05", "+2e-05")
    assert (value_text(0.25), value_text(True), difference([2, 5])) == ("0.2500", "true", "+3")


# --- export ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,name", [("keras", "model.keras"), ("savedmodel", "savedmodel"),
                                      ("onnx", "model.onnx"), ("tflite", "model.tflite")])
def test_export_each_format_is_checked_against_the_checkpoint(runs, fmt, name):
    from dlmine.results.export import installed

    result = invoke("export", runs.tiny, "--format", fmt)
    if fmt == "onnx" and not all(map(installed, ("onnx", "onnxruntime", "tf2onnx"))):
        # without the `export` extra the command must say what to install (checked, not skipped)
        assert result.exit_code == 1 and "pip install 'dlmine[export]'" in result.stderr
        return
    assert result.exit_code == 0, result.output
    target = runs.tiny / "export" / name
    assert result.stdout == f"{target}\n" and target.exists()
    assert re.fullmatch(rf"checked: predictions of the {fmt} export on 8 test samples match the best "
                        r"checkpoint \(max abs difference [0-9.e+-]+\)\n", result.stderr)
    assert float(result.stderr.rsplit(" ", 1)[1].rstrip(")\n")) <= 1e-5
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_an_export_that_does_not_reproduce_the_model_leaves_no_export_folder(runs, tmp_path,
                                                                            monkeypatch):
    from dlmine.results import export

    run = tmp_path / "run"
    shutil.copytree(runs.tiny, run, ignore=shutil.ignore_patterns("export"))
    monkeypatch.setitem(export.RUNNERS, "keras", lambda path, x, source: np.full((len(x), 3), 2.0))
    result = invoke("export", run, "--format", "keras")
    assert result.exit_code == 1
    assert "Error: the keras export does not reproduce the model: its predictions on 8" in result.stderr
    assert result.stderr.endswith(". Nothing was written\n")
    assert not (run / "export").exists()


def test_export_to_a_chosen_path_and_its_checks(runs, tmp_path, monkeypatch):
    out = tmp_path / "digits.keras"
    result = invoke("export", runs.digits, "--format", "keras", "--output", out, "--checkpoint", "last")
    assert (result.exit_code, result.stdout) == (0, f"{out}\n")
    import keras

    from dlmine.data import Preprocessor
    from dlmine.model.io import load_model_file

    x = Preprocessor.load(runs.digits).transform_x(np.random.default_rng(5).uniform(0, 16, (4, 8, 8)))
    last = load_model_file(runs.digits / "checkpoints" / "last.keras").predict(x, verbose=0)
    np.testing.assert_allclose(keras.saving.load_model(out).predict(x, verbose=0), last, atol=1e-6)
    wrong = invoke("export", runs.tiny, "--format", "onnx", "--output", tmp_path / "m.keras")
    assert (wrong.exit_code, wrong.stderr) == (2, f"Error: --output {tmp_path / 'm.keras'}: the onnx "
                                                  "format writes a file ending .onnx; received '.keras'\n")
    monkeypatch.setattr("dlmine.results.export.installed", lambda name: name != "tf2onnx")
    missing = invoke("export", runs.tiny, "--format", "onnx")
    assert (missing.exit_code, missing.stderr) == (
        1, "Error: onnx export on the tensorflow backend needs the packages onnx, onnxruntime, "
           "tf2onnx; not installed: tf2onnx. Install them with: pip install 'dlmine[export]'\n")


def test_export_never_overwrites_a_run_or_a_folder_of_other_files(runs, tmp_path):
    """An export replaces its target whole: a run's files and a user's folder are refused."""
    for target, folder, where in ((runs.tiny / "checkpoints" / "last.keras", runs.tiny, "the"),
                                  (runs.digits / "model.keras", runs.digits, "another")):
        before = target.read_bytes()
        result = invoke("export", runs.tiny, "--format", "keras", "--output", target)
        assert (result.exit_code, result.stderr) == (2, (
            f"Error: --output {target}: inside {where} run directory {folder}, which an export "
            f"never overwrites; write it elsewhere, or under {folder / 'export'}/\n"))
        assert target.read_bytes() == before
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    result = invoke("export", runs.tiny, "--format", "savedmodel", "--output", keep)
    assert (result.exit_code, result.stderr) == (2, (
        f"Error: --output {keep}: the folder exists and holds files that are not a SavedModel, "
        "which the export would replace; give a new folder (or an earlier savedmodel export to "
        "replace)\n"))
    assert [p.name for p in keep.iterdir()] == ["notes.txt"]
    own = runs.tiny / "export" / "chosen.keras"
    assert invoke("export", runs.tiny, "--format", "keras", "--output", own).exit_code == 0
    assert own.is_file()


def test_importing_the_commands_loads_no_backend_or_matplotlib():
    code = ("import sys; import dlmine.cli.results; "
            "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout == "[]\n", out.stderr
