"""Evaluation: metrics, per-class report and confusion matrix, from a run directory alone."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from dlmine.backend.devices import replicas
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
    own = source.evaluate(model, x, y, cfg, batch_size)
    if own is not None:
        return own
    batch = source.predict_batch_size(x, batch_size)
    predicted = model.predict(source.as_input(x, batch_size=batch_size), batch_size=batch,
                              verbose=0)
    metrics = score_predictions(model, y, predicted)
    if metrics is None:  # a second pass: the loss depends on more than the predictions
        inputs = source.as_input(x, y, batch_size)
        if isinstance(inputs, tuple):
            metrics = model.evaluate(*inputs, batch_size=batch, verbose=0, return_dict=True)
        else:
            metrics = model.evaluate(inputs, verbose=0, return_dict=True)
    metrics = {k: float(v) for k, v in metrics.items()}
    if cfg.dataset.task == "regression":
        from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

        truth, guess = y.reshape(len(y), -1), predicted.reshape(len(predicted), -1)
        with warnings.catch_warnings():  # r2 of one sample: nan, written as null
            warnings.simplefilter("ignore")
            r2 = float(r2_score(truth, guess))
        metrics.update(r2=r2, mse=float(mean_squared_error(truth, guess)),
                       mae=float(mean_absolute_error(truth, guess)))
        return {"metrics": metrics, "samples": int(len(x))}
    if cfg.dataset.task == "multi_label":
        return {"metrics": metrics, **multi_label_report(y, predicted, class_names,
                                                         cfg.dataset.threshold)}
    report = classification_report(y, predicted, class_names)
    if len(report["labels"]) == 2:
        metrics.update(binary_auc(report["truth"], predicted))
    del report["truth"]
    return {"metrics": metrics, **report}


SCORE_ROWS = 16384  # predictions scored per call: few calls (eager ops cost), bounded memory


def score_predictions(model, y, predicted: np.ndarray) -> dict | None:
    """`model.evaluate(x, y)`'s loss and compiled metrics, from `model.predict(x)`'s output.

    One pass over the data instead of two (measured on the benchmark's 10,000 MNIST test
    images: 2.5 CPU-s instead of 5.3). Every loss and metric a config can name is a mean over
    samples, so scoring the predictions in a few large chunks, weighted by their size, gives
    `evaluate`'s value up to float32 rounding (1.2e-7 measured), the weights' regularization
    penalties included, as `evaluate` adds them.

    Returns:
        The metrics by name; or None when the loss depends on more than the predictions (an
        activity regularizer) or the model is replicated: then the caller evaluates.
    """
    import keras

    if not isinstance(y, np.ndarray) or not len(y) or not _loss_from_predictions_only(model):
        return None
    model.reset_metrics()
    tracker = keras.metrics.Mean(name="loss")  # what Keras' own loss tracker is
    logs: dict = {}
    for start in range(0, len(y), SCORE_ROWS):
        y_part, predicted_part = y[start:start + SCORE_ROWS], predicted[start:start + SCORE_ROWS]
        tracker.update_state(model.compute_loss(x=None, y=y_part, y_pred=predicted_part,
                                                training=False), sample_weight=len(y_part))
        logs = model.compute_metrics(None, y_part, predicted_part)
    logs = {k: float(np.asarray(v)) for k, v in logs.items()}
    logs["loss"] = float(np.asarray(tracker.result()))
    model.reset_metrics()
    return dict(sorted(logs.items()))


def _loss_from_predictions_only(model) -> bool:
    if replicas(model) != 1:
        return False
    # Activity regularizers (ActivityRegularization too) are the only built-in add_loss: their
    # losses exist inside a forward pass only. Weight penalties are recomputed from the weights.
    return not any(getattr(layer, "activity_regularizer", None) is not None
                   for layer in model._flatten_layers(include_self=False))


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


def multi_label_report(y: np.ndarray, predicted: np.ndarray, class_names: list,
                       threshold: float) -> dict:
    """Micro and macro F1 and each label's precision, recall, F1 and support (sklearn); a label
    is predicted when its output is at least `threshold`."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    truth, guess = y.astype(int), (predicted >= threshold).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(truth, guess,
                                                                     zero_division=0)
    per_label = {name: {"precision": float(p), "recall": float(r), "f1": float(f),
                        "support": int(s)}
                 for name, p, r, f, s in zip(class_names, precision, recall, f1, support,
                                             strict=True)}
    return {"per_label": per_label, "samples": int(len(truth)), "threshold": threshold,
            "micro_f1": float(f1_score(truth, guess, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(truth, guess, average="macro", zero_division=0))}


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
    try:
        info = run.read_json(RUN_JSON)
    except DlmineError:  # missing or damaged: check_config warned, and the run is evaluated
        info = {}
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
