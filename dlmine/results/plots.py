"""The report's plots, as PNG bytes: matplotlib's object API on the Agg canvas, no pyplot.

No global state is touched (no `pyplot`, no backend switch), so plots can be drawn in any
process, with or without a display. Each function returns the PNG file's bytes.
"""

from __future__ import annotations

import io

import numpy as np

TRAIN, VALIDATION, ACCENT = "#2563eb", "#ea580c", "#0f766e"
DPI = 110


def _figure(width: float = 6.0, height: float = 3.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # no version: same bytes each time
    return buffer.getvalue()


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11, loc="left", fontweight="bold")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def learning_curve(epochs: list[int], series: dict[str, list[float]], metric: str) -> bytes:
    """One metric per epoch, training and validation on the same axes.

    Args:
        epochs: the epoch numbers (1-based).
        series: `{"train": [...], "validation": [...]}`, either may be absent.
        metric: the metric's name, for the title and the y axis.

    Returns:
        PNG bytes.
    """
    fig, ax = _figure()
    colors = {"train": TRAIN, "validation": VALIDATION}
    for label, values in series.items():
        ax.plot(epochs, values, marker="o", markersize=3.5, linewidth=1.8, label=label,
                color=colors.get(label, ACCENT))
    _style(ax, metric, "epoch", metric)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if metric == "learning_rate":
        ax.set_yscale("log")
    elif _is_fraction(metric, series):
        ax.set_ylim(-0.02, 1.02)  # accuracy-like: the whole range, so 0.97 does not look like 0.5
    if len(series) > 1:
        ax.legend(frameon=False)
    return _png(fig)


def _is_fraction(metric: str, series: dict[str, list[float]]) -> bool:
    values = [v for vs in series.values() for v in vs if not np.isnan(v)]
    bounded = ("accuracy", "auc", "precision", "recall")
    return any(word in metric for word in bounded) and all(0 <= v <= 1 for v in values)


def confusion_matrix(matrix: list[list[int]], labels: list[str]) -> bytes:
    """Counts of true (rows) against predicted (columns) classes, annotated when readable.

    Returns:
        PNG bytes.
    """
    counts = np.asarray(matrix)
    size = min(10.0, 4.2 + 0.16 * len(labels))
    fig, ax = _figure(size + 0.8, size)
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ticks = np.arange(len(labels))
    fontsize = 9 if len(labels) <= 12 else 6
    slanted = len(labels) > 4 and max(len(str(n)) for n in labels) > 2
    ax.set_xticks(ticks, labels, rotation=45 if slanted else 0, ha="right" if slanted else "center",
                  fontsize=fontsize)
    ax.set_yticks(ticks, labels, fontsize=fontsize)
    if len(labels) <= 20:
        threshold = counts.max() / 2 if counts.size else 0
        for (row, col), value in np.ndenumerate(counts):
            ax.text(col, row, str(value), ha="center", va="center", fontsize=fontsize,
                    color="white" if value > threshold else "#111827")
    ax.set_title("confusion matrix", fontsize=11, loc="left", fontweight="bold")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return _png(fig)


def f1_bars(per_class: dict[str, dict]) -> bytes:
    """Horizontal bars of each class's F1, with its support.

    Returns:
        PNG bytes.
    """
    names = list(per_class)
    f1 = [per_class[n]["f1"] for n in names]
    fig, ax = _figure(6.0, min(14.0, max(2.6, 1.4 + 0.32 * len(names))))
    positions = np.arange(len(names))
    ax.barh(positions, f1, color=ACCENT, height=0.7)
    ax.set_yticks(positions, names, fontsize=9 if len(names) <= 30 else 6)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    for y, (value, name) in enumerate(zip(f1, names, strict=True)):
        ax.text(min(value, 1.0) + 0.01, y, f"{value:.2f} (n={per_class[name]['support']})",
                va="center", fontsize=8)
    _style(ax, "F1 per class", "F1", "")
    return _png(fig)


def ranking_curves(curves: dict) -> bytes:
    """HR@K and NDCG@K over K, against the sampled candidates and in the full ranking.

    Args:
        curves: `eval.json`'s `curves` (`dlmine.results.recommend_metrics.curves`).

    Returns:
        PNG bytes.
    """
    fig, ax = _figure()
    for name, color in (("hr", TRAIN), ("ndcg", VALIDATION)):
        ax.plot(curves["k"], curves[name], color=color, linewidth=1.8, label=f"{name.upper()}@K")
        ax.plot(curves["k"], curves[f"full_{name}"], color=color, linewidth=1.8, linestyle="--",
                label=f"{name.upper()}@K, full ranking")
    _style(ax, "HR@K and NDCG@K", "K", "")
    ax.set_ylim(-0.02, 1.02)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(frameon=False, fontsize=8)
    return _png(fig)


def popularity_bars(popularity: dict) -> bytes:
    """Each tenth of the catalogue (least to most popular): its share of the interactions
    and of the top-K recommendations.

    Returns:
        PNG bytes.
    """
    fig, ax = _figure()
    positions = np.arange(1, 11)
    ax.bar(positions - 0.2, popularity["interactions_share"], width=0.4, color="#9ca3af",
           label="share of the interactions")
    ax.bar(positions + 0.2, popularity["recommended_share"], width=0.4, color=ACCENT,
           label=f"share of the top-{popularity['k']} recommendations")
    ax.set_xticks(positions, [str(p) for p in positions])
    _style(ax, "Popularity of what is recommended", "tenth of the items, least popular first",
           "share")
    ax.legend(frameon=False, fontsize=8)
    return _png(fig)


def item_map(points: np.ndarray, labels: list[str], column: str) -> bytes:
    """The item vectors projected on their two principal axes, coloured by a side column
    (its eight most frequent values; the others grey).

    Returns:
        PNG bytes.
    """
    fig, ax = _figure(6.4, 4.6)
    values, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
    shown = [v for _, v in sorted(zip(-counts, values, strict=True))][:8]
    palette = ["#2563eb", "#ea580c", "#0f766e", "#9333ea", "#dc2626", "#ca8a04", "#0891b2",
               "#4d7c0f"]
    labels = np.asarray(labels, dtype=object).astype(str)
    other = ~np.isin(labels, shown)
    if other.any():
        ax.scatter(points[other, 0], points[other, 1], s=6, color="#d1d5db", label="other")
    for value, color in zip(shown, palette, strict=False):
        mask = labels == value
        ax.scatter(points[mask, 0], points[mask, 1], s=8, color=color, label=value[:24])
    _style(ax, f"Item vectors, coloured by {column}", "first principal axis",
           "second principal axis")
    ax.legend(frameon=False, fontsize=7, markerscale=1.5, loc="best")
    return _png(fig)


def importance_bars(importance: list[dict], method: str, limit: int = 20) -> bytes:
    """Horizontal bars of the most important inputs (mean drop of the metric, with its
    standard deviation over the repeats).

    Returns:
        PNG bytes.
    """
    rows = importance[:limit]
    fig, ax = _figure(6.4, min(9.0, max(2.6, 1.3 + 0.3 * len(rows))))
    positions = np.arange(len(rows))
    ax.barh(positions, [r["mean"] for r in rows], xerr=[r["std"] for r in rows], color=ACCENT,
            height=0.7, error_kw={"elinewidth": 1, "ecolor": "#374151"})
    ax.set_yticks(positions, [str(r["input"])[:28] for r in rows], fontsize=8)
    ax.invert_yaxis()
    _style(ax, "Global importance", f"drop of the metric: {method}"[:90], "")
    return _png(fig)


def heatmaps(x: np.ndarray, attributions, rows: list[dict]) -> bytes:
    """Each explained image beside its absolute attributions (summed over channels).

    Returns:
        PNG bytes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(rows)
    fig = Figure(figsize=(2.2 * n, 4.6), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n, squeeze=False)
    for k in range(n):
        image = np.asarray(x[k], "float64")
        image = image.mean(axis=-1) if image.ndim == 3 else image
        heat = np.abs(np.asarray(attributions[k], "float64"))
        heat = heat.sum(axis=-1) if heat.ndim == 3 else heat
        axes[0, k].imshow(image, cmap="gray")
        axes[1, k].imshow(heat, cmap="inferno")
        axes[0, k].set_title(f"true {rows[k]['true']}\npredicted {rows[k]['predicted']}",
                             fontsize=8)
        for ax in axes[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
    return _png(fig)


def roc_curve(truth: np.ndarray, scores: np.ndarray) -> tuple[bytes, float]:
    """The ROC curve of a binary classifier.

    Args:
        truth: labels 0/1.
        scores: the predicted probability of class 1.

    Returns:
        PNG bytes and the area under the curve.
    """
    from sklearn.metrics import auc
    from sklearn.metrics import roc_curve as sk_roc

    fpr, tpr, _ = sk_roc(truth, scores)
    area = float(auc(fpr, tpr))
    fig, ax = _figure(4.8, 4.4)
    ax.plot(fpr, tpr, color=TRAIN, linewidth=2, label=f"AUC {area:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="#9ca3af", linewidth=1, label="chance")
    _style(ax, "ROC curve", "false positive rate", "true positive rate")
    ax.legend(frameon=False, loc="lower right")
    return _png(fig), area


def pr_curve(truth: np.ndarray, scores: np.ndarray) -> tuple[bytes, float]:
    """The precision-recall curve of a binary classifier.

    Returns:
        PNG bytes and the average precision.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(truth, scores)
    average = float(average_precision_score(truth, scores))
    fig, ax = _figure(4.8, 4.4)
    ax.step(recall, precision, where="post", color=VALIDATION, linewidth=2, label=f"AP {average:.3f}")
    ax.axhline(float(np.mean(truth)), linestyle="--", color="#9ca3af", linewidth=1, label="chance")
    ax.set_ylim(0, 1.05)
    _style(ax, "precision-recall curve", "recall", "precision")
    ax.legend(frameon=False, loc="lower left")
    return _png(fig), average


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, from its IHDR chunk.

    Raises:
        ValueError: `data` is not a PNG.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG file: no PNG signature and IHDR chunk")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
