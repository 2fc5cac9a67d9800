"""Hyperparameter search: a `tune:` section -> an Optuna study -> one ordinary run per trial.

`start` checks the search space against the config before anything is created, writes the
study directory and runs the study; `resume` continues one. Each trial is a run directory
(`STUDY_DIR/trial-0007/`) trained from the study's resolved `config.yaml` with the trial's
values applied as `--set` overrides, so `dlmine evaluate` and `dlmine train --resume` read it
like any run. After each epoch the trial reports `tune.metric` to Optuna; a trial the pruner
judges hopeless stops after that epoch: its run ends `completed` (shorter, as with early
stopping, and evaluated) and `run.json` says `"tune": {"state": "pruned", ...}`.

The study directory:

    config.yaml      the resolved config every trial starts from, `tune:` included
    study.json       study name, storage, the worker id of this directory's trials, the
                     `--trials` asked for (kept by `--resume`), and the study's MLflow run
                     (`mlflow`) when it is tracked
    study.db         the Optuna study (SQLite), unless `--storage` names a shared database
    trial-NNNN/      one run directory per trial this directory ran
    best.yaml        the best trial's resolved config with `tune: null`, for `dlmine train`;
                     of a shared study, only in the directory of the worker that finished it
    history.png      every trial's value and the best so far
    importances.png  how much each searched key mattered (Optuna's importance evaluator)
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import keras
import optuna
from optuna.trial import TrialState

from dlmine import __version__
from dlmine.backend import devices
from dlmine.config import LoadedConfig, to_yaml
from dlmine.config.checks import monitor_mode
from dlmine.config.loading import suggest
from dlmine.console import Reporter
from dlmine.errors import ConfigError, Interrupted, TrainingError, UsageError
from dlmine.model.checks import load_checked_config
from dlmine.rundir import CONFIG, HISTORY, LOG, RUN_JSON, RunDir, atomic_write, fresh_folder, now_iso
from dlmine.train import tracking
from dlmine.train.run import train
from dlmine.tune import workers
from dlmine.tune.report import (
    BEST_YAML,
    HISTORY_PNG,
    IMPORTANCES_PNG,
    say,
    shown,
    summarize,
    summarize_elsewhere,
)
from dlmine.tune.space import Distribution, check_space, override
from dlmine.tune.storage import STUDY_DB, heartbeat_interval, masked, open_storage, recorded_url, storage_url

STUDY_JSON = "study.json"
SEARCH_ATTR = "dlmine_search"  # the study's metric, direction and space (a user attribute)
STUDY_ARTIFACTS = (CONFIG, BEST_YAML, HISTORY_PNG, IMPORTANCES_PNG)


@dataclass
class TuneOptions:
    """What the command line adds to the `tune:` section (None: the section's value)."""

    trials: int | None = None
    timeout: int | None = None
    storage: str | None = None
    device: str = "auto"
    heartbeat_timeout: int = 120  # seconds without a heartbeat before a trial is failed
    argv: list[str] = field(default_factory=list)
    mlflow: str | None = None  # --mlflow URI


def start(config_path: Path, overrides, study_dir: Path | None, runs_root: Path,
          options: TuneOptions, reporter: Reporter) -> Path:
    """Check CONFIG's search space, create the study directory and run `trials` trials.

    Args:
        config_path: a config with a `tune:` section.
        overrides: `--set KEY=VALUE` strings, applied to every trial.
        study_dir: where the study goes (must not exist); None: `runs_root/<name>-tune-<time>`.

    Returns:
        The study directory.

    Raises:
        ConfigError: every problem of the config and its search space, before the study
            directory is created.
        UsageError: the study directory exists.
    """
    loaded = load_checked_config(config_path, overrides)
    check_space(loaded)
    tracking.target(loaded.config, options.mlflow)  # without MLflow: fail before the folder exists
    storage = recorded_url(options.storage) if options.storage else None
    folder = _create_study_dir(study_dir, runs_root, loaded.config.name)
    try:
        return _start(folder, loaded, storage, options, reporter)
    except OtherSearch:
        shutil.rmtree(folder, ignore_errors=True)  # nothing of its own was run: no trace left
        raise


def _start(folder: Path, loaded, storage: str | None, options: TuneOptions,
           reporter: Reporter) -> Path:
    atomic_write(folder / CONFIG, to_yaml(loaded.config))
    atomic_write(folder / STUDY_JSON, json.dumps({
        "study_name": loaded.config.name, "storage": storage, "worker": uuid.uuid4().hex,
        "created": now_iso(), "command": masked(options.argv, options.storage),
        "trials": options.trials}, indent=2) + "\n")
    return _run(folder, options, reporter, resuming=False)


def resume(study_dir: Path, options: TuneOptions, reporter: Reporter) -> Path:
    """Continue the study of `study_dir` until it has `trials` finished (complete or pruned) trials.

    Trials that this directory's earlier process left running (it died) are marked failed:
    they are neither counted nor repeated; so are the runs of its trials that another worker
    failed when their heartbeat stopped.

    Raises:
        UsageError: `study_dir` is not a study directory, or is in use by another process.
    """
    folder = Path(study_dir)
    if not (folder / STUDY_JSON).is_file():
        raise UsageError(f"{folder} is not a dlmine study directory: it has no {STUDY_JSON}")
    if RunDir(folder).read_json(STUDY_JSON).get("storage") is None and options.storage is None \
            and not (folder / STUDY_DB).is_file() and any(folder.glob("trial-*")):
        raise UsageError(f"{folder / STUDY_DB} is missing: the study's trials cannot be found "
                         "without it; start a new study with dlmine tune CONFIG")
    return _run(folder, options, reporter, resuming=True)


def _run(folder: Path, options: TuneOptions, reporter: Reporter, resuming: bool) -> Path:
    devices.describe(options.device)  # --device gpu without a GPU fails once, here
    info = RunDir(folder).read_json(STUDY_JSON)
    loaded = load_checked_config(folder / CONFIG)
    search = Search(folder, loaded, check_space(loaded), options, reporter, info["worker"])
    tune = loaded.config.tune
    target = options.trials or info.get("trials") or tune.trials  # --trials, then the first's
    with RunDir(folder).lock():
        if resuming and options.trials and options.trials != info.get("trials"):
            info = {**info, "trials": options.trials}  # what a later --resume keeps to
            atomic_write(folder / STUDY_JSON, json.dumps(info, indent=2) + "\n")
        study = _open_study(info, folder, search, target)
        track = tracking.target(loaded.config, options.mlflow)
        parent = _study_tracker(folder, info, track, reporter)
        search.track = tracking.nested(track or tracking.recorded_target(info), parent)
        status = "failed"
        try:
            if resuming:
                _fail_stale_trials(study, info["worker"], reporter)
                todo = max(target - len(workers.finished(study)), 0)
                reporter.info(f"resuming {folder}: {todo} trial(s) to run")
            search.optimize(study, target, options.timeout or tune.timeout)
            _finish(study, folder, search, target, shared=info.get("storage") is not None)
            status = "completed"
        except (Interrupted, KeyboardInterrupt):
            status = "interrupted"
            raise
        finally:
            _finish_study_tracker(parent, study, folder, search, status)
    return folder


def _finish(study: optuna.Study, folder: Path, search: Search, target: int, shared: bool) -> None:
    """The end of this worker: `best.yaml` from the worker that finished the study (or from
    the only worker of a private one); the table of trials from every worker."""
    by = workers.finisher(study, target)
    if not shared or by == search.worker:
        summarize(study, folder, search.metric, search.reporter)
        return
    if by is None:
        note = (f"the study has {len(workers.finished(study))} of its {target} trials; the "
                "worker that finishes it writes best.yaml (continue it with: dlmine tune "
                f"--resume {folder})")
    else:
        last = workers.finished(study)[target - 1].user_attrs.get("run_dir", "")
        note = (f"the study is finished; best.yaml is in {Path(last).parent}, written by the "
                "worker that finished it")
    summarize_elsewhere(study, search.metric, search.reporter, note)


def _study_tracker(folder: Path, info: dict, track: tracking.Target | None,
                   reporter: Reporter) -> tracking.Tracker | None:
    """The study's own MLflow run (its trials' runs are nested under it), recorded in
    `study.json`; None when the study is not tracked."""
    def record(block: dict) -> None:
        current = RunDir(folder).read_json(STUDY_JSON)
        atomic_write(folder / STUDY_JSON, json.dumps({**current, "mlflow": block}, indent=2) + "\n")

    tags = {"dlmine.version": __version__, "dlmine.status": "running",
            "dlmine.study_dir": str(folder.resolve())}
    return tracking.open_tracker(track, folder, info, record, tags, reporter.warn)


def _finish_study_tracker(parent: tracking.Tracker | None, study: optuna.Study, folder: Path,
                          search: Search, status: str) -> None:
    """End the study's MLflow run: the best value, the trial counts, best.yaml and the plots."""
    if parent is None:
        return
    trials = study.get_trials(deepcopy=False)
    metrics = {f"trials_{state.name.lower()}": float(sum(t.state == state for t in trials))
               for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        metrics[f"best_{tracking.mlflow_key(search.metric)}"] = float(study.best_value)
    parent.finish(status, folder, artifacts=STUDY_ARTIFACTS, metrics=metrics,
                  metrics_are="the study's metrics")


# --- the study ---------------------------------------------------------------------------------

def resolve_direction(metric: str, given: str) -> str:
    """`minimize` or `maximize`; `auto` maximizes accuracy-like metrics and AUC."""
    if given != "auto":
        return given
    return "maximize" if monitor_mode(metric) == "max" else "minimize"


def _open_study(info: dict, folder: Path, search: Search, budget: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # dlmine reports trials itself
    url = storage_url(info.get("storage"), search.options.storage, folder)
    tune = search.loaded.config.tune
    storage = open_storage(url, search.options.heartbeat_timeout, search.stale_trial_failed)
    study = optuna.create_study(study_name=info["study_name"], storage=storage,
                                direction=search.direction, pruner=_pruner(tune.pruner),
                                load_if_exists=True)
    _check_same_search(study, search, url)
    # A private study is reproducible from the config's seed; shared workers must differ.
    seed = None if info.get("storage") else search.loaded.config.seed + len(study.trials)
    # TPE models the space after a random start: half the budget at most, so small studies
    # are guided too.
    study.sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=min(10, max(2, budget // 2)))
    return study


class OtherSearch(UsageError):
    """A worker's `tune:` section is not the one its shared study was created with."""


def _check_same_search(study: optuna.Study, search: Search, url: str) -> None:
    """The first worker records its metric, direction and space in the study; a worker that
    joins with others would rank unlike values together, or fail on a changed space.

    Raises:
        OtherSearch: this config searches otherwise.
    """
    tune = search.loaded.config.tune
    mine = json.loads(json.dumps({"metric": tune.metric, "direction": search.direction,
                                  "space": {str(k): v for k, v in tune.space.items()}}))
    recorded = study.user_attrs.get(SEARCH_ATTR)
    if recorded is None:
        study.set_user_attr(SEARCH_ATTR, mine)
        return
    differ = [f"tune.{key}: {recorded.get(key)!r} there, {mine[key]!r} here"
              for key in ("metric", "direction") if recorded.get(key) != mine[key]]
    space = recorded.get("space") or {}
    differ += [f"tune.space.{key}: {space.get(key, 'absent')!r} there, "
               f"{mine['space'].get(key, 'absent')!r} here"
               for key in dict.fromkeys([*space, *mine["space"]])
               if space.get(key) != mine["space"].get(key)]
    if differ:
        raise OtherSearch(f"the study '{study.study_name}' in {recorded_url(url)} was "
                          f"created with another search: {'; '.join(differ[:4])}; give this "
                          "config the study's tune: section, or another name for a study of "
                          "its own")


def _pruner(kind: str) -> optuna.pruners.BasePruner:
    if kind == "none":
        return optuna.pruners.NopPruner()
    # Judge a trial once 3 trials have completed, and not on its first 2 epochs, which are noisy.
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)


def _fail_stale_trials(study: optuna.Study, worker: str, reporter: Reporter) -> None:
    """This directory's trials still RUNNING belong to a process that died (we hold the lock);
    those that another worker failed (their heartbeat stopped) may still say `running`."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.FAIL)):
        if trial.user_attrs.get("worker") != worker:
            continue  # another worker of a shared study: maybe alive
        run_dir = Path(trial.user_attrs.get("run_dir") or "")
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
            reporter.warn(f"trial {trial.number} was running when the study stopped; marked failed")
        elif _status(run_dir) == "running":
            reporter.warn(f"trial {trial.number} was failed by another worker when its heartbeat "
                          "stopped; its run is marked interrupted")
        else:
            continue
        if trial.user_attrs.get("run_dir"):
            _mark_failed(run_dir, trial.number)


def _create_study_dir(path: Path | None, runs_root: Path, name: str) -> Path:
    if path is not None:
        path = Path(path)
        try:
            if path.is_symlink():
                raise FileExistsError
            path.mkdir(parents=True)
        except FileExistsError:
            raise UsageError(f"study directory {path} already exists; continue it with dlmine "
                             f"tune --resume {path}, or choose another --study-dir") from None
        return path
    return fresh_folder(Path(runs_root), f"{name}-tune")


# --- the trials --------------------------------------------------------------------------------

@dataclass
class Search:
    """One process's trials of a study: each an ordinary run in the study directory."""

    folder: Path
    loaded: LoadedConfig
    space: dict[str, Distribution]
    options: TuneOptions
    reporter: Reporter
    worker: str
    track: tracking.Target | None = None  # each trial an MLflow run, nested in the study's

    @property
    def metric(self) -> str:
        return self.loaded.config.tune.metric

    @property
    def direction(self) -> str:
        return resolve_direction(self.metric, self.loaded.config.tune.direction)

    def optimize(self, study: optuna.Study, target: int, timeout: int | None) -> None:
        """Run trials until the study has `target` finished ones, every worker's together.

        Starts none after `timeout` seconds, and no more than the study lacked when this
        worker began: a failed trial does not count, and a space where every trial fails
        must end. While the other workers' running trials fill the study, waits for them;
        when one's heartbeat stops, its trial is failed and its slot run here.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        # Every trial traces new functions; TensorFlow would warn of "retracing" from the third.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        budget, waiting = target - len(workers.finished(study)), False
        while budget > 0 and len(workers.finished(study)) < target:
            if deadline is not None and time.monotonic() >= deadline:
                self.reporter.info(f"timeout: {timeout} s have passed; no more trials started")
                return
            if workers.slots_left(study, target) <= 0:
                if not waiting:
                    self.reporter.info(f"waiting for the {len(workers.running(study))} trial(s) "
                                       "other workers are running")
                waiting = True
                time.sleep(self.poll_s)
                continue
            waiting = False
            trial = workers.ask(study)
            if workers.is_surplus(study, trial.number, target):
                trial.set_user_attr(workers.SURPLUS, True)
                study.tell(trial, state=TrialState.FAIL)
                continue
            budget -= 1
            self.run_and_tell(study, trial)

    @property
    def poll_s(self) -> float:
        """How often a waiting worker looks at the study: a heartbeat, at most 5 s."""
        return min(5.0, heartbeat_interval(self.options.heartbeat_timeout))

    def run_and_tell(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Train `trial` (its heartbeat recorded meanwhile) and tell the study its result."""
        with workers.heartbeat(study, trial):
            try:
                state, value = self.run_trial(trial)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                raise
        frozen = study.tell(trial, value if state == TrialState.COMPLETE else None, state=state,
                            skip_if_finished=True)
        if frozen.state != state:  # its heartbeat came too late: another worker failed it
            self.reporter.warn(f"trial {trial.number} was failed by another worker, which took "
                               f"it for dead (no heartbeat for {self.options.heartbeat_timeout} "
                               "s); its result does not count")
            _mark_run(RunDir(self.folder.resolve() / f"trial-{trial.number:04d}"), trial.number,
                      "fail")
            return
        self.reporter.info(f"trial {trial.number}: {state.name.lower()}, {self.metric} "
                           f"{shown(frozen.value)}")

    def stale_trial_failed(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """The storage's callback for a trial this worker failed because its heartbeat stopped:
        its run, when this host can see it, is marked interrupted."""
        self.reporter.warn(f"trial {trial.number} failed: its worker sent no heartbeat for "
                           f"{self.options.heartbeat_timeout} s")
        run_dir = trial.user_attrs.get("run_dir")
        if run_dir and Path(run_dir).is_dir():
            _mark_failed(Path(run_dir), trial.number)

    def run_trial(self, trial: optuna.Trial) -> tuple[TrialState, float | None]:
        """Train one trial's run; its state and the best epoch's `tune.metric`."""
        run_dir = self.folder.resolve() / f"trial-{trial.number:04d}"
        trial.set_user_attr("worker", self.worker)  # first: a dead process's trials are found
        trial.set_user_attr("run_dir", str(run_dir))
        values = {key: dist.suggest(trial, key) for key, dist in self.space.items()}
        trial.set_user_attr("values", values)
        say(self.reporter, f"trial {trial.number}: " + ", ".join(
            f"{key}={shown(value)}" for key, value in values.items()))
        pruning = PruneOnEpoch(trial, self.metric, self.loaded.sources.where(("tune", "metric")))
        try:
            loaded = load_checked_config(self.folder / CONFIG, [override(k, v) for k, v in values.items()])
            train(loaded, run_dir=run_dir, runs_root=self.folder, device=self.options.device,
                  reporter=TrialReporter(trial.number, self.reporter.quiet),
                  argv=masked(self.options.argv, self.options.storage),
                  extra_callbacks=[pruning], track=self.track)
        except (ConfigError, TrainingError) as exc:  # these values do not work; the study goes on
            self.reporter.warn(f"trial {trial.number} failed: {exc}")
            trial.set_user_attr("error", str(exc))
            _mark_failed(run_dir, trial.number)
            return TrialState.FAIL, None
        except Interrupted:
            _mark_failed(run_dir, trial.number)
            raise Interrupted(f"interrupted during trial {trial.number}, which will not count; "
                              f"continue the study with: dlmine tune --resume {self.folder}") from None
        except BaseException:  # a mistake every trial would make: the study stops
            _mark_failed(run_dir, trial.number)
            raise
        value = best_epoch_value(run_dir, self.metric, self.direction)
        state = TrialState.PRUNED if pruning.pruned_after else TrialState.COMPLETE
        _mark_run(RunDir(run_dir), trial.number, state.name.lower(), value=value,
                  metric=self.metric, pruned_after_epoch=pruning.pruned_after)
        return state, value


class PruneOnEpoch(keras.callbacks.Callback):
    """Report `metric` to an Optuna trial after each epoch; stop when the trial should be pruned.

    Training stops after the complete epoch, so its history and checkpoints are whole and the
    run is evaluated as usual; `pruned_after` is the epoch it stopped after, or None.

    Args:
        trial: the Optuna trial (anything with `report(value, step)` and `should_prune()`).
        metric: a key of the epoch logs, e.g. `val_loss`.
        where: `FILE:LINE` of `tune.metric`, for the message when the logs lack the metric.

    Example:
        >>> pruning = PruneOnEpoch(trial, "val_loss")
        >>> train(loaded, ..., extra_callbacks=[pruning])
    """

    def __init__(self, trial, metric: str, where: str = "tune"):
        super().__init__()
        self.trial, self.metric, self.where = trial, metric, where
        self.pruned_after: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.metric not in logs:
            raise UsageError(f"{self.where}: tune.metric: expected a metric of the epoch logs "
                             f"({', '.join(sorted(logs))}), received '{self.metric}'"
                             f"{suggest(self.metric, list(logs))}")
        value = float(logs[self.metric])
        if not math.isfinite(value):
            return  # the run fails as diverged; nothing to judge
        self.trial.report(value, epoch + 1)
        if self.trial.should_prune():
            self.pruned_after = epoch + 1
            self.model.stop_training = True


class TrialReporter(Reporter):
    """A trial's training output: its epoch lines, prefixed, without a test table per trial."""

    def __init__(self, number: int, quiet: bool):
        super().__init__(quiet=quiet)
        self.number = number

    def info(self, message: str) -> None:
        pass  # `run directory: ...`: the study reports its trials itself

    def epoch_end(self, line: str) -> None:
        super().epoch_end(f"trial {self.number}: {line}")

    def metrics_table(self, title: str, metrics: dict, stream: str = "stderr") -> None:
        pass  # trials are chosen on validation; the test metrics stay in each eval.json


def best_epoch_value(run_dir: Path, metric: str, goal: str) -> float:
    """The best finite value of `metric` in a run's `history.csv` (`goal`: minimize/maximize)."""
    with open(Path(run_dir) / HISTORY, newline="") as handle:
        values = [float(row[metric]) for row in csv.DictReader(handle)]
    finite = [v for v in values if math.isfinite(v)] or [math.nan]
    return max(finite) if goal == "maximize" else min(finite)


def _status(run_dir: Path) -> str | None:
    """A trial run's `run.json` status; None before it has one."""
    return RunDir(run_dir).read_json(RUN_JSON).get("status") if (run_dir / RUN_JSON).is_file() else None


def _mark_failed(run_dir: Path, number: int) -> None:
    """Mark a failed trial's run, if it got as far as one; `running` means its process died."""
    if _status(run_dir) is None:
        return
    run = RunDir(run_dir)
    if _status(run_dir) == "running":
        run.update_run(status="interrupted", ended=now_iso(),
                       error="the dlmine tune process stopped during this trial")
    _mark_run(run, number, "fail")


def _mark_run(run: RunDir, number: int, state: str, **details) -> None:
    """Say in `run.json` (and for a pruned trial in `train.log`) what the study made of the run."""
    run.update_run(tune={"trial": number, "state": state, **details})
    if state == "pruned":
        with open(run / LOG, "a", encoding="utf-8") as log:
            log.write(f"{now_iso()} pruned by dlmine tune after epoch {details['pruned_after_epoch']}"
                      f": its {details['metric']} was worse than the median of earlier trials\n")
