"""Loading models from a run directory: `.keras` files only, Keras `safe_mode=True` only.

A model file that carries code (a `Lambda` layer, custom objects) is refused, never run;
a damaged checkpoint is named, and `load_with_fallback` then takes the other one.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from dlmine.console import Reporter
from dlmine.errors import DlmineError
from dlmine.rundir import CHECKPOINTS, RunDir

CHECKPOINT_FILES = {"best": f"{CHECKPOINTS}/best.keras", "last": f"{CHECKPOINTS}/last.keras"}


class ModelRefused(DlmineError):
    """A model file that Keras' safe mode does not load: it carries code."""


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

    import dlmine.model.layers  # noqa: F401  (registers ColumnEmbedding, which table models may hold)

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
            raise ModelRefused(f"{path} was refused: it carries code (such as a Lambda layer) that "
                              "Keras safe mode does not load; dlmine never runs code from a "
                              "model file") from None
        raise DlmineError(f"{path} cannot be loaded: {str(exc).splitlines()[0]}") from None
    except Exception as exc:
        raise DlmineError(f"{path} is damaged and cannot be loaded: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def in_float32(model):
    """`model` computing in float32: itself, or a copy of a mixed-precision model.

    Mixed precision keeps the weights in float32 and computes in 16 bits; converters (ONNX,
    TFLite) reject the casts it leaves in the graph, and gradients taken through bfloat16 are
    coarse. The copy is rebuilt from the model's config with every layer's policy float32 and
    given the same weights, so it computes what the checkpoint holds, at full precision.
    """
    config = model.get_config()
    converted = _as_float32(config)
    if converted == config:  # every policy float32 already
        return model
    copy = model.__class__.from_config(converted)
    copy.set_weights(model.get_weights())
    return copy


def _as_float32(config):
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy":
            return {**config, "config": {**config.get("config", {}), "name": "float32"}}
        return {k: _as_float32(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_as_float32(v) for v in config]
    return config


def load_with_fallback(run: RunDir, checkpoint: str, reporter: Reporter):
    """The asked-for checkpoint, or the other one when it is damaged (with a warning)."""
    try:
        return load_checkpoint(run, checkpoint), checkpoint
    except ModelRefused:  # carries code: never fall back silently past that
        raise
    except DlmineError as exc:
        other = "last" if checkpoint == "best" else "best"
        try:
            model = load_checkpoint(run, other)
        except DlmineError:
            raise exc from None
        reporter.warn(f"{exc}; evaluating the {other} checkpoint instead")
        return model, other


