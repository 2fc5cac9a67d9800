"""What Keras offers by name, shipped as JSON, so configs are checked without importing Keras.

Importing Keras imports its backend (TensorFlow or JAX), which takes seconds; a config
with a misspelt layer deserves its answer at once. `keras_catalogue.json` lists the
layers a config may name with their arguments, the optimizers with theirs, and the
losses, metrics and activations. It is written from the installed Keras
(`python -m dlmine.model.catalogue --write`) and records that Keras' version: with
another version installed, `shipped()` returns None and dlmine asks Keras itself.
A test keeps the file equal to what the installed Keras says.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from importlib import metadata
from pathlib import Path

from dlmine.backend.runtime import import_keras, quiet_backend_logs
from dlmine.model.registry import allowed_arguments, layer_registry, optimizer_registry

FILE = Path(__file__).with_name("keras_catalogue.json")


def shipped() -> dict | None:
    """The shipped catalogue, or None when it was written for another Keras (or is unreadable)."""
    try:
        catalogue = json.loads(FILE.read_text(encoding="utf-8"))
        installed = metadata.version("keras")
    except (OSError, ValueError, metadata.PackageNotFoundError):
        return None
    return catalogue if catalogue.get("keras") == installed else None


@functools.cache
def live() -> dict:
    """The catalogue of the installed Keras (imports it); do not change the dict returned."""
    import keras

    base = {"name", "dtype", "trainable"}
    return {
        "keras": keras.__version__,
        "layers": {name: sorted(allowed_arguments(cls))
                   for name, cls in sorted(layer_registry().items())},
        "optimizers": {name: {"class": cls.__name__,
                              "arguments": sorted(allowed_arguments(cls) - base)}
                       for name, cls in sorted(optimizer_registry().items())},
        "losses": _functions(keras.losses),
        "metrics": sorted({name for name in _functions(keras.metrics) + _metric_classes(keras)
                           if _is_metric(keras, name)} | {"acc", "accuracy", "mae", "mse"}),
        "activations": [name for name in _functions(keras.activations)
                        if _is_activation(keras, name)],
    }


def _functions(module) -> list[str]:
    return sorted(n for n in dir(module) if not n.startswith("_") and n[0].islower()
                  and n not in {"get", "serialize", "deserialize"})


def _metric_classes(keras) -> list[str]:
    """The snake_case names by which `keras.metrics.get` makes a metric class (`auc` for
    `AUC`, `precision`): the name Keras then logs it under. The base classes are left out."""
    names = []
    for name in dir(keras.metrics):
        cls = getattr(keras.metrics, name)
        if isinstance(cls, type) and name[0].isupper() and name not in {"Metric", "Mean", "Sum"}:
            snake = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
            names.append(re.sub("([a-z0-9])([A-Z])", r"\1_\2", snake).lower())
    return names


def _is_metric(keras, name: str) -> bool:
    """Whether `compile(metrics=[name])` takes it: some loss functions live in
    `keras.metrics` too, but Keras refuses them by name as metrics."""
    try:
        keras.metrics.get(name)
    except (ValueError, TypeError):  # TypeError: a class that needs arguments (IoU)
        return False
    return True


def _is_activation(keras, name: str) -> bool:
    try:
        keras.activations.get(name)
    except Exception:  # a helper in the module that `get` does not accept by name
        return False
    return True


def write() -> None:
    FILE.write_text(json.dumps(live(), indent=1, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python -m dlmine.model.catalogue --write")
    quiet_backend_logs()
    import_keras()
    write()
    print(f"wrote {FILE}")
