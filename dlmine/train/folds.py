"""k-fold cross-validation: one complete run per fold, and their mean and spread.

The folds cut the training data (the training and validation splits together,
after `limit`); each fold is the validation split of one run, in
`RUN_DIR/fold-K/`, and every run is evaluated on the same test split. The parent
run directory holds the config, a `run.json` and an `eval.json` with the mean and
standard deviation of every test metric over the folds.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import numpy as np
import yaml

from dlmine.config import LoadedConfig, to_yaml
from dlmine.console import Reporter
from dlmine.data import Source, Splits
from dlmine.errors import DlmineError, Interrupted, UsageError
from dlmine.rundir import CONFIG, EVAL_JSON, RUN_JSON, RunDir, now_iso
from dlmine.train import tracking
from dlmine.train.prepare import build_checked_model
from dlmine.train.session import new_run


def check_folds(source: Source, splits: Splits, folds: int) -> None:
    """Refuse folds these data cannot have.

    Raises:
        UsageError: the data are shards (read one at a time), or `folds` is not between 2
            and the number of training samples.
    """
    if not source.in_memory:
        raise UsageError("--folds needs the data in memory; a folder of shards is read one "
                         "shard at a time (train without --folds, with a validation_split)")
    samples = len(splits.y_train) + (0 if splits.y_val is None else len(splits.y_val))
    if folds < 2 or folds > samples:
        raise UsageError(f"--folds must be between 2 and the {samples} training samples, "
                         f"received {folds}")


def fold_splits(source: Source, splits: Splits, folds: int, seed: int,
                task: str) -> list[Splits]:
    """`folds` Splits whose validation parts partition the training data (stratified)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    check_folds(source, splits, folds)
    x = source.concat(splits.x_train, splits.x_val)
    y = splits.y_train if splits.y_val is None else np.concatenate([splits.y_train, splits.y_val])
    stratified = task == "classification" and np.bincount(y).min(initial=folds) >= folds
    splitter = (StratifiedKFold if stratified else KFold)(folds, shuffle=True, random_state=seed)
    out = []
    for train_rows, val_rows in splitter.split(np.zeros(len(y)), y if stratified else None):
        x_train = source.take(x, train_rows)
        # a fold may miss a category of a table: its encoder is narrower
        info = source.fit_info(dataclasses.replace(splits.info), x_train)
        out.append(dataclasses.replace(splits, x_train=x_train, y_train=y[train_rows],
                                       x_val=source.take(x, val_rows), y_val=y[val_rows], info=info))
    return out


def train_folds(loaded: LoadedConfig, source: Source, splits: Splits, run: RunDir, folds: int,
                device_used: str, reporter: Reporter, argv: list[str],
                track: tracking.Target | None = None) -> RunDir:
    """Train one run per fold under `run` and write the aggregated `eval.json`; with
    `track`, an MLflow run for `run` with one nested run per fold."""
    cfg = loaded.config
    parts = fold_splits(source, splits, folds, cfg.seed, cfg.dataset.task)
    text = to_yaml(cfg)
    with run.removed_on_failure():  # a full disk here leaves no half-made run directory
        run.write(CONFIG, text)
        run.write_json(RUN_JSON, {"status": "running", "name": cfg.name, "folds": folds,
                                  "started": now_iso(), "ended": None, "duration_s": None,
                                  "command": argv, "device": device_used, "seed": cfg.seed,
                                  "config": yaml.safe_load(text),
                                  "config_sha256": hashlib.sha256(text.encode()).hexdigest(),
                                  "data_fingerprint": splits.fingerprint, "final_metrics": None})
    parent = tracking.start_run(track, run, None, reporter.warn)
    try:
        _train_each(loaded, source, parts, run, device_used, reporter, argv,
                    tracking.nested(track, parent))
    finally:  # the status run.json now holds
        tracking.finish_run(parent, run)
    return run


def _train_each(loaded: LoadedConfig, source: Source, parts: list[Splits], run: RunDir,
                device_used: str, reporter: Reporter, argv: list[str],
                track: tracking.Target | None) -> None:
    """Train the folds, then write the parent's `eval.json` and mark it `completed`."""
    cfg, folds, reports = loaded.config, len(parts), []
    for k, part in enumerate(parts, start=1):
        reporter.info(f"fold {k}/{folds}: {len(part.x_train)} training and {len(part.x_val)} "
                      "validation samples")
        with parent_marked(run, k, folds):
            prepared = build_checked_model(loaded, part.info.num_classes, part, source)
            fold_run = RunDir.create(run.path / f"fold-{k}", run.path, cfg.name)
            reports.append(new_run(loaded, prepared, part, fold_run, device_used, reporter, argv,
                                   track=track))
    write_summary(run, reports, reporter)


def write_summary(run: RunDir, reports: list[dict], reporter: Reporter) -> None:
    """The parent's `eval.json` (mean, spread and each fold's test metrics), marked
    `completed`."""
    folds = len(reports)
    per_fold = [_test_metrics(r) for r in reports]
    summary = summarize(per_fold)
    run.write_json(EVAL_JSON, {"split": "test", "checkpoint": "best", "folds": folds,
                               "metrics": summary["mean"], "std": summary["std"],
                               "per_fold": per_fold})
    started = run.read_json(RUN_JSON).get("started")
    ended = now_iso()
    seconds = (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds() \
        if isinstance(started, str) else None  # from start to end, pauses of a resume included
    run.update_run(status="completed", ended=ended, duration_s=seconds,
                   final_metrics=summary["mean"], final_metrics_std=summary["std"])
    reporter.metrics_table(f"test metrics, mean of {folds} folds", summary["mean"])


def _test_metrics(report: dict) -> dict:
    """A fold's test metrics: Keras' and the F1 scores its `eval.json` holds beside them."""
    return {**report["metrics"], **{k: report[k] for k in ("macro_f1", "micro_f1")
                                    if isinstance(report.get(k), float)}}


@contextmanager
def parent_marked(run: RunDir, k: int, folds: int) -> Iterator[None]:
    """The parent's `run.json` says `interrupted` or `failed`, with the fold, when fold `k`
    does."""
    try:
        yield
    except (Interrupted, KeyboardInterrupt) as exc:
        _mark(run, "interrupted", f"fold {k} of {folds} was interrupted: {exc or 'Ctrl-C'}")
        raise
    except BaseException as exc:
        what = str(exc) if isinstance(exc, DlmineError) else f"{type(exc).__name__}: {exc}"
        _mark(run, "failed", f"fold {k} of {folds} failed: {what}")
        raise


def _mark(run: RunDir, status: str, message: str) -> None:
    try:
        run.update_run(status=status, ended=now_iso(), error=message)
    except DlmineError:  # the fold's own error says more than this one
        pass


def summarize(metrics: list[dict]) -> dict:
    """The mean and (population) standard deviation of each metric over the folds."""
    names = [n for n in metrics[0] if all(n in m for m in metrics)]
    return {"mean": {n: float(np.mean([m[n] for m in metrics])) for n in names},
            "std": {n: float(np.std([m[n] for m in metrics])) for n in names}}
