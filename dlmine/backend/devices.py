"""Backends and devices: quiet logs, `--device`, `training.distribution`, and what was used.

The device must be chosen through environment variables before Keras imports
its backend, so `select` runs first; `describe` asks the backend afterwards.
"""

from __future__ import annotations

import platform
import sys
from contextlib import contextmanager

from dlmine import __version__
from dlmine.backend import distributed
from dlmine.errors import TrainingError


def gpus() -> list[str]:
    """Names of the GPUs the active backend sees."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [f"{d.platform}:{d.id} ({d.device_kind})" for d in jax.devices()
                if d.platform in ("gpu", "cuda", "rocm")]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def precision_policy(setting) -> str:
    """The Keras dtype policy for `training.mixed_precision` (`auto`, true or false) here.

    `auto` takes 16-bit compute only on a GPU's tensor cores (bfloat16 from compute
    capability 8, float16 on 7). On a CPU it is float32, AMX bfloat16 units or not: measured
    on one with them (2026-12-03), bfloat16 made the shipped text models no faster on
    TensorFlow and a bidirectional LSTM five times slower on JAX, whose CPU backend does not
    use those units.
    """
    if setting is False:
        return "float32"
    capability = gpu_capability()
    if setting is True:
        return "mixed_float16" if capability is not None else "mixed_bfloat16"
    if capability is not None:
        return ("mixed_bfloat16" if capability >= 8 else "mixed_float16" if capability >= 7
                else "float32")
    return "float32"


def gpu_capability() -> float | None:
    """The compute capability of the first GPU the backend sees (e.g. 9.0), or None."""
    if not gpus():
        return None
    import keras

    try:
        if keras.backend.backend() == "jax":
            import jax

            device = next(d for d in jax.devices() if d.platform in ("gpu", "cuda"))
            return float(device.compute_capability)
        import tensorflow as tf

        details = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0])
        major, minor = details.get("compute_capability", (0, 0))
        return major + minor / 10
    except (StopIteration, AttributeError, ValueError, TypeError):
        return 0.0  # a GPU whose capability the backend does not tell: no 16-bit by default


def describe(requested: str) -> str:
    """The device training really runs on, e.g. `cpu` or `gpu: /physical_device:GPU:0`.

    Raises:
        TrainingError: `--device gpu` and the backend sees no GPU.
    """
    import keras

    found = [] if requested == "cpu" else gpus()
    if requested == "gpu" and not found:
        raise TrainingError(f"--device gpu, but the {keras.backend.backend()} backend sees no "
                            "GPU on this machine; use --device cpu or --device auto")
    return f"gpu: {', '.join(found)}" if found else f"cpu ({platform.processor() or platform.machine()})"


def versions() -> dict:
    """Versions that explain a run: dlmine, Keras, its backend, Python, numpy."""
    import keras
    import numpy

    out = {"dlmine": __version__, "keras": keras.__version__,
           "backend": keras.backend.backend(), "python": platform.python_version(),
           "numpy": numpy.__version__}
    for module in ("tensorflow", "jax"):
        if module in sys.modules:
            out[module] = getattr(sys.modules[module], "__version__", "?")
    return out


def make_deterministic() -> None:
    """Bit-for-bit repeatable kernels where the backend has a switch for it."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


@contextmanager
def distribution_scope(distribution: str):
    """Where a model must be built, compiled and loaded for `training.distribution`.

    `mirrored` is TensorFlow's `MirroredStrategy` over every GPU, or over every logical CPU
    device (`DLMINE_CPU_DEVICES`) when there is none: each batch of `training.batch_size`
    samples is split between the replicas, and their gradients are combined into the batch's.
    `none` is one device.
    """
    if distribution != "mirrored":
        distributed.reinstate()  # a multi-process job's DataParallel, which clear_session drops
        yield None
        return
    import tensorflow as tf

    found = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    strategy = tf.distribute.MirroredStrategy([d.name for d in found])
    with strategy.scope():
        yield strategy


def model_scope(model):
    """The scope of the strategy `model` was built under (TensorFlow), else none."""
    from contextlib import nullcontext

    strategy = getattr(model, "distribute_strategy", None)
    return strategy.scope() if strategy is not None else nullcontext()


def replicas(model) -> int:
    """How many devices train `model` in step: 1, the replicas of its strategy (TensorFlow),
    or the devices of a multi-process job (`dlmine.backend.distributed`)."""
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.num_replicas_in_sync if strategy is not None else distributed.replicas()
