"""Layer registry (Keras layers by name, nothing that carries code) -> a Sequential model.

`check_spec` checks names and arguments of layers, optimizer, loss and metrics,
from the shipped catalogue (`dlmine.config.catalogue`, no Keras import) or from
Keras itself, which also constructs each layer and the optimizer to check values;
`build_model` then builds the layers one by one on the input shape the data will
give, so that the first layer whose shape does not fit is named before any data
loads.
"""

from __future__ import annotations

import inspect
from typing import Any

from dlmine.config.checks import loss_name
from dlmine.config.loading import Sources, suggest, valid_list
from dlmine.config.schema import Config
from dlmine.devices import distribution_scope, model_scope
from dlmine.errors import ConfigError, Problem

# Layers that run code from outside Keras, or that cannot stand in a one-input stack.
CARRY_CODE = {"Lambda", "Layer", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"}
NOT_SEQUENTIAL = {"InputLayer", "Wrapper", "RNN", "StackedRNNCells", "GRUCell", "LSTMCell",
                  "SimpleRNNCell", "Pipeline", "Add", "Average", "Concatenate", "Dot", "Maximum",
                  "Minimum", "Multiply", "Subtract", "Attention", "AdditiveAttention",
                  "MultiHeadAttention", "GroupQueryAttention", "MaxNumBoundingBoxes",
                  "SpectralNormalization"}
WRAPPERS = {"Bidirectional", "TimeDistributed"}
BASE_ARGUMENTS = {"name", "dtype", "trainable"}
FORBIDDEN_KEYS = {"module", "registered_name", "fn", "function"}


def layer_registry() -> dict[str, type]:
    """Every public `keras.layers` class that a config may name."""
    import keras

    registry = {}
    for name in dir(keras.layers):
        cls = getattr(keras.layers, name)
        if (inspect.isclass(cls) and issubclass(cls, keras.layers.Layer)
                and name not in CARRY_CODE | NOT_SEQUENTIAL and not name.startswith("_")):
            registry[name] = cls
    return registry


def optimizer_registry() -> dict[str, type]:
    import keras

    return {name.lower(): getattr(keras.optimizers, name) for name in dir(keras.optimizers)
            if inspect.isclass(getattr(keras.optimizers, name))
            and issubclass(getattr(keras.optimizers, name), keras.optimizers.Optimizer)
            and name not in {"Optimizer", "LossScaleOptimizer", "MultiOptimizer"}}


def allowed_arguments(cls: type) -> set[str]:
    params = inspect.signature(cls.__init__).parameters
    names = {p for p, v in params.items() if p != "self" and v.kind not in
             (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    return names | BASE_ARGUMENTS


def check_spec(cfg: Config, src: Sources, catalogue: dict | None = None) -> list[Problem]:
    """Problems with layer names and arguments, the optimizer, the loss and the metrics.

    Args:
        catalogue: check names and arguments against this catalogue only, without
            importing Keras; None: ask Keras, and also construct every layer and the
            optimizer, so that values Keras refuses are named too.
    """
    construct = catalogue is None
    if construct:
        import keras

        from dlmine.config.catalogue import live

        catalogue = live()
        keras.utils.set_random_seed(cfg.seed)  # layers draw seeds: the same in every process
    problems: list[Problem] = []
    for path, item in stacked_layers(cfg):
        _make_layer(item, path, catalogue, src, problems, construct)
    problems.extend(_check_optimizer(cfg, src, catalogue, construct))
    problems.extend(_check_named(cfg.training.loss, "loss", ("training", "loss"), src, catalogue))
    for i, metric in enumerate(cfg.training.metrics or []):
        problems.extend(_check_named(metric, "metric", ("training", "metrics", i), src, catalogue))
    return problems


def stacked_layers(cfg: Config) -> list[tuple[tuple, Any]]:
    """(key path, layer item) of `preprocessing.augmentation`, then of `model.layers`."""
    return ([(("preprocessing", "augmentation", i), item)
             for i, item in enumerate(cfg.preprocessing.augmentation)]
            + [(("model", "layers", i), item) for i, item in enumerate(cfg.model.layers)])


def parse_layer(item: Any, path: tuple, src: Sources, problems: list):
    """`{Conv2D: {filters: 32}}` or `Flatten` -> ("Conv2D", {"filters": 32}), or None."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and len(item) == 1:
        name, args = next(iter(item.items()))
        if args is None:
            args = {}
        if not isinstance(name, str):
            problems.append(src.problem(path, "expected a layer name such as Dense as the key, "
                                        f"received {name!r}"))
            return None
        if isinstance(args, dict):
            return name, dict(args)
        problems.append(src.problem(path + (name,), "expected the layer's arguments as a "
                                    f"mapping such as {{units: 10}}, received {args!r}"))
        return None
    problems.append(src.problem(path, "expected one layer as `LayerName: {argument: value}` "
                                f"or `LayerName`, received {item!r}"))
    return None


ACTIVATION_ARGUMENTS = {"activation", "recurrent_activation"}


def _make_layer(item, path, catalogue: dict, src, problems, construct: bool = True):
    """Check one layer item against the catalogue; construct it (Keras) when asked.

    Returns:
        The layer (or, without `construct`, True), or None after adding its problems.
    """
    parsed = parse_layer(item, path, src, problems)
    if parsed is None:
        return None
    name, args = parsed
    here = path + (name,)
    registry = catalogue["layers"]
    if name not in registry:
        if name in CARRY_CODE:
            why = (f"'{name}' is not allowed: it runs code named in the config, which dlmine "
                   "never does; use built-in layers")
        elif name in NOT_SEQUENTIAL:
            why = f"'{name}' cannot be used in dlmine's one-input stack of layers"
        else:
            why = f"unknown layer '{name}'{suggest(name, registry)}"
        problems.append(src.problem(here, why))
        return None
    allowed = set(registry[name])
    bad = False
    for arg, value in args.items():
        if arg not in allowed:
            problems.append(src.problem(here + (arg,), f"{name} has no argument '{arg}'"
                                        + valid_list(arg, allowed)))
            bad = True
        elif _carries_code(value):
            problems.append(src.problem(here + (arg,), "a mapping with 'module', "
                                        "'registered_name' or 'fn' names code to import; dlmine "
                                        "only builds Keras' own objects by name"))
            bad = True
        elif (arg in ACTIVATION_ARGUMENTS and isinstance(value, str)
              and value not in catalogue["activations"]):
            problems.append(src.problem(here + (arg,), f"unknown activation '{value}'"
                                        + suggest(value, catalogue["activations"])))
            bad = True
    if name in WRAPPERS and "layer" in args and not bad:
        inner = _make_layer(args["layer"], here + ("layer",), catalogue, src, problems, construct)
        if inner is None:
            return None
        args["layer"] = inner
    if bad:
        return None
    if not construct:
        return True
    import keras

    try:
        return getattr(keras.layers, name)(**args)
    except Exception as exc:  # Keras raises ValueError, TypeError, KeyError... for bad values
        problems.append(src.problem(here, f"{name}({_show(args)}) was refused by Keras: "
                                    f"{_first_line(exc)}"))
        return None


def _carries_code(value) -> bool:
    if isinstance(value, dict):
        return bool(FORBIDDEN_KEYS & set(value)) or any(_carries_code(v) for v in value.values())
    if isinstance(value, list):
        return any(_carries_code(v) for v in value)
    return False


def _check_optimizer(cfg: Config, src: Sources, catalogue: dict, construct: bool) -> list[Problem]:
    opt = dict(cfg.training.optimizer)
    name = opt.pop("name", None)
    if not isinstance(name, str):
        return []  # reported by checks.check_optimizer
    registry = catalogue["optimizers"]
    path = ("training", "optimizer")
    if name.lower() not in registry:
        return [src.problem(path + ("name",) if ("training", "optimizer", "name") in src.lines
                            else path, f"unknown optimizer '{name}'"
                            + valid_list(name.lower(), registry))]
    entry = registry[name.lower()]
    cls_name, allowed = entry["class"], set(entry["arguments"])
    problems = [src.problem(path + (arg,), f"{cls_name} has no argument '{arg}'"
                            + valid_list(arg, allowed)) for arg in opt if arg not in allowed]
    problems += [src.problem(path + (arg,), "refused: names code to import")
                 for arg, value in opt.items() if _carries_code(value)]
    if not problems and construct:
        try:
            optimizer_registry()[name.lower()](**opt)
        except Exception as exc:
            problems.append(src.problem(path, f"{cls_name}({_show(opt)}) was refused by "
                                        f"Keras: {_first_line(exc)}"))
    return problems


def _check_named(name: str, kind: str, path: tuple, src: Sources, catalogue: dict) -> list[Problem]:
    candidates = catalogue["losses" if kind == "loss" else "metrics"]
    if name in candidates or loss_name(name) in candidates:
        return []
    return [src.problem(path, f"unknown {kind} '{name}'{suggest(name, candidates)}")]


def _show(args: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# --- building -----------------------------------------------------------------------------------

def build_model(cfg: Config, src: Sources, input_shape: tuple, num_classes: int | None,
                kind: str = "arrays", table_layout: dict | None = None):
    """Build the Sequential model on `input_shape`, checking each layer's shape in turn.

    A table with embedded columns (`table_layout`, from the fitted encoder) gets a
    `ColumnEmbedding` layer first.

    Raises:
        ConfigError: naming the first layer whose input shape does not fit, or an output
            that does not fit the classes or the loss.
    """
    import keras

    from dlmine.config.catalogue import live

    catalogue = live()
    problems: list[Problem] = []
    keras.backend.clear_session()  # layer names count from zero: conv2d, conv2d_1, ...
    keras.utils.set_random_seed(cfg.seed)
    if cfg.training.mixed_precision:  # after clear_session, which resets the policy
        from dlmine.devices import gpus

        keras.mixed_precision.set_global_policy("mixed_float16" if gpus() else "mixed_bfloat16")
    # Inside the strategy's scope, the variables are mirrored on every replica; after
    # clear_session, which would drop the scope.
    with distribution_scope(cfg.training.distribution):
        if kind == "text":
            inputs, x = _text_input(cfg, src)
        else:
            inputs = keras.Input(shape=tuple(input_shape), name="inputs")
            x = inputs
            if table_layout and table_layout.get("embedded"):
                x = column_embedding(cfg, table_layout)(x)
        for path, item in stacked_layers(cfg):
            layer = _make_layer(item, path, catalogue, src, problems)
            if layer is None:
                raise ConfigError(problems)
            try:
                x = layer(x)
            except Exception as exc:
                name = parse_layer(item, path, src, [])[0]
                raise ConfigError([src.problem(path + (name,), f"{name} does not fit its input of "
                                               f"shape {_shape(x.shape)}: {_first_line(exc)}")]) from None
        check_output(cfg, src, x.shape, num_classes)
        if cfg.training.mixed_precision:  # outputs and loss in float32, as Keras' guide advises
            x = keras.layers.Activation("linear", dtype="float32", name="float32_output")(x)
        model = keras.Model(inputs, x, name=cfg.name.replace(".", "_"))
    return model


def column_embedding(cfg: Config, layout: dict):
    """The layer that embeds a table's `embedding` columns (sizes from `dataset.embedding_dim`)."""
    from dlmine.layers import ColumnEmbedding, default_embedding_dim

    embedded = layout["embedded"]
    dims = [cfg.dataset.embedding_dim or default_embedding_dim(e["codes"]) for e in embedded]
    # float32 even under mixed precision: bfloat16 holds integers exactly only up to 256
    return ColumnEmbedding(layout["dense"], [e["codes"] for e in embedded], dims,
                           [e["column"] for e in embedded], name="column_embedding",
                           dtype="float32")


def _text_input(cfg: Config, src: Sources):
    """A string input and the `TextVectorization` layer (adapted later, on the training split)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ConfigError([src.problem(("dataset", "name"), "text data needs the TensorFlow "
                                       f"backend (string tensors); KERAS_BACKEND is "
                                       f"{keras.backend.backend()}")])
    text = cfg.preprocessing.text
    inputs = keras.Input(shape=(1,), dtype="string", name="text")
    vectorize = keras.layers.TextVectorization(
        max_tokens=text.max_tokens, output_sequence_length=text.sequence_length,
        ngrams=text.ngrams, output_mode="int", name="text_vectorization")
    return inputs, vectorize(inputs)


def adapt_text(model, texts) -> None:
    """Fit the vocabulary of the model's `TextVectorization` layer on the training texts."""
    import numpy as np

    layer = model.get_layer("text_vectorization")
    layer.adapt(np.asarray(texts, dtype=object).reshape(-1))


def check_output(cfg: Config, src: Sources, shape: tuple, num_classes: int | None) -> None:
    """The last layer must give one value per class (or one value for a sigmoid / regression)."""
    last = len(cfg.model.layers) - 1
    name = parse_layer(cfg.model.layers[last], ("model", "layers", last), src, [])[0]
    path = ("model", "layers", last, name)
    units = shape[-1]
    loss = loss_name(cfg.training.loss)
    if len(shape) != 2:
        raise ConfigError([src.problem(path, f"the model's output has shape {_shape(shape)}, but "
                                       "the loss needs one vector per sample, (None, units): add "
                                       "Flatten (or a global pooling layer) before the last layer")])
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
            raise ConfigError([src.problem(path, f"the model's output has shape {_shape(shape)}, "
                                           f"but the data has {num_classes} classes and the loss "
                                           f"{cfg.training.loss} needs {wants}: expected "
                                           f"(None, {expected}); set units: {expected}")])


def _shape(shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def compile_model(model, cfg: Config) -> None:
    """Compile with the configured optimizer, loss and metrics."""
    opt = dict(cfg.training.optimizer)
    with model_scope(model):  # the optimizer's variables beside the model's, on every replica
        optimizer = optimizer_registry()[opt.pop("name").lower()](**opt)
        model.compile(optimizer=optimizer, loss=cfg.training.loss,
                      metrics=list(cfg.training.metrics), jit_compile=cfg.training.jit_compile,
                      steps_per_execution=cfg.training.steps_per_execution)
