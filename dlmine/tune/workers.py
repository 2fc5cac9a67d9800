"""Several workers, one study: how many trials are left, who runs them, who finishes the study.

A study asks for `target` finished (complete or pruned) trials, every worker's together. A
worker starts a trial only while the finished trials and those running (their heartbeat
fresh) are fewer than `target`; otherwise it waits, failing the trials whose heartbeat has
stopped (`optuna.storages.fail_stale_trials`), whose slot another trial then takes. Two
workers that ask at the same moment for the last slot both get a trial: the one numbered
beyond `target` is a surplus, failed at once (`user_attrs["surplus"]`) before it trains.
The worker whose trial is the target-th to finish (by completion time, then number)
finished the study, and is the one that writes `best.yaml`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

SURPLUS = "surplus"


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The complete and pruned trials, in the order they finished."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return sorted(done, key=lambda t: (t.datetime_complete, t.number))


def running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def slots_left(study: optuna.Study, target: int) -> int:
    """How many more trials may start now: `target` less the finished and running ones."""
    fail_stale(study)
    return target - len(finished(study)) - len(running(study))


def is_surplus(study: optuna.Study, number: int, target: int) -> bool:
    """Whether trial `number`, just asked for, came after the study had its `target` trials
    finished or running (another worker took the last slot at the same moment)."""
    taken = [t for t in finished(study) + running(study) if t.number < number]
    return len(taken) >= target


def finisher(study: optuna.Study, target: int) -> str | None:
    """The worker whose trial was the target-th to finish; None while the study is not done."""
    done = finished(study)
    return done[target - 1].user_attrs.get("worker") if len(done) >= target else None


def ask(study: optuna.Study) -> optuna.Trial:
    """A new trial; Optuna warns that heartbeats are meant for `study.optimize`, which dlmine
    replaces with its own loop (ask, train with the heartbeat, tell)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        return study.ask()


def fail_stale(study: optuna.Study) -> None:
    """Fail the running trials whose heartbeat has stopped (their storage's callback runs)."""
    import optuna

    with warnings.catch_warnings():  # "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record `trial`'s heartbeat in the study's storage while the block runs."""
    # Optuna's own thread, as `study.optimize` runs it (dlmine asks and tells itself).
    from optuna.storages._heartbeat import get_heartbeat_thread

    with get_heartbeat_thread(trial._trial_id, study._storage):
        yield
