"""Training state: what a resumed run needs beyond the weights, and the commit marker of an epoch.

After every complete epoch dlmine writes, in order: the `history.csv` row,
`checkpoints/best.keras` (when improved), `checkpoints/last.keras`, and last
`training_state.json`. The state names the epoch and the sha256 of the
`last.keras` it belongs to, so a kill at any moment leaves either the previous
epoch's state with its checkpoint, or the new one: never a mix.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import keras
import numpy as np

from dlmine.errors import DlmineError
from dlmine.rundir import CHECKPOINTS, RunDir

STATE = "training_state.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
            if self.restore_best_weights and self.best_weights_from is not None:
                self.best_weights = self.best_weights_from

    def state(self) -> dict:
        best = float(self.best) if self.best is not None and np.isfinite(self.best) else None
        return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch)}


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
        self.run.write_json(STATE, {
            "epoch": epoch + 1,
            "last_sha256": sha256_file(last),
            "best": {"value": self.checkpoint.best, "epoch": self.checkpoint.best_epoch},
            "callbacks": {name: cb.state() for name, cb in self.stateful.items()},
            "seed_generators": seed_states(self.model),
        })


def load_state(run: RunDir) -> dict:
    """The last committed training state, checked against `last.keras`.

    Raises:
        DlmineError: no state (no epoch finished), or `last.keras` does not match it.
    """
    if not (run / STATE).is_file():
        raise DlmineError(f"{run.path} has no {STATE}: no epoch was completed, so there is "
                          "nothing to resume; start a new run")
    state = run.read_json(STATE)
    last = run / CHECKPOINTS / "last.keras"
    if not last.is_file():
        raise DlmineError(f"{last} is missing; it holds the epoch {state['epoch']} to resume from")
    if sha256_file(last) != state["last_sha256"]:
        raise DlmineError(f"{last} is damaged: its sha256 does not match {STATE} (epoch "
                          f"{state['epoch']}); it was changed after dlmine wrote it")
    return state
