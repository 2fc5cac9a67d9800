"""`dlmine explain`: what a finished run learned, as global importances and per-sample
attributions, written to `RUN_DIR/explain/`.

Global importance, on one split, is the drop of the run's main metric (accuracy, or R² for
regression) when one raw input stops carrying information:

- tables: the column is shuffled across the rows (its one-hot block or code together),
  `repeats` seeded times: mean and standard deviation (permutation importance);
- images and other arrays: a patch of a 4 x 4 grid is replaced by black (the preprocessing
  of zeros), once per patch (occlusion); arrays of one axis: each value is shuffled;
- text: each of the most frequent tokens is removed from every text that has it.

Per-sample attributions are integrated gradients (midpoint rule, `steps` points) of the
model's output for the predicted class (the value, for regression) from a baseline: the
training mean of each encoded table value, black for images, no token for bags of words;
for token ids (a first `Embedding` layer), the path runs from every token's vector being the
padding token's to the real vectors, in the embedding table, so masks are kept. The
gradient is the backend's own (`dlmine.backend.gradients`). Completeness is checked: the
attributions of a sample sum to f(x) - f(baseline); the largest relative gap is reported.

Recommendation runs: for users of the split, the top item, the items of their history
nearest to it by the learned item vectors (cosine: the history that weighs most), and the
items nearest to it.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path

import numpy as np

from dlmine.backend.gradients import gradient
from dlmine.console import Reporter
from dlmine.data import Preprocessor, source_for
from dlmine.errors import DlmineError, UsageError
from dlmine.model.io import in_float32, load_checkpoint
from dlmine.results import plots
from dlmine.results.recommend import Recommender
from dlmine.rundir import RunDir, atomic_write

EXPLAIN_DIR = "explain"
EXPLAIN_JSON = "explain.json"
GAP_WARNING = 0.05  # the completeness gap above which `explain` warns
STACK_BYTES = 64 * 2**20  # the variants of the inputs predicted in one call, at most
GRID = 4  # occlusion patches per image side
TOKENS = 20  # the most frequent tokens whose removal is measured
BATCH = 256


def explain_run(run_dir: Path, split: str = "test", samples: int = 8, checkpoint: str = "best",
                steps: int = 64, repeats: int = 5, reporter: Reporter | None = None) -> dict:
    """Explain a finished run; write `RUN_DIR/explain/` and return `explain.json`'s content.

    Raises:
        UsageError: a folds parent, a multi-label run, an unknown split.
    """
    reporter = reporter or Reporter(quiet=True)
    run = RunDir.open(run_dir)
    run.refuse_folds("explain")
    run.check_config(reporter.warn)  # an edited config.yaml would rebuild another split
    cfg = run.read_config()
    if cfg.dataset.task == "multi_label":
        raise UsageError("explain does not handle multi_label runs yet: integrated gradients "
                         "need one output to explain")
    if split not in ("train", "validation", "test"):
        raise UsageError(f"--split must be train, validation or test, received {split!r}")
    if cfg.dataset.name == "interactions":  # the recommender reads its data and model
        return _write(run, _explain_recommender(run, split, samples, checkpoint), [], None)
    splits = source_for(cfg.dataset).load(cfg.seed)
    model = in_float32(load_checkpoint(run, checkpoint))  # gradients at full precision
    raw, y = splits.split(split)
    if raw is None or len(y) == 0:
        raise UsageError(f"the run has no {split} split")
    prep = Preprocessor.load(run.path)
    x = prep.transform_x(raw)
    task = cfg.dataset.task
    outputs = _predict(model, x)
    base = _metric(task, outputs, y)
    kind = prep.kind
    if kind == "table":
        groups, names = _table_groups(prep)
        importance = _permutation(model, x, y, task, base, groups, names, repeats, cfg.seed)
        method = "permutation importance (each column shuffled across rows)"
    elif kind == "text":
        importance = _token_removal(model, x, y, task, base, prep)
        method = "token removal (each frequent token removed from every text that has it)"
    elif x.ndim >= 3:
        importance = _occlusion(model, x, y, task, base, _black(prep, raw))
        method = f"occlusion ({GRID} x {GRID} patches set to black)"
    else:
        groups = [np.array([j]) for j in range(x.shape[1])]
        importance = _permutation(model, x, y, task, base, groups,
                                  [f"x[{j}]" for j in range(x.shape[1])], repeats, cfg.seed)
        method = "permutation importance (each input value shuffled across rows)"
    chosen = np.arange(min(samples, len(x)))
    targets = _targets(outputs[chosen], task)
    embedding = _first_embedding(model) if kind == "text" and \
        prep.vocabulary.cfg.output_mode == "int" else None
    if embedding is not None:
        attributions, gaps = _embedding_ig(model, embedding, x[chosen], targets, steps)
        baseline_text = "every token's vector set to the padding token's (the mask kept)"
    else:
        baseline = _baseline(prep, kind, raw, splits, x[chosen])
        attributions, gaps = _input_ig(model, x[chosen], baseline, targets, steps, task)
        baseline_text = {"table": "the training mean of each encoded value",
                         "text": "no token (a bag of zeros)"}.get(kind, "black (the "
                                                                  "preprocessing of zeros)")
    names = class_names(run)
    rows = _sample_rows(kind, prep, x[chosen], y[chosen], outputs[chosen], targets, attributions,
                        task, names, raw, chosen)
    report = {"split": split, "checkpoint": checkpoint, "kind": kind,
              "metric": "r2" if task == "regression" else "accuracy", "metric_value": base,
              "importance": {"method": method, "inputs": importance},
              "attributions": {"method": "integrated gradients", "baseline": baseline_text,
                               "steps": steps, "samples": rows},
              "completeness": {"max_relative_gap": float(max(gaps)) if len(gaps) else 0.0,
                               "warning_above": GAP_WARNING}}
    if kind == "table":
        means = {c: float(np.mean([abs(r["attributions"][c]) for r in rows]))
                 for c in rows[0]["attributions"] if rows[0]["attributions"][c] is not None}
        report["attributions"]["mean_abs"] = dict(sorted(means.items(), key=lambda kv: -kv[1]))
    arrays = None
    if kind not in ("table", "text"):
        arrays = {"attributions": np.asarray(attributions, "float32"),
                  "index": chosen.astype("int64")}
    gap = report["completeness"]["max_relative_gap"]
    if gap > GAP_WARNING:
        reporter.warn(f"integrated gradients miss completeness by up to {gap:.1%} (> 5%): "
                      f"run explain again with more --steps (now {steps})")
    figures = [("importance.png", plots.importance_bars(importance, method))]
    if kind not in ("table", "text") and x.ndim >= 3:
        figures.append(("attributions.png", plots.heatmaps(x[chosen], attributions, rows)))
    page = _token_page(rows) if kind == "text" else None
    return _write(run, report, figures, page, arrays)


# --- the metric and the model's outputs ---------------------------------------------------------

def _predict(model, x) -> np.ndarray:
    out = np.asarray(model.predict(x, batch_size=BATCH, verbose=0), dtype="float64")
    return out.reshape(len(out), -1)


def _metric(task: str, outputs: np.ndarray, y: np.ndarray) -> float:
    if task == "regression":
        from sklearn.metrics import r2_score

        return float(r2_score(y, outputs[:, 0]))
    return float((_classes(outputs) == np.asarray(y).reshape(-1)).mean())


def _classes(outputs: np.ndarray) -> np.ndarray:
    return (outputs[:, 0] > 0.5).astype(int) if outputs.shape[1] == 1 else outputs.argmax(axis=1)


def _targets(outputs: np.ndarray, task: str) -> list[tuple[int, float]]:
    """(output column, sign) explained per sample: the predicted class's probability (a
    single sigmoid: p, or 1 - p as -p), or the value."""
    if task == "regression" or outputs.shape[1] > 1:
        columns = np.zeros(len(outputs), int) if task == "regression" else outputs.argmax(1)
        return [(int(c), 1.0) for c in columns]
    return [(0, 1.0 if p > 0.5 else -1.0) for p in outputs[:, 0]]


# --- global importance ------------------------------------------------------------------------

def _ranked(drops: dict[str, list[float]]) -> list[dict]:
    rows = [{"input": name, "mean": float(np.mean(v)), "std": float(np.std(v))}
            for name, v in drops.items()]
    return sorted(rows, key=lambda r: -r["mean"])


def _drops(model, task: str, y, base: float, variants) -> list[float]:
    """`base` less the metric of each variant of the inputs (an iterable of arrays of the
    same rows), many variants to one `predict` call: one call per variant was most of
    `explain`'s time on small models."""
    out, pending = [], []

    def flush():
        outputs = _predict(model, np.concatenate(pending))
        out.extend(base - _metric(task, part, y) for part in np.split(outputs, len(pending)))
        pending.clear()

    for variant in variants:  # a generator: at most STACK_BYTES of variants held at once
        pending.append(variant)
        if len(pending) * variant.nbytes >= STACK_BYTES:  # the variants are all one size
            flush()
    if pending:
        flush()
    return out


def _permutation(model, x, y, task, base, groups, names, repeats, seed) -> list[dict]:
    rng = np.random.default_rng([seed, 5])

    def shuffled():
        for group in groups:
            for _ in range(repeats):
                variant = x.copy()
                variant[:, group] = x[rng.permutation(len(x))][:, group]
                yield variant

    scores = _drops(model, task, y, base, shuffled())
    return _ranked({name: scores[i * repeats:(i + 1) * repeats] for i, name in enumerate(names)})


def _table_groups(prep) -> tuple[list[np.ndarray], list[str]]:
    """Each raw column's positions in the encoded vector, and the columns' names."""
    slots = prep.encoder.slots()
    return list(slots.values()), list(slots)


def _occlusion(model, x, y, task, base, black) -> list[dict]:
    height, width = x.shape[1], x.shape[2]
    rows = np.array_split(np.arange(height), GRID)
    cols = np.array_split(np.arange(width), GRID)
    patches = [(i, j, r, c) for i, r in enumerate(rows) for j, c in enumerate(cols)]

    def occluded():
        for _, _, r, c in patches:
            variant = x.copy()
            variant[:, r[0]:r[-1] + 1, c[0]:c[-1] + 1] = black[r[0]:r[-1] + 1, c[0]:c[-1] + 1]
            yield variant

    scores = _drops(model, task, y, base, occluded())
    return _ranked({f"patch row {i + 1} col {j + 1}": [score]
                    for (i, j, _, _), score in zip(patches, scores, strict=True)})


def _black(prep, raw) -> np.ndarray:
    return prep.transform_x(np.zeros((1, *np.asarray(raw).shape[1:]), dtype="float32"))[0]


def _token_removal(model, x, y, task, base, prep) -> list[dict]:
    vocab = prep.vocabulary
    ids = vocab.cfg.output_mode == "int"
    counts: Counter = Counter()
    if ids:
        for row in x:
            counts.update(set(int(t) for t in row if t > 1))
    else:
        counts.update({j: int(n) for j, n in enumerate((x[:, 2:] > 0).sum(axis=0), start=2)})
    tokens = [token for token, _ in counts.most_common(TOKENS)]

    def removed():
        for token in tokens:
            if ids:
                variant = np.zeros_like(x)
                for r, row in enumerate(x):
                    kept = row[row != token]
                    variant[r, :len(kept)] = kept
            else:
                variant = x.copy()
                variant[:, token] = 0.0
            yield variant

    scores = _drops(model, task, y, base, removed())
    return _ranked({vocab.terms[t]: [score] for t, score in zip(tokens, scores, strict=True)})


# --- integrated gradients ---------------------------------------------------------------------

def _baseline(prep, kind, raw, splits, x) -> np.ndarray:
    if kind == "table":
        train = prep.transform_x(splits.split("train")[0])
        mean = train.mean(axis=0)
        embedded = prep.encoder.layout()["embedded"]
        if embedded:  # integer codes have no path: they stay as they are (no attribution)
            mean = np.broadcast_to(mean, x.shape).copy()
            mean[:, -len(embedded):] = x[:, -len(embedded):]
        return mean
    if kind == "text":
        return np.zeros(x.shape[1:], "float32")
    return _black(prep, raw)


def _input_ig(model, x, baseline, targets, steps, task) -> tuple[np.ndarray, list[float]]:
    import keras


    x = np.asarray(x, "float32")
    baseline = np.broadcast_to(np.asarray(baseline, "float32"), x.shape)
    select = np.zeros((len(x), _predict(model, x[:1]).shape[1]), "float32")
    for i, (column, sign) in enumerate(targets):
        select[i, column] = sign

    def total(v):
        out = keras.ops.reshape(model(v, training=False), (len(x), -1))
        return keras.ops.sum(keras.ops.cast(out, "float32") * select)

    summed = np.zeros_like(x)
    for alpha in (np.arange(steps) + 0.5) / steps:
        summed += gradient(total, baseline + alpha * (x - baseline))
    attributions = (x - baseline) * summed / steps
    ends = (_predict(model, x) * select).sum(axis=1) - (_predict(model, baseline) * select).sum(1)
    return attributions, _gaps(attributions.reshape(len(x), -1).sum(axis=1), ends)


def _first_embedding(model):
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.Embedding):
            return layer
        if not isinstance(layer, keras.layers.InputLayer):
            return None
    return None


def _embedding_ig(model, embedding, x, targets, steps) -> tuple[list[np.ndarray], list[float]]:
    """Per sample: each position's attribution, along the path from every token's vector
    being the padding token's to the learned vectors (the mask, from the ids, is kept)."""
    import keras


    variables = list(model.trainable_variables)
    frozen = list(model.non_trainable_variables)
    table_var = embedding.embeddings
    place = next((i for i, v in enumerate(variables) if v is table_var), None)
    pool = variables if place is not None else frozen
    if place is None:
        place = next(i for i, v in enumerate(frozen) if v is table_var)
    values = [keras.ops.convert_to_tensor(v) for v in variables]
    fixed = [keras.ops.convert_to_tensor(v) for v in frozen]
    table = np.asarray(keras.ops.convert_to_numpy(table_var), "float32")
    padding = np.broadcast_to(table[0], table.shape)

    def score(ids, column, sign):
        def f(w):
            trainable, other = list(values), list(fixed)
            (trainable if pool is variables else other)[place] = keras.ops.cast(
                w, table_var.dtype)
            out, _ = model.stateless_call(trainable, other, ids, training=False)
            return sign * keras.ops.sum(keras.ops.cast(out, "float32")[:, column])
        return f

    attributions, gaps = [], []
    for row, (column, sign) in zip(x, targets, strict=True):
        ids = np.asarray(row[None], "int32")
        f = score(ids, column, sign)
        summed = np.zeros_like(table)
        for alpha in (np.arange(steps) + 0.5) / steps:
            summed += gradient(f, padding + alpha * (table - padding))
        per_row = ((table - padding) * summed / steps).sum(axis=1)
        counts = np.bincount(row, minlength=len(table))
        position = np.where(row > 0, per_row[row] / np.maximum(counts[row], 1), 0.0)
        attributions.append(position)
        ends = float(keras.ops.convert_to_numpy(f(table))) - float(
            keras.ops.convert_to_numpy(f(padding)))
        gaps.extend(_gaps(np.array([per_row[np.unique(row)].sum()]), np.array([ends])))
    return attributions, gaps


def _gaps(sums: np.ndarray, ends: np.ndarray) -> list[float]:
    """|sum of attributions - (f(x) - f(baseline))|, relative to |f(x) - f(baseline)|."""
    return [float(abs(s - e) / max(abs(e), 1e-6)) for s, e in zip(sums, ends, strict=True)]


# --- what is written --------------------------------------------------------------------------

def class_names(run: RunDir) -> list:
    try:
        return list(run.read_json("run.json").get("class_names") or [])
    except DlmineError:
        return []


def _sample_rows(kind, prep, x, y, outputs, targets, attributions, task, names, raw, chosen):
    rows = []
    groups, columns = _table_groups(prep) if kind == "table" else ([], [])
    predicted = outputs[:, 0] if task == "regression" else _classes(outputs)
    for k in range(len(x)):
        def name(c):
            return names[int(c)] if task != "regression" and int(c) < len(names) else (
                float(c) if task == "regression" else int(c))
        row = {"index": int(chosen[k]), "true": name(y[k]), "predicted": name(predicted[k])}
        a = attributions[k]
        if kind == "table":
            row["attributions"] = {c: float(np.sum(a[g])) for c, g in zip(columns, groups,
                                                                           strict=True)}
            for column, kind_ in prep.encoder.kinds.items():
                if kind_ == "embedding":
                    row["attributions"][column] = None  # codes: no path to integrate along
        elif kind == "text" and prep.vocabulary.cfg.output_mode == "int":
            row["tokens"] = [[prep.vocabulary.terms[int(t)], round(float(v), 6)]
                             for t, v in zip(x[k], a, strict=True) if t > 0]
        elif kind == "text":
            present = np.flatnonzero(x[k])
            row["tokens"] = [[prep.vocabulary.terms[int(t)], round(float(a[t]), 6)]
                             for t in present]
        else:
            row["total"] = float(np.sum(a))
        rows.append(row)
    return rows


def _token_page(rows: list[dict]) -> str:
    """The texts with each token's background coloured by its attribution (green: towards
    the predicted class, red: against it)."""
    parts = []
    for row in rows:
        scale = max((abs(v) for _, v in row["tokens"]), default=1.0) or 1.0
        spans = []
        for token, value in row["tokens"]:
            alpha = min(1.0, abs(value) / scale)
            color = f"rgba(22,163,74,{alpha:.2f})" if value >= 0 else \
                f"rgba(220,38,38,{alpha:.2f})"
            spans.append(f'<span style="background:{color}" title="{value:.4f}">'
                         f"{html.escape(token)}</span>")
        parts.append(f"<p><b>sample {row['index']}</b>: true {html.escape(str(row['true']))},"
                     f" predicted {html.escape(str(row['predicted']))}<br>{' '.join(spans)}</p>")
    return ("<!doctype html><meta charset=utf-8><title>dlmine explain: tokens</title>"
            "<body style='font:15px/1.8 system-ui,sans-serif;max-width:60em;margin:2em auto'>"
            "<h1>Integrated gradients per token</h1>" + "\n".join(parts) + "</body>")


def _write(run: RunDir, report: dict, figures: list, page: str | None,
           arrays: dict | None = None) -> dict:
    folder = run / EXPLAIN_DIR
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise DlmineError(f"cannot create {folder}: {exc.strerror or exc}") from None
    for name, png in figures:
        atomic_write(folder / name, png)
    if page is not None:
        atomic_write(folder / "tokens.html", page)
    report["files"] = [name for name, _ in figures] + (["tokens.html"] if page else [])
    if arrays is not None:  # the attributions of each explained sample, as the model sees it
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write(folder / "attributions.npz", buffer.getvalue())
        report["files"].append("attributions.npz")
    atomic_write(folder / EXPLAIN_JSON, json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


# --- recommendation -------------------------------------------------------------------------

def _explain_recommender(run: RunDir, split: str, samples: int, checkpoint: str) -> dict:
    recommender = Recommender(run, checkpoint)
    x, _ = recommender.splits.split(split)
    users = [u for u in dict.fromkeys(int(c) for c in x[:, 0]) if u < len(recommender.users)]
    vectors = recommender.item_vectors()
    norms = np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
    rows = []
    for code in users[:samples]:
        user = recommender.users[code]
        top = recommender.recommend([user], 1)
        if not top:
            continue
        item = top[0]["item"]
        item_code = int(recommender.code([item], "item")[0])
        history = recommender.seen_codes(code)
        cosine = vectors[history] @ vectors[item_code] / (norms[history] * norms[item_code])
        order = np.argsort(-cosine, kind="stable")[:5]
        rows.append({"user": user, "top_item": item, "score": top[0]["score"],
                     "history_weights": [{"item": recommender.items[history[i]],
                                          "cosine": round(float(cosine[i]), 6)} for i in order],
                     "nearest_items": [{"item": r["similar"], "cosine": r["cosine"]}
                                       for r in recommender.similar(item, 5)]})
    return {"split": split, "checkpoint": checkpoint, "kind": "interactions",
            "method": "the history items nearest to the top item by the cosine of the learned "
                      "item vectors (what in the history weighs most), and the top item's "
                      "nearest items",
            "users": rows}
