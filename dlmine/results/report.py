"""`dlmine report`: a run's plots as PNG files and one self-contained HTML page.

Everything comes from the run directory: `run.json`, `history.csv`, `eval.json` and
`config.yaml`; the ROC and precision-recall curves of a binary classifier also need the
predictions, so the split of `eval.json` is rebuilt and predicted with its checkpoint.
The page inlines its images as data URIs and loads nothing from anywhere else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlmine.backend.runtime import import_keras
from dlmine.console import Reporter
from dlmine.errors import DlmineError
from dlmine.model.io import load_checkpoint
from dlmine.results import plots
from dlmine.results.predict import predict_outputs, split_inputs
from dlmine.results.recommend import Recommender
from dlmine.results.report_html import Plot, RunFacts, parse_config, render_html
from dlmine.rundir import CONFIG, EVAL_JSON, HISTORY, RUN_JSON, RunDir, atomic_write, read_history

REPORT_DIR = "report"
REPORT_HTML = "report.html"


def build_report(run_dir: Path, reporter: Reporter) -> Path:
    """Write `RUN_DIR/report/`: one PNG per plot and `report.html`; return the page's path.

    Args:
        run_dir: a run directory.
        reporter: where warnings go (data that cannot be rebuilt for the ROC curve, ...).

    Returns:
        The path of `report.html`.
    """
    _require_matplotlib()
    run = RunDir.open(run_dir)
    run.check_config()  # the page would show a config the run was not trained with
    facts = read_facts(run, reporter)
    facts.plots = make_plots(run, facts, reporter)
    return write_report(run, facts.plots, render_html(facts))


def _require_matplotlib() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise DlmineError("dlmine report draws its plots with matplotlib, which is not installed; "
                          "install it with: pip install matplotlib")


def read_facts(run: RunDir, reporter: Reporter) -> RunFacts:
    """`run.json`, `config.yaml`, `eval.json` (None when absent or damaged) and `history.csv`."""
    info = run.read_json(RUN_JSON)
    evaluation = None
    if (run / EVAL_JSON).exists():
        try:
            evaluation = run.read_json(EVAL_JSON)
            problem = _eval_problem(evaluation)
            if problem:
                raise DlmineError(f"{run / EVAL_JSON} is damaged: {problem}")
        except DlmineError as exc:
            evaluation = None
            reporter.warn(f"{exc}; the report has no test metrics (run dlmine evaluate again)")
    try:
        history = read_history(run / HISTORY)
    except DlmineError as exc:
        reporter.warn(f"{exc}; the report has no learning curves")
        history = []
    else:
        done = info.get("epochs_completed")
        if not history and isinstance(done, int) and done > 0:
            reporter.warn(f"{run / HISTORY} holds no epoch, but run.json counts {done} "
                          "completed; the report has no learning curves")
    return RunFacts(run.path, info, (run / CONFIG).read_text(encoding="utf-8"), evaluation,
                    history)


def _eval_problem(evaluation: dict) -> str | None:
    """What in `eval.json` is not as dlmine writes it (the parts the report reads), or None."""
    def numbers(value) -> bool:
        return isinstance(value, dict) and all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool))
            for v in value.values())

    if not numbers(evaluation.get("metrics", {})):
        return "'metrics' is not a mapping of names to numbers"
    for key in ("per_class", "per_label"):
        table = evaluation.get(key, {})
        if not isinstance(table, dict) or not all(numbers(row) for row in table.values()):
            return f"'{key}' is not a mapping of names to rows of numbers"
    labels, matrix = evaluation.get("labels"), evaluation.get("confusion_matrix")
    if labels is not None and not isinstance(labels, list):
        return "'labels' is not a list"
    if matrix is not None and not (
            isinstance(matrix, list) and isinstance(labels, list) and len(matrix) == len(labels)
            and all(isinstance(row, list) and len(row) == len(labels)
                    and all(isinstance(n, int | float) for n in row) for row in matrix)):
        return "'confusion_matrix' is not a square table of numbers, one row per label"
    return None


def make_plots(run: RunDir, facts: RunFacts, reporter: Reporter) -> list[Plot]:
    """Learning curves, then the confusion matrix and F1 bars, then ROC and PR for binary tasks."""
    out = learning_curves(facts.history)
    evaluation = facts.evaluation or {}
    if evaluation.get("confusion_matrix"):
        out.append(Plot("confusion_matrix.png", "Confusion matrix",
                        plots.confusion_matrix(evaluation["confusion_matrix"], evaluation["labels"])))
    if evaluation.get("per_class"):
        out.append(Plot("f1_per_class.png", "F1 per class", plots.f1_bars(evaluation["per_class"])))
    if evaluation.get("per_label"):  # multi_label
        out.append(Plot("f1_per_label.png", "F1 per label", plots.f1_bars(evaluation["per_label"])))
    if len(evaluation.get("labels") or []) == 2:
        out.extend(binary_curves(run, facts, reporter))
    if evaluation.get("curves"):  # a ranking recommender
        out.append(Plot("ranking_at_k.png", "HR@K and NDCG@K",
                        plots.ranking_curves(evaluation["curves"])))
    if evaluation.get("popularity"):
        out.append(Plot("popularity.png", "Popularity of the recommended items",
                        plots.popularity_bars(evaluation["popularity"])))
    out.extend(explanations(run, facts))
    config = parse_config(facts.config_text) or {}
    if (config.get("dataset") or {}).get("name") == "interactions":
        out.extend(item_map(run, facts, reporter))
    return out


def explanations(run: RunDir, facts: RunFacts) -> list[Plot]:
    """The plots of `dlmine explain` (`RUN_DIR/explain/`), when it was run."""
    folder = run / "explain"
    if not (folder / "explain.json").exists():
        return []
    try:
        explained = run.read_json("explain/explain.json")
    except DlmineError:
        return []
    out = []
    titles = {"importance.png": "Explain: global importance",
              "attributions.png": "Explain: integrated gradients of the explained samples"}
    for name, title in titles.items():
        if name in explained.get("files", []) and (folder / name).is_file():
            out.append(Plot(f"explain_{name}", title, (folder / name).read_bytes()))
    gap = (explained.get("completeness") or {}).get("max_relative_gap")
    if gap is not None:
        facts.notes.append(f"dlmine explain: {explained.get('importance', {}).get('method', '')}"
                           f"; integrated gradients' largest completeness gap {gap:.2%}"
                           + ("; the tokens are highlighted in explain/tokens.html"
                              if "tokens.html" in explained.get("files", []) else ""))
    return out


def item_map(run: RunDir, facts: RunFacts, reporter: Reporter) -> list[Plot]:
    """The learned item vectors on their two principal axes, coloured by the first
    categorical or multi-valued item feature (its first category), or else by popularity."""
    import_keras()
    try:
        recommender = Recommender(run, (facts.evaluation or {}).get("checkpoint", "best"))
    except DlmineError as exc:
        note = f"item map left out: {exc}"
        reporter.warn(note)
        facts.notes.append(note)
        return []
    vectors = recommender.item_vectors()
    if len(vectors) < 3:
        return []
    centred = vectors - vectors.mean(axis=0)
    axes = np.linalg.svd(centred, full_matrices=False)[2][:2]
    points = centred @ axes.T
    column, labels = recommender.item_labels()
    return [Plot("item_map.png", f"Item vectors, coloured by {column}",
                 plots.item_map(points, labels, column))]


def learning_curves(history: list[dict]) -> list[Plot]:
    """One plot per metric of `history.csv` (training and `val_` together); the learning rate
    only when it changed."""
    if not history:
        return []
    columns = list(history[0])
    epochs = [int(row["epoch"]) for row in history]
    names = [c for c in columns if c not in ("epoch", "learning_rate") and not c.startswith("val_")]
    names += [c[4:] for c in columns if c.startswith("val_") and c[4:] not in columns]
    out = []
    for name in names:
        series = {label: [row[col] for row in history]
                  for label, col in (("train", name), ("validation", f"val_{name}")) if col in columns}
        out.append(Plot(f"curve_{name}.png", f"Learning curve: {name}",
                        plots.learning_curve(epochs, series, name)))
    rates = [row["learning_rate"] for row in history] if "learning_rate" in columns else []
    if len(set(rates)) > 1:
        out.append(Plot("curve_learning_rate.png", "Learning rate",
                        plots.learning_curve(epochs, {"learning rate": rates}, "learning_rate")))
    return out


def binary_curves(run: RunDir, facts: RunFacts, reporter: Reporter) -> list[Plot]:
    """ROC and precision-recall curves on the split and checkpoint of `eval.json`."""
    split = facts.evaluation.get("split", "test")
    try:
        truth, scores = binary_scores(run, split, facts.evaluation.get("checkpoint", "best"))
    except DlmineError as exc:
        note = f"ROC and precision-recall curves left out: {exc}"
        reporter.warn(note)
        facts.notes.append(note)
        return []
    if len(np.unique(truth)) < 2:
        facts.notes.append(f"ROC and precision-recall curves left out: the {split} split holds "
                           "one class only")
        return []
    roc_png, auc = plots.roc_curve(truth, scores)
    pr_png, average_precision = plots.pr_curve(truth, scores)
    facts.curve_scores = {"ROC AUC": auc, "average precision": average_precision}
    return [Plot("roc.png", f"ROC curve ({split} split)", roc_png),
            Plot("precision_recall.png", f"Precision-recall curve ({split} split)", pr_png)]


def binary_scores(run: RunDir, split: str, checkpoint: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels 0/1 and the predicted probability of class 1 on one split of the run's data."""
    import_keras()  # only binary runs need the model, so `report` imports Keras here, quietly
    x, y = split_inputs(run, split)
    outputs = predict_outputs(load_checkpoint(run, checkpoint), x, run.read_config())
    outputs = outputs.reshape(len(outputs), -1)
    return y.astype(int), outputs[:, -1]  # one sigmoid output, or softmax column 1


def write_report(run: RunDir, figures: list[Plot], html: str) -> Path:
    """Write each PNG, then the page, atomically; drop PNGs of an earlier report that are gone."""
    folder = run / REPORT_DIR
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise DlmineError(f"cannot create {folder}: {exc.strerror or exc}") from None
    for figure in figures:
        atomic_write(folder / figure.name, figure.png)
    keep = {figure.name for figure in figures}
    for stale in folder.glob("*.png"):
        if stale.name not in keep:
            stale.unlink(missing_ok=True)
    atomic_write(folder / REPORT_HTML, html)
    return folder / REPORT_HTML
