"""Checks of the model's part of a config: layer names and arguments, optimizer, loss, metrics.

Names are checked first against the shipped catalogue (`dlmine.model.catalogue`, no Keras
import), so a misspelt layer is answered at once; once the names are right, Keras
constructs each layer and the optimizer, so values it refuses are named too.
`load_checked_config` is `load_config` with these checks: what training needs.
"""

from __future__ import annotations

from typing import Any

from dlmine.backend.runtime import backend_name, import_keras
from dlmine.config import LoadedConfig, load_config
from dlmine.config.checks import loss_name
from dlmine.config.loading import Sources, suggest, valid_list
from dlmine.config.schema import Config
from dlmine.errors import ConfigError, Problem
from dlmine.model.catalogue import live, shipped
from dlmine.model.registry import CARRY_CODE, FORBIDDEN_KEYS, NOT_SEQUENTIAL, WRAPPERS, optimizer_registry


def load_checked_config(path, overrides=(), *, seed: int | None = None) -> LoadedConfig:
    """`load_config` with the model's checks and the backend's: what a training needs.

    A finished run is evaluated with `load_config` alone: it was checked when it trained,
    and may be evaluated on another backend.
    """
    return load_config(path, overrides, seed=seed, checks=(check_model_spec,))


def check_model_spec(cfg: Config, src: Sources, problems: list[Problem]) -> list[Problem]:
    """Names against the shipped catalogue first (no Keras import); then, only when the
    config has no problem so far, against Keras, which constructs every layer."""
    found = check_distribution_backend(cfg, src)
    if cfg.model.recommender is None and (not isinstance(cfg.model.layers, list)
                                         or not cfg.model.layers):
        return found
    catalogue = shipped()
    if catalogue is not None:
        found.extend(check_spec(cfg, src, catalogue))
    if not problems and not found:
        import_keras()
        found.extend(check_spec(cfg, src))
    return found


def check_distribution_backend(cfg: Config, src: Sources) -> list[Problem]:
    if cfg.training.distribution != "mirrored":
        return []
    backend = backend_name()
    if backend == "tensorflow":
        return []
    return [src.problem(("training", "distribution"), "mirrored needs the TensorFlow backend "
                        f"(tf.distribute.MirroredStrategy), but KERAS_BACKEND is {backend}; "
                        "run with KERAS_BACKEND=tensorflow, or set distribution: none")]



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

        catalogue = live()
        keras.utils.set_random_seed(cfg.seed)  # layers draw seeds: the same in every process
    problems: list[Problem] = []
    for path, item in stacked_layers(cfg) + recommender_layers(cfg):
        make_layer(item, path, catalogue, src, problems, construct)
    problems.extend(_check_optimizer(cfg, src, catalogue, construct))
    if cfg.training.loss != "auto":  # still auto: a recommender's list loss (keras-rs)
        problems.extend(_check_named(cfg.training.loss, "loss", ("training", "loss"), src,
                                     catalogue))
    for i, metric in enumerate(cfg.training.metrics or []):
        problems.extend(_check_named(metric, "metric", ("training", "metrics", i), src, catalogue))
    return problems


def stacked_layers(cfg: Config) -> list[tuple[tuple, Any]]:
    """(key path, layer item) of `preprocessing.augmentation`, then of `model.layers`."""
    return ([(("preprocessing", "augmentation", i), item)
             for i, item in enumerate(cfg.preprocessing.augmentation)]
            + [(("model", "layers", i), item) for i, item in enumerate(cfg.model.layers)])


def recommender_layers(cfg: Config) -> list[tuple[tuple, Any]]:
    """(key path, layer item) of `model.recommender`'s `mlp`, towers and `encoder`."""
    rec = cfg.model.recommender
    if rec is None:
        return []
    return [(("model", "recommender", key, i), item)
            for key in ("mlp", "user_tower", "item_tower", "encoder")
            if isinstance(getattr(rec, key), list)
            for i, item in enumerate(getattr(rec, key))]


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


def make_layer(item, path, catalogue: dict, src, problems, construct: bool = True):
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
        inner = make_layer(args["layer"], here + ("layer",), catalogue, src, problems, construct)
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
                                    f"{first_line(exc)}"))
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
                                        f"Keras: {first_line(exc)}"))
    return problems


def _check_named(name: str, kind: str, path: tuple, src: Sources, catalogue: dict) -> list[Problem]:
    candidates = catalogue["losses" if kind == "loss" else "metrics"]
    if name in candidates or loss_name(name) in candidates:
        return []
    return [src.problem(path, f"unknown {kind} '{name}'{suggest(name, candidates)}")]


def _show(args: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in args.items())


def first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def apply_layers(x, items: list[tuple[tuple, Any]], src: Sources, before=None):
    """Construct each `(key path, layer item)` and apply it to `x` in turn; the first layer
    that Keras refuses, or whose input does not fit, is named by its key. `before(layer)`,
    when given, sees each constructed layer before it is applied (and built).

    Raises:
        ConfigError: that layer's problem.
    """
    catalogue, problems = live(), []
    for path, item in items:
        layer = make_layer(item, path, catalogue, src, problems)
        if layer is None:
            raise ConfigError(problems)
        if before is not None:
            before(layer)
        try:
            x = layer(x)
        except Exception as exc:  # Keras raises many kinds for a shape that does not fit
            name = parse_layer(item, path, src, [])[0]
            raise ConfigError([src.problem(path + (name,), f"{name} does not fit its input of "
                                           f"shape {shape_text(x.shape)}: {first_line(exc)}")]) from None
    return x


def shape_text(shape) -> str:
    """`(None, 28, 28)`: a Keras shape as messages show it."""
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"
