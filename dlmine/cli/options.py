"""Options and helpers that several commands share."""

from __future__ import annotations

from pathlib import Path

import click

SET_HELP = "Override a config key, e.g. --set training.epochs=1 (repeatable; VALUE is YAML)."
RUN_DIR = click.Path(file_okay=False, path_type=Path)
CHECKPOINT = click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best",
                          show_default=True, help="Which saved checkpoint to use.")
DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto",
                      show_default=True, help="Where to train; gpu without a GPU is an error.")

MLFLOW = click.option("--mlflow", "mlflow_uri", metavar="URI", envvar="MLFLOW_TRACKING_URI",
                      help="Log to MLflow at this tracking URI (default: MLFLOW_TRACKING_URI; "
                           "overrides training.tracking.mlflow.tracking_uri).")


def debug() -> bool:
    """Whether `dlmine --debug` was given (tracebacks and the backend's start-up logs)."""
    ctx = click.get_current_context()
    return bool(ctx.find_root().params.get("debug"))
