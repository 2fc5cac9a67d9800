"""Training: config -> data -> model -> fit -> run directory -> evaluation, and resume.

`build_checked_model` and the data loading do everything that can fail on the
user's input before a run directory exists, so that a mistake never leaves a
half-made run behind; `train` then writes the run directory as it goes, and
`resume` continues one from its last committed epoch.
"""

from __future__ import annotations

import hashlib
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dlmine import data as datamod
from dlmine import devices, distributed
from dlmine.config import LoadedConfig, to_yaml
from dlmine.console import Reporter
from dlmine.errors import ConfigError, DataError, Interrupted, TrainingError
from dlmine.rundir import CONFIG, HISTORY, LOG, MODEL, RUN_JSON, RunDir, now_iso


@dataclass
class Prepared:
    """Everything a training needs, checked, before its run directory exists."""

    loaded: LoadedConfig
    model: object
    info: datamod.DataInfo
    preprocessor: datamod.Preprocessor
    splits: datamod.Splits | None = None


def build_checked_model(loaded: LoadedConfig, num_classes: int | None = None,
                        splits: datamod.Splits | None = None) -> Prepared:
    """Build the model on the shape the data will give, without loading the data.

    Tables and texts are the exception: their input width (a table's encoded columns) or
    vocabulary is known from the data only, so `splits` are loaded (or given) first.

    Raises:
        ConfigError: a layer does not fit, the output does not fit the classes, or
            `preprocessing.reshape` does not fit the samples.
        DataError: the data file named by the config cannot be read.
    """
    from dlmine.model import build_model

    cfg, src = loaded.config, loaded.sources
    if splits is None and cfg.dataset.name in datamod.NEEDS_DATA:
        splits = datamod.load(cfg.dataset, cfg.seed)
    info = splits.info if splits is not None else datamod.describe(cfg.dataset)
    if num_classes is not None:
        info.num_classes = num_classes
    prep = datamod.Preprocessor.for_data(cfg.preprocessing, cfg.dataset.task, info)
    try:
        input_shape = prep.output_shape()
    except DataError as exc:
        raise ConfigError([src.problem(("preprocessing", "reshape"), str(exc))]) from None
    model = build_model(cfg, src, input_shape, info.num_classes, info.kind, info.table_layout)
    return Prepared(loaded, model, info, prep, splits)


@dataclass
class Session:
    """One training process over a run directory: fresh or resumed."""

    run: RunDir
    cfg: object
    model: object
    prep: datamod.Preprocessor
    splits: datamod.Splits
    initial_epoch: int = 0
    state: dict | None = None
    rows: list | None = None
    extra_callbacks: list | None = None


def train(loaded: LoadedConfig, *, run_dir: Path | None, runs_root: Path, device: str,
          reporter: Reporter, argv: list[str], folds: int | None = None,
          extra_callbacks: list | None = None) -> RunDir:
    """Train a config into a new run directory and evaluate it on the test split.

    Args:
        folds: k-fold cross-validation: one run per fold in `RUN_DIR/fold-K/`, each validated
            on its fold, and the mean and standard deviation of their test metrics.
        extra_callbacks: Keras callbacks added after dlmine's own (`dlmine tune` prunes with
            one); they see each complete epoch's logs.

    Returns:
        The run directory, `completed`.

    Raises:
        ConfigError, DataError: before the run directory is created.
        TrainingError: the loss diverged (the run is marked `failed`).
        Interrupted: Ctrl-C or SIGTERM (the run is marked `interrupted`).
    """
    cfg = loaded.config
    device_used = _set_up_backend(cfg, device)
    prepared = build_checked_model(loaded)
    splits = prepared.splits or datamod.load(cfg.dataset, cfg.seed)
    if folds:
        from dlmine.folds import check_folds

        check_folds(splits, folds)  # before the run directory exists
    run = RunDir.create(run_dir, runs_root, cfg.name)
    if folds:
        from dlmine.folds import train_folds

        return train_folds(loaded, splits, run, folds, device_used, reporter, argv)
    _new_run(loaded, prepared, splits, run, device_used, reporter, argv, extra_callbacks)
    return run


def _new_run(loaded: LoadedConfig, prepared: Prepared, splits: datamod.Splits, run: RunDir,
             device_used: str, reporter: Reporter, argv: list[str],
             extra_callbacks: list | None = None) -> dict:
    """Fit the preprocessing, write the run's first files, train and evaluate; the report."""
    from dlmine.model import compile_model

    cfg = loaded.config
    if cfg.dataset.task == "classification" and splits.info.num_classes != prepared.info.num_classes:
        prepared = build_checked_model(loaded, splits.info.num_classes, splits)
    prep = prepared.preprocessor
    prep.num_classes = splits.info.num_classes
    compile_model(prepared.model, cfg)
    prep.fit(splits.x_train)
    if splits.info.kind == "text":
        from dlmine.model import adapt_text

        adapt_text(prepared.model, splits.x_train)
    config_text = to_yaml(cfg)
    run.write(CONFIG, config_text)
    run.write_json(RUN_JSON, {
        "status": "running", "name": cfg.name, "started": now_iso(), "ended": None,
        "duration_s": None, "command": argv, "versions": devices.versions(),
        "device": device_used, "replicas": devices.replicas(prepared.model), "seed": cfg.seed,
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "data_fingerprint": splits.fingerprint,
        "samples": {"train": len(splits.x_train),
                    "validation": 0 if splits.x_val is None else len(splits.x_val),
                    "test": len(splits.x_test)},
        "input_shape": list(prep.output_shape()), "num_classes": splits.info.num_classes,
        "class_names": splits.info.class_names, "epochs_completed": 0, "final_metrics": None,
    })
    for name, content in prep.state_files().items():
        run.write(name, content)
    session = Session(run, cfg, prepared.model, prep, splits, extra_callbacks=extra_callbacks)
    return _run_session(session, reporter, argv)


def resume(run_path: Path, loaded: LoadedConfig, *, force: bool, device: str,
           reporter: Reporter, argv: list[str]) -> RunDir:
    """Continue an interrupted or failed run from its last committed epoch.

    Args:
        run_path: the run directory.
        loaded: the config to continue with: the run's own `config.yaml` (with any
            `--set`), or a CONFIG file given on the command line.
        force: accept a config that differs from the run's.

    Raises:
        UsageError: the config changed (without `force`).
        DlmineError: nothing to resume, or a damaged checkpoint.
    """
    run = RunDir.open(run_path)
    with run.lock():  # before reading any state: a live trainer may be writing it
        _remove_stale_temporaries(run)
        return _resume_locked(run, loaded, force=force, device=device, reporter=reporter,
                              argv=argv)


def _remove_stale_temporaries(run: RunDir) -> None:
    """Temporary files a killed process left behind (never the files they were to replace)."""
    from dlmine.rundir import CHECKPOINTS

    for folder in (run.path, run.path / CHECKPOINTS):
        for stale in list(folder.glob(".*.tmp")) + list(folder.glob(".*.keras")):
            stale.unlink(missing_ok=True)


def _resume_locked(run: RunDir, loaded: LoadedConfig, *, force: bool, device: str,
                   reporter: Reporter, argv: list[str]) -> RunDir:
    """`resume`, with the run directory's lock held."""
    from dlmine.errors import UsageError
    from dlmine.evaluate import load_model_file
    from dlmine.state import load_state, restore_seed_states

    info = run.read_json(RUN_JSON)
    cfg = loaded.config
    saved = _saved_config(run)
    changes = config_diff(asdict(saved), asdict(cfg))
    if changes and not force:
        raise UsageError("the config differs from the one this run was trained with; "
                         "resume with --force to accept:\n" + "\n".join(f"  {c}" for c in changes))
    if info.get("status") == "completed" and not changes:
        reporter.info(f"{run.path} is already completed ({info.get('epochs_completed')} "
                      "epochs); nothing to do")
        return run
    state, checkpoint = load_state(run, warn=reporter.warn)
    device_used = _set_up_backend(cfg, device)
    splits = datamod.load(cfg.dataset, cfg.seed)
    if info.get("data_fingerprint") not in (None, splits.fingerprint) and not force:
        raise UsageError("the data differ from those this run was trained on (the fingerprint "
                         "in run.json does not match); resume with --force to accept")
    prep = datamod.Preprocessor.load(run.path)
    with devices.distribution_scope(cfg.training.distribution):
        model = load_model_file(checkpoint, "last")
    restore_seed_states(model, state["seed_generators"])
    rows = _history_rows(run, state["epoch"])
    first_epoch = state["epoch"]
    if (state.get("callbacks", {}).get("early_stopping") or {}).get("stopped_epoch"):
        first_epoch = cfg.training.epochs  # early stopping had ended it: only finish the run
    session = Session(run, cfg, model, prep, splits, first_epoch, state, rows)

    def mark_resumed():
        if changes:
            run.write(CONFIG, to_yaml(cfg))
        resumes = info.get("resumed", []) + [{"at": now_iso(), "from_epoch": state["epoch"],
                                               "device": device_used,
                                               "replicas": devices.replicas(model),
                                               "config_changes": changes}]
        run.update_run(status="running", ended=None, error=None, resumed=resumes)

    _run_session(session, reporter, argv, before=mark_resumed)
    return run


def _saved_config(run: RunDir):
    from dlmine.config import load_config

    return load_config(run / CONFIG).config


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """`training.epochs: 5 -> 10` for every dotted key whose value differs."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        dotted = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(config_diff(a, b, dotted + "."))
        elif a != b:
            out.append(f"{dotted}: {a!r} -> {b!r}")
    return out


def _history_rows(run: RunDir, epochs: int) -> list[dict]:
    """The committed rows of `history.csv`: a row written after the last state is dropped.

    Raises:
        DlmineError: the file is missing, damaged, or lacks committed epochs (a resume would
            leave a gap).
    """
    import csv

    from dlmine.errors import DlmineError

    path = run / HISTORY
    try:
        with open(path, newline="") as handle:
            rows = [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items()}
                    for row in csv.DictReader(handle)]
    except FileNotFoundError:
        rows = []
    except (ValueError, TypeError, OSError, csv.Error) as exc:
        raise DlmineError(f"{path} is damaged ({exc}); cannot resume without losing the "
                          "history of the epochs before") from None
    rows = [row for row in rows if row["epoch"] <= epochs]
    if [row["epoch"] for row in rows] != list(range(1, epochs + 1)):
        raise DlmineError(f"{path} does not hold epochs 1..{epochs}, which training_state.json "
                          "committed; cannot resume without a gap in the history")
    return rows


def _set_up_backend(cfg, device: str) -> str:
    import keras

    used = devices.describe(device)
    if cfg.training.deterministic:
        devices.make_deterministic()
    keras.utils.set_random_seed(cfg.seed)
    return used


def _run_session(session: Session, reporter: Reporter, argv: list[str], before=None) -> dict:
    run = session.run
    started = time.time()
    with run.lock():
        if before is not None:
            before()
        try:
            report = _train_in(session, reporter, argv, started)
        except (Interrupted, TrainingError):
            raise
        except BaseException as exc:
            fail_run(run, exc)
            raise
    reporter.metrics_table("test metrics (best checkpoint)", report["metrics"])
    return report


def _train_in(session: Session, reporter: Reporter, argv, started) -> dict:
    run, cfg, model, prep, splits = (session.run, session.cfg, session.model, session.prep,
                                     session.splits)
    with open(run / LOG, "a", encoding="utf-8") as log:
        verb = f"resume from epoch {session.initial_epoch}" if session.state else "train"
        if devices.replicas(model) > 1:
            how = "jax processes" if distributed.joined() else cfg.training.distribution
            verb += f" on {devices.replicas(model)} replicas ({how})"
        log.write(f"{now_iso()} dlmine {verb}: {' '.join(argv)}\n")
        if not session.state:
            log.write(model_summary(model) + "\n")
        reporter.info(f"run directory: {run.path}")
        outcome = _fit(session, reporter, log)
        status = _finish_status(outcome)
        run.update_run(epochs_completed=len(outcome.recorder.rows), best=outcome.best,
                       duration_s=round(_previous_duration(run) + time.time() - started, 3))
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
        with distributed.local_only():  # predict cannot fetch outputs spread over processes
            best = load_checkpoint(run, "best")
            x_test, y_test = prep.transform(splits.x_test, splits.y_test)
            report = evaluate_model(best, x_test, y_test, cfg, splits.info.class_names,
                                    cfg.training.batch_size)
        report = {"split": "test", "checkpoint": "best", **report}
        run.write_json("eval.json", report)
        log.write(f"{now_iso()} test: " + ", ".join(f"{k} {v:.4f}" for k, v in
                                                    report["metrics"].items()) + "\n")
        run.update_run(status="completed", ended=now_iso(), final_metrics=report["metrics"])
    return report


def _previous_duration(run: RunDir) -> float:
    return float(run.read_json(RUN_JSON).get("duration_s") or 0.0)


@dataclass
class _Outcome:
    recorder: object
    best: dict | None
    interrupted: bool


def _fit(session: Session, reporter: Reporter, log) -> _Outcome:
    from dlmine.batches import as_input, training_batches
    from dlmine.callbacks import AtomicCheckpoint, RunRecorder
    from dlmine.state import StateWriter

    cfg, prep, splits, run = session.cfg, session.prep, session.splits, session.run
    t = cfg.training
    x_train, y_train = prep.transform(splits.x_train, splits.y_train)
    validation = None if splits.x_val is None else prep.transform(splits.x_val, splits.y_val)
    weights = class_weights(cfg, splits.y_train)
    sample_weight = None if weights is None else np.array(
        [weights[int(label)] for label in splits.y_train], dtype="float32")
    batches = distributed.local_share(training_batches(x_train, y_train, t.batch_size, cfg.seed,
                                                       t.shuffle, session.initial_epoch,
                                                       sample_weight))
    recorder = RunRecorder(run, reporter, log, t.epochs, len(batches), session.rows)
    checkpoint = AtomicCheckpoint(run, recorder, t.checkpoint.monitor, t.checkpoint.mode,
                                  (session.state or {}).get("best"))
    stateful = _keras_callbacks(cfg, session)
    writer = StateWriter(run, recorder, checkpoint, stateful)
    # The recorder logs the learning rate the epoch used, before reduce-LR changes it; the
    # checkpoint comes after early stopping and reduce-LR, so last.keras holds their changes,
    # and the state is written last, as the commit marker.
    callbacks = [batches.callback(), recorder, *stateful.values(), checkpoint, writer,
                 *(session.extra_callbacks or [])]
    if t.tensorboard:
        import keras

        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run / "tensorboard")))
    with _graceful_stop(recorder) as stop:
        session.model.fit(batches.feed(), epochs=t.epochs, initial_epoch=session.initial_epoch,
                          validation_data=None if validation is None else as_input(
                              *validation, batch_size=t.batch_size),
                          verbose=0, callbacks=callbacks,
                          shuffle=False)  # the order is EpochShuffled's, keyed to seed and epoch
    best = None
    if checkpoint.best is not None:
        best = {"monitor": checkpoint.monitor, "mode": checkpoint.mode, "value": checkpoint.best,
                "epoch": checkpoint.best_epoch}
    return _Outcome(recorder, best, stop["signal"] is not None)


def _keras_callbacks(cfg, session: Session) -> dict:
    from dlmine.state import ResumableEarlyStopping, ResumableReduceLROnPlateau

    t, out = cfg.training, {}
    saved = (session.state or {}).get("callbacks", {})
    if t.early_stopping is not None:
        es = t.early_stopping
        best_weights = None
        if session.state and es.restore_best_weights:
            from dlmine.evaluate import load_checkpoint

            best_weights = load_checkpoint(session.run, "best").get_weights()
        out["early_stopping"] = ResumableEarlyStopping(
            saved=saved.get("early_stopping"), best_weights_from=best_weights,
            monitor=es.monitor, patience=es.patience, min_delta=es.min_delta, mode=es.mode,
            restore_best_weights=es.restore_best_weights)
    if t.reduce_lr_on_plateau is not None:
        rl = t.reduce_lr_on_plateau
        out["reduce_lr_on_plateau"] = ResumableReduceLROnPlateau(
            saved=saved.get("reduce_lr_on_plateau"), monitor=rl.monitor, factor=rl.factor,
            patience=rl.patience, min_lr=rl.min_lr)
    return out


def class_weights(cfg, y_train: np.ndarray) -> dict | None:
    """The weight of each class: null, `balanced` from the training labels, or as given."""
    weights = cfg.training.class_weight
    if weights is None:
        return None
    if weights == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        classes = np.unique(y_train)
        values = compute_class_weight("balanced", classes=classes, y=y_train)
        return {int(c): float(w) for c, w in zip(classes, values, strict=True)}
    return {int(label): float(weights.get(int(label), 1.0)) for label in np.unique(y_train)}


@contextmanager
def _graceful_stop(recorder):
    """First Ctrl-C or SIGTERM: finish the batch and stop; a second one stops at once."""
    state = {"signal": None}

    def handler(signum, frame):
        if state["signal"] is not None:
            raise KeyboardInterrupt
        state["signal"] = signal.Signals(signum).name
        recorder.request_stop()

    # Processes of a job cannot all finish the same batch: there a signal stops at once.
    handled = () if distributed.joined() else (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, handler) for s in handled}
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
            f"last complete epoch. Continue with: dlmine train --resume {run.path}")


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
