"""Evaluation: metrics, per-class report and confusion matrix, from a run directory alone."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dlmine import data as datamod
from dlmine.config import load_config
from dlmine.config.schema import Config
from dlmine.console import Reporter
from dlmine.errors import DlmineError
from dlmine.rundir import CHECKPOINTS, CONFIG, EVAL_JSON, RUN_JSON, RunDir

CHECKPOINT_FILES = {"best": f"{CHECKPOINTS}/best.keras", "last": f"{CHECKPOINTS}/last.keras"}


def load_checkpoint(run: RunDir, which: str):
    """Load `best` or `last` with Keras `safe_mode=True`; only `.keras` files are read.

    Raises:
        DlmineError: the checkpoint is missing, damaged, or carries code (a `Lambda` layer,
            custom objects), which safe mode refuses.
    """
    return load_model_file(run / CHECKPOINT_FILES[which], which)


def load_model_file(path: Path, which: str = "model"):
    """Load one `.keras` file safely; see `load_checkpoint`."""
    import keras

    import dlmine.layers  # noqa: F401  (registers ColumnEmbedding, which table models may hold)

    if path.suffix != ".keras":
        raise DlmineError(f"{path}: dlmine loads only .keras model files (never .h5 or "
                          "SavedModel folders as full models)")
    if path.is_symlink():
        raise DlmineError(f"{path} is a symbolic link; dlmine loads only files written in the "
                          "run directory itself")
    if not path.is_file():
        raise DlmineError(f"{path} is missing: this run saved no {which} checkpoint "
                          "(did it finish an epoch?)")
    if not zipfile.is_zipfile(path):
        raise DlmineError(f"{path} is damaged: not a .keras archive (truncated or overwritten)")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=True)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "unsafe" in str(exc).lower() or "lambda" in str(exc).lower():
            raise DlmineError(f"{path} was refused: it carries code (such as a Lambda layer) that "
                              "Keras safe mode does not load; dlmine never runs code from a "
                              "model file") from None
        raise DlmineError(f"{path} cannot be loaded: {str(exc).splitlines()[0]}") from None
    except Exception as exc:
        raise DlmineError(f"{path} is damaged and cannot be loaded: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def evaluate_model(model, x: np.ndarray, y: np.ndarray, cfg: Config, class_names: list,
                   batch_size: int) -> dict:
    """Metrics of `model` on (x, y), with per-class figures for classifiers.

    Returns:
        `{"metrics": {...}, "per_class": {...}, "confusion_matrix": [[...]]}` for
        classification; `{"metrics": {...}}` (with r2) for regression.
    """
    from dlmine.batches import as_input, is_text
    from dlmine.data.shards import is_stream

    if is_text(x) or is_stream(x):
        metrics = model.evaluate(as_input(x, y, batch_size), verbose=0, return_dict=True)
        predicted = model.predict(as_input(x, batch_size=batch_size), verbose=0)
    else:
        metrics = model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)
        predicted = model.predict(x, batch_size=batch_size, verbose=0)
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


def _load_with_fallback(run: RunDir, checkpoint: str, reporter: Reporter):
    """The asked-for checkpoint, or the other one when it is damaged (with a warning)."""
    try:
        return load_checkpoint(run, checkpoint), checkpoint
    except DlmineError as exc:
        if "refused" in str(exc):  # carries code: never fall back silently past that
            raise
        other = "last" if checkpoint == "best" else "best"
        try:
            model = load_checkpoint(run, other)
        except DlmineError:
            raise exc from None
        reporter.warn(f"{exc}; evaluating the {other} checkpoint instead")
        return model, other


def evaluate_run(path: Path, checkpoint: str, split: str, reporter: Reporter) -> dict:
    """Evaluate a finished run from its directory alone and write `eval.json`.

    The data are rebuilt from the run's resolved `config.yaml` with the same seed,
    and transformed by the saved preprocessing state, never refitted.
    """
    run = RunDir.open(path)
    cfg = load_config(run / CONFIG, check_model=False).config  # checked when it trained
    prep = datamod.Preprocessor.load(run.path)
    info = run.read_json(RUN_JSON) if (run / RUN_JSON).exists() else {}
    if info.get("status") not in (None, "completed"):
        reporter.warn(f"this run is '{info.get('status')}', not completed; evaluating the "
                      f"{checkpoint} checkpoint it saved")
    splits = datamod.load(cfg.dataset, cfg.seed)
    if info.get("data_fingerprint") and info["data_fingerprint"] != splits.fingerprint:
        reporter.warn("the data differ from those this run was trained on (the fingerprint in "
                      "run.json does not match); the metrics are of the data as they are now")
    model, used = _load_with_fallback(run, checkpoint, reporter)
    x, y = splits.split(split)
    x, y = prep.transform(x, y)
    class_names = info.get("class_names") or splits.info.class_names
    report = {"split": split, "checkpoint": used,
              **evaluate_model(model, x, y, cfg, class_names, cfg.training.batch_size)}
    if used != checkpoint:
        report["fallback_from"] = checkpoint
    run.write_json(EVAL_JSON, report)
    return report
