"""`dlmine launch --local N CONFIG [train options]`: a data-parallel job on this machine.

Starts N `dlmine train` processes that find each other through the environment variables a
SLURM or Kubernetes launcher would set (`DLMINE_PROCESSES`, `DLMINE_PROCESS_ID`,
`DLMINE_COORDINATOR`), shows process 0's output, stops the others as soon as one fails, and
returns the worst exit code of those that ended by themselves. On a machine with GPUs, each
process gets one of its own (process i the i-th: `JAX_LOCAL_DEVICE_IDS=i`, which JAX reads
when the process joins the job).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

from dlmine.errors import UsageError

JOB_OPTIONS = ("--processes", "--process-id", "--coordinator")
PEERS_S = 5.0  # after a failure, how long the others get to fail by themselves (a collective)
GRACE_S = 10.0  # then, after SIGTERM, how long they get to stop before they are killed
TAIL_LINES = 20  # of a failed process's stderr (other than process 0's, which is shown live)


def launch_local(processes: int, train_args: list[str], debug: bool = False) -> tuple[int, str]:
    """Run `dlmine train TRAIN_ARGS` as `processes` processes of one job on this machine.

    Returns:
        The worst exit code, and what process 0 printed on stdout (its run directory).

    Raises:
        UsageError: TRAIN_ARGS set the job's options, or KERAS_BACKEND is not JAX.
    """
    given = sorted({a.split("=")[0] for a in train_args} & set(JOB_OPTIONS))
    if given:
        raise UsageError(f"launch sets {', '.join(JOB_OPTIONS)} itself; remove {', '.join(given)}")
    backend = os.environ.get("KERAS_BACKEND") or "jax"
    if backend != "jax":
        raise UsageError(f"training on several processes needs the JAX backend, but "
                         f"KERAS_BACKEND={backend}; set KERAS_BACKEND=jax")
    command = [sys.executable, "-m", "dlmine", *(["--debug"] if debug else []), "train",
               *train_args]
    coordinator = f"127.0.0.1:{free_port()}"
    gpus = 0 if _on_cpu(train_args) else gpu_count()
    if 0 < gpus < processes:
        raise UsageError(f"launch --local {processes} gives each process a GPU of its own, but "
                         f"this machine has {gpus}; use --local {gpus}, or train on the CPU "
                         "with --device cpu")
    envs = [{**os.environ, "KERAS_BACKEND": "jax", "DLMINE_PROCESSES": str(processes),
             "DLMINE_PROCESS_ID": str(i), "DLMINE_COORDINATOR": coordinator,
             **({"JAX_LOCAL_DEVICE_IDS": str(i)} if gpus else {})}
            for i in range(processes)]
    return supervise([command] * processes, envs)


def _on_cpu(train_args: list[str]) -> bool:
    pairs = zip(train_args, train_args[1:] + [""], strict=True)
    return any(a == "--device=cpu" or (a, b) == ("--device", "cpu") for a, b in pairs)


def gpu_count() -> int:
    """The NVIDIA GPUs this machine shows: those of `CUDA_VISIBLE_DEVICES` when it is set,
    else those `nvidia-smi -L` lists (none without the driver)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return 0 if visible.strip() in ("", "-1") else len(visible.split(","))
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines())


def free_port() -> int:
    """A TCP port nothing listens on now (the coordinator binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def supervise(commands: list[list[str]], envs: list[dict]) -> tuple[int, str]:
    """Run the commands of one job; process 0's stderr is shown live, the others' on failure.

    Returns:
        The worst exit code of the processes that ended by themselves (a process killed by
        a signal counts as 128 + the signal), and process 0's stdout.
    """
    with ExitStack() as stack:
        logs = [None] + [stack.enter_context(tempfile.TemporaryFile()) for _ in commands[1:]]
        procs = [subprocess.Popen(cmd, env=env, stderr=logs[i],
                                  stdout=subprocess.PIPE if i == 0 else subprocess.DEVNULL)
                 for i, (cmd, env) in enumerate(zip(commands, envs, strict=True))]
        stopped = _wait_or_stop(procs)
        printed = procs[0].stdout.read().decode(errors="replace")
        codes = {i: _exit_code(p.returncode) for i, p in enumerate(procs) if i not in stopped}
        for i, code in codes.items():
            if code and i and logs[i] is not None:
                _show_tail(i, len(procs), logs[i])
    if stopped and not any(codes.values()):  # interrupted: every process was stopped
        return 130, printed
    return max(codes.values(), default=130), printed


def _wait_or_stop(procs: list[subprocess.Popen]) -> set[int]:
    """Wait for every process; when one fails (or on Ctrl-C / SIGTERM) stop the rest.

    Returns:
        The indices of the processes this stopped.
    """
    stopped: set[int] = set()
    failed_at = deadline = None
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        while None in (codes := [p.poll() for p in procs]):
            if failed_at is None and any(code not in (None, 0) for code in codes):
                failed_at = time.monotonic()  # the others' next collective fails: their message
            if deadline is None and failed_at is not None and time.monotonic() > failed_at + PEERS_S:
                stopped, deadline = _stop(procs), time.monotonic() + GRACE_S
            if deadline is not None and time.monotonic() > deadline:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.1)
    except KeyboardInterrupt:
        stopped = _stop(procs) | stopped
        deadline = time.monotonic() + GRACE_S
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return stopped


def _stop(procs: list[subprocess.Popen]) -> set[int]:
    running = {i for i, p in enumerate(procs) if p.poll() is None}
    for i in running:
        procs[i].terminate()
    return running


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _show_tail(index: int, count: int, log) -> None:
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()[-TAIL_LINES:]
    print(f"process {index} of {count} failed; the end of its output:", file=sys.stderr)
    for line in lines:
        print(f"  [process {index}] {line}", file=sys.stderr)
    sys.stderr.flush()
