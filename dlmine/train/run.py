"""`train` and `resume`: a config into a new run directory, or a run continued in place.

`train` checks everything it can (config, model shape, data, folds) before it creates
the run directory; `resume` continues a run from its last committed epoch, refusing a
config or data that differ from the run's unless forced.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import yaml

from dlmine.backend import devices, distributed
from dlmine.config import LoadedConfig, to_yaml
from dlmine.config.keys import diff
from dlmine.console import Reporter
from dlmine.data import Preprocessor, source_for
from dlmine.errors import DlmineError, UsageError
from dlmine.model.io import load_model_file
from dlmine.rundir import (
    CHECKPOINTS,
    CONFIG,
    EVAL_JSON,
    HISTORY,
    RUN_JSON,
    STATE,
    ConfigEdited,
    RunDir,
    now_iso,
    read_config_mapping,
    read_history,
    refuse_existing,
)
from dlmine.train import tracking
from dlmine.train.folds import (
    check_folds,
    fold_splits,
    parent_marked,
    train_folds,
    write_summary,
)
from dlmine.train.prepare import build_checked_model
from dlmine.train.session import Session, new_run, run_session


def train(loaded: LoadedConfig, *, run_dir: Path | None, runs_root: Path, device: str,
          reporter: Reporter, argv: list[str], folds: int | None = None,
          extra_callbacks: list | None = None, track: tracking.Target | None = None) -> RunDir:
    """Train a config into a new run directory and evaluate it on the test split.

    Args:
        folds: k-fold cross-validation: one run per fold in `RUN_DIR/fold-K/`, each validated
            on its fold, and the mean and standard deviation of their test metrics.
        extra_callbacks: Keras callbacks added after dlmine's own (`dlmine tune` prunes with
            one); they see each complete epoch's logs.
        track: an MLflow run to log to (`dlmine.train.tracking.target`); with `folds`, one
            per fold, nested under one for the cross-validation.

    Returns:
        The run directory, `completed`.

    Raises:
        ConfigError, DataError: before the run directory is created.
        TrainingError: the loss diverged (the run is marked `failed`).
        Interrupted: Ctrl-C or SIGTERM (the run is marked `interrupted`).
    """
    cfg = loaded.config
    if folds and cfg.dataset.name == "interactions" and cfg.dataset.task == "ranking":
        raise UsageError("--folds is for task: rating; a ranking run validates on held-out "
                         "interactions of each user (dataset.validation_split) and is tested on "
                         "those of its split")
    if run_dir is not None:
        refuse_existing(run_dir)  # before the data load: their errors or time would come first
    device_used = _set_up_backend(cfg, device)
    prepared = build_checked_model(loaded)
    splits = prepared.splits or prepared.source.load(cfg.seed)
    if folds:
        check_folds(prepared.source, splits, folds)  # before the run directory exists
    run = RunDir.create(run_dir, runs_root, cfg.name)
    if folds:
        return train_folds(loaded, prepared.source, splits, run, folds, device_used, reporter,
                           argv, track)
    new_run(loaded, prepared, splits, run, device_used, reporter, argv, extra_callbacks, track)
    return run


def resume(run_path: Path, loaded: LoadedConfig, *, force: bool, device: str,
           reporter: Reporter, argv: list[str], track: tracking.Target | None = None,
           folds: int | None = None) -> RunDir:
    """Continue an interrupted or failed run from its last committed epoch.

    Args:
        run_path: the run directory.
        loaded: the config to continue with: the run's own `config.yaml` (with any
            `--set`), or a CONFIG file given on the command line.
        force: accept a config that differs from the run's.
        track: where to track; a run that `run.json` says was tracked continues its own
            MLflow run without it.

    Raises:
        UsageError: the config changed (without `force`).
        DlmineError: nothing to resume, or a damaged checkpoint.
    """
    run = RunDir.open(run_path)
    parent = run.fold_parent()
    if parent is not None:  # alone, it would rebuild the usual validation split, not its fold
        raise UsageError(f"{run.path} is {run.path.name} of the cross-validation in {parent}; "
                         f"resume that (its other folds too): dlmine train --resume {parent}")
    info = run.read_json(RUN_JSON)
    if folds is not None and info.get("folds") != folds:
        raise UsageError(f"--folds {folds}: {run.path} is " + (
            f"a {info['folds']}-fold cross-validation" if info.get("folds") else
            "one run, not a cross-validation") + "; resume it as it was started")
    track = track or tracking.recorded_target(info)  # without MLflow: fail before any change
    changes = _config_changes(run, info, loaded, force)
    if info.get("folds") and info.get("status") != "completed":
        with run.lock():
            return _resume_folds(run, info, loaded, force=force, device=device,
                                 reporter=reporter, argv=argv)
    if info.get("status") == "completed" and not changes:  # before the lock: may be read-only
        done = (f"{info['folds']} folds" if info.get("folds") else
                f"{info.get('epochs_completed')} epochs")
        reporter.info(f"{run.path} is already completed ({done}); nothing to do")
        return run
    with run.lock():  # before reading any state: a live trainer may be writing it
        _remove_stale_temporaries(run)
        return _resume_locked(run, loaded, changes, force=force, device=device,
                              reporter=reporter, argv=argv, track=track)


def _config_changes(run: RunDir, info: dict, loaded: LoadedConfig, force: bool) -> list[str]:
    """What differs from the config the run was trained with (`run.json`'s `config`, else
    its `config.yaml`): an edit of `config.yaml`, a CONFIG argument, `--set`.

    Raises:
        ConfigEdited: `config.yaml` was edited since training (without `force`).
        UsageError: the config given differs (without `force`).
    """
    edits = run.config_edits(info)
    if edits is not None and not force:
        raise ConfigEdited(run.path, edits)
    trained = info.get("config")
    if not isinstance(trained, dict):
        trained = read_config_mapping(run / CONFIG) or {}
    changes = diff(trained, yaml.safe_load(to_yaml(loaded.config)))
    if edits is not None and not changes:  # no resolved config to name them by (older run.json)
        changes = [f"{CONFIG}: edited after training"]
    if changes and not force:
        raise UsageError("the config differs from the one this run was trained with; "
                         "resume with --force to accept:\n" + "\n".join(f"  {c}" for c in changes))
    return changes


def _remove_stale_temporaries(run: RunDir) -> None:
    """Temporary files a killed process left behind (never the files they were to replace)."""
    for folder in (run.path, run.path / CHECKPOINTS):
        for stale in list(folder.glob(".*.tmp")) + list(folder.glob(".*.keras")):
            stale.unlink(missing_ok=True)


def _resume_folds(run: RunDir, info: dict, loaded: LoadedConfig, *, force: bool, device: str,
                  reporter: Reporter, argv: list[str]) -> RunDir:
    """Finish a cross-validation: its completed folds kept, the interrupted one resumed on
    its own fold, the missing ones trained, then the mean and spread written."""
    cfg, folds = loaded.config, info["folds"]
    device_used = _set_up_backend(cfg, device)
    prepared = build_checked_model(loaded)
    splits = prepared.splits or prepared.source.load(cfg.seed)
    if info.get("data_fingerprint") not in (None, splits.fingerprint) and not force:
        raise UsageError("the data differ from those this cross-validation was trained on (the "
                         "fingerprint in run.json does not match); resume with --force to accept")
    run.update_run(status="running", ended=None, drop=("error",))
    reports = []
    for k, part in enumerate(fold_splits(prepared.source, splits, folds, cfg.seed,
                                         cfg.dataset.task), start=1):
        fold = run.path / f"fold-{k}"
        with parent_marked(run, k, folds):
            if _status(fold) == "completed":
                pass
            elif (fold / STATE).is_file():  # a committed epoch: continue it on its own fold
                reporter.info(f"fold {k}/{folds}: resumed")
                fold_run = RunDir.open(fold)
                with fold_run.lock():
                    _remove_stale_temporaries(fold_run)
                    _resume_locked(fold_run, loaded, [], force=force, device=device,
                                   reporter=reporter, argv=argv, track=None,
                                   splits=part, source=prepared.source)
            else:  # never begun, or stopped before its first epoch: trained afresh
                reporter.info(f"fold {k}/{folds}: trained")
                if fold.exists():
                    shutil.rmtree(fold)
                built = build_checked_model(loaded, part.info.num_classes, part, prepared.source)
                new_run(loaded, built, part, RunDir.create(fold, run.path, cfg.name),
                        device_used, reporter, argv)
            report = RunDir(fold).read_json(EVAL_JSON)
            if report.get("split") != "test" or report.get("checkpoint") != "best":
                # `evaluate` was run on it otherwise since: the test metrics training wrote
                report = {"metrics": RunDir(fold).read_json(RUN_JSON).get("final_metrics") or {}}
            reports.append(report)
    write_summary(run, reports, reporter)
    return run


def _status(folder: Path) -> str | None:
    try:
        return RunDir(folder).read_json(RUN_JSON).get("status")
    except DlmineError:  # none yet, or damaged: the fold is trained again
        return None


def _resume_locked(run: RunDir, loaded: LoadedConfig, changes: list[str], *, force: bool,
                   device: str, reporter: Reporter, argv: list[str],
                   track: tracking.Target | None, splits=None, source=None) -> RunDir:
    """`resume`, with the run directory's lock held; `splits` (and their `source`): a
    fold's, which its config alone does not rebuild."""
    import keras

    from dlmine.train.state import load_state, restore_seed_states  # import Keras

    info = run.read_json(RUN_JSON)
    cfg = loaded.config
    state, checkpoint = load_state(run, warn=reporter.warn)
    device_used = _set_up_backend(cfg, device)
    if splits is None:
        source = source_for(cfg.dataset)
        splits = source.load(cfg.seed)
    if info.get("data_fingerprint") not in (None, splits.fingerprint) and not force:
        raise UsageError("the data differ from those this run was trained on (the fingerprint "
                         "in run.json does not match); resume with --force to accept")
    prep = Preprocessor.load(run.path)
    with devices.distribution_scope(cfg.training.distribution):
        model = load_model_file(checkpoint, "last")
    restore_seed_states(model, state["seed_generators"])
    rows = _history_rows(run, state["epoch"])
    first_epoch = state["epoch"]
    if (state.get("callbacks", {}).get("early_stopping") or {}).get("stopped_epoch"):
        first_epoch = cfg.training.epochs  # early stopping had ended it: only finish the run
    session = Session(run, cfg, model, prep, splits, source, first_epoch, state, rows,
                      track=track)

    def mark_resumed():
        config = {}
        if changes:  # the run's config is now this one, and config_sha256 checks it
            text = to_yaml(cfg)
            run.write(CONFIG, text)
            config = {"config": yaml.safe_load(text),
                      "config_sha256": hashlib.sha256(text.encode()).hexdigest()}
        resumes = info.get("resumed", []) + [{"at": now_iso(), "from_epoch": state["epoch"],
                                               "backend": keras.backend.backend(),
                                               "device": device_used,
                                               "replicas": devices.replicas(model),
                                               "config_changes": changes}]
        run.update_run(status="running", ended=None, drop=("error",), resumed=resumes, **config,
                       **distributed.job_devices())

    run_session(session, reporter, argv, before=mark_resumed)
    return run


def _history_rows(run: RunDir, epochs: int) -> list[dict]:
    """The committed rows of `history.csv`: a row written after the last state is dropped.

    Raises:
        DlmineError: the file is damaged, or lacks committed epochs (a resume would leave a
            gap).
    """
    path = run / HISTORY
    rows = [row for row in read_history(path) if row["epoch"] <= epochs]
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
