"""One training process over a run directory, fresh or resumed: fit, commit, evaluate.

`new_run` fits the preprocessing and writes the run's first files; `run_session` trains
with the per-epoch commit protocol (history row, best.keras, last.keras, then
training_state.json), evaluates the best checkpoint on the test split and marks the run
`completed`, `interrupted` or `failed`.
"""

from __future__ import annotations

import hashlib
import signal
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import yaml

from dlmine.backend import devices, distributed
from dlmine.config import LoadedConfig, to_yaml
from dlmine.config.checks import list_size
from dlmine.console import Reporter, number
from dlmine.data import Preprocessor, Source, Splits
from dlmine.errors import Interrupted, TrainingError
from dlmine.model.build import compile_model
from dlmine.model.io import load_checkpoint
from dlmine.results.evaluate import evaluate_model
from dlmine.rundir import (
    CHECKPOINTS,
    CONFIG,
    LOG,
    MODEL,
    RUN_JSON,
    RunDir,
    atomic_copy,
    atomic_save_model,
    now_iso,
)
from dlmine.train import tracking
from dlmine.train.prepare import Prepared, build_checked_model, model_summary


@dataclass
class Session:
    """One training process over a run directory: fresh or resumed."""

    run: RunDir
    cfg: object
    model: object
    prep: Preprocessor
    splits: Splits
    source: Source
    initial_epoch: int = 0
    state: dict | None = None
    rows: list | None = None
    extra_callbacks: list | None = None
    track: tracking.Target | None = None  # an MLflow run besides the run directory
    tracker: tracking.Tracker | None = None


def new_run(loaded: LoadedConfig, prepared: Prepared, splits: Splits, run: RunDir,
            device_used: str, reporter: Reporter, argv: list[str],
            extra_callbacks: list | None = None, track: tracking.Target | None = None) -> dict:
    """Fit the preprocessing, write the run's first files, train and evaluate; the report."""
    cfg = loaded.config
    if cfg.dataset.task == "classification" and splits.info.num_classes != prepared.info.num_classes:
        prepared = build_checked_model(loaded, splits.info.num_classes, splits, prepared.source)
    prep = prepared.preprocessor
    prep.num_classes = splits.info.num_classes
    compile_model(prepared.model, cfg)
    prep.fit(splits.x_train)
    config_text = to_yaml(cfg)
    with run.removed_on_failure():  # a full disk here leaves no half-made run directory
        run.write(CONFIG, config_text)
        run.write_json(RUN_JSON, first_run_json(config_text, cfg, prepared, splits, prep,
                                                device_used, argv))
    for name, content in prep.state_files().items():
        run.write(name, content)
    session = Session(run, cfg, prepared.model, prep, splits, prepared.source,
                      extra_callbacks=extra_callbacks, track=track)
    return run_session(session, reporter, argv)


def first_run_json(config_text: str, cfg, prepared: Prepared, splits: Splits,
                   prep: Preprocessor, device_used: str, argv: list[str]) -> dict:
    """`run.json` as a new run starts; `config` is the resolved config, for `config_sha256`'s
    check to say what an edit of `config.yaml` changed."""
    return {
        "status": "running", "name": cfg.name, "started": now_iso(), "ended": None,
        "duration_s": None, "command": argv, "versions": devices.versions(),
        "device": device_used, "replicas": devices.replicas(prepared.model),
        **distributed.job_devices(),
        "precision": prepared.model.dtype_policy.name,
        "jit_compile": bool(prepared.model.jit_compile), "seed": cfg.seed,
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "config": yaml.safe_load(config_text),
        "data_fingerprint": splits.fingerprint,
        "samples": splits.samples(),
        "input_shape": list(prep.output_shape()), "num_classes": splits.info.num_classes,
        "class_names": splits.info.class_names, "epochs_completed": 0, "final_metrics": None,
    }


def run_session(session: Session, reporter: Reporter, argv: list[str], before=None) -> dict:
    run = session.run
    started = time.time()
    with run.lock():
        if before is not None:
            before()
        session.tracker = tracking.start_run(session.track, run, session.rows, reporter.warn)
        try:
            report = _train_in(session, reporter, argv, started)
        except (Interrupted, TrainingError):
            raise
        except KeyboardInterrupt:  # after the epochs (the final evaluation): not a failure
            message = (f"interrupted after training, before the test metrics were saved; "
                       f"continue with: dlmine train --resume {run.path}")
            run.update_run(status="interrupted", ended=now_iso(), error=message)
            raise Interrupted(message) from None
        except BaseException as exc:
            fail_run(run, exc)
            raise
        finally:  # the status run.json now holds: completed, interrupted or failed
            tracking.finish_run(session.tracker, run)
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
        if outcome.model_is_last:  # the same model: a copy of the file, not a second save
            atomic_copy(run / CHECKPOINTS / "last.keras", run / MODEL)
        else:
            atomic_save_model(model, run / MODEL)
        with distributed.local_only():  # predict cannot fetch outputs spread over processes
            best = model if outcome.model_is_best else load_checkpoint(run, "best")
            x_test, y_test = prep.transform(splits.x_test, splits.y_test)
            report = evaluate_model(best, x_test, y_test, cfg, splits.info.class_names,
                                    cfg.training.batch_size, session.source)
        report = {"split": "test", "checkpoint": "best", **report}
        run.write_json("eval.json", report)
        log.write(f"{now_iso()} test: " + ", ".join(f"{k} {number(v)}" for k, v in
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
    model_is_best: bool = False  # the model in memory is best.keras: evaluate it, no reload
    model_is_last: bool = False  # ... is last.keras: model.keras is a copy of it


def _fit(session: Session, reporter: Reporter, log) -> _Outcome:
    from dlmine.train.callbacks import AtomicCheckpoint, RunRecorder, TrackEpochs  # import Keras
    from dlmine.train.state import StateWriter

    cfg, prep, splits, run = session.cfg, session.prep, session.splits, session.run
    source = session.source
    t = cfg.training
    x_train, y_train = prep.transform(splits.x_train, splits.y_train)
    validation = None if splits.x_val is None else prep.transform(splits.x_val, splits.y_val)
    weights = class_weights(cfg, splits.y_train)
    sample_weight = None if weights is None else np.array(
        [weights[int(label)] for label in splits.y_train], dtype="float32")
    batches = distributed.local_share(source.training_batches(
        x_train, y_train, t.batch_size, cfg.seed, t.shuffle, session.initial_epoch, sample_weight,
        list_size(cfg)))
    recorder = RunRecorder(run, reporter, log, t.epochs, len(batches), session.rows)
    checkpoint = AtomicCheckpoint(run, recorder, t.checkpoint.monitor, t.checkpoint.mode,
                                  (session.state or {}).get("best"))
    stateful = _keras_callbacks(cfg, session)
    writer = StateWriter(run, recorder, checkpoint, stateful)
    # The recorder logs the learning rate the epoch used, before reduce-LR changes it; the
    # checkpoint comes after early stopping and reduce-LR, so last.keras holds their changes,
    # and the state is written last, as the commit marker.
    # MLflow gets an epoch once it is committed (after the state writer).
    tracked = [TrackEpochs(session.tracker, recorder)] if session.tracker is not None else []
    callbacks = [batches.callback(), recorder, *stateful.values(), checkpoint, writer, *tracked,
                 *(session.extra_callbacks or [])]
    if t.tensorboard:
        import keras

        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run / "tensorboard")))
    validation, validation_batch = (None, None) if validation is None else \
        source.validation_data(*validation, t.batch_size, list_size(cfg))
    with _graceful_stop(recorder) as stop:
        session.model.fit(source.feed(batches), epochs=t.epochs, initial_epoch=session.initial_epoch,
                          validation_data=validation, validation_batch_size=validation_batch,
                          verbose=0, callbacks=callbacks,
                          shuffle=False)  # the order is EpochShuffled's, keyed to seed and epoch
    best = None
    if checkpoint.best is not None:
        best = {"monitor": checkpoint.monitor, "mode": checkpoint.mode, "value": checkpoint.best,
                "epoch": checkpoint.best_epoch}
    last_epoch = recorder.rows[-1]["epoch"] if recorder.rows else None
    kept = _weights_kept(stateful, last_epoch)
    single = devices.replicas(session.model) == 1 and not distributed.joined()
    return _Outcome(recorder, best, stop["signal"] is not None,
                    model_is_best=checkpoint.model_is_best and kept and single,
                    model_is_last=checkpoint.model_is_last and kept)


def _weights_kept(stateful: dict, last_epoch: int | None) -> bool:
    """Whether the model's weights after `fit` are those of its last epoch: early stopping's
    on_train_end restores the weights of its own best epoch, which may be an earlier one.

    With the checkpoint's `model_is_best` / `model_is_last` (written at that last epoch), this
    says that the model in memory is best.keras (evaluated without loading it when it lives
    in this process alone; a replicated one is evaluated from the file, as before) or
    last.keras (model.keras is then a copy of it).
    """
    stopping = stateful.get("early_stopping")
    return not (stopping is not None and stopping.restore_best_weights
                and stopping.best_weights is not None
                and stopping.best_epoch + 1 != last_epoch)


def _keras_callbacks(cfg, session: Session) -> dict:
    from dlmine.train.state import ResumableEarlyStopping, ResumableReduceLROnPlateau  # Keras

    t, out = cfg.training, {}
    saved = (session.state or {}).get("callbacks", {})
    if t.early_stopping is not None:
        es = t.early_stopping
        best_weights = None
        if session.state and es.restore_best_weights:
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
        kept = (f"The last good checkpoint ({epochs} epoch(s)) is kept in {run.path}/checkpoints"
                if epochs else "No epoch completed, so no checkpoint was saved")
        return (f"training diverged: {outcome.recorder.diverged}. {kept}. Try a lower "
                "training.optimizer.learning_rate, or preprocessing.rescale / standardize")
    return (f"interrupted after {epochs} complete epoch(s); checkpoints/last.keras holds the "
            f"last complete epoch. Continue with: dlmine train --resume "
            f"{run.fold_parent() or run.path}")


def fail_run(run: RunDir, exc: BaseException) -> None:
    """Mark a run `failed` after an unexpected error, keeping whatever it wrote."""
    try:
        run.update_run(status="failed", ended=now_iso(), error=f"{type(exc).__name__}: {exc}")
    except Exception:
        print(f"could not mark {run.path} as failed", file=sys.stderr)
