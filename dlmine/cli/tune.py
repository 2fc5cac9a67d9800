"""`dlmine tune`: a hyperparameter search from the config's `tune:` section, one run per trial.

The command parses its options and hands over to `dlmine.tune.study`; it prints the study
directory on stdout (and nothing else there), progress and the table of trials on stderr.
Optuna is an optional extra: without it the command says how to install it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dlmine.backend.runtime import import_keras, select
from dlmine.cli.options import DEVICE, MLFLOW, debug
from dlmine.console import Reporter
from dlmine.errors import DlmineError


@click.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, path_type=Path),
              metavar="STUDY_DIR", help="Continue the study in this directory after an interruption.")
@click.option("--trials", type=click.IntRange(min=1), metavar="N",
              help="The number of finished (complete or pruned) trials the study should reach, "
                   "every worker's together (default: tune.trials).")
@click.option("--timeout", type=click.IntRange(min=1), metavar="S",
              help="Start no trial after S seconds (default: tune.timeout).")
@click.option("--study-dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Where to write the study (must not exist). Default: "
                   "RUNS_ROOT/<name>-tune-<time>.")
@click.option("--runs-root", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs"), show_default=True, envvar="DLMINE_RUNS_ROOT",
              help="Folder of default study directories.")
@click.option("--storage", metavar="URL",
              help="An Optuna database URL that several workers share, e.g. "
                   "postgresql://user@host/db or sqlite:////local/study.db; default: "
                   "STUDY_DIR/study.db.")
@click.option("--heartbeat-timeout", type=click.IntRange(min=2), default=120, show_default=True,
              metavar="S", envvar="DLMINE_HEARTBEAT_TIMEOUT",
              help="Seconds without a heartbeat after which another worker fails a running "
                   "trial (its worker died) and runs another in its place.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key for every trial (repeatable; VALUE is YAML).")
@DEVICE
@click.option("--quiet", is_flag=True, help="Print nothing but the study directory.")
@MLFLOW
def tune(config, resume_dir, trials, timeout, study_dir, runs_root, storage, heartbeat_timeout,
         overrides, device, quiet, mlflow_uri) -> None:
    """Search the tune: space of CONFIG with Optuna, one run per trial; print the study directory.

    With --resume STUDY_DIR (and no CONFIG), continue an interrupted study.
    """
    if (config is None) == (resume_dir is None):
        raise click.UsageError("give a CONFIG to tune, or --resume STUDY_DIR (not both)")
    if resume_dir is not None and (overrides or study_dir is not None):
        raise click.UsageError("--resume continues STUDY_DIR with its own config.yaml; --set "
                               "and --study-dir cannot be used with it")
    select(device)
    import_keras(debug())
    try:
        from dlmine.tune import study as tuning
    except ModuleNotFoundError as exc:
        if exc.name != "optuna":
            raise
        raise DlmineError("dlmine tune needs Optuna: pip install 'dlmine[tune]'") from None
    options = tuning.TuneOptions(trials, timeout, storage, device, heartbeat_timeout, sys.argv[1:],
                                 mlflow_uri)
    reporter = Reporter(quiet=quiet)
    if resume_dir is not None:
        folder = tuning.resume(resume_dir, options, reporter)
    else:
        folder = tuning.start(config, overrides, study_dir, runs_root, options, reporter)
    click.echo(str(folder))

