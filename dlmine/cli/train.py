"""`dlmine train` (one run, k folds, a resume, a process of a job) and `dlmine launch`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dlmine.backend import distributed
from dlmine.backend.launch import launch_local
from dlmine.backend.runtime import import_keras, select
from dlmine.backend.scheduler import cluster_for
from dlmine.cli.options import DEVICE, MLFLOW, SET_HELP, debug
from dlmine.console import Reporter
from dlmine.model.checks import load_checked_config
from dlmine.rundir import CONFIG, RunDir, refuse_existing
from dlmine.train import tracking
from dlmine.train.run import resume
from dlmine.train.run import train as run_training


class ProcessCount(click.ParamType):
    """`--processes`: an integer >= 1, or `auto` (the scheduler's count)."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        text = str(value)
        if text == "auto" or (text.isdigit() and int(text) >= 1):
            return text
        self.fail(f"expected an integer >= 1 or 'auto', received {text!r}", param, ctx)


@click.command(context_settings={"ignore_unknown_options": True,
                                "allow_interspersed_args": False})
@click.option("--local", "processes", type=click.IntRange(min=1), required=True, metavar="N",
              help="Start N processes on this machine.")
@click.argument("train_args", nargs=-1, required=True, type=click.UNPROCESSED,
                metavar="CONFIG [TRAIN OPTIONS]...")
def launch(processes, train_args) -> None:
    """Train CONFIG data-parallel in N processes on this machine (JAX backend).

    Runs `dlmine train CONFIG [TRAIN OPTIONS]` N times, joined through DLMINE_PROCESSES,
    DLMINE_PROCESS_ID and DLMINE_COORDINATOR; shows process 0's output and prints its run
    directory; stops every process when one fails and exits with the worst exit code. On a
    machine with GPUs, each process gets its own (process i the i-th).
    """
    code, printed = launch_local(processes, list(train_args), debug=debug())
    click.echo(printed, nl=False)
    click.get_current_context().exit(code)


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Continue this interrupted run from its last complete epoch; with CONFIG, a "
                   "RUN_DIR that does not exist yet is started.")
@click.option("--force", is_flag=True, help="With --resume: accept a changed config or data.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the run (must not exist). Default: RUNS_ROOT/<name>-<time>.")
@click.option("--runs-root", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs"), show_default=True, envvar="DLMINE_RUNS_ROOT",
              help="Folder of default run directories.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Override the config's seed.")
@DEVICE
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="k-fold cross-validation: one run per fold in RUN_DIR/fold-K/.")
@click.option("--quiet", is_flag=True, help="Print nothing but the run directory.")
@click.option("--processes", type=ProcessCount(), default="1", show_default=True,
              envvar="DLMINE_PROCESSES", help="Train data-parallel in N processes (JAX backend); "
              "start one per --process-id, or use `dlmine launch`; auto: the count, the "
              "process id and the coordinator of the SLURM or Open MPI job.")
@click.option("--process-id", type=click.IntRange(min=0), default=0, envvar="DLMINE_PROCESS_ID",
              help="This process, 0..N-1; only process 0 writes the run directory.")
@click.option("--coordinator", metavar="HOST:PORT", envvar="DLMINE_COORDINATOR",
              help="Where process 0 listens for the others.")
@click.option("--peer-timeout", type=click.IntRange(min=1), default=120, show_default=True,
              envvar="DLMINE_PEER_TIMEOUT", help="Seconds to wait for every process to join, "
              "and for a silent one, before the job fails.")
@MLFLOW
def train(config, resume_dir, force, run_dir, runs_root, overrides, seed, device, folds,
          quiet, processes, process_id, coordinator, peer_timeout, mlflow_uri) -> None:
    """Train CONFIG, evaluate it on the test split, print the run directory.

    With --resume RUN_DIR (and no CONFIG, or the same one), continue an interrupted run.
    """
    if config is None and resume_dir is None:
        raise click.UsageError("give a CONFIG to train, or --resume RUN_DIR")
    if resume_dir is not None and run_dir is not None:
        raise click.UsageError("--resume continues RUN_DIR in place; --run-dir cannot be used "
                               "with it")
    cluster = cluster_for(processes, process_id, coordinator, peer_timeout, device)
    select(device)
    distributed.use_jax(cluster)
    if debug():  # else load_config imports Keras quietly, once the config's names are right
        import_keras(True)
    reporter = Reporter(quiet=quiet or not cluster.leader)
    # Decided before joining: process 0 creates nothing until every process has joined.
    resuming = resume_dir is not None and (config is None or Path(resume_dir).exists())
    if resume_dir is not None and not resuming:  # started now; the same command resumes it
        run_dir = resume_dir
    if run_dir is not None and cluster.leader:
        refuse_existing(run_dir)  # before the config's checks read any data
    with distributed.session(cluster, resume_dir if resuming else None) as private_run_dir:
        if resuming:
            source = config if config is not None else RunDir.open(resume_dir) / CONFIG
            loaded = load_checked_config(source, overrides, seed=seed)
            distributed.check_job(cluster, loaded.config, None)
            track = tracking.target(loaded.config, mlflow_uri) if cluster.leader else None
            run = resume(private_run_dir or resume_dir, loaded, force=force, device=device,
                         reporter=reporter, argv=sys.argv[1:], track=track, folds=folds)
        else:
            loaded = load_checked_config(config, overrides, seed=seed)
            distributed.check_job(cluster, loaded.config, folds)
            track = tracking.target(loaded.config, mlflow_uri) if cluster.leader else None
            run = run_training(loaded, run_dir=private_run_dir or run_dir, runs_root=runs_root,
                               device=device, reporter=reporter, argv=sys.argv[1:], folds=folds,
                               track=track)
    if cluster.leader:
        click.echo(str(run.path))
