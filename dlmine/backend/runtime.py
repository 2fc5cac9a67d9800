"""The backend at run time: quiet start-up, importing Keras, the device's environment.

Everything here runs before (or while) Keras imports its backend: the device must be
chosen through environment variables first (`select`), TensorFlow's start-up lines are
silenced at the C level (`silenced`), and `backend_name` answers without importing Keras.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from dlmine.errors import UsageError

CPU_DEVICES = "DLMINE_CPU_DEVICES"


def quiet_backend_logs() -> None:
    """No TensorFlow/XLA start-up chatter unless the user asked for it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


@contextmanager
def silenced(*fds: int, into: int | None = None) -> Iterator[None]:
    """Send the C-level file descriptors `fds` (1: stdout, 2: stderr) to /dev/null, or to
    `into`, for the block: TensorFlow's absl logs before its init ignore every switch, Gloo
    prints on the C stdout, and converters write to both.
    """
    import ctypes

    sys.stdout.flush()
    sys.stderr.flush()
    target = os.open(os.devnull, os.O_WRONLY) if into is None else into
    saved = [os.dup(fd) for fd in fds]
    try:
        for fd in fds:
            os.dup2(target, fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        ctypes.CDLL(None).fflush(None)  # what C code buffered goes where it was meant to
        for fd, old in zip(fds, saved, strict=True):
            os.dup2(old, fd)
            os.close(old)
        if into is None:
            os.close(target)


@contextmanager
def _without_collections() -> Iterator[None]:
    """The cyclic garbage collector paused while Keras and its backend import, their objects
    frozen after (`gc.freeze`), then resumed.

    The import makes some 450,000 objects that live as long as the process; collecting while
    they are made ran about 8 full collections (2.0 CPU-s in all, measured on 2 EPYC cores)
    that found next to nothing, and every later full collection would scan them again.
    Frozen, they are never scanned.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def import_keras(debug: bool = False):
    """Import Keras and its backend without the backend's start-up log lines."""
    if "keras" in sys.modules:
        import keras

        split_cpu()
        return keras
    with _without_collections():
        return _import_keras(debug)


def _import_keras(debug: bool):
    if debug or os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3":
        import keras

        split_cpu()
        return keras
    import importlib.util

    with silenced(2):
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
