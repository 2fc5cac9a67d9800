"""Cross-field rules, each a small named function, and the resolution of `auto` defaults.

Structure (types, unknown keys) is checked by `loading.build`; these rules see a
well-typed `Config` and report what does not fit together.
"""

from __future__ import annotations

from collections.abc import Callable

from dlmine.config.loading import Sources, suggest
from dlmine.config.schema import COLUMN_KINDS, NAME_PATTERN, Config
from dlmine.errors import Problem

CLASSIFICATION_LOSSES = {"sparse_categorical_crossentropy", "categorical_crossentropy",
                         "binary_crossentropy", "categorical_focal_crossentropy",
                         "binary_focal_crossentropy", "sparse_categorical_focal_crossentropy"}
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
              "images": "a folder with one sub-folder of images per class"}


def monitor_mode(monitor: str) -> str:
    """`max` for metrics that grow when better (accuracy, AUC, precision...), else `min`."""
    name = monitor.removeprefix("val_")
    growing = ("acc", "auc", "precision", "recall", "f1", "r2", "iou", "correlation")
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
    return problems


def check_dataset_kind_keys(cfg: Config, src: Sources) -> list[Problem]:
    """Keys that only one kind of data reads, and the keys a kind requires."""
    ds, problems = cfg.dataset, []
    if ds.name in ("csv", "parquet") and not ds.target:
        problems.append(src.problem(("dataset",), f"name: {ds.name} needs `target:`, the "
                                    "column to predict"))
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
    if cfg.dataset.task != "regression" or cfg.training.class_weight is None:
        return []
    return [src.problem(("training", "class_weight"), "class weights need classes, but "
                        "dataset.task is regression; remove class_weight")]


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


def check_distribution_data(cfg: Config, src: Sources) -> list[Problem]:
    if cfg.training.distribution != "mirrored" or cfg.dataset.name != "text":
        return []
    return [src.problem(("training", "distribution"), "mirrored cannot train on text: Keras "
                        "builds a mirrored model from the mean of a first batch across the "
                        "replicas, and strings have no mean; set distribution: none")]


def logged_metrics(cfg: Config) -> list[str]:
    """The keys of the epoch logs this config will produce, for `monitor` to name."""
    names = ["loss", *(cfg.training.metrics or [])]
    if "acc" in names or "accuracy" in names:
        names += ["acc", "accuracy"]
    names = list(dict.fromkeys(names))
    if cfg.dataset.validation_split is not None:
        names += [f"val_{n}" for n in names]
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
        problems.append(src.problem(path + ("monitor",), f"'{section.monitor}' is not logged by "
                                    f"this training{suggest(section.monitor, logged)} Logged: "
                                    f"{', '.join(x for x in logged if not x.endswith('_acc'))}"))
    return problems


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
    (check_distribution_data, ("training.distribution", "dataset.name")),
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
    if training.metrics is None:
        classify = cfg.dataset.task == "classification"
        training.metrics = ["accuracy"] if classify else ["mean_absolute_error"]
    default_monitor = "val_loss" if cfg.dataset.validation_split is not None else "loss"
    for _, name in MONITORS:
        section = getattr(training, name)
        if section is not None and section.monitor is None:
            section.monitor = default_monitor
        if section is not None and getattr(section, "mode", None) == "auto":
            section.mode = monitor_mode(section.monitor)
    if cfg.tune is not None and cfg.tune.direction == "auto":
        cfg.tune.direction = "maximize" if monitor_mode(cfg.tune.metric) == "max" else "minimize"


def _auto_loss(cfg: Config) -> str:
    if cfg.dataset.task == "regression":
        return "mean_squared_error"
    if _last_layer_is_single_sigmoid(cfg.model.layers):
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
