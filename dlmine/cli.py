"""The command line: thin commands that parse options and hand over to library code.

A `DlmineError` becomes `Error: ...` on stderr and its exit code (2 for config
and usage errors, 1 for other failures, 130 when interrupted), with no traceback
unless `--debug` is given. Heavy modules (Keras and its backend) are imported
inside the commands, so `dlmine --help` answers at once.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import click

from dlmine import __version__
from dlmine.devices import quiet_backend_logs
from dlmine.errors import DlmineError

quiet_backend_logs()

SET_HELP = "Override a config key, e.g. --set training.epochs=1 (repeatable; VALUE is YAML)."


class Group(click.Group):
    """Turns dlmine's exceptions into messages and exit codes."""

    def invoke(self, ctx: click.Context):
        debug = ctx.params.get("debug", False)
        try:
            return super().invoke(ctx)
        except DlmineError as exc:
            if debug:
                traceback.print_exc()
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            if debug:
                traceback.print_exc()
            click.echo("Error: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if debug:
                traceback.print_exc()
            else:
                click.echo(f"Error: internal error in dlmine: {type(exc).__name__}: {exc} "
                           "(run with --debug for the traceback)", err=True)
            ctx.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlmine")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def main(debug: bool) -> None:
    """dlmine: declarative deep learning for data mining, from one YAML file."""


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Continue this interrupted run from its last complete epoch.")
@click.option("--force", is_flag=True, help="With --resume: accept a changed config or data.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the run (must not exist). Default: RUNS_ROOT/<name>-<time>.")
@click.option("--runs-root", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs"), show_default=True, envvar="DLMINE_RUNS_ROOT",
              help="Folder of default run directories.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--seed", type=int, help="Override the config's seed.")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto",
              show_default=True, help="Where to train; gpu without a GPU is an error.")
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="k-fold cross-validation: one run per fold in RUN_DIR/fold-K/.")
@click.option("--quiet", is_flag=True, help="Print nothing but the run directory.")
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              envvar="DLMINE_PROCESSES", help="Train data-parallel in N processes (JAX backend); "
              "start one per --process-id, or use `dlmine launch`.")
@click.option("--process-id", type=click.IntRange(min=0), default=0, envvar="DLMINE_PROCESS_ID",
              help="This process, 0..N-1; only process 0 writes the run directory.")
@click.option("--coordinator", metavar="HOST:PORT", envvar="DLMINE_COORDINATOR",
              help="Where process 0 listens for the others.")
@click.option("--peer-timeout", type=click.IntRange(min=1), default=120, show_default=True,
              envvar="DLMINE_PEER_TIMEOUT", help="Seconds to wait for every process to join, "
              "and for a silent one, before the job fails.")
def train(config, resume_dir, force, run_dir, runs_root, overrides, seed, device, folds,
          quiet, processes, process_id, coordinator, peer_timeout) -> None:
    """Train CONFIG, evaluate it on the test split, print the run directory.

    With --resume RUN_DIR (and no CONFIG, or the same one), continue an interrupted run.
    """
    from dlmine import devices, distributed

    if config is None and resume_dir is None:
        raise click.UsageError("give a CONFIG to train, or --resume RUN_DIR")
    if resume_dir is not None and (run_dir is not None or folds):
        raise click.UsageError("--resume continues RUN_DIR in place; --run-dir and --folds "
                               "cannot be used with it")
    cluster = distributed.Cluster(processes, process_id, coordinator, peer_timeout)
    if cluster.multi and resume_dir is not None:
        raise click.UsageError("--resume runs in one process; resume without --processes")
    devices.select(device)
    distributed.use_jax(cluster)
    if _debug():  # else load_config imports Keras quietly, once the config's names are right
        devices.import_keras(True)
    from dlmine.config import load_config
    from dlmine.console import Reporter
    from dlmine.rundir import CONFIG, RunDir
    from dlmine.train import resume
    from dlmine.train import train as run_training

    reporter = Reporter(quiet=quiet or not cluster.leader)
    if resume_dir is not None:
        source = config if config is not None else RunDir.open(resume_dir) / CONFIG
        loaded = load_config(source, overrides, seed=seed)
        run = resume(resume_dir, loaded, force=force, device=device, reporter=reporter,
                     argv=sys.argv[1:])
    else:
        with distributed.session(cluster) as private_run_dir:  # joins the other processes
            loaded = load_config(config, overrides, seed=seed)
            distributed.check_job(cluster, loaded.config, folds)
            run = run_training(loaded, run_dir=private_run_dir or run_dir, runs_root=runs_root,
                               device=device, reporter=reporter, argv=sys.argv[1:], folds=folds)
    if cluster.leader:
        click.echo(str(run.path))


@main.command(context_settings={"ignore_unknown_options": True,
                                "allow_interspersed_args": False})
@click.option("--local", "processes", type=click.IntRange(min=1), required=True, metavar="N",
              help="Start N processes on this machine.")
@click.argument("train_args", nargs=-1, required=True, type=click.UNPROCESSED,
                metavar="CONFIG [TRAIN OPTIONS]...")
def launch(processes, train_args) -> None:
    """Train CONFIG data-parallel in N processes on this machine (JAX backend).

    Runs `dlmine train CONFIG [TRAIN OPTIONS]` N times, joined through DLMINE_PROCESSES,
    DLMINE_PROCESS_ID and DLMINE_COORDINATOR; shows process 0's output and prints its run
    directory; stops every process when one fails and exits with the worst exit code.
    """
    from dlmine.launch import launch_local

    code, printed = launch_local(processes, list(train_args), debug=_debug())
    click.echo(printed, nl=False)
    click.get_current_context().exit(code)


@main.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best",
              show_default=True, help="Which saved checkpoint to evaluate.")
@click.option("--split", type=click.Choice(["test", "validation"]), default="test",
              show_default=True, help="Which split to evaluate on.")
@click.option("--json", "as_json", is_flag=True, help="Print eval.json instead of a table.")
@click.option("--quiet", is_flag=True, help="Print nothing; eval.json is still written.")
def evaluate(run_dir, checkpoint, split, as_json, quiet) -> None:
    """Evaluate a finished run from RUN_DIR alone; writes RUN_DIR/eval.json."""
    import json

    from dlmine.devices import import_keras

    import_keras(_debug())
    from dlmine.console import Reporter
    from dlmine.evaluate import evaluate_run

    reporter = Reporter(quiet=quiet)
    report = evaluate_run(run_dir, checkpoint, split, reporter)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    elif not quiet:
        reporter.metrics_table(f"{split} metrics ({Path(run_dir).name}, {checkpoint} checkpoint)",
                               report["metrics"], stream="stdout")


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
def check(config, overrides) -> None:
    """Validate CONFIG and build its model on the data's shape, without training."""
    from dlmine.config import load_config
    from dlmine.devices import import_keras

    if _debug():  # the backend's start-up logs too; otherwise Keras is imported (quietly)
        import_keras(True)  # only for a config whose names and structure are right
    loaded = load_config(config, overrides)
    from dlmine.train import build_checked_model, model_summary

    prepared = build_checked_model(loaded)
    click.echo(model_summary(prepared.model))
    click.echo(f"{loaded.sources.filename}: OK: {len(loaded.config.model.layers)} layers, input "
               f"shape {tuple(prepared.preprocessor.output_shape())}, "
               f"{prepared.model.count_params()} parameters")


from dlmine.results_cli import COMMANDS  # noqa: E402  (light: Keras is imported inside)
from dlmine.tune_cli import COMMANDS as TUNE_COMMANDS  # noqa: E402

for _command in [*COMMANDS, *TUNE_COMMANDS]:
    main.add_command(_command)


def _debug() -> bool:
    ctx = click.get_current_context()
    return bool(ctx.find_root().params.get("debug"))


if __name__ == "__main__":
    main()
