"""`--processes auto`: the job's shape as the scheduler that started this process describes it.

JAX's cluster detection (`jax._src.clusters`) reads it: under SLURM (`srun`), `SLURM_NTASKS`
processes, this one `SLURM_PROCID`, its GPU `SLURM_LOCALID` on its node, and the coordinator
on the first node of `SLURM_STEP_NODELIST` at a port derived from `SLURM_JOB_ID` (61440 +
job id mod 4096; `JAX_COORDINATOR_PORT` overrides it); under Open MPI (`mpirun`), the
`OMPI_COMM_WORLD_*` variables and the launcher's address in `OMPI_MCA_orte_hnp_uri`. Only
these two are asked: JAX's other detectors (Cloud TPU, Kubernetes) query servers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dlmine.backend.distributed import Cluster
from dlmine.errors import UsageError

# What each scheduler sets, as JAX's detectors require it (checked here to name what is missing).
NEEDS = {
    "SLURM": ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
              "SLURM_LOCALID"),
    "Open MPI": ("OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                 "OMPI_COMM_WORLD_LOCAL_RANK"),
}
HOW = {"SLURM": "srun", "Open MPI": "mpirun"}


@dataclass(frozen=True)
class Job:
    """A job as its scheduler describes it."""

    scheduler: str
    processes: int
    process_id: int
    local_id: int  # this process's index on its node: the GPU it takes
    coordinator: str


def cluster_for(processes: int | str, process_id: int, coordinator: str | None,
                peer_timeout: int, device: str) -> Cluster:
    """The job of `dlmine train`'s options; `processes="auto"` asks the scheduler (SLURM, Open
    MPI) for the count, this process's id and its local device (the GPU of its index on its
    node, unless the scheduler made only one visible to it); `coordinator` overrides the
    scheduler's address.

    Raises:
        UsageError: the options, or the scheduler's variables, do not describe a job.
    """
    if processes != "auto":
        return Cluster(int(processes), process_id, coordinator, peer_timeout)
    job = detect()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    given_one = visible is not None and len(visible.split(",")) == 1  # e.g. --gpus-per-task=1
    return Cluster(job.processes, job.process_id, coordinator or job.coordinator, peer_timeout,
                   local_device=None if device == "cpu" or given_one else job.local_id)


def detect() -> Job:
    """The job of the scheduler that started this process.

    Raises:
        UsageError: no scheduler's variables, or some of them missing; the message names them.
    """
    found = {name: [v for v in needs if v in os.environ] for name, needs in NEEDS.items()}
    complete = [name for name, needs in NEEDS.items() if len(found[name]) == len(needs)]
    if not complete:
        raise UsageError(_missing(found))
    from jax._src.clusters import OmpiCluster, SlurmCluster  # JAX's detectors, as it runs them

    name = complete[0]
    env = SlurmCluster if name == "SLURM" else OmpiCluster
    try:
        return Job(name, env.get_process_count(), env.get_process_id(),
                   env.get_local_process_id() or 0,
                   env.get_coordinator_address(None, os.environ.get("JAX_COORDINATOR_PORT")))
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"--processes auto: the {name} variables do not describe a job: "
                         f"{exc}") from None


def _missing(found: dict[str, list[str]]) -> str:
    started = [name for name, present in found.items() if present]
    if not started:
        return ("--processes auto: no scheduler's job in the environment; expected the "
                "variables of SLURM (" + ", ".join(NEEDS["SLURM"]) + ", set by srun) or of "
                "Open MPI (" + ", ".join(NEEDS["Open MPI"]) + ", set by mpirun), or give "
                "--processes N with --process-id and --coordinator")
    parts = [f"{name} is missing {', '.join(v for v in NEEDS[name] if v not in found[name])} "
             f"(start each process with {HOW[name]})" for name in started]
    return "--processes auto: " + "; ".join(parts)
