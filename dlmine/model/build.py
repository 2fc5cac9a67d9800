"""Config + input shape -> a Keras model, built layer by layer, then compiled.

`build_model` builds the layers one by one on the input shape the data will give, so
that the first layer whose shape does not fit is named before any data loads, and
checks that the output fits the classes and the loss.
"""

from __future__ import annotations

import re

from dlmine.backend.devices import distribution_scope, model_scope, precision_policy
from dlmine.config.checks import loss_name
from dlmine.config.loading import Sources
from dlmine.config.schema import Config
from dlmine.errors import ConfigError
from dlmine.model.checks import apply_layers, first_line, parse_layer, shape_text, stacked_layers
from dlmine.model.recommenders import build_recommender, list_loss
from dlmine.model.registry import optimizer_registry


def build_model(cfg: Config, src: Sources, input_shape: tuple, num_classes: int | None,
                source, info, train: tuple | None = None):
    """Build the model on `input_shape`, checking each layer's shape in turn.

    The data source gives the input and the layers it needs first
    (`Source.input_layers`: a text vocabulary, a table's column embeddings). `train`, the
    training split's `(x, y)` when loaded, is what an `autorec` recommender holds.

    Raises:
        ConfigError: naming the first layer whose input shape does not fit, or an output
            that does not fit the classes or the loss.
    """
    import keras

    keras.backend.clear_session()  # layer names count from zero: conv2d, conv2d_1, ...
    keras.utils.set_random_seed(cfg.seed)
    policy = precision_policy(cfg.training.mixed_precision)
    keras.mixed_precision.set_global_policy(policy)  # after clear_session, which resets it
    # Inside the strategy's scope, the variables are mirrored on every replica; after
    # clear_session, which would drop the scope.
    with distribution_scope(cfg.training.distribution):
        if cfg.model.recommender is not None:
            keras.mixed_precision.set_global_policy("float32")  # embedding lookups: no gain
            return build_recommender(cfg, src, info, train)
        inputs, x = source.input_layers(cfg, src, input_shape, info)
        x = apply_layers(x, stacked_layers(cfg), src)
        check_output(cfg, src, x.shape, num_classes)
        shape = tuple(x.shape)
        if policy != "float32":  # outputs and loss in float32, as Keras' guide advises
            x = keras.layers.Activation("linear", dtype="float32", name="float32_output")(x)
        model = keras.Model(inputs, x, name=cfg.name.replace(".", "_"))
    check_metrics(cfg, src, shape)  # eager and outside the strategy: no replica is involved
    return model


def check_output(cfg: Config, src: Sources, shape: tuple, num_classes: int | None) -> None:
    """The last layer must give one value per class (or one value for a sigmoid / regression)."""
    last = len(cfg.model.layers) - 1
    name, args = parse_layer(cfg.model.layers[last], ("model", "layers", last), src, []) or ("", {})
    path = ("model", "layers", last, name)
    units = shape[-1]
    loss = loss_name(cfg.training.loss)
    if len(shape) != 2:
        raise ConfigError([src.problem(path, f"the model's output has shape {shape_text(shape)}, but "
                                       "the loss needs one vector per sample, (None, units): add "
                                       "Flatten (or a global pooling layer) before the last layer")])
    if cfg.dataset.task == "multi_label" and units != num_classes:
        raise ConfigError([src.problem(path, f"the model's output has shape {shape_text(shape)}, "
                                       f"but the data has {num_classes} labels and "
                                       "dataset.task: multi_label needs one sigmoid output per "
                                       f"label: expected (None, {num_classes}); set units: "
                                       f"{num_classes}")])
    activation = args.get("activation") if isinstance(args, dict) else None
    if cfg.dataset.task == "multi_label" and activation != "sigmoid":
        raise ConfigError([src.problem(path, "dataset.task: multi_label needs one sigmoid output "
                                       "per label (each label is yes or no on its own), "
                                       f"received activation: {activation or 'none (linear)'}; "
                                       "set activation: sigmoid")])
    if cfg.dataset.task == "classification" and num_classes:
        binary = loss in {"binary_crossentropy", "binary_focal_crossentropy"}
        if binary and num_classes != 2:
            raise ConfigError([src.problem(path, f"the loss {cfg.training.loss} (one sigmoid "
                                           f"output) fits 2 classes, but the data has "
                                           f"{num_classes} classes: use units: {num_classes} with "
                                           "activation: softmax and a categorical loss")])
        expected = 1 if binary else num_classes
        if units != expected:
            wants = "one output per class" if expected == num_classes else "one sigmoid output"
            raise ConfigError([src.problem(path, f"the model's output has shape {shape_text(shape)}, "
                                           f"but the data has {num_classes} classes and the loss "
                                           f"{cfg.training.loss} needs {wants}: expected "
                                           f"(None, {expected}); set units: {expected}")])


KERAS_RESOLVED = {"accuracy", "acc", "crossentropy", "ce"}  # compile picks the kind by the loss
LABEL_METRICS = {"auc", "precision", "recall", "f1_score", "f_beta_score", "true_positives",
                 "false_positives", "true_negatives", "false_negatives", "binary_io_u"}


def check_metrics(cfg: Config, src: Sources, shape: tuple) -> None:
    """Each metric computed once on labels of the form this task feeds (class indices, 0/1
    per label, numbers) and outputs of the model's shape, so that one Keras cannot compute
    here is named now rather than at the end of the first epoch."""
    import keras
    import numpy as np

    task, problems = cfg.dataset.task, []
    y_pred = np.full((2, *shape[1:]), 0.5, "float32")
    y_true = {"classification": np.array([0, 1], "int32"),
              "multi_label": np.tile(np.array([[0.0], [1.0]], "float32"), (1, shape[-1]))
              }.get(task, np.zeros(2, "float32"))
    for i, name in enumerate(cfg.training.metrics or []):
        if name in KERAS_RESOLVED:
            continue
        try:
            metric = keras.metrics.get(name)
            if isinstance(metric, keras.metrics.Metric):
                metric.update_state(y_true, y_pred)
                metric.result()
            else:
                metric(y_true, y_pred)
        except Exception as exc:
            if task == "classification" and shape[-1] > 1 and name in LABEL_METRICS:
                message = (f"'{name}' compares each output with a 0/1 label, but this "
                           f"classifier gives one softmax output per class {shape_text(shape)} "
                           "against class indices; for a 2-class problem, one sigmoid output "
                           "(units: 1, activation: sigmoid, loss: binary_crossentropy) has "
                           "the labels it needs")
            else:
                labels = ("class indices" if task == "classification" else
                          "0/1 per label" if task == "multi_label" else "numbers")
                why = re.sub(r"\{\{function_node[^}]*\}\}\s*", "", first_line(exc))
                message = (f"Keras cannot compute '{name}' on this model's output "
                           f"{shape_text(shape)} against {labels}: {why[:160]}")
            problems.append(src.problem(("training", "metrics", i), message))
    if problems:
        raise ConfigError(problems)


def compile_model(model, cfg: Config) -> None:
    """Compile with the configured optimizer, loss and metrics."""
    opt = dict(cfg.training.optimizer)
    with model_scope(model):  # the optimizer's variables beside the model's, on every replica
        optimizer = optimizer_registry()[opt.pop("name").lower()](**opt)
        loss = list_loss(cfg) if cfg.model.recommender is not None else None
        model.compile(optimizer=optimizer, loss=loss or cfg.training.loss,
                      metrics=list(cfg.training.metrics), jit_compile=cfg.training.jit_compile,
                      steps_per_execution=cfg.training.steps_per_execution)
