"""A job as SLURM starts it: two processes that take their count, ids and coordinator from
SLURM's variables (`--processes auto`), train like one process, and, killed, resume as two
with the result of the uninterrupted job."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest

from dlmine.backend import scheduler
from dlmine.backend.distributed import Cluster
from dlmine.errors import UsageError
from tests.conftest import write_config, write_tiny_npz
from tests.test_distributed import CONFIG, TOLERANCE, same_training

FOUR_EPOCHS = CONFIG.replace("epochs: 2", "epochs: 4")
PORT_BASE = 65535 - 2**12 + 1  # JAX's SLURM detector: this + SLURM_JOB_ID mod 4096


def _job_id() -> str:
    """A SLURM_JOB_ID whose coordinator port (JAX derives it from the id) is free now."""
    while True:
        job = random.randrange(10_000, 90_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", PORT_BASE + job % 2**12))
                return str(job)
            except OSError:
                continue


def _srun(job: str, *args, cwd) -> list[subprocess.Popen]:
    """What `srun --ntasks=2` on one node starts: `dlmine ARGS` twice, SLURM's variables set."""
    (cwd / "tmp").mkdir(exist_ok=True)
    procs = []
    for task in range(2):
        env = {**os.environ, "KERAS_BACKEND": "jax", "TMPDIR": str(cwd / "tmp"),
               "SLURM_JOB_ID": job, "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
               "SLURM_PROCID": str(task), "SLURM_LOCALID": str(task)}
        procs.append(subprocess.Popen([sys.executable, "-m", "dlmine", *map(str, args)], cwd=cwd,
                                      env=env, text=True, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE))
    return procs


def _finish(procs) -> str:
    ends = [proc.communicate(timeout=240) for proc in procs]
    for proc, (_, err) in zip(procs, ends, strict=True):
        assert proc.returncode == 0, err
    assert ends[1][0] == ""  # only process 0 prints the run directory
    return ends[0][0]


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    """One process, and two started as SLURM starts them (DLMINE_PROCESSES=auto, no options)."""
    folder = tmp_path_factory.mktemp("slurm")
    write_tiny_npz(folder / "tiny.npz")
    cfg = write_config(folder, FOUR_EPOCHS)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    single = subprocess.Popen([sys.executable, "-m", "dlmine", "train", cfg, "--run-dir", "one"],
                              cwd=folder, env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    os.environ["DLMINE_PROCESSES"] = "auto"  # read by both processes, as an sbatch script exports it
    try:
        pair = _srun(_job_id(), "train", cfg, "--run-dir", "two", cwd=folder)
    finally:
        del os.environ["DLMINE_PROCESSES"]
    printed = _finish(pair)
    assert single.communicate(timeout=240)[0] == "one\n" and single.returncode == 0
    return SimpleNamespace(folder=folder, cfg=cfg, one=folder / "one", two=folder / "two",
                           printed=printed)


def test_two_processes_of_a_slurm_job_train_like_one(jobs):
    assert jobs.printed == "two\n"
    info = json.loads((jobs.two / "run.json").read_text())
    assert info["replicas"] == 2 and info["status"] == "completed"
    assert info["process_devices"] == {"0": ["cpu:0"], "1": ["cpu:0"]}
    assert "process_devices" not in json.loads((jobs.one / "run.json").read_text())
    same_training(jobs.one, jobs.two)
    assert list((jobs.folder / "tmp").iterdir()) == []  # process 1's private run is gone


def test_a_killed_job_restarted_with_the_same_command_ends_as_the_uninterrupted_one(jobs):
    job = _job_id()
    command = ("train", jobs.cfg, "--resume", "three", "--processes", "auto")  # starts it
    first = _srun(job, *command, cwd=jobs.folder)
    seen = []
    for line in first[0].stderr:  # epoch 1 is committed once epoch 2 has ended
        seen.append(line)
        if line.startswith("epoch 2/4"):
            break
    assert seen[-1].startswith("epoch 2/4"), "".join(seen)
    for proc in first:  # the node dies
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    three = jobs.folder / "three"
    state = json.loads((three / "training_state.json").read_text())
    assert json.loads((three / "run.json").read_text())["status"] == "running"
    assert 1 <= state["epoch"] < 4
    assert _finish(_srun(job, *command, cwd=jobs.folder)) == "three\n"  # the job requeued
    info = json.loads((three / "run.json").read_text())
    assert info["status"] == "completed" and info["epochs_completed"] == 4
    assert [r["from_epoch"] for r in info["resumed"]] == [state["epoch"]]
    assert info["resumed"][0]["replicas"] == 2
    same_training(jobs.two, three)
    tested = json.loads((three / "eval.json").read_text())["metrics"]
    assert tested == pytest.approx(json.loads((jobs.two / "eval.json").read_text())["metrics"],
                                   abs=TOLERANCE)


def test_auto_reads_slurm_and_names_what_is_missing(cli, tmp_path, tiny_npz, monkeypatch):
    for name in [v for needs in scheduler.NEEDS.values() for v in needs]:
        monkeypatch.delenv(name, raising=False)
    cfg = write_config(tmp_path, CONFIG)
    result = cli("train", cfg, "--processes", "auto")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: --processes auto: no scheduler's job in the environment; expected the variables "
        "of SLURM (SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID, "
        "set by srun) or of Open MPI (OMPI_MCA_orte_hnp_uri, OMPI_COMM_WORLD_SIZE, "
        "OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_LOCAL_RANK, set by mpirun), or give --processes "
        "N with --process-id and --coordinator\n")
    monkeypatch.setenv("SLURM_JOB_ID", "42")  # sbatch's shell, outside srun
    monkeypatch.setenv("SLURM_NTASKS", "2")
    with pytest.raises(UsageError, match=r"^--processes auto: SLURM is missing "
                       r"SLURM_STEP_NODELIST, SLURM_PROCID, SLURM_LOCALID \(start each process "
                       r"with srun\)$"):
        scheduler.detect()
    for name, value in {"SLURM_STEP_NODELIST": "node[007-009],gpu2", "SLURM_PROCID": "3",
                        "SLURM_LOCALID": "1"}.items():
        monkeypatch.setenv(name, value)
    assert scheduler.detect() == scheduler.Job("SLURM", 2, 3, 1, f"node007:{PORT_BASE + 42}")
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    job = scheduler.cluster_for("auto", 0, None, 120, "auto")
    assert job == Cluster(2, 1, f"node007:{PORT_BASE + 42}", 120, local_device=1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")  # srun --gpus-per-task=1: its own GPU
    assert scheduler.cluster_for("auto", 0, None, 120, "auto").local_device is None
    assert scheduler.cluster_for("auto", 0, "h:1", 120, "cpu") == Cluster(2, 1, "h:1", 120)
    result = cli("train", cfg, "--processes", "two")
    assert result.exit_code == 2
    assert "Invalid value for '--processes': expected an integer >= 1 or 'auto', received 'two'" \
        in result.stderr


def test_launch_gives_each_process_a_gpu_of_its_own(monkeypatch):
    from dlmine.backend import launch

    started = []
    monkeypatch.setattr(launch, "supervise", lambda commands, envs: started.append(envs) or (0, ""))
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    assert launch.gpu_count() == 3
    launch.launch_local(2, ["cfg.yaml"])
    assert [env["JAX_LOCAL_DEVICE_IDS"] for env in started[-1]] == ["0", "1"]
    launch.launch_local(2, ["cfg.yaml", "--device", "cpu"])
    assert all("JAX_LOCAL_DEVICE_IDS" not in env for env in started[-1])
    with pytest.raises(UsageError, match=r"^launch --local 4 gives each process a GPU of its own, "
                       r"but this machine has 3; use --local 3, or train on the CPU with "
                       r"--device cpu$"):
        launch.launch_local(4, ["cfg.yaml"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert launch.gpu_count() == 0
    launch.launch_local(4, ["cfg.yaml"])  # no GPU: every process on the CPU
    assert all("JAX_LOCAL_DEVICE_IDS" not in env for env in started[-1])
