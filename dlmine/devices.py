"""Backends and devices: quiet logs, `--device`, `training.distribution`, and what was used.

The device must be chosen through environment variables before Keras imports
its backend, so `select` runs first; `describe` asks the backend afterwards.
"""

from __future__ import annotations

import os
import platform
import sys
from contextlib import contextmanager

from dlmine.errors import TrainingError, UsageError

CPU_DEVICES = "DLMINE_CPU_DEVICES"


def quiet_backend_logs() -> None:
    """No TensorFlow/XLA start-up chatter unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


@contextmanager
def _stderr_silenced():
    """Send the C-level stderr to /dev/null: absl logs before its init ignore every switch."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_keras(debug: bool = False):
    """Import Keras and its backend without the backend's start-up log lines."""
    if "keras" in sys.modules or debug or os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3":
        import keras

        split_cpu()
        return keras
    import importlib.util

    with _stderr_silenced():
        import keras

        # Keras imports TensorFlow for its data adapters on every backend, later, loudly.
        if importlib.util.find_spec("tensorflow") is not None:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the CUDA probe logs on first use
            # tf.function retracing warnings (several checkpoints predicted in one report)
            # tell a dlmine user nothing they can act on.
            tf.get_logger().setLevel("ERROR")
        split_cpu()  # TensorFlow starts then, and logs again
    return keras


def split_cpu() -> None:
    """`DLMINE_CPU_DEVICES=N`: split the CPU into N logical devices (TensorFlow backend), so
    that `training.distribution: mirrored` can be tried, and tested, without GPUs.

    Raises:
        UsageError: N is not an integer >= 1, or TensorFlow already started with another
            number of CPU devices (they can be split only before it starts).
    """
    value = os.environ.get(CPU_DEVICES, "")
    import keras

    if not value or keras.backend.backend() != "tensorflow":
        return
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"{CPU_DEVICES} must be an integer >= 1, received {value!r}")
    import tensorflow as tf

    count = int(value)
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # TensorFlow already started: fine if it has those devices
        pass
    started = len(tf.config.list_logical_devices("CPU"))  # starts TensorFlow
    if started != count:
        raise UsageError(f"{CPU_DEVICES}={count} came too late: TensorFlow had already started "
                         f"with {started} CPU device(s)")


def backend_name() -> str:
    """The Keras backend that is (or will be) used, without importing Keras: as Keras decides
    it, `KERAS_BACKEND`, else `backend` in `$KERAS_HOME/keras.json` (~/.keras), else tensorflow."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    import json

    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as handle:
            return str(json.load(handle).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def select(device: str) -> None:
    """Hide the GPUs for `--device cpu`; must run before the backend is imported."""
    if device == "cpu":
        if "keras" in sys.modules:
            raise RuntimeError("select() must run before Keras is imported")
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
        os.environ["JAX_PLATFORMS"] = "cpu"


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

    import dlmine

    out = {"dlmine": dlmine.__version__, "keras": keras.__version__,
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
        from dlmine.distributed import reinstate

        reinstate()  # a multi-process job's DataParallel, which clear_session drops
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
    or the devices of a multi-process job (`dlmine.distributed`)."""
    from dlmine.distributed import replicas as job_devices

    strategy = getattr(model, "distribute_strategy", None)
    return strategy.num_replicas_in_sync if strategy is not None else job_devices()
