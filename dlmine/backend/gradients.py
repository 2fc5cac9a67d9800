"""Gradients with the backend's own automatic differentiation, behind one function.

`dlmine explain` takes integrated gradients of a model's output; the gradient is the only
part that depends on the backend: `tf.GradientTape` on TensorFlow, `jax.grad` on JAX.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dlmine.errors import DlmineError


def gradient(fn: Callable, value: np.ndarray) -> np.ndarray:
    """d fn(value) / d value, for `fn` a scalar function of one backend tensor written with
    Keras ops (or a Keras model's call).

    Raises:
        DlmineError: the backend is not TensorFlow or JAX.
    """
    import keras

    name = keras.backend.backend()
    value = np.asarray(value, dtype="float32")
    if name == "tensorflow":
        import tensorflow as tf

        tensor = tf.convert_to_tensor(value)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            out = fn(tensor)
        grad = tape.gradient(out, tensor)  # IndexedSlices for a gathered table: made dense
        return np.zeros_like(value) if grad is None else np.asarray(tf.convert_to_tensor(grad))
    if name == "jax":
        import jax

        return np.asarray(jax.grad(fn)(jax.numpy.asarray(value)))
    raise DlmineError(f"gradients are taken on the tensorflow and jax backends; KERAS_BACKEND is "
                      f"{name}")
