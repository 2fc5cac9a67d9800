"""Keras callbacks that write the run directory as training goes.

`RunRecorder` writes `history.csv` and `train.log`, reports progress, stops on a
non-finite loss and on Ctrl-C/SIGTERM; `AtomicCheckpoint` keeps
`checkpoints/best.keras` and `checkpoints/last.keras`, each written atomically
(Keras' own `ModelCheckpoint` writes in place, so a kill mid-write would leave a
broken file); `TrackEpochs` sends each committed epoch to MLflow.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import keras
import numpy as np

from dlmine.config.checks import monitor_mode
from dlmine.console import Reporter, format_logs
from dlmine.rundir import CHECKPOINTS, HISTORY, RunDir, atomic_copy, atomic_save_model
from dlmine.train.state import keep_previous


class RunRecorder(keras.callbacks.Callback):
    """History, log lines, progress, divergence and interruption for one run.

    Args:
        run: the run directory.
        reporter: where progress goes.
        log: the open `train.log`.
        epochs: total epochs, for `epoch 3/10`.
        steps: batches per epoch, for the progress bar.
    """

    def __init__(self, run: RunDir, reporter: Reporter, log, epochs: int, steps: int,
                 rows: list[dict] | None = None):
        super().__init__()
        self.run, self.reporter, self.log = run, reporter, log
        self.epochs, self.steps = epochs, steps
        self.rows: list[dict] = list(rows or [])
        self.diverged: str | None = None
        self.stop_requested = False
        self._last_batch: int | None = None
        self._started = 0.0

    def request_stop(self) -> None:
        """Finish the current batch, then stop (first Ctrl-C or SIGTERM)."""
        self.stop_requested = True

    def on_train_begin(self, logs=None):
        self.reporter.train_begin(self.epochs, self.steps, len(self.rows))

    def on_train_end(self, logs=None):
        self.reporter.train_end()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        self.reporter.epoch_begin(epoch)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = (f"the loss became {float(loss)} in epoch {len(self.rows) + 1}, "
                             f"batch {batch + 1}")
            self.model.stop_training = True
        if self.stop_requested:
            self.model.stop_training = True
        self._last_batch = batch  # with steps_per_execution, the last batch of the step group
        self.reporter.batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged or (self.stop_requested and self._epoch_incomplete()):
            return
        logs = dict(logs or {})
        logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in sorted(logs.items())}}
        for key, value in row.items():
            if key != "epoch" and not math.isfinite(value) and key.endswith("loss"):
                self.diverged = f"{key} became {value} in epoch {epoch + 1}"
                self.model.stop_training = True
                return
        self.rows.append(row)
        self.run.write(HISTORY, history_csv(self.rows))
        seconds = time.perf_counter() - self._started
        metrics = format_logs({k: v for k, v in row.items() if k != "epoch"})
        line = f"epoch {epoch + 1}/{self.epochs} - {metrics} - {seconds:.1f}s"
        self.log.write(line + "\n")
        self.log.flush()
        self.reporter.epoch_end(line)

    def _epoch_incomplete(self) -> bool:
        # Keras still calls on_epoch_end after stop_training mid-epoch; such an epoch is not kept.
        return self._last_batch is not None and self._last_batch + 1 < self.steps


def history_csv(rows: list[dict]) -> str:
    """`history.csv`: one row per epoch, every metric as a column."""
    columns = ["epoch"] + sorted({k for row in rows for k in row if k != "epoch"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


class AtomicCheckpoint(keras.callbacks.Callback):
    """Save `last.keras` every epoch and `best.keras` when `monitor` improves.

    Args:
        run: the run directory.
        monitor: a key of the epoch logs, e.g. `val_loss`.
        mode: `min`, `max` or `auto` (max for accuracy/AUC-like metrics).
    """

    def __init__(self, run: RunDir, recorder: RunRecorder, monitor: str, mode: str = "auto",
                 saved: dict | None = None):
        super().__init__()
        self.folder = Path(run.path) / CHECKPOINTS
        self.recorder = recorder
        self.monitor = monitor
        self.mode = mode if mode != "auto" else monitor_mode(monitor)
        self.best: float | None = (saved or {}).get("value")
        self.best_epoch: int | None = (saved or {}).get("epoch")
        # True while the model in memory holds the weights best.keras was written from: set
        # when best.keras is written, cleared when an epoch begins (training changes them).
        self.model_is_best = False
        self.model_is_last = False  # the same for last.keras

    def on_epoch_begin(self, epoch, logs=None):
        self.model_is_best = self.model_is_last = False

    def on_epoch_end(self, epoch, logs=None):
        if not self.recorder.rows or self.recorder.rows[-1]["epoch"] != epoch + 1:
            return  # the recorder refused this epoch (diverged or cut short)
        value = (logs or {}).get(self.monitor)
        improved = value is not None and self._improved(float(value))
        if improved:
            self.best, self.best_epoch = float(value), epoch + 1
        best, last = self.folder / "best.keras", self.folder / "last.keras"
        keep_previous(last, self.folder / "previous.keras")
        # One model.save per epoch: best.keras, when improved, is a copy of it, in place
        # before last.keras (the commit order stays: best, last, then the training state).
        atomic_save_model(self.model, last, copies=(best,) if improved else ())
        if self.best is None:  # monitor missing from the logs: the last epoch is the best known
            atomic_copy(last, best)
        self.model_is_best = improved or self.best is None
        self.model_is_last = True

    def _improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        return value < self.best if self.mode == "min" else value > self.best


class TrackEpochs(keras.callbacks.Callback):
    """Log each epoch that the recorder committed to `history.csv` to an MLflow run.

    Args:
        tracker: a `dlmine.train.tracking.Tracker` (it never raises).
        recorder: the run's `RunRecorder`, whose last row is the epoch's.
    """

    def __init__(self, tracker, recorder: RunRecorder):
        super().__init__()
        self.tracker, self.recorder = tracker, recorder

    def on_epoch_end(self, epoch, logs=None):
        if self.recorder.rows and self.recorder.rows[-1]["epoch"] == epoch + 1:
            self.tracker.log_epochs(self.recorder.rows[-1:])
