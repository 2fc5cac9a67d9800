"""Cross-field rules, each a small named function, and the resolution of `auto` defaults.

Structure (types, unknown keys) is checked by `loading.build`; these rules see a
well-typed `Config` and report what does not fit together.
"""

from __future__ import annotations

from collections.abc import Callable

from dlmine.config.loading import Sources, suggest
from dlmine.config.schema import COLUMN_KINDS, NAME_PATTERN, SIDE_KINDS, Config, RecommenderConfig
from dlmine.errors import Problem

CLASSIFICATION_LOSSES = {"sparse_categorical_crossentropy", "categorical_crossentropy",
                         "binary_crossentropy", "categorical_focal_crossentropy",
                         "binary_focal_crossentropy", "sparse_categorical_focal_crossentropy"}
BINARY_LOSSES = {"binary_crossentropy", "binary_focal_crossentropy"}
ONEHOT_LOSSES = {"categorical_crossentropy", "categorical_focal_crossentropy"}
SPARSE_LOSSES = {"sparse_categorical_crossentropy"}
MONITORS = (("training", "early_stopping"), ("training", "reduce_lr_on_plateau"),
            ("training", "checkpoint"))


def loss_name(loss: str) -> str:
    """Normalise a loss as Keras spells it in several ways: `CategoricalCrossentropy` too."""
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in loss).lstrip("_")
    return {"mse": "mean_squared_error", "mae": "mean_absolute_error"}.get(snake, snake)


FILE_KINDS = {"npz": "the .npz file (or a folder of .npz shards)", "csv": "the CSV file",
              "parquet": "the Parquet file",
              "text": "a CSV file with a text column, or a folder of class folders",
              "images": "a folder with one sub-folder of images per class",
              "interactions": "a CSV or Parquet file of user-item interactions"}
RECOMMENDER_TASKS = ("rating", "ranking")


def monitor_mode(monitor: str) -> str:
    """`max` for metrics that grow when better (accuracy, AUC, precision...), else `min`."""
    name = monitor.removeprefix("val_")
    growing = ("acc", "auc", "precision", "recall", "f1", "f_beta", "r2", "iou", "io_u",
               "correlation", "cosine_similarity", "true_positives", "true_negatives", "hr@",
               "ndcg", "mrr", "coverage")
    return "max" if any(part in name for part in growing) else "min"


def check_dataset_path(cfg: Config, src: Sources) -> list[Problem]:
    ds = cfg.dataset
    if ds.name in FILE_KINDS and not ds.path:
        return [src.problem(("dataset",), f"name: {ds.name} needs `path:`, {FILE_KINDS[ds.name]}")]
    problems = []
    for key in ("path", "test_path"):
        if ds.name not in FILE_KINDS and getattr(ds, key):
            problems.append(src.problem(("dataset", key), f"'{ds.name}' is a built-in dataset, "
                                        f"which reads no `{key}`; remove it, or set name to one "
                                        f"of {', '.join(FILE_KINDS)}"))
    if ds.name == "npz" and ds.test_path:
        problems.append(src.problem(("dataset", "test_path"), "an .npz holds its own test set "
                                    "(x_test, y_test); remove `test_path`"))
    if ds.name == "interactions" and ds.test_path:
        problems.append(src.problem(("dataset", "test_path"), "interactions are split by "
                                    "dataset.interactions.split (random, leave_last_out or "
                                    "time), which holds the test out; remove `test_path`"))
    return problems


def check_dataset_kind_keys(cfg: Config, src: Sources) -> list[Problem]:
    """Keys that only one kind of data reads, and the keys a kind requires."""
    ds, problems = cfg.dataset, []
    if ds.name in ("csv", "parquet") and not ds.target:
        problems.append(src.problem(("dataset",), f"name: {ds.name} needs `target:`, the "
                                    "column to predict"))
    if ds.name == "text" and ds.task == "regression":
        problems.append(src.problem(("dataset", "task"), "text is classified: expected "
                                    "classification or multi_label, received regression"))
    if ds.name == "images" and not ds.image_size:
        problems.append(src.problem(("dataset",), "name: images needs `image_size: [height, "
                                    "width]`, the size every image is resized to"))
    if ds.image_size is not None and (len(ds.image_size) != 2 or min(ds.image_size) < 1):
        problems.append(src.problem(("dataset", "image_size"), "expected [height, width], two "
                                    f"integers >= 1, received {ds.image_size}"))
    for key, default in (("categorical_encoding", "onehot"), ("embedding_dim", None)):
        if getattr(ds, key) != default and ds.name not in ("csv", "parquet"):
            problems.append(src.problem(("dataset", key), f"`{key}` is read for tables only "
                                        f"(name: csv or parquet), but name is {ds.name}"))
    if ds.columns is not None:
        if ds.name not in ("csv", "parquet"):
            problems.append(src.problem(("dataset", "columns"), "`columns` is read for tables "
                                        "only (name: csv or parquet)"))
        for column, kind in ds.columns.items():
            if kind not in COLUMN_KINDS:
                problems.append(src.problem(("dataset", "columns", column), "expected one of: "
                                            f"{', '.join(COLUMN_KINDS)}, received {kind!r}"
                                            f"{suggest(str(kind), COLUMN_KINDS)}"))
    return problems


def check_loss_fits_labels(cfg: Config, src: Sources) -> list[Problem]:
    loss, labels = loss_name(cfg.training.loss), cfg.preprocessing.labels
    where = ("training", "loss")
    if cfg.dataset.task == "multi_label":
        return []  # check_multi_label
    if cfg.dataset.task == "regression":
        if loss in CLASSIFICATION_LOSSES:
            return [src.problem(where, f"{cfg.training.loss} is a classification loss, but "
                                "dataset.task is regression; use mean_squared_error or "
                                "mean_absolute_error")]
        return []
    if loss in ONEHOT_LOSSES and labels == "integer":
        return [src.problem(where, f"{cfg.training.loss} expects one-hot labels, but "
                            "preprocessing.labels is 'integer'; use "
                            "sparse_categorical_crossentropy, or set preprocessing.labels: onehot")]
    if loss in SPARSE_LOSSES and labels == "onehot":
        return [src.problem(where, f"{cfg.training.loss} expects integer labels, but "
                            "preprocessing.labels is 'onehot'; use categorical_crossentropy, or "
                            "set preprocessing.labels: integer")]
    return []


def check_regression_options(cfg: Config, src: Sources) -> list[Problem]:
    if cfg.dataset.task == "classification" or cfg.training.class_weight is None:
        return []
    needs = "classes" if cfg.dataset.task == "regression" else "one class per sample"
    return [src.problem(("training", "class_weight"), f"class weights need {needs}, but "
                        f"dataset.task is {cfg.dataset.task}; remove class_weight")]


def check_multi_label(cfg: Config, src: Sources) -> list[Problem]:
    """Several labels per sample are read from text, and need one sigmoid output each."""
    if cfg.dataset.task != "multi_label":
        return []
    if cfg.dataset.name != "text":
        return [src.problem(("dataset", "task"), "multi_label reads several labels per sample "
                            f"from text data (name: text), but name is {cfg.dataset.name}")]
    if loss_name(cfg.training.loss) not in {"auto", *BINARY_LOSSES}:
        return [src.problem(("training", "loss"), f"{cfg.training.loss} does not fit "
                            "dataset.task: multi_label (one sigmoid output per label); use "
                            "binary_crossentropy")]
    return []


def check_text_embedding(cfg: Config, src: Sources) -> list[Problem]:
    """A text model's first `Embedding` reads ids of the vocabulary: `int` mode, and room for
    `max_tokens` ids."""
    layers, text = cfg.model.layers, cfg.preprocessing.text
    first = layers[0] if cfg.dataset.name == "text" and layers else None
    if not (isinstance(first, dict) and list(first) == ["Embedding"]):
        return []
    path, args = ("model", "layers", 0, "Embedding"), first["Embedding"]
    if text.output_mode != "int":
        return [src.problem(path, "an Embedding reads token ids, but "
                            f"preprocessing.text.output_mode is {text.output_mode} (a bag of "
                            "floats per text); use output_mode: int, or Dense layers")]
    dim = args.get("input_dim") if isinstance(args, dict) else None
    if isinstance(dim, int) and not isinstance(dim, bool) and dim < text.max_tokens:
        return [src.problem(path + ("input_dim",), "expected at least "
                            f"preprocessing.text.max_tokens ({text.max_tokens}) ids, received "
                            f"{dim}: ids {dim} and up would fall outside the embedding")]
    return []


def check_sublinear_tf(cfg: Config, src: Sources) -> list[Problem]:
    text = cfg.preprocessing.text
    if not text.sublinear_tf or text.output_mode == "tf_idf":
        return []
    return [src.problem(("preprocessing", "text", "sublinear_tf"), "sublinear_tf damps the "
                        "counts of tf_idf, but preprocessing.text.output_mode is "
                        f"{text.output_mode}; use output_mode: tf_idf, or remove sublinear_tf")]


def check_monitors_have_validation(cfg: Config, src: Sources) -> list[Problem]:
    if cfg.dataset.validation_split is not None:
        return []
    problems = []
    for path in MONITORS:
        section = getattr(cfg.training, path[1])
        if section is not None and section.monitor and section.monitor.startswith("val_"):
            problems.append(src.problem(path + ("monitor",), f"'{section.monitor}' needs a "
                                        "validation split, but dataset.validation_split is "
                                        "null; monitor a training metric such as 'loss'"))
    return problems


def check_class_weight(cfg: Config, src: Sources) -> list[Problem]:
    weights = cfg.training.class_weight
    if not isinstance(weights, dict):
        return []
    problems = []
    for label, weight in weights.items():
        path = ("training", "class_weight", label)
        if not isinstance(label, int) or isinstance(label, bool) or label < 0:
            problems.append(src.problem(path, f"expected a class label (an integer >= 0) as "
                                        f"the key, received {label!r}"))
        elif isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            problems.append(src.problem(path, f"expected a weight > 0, received {weight!r}"))
    return problems


def check_optimizer(cfg: Config, src: Sources) -> list[Problem]:
    opt = cfg.training.optimizer
    if isinstance(opt, dict) and not isinstance(opt.get("name"), str):
        return [src.problem(("training", "optimizer"), "expected `name:` (a keras.optimizers "
                            f"name such as adam) in the optimizer mapping, received keys "
                            f"{sorted(map(str, opt))}")]
    return []


def check_layers_listed(cfg: Config, src: Sources) -> list[Problem]:
    if cfg.model.recommender is not None:
        if cfg.model.layers:
            return [src.problem(("model", "layers"), "a model has either `layers` or "
                                "`recommender`, not both; remove one")]
        return []
    if not cfg.model.layers:
        return [src.problem(("model", "layers"), "expected at least one layer, such as "
                            "`- Dense: {units: 10, activation: softmax}`")]
    return []


def check_reshape(cfg: Config, src: Sources) -> list[Problem]:
    shape = cfg.preprocessing.reshape
    if shape is None:
        return []
    if shape.count(-1) > 1 or any(d == 0 or d < -1 for d in shape):
        return [src.problem(("preprocessing", "reshape"), "expected positive sizes with at "
                            f"most one -1, received {shape}")]
    return []


def check_name(cfg: Config, src: Sources) -> list[Problem]:
    if NAME_PATTERN.match(cfg.name or ""):
        return []
    return [src.problem(("name",), f"the config file's name '{cfg.name}' cannot name a run "
                        "directory; set `name:` to letters, digits, '.', '_' and '-'")]


def check_interactions(cfg: Config, src: Sources) -> list[Problem]:
    """Interactions go with a recommender and a rating or ranking task, and need the columns
    their task and split read."""
    ds, inter = cfg.dataset, cfg.dataset.interactions
    recommends = ds.name == "interactions"
    if recommends != (ds.task in RECOMMENDER_TASKS):
        return [src.problem(("dataset", "task"), f"task: {ds.task} does not fit name: {ds.name}: "
                            "interactions have task rating or ranking, other data "
                            "classification or regression")]
    if recommends != (cfg.model.recommender is not None):
        return [src.problem(("model",), "interactions data train a `model.recommender` (type: mf, "
                            "gmf, ncf, neumf or two_tower), and other data `model.layers`")]
    problems = []
    if ds.task == "rating" and not inter.rating:
        problems.append(src.problem(("dataset", "interactions"), "task: rating needs `rating:`, "
                                    "the column of ratings"))
    if inter.threshold is not None and not inter.rating:
        problems.append(src.problem(("dataset", "interactions", "threshold"), "a threshold "
                                    "reads the ratings: set `rating:` to their column"))
    if inter.split in ("leave_last_out", "time") and not inter.timestamp:
        problems.append(src.problem(("dataset", "interactions", "split"), f"split: "
                                    f"{inter.split} orders interactions by time: set "
                                    "`timestamp:` to their column"))
    if inter.split == "time" and inter.cutoff is None:
        problems.append(src.problem(("dataset", "interactions", "split"), "split: time needs "
                                    "`cutoff:`, the first timestamp of the test split"))
    for side in ("user", "item"):
        features = getattr(inter, f"{side}_features")
        for column, kind in (features or {}).items():
            if kind not in SIDE_KINDS:
                problems.append(src.problem(("dataset", "interactions", f"{side}_features",
                                             column), f"expected one of: "
                                            f"{', '.join(SIDE_KINDS)}, received {kind!r}"
                                            f"{suggest(str(kind), SIDE_KINDS)}"))
        if features and not getattr(inter, f"{side}s"):
            problems.append(src.problem(("dataset", "interactions", f"{side}_features"),
                                        f"{side}_features are read from the {side}s table: "
                                        f"set `{side}s:` to its file"))
    rec = cfg.model.recommender
    if rec is not None:
        problems.extend(_check_recommender(cfg, src))
    return problems


def _check_recommender(cfg: Config, src: Sources) -> list[Problem]:
    """Each recommender type with the keys it reads, and its loss with its task."""
    rec, inter, problems = cfg.model.recommender, cfg.dataset.interactions, []
    where = ("model", "recommender")
    if rec.type in ("ncf", "neumf") and not rec.mlp:
        problems.append(src.problem(where, f"type: {rec.type} needs `mlp:`, "
                                    "its layers, e.g. `- Dense: {units: 32, activation: relu}`"))
    if rec.type not in ("ncf", "neumf") and rec.mlp:
        problems.append(src.problem(where + ("mlp",), f"type: {rec.type} has no "
                                    "MLP; remove `mlp`, or use type: ncf or neumf"))
    for tower in ("user_tower", "item_tower"):
        if rec.type == "two_tower" and not getattr(rec, tower):
            problems.append(src.problem(where, f"type: two_tower needs `{tower}:`, its layers, "
                                        "e.g. `- Dense: {units: 32}`"))
        if rec.type != "two_tower" and getattr(rec, tower):
            problems.append(src.problem(where + (tower,), f"type: {rec.type} has no towers; "
                                        f"remove `{tower}`, or use type: two_tower"))
    encoded = rec.type in ("autorec", "dae")
    if encoded and not rec.encoder:
        example = ("`- Dense: {units: 500, activation: sigmoid}`" if rec.type == "autorec" else
                   "`- Dropout: {rate: 0.5}` then `- Dense: {units: 64, activation: tanh}`")
        problems.append(src.problem(where, f"type: {rec.type} needs `encoder:`, its layers, "
                                    f"e.g. {example}"))
    if not encoded and rec.encoder:
        problems.append(src.problem(where + ("encoder",), f"type: {rec.type} has no encoder; "
                                    "remove `encoder`, or use type: autorec or dae"))
    # a run's config.yaml holds every default: only a size other than the default is refused
    if encoded and rec.factors != RecommenderConfig.factors:
        side = "an item's code" if rec.type == "autorec" else "a user's vector"
        problems.append(src.problem(where + ("factors",), f"type: {rec.type} has no embeddings "
                                    f"of size `factors`: {side} is as wide as the "
                                    "encoder's last layer; remove `factors`"))
    if rec.type == "autorec" and cfg.dataset.task != "rating":
        problems.append(src.problem(where + ("type",), "type: autorec learns ratings (task: "
                                    f"rating), received task: {cfg.dataset.task}; for ranking "
                                    "use mf, gmf, ncf, neumf, two_tower or dae"))
    if rec.type != "dae" and rec.recency is not None:
        problems.append(src.problem(where + ("recency",), f"type: {rec.type} reads no "
                                    "history to weigh; remove `recency`, or use type: dae"))
    if rec.type == "dae" and cfg.dataset.task != "ranking":
        problems.append(src.problem(where + ("type",), "type: dae learns which items a user "
                                    "interacts with (task: ranking), received task: "
                                    f"{cfg.dataset.task}; for ratings use mf, gmf, ncf, neumf, "
                                    "two_tower or autorec"))
    if rec.type in ("mf", "gmf", "autorec", "dae"):
        for side in ("user", "item"):
            if getattr(inter, f"{side}_features"):
                problems.append(src.problem(("dataset", "interactions", f"{side}_features"),
                                            f"type: {rec.type} reads no side features; use "
                                            "type: ncf, neumf or two_tower, or remove "
                                            f"`{side}_features`"))
    if rec.loss != "pointwise":
        if cfg.dataset.task != "ranking":
            problems.append(src.problem(where + ("loss",), f"loss: {rec.loss} ranks lists of "
                                        "items: it needs task: ranking (rating learns the "
                                        "rating itself, with mean_squared_error)"))
        elif cfg.training.loss != "auto":
            problems.append(src.problem(("training", "loss"), f"model.recommender.loss: "
                                        f"{rec.loss} is the loss; remove training.loss or "
                                        "set it to auto"))
    return problems


def list_size(cfg: Config) -> int:
    """Rows per list of a recommender's list loss (a positive and its negatives); 1 for a
    pointwise loss and every other model."""
    rec = cfg.model.recommender
    if rec is None or rec.loss == "pointwise" or cfg.dataset.task != "ranking":
        return 1
    return 1 + cfg.dataset.interactions.negatives


def ranking_metrics(cfg: Config) -> list[str]:
    """The ranking metrics that validation logs every epoch (`val_ndcg@10`, ...)."""
    if cfg.dataset.task != "ranking":
        return []
    names = [f"{m}@{k}" for k in cfg.dataset.interactions.top_k for m in ("hr", "ndcg")]
    return names + ["mrr"]


def logged_metrics(cfg: Config) -> list[str]:
    """The keys of the epoch logs this config will produce, for `monitor` to name."""
    names = list(dict.fromkeys(["loss", *(cfg.training.metrics or [])]))  # Keras logs the
    # names as given: `acc` as `acc`, `accuracy` as `accuracy`
    if cfg.dataset.validation_split is not None:
        names += [f"val_{n}" for n in names + ranking_metrics(cfg)]
    return names + ["learning_rate"]


def check_monitor_names(cfg: Config, src: Sources) -> list[Problem]:
    logged = logged_metrics(cfg)
    problems = []
    for path in MONITORS:
        section = getattr(cfg.training, path[1])
        if section is None or section.monitor in logged:
            continue
        if section.monitor.startswith("val_") and cfg.dataset.validation_split is None:
            continue  # check_monitors_have_validation says why
        problems.append(src.problem(path + ("monitor",), not_logged(section.monitor, logged)))
    return problems


def not_logged(name: str, logged: list[str]) -> str:
    """What a monitor or `tune.metric` that the epoch logs will not have is told."""
    return (f"'{name}' is not logged by this training{suggest(name, logged) or '.'} Logged: "
            f"{', '.join(logged)}")


MONITOR_INPUTS = ("dataset.validation_split", "training.metrics", "training.early_stopping",
                  "training.reduce_lr_on_plateau", "training.checkpoint")
# Each rule with the keys it reads: a rule is skipped when one of them already has a problem,
# so that a typo is reported once, not again as the cross-field problem its default causes.
RULES: list[tuple[Callable[[Config, Sources], list[Problem]], tuple[str, ...]]] = [
    (check_name, ("name",)),
    (check_dataset_path, ("dataset.name", "dataset.path", "dataset.test_path")),
    (check_dataset_kind_keys, ("dataset.name", "dataset.target", "dataset.image_size",
                               "dataset.columns", "dataset.categorical_encoding",
                               "dataset.embedding_dim")),
    (check_reshape, ("preprocessing.reshape",)),
    (check_layers_listed, ("model.layers",)),
    (check_optimizer, ("training.optimizer",)),
    (check_loss_fits_labels, ("training.loss", "preprocessing.labels", "dataset.task")),
    (check_regression_options, ("dataset.task", "training.class_weight")),
    (check_monitors_have_validation, MONITOR_INPUTS),
    (check_monitor_names, MONITOR_INPUTS),
    (check_class_weight, ("training.class_weight",)),
    (check_interactions, ("dataset.name", "dataset.task", "dataset.interactions",
                          "model.recommender")),
    (check_multi_label, ("dataset.task", "dataset.name", "training.loss")),
    (check_text_embedding, ("dataset.name", "model.layers", "preprocessing.text")),
    (check_sublinear_tf, ("preprocessing.text",)),
]


def run_rules(cfg: Config, src: Sources, problems: list[Problem]) -> list[Problem]:
    """The cross-field problems whose inputs passed the structural checks."""
    broken = {p.key for p in problems}
    found = []
    for rule, inputs in RULES:
        if any(_touches(key, b) for key in inputs for b in broken):
            continue
        found.extend(rule(cfg, src))
    return found


def _touches(key: str, broken: str) -> bool:
    if not broken:
        return True
    return key == broken or key.startswith(broken + ".") or broken.startswith(key + ".") \
        or broken.startswith(key + "[")


def resolve(cfg: Config, default_name: str) -> None:
    """Replace `auto` and null defaults by the concrete values they stand for, in place."""
    training = cfg.training
    if cfg.name is None:
        cfg.name = default_name
    if isinstance(training.optimizer, str):
        training.optimizer = {"name": training.optimizer}
    if training.loss == "auto":
        training.loss = _auto_loss(cfg)
    if training.metrics is None and cfg.dataset.task in RECOMMENDER_TASKS:
        training.metrics = ["mean_absolute_error"] if cfg.dataset.task == "rating" else []
    if training.metrics is None:
        training.metrics = {"classification": ["accuracy"], "regression": ["mean_absolute_error"],
                            "multi_label": ["binary_accuracy"]}[cfg.dataset.task]
    default_monitor = "val_loss" if cfg.dataset.validation_split is not None else "loss"
    for _, name in MONITORS:
        section = getattr(training, name)
        if section is not None and section.monitor is None:
            section.monitor = default_monitor
        if section is not None and getattr(section, "mode", None) == "auto":
            section.mode = monitor_mode(section.monitor)
    if training.tracking.mlflow is not None and training.tracking.mlflow.experiment is None:
        training.tracking.mlflow.experiment = cfg.name
    if cfg.tune is not None and cfg.tune.direction == "auto":
        cfg.tune.direction = "maximize" if monitor_mode(cfg.tune.metric) == "max" else "minimize"


def _auto_loss(cfg: Config) -> str:
    if cfg.dataset.task == "ranking":
        if cfg.model.recommender is not None and cfg.model.recommender.loss != "pointwise":
            return "auto"  # the recommender's list loss (`dlmine.model.losses`)
        return "binary_crossentropy"  # positives against sampled negatives, pointwise
    if cfg.dataset.task in ("regression", "rating"):
        return "mean_squared_error"
    if cfg.dataset.task == "multi_label" or _last_layer_is_single_sigmoid(cfg.model.layers):
        return "binary_crossentropy"
    if cfg.preprocessing.labels == "onehot":
        return "categorical_crossentropy"
    return "sparse_categorical_crossentropy"


def _last_layer_is_single_sigmoid(layers: list) -> bool:
    last: dict | None = layers[-1] if layers and isinstance(layers[-1], dict) else None
    if not last or len(last) != 1:
        return False
    args = next(iter(last.values()))
    return isinstance(args, dict) and args.get("units") == 1 and args.get("activation") == "sigmoid"
