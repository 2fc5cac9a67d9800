"""Training: config -> data -> model -> fit -> run directory -> evaluation.

`prepare` does everything that can fail on the user's input before a run
directory exists (config, shapes, data), so that a mistake never leaves a
half-made run behind; `train` then writes the run directory as it goes.
"""

from __future__ import annotations

import hashlib
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlmine import data as datamod
from dlmine import devices
from dlmine.config import LoadedConfig, to_yaml
from dlmine.console import Reporter
from dlmine.errors import ConfigError, DataError, Interrupted, TrainingError
from dlmine.rundir import CONFIG, LOG, MODEL, RUN_JSON, RunDir, now_iso


@dataclass
class Prepared:
    """Everything a training needs, checked, before its run directory exists."""

    loaded: LoadedConfig
    model: object
    info: datamod.DataInfo
    preprocessor: datamod.Preprocessor


def build_checked_model(loaded: LoadedConfig) -> Prepared:
    """Build the model on the shape the data will give, without loading the data.

    Raises:
        ConfigError: a layer does not fit, the output does not fit the classes, or
            `preprocessing.reshape` does not fit the samples.
        DataError: the data file named by the config cannot be read.
    """
    import keras

    from dlmine.model import build_model

    cfg, src = loaded.config, loaded.sources
    info = datamod.describe(cfg.dataset)
    prep = datamod.Preprocessor(cfg.preprocessing, cfg.dataset.task, info.num_classes,
                                info.sample_shape)
    try:
        input_shape = prep.output_shape()
    except DataError as exc:
        raise ConfigError([src.problem(("preprocessing", "reshape"), str(exc))]) from None
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg, src, input_shape, info.num_classes)
    return Prepared(loaded, model, info, prep)


def train(loaded: LoadedConfig, *, run_dir: Path | None, runs_root: Path, device: str,
          reporter: Reporter, argv: list[str]) -> RunDir:
    """Train a config into a new run directory and evaluate it on the test split.

    Returns:
        The run directory, `completed`.

    Raises:
        ConfigError, DataError: before the run directory is created.
        TrainingError: the loss diverged (the run is marked `failed`).
        Interrupted: Ctrl-C or SIGTERM (the run is marked `interrupted`).
    """
    from dlmine.model import compile_model

    cfg = loaded.config
    device_used = devices.describe(device)
    if cfg.training.deterministic:
        devices.make_deterministic()
    prepared = build_checked_model(loaded)
    splits = datamod.load(cfg.dataset, cfg.seed)
    prep = prepared.preprocessor
    prep.num_classes = splits.info.num_classes
    if cfg.dataset.task == "classification" and splits.info.num_classes != prepared.info.num_classes:
        prepared = build_checked_model(loaded)  # labels beyond what describe() saw
    model = prepared.model
    compile_model(model, cfg)
    prep.fit(splits.x_train)
    x_train, y_train = prep.transform(splits.x_train, splits.y_train)
    validation = None if splits.x_val is None else prep.transform(splits.x_val, splits.y_val)

    run = RunDir.create(run_dir, runs_root, cfg.name)
    config_text = to_yaml(cfg)
    run.write(CONFIG, config_text)
    started = time.time()
    run.write_json(RUN_JSON, {
        "status": "running", "name": cfg.name, "started": now_iso(), "ended": None,
        "duration_s": None, "command": argv, "versions": devices.versions(),
        "device": device_used, "seed": cfg.seed,
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "data_fingerprint": splits.fingerprint,
        "samples": {"train": len(x_train), "validation": 0 if validation is None else len(validation[0]),
                    "test": len(splits.x_test)},
        "input_shape": list(prep.output_shape()), "num_classes": splits.info.num_classes,
        "class_names": splits.info.class_names, "epochs_completed": 0, "final_metrics": None,
    })
    for name, content in prep.state_files().items():
        run.write(name, content)
    try:
        report = _train_in(run, model, cfg, prep, splits, x_train, y_train, validation,
                           reporter, argv, started)
    except (Interrupted, TrainingError):
        raise
    except BaseException as exc:
        fail_run(run, exc)
        raise
    reporter.metrics_table("test metrics (best checkpoint)", report["metrics"])
    return run


def _train_in(run, model, cfg, prep, splits, x_train, y_train, validation, reporter, argv,
              started) -> dict:
    with run.lock(), open(run / LOG, "a", encoding="utf-8") as log:
        log.write(f"{now_iso()} dlmine train {' '.join(argv)}\n{model_summary(model)}\n")
        reporter.info(f"run directory: {run.path}")
        outcome = _fit(model, cfg, run, reporter, log, x_train, y_train, validation, splits)
        status = _finish_status(outcome)
        run.update_run(epochs_completed=len(outcome.recorder.rows),
                       best=outcome.best, duration_s=round(time.time() - started, 3))
        if status != "completed":
            message = _stop_message(outcome, run)
            log.write(f"{now_iso()} {status}: {message}\n")
            run.update_run(status=status, ended=now_iso(), error=message)
            if status == "interrupted":
                raise Interrupted(message)
            raise TrainingError(message)
        from dlmine.evaluate import evaluate_model, load_checkpoint
        from dlmine.rundir import atomic_save_model

        atomic_save_model(model, run / MODEL)
        best = load_checkpoint(run, "best")
        x_test, y_test = prep.transform(splits.x_test, splits.y_test)
        report = evaluate_model(best, x_test, y_test, cfg, splits.info.class_names,
                                cfg.training.batch_size)
        report = {"split": "test", "checkpoint": "best", **report}
        run.write_json("eval.json", report)
        log.write(f"{now_iso()} test: " + ", ".join(f"{k} {v:.4f}" for k, v in
                                                    report["metrics"].items()) + "\n")
        run.update_run(status="completed", ended=now_iso(), final_metrics=report["metrics"],
                       duration_s=round(time.time() - started, 3))
    return report


@dataclass
class _Outcome:
    recorder: object
    best: dict | None
    interrupted: bool


def _fit(model, cfg, run, reporter, log, x_train, y_train, validation, splits) -> _Outcome:
    from dlmine.callbacks import AtomicCheckpoint, RunRecorder

    t = cfg.training
    steps = int(np.ceil(len(x_train) / t.batch_size))
    recorder = RunRecorder(run, reporter, log, t.epochs, steps)
    checkpoint = AtomicCheckpoint(run, recorder, t.checkpoint.monitor, t.checkpoint.mode)
    callbacks = [recorder, checkpoint, *_keras_callbacks(cfg)]
    with _graceful_stop(recorder) as state:
        model.fit(x_train, y_train, batch_size=t.batch_size, epochs=t.epochs,
                  validation_data=validation, shuffle=t.shuffle, verbose=0,
                  class_weight=class_weights(cfg, splits.y_train), callbacks=callbacks)
    best = None
    if checkpoint.best is not None:
        best = {"monitor": checkpoint.monitor, "mode": checkpoint.mode, "value": checkpoint.best,
                "epoch": checkpoint.best_epoch}
    return _Outcome(recorder, best, state["signal"] is not None)


def _keras_callbacks(cfg) -> list:
    import keras

    t, out = cfg.training, []
    if t.early_stopping is not None:
        es = t.early_stopping
        out.append(keras.callbacks.EarlyStopping(
            monitor=es.monitor, patience=es.patience, min_delta=es.min_delta, mode=es.mode,
            restore_best_weights=es.restore_best_weights))
    if t.reduce_lr_on_plateau is not None:
        rl = t.reduce_lr_on_plateau
        out.append(keras.callbacks.ReduceLROnPlateau(
            monitor=rl.monitor, factor=rl.factor, patience=rl.patience, min_lr=rl.min_lr))
    return out


def class_weights(cfg, y_train: np.ndarray) -> dict | None:
    """The `class_weight` of `fit`: null, `balanced` from the training labels, or as given."""
    weights = cfg.training.class_weight
    if weights is None:
        return None
    if weights == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        classes = np.unique(y_train)
        values = compute_class_weight("balanced", classes=classes, y=y_train)
        return {int(c): float(w) for c, w in zip(classes, values, strict=True)}
    return {int(label): float(weights.get(label, 1.0)) for label in np.unique(y_train)}


@contextmanager
def _graceful_stop(recorder):
    """First Ctrl-C or SIGTERM: finish the batch and stop; a second one stops at once."""
    state = {"signal": None}

    def handler(signum, frame):
        if state["signal"] is not None:
            raise KeyboardInterrupt
        state["signal"] = signal.Signals(signum).name
        recorder.request_stop()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    except KeyboardInterrupt:
        state["signal"] = state["signal"] or "SIGINT"
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _finish_status(outcome: _Outcome) -> str:
    if outcome.recorder.diverged:
        return "failed"
    if outcome.interrupted:
        return "interrupted"
    return "completed"


def _stop_message(outcome: _Outcome, run: RunDir) -> str:
    epochs = len(outcome.recorder.rows)
    if outcome.recorder.diverged:
        return (f"training diverged: {outcome.recorder.diverged}. The last good checkpoint "
                f"({epochs} epoch(s)) is kept in {run.path}/checkpoints. Try a lower "
                "training.optimizer.learning_rate, or preprocessing.rescale / standardize")
    return (f"interrupted after {epochs} complete epoch(s); checkpoints/last.keras holds the "
            f"last complete epoch in {run.path}")


def model_summary(model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    return "\n".join(lines)


def fail_run(run: RunDir, exc: BaseException) -> None:
    """Mark a run `failed` after an unexpected error, keeping whatever it wrote."""
    try:
        run.update_run(status="failed", ended=now_iso(), error=f"{type(exc).__name__}: {exc}")
    except Exception:
        print(f"could not mark {run.path} as failed", file=sys.stderr)
