"""Evaluation: metrics, per-class report and confusion matrix, from a run directory alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlmine.config.schema import Config
from dlmine.console import Reporter
from dlmine.data import Preprocessor, Source, source_for
from dlmine.errors import DlmineError
from dlmine.model.io import load_with_fallback
from dlmine.rundir import EVAL_JSON, RUN_JSON, RunDir


def evaluate_model(model, x, y: np.ndarray, cfg: Config, class_names: list, batch_size: int,
                   source: Source) -> dict:
    """Metrics of `model` on (x, y), with per-class figures for classifiers.

    Returns:
        `{"metrics": {...}, "per_class": {...}, "confusion_matrix": [[...]]}` for
        classification; `{"metrics": {...}}` (with r2) for regression.
    """
    batch = source.predict_batch_size(x, batch_size)
    inputs = source.as_input(x, y, batch_size)
    if isinstance(inputs, tuple):
        metrics = model.evaluate(*inputs, batch_size=batch, verbose=0, return_dict=True)
    else:
        metrics = model.evaluate(inputs, verbose=0, return_dict=True)
    predicted = model.predict(source.as_input(x, batch_size=batch_size), batch_size=batch,
                              verbose=0)
    metrics = {k: float(v) for k, v in metrics.items()}
    if cfg.dataset.task == "regression":
        from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

        truth, guess = y.reshape(len(y), -1), predicted.reshape(len(predicted), -1)
        metrics.update(r2=float(r2_score(truth, guess)), mse=float(mean_squared_error(truth, guess)),
                       mae=float(mean_absolute_error(truth, guess)))
        return {"metrics": metrics, "samples": int(len(x))}
    report = classification_report(y, predicted, class_names)
    if len(report["labels"]) == 2:
        metrics.update(binary_auc(report["truth"], predicted))
    del report["truth"]
    return {"metrics": metrics, **report}


def binary_auc(truth: np.ndarray, predicted: np.ndarray) -> dict:
    """ROC AUC and PR AUC (average precision) of the positive class, label 1."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    score = predicted[:, -1] if predicted.ndim > 1 else predicted
    if len(np.unique(truth)) < 2:
        return {}  # one class only in this split: AUC is undefined
    return {"roc_auc": float(roc_auc_score(truth, score)),
            "pr_auc": float(average_precision_score(truth, score))}


def classification_report(y: np.ndarray, predicted: np.ndarray, class_names: list) -> dict:
    """Per-class precision, recall, F1 and support, and the confusion matrix (sklearn)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    truth = y.argmax(axis=-1) if y.ndim > 1 else y.astype(int)
    if predicted.shape[-1] == 1:
        guess = (predicted[:, 0] > 0.5).astype(int)
    else:
        guess = predicted.argmax(axis=-1)
    binary = 2 if predicted.shape[-1] == 1 else 0
    labels = list(range(max(len(class_names), int(truth.max()) + 1, int(guess.max()) + 1, binary)))
    names = [class_names[i] if i < len(class_names) else str(i) for i in labels]
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, guess, labels=labels, zero_division=0)
    per_class = {name: {"precision": float(p), "recall": float(r), "f1": float(f),
                        "support": int(s)}
                 for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)}
    matrix = confusion_matrix(truth, guess, labels=labels)
    return {"per_class": per_class, "confusion_matrix": matrix.tolist(), "labels": names,
            "samples": int(len(truth)), "macro_f1": float(np.mean(f1)), "truth": truth}


def evaluate_run(path: Path, checkpoint: str, split: str, reporter: Reporter) -> dict:
    """Evaluate a finished run from its directory alone and write `eval.json`.

    The data are rebuilt from the run's resolved `config.yaml` with the same seed,
    and transformed by the saved preprocessing state, never refitted.
    """
    run = RunDir.open(path)
    run.refuse_folds("evaluate")
    run.check_config(reporter.warn)  # an edited config.yaml would rebuild another split: never into eval.json
    cfg = run.read_config()  # checked when it trained
    prep = Preprocessor.load(run.path)
    info = run.read_json(RUN_JSON) if (run / RUN_JSON).exists() else {}
    if info.get("status") not in (None, "completed"):
        reporter.warn(f"this run is '{info.get('status')}', not completed; evaluating the "
                      f"{checkpoint} checkpoint it saved")
    source = source_for(cfg.dataset)
    splits = source.load(cfg.seed)
    if info.get("data_fingerprint") and info["data_fingerprint"] != splits.fingerprint:
        reporter.warn("the data differ from those this run was trained on (the fingerprint in "
                      "run.json does not match); the metrics are of the data as they are now")
    model, used = load_with_fallback(run, checkpoint, reporter)
    x, y = splits.split(split)
    x, y = prep.transform(x, y)
    class_names = info.get("class_names") or splits.info.class_names
    report = {"split": split, "checkpoint": used,
              **evaluate_model(model, x, y, cfg, class_names, cfg.training.batch_size,
                                 source)}
    if used != checkpoint:
        report["fallback_from"] = checkpoint
    try:
        run.write_json(EVAL_JSON, report)
    except DlmineError as exc:
        raise NotSaved(str(exc), report) from None
    return report


class NotSaved(DlmineError):
    """The metrics were computed but `eval.json` could not be written; `report` holds them."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report
