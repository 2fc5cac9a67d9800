"""`dlmine check`: validate a config and build its model on the data's shape, no training."""

from __future__ import annotations

from pathlib import Path

import click

from dlmine.backend.runtime import import_keras
from dlmine.cli.options import SET_HELP, debug
from dlmine.model.checks import load_checked_config
from dlmine.train.prepare import build_checked_model, model_summary
from dlmine.tune.space import check_space


@click.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
def check(config, overrides) -> None:
    """Validate CONFIG and build its model on the data's shape, without training."""
    if debug():  # the backend's start-up logs too; otherwise Keras is imported (quietly)
        import_keras(True)  # only for a config whose names and structure are right
    loaded = load_checked_config(config, overrides)
    if loaded.config.tune is not None:  # what `dlmine tune` would refuse, before any data load
        check_space(loaded)
    prepared = build_checked_model(loaded)
    click.echo(model_summary(prepared.model))
    rec = loaded.config.model.recommender
    what = (f"a {rec.type} recommender" if rec is not None
            else f"{len(loaded.config.model.layers)} layers")
    click.echo(f"{loaded.sources.filename}: OK: {what}, input "
               f"shape {tuple(prepared.preprocessor.output_shape())}, "
               f"{prepared.model.count_params()} parameters")
