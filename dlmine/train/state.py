"""Training state: what a resumed run needs beyond the weights, and the commit marker of an epoch.

After every complete epoch dlmine writes, in order: the `history.csv` row,
`checkpoints/best.keras` (when improved), `checkpoints/last.keras`, and last
`training_state.json`. The state names the epoch and the sha256 of the
`last.keras` it belongs to, so a kill at any moment leaves either the previous
epoch's state with its checkpoint, or the new one: never a mix.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import keras
import numpy as np

from dlmine.errors import DlmineError
from dlmine.rundir import CHECKPOINTS, STATE, RunDir

PREVIOUS_STATE = "training_state.previous.json"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def seed_states(model) -> list[list[int]]:
    """The states of the model's random generators (dropout...), which `.keras` files omit."""
    return [np.asarray(v).tolist() for v in model.variables if "seed_generator_state" in v.path]


def restore_seed_states(model, states: list) -> None:
    variables = [v for v in model.variables if "seed_generator_state" in v.path]
    if len(variables) != len(states):
        raise DlmineError(f"the model has {len(variables)} random generators but the saved "
                          f"training state has {len(states)}; the checkpoint does not belong "
                          "to this config")
    for variable, value in zip(variables, states, strict=True):
        variable.assign(np.asarray(value, dtype=variable.dtype))


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` whose counters survive a resume (Keras resets them at train begin)."""

    def __init__(self, saved: dict | None = None, best_weights_from=None, **kwargs):
        super().__init__(**kwargs)
        self.saved = saved
        self.best_weights_from = best_weights_from

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.saved:
            self.wait = self.saved["wait"]
            self.best = self.saved["best"] if self.saved["best"] is not None else self.best
            self.best_epoch = self.saved["best_epoch"]
            self.stopped_epoch = self.saved.get("stopped_epoch", 0)
            if self.restore_best_weights and self.best_weights_from is not None:
                self.best_weights = self.best_weights_from

    def state(self) -> dict:
        best = float(self.best) if self.best is not None and np.isfinite(self.best) else None
        return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch),
                "stopped_epoch": int(self.stopped_epoch)}


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """`ReduceLROnPlateau` whose counters survive a resume."""

    def __init__(self, saved: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.saved = saved

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.saved:
            self.wait = self.saved["wait"]
            self.cooldown_counter = self.saved["cooldown_counter"]
            if self.saved["best"] is not None:
                self.best = self.saved["best"]

    def state(self) -> dict:
        best = float(self.best) if np.isfinite(self.best) else None
        return {"wait": int(self.wait), "cooldown_counter": int(self.cooldown_counter),
                "best": best}


class StateWriter(keras.callbacks.Callback):
    """Writes `training_state.json` after the checkpoints of each complete epoch.

    Must come after `AtomicCheckpoint` and the Keras callbacks in the list, so that the
    state it records is the one after the epoch.
    """

    def __init__(self, run: RunDir, recorder, checkpoint, stateful: dict):
        super().__init__()
        self.run, self.recorder, self.checkpoint, self.stateful = run, recorder, checkpoint, stateful

    def on_epoch_end(self, epoch, logs=None):
        if not self.recorder.rows or self.recorder.rows[-1]["epoch"] != epoch + 1:
            return
        last = self.run / CHECKPOINTS / "last.keras"
        keep_previous(self.run / STATE, self.run / PREVIOUS_STATE)
        self.run.write_json(STATE, {
            "epoch": epoch + 1,
            "last_sha256": sha256_file(last),
            "best": {"value": self.checkpoint.best, "epoch": self.checkpoint.best_epoch},
            "callbacks": {name: cb.state() for name, cb in self.stateful.items()},
            "seed_generators": seed_states(self.model),
        })


def keep_previous(current: Path, previous: Path) -> None:
    """Make `previous` the same file as `current` (a hard link: no copy), atomically."""
    if not current.is_file():
        return
    link = previous.with_name(f".{previous.name}.link")
    try:
        link.unlink(missing_ok=True)
        os.link(current, link)
        os.replace(link, previous)
    except OSError as exc:
        raise DlmineError(f"cannot keep {previous}: {exc.strerror or exc}") from None


def load_state(run: RunDir, warn=print) -> tuple[dict, Path]:
    """The newest committed training state and the checkpoint file that matches it.

    Tried in order: the state with `last.keras`; with `previous.keras` (a kill between
    writing `last.keras` and the state); the previous state with `previous.keras` (a
    damaged `last.keras` or state).

    Raises:
        DlmineError: no epoch was committed, or no state matches any checkpoint.
    """
    folder = run / CHECKPOINTS
    states = []
    for name in (STATE, PREVIOUS_STATE):
        if (run / name).is_file():
            try:
                states.append((name, run.read_json(name)))
            except DlmineError as exc:
                warn(f"{exc}; trying the previous training state")
    if not states:
        raise DlmineError(f"{run.path} has no {STATE}: no epoch was completed, so there is "
                          "nothing to resume; start a new run")
    problems = []
    for name, state in states:
        for checkpoint in (folder / "last.keras", folder / "previous.keras"):
            if not checkpoint.is_file():
                continue
            if sha256_file(checkpoint) == state.get("last_sha256"):
                if problems:
                    warn("; ".join(problems) + f"; resuming from {checkpoint.name} "
                         f"(epoch {state['epoch']}) instead")
                return state, checkpoint
            problems.append(f"{checkpoint.relative_to(run.path)} does not match {name} "
                            f"(epoch {state['epoch']}): damaged or written after it")
    raise DlmineError(f"cannot resume {run.path}: no checkpoint matches a committed training "
                      f"state ({'; '.join(problems) or 'the checkpoints are missing'})")
