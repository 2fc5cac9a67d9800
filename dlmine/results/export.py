"""`dlmine export`: a run's checkpoint in a format other programs load, checked before it is kept.

Each export is written to a temporary name beside its target, loaded back with the
format's own runtime and run on a few test samples; only when its predictions match the
Keras model's (within `ATOL`) does it replace the target, so a failed export never leaves
a broken file where a good one was. A checkpoint trained with mixed precision goes to ONNX
and TFLite computing in float32, its weights unchanged (they are float32 under mixed
precision too); `keras` and `savedmodel` keep its policy.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlmine.backend.runtime import silenced
from dlmine.console import Reporter
from dlmine.data import Preprocessor, Source
from dlmine.errors import DlmineError, UsageError
from dlmine.model.io import in_float32, load_checkpoint
from dlmine.results.predict import source_of, split_inputs
from dlmine.rundir import CONFIG, RUN_JSON, RunDir, fsync_dir

EXPORT_DIR = "export"
DEFAULT_NAMES = {"keras": "model.keras", "savedmodel": "savedmodel", "onnx": "model.onnx",
                 "tflite": "model.tflite"}
SUFFIXES = {"keras": ".keras", "onnx": ".onnx", "tflite": ".tflite"}  # savedmodel is a folder
CHECK_SAMPLES = 8
ATOL = 1e-4  # float32 graphs rewritten by a converter differ in the last digits
RTOL = 1e-5  # of the largest output: a regression predicting 300 may differ by 3e-3
FLOAT32_ONLY = {"onnx", "tflite"}  # their converters refuse mixed precision's 16-bit casts
INSTALL_HINT = "pip install 'dlmine[export]'"


@dataclass
class Exported:
    """Where an export went and how closely it reproduces the checkpoint."""

    path: Path
    max_abs_diff: float
    samples: int
    inputs: str  # "test samples", or "random inputs" when the data could not be rebuilt


def export_run(run_dir: Path, fmt: str, output: Path | None, checkpoint: str, reporter: Reporter,
               quiet_backend: bool = True) -> Exported:
    """Export a run's checkpoint as `fmt`, load it back and compare its predictions.

    Args:
        run_dir: a run directory.
        fmt: `keras`, `savedmodel`, `onnx` or `tflite`.
        output: where to write; None for `RUN_DIR/export/<model.keras|savedmodel|...>`.
        checkpoint: `best` or `last`.
        reporter: for the warning when the test data cannot be rebuilt.
        quiet_backend: hide the converters' log lines (not with `--debug`).

    Returns:
        The path written and the largest absolute difference of the predictions.

    Raises:
        UsageError: a wrong `--output` name. DlmineError: a missing package, an export that
            fails, or one whose predictions differ by more than `ATOL`.
    """
    run = RunDir.open(run_dir)
    run.refuse_folds("export")
    run.check_config(warn=reporter.warn)
    target = export_path(run, fmt, output)
    require(fmt)
    model = load_checkpoint(run, checkpoint)
    if fmt in FLOAT32_ONLY:
        model = in_float32(model)
    source = source_of(run)
    x, inputs = check_inputs(run, source, reporter)
    expected = np.asarray(model.predict(source.as_input(x), verbose=0))
    with staged(target) as tmp, _quiet(quiet_backend):
        try:
            WRITERS[fmt](model, tmp)
            got = np.asarray(RUNNERS[fmt](tmp, x, source)).reshape(expected.shape)
        except DlmineError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else ""
            hint = ("; TensorFlow's converter cannot take every layer JAX traces (Dropout's "
                    "seed state, embedding lookups): export this run with "
                    "KERAS_BACKEND=tensorflow, which reads the same checkpoint"
                    if fmt == "tflite" and _backend() == "jax" else "")
            raise DlmineError(f"export to {fmt} failed: {type(exc).__name__}: {first}{hint}") \
                from None
        diff = float(np.max(np.abs(got - expected)))
        tolerance = ATOL + RTOL * float(np.max(np.abs(expected)))
        if not diff <= tolerance:
            raise DlmineError(f"the {fmt} export does not reproduce the model: its predictions on "
                              f"{len(x)} {inputs} differ by up to {diff:.3g}; expected at most "
                              f"{tolerance:.3g}. Nothing was written")
    return Exported(target, diff, len(x), inputs)


def export_path(run: RunDir, fmt: str, output: Path | None) -> Path:
    """The target of an export, its name checked against the format."""
    if output is None:
        return run / EXPORT_DIR / DEFAULT_NAMES[fmt]
    output = Path(output)
    suffix = SUFFIXES.get(fmt)
    if suffix and output.suffix.lower() != suffix:
        raise UsageError(f"--output {output}: the {fmt} format writes a file ending {suffix}; "
                         f"received '{output.suffix or 'no extension'}'")
    if suffix and output.is_dir():
        raise UsageError(f"--output {output} is a folder; the {fmt} format writes a file ending {suffix}")
    if not suffix and output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is a file; the savedmodel format writes a folder")
    if not output.parent.is_dir() and output.parent.resolve() != (run / EXPORT_DIR).resolve():
        raise UsageError(f"--output {output}: the folder {output.parent} does not exist")
    _refuse_overwrite(output, run)
    return output


def _refuse_overwrite(output: Path, run: RunDir) -> None:
    """An export replaces its target whole: never a run's files (only `RUN_DIR/export/` is
    for exports), nor a folder that holds anything but an earlier SavedModel.

    Raises:
        UsageError: the target is one of those.
    """
    target = output.resolve()
    for folder in (target, *target.parents):
        if (folder / CONFIG).is_file() and (folder / RUN_JSON).is_file():  # a run directory
            if not target.is_relative_to(folder / EXPORT_DIR) or target == folder / EXPORT_DIR:
                own = folder == run.path.resolve()
                raise UsageError(f"--output {output}: inside {'the' if own else 'another'} run "
                                 f"directory {folder}, which an export never overwrites; "
                                 f"write it elsewhere, or under {folder / EXPORT_DIR}/")
            break
    if target.is_dir() and any(target.iterdir()) and not (target / "saved_model.pb").is_file():
        raise UsageError(f"--output {output}: the folder exists and holds files that are not a "
                         "SavedModel, which the export would replace; give a new folder (or "
                         "an earlier savedmodel export to replace)")


def require(fmt: str) -> None:
    """Fail with the command that installs what `fmt` needs on this backend, before any work."""
    import keras

    backend = keras.backend.backend()
    needs = {"keras": [], "savedmodel": ["tensorflow"], "tflite": ["tensorflow"],
             "onnx": ["onnx", "onnxruntime", "jax2onnx" if backend == "jax" else "tf2onnx"]}[fmt]
    if backend not in ("tensorflow", "jax") and fmt != "keras":
        raise DlmineError(f"{fmt} export works with the tensorflow and jax backends; this is "
                          f"{backend}. Run with KERAS_BACKEND=tensorflow")
    missing = [name for name in needs if not installed(name)]
    if not missing:
        return
    hint = (f"Install them with: {INSTALL_HINT}" if "jax2onnx" not in missing else
            "Install it with: pip install jax2onnx (not part of dlmine[export]), or export with "
            "KERAS_BACKEND=tensorflow")
    raise DlmineError(f"{fmt} export on the {backend} backend needs the packages {', '.join(needs)}; "
                      f"not installed: {', '.join(missing)}. {hint}")


def installed(package: str) -> bool:
    """Whether `package` can be imported (without importing it)."""
    return importlib.util.find_spec(package) is not None


def check_inputs(run: RunDir, source: Source, reporter: Reporter) -> tuple[np.ndarray, str]:
    """The first `CHECK_SAMPLES` test samples, preprocessed; seeded random inputs of the model's
    input shape (with a warning) when the data cannot be rebuilt."""
    try:
        return split_inputs(run, "test")[0][:CHECK_SAMPLES], "test samples"
    except DlmineError as exc:
        prep = Preprocessor.load(run.path)
        if source.kind != "arrays":  # no random stand-in for tables or texts
            raise
        reporter.warn(f"{exc}; checking the export on {CHECK_SAMPLES} random inputs instead")
    shape = prep.output_shape()
    rng = np.random.default_rng(0)
    return rng.normal(size=(CHECK_SAMPLES, *shape)).astype("float32"), "random inputs"


@contextlib.contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A temporary path beside `target` that replaces it when the block succeeds."""
    tmp = target.with_name(f".{target.stem}.tmp{os.getpid()}{target.suffix}")
    made = not target.parent.exists()  # RUN_DIR/export/, removed again if the export fails
    try:
        target.parent.mkdir(exist_ok=True)  # an --output folder was checked to exist
        _remove(tmp)
        yield tmp
        if tmp.is_dir() and target.is_dir():
            old = target.with_name(f".{target.name}.old{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            _remove(old)
        else:
            os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        raise DlmineError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        _remove(tmp)
        if made and not target.exists():
            with contextlib.suppress(OSError):
                target.parent.rmdir()  # only when empty


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet(enabled: bool) -> Iterator[None]:
    """Converters print to stdout (which holds the command's result) and log to the C stderr."""
    if not enabled:
        with contextlib.redirect_stdout(sys.stderr):
            yield
        return
    with silenced(1, 2), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --- one writer and one runner per format -------------------------------------------------------

def _write_keras(model, path: Path) -> None:
    model.save(path)


def _run_keras(path: Path, x: np.ndarray, source: Source) -> np.ndarray:
    import keras

    import dlmine.model.layers  # noqa: F401  (registers ColumnEmbedding; imports Keras)

    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    return model.predict(source.as_input(x), verbose=0)


def _backend() -> str:
    import keras

    return keras.backend.backend()


def _write_savedmodel(model, path: Path) -> None:
    """The `serve` endpoint calls the model with `training=False`, so that `Random*`
    augmentation layers pass images through, as in `predict` (`model.export` left them on)."""
    import keras
    import tensorflow as tf

    if len(model.inputs) != 1:
        model.export(str(path), format="tf_saved_model", verbose=False)
        return
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = model.inputs[0]
    archive.add_endpoint(name="serve", fn=lambda x: model(x, training=False),
                         input_signature=[tf.TensorSpec((None, *spec.shape[1:]), spec.dtype)])
    archive.write_out(str(path), verbose=False)


def _run_savedmodel(path: Path, x: np.ndarray, source: Source) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # held: its variables die with it
    return loaded.serve(tf.constant(x)).numpy()


def _write_onnx(model, path: Path) -> None:
    model.export(str(path), format="onnx", verbose=False)


def _run_onnx(path: Path, x: np.ndarray, source: Source) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _write_tflite(model, path: Path) -> None:
    import tensorflow as tf

    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())


def _run_tflite(path: Path, x: np.ndarray, source: Source) -> np.ndarray:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    source = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(source["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(source["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


WRITERS = {"keras": _write_keras, "savedmodel": _write_savedmodel, "onnx": _write_onnx,
           "tflite": _write_tflite}
RUNNERS = {"keras": _run_keras, "savedmodel": _run_savedmodel, "onnx": _run_onnx,
           "tflite": _run_tflite}
