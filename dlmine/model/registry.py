"""What a config may name: every public Keras layer and optimizer, except those that carry code.

A config names layers and optimizers by their Keras class names; these registries are the
only way from a name to a class, so nothing outside them (a `Lambda`, a class path, a
module to import) can be built from a config.
"""

from __future__ import annotations

import inspect

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
