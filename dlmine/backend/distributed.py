"""Data-parallel training over several processes: Keras' `DataParallel` on JAX's multi-process runtime.

Every process runs the same `dlmine train`: the same config and seed, the same data loaded
and preprocessed the same way, the same model. Each process feeds only its share of every
global batch (`dlmine.backend.shares`); Keras joins the N shares into the global batch
(`jax.make_array_from_process_local_data`), so the gradients, weights and metrics are
those of one process training on the whole batch. Keras' collectives (saving a checkpoint
creates variables, which it checks are equal on every process) need every process to make
the same calls in the same order, so the processes other than 0 write a whole run
directory too, into a private temporary folder deleted at the end; only process 0's run
directory is kept and printed.

A process that fails ends at once, without JAX's shutdown barrier, so that its peers' next
collective fails too (within a second) instead of waiting for it; a peer that never joins
ends the job after `peer_timeout` seconds.

TensorFlow's `MultiWorkerMirroredStrategy` is not used: with Keras 3 it fails inside
`model.fit` (see README, "Multi-process training").
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dlmine.backend.runtime import import_keras, silenced
from dlmine.errors import DlmineError, UsageError

_active: Cluster | None = None  # the cluster this process joined, once it has
_distribution = None  # its keras.distribution.DataParallel
_local_only = False  # inside `local_only`
_failed_exit_code: int | None = None  # set when a multi-process session failed


class PeerFailed(DlmineError):
    """Another process of the job stopped, so this one cannot go on."""


@dataclass(frozen=True)
class Cluster:
    """Where this process stands in a data-parallel job.

    Args:
        processes: how many processes train together (1: no distribution at all).
        process_id: this process, 0..processes-1; process 0 writes the run directory.
        coordinator: `HOST:PORT` where process 0 listens for the others.
        peer_timeout: seconds to wait for every process to join, and for a silent one.
        local_device: the accelerator of its host this process takes (JAX's
            `local_device_ids`); None: those of `JAX_LOCAL_DEVICE_IDS`, else every one.

    Raises:
        UsageError: the options do not describe a job.
    """

    processes: int = 1
    process_id: int = 0
    coordinator: str | None = None
    peer_timeout: int = 120
    local_device: int | None = None

    def __post_init__(self):
        if self.processes == 1:
            if self.process_id != 0:
                raise UsageError(f"--process-id {self.process_id} needs --processes above 1")
            return
        if not 0 <= self.process_id < self.processes:
            raise UsageError(f"--process-id must be in 0..{self.processes - 1} for --processes "
                             f"{self.processes}, received {self.process_id}")
        host, _, port = (self.coordinator or "").rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--processes {self.processes} needs --coordinator HOST:PORT (or "
                             "DLMINE_COORDINATOR), the address where process 0 listens; "
                             f"received {self.coordinator!r}")

    @property
    def multi(self) -> bool:
        return self.processes > 1

    @property
    def leader(self) -> bool:
        return self.process_id == 0

    def __str__(self) -> str:
        return f"process {self.process_id} of {self.processes}"


def use_jax(cluster: Cluster) -> None:
    """Make JAX the Keras backend of a multi-process job; must run before Keras is imported.

    Raises:
        UsageError: another backend was asked for, or Keras already runs on one.
    """
    if not cluster.multi:
        return
    if "keras" in sys.modules:
        backend = sys.modules["keras"].backend.backend()
    else:
        backend = os.environ["KERAS_BACKEND"] = os.environ.get("KERAS_BACKEND") or "jax"
    if backend != "jax":
        raise UsageError(f"training on several processes (--processes {cluster.processes}) "
                         f"needs the JAX backend, but Keras uses {backend!r}; set "
                         "KERAS_BACKEND=jax (TensorFlow's MultiWorkerMirroredStrategy fails "
                         "inside Keras 3's fit)")


def _collective_failed(exc: BaseException) -> bool:
    """A peer's stop, as this process sees it: a failed Gloo collective.

    JAX (0.10) raises it as a plain `ValueError` (`UNKNOWN: Gloo AllGather failed: ...`), not
    as `JaxRuntimeError` or a type of its own, so only its text can tell it; dlmine's own
    errors are never taken for one, whatever path their message names."""
    return not isinstance(exc, DlmineError) and "gloo" in str(exc).lower()


@contextmanager
def session(cluster: Cluster, resuming: Path | None = None) -> Iterator[Path | None]:
    """Join the job, then train in it; yields where this process must write its run.

    Yields None for process 0 (and a single process): its run directory is the one asked
    for. Any other process gets a run directory in a private temporary folder, removed on
    the way out: when `resuming` a run, a copy of that run directory (which must be on a
    file system every process sees), made before process 0 changes anything in it. A
    failure makes the process exit without waiting for its peers, its message first
    printed by the CLI; a peer's failure becomes a `PeerFailed`.
    """
    global _failed_exit_code
    if not cluster.multi:
        yield None
        return
    scratch = None
    try:
        with silenced(1):  # Gloo says on the C stdout when it has connected the processes
            _join(cluster)  # first: a process that cannot join ends inside, at once
            if not cluster.leader:
                scratch = Path(tempfile.mkdtemp(prefix="dlmine-process-"))
            if resuming is not None:
                _copy_for_resume(cluster, Path(resuming), scratch)
            yield None if scratch is None else scratch / "run"
    except BaseException as exc:
        for sig in (signal.SIGINT, signal.SIGTERM):  # ending anyway: let it clean up
            signal.signal(sig, signal.SIG_IGN)
        _failed_exit_code = (exc.exit_code if isinstance(exc, DlmineError) else
                             130 if isinstance(exc, KeyboardInterrupt) else 1)
        if _collective_failed(exc):
            raise PeerFailed(f"{cluster}: another process of the job stopped, so this one "
                             f"stops too ({str(exc).splitlines()[0]}); the cause is in the "
                             "output of the process that stopped first") from exc
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _copy_for_resume(cluster: Cluster, run_dir: Path, scratch: Path | None) -> None:
    """Every process but 0 copies the run to resume; then all wait until every copy is made."""
    from jax.experimental import multihost_utils

    if scratch is not None:
        if not (run_dir / "config.yaml").is_file():
            raise UsageError(f"{cluster} cannot see the run to resume, {run_dir}; with several "
                             "processes, --resume needs a run directory on a file system "
                             "that every host shares")
        shutil.copytree(run_dir, scratch / "run", ignore=shutil.ignore_patterns(".lock*"))
    multihost_utils.sync_global_devices("dlmine: the run to resume is copied")


def _join(cluster: Cluster) -> None:
    """Connect to the other processes and make Keras distribute over all their devices."""
    global _active, _distribution
    keras = import_keras()  # quietly, unless --debug imported it already
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # JAX aborts the process (a C++ fatal log) when joining times out; this timer, shorter,
    # ends it first with a message that says what to do.
    watchdog = threading.Timer(cluster.peer_timeout, _give_up_joining, (cluster,))
    watchdog.daemon = True
    watchdog.start()
    try:
        # dlmine gives every value itself (JAX would guess the devices from SLURM_LOCALID);
        # JAX_LOCAL_DEVICE_IDS, set by `launch`, still counts.
        local = None if cluster.local_device is None else [cluster.local_device]
        jax.distributed.initialize(cluster.coordinator, cluster.processes, cluster.process_id,
                                   local_device_ids=local, cluster_detection_method="deactivate",
                                   initialization_timeout=cluster.peer_timeout + 30,
                                   heartbeat_timeout_seconds=cluster.peer_timeout,
                                   shutdown_timeout_seconds=cluster.peer_timeout)
    except Exception as exc:
        raise DlmineError(f"{cluster} cannot join the job at {cluster.coordinator}: "
                          f"{str(exc).splitlines()[0]}") from None
    finally:
        watchdog.cancel()
    atexit.register(_exit_at_once_after_failure)  # runs before JAX's own exit handler
    signal.signal(signal.SIGTERM, _raise_interrupt)  # as Ctrl-C: see `joined`
    _distribution = keras.distribution.DataParallel(auto_shard_dataset=False)
    keras.distribution.set_distribution(_distribution)
    _active = cluster


def reinstate() -> None:
    """Set the job's `DataParallel` again: `keras.backend.clear_session()` drops it.

    A model built without it would train on this process's share alone, silently (its
    variables local, its batches never joined). Nothing happens when training alone or
    inside `local_only`.
    """
    if _active is None or _local_only:
        return
    import keras

    keras.distribution.set_distribution(_distribution)


def joined() -> bool:
    """Whether this process trains in a multi-process job.

    There, Ctrl-C and SIGTERM stop training at once (`KeyboardInterrupt`), not after the
    batch: the processes would not stop after the same one, and the one that stopped
    first would leave the others waiting in a collective.
    """
    return _active is not None


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _give_up_joining(cluster: Cluster) -> None:
    print(f"Error: {cluster}: not every process joined at {cluster.coordinator} within "
          f"{cluster.peer_timeout} s (--peer-timeout); start one `dlmine train` for each "
          f"--process-id 0..{cluster.processes - 1}, all with --processes {cluster.processes} "
          "and the same --coordinator", file=sys.stderr, flush=True)
    os._exit(1)


def _exit_at_once_after_failure() -> None:
    """Skip JAX's shutdown barrier after a failure: the peers would wait there for us."""
    if _failed_exit_code is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_failed_exit_code)


def check_job(cluster: Cluster, cfg, folds: int | None) -> None:
    """What a multi-process job cannot train, refused before any run directory exists.

    Raises:
        UsageError: `--folds`, or a batch size that does not split evenly.
    """
    if not cluster.multi:
        return
    if folds:
        raise UsageError("--folds runs in one process; train the folds without --processes")
    check_batch_size(cluster, cfg.training.batch_size)


def check_batch_size(cluster: Cluster, batch_size: int) -> None:
    """Every process takes an equal share of each batch.

    Raises:
        UsageError: `batch_size` is not a multiple of the number of processes.
    """
    if batch_size % cluster.processes:
        raise UsageError(f"training.batch_size must be a multiple of --processes "
                         f"{cluster.processes} (each process takes an equal share of every "
                         f"batch), received {batch_size}")


def local_share(batches):
    """This process's share of every batch of `batches` (itself when training alone)."""
    if _active is None:
        return batches
    from dlmine.backend.shares import LocalShare

    return LocalShare(batches, _active.process_id, _active.processes)


@contextmanager
def local_only() -> Iterator[None]:
    """Keras without the distribution: models loaded inside live on this process alone.

    For what follows training: `predict` cannot fetch outputs spread over processes.
    """
    global _local_only
    if _active is None or _local_only:
        yield
        return
    import keras

    keras.distribution.set_distribution(None)
    _local_only = True
    try:
        yield
    finally:
        _local_only = False
        keras.distribution.set_distribution(_distribution)


def job_devices() -> dict:
    """What `run.json` says of a job's devices: `process_devices`, each process's own as
    `PLATFORM:N` (a GPU's N is its index on its host, as `nvidia-smi` numbers them; a CPU's,
    its index among the process's CPU devices); nothing when training alone."""
    if _active is None:
        return {}
    import jax

    devices: dict[str, list[str]] = {}
    for device in jax.devices():
        own = devices.setdefault(str(device.process_index), [])
        local = getattr(device, "local_hardware_id", None)  # a GPU's ordinal; None on the CPU
        own.append(f"{device.platform}:{len(own) if local is None else local}")
    return {"process_devices": devices}


def replicas() -> int:
    """How many devices train in step under Keras' distribution: 1 without one."""
    return 1 if _distribution is None else int(_distribution.device_mesh.devices.size)
